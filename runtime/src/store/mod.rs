//! Event stores: the [`EventStore`] trait, its query API, and the stores.
//!
//! | store | feature | durability | ordering of positions |
//! |---|---|---|---|
//! | [`MemoryStore`] | always | none: gone with the process (at-most-once across a crash) | commit order |
//! | `SqliteStore` | `sqlite` (default) | a file in WAL mode, fsynced on commit | commit order (one writer) |
//! | `PostgresStore` | `postgres` | PostgreSQL, committed before `append` returns | commit order (appends serialize on an advisory lock) |
//! | `RedisStore` | `redis` | as the Redis server is configured: without AOF a restart loses data | commit order (a Lua script per batch) |
//!
//! "Commit order" means: a reader that has seen position `p` will never later see a new
//! event at a position below `p`, so tailing a store with `after_position` misses nothing.

use std::future::Future;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use uuid::Uuid;

use crate::dlq::DeliveryLog;
use crate::envelope::depth::{self, MAX_PAYLOAD_DEPTH};
use crate::envelope::{Envelope, Event, EventMetadata};
use crate::error::{Error, Result};
use crate::event::{EventData, TypedEvent};

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;
mod transaction;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
pub use query::{EventQuery, Order, QueryBuilder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};
/// The `sqlx` crate the SQL stores are built on: begin a transaction on a store's pool for
/// [`crate::EventBus::emit_in`] with the same version of it.
#[cfg(feature = "_sql")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sqlx;
pub use transaction::OutboxTransaction;

/// What an append did with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored at this global position.
    Stored {
        /// Global position, from 1, in commit order.
        position: u64,
    },
    /// An event with this id was already stored at this position; nothing was written.
    Duplicate {
        /// Position of the copy already stored.
        position: u64,
    },
}

impl AppendOutcome {
    /// The event's position, whether it was stored now or before.
    pub fn position(&self) -> u64 {
        match self {
            Self::Stored { position } | Self::Duplicate { position } => *position,
        }
    }

    /// Whether the event was already stored.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate { .. })
    }
}

/// An event read back from a store, with its global position.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Global position in the store.
    pub position: u64,
    /// The event, its payload as JSON.
    pub event: Event,
}

impl StoredEvent {
    /// The event as the typed event `T`.
    ///
    /// This is the seam where stored events of an older schema version will be upcast to
    /// `T`'s version by the schema registry; today the payload must read as `T` directly.
    pub fn into_typed<T: TypedEvent>(self) -> Result<Envelope<T>> {
        self.event.into_typed()
    }
}

/// Durable (or, for [`MemoryStore`], in-memory) storage of emitted events.
///
/// With a store, `emit` returns only after [`EventStore::append`] returned: the event is
/// durable before anyone is told it was emitted. Appends are idempotent on the event id.
/// Read with `store.query()`: every store has it, and so has `dyn EventStore`.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// The store's name, for logs and errors.
    fn name(&self) -> &str;

    /// The store's outbox and dead-letter queue, when it keeps them (every store of this
    /// crate does). A bus on a store without them runs async deliveries at most once and
    /// has no dead-letter queue.
    fn delivery_log(&self) -> Option<&dyn DeliveryLog> {
        None
    }

    /// The store as `Any`, for code that needs its concrete type (the SQL stores give
    /// themselves, so that `EventBus::emit_in` can write in a caller's transaction).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Appends one event.
    async fn append(&self, event: &Envelope<dyn EventData>) -> Result<AppendOutcome> {
        let mut out = self.append_batch(&[event]).await?;
        out.pop().ok_or_else(|| Error::store(self.name(), "append_batch returned no outcome for one event"))
    }

    /// Appends events atomically: all are stored or none is. Events whose id is already
    /// stored (or repeated within the batch) come back as [`AppendOutcome::Duplicate`].
    async fn append_batch(&self, events: &[&Envelope<dyn EventData>]) -> Result<Vec<AppendOutcome>>;

    /// Reads one event by id.
    async fn get(&self, id: Uuid) -> Result<Option<StoredEvent>>;

    /// Reads one event by id that must be there: a missing one is [`Error::NotFound`].
    async fn find(&self, id: Uuid) -> Result<StoredEvent> {
        self.get(id).await?.ok_or_else(|| Error::NotFound { what: format!("event `{id}`") })
    }

    /// How many events match `query` (its limit, order and `after_position` aside).
    async fn count(&self, query: &EventQuery) -> Result<u64>;

    /// The events matching `query`, streamed page by page: memory stays flat however many
    /// events match.
    ///
    /// A stored event that cannot be read back comes out as one [`Error::UnreadableEvent`]
    /// in its place (it counts toward the query's limit), and the stream goes on with the
    /// events after it. Any other error ends the stream.
    fn stream(&self, query: EventQuery) -> BoxStream<'_, Result<StoredEvent>>;

    /// The events matching `query`, collected. For small results.
    ///
    /// Fails with the first error of [`stream`](EventStore::stream), an
    /// [`Error::UnreadableEvent`] included: read with `stream` to get past an unreadable event.
    async fn fetch(&self, query: EventQuery) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        let mut s = self.stream(query);
        while let Some(e) = s.next().await {
            out.push(e?);
        }
        Ok(out)
    }
}

impl dyn EventStore {
    /// A query builder over this store (the seed's `store.query()`). Every store of this
    /// crate has the same method; for your own store, call it on `&store as &dyn EventStore`.
    pub fn query(&self) -> QueryBuilder<'_> {
        QueryBuilder::new(self)
    }
}

/// A shared store is a store: keep an `Arc` to query it while the bus appends to it.
#[async_trait]
impl<S: EventStore + ?Sized> EventStore for std::sync::Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn delivery_log(&self) -> Option<&dyn DeliveryLog> {
        (**self).delivery_log()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        (**self).as_any()
    }

    async fn append(&self, event: &Envelope<dyn EventData>) -> Result<AppendOutcome> {
        (**self).append(event).await
    }

    async fn append_batch(&self, events: &[&Envelope<dyn EventData>]) -> Result<Vec<AppendOutcome>> {
        (**self).append_batch(events).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        (**self).get(id).await
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        (**self).count(query).await
    }

    fn stream(&self, query: EventQuery) -> BoxStream<'_, Result<StoredEvent>> {
        (**self).stream(query)
    }

    async fn fetch(&self, query: EventQuery) -> Result<Vec<StoredEvent>> {
        (**self).fetch(query).await
    }
}

/// An event flattened into the columns every store keeps: what stores write.
#[derive(Clone, Debug)]
#[cfg_attr(
    not(any(feature = "_sql", feature = "redis")),
    allow(dead_code, reason = "used by the SQL and Redis stores")
)]
pub(crate) struct EncodedEvent {
    /// Event id (UUID text).
    pub id: String,
    /// Event name.
    pub event_type: String,
    /// Source.
    pub source: String,
    /// Subject.
    pub subject: Option<String>,
    /// Time, microsecond precision.
    pub timestamp: DateTime<Utc>,
    /// Schema version.
    pub version: Option<String>,
    /// Tenant (also inside `metadata`; a column to filter on).
    pub tenant: Option<String>,
    /// Correlation id (also inside `metadata`; a column to filter on).
    pub correlation_id: Option<String>,
    /// The payload as JSON text.
    pub data: String,
    /// [`EventMetadata`] as JSON text.
    pub metadata: String,
}

#[cfg_attr(
    not(any(feature = "_sql", feature = "redis")),
    allow(dead_code, reason = "used by the SQL and Redis stores")
)]
impl EncodedEvent {
    /// Flattens an event; the payload is serialized once, straight to JSON text.
    ///
    /// What could not be read back is refused with [`Error::Validation`]: a payload nested
    /// deeper than [`MAX_PAYLOAD_DEPTH`](crate::MAX_PAYLOAD_DEPTH) levels (its serialization
    /// stops there) or an extension attribute nested too deep.
    pub(crate) fn encode(event: &Envelope<dyn EventData>) -> Result<Self> {
        crate::envelope::check_attributes(event)?;
        let event_type = event.event_type.as_str();
        let ser = |source| Error::Serialization { event_type: event_type.to_owned(), source };
        depth::check_extensions(event_type, &event.metadata)?;
        let mut data = Vec::with_capacity(128);
        depth::write_bounded(&mut data, event.data.as_serialize(), MAX_PAYLOAD_DEPTH)
            .map_err(|e| e.into_error(event_type, "the payload", MAX_PAYLOAD_DEPTH))?;
        let data = String::from_utf8(data).map_err(|e| Error::store("encode", e))?;
        Ok(Self {
            id: event.id.to_string(),
            event_type: event.event_type.as_str().to_owned(),
            source: event.source.to_string(),
            subject: event.subject.clone(),
            timestamp: event.timestamp,
            version: event.version.as_deref().map(str::to_owned),
            tenant: event.metadata.tenant.clone(),
            correlation_id: event.metadata.correlation_id.clone(),
            data,
            metadata: serde_json::to_string(&event.metadata).map_err(ser)?,
        })
    }
}

/// A stored row as every store reads it back.
#[derive(Clone, Debug)]
#[cfg_attr(
    not(any(feature = "_sql", feature = "redis")),
    allow(dead_code, reason = "used by the SQL and Redis stores")
)]
pub(crate) struct EncodedRow {
    /// Global position.
    pub position: i64,
    /// Event id.
    pub id: String,
    /// Event name.
    pub event_type: String,
    /// Source.
    pub source: String,
    /// Subject.
    pub subject: Option<String>,
    /// Time.
    pub timestamp: DateTime<Utc>,
    /// Schema version.
    pub version: Option<String>,
    /// Payload JSON text.
    pub data: String,
    /// Metadata JSON text (may be empty or `null` for rows written by other tools).
    pub metadata: Option<String>,
}

#[cfg_attr(
    not(any(feature = "_sql", feature = "redis")),
    allow(dead_code, reason = "used by the SQL and Redis stores")
)]
impl EncodedRow {
    /// The row as a [`StoredEvent`]; `store` names the store in errors. A row that cannot
    /// be read is an [`Error::UnreadableEvent`] naming its position and id.
    pub(crate) fn decode(self, store: &str) -> Result<StoredEvent> {
        let position = u64::try_from(self.position).map_err(|e| {
            Error::store(store, format!("stored event `{}` has an invalid position {}: {e}", self.id, self.position))
        })?;
        let bad = |what: &str, e: &dyn std::fmt::Display| unreadable(store, position, Some(&self.id), what, e);
        let id = Uuid::parse_str(&self.id).map_err(|e| bad("id", &e))?;
        let data = serde_json::from_str(&self.data).map_err(|e| bad("payload", &e))?;
        let metadata: EventMetadata = match self.metadata.as_deref() {
            None | Some("") | Some("null") => EventMetadata::default(),
            Some(m) => serde_json::from_str(m).map_err(|e| bad("metadata", &e))?,
        };
        // Built whole: `Event::new` would make (and throw away) a fresh id and time per row.
        let event = Event {
            id,
            event_type: self.event_type.into(),
            source: self.source.into(),
            subject: self.subject,
            timestamp: self.timestamp,
            version: self.version.map(Into::into),
            metadata,
            data,
        };
        Ok(StoredEvent { position, event })
    }
}

/// The [`Error::UnreadableEvent`] of the stored event at `position` of `store` (stored id
/// `id`), whose `what` (payload, metadata, id, time…) cannot be read because of `cause`.
pub(crate) fn unreadable(
    store: &str,
    position: u64,
    id: Option<&str>,
    what: &str,
    cause: &dyn std::fmt::Display,
) -> Error {
    Error::unreadable_event(store, position, id.map(str::to_owned), format!("unreadable {what}: {cause}"))
}

/// One page of a paged read.
pub(crate) struct Page {
    /// The matching rows of the page, in order: each its event, or the error of a row that
    /// cannot be read ([`Error::UnreadableEvent`]), which the stream yields in its place.
    pub events: Vec<Result<StoredEvent>>,
    /// Where the next page starts (`after_position`), or `None` when the read is done.
    pub next_after: Option<u64>,
}

/// The position of a row of a [`Page`], read or not: `None` for an error that names none.
#[cfg_attr(not(feature = "_sql"), allow(dead_code, reason = "used by the SQL stores"))]
pub(crate) fn row_position(row: &Result<StoredEvent>) -> Option<u64> {
    match row {
        Ok(event) => Some(event.position),
        Err(Error::UnreadableEvent { position, .. }) => Some(*position),
        Err(_) => None,
    }
}

/// Rows per page of the paged reads of [`paged_stream`].
pub(crate) const PAGE_SIZE: u64 = 1000;

/// A stream over `query` made of pages fetched by `fetch_page`, each asked for the
/// query with its `after_position` moved past the previous page and at most `PAGE_SIZE`
/// (or the remaining limit) events. Stores share it so that none holds a whole result.
/// The rows of a page that cannot be read are yielded as errors in their place, and the
/// stream goes on; an error fetching a page ends it.
pub(crate) fn paged_stream<'a, F, Fut>(query: EventQuery, fetch_page: F) -> BoxStream<'a, Result<StoredEvent>>
where
    F: Fn(EventQuery) -> Fut + Send + Sync + 'a,
    Fut: Future<Output = Result<Page>> + Send + 'a,
{
    struct State<F> {
        query: EventQuery,
        remaining: Option<u64>,
        done: bool,
        fetch_page: F,
    }
    let state = State { remaining: query.limit, query, done: false, fetch_page };
    stream::unfold(state, |mut st| async move {
        if st.done || st.remaining == Some(0) {
            return None;
        }
        let mut page_query = st.query.clone();
        page_query.limit = Some(st.remaining.map_or(PAGE_SIZE, |r| r.min(PAGE_SIZE)));
        match (st.fetch_page)(page_query).await {
            Ok(page) => {
                match page.next_after {
                    Some(p) => st.query.after_position = Some(p),
                    None => st.done = true,
                }
                if let Some(r) = &mut st.remaining {
                    *r = r.saturating_sub(page.events.len() as u64);
                }
                // An unreadable row is an item of its own: the stream goes on after it.
                Some((stream::iter(page.events), st))
            }
            Err(e) => {
                st.done = true;
                Some((stream::iter(vec![Err(e)]), st))
            }
        }
    })
    .flatten()
    .boxed()
}
