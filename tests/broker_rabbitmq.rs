//! `RabbitMq` against the RabbitMQ server of this machine (`BAE_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). The tests fail when it is unreachable. Each
//! test uses its own exchange and queue prefix (a uuid) and deletes them at the end.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use better_auth_events::Event;
use better_auth_events::broker::lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use better_auth_events::broker::lapin::types::{AMQPValue, FieldTable, ShortString};
use better_auth_events::broker::lapin::{self, BasicProperties, Channel, Connection, ConnectionProperties};
use better_auth_events::broker::{Broker, Consumer, Inbound, Outgoing, RabbitMq, Subscription};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use serde_json::json;
use uuid::Uuid;

fn url() -> String {
    std::env::var("BAE_AMQP_URL").unwrap_or_else(|_| RabbitMq::DEFAULT_URL.to_owned())
}

/// One test's exchange, queue prefix, broker and raw connection.
struct Fx {
    tag: String,
    broker: RabbitMq,
    raw: Connection,
    queues: std::sync::Mutex<HashSet<String>>,
}

impl Fx {
    async fn new() -> Self {
        let tag = Uuid::now_v7().simple().to_string();
        let broker = Self::broker_for(&tag).await;
        let raw = Connection::connect(&url(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at {}: {e}; is it running?", url()));
        Self { tag, broker, raw, queues: Default::default() }
    }

    /// Another broker (its own connections) on this test's exchange and prefix.
    async fn broker_for(tag: &str) -> RabbitMq {
        RabbitMq::builder()
            .url(url())
            .exchange(format!("bae.test.{tag}"))
            .queue_prefix(format!("t{tag}"))
            .connection_name(format!("bae-test-{tag}"))
            .build()
            .await
            .unwrap_or_else(|e| panic!("{}", better_auth_events::ErrorChain(&e)))
    }

    fn exchange(&self) -> String {
        format!("bae.test.{}", self.tag)
    }

    /// Subscribes `group` to `types` (1 s visibility timeout) and remembers its queues.
    async fn subscribe(&self, group: &str, types: &[&str]) -> Box<dyn Consumer> {
        self.subscribe_with(&self.broker, group, types).await
    }

    async fn subscribe_with(&self, broker: &RabbitMq, group: &str, types: &[&str]) -> Box<dyn Consumer> {
        let queue = self.broker.queue_name(group);
        {
            let mut queues = self.queues.lock().unwrap();
            queues.insert(queue.clone());
            queues.insert(format!("{queue}.dead"));
        }
        let sub = Subscription::new(group, types.iter().copied()).with_visibility_timeout(Duration::from_secs(1));
        broker.subscribe(&sub).await.unwrap_or_else(|e| panic!("{}", better_auth_events::ErrorChain(&e)))
    }

    fn remember(&self, queue: String) {
        self.queues.lock().unwrap().insert(queue);
    }

    async fn channel(&self) -> Channel {
        self.raw.create_channel().await.unwrap()
    }

    /// How many messages sit (ready) in `queue`, through a passive declare.
    async fn depth(&self, queue: &str) -> u32 {
        let ch = self.channel().await;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let q = ch.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap();
        q.message_count()
    }

    /// Takes one message from `queue` with the raw client.
    async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        let ch = self.channel().await;
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap()
    }

    /// Publishes with the raw client, confirmed.
    async fn publish_raw(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let ch = self.channel().await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let confirm = ch
            .basic_publish(self.exchange().into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// A queue of this test that takes every message published to the exchange.
    async fn tap(&self) -> String {
        let name = format!("t{}.tap", self.tag);
        let ch = self.channel().await;
        ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await.unwrap();
        ch.queue_bind(
            name.as_str().into(),
            self.exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        self.remember(name.clone());
        name
    }

    async fn cleanup(self) {
        let _ = self.broker.close().await;
        let ch = self.channel().await;
        let queues: Vec<String> = self.queues.lock().unwrap().iter().cloned().collect();
        for q in queues {
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for ex in [self.exchange(), format!("{}.dlx", self.exchange())] {
            let _ = ch.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = self.raw.close(200, "OK".into()).await;
    }
}

fn event(ty: &str, n: u64) -> Event {
    Event::new(ty.to_owned()).with_data(json!({"n": n})).with_subject(format!("item/{n}"))
}

async fn publish(fx: &Fx, e: &Event) {
    fx.broker
        .publish(&Outgoing::new(e).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{}", better_auth_events::ErrorChain(&e)));
}

async fn fetch(consumer: &mut Box<dyn Consumer>, max: usize, wait: Duration) -> Vec<Inbound> {
    consumer.fetch(max, wait).await.unwrap_or_else(|e| panic!("{}", better_auth_events::ErrorChain(&e)))
}

/// Fetches until `n` messages came or `wait` passed.
async fn fetch_n(consumer: &mut Box<dyn Consumer>, n: usize, wait: Duration) -> Vec<Inbound> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        out.extend(fetch(consumer, n - out.len(), left).await);
    }
    out
}

fn ok(inbound: &Inbound) -> &Event {
    inbound.event.as_ref().unwrap_or_else(|e| panic!("not read as an event: {e}"))
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref()?.inner().get(name)
}

fn header_string(props: &BasicProperties, name: &str) -> Option<String> {
    match header(props, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_fetched_acked_and_not_redelivered() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("app::emails::send_welcome", &["user.created"]).await;
    let queue = fx.broker.queue_name("app::emails::send_welcome");
    assert_eq!(queue, format!("t{}.app.emails.send_welcome", fx.tag));
    let sent: Vec<Event> = (0..3).map(|n| event("user.created", n)).collect();
    for e in &sent {
        publish(&fx, e).await;
    }
    let got = fetch_n(&mut consumer, 3, LONG).await;
    assert_eq!(got.len(), 3);
    for (inbound, e) in got.iter().zip(&sent) {
        let read = ok(inbound);
        assert_eq!(read.id, e.id);
        assert_eq!(read.event_type.as_str(), "user.created");
        assert_eq!(read.data, e.data);
        assert_eq!(read.subject, e.subject);
        assert_eq!(inbound.delivery_count, 1);
    }
    for inbound in got {
        inbound.acker.ack().await.unwrap();
    }
    assert!(fetch(&mut consumer, 10, Duration::from_millis(500)).await.is_empty());
    drop(consumer);
    // Nothing comes back to a new consumer either.
    let mut again = fx.subscribe("app::emails::send_welcome", &["user.created"]).await;
    assert!(fetch(&mut again, 10, Duration::from_millis(500)).await.is_empty());
    assert_eq!(fx.depth(&queue).await, 0);
    drop(again);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handlers_each_get_the_event_once_from_one_published_message() {
    let fx = Fx::new().await;
    let tap = fx.tap().await;
    let mut a = fx.subscribe("a", &["order.placed"]).await;
    let mut b = fx.subscribe("b", &["order.placed", "order.paid"]).await;
    let e = event("order.placed", 1);
    publish(&fx, &e).await;
    // One publish: the exchange routed one message, each handler's queue holds one copy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fx.depth(&tap).await, 1, "one message per event on the exchange");
    let got_a = fetch_n(&mut a, 2, Duration::from_secs(1)).await;
    let got_b = fetch_n(&mut b, 2, Duration::from_secs(1)).await;
    assert_eq!(got_a.len(), 1);
    assert_eq!(got_b.len(), 1);
    assert_eq!(ok(&got_a[0]).id, e.id);
    assert_eq!(ok(&got_b[0]).id, e.id);
    for i in got_a.into_iter().chain(got_b) {
        i.acker.ack().await.unwrap();
    }
    assert!(fetch(&mut a, 10, SHORT).await.is_empty());
    assert!(fetch(&mut b, 10, SHORT).await.is_empty());
    drop((a, b));
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_comes_back_to_its_handler_only_after_the_delay_with_count_2() {
    let fx = Fx::new().await;
    let mut failing = fx.subscribe("failing", &["job.run"]).await;
    let mut other = fx.subscribe("other", &["job.run"]).await;
    let queue = fx.broker.queue_name("failing");
    fx.remember(format!("{queue}.retry.2048ms"));
    let e = event("job.run", 7);
    publish(&fx, &e).await;

    let got_other = fetch_n(&mut other, 1, LONG).await;
    assert_eq!(got_other.len(), 1);
    let got = fetch_n(&mut failing, 1, LONG).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery_count, 1);
    let delay = Duration::from_millis(1500);
    let retried_at = Instant::now();
    got.into_iter().next().unwrap().acker.retry(delay).await.unwrap();

    // Not before the delay.
    let early = fetch(&mut failing, 10, Duration::from_millis(1200)).await;
    assert!(early.is_empty(), "a retry came back after {:?}", retried_at.elapsed());
    let back = fetch_n(&mut failing, 1, LONG).await;
    let elapsed = retried_at.elapsed();
    assert_eq!(back.len(), 1, "the retry never came back");
    assert!(elapsed >= delay, "came back after {elapsed:?}, before {delay:?}");
    assert_eq!(back[0].delivery_count, 2);
    assert_eq!(ok(&back[0]).id, e.id);
    assert_eq!(ok(&back[0]).data, e.data);

    // The other handler saw the event once and is not disturbed by the retry.
    assert_eq!(got_other[0].delivery_count, 1);
    assert!(fetch(&mut other, 10, SHORT).await.is_empty());
    for i in back.into_iter().chain(got_other) {
        i.acker.ack().await.unwrap();
    }
    assert!(fetch(&mut failing, 10, SHORT).await.is_empty());
    drop((failing, other));
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_counting() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("counting", &["job.run"]).await;
    let queue = fx.broker.queue_name("counting");
    fx.remember(format!("{queue}.retry.64ms"));
    publish(&fx, &event("job.run", 1)).await;
    for expected in 1..=3 {
        let got = fetch_n(&mut consumer, 1, LONG).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivery_count, expected);
        got.into_iter().next().unwrap().acker.retry(Duration::from_millis(50)).await.unwrap();
    }
    let got = fetch_n(&mut consumer, 1, LONG).await;
    assert_eq!(got[0].delivery_count, 4);
    got.into_iter().next().unwrap().acker.release().await.unwrap();
    let got = fetch_n(&mut consumer, 1, LONG).await;
    assert_eq!(got[0].delivery_count, 5, "a release after retries counts one more");
    got.into_iter().next().unwrap().acker.ack().await.unwrap();
    drop(consumer);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dropped_unsettled_goes_to_the_next_consumer_with_count_2() {
    let fx = Fx::new().await;
    let mut first = fx.subscribe("dropper", &["job.run"]).await;
    let e = event("job.run", 3);
    publish(&fx, &e).await;
    let got = fetch_n(&mut first, 1, LONG).await;
    assert_eq!(got.len(), 1);
    // The handler's task dies: the message and the consumer are dropped unsettled.
    drop(got);
    drop(first);
    let mut second = fx.subscribe("dropper", &["job.run"]).await;
    let started = Instant::now();
    let back = fetch_n(&mut second, 1, LONG).await;
    assert_eq!(back.len(), 1, "never redelivered");
    assert!(started.elapsed() < Duration::from_secs(2), "redelivered only after {:?}", started.elapsed());
    assert_eq!(ok(&back[0]).id, e.id);
    assert_eq!(back[0].delivery_count, 2);
    back.into_iter().next().unwrap().acker.ack().await.unwrap();
    drop(second);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_dropped_unsettled_by_a_live_consumer_comes_back_on_its_next_fetch() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("panicky", &["job.run"]).await;
    let e = event("job.run", 3);
    publish(&fx, &e).await;
    let got = fetch_n(&mut consumer, 1, LONG).await;
    assert_eq!(got.len(), 1);
    drop(got); // the handler's task panicked
    let back = fetch_n(&mut consumer, 1, LONG).await;
    assert_eq!(back.len(), 1, "never redelivered");
    assert_eq!(ok(&back[0]).id, e.id);
    assert_eq!(back[0].delivery_count, 2);
    back.into_iter().next().unwrap().acker.ack().await.unwrap();
    assert!(fetch(&mut consumer, 10, SHORT).await.is_empty());
    drop(consumer);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_connection_dies_gives_its_messages_back_at_once() {
    let fx = Fx::new().await;
    let dying = Fx::broker_for(&fx.tag).await;
    let mut first = fx.subscribe_with(&dying, "crashy", &["job.run"]).await;
    let mut second = fx.subscribe("crashy", &["job.run"]).await;
    let e = event("job.run", 4);
    publish(&fx, &e).await;
    // Whichever consumer got it: make sure the dying one holds it.
    let mut held = fetch_n(&mut first, 1, Duration::from_secs(1)).await;
    if held.is_empty() {
        let got = fetch_n(&mut second, 1, LONG).await;
        assert_eq!(got.len(), 1);
        got.into_iter().next().unwrap().acker.release().await.unwrap();
        held = fetch_n(&mut first, 1, LONG).await;
        assert_eq!(held.len(), 1);
    }
    let before = held[0].delivery_count;
    // The process dies: its connection closes while the message is unacknowledged (the
    // acker is leaked, never settled nor dropped).
    std::mem::forget(held);
    dying.close().await.unwrap();
    let started = Instant::now();
    let back = fetch_n(&mut second, 1, LONG).await;
    assert_eq!(back.len(), 1, "never redelivered");
    assert!(started.elapsed() < Duration::from_secs(2), "redelivered only after {:?}", started.elapsed());
    assert_eq!(ok(&back[0]).id, e.id);
    assert_eq!(back[0].delivery_count, before + 1);
    back.into_iter().next().unwrap().acker.ack().await.unwrap();
    drop((first, second));
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_message_lands_in_the_dead_queue_with_its_reason_and_never_returns() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("mortal", &["job.run"]).await;
    let dead_queue = fx.broker.dead_queue_name("mortal");
    assert_eq!(dead_queue, format!("{}.dead", fx.broker.queue_name("mortal")));
    let e = event("job.run", 5);
    publish(&fx, &e).await;
    let got = fetch_n(&mut consumer, 1, LONG).await;
    got.into_iter().next().unwrap().acker.dead("handler gave up: boom").await.unwrap();
    assert!(fetch(&mut consumer, 10, Duration::from_secs(1)).await.is_empty(), "a dead message came back");
    let dead = fx.get(&dead_queue).await.expect("the dead queue holds the message");
    let props = &dead.delivery.properties;
    assert_eq!(header_string(props, RabbitMq::DEAD_REASON_HEADER).as_deref(), Some("handler gave up: boom"));
    assert_eq!(header_string(props, RabbitMq::DEAD_GROUP_HEADER).as_deref(), Some("mortal"));
    assert_eq!(header_string(props, "cloudEvents:id"), Some(e.id.to_string()));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&dead.delivery.data).unwrap(), e.data);
    assert!(fx.get(&dead_queue).await.is_none());
    drop(consumer);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_message_comes_back_at_once() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("releaser", &["job.run"]).await;
    let e = event("job.run", 6);
    publish(&fx, &e).await;
    let got = fetch_n(&mut consumer, 1, LONG).await;
    let started = Instant::now();
    got.into_iter().next().unwrap().acker.release().await.unwrap();
    let back = fetch_n(&mut consumer, 1, LONG).await;
    assert!(started.elapsed() < Duration::from_secs(1), "released message came back after {:?}", started.elapsed());
    assert_eq!(back.len(), 1);
    assert_eq!(ok(&back[0]).id, e.id);
    assert_eq!(back[0].delivery_count, 2);
    back.into_iter().next().unwrap().acker.ack().await.unwrap();
    drop(consumer);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_cloudevent_is_an_err_inbound() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("strict", &["job.run"]).await;
    fx.publish_raw("job.run", b"hello", BasicProperties::default().with_content_type("text/plain".into())).await;
    let got = fetch_n(&mut consumer, 1, LONG).await;
    assert_eq!(got.len(), 1);
    let why = got[0].event.as_ref().expect_err("not a CloudEvent");
    assert!(why.contains("specversion"), "{why}");
    got.into_iter().next().unwrap().acker.dead("not a CloudEvent").await.unwrap();
    drop(consumer);
    fx.cleanup().await;
}

/// Reads a binary-mode AMQP message into the official SDK's event.
fn sdk_event(props: &BasicProperties, body: &[u8]) -> cloudevents::Event {
    let mut builder = EventBuilderV10::new();
    for (name, value) in props.headers().as_ref().expect("headers").inner() {
        let Some(attr) = name.as_str().strip_prefix("cloudEvents:") else { continue };
        let AMQPValue::LongString(v) = value else { panic!("attribute {attr} is not a string: {value:?}") };
        let v = String::from_utf8(v.as_bytes().to_vec()).unwrap();
        builder = match attr {
            "specversion" => {
                assert_eq!(v, "1.0");
                builder
            }
            "id" => builder.id(v),
            "type" => builder.ty(v),
            "source" => builder.source(v),
            "subject" => builder.subject(v),
            "time" => builder.time(v),
            other => builder.extension(other, v),
        };
    }
    let content_type = props.content_type().as_ref().map(ShortString::as_str).expect("content_type");
    let data: serde_json::Value = serde_json::from_slice(body).unwrap();
    builder.data(content_type, data).build().expect("a valid CloudEvent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_client_reads_our_messages_as_cloudevents() {
    let fx = Fx::new().await;
    let tap = fx.tap().await;
    let mut e = event("user.created", 9).with_source("/auth");
    e.metadata.tenant = Some("acme".into());
    publish(&fx, &e).await;
    let mut msg = None;
    for _ in 0..50 {
        msg = fx.get(&tap).await;
        if msg.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let msg = msg.expect("the message on the exchange");
    let d = &msg.delivery;
    assert_eq!(d.routing_key.as_str(), "user.created");
    let props = &d.properties;
    assert_eq!(props.content_type().as_ref().map(ShortString::as_str), Some("application/json"));
    assert_eq!(props.message_id().as_ref().map(ShortString::as_str), Some(e.id.to_string().as_str()));
    assert_eq!(*props.delivery_mode(), Some(2));
    assert_eq!(*props.timestamp(), Some(u64::try_from(e.timestamp.timestamp()).unwrap()));
    let theirs = sdk_event(props, &d.data);
    assert_eq!(theirs.id(), e.id.to_string());
    assert_eq!(theirs.ty(), "user.created");
    assert_eq!(theirs.source().to_string(), "/auth");
    assert_eq!(theirs.subject(), Some("item/9"));
    assert_eq!(theirs.extension("tenant").map(ToString::to_string).as_deref(), Some("acme"));
    assert_eq!(theirs.time().map(|t| t.timestamp_micros()), Some(e.timestamp.timestamp_micros()));
    let data: serde_json::Value = match theirs.data() {
        Some(cloudevents::Data::Json(v)) => v.clone(),
        other => panic!("unexpected data {other:?}"),
    };
    assert_eq!(data, json!({"n": 9}));
    fx.cleanup().await;
}

const BIN_1: &str = "0190a3f4-0000-7000-8000-000000000001";
const BIN_2: &str = "0190a3f4-0000-7000-8000-000000000002";
const STR_1: &str = "0190a3f4-0000-7000-8000-000000000003";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_published_by_the_plain_client_are_consumed_in_both_modes() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("interop", &["invoice.sent"]).await;
    let time = "2026-01-02T03:04:05Z";

    // Binary mode, the binding's `cloudEvents:` prefix.
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("cloudEvents:specversion", "1.0"),
        ("cloudEvents:id", BIN_1),
        ("cloudEvents:type", "invoice.sent"),
        ("cloudEvents:source", "/billing"),
        ("cloudEvents:time", time),
        ("cloudEvents:subject", "invoice/1"),
    ] {
        headers.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    let props = BasicProperties::default().with_content_type("application/json".into()).with_headers(headers);
    fx.publish_raw("invoice.sent", br#"{"amount":12}"#, props).await;

    // Binary mode with the `cloudEvents_` prefix.
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("cloudEvents_specversion", "1.0"),
        ("cloudEvents_id", BIN_2),
        ("cloudEvents_type", "invoice.sent"),
        ("cloudEvents_source", "/billing"),
    ] {
        headers.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    let props = BasicProperties::default().with_content_type("application/json".into()).with_headers(headers);
    fx.publish_raw("invoice.sent", br#"{"amount":13}"#, props).await;

    // Structured mode, written by the official SDK.
    let sdk = EventBuilderV10::new()
        .id(STR_1)
        .ty("invoice.sent")
        .source("/billing")
        .time(time)
        .data("application/json", json!({"amount": 14}))
        .build()
        .unwrap();
    let body = serde_json::to_vec(&sdk).unwrap();
    let props = BasicProperties::default().with_content_type("application/cloudevents+json".into());
    fx.publish_raw("invoice.sent", &body, props).await;

    let got = fetch_n(&mut consumer, 3, LONG).await;
    assert_eq!(got.len(), 3);
    let read: Vec<&Event> = got.iter().map(ok).collect();
    assert_eq!(read[0].id.to_string(), BIN_1);
    assert_eq!(read[1].id.to_string(), BIN_2);
    assert_eq!(read[2].id.to_string(), STR_1);
    assert_eq!(read[0].source, "/billing");
    assert_eq!(read[0].subject.as_deref(), Some("invoice/1"));
    assert_eq!(read[0].timestamp.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    assert_eq!(read[0].data, json!({"amount": 12}));
    assert_eq!(read[1].data, json!({"amount": 13}));
    assert_eq!(read[2].data, json!({"amount": 14}));
    assert_eq!(read[2].timestamp.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    for r in &read {
        assert_eq!(r.event_type.as_str(), "invoice.sent");
    }
    for i in got {
        i.acker.ack().await.unwrap();
    }
    drop(consumer);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_one_event_id_twice_delivers_it_twice() {
    // RabbitMQ does not deduplicate: two publishes are two messages.
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("dups", &["job.run"]).await;
    let e = event("job.run", 8);
    publish(&fx, &e).await;
    publish(&fx, &e).await;
    let got = fetch_n(&mut consumer, 3, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|i| ok(i).id == e.id && i.delivery_count == 1));
    for i in got {
        i.acker.ack().await.unwrap();
    }
    drop(consumer);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_not_subscribed_are_not_delivered() {
    let fx = Fx::new().await;
    let queue = fx.broker.queue_name("picky");
    // An older version of the handler took `b.happened` too: its binding stays.
    drop(fx.subscribe("picky", &["a.happened", "b.happened"]).await);
    let mut consumer = fx.subscribe("picky", &["a.happened"]).await;
    let mut unrelated = fx.subscribe("unrelated", &["c.happened"]).await;
    publish(&fx, &event("b.happened", 1)).await;
    publish(&fx, &event("a.happened", 2)).await;
    publish(&fx, &event("c.happened", 3)).await;
    let got = fetch_n(&mut consumer, 3, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "only the type it takes");
    assert_eq!(ok(&got[0]).event_type.as_str(), "a.happened");
    got.into_iter().next().unwrap().acker.ack().await.unwrap();
    assert_eq!(fx.depth(&queue).await, 0, "the skipped message was acked");
    let got = fetch_n(&mut unrelated, 3, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(ok(&got[0]).event_type.as_str(), "c.happened");
    got.into_iter().next().unwrap().acker.ack().await.unwrap();
    drop((consumer, unrelated));
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_publish_concurrently() {
    let fx = Arc::new(Fx::new().await);
    let mut consumer = fx.subscribe("busy", &["job.run"]).await;
    let sent: Vec<Event> = (0..400).map(|n| event("job.run", n)).collect();
    let mut tasks = Vec::new();
    for chunk in sent.chunks(10) {
        let fx = Arc::clone(&fx);
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for e in &chunk {
                publish(&fx, e).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut ids = HashSet::new();
    let deadline = Instant::now() + LONG;
    while ids.len() < 400 && Instant::now() < deadline {
        for i in fetch(&mut consumer, 64, Duration::from_millis(500)).await {
            assert!(ids.insert(ok(&i).id), "delivered twice");
            i.acker.ack().await.unwrap();
        }
    }
    assert_eq!(ids, sent.iter().map(|e| e.id).collect::<HashSet<_>>());
    assert!(fetch(&mut consumer, 10, SHORT).await.is_empty());
    drop(consumer);
    Arc::try_unwrap(fx).ok().expect("no other owner").cleanup().await;
}

/// Closes this test's publisher connection from the server side.
fn kill_publisher_connection(tag: &str) {
    let ctl = std::env::var("BAE_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".to_owned());
    let out = std::process::Command::new(&ctl)
        .args(["list_connections", "-q", "--no-table-headers", "pid", "client_properties"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {ctl} (set BAE_RABBITMQCTL): {e}"));
    let listing = String::from_utf8_lossy(&out.stdout);
    let name = format!("bae-test-{tag} publisher");
    let pid = listing
        .lines()
        .find(|l| l.contains(&name))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no connection named {name} in:\n{listing}"));
    let closed = std::process::Command::new(&ctl).args(["close_connection", pid, "test"]).output().unwrap();
    assert!(closed.status.success(), "{}", String::from_utf8_lossy(&closed.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_publisher_connection_is_replaced_on_the_next_publish() {
    let fx = Fx::new().await;
    let mut consumer = fx.subscribe("survivor", &["job.run"]).await;
    publish(&fx, &event("job.run", 1)).await;
    kill_publisher_connection(&fx.tag);
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&fx, &event("job.run", 2)).await;
    let got = fetch_n(&mut consumer, 2, LONG).await;
    assert_eq!(got.len(), 2);
    for i in got {
        i.acker.ack().await.unwrap();
    }
    drop(consumer);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_after_close_fails_and_an_unreachable_server_is_a_clear_error() {
    let fx = Fx::new().await;
    fx.broker.close().await.unwrap();
    let err = fx.broker.publish(&Outgoing::new(&event("job.run", 1)).unwrap()).await.unwrap_err();
    assert!(better_auth_events::ErrorChain(&err).to_string().contains("closed"), "{err}");

    let err = RabbitMq::builder().url("amqp://guest:secret@127.0.0.1:1/%2f").build().await.unwrap_err();
    let message = better_auth_events::ErrorChain(&err).to_string();
    assert!(message.contains("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"), "{message}");
    assert!(!message.contains("secret"), "{message}");
    fx.cleanup().await;
}
