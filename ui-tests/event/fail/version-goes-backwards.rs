use better_auth_events::prelude::*;

// events.lock/ui.lock.ahead@2.0.0.json is released: a version before it cannot be new.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.ahead", version = "1.9.0")]
struct UserCreated {
    user_id: String,
}

fn main() {}
