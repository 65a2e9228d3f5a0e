use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    #[event(name = "user.created")]
    user_id: String,
}

fn main() {}
