//! [`OutboxTransaction`]: a transaction of the caller's own that an event and its
//! deliveries can be written into ([`crate::EventBus::emit_in`]).

use async_trait::async_trait;

use super::{AppendOutcome, EventStore};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::EventData;

/// An open database transaction of the caller's own, into which
/// [`EventBus::emit_in`](crate::EventBus::emit_in) writes an event and its pending
/// deliveries: they commit with the caller's own writes, or roll back with them.
///
/// Implemented for `sqlx::Transaction<'_, Sqlite>` (with `SqliteStore`) and
/// `sqlx::Transaction<'_, Postgres>` (with `PostgresStore`). The transaction must be on the
/// bus's store's database: begin it on [`SqliteStore::pool`](super::SqliteStore::pool) or
/// [`PostgresStore::pool`](super::PostgresStore::pool).
#[async_trait]
pub trait OutboxTransaction: Send {
    /// Appends `events` and one pending delivery per handler in `handlers` for each event
    /// stored now, in this transaction, on `store`'s tables.
    async fn append_in(
        &mut self,
        store: &dyn EventStore,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
    ) -> Result<Vec<AppendOutcome>>;
}

/// The concrete store `T` behind `store`, or a configuration error naming what was expected.
#[cfg_attr(not(feature = "_sql"), allow(dead_code, reason = "used by the SQL stores"))]
fn store_as<'a, T: 'static>(store: &'a dyn EventStore, expected: &str) -> Result<&'a T> {
    store.as_any().and_then(|any| any.downcast_ref::<T>()).ok_or_else(|| {
        Error::Config(format!(
            "this transaction needs the bus's store to be a {expected}, but it is `{}`; begin the transaction on the bus's store's pool",
            store.name()
        ))
    })
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl OutboxTransaction for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn append_in(
        &mut self,
        store: &dyn EventStore,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
    ) -> Result<Vec<AppendOutcome>> {
        let store = store_as::<super::SqliteStore>(store, "SqliteStore")?;
        store.append_in(self, events, handlers).await
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl OutboxTransaction for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn append_in(
        &mut self,
        store: &dyn EventStore,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
    ) -> Result<Vec<AppendOutcome>> {
        let store = store_as::<super::PostgresStore>(store, "PostgresStore")?;
        store.append_in(self, events, handlers).await
    }
}
