//! The event bus: order of sync handlers, vetoes, async handlers on the worker pool,
//! panics, timeouts, backpressure, shutdown, dependencies, typed ⇄ dynamic dispatch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::{DeliveryFailure, EmitStatus, Error, ErrorChain, Handler, ShutdownReport, UnfinishedDelivery};
use tokio::sync::Notify;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "test.signup", version = "1.0.0")]
struct Signup {
    email: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "test.job", version = "1.0.0")]
struct Job {
    n: u32,
}

type Log = Arc<Mutex<Vec<String>>>;

/// What a handler saw of an event's header.
type IdAndTime = (uuid::Uuid, chrono::DateTime<chrono::Utc>);

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A sync handler of `Signup` that records `tag` and fails when `fail` is set.
fn recorder(name: &'static str, priority: i32, log: &Log, fail: bool) -> Handler {
    let log = Arc::clone(log);
    Handler::typed(HandlerOptions::new().name(name).priority(priority), async move |e: &Envelope<Signup>| {
        log.lock().unwrap().push(format!("{name}:{}", e.data.email));
        if fail { Err(HandlerError::new(format!("{name} says no"))) } else { Ok(()) }
    })
}

/// An async handler of `E` that only counts its runs in `runs`.
fn counting<E: TypedEvent>(name: &'static str, runs: &Arc<AtomicUsize>) -> Handler {
    let runs = Arc::clone(runs);
    Handler::typed(HandlerOptions::asynchronous().name(name), async move |_: &Envelope<E>| {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<(), HandlerError>(())
    })
}

/// Polls `count` every few milliseconds until it reaches `n`; fails after 30 s.
async fn wait_for(count: &AtomicUsize, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} deliveries happened within 30 s",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Pauses the test's clock (the test must run on a current-thread runtime) and returns
/// once every other task of the runtime is blocked: tokio moves a paused clock forward
/// only when no task can run, so the 1 ms sleep ends only then. A task seen unfinished
/// after this is waiting for something, not merely not yet scheduled.
async fn until_every_task_waits() {
    tokio::time::pause();
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn sync_handlers_run_by_priority_then_registration_order() {
    let log = log();
    let bus = EventBus::builder()
        .handler(recorder("b", 0, &log, false))
        .handler(recorder("a", 10, &log, false))
        .handler(recorder("c", 0, &log, false))
        .handler(recorder("z", -1, &log, false))
        .try_build()
        .await
        .unwrap();
    let receipt = bus.emit(Signup { email: "x@y.z".into() }).await.unwrap();
    assert_eq!(entries(&log), ["a:x@y.z", "b:x@y.z", "c:x@y.z", "z:x@y.z"]);
    assert_eq!(receipt.handlers_run, 4);
    assert_eq!(receipt.status, EmitStatus::Emitted);
    assert_eq!(receipt.async_deliveries, 0);
}

#[tokio::test]
async fn the_first_sync_error_vetoes_the_emit_and_stops_later_handlers() {
    let log = log();
    let store = Arc::new(MemoryStore::new());
    let async_runs = Arc::new(AtomicUsize::new(0));
    let bus = EventBus::builder()
        .handler(recorder("first", 2, &log, false))
        .handler(recorder("veto", 1, &log, true))
        .handler(recorder("never", 0, &log, false))
        .handler(counting::<Signup>("after", &async_runs))
        .store_arc(store.clone())
        .try_build()
        .await
        .unwrap();
    let err = bus.emit(Signup { email: "bad@spam.example".into() }).await.unwrap_err();
    match &err {
        Error::Handler { handler, event_type, source } => {
            assert_eq!(handler, "veto");
            assert_eq!(event_type, "test.signup");
            assert_eq!(source.to_string(), "veto says no");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert_eq!(err.to_string(), "handler `veto` failed for event `test.signup`");
    assert_eq!(ErrorChain(&err).to_string(), "handler `veto` failed for event `test.signup`: veto says no");
    assert_eq!(entries(&log), ["first:bad@spam.example", "veto:bad@spam.example"]);
    // A vetoed event is neither stored nor handed to async handlers.
    assert_eq!(store.query().count().await.unwrap(), 0);
    bus.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(async_runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn async_failures_never_reach_the_emitter_and_are_retried_then_reported() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<(String, u32, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let a = Arc::clone(&attempts);
    let f = Arc::clone(&failures);
    let policy = RetryPolicy::default().max_attempts(3).base(Duration::from_millis(5)).jitter(false);
    let bus = EventBus::builder()
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("flaky").retry(policy),
            async move |_: &Envelope<Job>| {
                a.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::new("smtp down"))
            },
        ))
        .on_failure(move |failure: &DeliveryFailure| {
            f.lock().unwrap().push((failure.handler.to_string(), failure.attempts, failure.error.to_string()));
        })
        .try_build()
        .await
        .unwrap();
    let receipt = bus.emit(Job { n: 1 }).await.expect("an async failure is not the emitter's error");
    assert_eq!(receipt.async_deliveries, 1);
    let report = bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(failures.lock().unwrap().as_slice(), [("flaky".to_owned(), 3, "smtp down".to_owned())]);
    let stats = bus.stats();
    assert_eq!((stats.failed, stats.retried, stats.succeeded), (1, 2, 0));
}

#[tokio::test]
async fn a_permanent_error_is_not_retried() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let bus = EventBus::builder()
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("strict").retry(RetryPolicy::default().max_attempts(5)),
            async move |_: &Envelope<Job>| {
                a.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::permanent("malformed"))
            },
        ))
        .try_build()
        .await
        .unwrap();
    bus.emit(Job { n: 1 }).await.unwrap();
    bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(bus.stats().failed, 1);
}

#[tokio::test]
async fn a_panicking_sync_handler_is_an_error_with_the_panic_message() {
    let bus = EventBus::builder()
        .handler(Handler::typed(HandlerOptions::new().name("boom"), async |e: &Envelope<Job>| {
            if e.data.n == 13 {
                panic!("unlucky number {}", e.data.n);
            }
            Ok::<(), HandlerError>(())
        }))
        .try_build()
        .await
        .unwrap();
    let err = bus.emit(Job { n: 13 }).await.unwrap_err();
    assert!(matches!(err.as_handler_error(), Some(HandlerError::Panicked(m)) if m == "unlucky number 13"), "{err}");
    // The bus lives on.
    assert_eq!(bus.emit(Job { n: 1 }).await.unwrap().handlers_run, 1);
}

#[tokio::test]
async fn a_panicking_async_handler_never_kills_a_worker() {
    let done = Arc::new(AtomicUsize::new(0));
    let d = Arc::clone(&done);
    let bus = EventBus::builder()
        .workers(1)
        .default_retry(RetryPolicy::none())
        .handler(Handler::typed(
            HandlerOptions::asynchronous().name("sometimes-panics"),
            async move |e: &Envelope<Job>| {
                if e.data.n.is_multiple_of(2) {
                    panic!("even job {}", e.data.n);
                }
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            },
        ))
        .try_build()
        .await
        .unwrap();
    for n in 0..10 {
        bus.emit(Job { n }).await.unwrap();
    }
    // The one worker survives five panics and runs every odd job.
    wait_for(&done, 5).await;
    bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(bus.stats().panicked, 5);
    assert_eq!(bus.stats().failed, 5);
}

#[tokio::test]
async fn a_slow_handler_times_out() {
    let bus = EventBus::builder()
        .handler(Handler::typed(
            HandlerOptions::new().name("slow").timeout(Duration::from_millis(20)),
            async |_: &Envelope<Job>| {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<(), HandlerError>(())
            },
        ))
        .try_build()
        .await
        .unwrap();
    let err = bus.emit(Job { n: 1 }).await.unwrap_err();
    assert!(
        matches!(err.as_handler_error(), Some(HandlerError::Timeout(d)) if *d == Duration::from_millis(20)),
        "{err}"
    );
}

/// A bus with one worker whose handler blocks until `gate` is notified.
async fn gated_bus(
    queue: usize,
    backpressure: BackpressurePolicy,
    gate: Arc<Notify>,
    started: Arc<AtomicUsize>,
) -> EventBus {
    EventBus::builder()
        .workers(1)
        .queue_size(queue)
        .backpressure(backpressure)
        .handler(gated(gate, started))
        .try_build()
        .await
        .unwrap()
}

/// An async handler of `Job` that counts its start in `started`, then waits for `gate`.
fn gated(gate: Arc<Notify>, started: Arc<AtomicUsize>) -> Handler {
    Handler::typed(HandlerOptions::asynchronous().name("gated"), async move |_: &Envelope<Job>| {
        started.fetch_add(1, Ordering::SeqCst);
        gate.notified().await;
        Ok::<(), HandlerError>(())
    })
}

#[tokio::test]
async fn a_full_queue_fails_fast_with_backpressure_never_a_silent_drop() {
    let gate = Arc::new(Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let bus = gated_bus(1, BackpressurePolicy::FailFast, gate.clone(), started.clone()).await;
    bus.emit(Job { n: 1 }).await.unwrap(); // taken by the worker
    wait_for(&started, 1).await;
    bus.emit(Job { n: 2 }).await.unwrap(); // queued
    let err = bus.emit(Job { n: 3 }).await.unwrap_err();
    assert!(matches!(err, Error::Backpressure { capacity: 1, waited: None, .. }), "{err}");
    gate.notify_one();
    wait_for(&started, 2).await;
    gate.notify_one();
    let report = bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.is_complete());
    assert_eq!(bus.stats().succeeded, 2);
}

#[tokio::test]
async fn a_full_queue_waits_up_to_the_configured_time() {
    let gate = Arc::new(Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let bus = gated_bus(1, BackpressurePolicy::WaitFor(Duration::from_millis(50)), gate.clone(), started.clone()).await;
    bus.emit(Job { n: 1 }).await.unwrap();
    wait_for(&started, 1).await;
    bus.emit(Job { n: 2 }).await.unwrap();
    let t0 = std::time::Instant::now();
    let err = bus.emit(Job { n: 3 }).await.unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert!(matches!(err, Error::Backpressure { waited: Some(_), .. }), "{err}");
    assert!(err.to_string().contains("after waiting 50ms"), "{err}");

    // With room made while it waits, the same emit goes through. The clock is paused from
    // here on, so its 50 ms run out only if nothing else can run (a loaded machine cannot
    // make them run out before the worker makes room).
    let bus2 = bus.clone();
    let waiting = tokio::spawn(async move { bus2.emit(Job { n: 4 }).await });
    until_every_task_waits().await;
    assert!(!waiting.is_finished(), "the fourth emit waits for room");
    gate.notify_one();
    waiting.await.unwrap().expect("room was made within the wait");
    gate.notify_one();
    gate.notify_one();
    bus.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn an_emit_needing_more_room_than_the_queue_has_is_refused() {
    let mut builder = EventBus::builder().queue_size(2).backpressure(BackpressurePolicy::Wait);
    for i in 0..3 {
        builder = builder.handler(Handler::typed(
            HandlerOptions::asynchronous().name(format!("h{i}")),
            async |_: &Envelope<Job>| Ok::<(), HandlerError>(()),
        ));
    }
    let bus = builder.try_build().await.unwrap();
    let err = bus.emit(Job { n: 1 }).await.unwrap_err();
    assert!(matches!(err, Error::Backpressure { capacity: 2, .. }), "{err}");
}

#[tokio::test]
async fn shutdown_drains_in_flight_work_and_emit_after_it_is_closed() {
    // The default queue is a ring allocated up front; a very large one is a list of blocks.
    for queue_size in [1000, 1 << 20] {
        let done = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&done);
        let bus = EventBus::builder()
            .workers(2)
            .queue_size(queue_size)
            .handler(Handler::typed(HandlerOptions::asynchronous().name("work"), async move |_: &Envelope<Job>| {
                tokio::time::sleep(Duration::from_millis(5)).await;
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }))
            .try_build()
            .await
            .unwrap();
        for n in 0..20 {
            bus.emit(Job { n }).await.unwrap();
        }
        let report = bus.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(report, ShutdownReport { drained: 20, unfinished: vec![] }, "queue of {queue_size}");
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert!(bus.is_closed());
        let err = bus.emit(Job { n: 99 }).await.unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
        assert_eq!(err.to_string(), "the event bus is shut down and accepts no more events");
    }
}

#[tokio::test]
async fn shutdown_reports_what_it_could_not_finish_by_the_deadline() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&started);
    let bus = EventBus::builder()
        .workers(1)
        .handler(Handler::typed(HandlerOptions::asynchronous().name("stuck"), async move |_: &Envelope<Job>| {
            s.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), HandlerError>(())
        }))
        .try_build()
        .await
        .unwrap();
    let first = bus.emit(Job { n: 1 }).await.unwrap();
    let second = bus.emit(Job { n: 2 }).await.unwrap();
    // One delivery interrupted while running, one that never left the queue.
    wait_for(&started, 1).await;
    let report = bus.shutdown(Duration::from_millis(50)).await.unwrap();
    assert!(!report.is_complete());
    let mut ids: Vec<_> = report.unfinished.iter().map(|u: &UnfinishedDelivery| u.event_id).collect();
    ids.sort();
    assert_eq!(ids, [first.id, second.id]);
    assert!(report.unfinished.iter().all(|u| u.handler == "stuck" && u.event_type == "test.job"));
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_pool_counts_what_waits_in_its_queue_and_reports_it_at_a_short_shutdown() {
    let pool = Arc::new(WorkerPool::new(1, 5));
    let gate = Arc::new(Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let bus =
        EventBus::builder().backend(Arc::clone(&pool)).handler(gated(gate, started.clone())).try_build().await.unwrap();
    assert_eq!(pool.queued(), 0);
    bus.emit(Job { n: 1 }).await.unwrap();
    wait_for(&started, 1).await;
    assert_eq!(pool.queued(), 0, "the running delivery is not in the queue");
    for n in 2..5 {
        bus.emit(Job { n }).await.unwrap();
    }
    assert_eq!(pool.queued(), 3);

    let report = bus.shutdown(Duration::from_millis(50)).await.unwrap();
    assert_eq!(report.unfinished.len(), 4, "the running delivery and the three queued ones");
    assert_eq!(pool.queued(), 0, "the shutdown emptied the queue");
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

/// Every round starts with the whole pool asleep, so each of its deliveries must wake a
/// worker (or be taken by one back from another delivery): a wake-up lost anywhere leaves
/// a delivery queued behind sleeping workers and the round never completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delivery_waits_in_the_queue_while_workers_sleep() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let runs = Arc::clone(&runs);
        Handler::typed(HandlerOptions::asynchronous().name("yielding"), async move |e: &Envelope<Job>| {
            // Some deliveries give the worker's thread away halfway, so workers come back
            // for the queue at every point of an emitter's push and wake.
            if e.data.n.is_multiple_of(3) {
                tokio::task::yield_now().await;
            }
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<(), HandlerError>(())
        })
    };
    let bus = EventBus::builder().handler(handler).workers(3).queue_size(4).try_build().await.unwrap();
    let mut expected = 0;
    for round in 0..300u32 {
        // 1 to 4 emitting tasks, each emitting 1 to 3 events at once (more than the queue
        // holds in some rounds: emitters then wait for room, which only workers give back).
        let emitters: Vec<_> = (0..round % 4 + 1)
            .map(|t| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    for i in 0..(round + t) % 3 + 1 {
                        bus.emit(Job { n: round + t + i }).await.unwrap();
                    }
                })
            })
            .collect();
        expected += (0..round % 4 + 1).map(|t| ((round + t) % 3 + 1) as usize).sum::<usize>();
        tokio::time::timeout(Duration::from_secs(5), async {
            for emitter in emitters {
                emitter.await.unwrap();
            }
            while runs.load(Ordering::SeqCst) < expected {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: {} of {expected} deliveries ran", runs.load(Ordering::SeqCst)));
    }
    let report = bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.is_complete());
    assert_eq!(runs.load(Ordering::SeqCst), expected);
}

#[tokio::test]
async fn an_emit_waiting_for_room_at_shutdown_is_refused_or_reported_never_lost() {
    let gate = Arc::new(Notify::new());
    let started = Arc::new(AtomicUsize::new(0));
    let bus = gated_bus(1, BackpressurePolicy::Wait, gate.clone(), started.clone()).await;
    let first = bus.emit(Job { n: 1 }).await.unwrap(); // running, blocked on the gate
    wait_for(&started, 1).await;
    let second = bus.emit(Job { n: 2 }).await.unwrap(); // queued: the queue is full
    let b = bus.clone();
    let waiting = tokio::spawn(async move { b.emit(Job { n: 3 }).await });
    until_every_task_waits().await;
    assert!(!waiting.is_finished(), "the third emit waits for room");

    let report = bus.shutdown(Duration::from_millis(100)).await.unwrap();
    let mut expected = vec![first.id, second.id];
    match waiting.await.unwrap() {
        Ok(third) => expected.push(third.id),
        Err(e) => assert!(matches!(e, Error::Closed), "{e}"),
    }
    let mut ids: Vec<_> = report.unfinished.iter().map(|u: &UnfinishedDelivery| u.event_id).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected, "every delivery not run is in the report");
    assert_eq!(started.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn emit_sync_runs_async_handlers_inline_and_returns_their_error() {
    let log = log();
    let l = Arc::clone(&log);
    let bus = EventBus::builder()
        .handler(recorder("sync", 0, &log, false))
        .handler(Handler::typed(HandlerOptions::asynchronous().name("mail"), async move |e: &Envelope<Signup>| {
            l.lock().unwrap().push(format!("mail:{}", e.data.email));
            if e.data.email.contains("fail") { Err(HandlerError::new("mail failed")) } else { Ok(()) }
        }))
        .try_build()
        .await
        .unwrap();
    let receipt = bus.emit_sync(Signup { email: "a@b.c".into() }).await.unwrap();
    assert_eq!(receipt.handlers_run, 2);
    assert_eq!(receipt.async_deliveries, 0);
    assert_eq!(entries(&log), ["sync:a@b.c", "mail:a@b.c"]);
    let err = bus.emit_sync(Signup { email: "fail@b.c".into() }).await.unwrap_err();
    assert!(err.to_string().contains("handler `mail` failed"), "{err}");
}

#[tokio::test]
async fn emit_batch_stores_every_event_and_stops_at_the_first_veto() {
    let log = log();
    let store = Arc::new(MemoryStore::new());
    let bus = EventBus::builder()
        .handler(recorder("check", 0, &log, false))
        .store_arc(store.clone())
        .batch_size(2)
        .try_build()
        .await
        .unwrap();
    let events = (0..5).map(|i| Signup { email: format!("u{i}@x.y") });
    let receipts = bus.emit_batch(events).await.unwrap();
    assert_eq!(receipts.len(), 5);
    let positions: Vec<_> = receipts.iter().map(|r| r.position).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5].map(Some));
    assert_eq!(store.query().count().await.unwrap(), 5);

    let vetoing = EventBus::builder()
        .handler(recorder("veto", 0, &log, true))
        .store_arc(store.clone())
        .try_build()
        .await
        .unwrap();
    let err = vetoing.emit_batch([Signup { email: "a@x.y".into() }]).await.unwrap_err();
    assert!(matches!(err, Error::Handler { .. }));
    assert_eq!(store.query().count().await.unwrap(), 5, "a vetoed batch stores nothing");
}

/// Drops every `Signup` whose address starts with `drop`.
struct DropSome;

#[async_trait]
impl EventMiddleware for DropSome {
    fn name(&self) -> &str {
        "drop-some"
    }

    async fn process_envelope(&self, event: &mut Envelope<dyn EventData>) -> Result<Flow, Error> {
        let dropped = event.data.as_any().downcast_ref::<Signup>().is_some_and(|s| s.email.starts_with("drop"));
        Ok(if dropped { Flow::Drop("asked to".into()) } else { Flow::Continue })
    }
}

#[tokio::test]
async fn emit_batch_gives_positions_and_deliveries_to_the_receipts_of_the_events_it_kept() {
    let log = log();
    let runs = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(MemoryStore::new());
    let bus = EventBus::builder()
        .middleware(DropSome)
        .handler(recorder("check", 0, &log, false))
        .handler(counting::<Signup>("later", &runs))
        .store_arc(store.clone())
        .batch_size(2)
        .try_build()
        .await
        .unwrap();
    let emails = ["drop0@x.y", "a@x.y", "drop1@x.y", "drop2@x.y", "b@x.y", "c@x.y"];
    let receipts = bus.emit_batch(emails.map(|e| Signup { email: e.into() })).await.unwrap();

    let kept: Vec<_> = receipts.iter().map(|r| r.status == EmitStatus::Emitted).collect();
    assert_eq!(kept, [false, true, false, false, true, true]);
    let positions: Vec<_> = receipts.iter().map(|r| r.position).collect();
    assert_eq!(positions, [None, Some(1), None, None, Some(2), Some(3)]);
    let deliveries: Vec<_> = receipts.iter().map(|r| r.async_deliveries).collect();
    assert_eq!(deliveries, [0, 1, 0, 0, 1, 1]);
    assert_eq!(entries(&log), ["check:a@x.y", "check:b@x.y", "check:c@x.y"]);
    let stored = store.query().fetch().await.unwrap();
    let stored_ids: Vec<_> = stored.iter().map(|s| s.event.id).collect();
    let kept_ids: Vec<_> = receipts.iter().filter(|r| r.position.is_some()).map(|r| r.id).collect();
    assert_eq!(stored_ids, kept_ids, "each position belongs to the receipt of the event stored there");
    wait_for(&runs, 3).await;
}

#[tokio::test]
async fn dynamic_handlers_see_typed_events_as_json_and_typed_handlers_see_dynamic_ones() {
    let seen_dynamic: Arc<Mutex<Vec<serde_json::Value>>> = Arc::new(Mutex::new(Vec::new()));
    let seen_typed: Arc<Mutex<Vec<Signup>>> = Arc::new(Mutex::new(Vec::new()));
    let bus = EventBus::new();
    let sd = Arc::clone(&seen_dynamic);
    bus.on("test.signup", async move |event: &Event| {
        sd.lock().unwrap().push(event.data.clone());
        Ok::<(), HandlerError>(())
    })
    .await
    .unwrap();
    let st = Arc::clone(&seen_typed);
    bus.subscribe(async move |e: &Envelope<Signup>| {
        st.lock().unwrap().push(e.data.clone());
        Ok::<(), HandlerError>(())
    })
    .await
    .unwrap();

    bus.emit(Signup { email: "typed@x.y".into() }).await.unwrap();
    bus.emit(Event::new("test.signup").with_data(json!({ "email": "dynamic@x.y" }))).await.unwrap();

    assert_eq!(
        seen_dynamic.lock().unwrap().as_slice(),
        [json!({ "email": "typed@x.y" }), json!({ "email": "dynamic@x.y" })]
    );
    assert_eq!(
        seen_typed.lock().unwrap().as_slice(),
        [Signup { email: "typed@x.y".into() }, Signup { email: "dynamic@x.y".into() }]
    );
}

#[tokio::test]
async fn dynamic_events_of_a_registered_type_are_validated() {
    let bus = EventBus::new();
    let err = bus.emit(Event::new("test.signup").with_data(json!({ "mail": "x" }))).await.unwrap_err();
    match &err {
        Error::Validation { event_type, message } => {
            assert_eq!(event_type, "test.signup");
            assert_eq!(message, "missing required field 'email'");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let err =
        bus.emit(Event::new("test.signup").with_version("9.0.0").with_data(json!({ "email": "x" }))).await.unwrap_err();
    assert!(err.to_string().contains("unknown version `9.0.0`; registered versions: 1.0.0"), "{err}");
    // Unregistered names pass, and validation can be turned off.
    bus.emit(Event::new("anything.else").with_data(json!({ "x": 1 }))).await.unwrap();
    let lax = EventBus::builder().validate_dynamic(false).try_build().await.unwrap();
    lax.emit(Event::new("test.signup").with_data(json!({ "mail": "x" }))).await.unwrap();
}

#[tokio::test]
async fn a_typed_event_gets_its_time_when_the_emit_runs_and_an_envelope_keeps_its_own() {
    let seen: Arc<Mutex<Vec<IdAndTime>>> = Arc::default();
    let s = Arc::clone(&seen);
    let bus = EventBus::new();
    bus.subscribe(async move |e: &Envelope<Job>| {
        s.lock().unwrap().push((e.id, e.timestamp));
        Ok::<(), HandlerError>(())
    })
    .await
    .unwrap();
    let made = Envelope::of(Job { n: 1 });
    let (made_id, made_at) = (made.id, made.timestamp);
    let typed = bus.emit(Job { n: 2 });
    let envelope = bus.emit(made);
    let called = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let typed = typed.await.unwrap();
    envelope.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, typed.id);
    assert!(seen[0].1 >= called + chrono::Duration::milliseconds(19), "{} is not after the wait", seen[0].1);
    assert_eq!(seen[1], (made_id, made_at), "the envelope keeps the id and time it was made with");
}

/// Renames `test.job` events to `test.renamed`.
struct Rename;

#[async_trait]
impl EventMiddleware for Rename {
    fn name(&self) -> &str {
        "rename"
    }

    async fn process_envelope(&self, event: &mut Envelope<dyn EventData>) -> Result<Flow, Error> {
        if event.event_type.as_str() == "test.job" {
            event.event_type = EventType::from("test.renamed");
        }
        Ok(Flow::Continue)
    }
}

#[tokio::test]
async fn typed_events_find_their_handlers_by_name_after_a_rename_and_with_dynamic_handlers_only() {
    let log = log();
    let typed = {
        let log = Arc::clone(&log);
        Handler::typed(HandlerOptions::new().name("typed"), async move |e: &Envelope<Job>| {
            log.lock().unwrap().push(format!("typed {}", e.data.n));
            Ok::<(), HandlerError>(())
        })
    };
    let dynamic = |event: &'static str| {
        let log = Arc::clone(&log);
        Handler::dynamic(event, HandlerOptions::new().name(event), async move |e: &Event| {
            log.lock().unwrap().push(format!("{event} {}", e.data["n"]));
            Ok::<(), HandlerError>(())
        })
    };
    // The middleware renames the event: the handlers of the new name run, not the typed one.
    let renaming = EventBus::builder()
        .middleware(Rename)
        .handler(typed)
        .handler(dynamic("test.renamed"))
        .try_build()
        .await
        .unwrap();
    assert_eq!(renaming.emit(Job { n: 1 }).await.unwrap().handlers_run, 1);
    // Only dynamic handlers for a typed event's name: they run.
    let plain = EventBus::builder().handler(dynamic("test.job")).try_build().await.unwrap();
    assert_eq!(plain.emit(Job { n: 2 }).await.unwrap().handlers_run, 1);
    assert_eq!(*log.lock().unwrap(), ["test.renamed 1", "test.job 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_deliveries_run_side_by_side_on_the_worker_pool() {
    // `Job { n: 0 }` returns at once; the others wait until four of them run at once. A
    // pool that left queued deliveries to a worker already busy, instead of waking idle
    // ones, would never get there.
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let (quick, met) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (b, q, m) = (Arc::clone(&barrier), Arc::clone(&quick), Arc::clone(&met));
    let meet = Handler::typed(HandlerOptions::asynchronous().name("meet"), async move |e: &Envelope<Job>| {
        if e.data.n == 0 {
            q.fetch_add(1, Ordering::SeqCst);
        } else {
            b.wait().await;
            m.fetch_add(1, Ordering::SeqCst);
        }
        Ok::<(), HandlerError>(())
    });
    let bus = EventBus::builder().workers(4).handler(meet).try_build().await.unwrap();
    for round in 1..=20 {
        // One worker runs a quick delivery and goes back to the queue; the four that
        // must meet come right then, while it is the only worker looking.
        bus.emit(Job { n: 0 }).await.unwrap();
        while quick.load(Ordering::SeqCst) < round {
            tokio::task::yield_now().await;
        }
        for n in 1..=4 {
            bus.emit(Job { n }).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), async {
            while met.load(Ordering::SeqCst) < 4 * round {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: four deliveries did not run at once"));
    }
    let report = bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.unfinished.is_empty());
}

#[tokio::test]
async fn handlers_added_or_removed_after_emits_take_part_from_the_next_emit() {
    let runs: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(Vec::new()));
    let named = |name: &'static str| {
        let runs = Arc::clone(&runs);
        Handler::dynamic("test.routes", HandlerOptions::new().name(name), async move |_: &Event| {
            runs.lock().unwrap().push(name);
            Ok::<(), HandlerError>(())
        })
    };
    let bus = EventBus::new();
    // No handler when the bus first routes an event: the table it keeps is empty.
    assert_eq!(bus.emit(Event::new("test.routes")).await.unwrap().handlers_run, 0);
    bus.register(named("a")).unwrap();
    assert_eq!(bus.emit(Event::new("test.routes")).await.unwrap().handlers_run, 1);
    bus.register(named("b")).unwrap();
    assert_eq!(bus.emit(Event::new("test.routes")).await.unwrap().handlers_run, 2);
    assert!(bus.unregister("a"));
    assert_eq!(bus.emit(Event::new("test.routes")).await.unwrap().handlers_run, 1);
    assert_eq!(*runs.lock().unwrap(), ["a", "a", "b", "b"]);

    // A bus built with its handlers: a change after its first emits shows as well.
    let built = EventBus::builder().handler(named("c")).try_build().await.unwrap();
    for _ in 0..2 {
        assert_eq!(built.emit(Event::new("test.routes")).await.unwrap().handlers_run, 1);
    }
    assert!(built.unregister("c"));
    assert_eq!(built.emit(Event::new("test.routes")).await.unwrap().handlers_run, 0);
    assert_eq!(*runs.lock().unwrap(), ["a", "a", "b", "b", "c", "c"]);
}

#[tokio::test]
async fn registering_handlers_checks_names_limits_and_dependencies() {
    let noop = |name: &'static str| {
        Handler::typed(HandlerOptions::new().name(name), async |_: &Envelope<Job>| Ok::<(), HandlerError>(()))
    };
    let err = EventBus::builder().handler(noop("same")).handler(noop("same")).try_build().await.unwrap_err();
    assert!(err.to_string().contains("handler `same` is registered twice"), "{err}");

    let err = EventBus::builder()
        .max_handlers_per_event(2)
        .handlers([noop("a"), noop("b"), noop("c")])
        .try_build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("event `test.job` already has 2 handlers"), "{err}");

    let bus = EventBus::builder().max_handlers_per_event(1).handler(noop("one")).try_build().await.unwrap();
    assert!(bus.register(noop("two")).is_err());
    assert!(bus.unregister("one"));
    bus.register(noop("two")).unwrap();
    assert_eq!(bus.handlers().iter().map(|h| h.name().to_owned()).collect::<Vec<_>>(), ["two"]);

    let err = EventBus::builder().workers(0).try_build().await.unwrap_err();
    assert!(err.to_string().contains("`workers` must be at least 1"), "{err}");
    let err = EventBus::builder().workers(4).backend(WorkerPool::new(1, 1)).try_build().await.unwrap_err();
    assert!(err.to_string().contains("configure that backend instead"), "{err}");
}

#[tokio::test]
async fn a_custom_backend_receives_async_deliveries_with_one_shared_serialization() {
    /// Event type, handler name, CloudEvents JSON.
    type Published = (EventType, String, Arc<[u8]>);

    #[derive(Default)]
    struct MockBackend {
        published: Mutex<Vec<Published>>,
    }

    #[async_trait]
    impl AsyncBackend for MockBackend {
        async fn publish(&self, d: better_auth_events::Delivery) -> better_auth_events::Result<()> {
            let json = d.cloudevent_json()?;
            self.published.lock().unwrap().push((d.event_type().clone(), d.handler_name().to_owned(), json));
            Ok(())
        }
        async fn close(&self, _: Duration) -> better_auth_events::Result<ShutdownReport> {
            Ok(ShutdownReport::default())
        }
        fn name(&self) -> &str {
            "mock"
        }
    }

    let backend = Arc::new(MockBackend::default());
    let mut builder = EventBus::builder().backend(Arc::clone(&backend));
    for name in ["welcome-mail", "analytics"] {
        builder = builder
            .handler(Handler::typed(HandlerOptions::asynchronous().name(name), async |_: &Envelope<Signup>| {
                Ok::<(), HandlerError>(())
            }));
    }
    let bus = builder.try_build().await.unwrap();
    assert_eq!(bus.backend_name(), "mock");
    let receipt = bus.emit(Signup { email: "a@b.c".into() }).await.unwrap();
    assert_eq!(receipt.async_deliveries, 2);
    let published = backend.published.lock().unwrap();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0].0, EventType::Custom("test.signup".into()));
    assert_eq!(published.iter().map(|p| p.1.as_str()).collect::<Vec<_>>(), ["welcome-mail", "analytics"]);
    // Both deliveries share one serialization of the event.
    assert!(Arc::ptr_eq(&published[0].2, &published[1].2));
    let doc: serde_json::Value = serde_json::from_slice(&published[0].2).unwrap();
    assert_eq!(doc["type"], "test.signup");
    assert_eq!(doc["id"], receipt.id.to_string());
    assert_eq!(doc["data"]["email"], "a@b.c");
}

#[tokio::test]
async fn a_backend_that_takes_a_delivery_at_once_gets_no_publish_call_and_one_that_gives_it_back_does() {
    /// Takes every other delivery in `try_publish`; counts both paths.
    #[derive(Default)]
    struct Alternating {
        tried: AtomicUsize,
        published: AtomicUsize,
    }

    #[async_trait]
    impl AsyncBackend for Alternating {
        fn try_publish(
            &self,
            d: better_auth_events::Delivery,
        ) -> better_auth_events::Result<Option<better_auth_events::Delivery>> {
            let n = self.tried.fetch_add(1, Ordering::SeqCst);
            Ok(if n.is_multiple_of(2) { None } else { Some(d) })
        }
        async fn publish(&self, _: better_auth_events::Delivery) -> better_auth_events::Result<()> {
            self.published.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn close(&self, _: Duration) -> better_auth_events::Result<ShutdownReport> {
            Ok(ShutdownReport::default())
        }
        fn name(&self) -> &str {
            "alternating"
        }
    }

    let backend = Arc::new(Alternating::default());
    let bus = EventBus::builder()
        .backend(Arc::clone(&backend))
        .handler(Handler::typed(HandlerOptions::asynchronous().name("one"), async |_: &Envelope<Signup>| {
            Ok::<(), HandlerError>(())
        }))
        .try_build()
        .await
        .unwrap();
    for _ in 0..4 {
        let receipt = bus.emit(Signup { email: "a@b.c".into() }).await.unwrap();
        assert_eq!(receipt.async_deliveries, 1);
    }
    assert_eq!(backend.tried.load(Ordering::SeqCst), 4);
    assert_eq!(backend.published.load(Ordering::SeqCst), 2, "only the deliveries given back are published");
}

#[tokio::test]
async fn a_store_failure_is_a_store_error_and_the_event_is_not_emitted() {
    struct DownStore;
    #[async_trait]
    impl EventStore for DownStore {
        fn name(&self) -> &str {
            "down"
        }
        async fn append(
            &self,
            _: &Envelope<dyn EventData>,
        ) -> better_auth_events::Result<better_auth_events::AppendOutcome> {
            Err(Error::store("down", std::io::Error::other("connection refused")))
        }
        async fn append_batch(
            &self,
            _: &[&Envelope<dyn EventData>],
        ) -> better_auth_events::Result<Vec<better_auth_events::AppendOutcome>> {
            Err(Error::store("down", std::io::Error::other("connection refused")))
        }
        async fn get(&self, _: uuid::Uuid) -> better_auth_events::Result<Option<better_auth_events::StoredEvent>> {
            Ok(None)
        }
        async fn count(&self, _: &better_auth_events::EventQuery) -> better_auth_events::Result<u64> {
            Ok(0)
        }
        fn stream(
            &self,
            _: better_auth_events::EventQuery,
        ) -> futures::stream::BoxStream<'_, better_auth_events::Result<better_auth_events::StoredEvent>> {
            Box::pin(futures::stream::empty())
        }
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let bus = EventBus::builder().store(DownStore).handler(counting::<Job>("after", &ran)).try_build().await.unwrap();
    let err = bus.emit(Job { n: 1 }).await.unwrap_err();
    assert_eq!(err.to_string(), "event store `down` failed");
    assert_eq!(ErrorChain(&err).to_string(), "event store `down` failed: connection refused");
    bus.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "async handlers never saw an event the store refused");
}

#[tokio::test]
async fn emit_stores_the_event_before_returning() {
    let store = Arc::new(MemoryStore::new());
    let bus = EventBus::builder().store_arc(store.clone()).source("/auth-service").try_build().await.unwrap();
    let receipt = bus.emit(Signup { email: "a@b.c".into() }).await.unwrap();
    assert_eq!(receipt.position, Some(1));
    let stored = store.get(receipt.id).await.unwrap().expect("stored").event;
    assert_eq!(stored.data, json!({ "email": "a@b.c" }));
    assert_eq!(stored.source, "/auth-service");
    assert_eq!(stored.version.as_deref(), Some("1.0.0"));
    // Appends are idempotent on the id.
    let again = bus.emit(stored.clone()).await.unwrap();
    assert_eq!(again.position, Some(1));
    assert_eq!(store.query().count().await.unwrap(), 1);
}

/// Counts its drops, to see when the worker pool frees an event.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "test.counted", version = "1.0.0")]
struct Counted {
    n: u32,
}

static COUNTED_DROPS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Counted {
    fn drop(&mut self) {
        COUNTED_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_pool_frees_each_event_once_its_deliveries_are_done() {
    const N: usize = 300;
    let ran = Arc::new(AtomicUsize::new(0));
    let bus = EventBus::builder().workers(2).handler(counting::<Counted>("count", &ran)).try_build().await.unwrap();
    for n in 0..N as u32 {
        bus.emit(Counted { n }).await.unwrap();
    }
    wait_for(&ran, N).await;
    // Nothing else holds a finished event: each is freed as its delivery ends, without
    // waiting for another publish or the shutdown.
    wait_for(&COUNTED_DROPS, N).await;
    assert_eq!(COUNTED_DROPS.load(Ordering::SeqCst), N, "every event freed once");
    let report = bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
}
