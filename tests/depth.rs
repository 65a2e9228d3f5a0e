//! How deep an event's JSON may nest: what `emit`, the stores and the CloudEvents mapping
//! accept is what serde_json reads back, a deeper payload is refused before anything is
//! stored, a value nested far too deep for the stack is an error rather than a crash, and a
//! stored row that cannot be read is reported (with its position and id) without stopping
//! a stream or a replay.
//!
//! The PostgreSQL and Redis tests need the servers of `tests/support` (127.0.0.1:5432,
//! database `test`; 127.0.0.1:6379) and fail when they are unreachable. Each test works in
//! its own schema or key prefix, removed when the test ends.
#![cfg(all(feature = "sqlite", feature = "postgres", feature = "redis"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use better_auth_events::prelude::*;
use better_auth_events::replay::ReplayEngine;
use better_auth_events::store::{PostgresStore, RedisStore, SqliteStore};
use better_auth_events::{Error, ErrorChain, EventQuery, Handler, Order, StoredEvent};
use futures::StreamExt;
use serde_json::Value;
use support::postgres::Schema;
use support::redis::Prefix;
use support::resp::{Raw, Reply};

mod support;

/// The deepest payload accepted: one level less than serde_json reads (127), since a
/// CloudEvents document wraps the payload in one object.
const LIMIT: usize = better_auth_events::MAX_PAYLOAD_DEPTH;

/// Rows before the unreadable one in the reader tests: it lands last on the first page of
/// a paged read (1,000 rows), so the next page must start after it.
const BEFORE_BAD: usize = 999;

/// A JSON value nested `depth` levels (`[[…[1]…]]`), built without recursion.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// The same as JSON text, for rows written without the crate.
fn nested_text(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// Takes `v` apart one level at a time. serde_json's own `Drop` (like its `Debug`) recurses
/// once per level, which a value nested 20,000 levels deep can overflow the test thread's
/// stack with; the test must not crash on the teardown of its own data.
fn dismantle(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

fn deep_event(depth: usize) -> Event {
    Event::new("depth.test").with_data(nested(depth))
}

fn small(i: usize) -> Event {
    Event::new("depth.test").with_data(json!({ "i": i }))
}

/// Everything `stream` yields for `query`, errors included.
async fn stream_all(store: &dyn EventStore, query: EventQuery) -> Vec<better_auth_events::Result<StoredEvent>> {
    store.stream(query).collect().await
}

/// A bus with `store`, and a sync handler counting the `depth.test` events it sees.
async fn counting_bus(store: impl EventStore) -> (EventBus, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let bus = EventBus::builder()
        .store(store)
        .handler(Handler::dynamic("depth.test", HandlerOptions::new().name("count"), async move |_: &Event| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .try_build()
        .await
        .expect("bus builds");
    (bus, seen)
}

/// The emit of a payload one level past the limit fails with a validation error that says
/// how deep it is, what the limit is and what to do; no handler ran, nothing was stored.
async fn check_rejected_at_emit(store: impl EventStore + Clone) {
    let (bus, seen) = counting_bus(store.clone()).await;
    for depth in [LIMIT + 1, 128, 500] {
        let err = bus.emit(deep_event(depth)).await.expect_err("too deep");
        let Error::Validation { event_type, message } = &err else { panic!("{depth}: {err:?}") };
        assert_eq!(event_type, "depth.test");
        assert!(message.contains(&format!("nests {depth} levels deep")), "{message}");
        assert!(message.contains(&format!("the limit is {LIMIT}")), "{message}");
        assert!(message.contains("flatten"), "says what to do: {message}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "no handler saw a rejected event");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 0, "nothing stored");
    // The store refuses it too when appended directly.
    let err = store.append(&deep_event(LIMIT + 1)).await.expect_err("the store refuses it too");
    assert!(matches!(err, Error::Validation { .. }), "{err:?}");
    assert!(ErrorChain(&err).to_string().contains(&format!("the limit is {LIMIT}")), "{err}");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 0, "nothing stored");
}

/// A payload at the limit is emitted, stored, and read back equal by `fetch`, `stream`,
/// `get` and a replay; its CloudEvents document reads back too.
async fn check_limit_reads_back(store: impl EventStore + Clone) {
    let (bus, seen) = counting_bus(store.clone()).await;
    let event = deep_event(LIMIT);
    let id = event.id;
    bus.emit(event).await.expect("the deepest accepted payload is emitted");
    bus.emit(small(1)).await.expect("emit");
    let all = store.fetch(EventQuery::all()).await.expect("fetch reads it back");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].event.id, id);
    assert_eq!(all[0].event.data, nested(LIMIT), "read back equal");
    let streamed = stream_all(&store, EventQuery::all()).await;
    assert!(streamed.iter().all(Result::is_ok), "stream reads it back");
    let got = store.get(id).await.expect("get").expect("stored");
    assert_eq!(got.event.data, nested(LIMIT));

    let bytes = got.event.to_cloudevent_bytes().expect("CloudEvents bytes");
    let back = Event::from_cloudevent_slice(&bytes).expect("its CloudEvents document reads back");
    assert_eq!(back.data, nested(LIMIT));

    let report = ReplayEngine::new(store, bus.clone()).replay().execute().await.expect("replay");
    assert_eq!(report.events, 2);
    assert_eq!(seen.load(Ordering::SeqCst), 4, "two emitted, two replayed");
}

#[tokio::test]
async fn one_level_past_the_limit_is_rejected_at_emit_memory() {
    check_rejected_at_emit(MemoryStore::new()).await;
}

#[tokio::test]
async fn one_level_past_the_limit_is_rejected_at_emit_sqlite() {
    check_rejected_at_emit(SqliteStore::in_memory().await.expect("sqlite")).await;
}

#[tokio::test]
async fn one_level_past_the_limit_is_rejected_at_emit_postgres() {
    let schema = Schema::new();
    check_rejected_at_emit(postgres(&schema).await).await;
}

#[tokio::test]
async fn one_level_past_the_limit_is_rejected_at_emit_redis() {
    let prefix = Prefix::new();
    check_rejected_at_emit(redis(&prefix).await).await;
}

#[tokio::test]
async fn the_limit_reads_back_memory() {
    check_limit_reads_back(MemoryStore::new()).await;
}

#[tokio::test]
async fn the_limit_reads_back_sqlite() {
    check_limit_reads_back(SqliteStore::in_memory().await.expect("sqlite")).await;
}

#[tokio::test]
async fn the_limit_reads_back_postgres() {
    let schema = Schema::new();
    check_limit_reads_back(postgres(&schema).await).await;
}

#[tokio::test]
async fn the_limit_reads_back_redis() {
    let prefix = Prefix::new();
    check_limit_reads_back(redis(&prefix).await).await;
}

#[test]
fn serde_json_reads_one_level_more_than_a_payload_may_nest() {
    assert_eq!(LIMIT, 126);
    // The limit is serde_json's: a document of LIMIT + 1 levels (a CloudEvents document
    // around a payload at the limit) is read, one more level is refused.
    assert!(serde_json::from_str::<Value>(&nested_text(LIMIT + 1)).is_ok());
    let err = serde_json::from_str::<Value>(&nested_text(LIMIT + 2)).expect_err("too deep for serde_json");
    assert!(err.to_string().contains("recursion limit exceeded"), "{err}");
}

#[test]
fn to_cloudevent_bytes_refuses_a_payload_past_the_limit() {
    let event = deep_event(LIMIT + 1);
    let err = event.to_cloudevent_bytes().expect_err("too deep");
    assert!(ErrorChain(&err).to_string().contains(&format!("the limit is {LIMIT}")), "{err}");
    assert!(event.to_cloudevent().is_err(), "nor as a JSON value");
    let at_limit = deep_event(LIMIT).to_cloudevent_bytes().expect("at the limit");
    assert!(Event::from_cloudevent_slice(&at_limit).is_ok());
}

/// Levels of the value that no code may recurse over: far more than any stack holds.
const VERY_DEEP: usize = 20_000;

#[tokio::test]
async fn a_value_nested_20000_levels_is_an_error_at_emit_not_a_stack_overflow() {
    // Runs on the test thread's own stack: if emit recursed over the value, the test
    // process would die of a stack overflow. The rejected payload is taken apart without
    // recursion by the bus; nothing is left for this test to drop.
    let store = SqliteStore::in_memory().await.expect("sqlite");
    let (bus, seen) = counting_bus(store.clone()).await;
    let err = bus.emit(deep_event(VERY_DEEP)).await.expect_err("too deep");
    assert!(matches!(err, Error::Validation { .. }), "{err}");
    assert!(err.to_string().contains(&format!("nests {VERY_DEEP} levels deep")), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 0);

    let bus = EventBus::builder().try_build().await.expect("a bus without a store");
    let err = bus.emit(deep_event(VERY_DEEP)).await.expect_err("too deep without a store too");
    assert!(matches!(err, Error::Validation { .. }), "{err}");
}

#[test]
fn a_value_nested_20000_levels_is_an_error_in_to_cloudevent_bytes_not_a_stack_overflow() {
    let mut event = deep_event(VERY_DEEP);
    let err = event.to_cloudevent_bytes().expect_err("too deep");
    assert!(ErrorChain(&err).to_string().contains(&format!("the limit is {LIMIT}")), "{err}");
    assert!(event.to_cloudevent().is_err());

    // A typed payload holding the value: the serialization stops at the limit.
    #[derive(Serialize)]
    struct Holder {
        tree: Value,
    }
    let typed = Event::new("depth.test").map(|_| Holder { tree: std::mem::take(&mut event.data) });
    let err = typed.to_cloudevent_bytes().expect_err("too deep inside a typed payload");
    assert!(ErrorChain(&err).to_string().contains(&format!("the limit is {LIMIT}")), "{err}");
    dismantle(typed.data.tree);
}

/// A typed event with a free-form JSON field: its payload is one level deeper than the field.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "depth.typed")]
struct Tree {
    tree: Value,
}

#[tokio::test]
async fn a_typed_payload_is_held_to_the_same_limit_when_stored() {
    let store = SqliteStore::in_memory().await.expect("sqlite");
    let bus = EventBus::builder().store(store.clone()).try_build().await.expect("bus");
    let err = bus.emit(Tree { tree: nested(LIMIT) }).await.expect_err("one level too deep with its struct");
    let Error::Validation { event_type, message } = &err else { panic!("{err:?}") };
    assert_eq!(event_type, "depth.typed");
    assert!(message.contains(&format!("the limit is {LIMIT}")), "{message}");
    assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 0, "nothing stored");
    let memory = MemoryStore::new();
    let err = memory.append(&Envelope::of(Tree { tree: nested(LIMIT) })).await.expect_err("memory refuses it too");
    assert!(matches!(err, Error::Validation { .. }), "{err:?}");

    let at_limit = Tree { tree: nested(LIMIT - 1) };
    bus.emit(at_limit.clone()).await.expect("at the limit");
    let stored = store.query().fetch().await.expect("fetch");
    let back = stored.into_iter().next().expect("stored").into_typed::<Tree>().expect("reads back typed");
    assert_eq!(back.data, at_limit);
}

#[tokio::test]
async fn an_extension_attribute_too_deep_to_store_is_rejected_at_emit() {
    let store = MemoryStore::new();
    let bus = EventBus::builder().store(store.clone()).try_build().await.expect("bus");
    // The stored metadata holds an extension two levels down: {"extensions": {"name": value}}.
    let mut event = small(1);
    event.metadata.extensions.insert("trail".into(), nested(LIMIT));
    let err = bus.emit(event).await.expect_err("too deep to store");
    let Error::Validation { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.contains("extension attribute `trail` nests 126 levels deep"), "{message}");
    assert!(message.contains(&format!("the limit is {}", LIMIT - 1)), "{message}");
    // Within the depth limit, a nested value is still no CloudEvents attribute type.
    let mut event = small(2);
    event.metadata.extensions.insert("trail".into(), nested(LIMIT - 1));
    let err = bus.emit(event).await.expect_err("an array is not a CloudEvents attribute type");
    let Error::Validation { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.contains("extension attribute `trail` is an array"), "{message}");
    assert!(!message.contains("[[["), "the value is not quoted: {message}");
    assert_eq!(store.query().count().await.expect("count"), 0);
}

/// JSON nested `self.0` levels deep, made as it is serialized: the serializer recurses once
/// per level, but there is no deep value to drop (dropping a `Value` nested 20,000 levels
/// recurses as deep, which the library cannot avoid for a typed payload it owns).
#[derive(Debug, Clone, Default, PartialEq)]
struct Generated(usize);

impl Serialize for Generated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        if self.0 == 0 {
            return s.serialize_u8(1);
        }
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&Generated(self.0 - 1))?;
        seq.end()
    }
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "depth.generated")]
struct GeneratedTree {
    #[serde(skip_deserializing)]
    #[schemars(with = "Value")]
    tree: Generated,
}

#[tokio::test]
async fn a_typed_payload_nested_20000_levels_is_an_error_at_emit_not_a_stack_overflow() {
    let deep = || GeneratedTree { tree: Generated(VERY_DEEP) };
    let sqlite = SqliteStore::in_memory().await.expect("sqlite");
    let memory = MemoryStore::new();
    for store in [Arc::new(sqlite) as Arc<dyn EventStore>, Arc::new(memory)] {
        let bus = EventBus::builder().store(Arc::clone(&store)).try_build().await.expect("bus");
        let err = bus.emit(deep()).await.expect_err("too deep");
        let Error::Validation { message, .. } = &err else { panic!("{}: {err:?}", store.name()) };
        assert!(message.contains(&format!("nests more than {LIMIT} levels deep")), "{message}");
        assert_eq!(store.count(&EventQuery::all()).await.expect("count"), 0, "nothing stored");
    }
    let err = Envelope::of(deep()).to_cloudevent_bytes().expect_err("too deep");
    assert!(matches!(err, Error::Validation { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// Unreadable rows: written behind the crate's back, each store reports them and reads on.
// ---------------------------------------------------------------------------------------

/// A payload serde_json cannot read back.
const UNREADABLE_DEPTH: usize = 200;

/// Checks every read of `store`, which holds `BEFORE_BAD` readable events, then the
/// unreadable row `bad_id` at position `BEFORE_BAD + 1`, then two readable events.
async fn check_reads_past_the_bad_row(store: impl EventStore + Clone, bad_id: &str) {
    let bad_position = BEFORE_BAD as u64 + 1;
    let name = store.name().to_owned();
    let check_error = |e: &Error| {
        let Error::UnreadableEvent { store, position, id, .. } = e else { panic!("not an unreadable event: {e:?}") };
        assert_eq!((store.as_str(), *position, id.as_deref()), (name.as_str(), bad_position, Some(bad_id)));
        let text = ErrorChain(e).to_string();
        assert!(text.contains(&format!("`{name}`")), "names the store: {text}");
        assert!(text.contains(&format!("position {bad_position}")), "names the position: {text}");
        assert!(text.contains(bad_id), "names the id: {text}");
        assert!(text.contains("recursion limit exceeded"), "names the cause: {text}");
    };

    // Oldest first: every row, the bad one as an error in its place.
    let items = stream_all(&store, EventQuery::all()).await;
    assert_eq!(items.len(), BEFORE_BAD + 3, "the stream goes on past the unreadable row");
    for (i, item) in items.iter().enumerate() {
        let position = i as u64 + 1;
        match item {
            Ok(e) => assert_eq!(e.position, position),
            Err(e) => {
                assert_eq!(position, bad_position, "only the bad row fails: {e}");
                check_error(e);
            }
        }
    }
    assert_eq!(items.iter().filter(|i| i.is_err()).count(), 1);

    // Newest first, and from just before it.
    let mut newest_first = EventQuery::all();
    newest_first.order = Order::Descending;
    let newest = stream_all(&store, newest_first).await;
    assert_eq!(newest.len(), BEFORE_BAD + 3);
    assert!(newest[2].is_err() && newest[3].is_ok(), "the stream goes on past it, newest first");
    let mut from_before = EventQuery::all();
    from_before.after_position = Some(bad_position - 1);
    let tail = stream_all(&store, from_before).await;
    assert_eq!(tail.len(), 3);
    assert!(tail[0].is_err() && tail[1].is_ok() && tail[2].is_ok());

    // `fetch` collects, so it stops at the first error; `stream` is the way past it.
    let err = store.fetch(EventQuery::all()).await.expect_err("fetch reports the row");
    check_error(&err);

    // A replay reports the row and replays the others; stopping on errors stops there.
    let (bus, seen) = counting_bus(MemoryStore::new()).await;
    let engine = ReplayEngine::new(store, bus);
    let report = engine.replay().execute().await.expect("the replay goes on past the row");
    assert_eq!(report.events, BEFORE_BAD as u64 + 2);
    assert_eq!(seen.load(Ordering::SeqCst), BEFORE_BAD + 2, "every readable event was replayed");
    assert_eq!(report.last_position, Some(bad_position + 2));
    assert_eq!(report.unreadable, 1);
    let [skipped] = &report.unreadable_events[..] else { panic!("{:?}", report.unreadable_events) };
    assert_eq!((skipped.position, skipped.event_id.as_deref()), (bad_position, Some(bad_id)));
    assert!(skipped.error.contains("recursion limit exceeded"), "{}", skipped.error);
    let dry = engine.replay().dry_run().execute().await.expect("a dry run goes on past it too");
    assert_eq!((dry.events, dry.unreadable), (BEFORE_BAD as u64 + 2, 1));
    let err = engine.replay().stop_on_error(true).execute().await.expect_err("stops at the row");
    check_error(&err);
}

/// `n` readable events, appended in one batch.
async fn append_small(store: &dyn EventStore, range: std::ops::Range<usize>) {
    let events: Vec<Event> = range.map(small).collect();
    let refs: Vec<&Envelope<dyn EventData>> = events.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    store.append_batch(&refs).await.expect("append");
}

#[tokio::test]
async fn an_unreadable_row_is_reported_and_the_stream_goes_on_sqlite() {
    let store = SqliteStore::in_memory().await.expect("sqlite");
    append_small(&store, 0..BEFORE_BAD).await;
    let bad_id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO event_store (id, event_type, source, data, metadata, timestamp) \
         VALUES (?, 'depth.test', '/raw', ?, '{}', '2026-01-01T00:00:00.000000Z')",
    )
    .bind(&bad_id)
    .bind(nested_text(UNREADABLE_DEPTH))
    .execute(store.pool())
    .await
    .expect("raw insert");
    append_small(&store, 1000..1002).await;
    check_reads_past_the_bad_row(store, &bad_id).await;
}

#[tokio::test]
async fn an_unreadable_row_is_reported_and_the_stream_goes_on_postgres() {
    let schema = Schema::new();
    let store = postgres(&schema).await;
    append_small(&store, 0..BEFORE_BAD).await;
    let bad_id = uuid::Uuid::now_v7().to_string();
    // PostgreSQL itself takes the deep document as JSONB; serde_json cannot read it back.
    sqlx::query(&format!(
        "INSERT INTO \"{}\".event_store (id, event_type, source, data, metadata, timestamp) \
         VALUES ($1, 'depth.test', '/raw', $2::jsonb, '{{}}'::jsonb, now())",
        schema.0
    ))
    .bind(&bad_id)
    .bind(nested_text(UNREADABLE_DEPTH))
    .execute(store.pool())
    .await
    .expect("raw insert");
    append_small(&store, 1000..1002).await;
    check_reads_past_the_bad_row(store, &bad_id).await;
}

#[tokio::test]
async fn an_unreadable_row_is_reported_and_the_stream_goes_on_redis() {
    let prefix = Prefix::new();
    let store = redis(&prefix).await;
    append_small(&store, 0..BEFORE_BAD).await;
    let bad_id = uuid::Uuid::now_v7().to_string();
    let position = (BEFORE_BAD + 1).to_string();
    let mut raw = redis_raw();
    let data = nested_text(UNREADABLE_DEPTH);
    let entry = format!("0-{position}");
    let fields = [
        "id",
        bad_id.as_str(),
        "type",
        "depth.test",
        "source",
        "/raw",
        "ts",
        "2026-01-01T00:00:00.000000Z",
        "data",
        data.as_str(),
        "metadata",
        "{}",
    ];
    let events_key = prefix.key("events");
    let mut xadd = vec!["XADD", events_key.as_str(), entry.as_str()];
    xadd.extend(fields);
    assert!(matches!(raw.cmd(&xadd).expect("XADD"), Reply::Bytes(_)), "raw entry written");
    raw.cmd(&["HSET", &prefix.key("ids"), &bad_id, &position]).expect("HSET");
    raw.cmd(&["SET", &prefix.key("position"), &position]).expect("SET");
    append_small(&store, 1000..1002).await;
    check_reads_past_the_bad_row(store, &bad_id).await;
}

// ---------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------

async fn postgres(schema: &Schema) -> PostgresStore {
    let url = support::postgres::url();
    PostgresStore::builder(&url).schema(&schema.0).build().await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {url} is unreachable or refused the store ({e}); start it with `{}` or set BAE_POSTGRES_URL",
            support::postgres::START
        )
    })
}

async fn redis(prefix: &Prefix) -> RedisStore {
    let url = support::redis::url();
    RedisStore::builder(&url).prefix(&prefix.0).build().await.unwrap_or_else(|e| {
        panic!("Redis at {url} is unreachable ({e}); start it with `{}` or set BAE_REDIS_URL", support::redis::START)
    })
}

fn redis_raw() -> Raw {
    let addr = support::redis::addr();
    Raw::connect(&addr).unwrap_or_else(|e| {
        panic!("Redis at {addr} is unreachable ({e}); start it with `{}` or set BAE_REDIS_URL", support::redis::START)
    })
}
