//! `broker_redis`: 20,000 events through Redis Streams, from the first publish until the
//! handler ran the last one, payloads of 64 B, 1 KiB and 16 KiB.
//!
//! - `ours`: an `EventBus` built with `.broker(RedisStreams)` emitting each event (one
//!   `XADD` in the dedup script, the CloudEvents attributes as fields), awaited one after
//!   the other, while a `Worker` (concurrency 64, prefetch 64) runs an async handler that
//!   checks the sign-up and counts, acknowledging each entry with its own `XACK`.
//! - `ours_no_dedup`: the same with `dedup_window(Duration::ZERO)`: a plain `XADD` per
//!   event instead of the dedup script.
//! - `ours_transport`: the same as `ours` without bus and worker: `RedisStreams::publish` of each
//!   event, and one consumer (`Consumer::fetch` of up to 64, the batch's handlers run
//!   concurrently, each entry acknowledged with `Acker::ack`).
//! - `raw` (the baseline the ratio is taken against): the `redis` crate, the same work by
//!   hand: `XADD {stream} * event {structured CloudEvents JSON}` awaited one after the
//!   other, a consumer on a connection of its own reading `XREADGROUP ... COUNT 64 BLOCK`,
//!   decoding and checking each event and acknowledging each with its own `XACK`.
//! - `omniqueue`: the `omniqueue` crate's Redis Streams backend (`send_raw` of the same
//!   JSON, `receive_all(64, ..)`, `Delivery::ack`), side by side.
//!
//! Events are made and serialized inside the clock on every path. Streams live under
//! `bae_bench:<uuid>` and are deleted at the end. At the end the bench prints events/s of
//! each path and the ratios to `raw` (medians over the samples of this run). Needs Redis at
//! 127.0.0.1:6379 (or `BAE_REDIS_URL`).
//!
//! `cargo bench --features redis --bench broker_redis -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use better_auth_events::Handler;
use better_auth_events::prelude::*;
use better_auth_events_runtime::broker::redis;
use better_auth_events_runtime::broker::{Broker, Outgoing, RedisStreams, Subscription};
use common::SignupRequested;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use tokio::sync::Notify;

/// Events per sample.
const EVENTS: usize = 20_000;
/// Bytes of string data in each event.
const SIZES: [usize; 3] = [64, 1024, 16 * 1024];
/// Entries a consumer takes per read, and handlers it runs at once.
const PREFETCH: usize = 64;
const START: &str = "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no";

/// Events per second of each sample, by (payload size, path).
static SAMPLES: Mutex<BTreeMap<(usize, &'static str), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(size: usize, path: &'static str, elapsed: Duration) {
    if elapsed > Duration::ZERO {
        let rate = EVENTS as f64 / elapsed.as_secs_f64();
        SAMPLES.lock().expect("samples").entry((size, path)).or_default().push(rate);
    }
}

fn url() -> String {
    std::env::var("BAE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn event(size: usize) -> Envelope<SignupRequested> {
    Envelope::of(SignupRequested::of_size(size))
}

/// The handler's work on a received CloudEvents document.
fn handle(json: &[u8]) {
    let e: Envelope<SignupRequested> = Envelope::from_cloudevent_slice(json).expect("a CloudEvent");
    common::check_signup(&e.data).expect("a valid sign-up");
}

async fn connection() -> redis::aio::MultiplexedConnection {
    let url = url();
    let client = redis::Client::open(url.as_str()).expect("url");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e}); start it with `{START}`"))
}

/// What the worker's handler counts, and who waits for the count.
struct Counted {
    handled: AtomicUsize,
    done: Notify,
}

/// The async handler of `ours`: checks the sign-up, counts, and wakes the bench at the last
/// event of the sample.
fn counting(counted: &Arc<Counted>) -> Handler {
    let counted = Arc::clone(counted);
    Handler::typed(
        HandlerOptions::asynchronous().name("bench::broker_redis::count"),
        async move |e: &Envelope<SignupRequested>| {
            common::check_signup(&e.data)?;
            if counted.handled.fetch_add(1, Ordering::AcqRel) + 1 == EVENTS {
                counted.done.notify_one();
            }
            Ok(())
        },
    )
}

/// One sample of `ours`: emit every event, until the worker's handler ran them all.
/// The emits run on a task of the runtime, as the raw publisher does.
async fn ours(bus: &EventBus, counted: &Counted, size: usize) -> Duration {
    counted.handled.store(0, Ordering::Release);
    let start = Instant::now();
    let done = counted.done.notified();
    let emitter = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for _ in 0..EVENTS {
                bus.emit(SignupRequested::of_size(size)).await.expect("emit");
            }
        })
    };
    emitter.await.expect("emitter");
    done.await;
    start.elapsed()
}

/// One sample of `ours_transport`: publish every event, until the consumer handled them all.
async fn ours_transport(
    broker: &RedisStreams,
    consumer: &mut Box<dyn better_auth_events_runtime::broker::Consumer>,
    size: usize,
) -> Duration {
    let start = Instant::now();
    let publisher = {
        let broker = broker.clone();
        tokio::spawn(async move {
            for _ in 0..EVENTS {
                let e = event(size);
                broker.publish(&Outgoing::new(&e).expect("outgoing")).await.expect("publish");
            }
        })
    };
    let mut handled = 0;
    while handled < EVENTS {
        let batch = consumer.fetch(PREFETCH, Duration::from_millis(100)).await.expect("fetch");
        handled += batch.len();
        join_all(batch.into_iter().map(|inbound| async move {
            let event = inbound.event.expect("a CloudEvent");
            let typed: Envelope<SignupRequested> = event.into_typed().expect("typed");
            common::check_signup(&typed.data).expect("a valid sign-up");
            inbound.acker.ack().await.expect("ack");
        }))
        .await;
    }
    publisher.await.expect("publisher");
    start.elapsed()
}

async fn group_create(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(conn)
        .await
        .expect("XGROUP CREATE");
}

/// One sample of `raw`.
async fn raw(
    publish: &redis::aio::MultiplexedConnection,
    read: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    size: usize,
) -> Duration {
    let start = Instant::now();
    let publisher = {
        let mut conn = publish.clone();
        let stream = stream.to_owned();
        tokio::spawn(async move {
            for _ in 0..EVENTS {
                let json = event(size).to_cloudevent_bytes().expect("json");
                let _: String = redis::cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg("event")
                    .arg(json)
                    .query_async(&mut conn)
                    .await
                    .expect("XADD");
            }
        })
    };
    let mut handled = 0;
    while handled < EVENTS {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("c1")
            .arg("COUNT")
            .arg(PREFETCH)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(read)
            .await
            .expect("XREADGROUP");
        let entries = entries(reply);
        handled += entries.len();
        join_all(entries.into_iter().map(|(id, json)| {
            let mut conn = publish.clone();
            async move {
                handle(&json);
                let _: i64 =
                    redis::cmd("XACK").arg(stream).arg("raw").arg(id).query_async(&mut conn).await.expect("XACK");
            }
        }))
        .await;
    }
    publisher.await.expect("publisher");
    start.elapsed()
}

/// The (id, `event` field) pairs of an `XREADGROUP` reply of one stream.
fn entries(reply: redis::Value) -> Vec<(String, Vec<u8>)> {
    use redis::Value;
    let Value::Array(streams) = reply else { return Vec::new() };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(mut parts) = stream else { panic!("stream") };
        let Value::Array(items) = parts.remove(1) else { panic!("entries") };
        for item in items {
            let Value::Array(mut parts) = item else { panic!("entry") };
            let Value::Array(fields) = parts.remove(1) else { panic!("fields") };
            let Value::BulkString(id) = parts.remove(0) else { panic!("id") };
            let Some(Value::BulkString(json)) = fields.into_iter().nth(1) else { panic!("event field") };
            out.push((String::from_utf8(id).expect("id"), json));
        }
    }
    out
}

type OmniProducer = omniqueue::backends::redis::RedisProducer<omniqueue::backends::redis::RedisConnectionManager>;
type OmniConsumer = omniqueue::backends::redis::RedisConsumer<omniqueue::backends::redis::RedisConnectionManager>;

/// One sample of `omniqueue`.
async fn omni(producer: &Arc<OmniProducer>, consumer: &mut OmniConsumer, size: usize) -> Duration {
    let start = Instant::now();
    let publisher = {
        let producer = Arc::clone(producer);
        tokio::spawn(async move {
            for _ in 0..EVENTS {
                let json = event(size).to_cloudevent_bytes().expect("json");
                producer.send_raw(&json).await.expect("send");
            }
        })
    };
    let mut handled = 0;
    while handled < EVENTS {
        let batch = consumer.receive_all(PREFETCH, Duration::from_millis(100)).await.expect("receive");
        handled += batch.len();
        join_all(batch.into_iter().map(|d| async move {
            handle(d.borrow_payload().expect("payload"));
            d.ack().await.map_err(|(e, _)| e).expect("ack");
        }))
        .await;
    }
    publisher.await.expect("publisher");
    start.elapsed()
}

fn broker_redis(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let url = url();
    let prefix = format!("bae_bench:{}", uuid::Uuid::now_v7().simple());
    let mut keys = Vec::new();

    let mut group = c.benchmark_group("broker_redis");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(EVENTS as u64));
    for size in SIZES {
        // Ours: a bus and a worker, with the default dedup window and without one.
        for (path, dedup) in [("ours", true), ("ours_no_dedup", false)] {
            let stream = format!("{prefix}:{path}:{size}");
            let mut builder = RedisStreams::builder().url(&url).stream(&stream);
            if !dedup {
                builder = builder.dedup_window(Duration::ZERO);
            }
            let broker = rt
                .block_on(builder.build())
                .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e}); start it with `{START}`"));
            keys.push(stream.clone());
            keys.push(format!("{stream}:dead"));
            let counted = Arc::new(Counted { handled: AtomicUsize::new(0), done: Notify::new() });
            let (bus, stop, worker) = rt.block_on(async {
                let worker = Worker::builder()
                    .broker(broker.clone())
                    .handler(counting(&counted))
                    .concurrency(PREFETCH)
                    .prefetch(PREFETCH)
                    .build()
                    .await
                    .expect("worker");
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let worker = tokio::spawn(worker.run_until(async move {
                    let _ = stopped.await;
                }));
                let bus = EventBus::builder().broker(broker).try_build().await.expect("bus");
                (bus, stop, worker)
            });
            group.bench_function(BenchmarkId::new(path, size), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let t = ours(&bus, &counted, size).await;
                            record(size, path, t);
                            total += t;
                        }
                        total
                    })
                })
            });
            rt.block_on(async {
                let _ = stop.send(());
                worker.await.expect("worker task").expect("worker");
                drop(bus);
            });
        }

        // Ours, the transport alone.
        let stream = format!("{prefix}:ours_transport:{size}");
        let broker = rt
            .block_on(RedisStreams::builder().url(&url).stream(&stream).build())
            .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e}); start it with `{START}`"));
        let sub = Subscription::new("bench::handler", ["bench.signup.requested"]).with_prefetch(PREFETCH);
        let mut consumer = rt.block_on(broker.subscribe(&sub)).expect("subscribe");
        keys.push(stream.clone());
        keys.push(format!("{stream}:dead"));
        group.bench_function(BenchmarkId::new("ours_transport", size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = ours_transport(&broker, &mut consumer, size).await;
                        record(size, "ours_transport", t);
                        total += t;
                    }
                    total
                })
            })
        });

        // Raw.
        let stream = format!("{prefix}:raw:{size}");
        let (publish, mut read) = rt.block_on(async { (connection().await, connection().await) });
        rt.block_on(async {
            let mut conn = publish.clone();
            group_create(&mut conn, &stream, "raw").await;
        });
        keys.push(stream.clone());
        group.bench_function(BenchmarkId::new("raw", size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = raw(&publish, &mut read, &stream, size).await;
                        record(size, "raw", t);
                        total += t;
                    }
                    total
                })
            })
        });

        // omniqueue.
        let stream = format!("{prefix}:omniqueue:{size}");
        rt.block_on(async {
            let mut conn = publish.clone();
            group_create(&mut conn, &stream, "omniqueue").await;
        });
        let config = omniqueue::backends::redis::RedisConfig {
            dsn: url.clone(),
            max_connections: 8,
            reinsert_on_nack: false,
            queue_key: stream.clone(),
            delayed_queue_key: format!("{stream}:delayed"),
            delayed_lock_key: format!("{stream}:delayed_lock"),
            consumer_group: "omniqueue".to_owned(),
            consumer_name: "c1".to_owned(),
            payload_key: "payload".to_owned(),
            ack_deadline_ms: 60_000,
            dlq_config: None,
            sentinel_config: None,
        };
        let (producer, mut omni_consumer) =
            rt.block_on(omniqueue::backends::redis::RedisBackend::builder(config).build_pair()).expect("omniqueue");
        let producer = Arc::new(producer);
        keys.extend([stream.clone(), format!("{stream}:delayed"), format!("{stream}:delayed_lock")]);
        group.bench_function(BenchmarkId::new("omniqueue", size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = omni(&producer, &mut omni_consumer, size).await;
                        record(size, "omniqueue", t);
                        total += t;
                    }
                    total
                })
            })
        });
    }
    group.finish();
    summary();

    // `UNLINK` frees the streams in the background: a `DEL` of hundreds of megabytes
    // blocks the server past the client's response timeout.
    rt.block_on(async {
        let mut conn = connection().await;
        let _: i64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await.expect("UNLINK");
    });
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summary() {
    let mut samples = SAMPLES.lock().expect("samples");
    println!("\nbroker_redis: {EVENTS} events published until handled, events/s (median of this run's samples)");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>10} {:>14}",
        "payload", "ours", "raw", "omniqueue", "ours/raw", "omniqueue/raw"
    );
    for size in SIZES {
        let Some(raw) = samples.get_mut(&(size, "raw")).map(|v| median(v)) else { continue };
        for path in ["ours_no_dedup", "ours_transport"] {
            if let Some(t) = samples.get_mut(&(size, path)).map(|v| median(v)) {
                println!("{size:>8} {path}: {t:.0} events/s, {:.2}x", t / raw);
            }
        }
    }
    for size in SIZES {
        let mut rate = |path| samples.get_mut(&(size, path)).map(|v| median(v));
        let (Some(ours), Some(raw)) = (rate("ours"), rate("raw")) else { continue };
        let omni = rate("omniqueue").unwrap_or(f64::NAN);
        println!("{size:>8} {ours:>12.0} {raw:>12.0} {omni:>12.0} {:>9.2}x {:>13.2}x", ours / raw, omni / raw);
    }
}

criterion_group!(benches, broker_redis);
criterion_main!(benches);
