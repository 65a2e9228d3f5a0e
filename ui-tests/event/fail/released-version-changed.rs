use better_auth_events::prelude::*;

// events.lock/ui.lock.changed@1.0.0.json records only `user_id`.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.changed", version = "1.0.0")]
struct UserCreated {
    user_id: String,
    email: String,
}

// The failed check is the only error: the type is still an event to the rest of the crate.
#[handler]
async fn on_user_created(e: &UserCreated) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

fn main() {
    let _ = <UserCreated as better_auth_events::TypedEvent>::NAME;
}
