use better_auth_events::prelude::*;

mod v1 {
    use better_auth_events::prelude::*;

    // As released: events.lock/ui.lock.renamed@1.0.0.json.
    #[derive(Event, Serialize, Deserialize, JsonSchema)]
    #[event(name = "ui.lock.renamed", version = "1.0.0")]
    pub struct UserCreated {
        pub user_id: String,
        pub email: String,
    }
}

// A rename the generated upcaster carries: new code reads 1.0.0 events, so under the
// BACKWARD rules a struct is checked by, a minor bump is enough.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.renamed", version = "1.1.0", previous = v1::UserCreated)]
struct UserCreated {
    user_id: String,
    #[event(renamed_from = "email")]
    email_address: String,
}

fn main() {
    let _ = UserCreated { user_id: String::new(), email_address: String::new() };
}
