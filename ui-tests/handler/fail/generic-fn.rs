use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler]
async fn on_event<E: TypedEvent>(e: &E) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

fn main() {}
