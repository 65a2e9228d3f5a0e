use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(nmae = "user.created")]
struct UserCreated {
    user_id: String,
}

// The attribute is the only error: the type is still an event to the rest of the crate.
#[handler]
async fn on_user_created(e: &UserCreated) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

fn main() {}
