//! P1 / `emit_sync`: `bus.emit(event)` to one sync `#[handler]`, against the same `async fn`
//! called through the bus a user would hand-roll: a
//! `Vec<Box<dyn Fn(&E) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + '_>> + Send + Sync>>`.
//!
//! Both paths take the event by value (a clone of the same template), run the same
//! handler (`deny_disposable`: address well formed, domain not on a deny list) and check
//! its result; payloads carry 16, 64 and 256 bytes of string data. Everything runs
//! inline on a current-thread tokio runtime. One element = one emit = one handler run.
//!
//! `cargo bench --bench emit_sync -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;

use better_auth_events::prelude::*;
use common::{SIZES, SignupRequested, deny_disposable};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A boxed handler of `E`, as a user would store it.
type BoxedHandler<E> =
    Box<dyn Fn(&E) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + '_>> + Send + Sync>;

/// The bus a user would write by hand: handlers in a `Vec`, run in turn, first error wins.
struct HandRolledBus<E> {
    handlers: Vec<BoxedHandler<E>>,
}

impl<E> HandRolledBus<E> {
    async fn emit(&self, event: E) -> Result<usize, HandlerError> {
        for h in &self.handlers {
            h(&event).await?;
        }
        Ok(self.handlers.len())
    }
}

fn emit_sync(c: &mut Criterion) {
    let rt = common::current_thread_runtime();
    let bus = rt
        .block_on(EventBus::builder().handlers(common::registered("deny_disposable")).try_build())
        .expect("bus builds");
    let raw = HandRolledBus::<SignupRequested> { handlers: vec![Box::new(|e| Box::pin(deny_disposable(e)))] };

    let mut group = c.benchmark_group("emit_sync");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let event = SignupRequested::of_size(size);
        group.bench_with_input(BenchmarkId::new("bus", size), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                let receipt = bus.emit(black_box(event.clone())).await.expect("emit succeeds");
                debug_assert_eq!(receipt.handlers_run, 1);
                receipt
            })
        });
        group.bench_with_input(BenchmarkId::new("boxed_fn_vec", size), &event, |b, event| {
            b.to_async(&rt).iter(|| async {
                let run = raw.emit(black_box(event.clone())).await.expect("emit succeeds");
                debug_assert_eq!(run, 1);
                run
            })
        });
    }
    group.finish();
}

criterion_group!(benches, emit_sync);
criterion_main!(benches);
