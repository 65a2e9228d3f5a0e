use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler]
async fn on_user_created(e: &Envelope<UserCreated>) -> Result<(), HandlerError> {
    assert_eq!(e.data.user_id, "u1");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bus = EventBus::builder().handlers(registered_handlers()).try_build().await.unwrap();
    let receipt = bus.emit(UserCreated { user_id: "u1".into() }).await.unwrap();
    assert_eq!(receipt.handlers_run, 1);
}
