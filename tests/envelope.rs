//! The envelope: CloudEvents 1.0 structured JSON both ways (checked against the
//! `cloudevents-sdk` crate), typed ⇄ dynamic conversion, and no JSON on the in-process path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use better_auth_events::auth::UserCreated;
use better_auth_events::prelude::*;
use better_auth_events::{Delivery, Handler, ShutdownReport};
use cloudevents::AttributesReader;

fn user() -> UserCreated {
    UserCreated { user_id: "u-1".into(), email: "ann@example.com".into(), name: None, email_verified: true }
}

#[test]
fn a_typed_envelope_round_trips_through_cloudevents_json() {
    let env = Envelope::of(user())
        .with_subject("user/u-1")
        .with_source("/auth")
        .with_correlation_id("corr-1")
        .with_causation_id("cause-1")
        .with_tenant("acme")
        .with_actor("admin")
        .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let doc = env.to_cloudevent().unwrap();
    assert_eq!(doc["specversion"], "1.0");
    assert_eq!(doc["id"], env.id.to_string());
    assert_eq!(doc["source"], "/auth");
    assert_eq!(doc["type"], "user.created");
    assert_eq!(doc["subject"], "user/u-1");
    assert_eq!(doc["datacontenttype"], "application/json");
    assert_eq!(doc["dataschema"], "urn:better-auth-events:schema:user.created:1.0.0");
    assert_eq!(doc["schemaversion"], "1.0.0");
    assert_eq!(doc["tenant"], "acme");
    assert_eq!(doc["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_eq!(
        doc["data"],
        json!({ "user_id": "u-1", "email": "ann@example.com", "name": null, "email_verified": true })
    );

    let back: Envelope<UserCreated> = Envelope::from_cloudevent(doc.clone()).unwrap();
    assert_eq!(back.id, env.id);
    assert_eq!(back.data, env.data);
    assert_eq!(back.metadata, env.metadata);
    assert_eq!(back.timestamp, env.timestamp);
    assert_eq!(back.version.as_deref(), Some("1.0.0"));
    let bytes = env.to_cloudevent_bytes().unwrap();
    let again: Envelope<UserCreated> = Envelope::from_cloudevent_slice(&bytes).unwrap();
    assert_eq!(again.data, env.data);
}

#[test]
fn the_cloudevents_sdk_reads_what_we_write_and_we_read_what_it_writes() {
    let env = Envelope::of(user()).with_correlation_id("corr-9").with_tenant("acme");
    let doc = env.to_cloudevent().unwrap();
    let theirs: cloudevents::Event = serde_json::from_value(doc).expect("a valid CloudEvents 1.0 document");
    assert_eq!(theirs.id(), env.id.to_string());
    assert_eq!(theirs.ty(), "user.created");
    assert_eq!(theirs.source().to_string(), "/better-auth-events");
    assert_eq!(theirs.specversion().to_string(), "1.0");
    assert_eq!(theirs.extension("correlationid").map(ToString::to_string).as_deref(), Some("corr-9"));
    assert_eq!(theirs.extension("tenant").map(ToString::to_string).as_deref(), Some("acme"));
    assert_eq!(theirs.time().map(|t| t.timestamp_micros()), Some(env.timestamp.timestamp_micros()));

    let written = serde_json::to_value(&theirs).unwrap();
    let ours: Envelope<UserCreated> = Envelope::from_cloudevent(written).unwrap();
    assert_eq!(ours.id, env.id);
    assert_eq!(ours.data, env.data);
    assert_eq!(ours.metadata.correlation_id.as_deref(), Some("corr-9"));
    assert_eq!(ours.metadata.tenant.as_deref(), Some("acme"));
}

#[test]
fn typed_and_dynamic_envelopes_convert_both_ways() {
    let typed = Envelope::of(user()).with_tenant("acme");
    let dynamic: Event = typed.to_dynamic().unwrap();
    assert_eq!(dynamic.id, typed.id);
    assert_eq!(dynamic.event_type, EventType::UserCreated);
    assert_eq!(dynamic.data["email"], "ann@example.com");
    assert_eq!(dynamic.metadata.tenant.as_deref(), Some("acme"));

    let back: Envelope<UserCreated> = dynamic.clone().into_typed().unwrap();
    assert_eq!(back.data, typed.data);
    assert_eq!(back.id, typed.id);

    let wrong_name = Event::new("user.deleted").with_data(dynamic.data.clone());
    let err = wrong_name.into_typed::<UserCreated>().unwrap_err();
    assert!(err.to_string().contains("expected an event named `user.created`"), "{err}");
    let bad_data = Event::new("user.created").with_data(json!({ "user_id": 5 }));
    assert!(bad_data.into_typed::<UserCreated>().is_err());
}

#[test]
fn the_seed_event_has_its_fields_and_built_in_names_map_to_variants() {
    let e = Event::new("user.created").with_data(json!({ "user_id": "123" }));
    let Event { id, event_type, source, data, metadata, timestamp, .. } = &e;
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(*event_type, EventType::UserCreated);
    assert_eq!(source, "/better-auth-events");
    assert_eq!(data["user_id"], "123");
    assert_eq!(metadata.correlation_id, None);
    assert!(*timestamp <= chrono::Utc::now());
    assert_eq!(Event::new("order.paid").event_type, EventType::Custom("order.paid".into()));
}

// --- No JSON on the in-process path -----------------------------------------------------

static SERIALIZATIONS: AtomicUsize = AtomicUsize::new(0);

/// An event that counts how often it is serialized.
#[derive(Event, Deserialize, JsonSchema, Clone, Debug)]
#[event(name = "counted.event")]
struct Counted {
    n: u64,
}

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALIZATIONS.fetch_add(1, Ordering::SeqCst);
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Counted", 1)?;
        st.serialize_field("n", &self.n)?;
        st.end()
    }
}

#[derive(Event, Deserialize, JsonSchema, Clone, Debug)]
#[event(name = "counted.other")]
struct CountedOther {
    n: u64,
}

impl Serialize for CountedOther {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALIZATIONS.fetch_add(1, Ordering::SeqCst);
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CountedOther", 1)?;
        st.serialize_field("n", &self.n)?;
        st.end()
    }
}

/// Runs the serialization-counting checks in one test so the global counter is not shared
/// with a test running in parallel.
#[tokio::test]
async fn the_in_process_path_serializes_nothing_and_a_boundary_serializes_once() {
    let ran = Arc::new(AtomicUsize::new(0));
    let mut builder = EventBus::builder().middleware(CorrelationMiddleware::new());
    for i in 0..3 {
        let r = Arc::clone(&ran);
        builder = builder.handler(Handler::typed(
            HandlerOptions::new().name(format!("sync{i}")),
            async move |e: &Envelope<Counted>| {
                r.fetch_add(e.data.n as usize, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            },
        ));
        let r = Arc::clone(&ran);
        builder = builder.handler(Handler::typed(
            HandlerOptions::asynchronous().name(format!("async{i}")),
            async move |e: &Envelope<Counted>| {
                r.fetch_add(e.data.n as usize, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            },
        ));
    }
    let bus = builder.try_build().await.unwrap();
    for _ in 0..100 {
        bus.emit(Counted { n: 1 }).await.unwrap();
    }
    bus.emit_sync(Counted { n: 1 }).await.unwrap();
    bus.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 606, "every handler ran for every event");
    assert_eq!(SERIALIZATIONS.load(Ordering::SeqCst), 0, "typed in-process dispatch must not serialize");

    // A boundary (here a backend shipping CloudEvents) serializes once per emit, shared by
    // every delivery of it.
    #[derive(Default)]
    struct Shipping {
        docs: Mutex<Vec<Arc<[u8]>>>,
    }
    #[async_trait]
    impl AsyncBackend for Shipping {
        async fn publish(&self, d: Delivery) -> better_auth_events::Result<()> {
            self.docs.lock().unwrap().push(d.cloudevent_json()?);
            Ok(())
        }
        async fn close(&self, _: Duration) -> better_auth_events::Result<ShutdownReport> {
            Ok(ShutdownReport::default())
        }
        fn name(&self) -> &str {
            "shipping"
        }
    }
    let shipping = Arc::new(Shipping::default());
    let mut builder = EventBus::builder().backend(Arc::clone(&shipping));
    for i in 0..4 {
        builder = builder.handler(Handler::typed(
            HandlerOptions::asynchronous().name(format!("remote{i}")),
            async |_: &Envelope<CountedOther>| Ok::<(), HandlerError>(()),
        ));
    }
    let bus = builder.try_build().await.unwrap();
    bus.emit(CountedOther { n: 7 }).await.unwrap();
    assert_eq!(shipping.docs.lock().unwrap().len(), 4);
    assert_eq!(SERIALIZATIONS.load(Ordering::SeqCst), 1, "one serialization for four deliveries");
}

#[test]
fn ids_made_on_many_threads_are_unique_and_each_follows_every_id_made_before_it() {
    // Each thread makes ids, and each thread's first id must sort above the id the previous
    // thread made last (the hand-off through `join` orders them).
    let mut last = better_auth_events::new_event_id();
    let mut all = std::collections::HashSet::new();
    for _ in 0..4 {
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..20_000).map(|_| better_auth_events::new_event_id()).collect::<Vec<_>>()))
            .collect();
        let batches: Vec<Vec<_>> = handles.into_iter().map(|h| h.join().expect("thread runs")).collect();
        for ids in &batches {
            assert!(ids[0] > last, "an id made after {last} sorts below it: {}", ids[0]);
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "one thread's ids do not increase");
            all.extend(ids.iter().copied());
        }
        last = batches.iter().filter_map(|ids| ids.last()).max().copied().expect("ids were made");
    }
    assert_eq!(all.len(), 4 * 4 * 20_000, "every id is unique");
}

#[test]
fn ids_are_uuidv7_strictly_increasing_and_carry_the_event_time() {
    let events: Vec<Event> = (0..5_000).map(|_| Event::new("id.order")).collect();
    for pair in events.windows(2) {
        assert!(pair[0].id < pair[1].id, "{} is not below {}", pair[0].id, pair[1].id);
    }
    let typed = Envelope::of(user());
    for (id, time) in events.iter().map(|e| (e.id, e.timestamp)).chain([(typed.id, typed.timestamp)]) {
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("a v7 id has a timestamp").to_unix();
        // The id's millisecond is the event time's (one clock reading for both), or later:
        // ids increase strictly across threads, so an id made right after another thread's
        // (whose clock reading came later, say while this thread was preempted between its
        // reading and its id) carries that later millisecond. Never earlier.
        let id_ms = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
        let diff = id_ms - time.timestamp_millis();
        assert!((0..1000).contains(&diff), "id {id} at {id_ms} ms, event at {time}");
    }
    assert!(better_auth_events::new_event_id() > events[events.len() - 1].id);
}

/// Extension attributes follow the CloudEvents naming and typing rules and never shadow a
/// core or built-in attribute; empty `type`, `source` and `subject` are refused on write
/// and on read; `replay` is a boolean.
#[tokio::test]
async fn attributes_follow_the_cloudevents_rules_on_write_and_on_read() {
    use better_auth_events::{Error, MemoryStore};
    let bus = EventBus::builder().store(MemoryStore::new()).build();
    let with_ext = |name: &str, value: serde_json::Value| {
        let mut e = Event::new("audit.logged").with_data(json!({}));
        e.metadata.extensions.insert(name.to_owned(), value);
        e
    };
    for (name, value) in [
        ("id", json!("not-the-id")),
        ("type", json!("admin.granted")),
        ("specversion", json!("0.3")),
        ("correlationid", json!("forged")),
        ("replay", json!(true)),
        ("Region", json!("eu")),
        ("re-gion", json!("eu")),
        ("", json!("eu")),
        ("region", json!({ "nested": true })),
        ("region", json!(["eu"])),
        ("region", json!(1.5)),
        ("region", json!(null)),
        ("region", json!(5_000_000_000_u64)),
    ] {
        let e = with_ext(name, value.clone());
        assert!(e.to_cloudevent().is_err(), "`{name}` = {value} was written");
        match bus.emit(e).await {
            Err(Error::Validation { message, .. }) => assert!(message.contains("extension attribute"), "{message}"),
            other => panic!("`{name}` = {value}: expected a validation error, got {other:?}"),
        }
    }
    for (name, value) in [("region", json!("eu")), ("sampled", json!(true)), ("priority", json!(3))] {
        let doc = with_ext(name, value.clone()).to_cloudevent().expect("a valid extension");
        assert_eq!(doc[name], value);
        bus.emit(with_ext(name, value)).await.expect("a valid extension is emitted");
    }

    let mut no_source = Event::new("audit.logged").with_data(json!({}));
    no_source.source = "".into();
    assert!(matches!(bus.emit(no_source).await, Err(Error::Validation { .. })));
    let empty_subject = Event::new("audit.logged").with_data(json!({})).with_subject("");
    assert!(matches!(bus.emit(empty_subject).await, Err(Error::Validation { .. })));

    let doc = Event::new("audit.logged").with_data(json!({})).to_cloudevent().expect("document");
    for (key, value) in [("type", json!("")), ("source", json!("")), ("subject", json!("")), ("replay", json!("yes"))] {
        let mut bad = doc.clone();
        bad[key] = value.clone();
        assert!(Event::from_cloudevent(bad).is_err(), "`{key}` = {value} was read");
    }
    let mut replayed = doc.clone();
    replayed["replay"] = json!("false");
    assert!(!Event::from_cloudevent(replayed).expect("`false` as a string").metadata.replay);
}

// --- Foreign CloudEvents ----------------------------------------------------------------

const FOREIGN_SOURCE: &str = "https://sensors.example.com/building/7";
const FOREIGN_SCHEMA: &str = "https://schemas.example.com/reading/v3.json";

/// What another producer writes, built with the official SDK: a non-UUID id (the one of the
/// spec's examples), its own dataschema, `text/json`, no `time`.
fn foreign_cloudevent(source: &str) -> serde_json::Value {
    use cloudevents::{EventBuilder, EventBuilderV10};
    let event = EventBuilderV10::new()
        .id("A234-1234-1234")
        .source(source)
        .ty("com.example.reading")
        .extension("region", "eu")
        .data_with_schema("text/json", FOREIGN_SCHEMA, json!({ "celsius": 21 }))
        .build()
        .expect("a valid CloudEvent");
    assert!(event.time().is_none());
    serde_json::to_value(&event).expect("the SDK writes JSON")
}

/// What the SDK reads back of a document we wrote.
fn read_with_the_sdk(doc: serde_json::Value) -> cloudevents::Event {
    serde_json::from_value(doc).expect("a valid CloudEvents 1.0 document")
}

/// A foreign CloudEvent is read as the spec allows (any id, any JSON media type, its own
/// dataschema, no time) and written back as it was sent.
#[test]
fn a_foreign_cloudevent_is_read_and_written_back_as_its_producer_wrote_it() {
    let doc = foreign_cloudevent(FOREIGN_SOURCE);
    let event = Event::from_cloudevent(doc.clone()).expect("a foreign CloudEvent is readable");
    assert_eq!(event.cloudevent_id(), "A234-1234-1234");
    assert_eq!(event.id, better_auth_events::cloudevent_uuid(FOREIGN_SOURCE, "A234-1234-1234"));
    assert_eq!(event.dataschema().as_deref(), Some(FOREIGN_SCHEMA));
    assert_eq!(event.datacontenttype(), "text/json");
    assert_eq!(event.cloudevent_time(), None);
    assert!(event.timestamp <= chrono::Utc::now(), "the envelope's time is when it was read");
    assert_eq!(event.source, FOREIGN_SOURCE);
    assert_eq!(event.event_type, EventType::Custom("com.example.reading".into()));
    assert_eq!(event.metadata.extensions.get("region"), Some(&json!("eu")));
    assert_eq!(event.data, json!({ "celsius": 21 }));

    let written = event.to_cloudevent().expect("written back");
    assert!(written.get("time").is_none(), "no time is made up: {written}");
    assert_eq!(written, doc, "the document as the producer wrote it");
    let theirs = read_with_the_sdk(written);
    assert_eq!(theirs.id(), "A234-1234-1234");
    assert_eq!(theirs.source().to_string(), FOREIGN_SOURCE);
    assert_eq!(theirs.dataschema().map(ToString::to_string).as_deref(), Some(FOREIGN_SCHEMA));
    assert_eq!(theirs.datacontenttype(), Some("text/json"));
    assert_eq!(theirs.time(), None);
    assert_eq!(theirs.extension("region").map(ToString::to_string).as_deref(), Some("eu"));
    let bytes = event.to_cloudevent_bytes().expect("bytes");
    let theirs: cloudevents::Event = serde_json::from_slice(&bytes).expect("valid bytes");
    assert_eq!((theirs.id(), theirs.time()), ("A234-1234-1234", None));
    // `Serialize` writes the same document.
    assert_eq!(serde_json::to_value(&event).expect("serialize"), doc);
}

/// The same foreign event read twice is one event (one envelope id, so stored and
/// delivered once); the same id from another source is another event.
#[test]
fn a_foreign_id_maps_to_one_uuid_per_source_and_id() {
    let first = Event::from_cloudevent(foreign_cloudevent(FOREIGN_SOURCE)).expect("read");
    let again = Event::from_cloudevent(foreign_cloudevent(FOREIGN_SOURCE)).expect("read");
    let elsewhere = Event::from_cloudevent(foreign_cloudevent("/another/producer")).expect("read");
    assert_eq!(first.id, again.id);
    assert_ne!(first.id, elsewhere.id);
    assert_eq!(first.id.get_version_num(), 5);
    assert_eq!(first.delivery_id("audit"), again.delivery_id("audit"));
    assert_eq!(elsewhere.cloudevent_id(), "A234-1234-1234");

    // An empty id is still refused.
    let mut empty = foreign_cloudevent(FOREIGN_SOURCE);
    empty["id"] = json!("");
    let err = Event::from_cloudevent(empty).expect_err("an empty id").to_string();
    assert!(err.contains("attribute `id` is empty"), "{err}");
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "com.example.reading")]
struct Reading {
    celsius: i64,
}

/// The typed read, the typed ⇄ dynamic conversions and a delivery's CloudEvents JSON keep
/// what the producer sent.
#[tokio::test]
async fn typed_reads_conversions_and_deliveries_keep_the_foreign_attributes() {
    let typed: Envelope<Reading> = Envelope::from_cloudevent(foreign_cloudevent(FOREIGN_SOURCE)).expect("typed read");
    assert_eq!(typed.data, Reading { celsius: 21 });
    assert_eq!((typed.cloudevent_id().as_ref(), typed.cloudevent_time()), ("A234-1234-1234", None));
    let theirs = read_with_the_sdk(typed.to_cloudevent().expect("typed write"));
    assert_eq!((theirs.id(), theirs.time(), theirs.datacontenttype()), ("A234-1234-1234", None, Some("text/json")));
    assert_eq!(theirs.dataschema().map(ToString::to_string).as_deref(), Some(FOREIGN_SCHEMA));

    let dynamic = typed.to_dynamic().expect("to dynamic");
    assert_eq!(dynamic.metadata, typed.metadata);
    let back: Envelope<Reading> = dynamic.clone().into_typed().expect("into typed");
    assert_eq!(back.metadata, typed.metadata);
    assert_eq!(back.cloudevent_id(), "A234-1234-1234");
    assert_eq!(back.dataschema().as_deref(), Some(FOREIGN_SCHEMA), "not replaced by ours when typed");
    assert_eq!(back.cloudevent_time(), None);

    // A delivery shipped by an async backend carries the same document.
    #[derive(Default)]
    struct Shipping {
        docs: Mutex<Vec<Arc<[u8]>>>,
    }
    #[async_trait]
    impl AsyncBackend for Shipping {
        async fn publish(&self, d: Delivery) -> better_auth_events::Result<()> {
            self.docs.lock().unwrap().push(d.cloudevent_json()?);
            Ok(())
        }
        async fn close(&self, _: Duration) -> better_auth_events::Result<ShutdownReport> {
            Ok(ShutdownReport::default())
        }
        fn name(&self) -> &str {
            "shipping"
        }
    }
    let shipping = Arc::new(Shipping::default());
    let bus = EventBus::builder()
        .backend(Arc::clone(&shipping))
        .handler(Handler::dynamic(
            "com.example.reading",
            HandlerOptions::asynchronous().name("remote"),
            async |_: &Event| Ok::<(), HandlerError>(()),
        ))
        .try_build()
        .await
        .unwrap();
    let receipt = bus.emit(dynamic).await.expect("emit a foreign event");
    assert_eq!(receipt.id, typed.id);
    let docs = shipping.docs.lock().unwrap().clone();
    assert_eq!(docs.len(), 1);
    let theirs: cloudevents::Event = serde_json::from_slice(&docs[0]).expect("a valid CloudEvent");
    assert_eq!((theirs.id(), theirs.time(), theirs.datacontenttype()), ("A234-1234-1234", None, Some("text/json")));
    assert_eq!(theirs.dataschema().map(ToString::to_string).as_deref(), Some(FOREIGN_SCHEMA));
}
