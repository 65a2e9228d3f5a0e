use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler]
fn on_user_created(e: &UserCreated) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

fn main() {}
