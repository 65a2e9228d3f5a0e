//! The middleware pipeline: transform, filter, reject, order; the tracing middleware's
//! PII redaction; the correlation middleware's correlation and causation ids.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::{EmitStatus, Error, Handler};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "mw.login")]
struct Login {
    user_id: String,
    #[event(pii)]
    email: String,
    #[event(pii)]
    ip: Option<String>,
}

fn login() -> Login {
    Login { user_id: "u1".into(), email: "ann@example.com".into(), ip: Some("10.1.2.3".into()) }
}

/// Records its name, then applies `action`.
struct Step {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    action: fn(&mut Envelope<dyn EventData>) -> Result<Flow, Error>,
}

#[async_trait]
impl EventMiddleware for Step {
    fn name(&self) -> &str {
        self.name
    }

    async fn process_envelope(&self, event: &mut Envelope<dyn EventData>) -> Result<Flow, Error> {
        self.log.lock().unwrap().push(self.name.to_owned());
        (self.action)(event)
    }
}

fn step(
    name: &'static str,
    log: &Arc<Mutex<Vec<String>>>,
    action: fn(&mut Envelope<dyn EventData>) -> Result<Flow, Error>,
) -> Step {
    Step { name, log: Arc::clone(log), action }
}

fn capture(seen: &Arc<Mutex<Vec<Login>>>) -> Handler {
    let seen = Arc::clone(seen);
    Handler::typed(HandlerOptions::new().name("capture"), async move |e: &Envelope<Login>| {
        seen.lock().unwrap().push(e.data.clone());
        Ok::<(), HandlerError>(())
    })
}

#[tokio::test]
async fn middleware_run_in_order_and_can_transform_typed_and_dynamic_payloads() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = EventBus::builder()
        .middleware(step("lowercase", &log, |e| {
            if let Some(login) = e.data.downcast_mut::<Login>() {
                login.email = login.email.to_lowercase();
            }
            Ok(Flow::Continue)
        }))
        .middleware(step("tenant", &log, |e| {
            e.metadata.tenant = Some("acme".into());
            Ok(Flow::Continue)
        }))
        .middleware(step("strip-ip", &log, |e| {
            let mut json = e
                .data
                .to_json()
                .map_err(|source| Error::Serialization { event_type: e.event_type.to_string(), source })?;
            json["ip"] = serde_json::Value::Null;
            e.data
                .set_json(json)
                .map_err(|source| Error::Serialization { event_type: e.event_type.to_string(), source })?;
            Ok(Flow::Continue)
        }))
        .handler(capture(&seen))
        .store(MemoryStore::new())
        .try_build()
        .await
        .unwrap();
    bus.emit(Login { email: "ANN@Example.COM".into(), ..login() }).await.unwrap();
    bus.emit(Event::new("mw.login").with_data(json!({ "user_id": "u2", "email": "BOB@X.Y", "ip": "1.1.1.1" })))
        .await
        .unwrap();
    assert_eq!(*log.lock().unwrap(), ["lowercase", "tenant", "strip-ip"].repeat(2));
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], Login { email: "ann@example.com".into(), ip: None, ..login() });
    // The dynamic payload is not a `Login`, so `lowercase` leaves it; `strip-ip` works on JSON.
    assert_eq!(seen[1], Login { user_id: "u2".into(), email: "BOB@X.Y".into(), ip: None });
}

#[tokio::test]
async fn a_middleware_can_drop_with_a_reason_or_reject_with_an_error() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::new(MemoryStore::new());
    let bus = EventBus::builder()
        .middleware(step("filter", &log, |e| {
            Ok(if e.metadata.tenant.as_deref() == Some("test") {
                Flow::Drop("test tenant".into())
            } else {
                Flow::Continue
            })
        }))
        .middleware(step("guard", &log, |e| {
            if e.metadata.actor.as_deref() == Some("mallory") {
                return Err(Error::Rejected {
                    middleware: "guard".into(),
                    event_type: e.event_type.to_string(),
                    reason: "actor is blocked".into(),
                });
            }
            Ok(Flow::Continue)
        }))
        .handler(capture(&seen))
        .store_arc(store.clone())
        .try_build()
        .await
        .unwrap();

    let dropped = bus.emit(Envelope::of(login()).with_tenant("test")).await.unwrap();
    assert!(dropped.is_dropped());
    assert_eq!(dropped.status, EmitStatus::Dropped { middleware: "filter".into(), reason: "test tenant".into() });
    assert_eq!(*log.lock().unwrap(), ["filter"], "later middleware never see a dropped event");

    let err = bus.emit(Envelope::of(login()).with_actor("mallory")).await.unwrap_err();
    assert_eq!(err.to_string(), "middleware `guard` rejected event `mw.login`: actor is blocked");

    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(store.query().count().await.unwrap(), 0, "dropped and rejected events are not stored");

    bus.emit(login()).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn the_tracing_middleware_redacts_pii_of_typed_and_dynamic_events() {
    let mw = TracingMiddleware::new();
    let typed = Envelope::of(login());
    let line = mw.render(&typed);
    assert!(line.contains("\"user_id\":\"u1\""), "{line}");
    assert!(line.contains("\"email\":\"[REDACTED]\""), "{line}");
    assert!(line.contains("\"ip\":\"[REDACTED]\""), "{line}");
    assert!(!line.contains("ann@example.com") && !line.contains("10.1.2.3"), "{line}");

    // A dynamic event named like a registered type is redacted by that type's marks.
    let dynamic = Event::new("mw.login").with_data(json!({ "user_id": "u9", "email": "eve@x.y" }));
    let line = mw.render(&dynamic);
    assert!(line.contains("\"email\":\"[REDACTED]\"") && !line.contains("eve@x.y"), "{line}");

    let header_only = TracingMiddleware::without_payload().render(&typed);
    assert!(!header_only.contains("data="), "{header_only}");
}

/// A `tracing` writer that keeps what is logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_tracing_middleware_logs_through_tracing_without_personal_data() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let bus = EventBus::builder().middleware(TracingMiddleware::default()).try_build().await.unwrap();
    bus.emit(login()).await.unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("event mw.login"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
    assert!(!text.contains("ann@example.com"), "{text}");
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "mw.welcome.sent")]
struct WelcomeSent {
    user_id: String,
}

#[tokio::test]
async fn the_correlation_middleware_fills_correlation_and_causation_ids() {
    let follow_ups: Arc<Mutex<Vec<Envelope<WelcomeSent>>>> = Arc::new(Mutex::new(Vec::new()));
    let bus = EventBus::builder().middleware(CorrelationMiddleware::new()).try_build().await.unwrap();
    let f = Arc::clone(&follow_ups);
    bus.subscribe(async move |e: &Envelope<WelcomeSent>| {
        f.lock().unwrap().push(e.clone());
        Ok::<(), HandlerError>(())
    })
    .await
    .unwrap();
    // A sync handler and an async one each emit a follow-up event from inside the handler.
    for (name, options) in
        [("sync-follow-up", HandlerOptions::new()), ("async-follow-up", HandlerOptions::asynchronous())]
    {
        let inner_bus = bus.clone();
        bus.register(Handler::typed(options.name(name), async move |e: &Envelope<Login>| {
            inner_bus.emit(WelcomeSent { user_id: e.data.user_id.clone() }).await?;
            Ok::<(), HandlerError>(())
        }))
        .unwrap();
    }

    let plain = bus.emit(login()).await.unwrap();
    // Wait for the async follow-up (a shut-down bus would refuse it with `Closed`).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while follow_ups.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the async follow-up was not emitted within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bus.shutdown(Duration::from_secs(5)).await.unwrap();
    let follow_ups = follow_ups.lock().unwrap().clone();
    assert_eq!(follow_ups.len(), 2);
    for f in follow_ups.iter() {
        assert_eq!(f.metadata.causation_id, Some(plain.id.to_string()), "caused by the login");
        assert_eq!(f.metadata.correlation_id, Some(plain.id.to_string()), "the login started the workflow");
    }

    // Ids already set are kept.
    let store = Arc::new(MemoryStore::new());
    let bus = EventBus::builder()
        .middleware(CorrelationMiddleware::new())
        .store_arc(store.clone())
        .try_build()
        .await
        .unwrap();
    let mine = bus.emit(Envelope::of(login()).with_correlation_id("req-42")).await.unwrap();
    let stored = store.get(mine.id).await.unwrap().unwrap().event;
    assert_eq!(stored.metadata.correlation_id.as_deref(), Some("req-42"));
    assert_eq!(stored.metadata.causation_id, None, "emitted outside any handler");
}
