use better_auth_events::prelude::*;

#[derive(Event, Serialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

fn main() {}
