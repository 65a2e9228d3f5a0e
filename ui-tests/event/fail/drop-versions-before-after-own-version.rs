use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.created", version = "1.0.0", drop_versions_before = "2.0.0")]
struct UserCreated {
    user_id: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "user.deleted", version = "1.0.0", drop_versions_before = "two")]
struct UserDeleted {
    user_id: String,
}

fn main() {}
