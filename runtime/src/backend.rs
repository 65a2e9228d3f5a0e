//! Async backends: the [`AsyncBackend`] trait of seed 002, the [`Delivery`] it carries, and
//! the default in-process [`WorkerPool`].

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use concurrent_queue::ConcurrentQueue;
use crossbeam_utils::CachePadded;
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use uuid::Uuid;

use crate::bus::Route;
use crate::envelope::Envelope;
use crate::error::{Error, HandlerError, Result};
use crate::event::EventData;
use crate::event_type::EventType;
use crate::handler::{Dependencies, Handler, HandlerContext, HandlerMode, RetryPolicy};

/// An event as the async path shares it: one allocation per emit, shared by every async
/// delivery, with its CloudEvents JSON serialized at most once, on first demand.
pub(crate) struct SharedEvent<T: ?Sized = dyn EventData> {
    cloudevent: OnceLock<std::result::Result<Arc<[u8]>, String>>,
    pub(crate) env: Envelope<T>,
}

impl<T: EventData> SharedEvent<T> {
    pub(crate) fn new(env: Envelope<T>) -> Arc<SharedEvent> {
        Arc::new(SharedEvent { cloudevent: OnceLock::new(), env })
    }
}

impl SharedEvent {
    fn cloudevent(&self) -> Result<Arc<[u8]>> {
        self.cloudevent
            .get_or_init(|| serde_json::to_vec(&self.env).map(Arc::from).map_err(|e| e.to_string()))
            .clone()
            .map_err(|message| {
                Error::CloudEvent(format!("cannot serialize event `{}`: {message}", self.env.event_type))
            })
    }
}

/// The hook called for every async delivery that failed its last attempt.
pub(crate) type FailureHook = Arc<dyn Fn(&DeliveryFailure) + Send + Sync>;

/// What the bus hands every delivery: dependencies, retries, where failures go.
pub(crate) struct DeliveryEnv {
    pub(crate) deps: Arc<Dependencies>,
    pub(crate) default_retry: RetryPolicy,
    pub(crate) on_failure: Option<FailureHook>,
    pub(crate) track_cause: bool,
    pub(crate) stats: Arc<Stats>,
}

/// Counters of the async path, read with [`crate::EventBus::stats`].
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Bumped by every successful delivery, from every worker thread at once: sharded.
    pub(crate) succeeded: ShardedCounter,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) panicked: AtomicU64,
}

/// Shards of a [`ShardedCounter`]; more than the threads that usually bump one at once.
const SHARDS: usize = 16;

/// A counter bumped from many threads at once: each thread adds to its own cache line, a
/// read sums them. One shared atomic would move its cache line between the worker threads
/// on every delivery.
#[derive(Debug, Default)]
pub(crate) struct ShardedCounter {
    shards: [CachePadded<AtomicU64>; SHARDS],
}

impl ShardedCounter {
    /// Adds `n`.
    pub(crate) fn add(&self, n: u64) {
        self.shards[shard_of_this_thread()].fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub(crate) fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// This thread's shard: threads take shards in turn as they first bump a counter.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// One event to be handled by one async handler.
///
/// A backend either runs it in process ([`Delivery::execute`], what the [`WorkerPool`]
/// does) or ships [`Delivery::cloudevent_json`] to a broker whose consumer runs the handler
/// named [`Delivery::handler_name`].
#[derive(Clone)]
pub struct Delivery {
    pub(crate) event: Arc<SharedEvent>,
    /// The route of the event's type when it was emitted; the delivery's handler is its
    /// async handler number `index`.
    pub(crate) route: Arc<Route>,
    pub(crate) index: usize,
}

/// The handler of a delivery and what the bus gives it, shared by every delivery to that
/// handler (made when the bus's handlers change, not per emit, and kept in its route).
pub(crate) struct DeliveryTarget {
    pub(crate) handler: Handler,
    pub(crate) env: Arc<DeliveryEnv>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event_id", &self.event.env.id)
            .field("event_type", &self.event.env.event_type)
            .field("handler", &self.target().handler.name())
            .finish()
    }
}

impl Delivery {
    /// The handler of this delivery and what the bus gives it.
    fn target(&self) -> &DeliveryTarget {
        &self.route.asynchronous[self.index]
    }

    /// The event's id.
    pub fn event_id(&self) -> Uuid {
        self.event.env.id
    }

    /// The event's type.
    pub fn event_type(&self) -> &EventType {
        &self.event.env.event_type
    }

    /// The event, as middleware and handlers see it.
    pub fn envelope(&self) -> &Envelope<dyn EventData> {
        &self.event.env
    }

    /// The handler this delivery is for.
    pub fn handler_name(&self) -> &str {
        self.target().handler.name()
    }

    /// The handler this delivery is for.
    pub fn handler(&self) -> &Handler {
        &self.target().handler
    }

    /// The stable delivery id (UUIDv5 of event id and handler name).
    pub fn delivery_id(&self) -> Uuid {
        self.event.env.delivery_id(self.target().handler.name())
    }

    /// The event as a CloudEvents 1.0 structured JSON document. Serialized once per emit
    /// and shared by every delivery of that emit.
    pub fn cloudevent_json(&self) -> Result<Arc<[u8]>> {
        self.event.cloudevent()
    }

    /// Runs one attempt of the handler: with its timeout, a panic caught and reported as
    /// [`HandlerError::Panicked`].
    pub async fn execute(&self, attempt: u32) -> std::result::Result<(), HandlerError> {
        self.execute_in(attempt, &mut None).await
    }

    /// [`Delivery::execute`] with the caller's context slot: a worker keeps one context and
    /// refills it for each delivery, so the bus's dependencies (shared by every worker) are
    /// not reference-counted once per delivery.
    async fn execute_in(
        &self,
        attempt: u32,
        slot: &mut Option<HandlerContext>,
    ) -> std::result::Result<(), HandlerError> {
        let ctx = self.context_in(attempt, slot);
        let run = self.target().handler.invoke(&self.event.env, ctx);
        if self.target().env.track_cause {
            Box::pin(crate::bus::with_cause(&self.event.env, run)).await
        } else {
            run.await
        }
    }

    /// The context of one attempt, in `slot`: refilled when it holds one for the same bus's
    /// dependencies, made afresh otherwise.
    fn context_in<'s>(&self, attempt: u32, slot: &'s mut Option<HandlerContext>) -> &'s HandlerContext {
        let deps = &self.target().env.deps;
        let mut ctx = match slot.take() {
            Some(ctx) if ctx.deps.as_ref().is_some_and(|d| Arc::ptr_eq(d, deps)) => ctx,
            _ => HandlerContext::new(self.event.env.id, Cow::Borrowed(""), Arc::clone(deps)),
        };
        ctx.event_id = self.event.env.id;
        ctx.handler.clone_from(&self.target().handler.inner.name);
        ctx.attempt = attempt;
        ctx.mode = HandlerMode::Async;
        ctx.replay = self.event.env.metadata.replay;
        slot.insert(ctx)
    }

    /// Runs the handler with its retry policy (the handler's own, else the bus default) and
    /// reports a final failure to the bus's failure hook and to `tracing`.
    pub async fn run_to_completion(&self) -> std::result::Result<(), HandlerError> {
        self.run_to_completion_in(&mut None).await
    }

    /// [`Delivery::run_to_completion`] with the caller's context slot (see
    /// [`Delivery::execute_in`]).
    pub(crate) async fn run_to_completion_in(
        &self,
        slot: &mut Option<HandlerContext>,
    ) -> std::result::Result<(), HandlerError> {
        // Retry state is made on the first failure: a delivery that succeeds pays nothing.
        let mut delays: Option<Box<dyn Iterator<Item = Duration> + Send>> = None;
        let mut first_failure = None;
        let mut attempt = 1;
        loop {
            match self.execute_in(attempt, slot).await {
                Ok(()) => {
                    self.target().env.stats.succeeded.add(1);
                    return Ok(());
                }
                Err(error) => {
                    if matches!(error, HandlerError::Panicked(_)) {
                        self.target().env.stats.panicked.fetch_add(1, Ordering::Relaxed);
                    }
                    let first_failure = *first_failure.get_or_insert_with(Utc::now);
                    let delays = delays.get_or_insert_with(|| {
                        self.target().handler.retry_policy().unwrap_or(&self.target().env.default_retry).delays()
                    });
                    let next = if error.is_retryable() { delays.next() } else { None };
                    match next {
                        Some(delay) => {
                            self.target().env.stats.retried.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                target: "better_auth_events",
                                event_id = %self.event_id(),
                                handler = %self.handler_name(),
                                attempt,
                                ?delay,
                                "async handler failed, retrying: {}",
                                crate::ErrorChain(&error)
                            );
                            tokio::time::sleep(delay).await;
                            attempt += 1;
                        }
                        None => {
                            self.target().env.stats.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                target: "better_auth_events",
                                event_id = %self.event_id(),
                                event_type = %self.event_type(),
                                handler = %self.handler_name(),
                                attempts = attempt,
                                "async handler failed for good: {}",
                                crate::ErrorChain(&error)
                            );
                            if let Some(hook) = &self.target().env.on_failure {
                                hook(&DeliveryFailure {
                                    event_id: self.event_id(),
                                    event_type: self.event_type().clone(),
                                    handler: self.target().handler.inner.name.clone(),
                                    attempts: attempt,
                                    first_failure,
                                    last_failure: Utc::now(),
                                    error: &error,
                                    event: self.envelope(),
                                });
                            }
                            return Err(error);
                        }
                    }
                }
            }
        }
    }

    fn describe(&self) -> UnfinishedDelivery {
        UnfinishedDelivery {
            event_id: self.event_id(),
            event_type: self.event_type().clone(),
            handler: self.target().handler.inner.name.clone(),
        }
    }
}

/// An async delivery that failed every attempt, as the failure hook sees it (the seam the
/// dead-letter queue plugs into).
#[derive(Debug)]
#[non_exhaustive]
pub struct DeliveryFailure<'a> {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// The handler that failed.
    pub handler: Cow<'static, str>,
    /// Attempts made.
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failure: DateTime<Utc>,
    /// When the last attempt failed.
    pub last_failure: DateTime<Utc>,
    /// The last error.
    pub error: &'a HandlerError,
    /// The event.
    pub event: &'a Envelope<dyn EventData>,
}

/// A delivery a shutdown could not finish before its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfinishedDelivery {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// The handler it was for.
    pub handler: Cow<'static, str>,
}

/// What a shutdown finished and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Deliveries that ran to completion (success or final failure) during the drain.
    pub drained: u64,
    /// Deliveries still queued or running when the deadline passed.
    pub unfinished: Vec<UnfinishedDelivery>,
}

impl ShutdownReport {
    /// Whether everything in flight finished.
    pub fn is_complete(&self) -> bool {
        self.unfinished.is_empty()
    }
}

/// Where async handlers go: the in-process [`WorkerPool`] by default, or a broker.
///
/// The trait of seed 002 (`Publish`, `Close`, `Name`). A backend that ships deliveries to
/// an external queue serializes them with [`Delivery::cloudevent_json`] and names the
/// handler with [`Delivery::handler_name`]; the consumer side runs the handler.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use better_auth_events_runtime::{async_trait, AsyncBackend, Delivery, EventType, Result, ShutdownReport};
///
/// /// Records what would be published (the seed's MockBackend).
/// #[derive(Default)]
/// struct MockBackend { published: Mutex<Vec<EventType>> }
///
/// #[async_trait]
/// impl AsyncBackend for MockBackend {
///     async fn publish(&self, delivery: Delivery) -> Result<()> {
///         self.published.lock().unwrap().push(delivery.event_type().clone());
///         Ok(())
///     }
///     async fn close(&self, _deadline: std::time::Duration) -> Result<ShutdownReport> {
///         Ok(ShutdownReport::default())
///     }
///     fn name(&self) -> &str { "mock" }
/// }
/// ```
#[async_trait]
pub trait AsyncBackend: Send + Sync + 'static {
    /// Takes one delivery. Returns once the backend has it (queued, or acknowledged by the
    /// broker); the handler's own outcome never comes back here.
    async fn publish(&self, delivery: Delivery) -> Result<()>;

    /// Takes one delivery if it can without waiting: `Ok(None)` when taken, `Ok(Some(d))`
    /// to give it back (the bus then awaits [`AsyncBackend::publish`] with it), `Err` when it
    /// is refused for good. The default gives every delivery back; the worker pool takes it
    /// when its queue has room, which spares the emit a boxed future.
    fn try_publish(&self, delivery: Delivery) -> Result<Option<Delivery>> {
        Ok(Some(delivery))
    }

    /// Takes every async delivery of one emit. Backends that can should take all or none
    /// (the worker pool reserves queue room for all first); the default publishes in turn.
    async fn publish_all(&self, deliveries: Vec<Delivery>) -> Result<()> {
        for d in deliveries {
            self.publish(d).await?;
        }
        Ok(())
    }

    /// Stops taking deliveries and finishes what it holds within `deadline`.
    async fn close(&self, deadline: Duration) -> Result<ShutdownReport>;

    /// The backend's name, for logs and errors.
    fn name(&self) -> &str;
}

/// What to do when the worker pool's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// Wait for room (the emitter slows down to the workers' pace).
    #[default]
    Wait,
    /// Wait at most this long, then fail with [`Error::Backpressure`].
    WaitFor(Duration),
    /// Fail at once with [`Error::Backpressure`].
    FailFast,
}

/// Configuration of the [`WorkerPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerPoolConfig {
    /// Concurrent workers (default 10).
    pub workers: usize,
    /// Deliveries queued beyond those running (default 1000).
    pub queue_size: usize,
    /// What a full queue does to the emitter (default: wait).
    pub backpressure: BackpressurePolicy,
}

impl Default for WorkerPoolConfig {
    fn default() -> Self {
        Self { workers: 10, queue_size: 1000, backpressure: BackpressurePolicy::Wait }
    }
}

struct Running {
    queue: Arc<ConcurrentQueue<Delivery>>,
    /// Wakes a worker waiting for the queue: for a delivery queued while no worker is
    /// searching, and all of them at close.
    ready: Arc<Notify>,
    /// Workers looking at the queue for their next delivery (not running one, not
    /// waiting on `ready`): while there is one, a delivery queued needs no wake-up.
    searching: Arc<CachePadded<AtomicUsize>>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How many times a worker that finds the queue empty yields to the runtime and looks
/// again before it waits on `ready`: tens of microseconds, which keeps a steady stream
/// of deliveries from costing one thread wake-up each.
const SEARCH_ROUNDS: usize = 64;

/// The largest queue kept in one ring allocated up front (a slot is 32 bytes).
const RING_LIMIT: usize = 1 << 16;

/// Deliveries a worker finished, waiting for an emit to free them (see [`WorkerPool`]): at
/// most this many.
const SPENT_CAPACITY: usize = 128;

/// The default async backend: a bounded queue served by a fixed number of tokio tasks.
///
/// The queue is a lock-free ring the workers pop from, bounded by a semaphore of
/// `queue_size` permits: an emit reserves room for all its deliveries at once, and a worker
/// gives one permit back as it takes a delivery. A worker that finds the queue empty waits
/// on a tokio `Notify`; each delivery queued wakes the worker that began waiting last (its
/// task is the likeliest to be warm in a cache), and a worker back from a delivery takes
/// the next one without waking anybody. Queues of up to 65,536 deliveries are one ring
/// allocated when the pool starts (32 bytes a slot). In process and memory only:
/// deliveries still queued when the process dies are lost (at-most-once across a crash).
/// Workers start on the first publish, inside the tokio runtime that publishes. A panicking
/// handler is caught and reported; the worker lives on.
///
/// A delivery is freed on an emitting thread, where it was made: a worker hands the
/// delivery it finished back to the pool, and later publishes free it (each frees up to two
/// for every delivery it queues, so what piles up while an emitter waits for room drains).
/// The allocator then serves the next event from that thread's cache without a lock (freed
/// on the worker, a block of an envelope's size takes the emitting thread's allocator lock
/// with glibc's malloc, which both threads then contend for at every event), and the
/// reference count of the delivery's route is raised and lowered on the same thread (not
/// bounced between two cores' caches at every event). At most 128 finished deliveries wait
/// (a worker frees the delivery itself when that many do); [`AsyncBackend::close`] frees
/// them all. Payloads are dropped then, not as the handler returns.
pub struct WorkerPool {
    config: WorkerPoolConfig,
    room: Arc<Semaphore>,
    /// Finished deliveries, for the next publish to free.
    spent: Arc<ConcurrentQueue<Delivery>>,
    running: OnceLock<Running>,
    closed: Arc<AtomicBool>,
    /// Deliveries finished after `close` began (counted only then: no shared counter is
    /// touched per delivery while the pool runs).
    drained: Arc<AtomicU64>,
    interrupted: Arc<Mutex<Vec<UnfinishedDelivery>>>,
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Default for WorkerPool {
    fn default() -> Self {
        Self::with_config(WorkerPoolConfig::default())
    }
}

/// Puts a delivery in the interrupted list if the worker is dropped while running it.
struct InFlight<'a> {
    job: Option<Delivery>,
    sink: &'a Mutex<Vec<UnfinishedDelivery>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(job) = self.job.take()
            && let Ok(mut sink) = self.sink.lock()
        {
            sink.push(job.describe());
        }
    }
}

impl WorkerPool {
    /// A pool with `workers` workers and a queue of `queue_size` (the seed's
    /// `NewDefaultAsyncBackend(20, 5000)`), waiting when the queue is full.
    pub fn new(workers: usize, queue_size: usize) -> Self {
        Self::with_config(WorkerPoolConfig { workers, queue_size, ..WorkerPoolConfig::default() })
    }

    /// A pool with a full configuration.
    pub fn with_config(config: WorkerPoolConfig) -> Self {
        // The room is a tokio semaphore, whose permits have a ceiling.
        let queue_size = config.queue_size.clamp(1, Semaphore::MAX_PERMITS);
        let config = WorkerPoolConfig { workers: config.workers.max(1), queue_size, ..config };
        Self {
            config,
            room: Arc::new(Semaphore::new(config.queue_size)),
            spent: Arc::new(ConcurrentQueue::bounded(SPENT_CAPACITY)),
            running: OnceLock::new(),
            closed: Arc::new(AtomicBool::new(false)),
            drained: Arc::new(AtomicU64::new(0)),
            interrupted: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> WorkerPoolConfig {
        self.config
    }

    /// Deliveries waiting in the queue (not counting those running).
    pub fn queued(&self) -> usize {
        self.running.get().map(|r| r.queue.len()).unwrap_or(0)
    }

    fn running(&self) -> Result<&Running> {
        if let Some(r) = self.running.get() {
            return Ok(r);
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::backend("worker-pool", format!("async handlers need a tokio runtime to run on: {e}"))
        })?;
        Ok(self.running.get_or_init(|| {
            // Room is reserved before every send, so the queue never holds more than
            // `queue_size` deliveries: up to `RING_LIMIT` it is one ring allocated up front
            // (nothing allocated or freed per delivery), beyond that a list of blocks.
            let queue = Arc::new(if self.config.queue_size <= RING_LIMIT {
                ConcurrentQueue::bounded(self.config.queue_size)
            } else {
                ConcurrentQueue::unbounded()
            });
            let ready = Arc::new(Notify::new());
            let searching = Arc::new(CachePadded::new(AtomicUsize::new(0)));
            let workers = (0..self.config.workers)
                .map(|_| {
                    let (queue, ready, searching) = (Arc::clone(&queue), Arc::clone(&ready), Arc::clone(&searching));
                    let room = Arc::clone(&self.room);
                    let spent = Arc::clone(&self.spent);
                    let closed = Arc::clone(&self.closed);
                    let drained = Arc::clone(&self.drained);
                    let interrupted = Arc::clone(&self.interrupted);
                    handle.spawn(async move {
                        let mut ctx = None;
                        while let Some(job) = next_delivery(&queue, &ready, &searching).await {
                            room.add_permits(1);
                            let mut guard = InFlight { job: Some(job), sink: &interrupted };
                            if let Some(job) = &guard.job {
                                // Failures are reported inside; nothing goes back to the emitter.
                                let _ = job.run_to_completion_in(&mut ctx).await;
                            }
                            if let Some(job) = guard.job.take() {
                                // Freed here only when too many wait already.
                                drop(spent.push(job));
                            }
                            if closed.load(Ordering::Relaxed) {
                                drained.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            Running { queue, ready, searching, workers: Mutex::new(workers) }
        }))
    }

    /// Room in the queue for `n` deliveries, all or none, as the backpressure policy says.
    async fn reserve(&self, n: usize) -> Result<()> {
        let capacity = self.config.queue_size;
        let full = |waited| Error::Backpressure { backend: "worker-pool".into(), capacity, waited };
        if n > capacity {
            return Err(full(None));
        }
        // `n <= capacity <= Semaphore::MAX_PERMITS < u32::MAX`.
        let n32 = u32::try_from(n).map_err(|_| full(None))?;
        let permit = match self.config.backpressure {
            BackpressurePolicy::FailFast => self.room.try_acquire_many(n32).map_err(|e| match e {
                TryAcquireError::Closed => Error::Closed,
                TryAcquireError::NoPermits => full(None),
            })?,
            BackpressurePolicy::Wait => self.room.acquire_many(n32).await.map_err(|_| Error::Closed)?,
            BackpressurePolicy::WaitFor(limit) => match self.room.try_acquire_many(n32) {
                Ok(p) => p,
                Err(TryAcquireError::Closed) => return Err(Error::Closed),
                Err(TryAcquireError::NoPermits) => tokio::time::timeout(limit, self.room.acquire_many(n32))
                    .await
                    .map_err(|_| full(Some(limit)))?
                    .map_err(|_| Error::Closed)?,
            },
        };
        // Workers give the room back one delivery at a time as they take them.
        permit.forget();
        Ok(())
    }

    /// Frees up to `n` finished deliveries, on this (emitting) thread.
    fn free_spent(&self, n: usize) {
        for _ in 0..n {
            if self.spent.pop().is_err() {
                break;
            }
        }
    }

    /// Queues deliveries whose room is reserved.
    fn send(&self, running: &Running, deliveries: impl IntoIterator<Item = Delivery>) -> Result<()> {
        for d in deliveries {
            running.queue.push(d).map_err(|e| match e {
                concurrent_queue::PushError::Closed(_) => Error::Closed,
                // The reserved room makes this unreachable; never a silent drop if it is not.
                concurrent_queue::PushError::Full(_) => Error::Backpressure {
                    backend: "worker-pool".into(),
                    capacity: self.config.queue_size,
                    waited: None,
                },
            })?;
            // SeqCst, after the push (itself a full barrier): either a searching worker
            // leaving the search sees this delivery, or this sees no worker searching.
            if running.searching.load(Ordering::SeqCst) == 0 {
                running.ready.notify_last();
            }
        }
        Ok(())
    }
}

/// The next delivery for a worker: at once if one is queued, else once one is. `None` once
/// the queue is closed and empty.
///
/// The worker counts in `searching` while it looks: first the queue, then the queue
/// again after each of [`SEARCH_ROUNDS`] yields to the runtime. Then it registers with
/// `ready`, stops counting, and looks once more before it waits, so a delivery queued in
/// between either is seen or wakes it (a delivery is followed by a wake-up whenever no
/// worker is searching). A worker that leaves the search with a delivery while others are
/// queued and no other worker searches wakes one.
async fn next_delivery(queue: &ConcurrentQueue<Delivery>, ready: &Notify, searching: &AtomicUsize) -> Option<Delivery> {
    // What the queue answers now: a delivery, `None` once it is closed and empty, or
    // nothing yet (empty).
    let answer = || match queue.pop() {
        Ok(job) => Some(Some(job)),
        Err(concurrent_queue::PopError::Closed) => Some(None),
        Err(concurrent_queue::PopError::Empty) => None,
    };
    searching.fetch_add(1, Ordering::SeqCst);
    let next = 'search: loop {
        if let Some(next) = answer() {
            break next;
        }
        for _ in 0..SEARCH_ROUNDS {
            tokio::task::yield_now().await;
            if let Some(next) = answer() {
                break 'search next;
            }
        }
        let notified = ready.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        searching.fetch_sub(1, Ordering::SeqCst);
        let last_look = answer();
        if last_look.is_none() {
            notified.await;
        }
        searching.fetch_add(1, Ordering::SeqCst);
        if let Some(next) = last_look {
            break next;
        }
    };
    if searching.fetch_sub(1, Ordering::SeqCst) == 1 && !queue.is_empty() {
        ready.notify_last();
    }
    next
}

#[async_trait]
impl AsyncBackend for WorkerPool {
    fn try_publish(&self, delivery: Delivery) -> Result<Option<Delivery>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let running = self.running()?;
        self.free_spent(2);
        match self.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.send(running, [delivery])?;
                Ok(None)
            }
            Err(TryAcquireError::Closed) => Err(Error::Closed),
            // Full: waiting, or failing fast, is `publish`'s to decide.
            Err(TryAcquireError::NoPermits) => Ok(Some(delivery)),
        }
    }

    async fn publish(&self, delivery: Delivery) -> Result<()> {
        self.publish_all(vec![delivery]).await
    }

    async fn publish_all(&self, deliveries: Vec<Delivery>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let running = self.running()?;
        self.free_spent(2 * deliveries.len());
        self.reserve(deliveries.len()).await?;
        self.send(running, deliveries)
    }

    async fn close(&self, deadline: Duration) -> Result<ShutdownReport> {
        self.closed.store(true, Ordering::Release);
        // Wake emitters waiting for room: they get `Closed`.
        self.room.close();
        let Some(running) = self.running.get() else {
            return Ok(ShutdownReport::default());
        };
        // Workers take what is queued, then stop.
        running.queue.close();
        running.ready.notify_waiters();
        let workers: Vec<_> = running.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        let started = Instant::now();
        let mut handles = workers;
        let joined = tokio::time::timeout(deadline, futures::future::join_all(handles.iter_mut())).await;
        let mut unfinished = Vec::new();
        if joined.is_err() {
            for h in &handles {
                h.abort();
            }
            for h in handles {
                let _ = h.await;
            }
            // What never left the queue…
            while let Ok(d) = running.queue.pop() {
                unfinished.push(d.describe());
            }
            // …and what was running when the workers stopped.
            if let Ok(mut interrupted) = self.interrupted.lock() {
                unfinished.append(&mut interrupted);
            }
            tracing::warn!(
                target: "better_auth_events",
                unfinished = unfinished.len(),
                waited = ?started.elapsed(),
                "worker pool shut down before finishing every delivery"
            );
        }
        // The workers are gone: free the finished deliveries they handed back.
        while self.spent.pop().is_ok() {}
        Ok(ShutdownReport { drained: self.drained.load(Ordering::Relaxed), unfinished })
    }

    fn name(&self) -> &str {
        "worker-pool"
    }
}

/// A shared backend is a backend: keep an `Arc` to inspect it while the bus uses it.
#[async_trait]
impl<B: AsyncBackend + ?Sized> AsyncBackend for Arc<B> {
    async fn publish(&self, delivery: Delivery) -> Result<()> {
        (**self).publish(delivery).await
    }

    fn try_publish(&self, delivery: Delivery) -> Result<Option<Delivery>> {
        (**self).try_publish(delivery)
    }

    async fn publish_all(&self, deliveries: Vec<Delivery>) -> Result<()> {
        (**self).publish_all(deliveries).await
    }

    async fn close(&self, deadline: Duration) -> Result<ShutdownReport> {
        (**self).close(deadline).await
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_counter_sums_what_every_thread_added() {
        let counter = ShardedCounter::default();
        // More threads than shards, so some threads share a shard.
        std::thread::scope(|s| {
            for t in 0..(SHARDS as u64 + 3) {
                let counter = &counter;
                s.spawn(move || {
                    for _ in 0..1000 {
                        counter.add(1);
                    }
                    counter.add(t);
                });
            }
        });
        let threads = SHARDS as u64 + 3;
        assert_eq!(counter.get(), threads * 1000 + threads * (threads - 1) / 2);
    }
}
