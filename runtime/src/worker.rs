//! The consumer side of a broker: the [`Worker`] runs async handlers on the events a
//! [`Broker`] delivers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::broker::{Acker, Broker, Consumer, Inbound, Subscription};
use crate::bus::{EventBus, EventBusBuilder};
use crate::delivery::{Delivery, DeliveryFailure, DeliveryTarget, LONGEST_RETRY_DELAY, Progress};
use crate::dlq::{AttemptRecord, FailureRecord};
use crate::envelope::Event;
use crate::error::{Error, HandlerError, Result};
use crate::handler::{Handler, HandlerMode, RetryPolicy};
use crate::store::EventStore;

/// Runs async handlers on the events a [`Broker`] delivers: the other half of a bus built
/// with [`EventBusBuilder::broker`].
///
/// Each handler consumes on its own subscription (its consumer group, queue or durable
/// consumer): a handler that fails never makes one that succeeded run again. For every
/// message the worker decodes the CloudEvent back into the handler's type (upcasting old
/// versions), runs the handler with its timeout, acknowledges after success, retries
/// through the broker with the handler's retry policy (the broker redelivers after the
/// backoff, so a retry never holds a worker), and sends a final failure to the
/// dead-letter queue: the store's when the worker has one ([`WorkerBuilder::store`], where
/// [`crate::dlq::DLQHandler`] lists and redrives it; a redriven letter runs in this
/// worker), else the broker's own. A message that is not a CloudEvent, or whose type the
/// handler does not take, is reported and dead-lettered at once, never retried.
///
/// On shutdown the worker stops fetching, gives the handlers running until the deadline
/// to finish, and leaves the rest unacknowledged: the broker delivers them again.
///
/// ```no_run
/// # use better_auth_events_runtime::{Worker, registered_handlers, broker::Broker};
/// # async fn run(broker: impl Broker) -> better_auth_events_runtime::Result<()> {
/// let report = Worker::builder()
///     .broker(broker)
///     .handlers(registered_handlers())
///     .concurrency(16)
///     .build()
///     .await?
///     .run_until(async { tokio::signal::ctrl_c().await.ok(); })
///     .await?;
/// println!("handled {} events", report.succeeded);
/// # Ok(()) }
/// ```
pub struct Worker {
    /// The handlers' routes, dependencies, retry defaults, and the store whose outbox keeps
    /// dead letters and runs redriven ones.
    bus: EventBus,
    consumers: Vec<(Arc<DeliveryTarget>, Box<dyn Consumer>)>,
    concurrency: usize,
    batch: usize,
    fetch_wait: Duration,
    shutdown_deadline: Duration,
    broker_name: String,
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    broker: Option<Arc<dyn Broker>>,
    handlers: Vec<Handler>,
    bus: EventBusBuilder,
    has_store: bool,
    concurrency: usize,
    prefetch: Option<usize>,
    visibility_timeout: Duration,
    fetch_wait: Duration,
    shutdown_deadline: Duration,
}

/// What a worker did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Messages whose handler succeeded (acknowledged).
    pub succeeded: u64,
    /// Failed attempts handed back to the broker for a retry.
    pub retried: u64,
    /// Messages dead-lettered: failed for good, unreadable, or of a type the handler does
    /// not take.
    pub dead: u64,
    /// Messages still running when the shutdown deadline passed, left unacknowledged for
    /// the broker to deliver again.
    pub unfinished: u64,
}

#[derive(Default)]
struct Counters {
    succeeded: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    unfinished: AtomicU64,
}

impl Worker {
    /// A builder; set at least [`WorkerBuilder::broker`] and the handlers.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder {
            broker: None,
            handlers: Vec::new(),
            bus: EventBusBuilder::default(),
            has_store: false,
            concurrency: 10,
            prefetch: None,
            visibility_timeout: Duration::from_secs(60),
            fetch_wait: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(30),
        }
    }

    /// The names of the handlers this worker runs, one subscription each.
    pub fn handler_names(&self) -> Vec<&str> {
        self.consumers.iter().map(|(t, _)| t.handler.name()).collect()
    }

    /// Runs until `signal` completes, then shuts down: stops fetching, lets running
    /// handlers finish until the shutdown deadline, and leaves the rest to the broker.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()> + Send) -> Result<WorkerReport> {
        let Worker { bus, consumers, concurrency, batch, fetch_wait, shutdown_deadline, broker_name } = self;
        let permits = Arc::new(Semaphore::new(concurrency));
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = JoinSet::new();
        for (target, consumer) in consumers {
            let run = ConsumeLoop {
                target,
                consumer,
                permits: Arc::clone(&permits),
                counters: Arc::clone(&counters),
                stop: stop_rx.clone(),
                batch,
                fetch_wait,
                broker: broker_name.clone(),
            };
            loops.spawn(run.run(shutdown_deadline));
        }
        tracing::info!(target: "better_auth_events", broker = %broker_name, handlers = loops.len(), concurrency, "worker started");
        signal.await;
        tracing::info!(target: "better_auth_events", broker = %broker_name, "worker stopping: no more fetches, finishing what runs");
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        // Redriven dead letters this worker ran through its store get the same deadline.
        let _ = bus.shutdown(shutdown_deadline).await;
        let report = WorkerReport {
            succeeded: counters.succeeded.load(Ordering::Relaxed),
            retried: counters.retried.load(Ordering::Relaxed),
            dead: counters.dead.load(Ordering::Relaxed),
            unfinished: counters.unfinished.load(Ordering::Relaxed),
        };
        tracing::info!(target: "better_auth_events", broker = %broker_name, ?report, "worker stopped");
        Ok(report)
    }
}

impl WorkerBuilder {
    /// The broker to consume from.
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// The broker to consume from, shared (with the bus that publishes to it, say).
    pub fn broker_arc(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The same as [`WorkerBuilder::broker`].
    pub fn backend(self, broker: impl Broker) -> Self {
        self.broker(broker)
    }

    /// Adds handlers. The worker runs those that are async; sync handlers run inline in
    /// the process that emits, so they are left out here.
    pub fn handlers(mut self, handlers: impl IntoIterator<Item = Handler>) -> Self {
        self.handlers.extend(handlers);
        self
    }

    /// Adds one handler.
    pub fn handler(mut self, handler: Handler) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Most handlers running at once, over all subscriptions (default 10).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Most messages each subscription holds unacknowledged (default: twice the
    /// concurrency).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// How long a message stays with a worker that neither acknowledged it nor gave it back
    /// before the broker delivers it to another (default 60 s). Longer than the slowest
    /// handler, or that handler may run twice.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// How long one fetch waits for messages (default 1 s); also how soon an idle worker
    /// notices a shutdown at the latest.
    pub fn fetch_wait(mut self, wait: Duration) -> Self {
        self.fetch_wait = wait;
        self
    }

    /// How long a shutdown waits for running handlers (default 30 s).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// The store whose dead-letter queue takes final failures (where
    /// [`crate::dlq::DLQHandler`] lists, redrives and discards them; a redriven letter runs
    /// in this worker). Without one, they go to the broker's own dead letters.
    pub fn store(mut self, store: impl EventStore) -> Self {
        self.bus = self.bus.store(store);
        self.has_store = true;
        self
    }

    /// The same as [`WorkerBuilder::store`], shared.
    pub fn store_arc(mut self, store: Arc<dyn EventStore>) -> Self {
        self.bus = self.bus.store_arc(store);
        self.has_store = true;
        self
    }

    /// A dependency the handlers take with `Dep<T>`.
    pub fn dependency<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.bus = self.bus.dependency(value);
        self
    }

    /// A shared dependency the handlers take with `Dep<T>`.
    pub fn dependency_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.bus = self.bus.dependency_arc(value);
        self
    }

    /// The retry policy of handlers that do not set their own.
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.bus = self.bus.default_retry(policy);
        self
    }

    /// Called for every message whose handler failed for good.
    pub fn on_failure(mut self, hook: impl Fn(&DeliveryFailure) + Send + Sync + 'static) -> Self {
        self.bus = self.bus.on_failure(hook);
        self
    }

    /// Checks the configuration and subscribes every async handler to the broker.
    pub async fn build(self) -> Result<Worker> {
        let broker = self
            .broker
            .ok_or_else(|| Error::Config("a worker needs a broker: add `.broker(..)` to `Worker::builder()`".into()))?;
        if self.concurrency == 0 {
            return Err(Error::Config("`concurrency` must be at least 1".into()));
        }
        let (handlers, inline): (Vec<Handler>, Vec<Handler>) =
            self.handlers.into_iter().partition(|h| h.mode() == HandlerMode::Async);
        for h in &inline {
            tracing::debug!(target: "better_auth_events", handler = h.name(), "sync handler left out of the worker: it runs where the event is emitted");
        }
        if handlers.is_empty() {
            return Err(Error::Config(
                "the worker has no async handler to run; give it `#[handler(mode = \"async\")]` handlers with `.handlers(..)`"
                    .into(),
            ));
        }
        let bus = self.bus.handlers(handlers.clone()).try_build().await?;
        let prefetch = self.prefetch.unwrap_or(self.concurrency * 2).max(1);
        let mut consumers = Vec::with_capacity(handlers.len());
        for h in &handlers {
            let target = bus
                .route_for(h.event_name())
                .and_then(|r| r.asynchronous.iter().find(|t| t.handler.name() == h.name()).cloned())
                .ok_or_else(|| Error::Config(format!("handler `{}` is not registered on the worker", h.name())))?;
            let subscription = Subscription::new(h.name(), [h.event_name()])
                .with_prefetch(prefetch)
                .with_visibility_timeout(self.visibility_timeout);
            let consumer = broker.subscribe(&subscription).await?;
            consumers.push((target, consumer));
        }
        if !self.has_store {
            tracing::debug!(target: "better_auth_events", "worker without a store: final failures go to the broker's dead letters");
        }
        Ok(Worker {
            bus,
            consumers,
            concurrency: self.concurrency,
            batch: prefetch.min(MAX_FETCH),
            fetch_wait: self.fetch_wait,
            shutdown_deadline: self.shutdown_deadline,
            broker_name: broker.name().to_owned(),
        })
    }
}

/// Most messages one fetch asks for.
const MAX_FETCH: usize = 256;

/// How long a consumer waits after a failed fetch.
const FETCH_BACKOFF: Duration = Duration::from_secs(1);

/// One handler's loop: fetch as many messages as there are free workers, run each on its
/// own task.
struct ConsumeLoop {
    target: Arc<DeliveryTarget>,
    consumer: Box<dyn Consumer>,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
    batch: usize,
    fetch_wait: Duration,
    broker: String,
}

impl ConsumeLoop {
    async fn run(mut self, deadline: Duration) {
        let mut running = JoinSet::new();
        loop {
            if *self.stop.borrow() {
                break;
            }
            // One free worker at least, then as many more as are free now.
            let first = tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = self.stop.changed() => break,
            };
            let mut held = vec![first];
            while held.len() < self.batch {
                match Arc::clone(&self.permits).try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            let fetched = tokio::select! {
                f = self.consumer.fetch(held.len(), self.fetch_wait) => f,
                _ = self.stop.changed() => break,
            };
            match fetched {
                Ok(messages) => {
                    for message in messages {
                        // The broker gave no more than asked; a surplus waits for a worker.
                        let permit = match held.pop() {
                            Some(p) => p,
                            None => match Arc::clone(&self.permits).acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => break,
                            },
                        };
                        let target = Arc::clone(&self.target);
                        let counters = Arc::clone(&self.counters);
                        running.spawn(async move {
                            handle(&target, message, &counters).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "better_auth_events", broker = %self.broker, handler = self.target.handler.name(), "cannot fetch messages, trying again: {}", crate::ErrorChain(&e));
                    drop(held);
                    tokio::select! {
                        () = tokio::time::sleep(FETCH_BACKOFF) => {}
                        _ = self.stop.changed() => break,
                    }
                }
            }
            while running.try_join_next().is_some() {}
        }
        // Stopping: what runs gets until the deadline; the rest stays with the broker.
        let finished = tokio::time::timeout(deadline, async { while running.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            let left = running.len() as u64;
            self.counters.unfinished.fetch_add(left, Ordering::Relaxed);
            tracing::warn!(target: "better_auth_events", broker = %self.broker, handler = self.target.handler.name(), unfinished = left, "shutdown deadline passed; unfinished messages are left to the broker to deliver again");
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
    }
}

/// Runs one message through its handler and settles it.
async fn handle(target: &Arc<DeliveryTarget>, message: Inbound, counters: &Counters) {
    let Inbound { event, delivery_count, acker, .. } = message;
    let handler = target.handler.name();
    let event = match event {
        Ok(event) => event,
        Err(why) => {
            tracing::error!(target: "better_auth_events", handler, "a message is not a CloudEvent; dead-lettered: {why}");
            settle_dead(acker, &format!("not a CloudEvent: {why}"), counters, handler).await;
            return;
        }
    };
    if event.event_type.as_str() != target.handler.event_name() {
        let error = HandlerError::EventMismatch {
            event_type: event.event_type.to_string(),
            expected: "the event type this handler takes",
            reason: format!("handler `{handler}` takes `{}` events", target.handler.event_name()),
        };
        poisoned(target, &event, &error, acker, counters).await;
        return;
    }
    let converted = match target.handler.inner.call.convert(&event) {
        Ok(converted) => converted,
        Err(error) => {
            poisoned(target, &event, &error, acker, counters).await;
            return;
        }
    };
    let progress =
        (delivery_count > 1).then(|| Box::new(Progress { attempts: delivery_count - 1, ..Progress::default() }));
    let delivery = Delivery { event: converted, target: Arc::clone(target), progress };
    let span = tracing::info_span!(
        target: "better_auth_events",
        "handle",
        handler,
        event_id = %event.id,
        event_type = %event.event_type,
        attempt = delivery_count,
        traceparent = event.metadata.traceparent.as_deref().unwrap_or(""),
    );
    let env = &delivery.event.env;
    let outcome = crate::cause::with_cause(env, delivery.execute(delivery_count)).instrument(span).await;
    let error = match outcome {
        Ok(()) => {
            target.env.stats.succeeded.add(1);
            counters.succeeded.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = acker.ack().await {
                // The broker delivers it again: at least once.
                tracing::warn!(target: "better_auth_events", handler, event_id = %event.id, "cannot acknowledge a handled message; it will run again: {}", crate::ErrorChain(&e));
            }
            return;
        }
        Err(error) => error,
    };
    if matches!(error, HandlerError::Panicked(_)) {
        target.env.stats.panicked.fetch_add(1, Ordering::Relaxed);
    }
    let policy = target.handler.retry_policy().unwrap_or(&target.env.default_retry);
    if error.is_retryable() && delivery_count < policy.max_attempts {
        let delay =
            error.retry_delay().unwrap_or_else(|| policy.delay_before_retry(delivery_count)).min(LONGEST_RETRY_DELAY);
        target.env.stats.retried.fetch_add(1, Ordering::Relaxed);
        counters.retried.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(target: "better_auth_events", handler, event_id = %event.id, attempt = delivery_count, ?delay, "async handler failed, retrying: {}", crate::ErrorChain(&error));
        if let Err(e) = acker.retry(delay).await {
            tracing::warn!(target: "better_auth_events", handler, event_id = %event.id, "cannot schedule a retry with the broker; it delivers the message again after its visibility timeout: {}", crate::ErrorChain(&e));
        }
        return;
    }
    let now = Utc::now();
    target.fail_for_good(env, delivery_count, now, &error);
    let record = AttemptRecord { attempt: delivery_count, at: now, error: FailureRecord::of(&error) };
    let progress = Progress { attempts: delivery_count, history: vec![record], redriven_from: None };
    bury(target, &event, progress, &error, acker, counters).await;
}

/// A message that cannot be read as the handler's type: reported and dead-lettered at
/// once, never retried.
async fn poisoned(
    target: &Arc<DeliveryTarget>,
    event: &Event,
    error: &HandlerError,
    acker: Box<dyn Acker>,
    counters: &Counters,
) {
    let now = Utc::now();
    target.fail_for_good(event, 0, now, error);
    let record = AttemptRecord { attempt: 0, at: now, error: FailureRecord::of(error) };
    let progress = Progress { attempts: 0, history: vec![record], redriven_from: None };
    bury(target, event, progress, error, acker, counters).await;
}

/// A message that failed for good: into the store's dead-letter queue (and acknowledged)
/// when the worker has one, else into the broker's dead letters.
async fn bury(
    target: &Arc<DeliveryTarget>,
    event: &Event,
    progress: Progress,
    error: &HandlerError,
    acker: Box<dyn Acker>,
    counters: &Counters,
) {
    let handler = target.handler.name();
    let reason = crate::ErrorChain(error).to_string();
    if let Some(outbox) = &target.env.outbox
        && let Some(letter) = target.dead_letter(event, progress, error)
    {
        // The event goes in the store too, so that a redrive can read it (an event stored
        // before keeps its row).
        let stored = match outbox.log() {
            Ok(log) => match outbox.store().append(event).await {
                Ok(_) => log.bury(&letter).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => {
                counters.dead.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = acker.ack().await {
                    tracing::warn!(target: "better_auth_events", handler, event_id = %event.id, "cannot acknowledge a dead-lettered message; the broker will deliver it again: {}", crate::ErrorChain(&e));
                }
                return;
            }
            Err(e) => {
                tracing::error!(target: "better_auth_events", handler, event_id = %event.id, "cannot put a failed message in the store's dead-letter queue; it goes to the broker's: {}", crate::ErrorChain(&e));
            }
        }
    }
    settle_dead(acker, &reason, counters, handler).await;
}

/// Into the broker's dead letters.
async fn settle_dead(acker: Box<dyn Acker>, reason: &str, counters: &Counters, handler: &str) {
    counters.dead.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = acker.dead(reason).await {
        tracing::error!(target: "better_auth_events", handler, "cannot dead-letter a message with the broker; it will be delivered again: {}", crate::ErrorChain(&e));
    }
}
