//! One conformance suite, run against every store: memory, SQLite (a temp file), PostgreSQL
//! (127.0.0.1:5432, database `test`, a fresh schema per test) and Redis (127.0.0.1:6379, a
//! fresh key prefix per test). Each test gets its own store, so the suite runs in parallel
//! and can be re-run. A test whose server is unreachable fails and says how to start it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use better_auth_events::prelude::*;
use better_auth_events::{AppendOutcome, ErrorChain, EventQuery, Order, StoredEvent};
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;

mod support;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "conf.user.created", version = "1.2.0")]
struct UserCreated {
    user_id: String,
    #[event(pii)]
    email: String,
}

/// Serializing it fails when `poison` is set: for atomicity tests.
#[derive(Event, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "conf.poison")]
struct Poison {
    poison: bool,
}

impl Serialize for Poison {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.poison {
            return Err(serde::ser::Error::custom("poisoned payload"));
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Poison", 1)?;
        st.serialize_field("poison", &self.poison)?;
        st.end()
    }
}

fn user(i: usize) -> Envelope<UserCreated> {
    Envelope::of(UserCreated { user_id: format!("u{i}"), email: format!("u{i}@example.com") })
}

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().expect("valid time") + chrono::Duration::minutes(minutes)
}

async fn append_one(store: &dyn EventStore, env: &Envelope<impl EventData>) -> AppendOutcome {
    store.append(env as &Envelope<dyn EventData>).await.expect("append")
}

async fn append_all<T: EventData>(store: &dyn EventStore, envs: &[Envelope<T>]) -> Vec<AppendOutcome> {
    let refs: Vec<&Envelope<dyn EventData>> = envs.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    store.append_batch(&refs).await.expect("append_batch")
}

fn positions(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

fn assert_increasing(p: &[u64]) {
    assert!(p.windows(2).all(|w| w[0] < w[1]), "positions must increase: {p:?}");
}

// --- the suite ---------------------------------------------------------------------------

async fn appends_get_positions_and_round_trip(store: &dyn EventStore) {
    let typed = user(1)
        .with_subject("user/u1")
        .with_source("/auth")
        .with_correlation_id("corr-1")
        .with_causation_id("cause-1")
        .with_tenant("acme")
        .with_actor("admin")
        .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let mut dynamic = Event::new("conf.dynamic").with_data(json!({ "nested": { "a": [1, 2, 3] }, "ok": true }));
    dynamic.metadata.extensions.insert("region".into(), json!("eu-west"));
    let first = append_one(store, &typed).await;
    let second = append_one(store, &dynamic).await;
    assert!(matches!(first, AppendOutcome::Stored { .. }), "{first:?}");
    assert!(matches!(second, AppendOutcome::Stored { .. }), "{second:?}");
    assert!(first.position() >= 1 && first.position() < second.position());

    let back = store.get(typed.id).await.expect("get").expect("stored");
    assert_eq!(back.position, first.position());
    let e = back.event;
    assert_eq!(e.id, typed.id);
    assert_eq!(e.event_type, EventType::Custom("conf.user.created".into()));
    assert_eq!(e.source, "/auth");
    assert_eq!(e.subject.as_deref(), Some("user/u1"));
    assert_eq!(e.timestamp, typed.timestamp, "time round-trips at microsecond precision");
    assert_eq!(e.version.as_deref(), Some("1.2.0"));
    assert_eq!(e.metadata, typed.metadata);
    assert_eq!(e.data, json!({ "user_id": "u1", "email": "u1@example.com" }));

    let back = store.get(dynamic.id).await.expect("get").expect("stored").event;
    assert_eq!(back.data, dynamic.data);
    assert_eq!(back.version, None);
    assert_eq!(back.metadata.extensions.get("region"), Some(&json!("eu-west")));

    assert!(store.get(uuid::Uuid::now_v7()).await.expect("get").is_none());
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 2);
}

async fn appending_an_existing_id_stores_nothing_and_says_so(store: &dyn EventStore) {
    let e = user(1);
    let first = append_one(store, &e).await;
    let mut again = e.clone();
    again.data.email = "changed@example.com".into();
    let second = append_one(store, &again).await;
    assert_eq!(second, AppendOutcome::Duplicate { position: first.position() });
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 1);
    let stored = store.get(e.id).await.expect("get").expect("stored");
    assert_eq!(stored.event.data["email"], "u1@example.com", "the first copy is kept");
}

async fn a_batch_is_atomic_and_reports_duplicates_within_it(store: &dyn EventStore) {
    let a = user(1);
    let b = user(2);
    let out = append_all(store, &[a.clone(), b.clone(), a.clone()]).await;
    assert!(matches!(out[0], AppendOutcome::Stored { .. }) && matches!(out[1], AppendOutcome::Stored { .. }));
    assert_eq!(out[2], AppendOutcome::Duplicate { position: out[0].position() });
    assert!(out[0].position() < out[1].position());

    let good = Envelope::of(Poison { poison: false });
    let bad = Envelope::of(Poison { poison: true });
    let refs: Vec<&Envelope<dyn EventData>> = vec![&good, &bad];
    let err = store.append_batch(&refs).await.expect_err("a payload that cannot be serialized fails the batch");
    assert!(ErrorChain(&err).to_string().contains("poisoned payload"), "{err:?}");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 2, "nothing of the failed batch is stored");
    assert!(store.get(good.id).await.expect("get").is_none());
    // An empty batch is fine.
    assert!(store.append_batch(&[]).await.expect("empty batch").is_empty());
}

/// Twelve events with known attributes at known times.
async fn seed_twelve(store: &dyn EventStore) -> Vec<Envelope<serde_json::Value>> {
    let mut envs = Vec::new();
    for i in 0..12usize {
        let mut e = Event::new(if i % 3 == 0 { "conf.login" } else { "conf.logout" })
            .with_data(json!({ "i": i }))
            .with_source(if i < 6 { "/web" } else { "/mobile" })
            .with_subject(format!("user/{}", i % 4))
            .with_correlation_id(format!("flow-{}", i / 4))
            .with_tenant(if i % 2 == 0 { "even" } else { "odd" });
        e.timestamp = t(i as i64);
        envs.push(e);
    }
    append_all(store, &envs).await;
    envs
}

fn data_indexes(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.event.data["i"].as_u64().expect("i")).collect()
}

async fn query_filters_select_exactly_the_matching_events(store: &dyn EventStore) {
    seed_twelve(store).await;
    let q = || store.query();
    assert_eq!(data_indexes(&q().fetch().await.unwrap()), (0..12).collect::<Vec<_>>());
    assert_eq!(data_indexes(&q().event_type("conf.login").fetch().await.unwrap()), [0, 3, 6, 9]);
    assert_eq!(
        data_indexes(&q().event_types(["conf.login", "conf.logout"]).limit(3).fetch().await.unwrap()),
        [0, 1, 2]
    );
    assert_eq!(data_indexes(&q().source("/mobile").fetch().await.unwrap()), [6, 7, 8, 9, 10, 11]);
    assert_eq!(data_indexes(&q().subject("user/1").fetch().await.unwrap()), [1, 5, 9]);
    assert_eq!(data_indexes(&q().correlation_id("flow-2").fetch().await.unwrap()), [8, 9, 10, 11]);
    assert_eq!(data_indexes(&q().tenant("odd").source("/web").fetch().await.unwrap()), [1, 3, 5]);
    assert_eq!(data_indexes(&q().since(t(3)).until(t(6)).fetch().await.unwrap()), [3, 4, 5], "since ≤ t < until");
    assert_eq!(data_indexes(&q().newest_first().limit(2).fetch().await.unwrap()), [11, 10]);
    assert_eq!(
        data_indexes(&q().event_type("conf.logout").tenant("even").since(t(4)).fetch().await.unwrap()),
        [4, 8, 10]
    );

    let all = q().fetch().await.unwrap();
    let p4 = all[4].position;
    assert_eq!(data_indexes(&q().after_position(p4).limit(3).fetch().await.unwrap()), [5, 6, 7]);
    assert_eq!(data_indexes(&q().after_position(p4).order(Order::Descending).fetch().await.unwrap()), [3, 2, 1, 0]);

    assert_eq!(q().count().await.unwrap(), 12);
    assert_eq!(q().event_type("conf.login").count().await.unwrap(), 4);
    assert_eq!(q().tenant("nobody").count().await.unwrap(), 0);
    assert_eq!(q().source("/mobile").first().await.unwrap().map(|e| e.event.data["i"].clone()), Some(json!(6)));
    assert!(q().event_type("conf.none").fetch().await.unwrap().is_empty());
}

async fn stream_pages_through_more_events_than_a_page(store: &dyn EventStore) {
    let total = 2_345usize;
    let envs: Vec<Event> = (0..total).map(|i| Event::new("conf.bulk").with_data(json!({ "i": i }))).collect();
    for chunk in envs.chunks(500) {
        append_all(store, chunk).await;
    }
    let mut stream = store.query().event_type("conf.bulk").stream();
    let mut seen = Vec::with_capacity(total);
    while let Some(e) = stream.next().await {
        seen.push(e.expect("stream item"));
    }
    assert_eq!(seen.len(), total);
    assert_eq!(data_indexes(&seen), (0..total as u64).collect::<Vec<_>>());
    assert_increasing(&positions(&seen));

    let limited: Vec<_> = store.query().limit(1_500).stream().collect().await;
    assert_eq!(limited.len(), 1_500);
    let last = seen[total - 1].position;
    let newest: Vec<StoredEvent> = store
        .query()
        .newest_first()
        .after_position(last)
        .limit(1_200)
        .stream()
        .map(|r| r.expect("item"))
        .collect()
        .await;
    assert_eq!(newest.len(), 1_200);
    assert_eq!(newest[0].event.data["i"], json!(total - 2));
    assert!(newest.windows(2).all(|w| w[0].position > w[1].position));
}

async fn concurrent_appenders_lose_nothing_and_a_tail_reader_never_misses(store: Arc<dyn EventStore>) {
    const TASKS: usize = 8;
    const BATCHES: usize = 25;
    const PER_BATCH: usize = 4;
    let total = TASKS * BATCHES * PER_BATCH;

    let tail_store = Arc::clone(&store);
    let tail = tokio::spawn(async move {
        let mut last = 0u64;
        let mut seen: Vec<StoredEvent> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < total && tokio::time::Instant::now() < deadline {
            let page = tail_store.query().event_type("conf.concurrent").after_position(last).limit(100).fetch().await;
            let page = page.expect("tail fetch");
            if page.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for e in page {
                assert!(e.position > last, "tail went backwards: {} after {last}", e.position);
                last = e.position;
                seen.push(e);
            }
        }
        seen
    });

    let mut appenders = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        appenders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for batch in 0..BATCHES {
                let envs: Vec<Event> = (0..PER_BATCH)
                    .map(|k| {
                        Event::new("conf.concurrent").with_data(json!({ "task": task, "seq": batch * PER_BATCH + k }))
                    })
                    .collect();
                let out = append_all(&*store, &envs).await;
                assert!(out.iter().all(|o| !o.is_duplicate()));
                ids.extend(envs.iter().map(|e| e.id).zip(out.iter().map(AppendOutcome::position)));
            }
            ids
        }));
    }
    let mut appended: HashMap<uuid::Uuid, u64> = HashMap::new();
    for a in appenders {
        let ids = a.await.expect("appender");
        let per_task: Vec<u64> = ids.iter().map(|(_, p)| *p).collect();
        assert_increasing(&per_task);
        appended.extend(ids);
    }
    assert_eq!(appended.len(), total);
    let all_positions: HashSet<u64> = appended.values().copied().collect();
    assert_eq!(all_positions.len(), total, "every event has its own position");
    assert_eq!(store.query().event_type("conf.concurrent").count().await.expect("count"), total as u64);

    let seen = tail.await.expect("tail");
    assert_eq!(seen.len(), total, "the tail reader saw every event exactly once");
    let seen_ids: HashSet<uuid::Uuid> = seen.iter().map(|e| e.event.id).collect();
    assert_eq!(seen_ids.len(), total);
    for e in &seen {
        assert_eq!(appended.get(&e.event.id), Some(&e.position), "position reported at append = position read");
    }
}

async fn stored_events_read_back_as_typed_events(store: &dyn EventStore) {
    let e = user(7).with_tenant("acme");
    append_one(store, &e).await;
    let stored = store.query().event_type("conf.user.created").first().await.expect("query").expect("one");
    let typed: Envelope<UserCreated> = stored.into_typed().expect("reads as UserCreated");
    assert_eq!(typed.data, e.data);
    assert_eq!(typed.id, e.id);
    assert_eq!(typed.metadata.tenant.as_deref(), Some("acme"));
}

async fn the_seed_query_api_works_through_the_bus(store: Arc<dyn EventStore>) {
    let start = Utc::now() - chrono::Duration::seconds(1);
    let bus = EventBus::builder().store_arc(Arc::clone(&store)).try_build().await.expect("bus");
    let receipt = bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123", "email": "a@b.c" }))).await;
    let receipt = receipt.expect("emit");
    assert!(receipt.position.is_some());
    let events = store.query().event_type("user.created").since(start).fetch().await.expect("query");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.id, receipt.id);
    assert_eq!(Some(events[0].position), receipt.position);
}

/// A CloudEvent of another producer, read and stored, reads back as it was sent: its
/// non-UUID id, its dataschema and media type, and no `time` (the SDK writes it).
async fn a_foreign_cloudevent_keeps_what_its_producer_sent(store: &dyn EventStore) {
    use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
    const SCHEMA: &str = "https://schemas.example.com/reading/v3.json";
    let sent = EventBuilderV10::new()
        .id("A234-1234-1234")
        .source("https://sensors.example.com/building/7")
        .ty("conf.reading")
        .data_with_schema("text/json", SCHEMA, json!({ "celsius": 21 }))
        .build()
        .expect("a valid CloudEvent");
    let doc = serde_json::to_value(&sent).expect("the SDK writes JSON");
    let read = Event::from_cloudevent(doc.clone()).expect("a foreign CloudEvent is readable");
    let outcome = append_one(store, &read).await;
    assert!(matches!(outcome, AppendOutcome::Stored { .. }), "{outcome:?}");
    // The same event read again is the same event: a duplicate.
    let again = Event::from_cloudevent(doc.clone()).expect("read again");
    assert_eq!(append_one(store, &again).await, AppendOutcome::Duplicate { position: outcome.position() });

    let back = store.get(read.id).await.expect("get").expect("stored").event;
    assert_eq!(back.id, read.id);
    assert_eq!(back.cloudevent_id(), "A234-1234-1234");
    assert_eq!(back.dataschema().as_deref(), Some(SCHEMA));
    assert_eq!(back.datacontenttype(), "text/json");
    assert_eq!(back.cloudevent_time(), None);
    assert_eq!(back.timestamp, read.timestamp, "the time of reading is what the store orders by");
    assert_eq!(back.metadata, read.metadata);
    let written = back.to_cloudevent().expect("written back");
    assert_eq!(written, doc, "the document as the producer wrote it");
    let theirs: cloudevents::Event = serde_json::from_value(written).expect("a valid CloudEvent");
    assert_eq!(theirs.id(), "A234-1234-1234");
    assert_eq!(theirs.time(), None);
    assert_eq!(theirs.datacontenttype(), Some("text/json"));
    assert_eq!(theirs.dataschema().map(ToString::to_string).as_deref(), Some(SCHEMA));
    // Reads by query carry them too.
    let queried = store.query().event_type("conf.reading").first().await.expect("query").expect("one");
    assert_eq!(queried.event.cloudevent_id(), "A234-1234-1234");
}

/// A store under test, and what removes its data (schema, keys, file) when the test
/// ends, pass or fail: the suite can be re-run and leaves nothing behind.
struct Fixture {
    store: Arc<dyn EventStore>,
    _cleanup: Box<dyn Send>,
}

macro_rules! conformance_suite {
    ($fresh:expr) => {
        use std::sync::Arc;

        async fn fresh() -> super::Fixture {
            $fresh.await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn appends_get_positions_and_round_trip() {
            super::appends_get_positions_and_round_trip(&*fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn appending_an_existing_id_stores_nothing_and_says_so() {
            super::appending_an_existing_id_stores_nothing_and_says_so(&*fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_batch_is_atomic_and_reports_duplicates_within_it() {
            super::a_batch_is_atomic_and_reports_duplicates_within_it(&*fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn query_filters_select_exactly_the_matching_events() {
            super::query_filters_select_exactly_the_matching_events(&*fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stream_pages_through_more_events_than_a_page() {
            super::stream_pages_through_more_events_than_a_page(&*fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_appenders_lose_nothing_and_a_tail_reader_never_misses() {
            super::concurrent_appenders_lose_nothing_and_a_tail_reader_never_misses(fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn stored_events_read_back_as_typed_events() {
            super::stored_events_read_back_as_typed_events(&*fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_foreign_cloudevent_keeps_what_its_producer_sent() {
            super::a_foreign_cloudevent_keeps_what_its_producer_sent(&*fresh().await.store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_seed_query_api_works_through_the_bus() {
            super::the_seed_query_api_works_through_the_bus(fresh().await.store).await;
        }
    };
}

mod memory {
    conformance_suite!(async {
        super::Fixture { store: Arc::new(better_auth_events::MemoryStore::new()), _cleanup: Box::new(()) }
    });
}

#[cfg(feature = "sqlite")]
mod sqlite {
    conformance_suite!(async {
        // Each test gets its own file, in a directory removed when the test ends.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("events.db");
        let store = better_auth_events::store::SqliteStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("cannot open SQLite store at {}: {e}", path.display()));
        super::Fixture { store: Arc::new(store), _cleanup: Box::new(dir) }
    });
}

#[cfg(feature = "postgres")]
mod postgres {
    conformance_suite!(async {
        use crate::support::postgres::{START, Schema, url};
        let (url, schema) = (url(), Schema::new());
        let store =
            better_auth_events::store::PostgresStore::builder(&url).schema(&schema.0).build().await.unwrap_or_else(
                |e| {
                    panic!(
                        "PostgreSQL at {url} is unreachable or refused the store ({e}); start it with `{START}` or set \
                     BAE_POSTGRES_URL"
                    )
                },
            );
        super::Fixture { store: Arc::new(store), _cleanup: Box::new(schema) }
    });
}

#[cfg(feature = "redis")]
mod redis {
    conformance_suite!(async {
        use crate::support::redis::{Prefix, START, url};
        let (url, prefix) = (url(), Prefix::new());
        let store =
            better_auth_events::store::RedisStore::builder(&url).prefix(&prefix.0).build().await.unwrap_or_else(|e| {
                panic!("Redis at {url} is unreachable ({e}); start it with `{START}` or set BAE_REDIS_URL")
            });
        super::Fixture { store: Arc::new(store), _cleanup: Box::new(prefix) }
    });
}
