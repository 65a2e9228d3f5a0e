//! [`PostgresStore`]: events in PostgreSQL, through sqlx.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Connection, Executor, Postgres, Row};
use uuid::Uuid;

use super::{
    AppendOutcome, EncodedEvent, EncodedRow, EventQuery, EventStore, Order, PAGE_SIZE, Page, QueryBuilder, StoredEvent,
    paged_stream, row_position,
};
use crate::dlq::{
    AttemptRecord, DeadLetter, DeadLetterCounts, DeadLetterFilter, DeliveryKey, DeliveryLog, LetterPage,
    PendingDelivery, StoredDelivery, StoredLetter, distinct_handlers, encode_attempt, encode_letter, paged_letters,
};
use crate::envelope::Envelope;
use crate::error::{BoxError, Error, Result};
use crate::event::EventData;

/// The store's name, in logs and errors.
const STORE: &str = "postgres";

/// The schema when none is set.
pub const DEFAULT_SCHEMA: &str = "public";

const DEFAULT_MAX_CONNECTIONS: u32 = 10;
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// PostgreSQL truncates longer identifiers (`NAMEDATALEN - 1`).
const MAX_SCHEMA_LEN: usize = 63;

/// The embedded migrations (`runtime/migrations/postgres`), run by every `build`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The columns every read selects, in [`encoded_row`]'s order.
const COLUMNS: &str = "position, id, event_type, source, subject, timestamp, version, data::text, metadata::text";

/// An event store on PostgreSQL (feature `postgres`), through a sqlx [`PgPool`]. Cheap to
/// clone: clones share the pool.
///
/// ```no_run
/// # async fn demo() -> better_auth_events_runtime::Result<()> {
/// use better_auth_events_runtime::store::PostgresStore;
///
/// let store = PostgresStore::builder("postgres://app@127.0.0.1:5432/app").schema("events").build().await?;
/// let logins = store.query().event_type("user.login").newest_first().limit(10).fetch().await?;
/// # Ok(()) }
/// ```
///
/// # Layout
///
/// One table, `event_store`, in the store's schema (default `public`, see
/// [`PostgresStoreBuilder::schema`]), created by the embedded sqlx migrations that
/// [`build`](PostgresStoreBuilder::build) runs (their bookkeeping table `_sqlx_migrations`
/// is in the same schema). Columns: `position` (`BIGINT` identity, the global position),
/// `id` (primary key, the UUID as text), `event_type`, `source`, `subject`, `version`,
/// `tenant`, `correlation_id`, `data` (the payload, `JSONB`), `metadata` (correlation,
/// causation, tenant, actor, trace context and extensions, `JSONB`), `timestamp`
/// (`TIMESTAMPTZ`, microseconds) and `created_at`. Payloads are plain `JSONB`, so SQL can
/// read them: `SELECT data->>'email' FROM event_store WHERE event_type = 'user.created'`.
/// Type, time, source, tenant and correlation id are indexed.
///
/// Beside it, the outbox and the dead-letter queue ([`DeliveryLog`]): `event_deliveries`,
/// one row per pending async delivery (`event_id` referencing `event_store`, `handler`,
/// `attempts`, `history` the failed attempts as a `JSONB` array, `next_attempt_at`,
/// `locked_until` the lease of the process running it, `redriven_from`), and
/// `dead_letters`, one row per delivery that failed for good (`entry` the whole entry as
/// JSON text; `handler`, `event_type`, `kind`, `last_failure_at` to filter on; `state`,
/// `state_at` and `reason` for redrives and discards). Events and their deliveries are
/// written by one statement; claims lock due rows with `FOR UPDATE SKIP LOCKED`, so
/// processes sharing the schema never run one delivery at once while its lease holds.
///
/// # Durability
///
/// `append` returns after PostgreSQL committed the events: with the server's defaults
/// (`fsync = on`, `synchronous_commit = on`) they survive a crash of the application or of
/// the server. With `synchronous_commit = off` a server crash can lose the last few hundred
/// milliseconds of commits; with synchronous replication, `append` returns once the
/// replicas `synchronous_standby_names` asks for have them.
///
/// # Atomicity and order
///
/// Every event of a batch is encoded before the database is touched, so an event that
/// cannot be serialized stores nothing. A batch is then **one SQL statement**, hence one
/// transaction and one round trip: an `INSERT … SELECT … FROM UNNEST($1::text[], …) WITH
/// ORDINALITY … ORDER BY ord RETURNING id, position` of the whole batch, all of it stored
/// or none. Outcomes come back in input order, and positions within a batch follow it.
///
/// Ids already stored, or repeated within the batch, are skipped and reported as
/// [`AppendOutcome::Duplicate`] with the position of the copy that is kept. A batch whose
/// ids are distinct is first sent as a plain insert (`ON CONFLICT` costs about 10 % more
/// per row: a primary-key probe and a confirmation WAL record each); if one of its ids is
/// stored already, that statement fails whole, storing nothing (PostgreSQL logs the
/// unique violation), and the batch is sent again with `ON CONFLICT (id) DO NOTHING`, the
/// same statement looking up the positions of the ids it skipped. A batch that repeats an
/// id goes straight to the second form.
///
/// Positions are given in **commit order**: a reader that has seen position `p` never later
/// sees a new event below `p`, so a reader tailing the store with `after_position` misses
/// nothing. A sequence alone does not give that (one transaction takes position 5, another
/// 6 and commits first: a reader sees 6, then 5 appears), so every append takes a
/// transaction-scoped advisory lock, `pg_advisory_xact_lock(key)`, with a constant key
/// derived from the schema name ([`PostgresStore::lock_key`]). It is taken in a CTE that
/// every inserted row is joined with, so it is held before the first position is drawn,
/// and released by the commit, once the events are visible. The cost: appends to one
/// schema are serialized, across every process, one transaction (one commit, one WAL
/// flush) at a time, so concurrent appenders queue instead of sharing commits; batches
/// (`append_batch`, or the bus batching emits) are the way to more throughput. Readers
/// never take the lock and never wait for it. A writer that inserts into `event_store`
/// without the store must take the same lock in its transaction, or it breaks the
/// guarantee for everyone. An appender waits for the lock as long as the server's
/// `lock_timeout` lets it (unlimited by default). Positions increase but are not
/// contiguous: a failed append or a skipped duplicate leaves a gap.
///
/// # Queries
///
/// Every query is one SQL statement whose filters are bound parameters; reads go page by
/// page (1,000 events a page, by position, on the position index), so memory stays
/// flat whatever the number of events read, and no connection is held between pages.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the database is, without a password, for messages.
    url: String,
    schema: String,
    lock_key: i64,
    /// `"schema".event_store`.
    table: String,
    /// The appends of events alone.
    append: AppendSql,
    /// The appends of events with their pending deliveries.
    append_outbox: AppendSql,
    existing_sql: String,
    /// The statements of the outbox and the dead-letter queue.
    outbox: OutboxSql,
    get_sql: String,
    select_sql: String,
    count_sql: String,
}

/// The two statements of an append (see [`append_statements`]).
struct AppendSql {
    /// The append of a batch whose ids are all new: a plain insert.
    insert: String,
    /// The append of a batch that may hold ids already stored: `ON CONFLICT DO NOTHING`,
    /// and the positions of the ids skipped.
    append: String,
}

/// The next page of a stream, being read in the background.
struct ReadAhead {
    /// The query it answers.
    query: EventQuery,
    task: tokio::task::JoinHandle<Result<Vec<Result<StoredEvent>>>>,
}

impl ReadAhead {
    /// Whether its rows answer `query`: the same query, with a limit no larger (the rows
    /// are then cut to it).
    fn answers(&self, query: &EventQuery) -> bool {
        let mut asked = query.clone();
        asked.limit = self.query.limit;
        asked == self.query && query.limit.unwrap_or(PAGE_SIZE) <= self.query.limit.unwrap_or(PAGE_SIZE)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.inner.url).field("schema", &self.inner.schema).finish()
    }
}

/// Configures and connects a [`PostgresStore`]:
/// `PostgresStore::builder(url).schema("events").max_connections(20).build().await?`.
#[must_use = "a builder does nothing until `build` connects"]
pub struct PostgresStoreBuilder {
    url: String,
    schema: String,
    max_connections: u32,
    acquire_timeout: Duration,
    pool: Option<PgPool>,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("pool", &self.pool.is_some())
            .finish()
    }
}

impl PostgresStoreBuilder {
    /// The schema holding the store's tables (default `public`). It is created if missing,
    /// and every connection of the store's pool has its `search_path` set to it (alone), so
    /// SQL run on [`PostgresStore::pool`] sees the store's tables unqualified.
    ///
    /// ASCII letters, digits and `_` only, not starting with a digit nor with `pg_`, at most
    /// 63 bytes; anything else fails `build` with [`Error::Config`]. The name is quoted in
    /// SQL, so it is case-sensitive: `Events` and `events` are two schemas (prefer lowercase).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The most connections the pool opens (default 10, at least 1). Ignored with
    /// [`pool`](Self::pool).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long to wait for a connection (default 30 s): to connect at `build`, and to get
    /// one from the pool afterwards (with [`pool`](Self::pool), that pool's own setting
    /// applies after `build`).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Uses this pool instead of opening one; the URL given to
    /// [`PostgresStore::builder`] is then ignored (pass `""`).
    ///
    /// The pool's connections are left as they are (their `search_path` included): the
    /// store names its table with the schema in every statement, so it works whatever the
    /// pool's `search_path`. `build` still creates the schema if missing and runs the
    /// migrations, on a separate connection opened with the pool's connect options and
    /// closed afterwards. Your own SQL on this pool must qualify the table
    /// (`"schema".event_store`) unless its `search_path` already names the schema.
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Connects, creates the schema if missing and runs the embedded migrations.
    ///
    /// Fails with [`Error::Store`] naming the server (the URL without its password) and the
    /// cause when the URL is invalid, the server is unreachable within the acquire timeout,
    /// refuses the login, or a migration fails; with [`Error::Config`] for an invalid schema
    /// name.
    pub async fn build(self) -> Result<PostgresStore> {
        validate_schema(&self.schema)?;
        let quoted = format!("\"{}\"", self.schema);
        let (options, url) = match &self.pool {
            Some(pool) => {
                let options = (*pool.connect_options()).clone();
                let url = describe(&options);
                (options, url)
            }
            None => {
                let url = redact(&self.url);
                // sqlx reads any scheme (`mysql://…` would reach a PostgreSQL on 5432).
                let scheme = self.url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
                if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
                    return Err(Error::store(
                        STORE,
                        format!("invalid PostgreSQL URL `{url}`: it must start with `postgres://` or `postgresql://`"),
                    ));
                }
                let options = PgConnectOptions::from_str(&self.url)
                    .map_err(|e| failure(format!("invalid PostgreSQL URL `{url}`"), e))?;
                (options, url)
            }
        };

        // A connection of its own for the schema and the migrations: connecting once
        // directly reports the cause at once (the pool retries a refused connection until
        // its timeout, then reports only the timeout), and it leaves a given pool untouched.
        let mut conn = match tokio::time::timeout(self.acquire_timeout, PgConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(failure(format!("cannot connect to PostgreSQL at {url}"), e)),
            Err(_) => {
                return Err(Error::store(
                    STORE,
                    format!("cannot connect to PostgreSQL at {url}: no connection within {:?}", self.acquire_timeout),
                ));
            }
        };
        let prepared = prepare_schema(&mut conn, &self.schema, &quoted, &url).await;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection failed");
        }
        prepared?;

        let pool = match self.pool {
            Some(pool) => pool,
            None => {
                let set_search_path: Arc<str> = format!("SET search_path TO {quoted}").into();
                PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.acquire_timeout)
                    .after_connect(move |conn, _meta| {
                        let sql = Arc::clone(&set_search_path);
                        Box::pin(async move {
                            conn.execute(&*sql).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
                    .map_err(|e| failure(format!("cannot connect to PostgreSQL at {url}"), e))?
            }
        };

        let table = format!("{quoted}.event_store");
        let deliveries = format!("{quoted}.event_deliveries");
        let inner = Inner {
            append: append_statements(&table, None),
            append_outbox: append_statements(&table, Some(&deliveries)),
            outbox: OutboxSql::new(&table, deliveries, format!("{quoted}.dead_letters")),
            existing_sql: format!("SELECT id, position FROM {table} WHERE id = ANY($1::text[])"),
            get_sql: format!("SELECT {COLUMNS} FROM {table} WHERE id = $1"),
            select_sql: format!("SELECT {COLUMNS} FROM {table}"),
            count_sql: format!("SELECT COUNT(*) FROM {table}"),
            lock_key: lock_key(&self.schema),
            table,
            schema: self.schema,
            url,
        };
        tracing::debug!(url = %inner.url, schema = %inner.schema, "postgres event store ready");
        Ok(PostgresStore { pool, inner: Arc::new(inner) })
    }
}

/// The append statements of `table`. Both take the batch's columns as `$1` to `$10` and the
/// advisory lock key as `$11`; the second also the batch's length as `$12`.
///
/// With `deliveries` (the outbox table), each statement also inserts one pending delivery
/// per handler for every event it stored now (the rows its insert returned: never for a
/// duplicate), due at once or leased: a CTE taking the handlers' names, the due time and the
/// lease (or NULL) as the next three parameters. Events and deliveries are then one
/// statement, hence one transaction: both are stored or neither.
fn append_statements(table: &str, deliveries: Option<&str>) -> AppendSql {
    // The JSON columns go as `text[]` and are cast to `jsonb` row by row in the select
    // list, not as `$8::text[]::jsonb[]`: the array cast parses every document of the
    // batch into one memory context that lives as long as the statement (10,000 events:
    // megabytes of fresh pages, 40 % slower), the row cast in a context reset per row.
    let insert = format!(
        "INSERT INTO {table} \
         (id, event_type, source, subject, version, tenant, correlation_id, data, metadata, timestamp) \
         SELECT id, event_type, source, subject, version, tenant, correlation_id, data::jsonb, metadata::jsonb, ts \
         FROM lock, UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::timestamptz[]) WITH ORDINALITY \
         AS t(id, event_type, source, subject, version, tenant, correlation_id, data, metadata, ts, ord) \
         ORDER BY ord"
    );
    // Held before the first position is drawn (every inserted row is joined with it), until
    // the commit.
    let lock = "WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock($11))";
    let outbox = |first: usize| {
        deliveries.map_or_else(String::new, |d| {
            format!(
                ", outbox AS (INSERT INTO {d} (event_id, handler, status, attempts, next_attempt_at, locked_until) \
                 SELECT ins.id, h.handler, 'pending', 0, ${}::timestamptz, ${}::timestamptz \
                 FROM ins, UNNEST(${first}::text[]) AS h(handler))",
                first + 1,
                first + 2
            )
        })
    };
    let insert_sql = match deliveries {
        None => format!("{lock} {insert} RETURNING id, position"),
        Some(_) => {
            format!("{lock}, ins AS ({insert} RETURNING id, position){} SELECT id, position FROM ins", outbox(12))
        }
    };
    let append_sql = format!(
        "{lock}, ins AS ({insert} ON CONFLICT (id) DO NOTHING RETURNING id, position){} \
         SELECT id, position, TRUE FROM ins \
         UNION ALL \
         SELECT id, position, FALSE FROM {table} \
         WHERE (SELECT COUNT(*) FROM ins) < $12 AND id = ANY($1::text[])",
        outbox(13)
    );
    AppendSql { insert: insert_sql, append: append_sql }
}

/// The statements of the outbox (`event_deliveries`) and the dead-letter queue
/// (`dead_letters`), their tables named with the schema.
struct OutboxSql {
    /// `"schema".event_deliveries`.
    deliveries: String,
    /// `"schema".dead_letters`.
    letters: String,
    claim: String,
    complete: String,
    retry: String,
    release: String,
    next_due: String,
    pending: String,
    bury: String,
    letter: String,
    redrive: String,
    discard: String,
}

impl OutboxSql {
    fn new(table: &str, deliveries: String, letters: String) -> Self {
        let d = &deliveries;
        let l = &letters;
        // Any row of a pair of arrays `$1` (event ids) and `$2` (handlers).
        let keys = "UNNEST($1::text[], $2::text[]) AS k(event_id, handler) \
                    WHERE d.event_id = k.event_id AND d.handler = k.handler";
        Self {
            // The due rows are picked and locked by a materialized CTE (evaluated once, its
            // LIMIT included), skipping rows another claimer has locked; a row another claimer
            // leased and committed meanwhile is re-checked against its new lease and skipped.
            // Then leased, and returned joined with their events, oldest due first.
            claim: format!(
                "WITH due AS MATERIALIZED (\
                 SELECT event_id, handler FROM {d} \
                 WHERE status = 'pending' AND handler = ANY($1::text[]) AND next_attempt_at <= $2 \
                 AND (locked_until IS NULL OR locked_until <= $2) \
                 ORDER BY next_attempt_at, event_id, handler LIMIT $3 \
                 FOR UPDATE SKIP LOCKED), \
                 claimed AS (UPDATE {d} AS d SET locked_until = $4 FROM due \
                 WHERE d.event_id = due.event_id AND d.handler = due.handler \
                 RETURNING d.event_id, d.handler, d.attempts, d.history, d.redriven_from, d.next_attempt_at) \
                 SELECT {COLUMNS}, c.handler, c.attempts, c.history::text, c.redriven_from \
                 FROM claimed AS c JOIN {table} AS e ON e.id = c.event_id \
                 ORDER BY c.next_attempt_at, c.event_id, c.handler"
            ),
            complete: format!("DELETE FROM {d} AS d USING {keys}"),
            retry: format!(
                "UPDATE {d} SET attempts = $3, history = history || jsonb_build_array($4::jsonb), \
                 next_attempt_at = $5, locked_until = NULL, first_failure_at = COALESCE(first_failure_at, $6), \
                 last_failure_at = $6, last_error = $7 \
                 WHERE event_id = $1 AND handler = $2"
            ),
            release: format!("UPDATE {d} AS d SET locked_until = NULL FROM {keys}"),
            next_due: format!(
                "SELECT MIN(GREATEST(next_attempt_at, locked_until)) FROM {d} \
                 WHERE status = 'pending' AND handler = ANY($1::text[])"
            ),
            pending: format!("SELECT COUNT(*) FROM {d} WHERE status = 'pending'"),
            // One statement: the delivery leaves the outbox and enters the queue together.
            // Burying the same entry again (a retry after a lost answer) adds nothing.
            bury: format!(
                "WITH gone AS (DELETE FROM {d} WHERE event_id = $2 AND handler = $4) \
                 INSERT INTO {l} (id, event_id, event_type, handler, kind, last_failure_at, state, entry) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'dead', $7) ON CONFLICT (id) DO NOTHING"
            ),
            letter: format!("SELECT entry, state, state_at, reason FROM {l} WHERE id = $1"),
            // One statement: the entry is marked redriven only if it is still dead (of two
            // redrives at once, the second waits for the first's row lock, then finds it
            // redriven and changes nothing), and its delivery is pending again, a fresh one.
            redrive: format!(
                "WITH r AS (UPDATE {l} SET state = 'redriven', state_at = $2 \
                 WHERE id = ANY($1::text[]) AND state = 'dead' RETURNING id, event_id, handler, entry), \
                 back AS (INSERT INTO {d} (event_id, handler, status, attempts, history, redriven_from, \
                 next_attempt_at, locked_until) \
                 SELECT DISTINCT ON (event_id, handler) event_id, handler, 'pending', 0, '[]'::jsonb, id, $2, NULL \
                 FROM r ORDER BY event_id, handler, id DESC \
                 ON CONFLICT (event_id, handler) DO UPDATE SET status = 'pending', attempts = 0, \
                 history = '[]'::jsonb, redriven_from = EXCLUDED.redriven_from, \
                 next_attempt_at = EXCLUDED.next_attempt_at, locked_until = NULL, first_failure_at = NULL, \
                 last_failure_at = NULL, last_error = NULL) \
                 SELECT entry FROM r"
            ),
            discard: format!(
                "UPDATE {l} SET state = 'discarded', state_at = $2, reason = $3 WHERE id = $1 AND state = 'dead'"
            ),
            deliveries,
            letters,
        }
    }
}

/// The deliveries an append writes for the events it stores.
struct NewDeliveries {
    /// The handlers' names, each once.
    handlers: Vec<String>,
    /// When they are due.
    now: DateTime<Utc>,
    /// Until when they are leased to the appender, if they are.
    lease: Option<DateTime<Utc>>,
}

/// Creates the schema if missing, points the connection's `search_path` at it and runs
/// the migrations there.
async fn prepare_schema(conn: &mut PgConnection, schema: &str, quoted: &str, url: &str) -> Result<()> {
    async fn exists(conn: &mut PgConnection, schema: &str) -> std::result::Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(conn)
            .await
    }
    let found =
        exists(&mut *conn, schema).await.map_err(|e| failure(format!("cannot read the schemas of {url}"), e))?;
    if !found {
        let create = format!("CREATE SCHEMA IF NOT EXISTS {quoted}");
        if let Err(e) = conn.execute(create.as_str()).await {
            // Two stores creating the schema at once: one of them may fail although the
            // schema now exists.
            let found_now = exists(&mut *conn, schema).await.unwrap_or(false);
            if !found_now {
                return Err(failure(format!("cannot create schema {quoted} in {url}"), e));
            }
        }
    }
    conn.execute(format!("SET search_path TO {quoted}").as_str())
        .await
        .map_err(|e| failure(format!("cannot set search_path to {quoted} in {url}"), e))?;
    MIGRATOR
        .run(&mut *conn)
        .await
        .map_err(|e| failure(format!("cannot run the event store migrations in schema {quoted} of {url}"), e))?;
    Ok(())
}

impl PostgresStore {
    /// Connects to the PostgreSQL at `url` (`postgres://user:password@host:port/database`,
    /// with sqlx's URL parameters such as `sslmode`), in schema `public`, and runs the
    /// migrations: the seed's `PostgresStore::new(url)`. Same as
    /// `PostgresStore::builder(url).build().await`.
    pub async fn new(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// A builder, to set the schema, the pool's size and timeout, or an existing pool.
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            pool: None,
        }
    }

    /// A query builder over this store: `store.query().event_type("user.created").fetch().await?`.
    pub fn query(&self) -> QueryBuilder<'_> {
        QueryBuilder::new(self)
    }

    /// The store's connection pool, for your own SQL (a pool the store opened has its
    /// `search_path` set to the store's schema).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The key of the advisory lock every append takes (`pg_advisory_xact_lock(key)`):
    /// a constant derived from the schema name (FNV-1a, 64 bits, of
    /// `better-auth-events:event_store:` followed by the name). A writer inserting into the
    /// table without the store must take it too to keep positions in commit order.
    pub fn lock_key(&self) -> i64 {
        self.inner.lock_key
    }

    /// The events answering `query` (one page), each row decoded as it arrives, while the
    /// server sends the next ones; a row that cannot be decoded is its error, in its place.
    async fn fetch_page(&self, query: &EventQuery) -> Result<Vec<Result<StoredEvent>>> {
        let limit = query.limit.unwrap_or(PAGE_SIZE);
        let mut qb = sqlx::QueryBuilder::<Postgres>::new(&self.inner.select_sql);
        let has_where = push_filters(&mut qb, query);
        if let Some(after) = query.after_position {
            qb.push(if has_where { " AND " } else { " WHERE " });
            qb.push(match query.order {
                Order::Ascending => "position > ",
                Order::Descending => "position < ",
            });
            qb.push_bind(i64::try_from(after).unwrap_or(i64::MAX));
        }
        qb.push(match query.order {
            Order::Ascending => " ORDER BY position ASC LIMIT ",
            Order::Descending => " ORDER BY position DESC LIMIT ",
        });
        if limit == PAGE_SIZE {
            // A constant of this crate, not a value of the query: with the same text for
            // every full page, PostgreSQL settles on one generic plan, where a bound LIMIT
            // makes it plan each page again (about a millisecond a page).
            qb.push(PAGE_SIZE);
        } else {
            qb.push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let mut events = Vec::with_capacity(usize::try_from(limit.min(PAGE_SIZE)).unwrap_or(0));
        let mut rows = qb.build().fetch(&self.pool);
        while let Some(row) =
            rows.try_next().await.map_err(|e| failure(format!("cannot read events from {}", self.inner.table), e))?
        {
            events.push(self.decode(&row));
        }
        Ok(events)
    }

    /// One page of a stream. When the page is full, the next page is read in the
    /// background (`ahead`) while this one is consumed: one page ahead at most, without
    /// holding a connection or a snapshot between pages.
    async fn page(&self, query: EventQuery, ahead: &Mutex<Option<ReadAhead>>) -> Result<Page> {
        let limit = query.limit.unwrap_or(PAGE_SIZE);
        let pending = ahead.lock().ok().and_then(|mut a| a.take());
        let mut events = match pending {
            Some(mut read) if read.answers(&query) => match (&mut read.task).await {
                Ok(events) => events?,
                Err(e) => return Err(failure(format!("cannot read events from {}", self.inner.table), e)),
            },
            // Not what was read ahead (or nothing was): dropping it cancels it.
            _ => self.fetch_page(&query).await?,
        };
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let full = events.len() as u64 >= limit;
        let next_after = if full { events.last().and_then(row_position) } else { None };
        if let Some(after) = next_after
            && limit >= PAGE_SIZE
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let mut next = query;
            next.after_position = Some(after);
            next.limit = Some(PAGE_SIZE);
            let (store, q) = (self.clone(), next.clone());
            let task = runtime.spawn(async move { store.fetch_page(&q).await });
            if let Ok(mut slot) = ahead.lock() {
                *slot = Some(ReadAhead { query: next, task });
            }
        }
        Ok(Page { events, next_after })
    }

    fn decode(&self, row: &PgRow) -> Result<StoredEvent> {
        encoded_row(row).map_err(|e| failure(format!("cannot read a row of {}", self.inner.table), e))?.decode(STORE)
    }
}

/// Appends `" WHERE a AND b …"` for the query's filters (position, order and limit aside);
/// says whether it appended anything.
fn push_filters<'a>(qb: &mut sqlx::QueryBuilder<'a, Postgres>, query: &'a EventQuery) -> bool {
    let mut any = false;
    let mut and = |qb: &mut sqlx::QueryBuilder<'a, Postgres>, column: &str| {
        qb.push(if any { " AND " } else { " WHERE " });
        qb.push(column);
        any = true;
    };
    if !query.event_types.is_empty() {
        and(qb, "event_type = ANY(");
        qb.push_bind(&query.event_types[..]);
        qb.push(")");
    }
    for (column, value) in [
        ("source = ", &query.source),
        ("subject = ", &query.subject),
        ("correlation_id = ", &query.correlation_id),
        ("tenant = ", &query.tenant),
    ] {
        if let Some(value) = value {
            and(qb, column);
            qb.push_bind(value.as_str());
        }
    }
    if let Some(since) = query.since {
        and(qb, "timestamp >= ");
        qb.push_bind(since);
    }
    if let Some(until) = query.until {
        and(qb, "timestamp < ");
        qb.push_bind(until);
    }
    any
}

fn encoded_row(row: &PgRow) -> std::result::Result<EncodedRow, sqlx::Error> {
    Ok(EncodedRow {
        position: row.try_get(0)?,
        id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        source: row.try_get(3)?,
        subject: row.try_get(4)?,
        timestamp: row.try_get(5)?,
        version: row.try_get(6)?,
        data: row.try_get(7)?,
        metadata: row.try_get(8)?,
    })
}

/// Binds the batch's columns as `$1` to `$10`.
fn bind_columns<'q>(query: Query<'q, Postgres, PgArguments>, c: &'q Columns) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(&c.id)
        .bind(&c.event_type)
        .bind(&c.source)
        .bind(&c.subject)
        .bind(&c.version)
        .bind(&c.tenant)
        .bind(&c.correlation_id)
        .bind(&c.data)
        .bind(&c.metadata)
        .bind(&c.timestamp)
}

/// Binds the deliveries' handlers, due time and lease after the parameters bound already
/// (nothing without deliveries).
fn bind_deliveries<'q>(
    query: Query<'q, Postgres, PgArguments>,
    deliveries: Option<&'q NewDeliveries>,
) -> Query<'q, Postgres, PgArguments> {
    match deliveries {
        Some(d) => query.bind(&d.handlers).bind(d.now).bind(d.lease),
        None => query,
    }
}

/// Whether the insert failed on an id already stored.
fn is_duplicate_id(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation() && d.constraint() == Some("event_store_pkey"))
}

/// The outcomes of a batch of distinct ids, all inserted: `rows` are `(id, position)`.
///
/// The rows come back in the order the insert stored them, which is the batch's order, so
/// each row is first checked against the id at its index (no hashing, no copy); a result
/// in another order falls back to a lookup by id.
fn all_stored(ids: &[String], rows: &[PgRow]) -> std::result::Result<Result<Vec<AppendOutcome>>, sqlx::Error> {
    let mut out = Vec::with_capacity(ids.len());
    if rows.len() == ids.len() {
        for (id, row) in ids.iter().zip(rows) {
            if row.try_get::<&str, _>(0)? != id.as_str() {
                break;
            }
            match position(row.try_get(1)?) {
                Ok(position) => out.push(AppendOutcome::Stored { position }),
                Err(e) => return Ok(Err(e)),
            }
        }
        if out.len() == ids.len() {
            return Ok(Ok(out));
        }
    }
    let mut positions: HashMap<&str, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        positions.insert(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(ids
        .iter()
        .map(|id| match positions.get(id.as_str()) {
            Some(&p) => position(p).map(|position| AppendOutcome::Stored { position }),
            None => Err(Error::store(STORE, format!("the events were stored, but no position came back for {id}"))),
        })
        .collect())
}

/// Whether no id occurs twice: the ids as integers, sorted (event ids are time-ordered,
/// so a batch is usually sorted already and this is one pass).
fn distinct_ids(events: &[&Envelope<dyn EventData>]) -> bool {
    let mut ids: Vec<u128> = events.iter().map(|e| e.id.as_u128()).collect();
    ids.sort_unstable();
    ids.windows(2).all(|w| w[0] != w[1])
}

fn position(p: i64) -> Result<u64> {
    u64::try_from(p).map_err(|_| Error::store(STORE, format!("the database returned a negative position {p}")))
}

/// The batch, column by column, as the `UNNEST` of the insert takes it.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    event_type: Vec<String>,
    source: Vec<String>,
    subject: Vec<Option<String>>,
    version: Vec<Option<String>>,
    tenant: Vec<Option<String>>,
    correlation_id: Vec<Option<String>>,
    data: Vec<String>,
    metadata: Vec<String>,
    timestamp: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            event_type: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            subject: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            correlation_id: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            timestamp: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, e: EncodedEvent) {
        self.id.push(e.id);
        self.event_type.push(e.event_type);
        self.source.push(e.source);
        self.subject.push(e.subject);
        self.version.push(e.version);
        self.tenant.push(e.tenant);
        self.correlation_id.push(e.correlation_id);
        self.data.push(e.data);
        self.metadata.push(e.metadata);
        self.timestamp.push(e.timestamp);
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    fn name(&self) -> &str {
        STORE
    }

    async fn append_batch(&self, events: &[&Envelope<dyn EventData>]) -> Result<Vec<AppendOutcome>> {
        self.append_rows(Via::Pool(&self.pool), events, None).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        let row = sqlx::query(&self.inner.get_sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot read event {id} from {}", self.inner.table), e))?;
        row.map(|row| self.decode(&row)).transpose()
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        let mut qb = sqlx::QueryBuilder::<Postgres>::new(&self.inner.count_sql);
        push_filters(&mut qb, query);
        let n: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot count events in {}", self.inner.table), e))?;
        position(n)
    }

    fn stream(&self, query: EventQuery) -> BoxStream<'_, Result<StoredEvent>> {
        // Dropped with the stream, which cancels a read ahead nobody will use.
        let ahead: Arc<Mutex<Option<ReadAhead>>> = Arc::new(Mutex::new(None));
        paged_stream(query, move |q| {
            let ahead = Arc::clone(&ahead);
            async move { self.page(q, &ahead).await }
        })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn delivery_log(&self) -> Option<&dyn DeliveryLog> {
        Some(self)
    }
}

impl PostgresStore {
    /// Appends `events` and, with `deliveries`, the pending deliveries of those stored now:
    /// the path of [`EventStore::append_batch`] and [`DeliveryLog::append_with_deliveries`].
    async fn append_rows(
        &self,
        mut via: Via<'_>,
        events: &[&Envelope<dyn EventData>],
        deliveries: Option<&NewDeliveries>,
    ) -> Result<Vec<AppendOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sql = if deliveries.is_some() { &self.inner.append_outbox } else { &self.inner.append };
        let handlers = deliveries.map_or(0, |d| d.handlers.len());
        // Encode everything first: a payload that cannot be serialized stores nothing.
        let mut cols = Columns::with_capacity(events.len());
        for event in events {
            cols.push(EncodedEvent::encode(event)?);
        }
        let n = cols.id.len();
        let table = &self.inner.table;
        let fail = |what: &str, e: sqlx::Error| failure(format!("cannot append {n} events to {table}: {what}"), e);

        // The usual case, ids never seen: a plain insert, cheaper than `ON CONFLICT`
        // (which probes the primary key and writes a confirmation record per row). If an id
        // turns out to be stored already, the statement fails whole (nothing is stored)
        // and the batch goes through the statement that skips duplicates.
        // Inside a caller's transaction a failed statement would abort that transaction:
        // only the statement that skips duplicates runs there.
        let distinct = matches!(via, Via::Pool(_)) && (n == 1 || distinct_ids(events));
        if distinct {
            let inserted = via
                .fetch_all(bind_deliveries(
                    bind_columns(sqlx::query(&sql.insert), &cols).bind(self.inner.lock_key),
                    deliveries,
                ))
                .await;
            match inserted {
                Ok(rows) => {
                    let out = all_stored(&cols.id, &rows)
                        .map_err(|e| fail("the events were stored, but the result is unreadable", e))?;
                    tracing::trace!(schema = %self.inner.schema, events = n, stored = n, handlers, "events appended");
                    return out;
                }
                Err(e) if is_duplicate_id(&e) => {
                    tracing::debug!(schema = %self.inner.schema, events = n, "ids already stored: appending without them");
                }
                Err(e) => return Err(fail("the insert failed, nothing was stored", e)),
            }
        }

        // One statement, hence one transaction and one round trip: the advisory lock (a
        // CTE every inserted row is joined with, so it is held before the first position
        // is drawn, until the commit), the insert of the whole batch, and the positions of
        // the ids already stored (looked up only when some row was skipped).
        let rows = bind_columns(sqlx::query(&sql.append), &cols).bind(self.inner.lock_key);
        let rows = via
            .fetch_all(bind_deliveries(rows.bind(i64::try_from(n).unwrap_or(i64::MAX)), deliveries))
            .await
            .map_err(|e| fail("the insert failed, nothing was stored", e))?;

        // id → (position, whether it was inserted now and its `Stored` outcome is still to give).
        let mut known: HashMap<String, (i64, bool)> = HashMap::with_capacity(n);
        for row in &rows {
            let read = |row: &PgRow| -> std::result::Result<(String, i64, bool), sqlx::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            };
            let (id, position, inserted) =
                read(row).map_err(|e| fail("the events were stored, but the result is unreadable", e))?;
            known.insert(id, (position, inserted));
        }
        // An id committed by another appender while this one waited for the lock is skipped
        // by the insert but invisible to the statement's lookup (its snapshot is older):
        // rare, and the batch is committed, so read those positions now.
        let missing: Vec<&str> = cols.id.iter().map(String::as_str).filter(|id| !known.contains_key(*id)).collect();
        if !missing.is_empty() {
            let found = via
                .fetch_all(sqlx::query(&self.inner.existing_sql).bind(&missing))
                .await
                .map_err(|e| fail("the events were stored, reading the positions of the duplicates failed", e))?;
            for row in &found {
                let id: String =
                    row.try_get(0).map_err(|e| fail("the events were stored, a duplicate is unreadable", e))?;
                let position: i64 =
                    row.try_get(1).map_err(|e| fail("the events were stored, a duplicate is unreadable", e))?;
                known.insert(id, (position, false));
            }
        }

        let mut out = Vec::with_capacity(n);
        let mut stored = 0usize;
        for id in &cols.id {
            let outcome = match known.get_mut(id.as_str()) {
                Some((p, fresh)) if *fresh => {
                    // The first occurrence in the batch; a repetition is a duplicate of it.
                    *fresh = false;
                    stored += 1;
                    AppendOutcome::Stored { position: position(*p)? }
                }
                Some((p, _)) => AppendOutcome::Duplicate { position: position(*p)? },
                None => {
                    return Err(Error::store(
                        STORE,
                        format!(
                            "the events were stored in {table}, but event {id}, stored before, \
                             could not be found again (deleted meanwhile?)"
                        ),
                    ));
                }
            };
            out.push(outcome);
        }
        tracing::trace!(schema = %self.inner.schema, events = n, stored, handlers, "events appended");
        Ok(out)
    }
}

/// Where an append runs: on the store's pool (a transaction of its own), or on a
/// connection in the caller's transaction.
enum Via<'a> {
    Pool(&'a PgPool),
    Conn(&'a mut PgConnection),
}

impl Via<'_> {
    async fn fetch_all<'q>(
        &mut self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> std::result::Result<Vec<PgRow>, sqlx::Error> {
        match self {
            Via::Pool(pool) => query.fetch_all(*pool).await,
            Via::Conn(conn) => query.fetch_all(&mut **conn).await,
        }
    }
}

impl PostgresStore {
    /// Appends events and one pending delivery per handler for each event stored now, on
    /// `conn`, inside the caller's open transaction: they commit or roll back with it.
    ///
    /// Positions stay in commit order: the append takes the store's advisory lock, held
    /// until the caller's transaction ends, so other appends to this store wait for it.
    /// Keep such transactions short.
    pub(crate) async fn append_in(
        &self,
        conn: &mut PgConnection,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
    ) -> Result<Vec<AppendOutcome>> {
        let handlers: Vec<String> = distinct_handlers(handlers).into_iter().map(str::to_owned).collect();
        let deliveries = NewDeliveries { handlers, now: Utc::now(), lease: None };
        self.append_rows(Via::Conn(conn), events, Some(&deliveries)).await
    }
}

/// The outbox and the dead-letter queue, in the tables `event_deliveries` and `dead_letters`
/// of the store's schema. Every operation is one SQL statement (one transaction).
#[async_trait]
impl DeliveryLog for PostgresStore {
    async fn append_with_deliveries(
        &self,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Vec<AppendOutcome>> {
        let handlers = distinct_handlers(handlers);
        if handlers.is_empty() {
            return self.append_rows(Via::Pool(&self.pool), events, None).await;
        }
        let handlers = handlers.into_iter().map(str::to_owned).collect();
        let deliveries = NewDeliveries { handlers, now: Utc::now(), lease: lease_until };
        self.append_rows(Via::Pool(&self.pool), events, Some(&deliveries)).await
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
        let sql = &self.inner.outbox;
        let rows = sqlx::query(&sql.claim)
            .bind(handlers)
            .bind(Utc::now())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(lease_until)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot claim due deliveries from {}", sql.deliveries), e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            // A row that cannot be read stays leased, and comes back when its lease ends:
            // it must not keep the others of the batch from running.
            match self.claimed(row) {
                Ok(delivery) => out.push(delivery),
                Err(e) => tracing::error!(
                    schema = %self.inner.schema, error = %crate::error::ErrorChain(&e),
                    "a claimed delivery is unreadable; it is left leased"
                ),
            }
        }
        tracing::trace!(schema = %self.inner.schema, claimed = out.len(), "deliveries claimed");
        Ok(out)
    }

    async fn complete(&self, done: &[DeliveryKey]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let sql = &self.inner.outbox;
        let (ids, handlers) = key_columns(done);
        sqlx::query(&sql.complete)
            .bind(&ids)
            .bind(&handlers)
            .execute(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot remove {} done deliveries from {}", done.len(), sql.deliveries), e))?;
        Ok(())
    }

    async fn retry_at(&self, key: &DeliveryKey, at: DateTime<Utc>, attempt: &AttemptRecord) -> Result<()> {
        let sql = &self.inner.outbox;
        let done = sqlx::query(&sql.retry)
            .bind(key.event_id.to_string())
            .bind(&key.handler)
            .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
            .bind(encode_attempt(attempt, STORE)?)
            .bind(at)
            .bind(attempt.at)
            .bind(attempt.error.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| {
                failure(
                    format!(
                        "cannot record attempt {} of the delivery of event {} to `{}` in {}",
                        attempt.attempt, key.event_id, key.handler, sql.deliveries
                    ),
                    e,
                )
            })?;
        if done.rows_affected() == 0 {
            tracing::debug!(event_id = %key.event_id, handler = %key.handler, "retry of a delivery no longer pending");
        }
        Ok(())
    }

    async fn release(&self, keys: &[DeliveryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let sql = &self.inner.outbox;
        let (ids, handlers) = key_columns(keys);
        sqlx::query(&sql.release)
            .bind(&ids)
            .bind(&handlers)
            .execute(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot release {} deliveries in {}", keys.len(), sql.deliveries), e))?;
        Ok(())
    }

    async fn next_due(&self, handlers: &[&str]) -> Result<Option<DateTime<Utc>>> {
        let sql = &self.inner.outbox;
        sqlx::query_scalar(&sql.next_due)
            .bind(handlers)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot read when the next delivery is due in {}", sql.deliveries), e))
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        let sql = &self.inner.outbox;
        let n: i64 = sqlx::query_scalar(&sql.pending)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot count the pending deliveries in {}", sql.deliveries), e))?;
        position(n)
    }

    async fn bury(&self, letter: &DeadLetter) -> Result<()> {
        let sql = &self.inner.outbox;
        sqlx::query(&sql.bury)
            .bind(letter.id.to_string())
            .bind(letter.event.id.to_string())
            .bind(letter.event_type())
            .bind(&letter.handler)
            .bind(letter.error.kind.as_str())
            .bind(letter.last_failure)
            .bind(encode_letter(letter, STORE)?)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                failure(
                    format!(
                        "cannot move the delivery of event {} to `{}` to {}",
                        letter.event.id, letter.handler, sql.letters
                    ),
                    e,
                )
            })?;
        tracing::debug!(
            schema = %self.inner.schema, dead_letter = %letter.id, event_id = %letter.event.id,
            handler = %letter.handler, "delivery dead-lettered"
        );
        Ok(())
    }

    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxStream<'_, Result<DeadLetter>> {
        let limit = filter.limit;
        let filter = Arc::new(filter);
        paged_letters(limit, move |cursor, want| {
            let filter = Arc::clone(&filter);
            async move { self.letters_page(&filter, cursor, want).await }
        })
    }

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        let sql = &self.inner.outbox;
        let fail = |e| failure(format!("cannot read dead letter {id} from {}", sql.letters), e);
        let Some(row) = sqlx::query(&sql.letter).bind(id.to_string()).fetch_optional(&self.pool).await.map_err(fail)?
        else {
            return Ok(None);
        };
        let read = || -> std::result::Result<(String, String, Option<DateTime<Utc>>, Option<String>), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
        };
        let (entry, state, state_at, reason) = read().map_err(fail)?;
        StoredLetter { entry: &entry, state: &state, state_at, reason }.decode(STORE).map(Some)
    }

    async fn redrive(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        Ok(self.redrive_many(&[id]).await?.pop())
    }

    async fn redrive_many(&self, ids: &[Uuid]) -> Result<Vec<DeadLetter>> {
        let sql = &self.inner.outbox;
        // Microseconds, as the column keeps it: the entry returned is the one read later.
        let now = Utc::now().trunc_subsecs(6);
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let entries: Vec<String> = sqlx::query_scalar(&sql.redrive)
            .bind(&ids)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot redrive {} dead letters of {}", ids.len(), sql.letters), e))?;
        entries
            .iter()
            .map(|entry| StoredLetter { entry, state: "redriven", state_at: Some(now), reason: None }.decode(STORE))
            .collect()
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<bool> {
        let sql = &self.inner.outbox;
        let done = sqlx::query(&sql.discard)
            .bind(id.to_string())
            .bind(Utc::now())
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(|e| failure(format!("cannot discard dead letter {id} of {}", sql.letters), e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn dead_letter_counts(&self, filter: &DeadLetterFilter) -> Result<DeadLetterCounts> {
        let sql = &self.inner.outbox;
        let mut qb =
            sqlx::QueryBuilder::<Postgres>::new(format!("SELECT handler, event_type, COUNT(*) FROM {}", sql.letters));
        push_letter_filters(&mut qb, filter);
        qb.push(" GROUP BY handler, event_type");
        let fail = |e| failure(format!("cannot count the dead letters of {}", sql.letters), e);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(fail)?;
        let mut counts = DeadLetterCounts::default();
        for row in &rows {
            let handler: &str = row.try_get(0).map_err(fail)?;
            let event_type: &str = row.try_get(1).map_err(fail)?;
            let n: i64 = row.try_get(2).map_err(fail)?;
            counts.add(handler, event_type, position(n)?);
        }
        Ok(counts)
    }
}

impl PostgresStore {
    /// A row of the claim statement: the event's columns, then the delivery's.
    fn claimed(&self, row: &PgRow) -> Result<PendingDelivery> {
        let event = self.decode(row)?.event;
        let read = || -> std::result::Result<(String, i32, String, Option<String>), sqlx::Error> {
            Ok((row.try_get(9)?, row.try_get(10)?, row.try_get(11)?, row.try_get(12)?))
        };
        let (handler, attempts, history, redriven_from) = read().map_err(|e| {
            failure(format!("the delivery of event {} in {} is unreadable", event.id, self.inner.outbox.deliveries), e)
        })?;
        StoredDelivery {
            handler,
            attempts: attempts.into(),
            history: &history,
            redriven_from: redriven_from.as_deref(),
        }
        .decode(event, STORE)
    }

    /// Up to `want` dead letters matching `filter`, newest failure first, after `cursor`
    /// (the failure time and id of the last entry of the page before).
    async fn letters_page(
        &self,
        filter: &DeadLetterFilter,
        cursor: Option<(DateTime<Utc>, String)>,
        want: u64,
    ) -> Result<LetterPage<(DateTime<Utc>, String)>> {
        let sql = &self.inner.outbox;
        let mut qb = sqlx::QueryBuilder::<Postgres>::new(format!(
            "SELECT last_failure_at, id, entry, state, state_at, reason FROM {}",
            sql.letters
        ));
        let has_where = push_letter_filters(&mut qb, filter);
        if let Some((at, id)) = cursor {
            qb.push(if has_where { " AND " } else { " WHERE " });
            qb.push("(last_failure_at, id) < (");
            qb.push_bind(at);
            qb.push(", ");
            qb.push_bind(id);
            qb.push(")");
        }
        qb.push(" ORDER BY last_failure_at DESC, id DESC LIMIT ");
        qb.push_bind(i64::try_from(want).unwrap_or(i64::MAX));
        let fail = |e| failure(format!("cannot read the dead letters of {}", sql.letters), e);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(fail)?;
        let mut letters = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let at: DateTime<Utc> = row.try_get(0).map_err(fail)?;
            let id: String = row.try_get(1).map_err(fail)?;
            let entry: &str = row.try_get(2).map_err(fail)?;
            let state: &str = row.try_get(3).map_err(fail)?;
            let state_at: Option<DateTime<Utc>> = row.try_get(4).map_err(fail)?;
            let reason: Option<String> = row.try_get(5).map_err(fail)?;
            letters.push(StoredLetter { entry, state, state_at, reason }.decode(STORE)?);
            last = Some((at, id));
        }
        let full = letters.len() as u64 >= want;
        Ok(LetterPage { letters, next: if full { last } else { None } })
    }
}

/// The event ids and the handlers of `keys`, as two arrays for `UNNEST`.
fn key_columns(keys: &[DeliveryKey]) -> (Vec<String>, Vec<&str>) {
    keys.iter().map(|k| (k.event_id.to_string(), k.handler.as_str())).unzip()
}

/// Appends `" WHERE a AND b …"` for the filter's conditions (its limit aside); says whether
/// it appended anything.
fn push_letter_filters(qb: &mut sqlx::QueryBuilder<'_, Postgres>, filter: &DeadLetterFilter) -> bool {
    let mut any = false;
    let mut and = |qb: &mut sqlx::QueryBuilder<'_, Postgres>, condition: &str| {
        qb.push(if any { " AND " } else { " WHERE " });
        qb.push(condition);
        any = true;
    };
    if !filter.include_settled {
        and(qb, "state = 'dead'");
    }
    for (column, value) in [("handler = ", &filter.handler), ("event_type = ", &filter.event_type)] {
        if let Some(value) = value {
            and(qb, column);
            qb.push_bind(value.clone());
        }
    }
    if let Some(kind) = filter.kind {
        and(qb, "kind = ");
        qb.push_bind(kind.as_str());
    }
    if let Some(from) = filter.from {
        and(qb, "last_failure_at >= ");
        qb.push_bind(from);
    }
    if let Some(to) = filter.to {
        and(qb, "last_failure_at < ");
        qb.push_bind(to);
    }
    any
}

/// Rejects what is not a plain identifier, so that the quoted name is always safe.
fn validate_schema(schema: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Config(format!(
            "invalid PostgresStore schema name `{schema}`: {why}; use ASCII letters, digits and `_`, \
             not starting with a digit nor `pg_`, at most {MAX_SCHEMA_LEN} bytes"
        )))
    };
    let Some(first) = schema.chars().next() else { return bad("it is empty") };
    if schema.len() > MAX_SCHEMA_LEN {
        return bad("it is too long");
    }
    if !(first.is_ascii_alphabetic() || first == '_') {
        return bad("it starts with a character other than a letter or `_`");
    }
    if let Some(c) = schema.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return bad(&format!("it contains {c:?}"));
    }
    if schema.len() >= 3 && schema[..3].eq_ignore_ascii_case("pg_") {
        return bad("names starting with `pg_` are reserved by PostgreSQL");
    }
    Ok(())
}

/// The advisory lock key of a schema: FNV-1a (64 bits), stable across builds and versions.
fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "better-auth-events:event_store:".bytes().chain(schema.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The URL with its password, if any, replaced by `***` (in the user info and in a
/// `password` parameter).
fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = url.find("://").map(|i| i + 3) {
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            out = format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]);
        }
    }
    if let Some(q) = out.find('?') {
        let (head, params) = out.split_at(q + 1);
        let params: Vec<String> = params
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out = format!("{head}{}", params.join("&"));
    }
    out
}

/// Where a pool's connections go, for messages (never with the password).
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// A sqlx error with what the store was doing.
#[derive(Debug)]
struct PostgresFailure {
    context: String,
    source: BoxError,
}

impl fmt::Display for PostgresFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver's error is the source, not part of this message.
        f.write_str(&self.context)
    }
}

impl std::error::Error for PostgresFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

fn failure(context: String, source: impl Into<BoxError>) -> Error {
    Error::store(STORE, PostgresFailure { context, source: source.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://postgres@127.0.0.1:5432/test"), "postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(redact("postgres://app:s3cret@db:5432/app"), "postgres://app:***@db:5432/app");
        assert_eq!(
            redact("postgresql://app:p@ss@db/app?sslmode=require"),
            "postgresql://app:***@db/app?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/app?user=a&password=x&sslmode=disable"),
            "postgres://db/app?user=a&password=***&sslmode=disable"
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["public", "events", "bae_test_0192", "_x", "Events1"] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "a;drop", "a\"b", "pg_catalog", "PG_x", "sch ema", "é", &"a".repeat(64)] {
            let err = validate_schema(bad).expect_err(bad).to_string();
            assert!(err.contains("schema name"), "{err}");
        }
    }

    #[test]
    fn lock_keys_are_stable_and_differ_by_schema() {
        assert_eq!(lock_key("public"), lock_key("public"));
        assert_ne!(lock_key("public"), lock_key("events"));
        // Pinned: a change would let old and new processes append at once, out of order.
        assert_eq!(lock_key("public"), -863_153_219_783_999_191);
    }
}
