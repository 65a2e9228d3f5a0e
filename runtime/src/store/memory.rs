//! [`MemoryStore`]: events in a `Vec`, for tests and development.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::{AppendOutcome, EventQuery, EventStore, Order, Page, QueryBuilder, StoredEvent, paged_stream};
use crate::dlq::{
    AttemptRecord, DeadLetter, DeadLetterCounts, DeadLetterFilter, DeadLetterState, DeliveryKey, DeliveryLog,
    PendingDelivery,
};
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
    /// The outbox: pending deliveries by event id and handler.
    deliveries: BTreeMap<(Uuid, String), PendingRow>,
    /// The dead-letter queue, in the order entries were buried.
    dead: Vec<DeadLetter>,
}

/// A pending delivery of the in-memory outbox.
#[derive(Debug)]
struct PendingRow {
    attempts: u32,
    history: Vec<AttemptRecord>,
    redriven_from: Option<Uuid>,
    due: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
}

impl PendingRow {
    fn new(due: DateTime<Utc>, locked_until: Option<DateTime<Utc>>, redriven_from: Option<Uuid>) -> Self {
        Self { attempts: 0, history: Vec::new(), redriven_from, due, locked_until }
    }

    /// When it can be claimed: its due time, or the end of its lease if that is later.
    fn claimable_at(&self) -> DateTime<Utc> {
        self.locked_until.map_or(self.due, |l| l.max(self.due))
    }
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

    /// Appends events and, for each one stored now, a pending delivery per handler.
    fn insert(
        &self,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Vec<AppendOutcome>> {
        // Convert first so that a payload that cannot be serialized stores nothing, and
        // refuse what the other stores refuse (converting a deeper payload would recurse
        // over it).
        for e in events {
            check_depth(e)?;
        }
        let converted = events.iter().map(|e| e.to_dynamic()).collect::<Result<Vec<_>>>()?;
        let now = Utc::now();
        let mut inner = self.write()?;
        let mut out = Vec::with_capacity(converted.len());
        for event in converted {
            if let Some(&position) = inner.by_id.get(&event.id) {
                out.push(AppendOutcome::Duplicate { position });
                continue;
            }
            let position = inner.events.len() as u64 + 1;
            inner.by_id.insert(event.id, position);
            for handler in handlers {
                inner.deliveries.insert((event.id, (*handler).to_owned()), PendingRow::new(now, lease_until, None));
            }
            inner.events.push(Arc::new(event));
            out.push(AppendOutcome::Stored { position });
        }
        Ok(out)
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
        self.insert(events, &[], None)
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

    fn delivery_log(&self) -> Option<&dyn DeliveryLog> {
        Some(self)
    }
}

/// The outbox and dead-letter queue in memory: the same semantics as the durable stores,
/// gone with the process.
#[async_trait]
impl DeliveryLog for MemoryStore {
    async fn append_with_deliveries(
        &self,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Vec<AppendOutcome>> {
        self.insert(events, handlers, lease_until)
    }

    async fn claim_due(
        &self,
        handlers: &[&str],
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>> {
        let now = Utc::now();
        let mut inner = self.write()?;
        let inner = &mut *inner;
        let mut due: Vec<(&(Uuid, String), &mut PendingRow)> = inner
            .deliveries
            .iter_mut()
            .filter(|((_, h), row)| handlers.contains(&h.as_str()) && row.claimable_at() <= now)
            .collect();
        due.sort_by_key(|(_, row)| row.due);
        let mut out = Vec::new();
        for ((event_id, handler), row) in due.into_iter().take(limit) {
            let Some(&position) = inner.by_id.get(event_id) else { continue };
            row.locked_until = Some(lease_until);
            out.push(PendingDelivery {
                event: (*inner.events[position as usize - 1]).clone(),
                handler: handler.clone(),
                attempts: row.attempts,
                history: row.history.clone(),
                redriven_from: row.redriven_from,
            });
        }
        Ok(out)
    }

    async fn complete(&self, done: &[DeliveryKey]) -> Result<()> {
        let mut inner = self.write()?;
        for key in done {
            inner.deliveries.remove(&(key.event_id, key.handler.clone()));
        }
        Ok(())
    }

    async fn retry_at(&self, key: &DeliveryKey, at: DateTime<Utc>, failure: &AttemptRecord) -> Result<()> {
        let mut inner = self.write()?;
        if let Some(row) = inner.deliveries.get_mut(&(key.event_id, key.handler.clone())) {
            row.attempts = failure.attempt;
            row.history.push(failure.clone());
            row.due = at;
            row.locked_until = None;
        }
        Ok(())
    }

    async fn release(&self, keys: &[DeliveryKey]) -> Result<()> {
        let mut inner = self.write()?;
        for key in keys {
            if let Some(row) = inner.deliveries.get_mut(&(key.event_id, key.handler.clone())) {
                row.locked_until = None;
            }
        }
        Ok(())
    }

    async fn next_due(&self, handlers: &[&str]) -> Result<Option<DateTime<Utc>>> {
        let inner = self.read()?;
        Ok(inner
            .deliveries
            .iter()
            .filter(|((_, h), _)| handlers.contains(&h.as_str()))
            .map(|(_, row)| row.claimable_at())
            .min())
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        Ok(self.read()?.deliveries.len() as u64)
    }

    async fn bury(&self, letter: &DeadLetter) -> Result<()> {
        let mut inner = self.write()?;
        inner.deliveries.remove(&(letter.event.id, letter.handler.clone()));
        inner.dead.push(letter.clone());
        Ok(())
    }

    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxStream<'_, Result<DeadLetter>> {
        let found = self.read().map(|inner| {
            let limit = filter.limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
            let mut found: Vec<DeadLetter> = inner.dead.iter().filter(|l| filter.matches(l)).cloned().collect();
            // Newest failure first; among equal times, the later buried first.
            found.reverse();
            found.sort_by_key(|l| std::cmp::Reverse(l.last_failure));
            found.truncate(limit);
            found
        });
        match found {
            Ok(found) => futures::stream::iter(found.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::once(std::future::ready(Err(e))).boxed(),
        }
    }

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        Ok(self.read()?.dead.iter().find(|l| l.id == id).cloned())
    }

    async fn redrive(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        let now = Utc::now();
        let mut inner = self.write()?;
        let Some(letter) = inner.dead.iter_mut().find(|l| l.id == id && l.is_dead()) else { return Ok(None) };
        letter.state = DeadLetterState::Redriven { at: now };
        let letter = letter.clone();
        inner.deliveries.insert((letter.event.id, letter.handler.clone()), PendingRow::new(now, None, Some(id)));
        Ok(Some(letter))
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<bool> {
        let mut inner = self.write()?;
        let Some(letter) = inner.dead.iter_mut().find(|l| l.id == id && l.is_dead()) else { return Ok(false) };
        letter.state = DeadLetterState::Discarded { at: Utc::now(), reason: reason.to_owned() };
        Ok(true)
    }

    async fn dead_letter_counts(&self, filter: &DeadLetterFilter) -> Result<DeadLetterCounts> {
        let inner = self.read()?;
        let mut counts = DeadLetterCounts::default();
        for letter in inner.dead.iter().filter(|l| filter.matches(l)) {
            counts.add(&letter.handler, letter.event_type(), 1);
        }
        Ok(counts)
    }
}
