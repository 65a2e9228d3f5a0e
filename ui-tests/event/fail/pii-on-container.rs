use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(pii)]
struct UserCreated {
    email: String,
}

fn main() {}
