use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(version)]
struct UserCreated {
    user_id: String,
}

fn main() {}
