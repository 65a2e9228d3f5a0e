//! Error chains: each error's message says only what its own layer adds, and its cause is
//! reached through `source()`, so a chain printed link by link (as `anyhow` and log
//! helpers do) names every cause once.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::{DeliveryFailure, Error, ErrorChain, Handler};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "errors.order", version = "1.0.0")]
struct Order {
    id: u32,
}

/// An error of the application with its own cause, as a handler would return it.
#[derive(Debug)]
struct SaveFailed(std::io::Error);

impl fmt::Display for SaveFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot save the order")
    }
}

impl StdError for SaveFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

fn disk_full() -> std::io::Error {
    std::io::Error::other("disk full")
}

/// The messages of `err` and of each of its sources, outermost first.
fn messages(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

/// Checks that no message of the chain repeats one of its causes, and returns the messages.
fn assert_no_repeats(err: &(dyn StdError + 'static)) -> Vec<String> {
    assert_no_repeats_in_first(err, usize::MAX)
}

/// Checks that none of the first `ours` messages of the chain (those this crate writes)
/// repeats a cause; a driver's own errors further down are left as they are.
fn assert_no_repeats_in_first(err: &(dyn StdError + 'static), ours: usize) -> Vec<String> {
    let chain = messages(err);
    for (i, outer) in chain.iter().enumerate().take(ours) {
        assert!(!outer.is_empty(), "an empty message in {chain:#?}");
        for inner in &chain[i + 1..] {
            assert_ne!(outer, inner, "a message appears twice in {chain:#?}");
            assert!(!outer.contains(inner.as_str()), "`{outer}` repeats its cause `{inner}`: {chain:#?}");
        }
    }
    chain
}

/// A bus with one sync handler of `Order` that fails with what `fail` returns.
async fn failing_bus(name: &'static str, fail: fn() -> HandlerError) -> EventBus {
    EventBus::builder()
        .handler(Handler::typed(HandlerOptions::new().name(name), async move |_: &Envelope<Order>| Err(fail())))
        .try_build()
        .await
        .expect("bus builds")
}

#[tokio::test]
async fn a_handler_error_through_emit_names_its_cause_once() {
    let bus = EventBus::builder()
        .handler(Handler::typed(HandlerOptions::new().name("write"), async |_: &Envelope<Order>| {
            Err(HandlerError::from_error(disk_full()))
        }))
        .try_build()
        .await
        .expect("bus builds");
    let err = bus.emit(Order { id: 1 }).await.expect_err("the handler fails");
    assert!(matches!(err.as_handler_error(), Some(HandlerError::Failed(_))), "{err:?}");
    let chain = assert_no_repeats(&err);
    assert_eq!(chain, ["handler `write` failed for event `errors.order`", "disk full"]);
    assert_eq!(ErrorChain(&err).to_string(), "handler `write` failed for event `errors.order`: disk full");
}

#[tokio::test]
async fn a_wrapped_error_with_its_own_cause_keeps_every_layer_once() {
    let bus = failing_bus("save", || HandlerError::from_error(SaveFailed(disk_full()))).await;
    let err = bus.emit(Order { id: 2 }).await.expect_err("the handler fails");
    let chain = assert_no_repeats(&err);
    assert_eq!(chain, ["handler `save` failed for event `errors.order`", "cannot save the order", "disk full"]);

    // The same through `anyhow`, whose context is a layer of its own.
    let bus = EventBus::builder()
        .handler(Handler::typed(HandlerOptions::new().name("save"), async |_: &Envelope<Order>| {
            Err(HandlerError::from_error(anyhow::Error::new(disk_full()).context("cannot save the order")))
        }))
        .try_build()
        .await
        .expect("bus builds");
    let err = bus.emit(Order { id: 3 }).await.expect_err("the handler fails");
    let chain = assert_no_repeats(&err);
    assert_eq!(chain, ["handler `save` failed for event `errors.order`", "cannot save the order", "disk full"]);
}

#[tokio::test]
async fn a_permanent_error_says_so_once_and_keeps_its_cause() {
    let bus = failing_bus("check", || HandlerError::permanent("malformed order")).await;
    let err = bus.emit(Order { id: 4 }).await.expect_err("the handler fails");
    let chain = assert_no_repeats(&err);
    assert_eq!(chain, ["handler `check` failed for event `errors.order`", "malformed order (permanent: not retried)"]);

    let bus = failing_bus("save", || HandlerError::Permanent(Box::new(SaveFailed(disk_full())))).await;
    let err = bus.emit(Order { id: 5 }).await.expect_err("the handler fails");
    let chain = assert_no_repeats(&err);
    assert_eq!(
        chain,
        [
            "handler `save` failed for event `errors.order`",
            "cannot save the order (permanent: not retried)",
            "disk full"
        ]
    );
}

#[tokio::test]
async fn an_async_delivery_failure_names_its_cause_once() {
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let s = Arc::clone(&seen);
    let bus = EventBus::builder()
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("later").retry(RetryPolicy::default().max_attempts(1)),
            async |_: &Envelope<Order>| Err(HandlerError::from_error(SaveFailed(disk_full()))),
        ))
        .on_failure(move |failure: &DeliveryFailure| s.lock().unwrap().push(assert_no_repeats(failure.error)))
        .try_build()
        .await
        .expect("bus builds");
    bus.emit(Order { id: 6 }).await.expect("async failures do not reach the emitter");
    bus.shutdown(Duration::from_secs(30)).await.expect("shutdown");
    assert_eq!(*seen.lock().unwrap(), [["cannot save the order", "disk full"]]);
}

#[test]
fn store_and_backend_errors_name_their_cause_once() {
    let err = Error::store("down", SaveFailed(disk_full()));
    assert_eq!(assert_no_repeats(&err), ["event store `down` failed", "cannot save the order", "disk full"]);
    let err = Error::backend("queue", "connection reset");
    assert_eq!(assert_no_repeats(&err), ["async backend `queue` failed", "connection reset"]);
}

#[tokio::test]
async fn a_serialization_error_names_its_cause_once() {
    let err = Event::new("errors.order").with_data(json!({ "id": "one" })).into_typed::<Order>().expect_err("bad id");
    assert!(matches!(err, Error::Serialization { .. }), "{err:?}");
    let chain = assert_no_repeats(&err);
    assert_eq!(chain[0], "cannot (de)serialize event `errors.order`");
    assert_eq!(chain.len(), 2, "{chain:?}");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_sqlite_store_error_names_its_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing").join("events.db");
    let err = better_auth_events::store::SqliteStore::open(&path).await.expect_err("no such directory");
    let chain = assert_no_repeats(&err);
    assert_eq!(chain[0], "event store `sqlite` failed");
    assert!(chain[1].starts_with("cannot open SQLite database at"), "{chain:?}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_postgres_store_error_names_its_cause_once() {
    let err = better_auth_events::store::PostgresStore::builder("postgres://app@127.0.0.1:1/test")
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect_err("nothing listens on port 1");
    let chain = assert_no_repeats_in_first(&err, 2);
    assert_eq!(chain[0], "event store `postgres` failed");
    assert_eq!(chain[1], "cannot connect to PostgreSQL at postgres://app@127.0.0.1:1/test");
    assert!(chain.len() >= 3, "the driver's error is a cause of its own: {chain:?}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_store_error_names_its_cause_once() {
    let err = better_auth_events::store::RedisStore::builder("redis://127.0.0.1:1")
        .build()
        .await
        .expect_err("nothing listens on port 1");
    let chain = assert_no_repeats_in_first(&err, 2);
    assert_eq!(chain[0], "event store `redis` failed");
    assert!(chain[1].starts_with("cannot connect to Redis at redis://127.0.0.1:1"), "{chain:?}");
    assert!(chain.len() >= 3, "the driver's error is a cause of its own: {chain:?}");
}
