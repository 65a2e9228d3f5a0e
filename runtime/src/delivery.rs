//! Async deliveries: one event for one async handler ([`Delivery`]), how it runs to
//! completion with its retry policy, what a final failure and a shutdown report say, and
//! the counters of the async path.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossbeam_utils::CachePadded;
use uuid::Uuid;

use crate::dlq::{AttemptRecord, DeadLetter, DeadLetterState, DeliveryKey, FailureRecord};
use crate::envelope::{Envelope, Event, SharedEvent};
use crate::error::{HandlerError, Result};
use crate::event::EventData;
use crate::event_type::EventType;
use crate::handler::{Dependencies, Handler, HandlerContext, HandlerMode, RetryPolicy};
use crate::outbox::Outbox;

/// The hook called for every async delivery that failed its last attempt.
pub(crate) type FailureHook = Arc<dyn Fn(&DeliveryFailure) + Send + Sync>;

/// What the bus hands every delivery: dependencies, retries, where failures go.
pub(crate) struct DeliveryEnv {
    pub(crate) deps: Arc<Dependencies>,
    pub(crate) default_retry: RetryPolicy,
    pub(crate) on_failure: Option<FailureHook>,
    pub(crate) track_cause: bool,
    pub(crate) stats: Arc<Stats>,
    /// The store's outbox, when the bus's store keeps one: deliveries are then durable.
    pub(crate) outbox: Option<Arc<Outbox>>,
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
/// A backend either runs it in process ([`Delivery::run_to_completion`], what the
/// [`crate::WorkerPool`] does) or ships [`Delivery::cloudevent_json`] to a broker whose consumer runs the handler
/// named [`Delivery::handler_name`].
#[derive(Clone)]
pub struct Delivery {
    pub(crate) event: Arc<SharedEvent>,
    /// The handler and what the bus gives it.
    pub(crate) target: Arc<DeliveryTarget>,
    /// What earlier attempts left; `None` before the first failure.
    pub(crate) progress: Option<Box<Progress>>,
}

/// The handler of a delivery and what the bus gives it, shared by every delivery to that
/// handler (made when the bus's handlers change, not per emit, and kept in the route table).
pub(crate) struct DeliveryTarget {
    pub(crate) handler: Handler,
    pub(crate) env: Arc<DeliveryEnv>,
}

impl DeliveryTarget {
    /// Reports a delivery that failed for good: counted, logged at `ERROR` with its whole
    /// error chain, and passed to the bus's failure hook. `attempts` is 0 for a delivery
    /// that never ran because its event could not be read as the handler's type.
    pub(crate) fn fail_for_good(
        &self,
        event: &Envelope<dyn EventData>,
        attempts: u32,
        first_failure: DateTime<Utc>,
        error: &HandlerError,
    ) {
        self.env.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            target: "better_auth_events",
            event_id = %event.id,
            event_type = %event.event_type,
            handler = %self.handler.name(),
            attempts,
            "async handler failed for good: {}",
            crate::ErrorChain(error)
        );
        if let Some(hook) = &self.env.on_failure {
            hook(&DeliveryFailure {
                event_id: event.id,
                event_type: event.event_type.clone(),
                handler: self.handler.inner.name.clone(),
                attempts,
                first_failure,
                last_failure: Utc::now(),
                error,
                event,
            });
        }
    }
}

impl DeliveryTarget {
    /// The dead letter of a delivery of `event` to this handler that failed for good with
    /// `error`; `None` (logged) when the event cannot be put into JSON.
    pub(crate) fn dead_letter(
        &self,
        event: &Envelope<dyn EventData>,
        progress: Progress,
        error: &HandlerError,
    ) -> Option<DeadLetter> {
        let dynamic = match event.to_dynamic() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(target: "better_auth_events", event_id = %event.id, handler = %self.handler.name(), "cannot put a failed delivery in the dead-letter queue, its event has no JSON form: {}", crate::ErrorChain(&e));
                return None;
            }
        };
        let now = Utc::now();
        Some(DeadLetter {
            id: crate::clock::new_event_id(),
            delivery_id: event.delivery_id(self.handler.name()),
            event: dynamic,
            handler: self.handler.name().to_owned(),
            attempts: progress.attempts,
            first_failure: progress.history.first().map_or(now, |r| r.at),
            last_failure: progress.history.last().map_or(now, |r| r.at),
            error: FailureRecord::of(error),
            history: progress.history,
            redriven_from: progress.redriven_from,
            state: DeadLetterState::Dead,
        })
    }

    /// A delivery whose event cannot be read as this handler's type: it never runs, and is
    /// reported and dead-lettered at once (a poison event never loops).
    pub(crate) async fn poisoned(
        &self,
        event: &Envelope<dyn EventData>,
        redriven_from: Option<Uuid>,
        error: &HandlerError,
    ) {
        let now = Utc::now();
        self.fail_for_good(event, 0, now, error);
        if let Some(outbox) = &self.env.outbox {
            let record = AttemptRecord { attempt: 0, at: now, error: FailureRecord::of(error) };
            let progress = Progress { attempts: 0, history: vec![record], redriven_from };
            if let Some(letter) = self.dead_letter(event, progress, error) {
                outbox.bury(&letter).await;
            }
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event_id", &self.event.env.id)
            .field("event_type", &self.event.env.event_type)
            .field("handler", &self.target.handler.name())
            .finish()
    }
}

impl Delivery {
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
        self.target.handler.name()
    }

    /// The handler this delivery is for.
    pub fn handler(&self) -> &Handler {
        &self.target.handler
    }

    /// The stable delivery id (UUIDv5 of event id and handler name).
    pub fn delivery_id(&self) -> Uuid {
        self.event.env.delivery_id(self.target.handler.name())
    }

    /// The event as a CloudEvents 1.0 structured JSON document. Serialized once per emit
    /// and shared by every delivery of that emit.
    pub fn cloudevent_json(&self) -> Result<Arc<[u8]>> {
        self.event.cloudevent()
    }

    /// Runs one attempt of the handler: with its timeout, a panic caught and reported as
    /// [`HandlerError::Panicked`].
    pub async fn execute(&self, attempt: u32) -> std::result::Result<(), HandlerError> {
        let env = &self.event.env;
        let handler = &self.target.handler.inner;
        let ctx = HandlerContext {
            event_id: env.id,
            handler: handler.name.clone(),
            attempt,
            mode: HandlerMode::Async,
            replay: env.metadata.replay,
            // Only a handler that reads its context takes a reference to the bus's
            // dependencies, shared by every worker.
            deps: handler.uses_context.then(|| Arc::clone(&self.target.env.deps)),
            redriven_from: self.progress.as_ref().and_then(|p| p.redriven_from),
        };
        let run = self.target.handler.invoke(env, &ctx);
        if self.target.env.track_cause { crate::cause::with_cause(env, run).await } else { run.await }
    }

    /// Runs the handler with its retry policy (the handler's own, else the bus default),
    /// waiting out each backoff in this task, and reports a final failure (to the failure
    /// hook, to `tracing`, and to the dead-letter queue of a bus whose store keeps one).
    ///
    /// For backends whose consumer runs deliveries one at a time. The worker pool does not
    /// wait in a worker: it runs one attempt at a time and puts a delivery in backoff on a
    /// timer, or back in the store's outbox.
    pub async fn run_to_completion(&self) -> std::result::Result<(), HandlerError> {
        let mut this = self.clone();
        loop {
            match this.attempt().await {
                Attempt::Succeeded | Attempt::Deferred => return Ok(()),
                Attempt::RetryIn(delay) => tokio::time::sleep(delay).await,
                Attempt::Failed(error) => return Err(error),
            }
        }
    }

    /// Attempts made before this one.
    fn attempts_made(&self) -> u32 {
        self.progress.as_ref().map_or(0, |p| p.attempts)
    }

    /// The delivery's key in the outbox.
    pub(crate) fn key(&self) -> DeliveryKey {
        DeliveryKey { event_id: self.event.env.id, handler: self.target.handler.name().to_owned() }
    }

    /// Runs one attempt and says what comes next: nothing (it succeeded, it failed for good
    /// and was reported, or its retry is scheduled in the store's outbox), or a retry after
    /// a delay, for the caller to schedule.
    pub(crate) async fn attempt(&mut self) -> Attempt {
        let attempt = self.attempts_made() + 1;
        let env = &self.target.env;
        let error = match self.execute(attempt).await {
            Ok(()) => {
                env.stats.succeeded.add(1);
                if let Some(outbox) = &env.outbox {
                    outbox.completed(self.key());
                }
                return Attempt::Succeeded;
            }
            Err(error) => error,
        };
        if matches!(error, HandlerError::Panicked(_)) {
            env.stats.panicked.fetch_add(1, Ordering::Relaxed);
        }
        let now = Utc::now();
        let record = AttemptRecord { attempt, at: now, error: FailureRecord::of(&error) };
        let progress = self.progress.get_or_insert_default();
        progress.attempts = attempt;
        progress.history.push(record.clone());
        let policy = self.target.handler.retry_policy().unwrap_or(&env.default_retry);
        if !error.is_retryable() || attempt >= policy.max_attempts {
            self.fail_for_good(&error).await;
            return Attempt::Failed(error);
        }
        let delay = error.retry_delay().unwrap_or_else(|| policy.delay_before_retry(attempt)).min(LONGEST_RETRY_DELAY);
        env.stats.retried.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "better_auth_events",
            event_id = %self.event_id(),
            handler = %self.handler_name(),
            attempt,
            ?delay,
            "async handler failed, retrying: {}",
            crate::ErrorChain(&error)
        );
        match &env.outbox {
            Some(outbox) => {
                let at = chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                outbox.retry_at(&self.key(), at, &record).await;
                Attempt::Deferred
            }
            None => Attempt::RetryIn(delay),
        }
    }

    /// Reports a delivery that failed its last attempt, and buries it in the dead-letter
    /// queue when the bus's store keeps one.
    async fn fail_for_good(&self, error: &HandlerError) {
        let progress = self.progress.as_deref().cloned().unwrap_or_default();
        let first_failure = progress.history.first().map_or_else(Utc::now, |r| r.at);
        self.target.fail_for_good(&self.event.env, progress.attempts, first_failure, error);
        if let Some(outbox) = &self.target.env.outbox
            && let Some(letter) = self.target.dead_letter(&self.event.env, progress, error)
        {
            outbox.bury(&letter).await;
        }
    }

    /// The delivery as a shutdown report lists it.
    pub(crate) fn describe(&self) -> UnfinishedDelivery {
        UnfinishedDelivery {
            event_id: self.event_id(),
            event_type: self.event_type().clone(),
            handler: self.target.handler.inner.name.clone(),
            attempts: self.attempts_made(),
            event: self.event.env.to_dynamic().ok(),
        }
    }
}

/// The longest wait before a retry, whatever a handler asks for: a month.
pub(crate) const LONGEST_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// What one attempt of a delivery leaves to do.
pub(crate) enum Attempt {
    /// The handler succeeded.
    Succeeded,
    /// It failed, and its next attempt is scheduled in the store's outbox.
    Deferred,
    /// It failed; try again after this delay.
    RetryIn(Duration),
    /// It failed for good (reported, and dead-lettered where there is a queue).
    Failed(HandlerError),
}

/// What earlier attempts of a delivery left: made on its first failure (or taken from the
/// outbox), so a delivery that succeeds at once carries nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Attempts made.
    pub(crate) attempts: u32,
    /// Every failed attempt, in order.
    pub(crate) history: Vec<AttemptRecord>,
    /// The dead letter the delivery was redriven from.
    pub(crate) redriven_from: Option<Uuid>,
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
    /// Attempts made; 0 when the event could not be read as the handler's type, so the
    /// handler never ran.
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
///
/// On a bus whose store keeps an outbox, it stays pending in the store and the next bus on
/// that store runs it. Without one it is lost with the process, so the report carries the
/// event itself, to re-emit or to keep.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UnfinishedDelivery {
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: EventType,
    /// The handler it was for.
    pub handler: Cow<'static, str>,
    /// Attempts made before the shutdown (a delivery waiting for a retry has some).
    pub attempts: u32,
    /// The event, its payload as JSON; `None` only for a payload that cannot be
    /// serialized.
    pub event: Option<Event>,
}

/// Two reports of the same delivery are equal: same event id, type, handler and attempts.
impl PartialEq for UnfinishedDelivery {
    fn eq(&self, other: &Self) -> bool {
        (self.event_id, &self.event_type, &self.handler, self.attempts)
            == (other.event_id, &other.event_type, &other.handler, other.attempts)
    }
}

impl Eq for UnfinishedDelivery {}

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
