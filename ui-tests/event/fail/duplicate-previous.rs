use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.created", version = "1.0.0")]
struct UserCreatedV1 {
    user_id: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.created", version = "2.0.0", previous = UserCreatedV1, previous = UserCreatedV1)]
struct UserCreated {
    user_id: String,
}

fn main() {}
