//! `broker_nats`: end to end through NATS JetStream, 20,000 events per sample, from the
//! first publish until the handler has run on the last one; payloads of 64 B and 1 KiB.
//!
//! - `ours`: an `EventBus` with `.broker(NatsJetStream)` emits (`PUBLISHERS` tasks emitting
//!   side by side, each emit awaiting JetStream's publish ack), and a `Worker` (concurrency
//!   `CONCURRENCY`, prefetch 2 × that, the durable pull consumer `subscribe` creates) runs an
//!   async handler that checks the address and counts.
//! - `raw` (the baseline the ratio is taken against): the plain `async-nats` client doing the
//!   same work with the same settings: the same number of publisher tasks publishing the
//!   JSON of the event with a `Nats-Msg-Id` and awaiting each publish ack, a durable pull
//!   consumer with explicit acks fetching as many messages as it has free workers (at most
//!   the same prefetch), each message decoded, checked, counted and double-acked on its own
//!   task, `CONCURRENCY` at a time.
//!
//! Each sample uses its own stream (a uuid), deleted afterwards; consumers are created before
//! the clock starts. At the end the bench prints events/s of both and the ratio (medians of
//! this run's samples). Needs NATS with JetStream at 127.0.0.1:4222 (or `BAE_NATS_URL`).
//!
//! `cargo bench --features nats --bench broker_nats -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use better_auth_events::broker::NatsJetStream;
use better_auth_events::prelude::*;
use better_auth_events::{Handler, Worker};
use common::{DONE, SignupRequested, check_signup};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use futures::StreamExt;
use tokio::sync::Semaphore;

/// Events per sample.
const EVENTS: usize = 20_000;
/// Payload sizes (bytes of e-mail address in the event).
const SIZES: [usize; 2] = [64, 1024];
/// Publisher tasks emitting side by side.
const PUBLISHERS: usize = 32;
/// Handlers running at once.
const CONCURRENCY: usize = 32;
/// What a worker prefetches by default: twice its concurrency.
const PREFETCH: usize = 2 * CONCURRENCY;
/// How long an empty fetch waits.
const FETCH_WAIT: Duration = Duration::from_millis(100);
const START: &str = "nats-server -js";

/// Events per second of each sample, by (path, size).
static SAMPLES: Mutex<BTreeMap<(&'static str, usize), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(path: &'static str, size: usize, elapsed: Duration) {
    if elapsed > Duration::ZERO {
        let rate = EVENTS as f64 / elapsed.as_secs_f64();
        SAMPLES.lock().expect("samples").entry((path, size)).or_default().push(rate);
    }
}

fn url() -> String {
    std::env::var("BAE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

async fn plain_client() -> jetstream::Context {
    let url = url();
    let client = async_nats::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} is unreachable ({e}); start it with `{START}` or set BAE_NATS_URL"));
    jetstream::new(client)
}

fn counting_handler() -> Handler {
    Handler::typed(HandlerOptions::asynchronous().name("bench::nats::count"), async |e: &Envelope<SignupRequested>| {
        let outcome = check_signup(std::hint::black_box(&e.data));
        DONE.hit();
        outcome
    })
}

/// One sample of ours: a fresh stream, the worker subscribed, then the clock.
async fn ours(js: &jetstream::Context, size: usize) -> Duration {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let broker = NatsJetStream::builder()
        .url(url())
        .stream(format!("BAE_BENCH_{id}"))
        .subject_prefix(format!("bae_bench.{id}"))
        .build()
        .await
        .unwrap_or_else(|e| panic!("NATS at {} is unreachable ({e}); start it with `{START}`", url()));
    let worker = Worker::builder()
        .broker(broker.clone())
        .handler(counting_handler())
        .concurrency(CONCURRENCY)
        .prefetch(PREFETCH)
        .fetch_wait(FETCH_WAIT)
        .build()
        .await
        .expect("worker");
    let bus = EventBus::builder().broker(broker.clone()).try_build().await.expect("bus");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let event = SignupRequested::of_size(size);
    DONE.arm(EVENTS);

    let start = Instant::now();
    let mut publishers = Vec::with_capacity(PUBLISHERS);
    for p in 0..PUBLISHERS {
        let (bus, event) = (bus.clone(), event.clone());
        publishers.push(tokio::spawn(async move {
            for _ in (p..EVENTS).step_by(PUBLISHERS) {
                bus.emit(event.clone()).await.expect("emit");
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    DONE.wait().await;
    let elapsed = start.elapsed();

    let _ = stop.send(());
    let report = running.await.expect("worker task").expect("worker");
    assert_eq!(report.succeeded, EVENTS as u64);
    for name in [broker.stream_name(), broker.dead_stream_name()] {
        js.delete_stream(name).await.expect("delete the bench stream");
    }
    elapsed
}

/// One sample of the raw client: the same work, by hand.
async fn raw(js: &jetstream::Context, size: usize) -> Duration {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stream_name = format!("RAW_BENCH_{id}");
    let subject = format!("raw_bench.{id}.bench.signup.requested");
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("raw_bench.{id}.>")],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("raw stream");
    let consumer: PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("raw".to_owned()),
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_deliver: -1,
            max_ack_pending: 10_000,
            filter_subject: subject.clone(),
            ..Default::default()
        })
        .await
        .expect("raw consumer");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let consuming = tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        loop {
            if *stop_rx.borrow() {
                break;
            }
            let Ok(first) = Arc::clone(&permits).acquire_owned().await else { break };
            let mut held = vec![first];
            while held.len() < PREFETCH {
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
            let batch = tokio::select! {
                b = consumer.fetch().max_messages(held.len()).expires(FETCH_WAIT).messages() => b,
                _ = stop_rx.changed() => break,
            };
            let Ok(mut batch) = batch else { continue };
            while let Some(Ok(message)) = batch.next().await {
                let permit = match held.pop() {
                    Some(p) => p,
                    None => Arc::clone(&permits).acquire_owned().await.expect("permit"),
                };
                tokio::spawn(async move {
                    let event: SignupRequested = serde_json::from_slice(&message.payload).expect("json");
                    let _ = check_signup(std::hint::black_box(&event));
                    let reply = message.reply.clone().expect("a JetStream message");
                    message.context.client().request(reply, AckKind::Ack.into()).await.expect("double ack");
                    DONE.hit();
                    drop(permit);
                });
            }
        }
    });
    let event = SignupRequested::of_size(size);
    DONE.arm(EVENTS);

    let start = Instant::now();
    let mut publishers = Vec::with_capacity(PUBLISHERS);
    for p in 0..PUBLISHERS {
        let (js, event, subject) = (js.clone(), event.clone(), subject.clone());
        publishers.push(tokio::spawn(async move {
            for _ in (p..EVENTS).step_by(PUBLISHERS) {
                let payload = serde_json::to_vec(&event).expect("json");
                let publish = jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(uuid::Uuid::now_v7().to_string());
                js.send_publish(subject.clone(), publish).await.expect("publish").await.expect("publish ack");
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    DONE.wait().await;
    let elapsed = start.elapsed();

    let _ = stop_tx.send(true);
    consuming.await.expect("raw consumer task");
    js.delete_stream(&stream_name).await.expect("delete the raw stream");
    elapsed
}

fn broker_nats(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let js = rt.block_on(plain_client());
    let mut group = c.benchmark_group("broker_nats");
    group.throughput(Throughput::Elements(EVENTS as u64)).sample_size(10).sampling_mode(SamplingMode::Flat);
    for size in SIZES {
        group.bench_with_input(BenchmarkId::new("ours", size), &size, |b, &size| {
            b.to_async(&rt).iter_custom(|iters| {
                let js = js.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = ours(&js, size).await;
                        record("ours", size, t);
                        total += t;
                    }
                    total
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
            b.to_async(&rt).iter_custom(|iters| {
                let js = js.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = raw(&js, size).await;
                        record("raw", size, t);
                        total += t;
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints events/s of both paths and ours ÷ raw, medians of this run's samples.
fn report() {
    let mut samples = SAMPLES.lock().expect("samples");
    println!("\nbroker_nats: {EVENTS} events end to end (events/s, medians of this run)");
    println!("  {:>7} {:>10} {:>10} {:>11}", "payload", "ours", "raw", "ours ÷ raw");
    for size in SIZES {
        let ours = samples.get_mut(&("ours", size)).map(|v| median(v));
        let raw = samples.get_mut(&("raw", size)).map(|v| median(v));
        if let (Some(ours), Some(raw)) = (ours, raw) {
            println!("  {size:>7} {ours:>10.0} {raw:>10.0} {:>11.2}", ours / raw);
        }
    }
}

criterion_group!(benches, broker_nats);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
