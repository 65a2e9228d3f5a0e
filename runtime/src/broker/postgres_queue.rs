//! [`PostgresQueue`]: PostgreSQL as the broker, no other server. Events are rows of the
//! event store, each handler's copy a row of its delivery table, claimed with
//! `FOR UPDATE SKIP LOCKED`; `LISTEN/NOTIFY` wakes idle consumers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::postgres::PgListener;

use super::group_commit::GroupCommit;
use super::{Acker, Broker, Consumer, Inbound, Outgoing, Subscription};
use crate::dlq::{AttemptRecord, DeadLetter, DeadLetterState, DeliveryKey, DeliveryLog, FailureRecord};
use crate::envelope::Envelope;
use crate::envelope::Event;
use crate::error::{Error, HandlerError, Result};
use crate::event::EventData;
use crate::outbox::Outbox;
use crate::store::{EventStore, PostgresStore};

const NAME: &str = "postgres-queue";

/// PostgreSQL as a queue: the broker is the [`PostgresStore`] itself.
///
/// A publish stores the event (once: a republished event keeps its row) and one pending
/// delivery for every handler subscribed to its type, in the store's `event_deliveries`
/// table, then notifies the consumers (`NOTIFY`), all in one transaction. Publications
/// made while another one's transaction runs wait for it and then go together in the next
/// transaction (group commit): the store keeps positions in commit order, so its appends
/// are serialized, and a commit per event would cap concurrent producers at one commit
/// (one WAL flush) per event. Each publish still returns only once its own event is
/// committed.
///
/// Each handler's consumer claims its due deliveries with `FOR UPDATE SKIP LOCKED`
/// (workers of one handler never share one), holding each for the visibility timeout; an
/// acknowledgement deletes the row, a retry sets its next attempt time, a dead message
/// moves to the store's dead-letter queue (where [`crate::dlq::DLQHandler`] lists and
/// redrives it). Subscriptions are rows of `event_subscriptions`.
///
/// Delivery is at least once; a republished event is delivered again only to handlers
/// that completed it already (a pending delivery is not doubled); order follows the due
/// time, not strictly the publish order.
///
/// ```no_run
/// # use better_auth_events_runtime::{EventBus, broker::PostgresQueue, store::PostgresStore};
/// # async fn run() -> better_auth_events_runtime::Result<()> {
/// let store = PostgresStore::new("postgres://127.0.0.1/test").await?;
/// let bus = EventBus::builder().store(store.clone()).broker(PostgresQueue::new(store)).try_build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresQueue {
    inner: Arc<Inner>,
}

struct Inner {
    store: PostgresStore,
    /// Publications made while another's transaction runs go together in the next one.
    publications: GroupCommit<Event>,
    /// The statement queuing a batch's events for their subscribers and notifying them.
    queue_sql: String,
    /// Batches acknowledgements into one statement.
    completions: Arc<Outbox>,
    channel: String,
    subscriptions: String,
    poll: Duration,
}

impl PostgresQueue {
    /// The queue in `store`'s schema, waking consumers by `NOTIFY` and polling every
    /// second besides.
    pub fn new(store: PostgresStore) -> Self {
        Self::with_poll_interval(store, Duration::from_secs(1))
    }

    /// The same, polling every `poll` when no notification comes (a notification sent
    /// while a consumer reconnects is otherwise lost).
    pub fn with_poll_interval(store: PostgresStore, poll: Duration) -> Self {
        let quoted = format!("\"{}\"", store.schema().replace('"', "\"\""));
        let shared: Arc<dyn EventStore> = Arc::new(store.clone());
        let completions = Arc::new(Outbox::over(&shared, Duration::from_secs(60), poll));
        let subscriptions = format!("{quoted}.event_subscriptions");
        let deliveries = format!("{quoted}.event_deliveries");
        // Every event of the batch gets one pending delivery per handler subscribed to its
        // type (a pending one is not doubled), and the consumers one notification.
        let queue_sql = format!(
            "WITH queued AS (INSERT INTO {deliveries} (event_id, handler, next_attempt_at) \
             SELECT e.id, s.handler, NOW() FROM UNNEST($1::text[], $2::text[]) AS e(id, event_type) \
             JOIN {subscriptions} s ON s.event_type = e.event_type \
             ON CONFLICT (event_id, handler) DO NOTHING RETURNING 1) \
             SELECT COUNT(*), pg_notify($3, '') FROM queued"
        );
        Self {
            inner: Arc::new(Inner {
                publications: GroupCommit::default(),
                queue_sql,
                channel: format!("bae_queue_{}", store.schema()),
                subscriptions,
                store,
                completions,
                poll,
            }),
        }
    }

    /// The store the queue lives in.
    pub fn store(&self) -> &PostgresStore {
        &self.inner.store
    }
}

fn db_error(what: impl std::fmt::Display) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::backend(NAME, format!("cannot {what}: {e}"))
}

impl PostgresQueue {
    /// Stores the events of `batch` (once: a republished event keeps its row) and queues
    /// them for their subscribers, in one transaction, then notifies the consumers.
    async fn publish_batch(&self, batch: Vec<Event>) -> Result<()> {
        let inner = &*self.inner;
        let events: Vec<&Envelope<dyn EventData>> = batch.iter().map(|e| e as &Envelope<dyn EventData>).collect();
        let mut tx = inner.store.pool().begin().await.map_err(db_error("begin a transaction to publish events"))?;
        inner.store.append_in(&mut tx, &events, &[]).await?;
        let ids: Vec<String> = batch.iter().map(|e| e.id.to_string()).collect();
        let types: Vec<&str> = batch.iter().map(|e| e.event_type.as_str()).collect();
        sqlx::query(&inner.queue_sql)
            .bind(&ids)
            .bind(&types)
            .bind(&inner.channel)
            .execute(&mut *tx)
            .await
            .map_err(db_error(format_args!("queue {} events for their subscribers", batch.len())))?;
        tx.commit().await.map_err(db_error(format_args!("commit the publication of {} events", batch.len())))?;
        tracing::trace!(target: "better_auth_events", events = batch.len(), "events queued");
        Ok(())
    }
}

#[async_trait]
impl Broker for PostgresQueue {
    fn name(&self) -> &str {
        NAME
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        let event = Event::from_cloudevent_slice(message.structured())?;
        self.inner
            .publications
            .submit(
                event,
                |batch| self.publish_batch(batch),
                |why| Error::backend(NAME, why),
                || {
                    Error::backend(
                        NAME,
                        format!(
                            "the publication of event `{}` was interrupted; it may or may not be queued: publish \
                             it again (a republished event is not queued twice)",
                            message.id()
                        ),
                    )
                },
            )
            .await
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Box<dyn Consumer>> {
        let inner = &*self.inner;
        let pool = inner.store.pool();
        sqlx::query(&format!(
            "INSERT INTO {s} (handler, event_type) SELECT $1, t FROM UNNEST($2::TEXT[]) AS t \
             ON CONFLICT (handler, event_type) DO NOTHING",
            s = inner.subscriptions
        ))
        .bind(&subscription.group)
        .bind(&subscription.event_types)
        .execute(pool)
        .await
        .map_err(db_error(format_args!("subscribe handler `{}`", subscription.group)))?;
        sqlx::query(&format!(
            "DELETE FROM {s} WHERE handler = $1 AND event_type <> ALL($2::TEXT[])",
            s = inner.subscriptions
        ))
        .bind(&subscription.group)
        .bind(&subscription.event_types)
        .execute(pool)
        .await
        .map_err(db_error(format_args!("update the subscription of handler `{}`", subscription.group)))?;
        let mut listener =
            PgListener::connect_with(pool).await.map_err(db_error("open a connection to listen for new messages"))?;
        listener.listen(&inner.channel).await.map_err(db_error(format_args!("LISTEN on `{}`", inner.channel)))?;
        inner.completions.start_completer();
        Ok(Box::new(QueueConsumer {
            queue: self.clone(),
            subscription: subscription.clone(),
            listener: Some(listener),
        }))
    }
}

struct QueueConsumer {
    queue: PostgresQueue,
    subscription: Subscription,
    /// `None` after it failed: the consumer then polls.
    listener: Option<PgListener>,
}

impl QueueConsumer {
    /// Waits for a notification, at most `wait`.
    async fn idle(&mut self, wait: Duration) {
        match &mut self.listener {
            Some(listener) => match tokio::time::timeout(wait, listener.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target: "better_auth_events", handler = %self.subscription.group, "the queue's notification connection failed; polling instead: {e}");
                    self.listener = None;
                }
            },
            None => tokio::time::sleep(wait).await,
        }
    }
}

#[async_trait]
impl Consumer for QueueConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Inbound>> {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let lease = chrono::Duration::from_std(self.subscription.visibility_timeout)
                .ok()
                .and_then(|d| Utc::now().checked_add_signed(d))
                .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
            let names = [self.subscription.group.as_str()];
            let claimed = self.queue.inner.store.claim_due(&names, max, lease).await?;
            if !claimed.is_empty() {
                return Ok(claimed
                    .into_iter()
                    .map(|p| {
                        let count = p.attempts.saturating_add(1);
                        let acker = QueueAcker {
                            queue: self.queue.clone(),
                            key: p.key(),
                            attempts: p.attempts,
                            history: p.history,
                            redriven_from: p.redriven_from,
                            event: p.event.clone(),
                        };
                        Inbound::new(Ok(p.event), count, Box::new(acker))
                    })
                    .collect());
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                return Ok(Vec::new());
            }
            self.idle((give_up - now).min(self.queue.inner.poll)).await;
        }
    }
}

struct QueueAcker {
    queue: PostgresQueue,
    key: DeliveryKey,
    attempts: u32,
    history: Vec<AttemptRecord>,
    redriven_from: Option<uuid::Uuid>,
    event: Event,
}

#[async_trait]
impl Acker for QueueAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        self.queue.inner.completions.completed(self.key);
        Ok(())
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<()> {
        let now = Utc::now();
        let at = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        let record = AttemptRecord {
            attempt: self.attempts + 1,
            at: now,
            error: FailureRecord::of(&HandlerError::new("the handler failed; the worker retries it")),
        };
        self.queue.inner.store.retry_at(&self.key, at, &record).await
    }

    async fn dead(self: Box<Self>, reason: &str) -> Result<()> {
        let now = Utc::now();
        let error = HandlerError::permanent(reason.to_owned());
        let mut history = self.history;
        history.push(AttemptRecord { attempt: self.attempts + 1, at: now, error: FailureRecord::of(&error) });
        let letter = DeadLetter {
            id: crate::clock::new_event_id(),
            delivery_id: self.event.delivery_id(&self.key.handler),
            handler: self.key.handler,
            attempts: self.attempts + 1,
            first_failure: history.first().map_or(now, |r| r.at),
            last_failure: now,
            error: FailureRecord::of(&error),
            history,
            redriven_from: self.redriven_from,
            state: DeadLetterState::Dead,
            event: self.event,
        };
        self.queue.inner.store.bury(&letter).await
    }

    async fn release(self: Box<Self>) -> Result<()> {
        self.queue.inner.store.release(std::slice::from_ref(&self.key)).await
    }
}
