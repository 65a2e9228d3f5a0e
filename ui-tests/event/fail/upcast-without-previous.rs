use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.created", version = "2.0.0", upcast = "manual")]
struct UserCreated {
    user_id: String,
}

fn main() {}
