//! `RedisStore` beyond the conformance suite: connection failures, persistence across store
//! instances, prefix isolation, the documented key layout (read with plain Redis commands),
//! big atomic batches and the checks made before writing.
//!
//! Needs Redis at 127.0.0.1:6379 (or `BAE_REDIS_URL`, a `redis://host:port` URL without
//! password). Each test works under its own prefix `bae_test:<uuid>` and deletes its keys.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use better_auth_events::prelude::*;
use better_auth_events::store::RedisStore;
use better_auth_events::{AppendOutcome, Error, ErrorChain, EventQuery};
use support::redis::{Prefix, START, addr, url};
use support::resp::{Raw, Reply};

mod support;

async fn open(prefix: &Prefix) -> RedisStore {
    let url = url();
    RedisStore::builder(&url)
        .prefix(&prefix.0)
        .build()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e}); start it with `{START}` or set BAE_REDIS_URL"))
}

fn raw() -> Raw {
    let addr = addr();
    Raw::connect(&addr).unwrap_or_else(|e| {
        panic!("Redis at {addr} is unreachable ({e}); start it with `{START}` or set BAE_REDIS_URL")
    })
}

fn dynamic(i: usize) -> Event {
    Event::new("test.redis").with_data(json!({ "i": i }))
}

async fn append_all(store: &RedisStore, events: &[Event]) -> better_auth_events::Result<Vec<AppendOutcome>> {
    let refs: Vec<&Envelope<dyn EventData>> = events.iter().map(|e| e as &Envelope<dyn EventData>).collect();
    store.append_batch(&refs).await
}

#[tokio::test]
async fn an_unreachable_server_is_a_store_error_naming_the_url_and_comes_quickly() {
    let started = Instant::now();
    let err = RedisStore::builder("redis://127.0.0.1:1").build().await.expect_err("nothing listens on port 1");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("redis://127.0.0.1:1"), "{text}");
    assert!(text.contains("cannot connect"), "{text}");

    // A password never shows in the message.
    let err = RedisStore::new("redis://:hunter2@127.0.0.1:1").await.expect_err("unreachable");
    assert!(!ErrorChain(&err).to_string().contains("hunter2"), "{err:?}");

    // An address that never answers (TEST-NET-1, RFC 5737) fails within the connect timeout.
    let started = Instant::now();
    let err = RedisStore::builder("redis://192.0.2.1:6379")
        .connect_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("no server there");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(ErrorChain(&err).to_string().contains("192.0.2.1:6379"), "{err:?}");
}

#[tokio::test]
async fn events_survive_a_new_store_on_the_same_prefix() {
    let prefix = Prefix::new();
    let events: Vec<Event> = (0..10).map(dynamic).collect();
    {
        let store = open(&prefix).await;
        let out = append_all(&store, &events).await.expect("append");
        assert_eq!(out.iter().map(AppendOutcome::position).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    }
    let store = open(&prefix).await;
    assert_eq!(store.count(&EventQuery::all()).await.unwrap(), 10);
    let back = store.query().fetch().await.unwrap();
    assert_eq!(back.iter().map(|e| e.event.id).collect::<Vec<_>>(), events.iter().map(|e| e.id).collect::<Vec<_>>());
    let got = store.get(events[3].id).await.unwrap().expect("stored");
    assert_eq!((got.position, got.event.data), (4, json!({ "i": 3 })));
    // The new store knows the ids and the position the old one wrote.
    let again = store.append(&events[0] as &Envelope<dyn EventData>).await.unwrap();
    assert_eq!(again, AppendOutcome::Duplicate { position: 1 });
    let next = store.append(&dynamic(10) as &Envelope<dyn EventData>).await.unwrap();
    assert_eq!(next, AppendOutcome::Stored { position: 11 });
}

#[tokio::test]
async fn two_prefixes_are_isolated() {
    let (pa, pb) = (Prefix::new(), Prefix::new());
    let (a, b) = (open(&pa).await, open(&pb).await);
    let shared = dynamic(0);
    append_all(&a, &[shared.clone(), dynamic(1), dynamic(2)]).await.unwrap();
    assert_eq!(b.count(&EventQuery::all()).await.unwrap(), 0);
    assert!(b.get(shared.id).await.unwrap().is_none());
    assert!(b.query().fetch().await.unwrap().is_empty());
    // The same event in the other store is new there, at its own first position.
    let out = b.append(&shared as &Envelope<dyn EventData>).await.unwrap();
    assert_eq!(out, AppendOutcome::Stored { position: 1 });
    assert_eq!(a.count(&EventQuery::all()).await.unwrap(), 3);
    assert_eq!(b.count(&EventQuery::all()).await.unwrap(), 1);
    assert_eq!(a.stream_key(), pa.key("events"));
}

#[tokio::test]
async fn the_stream_reads_with_plain_xrange_as_documented() {
    let prefix = Prefix::new();
    let store = open(&prefix).await;
    let full = Event::new("user.created")
        .with_data(json!({ "user_id": "u1" }))
        .with_version("2.0.0")
        .with_source("/auth")
        .with_subject("user/u1")
        .with_tenant("acme")
        .with_correlation_id("flow-1");
    let bare = Event::new("user.deleted");
    append_all(&store, &[full.clone(), bare.clone()]).await.unwrap();

    let mut raw = raw();
    let events_key = prefix.key("events");
    let Reply::Array(entries) = raw.cmd(&["XRANGE", &events_key, "-", "+"]).unwrap() else { panic!("not an array") };
    assert_eq!(entries.len(), 2);
    let entry = |reply: &Reply| -> (String, Vec<(String, String)>) {
        let Reply::Array(parts) = reply else { panic!("entry is not an array") };
        let Reply::Array(fields) = &parts[1] else { panic!("fields are not an array") };
        let fields: Vec<String> = fields.iter().map(Reply::text).collect();
        (parts[0].text(), fields.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect())
    };

    let (id, fields) = entry(&entries[0]);
    assert_eq!(id, "0-1", "entry ids are 0-<position>");
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["id", "type", "source", "subject", "version", "tenant", "correlation_id", "ts", "data", "metadata"]
    );
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).expect(name);
    assert_eq!(field("id"), full.id.to_string());
    assert_eq!(field("type"), "user.created");
    assert_eq!(field("source"), "/auth");
    assert_eq!(field("subject"), "user/u1");
    assert_eq!(field("version"), "2.0.0");
    assert_eq!(field("tenant"), "acme");
    assert_eq!(field("correlation_id"), "flow-1");
    assert_eq!(field("ts"), full.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let ts = field("ts");
    assert!(ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "6 fractional digits, UTC: {ts}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&field("data")).unwrap(), full.data);
    let metadata: serde_json::Value = serde_json::from_str(&field("metadata")).unwrap();
    assert_eq!(metadata["tenant"], "acme");
    assert_eq!(metadata["correlation_id"], "flow-1");

    let (id, fields) = entry(&entries[1]);
    assert_eq!(id, "0-2");
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["id", "type", "source", "ts", "data", "metadata"], "absent optional fields are left out");

    // Reading by position is a direct range; the id index and the counter are plain keys.
    let Reply::Array(one) = raw.cmd(&["XRANGE", &events_key, "0-2", "0-2"]).unwrap() else { panic!() };
    assert_eq!(entry(&one[0]).1[0].1, bare.id.to_string());
    assert_eq!(raw.cmd(&["HGET", &prefix.key("ids"), &full.id.to_string()]).unwrap().text(), "1");
    assert_eq!(raw.cmd(&["GET", &prefix.key("position")]).unwrap().text(), "2");
    assert_eq!(raw.cmd(&["TYPE", &events_key]).unwrap().text(), "stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_is_atomic_and_correct() {
    const N: usize = 5_000;
    let prefix = Prefix::new();
    let store = open(&prefix).await;
    let before = dynamic(usize::MAX);
    store.append(&before as &Envelope<dyn EventData>).await.unwrap();

    let mut batch: Vec<Event> =
        (0..N).map(|i| dynamic(i).with_tenant(if i % 2 == 0 { "even" } else { "odd" })).collect();
    batch.push(before.clone()); // stored before the batch
    batch.push(batch[10].clone()); // repeated within the batch

    // A reader on its own connection: it must see the stream before the batch or after it,
    // never in between.
    let reader = open(&prefix).await;
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Acquire) {
                seen.push(reader.count(&EventQuery::all()).await.expect("count"));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let out = append_all(&store, &batch).await.expect("append");
    done.store(true, Ordering::Release);
    let seen = watch.await.unwrap();
    assert!(seen.iter().all(|&n| n == 1 || n == N as u64 + 1), "a reader saw a partial batch: {seen:?}");

    assert_eq!(out.len(), N + 2);
    let stored: Vec<u64> = out[..N]
        .iter()
        .map(|o| match o {
            AppendOutcome::Stored { position } => *position,
            other => panic!("expected stored, got {other:?}"),
        })
        .collect();
    assert_eq!(stored, (2..=N as u64 + 1).collect::<Vec<_>>(), "consecutive positions in input order");
    assert_eq!(out[N], AppendOutcome::Duplicate { position: 1 });
    assert_eq!(out[N + 1], AppendOutcome::Duplicate { position: 12 });

    assert_eq!(store.count(&EventQuery::all()).await.unwrap(), N as u64 + 1);
    assert_eq!(store.query().tenant("odd").count().await.unwrap(), N as u64 / 2);
    let back = store.query().after_position(1).fetch().await.unwrap();
    assert_eq!(back.len(), N);
    for (i, e) in back.iter().enumerate() {
        assert_eq!((e.position, e.event.id), (i as u64 + 2, batch[i].id));
    }

    // A batch of 5,000 whose last payload cannot be serialized stores nothing.
    let fine: Vec<Event> = (N..2 * N).map(dynamic).collect();
    let poison = Envelope::of(Poison { poison: true });
    let refs: Vec<&Envelope<dyn EventData>> = fine
        .iter()
        .map(|e| e as &Envelope<dyn EventData>)
        .chain(std::iter::once(&poison as &Envelope<dyn EventData>))
        .collect();
    let err = store.append_batch(&refs).await.expect_err("poisoned");
    assert!(matches!(err, Error::Serialization { .. }), "{err:?}");
    assert_eq!(store.count(&EventQuery::all()).await.unwrap(), N as u64 + 1);
}

#[tokio::test]
async fn an_oversized_event_fails_the_batch_before_anything_is_sent() {
    let prefix = Prefix::new();
    let store = RedisStore::builder(url()).prefix(&prefix.0).max_event_bytes(4096).build().await.expect("connects");
    let small = dynamic(0);
    let big = Event::new("test.big").with_data(json!({ "blob": "x".repeat(8192) }));
    let err = append_all(&store, &[small.clone(), big]).await.expect_err("too big");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert!(ErrorChain(&err).to_string().contains("max_event_bytes"), "{err:?}");
    assert!(store.get(small.id).await.unwrap().is_none());
    assert_eq!(store.count(&EventQuery::all()).await.unwrap(), 0);
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_reported_at_build() {
    let prefix = Prefix::new();
    raw().cmd(&["SET", &prefix.key("events"), "not a stream"]).unwrap();
    let err = RedisStore::builder(url()).prefix(&prefix.0).build().await.expect_err("wrong type");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("not a stream") && text.contains(&prefix.key("events")), "{text}");
}

#[tokio::test]
async fn a_lost_counter_resumes_after_the_stream_and_a_foreign_entry_blocks_appends_cleanly() {
    let prefix = Prefix::new();
    let store = open(&prefix).await;
    append_all(&store, &[dynamic(0), dynamic(1), dynamic(2)]).await.unwrap();
    let mut raw = raw();
    raw.cmd(&["DEL", &prefix.key("position")]).unwrap();
    let out = store.append(&dynamic(3) as &Envelope<dyn EventData>).await.unwrap();
    assert_eq!(out, AppendOutcome::Stored { position: 4 }, "positions continue after the stream's last entry");

    // An entry some other program added (auto id) makes the next append fail, and the
    // script fails before writing anything.
    raw.cmd(&["XADD", &prefix.key("events"), "*", "foo", "bar"]).unwrap();
    let event = dynamic(4);
    let err = store.append(&event as &Envelope<dyn EventData>).await.expect_err("foreign entry");
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert_eq!(raw.cmd(&["HLEN", &prefix.key("ids")]).unwrap(), Reply::Int(4), "no id written");
    assert_eq!(raw.cmd(&["GET", &prefix.key("position")]).unwrap().text(), "4");
    // Reading it is an error naming the entry, not a panic.
    let err = store.query().fetch().await.expect_err("foreign entry");
    assert!(ErrorChain(&err).to_string().contains("did not write"), "{err:?}");
}

/// An event whose payload cannot be serialized.
#[derive(Event, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.poison")]
struct Poison {
    poison: bool,
}

impl Serialize for Poison {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.poison {
            return Err(serde::ser::Error::custom("poisoned payload"));
        }
        let mut st = s.serialize_struct("Poison", 1)?;
        st.serialize_field("poison", &self.poison)?;
        st.end()
    }
}
