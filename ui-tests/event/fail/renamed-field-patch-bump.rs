use better_auth_events::prelude::*;

mod v1 {
    use better_auth_events::prelude::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema)]
    #[event(name = "ui.lock.renamed", version = "1.0.0")]
    pub struct UserCreated {
        pub user_id: String,
        pub email: String,
    }
}

// A rename is a compatible change, but a change: a patch bump is too small.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.renamed", version = "1.0.1", previous = v1::UserCreated)]
struct UserCreated {
    user_id: String,
    #[event(renamed_from = "email")]
    email_address: String,
}

fn main() {}
