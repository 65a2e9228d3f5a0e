//! Quickstart: a typed event and handler, then the dynamic API of the seed README.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Needs no server: the bus runs in process, with the default worker pool and no store.
//! Set `RUST_LOG=debug` to see more of what the bus does.

use std::io::IsTerminal;
use std::time::Duration;

use better_auth_events::auth::UserCreated;
use better_auth_events::prelude::*;
use better_auth_events::{EmitReceipt, Error};
use tracing_subscriber::EnvFilter;

/// A typed event. It gives no `name`, so the default rule names it after the type:
/// `UserInvited` → `user.invited`.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(version = "1.0.0")]
pub struct UserInvited {
    /// The invitation's id.
    pub invite_id: String,
    /// Who is invited. Personal data: logging middleware redacts it.
    #[event(pii)]
    pub email: String,
    /// The user id of the inviter.
    pub invited_by: String,
}

/// A sync handler (the default): it runs inside `emit`, and its error would be `emit`'s.
#[handler]
async fn check_invite(e: &UserInvited) -> Result<(), HandlerError> {
    if !e.email.contains('@') {
        return Err(HandlerError::new(format!("invite {}: `{}` is not an e-mail address", e.invite_id, e.email)));
    }
    // Handlers get the Rust value itself, personal data included; only logs redact it.
    println!("check_invite: invite {} for {} from {} is fine", e.invite_id, e.email, e.invited_by);
    Ok(())
}

fn show(what: &str, receipt: &EmitReceipt) {
    println!(
        "{what}: `{}` id={} sync handlers run={} async deliveries={}",
        receipt.event_type, receipt.id, receipt.handlers_run, receipt.async_deliveries
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // TracingMiddleware logs every event through `tracing`; this prints those logs.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(std::io::stdout().is_terminal())
        .without_time()
        .with_target(false)
        .init();

    // --- Typed ------------------------------------------------------------------------
    let bus = EventBus::builder()
        .middleware(TracingMiddleware::default())
        .handlers(registered_handlers()) // every #[handler] in this program: `check_invite`
        .validate_built_in_events(true) // dynamic `user.created` events must read as `auth::UserCreated`
        .try_build()
        .await?;

    let receipt = bus
        .emit(UserInvited { invite_id: "inv-1".into(), email: "ann@example.com".into(), invited_by: "u-42".into() })
        .await?;
    show("typed emit", &receipt);

    // --- Dynamic, as in the seed README ---------------------------------------------------
    // An `async` closure, so that it can borrow the event.
    bus.on("user.created", async |event: &Event| {
        println!("User created: {:?}", event.data);
        Ok(())
    })
    .await?;

    // `user.created` is also a built-in typed event (`auth::UserCreated`): with
    // `validate_built_in_events(true)` a dynamic event of that name is checked against it
    // (without it, the seed's partial payloads pass), and its `email` is redacted in the log.
    let receipt = bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123", "email": "a@b.c" }))).await?;
    show("dynamic emit", &receipt);

    // The dynamic handler also gets typed emits of its event name, as JSON.
    let receipt = bus
        .emit(UserCreated { user_id: "456".into(), email: "b@c.d".into(), name: None, email_verified: true })
        .await?;
    show("typed emit of a built-in event", &receipt);

    // A dynamic payload that does not read as the registered type is refused.
    match bus.emit(Event::new("user.created").with_data(json!({ "user_id": "789" }))).await {
        Err(e @ Error::Validation { .. }) => println!("refused as expected: {e}"),
        other => return Err(format!("expected a validation error, got {other:?}").into()),
    }

    // --- Shutdown ---------------------------------------------------------------------
    let report = bus.shutdown(Duration::from_secs(1)).await?;
    println!("shutdown: {report:?}");
    match bus.emit(Event::new("user.created").with_data(json!({ "user_id": "1", "email": "c@d.e" }))).await {
        Err(e @ Error::Closed) => println!("after shutdown: {e}"),
        other => return Err(format!("expected `Error::Closed`, got {other:?}").into()),
    }
    Ok(())
}
