use better_auth_events::prelude::*;

#[derive(Event, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

fn main() {}
