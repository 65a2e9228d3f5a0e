//! The consumer side, on the in-process `MemoryBroker` (the conformance suite runs the same
//! semantics against the real brokers): one message per event for every handler, retries
//! through the broker that leave other handlers alone, dead letters in the store's queue
//! (redriven into the worker) or the broker's, poison messages, shutdown, the producer's
//! outbox republishing what the broker refused, and the `RecordingBackend` test kit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::broker::{Broker, Consumer, MemoryBroker, Outgoing, RecordingBackend, Subscription};
use better_auth_events::dlq::{DLQHandler, DeadLetterFilter, DeliveryLog};
use better_auth_events::prelude::*;
use better_auth_events::{Error, Handler, WorkerReport};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "test.worker.order_placed", version = "1.0.0")]
struct OrderPlaced {
    order: u32,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "test.worker.user_left", version = "1.0.0")]
struct UserLeft {
    user: String,
}

/// Polls `done` every 5 ms until it holds, failing with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// An async handler of `OrderPlaced` named `name` that counts its runs.
fn counting(name: &'static str, runs: &Arc<AtomicUsize>) -> Handler {
    let runs = Arc::clone(runs);
    Handler::typed(HandlerOptions::asynchronous().name(name), async move |_: &Envelope<OrderPlaced>| {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

/// A worker on `broker` with `handlers`, running in the background until `stop` fires.
fn spawn_worker(
    broker: &MemoryBroker,
    handlers: Vec<Handler>,
    configure: impl FnOnce(better_auth_events::WorkerBuilder) -> better_auth_events::WorkerBuilder + Send + 'static,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<WorkerReport, Error>>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let builder =
        configure(Worker::builder().broker(broker.clone()).handlers(handlers).fetch_wait(Duration::from_millis(50)));
    let task = tokio::spawn(async move {
        builder
            .build()
            .await?
            .run_until(async move {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handler_gets_each_event_from_one_message() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let (a, b) = (counter(), counter());
    let (stop, worker) = spawn_worker(&broker, vec![counting("emails", &a), counting("audit", &b)], |w| w);
    // The producer knows the two handlers: still one message per event.
    let counted = Flaky::new(&broker, false);
    let unused = (counter(), counter());
    let bus = EventBus::builder()
        .broker(counted.clone())
        .handler(counting("emails", &unused.0))
        .handler(counting("audit", &unused.1))
        .try_build()
        .await?;
    // Let the worker subscribe before publishing: a new subscription starts at new messages.
    wait_until(Duration::from_secs(5), "the subscriptions", || broker.pending("emails") == 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for order in 0..10 {
        let receipt = bus.emit(OrderPlaced { order }).await?;
        assert_eq!(receipt.async_deliveries, 1, "one message per event");
    }
    assert_eq!(counted.publishes.load(Ordering::SeqCst), 10, "ten events, ten messages");
    // A producer that knows no handler publishes too: the broker routes.
    let bare = EventBus::builder().broker(broker.clone()).try_build().await?;
    bare.emit(OrderPlaced { order: 10 }).await?;
    wait_until(Duration::from_secs(5), "both handlers", || {
        a.load(Ordering::SeqCst) == 11 && b.load(Ordering::SeqCst) == 11
    })
    .await;
    assert_eq!(unused.0.load(Ordering::SeqCst) + unused.1.load(Ordering::SeqCst), 0, "nothing runs in the producer");
    let _ = stop.send(());
    let report = worker.await.expect("worker task")?;
    assert_eq!(report.succeeded, 22);
    assert_eq!(report.dead, 0);
    assert_eq!(broker.pending("emails") + broker.pending("audit"), 0, "everything acknowledged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_retries_through_the_broker_without_disturbing_the_other() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let attempts = Arc::new(Attempts::default());
    let flaky = registered("flaky");
    let steady = counter();
    let a = Arc::clone(&attempts);
    let (stop, worker) = spawn_worker(&broker, vec![flaky, counting("steady", &steady)], move |w| w.dependency_arc(a));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = EventBus::builder().broker(broker.clone()).try_build().await?;
    bus.emit(OrderPlaced { order: 1 }).await?;
    wait_until(Duration::from_secs(10), "the third attempt", || {
        attempts.seen.lock().map(|a| a.len()).unwrap_or(0) == 3
    })
    .await;
    let _ = stop.send(());
    let report = worker.await.expect("worker task")?;
    let attempts = attempts.seen.lock().expect("attempts").clone();
    assert_eq!(attempts.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2, 3], "the broker counts attempts");
    for pair in attempts.windows(2) {
        assert!(pair[1].1 - pair[0].1 >= Duration::from_millis(90), "a retry came before its backoff");
    }
    assert_eq!(steady.load(Ordering::SeqCst), 1, "the steady handler ran once, untouched by the retries");
    assert_eq!((report.succeeded, report.retried, report.dead), (2, 2, 0));
    Ok(())
}

/// Fails until `fixed` is set.
#[derive(Default)]
struct Mailer {
    fixed: AtomicBool,
    runs: AtomicUsize,
}

#[handler(async, name = "mailer", retry(max_attempts = 2, backoff = "fixed", base = "10ms", jitter = false))]
async fn mailer(_: &OrderPlaced, mailer: Dep<Mailer>) -> Result<(), HandlerError> {
    mailer.runs.fetch_add(1, Ordering::SeqCst);
    if mailer.fixed.load(Ordering::SeqCst) { Ok(()) } else { Err(HandlerError::new("mail server refused")) }
}

/// Every attempt of `flaky`: its number and when it started.
#[derive(Default)]
struct Attempts {
    seen: Mutex<Vec<(u32, std::time::Instant)>>,
}

#[handler(async, name = "flaky", retry(max_attempts = 5, backoff = "fixed", base = "100ms", jitter = false))]
async fn flaky(_: &OrderPlaced, ctx: &HandlerContext, attempts: Dep<Attempts>) -> Result<(), HandlerError> {
    let mut seen = attempts.seen.lock().map_err(|_| HandlerError::new("poisoned"))?;
    seen.push((ctx.attempt(), std::time::Instant::now()));
    if seen.len() < 3 { Err(HandlerError::new("smtp down")) } else { Ok(()) }
}

/// The `#[handler]` of this file named `name`.
fn registered(name: &str) -> Handler {
    registered_handlers().into_iter().find(|h| h.name() == name).expect("a handler of this file")
}

fn mailer_handler() -> Handler {
    registered("mailer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_failure_lands_in_the_store_and_a_redrive_runs_in_the_worker() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let store = Arc::new(MemoryStore::new());
    let mailer = Arc::new(Mailer::default());
    let (m, s) = (Arc::clone(&mailer), Arc::clone(&store));
    let (stop, worker) =
        spawn_worker(&broker, vec![mailer_handler()], move |w| w.store_arc(s as Arc<dyn EventStore>).dependency_arc(m));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = EventBus::builder().broker(broker.clone()).try_build().await?;
    let receipt = bus.emit(OrderPlaced { order: 7 }).await?;
    let dlq = DLQHandler::from_arc(Arc::clone(&store) as Arc<dyn DeliveryLog>);
    let mut letters = Vec::new();
    for _ in 0..400 {
        letters = dlq.list(DeadLetterFilter::default()).await?;
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(letters.len(), 1, "the failure is in the store's dead-letter queue");
    assert_eq!(letters[0].event.id, receipt.id);
    assert_eq!(letters[0].handler, "mailer");
    assert_eq!(letters[0].attempts, 2);
    assert_eq!(mailer.runs.load(Ordering::SeqCst), 2);
    assert!(broker.dead_letters().is_empty(), "not also in the broker's dead letters");
    assert_eq!(broker.pending("mailer"), 0, "acknowledged once buried");

    mailer.fixed.store(true, Ordering::SeqCst);
    assert!(dlq.redrive(letters[0].id).await?);
    wait_until(Duration::from_secs(10), "the redriven delivery", || mailer.runs.load(Ordering::SeqCst) == 3).await;
    let _ = stop.send(());
    worker.await.expect("worker task")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_a_final_failure_goes_to_the_brokers_dead_letters() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let mailer = Arc::new(Mailer::default());
    let m = Arc::clone(&mailer);
    let (stop, worker) = spawn_worker(&broker, vec![mailer_handler()], move |w| w.dependency_arc(m));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = EventBus::builder().broker(broker.clone()).try_build().await?;
    bus.emit(OrderPlaced { order: 3 }).await?;
    wait_until(Duration::from_secs(5), "the dead letter", || !broker.dead_letters().is_empty()).await;
    let dead = broker.dead_letters();
    assert_eq!(dead[0].group, "mailer");
    assert!(dead[0].reason.contains("mail server refused"), "{}", dead[0].reason);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mailer.runs.load(Ordering::SeqCst), 2, "never delivered again");
    let _ = stop.send(());
    let report = worker.await.expect("worker task")?;
    assert_eq!(report.dead, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_at_once_and_never_run() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let store = Arc::new(MemoryStore::new());
    let runs = counter();
    let s = Arc::clone(&store);
    let (stop, worker) =
        spawn_worker(&broker, vec![counting("orders", &runs)], move |w| w.store_arc(s as Arc<dyn EventStore>));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not a CloudEvent at all.
    broker.publish_raw("test.worker.order_placed", b"hello".to_vec());
    // A CloudEvent whose payload is not an `OrderPlaced`.
    let bad = Event::new("test.worker.order_placed").with_data(json!({ "order": "seven" }));
    broker.publish(&Outgoing::new(&bad)?).await?;
    // A CloudEvent of another type on this handler's subscription.
    let stray = Event::new("test.worker.stray").with_data(json!({ "order": 1 }));
    broker.publish_raw("test.worker.order_placed", Outgoing::new(&stray)?.structured_shared());
    let dlq = DLQHandler::from_arc(Arc::clone(&store) as Arc<dyn DeliveryLog>);
    let mut letters = Vec::new();
    for _ in 0..400 {
        letters = dlq.list(DeadLetterFilter::default()).await?;
        if letters.len() == 2 && !broker.dead_letters().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let raw = broker.dead_letters();
    assert_eq!(raw.len(), 1, "the message that is not a CloudEvent is in the broker's dead letters");
    assert!(raw[0].reason.contains("not a CloudEvent"), "{}", raw[0].reason);
    assert_eq!(letters.len(), 2, "the unreadable and the stray event are in the store's queue");
    let mut ids: Vec<_> = letters.iter().map(|l| l.event.id).collect();
    ids.sort();
    let mut want = vec![bad.id, stray.id];
    want.sort();
    assert_eq!(ids, want);
    assert!(letters.iter().all(|l| l.attempts == 0), "they never ran");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(broker.pending("orders"), 0, "neither is retried");
    let _ = stop.send(());
    assert_eq!(worker.await.expect("worker task")?.dead, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_finishes_running_handlers_and_leaves_the_rest_to_the_broker() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let (started, finished) = (counter(), counter());
    let (s, f) = (Arc::clone(&started), Arc::clone(&finished));
    let slow = Handler::typed(HandlerOptions::asynchronous().name("slow"), async move |_: &Envelope<OrderPlaced>| {
        s.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let (stop, worker) = spawn_worker(&broker, vec![slow.clone()], |w| w.concurrency(2).prefetch(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = EventBus::builder().broker(broker.clone()).try_build().await?;
    for order in 0..6 {
        bus.emit(OrderPlaced { order }).await?;
    }
    wait_until(Duration::from_secs(5), "two running handlers", || started.load(Ordering::SeqCst) >= 2).await;
    let _ = stop.send(());
    let report = worker.await.expect("worker task")?;
    let done = finished.load(Ordering::SeqCst);
    assert_eq!(done, started.load(Ordering::SeqCst), "every handler that started finished");
    assert_eq!(report.succeeded as usize, done);
    assert_eq!(report.unfinished, 0);
    assert!(done < 6, "the shutdown stopped fetching");
    assert_eq!(broker.pending("slow"), 6 - done, "the rest waits in the broker");

    // The next worker runs the rest.
    let (stop, worker) = spawn_worker(&broker, vec![slow], |w| w.concurrency(6));
    wait_until(Duration::from_secs(5), "the rest", || finished.load(Ordering::SeqCst) == 6).await;
    let _ = stop.send(());
    worker.await.expect("worker task")?;
    assert_eq!(started.load(Ordering::SeqCst), 6, "nothing ran twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_the_shutdown_deadline_is_left_unacknowledged_and_runs_again() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let runs = counter();
    let r = Arc::clone(&runs);
    let stuck = Handler::typed(HandlerOptions::asynchronous().name("stuck"), async move |_: &Envelope<OrderPlaced>| {
        if r.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Ok(())
    });
    let (stop, worker) = spawn_worker(&broker, vec![stuck.clone()], |w| {
        w.shutdown_deadline(Duration::from_millis(100)).visibility_timeout(Duration::from_millis(300))
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = EventBus::builder().broker(broker.clone()).try_build().await?;
    bus.emit(OrderPlaced { order: 1 }).await?;
    wait_until(Duration::from_secs(5), "the first run", || runs.load(Ordering::SeqCst) == 1).await;
    let _ = stop.send(());
    let report = worker.await.expect("worker task")?;
    assert_eq!(report.unfinished, 1);
    assert_eq!(broker.pending("stuck"), 1, "not acknowledged");
    let (stop, worker) = spawn_worker(&broker, vec![stuck], |w| w.visibility_timeout(Duration::from_millis(300)));
    wait_until(Duration::from_secs(5), "the redelivery", || runs.load(Ordering::SeqCst) == 2).await;
    let _ = stop.send(());
    assert_eq!(worker.await.expect("worker task")?.succeeded, 1);
    Ok(())
}

/// A broker that refuses publishes while `down` is set, and counts them.
#[derive(Clone)]
struct Flaky {
    inner: MemoryBroker,
    down: Arc<AtomicBool>,
    publishes: Arc<AtomicUsize>,
}

impl Flaky {
    fn new(inner: &MemoryBroker, down: bool) -> Self {
        Self { inner: inner.clone(), down: Arc::new(AtomicBool::new(down)), publishes: counter() }
    }
}

#[async_trait]
impl Broker for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn publish(&self, message: &Outgoing) -> Result<(), Error> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::backend("flaky", "connection refused"));
        }
        self.inner.publish(message).await
    }
    async fn subscribe(&self, subscription: &Subscription) -> Result<Box<dyn Consumer>, Error> {
        self.inner.subscribe(subscription).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_outbox_an_event_the_broker_refused_is_published_once_it_is_back() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let flaky = Flaky::new(&broker, true);
    let runs = counter();
    let (stop, worker) = spawn_worker(&broker, vec![counting("orders", &runs)], |w| w);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = EventBus::builder()
        .store(MemoryStore::new())
        .broker(flaky.clone())
        .outbox_poll_interval(Duration::from_millis(50))
        .try_build()
        .await?;
    let receipt = bus.emit(OrderPlaced { order: 1 }).await?;
    assert!(receipt.position.is_some(), "stored although the broker is down");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(broker.published(), 0);
    flaky.down.store(false, Ordering::SeqCst);
    wait_until(Duration::from_secs(5), "the republished event", || runs.load(Ordering::SeqCst) == 1).await;
    // A second emit of the same event is not published again.
    let mut again = Envelope::of(OrderPlaced { order: 1 });
    again.id = receipt.id;
    bus.emit(again).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(broker.published(), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    bus.shutdown(Duration::from_secs(1)).await?;
    let _ = stop.send(());
    worker.await.expect("worker task")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_hands_the_producers_trace_and_metadata_to_the_handler() -> Result<(), Error> {
    let broker = MemoryBroker::new();
    let seen = Arc::new(Mutex::new(None));
    let s = Arc::clone(&seen);
    let h = Handler::typed(HandlerOptions::asynchronous().name("traced"), async move |e: &Envelope<UserLeft>| {
        if let Ok(mut seen) = s.lock() {
            *seen = Some((e.metadata.traceparent.clone(), e.metadata.correlation_id.clone(), e.data.clone()));
        }
        Ok(())
    });
    let (stop, worker) = spawn_worker(&broker, vec![h], |w| w);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = EventBus::builder().broker(broker.clone()).try_build().await?;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    bus.emit(Envelope::of(UserLeft { user: "u-9".into() }).with_traceparent(trace).with_correlation_id("c-9")).await?;
    wait_until(Duration::from_secs(5), "the handler", || seen.lock().map(|s| s.is_some()).unwrap_or(false)).await;
    let _ = stop.send(());
    worker.await.expect("worker task")?;
    let seen = seen.lock().expect("seen").clone().expect("handled");
    assert_eq!(seen, (Some(trace.to_owned()), Some("c-9".to_owned()), UserLeft { user: "u-9".into() }));
    Ok(())
}

#[tokio::test]
async fn a_worker_without_a_broker_or_async_handlers_says_what_is_missing() {
    let err = Worker::builder().build().await.err().expect("no broker");
    assert!(err.to_string().contains("needs a broker"), "{err}");
    let sync_only = Handler::typed(HandlerOptions::new().name("inline"), async |_: &Envelope<OrderPlaced>| Ok(()));
    let err = Worker::builder().broker(MemoryBroker::new()).handler(sync_only).build().await.err().expect("no async");
    assert!(err.to_string().contains("no async handler"), "{err}");
}

#[tokio::test]
async fn the_recording_backend_records_each_event_once_for_assertions() -> Result<(), Error> {
    let recorder = RecordingBackend::new();
    let runs = counter();
    let bus = EventBus::builder()
        .backend(recorder.clone())
        .handler(counting("emails", &runs))
        .handler(counting("audit", &runs))
        .try_build()
        .await?;
    bus.emit(OrderPlaced { order: 4 }).await?;
    bus.emit(UserLeft { user: "u-1".into() }).await?;
    assert_eq!(recorder.len(), 2, "one record per event, not per handler");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing runs");
    recorder.assert_sequence(&["test.worker.order_placed", "test.worker.user_left"]);
    let order = recorder.assert_emitted_typed::<OrderPlaced>();
    assert_eq!(order.data, OrderPlaced { order: 4 });
    assert_eq!(recorder.of_type::<UserLeft>()?.len(), 1);
    recorder.assert_not_emitted("test.worker.unknown");
    let missing = std::panic::catch_unwind(|| recorder.assert_emitted("test.worker.unknown"));
    let message = missing.err().and_then(|p| p.downcast::<String>().ok()).expect("a panic with a message");
    assert!(message.contains("test.worker.order_placed, test.worker.user_left"), "{message}");
    assert_eq!(recorder.take().len(), 2);
    assert!(recorder.is_empty());
    Ok(())
}
