use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::HandlerMode;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler(async, name = "x", priority = -5, timeout = "2s", retry(max_attempts = 5, backoff = "exponential", base = "200ms", max_delay = "10s", jitter = false))]
async fn send_welcome(e: &UserCreated) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

#[handler(sync, priority = 10, timeout = "1m 30s")]
async fn check(e: &UserCreated) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

#[handler(async, retry(backoff = "linear", jitter))]
async fn with_defaults(e: &UserCreated) -> Result<(), HandlerError> {
    let _ = e;
    Ok(())
}

fn main() {
    let handlers = registered_handlers();
    let find = |name: &str| handlers.iter().find(|h| h.name() == name).unwrap_or_else(|| panic!("`{name}` not registered"));

    let x = find("x");
    assert_eq!(x.event_name(), "user.created");
    assert_eq!(x.mode(), HandlerMode::Async);
    assert_eq!(x.priority(), -5);
    assert_eq!(x.timeout(), Some(Duration::from_secs(2)));
    assert_eq!(
        x.retry_policy(),
        Some(&RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential,
            base: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            jitter: false,
        })
    );
    assert!(x.location().unwrap().contains("::x:"));

    let check = find("check");
    assert_eq!(check.mode(), HandlerMode::Sync);
    assert_eq!(check.priority(), 10);
    assert_eq!(check.timeout(), Some(Duration::from_secs(90)));
    assert_eq!(check.retry_policy(), None);

    let with_defaults = find("with_defaults");
    assert_eq!(with_defaults.priority(), 0);
    assert_eq!(with_defaults.timeout(), None);
    let policy = with_defaults.retry_policy().unwrap();
    assert_eq!(policy.backoff, Backoff::Linear);
    assert!(policy.jitter);
    assert_eq!(policy.max_attempts, RetryPolicy::default().max_attempts);
}
