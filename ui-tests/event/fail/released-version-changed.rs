use better_auth_events::prelude::*;

// events.lock/ui.lock.changed@1.0.0.json records only `user_id`.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.changed", version = "1.0.0")]
struct UserCreated {
    user_id: String,
    email: String,
}

fn main() {}
