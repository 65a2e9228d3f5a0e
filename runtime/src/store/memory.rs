//! [`MemoryStore`]: events in a `Vec`, for tests and development.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use futures::stream::BoxStream;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::{AppendOutcome, EventQuery, EventStore, Order, Page, QueryBuilder, StoredEvent, paged_stream};
use crate::envelope::depth::check_stored as check_depth;
use crate::envelope::{Envelope, Event};
use crate::error::{Error, Result};
use crate::event::EventData;

/// An in-memory store, for tests and development. Cheap to clone: clones share the events.
///
/// At-most-once across a crash: everything is gone when the process ends.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    /// `events[i]` is at position `i + 1`.
    events: Vec<Arc<Event>>,
    by_id: FxHashMap<Uuid, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A query builder over this store: `store.query().event_type("user.created").fetch().await?`.
    pub fn query(&self) -> QueryBuilder<'_> {
        QueryBuilder::new(self)
    }

    fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, MemoryInner>> {
        self.inner.read().map_err(|_| Error::store("memory", "the store's lock was poisoned by a panic"))
    }

    fn write(&self) -> Result<std::sync::RwLockWriteGuard<'_, MemoryInner>> {
        self.inner.write().map_err(|_| Error::store("memory", "the store's lock was poisoned by a panic"))
    }

    fn page(&self, query: &EventQuery) -> Result<Page> {
        let inner = self.read()?;
        let limit = query.limit.unwrap_or(u64::MAX) as usize;
        let n = inner.events.len() as u64;
        let positions: Box<dyn Iterator<Item = u64>> = match query.order {
            Order::Ascending => Box::new(query.after_position.unwrap_or(0) + 1..=n),
            Order::Descending => Box::new((1..query.after_position.unwrap_or(n + 1).min(n + 1)).rev()),
        };
        let mut events = Vec::new();
        let mut last = None;
        for position in positions {
            last = Some(position);
            let stored = StoredEvent { position, event: (*inner.events[position as usize - 1]).clone() };
            if query.matches(&stored) {
                events.push(Ok(stored));
                if events.len() >= limit {
                    break;
                }
            }
        }
        let full = events.len() >= limit;
        Ok(Page { events, next_after: if full { last } else { None } })
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    fn name(&self) -> &str {
        "memory"
    }

    async fn append_batch(&self, events: &[&Envelope<dyn EventData>]) -> Result<Vec<AppendOutcome>> {
        // Convert first so that a payload that cannot be serialized stores nothing, and
        // refuse what the other stores refuse (converting a deeper payload would recurse
        // over it).
        for e in events {
            check_depth(e)?;
        }
        let converted = events.iter().map(|e| e.to_dynamic()).collect::<Result<Vec<_>>>()?;
        let mut inner = self.write()?;
        let mut out = Vec::with_capacity(converted.len());
        for event in converted {
            if let Some(&position) = inner.by_id.get(&event.id) {
                out.push(AppendOutcome::Duplicate { position });
                continue;
            }
            let position = inner.events.len() as u64 + 1;
            inner.by_id.insert(event.id, position);
            inner.events.push(Arc::new(event));
            out.push(AppendOutcome::Stored { position });
        }
        Ok(out)
    }

    async fn get(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        let inner = self.read()?;
        Ok(inner
            .by_id
            .get(&id)
            .map(|&position| StoredEvent { position, event: (*inner.events[position as usize - 1]).clone() }))
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let inner = self.read()?;
        Ok(inner
            .events
            .iter()
            .enumerate()
            .filter(|(i, e)| query.matches(&StoredEvent { position: *i as u64 + 1, event: (***e).clone() }))
            .count() as u64)
    }

    fn stream(&self, query: EventQuery) -> BoxStream<'_, Result<StoredEvent>> {
        paged_stream(query, move |q| std::future::ready(self.page(&q)))
    }
}
