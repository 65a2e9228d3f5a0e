//! The default async backend: [`WorkerPool`], a bounded in-process queue served by a fixed
//! number of tokio tasks.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use concurrent_queue::ConcurrentQueue;
use crossbeam_utils::CachePadded;
use tokio::sync::{Notify, Semaphore, TryAcquireError};

use rustc_hash::FxHashMap;

use super::{AsyncBackend, BackpressurePolicy, Room};
use crate::delivery::{Attempt, Delivery, ShutdownReport, UnfinishedDelivery};
use crate::error::{Error, Result};

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
    /// Per worker, whether it is running a delivery: each on a cache line of its own, so
    /// the workers never write to a shared line per delivery. Read by `close`.
    busy: Arc<[CachePadded<AtomicBool>]>,
}

impl Running {
    /// Whether nothing is queued and no worker runs a delivery.
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.busy.iter().all(|b| !b.load(Ordering::Acquire))
    }
}

/// How many times a worker that finds the queue empty yields to the runtime and looks
/// again before it waits on `ready`: tens of microseconds, which keeps a steady stream
/// of deliveries from costing one thread wake-up each.
const SEARCH_ROUNDS: usize = 64;

/// The largest queue kept in one ring allocated up front (a slot is 32 bytes).
const RING_LIMIT: usize = 1 << 16;

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
/// Dropping the pool (with the last clone of its bus) closes its queue: the workers run
/// what is queued, then exit. [`AsyncBackend::close`] does the same within a deadline and
/// reports what it could not finish.
pub struct WorkerPool {
    config: WorkerPoolConfig,
    room: Arc<Semaphore>,
    running: OnceLock<Running>,
    closed: Arc<AtomicBool>,
    /// Deliveries finished after `close` began (counted only then: no shared counter is
    /// touched per delivery while the pool runs).
    drained: Arc<AtomicU64>,
    interrupted: Arc<Mutex<Vec<UnfinishedDelivery>>>,
    /// Deliveries waiting on a timer for their next attempt.
    retries: Arc<Retries>,
}

/// Deliveries in backoff: each waits on a timer of its own, not in a worker, and goes back
/// in the queue when its timer fires.
#[derive(Default)]
struct Retries {
    next: AtomicU64,
    waiting: Mutex<FxHashMap<u64, (Delivery, Option<tokio::task::AbortHandle>)>>,
}

impl Retries {
    fn take(&self, id: u64) -> Option<Delivery> {
        self.waiting.lock().ok()?.remove(&id).map(|(d, _)| d)
    }

    fn is_empty(&self) -> bool {
        self.waiting.lock().map(|w| w.is_empty()).unwrap_or(true)
    }

    /// Stops every timer and returns the deliveries that were waiting.
    fn cancel_all(&self) -> Vec<Delivery> {
        let Ok(mut waiting) = self.waiting.lock() else { return Vec::new() };
        waiting
            .drain()
            .map(|(_, (d, timer))| {
                if let Some(t) = timer {
                    t.abort();
                }
                d
            })
            .collect()
    }
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
            running: OnceLock::new(),
            closed: Arc::new(AtomicBool::new(false)),
            drained: Arc::new(AtomicU64::new(0)),
            interrupted: Arc::new(Mutex::new(Vec::new())),
            retries: Arc::default(),
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
            let busy: Arc<[CachePadded<AtomicBool>]> =
                (0..self.config.workers).map(|_| CachePadded::new(AtomicBool::new(false))).collect();
            let workers = (0..self.config.workers)
                .map(|i| {
                    let busy = Arc::clone(&busy);
                    let (queue, ready, searching) = (Arc::clone(&queue), Arc::clone(&ready), Arc::clone(&searching));
                    let room = Arc::clone(&self.room);
                    let closed = Arc::clone(&self.closed);
                    let drained = Arc::clone(&self.drained);
                    let interrupted = Arc::clone(&self.interrupted);
                    let retries = Arc::clone(&self.retries);
                    let timers = handle.clone();
                    handle.spawn(async move {
                        while let Some(job) = next_delivery(&queue, &ready, &searching).await {
                            busy[i].store(true, Ordering::Release);
                            room.add_permits(1);
                            let mut guard = InFlight { job: Some(job), sink: &interrupted };
                            let mut retry = None;
                            if let Some(job) = &mut guard.job {
                                // Failures are reported inside; nothing goes back to the emitter.
                                if let Attempt::RetryIn(delay) = job.attempt().await {
                                    retry = Some(delay);
                                }
                            }
                            let job = guard.job.take();
                            if let (Some(delay), Some(job)) = (retry, job) {
                                let queue = Queues {
                                    queue: Arc::clone(&queue),
                                    ready: Arc::clone(&ready),
                                    searching: Arc::clone(&searching),
                                    room: Arc::clone(&room),
                                    interrupted: Arc::clone(&interrupted),
                                };
                                schedule_retry(&timers, &retries, queue, delay, job);
                            } else if closed.load(Ordering::Relaxed) {
                                drained.fetch_add(1, Ordering::Relaxed);
                            }
                            busy[i].store(false, Ordering::Release);
                        }
                    })
                })
                .collect();
            Running { queue, ready, searching, workers: Mutex::new(workers), busy }
        }))
    }

    /// Room in the queue for `n` deliveries, all or none, as the backpressure policy says.
    async fn reserve_room(&self, n: usize) -> Result<Room> {
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
        Ok(Room::taken(&self.room, n32))
    }

    /// Queues deliveries whose room is reserved.
    fn send(&self, running: &Running, deliveries: impl IntoIterator<Item = Delivery>) -> Result<()> {
        for d in deliveries {
            match running.queue.push(d) {
                Ok(()) => {}
                // Shut down between the reservation and now: the delivery is listed in the
                // shutdown report, with its event.
                Err(concurrent_queue::PushError::Closed(d)) => {
                    tracing::warn!(target: "better_auth_events", event_id = %d.event_id(), handler = %d.handler_name(), "the worker pool shut down before this delivery was queued");
                    if let Ok(mut sink) = self.interrupted.lock() {
                        sink.push(d.describe());
                    }
                    continue;
                }
                // The reserved room makes this unreachable; never a silent drop if it is not.
                Err(concurrent_queue::PushError::Full(_)) => {
                    return Err(Error::Backpressure {
                        backend: "worker-pool".into(),
                        capacity: self.config.queue_size,
                        waited: None,
                    });
                }
            }
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
        self.reserve_room(deliveries.len()).await?.keep();
        self.send(running, deliveries)
    }

    fn try_reserve(&self, n: usize) -> Result<Option<Room>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.running()?;
        let capacity = self.config.queue_size;
        let full = || Error::Backpressure { backend: "worker-pool".into(), capacity, waited: None };
        let n32 = u32::try_from(n).ok().filter(|_| n <= capacity).ok_or_else(full)?;
        match self.room.try_acquire_many(n32) {
            Ok(permit) => {
                permit.forget();
                Ok(Some(Room::taken(&self.room, n32)))
            }
            Err(TryAcquireError::Closed) => Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => match self.config.backpressure {
                BackpressurePolicy::FailFast => Err(full()),
                _ => Ok(None),
            },
        }
    }

    async fn reserve(&self, n: usize) -> Result<Room> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.running()?;
        self.reserve_room(n).await
    }

    fn send_reserved(&self, room: Room, deliveries: Vec<Delivery>) -> Result<Option<Vec<Delivery>>> {
        let running = self.running()?;
        room.keep();
        self.send(running, deliveries)?;
        Ok(None)
    }

    fn is_idle(&self) -> bool {
        self.running.get().is_none_or(Running::idle) && self.retries.is_empty()
    }

    async fn close(&self, deadline: Duration) -> Result<ShutdownReport> {
        self.closed.store(true, Ordering::Release);
        let started = Instant::now();
        // What is queued, running or in backoff gets until the deadline: retries whose next
        // attempt comes within it get that attempt.
        if let Some(running) = self.running.get() {
            while !(running.idle() && self.retries.is_empty()) && started.elapsed() < deadline {
                tokio::time::sleep(RETRY_DRAIN_POLL.min(deadline.saturating_sub(started.elapsed()))).await;
            }
        }
        // Wake emitters waiting for room: they get `Closed`, having stored nothing.
        self.room.close();
        let Some(running) = self.running.get() else {
            return Ok(ShutdownReport::default());
        };
        let deadline = deadline.saturating_sub(started.elapsed());
        // Workers take what is queued, then stop.
        running.queue.close();
        running.ready.notify_waiters();
        let workers: Vec<_> = running.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        let mut handles = workers;
        let joined = tokio::time::timeout(deadline, futures::future::join_all(handles.iter_mut())).await;
        let mut unfinished = Vec::new();
        if joined.is_err() {
            for h in &handles {
                h.abort();
            }
            // A worker that finished inside the timed join was awaited already: awaiting its
            // handle again would panic.
            for h in handles {
                if !h.is_finished() {
                    let _ = h.await;
                }
            }
            // What never left the queue…
            while let Ok(d) = running.queue.pop() {
                unfinished.push(d.describe());
            }
            // …and what was running when the workers stopped.
            if let Ok(mut interrupted) = self.interrupted.lock() {
                unfinished.append(&mut interrupted);
            }
        }
        // Deliveries still in backoff (a retry scheduled as the workers stopped among them).
        unfinished.extend(self.retries.cancel_all().iter().map(Delivery::describe));
        if let Ok(mut interrupted) = self.interrupted.lock() {
            unfinished.append(&mut interrupted);
        }
        if !unfinished.is_empty() {
            tracing::warn!(
                target: "better_auth_events",
                unfinished = unfinished.len(),
                waited = ?started.elapsed(),
                "worker pool shut down before finishing every delivery"
            );
        }
        Ok(ShutdownReport { drained: self.drained.load(Ordering::Relaxed), unfinished })
    }

    fn name(&self) -> &str {
        "worker-pool"
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // As the last handle of a channel closes it: the workers take what is queued, then
        // find the queue closed and exit, dropping the handlers they hold.
        self.room.close();
        if let Some(running) = self.running.get() {
            running.queue.close();
            running.ready.notify_waiters();
        }
        // Deliveries in backoff are dropped with the pool (at most once without an outbox).
        let dropped = self.retries.cancel_all();
        if !dropped.is_empty() {
            tracing::warn!(target: "better_auth_events", deliveries = dropped.len(), "worker pool dropped with deliveries waiting for a retry");
        }
    }
}

/// How often a closing pool looks whether the deliveries in backoff are done.
const RETRY_DRAIN_POLL: Duration = Duration::from_millis(10);

/// What a retry timer needs to put its delivery back in the queue.
struct Queues {
    queue: Arc<ConcurrentQueue<Delivery>>,
    ready: Arc<Notify>,
    searching: Arc<CachePadded<AtomicUsize>>,
    room: Arc<Semaphore>,
    interrupted: Arc<Mutex<Vec<UnfinishedDelivery>>>,
}

/// Puts `job` on a timer of its own: after `delay` it takes room in the queue (waiting for
/// it in the timer's task, never in a worker) and goes back in.
fn schedule_retry(
    runtime: &tokio::runtime::Handle,
    retries: &Arc<Retries>,
    to: Queues,
    delay: Duration,
    job: Delivery,
) {
    let id = retries.next.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut waiting) = retries.waiting.lock() {
        waiting.insert(id, (job, None));
    } else {
        return;
    }
    let timer_retries = Arc::clone(retries);
    let timer = runtime.spawn(async move {
        tokio::time::sleep(delay).await;
        let Some(job) = timer_retries.take(id) else { return };
        let lost = |job: &Delivery| {
            if let Ok(mut sink) = to.interrupted.lock() {
                sink.push(job.describe());
            }
        };
        match to.room.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return lost(&job),
        }
        match to.queue.push(job) {
            Ok(()) => {
                if to.searching.load(Ordering::SeqCst) == 0 {
                    to.ready.notify_last();
                }
            }
            Err(e) => lost(&e.into_inner()),
        }
    });
    if let Ok(mut waiting) = retries.waiting.lock()
        && let Some(entry) = waiting.get_mut(&id)
    {
        entry.1 = Some(timer.abort_handle());
    }
}
