//! What every bench shares: the event, the payload sizes, the handler's work, the
//! completion counter of the async benches and the runtimes.
//!
//! Each bench binary uses a part of this module only.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use better_auth_events::Handler;
use better_auth_events::prelude::*;
use tokio::sync::Notify;

/// Payload sizes: bytes of string data in the event.
pub const SIZES: [usize; 3] = [16, 64, 256];

/// Sign-up domains nobody may register with (a small, realistic deny list).
const DENIED_DOMAINS: [&str; 8] = [
    "mailinator.com",
    "guerrillamail.com",
    "10minutemail.com",
    "tempmail.dev",
    "yopmail.com",
    "trashmail.com",
    "sharklasers.com",
    "throwawaymail.com",
];

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "bench.signup.requested", version = "1.0.0")]
pub struct SignupRequested {
    #[event(pii)]
    pub email: String,
}

impl SignupRequested {
    /// An event whose e-mail address is exactly `bytes` long (at least 13).
    pub fn of_size(bytes: usize) -> Self {
        const DOMAIN: &str = "@example.org";
        assert!(bytes > DOMAIN.len(), "payloads are at least {} bytes", DOMAIN.len() + 1);
        let local: String = "jane.doe+".chars().cycle().take(bytes - DOMAIN.len()).collect();
        let email = format!("{local}{DOMAIN}");
        assert_eq!(email.len(), bytes);
        Self { email }
    }
}

/// The handler's work, the same in every path: the address must be well formed (every
/// byte of it is looked at, so the payload's size matters) and its domain must not be on
/// the deny list (ASCII case-insensitive).
pub fn check_signup(e: &SignupRequested) -> Result<(), HandlerError> {
    let Some((local, domain)) = e.email.rsplit_once('@') else {
        return Err(HandlerError::new("e-mail address without `@`"));
    };
    let local_ok = !local.is_empty() && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    let domain_ok = domain.contains('.') && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !local_ok || !domain_ok {
        return Err(HandlerError::new("malformed e-mail address"));
    }
    if DENIED_DOMAINS.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Err(HandlerError::new("disposable e-mail domain"));
    }
    Ok(())
}

/// The sync handler of `emit_sync` and `fanout`: the bus runs it inline; the hand-rolled
/// bus calls the very same function through a boxed closure.
#[handler(name = "deny_disposable")]
pub async fn deny_disposable(e: &SignupRequested) -> Result<(), HandlerError> {
    check_signup(std::hint::black_box(e))
}

/// The async handler of `emit_async`: the same work, then one tick of [`DONE`].
#[handler(async, name = "deny_disposable_async")]
pub async fn deny_disposable_async(e: &SignupRequested) -> Result<(), HandlerError> {
    let outcome = check_signup(std::hint::black_box(e));
    DONE.hit();
    outcome
}

/// Counts handler runs and wakes the bench once a batch is complete.
pub struct Done {
    count: AtomicUsize,
    target: AtomicUsize,
    notify: Notify,
}

/// The completion counter of the async benches (one batch at a time).
pub static DONE: Done = Done::new();

impl Done {
    pub const fn new() -> Self {
        Self { count: AtomicUsize::new(0), target: AtomicUsize::new(usize::MAX), notify: Notify::const_new() }
    }

    /// Starts a batch of `n` handler runs. Call only when no handler of an earlier batch
    /// is still to run.
    pub fn arm(&self, n: usize) {
        self.count.store(0, Ordering::SeqCst);
        self.target.store(n, Ordering::SeqCst);
    }

    /// One handler run.
    pub fn hit(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            // Stores a permit if the bench is not waiting yet: exactly one per batch.
            self.notify.notify_one();
        }
    }

    /// Waits until the armed batch is complete.
    pub async fn wait(&self) {
        if tokio::time::timeout(Duration::from_secs(60), self.notify.notified()).await.is_err() {
            panic!(
                "batch incomplete after 60 s: {} of {} handler runs",
                self.count.load(Ordering::SeqCst),
                self.target.load(Ordering::SeqCst)
            );
        }
    }
}

/// The `#[handler]` functions named `name`, out of every one linked into the bench.
pub fn registered(name: &str) -> Vec<Handler> {
    let found: Vec<Handler> = registered_handlers().into_iter().filter(|h| h.name() == name).collect();
    assert_eq!(found.len(), 1, "handler `{name}` is not registered");
    found
}

/// The runtime of the inline (sync) benches.
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// The runtime of the async benches: multi-thread, 2 workers.
pub fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// An event flattened into the columns the stores keep, made here the way the stores
/// make theirs, so that a raw baseline writes the same rows.
#[allow(dead_code, reason = "each store bench uses some of the columns")]
pub struct Columns {
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub subject: Option<String>,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub version: Option<String>,
    pub tenant: Option<String>,
    pub correlation_id: Option<String>,
    pub data: String,
    pub metadata: String,
}

#[allow(dead_code, reason = "used by the store benches only")]
impl Columns {
    pub fn of<T: serde::Serialize>(e: &better_auth_events::Envelope<T>) -> Self {
        Self {
            id: e.id.to_string(),
            event_type: e.event_type.as_str().to_owned(),
            source: e.source.to_string(),
            subject: e.subject.clone(),
            timestamp: e.timestamp,
            version: e.version.as_deref().map(str::to_owned),
            tenant: e.metadata.tenant.clone(),
            correlation_id: e.metadata.correlation_id.clone(),
            data: serde_json::to_string(&e.data).expect("payload serializes"),
            metadata: serde_json::to_string(&e.metadata).expect("metadata serializes"),
        }
    }
}
