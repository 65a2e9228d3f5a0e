use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
    #[serde(skip)]
    #[event(renamed_from = "cache")]
    local_cache: Option<String>,
}

fn main() {}
