//! P2 / `emit_async`: end-to-end throughput of `bus.emit(event)` to one async handler
//! through the default worker pool (10 workers, queue of 1000, backpressure `Wait`), against
//! a bare `tokio::sync::mpsc` channel of capacity 1000 feeding 10 tasks that run the same
//! handler.
//!
//! One iteration is a batch of 10,000 events: a producer task emits them one by one, and
//! the clock stops once the handler (`deny_disposable_async`: the sync check plus one tick
//! of a shared `AtomicUsize`, the last tick firing a `Notify`) has run for all of them.
//! Payloads carry 16, 64 and 256 bytes of string data; the runtime is multi-thread with 2
//! workers, the producer a task on it.
//!
//! Baselines, on the same runtime:
//! - `tokio_mpsc_shared_rx` (the one the ratio is taken against): 10 long-lived tasks share
//!   the receiver behind an `Arc<tokio::sync::Mutex<Receiver>>`, holding the lock only for
//!   `recv()`: the pool's own shape (N workers pulling from one bounded queue) with tokio
//!   alone.
//! - `tokio_mpsc_spawn`: one task receives and `tokio::spawn`s each event, at most 10 at a
//!   time (a `Semaphore` of 10 permits).
//!
//! `cargo bench --bench emit_async -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use better_auth_events::prelude::*;
use common::{DONE, SIZES, SignupRequested, deny_disposable_async};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::sync::{Mutex, Semaphore, mpsc};

/// Events per iteration.
const BATCH: usize = 10_000;
/// Tasks running the handler (the pool's default).
const WORKERS: usize = 10;
/// Channel capacity (the pool's default queue).
const CAPACITY: usize = 1000;

fn emit_async(c: &mut Criterion) {
    let rt = common::multi_thread_runtime();
    let mut group = c.benchmark_group("emit_async");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);

    for size in SIZES {
        let event = SignupRequested::of_size(size);

        // Ours: the default worker pool.
        let bus = rt
            .block_on(
                EventBus::builder()
                    .handlers(common::registered("deny_disposable_async"))
                    .workers(WORKERS)
                    .queue_size(CAPACITY)
                    .backpressure(BackpressurePolicy::Wait)
                    .try_build(),
            )
            .expect("bus builds");
        group.bench_with_input(BenchmarkId::new("bus_worker_pool", size), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                DONE.arm(BATCH);
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

        // Baseline: 10 tasks sharing one receiver.
        let (tx, rx) = mpsc::channel::<SignupRequested>(CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let rx = Arc::clone(&rx);
                rt.spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(event) = next else { break };
                        let _ = deny_disposable_async(&event).await;
                    }
                })
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("tokio_mpsc_shared_rx", size), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                DONE.arm(BATCH);
                let (tx, event) = (tx.clone(), event.clone());
                tokio::spawn(async move {
                    for _ in 0..BATCH {
                        tx.send(black_box(event.clone())).await.expect("send succeeds");
                    }
                })
                .await
                .expect("producer");
                DONE.wait().await;
            })
        });
        drop(tx);
        for w in workers {
            rt.block_on(w).expect("worker");
        }

        // Baseline: one receiver spawning a task per event, at most 10 at a time.
        let (tx, mut rx) = mpsc::channel::<SignupRequested>(CAPACITY);
        let dispatcher = rt.spawn(async move {
            let permits = Arc::new(Semaphore::new(WORKERS));
            while let Some(event) = rx.recv().await {
                let permit = Arc::clone(&permits).acquire_owned().await.expect("semaphore open");
                tokio::spawn(async move {
                    let _ = deny_disposable_async(&event).await;
                    drop(permit);
                });
            }
        });
        group.bench_with_input(BenchmarkId::new("tokio_mpsc_spawn", size), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                DONE.arm(BATCH);
                let (tx, event) = (tx.clone(), event.clone());
                tokio::spawn(async move {
                    for _ in 0..BATCH {
                        tx.send(black_box(event.clone())).await.expect("send succeeds");
                    }
                })
                .await
                .expect("producer");
                DONE.wait().await;
            })
        });
        drop(tx);
        rt.block_on(dispatcher).expect("dispatcher");
    }
    group.finish();
}

criterion_group!(benches, emit_async);
criterion_main!(benches);
