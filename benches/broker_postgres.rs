//! `broker_postgres`: end to end through PostgreSQL as a queue, beside a raw baseline in
//! the same run.
//!
//! - `queue` (ours): an `EventBus` with `.broker(PostgresQueue)` (no other store) emits
//!   20,000 events from 16 concurrent tasks; a `Worker` (concurrency 16, prefetch 64) runs
//!   an async handler that reads the typed payload and counts. The clock stops when the
//!   handler has run 20,000 times. Each emit stores the event and one pending delivery for
//!   the subscribed handler and notifies (emits made while another's transaction runs
//!   share the next one); the worker claims deliveries with `FOR UPDATE SKIP LOCKED` under
//!   a lease and deletes them once handled (batched).
//! - `raw_skip_locked` (the baseline the ratio is taken against): raw sqlx doing the same
//!   work with the same settings: 16 tasks each insert, per event, one transaction of the
//!   event row (the same columns, serialized inside the clock) and one queue row; one
//!   consumer loop claims up to 64 due rows with `FOR UPDATE SKIP LOCKED` (setting a lease,
//!   returning the event's payload), deserializes each payload on 16 tasks, and deletes
//!   the handled rows in one statement; it polls every 5 ms when the queue is empty.
//!
//! Payloads of 64 B and 1 KiB. Every sample uses fresh schemas, dropped at the end.
//! `cargo bench --features postgres --bench broker_postgres`
//! Needs PostgreSQL at 127.0.0.1:5432, database `test` (or `BAE_POSTGRES_URL`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use better_auth_events::broker::PostgresQueue;
use better_auth_events::prelude::*;
use better_auth_events::store::{PostgresStore, sqlx};
use common::{Columns, SignupRequested};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use sqlx::{Connection, Executor, Row};
use tokio::sync::Notify;

/// Events per sample.
const EVENTS: usize = 20_000;
/// Concurrent emitting tasks, and handlers running at once.
const CONCURRENCY: usize = 16;
/// Rows one claim takes.
const PREFETCH: usize = 64;
const SIZES: [usize; 2] = [64, 1024];

/// Events per second of each sample, by (path, payload size).
static SAMPLES: Mutex<BTreeMap<(&'static str, usize), Vec<f64>>> = Mutex::new(BTreeMap::new());
static SCHEMAS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(path: &'static str, size: usize, elapsed: Duration) {
    let rate = EVENTS as f64 / elapsed.as_secs_f64();
    SAMPLES.lock().expect("samples").entry((path, size)).or_default().push(rate);
}

fn pg_url() -> String {
    std::env::var("BAE_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn schema(tag: &str) -> String {
    let name = format!("bae_bench_{tag}_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    SCHEMAS.lock().expect("schemas").push(name.clone());
    name
}

/// Counts handled events and wakes the clock at the last.
#[derive(Default)]
struct Tally {
    n: AtomicUsize,
    done: Notify,
}

impl Tally {
    fn hit(&self) {
        if self.n.fetch_add(1, Ordering::AcqRel) + 1 == EVENTS {
            self.done.notify_one();
        }
    }
}

async fn ours(size: usize) -> Duration {
    let store = PostgresStore::builder(pg_url())
        .schema(schema("queue"))
        .max_connections(24)
        .build()
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is unreachable: {e}", pg_url()));
    let queue = PostgresQueue::with_poll_interval(store, Duration::from_millis(100));
    let tally = Arc::new(Tally::default());
    let t = Arc::clone(&tally);
    let handler = better_auth_events::Handler::typed(
        HandlerOptions::asynchronous().name("bench-queue"),
        async move |e: &Envelope<SignupRequested>| {
            common::check_signup(&e.data)?;
            t.hit();
            Ok(())
        },
    );
    let worker = Worker::builder()
        .broker(queue.clone())
        .handler(handler)
        .concurrency(CONCURRENCY)
        .prefetch(PREFETCH)
        .fetch_wait(Duration::from_millis(200))
        .build()
        .await
        .expect("worker");
    let bus = Arc::new(EventBus::builder().broker(queue).try_build().await.expect("bus"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let emitters: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move {
                for _ in 0..EVENTS / CONCURRENCY {
                    bus.emit(SignupRequested::of_size(size)).await.expect("emit");
                }
            })
        })
        .collect();
    for e in emitters {
        e.await.expect("emitter");
    }
    let done = tally.done.notified();
    if tally.n.load(Ordering::Acquire) < EVENTS {
        done.await;
    }
    let elapsed = start.elapsed();
    let _ = stop.send(());
    running.await.expect("worker task").expect("worker");
    elapsed
}

async fn raw(size: usize) -> Duration {
    let schema = schema("raw");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(24)
        .after_connect({
            let schema = schema.clone();
            move |conn, _| {
                let sql = format!("SET search_path TO \"{schema}\"");
                Box::pin(async move { conn.execute(sql.as_str()).await.map(|_| ()) })
            }
        })
        .connect_lazy(&pg_url())
        .expect("pool");
    let mut admin = sqlx::PgConnection::connect(&pg_url()).await.expect("PostgreSQL");
    admin
        .execute(
            format!(
                "CREATE SCHEMA \"{schema}\"; \
                 CREATE TABLE \"{schema}\".events (id TEXT PRIMARY KEY, event_type TEXT NOT NULL, source TEXT NOT NULL, \
                 subject TEXT, version TEXT, tenant TEXT, correlation_id TEXT, data JSONB NOT NULL, metadata JSONB NOT NULL, \
                 timestamp TIMESTAMPTZ NOT NULL); \
                 CREATE TABLE \"{schema}\".queue (id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL REFERENCES \"{schema}\".events (id), \
                 handler TEXT NOT NULL, locked_until TIMESTAMPTZ);"
            )
            .as_str(),
        )
        .await
        .expect("raw schema");
    let _ = admin.close().await;
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let consumer = {
        let (pool, tally) = (pool.clone(), Arc::clone(&tally));
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            while tally.n.load(Ordering::Acquire) < EVENTS {
                let rows = sqlx::query(
                    "WITH due AS (SELECT id FROM queue WHERE handler = 'bench-raw' \
                     AND (locked_until IS NULL OR locked_until < NOW()) ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     UPDATE queue q SET locked_until = NOW() + INTERVAL '60 seconds' FROM due, events e \
                     WHERE q.id = due.id AND e.id = q.event_id RETURNING q.id, e.data::TEXT",
                )
                .bind(PREFETCH as i64)
                .fetch_all(&pool)
                .await
                .expect("claim");
                if rows.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let mut handled = tokio::task::JoinSet::new();
                for row in rows {
                    let id: i64 = row.get(0);
                    let data: String = row.get(1);
                    let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
                    let tally = Arc::clone(&tally);
                    handled.spawn(async move {
                        let e: SignupRequested = serde_json::from_str(&data).expect("payload");
                        common::check_signup(&e).expect("valid");
                        tally.hit();
                        drop(permit);
                        id
                    });
                }
                let ids: Vec<i64> = handled.join_all().await;
                sqlx::query("DELETE FROM queue WHERE id = ANY($1)").bind(&ids).execute(&pool).await.expect("ack");
            }
        })
    };
    let emitters: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..EVENTS / CONCURRENCY {
                    let c = Columns::of(&Envelope::of(SignupRequested::of_size(size)));
                    let mut tx = pool.begin().await.expect("begin");
                    sqlx::query(
                        "INSERT INTO events (id, event_type, source, subject, version, tenant, correlation_id, data, \
                         metadata, timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10)",
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
                    .bind(c.timestamp)
                    .execute(&mut *tx)
                    .await
                    .expect("insert event");
                    sqlx::query("INSERT INTO queue (event_id, handler) VALUES ($1, 'bench-raw')")
                        .bind(&c.id)
                        .execute(&mut *tx)
                        .await
                        .expect("insert queue row");
                    tx.commit().await.expect("commit");
                }
            })
        })
        .collect();
    for e in emitters {
        e.await.expect("emitter");
    }
    consumer.await.expect("consumer");
    start.elapsed()
}

fn end_to_end(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let mut group = c.benchmark_group("broker_postgres");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).throughput(Throughput::Elements(EVENTS as u64));
    for size in SIZES {
        group.bench_function(BenchmarkId::new("queue", size), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let took = ours(size).await;
                    record("queue", size, took);
                    total += took;
                }
                total
            })
        });
        group.bench_function(BenchmarkId::new("raw_skip_locked", size), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let took = raw(size).await;
                    record("raw_skip_locked", size, took);
                    total += took;
                }
                total
            })
        });
    }
    group.finish();
    rt.block_on(async {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_url()).await {
            for name in SCHEMAS.lock().map(|s| s.clone()).unwrap_or_default() {
                let _ = conn.execute(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE").as_str()).await;
            }
        }
    });
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn report() {
    let samples = SAMPLES.lock().expect("samples");
    println!(
        "\nbroker_postgres, {EVENTS} events end to end (events/s, medians): size, queue, raw_skip_locked, ratio (target ≥ 0.80)"
    );
    for size in SIZES {
        let (Some(ours), Some(raw)) = (samples.get(&("queue", size)), samples.get(&("raw_skip_locked", size))) else {
            continue;
        };
        let (ours, raw) = (median(ours), median(raw));
        println!("  {size:>6} B {ours:>10.0} {raw:>10.0} {:>6.2}", ours / raw);
    }
}

criterion_group!(benches, end_to_end);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
