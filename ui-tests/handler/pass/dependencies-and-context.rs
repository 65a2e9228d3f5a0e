use std::sync::Mutex;

use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[derive(Default)]
struct Mailer {
    sent: Mutex<Vec<String>>,
}

struct Config {
    sender: &'static str,
}

#[handler]
async fn send_welcome(
    e: &UserCreated,
    mailer: Dep<Mailer>,
    ctx: &HandlerContext,
    config: Dep<Config>,
) -> Result<(), HandlerError> {
    assert_eq!(ctx.handler_name(), "send_welcome");
    mailer.sent.lock().unwrap().push(format!("{} -> {}", config.sender, e.user_id));
    Ok(())
}

#[handler]
async fn log_delivery(ctx: HandlerContext, e: &Envelope<UserCreated>) -> Result<(), HandlerError> {
    // The event need not come first.
    assert_eq!(ctx.event_id(), e.id);
    assert_eq!(ctx.attempt(), 1);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let handlers = registered_handlers();
    let send_welcome = handlers.iter().find(|h| h.name() == "send_welcome").unwrap();
    assert_eq!(send_welcome.requirements().len(), 2);

    let bus = EventBus::builder()
        .dependency(Mailer::default())
        .dependency(Config { sender: "noreply" })
        .handlers(handlers)
        .try_build()
        .await
        .unwrap();
    let receipt = bus.emit(UserCreated { user_id: "u1".into() }).await.unwrap();
    assert_eq!(receipt.handlers_run, 2);
}
