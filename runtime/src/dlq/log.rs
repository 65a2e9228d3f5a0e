//! [`DeliveryLog`]: the outbox and the dead-letter queue a durable store keeps beside its
//! events.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use uuid::Uuid;

use super::record::{AttemptRecord, DeadLetter, DeadLetterCounts, DeadLetterFilter};
use crate::envelope::{Envelope, Event};
use crate::error::Result;
use crate::event::EventData;
use crate::store::{AppendOutcome, EventStore};

/// One delivery: an event for one handler.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    /// The event's id.
    pub event_id: Uuid,
    /// The handler's name.
    pub handler: String,
}

/// A delivery taken from a store's outbox to run: the event, its handler, and what earlier
/// attempts left.
#[derive(Clone, Debug)]
pub struct PendingDelivery {
    /// The event, its payload as JSON.
    pub event: Event,
    /// The handler it is for.
    pub handler: String,
    /// Attempts already made.
    pub attempts: u32,
    /// Every failed attempt so far.
    pub history: Vec<AttemptRecord>,
    /// The dead letter it was redriven from, if it came back from the queue.
    pub redriven_from: Option<Uuid>,
}

impl PendingDelivery {
    /// The delivery's key.
    pub fn key(&self) -> DeliveryKey {
        DeliveryKey { event_id: self.event.id, handler: self.handler.clone() }
    }
}

/// The outbox and the dead-letter queue of a durable store.
///
/// Every store of this crate keeps, beside its events, one row per pending async delivery
/// (the `event_deliveries` table of the SQL stores) and the dead-letter queue. A bus on
/// such a store writes an event and its deliveries in one transaction, runs them, and
/// removes each once its handler succeeded; a delivery whose process died comes back when
/// its lease expires. [`crate::dlq::DLQHandler`] is the operator's view of the queue.
///
/// Times are the clock of the process that calls (leases and due times are compared with
/// `Utc::now()` of the caller), so processes sharing a store need clocks within a fraction
/// of the lease of each other.
#[async_trait]
pub trait DeliveryLog: EventStore {
    /// Appends events and, for each event stored now (not a duplicate), one pending delivery
    /// per handler in `handlers`, all in one transaction. With `lease_until`, the deliveries
    /// are leased to the caller until then (it runs them at once); without, they are due now
    /// for whichever process claims them.
    async fn append_with_deliveries(
        &self,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Vec<AppendOutcome>>;

    /// Leases up to `limit` due deliveries of `handlers` (pending, due, and not leased or
    /// with an expired lease) until `lease_until`, oldest due first. Two callers never
    /// get the same delivery while its lease holds.
    async fn claim_due(
        &self,
        handlers: &[&str],
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>>;

    /// Removes deliveries whose handler succeeded.
    async fn complete(&self, done: &[DeliveryKey]) -> Result<()>;

    /// Records a failed attempt and makes the delivery due again at `at`, unleased.
    async fn retry_at(&self, key: &DeliveryKey, at: DateTime<Utc>, failure: &AttemptRecord) -> Result<()>;

    /// Gives leased deliveries back, due now (a shutdown that could not run them).
    async fn release(&self, keys: &[DeliveryKey]) -> Result<()>;

    /// When the next pending delivery of `handlers` falls due (now or in the past for one
    /// due already, leased or not), or `None` when none is pending.
    async fn next_due(&self, handlers: &[&str]) -> Result<Option<DateTime<Utc>>>;

    /// How many deliveries are pending (due, waiting for a retry, or leased).
    async fn pending_deliveries(&self) -> Result<u64>;

    /// Puts a delivery that failed for good in the dead-letter queue and removes it from the
    /// pending deliveries, in one transaction.
    async fn bury(&self, letter: &DeadLetter) -> Result<()>;

    /// The entries matching `filter`, newest failure first, streamed.
    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxStream<'_, Result<DeadLetter>>;

    /// One entry by id.
    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>>;

    /// Sends a dead entry back to its handler: marks it redriven and makes its delivery
    /// pending again with a fresh attempt budget, in one transaction. `None` when the entry
    /// is not dead (redriven or discarded already, by this call's rival too): of two
    /// redrives at once, one wins.
    async fn redrive(&self, id: Uuid) -> Result<Option<DeadLetter>>;

    /// Redrives several dead entries (in as few transactions as the store can), each as
    /// [`DeliveryLog::redrive`] would; returns the entries this call redrove (those not
    /// dead are left out). The default redrives them one by one.
    async fn redrive_many(&self, ids: &[Uuid]) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(letter) = self.redrive(*id).await? {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// Marks a dead entry discarded with `reason`, kept as an audit record. `false` when
    /// the entry is not dead.
    async fn discard(&self, id: Uuid, reason: &str) -> Result<bool>;

    /// How many entries match `filter` (its limit aside), per handler and event type.
    async fn dead_letter_counts(&self, filter: &DeadLetterFilter) -> Result<DeadLetterCounts>;
}

/// A shared store keeps the outbox of the store it shares.
#[async_trait]
impl<S: DeliveryLog + ?Sized> DeliveryLog for std::sync::Arc<S> {
    async fn append_with_deliveries(
        &self,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Vec<AppendOutcome>> {
        (**self).append_with_deliveries(events, handlers, lease_until).await
    }

    async fn claim_due(
        &self,
        handlers: &[&str],
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>> {
        (**self).claim_due(handlers, limit, lease_until).await
    }

    async fn complete(&self, done: &[DeliveryKey]) -> Result<()> {
        (**self).complete(done).await
    }

    async fn retry_at(&self, key: &DeliveryKey, at: DateTime<Utc>, failure: &AttemptRecord) -> Result<()> {
        (**self).retry_at(key, at, failure).await
    }

    async fn release(&self, keys: &[DeliveryKey]) -> Result<()> {
        (**self).release(keys).await
    }

    async fn next_due(&self, handlers: &[&str]) -> Result<Option<DateTime<Utc>>> {
        (**self).next_due(handlers).await
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        (**self).pending_deliveries().await
    }

    async fn bury(&self, letter: &DeadLetter) -> Result<()> {
        (**self).bury(letter).await
    }

    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxStream<'_, Result<DeadLetter>> {
        (**self).dead_letters(filter)
    }

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        (**self).dead_letter(id).await
    }

    async fn redrive(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        (**self).redrive(id).await
    }

    async fn redrive_many(&self, ids: &[Uuid]) -> Result<Vec<DeadLetter>> {
        (**self).redrive_many(ids).await
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<bool> {
        (**self).discard(id, reason).await
    }

    async fn dead_letter_counts(&self, filter: &DeadLetterFilter) -> Result<DeadLetterCounts> {
        (**self).dead_letter_counts(filter).await
    }
}
