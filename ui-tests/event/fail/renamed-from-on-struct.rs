use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.created", renamed_from = "user.registered")]
struct UserCreated {
    user_id: String,
}

fn main() {}
