use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = 5)]
struct UserCreated {
    user_id: String,
}

fn main() {}
