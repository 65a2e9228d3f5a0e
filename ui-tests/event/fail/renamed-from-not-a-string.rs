use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    #[event(renamed_from = uid)]
    user_id: String,
}

fn main() {}
