//! The dead-letter queue: deliveries that failed for good, kept with every attempt, for an
//! operator to inspect, redrive or discard.
//!
//! A bus whose store keeps a [`DeliveryLog`] (every store of this crate does) sends a
//! delivery there when its retries are spent, when its error is permanent, when it
//! panicked or timed out on its last attempt, and at once when its event cannot be read as
//! the handler's type (a poison event never loops). [`DLQHandler`] is the operator's view,
//! usable from any process that opens the same store:
//!
//! ```
//! # async fn demo() -> better_auth_events_runtime::Result<()> {
//! use better_auth_events_runtime::dlq::{DLQHandler, DeadLetterFilter, FailureKind};
//! use better_auth_events_runtime::MemoryStore;
//!
//! let store = MemoryStore::new();
//! let dlq = DLQHandler::new(store.clone());
//! for letter in dlq.list(DeadLetterFilter::new().handler("send_welcome")).await? {
//!     println!("{} failed {} times: {}", letter.event.id, letter.attempts, letter.error);
//! }
//! dlq.discard_where(DeadLetterFilter::new().kind(FailureKind::Poison), "malformed, reported upstream").await?;
//! // Failed events go back to their handlers, which retry them with their backoff.
//! dlq.retry_failed().await?;
//! # Ok(()) }
//! ```
//!
//! A redriven delivery is pending in the store again; the bus (in this process or any
//! other on the same store) whose handler it names picks it up within its poll interval.

mod log;
mod record;
#[cfg(any(feature = "_sql", feature = "redis"))]
mod stored;

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

pub use self::log::{DeliveryKey, DeliveryLog, PendingDelivery};
pub use self::record::{
    AttemptRecord, DeadLetter, DeadLetterCounts, DeadLetterFilter, DeadLetterState, FailureKind, FailureRecord,
};
// What the durable stores share.
#[cfg(feature = "redis")]
pub(crate) use self::stored::LETTER_PAGE;
#[cfg(any(feature = "_sql", feature = "redis"))]
pub(crate) use self::stored::{
    LetterPage, StoredDelivery, StoredLetter, distinct_handlers, encode_attempt, encode_letter, paged_letters,
};
use crate::error::{Error, Result};

/// Dead letters redriven per store call by [`DLQHandler::redrive_where`] (one transaction
/// on the SQL stores).
pub const REDRIVE_CHUNK: usize = 500;

/// What a redrive or discard of many entries did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkOutcome {
    /// Entries this call redrove or discarded.
    pub done: u64,
    /// Entries that matched but were settled by someone else in the meantime.
    pub skipped: u64,
}

/// The dead-letter queue of a store: list, inspect, redrive, discard, count.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct DLQHandler {
    log: Arc<dyn DeliveryLog>,
}

impl std::fmt::Debug for DLQHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DLQHandler").field("store", &self.log.name()).finish()
    }
}

/// The seed's spelling of the same thing.
pub type DeadLetterQueue = DLQHandler;

impl DLQHandler {
    /// The queue of `store` (the seed's `DLQHandler::new(store)`). Pass a clone of the store
    /// the bus uses; clones share their connections.
    pub fn new(store: impl DeliveryLog) -> Self {
        Self { log: Arc::new(store) }
    }

    /// The queue of a shared store.
    pub fn from_arc(store: Arc<dyn DeliveryLog>) -> Self {
        Self { log: store }
    }

    /// Sends every dead entry back to its handler with a fresh attempt budget (the handler
    /// retries it with its own backoff). Returns how many went back.
    pub async fn retry_failed(&self) -> Result<BulkOutcome> {
        self.redrive_where(DeadLetterFilter::new()).await
    }

    /// The dead entries matching `filter`, newest failure first.
    pub async fn list(&self, filter: DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        let mut entries = self.stream(filter);
        while let Some(entry) = entries.next().await {
            out.push(entry?);
        }
        Ok(out)
    }

    /// The entries matching `filter`, streamed: memory stays flat however many match.
    pub fn stream(&self, filter: DeadLetterFilter) -> BoxStream<'_, Result<DeadLetter>> {
        self.log.dead_letters(filter)
    }

    /// One entry, whatever its state; [`Error::NotFound`] if there is none with this id.
    pub async fn get(&self, id: Uuid) -> Result<DeadLetter> {
        self.log.dead_letter(id).await?.ok_or_else(|| Error::NotFound { what: format!("dead letter `{id}`") })
    }

    /// Sends one dead entry back to its handler with a fresh attempt budget. `Ok(false)`
    /// when it was already redriven or discarded (by this process or another):
    /// two redrives of one entry deliver it once. [`Error::NotFound`] if there is no such
    /// entry.
    pub async fn redrive(&self, id: Uuid) -> Result<bool> {
        match self.log.redrive(id).await? {
            Some(letter) => {
                tracing::info!(target: "better_auth_events", dead_letter = %id, event_id = %letter.event.id, handler = %letter.handler, "dead letter redriven");
                Ok(true)
            }
            None => {
                self.get(id).await?;
                Ok(false)
            }
        }
    }

    /// Redrives every dead entry matching `filter`, [`REDRIVE_CHUNK`] entries per store
    /// call.
    pub async fn redrive_where(&self, filter: DeadLetterFilter) -> Result<BulkOutcome> {
        let ids = self.ids(filter).await?;
        let mut outcome = BulkOutcome::default();
        for chunk in ids.chunks(REDRIVE_CHUNK) {
            let done = self.log.redrive_many(chunk).await?.len() as u64;
            outcome.done += done;
            outcome.skipped += chunk.len() as u64 - done;
        }
        if outcome.done > 0 {
            tracing::info!(target: "better_auth_events", redriven = outcome.done, skipped = outcome.skipped, "dead letters redriven");
        }
        Ok(outcome)
    }

    /// Redrives every dead entry.
    pub async fn redrive_all(&self) -> Result<BulkOutcome> {
        self.redrive_where(DeadLetterFilter::new()).await
    }

    /// Puts one dead entry aside with `reason`; it stays as an audit record (list it with
    /// [`DeadLetterFilter::include_settled`]). `Ok(false)` when it was not dead.
    pub async fn discard(&self, id: Uuid, reason: &str) -> Result<bool> {
        if self.log.discard(id, reason).await? {
            tracing::info!(target: "better_auth_events", dead_letter = %id, %reason, "dead letter discarded");
            return Ok(true);
        }
        self.get(id).await?;
        Ok(false)
    }

    /// Discards every dead entry matching `filter`.
    pub async fn discard_where(&self, filter: DeadLetterFilter, reason: &str) -> Result<BulkOutcome> {
        let ids = self.ids(filter).await?;
        let mut outcome = BulkOutcome::default();
        for id in ids {
            if self.log.discard(id, reason).await? {
                outcome.done += 1;
            } else {
                outcome.skipped += 1;
            }
        }
        Ok(outcome)
    }

    /// How many dead entries there are, per handler and event type.
    pub async fn counts(&self) -> Result<DeadLetterCounts> {
        self.log.dead_letter_counts(&DeadLetterFilter::new()).await
    }

    /// How many entries match `filter`, per handler and event type.
    pub async fn counts_where(&self, filter: &DeadLetterFilter) -> Result<DeadLetterCounts> {
        self.log.dead_letter_counts(filter).await
    }

    /// The ids matching `filter`, read before any is changed (a redrive that fails again
    /// makes a new entry, which this pass must not pick up).
    async fn ids(&self, filter: DeadLetterFilter) -> Result<Vec<Uuid>> {
        let mut ids = Vec::new();
        let mut entries = self.log.dead_letters(filter);
        while let Some(entry) = entries.next().await {
            ids.push(entry?.id);
        }
        Ok(ids)
    }
}
