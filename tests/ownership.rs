//! What a bus owns and when it lets go: dropping a bus without `shutdown` stops its
//! workers and frees its handlers; `unregister` frees the handler it removes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::{Error, Handler};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.ownership.ping", version = "1.0.0")]
struct Ping {
    n: u32,
}

/// Polls `done` every 5 ms until it holds, for at most 10 s; then fails with `what`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_bus_without_shutdown_stops_its_workers_and_frees_its_handlers() -> Result<(), Error> {
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let token = Arc::new(());
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (token, runs) = (Arc::clone(&token), Arc::clone(&runs));
        Handler::typed(HandlerOptions::asynchronous().name("holder"), async move |_: &Envelope<Ping>| {
            let _held = &token;
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    };
    let bus = EventBus::builder().handler(handler).workers(4).try_build().await?;
    bus.emit(Ping { n: 1 }).await?;
    eventually("the async handler ran", || runs.load(Ordering::SeqCst) == 1).await;
    assert!(metrics.num_alive_tasks() >= tasks_before + 4, "the pool's 4 workers are running");

    drop(bus);
    eventually("the workers exited", || metrics.num_alive_tasks() == tasks_before).await;
    eventually("the handler was dropped", || Arc::strong_count(&token) == 1).await;
    Ok(())
}

#[tokio::test]
async fn dropping_a_bus_runs_what_its_pool_had_queued() -> Result<(), Error> {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        Handler::typed(HandlerOptions::asynchronous().name("counter"), async move |_: &Envelope<Ping>| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    };
    let bus = EventBus::builder().handler(handler).workers(1).try_build().await?;
    for n in 0..50 {
        bus.emit(Ping { n }).await?;
    }
    drop(bus);
    eventually("all 50 queued deliveries ran", || runs.load(Ordering::SeqCst) == 50).await;
    Ok(())
}

#[tokio::test]
async fn unregister_frees_a_handler_the_bus_already_routed_to() -> Result<(), Error> {
    let bus = EventBus::builder().try_build().await?;
    let token = Arc::new(());
    // The handler holds the bus itself: only `unregister` can break that cycle.
    let handler = {
        let (token, holds_bus) = (Arc::clone(&token), bus.clone());
        Handler::typed(HandlerOptions::new().name("holds-the-bus"), async move |_: &Envelope<Ping>| {
            let _held = (&token, &holds_bus);
            Ok(())
        })
    };
    bus.register(handler)?;
    let receipt = bus.emit(Ping { n: 1 }).await?;
    assert_eq!(receipt.handlers_run, 1);
    bus.emit(Ping { n: 2 }).await?;

    assert!(bus.unregister("holds-the-bus"));
    assert_eq!(Arc::strong_count(&token), 1, "unregister dropped the handler and what it captured");
    assert_eq!(bus.emit(Ping { n: 3 }).await?.handlers_run, 0);
    Ok(())
}
