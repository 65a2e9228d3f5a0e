use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler]
struct OnUserCreated;

fn main() {}
