use better_auth_events::prelude::*;

// events.lock/ui.lock.broken@1.0.0.json is not valid JSON.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.broken", version = "1.0.0")]
struct UserCreated {
    user_id: String,
}

fn main() {}
