use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

struct Mailer {
    from: &'static str,
}

#[handler]
async fn send_welcome(
    UserCreated { user_id }: &UserCreated,
    Dep(mailer): Dep<Mailer>,
    _: &HandlerContext,
) -> Result<(), HandlerError> {
    assert_eq!(user_id, "u1");
    assert_eq!(mailer.from, "noreply");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bus = EventBus::builder()
        .dependency(Mailer { from: "noreply" })
        .handlers(registered_handlers())
        .try_build()
        .await
        .unwrap();
    let receipt = bus.emit(UserCreated { user_id: "u1".into() }).await.unwrap();
    assert_eq!(receipt.handlers_run, 1);
}
