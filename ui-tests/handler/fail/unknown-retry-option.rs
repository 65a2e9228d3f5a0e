use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler(async, retry(attempts = 3))]
async fn on_user_created(e: &UserCreated) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

fn main() {}
