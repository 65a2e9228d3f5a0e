//! The query of an event store: filters, order, limit; built with [`QueryBuilder`].

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{EventStore, StoredEvent};
use crate::error::Result;

/// The order events come back in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (by position).
    #[default]
    Ascending,
    /// Newest first (by position).
    Descending,
}

/// Which events a query selects. Every filter that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventQuery {
    /// Event names; empty means any.
    pub event_types: Vec<String>,
    /// CloudEvents `source`.
    pub source: Option<String>,
    /// CloudEvents `subject`.
    pub subject: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Tenant.
    pub tenant: Option<String>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// Events strictly after this position (ascending order) or strictly before it
    /// (descending order): where a previous page or a checkpoint ended.
    pub after_position: Option<u64>,
    /// At most this many events.
    pub limit: Option<u64>,
    /// Ascending (default) or descending position.
    pub order: Order,
}

impl EventQuery {
    /// A query selecting every event, oldest first.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether `event` passes every filter (position, limit and order aside).
    pub fn matches(&self, event: &StoredEvent) -> bool {
        let e = &event.event;
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == e.event_type.as_str()))
            && self.source.as_deref().is_none_or(|s| s == e.source)
            && self.subject.as_deref().is_none_or(|s| Some(s) == e.subject.as_deref())
            && self.correlation_id.as_deref().is_none_or(|c| Some(c) == e.metadata.correlation_id.as_deref())
            && self.tenant.as_deref().is_none_or(|t| Some(t) == e.metadata.tenant.as_deref())
            && self.since.is_none_or(|t| e.timestamp >= t)
            && self.until.is_none_or(|t| e.timestamp < t)
    }

    /// Whether `position` is past the query's `after_position` in its order.
    pub fn is_past(&self, position: u64) -> bool {
        match (self.after_position, self.order) {
            (None, _) => true,
            (Some(p), Order::Ascending) => position > p,
            (Some(p), Order::Descending) => position < p,
        }
    }
}

/// Builds and runs a query: `store.query().event_type("user.created").since(t).fetch().await?`.
#[must_use = "a query does nothing until `fetch`, `stream` or `count` runs it"]
pub struct QueryBuilder<'a> {
    store: &'a dyn EventStore,
    query: EventQuery,
}

impl<'a> QueryBuilder<'a> {
    pub(crate) fn new(store: &'a dyn EventStore) -> Self {
        Self { store, query: EventQuery::default() }
    }

    /// Only events named `event_type` (repeat to allow several).
    pub fn event_type(mut self, event_type: impl AsRef<str>) -> Self {
        self.query.event_types.push(event_type.as_ref().to_owned());
        self
    }

    /// Only events with one of these names.
    pub fn event_types<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, types: I) -> Self {
        self.query.event_types.extend(types.into_iter().map(|t| t.as_ref().to_owned()));
        self
    }

    /// Only events from this source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.query.source = Some(source.into());
        self
    }

    /// Only events about this subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.query.subject = Some(subject.into());
        self
    }

    /// Only events of this correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.query.correlation_id = Some(id.into());
        self
    }

    /// Only events of this tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.query.tenant = Some(tenant.into());
        self
    }

    /// Only events at or after `time`.
    pub fn since(mut self, time: DateTime<Utc>) -> Self {
        self.query.since = Some(time);
        self
    }

    /// Only events before `time`.
    pub fn until(mut self, time: DateTime<Utc>) -> Self {
        self.query.until = Some(time);
        self
    }

    /// Only events after `position` (in the query's order).
    pub fn after_position(mut self, position: u64) -> Self {
        self.query.after_position = Some(position);
        self
    }

    /// At most `n` events.
    pub fn limit(mut self, n: u64) -> Self {
        self.query.limit = Some(n);
        self
    }

    /// Ascending or descending position.
    pub fn order(mut self, order: Order) -> Self {
        self.query.order = order;
        self
    }

    /// Newest first.
    pub fn newest_first(self) -> Self {
        self.order(Order::Descending)
    }

    /// The query built so far.
    pub fn build(self) -> EventQuery {
        self.query
    }

    /// Every matching event, in memory: for small results (use `stream` for large ones).
    pub async fn fetch(self) -> Result<Vec<StoredEvent>> {
        self.store.fetch(self.query).await
    }

    /// The matching events as a stream that never holds the whole result in memory.
    pub fn stream(self) -> BoxStream<'a, Result<StoredEvent>> {
        self.store.stream(self.query)
    }

    /// How many events match (the limit aside).
    pub async fn count(self) -> Result<u64> {
        self.store.count(&self.query).await
    }

    /// The first matching event.
    pub async fn first(self) -> Result<Option<StoredEvent>> {
        let mut stream = self.limit(1).stream();
        stream.next().await.transpose()
    }
}
