use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(version = "1.0.0")]
#[event(version = "2.0.0")]
struct UserCreated {
    user_id: String,
}

fn main() {}
