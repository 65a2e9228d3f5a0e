//! Errors and log lines name the field and the rule, never the value: a payload's values
//! may be personal data (`#[event(pii)]`), and errors end up in logs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use better_auth_events::prelude::*;
use better_auth_events::replay::ReplayEngine;
use better_auth_events::{Error, ErrorChain, ValidationMode};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.pii.contact_added", version = "1.0.0")]
struct ContactAdded {
    user_id: String,
    #[event(pii)]
    phone: u64,
}

/// The value that must appear nowhere.
const SECRET: &str = "+1-555-SECRET";

/// Every log line of the test, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bad_event() -> Event {
    Event::new(ContactAdded::NAME).with_data(json!({ "user_id": "u1", "phone": SECRET }))
}

/// Display, Debug and the whole chain of an error.
fn every_form(e: &Error) -> String {
    format!("{e}\n{e:?}\n{}", ErrorChain(e))
}

#[tokio::test]
async fn no_error_or_log_line_quotes_a_payload_value() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut outputs = Vec::new();

    // Strict validation refuses it.
    let strict = EventBus::builder().try_build().await.expect("bus");
    let err = strict.emit(bad_event()).await.expect_err("the phone is not a number");
    assert!(matches!(err, Error::Validation { .. }), "{err:?}");
    assert!(err.to_string().contains("phone"), "the error names the field: {err}");
    outputs.push(every_form(&err));

    // Lenient validation logs it and lets it through; a typed sync handler cannot read it.
    let store = MemoryStore::new();
    let lenient = EventBus::builder()
        .store(store.clone())
        .validation(ValidationMode::Lenient)
        .handler(better_auth_events::Handler::typed(
            HandlerOptions::new().name("index"),
            async |_: &Envelope<ContactAdded>| Ok::<(), HandlerError>(()),
        ))
        .try_build()
        .await
        .expect("bus");
    let err = lenient.emit(bad_event()).await.expect_err("the typed handler cannot read it");
    outputs.push(every_form(&err));

    // Reading it as the type.
    let err = bad_event().into_typed::<ContactAdded>().expect_err("not a ContactAdded");
    outputs.push(every_form(&err));

    // Stored (validation off), then replayed into the typed handler.
    let off = EventBus::builder().store(store.clone()).validation(ValidationMode::Off).try_build().await.expect("bus");
    off.emit(bad_event()).await.expect("stored without validation");
    let report = ReplayEngine::new(store.clone(), lenient.clone()).replay().execute().await.expect("replay");
    assert!(report.failed >= 1, "{report:?}");
    outputs.push(format!("{report:?}"));

    drop(_guard);
    let logs = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("UTF-8 logs");
    assert!(
        logs.contains("WARN") && logs.contains("phone"),
        "the lenient bus logs the violation, naming the field: {logs}"
    );
    for (i, text) in outputs.iter().enumerate() {
        assert!(!text.contains("SECRET"), "output {i} quotes the value: {text}");
    }
    assert!(!logs.contains("SECRET"), "a log line quotes the value:\n{logs}");
}
