use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserDeleted {
    user_id: String,
}

#[handler]
async fn on_user_event(created: &UserCreated, deleted: &UserDeleted) -> Result<(), HandlerError> {
    let _ = (created, deleted);
    Ok(())
}

fn main() {}
