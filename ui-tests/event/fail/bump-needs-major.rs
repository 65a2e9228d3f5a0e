use better_auth_events::prelude::*;

// events.lock/ui.lock.bump@1.0.0.json records only `user_id`; a new required field
// breaks readers of old events, so 1.1.0 is too small a bump.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.bump", version = "1.1.0")]
struct UserCreated {
    user_id: String,
    email: String,
}

fn main() {}
