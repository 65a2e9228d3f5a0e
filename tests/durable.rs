//! Delivery guarantees of async handlers: retries on timers, the dead-letter queue reached
//! through the bus, the outbox that survives a shutdown, room reserved before an event is
//! stored, and several buses sharing one store's pending deliveries.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::dlq::{DLQHandler, DeadLetterFilter, DeadLetterState, DeliveryLog, FailureKind};
use better_auth_events::prelude::*;
use better_auth_events::{DeliveryFailure, Error, EventQuery, Handler, StoredEvent};

mod support;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.durable.mail_requested", version = "1.0.0")]
struct MailRequested {
    to: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.durable.order_placed", version = "1.0.0")]
struct OrderPlaced {
    qty: u32,
}

/// Polls `done` every 5 ms until it holds, failing with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The same, for a condition that must be awaited.
async fn wait_for<F: std::future::Future<Output = bool>>(limit: Duration, what: &str, mut done: impl FnMut() -> F) {
    let start = std::time::Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn mail(i: usize) -> MailRequested {
    MailRequested { to: format!("user{i}@example.com") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_backoff_wait_on_timers_and_fresh_ones_run_at_once() -> Result<(), Error> {
    let (failing, fresh) = (counter(), counter());
    let (f, g) = (Arc::clone(&failing), Arc::clone(&fresh));
    let slow_retry = RetryPolicy::default().max_attempts(3).base(Duration::from_secs(30)).jitter(false);
    let bus = EventBus::builder()
        .workers(10)
        .queue_size(1000)
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("always-fails").retry(slow_retry),
            async move |_: &Envelope<MailRequested>| {
                f.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::new("smtp down"))
            },
        ))
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("fresh"),
            async move |_: &Envelope<OrderPlaced>| {
                g.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        ))
        .try_build()
        .await?;
    for i in 0..100 {
        bus.emit(mail(i)).await?;
    }
    wait_until(Duration::from_secs(10), "100 first attempts", || failing.load(Ordering::SeqCst) == 100).await;
    // A hundred deliveries wait 30 s for their retry; ten workers are still free.
    for qty in 0..50 {
        bus.emit(OrderPlaced { qty }).await?;
    }
    wait_until(Duration::from_secs(5), "the fresh deliveries", || fresh.load(Ordering::SeqCst) == 50).await;
    assert_eq!(failing.load(Ordering::SeqCst), 100, "no retry ran before its time");

    // Without a store, a shutdown lists the deliveries still in backoff, each with its event.
    let report = bus.shutdown(Duration::from_millis(50)).await?;
    assert_eq!(report.unfinished.len(), 100, "{report:?}");
    let first = &report.unfinished[0];
    assert_eq!(first.attempts, 1);
    assert_eq!(first.handler, "always-fails");
    let event = first.event.as_ref().expect("the event travels with the report");
    assert_eq!(event.id, first.event_id);
    assert!(event.data["to"].as_str().is_some_and(|to| to.ends_with("@example.com")), "{:?}", event.data);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_handler_can_ask_for_its_next_attempt_later_than_the_backoff() -> Result<(), Error> {
    let attempts: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let seen = Arc::clone(&attempts);
    let fast = RetryPolicy::default().max_attempts(3).base(Duration::from_millis(1)).jitter(false);
    let bus = EventBus::builder()
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("rate-limited-mailer").retry(fast),
            async move |_: &Envelope<MailRequested>| {
                let n = {
                    let mut seen = seen.lock().map_err(|_| HandlerError::new("poisoned"))?;
                    seen.push(tokio::time::Instant::now());
                    seen.len()
                };
                if n == 1 { Err(HandlerError::retry_after(Duration::from_secs(30))) } else { Ok(()) }
            },
        ))
        .try_build()
        .await?;
    bus.emit(mail(1)).await?;
    let report = bus.shutdown(Duration::from_secs(120)).await?;
    assert!(report.is_complete(), "{report:?}");
    let attempts = attempts.lock().expect("lock").clone();
    assert_eq!(attempts.len(), 2);
    let waited = attempts[1] - attempts[0];
    assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(31), "waited {waited:?}");
    Ok(())
}

/// What a handler saw of its context on each attempt.
#[derive(Clone, Debug)]
struct Seen {
    attempt: u32,
    delivery_id: uuid::Uuid,
    redriven_from: Option<uuid::Uuid>,
}

/// The state of the welcome mailer: whether its bug is fixed, and every attempt.
#[derive(Default)]
struct Mailer {
    fixed: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

#[handler(async, name = "welcome-mail", retry(max_attempts = 3, backoff = "fixed", base = "2ms", jitter = false))]
async fn welcome_mail(_: &MailRequested, ctx: &HandlerContext, mailer: Dep<Mailer>) -> Result<(), HandlerError> {
    if let Ok(mut seen) = mailer.seen.lock() {
        seen.push(Seen { attempt: ctx.attempt(), delivery_id: ctx.delivery_id(), redriven_from: ctx.redriven_from() });
    }
    if mailer.fixed.load(Ordering::SeqCst) {
        Ok(())
    } else {
        Err(HandlerError::from_error(std::io::Error::other("connection refused")))
    }
}

async fn failed_deliveries_reach_the_dead_letter_queue_and_a_redrive_runs_them_again(
    store: Arc<dyn DeliveryLog>,
) -> Result<(), Error> {
    let mailer = Arc::new(Mailer::default());
    let hooked = counter();
    let h = Arc::clone(&hooked);
    let bus = EventBus::builder()
        .store_arc(Arc::clone(&store) as Arc<dyn EventStore>)
        .outbox_poll_interval(Duration::from_millis(20))
        .handlers(registered_handlers().into_iter().filter(|h| h.name() == "welcome-mail"))
        .dependency_arc(Arc::clone(&mailer))
        .on_failure(move |_: &DeliveryFailure| {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .try_build()
        .await?;
    let receipt = bus.emit(mail(7)).await?;
    let dlq = DLQHandler::from_arc(Arc::clone(&store));
    wait_for(Duration::from_secs(10), "the dead letter", || {
        let dlq = dlq.clone();
        async move { dlq.counts().await.map(|c| c.total == 1).unwrap_or(false) }
    })
    .await;
    let letters = dlq.list(DeadLetterFilter::new().handler("welcome-mail")).await?;
    let [letter] = letters.as_slice() else { panic!("one dead letter, got {letters:?}") };
    assert_eq!(letter.event.id, receipt.id);
    assert_eq!(letter.event.data["to"], "user7@example.com");
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.history.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(letter.error.kind, FailureKind::Failed);
    assert_eq!(letter.error.message, "connection refused");
    assert!(letter.first_failure <= letter.last_failure);
    assert_eq!(hooked.load(Ordering::SeqCst), 1, "the failure hook saw it too");
    assert_eq!(store.pending_deliveries().await?, 0, "a dead delivery is no longer pending");

    // Fixed, then redriven: it runs once more, and knows where it came from.
    mailer.fixed.store(true, Ordering::SeqCst);
    assert!(dlq.redrive(letter.id).await?);
    assert!(!dlq.redrive(letter.id).await?, "a second redrive does nothing");
    wait_until(Duration::from_secs(10), "the redriven delivery", || {
        mailer.seen.lock().map(|s| s.len() == 4).unwrap_or(false)
    })
    .await;
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    assert!(report.is_complete(), "{report:?}");
    let seen = mailer.seen.lock().expect("lock").clone();
    assert!(seen.iter().all(|s| s.delivery_id == seen[0].delivery_id), "one delivery id throughout: {seen:?}");
    assert_eq!(seen.iter().map(|s| s.attempt).collect::<Vec<_>>(), [1, 2, 3, 1], "a fresh attempt budget");
    assert_eq!(seen[3].redriven_from, Some(letter.id));
    assert!(matches!(dlq.get(letter.id).await?.state, DeadLetterState::Redriven { .. }));
    assert_eq!(store.pending_deliveries().await?, 0, "the redriven delivery is done");
    assert_eq!(dlq.counts().await?.total, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_failed_deliveries_reach_the_dead_letter_queue_and_a_redrive_runs_them_again() -> Result<(), Error> {
    failed_deliveries_reach_the_dead_letter_queue_and_a_redrive_runs_them_again(Arc::new(MemoryStore::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failed_deliveries_reach_the_dead_letter_queue_and_a_redrive_runs_them_again() -> Result<(), Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = better_auth_events::store::SqliteStore::open(dir.path().join("events.db")).await?;
    failed_deliveries_reach_the_dead_letter_queue_and_a_redrive_runs_them_again(Arc::new(store)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_of_failing_for_good_is_dead_lettered_with_its_kind() -> Result<(), Error> {
    let store = MemoryStore::new();
    let policy = || RetryPolicy::default().max_attempts(2).base(Duration::from_millis(1)).jitter(false);
    let typed_ok = counter();
    let dynamic_runs = counter();
    let (t, d) = (Arc::clone(&typed_ok), Arc::clone(&dynamic_runs));
    let bus = EventBus::builder()
        .store(store.clone())
        .validate_dynamic(false)
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("permanent").retry(policy()),
            async |_: &Envelope<MailRequested>| Err::<(), _>(HandlerError::permanent("address rejected")),
        ))
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("panics").retry(policy()),
            async |e: &Envelope<MailRequested>| -> Result<(), HandlerError> { panic!("no template for {}", e.data.to) },
        ))
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("slow").retry(policy()).timeout(Duration::from_millis(20)),
            async |_: &Envelope<MailRequested>| {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<(), HandlerError>(())
            },
        ))
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("reserve-stock"),
            async move |_: &Envelope<OrderPlaced>| {
                t.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        ))
        .handler(Handler::dynamic(
            OrderPlaced::NAME,
            HandlerOptions::asynchronous().name("audit"),
            async move |_: &better_auth_events::Event| {
                d.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        ))
        .try_build()
        .await?;
    bus.emit(mail(1)).await?;
    // 5,000,000,000 does not fit `reserve-stock`'s `u32`: a poison event for that handler.
    bus.emit(better_auth_events::Event::new(OrderPlaced::NAME).with_data(json!({ "qty": 5_000_000_000_u64 }))).await?;
    let dlq = DLQHandler::new(store.clone());
    wait_for(Duration::from_secs(10), "four dead letters", || {
        let dlq = dlq.clone();
        async move { dlq.counts().await.map(|c| c.total == 4).unwrap_or(false) }
    })
    .await;
    let by_handler: HashMap<String, (FailureKind, u32)> = dlq
        .list(DeadLetterFilter::new())
        .await?
        .into_iter()
        .map(|l| (l.handler.clone(), (l.error.kind, l.attempts)))
        .collect();
    assert_eq!(by_handler["permanent"], (FailureKind::Permanent, 1), "a permanent error is not retried");
    assert_eq!(by_handler["panics"], (FailureKind::Panicked, 2));
    assert_eq!(by_handler["slow"], (FailureKind::TimedOut, 2));
    assert_eq!(by_handler["reserve-stock"], (FailureKind::Poison, 0), "a poison event never runs");
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(dynamic_runs.load(Ordering::SeqCst), 1, "the other handler of the poison event ran");
    assert_eq!(typed_ok.load(Ordering::SeqCst), 0);
    assert_eq!(store.pending_deliveries().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_leaves_unfinished_deliveries_in_the_store_and_the_next_bus_runs_them() -> Result<(), Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let started = counter();
    let s = Arc::clone(&started);
    let first = EventBus::builder()
        .store(better_auth_events::store::SqliteStore::open(&path).await?)
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("deliver"),
            async move |_: &Envelope<MailRequested>| {
                s.fetch_add(1, Ordering::SeqCst);
                // Never finishes: the shutdown has to give up on it.
                std::future::pending::<()>().await;
                Ok::<(), HandlerError>(())
            },
        ))
        .try_build()
        .await?;
    for i in 0..3 {
        first.emit(mail(i)).await?;
    }
    wait_until(Duration::from_secs(5), "three started deliveries", || started.load(Ordering::SeqCst) == 3).await;
    let report = first.shutdown(Duration::from_millis(50)).await?;
    assert_eq!(report.unfinished.len(), 3, "{report:?}");
    drop(first);

    let done = counter();
    let d = Arc::clone(&done);
    let store = better_auth_events::store::SqliteStore::open(&path).await?;
    assert_eq!(store.pending_deliveries().await?, 3, "the unfinished deliveries stayed pending");
    let second = EventBus::builder()
        .store(store.clone())
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("deliver"),
            async move |_: &Envelope<MailRequested>| {
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            },
        ))
        .try_build()
        .await?;
    // Given back at shutdown, they run at once, not after their lease.
    wait_until(Duration::from_secs(5), "the next bus to run them", || done.load(Ordering::SeqCst) == 3).await;
    let report = second.shutdown(Duration::from_secs(5)).await?;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(store.pending_deliveries().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_outbox_a_full_queue_never_refuses_an_emit() -> Result<(), Error> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = better_auth_events::store::SqliteStore::open(dir.path().join("events.db")).await?;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ran = counter();
    let (g, r) = (Arc::clone(&gate), Arc::clone(&ran));
    let bus = EventBus::builder()
        .store(store.clone())
        .workers(1)
        .queue_size(1)
        .backpressure(BackpressurePolicy::FailFast)
        .outbox_poll_interval(Duration::from_millis(20))
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("slow"),
            async move |_: &Envelope<MailRequested>| {
                let _permit = g.acquire().await.map_err(|_| HandlerError::new("gate closed"))?;
                r.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        ))
        .try_build()
        .await?;
    for i in 0..20 {
        let receipt = bus.emit(mail(i)).await?;
        assert_eq!(receipt.async_deliveries, 1);
    }
    gate.add_permits(20);
    wait_until(Duration::from_secs(10), "every delivery", || ran.load(Ordering::SeqCst) == 20).await;
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(store.pending_deliveries().await?, 0);
    Ok(())
}

/// A store without an outbox: what the bus does with a store of the user's own.
struct PlainStore(MemoryStore);

#[async_trait]
impl EventStore for PlainStore {
    fn name(&self) -> &str {
        "plain"
    }
    async fn append_batch(
        &self,
        events: &[&Envelope<dyn EventData>],
    ) -> better_auth_events::Result<Vec<better_auth_events::AppendOutcome>> {
        self.0.append_batch(events).await
    }
    async fn get(&self, id: uuid::Uuid) -> better_auth_events::Result<Option<StoredEvent>> {
        self.0.get(id).await
    }
    async fn count(&self, query: &EventQuery) -> better_auth_events::Result<u64> {
        self.0.count(query).await
    }
    fn stream(&self, query: EventQuery) -> futures::stream::BoxStream<'_, better_auth_events::Result<StoredEvent>> {
        self.0.stream(query)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_outbox_an_emit_refused_for_want_of_room_stores_nothing() -> Result<(), Error> {
    let memory = MemoryStore::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let started = counter();
    let (g, s) = (Arc::clone(&gate), Arc::clone(&started));
    let plain = memory.clone();
    let slow = move |policy| {
        let (g, s) = (Arc::clone(&g), Arc::clone(&s));
        EventBus::builder()
            .store(PlainStore(plain.clone()))
            .workers(1)
            .queue_size(1)
            .backpressure(policy)
            .handler(Handler::typed(
                HandlerOptions::asynchronous().name("slow"),
                async move |_: &Envelope<MailRequested>| {
                    s.fetch_add(1, Ordering::SeqCst);
                    g.acquire().await.map_err(|_| HandlerError::new("gate closed"))?.forget();
                    Ok(())
                },
            ))
            .build()
    };
    for policy in [BackpressurePolicy::FailFast, BackpressurePolicy::WaitFor(Duration::from_millis(30))] {
        let bus = slow(policy);
        let before = started.load(Ordering::SeqCst);
        bus.emit(mail(1)).await?;
        wait_until(Duration::from_secs(5), "the first delivery to run", || {
            started.load(Ordering::SeqCst) == before + 1
        })
        .await;
        bus.emit(mail(2)).await?; // queued
        let stored = memory.query().count().await?;
        match bus.emit(mail(3)).await {
            Err(Error::Backpressure { .. }) => {}
            other => panic!("{policy:?}: expected backpressure, got {other:?}"),
        }
        assert_eq!(memory.query().count().await?, stored, "{policy:?}: a refused emit stored nothing");
        gate.add_permits(2);
        let report = bus.shutdown(Duration::from_secs(5)).await?;
        assert!(report.is_complete(), "{report:?}");
    }

    // An emit waiting for room when the shutdown begins gets `Closed`, and stored nothing.
    let bus = slow(BackpressurePolicy::Wait);
    let before = started.load(Ordering::SeqCst);
    bus.emit(mail(1)).await?;
    wait_until(Duration::from_secs(5), "the first delivery to run", || started.load(Ordering::SeqCst) == before + 1)
        .await;
    bus.emit(mail(2)).await?;
    let stored = memory.query().count().await?;
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.emit(mail(3)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the third emit waits for room");
    let report = bus.shutdown(Duration::from_millis(50)).await?;
    assert!(matches!(waiting.await.expect("join"), Err(Error::Closed)));
    assert_eq!(memory.query().count().await?, stored, "the emit that got `Closed` stored nothing");
    assert_eq!(report.unfinished.len(), 2, "the running and the queued delivery: {report:?}");
    gate.close();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitting_an_event_already_stored_does_not_deliver_it_again() -> Result<(), Error> {
    let runs = counter();
    let r = Arc::clone(&runs);
    let store = MemoryStore::new();
    let bus = EventBus::builder()
        .store(store.clone())
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("once"),
            async move |_: &Envelope<MailRequested>| {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            },
        ))
        .try_build()
        .await?;
    let env = Envelope::of(mail(1));
    let first = bus.emit(env.clone()).await?;
    let again = bus.emit(env).await?;
    assert_eq!((first.async_deliveries, again.async_deliveries), (1, 0));
    assert_eq!(first.position, again.position);
    bus.shutdown(Duration::from_secs(5)).await?;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buses_on_one_postgres_store_share_its_pending_deliveries_and_run_each_once() -> Result<(), Error> {
    use crate::support::postgres::{START, Schema, url};
    let (url, schema) = (url(), Schema::new());
    let open = || async {
        better_auth_events::store::PostgresStore::builder(&url).schema(&schema.0).build().await.unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is unreachable ({e}); start it with `{START}` or set BAE_POSTGRES_URL")
        })
    };
    let runs: Arc<Mutex<HashMap<uuid::Uuid, Vec<usize>>>> = Arc::default();
    let bus = |store, n: usize| {
        let runs = Arc::clone(&runs);
        EventBus::builder()
            .store(store)
            .outbox_poll_interval(Duration::from_millis(10))
            .handler(Handler::typed(
                HandlerOptions::asynchronous().name("charge"),
                async move |e: &Envelope<MailRequested>| {
                    if let Ok(mut runs) = runs.lock() {
                        runs.entry(e.id).or_default().push(n);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok::<(), HandlerError>(())
                },
            ))
            .build()
    };
    let (a, b, c) = (bus(open().await, 0), bus(open().await, 1), bus(open().await, 2));
    // `emit_batch` leaves its deliveries to whichever bus claims them first.
    let receipts = a.emit_batch((0..300).map(mail)).await?;
    assert_eq!(receipts.len(), 300);
    wait_until(Duration::from_secs(30), "300 deliveries", || runs.lock().map(|r| r.len() == 300).unwrap_or(false))
        .await;
    for bus in [&a, &b, &c] {
        let report = bus.shutdown(Duration::from_secs(5)).await?;
        assert!(report.is_complete(), "{report:?}");
    }
    let runs = runs.lock().expect("lock").clone();
    let twice: Vec<_> = runs.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "deliveries run twice: {twice:?}");
    let by_bus = (0..3).map(|n| runs.values().filter(|by| by[0] == n).count()).collect::<Vec<_>>();
    assert!(by_bus.iter().filter(|&&n| n > 0).count() >= 2, "the buses shared the work: {by_bus:?}");
    assert_eq!(open().await.pending_deliveries().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_asked_for_in_ages_waits_a_month_and_panics_nothing() -> Result<(), Error> {
    let store = MemoryStore::new();
    let ran = counter();
    let r = Arc::clone(&ran);
    let bus = EventBus::builder()
        .store(store.clone())
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("ages"),
            async move |_: &Envelope<MailRequested>| {
                r.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::retry_after(Duration::MAX))
            },
        ))
        .try_build()
        .await?;
    bus.emit(mail(1)).await?;
    wait_until(Duration::from_secs(5), "the first attempt", || ran.load(Ordering::SeqCst) == 1).await;
    wait_for(Duration::from_secs(5), "the retry to be scheduled", || {
        let store = store.clone();
        async move {
            store
                .next_due(&["ages"])
                .await
                .ok()
                .flatten()
                .is_some_and(|at| at > chrono::Utc::now() + chrono::Duration::days(29))
        }
    })
    .await;
    assert_eq!(store.pending_deliveries().await?, 1);
    bus.shutdown(Duration::from_millis(100)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_runs_the_retries_that_fall_due_before_its_deadline() -> Result<(), Error> {
    let store = MemoryStore::new();
    let attempts = counter();
    let a = Arc::clone(&attempts);
    let policy = RetryPolicy::default().max_attempts(3).base(Duration::from_millis(50)).jitter(false);
    let bus = EventBus::builder()
        .store(store.clone())
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("flaky-once").retry(policy),
            async move |_: &Envelope<MailRequested>| {
                if a.fetch_add(1, Ordering::SeqCst) == 0 { Err(HandlerError::new("relay busy")) } else { Ok(()) }
            },
        ))
        .try_build()
        .await?;
    bus.emit(mail(1)).await?;
    wait_until(Duration::from_secs(5), "the first attempt", || attempts.load(Ordering::SeqCst) == 1).await;
    let report = bus.shutdown(Duration::from_secs(5)).await?;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "the retry ran before the shutdown returned");
    assert_eq!(bus.stats().succeeded, 1);
    assert_eq!(store.pending_deliveries().await?, 0);
    Ok(())
}
