use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event = "user.created"]
struct UserCreated {
    user_id: String,
}

fn main() {}
