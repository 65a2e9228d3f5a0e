//! One conformance suite for every broker, the same tests against each real server: publish
//! and consume, fan-out to two handlers, a consumer gone before its ack (the message is
//! delivered again), a failing handler that does not disturb the other, a poison message
//! to the dead-letter queue, a shutdown that finishes the work in flight, a duplicate
//! publish of one event id, concurrent emits each delivered once, and ordering: every
//! broker here keeps publish order for one consumer taking one message at a time (retries
//! and redeliveries aside).
//!
//! Each test opens its broker under names of its own (a stream, exchange, subject prefix
//! or schema with a fresh uuid), so tests run in parallel and can be re-run. A server that
//! is down fails the test.
#![cfg(feature = "postgres")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::broker::{Broker, MemoryBroker, Outgoing, Subscription};
use better_auth_events::dlq::{DLQHandler, DeadLetterFilter, DeliveryLog};
use better_auth_events::prelude::*;
use better_auth_events::{Error, Handler, WorkerReport};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "test.conformance.order_placed", version = "1.0.0")]
struct OrderPlaced {
    order: u32,
}

/// The brokers under test.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Postgres,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "rabbitmq")]
    RabbitMq,
    #[cfg(feature = "nats")]
    Nats,
}

/// What a broker does with a second publish of one event id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Duplicates {
    /// Dropped (within the broker's window).
    Dropped,
    /// Delivered again.
    #[cfg_attr(not(feature = "rabbitmq"), allow(dead_code))]
    Delivered,
}

/// What a test leaves on a server, removed when the test ends.
enum Teardown {
    Nothing,
    /// The schema guard drops the schema when dropped.
    Postgres(#[allow(dead_code, reason = "held for its Drop")] support::postgres::Schema),
    /// The prefix guard deletes its keys when dropped.
    #[cfg(feature = "redis")]
    Redis(#[allow(dead_code, reason = "held for its Drop")] support::redis::Prefix),
    #[cfg(feature = "rabbitmq")]
    RabbitMq(better_auth_events::broker::RabbitMq),
    #[cfg(feature = "nats")]
    Nats(better_auth_events::broker::NatsJetStream),
}

/// A broker opened for one test, with what it promises.
struct Opened {
    broker: Arc<dyn Broker>,
    duplicates: Duplicates,
    /// The handler names (subscription groups) the test used, for the teardown.
    groups: Mutex<Vec<String>>,
    teardown: Teardown,
}

impl Opened {
    fn new(broker: Arc<dyn Broker>, duplicates: Duplicates, teardown: Teardown) -> Self {
        Self { broker, duplicates, groups: Mutex::new(Vec::new()), teardown }
    }

    /// A unique handler name, remembered for the teardown: handlers of different tests on
    /// one broker never share a group.
    fn name(&self, what: &str) -> String {
        let name = format!("conformance::{what}::{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        self.groups.lock().expect("groups").push(name.clone());
        name
    }

    /// Removes what the test declared on the server (queues, exchanges, streams, keys,
    /// schema).
    async fn finish(self) -> Result<(), Error> {
        self.broker.close().await?;
        #[cfg(any(feature = "rabbitmq", feature = "nats"))]
        let groups = self.groups.into_inner().expect("groups");
        match self.teardown {
            Teardown::Nothing | Teardown::Postgres(_) => {}
            #[cfg(feature = "redis")]
            Teardown::Redis(_) => {}
            #[cfg(feature = "rabbitmq")]
            Teardown::RabbitMq(rabbit) => rabbitmq_teardown(&rabbit, &groups).await,
            #[cfg(feature = "nats")]
            Teardown::Nats(nats) => {
                let js = nats.jetstream();
                for stream in [nats.stream_name(), nats.dead_stream_name()] {
                    // The dead stream exists only once something was dead-lettered.
                    let _ = js.delete_stream(stream).await;
                }
                let _ = groups;
            }
        }
        Ok(())
    }
}

/// Deletes the exchanges and every queue of `groups` (handler, dead and retry queues).
#[cfg(feature = "rabbitmq")]
async fn rabbitmq_teardown(rabbit: &better_auth_events::broker::RabbitMq, groups: &[String]) {
    use better_auth_events::broker::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    use better_auth_events::broker::lapin::{Connection, ConnectionProperties};
    let url =
        std::env::var("BAE_AMQP_URL").unwrap_or_else(|_| better_auth_events::broker::RabbitMq::DEFAULT_URL.to_owned());
    let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await else { return };
    let Ok(channel) = connection.create_channel().await else { return };
    for group in groups {
        let queue = rabbit.queue_name(group);
        let mut queues = vec![queue.clone(), rabbit.dead_queue_name(group)];
        // Retry queues are per power-of-two bucket of milliseconds.
        queues.extend((0..20).map(|p| format!("{queue}.retry.{}ms", 1u64 << p)));
        for q in queues {
            let _ = channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
    }
    for exchange in [rabbit.exchange(), rabbit.dead_letter_exchange()] {
        let _ = channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
    }
    let _ = connection.close(200, "OK".into()).await;
}

impl Backend {
    async fn open(self) -> Result<Opened, Error> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Ok(match self {
            Backend::Memory => Opened::new(Arc::new(MemoryBroker::new()), Duplicates::Dropped, Teardown::Nothing),
            Backend::Postgres => {
                let schema = support::postgres::Schema::new();
                let store = better_auth_events::store::PostgresStore::builder(support::postgres::url())
                    .schema(schema.0.clone())
                    .build()
                    .await?;
                let queue =
                    better_auth_events::broker::PostgresQueue::with_poll_interval(store, Duration::from_millis(200));
                // A second publish while the first is pending adds nothing.
                Opened::new(Arc::new(queue), Duplicates::Dropped, Teardown::Postgres(schema))
            }
            #[cfg(feature = "redis")]
            Backend::Redis => {
                let prefix = support::redis::Prefix::new();
                let broker = better_auth_events::broker::RedisStreams::builder()
                    .url(support::redis::url())
                    .stream(prefix.key("events"))
                    .build()
                    .await?;
                // Within the dedup window (2 minutes), a second publish adds nothing.
                Opened::new(Arc::new(broker), Duplicates::Dropped, Teardown::Redis(prefix))
            }
            #[cfg(feature = "rabbitmq")]
            Backend::RabbitMq => {
                let broker = better_auth_events::broker::RabbitMq::builder()
                    .exchange(format!("bae.test.{id}"))
                    .queue_prefix(format!("t{id}"))
                    .build()
                    .await?;
                // RabbitMQ has no deduplication: a second publish is a second message.
                Opened::new(Arc::new(broker.clone()), Duplicates::Delivered, Teardown::RabbitMq(broker))
            }
            #[cfg(feature = "nats")]
            Backend::Nats => {
                let broker = better_auth_events::broker::NatsJetStream::builder()
                    .url(std::env::var("BAE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()))
                    .stream(format!("BAE_TEST_{id}"))
                    .subject_prefix(format!("bae_test.{id}"))
                    .dead_stream(format!("BAE_TEST_{id}_DEAD"))
                    .dead_subject_prefix(format!("bae_test_dead.{id}"))
                    .build()
                    .await?;
                // `Nats-Msg-Id` is the event id: the server drops the second publish.
                Opened::new(Arc::new(broker.clone()), Duplicates::Dropped, Teardown::Nats(broker))
            }
        })
    }
}

/// Polls `done` every 10 ms until it holds, failing with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn counting(name: &str, runs: &Arc<AtomicUsize>) -> Handler {
    let runs = Arc::clone(runs);
    Handler::typed(HandlerOptions::asynchronous().name(name.to_owned()), async move |_: &Envelope<OrderPlaced>| {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

/// A handler that records the order number of every event it runs, and its record.
fn recording(name: &str) -> (Handler, Arc<Mutex<Vec<u32>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let h =
        Handler::typed(HandlerOptions::asynchronous().name(name.to_owned()), async move |e: &Envelope<OrderPlaced>| {
            s.lock().map_err(|_| HandlerError::new("poisoned"))?.push(e.data.order);
            Ok(())
        });
    (h, seen)
}

type Running = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<WorkerReport, Error>>);

/// Builds a worker (its subscriptions exist when this returns) and runs it until the
/// sender fires.
async fn start_worker(
    broker: &Arc<dyn Broker>,
    handlers: Vec<Handler>,
    configure: impl FnOnce(better_auth_events::WorkerBuilder) -> better_auth_events::WorkerBuilder,
) -> Result<Running, Error> {
    let builder = Worker::builder()
        .broker_arc(Arc::clone(broker))
        .handlers(handlers)
        .fetch_wait(Duration::from_millis(200))
        .visibility_timeout(Duration::from_secs(2));
    let worker = configure(builder).build().await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    Ok((stop, task))
}

async fn stop((stop, task): Running) -> Result<WorkerReport, Error> {
    let _ = stop.send(());
    task.await.map_err(|e| Error::backend("test", e.to_string()))?
}

async fn producer(broker: &Arc<dyn Broker>) -> Result<EventBus, Error> {
    EventBus::builder()
        .backend(better_auth_events::broker::BrokerBackend::from_arc(Arc::clone(broker)))
        .try_build()
        .await
}

async fn publish_and_consume(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let runs = counter();
    let worker = start_worker(&opened.broker, vec![counting(&opened.name("consume"), &runs)], |w| w).await?;
    let bus = producer(&opened.broker).await?;
    for order in 0..5 {
        bus.emit(OrderPlaced { order }).await?;
    }
    wait_until(Duration::from_secs(15), "five handled events", || runs.load(Ordering::SeqCst) == 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = stop(worker).await?;
    assert_eq!(runs.load(Ordering::SeqCst), 5, "nothing ran twice");
    assert_eq!(report.succeeded, 5);
    opened.finish().await
}

async fn fan_out_to_two_handlers(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let (a, b) = (counter(), counter());
    let worker = start_worker(
        &opened.broker,
        vec![counting(&opened.name("fan_a"), &a), counting(&opened.name("fan_b"), &b)],
        |w| w,
    )
    .await?;
    let bus = producer(&opened.broker).await?;
    for order in 0..4 {
        bus.emit(OrderPlaced { order }).await?;
    }
    wait_until(Duration::from_secs(15), "both handlers", || {
        a.load(Ordering::SeqCst) == 4 && b.load(Ordering::SeqCst) == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(worker).await?;
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (4, 4));
    opened.finish().await
}

async fn a_consumer_gone_before_its_ack_has_its_message_delivered_again(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let group = opened.name("gone");
    let subscription = Subscription::new(group.clone(), ["test.conformance.order_placed"])
        .with_visibility_timeout(Duration::from_secs(1))
        .with_prefetch(1);
    let mut first = opened.broker.subscribe(&subscription).await?;
    let event = Event::new("test.conformance.order_placed").with_data(json!({ "order": 1 }));
    opened.broker.publish(&Outgoing::new(&event)?).await?;
    let mut got = Vec::new();
    for _ in 0..10 {
        got = first.fetch(1, Duration::from_millis(500)).await?;
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1, "the first consumer gets the message");
    assert_eq!(got[0].delivery_count, 1);
    // It dies: neither its message nor its consumer is settled.
    drop(got);
    drop(first);
    let mut second = opened.broker.subscribe(&subscription).await?;
    let mut again = Vec::new();
    let start = std::time::Instant::now();
    while again.is_empty() && start.elapsed() < Duration::from_secs(15) {
        again = second.fetch(1, Duration::from_millis(500)).await?;
    }
    assert_eq!(again.len(), 1, "the message comes back to the group");
    let inbound = again.pop().expect("one message");
    assert_eq!(inbound.event.as_ref().map(|e| e.id).ok(), Some(event.id));
    assert!(inbound.delivery_count >= 2 || matches!(backend, Backend::Postgres), "counted as a redelivery");
    inbound.acker.ack().await?;
    opened.finish().await
}

async fn a_failing_handler_does_not_disturb_the_other(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let attempts = counter();
    let a = Arc::clone(&attempts);
    let flaky = Handler::typed(
        HandlerOptions::asynchronous()
            .name(opened.name("flaky"))
            .retry(RetryPolicy::default().max_attempts(3).base(Duration::from_millis(200)).jitter(false)),
        async move |_: &Envelope<OrderPlaced>| {
            if a.fetch_add(1, Ordering::SeqCst) == 0 { Err(HandlerError::new("first try fails")) } else { Ok(()) }
        },
    );
    let steady = counter();
    let worker = start_worker(&opened.broker, vec![flaky, counting(&opened.name("steady"), &steady)], |w| w).await?;
    let bus = producer(&opened.broker).await?;
    bus.emit(OrderPlaced { order: 1 }).await?;
    wait_until(Duration::from_secs(15), "the retry", || attempts.load(Ordering::SeqCst) >= 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = stop(worker).await?;
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "retried once, then done");
    assert_eq!(steady.load(Ordering::SeqCst), 1, "the other handler ran once");
    assert_eq!((report.succeeded, report.retried), (2, 1));
    opened.finish().await
}

async fn a_poison_message_goes_to_the_dead_letter_queue(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let runs = counter();
    let store = Arc::new(MemoryStore::new());
    let s = Arc::clone(&store);
    let worker = start_worker(&opened.broker, vec![counting(&opened.name("poison"), &runs)], |w| {
        w.store_arc(s as Arc<dyn EventStore>)
    })
    .await?;
    let poison = Event::new("test.conformance.order_placed").with_data(json!({ "order": "not a number" }));
    opened.broker.publish(&Outgoing::new(&poison)?).await?;
    let dlq = DLQHandler::from_arc(Arc::clone(&store) as Arc<dyn DeliveryLog>);
    let mut letters = Vec::new();
    for _ in 0..300 {
        letters = dlq.list(DeadLetterFilter::default()).await?;
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = stop(worker).await?;
    assert_eq!(letters.len(), 1, "dead-lettered");
    assert_eq!(letters[0].event.id, poison.id);
    assert_eq!(letters[0].attempts, 0, "never ran");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!((report.dead, report.retried), (1, 0), "never retried");
    opened.finish().await
}

async fn a_shutdown_finishes_the_work_in_flight(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let (started, finished) = (counter(), counter());
    let (s, f) = (Arc::clone(&started), Arc::clone(&finished));
    let slow = Handler::typed(
        HandlerOptions::asynchronous().name(opened.name("slow")),
        async move |_: &Envelope<OrderPlaced>| {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(400)).await;
            f.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
    );
    let worker = start_worker(&opened.broker, vec![slow], |w| w.concurrency(2).prefetch(2)).await?;
    let bus = producer(&opened.broker).await?;
    for order in 0..2 {
        bus.emit(OrderPlaced { order }).await?;
    }
    wait_until(Duration::from_secs(15), "two running handlers", || started.load(Ordering::SeqCst) == 2).await;
    let report = stop(worker).await?;
    assert_eq!(finished.load(Ordering::SeqCst), 2, "the shutdown waited for both");
    assert_eq!((report.succeeded, report.unfinished), (2, 0));
    opened.finish().await
}

async fn a_duplicate_publish_of_one_event(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let runs = counter();
    // The handler finishes only once both publishes are done: a broker that drops a
    // duplicate while the first copy is pending (PostgreSQL) is then tested on that, not
    // on how fast the first copy was handled.
    let (published, gate) = tokio::sync::watch::channel(false);
    let r = Arc::clone(&runs);
    let held = Handler::typed(
        HandlerOptions::asynchronous().name(opened.name("dup")),
        async move |_: &Envelope<OrderPlaced>| {
            let mut gate = gate.clone();
            gate.wait_for(|open| *open).await.map_err(|_| HandlerError::new("the test ended"))?;
            r.fetch_add(1, Ordering::SeqCst);
            Ok(())
        },
    );
    let worker = start_worker(&opened.broker, vec![held], |w| w).await?;
    let event = Event::new("test.conformance.order_placed").with_data(json!({ "order": 9 }));
    let message = Outgoing::new(&event)?;
    opened.broker.publish(&message).await?;
    opened.broker.publish(&message).await?;
    published.send_replace(true);
    let want = match opened.duplicates {
        Duplicates::Dropped => 1,
        Duplicates::Delivered => 2,
    };
    wait_until(Duration::from_secs(15), "the deliveries", || runs.load(Ordering::SeqCst) >= want).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop(worker).await?;
    assert_eq!(runs.load(Ordering::SeqCst), want, "{:?}", opened.duplicates);
    opened.finish().await
}

async fn one_consumer_sees_events_in_publish_order(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let (h, seen) = recording(&opened.name("order"));
    let worker = start_worker(&opened.broker, vec![h], |w| w.concurrency(1).prefetch(1)).await?;
    let bus = producer(&opened.broker).await?;
    for order in 0..20 {
        bus.emit(OrderPlaced { order }).await?;
    }
    wait_until(Duration::from_secs(15), "twenty events", || seen.lock().map(|s| s.len()).unwrap_or(0) == 20).await;
    stop(worker).await?;
    assert_eq!(*seen.lock().expect("seen"), (0..20).collect::<Vec<_>>());
    opened.finish().await
}

async fn concurrent_emits_each_arrive_once(backend: Backend) -> Result<(), Error> {
    let opened = backend.open().await?;
    let (h, seen) = recording(&opened.name("concurrent"));
    let worker = start_worker(&opened.broker, vec![h], |w| w.concurrency(8)).await?;
    let bus = producer(&opened.broker).await?;
    // 16 tasks emitting at once: a broker that batches concurrent publishes must still
    // deliver each event once, and report each emit's own outcome.
    let tasks: Vec<_> = (0..16u32)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..25u32 {
                    bus.emit(OrderPlaced { order: t * 25 + i }).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| Error::backend("test", e.to_string()))??;
    }
    wait_until(Duration::from_secs(30), "400 events", || seen.lock().map(|s| s.len()).unwrap_or(0) >= 400).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop(worker).await?;
    let mut seen = seen.lock().expect("seen").clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..400).collect::<Vec<_>>(), "every event once");
    opened.finish().await
}

macro_rules! conformance {
    ($($module:ident => $backend:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn publish_and_consume() -> Result<(), Error> {
                super::publish_and_consume($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fan_out_to_two_handlers() -> Result<(), Error> {
                super::fan_out_to_two_handlers($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_consumer_gone_before_its_ack_has_its_message_delivered_again() -> Result<(), Error> {
                super::a_consumer_gone_before_its_ack_has_its_message_delivered_again($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_failing_handler_does_not_disturb_the_other() -> Result<(), Error> {
                super::a_failing_handler_does_not_disturb_the_other($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_poison_message_goes_to_the_dead_letter_queue() -> Result<(), Error> {
                super::a_poison_message_goes_to_the_dead_letter_queue($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_shutdown_finishes_the_work_in_flight() -> Result<(), Error> {
                super::a_shutdown_finishes_the_work_in_flight($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_duplicate_publish_of_one_event() -> Result<(), Error> {
                super::a_duplicate_publish_of_one_event($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_consumer_sees_events_in_publish_order() -> Result<(), Error> {
                super::one_consumer_sees_events_in_publish_order($backend).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_emits_each_arrive_once() -> Result<(), Error> {
                super::concurrent_emits_each_arrive_once($backend).await
            }
        }
    )*};
}

conformance! {
    memory => Backend::Memory,
    postgres => Backend::Postgres,
}

#[cfg(feature = "redis")]
conformance! {
    redis => Backend::Redis,
}

#[cfg(feature = "rabbitmq")]
conformance! {
    rabbitmq => Backend::RabbitMq,
}

#[cfg(feature = "nats")]
conformance! {
    nats => Backend::Nats,
}
