//! `RedisStreams`, the Redis Streams broker, at the transport level: publish, consumer
//! groups per handler, ack / retry / dead / release, the visibility timeout, deduplication,
//! and CloudEvents both ways with plain Redis commands and the official SDK.
//!
//! Needs Redis at 127.0.0.1:6379 (or `BAE_REDIS_URL`, a `redis://host:port` URL without
//! password); fails when it is unreachable. Each test uses its own stream
//! `bae_test:<uuid>:events` and deletes every key under `bae_test:<uuid>` when it ends.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use better_auth_events::prelude::*;
use better_auth_events::{Error, ErrorChain};
use better_auth_events_runtime::broker::{Broker, Consumer, Inbound, Outgoing, RedisStreams, Subscription};
use cloudevents::AttributesReader;
use support::redis::{Prefix, START, addr, url};
use support::resp::{Raw, Reply};
use uuid::Uuid;

mod support;

/// A broker on a stream of its own, deleted with the prefix.
struct Setup {
    prefix: Prefix,
    broker: RedisStreams,
}

impl Setup {
    async fn new() -> Self {
        Self::with(|b| b).await
    }

    async fn with(
        configure: impl FnOnce(
            better_auth_events_runtime::broker::RedisStreamsBuilder,
        ) -> better_auth_events_runtime::broker::RedisStreamsBuilder,
    ) -> Self {
        let prefix = Prefix::new();
        let url = url();
        let broker =
            configure(RedisStreams::builder().url(&url).stream(prefix.key("events"))).build().await.unwrap_or_else(
                |e| panic!("Redis at {url} is unreachable ({e}); start it with `{START}` or set BAE_REDIS_URL"),
            );
        Self { prefix, broker }
    }

    fn stream(&self) -> String {
        self.prefix.key("events")
    }

    async fn publish(&self, e: &Event) {
        self.broker.publish(&Outgoing::new(e).expect("outgoing")).await.expect("publish");
    }

    async fn consumer(&self, group: &str, types: &[&str], visibility: Duration) -> Box<dyn Consumer> {
        let sub = Subscription::new(group, types.iter().copied()).with_visibility_timeout(visibility);
        self.broker.subscribe(&sub).await.expect("subscribe")
    }
}

fn raw() -> Raw {
    let addr = addr();
    Raw::connect(&addr).unwrap_or_else(|e| {
        panic!("Redis at {addr} is unreachable ({e}); start it with `{START}` or set BAE_REDIS_URL")
    })
}

fn int(reply: Reply) -> i64 {
    match reply {
        Reply::Int(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// The entries of `key` as (id, fields) read with `XRANGE key - +`.
fn entries(key: &str) -> Vec<(String, Vec<(String, String)>)> {
    let Reply::Array(items) = raw().cmd(&["XRANGE", key, "-", "+"]).expect("XRANGE") else { panic!("not an array") };
    items
        .into_iter()
        .map(|item| {
            let Reply::Array(mut parts) = item else { panic!("entry") };
            let Reply::Array(flat) = parts.remove(1) else { panic!("fields") };
            let id = parts.remove(0).text();
            let fields = flat.chunks(2).map(|kv| (kv[0].text(), kv[1].text())).collect();
            (id, fields)
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Entries pending for `group` (`XPENDING key group`, summary form).
fn pending(key: &str, group: &str) -> i64 {
    let Reply::Array(mut summary) = raw().cmd(&["XPENDING", key, group]).expect("XPENDING") else { panic!() };
    int(summary.remove(0))
}

fn event(event_type: &str, n: u64) -> Event {
    Event::new(event_type).with_data(json!({ "n": n })).with_subject(format!("thing/{n}"))
}

async fn fetch(consumer: &mut Box<dyn Consumer>, wait: Duration) -> Vec<Inbound> {
    consumer.fetch(16, wait).await.expect("fetch")
}

fn id_of(inbound: &Inbound) -> Uuid {
    inbound.event.as_ref().expect("a CloudEvent").id
}

const SHORT: Duration = Duration::from_millis(300);
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_unreachable_server_is_an_error_naming_the_url() {
    let started = Instant::now();
    let err = RedisStreams::builder().url("redis://127.0.0.1:1").build().await.expect_err("nothing listens on port 1");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(err, Error::Backend { .. }), "{err:?}");
    let text = ErrorChain(&err).to_string();
    assert!(text.contains("cannot connect to Redis at redis://127.0.0.1:1"), "{text}");
    let err = RedisStreams::new("redis://:hunter2@127.0.0.1:1").await.expect_err("unreachable");
    assert!(!ErrorChain(&err).to_string().contains("hunter2"), "{err:?}");
}

#[tokio::test]
async fn published_events_are_fetched_and_acked_ones_never_come_back() {
    let s = Setup::new().await;
    let mut c = s.consumer("app::emails::send_welcome", &["user.created"], Duration::from_secs(1)).await;
    let e = event("user.created", 1);
    s.publish(&e).await;

    let got = fetch(&mut c, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    let event = got[0].event.as_ref().expect("a CloudEvent");
    assert_eq!(event.id, e.id);
    assert_eq!(event.event_type.as_str(), "user.created");
    assert_eq!(event.data, json!({ "n": 1 }));
    assert_eq!(event.subject.as_deref(), Some("thing/1"));
    assert_eq!(got[0].delivery_count, 1);
    for inbound in got {
        inbound.acker.ack().await.expect("ack");
    }
    assert_eq!(pending(&s.stream(), "app::emails::send_welcome"), 0);

    // Past the visibility timeout, nothing comes back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(fetch(&mut c, SHORT).await.is_empty());
    let mut other = s.consumer("app::emails::send_welcome", &["user.created"], Duration::from_secs(1)).await;
    assert!(fetch(&mut other, SHORT).await.is_empty());
}

#[tokio::test]
async fn a_fetch_waits_for_the_first_message_and_returns_empty_when_none_comes() {
    let s = Setup::new().await;
    let mut c = s.consumer("waiter", &["a.b"], MINUTE).await;
    let started = Instant::now();
    assert!(fetch(&mut c, Duration::from_millis(500)).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());

    let e = event("a.b", 1);
    let broker = s.broker.clone();
    let late = e.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.publish(&Outgoing::new(&late).expect("outgoing")).await.expect("publish");
    });
    let started = Instant::now();
    let got = fetch(&mut c, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(id_of(&got[0]), e.id);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a blocking read wakes up on the entry: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn two_handlers_of_one_type_each_get_the_event_once_from_one_entry() {
    let s = Setup::new().await;
    let mut a = s.consumer("app::a", &["user.created"], MINUTE).await;
    let mut b = s.consumer("app::b", &["user.created"], MINUTE).await;
    let e = event("user.created", 7);
    s.publish(&e).await;

    assert_eq!(int(raw().cmd(&["XLEN", &s.stream()]).expect("XLEN")), 1, "one entry per event, not per handler");
    for c in [&mut a, &mut b] {
        let got = fetch(c, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(id_of(&got[0]), e.id);
        for inbound in got {
            inbound.acker.ack().await.expect("ack");
        }
        assert!(fetch(c, SHORT).await.is_empty());
    }
}

#[tokio::test]
async fn consumers_of_one_group_split_the_messages() {
    let s = Setup::new().await;
    let mut one = s.consumer("split", &["a.b"], MINUTE).await;
    let mut two = s.consumer("split", &["a.b"], MINUTE).await;
    for n in 0..10 {
        s.publish(&event("a.b", n)).await;
    }
    let first = one.fetch(4, Duration::from_secs(1)).await.expect("fetch");
    assert_eq!(first.len(), 4);
    let rest = two.fetch(16, Duration::from_secs(1)).await.expect("fetch");
    assert_eq!(rest.len(), 6);
    let mut ids: Vec<Uuid> = first.iter().chain(&rest).map(id_of).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
}

#[tokio::test]
async fn types_a_handler_does_not_take_are_acked_and_never_handed_out() {
    let s = Setup::new().await;
    let mut c = s.consumer("picky", &["user.created"], Duration::from_secs(1)).await;
    s.publish(&event("user.deleted", 1)).await;
    s.publish(&event("user.deleted", 2)).await;
    let wanted = event("user.created", 3);
    s.publish(&wanted).await;

    let got = fetch(&mut c, Duration::from_secs(2)).await;
    assert_eq!(got.iter().map(id_of).collect::<Vec<_>>(), [wanted.id]);
    // Only the wanted one is pending: the others were acknowledged when skipped.
    assert_eq!(pending(&s.stream(), "picky"), 1);
    drop(got);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = fetch(&mut c, Duration::from_secs(1)).await;
    assert_eq!(again.iter().map(id_of).collect::<Vec<_>>(), [wanted.id], "only the wanted one comes back");

    // Only skipped entries within the wait: the fetch keeps waiting and returns empty.
    s.publish(&event("user.deleted", 4)).await;
    for i in again {
        i.acker.ack().await.expect("ack");
    }
    assert!(fetch(&mut c, SHORT).await.is_empty());
    assert_eq!(pending(&s.stream(), "picky"), 0);
}

#[tokio::test]
async fn a_new_group_starts_with_events_published_after_it_was_created() {
    let s = Setup::new().await;
    s.publish(&event("a.b", 1)).await;
    let mut c = s.consumer("late", &["a.b"], MINUTE).await;
    let after = event("a.b", 2);
    s.publish(&after).await;
    let got = fetch(&mut c, Duration::from_secs(1)).await;
    assert_eq!(got.iter().map(id_of).collect::<Vec<_>>(), [after.id]);
    // Subscribing again (another worker of the handler) does not move the group.
    let mut again = s.consumer("late", &["a.b"], MINUTE).await;
    assert!(fetch(&mut again, SHORT).await.is_empty());
}

#[tokio::test]
async fn a_retry_comes_back_to_its_group_only_not_before_the_delay_counting_two() {
    let s = Setup::new().await;
    let mut failing = s.consumer("app::failing", &["user.created"], MINUTE).await;
    let mut fine = s.consumer("app::fine", &["user.created"], MINUTE).await;
    let e = event("user.created", 1);
    s.publish(&e).await;

    let got = fetch(&mut fine, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    for i in got {
        i.acker.ack().await.expect("ack");
    }

    let mut got = fetch(&mut failing, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    let delay = Duration::from_millis(800);
    let retried_at = Instant::now();
    got.remove(0).acker.retry(delay).await.expect("retry");

    // Not before the delay, even while fetching.
    assert!(fetch(&mut failing, Duration::from_millis(400)).await.is_empty());
    let back = fetch(&mut failing, Duration::from_secs(3)).await;
    assert!(retried_at.elapsed() >= delay, "came back after {:?}", retried_at.elapsed());
    assert!(retried_at.elapsed() < delay + Duration::from_millis(1500), "came back after {:?}", retried_at.elapsed());
    assert_eq!(back.len(), 1);
    assert_eq!(id_of(&back[0]), e.id);
    assert_eq!(back[0].delivery_count, 2);

    // The other group is not disturbed.
    assert!(fetch(&mut fine, SHORT).await.is_empty());
    assert_eq!(pending(&s.stream(), "app::fine"), 0);

    // A second retry counts three.
    let mut back = back;
    back.remove(0).acker.retry(Duration::ZERO).await.expect("retry");
    let third = fetch(&mut failing, Duration::from_secs(2)).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].delivery_count, 3);
}

#[tokio::test]
async fn a_retry_longer_than_the_visibility_timeout_is_not_redelivered_early() {
    let s = Setup::new().await;
    let visibility = Duration::from_millis(500);
    let mut c = s.consumer("slow_retry", &["a.b"], visibility).await;
    let mut other = s.consumer("slow_retry", &["a.b"], visibility).await;
    let e = event("a.b", 1);
    s.publish(&e).await;
    let mut got = fetch(&mut c, Duration::from_secs(2)).await;
    let delay = Duration::from_millis(2000);
    let retried_at = Instant::now();
    got.remove(0).acker.retry(delay).await.expect("retry");

    // Well past the visibility timeout, neither consumer gets it.
    assert!(fetch(&mut other, Duration::from_millis(1200)).await.is_empty());
    assert!(fetch(&mut c, Duration::from_millis(300)).await.is_empty());
    let back = fetch(&mut other, Duration::from_secs(3)).await;
    assert!(retried_at.elapsed() >= delay, "came back after {:?}", retried_at.elapsed());
    assert_eq!(back.len(), 1);
    assert_eq!(id_of(&back[0]), e.id);
    assert_eq!(back[0].delivery_count, 2);
}

#[tokio::test]
async fn a_message_held_by_a_dropped_consumer_goes_to_another_after_the_visibility_timeout() {
    let s = Setup::new().await;
    let visibility = Duration::from_secs(1);
    let e = event("a.b", 1);
    let mut second = s.consumer("worker", &["a.b"], visibility).await;
    {
        let mut first = s.consumer("worker", &["a.b"], visibility).await;
        s.publish(&e).await;
        let got = fetch(&mut first, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 1);
        // Dropped without settling, consumer and all.
    }
    let dropped_at = Instant::now();
    let mut back = Vec::new();
    while back.is_empty() && dropped_at.elapsed() < Duration::from_secs(5) {
        back = fetch(&mut second, Duration::from_millis(200)).await;
    }
    assert!(dropped_at.elapsed() >= Duration::from_millis(900), "redelivered after {:?}", dropped_at.elapsed());
    assert_eq!(back.len(), 1);
    assert_eq!(id_of(&back[0]), e.id);
    assert_eq!(back[0].delivery_count, 2);
}

#[tokio::test]
async fn a_dead_message_is_in_the_dead_stream_with_its_reason_and_never_comes_back() {
    let s = Setup::new().await;
    let visibility = Duration::from_millis(500);
    let mut c = s.consumer("app::doomed", &["user.created"], visibility).await;
    let e = event("user.created", 5);
    s.publish(&e).await;
    let mut got = fetch(&mut c, Duration::from_secs(2)).await;
    let original = entries(&s.stream()).remove(0).0;
    got.remove(0).acker.dead("handler failed 5 times: boom").await.expect("dead");

    let dead = entries(&format!("{}:dead", s.stream()));
    assert_eq!(dead.len(), 1);
    let fields = &dead[0].1;
    assert_eq!(field(fields, "reason"), Some("handler failed 5 times: boom"));
    assert_eq!(field(fields, "group"), Some("app::doomed"));
    assert_eq!(field(fields, "original_id"), Some(original.as_str()));
    assert_eq!(field(fields, "id"), Some(e.id.to_string().as_str()));
    assert_eq!(field(fields, "type"), Some("user.created"));
    assert_eq!(field(fields, "data"), Some(r#"{"n":5}"#));
    assert_eq!(pending(&s.stream(), "app::doomed"), 0);

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(fetch(&mut c, Duration::from_millis(500)).await.is_empty());
}

#[tokio::test]
async fn a_released_message_comes_back_at_once() {
    let s = Setup::new().await;
    let mut c = s.consumer("releaser", &["a.b"], MINUTE).await;
    let mut other = s.consumer("releaser", &["a.b"], MINUTE).await;
    let e = event("a.b", 1);
    s.publish(&e).await;
    let mut got = fetch(&mut c, Duration::from_secs(2)).await;
    got.remove(0).acker.release().await.expect("release");
    let started = Instant::now();
    let back = fetch(&mut other, Duration::from_secs(2)).await;
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    assert_eq!(back.len(), 1);
    assert_eq!(id_of(&back[0]), e.id);
    assert_eq!(back[0].delivery_count, 2);
}

#[tokio::test]
async fn an_entry_that_is_not_a_cloudevent_is_delivered_as_an_error() {
    let s = Setup::new().await;
    let mut c = s.consumer("strict", &["a.b"], MINUTE).await;
    let stream = s.stream();
    let mut raw = raw();
    raw.cmd(&["XADD", &stream, "*", "hello", "world"]).expect("XADD");
    raw.cmd(&["XADD", &stream, "*", "message", "not json"]).expect("XADD");
    let got = fetch(&mut c, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 2);
    let why = got[0].event.as_ref().expect_err("not a CloudEvent");
    assert!(why.contains("specversion") && why.contains("hello"), "{why}");
    assert!(got[1].event.is_err());
    assert_eq!(got[0].delivery_count, 1);
    for i in got {
        i.acker.dead("not a CloudEvent").await.expect("dead");
    }
    assert_eq!(entries(&format!("{stream}:dead")).len(), 2);
}

#[tokio::test]
async fn a_plain_client_reads_a_published_event_into_the_cloudevents_sdk() {
    let s = Setup::new().await;
    let e = Event::new("user.created")
        .with_data(json!({ "user_id": "u-1", "tags": ["a"] }))
        .with_subject("user/u-1")
        .with_tenant("acme");
    s.publish(&e).await;

    let entries = entries(&s.stream());
    assert_eq!(entries.len(), 1);
    let fields = &entries[0].1;
    assert_eq!(field(fields, "specversion"), Some("1.0"));
    assert_eq!(field(fields, "type"), Some("user.created"));
    // A plain consumer turns the fields into a structured document: attributes as
    // strings, `data` as the JSON it holds.
    let mut doc = serde_json::Map::new();
    for (k, v) in fields {
        let value = if k == "data" { serde_json::from_str(v).expect("data is JSON") } else { json!(v) };
        doc.insert(k.clone(), value);
    }
    let theirs: cloudevents::Event = serde_json::from_value(serde_json::Value::Object(doc)).expect("a CloudEvent");
    assert_eq!(theirs.id(), e.id.to_string());
    assert_eq!(theirs.ty(), "user.created");
    assert_eq!(theirs.source().to_string(), e.source.to_string());
    assert_eq!(theirs.subject(), Some("user/u-1"));
    assert_eq!(theirs.extension("tenant").map(ToString::to_string).as_deref(), Some("acme"));
    let data = match theirs.data() {
        Some(cloudevents::Data::Json(v)) => v.clone(),
        other => panic!("data: {other:?}"),
    };
    assert_eq!(data, json!({ "user_id": "u-1", "tags": ["a"] }));
}

#[tokio::test]
async fn events_a_plain_client_publishes_in_either_mode_are_consumed() {
    use cloudevents::{EventBuilder, EventBuilderV10};
    let s = Setup::new().await;
    let mut c = s.consumer("reader", &["order.paid"], MINUTE).await;
    let stream = s.stream();
    let mut raw = raw();

    // Binary: one field per attribute, `data` the payload.
    let binary_id = Uuid::now_v7().to_string();
    raw.cmd(&[
        "XADD",
        &stream,
        "*",
        "specversion",
        "1.0",
        "id",
        &binary_id,
        "type",
        "order.paid",
        "source",
        "/shop",
        "subject",
        "order/1",
        "tenant",
        "acme",
        "datacontenttype",
        "application/json",
        "data",
        r#"{"order":1}"#,
    ])
    .expect("XADD");

    // Structured: the SDK's document in one field, under each accepted name.
    let mut structured_ids = Vec::new();
    for name in ["cloudevent", "event", "data", "message"] {
        let id = Uuid::now_v7().to_string();
        let theirs = EventBuilderV10::new()
            .id(&id)
            .ty("order.paid")
            .source("/shop")
            .data("application/json", json!({ "order": 2, "field": name }))
            .build()
            .expect("event");
        let doc = serde_json::to_string(&theirs).expect("json");
        raw.cmd(&["XADD", &stream, "*", name, &doc]).expect("XADD");
        structured_ids.push(id);
    }

    let got = c.fetch(16, Duration::from_secs(2)).await.expect("fetch");
    assert_eq!(got.len(), 5);
    let first = got[0].event.as_ref().expect("binary mode reads");
    assert_eq!(first.id.to_string(), binary_id);
    assert_eq!(first.event_type.as_str(), "order.paid");
    assert_eq!(first.source, "/shop");
    assert_eq!(first.subject.as_deref(), Some("order/1"));
    assert_eq!(first.metadata.tenant.as_deref(), Some("acme"));
    assert_eq!(first.data, json!({ "order": 1 }));
    for (inbound, (id, name)) in
        got[1..].iter().zip(structured_ids.iter().zip(["cloudevent", "event", "data", "message"]))
    {
        let e = inbound.event.as_ref().expect("structured mode reads");
        assert_eq!(e.id.to_string(), *id);
        assert_eq!(e.data, json!({ "order": 2, "field": name }));
    }
}

#[tokio::test]
async fn a_duplicate_publish_within_the_window_is_dropped_and_delivered_once() {
    let s = Setup::with(|b| b.dedup_window(Duration::from_millis(600))).await;
    let mut c = s.consumer("once", &["a.b"], Duration::from_secs(1)).await;
    let e = event("a.b", 1);
    s.publish(&e).await;
    s.publish(&e).await; // the outbox publishing again: Ok, not added
    assert_eq!(int(raw().cmd(&["XLEN", &s.stream()]).expect("XLEN")), 1);
    let dedup = s.broker.dedup_key(&e.id.to_string());
    let ttl = int(raw().cmd(&["PTTL", &dedup]).expect("PTTL"));
    assert!(ttl > 0 && ttl <= 600, "{ttl}");

    let got = fetch(&mut c, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 1);
    for i in got {
        i.acker.ack().await.expect("ack");
    }
    assert!(fetch(&mut c, SHORT).await.is_empty());

    // After the window, the same id is a new entry (and delivered again).
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.publish(&e).await;
    assert_eq!(int(raw().cmd(&["XLEN", &s.stream()]).expect("XLEN")), 2);
    let got = fetch(&mut c, Duration::from_secs(1)).await;
    assert_eq!(got.iter().map(id_of).collect::<Vec<_>>(), [e.id]);
}

#[tokio::test]
async fn without_a_dedup_window_a_republished_event_is_delivered_twice() {
    let s = Setup::with(|b| b.dedup_window(Duration::ZERO)).await;
    let mut c = s.consumer("twice", &["a.b"], MINUTE).await;
    let e = event("a.b", 1);
    s.publish(&e).await;
    s.publish(&e).await;
    assert_eq!(int(raw().cmd(&["XLEN", &s.stream()]).expect("XLEN")), 2);
    let got = fetch(&mut c, Duration::from_secs(1)).await;
    assert_eq!(got.iter().map(id_of).collect::<Vec<_>>(), [e.id, e.id]);
}

#[tokio::test]
async fn the_stream_is_trimmed_to_about_max_len_with_and_without_a_dedup_window() {
    // With a window the script trims, without one the plain `XADD`.
    for window in [Duration::from_secs(60), Duration::ZERO] {
        let s = Setup::with(|b| b.max_len(100).dedup_window(window)).await;
        for n in 0..1000 {
            s.publish(&event("a.b", n)).await;
        }
        let len = int(raw().cmd(&["XLEN", &s.stream()]).expect("XLEN"));
        assert!((100..1000).contains(&len), "window {window:?}: {len}");
    }
}

#[tokio::test]
async fn with_and_without_a_dedup_window_an_entry_has_the_same_fields() {
    let e = Event::new("user.created")
        .with_data(json!({ "name": "A \"quoted\" name", "n": 1 }))
        .with_subject("user/u-1")
        .with_tenant("acme");
    let mut written = Vec::new();
    for window in [Duration::from_secs(60), Duration::ZERO] {
        let s = Setup::with(|b| b.dedup_window(window)).await;
        s.publish(&e).await;
        let entries = entries(&s.stream());
        assert_eq!(entries.len(), 1);
        written.push(entries[0].1.clone());
    }
    assert_eq!(written[0], written[1]);
    // String attributes are their text (unescaped), `data` its JSON.
    assert_eq!(field(&written[0], "subject"), Some("user/u-1"));
    let data: serde_json::Value = serde_json::from_str(field(&written[0], "data").expect("data")).expect("JSON");
    assert_eq!(data, json!({ "name": "A \"quoted\" name", "n": 1 }));
}

#[tokio::test]
async fn a_closed_broker_refuses_to_publish() {
    let s = Setup::new().await;
    s.broker.close().await.expect("close");
    let err = s.broker.publish(&Outgoing::new(&event("a.b", 1)).expect("outgoing")).await.expect_err("closed");
    assert!(ErrorChain(&err).to_string().contains("closed"), "{err:?}");
}

#[tokio::test]
async fn a_broker_on_a_given_connection_polls_and_delivers() {
    let prefix = Prefix::new();
    let client = redis_client();
    let conn = client.await;
    let broker = RedisStreams::builder().connection(conn).stream(prefix.key("events")).build().await.expect("build");
    let sub = Subscription::new("polling", ["a.b"]);
    let mut c = broker.subscribe(&sub).await.expect("subscribe");
    let e = event("a.b", 1);
    let publisher = broker.clone();
    let late = e.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        publisher.publish(&Outgoing::new(&late).expect("outgoing")).await.expect("publish");
    });
    let got = c.fetch(8, Duration::from_secs(3)).await.expect("fetch");
    assert_eq!(got.iter().map(id_of).collect::<Vec<_>>(), [e.id]);
}

/// A connection manager of the `redis` crate the broker re-exports.
async fn redis_client() -> better_auth_events_runtime::broker::redis::aio::ConnectionManager {
    use better_auth_events_runtime::broker::redis;
    let url = url();
    let client = redis::Client::open(url.as_str()).expect("url");
    redis::aio::ConnectionManager::new(client)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e}); start it with `{START}`"))
}
