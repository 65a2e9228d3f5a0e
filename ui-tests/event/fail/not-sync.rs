use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    attempts: std::cell::Cell<u32>,
}

fn main() {}
