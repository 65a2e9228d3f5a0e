use better_auth_events::prelude::*;

// events.lock/ui.lock.renamed@1.0.0.json has `email`; without `previous` no upcaster
// moves it to `email_address` in old events.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.renamed", version = "1.1.0")]
struct UserCreated {
    user_id: String,
    #[event(renamed_from = "email")]
    email_address: String,
}

fn main() {}
