//! P4 and P7 / `store_postgres`: `PostgresStore` against raw sqlx on the same table shape.
//!
//! **P4, batch append** (group `store_postgres_append`, batches of 100, 1,000 and 10,000):
//!
//! - `append_batch` (ours): fresh `SignupRequested` envelopes (64 bytes of payload) each
//!   iteration; the clock covers encoding (serialization) and the whole append: a
//!   transaction, the advisory lock, one `INSERT … SELECT … FROM UNNEST(…) WITH ORDINALITY
//!   … RETURNING id, position`, the commit.
//! - `raw_unnest` (the baseline of the ≥0.8× target): the same events, encoded before the
//!   clock starts into the very column values the store writes, inserted by one plain
//!   `INSERT … SELECT … FROM UNNEST($1::text[], …)` in autocommit (no transaction block, no
//!   lock, no conflict handling, nothing returned; the JSON columns cast to `jsonb` row by
//!   row, the faster way): what a hand-written sqlx insert does.
//! - `raw_values`: the same rows as a multi-row `INSERT … VALUES ($1, …), (…)` built with
//!   `sqlx::QueryBuilder::push_values`; PostgreSQL takes at most 65,535 parameters a
//!   statement, so 10,000 rows go as two statements (6,000 + 4,000) in one transaction.
//! - `copy_binary` (the ceiling of the ≥0.3× target): the same rows through
//!   `PgConnection::copy_in_raw("COPY … FROM STDIN WITH (FORMAT binary)")`, the rows written
//!   in PostgreSQL's binary COPY format (text as UTF-8, `jsonb` as version byte 1 + the
//!   JSON text, `timestamptz` as microseconds since 2000-01-01) inside the clock.
//!
//! Every sample starts with a `CHECKPOINT` outside the clock: PostgreSQL otherwise starts
//! one whenever `max_wal_size` worth of WAL has piled up, in whichever path happens to run
//! then, which moved single ratios by up to 30 %.
//!
//! Each path writes to a schema of its own (`bae_bench_<uuid>`, the table made by the
//! store's migrations, so the shape is identical), emptied outside the clock when it holds
//! more than 200,000 rows; all are dropped at the end.
//!
//! **P7, streaming 1,000,000 stored events** (group `store_postgres_stream`): the schema
//! `bae_bench_stream` is filled once per run by binary COPY with 1,000,000 encoded
//! envelopes (reused by every path, dropped at the end).
//!
//! - `store_stream` (ours): `store.query().stream()` to the end: pages of 1,000 events
//!   (`WHERE position > $1 ORDER BY position LIMIT $2`), each row decoded into a
//!   `StoredEvent` (id parsed, payload parsed into a `serde_json::Value`, metadata into
//!   `EventMetadata`).
//! - `raw_fetch_columns` (the baseline of the ≥0.8× target): one `SELECT` of the same
//!   columns `ORDER BY position` read with sqlx's `fetch` row stream, every column decoded
//!   into its Rust type (`i64`, `String`, `Option<String>`, `DateTime<Utc>`), the JSON left
//!   as text.
//! - `raw_fetch_json`: the same, plus the payload and metadata parsed into
//!   `serde_json::Value` (what reading events to use them costs without the store).
//!
//! Peak RSS of the streaming path is measured in child processes of this binary (one
//! stream of the 1,000,000 events each, `VmHWM` of `/proc/self/status`), so that nothing
//! else the bench did counts.
//!
//! At the end the bench prints events/s of every path (medians over this run's samples)
//! and the ratios. Needs PostgreSQL at 127.0.0.1:5432, database `test` (or
//! `BAE_POSTGRES_URL`).
//!
//! `cargo bench --features postgres --bench store_postgres -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use better_auth_events::prelude::*;
use better_auth_events::store::PostgresStore;
use common::SignupRequested;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use futures::TryStreamExt;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Row};

/// Events per `append_batch` call / per raw statement.
const BATCHES: [usize; 3] = [100, 1_000, 10_000];
/// Bytes of string data in each event.
const PAYLOAD: usize = 64;
/// Rows per `INSERT … VALUES` statement: 10 parameters a row, at most 65,535 a statement.
const VALUES_ROWS: usize = 6_000;
/// A path's table is emptied (outside the clock) when it holds more rows than this.
const TRUNCATE_ABOVE: u64 = 200_000;
/// Events of the streaming benchmark.
const STREAM_EVENTS: u64 = 1_000_000;
const STREAM_SCHEMA: &str = "bae_bench_stream";
/// Set in the child processes that measure peak RSS: `store` or `raw`.
const RSS_CHILD: &str = "BAE_BENCH_PG_RSS";
const START: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
const COLUMNS: &str = "id, event_type, source, subject, version, tenant, correlation_id, data, metadata, timestamp";
const READ_COLUMNS: &str = "position, id, event_type, source, subject, timestamp, version, data::text, metadata::text";

/// Events per second of each sample, by (path, size).
static SAMPLES: Mutex<BTreeMap<(&'static str, u64), Vec<f64>>> = Mutex::new(BTreeMap::new());
/// Whether the streaming schema was filled (then it is dropped and RSS measured at the end).
static STREAM_READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

fn record(path: &'static str, size: u64, events: u64, elapsed: Duration) {
    if elapsed > Duration::ZERO {
        let rate = events as f64 / elapsed.as_secs_f64();
        SAMPLES.lock().expect("samples").entry((path, size)).or_default().push(rate);
    }
}

fn url() -> String {
    std::env::var("BAE_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn open(schema: &str) -> PostgresStore {
    let url = url();
    PostgresStore::builder(&url).schema(schema).build().await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable ({e}); start it with `{START}` or set BAE_POSTGRES_URL")
    })
}

async fn raw_pool() -> PgPool {
    let url = url();
    PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable ({e}); start it with `{START}` or set BAE_POSTGRES_URL")
    })
}

/// A raw path's table: a schema of its own, the table made by the store's migrations.
struct Table {
    schema: String,
    /// `"schema".event_store`.
    name: String,
    rows: AtomicU64,
}

impl Table {
    async fn new() -> Self {
        let schema = format!("bae_bench_{}", uuid::Uuid::now_v7().simple());
        open(&schema).await.pool().close().await;
        Self { name: format!("\"{schema}\".event_store"), schema, rows: AtomicU64::new(0) }
    }

    /// Empties the table when it grew past [`TRUNCATE_ABOVE`], after `added` more rows.
    async fn grew(&self, pool: &PgPool, added: u64) {
        if self.rows.fetch_add(added, Ordering::Relaxed) + added > TRUNCATE_ABOVE {
            let sql = format!("TRUNCATE \"{s}\".event_store, \"{s}\".event_deliveries", s = self.schema);
            pool.execute(sql.as_str()).await.expect("truncate");
            self.rows.store(0, Ordering::Relaxed);
        }
    }
}

fn fresh(event: &SignupRequested, n: usize) -> Vec<Envelope<SignupRequested>> {
    (0..n).map(|_| Envelope::of(event.clone())).collect()
}

fn encode(envs: &[Envelope<SignupRequested>]) -> Vec<common::Columns> {
    envs.iter().map(common::Columns::of).collect()
}

/// The rows in PostgreSQL's binary COPY format, columns in [`COLUMNS`]' order.
fn copy_binary(rows: &[common::Columns], buf: &mut Vec<u8>) {
    fn text(buf: &mut Vec<u8>, v: Option<&str>) {
        match v {
            Some(s) => {
                buf.extend_from_slice(&(s.len() as i32).to_be_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    fn jsonb(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as i32 + 1).to_be_bytes());
        buf.push(1);
        buf.extend_from_slice(s.as_bytes());
    }
    /// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
    const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
    buf.clear();
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in rows {
        buf.extend_from_slice(&10i16.to_be_bytes());
        text(buf, Some(&r.id));
        text(buf, Some(&r.event_type));
        text(buf, Some(&r.source));
        text(buf, r.subject.as_deref());
        text(buf, r.version.as_deref());
        text(buf, r.tenant.as_deref());
        text(buf, r.correlation_id.as_deref());
        jsonb(buf, &r.data);
        jsonb(buf, &r.metadata);
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(r.timestamp.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes());
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
}

async fn copy_in(pool: &PgPool, table: &str, buf: &[u8]) -> u64 {
    let mut conn = pool.acquire().await.expect("connection");
    let mut copy =
        conn.copy_in_raw(&format!("COPY {table} ({COLUMNS}) FROM STDIN WITH (FORMAT binary)")).await.expect("copy in");
    copy.send(buf).await.expect("copy data");
    copy.finish().await.expect("copy finish")
}

async fn raw_unnest(pool: &PgPool, sql: &str, rows: Vec<common::Columns>) {
    let n = rows.len();
    let (mut id, mut ty, mut source, mut subject, mut version) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut tenant, mut corr, mut data, mut meta, mut ts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for r in rows {
        id.push(r.id);
        ty.push(r.event_type);
        source.push(r.source);
        subject.push(r.subject);
        version.push(r.version);
        tenant.push(r.tenant);
        corr.push(r.correlation_id);
        data.push(r.data);
        meta.push(r.metadata);
        ts.push(r.timestamp);
    }
    let done = sqlx::query(sql)
        .bind(id)
        .bind(ty)
        .bind(source)
        .bind(subject)
        .bind(version)
        .bind(tenant)
        .bind(corr)
        .bind(data)
        .bind(meta)
        .bind(ts)
        .execute(pool)
        .await
        .expect("raw unnest insert");
    assert_eq!(done.rows_affected(), n as u64);
}

async fn raw_values(pool: &PgPool, table: &str, rows: &[common::Columns]) {
    let mut tx = pool.begin().await.expect("begin");
    for chunk in rows.chunks(VALUES_ROWS) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!("INSERT INTO {table} ({COLUMNS}) "));
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(&r.id)
                .push_bind(&r.event_type)
                .push_bind(&r.source)
                .push_bind(&r.subject)
                .push_bind(&r.version)
                .push_bind(&r.tenant)
                .push_bind(&r.correlation_id)
                .push_bind(&r.data)
                .push_unseparated("::jsonb")
                .push_bind(&r.metadata)
                .push_unseparated("::jsonb")
                .push_bind(r.timestamp);
        });
        let done = qb.build().execute(&mut *tx).await.expect("raw values insert");
        assert_eq!(done.rows_affected(), chunk.len() as u64);
    }
    tx.commit().await.expect("commit");
}

fn store_postgres_append(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let event = SignupRequested::of_size(PAYLOAD);
    let (store, pool, unnest_t, values_t, copy_t) = rt.block_on(async {
        let store_schema = format!("bae_bench_{}", uuid::Uuid::now_v7().simple());
        let store = open(&store_schema).await;
        (store, raw_pool().await, Table::new().await, Table::new().await, Table::new().await)
    });
    let store_t = Table {
        name: format!("\"{}\".event_store", store.schema()),
        schema: store.schema().to_owned(),
        rows: AtomicU64::new(0),
    };
    // The JSON cast row by row, as the store does: `$8::text[]::jsonb[]` would parse the
    // whole batch into one statement-long memory context, a slower baseline.
    let unnest_sql = format!(
        "INSERT INTO {} ({COLUMNS}) SELECT id, event_type, source, subject, version, tenant, correlation_id, \
         data::jsonb, metadata::jsonb, ts FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[]) \
         AS t(id, event_type, source, subject, version, tenant, correlation_id, data, metadata, ts)",
        unnest_t.name
    );

    let mut group = c.benchmark_group("store_postgres_append");
    group.sampling_mode(SamplingMode::Flat);
    for batch in BATCHES {
        group.sample_size(if batch >= 10_000 { 10 } else { 20 });
        group.throughput(Throughput::Elements(batch as u64));

        group.bench_function(BenchmarkId::new("append_batch", batch), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, event, table) = (&store, &event, &store_t);
                async move {
                    settle(store.pool()).await;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let envs = fresh(event, batch);
                        let refs: Vec<&Envelope<dyn EventData>> =
                            envs.iter().map(|e| e as &Envelope<dyn EventData>).collect();
                        let start = Instant::now();
                        let out = store.append_batch(black_box(&refs)).await.expect("append_batch");
                        total += start.elapsed();
                        assert!(out.len() == batch && !out[batch - 1].is_duplicate());
                        table.grew(store.pool(), batch as u64).await;
                    }
                    record("append_batch", batch as u64, iters * batch as u64, total);
                    total
                }
            })
        });

        group.bench_function(BenchmarkId::new("raw_unnest", batch), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (pool, event, table, sql) = (&pool, &event, &unnest_t, unnest_sql.as_str());
                async move {
                    settle(pool).await;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let rows = encode(&fresh(event, batch));
                        let start = Instant::now();
                        raw_unnest(pool, sql, black_box(rows)).await;
                        total += start.elapsed();
                        table.grew(pool, batch as u64).await;
                    }
                    record("raw_unnest", batch as u64, iters * batch as u64, total);
                    total
                }
            })
        });

        group.bench_function(BenchmarkId::new("raw_values", batch), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (pool, event, table) = (&pool, &event, &values_t);
                async move {
                    settle(pool).await;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let rows = encode(&fresh(event, batch));
                        let start = Instant::now();
                        raw_values(pool, &table.name, black_box(&rows)).await;
                        total += start.elapsed();
                        table.grew(pool, batch as u64).await;
                    }
                    record("raw_values", batch as u64, iters * batch as u64, total);
                    total
                }
            })
        });

        group.bench_function(BenchmarkId::new("copy_binary", batch), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (pool, event, table) = (&pool, &event, &copy_t);
                async move {
                    settle(pool).await;
                    let mut total = Duration::ZERO;
                    let mut buf = Vec::new();
                    for _ in 0..iters {
                        let rows = encode(&fresh(event, batch));
                        let start = Instant::now();
                        copy_binary(black_box(&rows), &mut buf);
                        let n = copy_in(pool, &table.name, &buf).await;
                        total += start.elapsed();
                        assert_eq!(n, batch as u64);
                        table.grew(pool, batch as u64).await;
                    }
                    record("copy_binary", batch as u64, iters * batch as u64, total);
                    total
                }
            })
        });
    }
    group.finish();

    rt.block_on(async {
        for t in [&store_t, &unnest_t, &values_t, &copy_t] {
            drop_schema(&pool, &t.schema).await;
        }
        store.pool().close().await;
        pool.close().await;
    });
}

/// Flushes the WAL written so far (`CHECKPOINT`, outside the clock), so a checkpoint set
/// off by an earlier path's writes does not land in this path's samples. Needs a superuser
/// or `pg_checkpoint`; without them it does nothing.
async fn settle(pool: &PgPool) {
    let _ = pool.execute("CHECKPOINT").await;
}

async fn drop_schema(pool: &PgPool, schema: &str) {
    if let Err(e) = pool.execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str()).await {
        eprintln!("could not drop bench schema {schema}: {e}");
    }
}

/// Fills [`STREAM_SCHEMA`] with [`STREAM_EVENTS`] events by binary COPY, unless it already
/// holds exactly that many.
async fn fill_stream_schema() {
    let store = open(STREAM_SCHEMA).await;
    let table = format!("\"{STREAM_SCHEMA}\".event_store");
    let n: i64 =
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(store.pool()).await.expect("count");
    if n as u64 == STREAM_EVENTS {
        return;
    }
    let started = Instant::now();
    store
        .pool()
        .execute(format!("TRUNCATE {table}, \"{STREAM_SCHEMA}\".event_deliveries").as_str())
        .await
        .expect("truncate");
    let event = SignupRequested::of_size(PAYLOAD);
    let mut buf = Vec::new();
    let mut left = STREAM_EVENTS as usize;
    while left > 0 {
        let n = left.min(50_000);
        copy_binary(&encode(&fresh(&event, n)), &mut buf);
        copy_in(store.pool(), &table, &buf).await;
        left -= n;
    }
    store.pool().execute(format!("VACUUM ANALYZE {table}").as_str()).await.expect("vacuum");
    store.pool().close().await;
    eprintln!("filled {table} with {STREAM_EVENTS} events in {:.1?}", started.elapsed());
}

async fn stream_store(store: &PostgresStore) -> u64 {
    store
        .query()
        .stream()
        .try_fold(0u64, |n, e| {
            black_box(&e);
            async move { Ok(n + 1) }
        })
        .await
        .expect("store stream")
}

async fn stream_raw(pool: &PgPool, parse_json: bool) -> u64 {
    let sql = format!("SELECT {READ_COLUMNS} FROM \"{STREAM_SCHEMA}\".event_store ORDER BY position");
    let mut rows = sqlx::query(&sql).fetch(pool);
    let mut n = 0u64;
    while let Some(row) = rows.try_next().await.expect("raw stream") {
        let position: i64 = row.try_get(0).expect("position");
        let id: String = row.try_get(1).expect("id");
        let event_type: String = row.try_get(2).expect("event_type");
        let source: String = row.try_get(3).expect("source");
        let subject: Option<String> = row.try_get(4).expect("subject");
        let timestamp: chrono::DateTime<chrono::Utc> = row.try_get(5).expect("timestamp");
        let version: Option<String> = row.try_get(6).expect("version");
        let data: String = row.try_get(7).expect("data");
        let metadata: Option<String> = row.try_get(8).expect("metadata");
        if parse_json {
            let data: serde_json::Value = serde_json::from_str(&data).expect("payload");
            let metadata: Option<serde_json::Value> =
                metadata.as_deref().map(|m| serde_json::from_str(m).expect("metadata"));
            black_box((data, metadata));
        } else {
            black_box((data, metadata));
        }
        black_box((position, id, event_type, source, subject, timestamp, version));
        n += 1;
    }
    n
}

fn store_postgres_stream(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let mut group = c.benchmark_group("store_postgres_stream");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(STREAM_EVENTS));

    // Opened lazily, so that a filtered run that skips P7 does not fill the schema.
    let store_cell: tokio::sync::OnceCell<PostgresStore> = tokio::sync::OnceCell::new();
    let pool_cell: tokio::sync::OnceCell<PgPool> = tokio::sync::OnceCell::new();
    let (store_cell, pool_cell) = (&store_cell, &pool_cell);
    let store = move || async move {
        STREAM_READY.get_or_init(fill_stream_schema).await;
        store_cell.get_or_init(|| open(STREAM_SCHEMA)).await
    };
    let pool = move || async move {
        STREAM_READY.get_or_init(fill_stream_schema).await;
        pool_cell.get_or_init(raw_pool).await
    };

    group.bench_function(BenchmarkId::new("store_stream", STREAM_EVENTS), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = &store;
            async move {
                let store = store().await;
                let start = Instant::now();
                for _ in 0..iters {
                    assert_eq!(stream_store(store).await, STREAM_EVENTS);
                }
                let total = start.elapsed();
                record("store_stream", STREAM_EVENTS, iters * STREAM_EVENTS, total);
                total
            }
        })
    });
    for (name, parse_json) in [("raw_fetch_columns", false), ("raw_fetch_json", true)] {
        group.bench_function(BenchmarkId::new(name, STREAM_EVENTS), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let pool = &pool;
                async move {
                    let pool = pool().await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        assert_eq!(stream_raw(pool, parse_json).await, STREAM_EVENTS);
                    }
                    let total = start.elapsed();
                    record(name, STREAM_EVENTS, iters * STREAM_EVENTS, total);
                    total
                }
            })
        });
    }
    group.finish();
}

/// Peak RSS (kB) of this process so far, and its current RSS.
fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The child process: streams the 1,000,000 events once through `mode` and prints RSS.
fn rss_child(mode: &str) {
    let rt = common::multi_thread_runtime();
    let (before, _) = rss_kb();
    let (n, secs) = rt.block_on(async {
        let start = Instant::now();
        let n = if mode == "store" {
            let store = open(STREAM_SCHEMA).await;
            stream_store(&store).await
        } else {
            stream_raw(&raw_pool().await, true).await
        };
        (n, start.elapsed().as_secs_f64())
    });
    let (peak, now) = rss_kb();
    println!(
        "rss {mode}: {n} events in {secs:.2} s; VmHWM before {:.1} MB, peak {:.1} MB, VmRSS after {:.1} MB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        now as f64 / 1024.0
    );
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn report(rss: &[String]) {
    let samples = SAMPLES.lock().expect("samples");
    let rate = |path: &'static str, size: u64| samples.get(&(path, size)).map_or(0.0, |v| median(v));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!(
        "\nP4 PostgreSQL batch append, {PAYLOAD}-byte payloads (median events/s of this run's samples; \
         targets ≥0.8× raw, ≥0.3× COPY):"
    );
    println!(
        "{:>7} {:>13} {:>11} {:>11} {:>12} {:>10} {:>11} {:>9}",
        "batch", "append_batch", "raw_unnest", "raw_values", "copy_binary", "÷unnest", "÷values", "÷copy"
    );
    for batch in BATCHES {
        let b = batch as u64;
        let (ours, unnest, values, copy) =
            (rate("append_batch", b), rate("raw_unnest", b), rate("raw_values", b), rate("copy_binary", b));
        if ours + unnest + values + copy == 0.0 {
            continue;
        }
        println!(
            "{batch:>7} {ours:>13.0} {unnest:>11.0} {values:>11.0} {copy:>12.0} {:>10.2} {:>11.2} {:>9.2}",
            ratio(ours, unnest),
            ratio(ours, values),
            ratio(ours, copy)
        );
    }
    let ours = rate("store_stream", STREAM_EVENTS);
    if ours > 0.0 {
        let (cols, json) = (rate("raw_fetch_columns", STREAM_EVENTS), rate("raw_fetch_json", STREAM_EVENTS));
        println!(
            "\nP7 streaming {STREAM_EVENTS} stored events (median events/s; target ≥0.8× raw, peak RSS < 100 MB):"
        );
        println!(
            "{:>13} {:>18} {:>15} {:>9} {:>9}",
            "store_stream", "raw_fetch_columns", "raw_fetch_json", "÷columns", "÷json"
        );
        println!("{ours:>13.0} {cols:>18.0} {json:>15.0} {:>9.2} {:>9.2}", ratio(ours, cols), ratio(ours, json));
    }
    for line in rss {
        println!("{line}");
    }
}

/// Runs the RSS children (if P7 ran), drops the streaming schema and prints the report.
fn finish() {
    let mut rss = Vec::new();
    if STREAM_READY.initialized() {
        for mode in ["store", "raw"] {
            let out =
                std::env::current_exe().and_then(|exe| std::process::Command::new(exe).env(RSS_CHILD, mode).output());
            match out {
                Ok(out) if out.status.success() => rss.push(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
                Ok(out) => {
                    rss.push(format!("rss {mode}: child failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
                }
                Err(e) => rss.push(format!("rss {mode}: cannot start the child: {e}")),
            }
        }
        let rt = common::current_thread_runtime();
        rt.block_on(async {
            let url = url();
            if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                let _ = conn.execute(format!("DROP SCHEMA IF EXISTS \"{STREAM_SCHEMA}\" CASCADE").as_str()).await;
                let _ = conn.close().await;
            }
        });
    }
    report(&rss);
}

criterion_group!(benches, store_postgres_append, store_postgres_stream);

fn main() {
    if let Ok(mode) = std::env::var(RSS_CHILD) {
        rss_child(&mode);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    finish();
}
