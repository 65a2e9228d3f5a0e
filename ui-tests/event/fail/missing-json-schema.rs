use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct UserCreated {
    user_id: String,
}

fn main() {}
