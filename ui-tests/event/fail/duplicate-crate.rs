use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(crate = "::better_auth_events", crate = "::better_auth_events")]
struct UserCreated {
    user_id: String,
}

fn main() {}
