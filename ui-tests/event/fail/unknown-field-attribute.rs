use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    #[event(secret)]
    password_hash: String,
}

fn main() {}
