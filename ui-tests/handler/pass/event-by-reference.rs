use std::sync::atomic::{AtomicUsize, Ordering};

use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

static SEEN: AtomicUsize = AtomicUsize::new(0);

#[handler]
async fn on_user_created(e: &UserCreated) -> Result<(), HandlerError> {
    assert_eq!(e.user_id, "u1");
    SEEN.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bus = EventBus::builder().handlers(registered_handlers()).try_build().await.unwrap();
    let receipt = bus.emit(UserCreated { user_id: "u1".into() }).await.unwrap();
    assert_eq!(receipt.handlers_run, 1);
    assert_eq!(SEEN.load(Ordering::SeqCst), 1);
}
