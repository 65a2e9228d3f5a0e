use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.created", version = "1.0.0")]
struct UserCreatedV1 {
    user_id: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.created", version = "1.1.0", previous = UserCreatedV1, upcast = "auto", upcast = "manual")]
struct UserCreated {
    user_id: String,
}

fn main() {}
