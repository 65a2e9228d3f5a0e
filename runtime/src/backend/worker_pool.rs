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

use super::{AsyncBackend, BackpressurePolicy};
use crate::delivery::{Delivery, ShutdownReport, UnfinishedDelivery};
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
                    let closed = Arc::clone(&self.closed);
                    let drained = Arc::clone(&self.drained);
                    let interrupted = Arc::clone(&self.interrupted);
                    handle.spawn(async move {
                        while let Some(job) = next_delivery(&queue, &ready, &searching).await {
                            room.add_permits(1);
                            let mut guard = InFlight { job: Some(job), sink: &interrupted };
                            if let Some(job) = &guard.job {
                                // Failures are reported inside; nothing goes back to the emitter.
                                let _ = job.run_to_completion().await;
                            }
                            guard.job = None;
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
    }
}
