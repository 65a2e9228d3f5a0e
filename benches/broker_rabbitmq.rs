//! `broker_rabbitmq`: end to end through RabbitMQ, 20,000 events per sample, until the
//! handler has run them all; payloads of 64 B, 1 KiB and 16 KiB.
//!
//! - `ours`: an `EventBus` built with `.broker(RabbitMq)` emits (64 emits in flight, each
//!   returning once RabbitMQ confirmed its message) and a `Worker` (concurrency 32,
//!   prefetch 64, the default quorum queue) runs the async handler `deny_disposable_async`
//!   (the e-mail check of every bench, then one tick of the completion counter).
//! - `raw` (the baseline the ratio is taken against): lapin alone with the same settings: a
//!   topic exchange and a quorum queue, one confirm channel with 64 publishes in flight
//!   (persistent messages, the payload's JSON as body), a consumer with the same prefetch
//!   that decodes each body into `SignupRequested`, runs the same check, ticks the same
//!   counter and acks each message. No CloudEvents attributes, no envelope, no handler
//!   tasks.
//!
//! At the end the bench prints events/s of both paths and the ratio (medians over this
//! run's samples). Everything it declares (exchange `bae.bench.<uuid>`, queues
//! `b<uuid>.*`) is deleted at the end. Needs RabbitMQ at 127.0.0.1:5672 (or
//! `BAE_AMQP_URL`).
//!
//! `cargo bench --features rabbitmq --bench broker_rabbitmq -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use better_auth_events::broker::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use better_auth_events::broker::lapin::types::{AMQPValue, FieldTable};
use better_auth_events::broker::lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use better_auth_events::broker::{Broker, RabbitMq};
use better_auth_events::prelude::*;
use common::{DONE, SignupRequested, check_signup};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

/// Events per sample.
const EVENTS: usize = 20_000;
/// Payload sizes (bytes of the e-mail address).
const SIZES: [usize; 3] = [64, 1024, 16 * 1024];
/// Publishes (emits) in flight.
const IN_FLIGHT: usize = 64;
const CONCURRENCY: usize = 32;
const PREFETCH: u16 = 64;
const HANDLER: &str = "deny_disposable_async";

/// Events per second of each sample, by (path, size).
static SAMPLES: Mutex<BTreeMap<(&'static str, usize), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(path: &'static str, size: usize, events: u64, elapsed: Duration) {
    if elapsed > Duration::ZERO {
        let rate = events as f64 / elapsed.as_secs_f64();
        SAMPLES.lock().expect("samples").entry((path, size)).or_default().push(rate);
    }
}

fn url() -> String {
    std::env::var("BAE_AMQP_URL").unwrap_or_else(|_| RabbitMq::DEFAULT_URL.to_owned())
}

async fn connect() -> Connection {
    Connection::connect(&url(), ConnectionProperties::default()).await.unwrap_or_else(|e| {
        panic!("RabbitMQ at {} is unreachable ({e}); start it (`rabbitmq-server -detached`)", url())
    })
}

/// The raw baseline's topology, publisher and consumer.
struct Raw {
    _connection: Connection,
    publisher: better_auth_events::broker::lapin::Channel,
    exchange: String,
    queue: String,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Raw {
    async fn start(tag: &str) -> Self {
        let connection = connect().await;
        let exchange = format!("bae.bench.{tag}.raw");
        let queue = format!("b{tag}.raw");
        let setup = connection.create_channel().await.expect("channel");
        setup
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        setup.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args).await.expect("queue");
        setup
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "bench.signup.requested".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let publisher = connection.create_channel().await.expect("channel");
        publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");

        // The consumer, on its own connection like the worker's.
        let consumer_connection = connect().await;
        let channel = consumer_connection.create_channel().await.expect("channel");
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.expect("qos");
        let mut deliveries = channel
            .basic_consume(queue.as_str().into(), "raw".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = consumer_connection;
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    next = deliveries.next() => {
                        let Some(Ok(delivery)) = next else { break };
                        let event: SignupRequested = serde_json::from_slice(&delivery.data).expect("payload");
                        let _ = check_signup(std::hint::black_box(&event));
                        DONE.hit();
                        delivery.ack(BasicAckOptions::default()).await.expect("ack");
                    }
                }
            }
        });
        Self { _connection: connection, publisher, exchange, queue, stop }
    }

    async fn publish_all(&self, events: &[SignupRequested]) {
        futures::stream::iter(events)
            .for_each_concurrent(IN_FLIGHT, |e| async move {
                let body = serde_json::to_vec(e).expect("json");
                let confirm = self
                    .publisher
                    .basic_publish(
                        self.exchange.as_str().into(),
                        "bench.signup.requested".into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into()),
                    )
                    .await
                    .expect("publish")
                    .await
                    .expect("confirm");
                assert!(confirm.is_ack());
            })
            .await;
    }
}

fn broker_rabbitmq(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("bae.bench.{tag}");
    let prefix = format!("b{tag}");

    let broker = rt
        .block_on(RabbitMq::builder().url(url()).exchange(&exchange).queue_prefix(&prefix).build())
        .unwrap_or_else(|e| panic!("{}", better_auth_events::ErrorChain(&e)));
    let queue = broker.queue_name(HANDLER);
    let bus = rt
        .block_on(EventBus::builder().broker(broker.clone()).handlers(common::registered(HANDLER)).try_build())
        .expect("bus");
    let (stop_worker, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = rt
        .block_on(
            Worker::builder()
                .broker(broker.clone())
                .handlers(common::registered(HANDLER))
                .concurrency(CONCURRENCY)
                .prefetch(usize::from(PREFETCH))
                .fetch_wait(Duration::from_millis(200))
                .build(),
        )
        .unwrap_or_else(|e| panic!("{}", better_auth_events::ErrorChain(&e)));
    let worker = rt.spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let raw = rt.block_on(Raw::start(&tag));

    let mut group = c.benchmark_group("broker_rabbitmq");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(EVENTS as u64));
    for size in SIZES {
        let events: Vec<SignupRequested> = (0..EVENTS).map(|_| SignupRequested::of_size(size)).collect();
        group.bench_with_input(BenchmarkId::new("ours", size), &size, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (bus, events) = (&bus, &events);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        DONE.arm(EVENTS);
                        let start = Instant::now();
                        futures::stream::iter(events)
                            .for_each_concurrent(IN_FLIGHT, |e| async move {
                                bus.emit(e.clone()).await.expect("emit");
                            })
                            .await;
                        DONE.wait().await;
                        let elapsed = start.elapsed();
                        record("ours", size, EVENTS as u64, elapsed);
                        total += elapsed;
                    }
                    total
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("raw", size), &size, |b, _| {
            b.to_async(&rt).iter_custom(|iters| {
                let (raw, events) = (&raw, &events);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        DONE.arm(EVENTS);
                        let start = Instant::now();
                        raw.publish_all(events).await;
                        DONE.wait().await;
                        let elapsed = start.elapsed();
                        record("raw", size, EVENTS as u64, elapsed);
                        total += elapsed;
                    }
                    total
                }
            })
        });
    }
    group.finish();

    let _ = stop_worker.send(());
    let report = rt.block_on(worker).expect("worker task").expect("worker");
    let _ = raw.stop.send(true);
    rt.block_on(async {
        let _ = bus.shutdown(Duration::from_secs(10)).await;
        broker.close().await.expect("close");
        let connection = connect().await;
        let ch = connection.create_channel().await.expect("channel");
        for q in [queue.clone(), format!("{queue}.dead"), raw.queue.clone()] {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for ex in [exchange.clone(), format!("{exchange}.dlx"), raw.exchange.clone()] {
            let _ = ch.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
    });
    report_rates(report.succeeded);
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn report_rates(handled: u64) {
    let samples = SAMPLES.lock().expect("samples");
    println!(
        "\nRabbitMQ end to end, {EVENTS} events per sample, {IN_FLIGHT} publishes in flight, concurrency \
         {CONCURRENCY}, prefetch {PREFETCH} (median events/s of this run's samples; target ≥0.8; the worker \
         handled {handled} events):"
    );
    println!("{:>8} {:>12} {:>12} {:>7}", "payload", "ours", "raw", "ratio");
    for size in SIZES {
        let ours = samples.get(&("ours", size)).map_or(0.0, |v| median(v));
        let raw = samples.get(&("raw", size)).map_or(0.0, |v| median(v));
        let ratio = if raw > 0.0 { ours / raw } else { 0.0 };
        println!("{size:>8} {ours:>12.0} {raw:>12.0} {ratio:>7.2}");
    }
}

criterion_group!(benches, broker_rabbitmq);
criterion_main!(benches);
