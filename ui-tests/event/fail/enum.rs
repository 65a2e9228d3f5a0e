use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
enum UserEvent {
    Created { user_id: String },
    Deleted { user_id: String },
}

fn main() {}
