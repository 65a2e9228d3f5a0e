//! The outbox and the dead-letter queue of [`SqliteStore`]: the `event_deliveries` and
//! `dead_letters` tables.
//!
//! Every write takes the store's write lock (`BEGIN IMMEDIATE`), so a claim and its lease
//! are one step: two claimers in this process or another never take the same delivery.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::{Sqlite, SqliteConnection};
use uuid::Uuid;

use super::{
    Batch, EncodedEvent, MAX_BOUND_PARAMETERS, Row, STORE, SqliteStore, decode_row, format_time, lookup_positions,
    parse_time, position_of,
};
use crate::dlq::{
    AttemptRecord, DeadLetter, DeadLetterCounts, DeadLetterFilter, DeliveryKey, DeliveryLog, LetterPage,
    PendingDelivery, StoredDelivery, StoredLetter, distinct_handlers, encode_attempt, encode_letter, paged_letters,
};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::EventData;
use crate::store::AppendOutcome;

/// The deliveries an append writes beside its events: one per handler for each event
/// stored now.
#[derive(Clone, Copy)]
pub(super) struct NewDeliveries<'a> {
    pub(super) handlers: &'a [&'a str],
    pub(super) lease_until: Option<DateTime<Utc>>,
}

impl NewDeliveries<'_> {
    /// Inserts the pending deliveries of the events `event_ids`, in the append's transaction.
    pub(super) async fn insert(self, conn: &mut SqliteConnection, event_ids: &[&str]) -> Result<()> {
        if self.handlers.is_empty() || event_ids.is_empty() {
            return Ok(());
        }
        let now = format_time(&Utc::now());
        let lease = self.lease_until.as_ref().map(format_time);
        let rows: Vec<(&str, &str)> =
            event_ids.iter().flat_map(|id| self.handlers.iter().map(move |h| (*id, *h))).collect();
        for chunk in rows.chunks(MAX_BOUND_PARAMETERS / 4) {
            let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
                "INSERT INTO event_deliveries (event_id, handler, next_attempt_at, locked_until) ",
            );
            qb.push_values(chunk, |mut row, (id, handler)| {
                row.push_bind(*id).push_bind(*handler).push_bind(now.as_str()).push_bind(lease.as_deref());
            });
            qb.push(" ON CONFLICT (event_id, handler) DO NOTHING");
            qb.build()
                .persistent(false)
                .execute(&mut *conn)
                .await
                .map_err(|e| Error::store(STORE, format!("cannot record the deliveries of appended events: {e}")))?;
        }
        Ok(())
    }
}

/// `(?, ?, …)` for `n` bound values, pushed onto `qb`.
fn push_list<'a>(qb: &mut sqlx::QueryBuilder<'a, Sqlite>, values: impl IntoIterator<Item = String>) {
    qb.push("(");
    let mut list = qb.separated(", ");
    for v in values {
        list.push_bind(v);
    }
    list.push_unseparated(")");
}

/// ` WHERE (event_id, handler) IN (VALUES (?, ?), …)` for `keys`.
fn push_keys<'a>(qb: &mut sqlx::QueryBuilder<'a, Sqlite>, keys: &'a [DeliveryKey]) {
    qb.push(" WHERE (event_id, handler) IN (VALUES ");
    let mut first = true;
    for key in keys {
        if !first {
            qb.push(", ");
        }
        first = false;
        qb.push("(").push_bind(key.event_id.to_string()).push(", ").push_bind(key.handler.as_str()).push(")");
    }
    qb.push(")");
}

/// The conditions of `filter` on `dead_letters` (its limit aside).
fn push_letter_filter<'a>(qb: &mut sqlx::QueryBuilder<'a, Sqlite>, filter: &'a DeadLetterFilter) {
    qb.push(" WHERE 1 = 1");
    if !filter.include_settled {
        qb.push(" AND state = 'dead'");
    }
    if let Some(h) = &filter.handler {
        qb.push(" AND handler = ").push_bind(h.as_str());
    }
    if let Some(t) = &filter.event_type {
        qb.push(" AND event_type = ").push_bind(t.as_str());
    }
    if let Some(k) = filter.kind {
        qb.push(" AND kind = ").push_bind(k.as_str());
    }
    if let Some(from) = &filter.from {
        qb.push(" AND last_failure_at >= ").push_bind(format_time(from));
    }
    if let Some(to) = &filter.to {
        qb.push(" AND last_failure_at < ").push_bind(format_time(to));
    }
}

/// Redrives one dead entry in `tx`: marks it redriven and makes its delivery pending again.
/// `None` when it is not dead.
async fn redrive_one(conn: &mut SqliteConnection, id: Uuid, now: &str) -> Result<Option<DeadLetter>> {
    let row: Option<LetterRow> = sqlx::query_as(
        "UPDATE dead_letters SET state = 'redriven', state_at = ? WHERE id = ? AND state = 'dead' \
         RETURNING entry, state, state_at, reason, last_failure_at, id",
    )
    .bind(now)
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error("redrive a dead letter"))?;
    let Some(row) = row else { return Ok(None) };
    let letter = decode_letter(&row)?;
    sqlx::query(
        "INSERT INTO event_deliveries (event_id, handler, next_attempt_at, redriven_from) VALUES (?, ?, ?, ?) \
         ON CONFLICT (event_id, handler) DO UPDATE SET status = 'pending', attempts = 0, history = '[]', \
         next_attempt_at = excluded.next_attempt_at, locked_until = NULL, first_failure_at = NULL, \
         last_failure_at = NULL, last_error = NULL, redriven_from = excluded.redriven_from",
    )
    .bind(letter.event.id.to_string())
    .bind(letter.handler.as_str())
    .bind(now)
    .bind(id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(db_error("make a redriven delivery pending"))?;
    Ok(Some(letter))
}

/// A `dead_letters` row: entry, state, state time, reason, last failure (for paging).
type LetterRow = (String, String, Option<String>, Option<String>, String, String);

fn decode_letter(row: &LetterRow) -> Result<DeadLetter> {
    let (entry, state, state_at, reason, _, _) = row;
    StoredLetter { entry, state, state_at: state_at.as_deref().and_then(parse_time), reason: reason.clone() }
        .decode(STORE)
}

fn db_error(what: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| Error::store(STORE, format!("cannot {what}: {e}"))
}

impl SqliteStore {
    /// Appends events and one pending delivery per handler for each event stored now, on
    /// `conn`, inside the caller's open transaction: they commit or roll back with it. The
    /// deliveries are due at once and unleased: the pump of a bus on this store runs them
    /// once the transaction has committed.
    pub(crate) async fn append_in(
        &self,
        conn: &mut SqliteConnection,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
    ) -> Result<Vec<AppendOutcome>> {
        let encoded = events.iter().map(|e| EncodedEvent::encode(e)).collect::<Result<Vec<_>>>()?;
        let times: Vec<String> = encoded.iter().map(|e| format_time(&e.timestamp)).collect();
        let batch = Batch { encoded: &encoded, times: &times };
        let mut positions: Vec<Option<i64>> = vec![None; encoded.len()];
        let mut out = Vec::with_capacity(encoded.len());
        let mut stored = Vec::new();
        // One event at a time, the insert first: the transaction takes SQLite's write lock
        // before it reads anything, so a writer that commits meanwhile cannot make its
        // snapshot stale ("database is locked"). An id stored already is skipped by the
        // insert and looked up.
        for (i, e) in encoded.iter().enumerate() {
            let outcome = if batch.insert(conn, &[i], &mut positions).await? {
                let p = positions[i].ok_or_else(|| Error::store(STORE, format!("event {} has no position", e.id)))?;
                stored.push(e.id.as_str());
                AppendOutcome::Stored { position: position_of(p)? }
            } else {
                let found = lookup_positions(conn, &[e.id.as_str()]).await?;
                let p = found.first().map(|(_, p)| *p).ok_or_else(|| {
                    Error::store(STORE, format!("event {} was neither inserted nor found stored", e.id))
                })?;
                AppendOutcome::Duplicate { position: position_of(p)? }
            };
            out.push(outcome);
        }
        NewDeliveries { handlers, lease_until: None }.insert(conn, &stored).await?;
        Ok(out)
    }
}

#[async_trait]
impl DeliveryLog for SqliteStore {
    async fn append_with_deliveries(
        &self,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Vec<AppendOutcome>> {
        self.append_inner(events, Some(NewDeliveries { handlers, lease_until })).await
    }

    async fn claim_due(
        &self,
        handlers: &[&str],
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>> {
        if handlers.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let handlers = distinct_handlers(handlers);
        let now = format_time(&Utc::now());
        let writer = self.write_lock.lock().await;
        let mut tx = self.begin_write().await?;
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new("UPDATE event_deliveries SET locked_until = ");
        qb.push_bind(format_time(&lease_until));
        qb.push(" WHERE rowid IN (SELECT rowid FROM event_deliveries WHERE status = 'pending' AND handler IN ");
        push_list(&mut qb, handlers.iter().map(|h| (*h).to_owned()));
        qb.push(" AND next_attempt_at <= ").push_bind(now.clone());
        qb.push(" AND (locked_until IS NULL OR locked_until <= ").push_bind(now);
        qb.push(") ORDER BY next_attempt_at LIMIT ").push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        qb.push(") RETURNING event_id, handler, attempts, history, redriven_from");
        let claimed: Vec<(String, String, i64, String, Option<String>)> =
            qb.build_query_as().persistent(false).fetch_all(&mut *tx).await.map_err(db_error("claim deliveries"))?;
        let mut events = std::collections::HashMap::new();
        for chunk in claimed.chunks(MAX_BOUND_PARAMETERS) {
            let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
                "SELECT position, id, event_type, source, subject, timestamp, version, data, metadata \
                 FROM event_store WHERE id IN ",
            );
            push_list(&mut qb, chunk.iter().map(|c| c.0.clone()));
            let rows: Vec<Row> = qb
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error("read the events of claimed deliveries"))?;
            for row in rows {
                events.insert(row.1.clone(), row);
            }
        }
        tx.commit().await.map_err(db_error("commit a claim"))?;
        drop(writer);
        let mut out = Vec::with_capacity(claimed.len());
        for (event_id, handler, attempts, history, redriven_from) in claimed {
            // Each delivery reads its own copy: one claim may take several handlers' deliveries
            // of the same event.
            let Some(row) = events.get(&event_id).cloned() else {
                tracing::error!(target: "better_auth_events", %event_id, %handler, "a pending delivery's event is missing from the store");
                continue;
            };
            // An unreadable event or delivery stays leased (and comes back when its lease
            // ends) rather than stopping the deliveries claimed with it.
            let pending = decode_row(row).and_then(|stored| {
                StoredDelivery {
                    handler: handler.clone(),
                    attempts,
                    history: &history,
                    redriven_from: redriven_from.as_deref(),
                }
                .decode(stored.event, STORE)
            });
            match pending {
                Ok(p) => out.push(p),
                Err(e) => {
                    tracing::error!(target: "better_auth_events", %event_id, %handler, "cannot read a pending delivery: {}", crate::ErrorChain(&e));
                }
            }
        }
        Ok(out)
    }

    async fn complete(&self, done: &[DeliveryKey]) -> Result<()> {
        for chunk in done.chunks(MAX_BOUND_PARAMETERS / 2) {
            let writer = self.write_lock.lock().await;
            let mut qb = sqlx::QueryBuilder::<Sqlite>::new("DELETE FROM event_deliveries");
            push_keys(&mut qb, chunk);
            qb.build().persistent(false).execute(&self.pool).await.map_err(db_error("mark deliveries done"))?;
            drop(writer);
        }
        Ok(())
    }

    async fn retry_at(&self, key: &DeliveryKey, at: DateTime<Utc>, failure: &AttemptRecord) -> Result<()> {
        let record = encode_attempt(failure, STORE)?;
        let _writer = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE event_deliveries SET attempts = ?, history = json_insert(history, '$[#]', json(?)), \
             next_attempt_at = ?, locked_until = NULL, first_failure_at = COALESCE(first_failure_at, ?), \
             last_failure_at = ?, last_error = ? WHERE event_id = ? AND handler = ?",
        )
        .bind(i64::from(failure.attempt))
        .bind(record)
        .bind(format_time(&at))
        .bind(format_time(&failure.at))
        .bind(format_time(&failure.at))
        .bind(failure.error.to_string())
        .bind(key.event_id.to_string())
        .bind(key.handler.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error("schedule a retry"))?;
        Ok(())
    }

    async fn release(&self, keys: &[DeliveryKey]) -> Result<()> {
        for chunk in keys.chunks(MAX_BOUND_PARAMETERS / 2) {
            let writer = self.write_lock.lock().await;
            let mut qb = sqlx::QueryBuilder::<Sqlite>::new("UPDATE event_deliveries SET locked_until = NULL");
            push_keys(&mut qb, chunk);
            qb.build().persistent(false).execute(&self.pool).await.map_err(db_error("release deliveries"))?;
            drop(writer);
        }
        Ok(())
    }

    async fn next_due(&self, handlers: &[&str]) -> Result<Option<DateTime<Utc>>> {
        if handlers.is_empty() {
            return Ok(None);
        }
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "SELECT MIN(CASE WHEN locked_until > next_attempt_at THEN locked_until ELSE next_attempt_at END) \
             FROM event_deliveries WHERE status = 'pending' AND handler IN ",
        );
        push_list(&mut qb, handlers.iter().map(|h| (*h).to_owned()));
        let (due,): (Option<String>,) =
            qb.build_query_as().persistent(false).fetch_one(&self.pool).await.map_err(db_error("read due times"))?;
        Ok(due.as_deref().and_then(parse_time))
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM event_deliveries WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error("count pending deliveries"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn bury(&self, letter: &DeadLetter) -> Result<()> {
        let entry = encode_letter(letter, STORE)?;
        let _writer = self.write_lock.lock().await;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM event_deliveries WHERE event_id = ? AND handler = ?")
            .bind(letter.event.id.to_string())
            .bind(letter.handler.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error("remove a dead delivery"))?;
        sqlx::query(
            "INSERT INTO dead_letters (id, event_id, event_type, handler, kind, last_failure_at, entry) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(letter.id.to_string())
        .bind(letter.event.id.to_string())
        .bind(letter.event_type())
        .bind(letter.handler.as_str())
        .bind(letter.error.kind.as_str())
        .bind(format_time(&letter.last_failure))
        .bind(entry)
        .execute(&mut *tx)
        .await
        .map_err(db_error("insert a dead letter"))?;
        tx.commit().await.map_err(db_error("commit a dead letter"))
    }

    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxStream<'_, Result<DeadLetter>> {
        let filter = std::sync::Arc::new(filter);
        paged_letters(filter.limit, move |after: Option<(String, String)>, want| {
            let (pool, filter) = (self.pool.clone(), std::sync::Arc::clone(&filter));
            async move {
                let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
                    "SELECT entry, state, state_at, reason, last_failure_at, id FROM dead_letters",
                );
                push_letter_filter(&mut qb, &filter);
                if let Some((at, id)) = after {
                    qb.push(" AND (last_failure_at, id) < (").push_bind(at).push(", ").push_bind(id).push(")");
                }
                qb.push(" ORDER BY last_failure_at DESC, id DESC LIMIT ")
                    .push_bind(i64::try_from(want).unwrap_or(i64::MAX));
                let rows: Vec<LetterRow> = qb
                    .build_query_as()
                    .persistent(false)
                    .fetch_all(&pool)
                    .await
                    .map_err(db_error("read dead letters"))?;
                let next =
                    (rows.len() as u64 >= want).then(|| rows.last().map(|r| (r.4.clone(), r.5.clone()))).flatten();
                let letters = rows.iter().map(decode_letter).collect::<Result<Vec<_>>>()?;
                Ok(LetterPage { letters, next })
            }
        })
    }

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        let row: Option<LetterRow> =
            sqlx::query_as("SELECT entry, state, state_at, reason, last_failure_at, id FROM dead_letters WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("read a dead letter"))?;
        row.as_ref().map(decode_letter).transpose()
    }

    async fn redrive(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        Ok(self.redrive_many(&[id]).await?.pop())
    }

    async fn redrive_many(&self, ids: &[Uuid]) -> Result<Vec<DeadLetter>> {
        let now = format_time(&Utc::now());
        let _writer = self.write_lock.lock().await;
        let mut tx = self.begin_write().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(letter) = redrive_one(&mut tx, *id, &now).await? {
                out.push(letter);
            }
        }
        tx.commit().await.map_err(db_error("commit a redrive"))?;
        Ok(out)
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<bool> {
        let _writer = self.write_lock.lock().await;
        let done = sqlx::query(
            "UPDATE dead_letters SET state = 'discarded', state_at = ?, reason = ? WHERE id = ? AND state = 'dead'",
        )
        .bind(format_time(&Utc::now()))
        .bind(reason)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error("discard a dead letter"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn dead_letter_counts(&self, filter: &DeadLetterFilter) -> Result<DeadLetterCounts> {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new("SELECT handler, event_type, COUNT(*) FROM dead_letters");
        push_letter_filter(&mut qb, filter);
        qb.push(" GROUP BY handler, event_type");
        let rows: Vec<(String, String, i64)> = qb
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("count dead letters"))?;
        let mut counts = DeadLetterCounts::default();
        for (handler, event_type, n) in rows {
            counts.add(&handler, &event_type, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }
}
