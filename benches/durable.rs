//! Durable delivery, beside raw baselines in the same run.
//!
//! - `durable_emit`: one `emit` of a 64-byte event with one async handler on a bus whose
//!   store keeps an outbox (SQLite: a WAL file with `synchronous = FULL`; PostgreSQL), so
//!   each emit writes the event and its pending delivery in one transaction, hands the
//!   delivery to the worker pool, and the handler's success is written back (batched, in
//!   the background, competing for the same database). Baseline `raw_tx`: one raw sqlx
//!   transaction per event that inserts the same event row and one delivery row, on a
//!   separate fresh database with the same schema and settings; the event's columns are
//!   serialized inside the clock for both. Target: ours ≥ 0.8 × the raw rate.
//! - `redrive`: 10,000 dead letters sent back to their handler with
//!   `DLQHandler::redrive_all` (500 entries per transaction on the SQL stores, each entry
//!   marked redriven only if it is still dead, so two redrives of one entry deliver it
//!   once), on memory, SQLite and PostgreSQL; reported as entries per second.
//!
//! `cargo bench --all-features --bench durable -- --warm-up-time 1 --measurement-time 5`
//! Needs PostgreSQL at 127.0.0.1:5432, database `test` (or `BAE_POSTGRES_URL`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use better_auth_events::dlq::{DLQHandler, DeadLetter, DeadLetterState, DeliveryLog, FailureKind, FailureRecord};
use better_auth_events::prelude::*;
use better_auth_events::store::{PostgresStore, SqliteStore, sqlx};
use common::{Columns, SignupRequested};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use sqlx::{Connection, Executor};

/// Payload bytes of every event.
const PAYLOAD: usize = 64;
/// Dead letters per redrive run.
const LETTERS: usize = 10_000;
/// The handler every delivery is for.
const HANDLER: &str = "bench-durable-check";

#[handler(async, name = "bench-durable-check")]
async fn durable_check(e: &SignupRequested) -> Result<(), HandlerError> {
    common::check_signup(e)
}

fn pg_url() -> String {
    std::env::var("BAE_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh schema name for this run.
fn schema(tag: &str) -> String {
    format!("bae_bench_{tag}_{}", uuid::Uuid::now_v7().simple())
}

async fn drop_schema(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_url()).await {
        let _ = conn.execute(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE").as_str()).await;
        let _ = conn.close().await;
    }
}

fn event() -> Envelope<SignupRequested> {
    Envelope::of(SignupRequested::of_size(PAYLOAD))
}

/// What the raw baseline writes per event, in one transaction: the event row and one
/// delivery row, on SQLite.
async fn raw_sqlite(pool: &sqlx::SqlitePool) {
    let c = Columns::of(&event());
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let time = c.timestamp.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("begin");
    sqlx::query(
        "INSERT INTO event_store (id, event_type, source, subject, version, tenant, correlation_id, data, metadata, \
         timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&c.id)
    .bind(&c.event_type)
    .bind(&c.source)
    .bind(&c.subject)
    .bind(&c.version)
    .bind(&c.tenant)
    .bind(&c.correlation_id)
    .bind(&c.data)
    .bind(&c.metadata)
    .bind(&time)
    .execute(&mut *tx)
    .await
    .expect("insert event");
    sqlx::query("INSERT INTO event_deliveries (event_id, handler, next_attempt_at, locked_until) VALUES (?, ?, ?, ?)")
        .bind(&c.id)
        .bind(HANDLER)
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .expect("insert delivery");
    tx.commit().await.expect("commit");
}

/// The same on PostgreSQL (JSONB columns, timestamptz).
async fn raw_postgres(pool: &sqlx::PgPool, schema: &str) {
    let c = Columns::of(&event());
    let now = chrono::Utc::now();
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".event_store (id, event_type, source, subject, version, tenant, correlation_id, \
         data, metadata, timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10)"
    ))
    .bind(&c.id)
    .bind(&c.event_type)
    .bind(&c.source)
    .bind(&c.subject)
    .bind(&c.version)
    .bind(&c.tenant)
    .bind(&c.correlation_id)
    .bind(&c.data)
    .bind(&c.metadata)
    .bind(c.timestamp)
    .execute(&mut *tx)
    .await
    .expect("insert event");
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".event_deliveries (event_id, handler, next_attempt_at, locked_until) \
         VALUES ($1, $2, $3, $3)"
    ))
    .bind(&c.id)
    .bind(HANDLER)
    .bind(now)
    .execute(&mut *tx)
    .await
    .expect("insert delivery");
    tx.commit().await.expect("commit");
}

fn bus_on(rt: &tokio::runtime::Runtime, store: impl EventStore) -> EventBus {
    rt.block_on(EventBus::builder().store(store).handlers(common::registered(HANDLER)).try_build()).expect("bus")
}

fn durable_emit(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("durable_emit");
    group.throughput(Throughput::Elements(1));

    let ours = rt.block_on(SqliteStore::open(dir.path().join("ours.db"))).expect("sqlite");
    let raw = rt.block_on(SqliteStore::open(dir.path().join("raw.db"))).expect("sqlite");
    let bus = bus_on(&rt, ours);
    group.bench_function(BenchmarkId::new("bus", "sqlite"), |b| {
        b.to_async(&rt).iter(|| async { bus.emit(event()).await.expect("emit") })
    });
    group.bench_function(BenchmarkId::new("raw_tx", "sqlite"), |b| b.to_async(&rt).iter(|| raw_sqlite(raw.pool())));
    rt.block_on(bus.shutdown(Duration::from_secs(30))).expect("shutdown");

    let (ours_schema, raw_schema) = (schema("emit"), schema("emit_raw"));
    let open = |s: &str| {
        rt.block_on(PostgresStore::builder(pg_url()).schema(s).build())
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is unreachable: {e}", pg_url()))
    };
    let (ours, raw) = (open(&ours_schema), open(&raw_schema));
    let bus = bus_on(&rt, ours);
    group.bench_function(BenchmarkId::new("bus", "postgres"), |b| {
        b.to_async(&rt).iter(|| async { bus.emit(event()).await.expect("emit") })
    });
    group.bench_function(BenchmarkId::new("raw_tx", "postgres"), |b| {
        b.to_async(&rt).iter(|| raw_postgres(raw.pool(), &raw_schema))
    });
    rt.block_on(bus.shutdown(Duration::from_secs(30))).expect("shutdown");
    group.finish();
    rt.block_on(async {
        drop_schema(&ours_schema).await;
        drop_schema(&raw_schema).await;
    });
}

/// `LETTERS` dead letters of stored events: the events are appended (with their pending
/// deliveries) through the store.
async fn stored_letters(log: &dyn DeliveryLog) -> Vec<DeadLetter> {
    let events: Vec<Envelope<SignupRequested>> = (0..LETTERS).map(|_| event()).collect();
    for chunk in events.chunks(1000) {
        let refs: Vec<&Envelope<dyn EventData>> = chunk.iter().map(|e| e as &Envelope<dyn EventData>).collect();
        log.append_with_deliveries(&refs, &[HANDLER], None).await.expect("append");
    }
    let now = chrono::Utc::now();
    events
        .iter()
        .map(|e| DeadLetter {
            id: uuid::Uuid::now_v7(),
            delivery_id: e.delivery_id(HANDLER),
            event: e.to_dynamic().expect("json"),
            handler: HANDLER.into(),
            attempts: 3,
            first_failure: now,
            last_failure: now,
            error: FailureRecord { kind: FailureKind::Failed, message: "smtp down".into(), causes: Vec::new() },
            history: Vec::new(),
            redriven_from: None,
            state: DeadLetterState::Dead,
        })
        .collect()
}

/// Times `redrive_all` of the dead letters `setup` leaves in a fresh store, `iters` times.
async fn time_redrives<F, Fut>(iters: u64, setup: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn DeliveryLog>>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let log = setup().await;
        let dlq = DLQHandler::from_arc(Arc::clone(&log));
        let start = Instant::now();
        let outcome = dlq.redrive_all().await.expect("redrive");
        total += start.elapsed();
        assert_eq!(outcome.done, LETTERS as u64);
    }
    total
}

fn redrive(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("redrive");
    group.throughput(Throughput::Elements(LETTERS as u64)).sample_size(10);
    group.bench_function(BenchmarkId::new("dlq", "memory"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            time_redrives(iters, || async {
                let store = MemoryStore::new();
                for letter in stored_letters(&store).await {
                    store.bury(&letter).await.expect("bury");
                }
                Arc::new(store) as Arc<dyn DeliveryLog>
            })
        })
    });
    // The SQL stores' letters are written in one transaction, outside the clock (burying
    // 10,000 one by one would take most of the run).
    let n = std::sync::atomic::AtomicUsize::new(0);
    group.bench_function(BenchmarkId::new("dlq", "sqlite"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            time_redrives(iters, || async {
                let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let store = SqliteStore::open(dir.path().join(format!("redrive-{k}.db"))).await.expect("sqlite");
                let letters = stored_letters(&store).await;
                let mut tx = store.pool().begin().await.expect("begin");
                sqlx::query("DELETE FROM event_deliveries").execute(&mut *tx).await.expect("delete");
                for l in &letters {
                    sqlx::query(
                        "INSERT INTO dead_letters (id, event_id, event_type, handler, kind, last_failure_at, entry) \
                         VALUES (?, ?, ?, ?, 'failed', ?, ?)",
                    )
                    .bind(l.id.to_string())
                    .bind(l.event.id.to_string())
                    .bind(l.event_type())
                    .bind(&l.handler)
                    .bind(l.last_failure.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                    .bind(serde_json::to_string(l).expect("json"))
                    .execute(&mut *tx)
                    .await
                    .expect("insert letter");
                }
                tx.commit().await.expect("commit");
                Arc::new(store) as Arc<dyn DeliveryLog>
            })
        })
    });
    let schemas = std::sync::Mutex::new(Vec::new());
    group.bench_function(BenchmarkId::new("dlq", "postgres"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            time_redrives(iters, || async {
                let name = schema("redrive");
                let store = PostgresStore::builder(pg_url()).schema(&name).build().await.expect("postgres");
                let letters = stored_letters(&store).await;
                let mut tx = store.pool().begin().await.expect("begin");
                sqlx::query(&format!("DELETE FROM \"{name}\".event_deliveries")).execute(&mut *tx).await.expect("delete");
                for l in &letters {
                    sqlx::query(&format!(
                        "INSERT INTO \"{name}\".dead_letters (id, event_id, event_type, handler, kind, last_failure_at, \
                         entry) VALUES ($1, $2, $3, $4, 'failed', $5, $6)"
                    ))
                    .bind(l.id.to_string())
                    .bind(l.event.id.to_string())
                    .bind(l.event_type())
                    .bind(&l.handler)
                    .bind(l.last_failure)
                    .bind(serde_json::to_string(l).expect("json"))
                    .execute(&mut *tx)
                    .await
                    .expect("insert letter");
                }
                tx.commit().await.expect("commit");
                if let Ok(mut s) = schemas.lock() {
                    s.push(name);
                }
                Arc::new(store) as Arc<dyn DeliveryLog>
            })
        })
    });
    group.finish();
    rt.block_on(async {
        for name in schemas.lock().map(|s| s.clone()).unwrap_or_default() {
            drop_schema(&name).await;
        }
    });
}

/// Prints ours ÷ baseline from criterion's saved medians.
fn report() {
    let root = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let rate = |group: &str, function: &str, param: &str, elements: f64| -> Option<f64> {
        let path = format!("{root}/criterion/{group}/{function}/{param}/new/estimates.json");
        let text = std::fs::read_to_string(path).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(elements / (json["median"]["point_estimate"].as_f64()? * 1e-9))
    };
    println!("\ndurable_emit (emits/s): store, bus, raw_tx, bus ÷ raw (target ≥ 0.80)");
    for store in ["sqlite", "postgres"] {
        if let (Some(ours), Some(raw)) =
            (rate("durable_emit", "bus", store, 1.0), rate("durable_emit", "raw_tx", store, 1.0))
        {
            println!("  {store:>9} {ours:>10.0} {raw:>10.0} {:>6.2}", ours / raw);
        }
    }
    println!("redrive of {LETTERS} dead letters (entries/s):");
    for store in ["memory", "sqlite", "postgres"] {
        if let Some(r) = rate("redrive", "dlq", store, LETTERS as f64) {
            println!("  {store:>9} {r:>10.0}");
        }
    }
}

criterion_group!(benches, durable_emit, redrive);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
