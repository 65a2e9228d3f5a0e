use std::fmt;

use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[derive(Debug)]
struct EmptyUserId;

impl fmt::Display for EmptyUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("empty user id")
    }
}

impl std::error::Error for EmptyUserId {}

#[handler]
async fn check_user_id(e: &UserCreated) -> Result<(), EmptyUserId> {
    if e.user_id.is_empty() { Err(EmptyUserId) } else { Ok(()) }
}

#[handler]
async fn check_with_io_error(e: &UserCreated) -> std::result::Result<(), std::io::Error> {
    let _ = e;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bus = EventBus::builder().handlers(registered_handlers()).try_build().await.unwrap();
    assert!(bus.emit(UserCreated { user_id: "u1".into() }).await.is_ok());
    let err = bus.emit(UserCreated { user_id: String::new() }).await.unwrap_err();
    let chain = better_auth_events::ErrorChain(&err).to_string();
    assert!(chain.contains("empty user id"), "{chain}");
}
