//! [`SqliteStore`]: events in a local SQLite file (WAL), through `sqlx`. The embedded default.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use rustc_hash::FxHashMap;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;

mod outbox;

use self::outbox::NewDeliveries;
use super::{
    AppendOutcome, EncodedEvent, EncodedRow, EventQuery, EventStore, Order, PAGE_SIZE, Page, QueryBuilder, StoredEvent,
    paged_stream, row_position, unreadable,
};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::EventData;

/// The store's name, in logs and errors.
const STORE: &str = "sqlite";

/// How times are stored: RFC 3339 in UTC with exactly six fractional digits, so that text
/// order is time order (see the migration).
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Bound parameters SQLite accepts in one statement (`SQLITE_MAX_VARIABLE_NUMBER` of every
/// SQLite since 3.32, including the bundled one).
const MAX_BOUND_PARAMETERS: usize = 32_766;

/// Columns bound per inserted event.
const INSERT_COLUMNS: usize = 10;

/// Events per multi-row `INSERT`: as many as the bound-parameter limit allows.
const ROWS_PER_INSERT: usize = MAX_BOUND_PARAMETERS / INSERT_COLUMNS;
const _: () = assert!(ROWS_PER_INSERT * INSERT_COLUMNS <= MAX_BOUND_PARAMETERS && ROWS_PER_INSERT >= 1000);

/// Connections of the pool unless [`SqliteStoreBuilder::max_connections`] says otherwise.
const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// How long a connection waits for another process's write lock unless
/// [`SqliteStoreBuilder::busy_timeout`] says otherwise.
const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The columns every read selects, in the order [`Row`] expects them.
const SELECT_COLUMNS: &str =
    "SELECT position, id, event_type, source, subject, timestamp, version, data, metadata FROM event_store";

/// One event by id.
const SELECT_BY_ID: &str = "SELECT position, id, event_type, source, subject, timestamp, version, data, metadata \
                            FROM event_store WHERE id = ?";

/// A row as read: position, id, type, source, subject, timestamp, version, data, metadata.
type Row = (i64, String, String, String, Option<String>, String, Option<String>, String, Option<String>);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded default store: events in a local SQLite file, through `sqlx`.
///
/// Cheap to clone: clones share one connection pool (and one writer lock).
///
/// - **Durability.** The file is in WAL mode with `synchronous = FULL` by default: the WAL is
///   fsynced on every commit, so `append` (and therefore `emit`) returns only once the events
///   are on disk; neither a crash of the process (SIGKILL) nor a power loss loses an
///   acknowledged event. [`SqliteStoreBuilder::synchronous_normal`] trades that last
///   guarantee for speed.
/// - **Ordering.** SQLite has one writer at a time, and appends of this store take the write
///   lock up front (`BEGIN IMMEDIATE`, behind an in-process lock so that writers queue
///   instead of polling): positions are assigned and committed in the same order. A reader
///   that has seen position `p` never later sees a new event below `p`, so tailing the store
///   with `after_position` misses nothing. Readers never block the writer (WAL).
/// - **Atomicity.** A batch is one transaction: all of it is stored or none of it.
/// - **Schema.** The embedded migrations (`event_store`, `event_deliveries`) run when the
///   store opens; opening an up-to-date file changes nothing.
///
/// ```no_run
/// # async fn demo() -> better_auth_events_runtime::Result<()> {
/// use better_auth_events_runtime::store::SqliteStore;
///
/// let store = SqliteStore::open("events.db").await?;
/// let logins = store.query().event_type("user.logged_in").count().await?;
/// # let _ = logins; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Appends of this store queue here before asking SQLite for its write lock.
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Configures and opens a [`SqliteStore`]: `SqliteStore::builder(path)…build().await`.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct SqliteStoreBuilder {
    path: Option<PathBuf>,
    max_connections: u32,
    busy_timeout: Duration,
    synchronous: SqliteSynchronous,
}

impl SqliteStoreBuilder {
    /// At most `n` connections in the pool (default 8, at least 1). Reads run in parallel
    /// on them; writes take one at a time. Ignored by [`SqliteStore::in_memory`], which
    /// needs exactly one.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a statement waits for a lock held by another process (or another pool on
    /// the same file) before failing with "database is locked" (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// With `true`, `synchronous = NORMAL` instead of the default `FULL`: the WAL is fsynced
    /// at checkpoints only, not at every commit, which makes appends much faster.
    ///
    /// Caveat: a commit is then safe against a crash of the process (SIGKILL) but not
    /// against a power loss or an operating-system crash, which can lose the last
    /// transactions committed before it: `emit` may have returned for an event that is
    /// gone. The database itself stays consistent either way.
    pub fn synchronous_normal(mut self, normal: bool) -> Self {
        self.synchronous = if normal { SqliteSynchronous::Normal } else { SqliteSynchronous::Full };
        self
    }

    /// Opens (creating it if missing) the database file and runs the migrations.
    ///
    /// Fails with [`Error::Store`] when the file cannot be opened or created (a missing
    /// directory, a file that is not a database, no permission) or cannot be migrated.
    pub async fn build(self) -> Result<SqliteStore> {
        let (options, pool_options, shown) = match &self.path {
            Some(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(self.synchronous)
                    .foreign_keys(true)
                    .busy_timeout(self.busy_timeout);
                let pool_options = SqlitePoolOptions::new().max_connections(self.max_connections);
                (options, pool_options, path.display().to_string())
            }
            None => {
                // One connection, kept forever: the database lives as long as it does, and a
                // shared-cache database would report table locks to concurrent readers.
                let options = "sqlite::memory:"
                    .parse::<SqliteConnectOptions>()
                    .map_err(|e| Error::store(STORE, format!("cannot configure an in-memory SQLite database: {e}")))?
                    .foreign_keys(true)
                    .busy_timeout(self.busy_timeout);
                let pool_options = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
                (options, pool_options, ":memory:".to_owned())
            }
        };
        // A "connection" is a thread of this process with the file open: pinging it before
        // each use (sqlx's default, meant for network databases) would only add a round trip.
        let pool = pool_options.test_before_acquire(false).connect_with(options).await.map_err(|e| {
            let hint = self.path.as_deref().map(open_hint).unwrap_or_default();
            Error::store(STORE, format!("cannot open SQLite database at {shown}: {e}{hint}"))
        })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::store(STORE, format!("cannot migrate SQLite database at {shown}: {e}")))?;
        tracing::debug!(path = %shown, max_connections = self.max_connections, "opened SQLite event store");
        Ok(SqliteStore { pool, write_lock: Arc::new(tokio::sync::Mutex::new(())) })
    }
}

impl SqliteStore {
    /// Opens the store in the file at `path` (created if missing) with the defaults: WAL,
    /// `synchronous = FULL`, foreign keys on, 8 connections, a busy timeout of 5 s.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path).build().await
    }

    /// A builder for the store in the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: Some(path.as_ref().to_owned()),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            synchronous: SqliteSynchronous::Full,
        }
    }

    /// A store in a private in-memory SQLite database, for tests: the same SQL as the file
    /// store, none of its durability (gone when the last clone is dropped).
    pub async fn in_memory() -> Result<Self> {
        SqliteStoreBuilder {
            path: None,
            max_connections: 1,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            synchronous: SqliteSynchronous::Full,
        }
        .build()
        .await
    }

    /// A query builder over this store: `store.query().event_type("user.created").fetch().await?`.
    pub fn query(&self) -> QueryBuilder<'_> {
        QueryBuilder::new(self)
    }

    /// The connection pool, for your own queries on the same file (the tables are
    /// `event_store` and `event_deliveries`).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection of the pool (of every clone), waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction holding SQLite's write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| Error::store(STORE, format!("cannot start a write transaction: {e}")))
    }
}

impl SqliteStore {
    /// Appends events and, with `deliveries`, one pending delivery per handler for each
    /// event stored now, in one transaction.
    async fn append_inner(
        &self,
        events: &[&Envelope<dyn EventData>],
        deliveries: Option<NewDeliveries<'_>>,
    ) -> Result<Vec<AppendOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Everything is serialized before the transaction: a payload that cannot be
        // serialized stores nothing.
        let encoded = events.iter().map(|e| EncodedEvent::encode(e)).collect::<Result<Vec<_>>>()?;
        let times: Vec<String> = encoded.iter().map(|e| format_time(&e.timestamp)).collect();
        // The first occurrence of each id is inserted; later ones are duplicates of it.
        let mut first_of: FxHashMap<&str, usize> = FxHashMap::default();
        first_of.reserve(encoded.len());
        let mut unique = Vec::with_capacity(encoded.len());
        for (i, e) in encoded.iter().enumerate() {
            first_of.entry(e.id.as_str()).or_insert_with(|| {
                unique.push(i);
                i
            });
        }
        let batch = Batch { encoded: &encoded, times: &times };
        // By event index: the position of an event inserted now, or of its copy stored before.
        let mut inserted: Vec<Option<i64>> = vec![None; encoded.len()];
        let mut existing: Vec<Option<i64>> = vec![None; encoded.len()];

        let writer = self.write_lock.lock().await;
        let mut tx = self.begin_write().await?;
        if !batch.insert(&mut tx, &unique, &mut inserted).await? {
            // Some ids were stored already. SQLite skipped their rows but burned a position for
            // each, so start over knowing which ids are new: positions stay free of gaps. (The
            // fast path, a batch of new events, pays nothing for this.)
            tx.rollback().await.map_err(|e| Error::store(STORE, format!("cannot roll back an append: {e}")))?;
            inserted.fill(None);
            tx = self.begin_write().await?;
            let mut known: FxHashMap<String, i64> = FxHashMap::default();
            for chunk in unique.chunks(MAX_BOUND_PARAMETERS) {
                let ids: Vec<&str> = chunk.iter().map(|&i| encoded[i].id.as_str()).collect();
                known.extend(lookup_positions(&mut tx, &ids).await?);
            }
            for &i in &unique {
                existing[i] = known.get(&encoded[i].id).copied();
            }
            let new: Vec<usize> = unique.iter().copied().filter(|&i| existing[i].is_none()).collect();
            if !batch.insert(&mut tx, &new, &mut inserted).await? {
                return Err(Error::store(
                    STORE,
                    "events not stored before were skipped as duplicates (does a trigger write to event_store?)",
                ));
            }
        }
        let mut out = Vec::with_capacity(encoded.len());
        for (i, e) in encoded.iter().enumerate() {
            let first = first_of.get(e.id.as_str()).copied().unwrap_or(i);
            let outcome = match (inserted[first], existing[first]) {
                (Some(p), _) if first == i => AppendOutcome::Stored { position: position_of(p)? },
                (Some(p), _) | (None, Some(p)) => AppendOutcome::Duplicate { position: position_of(p)? },
                (None, None) => {
                    return Err(Error::store(STORE, format!("event {} was neither inserted nor found stored", e.id)));
                }
            };
            out.push(outcome);
        }
        if let Some(new) = deliveries {
            let stored: Vec<&str> =
                encoded.iter().zip(&out).filter(|(_, o)| !o.is_duplicate()).map(|(e, _)| e.id.as_str()).collect();
            new.insert(&mut tx, &stored).await?;
        }
        tx.commit().await.map_err(|e| Error::store(STORE, format!("cannot commit appended events: {e}")))?;
        drop(writer);
        tracing::trace!(
            events = out.len(),
            inserted = out.len() - out.iter().filter(|o| o.is_duplicate()).count(),
            "appended to the SQLite event store"
        );
        Ok(out)
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    fn name(&self) -> &str {
        STORE
    }

    fn delivery_log(&self) -> Option<&dyn crate::dlq::DeliveryLog> {
        Some(self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    async fn append_batch(&self, events: &[&Envelope<dyn EventData>]) -> Result<Vec<AppendOutcome>> {
        self.append_inner(events, None).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        let row: Option<Row> = sqlx::query_as(SELECT_BY_ID)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::store(STORE, format!("cannot read event {id}: {e}")))?;
        row.map(decode_row).transpose()
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM event_store");
        push_filters(&mut qb, &mut Where::default(), query);
        let (n,): (i64,) = qb
            .build_query_as()
            .fetch_one(&self.pool)
            .await
            .map_err(|e| Error::store(STORE, format!("cannot count events: {e}")))?;
        u64::try_from(n).map_err(|_| Error::store(STORE, format!("SQLite returned an invalid count {n}")))
    }

    fn stream(&self, query: EventQuery) -> BoxStream<'_, Result<StoredEvent>> {
        // While the caller works through a page, the next one is read in the background: SQLite
        // steps and rows decode in parallel with the caller, as in a single streaming query, but
        // no read transaction stays open across pages (which would hold back WAL checkpoints).
        let ahead: Arc<std::sync::Mutex<Option<ReadAhead>>> = Arc::default();
        let pool = self.pool.clone();
        paged_stream(query, move |query| {
            let (pool, ahead) = (pool.clone(), Arc::clone(&ahead));
            async move {
                let pending = ahead.lock().ok().and_then(|mut slot| slot.take());
                let page = match pending {
                    Some(mut read) if read.answers(&query) => match (&mut read.task).await {
                        Ok(page) => truncated(page?, query.limit),
                        // Only an abort or a panic ends the task early: read the page again.
                        Err(_) => fetch_page(pool.clone(), query.clone()).await?,
                    },
                    // Dropping a read-ahead that does not answer aborts it.
                    _ => fetch_page(pool.clone(), query.clone()).await?,
                };
                // A full page of `PAGE_SIZE` is a bulk read that most likely goes on; a smaller
                // limit is the last page the stream's own limit allows.
                if let (Some(after), Some(PAGE_SIZE), Ok(runtime)) =
                    (page.next_after, query.limit, tokio::runtime::Handle::try_current())
                {
                    let mut next = query;
                    next.after_position = Some(after);
                    let task = runtime.spawn(fetch_page(pool, next.clone()));
                    if let Ok(mut slot) = ahead.lock() {
                        *slot = Some(ReadAhead { query: next, task });
                    }
                }
                Ok(page)
            }
        })
    }
}

/// One page of `query`: its filters, after its position, in its order, at most its limit.
async fn fetch_page(pool: SqlitePool, query: EventQuery) -> Result<Page> {
    let mut qb = sqlx::QueryBuilder::<Sqlite>::new(SELECT_COLUMNS);
    let mut w = Where::default();
    push_filters(&mut qb, &mut w, &query);
    if let Some(after) = query.after_position {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        w.next(&mut qb);
        qb.push(match query.order {
            Order::Ascending => "position > ",
            Order::Descending => "position < ",
        });
        qb.push_bind(after);
    }
    qb.push(match query.order {
        Order::Ascending => " ORDER BY position ASC",
        Order::Descending => " ORDER BY position DESC",
    });
    if let Some(limit) = query.limit {
        qb.push(" LIMIT ");
        qb.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    // Rows are decoded as they arrive, while SQLite steps to the next ones; a row that cannot
    // be decoded is its error, in its place.
    let capacity = query.limit.map_or(PAGE_SIZE, |l| l.min(PAGE_SIZE)) as usize;
    let mut events = Vec::with_capacity(capacity);
    let mut rows = qb.build_query_as::<Row>().fetch(&pool);
    while let Some(row) = rows.try_next().await.map_err(|e| Error::store(STORE, format!("cannot read events: {e}")))? {
        events.push(decode_row(row));
    }
    let full = query.limit.is_some_and(|l| events.len() as u64 >= l);
    let next_after = if full { events.last().and_then(row_position) } else { None };
    Ok(Page { events, next_after })
}

/// A page read in the background, ahead of the stream that will ask for it. Dropping it
/// aborts the read.
struct ReadAhead {
    query: EventQuery,
    task: tokio::task::JoinHandle<Result<Page>>,
}

impl ReadAhead {
    /// Whether this read answers `query`: the same query, with the same or a smaller limit.
    fn answers(&self, query: &EventQuery) -> bool {
        let mut same = query.clone();
        same.limit = self.query.limit;
        same == self.query
            && match (query.limit, self.query.limit) {
                (Some(asked), Some(read)) => asked <= read,
                (asked, read) => asked == read,
            }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `page` as a read with the smaller `limit` would have returned it.
fn truncated(mut page: Page, limit: Option<u64>) -> Page {
    if let Some(limit) = limit
        && page.events.len() as u64 >= limit
    {
        page.events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        page.next_after = page.events.last().and_then(row_position);
    }
    page
}

/// The encoded events of one append and their stored times.
struct Batch<'a> {
    encoded: &'a [EncodedEvent],
    times: &'a [String],
}

impl Batch<'_> {
    /// Inserts the events `rows` (indexes into the batch), a multi-row `INSERT` per
    /// [`ROWS_PER_INSERT`] of them, and records in `positions` where each one went. Returns
    /// `false`, having stopped, as soon as a statement skipped an event whose id was stored.
    async fn insert(&self, conn: &mut SqliteConnection, rows: &[usize], positions: &mut [Option<i64>]) -> Result<bool> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            if !self.insert_chunk(conn, chunk, positions).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn insert_chunk(
        &self,
        conn: &mut SqliteConnection,
        chunk: &[usize],
        positions: &mut [Option<i64>],
    ) -> Result<bool> {
        let (encoded, times) = (self.encoded, self.times);
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO event_store \
             (id, event_type, source, subject, version, tenant, correlation_id, data, metadata, timestamp) ",
        );
        qb.push_values(chunk, |mut row, &i| {
            let e = &encoded[i];
            row.push_bind(e.id.as_str())
                .push_bind(e.event_type.as_str())
                .push_bind(e.source.as_str())
                .push_bind(e.subject.as_deref())
                .push_bind(e.version.as_deref())
                .push_bind(e.tenant.as_deref())
                .push_bind(e.correlation_id.as_deref())
                .push_bind(e.data.as_str())
                .push_bind(e.metadata.as_str())
                .push_bind(times[i].as_str());
        });
        // Every row of the chunk normally goes in. Under the write lock, AUTOINCREMENT gives
        // the rows of one statement increasing positions in `VALUES` order, each above every
        // position before, the last one being `last_insert_rowid()`: so they are the `len`
        // positions ending there, provided the first of them holds the chunk's first event (a
        // trigger writing to `event_store` could break that; then each position is looked up).
        // The statement after the INSERT checks that in the same round trip to SQLite's
        // thread; a `RETURNING` clause would send a row back per event, 1.5x slower.
        qb.push(
            " ON CONFLICT(id) DO NOTHING; \
             SELECT changes(), last_insert_rowid(), \
             (SELECT id FROM event_store WHERE position = last_insert_rowid() - changes() + 1)",
        );
        let (changed, last, first_id): (i64, i64, Option<String>) = qb
            .build_query_as()
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::store(STORE, format!("cannot insert events: {e}")))?;
        let len = chunk.len() as i64;
        if changed < len {
            return Ok(false);
        }
        let first = last - (len - 1);
        if first_id.as_deref() == chunk.first().map(|&i| encoded[i].id.as_str()) {
            for (k, &i) in chunk.iter().enumerate() {
                positions[i] = Some(first + k as i64);
            }
        } else {
            tracing::debug!("positions of an insert are not contiguous; looking them up one by one");
            let ids: Vec<&str> = chunk.iter().map(|&i| encoded[i].id.as_str()).collect();
            let found: FxHashMap<String, i64> = lookup_positions(conn, &ids).await?.into_iter().collect();
            for &i in chunk {
                positions[i] = found.get(&encoded[i].id).copied();
            }
        }
        Ok(true)
    }
}

/// A position as SQLite returned it.
fn position_of(p: i64) -> Result<u64> {
    u64::try_from(p).map_err(|_| Error::store(STORE, format!("SQLite returned an invalid position {p}")))
}

/// The positions of those of `ids` that are stored (at most [`MAX_BOUND_PARAMETERS`] ids).
async fn lookup_positions(conn: &mut SqliteConnection, ids: &[&str]) -> Result<Vec<(String, i64)>> {
    let mut qb = sqlx::QueryBuilder::<Sqlite>::new("SELECT id, position FROM event_store WHERE id IN (");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    qb.push(")");
    qb.build_query_as()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::store(STORE, format!("cannot look up already stored events: {e}")))
}

/// Writes ` WHERE ` before the first condition and ` AND ` before the others.
#[derive(Default)]
struct Where {
    started: bool,
}

impl Where {
    fn next(&mut self, qb: &mut sqlx::QueryBuilder<'_, Sqlite>) {
        qb.push(if self.started { " AND " } else { " WHERE " });
        self.started = true;
    }
}

/// The filters of `query` (not its position, order or limit), as bound conditions.
fn push_filters<'a>(qb: &mut sqlx::QueryBuilder<'a, Sqlite>, w: &mut Where, query: &EventQuery) {
    if !query.event_types.is_empty() {
        w.next(qb);
        qb.push("event_type IN (");
        let mut types = qb.separated(", ");
        for t in &query.event_types {
            types.push_bind(t.clone());
        }
        qb.push(")");
    }
    let columns = [
        ("source", &query.source),
        ("subject", &query.subject),
        ("correlation_id", &query.correlation_id),
        ("tenant", &query.tenant),
    ];
    for (column, value) in columns {
        if let Some(value) = value {
            w.next(qb);
            qb.push(column).push(" = ").push_bind(value.clone());
        }
    }
    if let Some(since) = &query.since {
        w.next(qb);
        qb.push("timestamp >= ").push_bind(format_time(since));
    }
    if let Some(until) = &query.until {
        w.next(qb);
        qb.push("timestamp < ").push_bind(format_time(until));
    }
}

/// Why a path may not open, when it is plain to see.
fn open_hint(path: &Path) -> String {
    match path.parent() {
        _ if path.is_dir() => " (the path is a directory; give the path of a file in it)".to_owned(),
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            format!(" (the directory {} does not exist; create it first)", dir.display())
        }
        _ => String::new(),
    }
}

/// A time as stored: `2026-11-23T10:00:00.123456Z`.
fn format_time(t: &DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

/// A stored time; rows written by other tools may use any RFC 3339 form.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    parse_stored_time(s).or_else(|| DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc)))
}

/// The store's own format, `2026-11-23T10:00:00.123456Z`, read without a format string:
/// this runs once per event read.
fn parse_stored_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 27 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[26] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time = chrono::NaiveTime::from_hms_micro_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

fn decode_row(row: Row) -> Result<StoredEvent> {
    let (position, id, event_type, source, subject, timestamp, version, data, metadata) = row;
    let Some(timestamp) = parse_time(&timestamp) else {
        return Err(match u64::try_from(position) {
            Ok(p) => unreadable(STORE, p, Some(&id), "timestamp", &format_args!("{timestamp:?}")),
            Err(_) => Error::store(STORE, format!("stored event `{id}` has an invalid position {position}")),
        });
    };
    EncodedRow { position, id, event_type, source, subject, timestamp, version, data, metadata }.decode(STORE)
}

#[cfg(test)]
mod tests {
    use chrono::{SubsecRound, TimeZone};

    use super::*;

    #[test]
    fn times_round_trip_with_six_digits_and_sort_as_text() {
        let t =
            Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).single().expect("valid") + chrono::Duration::microseconds(7);
        let text = format_time(&t);
        assert_eq!(text, "2026-11-23T10:00:00.000007Z");
        assert_eq!(parse_time(&text), Some(t));
        let later = format_time(&(t + chrono::Duration::microseconds(1)));
        assert!(later > text);
        assert_eq!(parse_time("2026-11-23T10:00:00+01:00"), Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single());
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-23T10:00:00.000007Z"), None, "month 13");
        assert_eq!(parse_time("2026-11-23T10:00:0x.000007Z"), None);
        // Other precisions, as other tools may write them, through the RFC 3339 path.
        assert_eq!(
            parse_time("2026-11-23T10:00:00.5Z"),
            Some(t - chrono::Duration::microseconds(7) + chrono::Duration::milliseconds(500))
        );
        for _ in 0..1000 {
            let now = Utc::now().trunc_subsecs(6);
            assert_eq!(parse_stored_time(&format_time(&now)), Some(now));
        }
    }
}
