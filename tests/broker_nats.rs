//! `NatsJetStream` at the transport level: publish, subscribe, fetch and every way of settling
//! a message, checked with the plain `async-nats` client and the CloudEvents SDK.
//!
//! Needs a NATS server with JetStream at 127.0.0.1:4222 (or `BAE_NATS_URL`); the tests fail
//! when it is unreachable. Each test works in its own streams and subject prefix (a uuid)
//! and deletes them.
#![cfg(feature = "nats")]

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::Stream};
use better_auth_events::Event;
use better_auth_events::broker::{Broker, Consumer, Inbound, NatsJetStream, Outgoing, Subscription};
use cloudevents::message::{BinaryDeserializer, BinarySerializer, MessageAttributeValue};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use serde_json::json;
use uuid::Uuid;

const START: &str = "nats-server -js";

fn url() -> String {
    std::env::var("BAE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// One test's broker, in its own streams and subjects, and the plain client beside it.
struct Setup {
    broker: NatsJetStream,
    js: jetstream::Context,
}

impl Setup {
    async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let url = url();
        let broker = NatsJetStream::builder()
            .url(&url)
            .stream(format!("BAE_TEST_{id}"))
            .subject_prefix(format!("bae_test.{id}"))
            .build()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "NATS with JetStream at {url} is unreachable ({}); start it with `{START}` or set BAE_NATS_URL",
                    better_auth_events::ErrorChain(&e)
                )
            });
        let client = async_nats::connect(&url).await.expect("the plain client connects");
        Self { broker, js: jetstream::new(client) }
    }

    async fn stream(&self) -> Stream {
        self.js.get_stream(self.broker.stream_name()).await.expect("the event stream exists")
    }

    async fn messages_in_stream(&self) -> u64 {
        self.stream().await.get_info().await.expect("stream info").state.messages
    }

    async fn subscribe(&self, group: &str, types: &[&str], visibility: Duration) -> Box<dyn Consumer> {
        let sub = Subscription::new(group, types.iter().copied()).with_visibility_timeout(visibility);
        self.broker.subscribe(&sub).await.expect("subscribe")
    }

    async fn publish(&self, event: &Event) {
        self.broker.publish(&Outgoing::new(event).expect("outgoing")).await.expect("publish");
    }

    /// Publishes with the plain client on the subject of `event_type`.
    async fn publish_raw(&self, event_type: &str, headers: HeaderMap, body: Vec<u8>) {
        self.js
            .publish_with_headers(self.broker.subject_for(event_type), headers, body.into())
            .await
            .expect("raw publish")
            .await
            .expect("raw publish ack");
    }

    async fn cleanup(self) {
        for name in [self.broker.stream_name(), self.broker.dead_stream_name()] {
            self.js.delete_stream(name).await.expect("delete the test stream");
        }
    }
}

async fn fetch(consumer: &mut Box<dyn Consumer>, max: usize, wait: Duration) -> Vec<Inbound> {
    consumer.fetch(max, wait).await.expect("fetch")
}

/// Fetches until one message came or `within` passed.
async fn fetch_one(consumer: &mut Box<dyn Consumer>, within: Duration) -> Option<Inbound> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(500));
        let mut got = fetch(consumer, 1, wait.max(Duration::from_millis(10))).await;
        if let Some(m) = got.pop() {
            return Some(m);
        }
    }
    None
}

fn id_of(inbound: &Inbound) -> Uuid {
    inbound.event.as_ref().expect("a CloudEvent").id
}

fn event(ty: &str, n: u32) -> Event {
    Event::new(ty).with_data(json!({ "n": n })).with_subject("user/ü 1")
}

#[tokio::test]
async fn publish_fetch_ack_and_nothing_comes_back() {
    let s = Setup::new().await;
    let mut c = s.subscribe("tests::acked", &["user.created"], Duration::from_secs(1)).await;
    let e = event("user.created", 1);
    s.publish(&e).await;

    let got = fetch(&mut c, 10, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let m = got.into_iter().next().unwrap();
    let read = m.event.as_ref().expect("a CloudEvent");
    assert_eq!(read.id, e.id);
    assert_eq!(read.event_type.as_str(), "user.created");
    assert_eq!(read.data, json!({ "n": 1 }));
    assert_eq!(read.subject.as_deref(), Some("user/ü 1"));
    assert_eq!(m.delivery_count, 1);
    m.acker.ack().await.expect("ack");

    // Past the visibility timeout, nothing comes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fetch(&mut c, 10, Duration::from_millis(500)).await.is_empty(), "an acked message came back");
    s.cleanup().await;
}

#[tokio::test]
async fn an_empty_fetch_waits_about_its_wait_and_returns_nothing() {
    let s = Setup::new().await;
    let mut c = s.subscribe("tests::empty", &["user.created"], Duration::from_secs(30)).await;
    let started = Instant::now();
    assert!(fetch(&mut c, 10, Duration::from_millis(400)).await.is_empty());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "returned after {took:?}, before the wait");
    assert!(took < Duration::from_secs(3), "returned after {took:?}, long after the wait");

    // A fetch that waits returns as soon as a message is there, with fewer than `max`.
    let e = event("user.created", 1);
    let publisher = {
        let broker = s.broker.clone();
        let e = e.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            broker.publish(&Outgoing::new(&e).unwrap()).await.unwrap();
        })
    };
    let started = Instant::now();
    let got = fetch(&mut c, 10, Duration::from_secs(5)).await;
    let took = started.elapsed();
    publisher.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(took < Duration::from_secs(3), "a fetch of 10 with one message waited {took:?}");
    for m in got {
        m.acker.ack().await.unwrap();
    }
    s.cleanup().await;
}

#[tokio::test]
async fn two_handlers_get_the_event_once_each_from_one_stored_message() {
    let s = Setup::new().await;
    let mut a = s.subscribe("tests::a", &["user.created"], Duration::from_secs(1)).await;
    let mut b = s.subscribe("tests::b", &["user.created"], Duration::from_secs(1)).await;
    let e = event("user.created", 1);
    s.publish(&e).await;
    assert_eq!(s.messages_in_stream().await, 1, "one message per event, not one per handler");

    for c in [&mut a, &mut b] {
        let got = fetch(c, 10, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(id_of(&got[0]), e.id);
        for m in got {
            m.acker.ack().await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for c in [&mut a, &mut b] {
        assert!(fetch(c, 10, Duration::from_millis(300)).await.is_empty());
    }
    s.cleanup().await;
}

#[tokio::test]
async fn a_retry_comes_back_to_its_handler_only_after_the_delay() {
    let s = Setup::new().await;
    let mut failing = s.subscribe("tests::failing", &["user.created"], Duration::from_secs(30)).await;
    let mut other = s.subscribe("tests::other", &["user.created"], Duration::from_secs(30)).await;
    let e = event("user.created", 1);
    s.publish(&e).await;

    let m = fetch_one(&mut failing, Duration::from_secs(5)).await.expect("first delivery");
    assert_eq!(m.delivery_count, 1);
    let retried_at = Instant::now();
    m.acker.retry(Duration::from_millis(1500)).await.expect("retry");

    let o = fetch_one(&mut other, Duration::from_secs(5)).await.expect("the other handler gets it");
    assert_eq!(o.delivery_count, 1);
    o.acker.ack().await.unwrap();

    assert!(fetch(&mut failing, 1, Duration::from_millis(700)).await.is_empty(), "the retry came back early");
    let again = fetch_one(&mut failing, Duration::from_secs(5)).await.expect("the retry comes back");
    let after = retried_at.elapsed();
    assert!(after >= Duration::from_millis(1500), "the retry came back after {after:?}, before its delay");
    assert_eq!(id_of(&again), e.id);
    assert_eq!(again.delivery_count, 2);
    again.acker.ack().await.unwrap();

    assert!(fetch(&mut other, 10, Duration::from_millis(500)).await.is_empty(), "the other handler was disturbed");
    s.cleanup().await;
}

#[tokio::test]
async fn a_message_a_dropped_consumer_held_comes_back_after_the_visibility_timeout() {
    let s = Setup::new().await;
    let mut first = s.subscribe("tests::crashy", &["user.created"], Duration::from_secs(1)).await;
    let e = event("user.created", 1);
    s.publish(&e).await;
    let held = fetch_one(&mut first, Duration::from_secs(5)).await.expect("first delivery");
    let fetched_at = Instant::now();
    drop(held);
    drop(first);

    let mut second = s.subscribe("tests::crashy", &["user.created"], Duration::from_secs(1)).await;
    let again = fetch_one(&mut second, Duration::from_secs(5)).await.expect("redelivered after the timeout");
    let after = fetched_at.elapsed();
    assert!(after >= Duration::from_millis(900), "redelivered after {after:?}, before the visibility timeout");
    assert_eq!(id_of(&again), e.id);
    assert_eq!(again.delivery_count, 2);
    again.acker.ack().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn a_dead_message_goes_to_the_dead_stream_and_never_comes_back() {
    let s = Setup::new().await;
    let group = "my_crate::emails::send_welcome";
    let mut c = s.subscribe(group, &["user.created"], Duration::from_secs(1)).await;
    let e = event("user.created", 7);
    s.publish(&e).await;
    let m = fetch_one(&mut c, Duration::from_secs(5)).await.expect("delivery");
    m.acker.dead("gave up after 1 attempt:\nboom").await.expect("dead");

    // The dead stream holds it, with its headers, its body and why.
    let dead_stream = s.js.get_stream(s.broker.dead_stream_name()).await.expect("dead stream");
    let dead = dead_stream.get_raw_message(1).await.expect("the dead message");
    assert_eq!(dead.subject.as_str(), s.broker.dead_subject_for(group));
    let header = |name: &str| dead.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("Bae-Dead-Reason").as_deref(), Some("gave up after 1 attempt: boom"));
    assert_eq!(header("Bae-Dead-Group").as_deref(), Some(group));
    assert_eq!(header("Bae-Dead-Subject"), Some(s.broker.subject_for("user.created")));
    assert_eq!(header("ce-id"), Some(e.id.to_string()));
    assert_eq!(header("ce-type").as_deref(), Some("user.created"));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&dead.payload).unwrap(), json!({ "n": 7 }));
    assert_eq!(dead_stream.get_info().await.unwrap().state.messages, 1);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fetch(&mut c, 10, Duration::from_millis(500)).await.is_empty(), "a dead message came back");
    let consumer_name = NatsJetStream::consumer_name(group);
    assert!(!consumer_name.contains(['.', ':', ' ', '*', '>']), "{consumer_name}");
    let mut consumer: jetstream::consumer::PullConsumer =
        s.stream().await.get_consumer(&consumer_name).await.expect("the handler's consumer, by its sanitized name");
    assert_eq!(consumer.info().await.unwrap().num_ack_pending, 0);
    s.cleanup().await;
}

#[tokio::test]
async fn a_released_message_comes_back_at_once() {
    let s = Setup::new().await;
    let mut c = s.subscribe("tests::released", &["user.created"], Duration::from_secs(30)).await;
    let e = event("user.created", 1);
    s.publish(&e).await;
    let m = fetch_one(&mut c, Duration::from_secs(5)).await.expect("delivery");
    let released_at = Instant::now();
    m.acker.release().await.expect("release");
    let again = fetch_one(&mut c, Duration::from_secs(5)).await.expect("redelivered");
    assert!(released_at.elapsed() < Duration::from_secs(2), "a released message waited {:?}", released_at.elapsed());
    assert_eq!(id_of(&again), e.id);
    assert_eq!(again.delivery_count, 2);
    again.acker.ack().await.unwrap();
    s.cleanup().await;
}

#[tokio::test]
async fn a_message_that_is_not_a_cloudevent_is_an_inbound_error() {
    let s = Setup::new().await;
    let mut c = s.subscribe("tests::garbage", &["user.created"], Duration::from_secs(30)).await;
    s.publish_raw("user.created", HeaderMap::new(), b"hello".to_vec()).await;
    s.publish_raw("user.created", HeaderMap::new(), br#"{"hello": 1}"#.to_vec()).await;
    let mut bad = HeaderMap::new();
    bad.insert("ce-specversion", "1.0");
    bad.insert("ce-id", "x%ZZ");
    s.publish_raw("user.created", bad, b"{}".to_vec()).await;

    let mut got = Vec::new();
    while got.len() < 3 {
        let batch = fetch(&mut c, 10, Duration::from_secs(5)).await;
        assert!(!batch.is_empty(), "the messages came");
        got.extend(batch);
    }
    for m in got {
        let why = m.event.as_ref().expect_err("not a CloudEvent");
        assert!(why.contains("specversion") || why.contains("ce-id"), "{why}");
        m.acker.ack().await.unwrap();
    }
    s.cleanup().await;
}

/// The SDK's binary-mode reader for a NATS message: `ce-` headers, percent-decoded.
struct NatsBinary<'a> {
    headers: &'a HeaderMap,
    body: Vec<u8>,
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

impl BinaryDeserializer for NatsBinary<'_> {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(self, mut visitor: V) -> cloudevents::message::Result<R> {
        let version = self.headers.get("ce-specversion").expect("ce-specversion").as_str();
        visitor = visitor.set_spec_version(version.try_into()?)?;
        let names = cloudevents::event::SpecVersion::V10.attribute_names();
        for (name, values) in self.headers.iter() {
            let name: &str = name.as_ref();
            let Some(attr) = name.strip_prefix("ce-") else { continue };
            if attr == "specversion" {
                continue;
            }
            let value = MessageAttributeValue::String(percent_decode(values[0].as_str()));
            visitor = if names.contains(&attr) {
                visitor.set_attribute(attr, value)?
            } else {
                visitor.set_extension(attr, value)?
            };
        }
        visitor.end_with_data(self.body)
    }
}

#[tokio::test]
async fn what_we_publish_is_read_by_the_plain_client_and_the_cloudevents_sdk() {
    let s = Setup::new().await;
    let e = event("user.created", 3).with_tenant("acme");
    s.publish(&e).await;

    let raw = s.stream().await.get_raw_message(1).await.expect("the stored message");
    assert_eq!(raw.subject.as_str(), s.broker.subject_for("user.created"));
    assert_eq!(raw.subject.as_str(), format!("{}.user.created", s.broker.subject_prefix()));
    assert_eq!(raw.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()), Some(e.id.to_string()));
    assert!(raw.headers.get("Content-Type").is_none(), "binary mode has no structured content type");

    let read = BinaryDeserializer::into_event(NatsBinary { headers: &raw.headers, body: raw.payload.to_vec() })
        .expect("the SDK reads the binary-mode message");
    assert_eq!(read.id(), e.id.to_string());
    assert_eq!(read.ty(), "user.created");
    assert_eq!(read.source().to_string(), e.source);
    assert_eq!(read.subject(), Some("user/ü 1"));
    assert_eq!(read.datacontenttype(), Some("application/json"));
    assert_eq!(read.time().map(|t| t.timestamp_millis()), Some(e.timestamp.timestamp_millis()));
    assert_eq!(read.extension("tenant").map(ToString::to_string).as_deref(), Some("acme"));
    match read.data() {
        Some(cloudevents::Data::Json(v)) => assert_eq!(v, &json!({ "n": 3 })),
        Some(cloudevents::Data::Binary(b)) => {
            assert_eq!(serde_json::from_slice::<serde_json::Value>(b).unwrap(), json!({ "n": 3 }))
        }
        other => panic!("unexpected data {other:?}"),
    }
    s.cleanup().await;
}

/// The SDK's binary-mode writer for a NATS message: `ce-` headers, percent-encoded.
struct NatsHeaders {
    headers: HeaderMap,
}

fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl BinarySerializer<(HeaderMap, Vec<u8>)> for NatsHeaders {
    fn set_spec_version(mut self, v: cloudevents::event::SpecVersion) -> cloudevents::message::Result<Self> {
        self.headers.insert("ce-specversion", v.as_str());
        Ok(self)
    }
    fn set_attribute(mut self, name: &str, value: MessageAttributeValue) -> cloudevents::message::Result<Self> {
        self.headers.insert(format!("ce-{name}").as_str(), percent_encode(&value.to_string()));
        Ok(self)
    }
    fn set_extension(self, name: &str, value: MessageAttributeValue) -> cloudevents::message::Result<Self> {
        self.set_attribute(name, value)
    }
    fn end_with_data(self, bytes: Vec<u8>) -> cloudevents::message::Result<(HeaderMap, Vec<u8>)> {
        Ok((self.headers, bytes))
    }
    fn end(self) -> cloudevents::message::Result<(HeaderMap, Vec<u8>)> {
        Ok((self.headers, Vec::new()))
    }
}

#[tokio::test]
async fn cloudevents_the_plain_client_publishes_in_both_modes_are_consumed() {
    let s = Setup::new().await;
    let mut c = s.subscribe("tests::foreign", &["order.placed"], Duration::from_secs(30)).await;
    let binary_id = Uuid::now_v7();
    let binary = EventBuilderV10::new()
        .id(binary_id.to_string())
        .ty("order.placed")
        .source("/shop/checkout")
        .subject("order 42 €")
        .time(chrono::Utc::now())
        .extension("tenant", "acme")
        .data("application/json", json!({ "order": 42 }))
        .build()
        .unwrap();
    let (headers, body) = binary.deserialize_binary(NatsHeaders { headers: HeaderMap::new() }).expect("binary mode");
    assert!(headers.get("ce-subject").unwrap().as_str().contains("%E2%82%AC"));
    s.publish_raw("order.placed", headers, body).await;

    let structured_id = Uuid::now_v7();
    let structured = EventBuilderV10::new()
        .id(structured_id.to_string())
        .ty("order.placed")
        .source("/shop/checkout")
        .data("application/json", json!({ "order": 43 }))
        .build()
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/cloudevents+json; charset=utf-8");
    s.publish_raw("order.placed", headers, serde_json::to_vec(&structured).unwrap()).await;

    let mut got = Vec::new();
    while got.len() < 2 {
        let batch = fetch(&mut c, 10, Duration::from_secs(5)).await;
        assert!(!batch.is_empty(), "both messages came");
        got.extend(batch);
    }
    let first = got[0].event.as_ref().expect("the binary-mode CloudEvent reads");
    assert_eq!(first.id, binary_id);
    assert_eq!(first.event_type.as_str(), "order.placed");
    assert_eq!(first.source, "/shop/checkout");
    assert_eq!(first.subject.as_deref(), Some("order 42 €"));
    assert_eq!(first.metadata.tenant.as_deref(), Some("acme"));
    assert_eq!(first.data, json!({ "order": 42 }));
    let second = got[1].event.as_ref().expect("the structured-mode CloudEvent reads");
    assert_eq!(second.id, structured_id);
    assert_eq!(second.data, json!({ "order": 43 }));
    for m in got {
        m.acker.ack().await.unwrap();
    }
    s.cleanup().await;
}

/// JetStream drops a second publish with the same `Nats-Msg-Id` within the duplicate window:
/// the handler gets the event once.
#[tokio::test]
async fn a_duplicate_publish_is_dropped_within_the_window() {
    let s = Setup::new().await;
    let mut c = s.subscribe("tests::dedup", &["user.created"], Duration::from_secs(1)).await;
    let e = event("user.created", 1);
    s.publish(&e).await;
    s.publish(&e).await;
    assert_eq!(s.messages_in_stream().await, 1, "the duplicate was stored");
    let got = fetch(&mut c, 10, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1);
    for m in got {
        m.acker.ack().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(fetch(&mut c, 10, Duration::from_millis(500)).await.is_empty(), "the duplicate was delivered");
    s.cleanup().await;
}

#[tokio::test]
async fn types_not_subscribed_are_not_delivered() {
    let s = Setup::new().await;
    let mut one = s.subscribe("tests::one", &["t.one"], Duration::from_secs(30)).await;
    let mut two = s.subscribe("tests::two", &["t.one", "t.two"], Duration::from_secs(30)).await;
    let (e1, e2, e3) = (event("t.one", 1), event("t.two", 2), event("t.three", 3));
    for e in [&e3, &e2, &e1] {
        s.publish(e).await;
    }
    let mut got_one = Vec::new();
    while let Some(m) = fetch_one(&mut one, Duration::from_millis(1500)).await {
        got_one.push(id_of(&m));
        m.acker.ack().await.unwrap();
    }
    assert_eq!(got_one, vec![e1.id]);
    let mut got_two = Vec::new();
    while let Some(m) = fetch_one(&mut two, Duration::from_millis(1500)).await {
        got_two.push(id_of(&m));
        m.acker.ack().await.unwrap();
    }
    assert_eq!(got_two, vec![e2.id, e1.id]);
    s.cleanup().await;
}

#[tokio::test]
async fn a_handler_whose_types_change_gets_its_new_types() {
    let s = Setup::new().await;
    let group = "tests::changing";
    let c = s.subscribe(group, &["t.one"], Duration::from_secs(30)).await;
    drop(c);
    let mut c = s.subscribe(group, &["t.one", "t.two"], Duration::from_secs(30)).await;
    let (e1, e2) = (event("t.one", 1), event("t.two", 2));
    s.publish(&e1).await;
    s.publish(&e2).await;
    let mut got = Vec::new();
    while let Some(m) = fetch_one(&mut c, Duration::from_millis(1500)).await {
        got.push(id_of(&m));
        m.acker.ack().await.unwrap();
    }
    assert_eq!(got, vec![e1.id, e2.id]);

    drop(c);
    let mut c = s.subscribe(group, &["t.two"], Duration::from_secs(30)).await;
    let (e3, e4) = (event("t.one", 3), event("t.two", 4));
    s.publish(&e3).await;
    s.publish(&e4).await;
    let mut got = Vec::new();
    while let Some(m) = fetch_one(&mut c, Duration::from_millis(1500)).await {
        got.push(id_of(&m));
        m.acker.ack().await.unwrap();
    }
    assert_eq!(got, vec![e4.id], "a type the handler dropped was delivered");
    s.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let err = NatsJetStream::builder()
        .url("nats://127.0.0.1:1")
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("nothing listens on port 1");
    let text = better_auth_events::ErrorChain(&err).to_string();
    assert!(text.contains("cannot connect to NATS at nats://127.0.0.1:1"), "{text}");
    assert!(text.contains("nats-server -js"), "{text}");
}

#[tokio::test]
async fn a_closed_broker_refuses_to_publish() {
    let s = Setup::new().await;
    s.broker.close().await.expect("close");
    let err = s.broker.publish(&Outgoing::new(&event("user.created", 1)).unwrap()).await.expect_err("closed");
    assert!(better_auth_events::ErrorChain(&err).to_string().contains("closed"));
    s.cleanup().await;
}
