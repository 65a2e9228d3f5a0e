//! P3 / `fanout`: one emit delivered to 1, 4, 10 and 16 handlers, against
//! `tokio::sync::broadcast` with as many receivers; throughput in deliveries (handler runs)
//! per second. The payload carries 64 bytes of string data; every handler does the same
//! work (`check_signup`: address well formed, domain not on a deny list).
//!
//! - `fanout_sync`: one `bus.emit(event)` runs K sync handlers inline (one element = one
//!   handler run). Baseline `broadcast`: on the same current-thread runtime, one task sends
//!   the event (in an `Arc`, as a user avoids K clones) on a channel with K receivers, then
//!   receives it on each receiver (`recv().await`) and runs the handler: the raw price of a
//!   broadcast delivery, with no task switch on either side.
//! - `fanout_async`: K async handlers on the default worker pool (10 workers, queue 1000,
//!   backpressure `Wait`); a batch of 1,000 emits, timed until all 1,000 × K handler runs
//!   are done. Baseline `broadcast`: K long-lived receiver tasks, each running the handler
//!   on every event; the channel holds the whole batch (capacity 1024) because broadcast
//!   has no backpressure and would otherwise drop events (`Lagged`). Multi-thread runtime,
//!   2 workers, the producer a task on it.
//!
//! `cargo bench --bench fanout -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use better_auth_events::Handler;
use better_auth_events::prelude::*;
use common::{DONE, SignupRequested, check_signup};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::sync::broadcast;

/// Handlers (receivers) per event.
const FANOUT: [usize; 4] = [1, 4, 10, 16];
/// Bytes of string data in the payload.
const SIZE: usize = 64;
/// Emits per iteration of `fanout_async`.
const BATCH: usize = 1_000;
/// Capacity of the broadcast channel: a whole batch, so no receiver lags.
const CAPACITY: usize = 1024;

async fn check(e: &SignupRequested) -> Result<(), HandlerError> {
    check_signup(black_box(e))
}

async fn check_and_count(e: &SignupRequested) -> Result<(), HandlerError> {
    let outcome = check_signup(black_box(e));
    DONE.hit();
    outcome
}

fn fanout_sync(c: &mut Criterion) {
    let rt = common::current_thread_runtime();
    let event = SignupRequested::of_size(SIZE);
    let mut group = c.benchmark_group("fanout_sync");
    for k in FANOUT {
        group.throughput(Throughput::Elements(k as u64));

        let handlers = (0..k).map(|i| {
            Handler::typed(
                HandlerOptions::new().name(format!("fanout_sync_{i}")),
                async |e: &Envelope<SignupRequested>| check(&e.data).await,
            )
        });
        let bus = rt.block_on(EventBus::builder().handlers(handlers).try_build()).expect("bus builds");
        group.bench_with_input(BenchmarkId::new("bus", k), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                let receipt = bus.emit(black_box(event.clone())).await.expect("emit succeeds");
                debug_assert_eq!(receipt.handlers_run, k);
                receipt
            })
        });

        let (tx, _) = broadcast::channel::<Arc<SignupRequested>>(CAPACITY);
        // Each iteration's future takes the receivers out of the `RefCell` and puts them back.
        let receivers: RefCell<Vec<_>> = RefCell::new((0..k).map(|_| tx.subscribe()).collect());
        group.bench_with_input(BenchmarkId::new("broadcast", k), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                let sent = tx.send(Arc::new(black_box(event.clone()))).expect("receivers exist");
                let mut rxs = receivers.take();
                for rx in &mut rxs {
                    let e = rx.recv().await.expect("delivered");
                    check(&e).await.expect("handler succeeds");
                }
                receivers.replace(rxs);
                sent
            })
        });
    }
    group.finish();
}

fn fanout_async(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let event = SignupRequested::of_size(SIZE);
    let mut group = c.benchmark_group("fanout_async");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for k in FANOUT {
        group.throughput(Throughput::Elements((BATCH * k) as u64));

        let handlers = (0..k).map(|i| {
            Handler::typed(
                HandlerOptions::asynchronous().name(format!("fanout_async_{i}")),
                async |e: &Envelope<SignupRequested>| check_and_count(&e.data).await,
            )
        });
        let bus = rt.block_on(EventBus::builder().handlers(handlers).try_build()).expect("bus builds");
        group.bench_with_input(BenchmarkId::new("bus_worker_pool", k), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                DONE.arm(BATCH * k);
                let (bus, event) = (bus.clone(), event.clone());
                tokio::spawn(async move {
                    for _ in 0..BATCH {
                        bus.emit(black_box(event.clone())).await.expect("emit succeeds");
                    }
                })
                .await
                .expect("producer");
                DONE.wait().await;
            })
        });
        let report = rt.block_on(bus.shutdown(Duration::from_secs(5))).expect("shutdown");
        assert!(report.is_complete());

        let (tx, _) = broadcast::channel::<Arc<SignupRequested>>(CAPACITY);
        let tasks: Vec<_> = (0..k)
            .map(|_| {
                let mut rx = tx.subscribe();
                rt.spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(e) => {
                                let _ = check_and_count(&e).await;
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                            Err(broadcast::error::RecvError::Lagged(n)) => panic!("receiver lagged by {n}"),
                        }
                    }
                })
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("broadcast", k), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                DONE.arm(BATCH * k);
                let (tx, event) = (tx.clone(), event.clone());
                tokio::spawn(async move {
                    for _ in 0..BATCH {
                        tx.send(Arc::new(black_box(event.clone()))).expect("receivers exist");
                    }
                })
                .await
                .expect("producer");
                DONE.wait().await;
            })
        });
        drop(tx);
        for t in tasks {
            rt.block_on(t).expect("receiver");
        }
    }
    group.finish();
}

criterion_group!(benches, fanout_sync, fanout_async);
criterion_main!(benches);
