//! `#[handler]`: registration, options, argument kinds, dependencies and context.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::{Backoff, Error, ErrorChain, Handler, HandlerMode};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "macro.signup")]
struct Signup {
    email: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "macro.retry")]
struct RetryMe {
    fail_times: u32,
}

/// A mailer shared through `Dep<Mailer>`.
#[derive(Default)]
struct Mailer {
    sent: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Attempts {
    seen: Mutex<Vec<(u32, uuid::Uuid)>>,
    calls: AtomicU32,
}

#[handler(priority = 10)]
async fn deny_banned(e: &Signup) -> Result<(), HandlerError> {
    if e.email.ends_with("@banned.example") {
        return Err(HandlerError::new(format!("e-mail domain of {} is banned", e.email)));
    }
    Ok(())
}

#[handler(name = "envelope_by_ref")]
async fn by_ref(e: &Envelope<Signup>, ctx: &HandlerContext) -> anyhow::Result<()> {
    anyhow::ensure!(ctx.event_id() == e.id, "context and envelope disagree");
    anyhow::ensure!(ctx.handler_name() == "envelope_by_ref");
    Ok(())
}

#[handler(async, timeout = "2s", retry(max_attempts = 4, backoff = "fixed", base = "1ms", jitter = false))]
async fn send_welcome(e: Envelope<Signup>, mailer: Dep<Mailer>, ctx: HandlerContext) -> Result<(), std::io::Error> {
    assert_eq!(ctx.mode(), HandlerMode::Async);
    mailer.sent.lock().map_err(|_| std::io::Error::other("poisoned"))?.push(e.data.email);
    Ok(())
}

#[handler(async, retry(max_attempts = 3, backoff = "linear", base = "1ms", max_delay = "5ms"))]
async fn flaky(e: &RetryMe, ctx: &HandlerContext, attempts: Dep<Attempts>) -> Result<(), HandlerError> {
    let n = attempts.calls.fetch_add(1, Ordering::SeqCst) + 1;
    attempts.seen.lock().unwrap().push((ctx.attempt(), ctx.delivery_id()));
    if n <= e.fail_times { Err(HandlerError::new(format!("failure {n}"))) } else { Ok(()) }
}

fn named(names: &[&str]) -> Vec<Handler> {
    registered_handlers().into_iter().filter(|h| names.contains(&h.name())).collect()
}

#[test]
fn registered_handlers_carry_their_options() {
    let all = registered_handlers();
    let by_name = |n: &str| all.iter().find(|h| h.name() == n).unwrap_or_else(|| panic!("`{n}` not registered"));

    let deny = by_name("deny_banned");
    assert_eq!(deny.mode(), HandlerMode::Sync);
    assert_eq!(deny.priority(), 10);
    assert_eq!(deny.event_name(), "macro.signup");
    assert_eq!(deny.timeout(), None);
    assert!(deny.retry_policy().is_none());

    let welcome = by_name("send_welcome");
    assert_eq!(welcome.mode(), HandlerMode::Async);
    assert_eq!(welcome.timeout(), Some(Duration::from_secs(2)));
    let policy = welcome.retry_policy().expect("retry policy");
    assert_eq!(policy.max_attempts, 4);
    assert_eq!(policy.backoff, Backoff::Fixed);
    assert_eq!(policy.base, Duration::from_millis(1));
    assert!(!policy.jitter);
    assert_eq!(policy.max_delay, RetryPolicy::default().max_delay, "unset options keep their defaults");
    assert_eq!(welcome.requirements().len(), 1);
    assert!(welcome.requirements()[0].type_name.ends_with("Mailer"));
    assert!(welcome.location().unwrap().starts_with("handler_macro::send_welcome:"));

    assert!(by_name("envelope_by_ref").requirements().is_empty());
    let names: Vec<&str> = all.iter().map(|h| h.name()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "registered_handlers() is sorted by name");
}

#[tokio::test]
async fn a_missing_dependency_is_a_build_error_naming_handler_and_type() {
    let err = EventBus::builder().handlers(named(&["send_welcome"])).try_build().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Config(_)));
    assert_eq!(
        text,
        "invalid event bus configuration: handler `send_welcome` takes `Dep<handler_macro::Mailer>` but no \
         `handler_macro::Mailer` is registered; add `.dependency(..)` with one to the builder"
    );
}

#[tokio::test]
async fn sync_veto_async_mail_and_envelope_arguments() {
    let mailer = Arc::new(Mailer::default());
    let bus = EventBus::builder()
        .handlers(named(&["deny_banned", "envelope_by_ref", "send_welcome"]))
        .dependency_arc(mailer.clone())
        .try_build()
        .await
        .unwrap();

    let ok = bus.emit(Signup { email: "ann@good.example".into() }).await.unwrap();
    assert_eq!(ok.handlers_run, 2);
    assert_eq!(ok.async_deliveries, 1);

    let err = bus.emit(Signup { email: "bob@banned.example".into() }).await.unwrap_err();
    assert_eq!(
        ErrorChain(&err).to_string(),
        "handler `deny_banned` failed for event `macro.signup`: e-mail domain of bob@banned.example is banned"
    );

    bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(mailer.sent.lock().unwrap().as_slice(), ["ann@good.example"]);
    assert_eq!(bus.stats().succeeded, 1);
}

#[tokio::test]
async fn retries_see_increasing_attempts_and_one_delivery_id() {
    let attempts = Arc::new(Attempts::default());
    let bus =
        EventBus::builder().handlers(named(&["flaky"])).dependency_arc(attempts.clone()).try_build().await.unwrap();
    let receipt = bus.emit(RetryMe { fail_times: 2 }).await.unwrap();
    bus.shutdown(Duration::from_secs(5)).await.unwrap();
    let seen = attempts.seen.lock().unwrap().clone();
    let delivery = uuid::Uuid::new_v5(&receipt.id, b"flaky");
    assert_eq!(seen, [(1, delivery), (2, delivery), (3, delivery)]);
    assert_eq!(bus.stats().succeeded, 1);
    assert_eq!(bus.stats().retried, 2);
}

#[tokio::test]
async fn handlers_can_be_called_by_hand_like_any_function() {
    deny_banned(&Signup { email: "a@ok.example".into() }).await.unwrap();
    assert!(deny_banned(&Signup { email: "a@banned.example".into() }).await.is_err());
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "macro.ctx_job")]
struct CtxJob {
    n: u32,
}

/// What an async handler saw: its context, and the event and the bus it came from.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    event_id: uuid::Uuid,
    ctx_event_id: uuid::Uuid,
    handler: String,
    attempt: u32,
    mode: HandlerMode,
    bus: &'static str,
}

/// Where the handlers of `CtxJob` write what they saw; each bus has its own `tag`.
struct SeenLog {
    tag: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Records what the handler saw; the first attempt of every third job fails.
fn record(e: &Envelope<CtxJob>, ctx: &HandlerContext, log: &SeenLog) -> Result<(), HandlerError> {
    log.seen.lock().unwrap().push(Seen {
        event_id: e.id,
        ctx_event_id: ctx.event_id(),
        handler: ctx.handler_name().to_owned(),
        attempt: ctx.attempt(),
        mode: ctx.mode(),
        bus: log.tag,
    });
    if e.data.n.is_multiple_of(3) && ctx.attempt() == 1 {
        Err(HandlerError::new("first attempt fails"))
    } else {
        Ok(())
    }
}

#[handler(async, retry(max_attempts = 2, backoff = "fixed", base = "1ms", jitter = false))]
async fn ctx_a(e: &Envelope<CtxJob>, ctx: &HandlerContext, log: Dep<SeenLog>) -> Result<(), HandlerError> {
    record(e, ctx, &log)
}

#[handler(async, retry(max_attempts = 2, backoff = "fixed", base = "1ms", jitter = false))]
async fn ctx_b(e: &Envelope<CtxJob>, ctx: &HandlerContext, log: Dep<SeenLog>) -> Result<(), HandlerError> {
    record(e, ctx, &log)
}

#[tokio::test]
async fn a_worker_gives_each_delivery_its_own_context_across_handlers_buses_and_retries() {
    // One worker serves both buses: every delivery refills, or replaces, the context of the
    // delivery before it.
    let pool = Arc::new(WorkerPool::new(1, 100));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut buses = Vec::new();
    for tag in ["first", "second"] {
        let bus = EventBus::builder()
            .backend(Arc::clone(&pool))
            .dependency(SeenLog { tag, seen: Arc::clone(&seen) })
            .handlers(named(&["ctx_a", "ctx_b"]))
            .try_build()
            .await
            .unwrap();
        buses.push((tag, bus));
    }
    let mut expected = Vec::new();
    for n in 0..30_u32 {
        let (tag, bus) = &buses[(n as usize / 2) % 2];
        let receipt = bus.emit(CtxJob { n }).await.unwrap();
        let attempts: &[u32] = if n.is_multiple_of(3) { &[1, 2] } else { &[1] };
        for handler in ["ctx_a", "ctx_b"] {
            for &attempt in attempts {
                expected.push(Seen {
                    event_id: receipt.id,
                    ctx_event_id: receipt.id,
                    handler: handler.into(),
                    attempt,
                    mode: HandlerMode::Async,
                    bus: tag,
                });
            }
        }
    }
    assert!(pool.close(Duration::from_secs(5)).await.unwrap().is_complete());
    let mut seen = seen.lock().unwrap().clone();
    let key = |s: &Seen| (s.event_id, s.handler.clone(), s.attempt);
    seen.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(seen, expected);
    assert_eq!(buses.iter().map(|(_, bus)| bus.stats().succeeded).sum::<u64>(), 60);
    assert_eq!(buses.iter().map(|(_, bus)| bus.stats().retried).sum::<u64>(), 20);
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "macro.inline_deps")]
struct InlineDeps {
    n: u32,
}

/// What the inline handlers of `InlineDeps` found, in run order.
#[derive(Default)]
struct Calls {
    log: Mutex<Vec<(&'static str, u32)>>,
}

/// Runs first and reads no context: the context the bus makes for it holds no dependencies.
#[handler(priority = 3)]
async fn inline_plain(_e: &InlineDeps) -> Result<(), HandlerError> {
    Ok(())
}

#[handler(priority = 2)]
async fn inline_dep(e: &InlineDeps, calls: Dep<Calls>) -> Result<(), HandlerError> {
    calls.log.lock().unwrap().push(("dep", e.n));
    Ok(())
}

#[handler(priority = 1)]
async fn inline_ctx_ref(e: &InlineDeps, ctx: &HandlerContext) -> Result<(), HandlerError> {
    let calls = ctx.dependency::<Calls>().ok_or_else(|| HandlerError::new("no Calls in the context"))?;
    calls.log.lock().unwrap().push(("ctx_ref", e.n));
    Ok(())
}

#[handler]
async fn inline_ctx_owned(ctx: HandlerContext, e: &InlineDeps) -> Result<(), HandlerError> {
    let calls = ctx.dependency::<Calls>().ok_or_else(|| HandlerError::new("no Calls in the context"))?;
    calls.log.lock().unwrap().push(("ctx_owned", e.n));
    Ok(())
}

#[tokio::test]
async fn inline_handlers_that_read_their_context_find_the_dependencies_after_one_that_does_not() {
    let calls = Arc::new(Calls::default());
    let bus = EventBus::builder()
        .dependency_arc(Arc::clone(&calls))
        .handlers(named(&["inline_plain", "inline_dep", "inline_ctx_ref", "inline_ctx_owned"]))
        .try_build()
        .await
        .unwrap();
    for n in 0..2 {
        let receipt = bus.emit(InlineDeps { n }).await.unwrap();
        assert_eq!(receipt.handlers_run, 4);
    }
    assert_eq!(
        *calls.log.lock().unwrap(),
        [("dep", 0), ("ctx_ref", 0), ("ctx_owned", 0), ("dep", 1), ("ctx_ref", 1), ("ctx_owned", 1)]
    );
}
