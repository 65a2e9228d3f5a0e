//! The replay engine: filters, handler subsets, replay marks, dry runs, progress,
//! checkpoints, rate limits and failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::replay::{ReplayEngine, ReplayProgress};
use better_auth_events::{Error, Handler, HandlerContext};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "replay.signup")]
struct Signup {
    n: u32,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "replay.login")]
struct Login {
    n: u32,
}

type Seen = Arc<Mutex<Vec<(String, u32, bool)>>>;

/// A handler recording (name, n, replay flag), failing on `n == fail_on`.
fn recorder(name: &'static str, seen: &Seen, fail_on: Option<u32>, asynchronous: bool) -> Handler {
    let seen = Arc::clone(seen);
    let options = if asynchronous { HandlerOptions::asynchronous() } else { HandlerOptions::new() };
    Handler::typed(options.name(name), async move |e: &Envelope<Signup>| {
        seen.lock().unwrap().push((name.to_owned(), e.data.n, e.metadata.replay));
        if Some(e.data.n) == fail_on { Err(HandlerError::new(format!("{name} fails on {}", e.data.n))) } else { Ok(()) }
    })
}

/// A store with 10 signups (n = 0..10) and 5 logins, emitted through a plain bus.
async fn history() -> MemoryStore {
    let store = MemoryStore::new();
    let bus = EventBus::builder().store(store.clone()).try_build().await.unwrap();
    for n in 0..10 {
        bus.emit(Signup { n }).await.unwrap();
        if n % 2 == 0 {
            bus.emit(Login { n }).await.unwrap();
        }
    }
    store
}

fn entries(seen: &Seen) -> Vec<(String, u32, bool)> {
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn replays_the_selected_events_into_the_handlers_marked_as_replays() {
    let store = history().await;
    let seen: Seen = Arc::default();
    let bus = EventBus::builder()
        .handler(recorder("sync", &seen, None, false))
        .handler(recorder("async", &seen, None, true))
        .try_build()
        .await
        .unwrap();
    let before = chrono::Utc::now();
    let engine = ReplayEngine::new(store.clone(), bus.clone());
    let report = engine.replay().event_type("replay.signup").to(before).execute().await.unwrap();
    assert_eq!(report.events, 10);
    assert_eq!(report.handlers_run, 20, "sync and async handlers both run inline");
    assert_eq!(report.failed, 0);
    let all = entries(&seen);
    assert_eq!(all.len(), 20);
    assert!(all.iter().all(|(_, _, replay)| *replay), "every replayed envelope is marked");
    assert_eq!(
        all.iter().filter(|(h, _, _)| h == "sync").map(|(_, n, _)| *n).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(store.query().count().await.unwrap(), 15, "a replay stores nothing new");

    // A time window that holds nothing replays nothing.
    let later = engine.replay().from(chrono::Utc::now() + chrono::Duration::hours(1)).execute().await.unwrap();
    assert_eq!(later.events, 0);
    bus.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn only_the_named_handlers_run_and_unknown_names_are_an_error() {
    let store = history().await;
    let seen: Seen = Arc::default();
    let bus = EventBus::builder()
        .handler(recorder("projection", &seen, None, false))
        .handler(recorder("send-mail", &seen, None, true))
        .try_build()
        .await
        .unwrap();
    let engine = ReplayEngine::new(store, bus);
    let report = engine.replay().handlers(["projection"]).execute().await.unwrap();
    assert_eq!(report.events, 15, "logins are read too; they have no selected handler");
    assert_eq!(report.handlers_run, 10);
    assert!(entries(&seen).iter().all(|(h, _, _)| h == "projection"));

    let err = engine.replay().handlers(["projection", "nope"]).execute().await.unwrap_err();
    assert!(matches!(err, Error::Config(_)));
    assert!(err.to_string().contains("not registered on the bus: nope; registered: projection, send-mail"), "{err}");
}

#[tokio::test]
async fn a_dry_run_counts_and_runs_nothing() {
    let store = history().await;
    let seen: Seen = Arc::default();
    let bus = EventBus::builder().handler(recorder("h", &seen, None, false)).try_build().await.unwrap();
    let report = ReplayEngine::new(store, bus).replay().dry_run().execute().await.unwrap();
    assert!(report.dry_run);
    assert_eq!((report.events, report.handlers_run), (15, 10));
    assert!(entries(&seen).is_empty());
}

#[tokio::test]
async fn a_replay_resumes_from_its_checkpoint_and_reports_progress() {
    let store = history().await;
    let seen: Seen = Arc::default();
    let bus = EventBus::builder().handler(recorder("h", &seen, None, false)).try_build().await.unwrap();
    let engine = ReplayEngine::new(store, bus);
    let progress: Arc<Mutex<Vec<ReplayProgress>>> = Arc::default();
    let p = Arc::clone(&progress);
    let first = engine
        .replay()
        .event_type("replay.signup")
        .limit(4)
        .on_progress(2, move |pr| p.lock().unwrap().push(pr.clone()))
        .execute()
        .await
        .unwrap();
    assert_eq!(first.events, 4);
    let progress = progress.lock().unwrap().clone();
    assert_eq!(progress.iter().map(|p| p.events).collect::<Vec<_>>(), [2, 4, 4], "every 2 events, then at the end");
    assert_eq!(progress.last().unwrap().last_position, first.last_position);

    let checkpoint = first.last_position.expect("a position");
    let rest = engine.replay().event_type("replay.signup").resume_from(checkpoint).execute().await.unwrap();
    assert_eq!(rest.events, 6);
    let ns: Vec<u32> = entries(&seen).iter().map(|(_, n, _)| *n).collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>(), "each event exactly once across the two runs");
}

#[tokio::test]
async fn failures_are_recorded_or_stop_the_replay() {
    let store = history().await;
    let seen: Seen = Arc::default();
    let bus = EventBus::builder()
        .handler(recorder("fragile", &seen, Some(3), false))
        .handler(recorder("after", &seen, None, false))
        .try_build()
        .await
        .unwrap();
    let engine = ReplayEngine::new(store, bus);
    let report = engine.replay().event_type("replay.signup").execute().await.unwrap();
    assert_eq!(report.events, 10);
    assert_eq!(report.failed, 1);
    assert_eq!(report.handlers_run, 19);
    assert_eq!(report.failures[0].handler, "fragile");
    assert_eq!(report.failures[0].error, "fragile fails on 3");

    let err = engine.replay().event_type("replay.signup").stop_on_error(true).execute().await.unwrap_err();
    assert!(err.to_string().contains("handler `fragile` failed for event `replay.signup (replay at position"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_paces_the_replay() {
    let store = history().await;
    let bus = EventBus::new();
    let engine = ReplayEngine::new(store, bus);
    let t0 = tokio::time::Instant::now();
    let report = engine.replay().rate_limit(10.0).execute().await.unwrap();
    assert_eq!(report.events, 15);
    // 15 events at 10/s: the last one is due 1.4 s after the start (virtual time).
    assert!(t0.elapsed() >= Duration::from_millis(1400), "{:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_millis(1600), "{:?}", t0.elapsed());
    let err = engine.replay().rate_limit(0.0).execute().await.unwrap_err();
    assert!(err.to_string().contains("must be a positive number"), "{err}");
}

#[handler(name = "replay_projection")]
async fn projection(e: &Login, ctx: &HandlerContext) -> Result<(), HandlerError> {
    if !ctx.is_replay() {
        return Err(HandlerError::new(format!("login {} was expected to come from a replay", e.n)));
    }
    Ok(())
}

#[tokio::test]
async fn typed_handlers_read_stored_json_and_know_it_is_a_replay() {
    let store = history().await;
    let handlers = better_auth_events::registered_handlers().into_iter().filter(|h| h.name() == "replay_projection");
    let bus = EventBus::builder().handlers(handlers).try_build().await.unwrap();
    let report = ReplayEngine::new(store, bus).replay().event_type("replay.login").execute().await.unwrap();
    assert_eq!((report.events, report.handlers_run, report.failed), (5, 5, 0), "{report:?}");
}
