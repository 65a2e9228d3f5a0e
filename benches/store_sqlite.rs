//! P5 and P7 for SQLite: `SqliteStore` against raw `sqlx` on the same rows, in the same run.
//!
//! - `sqlite_append` (P5): batches of 100, 1,000 and 10,000 new events (64-byte payload,
//!   with subject, tenant and correlation id) through `SqliteStore::append_batch`, against a
//!   raw sqlx insert of the same events into a separate fresh file with the same schema and
//!   the same settings (WAL, `synchronous = FULL`): each payload and its metadata serialized
//!   with `serde_json`, the time formatted, then one transaction of multi-row
//!   `INSERT … VALUES (…),(…)` statements (as many rows per statement as SQLite's 32,766
//!   bound parameters allow), no `RETURNING`, no conflict handling. Each iteration appends
//!   a batch of fresh ids; building the events is outside the clock, serializing them is
//!   inside for both.
//! - `sqlite_stream` (P7): 1,000,000 stored events (written once per run with raw inserts in
//!   large transactions) read through `store.query().stream()`, against a raw sqlx row
//!   stream (`fetch`) of `SELECT … ORDER BY position` on the same pool: `raw_rows` decodes
//!   every column into owned Rust values (the strict baseline the ratio is taken against);
//!   `raw_rows_json` also parses the payload and metadata JSON, as the store must.
//! - `sqlite_stream/replay`: the same 1,000,000 events through
//!   `ReplayEngine::replay().execute()` into one sync `#[handler]` (`deny_disposable`, the
//!   typed handler of the emit benches: every payload is deserialized into the struct and
//!   checked), against `raw_rows_json` plus the same check on the parsed payload.
//! - Peak memory of the streaming path: the bench runs itself again as a child process that
//!   only streams the 1,000,000 events (ours, then raw) and reports its `VmHWM` from
//!   `/proc/self/status` (Linux), so the figure is not blurred by the rest of the run.
//!
//! `cargo bench --features sqlite --bench store_sqlite -- --warm-up-time 1 --measurement-time 3`
//!
//! A ratio table (ours ÷ baseline) is printed at the end, from criterion's saved medians.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use better_auth_events::prelude::*;
use better_auth_events::replay::ReplayEngine;
use better_auth_events::store::SqliteStore;
use common::SignupRequested;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Batch sizes of P5.
const BATCHES: [usize; 3] = [100, 1_000, 10_000];
/// Payload bytes of every event.
const PAYLOAD: usize = 64;
/// Events of P7.
const STREAMED: usize = 1_000_000;
/// Rows per statement of the raw insert (bound-parameter limit ÷ 10 columns), as the store.
const ROWS_PER_INSERT: usize = 32_766 / 10;
/// How times are stored.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";
/// The schema, as the store's migration creates it.
const SCHEMA: &str = include_str!("../runtime/migrations/sqlite/20261123000001_event_store.sql");
/// Set in the child process that measures peak memory: the database to stream.
const RSS_CHILD_ENV: &str = "BAE_BENCH_SQLITE_RSS_DB";
/// Set in the child process: `ours` or `raw`.
const RSS_MODE_ENV: &str = "BAE_BENCH_SQLITE_RSS_MODE";

/// The columns a read selects, as the store reads them.
const SELECT_ALL: &str = "SELECT position, id, event_type, source, subject, timestamp, version, data, metadata \
                          FROM event_store ORDER BY position";
type RawRow = (i64, String, String, String, Option<String>, String, Option<String>, String, Option<String>);

fn template() -> Envelope<SignupRequested> {
    Envelope::of(SignupRequested::of_size(PAYLOAD))
        .with_subject("user/42")
        .with_tenant("acme")
        .with_correlation_id("flow-7f3a9c")
}

/// `n` events like `template`, each with a fresh id and time.
fn fresh_batch(template: &Envelope<SignupRequested>, n: usize) -> Vec<Envelope<SignupRequested>> {
    (0..n)
        .map(|_| {
            let mut e = template.clone();
            e.id = better_auth_events::new_event_id();
            e.timestamp = chrono::Utc::now();
            e
        })
        .collect()
}

/// A fresh file with the store's schema and settings (pool options included), opened with
/// plain sqlx.
async fn raw_pool(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("raw pool");
    sqlx::raw_sql(SCHEMA).execute(&pool).await.expect("schema");
    pool
}

/// The baseline of P5: what a user of plain sqlx writes to store the same events.
async fn raw_insert(pool: &SqlitePool, events: &[Envelope<SignupRequested>]) {
    struct Row {
        id: String,
        data: String,
        metadata: String,
        timestamp: String,
    }
    let rows: Vec<Row> = events
        .iter()
        .map(|e| Row {
            id: e.id.to_string(),
            data: serde_json::to_string(&e.data).expect("payload"),
            metadata: serde_json::to_string(&e.metadata).expect("metadata"),
            timestamp: e.timestamp.format(TIME_FORMAT).to_string(),
        })
        .collect();
    let mut tx = pool.begin().await.expect("begin");
    for (events, rows) in events.chunks(ROWS_PER_INSERT).zip(rows.chunks(ROWS_PER_INSERT)) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO event_store \
             (id, event_type, source, subject, version, tenant, correlation_id, data, metadata, timestamp) ",
        );
        qb.push_values(events.iter().zip(rows), |mut b, (e, r)| {
            b.push_bind(r.id.as_str())
                .push_bind(e.event_type.as_str())
                .push_bind(e.source.as_ref())
                .push_bind(e.subject.as_deref())
                .push_bind(e.version.as_deref())
                .push_bind(e.metadata.tenant.as_deref())
                .push_bind(e.metadata.correlation_id.as_deref())
                .push_bind(r.data.as_str())
                .push_bind(r.metadata.as_str())
                .push_bind(r.timestamp.as_str());
        });
        qb.build().execute(&mut *tx).await.expect("insert");
    }
    tx.commit().await.expect("commit");
}

fn sqlite_append(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = rt.block_on(SqliteStore::open(dir.path().join("ours.db"))).expect("store");
    let raw = rt.block_on(raw_pool(&dir.path().join("raw.db")));
    let template = template();

    let mut group = c.benchmark_group("sqlite_append");
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        if n >= 10_000 {
            group.sample_size(10);
            group.sampling_mode(SamplingMode::Flat);
        } else {
            group.sample_size(20);
            group.sampling_mode(SamplingMode::Auto);
        }
        group.bench_with_input(BenchmarkId::new("sqlite_store", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, template) = (&store, &template);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = fresh_batch(template, n);
                        let refs: Vec<&Envelope<dyn EventData>> =
                            batch.iter().map(|e| e as &Envelope<dyn EventData>).collect();
                        let start = Instant::now();
                        let out = store.append_batch(black_box(&refs)).await.expect("append_batch");
                        total += start.elapsed();
                        assert_eq!(out.len(), n);
                    }
                    total
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("raw_sqlx_insert", n), &n, |b, &n| {
            b.to_async(&rt).iter_custom(|iters| {
                let (raw, template) = (&raw, &template);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let batch = fresh_batch(template, n);
                        let start = Instant::now();
                        raw_insert(raw, black_box(&batch)).await;
                        total += start.elapsed();
                    }
                    total
                }
            })
        });
    }
    group.finish();
    // Both files hold the same number of events: the same work was done.
    let ours: i64 =
        rt.block_on(sqlx::query_scalar("SELECT COUNT(*) FROM event_store").fetch_one(store.pool())).unwrap();
    let theirs: i64 = rt.block_on(sqlx::query_scalar("SELECT COUNT(*) FROM event_store").fetch_one(&raw)).unwrap();
    println!("sqlite_append: {ours} events in the store's file, {theirs} in the raw file");
    rt.block_on(store.close());
    rt.block_on(raw.close());
}

/// Writes `STREAMED` events into the store's file, fast: raw multi-row inserts, 100,000
/// rows per transaction, values encoded exactly as the store encodes them.
async fn populate(pool: &SqlitePool) {
    let template = template();
    for _ in 0..STREAMED / 100_000 {
        let batch = fresh_batch(&template, 100_000);
        raw_insert(pool, &batch).await;
    }
}

/// Streams every stored event through the store; returns how many.
async fn stream_ours(store: &SqliteStore) -> usize {
    let mut n = 0;
    let mut stream = store.query().stream();
    while let Some(e) = stream.next().await {
        black_box(e.expect("stream item"));
        n += 1;
    }
    n
}

/// Replays every stored event into the typed `deny_disposable` handler; returns how many.
async fn replay_ours(store: &SqliteStore) -> usize {
    let bus = EventBus::builder().handlers(common::registered("deny_disposable")).try_build().await.expect("bus");
    let report = ReplayEngine::new(store.clone(), bus).replay().execute().await.expect("replay");
    assert_eq!(report.failed, 0, "{:?}", report.failures.first());
    assert_eq!(report.handlers_run, report.events);
    report.events as usize
}

/// What the raw row stream does with each row.
#[derive(Clone, Copy)]
enum Raw {
    /// Decodes the columns only.
    Rows,
    /// Also parses payload and metadata as JSON values.
    Json,
    /// The raw path of the replay: parses the payload into the struct and runs the
    /// handler's check on it.
    Handler,
}

/// Streams every stored row with plain sqlx, doing `raw` with each; returns how many.
async fn stream_raw(pool: &SqlitePool, raw: Raw) -> usize {
    let mut n = 0;
    let mut rows = sqlx::query_as::<_, RawRow>(SELECT_ALL).fetch(pool);
    while let Some(row) = rows.next().await {
        let row = row.expect("row");
        let metadata =
            || -> serde_json::Value { serde_json::from_str(row.8.as_deref().unwrap_or("null")).expect("meta") };
        match raw {
            Raw::Rows => {
                black_box(&row);
            }
            Raw::Json => {
                let data: serde_json::Value = serde_json::from_str(&row.7).expect("payload");
                black_box((&row, data, metadata()));
            }
            Raw::Handler => {
                let data: SignupRequested = serde_json::from_str(&row.7).expect("payload");
                common::check_signup(&data).expect("valid signup");
                black_box((&row, metadata()));
            }
        }
        n += 1;
    }
    n
}

fn sqlite_stream(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stream.db");
    let store = rt.block_on(SqliteStore::open(&path)).expect("store");
    let start = Instant::now();
    rt.block_on(populate(store.pool()));
    println!("sqlite_stream: wrote {STREAMED} events in {:.1?}", start.elapsed());

    let mut group = c.benchmark_group("sqlite_stream");
    group.throughput(Throughput::Elements(STREAMED as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(BenchmarkId::new("sqlite_store", STREAMED), |b| {
        b.to_async(&rt).iter(|| async { assert_eq!(stream_ours(&store).await, STREAMED) })
    });
    group.bench_function(BenchmarkId::new("raw_rows", STREAMED), |b| {
        b.to_async(&rt).iter(|| async { assert_eq!(stream_raw(store.pool(), Raw::Rows).await, STREAMED) })
    });
    group.bench_function(BenchmarkId::new("raw_rows_json", STREAMED), |b| {
        b.to_async(&rt).iter(|| async { assert_eq!(stream_raw(store.pool(), Raw::Json).await, STREAMED) })
    });
    group.bench_function(BenchmarkId::new("replay", STREAMED), |b| {
        b.to_async(&rt).iter(|| async { assert_eq!(replay_ours(&store).await, STREAMED) })
    });
    group.bench_function(BenchmarkId::new("raw_rows_json_handler", STREAMED), |b| {
        b.to_async(&rt).iter(|| async { assert_eq!(stream_raw(store.pool(), Raw::Handler).await, STREAMED) })
    });
    group.finish();
    rt.block_on(store.close());

    for mode in ["ours", "replay", "raw"] {
        match peak_rss_of_child(&path, mode) {
            Ok(report) => println!("sqlite_stream peak memory ({mode}): {report}"),
            Err(e) => println!("sqlite_stream peak memory ({mode}): not measured ({e})"),
        }
    }
}

/// Runs this bench again as a child that only streams the events of `db`, and returns
/// what it reports.
fn peak_rss_of_child(db: &Path, mode: &str) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .env(RSS_CHILD_ENV, db)
        .env(RSS_MODE_ENV, mode)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("child failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `VmHWM` (peak resident set) of this process, in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The child of [`peak_rss_of_child`].
fn rss_child(db: PathBuf, mode: &str) {
    let rt = common::multi_thread_runtime();
    let store = rt.block_on(SqliteStore::open(&db)).expect("store");
    let before = peak_rss_mib();
    let start = Instant::now();
    let n = match mode {
        "raw" => rt.block_on(stream_raw(store.pool(), Raw::Json)),
        "replay" => rt.block_on(replay_ours(&store)),
        _ => rt.block_on(stream_ours(&store)),
    };
    let elapsed = start.elapsed();
    let after = peak_rss_mib();
    let show = |m: Option<f64>| m.map_or_else(|| "n/a".to_owned(), |m| format!("{m:.1} MiB"));
    println!(
        "{n} events in {elapsed:.2?} ({:.0} events/s); VmHWM {} after opening, {} after streaming",
        n as f64 / elapsed.as_secs_f64(),
        show(before),
        show(after)
    );
}

/// Ours ÷ baseline for each pair, from criterion's saved medians.
fn print_ratios() {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("criterion")))
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.ancestors().nth(3)?.join("criterion"))
        });
    let Some(root) = root else { return };
    let rate = |group: &str, function: &str, param: usize| -> Option<f64> {
        let dir = root.join(group).join(function).join(param.to_string()).join("new");
        let estimates: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("estimates.json")).ok()?).ok()?;
        let median_ns = estimates["median"]["point_estimate"].as_f64()?;
        Some(param as f64 / (median_ns * 1e-9))
    };
    let pairs: Vec<(&str, usize, &str, &str)> = BATCHES
        .iter()
        .map(|&n| ("sqlite_append", n, "sqlite_store", "raw_sqlx_insert"))
        .chain([
            ("sqlite_stream", STREAMED, "sqlite_store", "raw_rows"),
            ("sqlite_stream", STREAMED, "sqlite_store", "raw_rows_json"),
            ("sqlite_stream", STREAMED, "replay", "raw_rows_json_handler"),
        ])
        .collect();
    println!("\n| group | n | ours | events/s | baseline | baseline events/s | ours / baseline |");
    println!("|---|---|---|---|---|---|---|");
    for (group, n, ours_name, baseline) in pairs {
        if let (Some(ours), Some(theirs)) = (rate(group, ours_name, n), rate(group, baseline, n)) {
            println!("| {group} | {n} | {ours_name} | {ours:.0} | {baseline} | {theirs:.0} | {:.2} |", ours / theirs);
        }
    }
}

fn main() {
    if let Some(db) = std::env::var_os(RSS_CHILD_ENV) {
        let mode = std::env::var(RSS_MODE_ENV).unwrap_or_default();
        rss_child(PathBuf::from(db), &mode);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    sqlite_append(&mut c);
    sqlite_stream(&mut c);
    c.final_summary();
    print_ratios();
}
