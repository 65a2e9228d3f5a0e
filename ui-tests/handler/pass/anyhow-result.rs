use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler]
async fn check_user_id(e: &UserCreated) -> anyhow::Result<()> {
    anyhow::ensure!(!e.user_id.is_empty(), "empty user id");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bus = EventBus::builder().handlers(registered_handlers()).try_build().await.unwrap();
    assert!(bus.emit(UserCreated { user_id: "u1".into() }).await.is_ok());
    let err = bus.emit(UserCreated { user_id: String::new() }).await.unwrap_err();
    assert!(format!("{err:?}").contains("empty user id"), "{err:?}");
}
