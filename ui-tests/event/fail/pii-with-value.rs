use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    #[event(pii = true)]
    email: String,
}

fn main() {}
