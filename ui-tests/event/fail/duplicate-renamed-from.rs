use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    #[event(renamed_from = "uid", renamed_from = "id")]
    user_id: String,
}

fn main() {}
