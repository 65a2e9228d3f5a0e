use better_auth_events::prelude::*;

// events.lock/ui.lock.changed@1.0.0.json records `user_id: String`.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.changed", version = "1.0.0")]
struct UserCreated {
    user_id: u64,
}

fn main() {}
