//! [`RabbitMq`]: events through a RabbitMQ topic exchange, one durable queue per handler.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;

use super::binding::{Outgoing, from_message};
use super::{Acker, Broker, Consumer, Inbound, Subscription};
use crate::envelope::Event;
use crate::error::{Error, Result};

/// The AMQP 0-9-1 client [`RabbitMq`] runs on, re-exported for raw access to the broker
/// (reading dead queues, declaring policies, tests).
pub use lapin;

const NAME: &str = "rabbitmq";

/// The prefix of CloudEvents attribute headers in the AMQP binding.
const CE_PREFIX: &str = "cloudEvents:";
/// The prefix some clients write instead (JMS-compatible header names).
const CE_PREFIX_ALT: &str = "cloudEvents_";

/// A quorum queue counts how many times a message went back to the queue in this header.
const QUORUM_DELIVERY_COUNT: &str = "x-delivery-count";

/// Longest queue name part taken from a handler's name before it is shortened with a hash:
/// RabbitMQ names are at most 255 bytes, and suffixes (`.dead`, `.retry.<n>ms`) follow.
const MAX_GROUP_PART: usize = 160;

/// Events through a RabbitMQ topic exchange: each event is published once with its type as
/// routing key, and each handler consumes its own durable queue bound to the types it
/// takes.
///
/// # Topology
///
/// | what | name | kind |
/// |---|---|---|
/// | events | `bae.events` ([`RabbitMqBuilder::exchange`]) | durable topic exchange, routing key = event type |
/// | a handler's queue | `<prefix>.<group>` (prefix `bae`, [`RabbitMqBuilder::queue_prefix`]) | durable quorum queue (classic where quorum queues are missing), bound with each event type it takes |
/// | dead letters | exchange `<exchange>.dlx`, queue `<queue>.dead` | durable direct exchange, routing key = the handler's queue name |
/// | retries | `<queue>.retry.<bucket>ms` | durable classic queue whose messages expire back into the handler's queue |
///
/// Each event is published **once** (persistent, with publisher confirms) as a CloudEvent in
/// the AMQP binding's binary mode: the payload is the body, `content_type` is the event's
/// `datacontenttype`, every other attribute is a `cloudEvents:<attr>` string header,
/// `message_id` is the event id, `timestamp` its time and `type` its type. Consumers read
/// binary mode (header prefix `cloudEvents:` or `cloudEvents_`) and structured mode
/// (content type `application/cloudevents+json`), so plain AMQP clients can publish events.
///
/// # Settling
///
/// | [`Acker`] method | mechanism |
/// |---|---|
/// | `ack` | `basic.ack` |
/// | `retry(delay)` | a copy with header `x-bae-delivery` = count + 1 and `expiration` = `delay` is published (confirmed, mandatory) to the handler's delay queue for `delay` rounded up to a power of two of milliseconds; that queue dead-letters expired messages through the default exchange back into the handler's queue only; then the original is acked |
/// | `dead(reason)` | a copy with headers `x-bae-dead-reason` = `reason` and `x-bae-delivery` is published (confirmed, mandatory) to `<exchange>.dlx` with the queue's name as routing key, landing in `<queue>.dead`; then the original is acked |
/// | `release` | `basic.nack` with `requeue`: redelivered at once |
/// | dropped unsettled | `basic.nack` with `requeue` by the consumer's next `fetch`; if the consumer is dropped too, its channel closes and RabbitMQ redelivers the message |
///
/// A retry is never redelivered sooner than its delay. Per-message TTLs expire only at the
/// head of a queue, so one delay queue per power of two of milliseconds keeps a short delay
/// from waiting behind a long one: within a bucket `(b/2, b]` a retry may wait behind an
/// older one for at most `b/2` more, so it comes back after `delay` and at most about twice
/// `delay`, usually right at `delay`.
///
/// # Delivery counting
///
/// [`Inbound::delivery_count`] is `x-bae-delivery` (1 when absent: the first copy), plus the
/// quorum queue's `x-delivery-count` (how many times this copy went back to the queue), or,
/// on a classic queue, 1 when the `redelivered` flag is set (a classic queue cannot tell a
/// second redelivery from the first).
///
/// # Visibility timeout
///
/// RabbitMQ has none: an unacknowledged message stays with its consumer until the
/// consumer's channel or connection closes (a process that dies, a network failure caught
/// by the heartbeat), and is then redelivered at once to another consumer of the queue.
/// [`Subscription::visibility_timeout`] is therefore not used. A handler that hangs holds
/// its messages until the server's `consumer_timeout` (30 minutes by default) closes the
/// channel.
///
/// # Guarantees
///
/// At-least-once delivery; order per queue as published, except around retries and
/// redeliveries; no deduplication: publishing the same event id twice delivers it twice.
///
/// # Example
///
/// ```no_run
/// # use better_auth_events_runtime::{EventBus, broker::RabbitMq};
/// # async fn run() -> better_auth_events_runtime::Result<()> {
/// let broker = RabbitMq::builder()
///     .url("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .exchange("bae.events")
///     .queue_prefix("bae")
///     .build()
///     .await?;
/// let bus = EventBus::builder().broker(broker).try_build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitMq {
    inner: Arc<Inner>,
}

impl RabbitMq {
    /// The URL used when none is given: `BAE_AMQP_URL` when set, else
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub const DEFAULT_URL: &'static str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    /// The default exchange: `bae.events`.
    pub const DEFAULT_EXCHANGE: &'static str = "bae.events";
    /// The default prefix of handler queues: `bae`.
    pub const DEFAULT_QUEUE_PREFIX: &'static str = "bae";
    /// The header counting deliveries across retries: 2 on the first retry's copy, ...
    pub const DELIVERY_HEADER: &'static str = "x-bae-delivery";
    /// The header carrying why a message was declared dead, on messages in `<queue>.dead`.
    pub const DEAD_REASON_HEADER: &'static str = "x-bae-dead-reason";
    /// The header carrying the handler (subscription group) a dead message was dead for.
    pub const DEAD_GROUP_HEADER: &'static str = "x-bae-dead-group";

    /// A builder, with the defaults.
    pub fn builder() -> RabbitMqBuilder {
        RabbitMqBuilder::default()
    }

    /// The exchange events are published to.
    pub fn exchange(&self) -> &str {
        &self.inner.exchange
    }

    /// The dead-letter exchange: `<exchange>.dlx`.
    pub fn dead_letter_exchange(&self) -> &str {
        &self.inner.dlx
    }

    /// The queue of handler `group`: `<prefix>.<group>`, the group sanitized (`::` becomes
    /// `.`; a name with other characters, or a long one, gets a hash of the group instead).
    pub fn queue_name(&self, group: &str) -> String {
        queue_name(&self.inner.prefix, group)
    }

    /// The dead queue of handler `group`: `<queue>.dead`.
    pub fn dead_queue_name(&self, group: &str) -> String {
        format!("{}.dead", self.queue_name(group))
    }
}

impl std::fmt::Debug for RabbitMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMq")
            .field("url", &redact(&self.inner.url))
            .field("exchange", &self.inner.exchange)
            .field("queue_prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RabbitMq`]; [`RabbitMqBuilder::build`] connects.
#[derive(Clone, Debug)]
pub struct RabbitMqBuilder {
    url: Option<String>,
    exchange: String,
    prefix: String,
    channels: usize,
    quorum: bool,
    connect_timeout: Duration,
    connection_name: String,
}

impl Default for RabbitMqBuilder {
    fn default() -> Self {
        Self {
            url: None,
            exchange: RabbitMq::DEFAULT_EXCHANGE.to_owned(),
            prefix: RabbitMq::DEFAULT_QUEUE_PREFIX.to_owned(),
            channels: 4,
            quorum: true,
            connect_timeout: Duration::from_secs(10),
            connection_name: "better-auth-events".to_owned(),
        }
    }
}

impl RabbitMqBuilder {
    /// The AMQP URL (`amqp://user:password@host:5672/vhost`, the vhost URL-encoded: `%2f`
    /// is `/`). Default: the `BAE_AMQP_URL` environment variable, else
    /// [`RabbitMq::DEFAULT_URL`].
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The topic exchange events are published to (declared durable if missing). Default
    /// `bae.events`; its dead-letter exchange is `<exchange>.dlx`.
    pub fn exchange(mut self, name: impl Into<String>) -> Self {
        self.exchange = name.into();
        self
    }

    /// The prefix of handler queues: `<prefix>.<group>`. Default `bae`.
    pub fn queue_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many confirm-mode channels publishers share (round robin). Default 4.
    pub fn publisher_channels(mut self, n: usize) -> Self {
        self.channels = n.max(1);
        self
    }

    /// Whether handler and dead queues are quorum queues (replicated, with delivery
    /// counting) when the server has them; classic queues otherwise. Default `true`. A
    /// queue that already exists keeps its type.
    pub fn quorum_queues(mut self, quorum: bool) -> Self {
        self.quorum = quorum;
        self
    }

    /// How long connecting may take. Default 10 seconds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The name the connections show in RabbitMQ's management tools (with ` publisher` or
    /// ` consumer` appended). Default `better-auth-events`.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// Connects, opens the publisher channels and declares the exchanges.
    ///
    /// Fails, saying so, when the server cannot be reached or refuses the credentials, or
    /// when an exchange exists with another type.
    pub async fn build(self) -> Result<RabbitMq> {
        let url = match self.url {
            Some(url) => url,
            None => std::env::var("BAE_AMQP_URL").unwrap_or_else(|_| RabbitMq::DEFAULT_URL.to_owned()),
        };
        short(&self.exchange, "exchange name")?;
        short(&format!("{}.dlx", self.exchange), "dead-letter exchange name")?;
        if self.prefix.len() > 64 {
            return Err(backend(format!(
                "the queue prefix `{}` is longer than 64 bytes; use a shorter one",
                self.prefix
            )));
        }
        let inner = Arc::new(Inner {
            dlx: format!("{}.dlx", self.exchange),
            url,
            exchange: self.exchange,
            prefix: self.prefix,
            channels: self.channels,
            quorum: self.quorum,
            connect_timeout: self.connect_timeout,
            connection_name: self.connection_name,
            publisher: ArcSwapOption::empty(),
            reconnect: tokio::sync::Mutex::new(()),
            consumer_connection: tokio::sync::Mutex::new(None),
            declared: Mutex::new(HashSet::new()),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        inner.publisher().await?;
        Ok(RabbitMq { inner })
    }
}

struct Inner {
    url: String,
    exchange: String,
    dlx: String,
    prefix: String,
    channels: usize,
    quorum: bool,
    connect_timeout: Duration,
    connection_name: String,
    /// The publisher connection and its confirm channels; replaced when broken.
    publisher: ArcSwapOption<Publisher>,
    /// Held while the publisher connection is replaced.
    reconnect: tokio::sync::Mutex<()>,
    /// The connection consumers open their channels on (apart from the publisher's, so that
    /// a publisher throttled by flow control never delays acknowledgements).
    consumer_connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Delay queues already declared.
    declared: Mutex<HashSet<String>>,
    next: AtomicUsize,
    closed: AtomicBool,
}

struct Publisher {
    connection: Connection,
    channels: Vec<Channel>,
    /// One lock per channel, held while a publish takes its confirm sequence number and
    /// queues its frames (never across an await), so that the numbers the client counts
    /// match the order in which the server receives the messages.
    order: Vec<Mutex<()>>,
}

impl Publisher {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }
}

/// Why one publish failed.
enum SendError {
    Client(lapin::Error),
    Nack,
    Unroutable(String),
}

impl Inner {
    fn closed_error(&self) -> Error {
        backend("the RabbitMQ broker is closed; build a new `RabbitMq` to publish or consume again")
    }

    async fn connect(&self, role: &str) -> Result<Connection> {
        let properties =
            ConnectionProperties::default().with_connection_name(format!("{} {role}", self.connection_name).into());
        match tokio::time::timeout(self.connect_timeout, Connection::connect(&self.url, properties)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(backend(format!(
                "cannot connect to RabbitMQ at {}: {e}; is the server running and are the credentials and vhost \
                 right? (start one with `docker run -p 5672:5672 rabbitmq:3`, set the URL with \
                 `RabbitMq::builder().url(..)` or `BAE_AMQP_URL`)",
                redact(&self.url)
            ))),
            Err(_) => Err(backend(format!(
                "cannot connect to RabbitMQ at {}: no answer within {:?}; is the host right and the server running?",
                redact(&self.url),
                self.connect_timeout
            ))),
        }
    }

    /// Declares the events exchange and the dead-letter exchange (idempotent).
    async fn declare_exchanges(&self, channel: &Channel) -> Result<()> {
        for (name, kind) in [(&self.exchange, ExchangeKind::Topic), (&self.dlx, ExchangeKind::Direct)] {
            let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
            channel
                .exchange_declare(short(name, "exchange name")?, kind.clone(), options, FieldTable::default())
                .await
                .map_err(|e| {
                    backend(format!(
                        "cannot declare the RabbitMQ exchange `{name}` ({kind:?}, durable): {e}; if it exists with \
                         another type, delete it or choose another name with `RabbitMq::builder().exchange(..)`"
                    ))
                })?;
        }
        Ok(())
    }

    async fn open_publisher(&self) -> Result<Publisher> {
        let connection = self.connect("publisher").await?;
        let mut channels = Vec::with_capacity(self.channels);
        for _ in 0..self.channels {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| backend(format!("cannot open a RabbitMQ channel for publishing: {e}")))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| backend(format!("cannot turn on publisher confirms on RabbitMQ: {e}")))?;
            channels.push(channel);
        }
        if let Some(first) = channels.first() {
            self.declare_exchanges(first).await?;
        }
        let order = channels.iter().map(|_| Mutex::new(())).collect();
        Ok(Publisher { connection, channels, order })
    }

    /// The publisher connection, (re)connected when missing or broken.
    async fn publisher(&self) -> Result<Arc<Publisher>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        if let Some(p) = self.publisher.load_full().filter(|p| p.healthy()) {
            return Ok(p);
        }
        let _reconnecting = self.reconnect.lock().await;
        if let Some(p) = self.publisher.load_full().filter(|p| p.healthy()) {
            return Ok(p);
        }
        if self.publisher.load().is_some() {
            tracing::warn!(url = %redact(&self.url), "the RabbitMQ publisher connection is broken; reconnecting");
        }
        let p = Arc::new(self.open_publisher().await?);
        if self.closed.load(Ordering::Acquire) {
            let _ = p.connection.close(200, "OK".into()).await;
            return Err(self.closed_error());
        }
        self.publisher.store(Some(Arc::clone(&p)));
        Ok(p)
    }

    async fn send(
        &self,
        publisher: &Publisher,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> std::result::Result<(), SendError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % publisher.channels.len();
        let channel = &publisher.channels[i];
        let options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
        let mut publish =
            Box::pin(channel.basic_publish(exchange.into(), routing_key.into(), options, body, properties));
        // The first poll takes the confirm number and queues the frames, without awaiting:
        // under the lock, so that two tasks cannot swap numbers and frames.
        let first = {
            let _order = publisher.order[i].lock().unwrap_or_else(PoisonError::into_inner);
            publish.as_mut().poll(&mut Context::from_waker(futures::task::noop_waker_ref()))
        };
        let confirm = match first {
            Poll::Ready(r) => r,
            Poll::Pending => publish.await,
        }
        .map_err(SendError::Client)?;
        match confirm.await.map_err(SendError::Client)? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(SendError::Unroutable(returned.reply_text.to_string())),
            Confirmation::Nack(_) => Err(SendError::Nack),
        }
    }

    /// Publishes one message with confirms; a broken connection is replaced and the publish
    /// tried once more.
    async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> std::result::Result<(), Error> {
        let mut reconnected = false;
        loop {
            let publisher = self.publisher().await?;
            let what = || {
                if exchange.is_empty() {
                    format!("to queue `{routing_key}`")
                } else {
                    format!("to exchange `{exchange}` with routing key `{routing_key}`")
                }
            };
            match self.send(&publisher, exchange, routing_key, body, properties.clone(), mandatory).await {
                Ok(()) => return Ok(()),
                Err(SendError::Client(e)) if !reconnected && !publisher.healthy() => {
                    tracing::warn!(error = %e, "publishing to RabbitMQ failed on a broken connection; reconnecting and publishing again");
                    reconnected = true;
                }
                Err(SendError::Client(e)) => {
                    return Err(backend(format!(
                        "cannot publish {} on RabbitMQ at {}: {e}; the message was not confirmed",
                        what(),
                        redact(&self.url)
                    )));
                }
                Err(SendError::Nack) => {
                    return Err(backend(format!(
                        "RabbitMQ refused (nack) the message published {}: an internal error of a queue; publish again",
                        what()
                    )));
                }
                Err(SendError::Unroutable(why)) => {
                    return Err(backend(format!("RabbitMQ could not route the message published {}: {why}", what())));
                }
            }
        }
    }

    /// The connection consumers use, (re)connected when missing or broken.
    async fn consumer_connection(&self) -> Result<Arc<Connection>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let mut slot = self.consumer_connection.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(Arc::clone(c));
        }
        let connection = Arc::new(self.connect("consumer").await?);
        *slot = Some(Arc::clone(&connection));
        Ok(connection)
    }

    /// Declares queue `name` (durable) with `arguments`: a quorum queue if wanted and
    /// possible, else a classic one; a queue that exists with other arguments is used as it
    /// is.
    async fn declare_queue(&self, connection: &Connection, name: &str, arguments: &FieldTable) -> Result<()> {
        let kinds: &[&str] = if self.quorum { &["quorum", "classic"] } else { &["classic"] };
        let queue = short(name, "queue name")?;
        let mut refusals = Vec::new();
        for kind in kinds {
            let channel = open_channel(connection).await?;
            let mut args = arguments.clone();
            args.insert("x-queue-type".into(), AMQPValue::LongString((*kind).into()));
            match channel.queue_declare(queue.clone(), QueueDeclareOptions::durable(), args).await {
                Ok(_) => {
                    let _ = channel.close(200, "OK".into()).await;
                    return Ok(());
                }
                Err(e) if is_precondition_failed(&e) => {
                    tracing::debug!(queue = name, kind, error = %e, "RabbitMQ refused this queue declaration");
                    refusals.push(format!("{kind}: {e}"));
                }
                Err(e) => return Err(backend(format!("cannot declare the RabbitMQ queue `{name}`: {e}"))),
            }
        }
        // It exists with other arguments (declared by hand, or by an older version): use it.
        let channel = open_channel(connection).await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::durable() };
        match channel.queue_declare(queue, options, FieldTable::default()).await {
            Ok(_) => {
                tracing::warn!(
                    queue = name,
                    "the RabbitMQ queue exists with other arguments than these; using it as it is"
                );
                let _ = channel.close(200, "OK".into()).await;
                Ok(())
            }
            Err(e) => Err(backend(format!(
                "cannot declare the RabbitMQ queue `{name}` ({}) nor find it ({e})",
                refusals.join("; ")
            ))),
        }
    }

    /// Declares the dead queue of `queue` and binds it to the dead-letter exchange.
    async fn declare_dead(&self, connection: &Connection, queue: &str) -> Result<()> {
        let dead = format!("{queue}.dead");
        self.declare_queue(connection, &dead, &FieldTable::default()).await?;
        let channel = open_channel(connection).await?;
        channel
            .queue_bind(
                short(&dead, "queue name")?,
                short(&self.dlx, "exchange name")?,
                short(queue, "routing key")?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| backend(format!("cannot bind the RabbitMQ queue `{dead}` to `{}`: {e}", self.dlx)))?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(())
    }

    /// Declares (idempotently) everything a subscription consumes from.
    async fn declare_subscription(&self, connection: &Connection, queue: &str, sub: &Subscription) -> Result<()> {
        let channel = open_channel(connection).await?;
        self.declare_exchanges(&channel).await?;
        self.declare_dead(connection, queue).await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dlx.as_str().into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
        self.declare_queue(connection, queue, &arguments).await?;
        for event_type in &sub.event_types {
            channel
                .queue_bind(
                    short(queue, "queue name")?,
                    short(&self.exchange, "exchange name")?,
                    short(event_type, "event type")?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    backend(format!(
                        "cannot bind the RabbitMQ queue `{queue}` to `{}` for `{event_type}`: {e}",
                        self.exchange
                    ))
                })?;
        }
        let _ = channel.close(200, "OK".into()).await;
        Ok(())
    }

    /// Declares the delay queue `name`, whose expired messages go back to `queue`.
    async fn declare_delay_queue(&self, name: &str, queue: &str) -> Result<()> {
        if self.declared.lock().unwrap_or_else(PoisonError::into_inner).contains(name) {
            return Ok(());
        }
        let publisher = self.publisher().await?;
        let channel = open_channel(&publisher.connection).await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
        channel
            .queue_declare(short(name, "queue name")?, QueueDeclareOptions::durable(), arguments)
            .await
            .map_err(|e| backend(format!("cannot declare the RabbitMQ delay queue `{name}`: {e}")))?;
        let _ = channel.close(200, "OK".into()).await;
        self.declared.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_owned());
        Ok(())
    }

    async fn open_consumer(&self, queue: &str, sub: &Subscription) -> Result<Live> {
        let connection = self.consumer_connection().await?;
        self.declare_subscription(&connection, queue, sub).await?;
        let channel = open_channel(&connection).await?;
        let prefetch = u16::try_from(sub.prefetch.max(1)).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| backend(format!("cannot set the prefetch of RabbitMQ queue `{queue}`: {e}")))?;
        let tag = format!("bae-{}", Uuid::now_v7().simple());
        let stream = channel
            .basic_consume(
                short(queue, "queue name")?,
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| backend(format!("cannot consume the RabbitMQ queue `{queue}`: {e}")))?;
        Ok(Live { channel, stream })
    }
}

async fn open_channel(connection: &Connection) -> Result<Channel> {
    connection.create_channel().await.map_err(|e| backend(format!("cannot open a RabbitMQ channel: {e}")))
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406)
}

#[async_trait]
impl Broker for RabbitMq {
    fn name(&self) -> &str {
        NAME
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        let (body, properties) = binary_message(message)?;
        short(message.event_type(), "event type")?;
        self.inner.publish_raw(&self.inner.exchange, message.event_type(), &body, properties, false).await
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Box<dyn Consumer>> {
        let queue: Arc<str> = self.queue_name(&subscription.group).into();
        let live = self.inner.open_consumer(&queue, subscription).await?;
        let (dropped_tx, dropped_rx) = mpsc::unbounded_channel();
        Ok(Box::new(RabbitConsumer {
            inner: Arc::clone(&self.inner),
            subscription: subscription.clone(),
            group: subscription.group.as_str().into(),
            queue,
            live: Some(live),
            dropped_tx,
            dropped_rx,
        }))
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let _reconnecting = self.inner.reconnect.lock().await;
        if let Some(p) = self.inner.publisher.swap(None)
            && p.connection.status().connected()
        {
            let _ = p.connection.close(200, "OK".into()).await;
        }
        if let Some(c) = self.inner.consumer_connection.lock().await.take()
            && c.status().connected()
        {
            let _ = c.close(200, "OK".into()).await;
        }
        Ok(())
    }
}

struct Live {
    channel: Channel,
    stream: lapin::Consumer,
}

/// One handler's consumer: a channel with `basic.qos(prefetch)` and a `basic.consume` on
/// the handler's queue, reopened (reconnecting if needed) when it breaks.
struct RabbitConsumer {
    inner: Arc<Inner>,
    subscription: Subscription,
    group: Arc<str>,
    queue: Arc<str>,
    live: Option<Live>,
    /// Ackers dropped unsettled send their message here, to be given back by the next
    /// fetch (or by the channel closing when this consumer is gone).
    dropped_tx: mpsc::UnboundedSender<lapin::Acker>,
    dropped_rx: mpsc::UnboundedReceiver<lapin::Acker>,
}

impl RabbitConsumer {
    /// Turns a delivery into an [`Inbound`], or acks it when it is of a type this handler
    /// does not take (a binding left from an older version of it).
    async fn accept(&self, channel: &Channel, delivery: Delivery, out: &mut Vec<Inbound>) {
        let Delivery { redelivered, properties, data, acker, .. } = delivery;
        let event = decode(&properties, &data);
        if let Ok(e) = &event
            && !self.subscription.takes(e.event_type.as_str())
        {
            tracing::debug!(queue = %self.queue, event_type = %e.event_type, "skipping an event of a type this handler does not take");
            if let Err(e) = acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(queue = %self.queue, error = %e, "cannot ack a skipped message");
            }
            return;
        }
        let count = delivery_count(&properties, redelivered);
        out.push(Inbound::new(
            event,
            count,
            Box::new(RabbitAcker {
                inner: Arc::clone(&self.inner),
                _channel: channel.clone(),
                acker,
                queue: Arc::clone(&self.queue),
                group: Arc::clone(&self.group),
                properties,
                body: data,
                count,
                settled: false,
                dropped: self.dropped_tx.clone(),
            }),
        ));
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Inbound>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let deadline = Instant::now() + wait;
        while let Ok(acker) = self.dropped_rx.try_recv() {
            release_dropped(acker).await;
        }
        // The first message, waiting at most until the deadline.
        while out.is_empty() {
            let live = match self.live.take() {
                Some(live) => live,
                None => self.inner.open_consumer(&self.queue, &self.subscription).await?,
            };
            let Live { channel, mut stream } = live;
            let next = tokio::select! {
                biased;
                Some(acker) = self.dropped_rx.recv() => {
                    release_dropped(acker).await;
                    self.live = Some(Live { channel, stream });
                    continue;
                }
                next = tokio::time::timeout_at(deadline, stream.next()) => next,
            };
            match next {
                Err(_) => {
                    self.live = Some(Live { channel, stream });
                    return Ok(out);
                }
                Ok(Some(Ok(delivery))) => {
                    self.accept(&channel, delivery, &mut out).await;
                    self.live = Some(Live { channel, stream });
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(queue = %self.queue, error = %e, "the RabbitMQ consumer broke; reopening it");
                    pause_before_reopen(deadline).await;
                }
                Ok(None) => {
                    tracing::warn!(queue = %self.queue, "the RabbitMQ consumer was cancelled; reopening it");
                    pause_before_reopen(deadline).await;
                }
            }
            if self.live.is_none() && Instant::now() >= deadline {
                return Ok(out);
            }
        }
        // Then what has already arrived, up to `max`.
        while out.len() < max {
            let Some(Live { channel, mut stream }) = self.live.take() else { break };
            match stream.next().now_or_never() {
                Some(Some(Ok(delivery))) => {
                    self.accept(&channel, delivery, &mut out).await;
                    self.live = Some(Live { channel, stream });
                }
                None => {
                    self.live = Some(Live { channel, stream });
                    break;
                }
                Some(Some(Err(_)) | None) => break,
            }
        }
        Ok(out)
    }
}

/// Gives back a message whose acker was dropped unsettled.
async fn release_dropped(acker: lapin::Acker) {
    if let Err(e) = acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await {
        tracing::debug!(error = %e, "cannot give back a message dropped unsettled; RabbitMQ redelivers it when its channel closes");
    }
}

async fn pause_before_reopen(deadline: Instant) {
    let pause = Instant::now() + Duration::from_millis(100);
    tokio::time::sleep_until(pause.min(deadline)).await;
}

/// Settles one delivery; see [`RabbitMq`].
struct RabbitAcker {
    inner: Arc<Inner>,
    /// Keeps the consumer's channel open while this message is unsettled (a channel closes
    /// when its last handle goes, and RabbitMQ then redelivers what it held).
    _channel: Channel,
    acker: lapin::Acker,
    queue: Arc<str>,
    group: Arc<str>,
    properties: BasicProperties,
    body: Vec<u8>,
    count: u32,
    settled: bool,
    dropped: mpsc::UnboundedSender<lapin::Acker>,
}

impl RabbitAcker {
    async fn ack_original(&mut self, what: &str) -> Result<()> {
        self.settled = true;
        match self.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(backend(format!(
                "cannot {what} a message of RabbitMQ queue `{}`: its channel closed; RabbitMQ redelivers it",
                self.queue
            ))),
            Err(e) => Err(backend(format!(
                "cannot {what} a message of RabbitMQ queue `{}`: {e}; RabbitMQ redelivers it",
                self.queue
            ))),
        }
    }

    /// The message's properties for a copy: its headers without the quorum queue's count,
    /// `x-bae-delivery` = `delivery`, and `extra`.
    fn copy_properties(&self, delivery: u32, extra: &[(&str, &str)]) -> BasicProperties {
        let mut headers = self.properties.headers().as_ref().map(|h| h.inner().clone()).unwrap_or_default();
        headers.remove(QUORUM_DELIVERY_COUNT);
        headers.insert(RabbitMq::DELIVERY_HEADER.into(), AMQPValue::LongLongInt(i64::from(delivery)));
        for (name, value) in extra {
            headers.insert((*name).into(), AMQPValue::LongString((*value).into()));
        }
        let mut properties = self.properties.clone().with_headers(FieldTable::from(headers));
        if properties.delivery_mode().is_none() {
            properties = properties.with_delivery_mode(2);
        }
        properties
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.ack_original("ack").await
    }

    async fn retry(mut self: Box<Self>, delay: Duration) -> Result<()> {
        let ms = u64::try_from(delay.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let bucket = ms.max(1).checked_next_power_of_two().unwrap_or(1 << 63);
        let delay_queue = format!("{}.retry.{bucket}ms", self.queue);
        let properties = self.copy_properties(self.count.saturating_add(1), &[]).with_expiration(ms.to_string().into());
        let mut declared_again = false;
        loop {
            self.inner.declare_delay_queue(&delay_queue, &self.queue).await?;
            match self.inner.publish_raw("", &delay_queue, &self.body, properties.clone(), true).await {
                Ok(()) => break,
                Err(e) if !declared_again => {
                    // The delay queue may have been deleted since it was declared.
                    tracing::debug!(queue = %delay_queue, error = %crate::ErrorChain(&e), "declaring the delay queue again");
                    self.inner.declared.lock().unwrap_or_else(PoisonError::into_inner).remove(&delay_queue);
                    declared_again = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.ack_original("retry").await
    }

    async fn dead(mut self: Box<Self>, reason: &str) -> Result<()> {
        let group = Arc::clone(&self.group);
        let properties = self.copy_properties(
            self.count,
            &[(RabbitMq::DEAD_REASON_HEADER, reason), (RabbitMq::DEAD_GROUP_HEADER, &group)],
        );
        let mut declared_again = false;
        loop {
            match self.inner.publish_raw(&self.inner.dlx, &self.queue, &self.body, properties.clone(), true).await {
                Ok(()) => break,
                Err(e) if !declared_again => {
                    // The dead queue may have been deleted since the subscription declared it.
                    tracing::debug!(queue = %self.queue, error = %crate::ErrorChain(&e), "declaring the dead queue again");
                    let publisher = self.inner.publisher().await?;
                    self.inner.declare_dead(&publisher.connection, &self.queue).await?;
                    declared_again = true;
                }
                Err(e) => return Err(e),
            }
        }
        self.ack_original("dead-letter").await
    }

    async fn release(mut self: Box<Self>) -> Result<()> {
        self.settled = true;
        match self.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await {
            Ok(_) => Ok(()),
            Err(e) => Err(backend(format!(
                "cannot release a message of RabbitMQ queue `{}`: {e}; RabbitMQ redelivers it when the channel closes",
                self.queue
            ))),
        }
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        if self.settled || !self.acker.usable() {
            return;
        }
        // Dropped unsettled (a handler that panicked, a task aborted): its consumer gives it
        // back on its next fetch; when the consumer is gone too, its channel closes and
        // RabbitMQ redelivers it.
        let _ = self.dropped.send(self.acker.clone());
    }
}

/// The binary-mode message of an event: the payload as body, the attributes as headers.
fn binary_message(message: &Outgoing) -> Result<(Vec<u8>, BasicProperties)> {
    let parts = message.binary()?;
    // No `data`: an empty body.
    let body = parts.data.as_ref().map_or_else(Vec::new, |d| d.get().as_bytes().to_vec());
    let mut headers = FieldTable::default();
    let mut content_type = "application/json".to_owned();
    let mut timestamp = None;
    for (name, value) in parts.attributes {
        if name == "datacontenttype" {
            content_type = value;
            continue;
        }
        if name == "time" {
            timestamp =
                chrono::DateTime::parse_from_rfc3339(&value).ok().and_then(|t| u64::try_from(t.timestamp()).ok());
        }
        headers.insert(short(&format!("{CE_PREFIX}{name}"), "attribute name")?, AMQPValue::LongString(value.into()));
    }
    let mut properties = BasicProperties::default()
        .with_content_type(short(&content_type, "datacontenttype")?)
        .with_delivery_mode(2)
        .with_message_id(short(message.id(), "event id")?)
        .with_type(short(message.event_type(), "event type")?)
        .with_headers(headers);
    if let Some(t) = timestamp {
        properties = properties.with_timestamp(t);
    }
    Ok((body, properties))
}

/// Reads a delivery in either content mode.
fn decode(properties: &BasicProperties, body: &[u8]) -> std::result::Result<Event, String> {
    let mut attributes = Vec::new();
    if let Some(headers) = properties.headers() {
        for (name, value) in headers {
            let name = name.as_str();
            let attribute = strip_prefix_ci(name, CE_PREFIX).or_else(|| strip_prefix_ci(name, CE_PREFIX_ALT));
            if let Some(attribute) = attribute {
                attributes.push((attribute.to_owned(), value_string(value)));
            }
        }
    }
    let content_type = properties.content_type().as_ref().map(ShortString::as_str);
    from_message(attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())), content_type, body)
}

fn strip_prefix_ci<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &name[prefix.len()..])
}

/// A header value as a CloudEvents attribute string.
fn value_string(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        AMQPValue::Timestamp(t) => i64::try_from(*t)
            .ok()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| t.to_string()),
        other => integer(other).map(|n| n.to_string()).unwrap_or_else(|| match other {
            AMQPValue::Boolean(b) => b.to_string(),
            AMQPValue::Float(f) => f.to_string(),
            AMQPValue::Double(d) => d.to_string(),
            other => format!("{other:?}"),
        }),
    }
}

fn integer(value: &AMQPValue) -> Option<i128> {
    Some(match value {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        _ => return None,
    })
}

fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    integer(value).map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// `x-bae-delivery` (1 when absent) plus the times this copy went back to its queue.
fn delivery_count(properties: &BasicProperties, redelivered: bool) -> u32 {
    let copy = header_u32(properties, RabbitMq::DELIVERY_HEADER).unwrap_or(1).max(1);
    let returns = header_u32(properties, QUORUM_DELIVERY_COUNT).unwrap_or(u32::from(redelivered));
    copy.saturating_add(returns)
}

/// The queue of `group`: `<prefix>.<group>` with `::` as `.` when the group is made of
/// `[A-Za-z0-9_-]` words joined by `::` (a reversible mapping); otherwise the group with
/// other characters as `_`, shortened if long, and a hash of the group appended.
fn queue_name(prefix: &str, group: &str) -> String {
    let plain = !group.is_empty()
        && group.len() <= MAX_GROUP_PART
        && group
            .split("::")
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    if plain {
        return format!("{prefix}.{}", group.replace("::", "."));
    }
    let mut clean: String = group
        .replace("::", ".")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .take(MAX_GROUP_PART)
        .collect();
    let hash = Uuid::new_v5(&Uuid::NAMESPACE_OID, group.as_bytes()).simple().to_string();
    if !clean.is_empty() {
        clean.push('-');
    }
    format!("{prefix}.{clean}{}", &hash[..8])
}

/// `url` without its password.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    let Some(at) = rest.rfind('@') else { return url.to_owned() };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &userinfo[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

/// `s` as an AMQP short string (at most 255 bytes).
fn short(s: &str, what: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|_| {
        backend(format!(
            "the {what} `{}…` is longer than the 255 bytes AMQP allows",
            s.chars().take(40).collect::<String>()
        ))
    })
}

fn backend(message: impl Into<String>) -> Error {
    Error::backend(NAME, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_readable_when_they_can_be_and_hashed_when_not() {
        assert_eq!(queue_name("bae", "my_crate::emails::send_welcome"), "bae.my_crate.emails.send_welcome");
        let dotted = queue_name("bae", "my_crate.emails.send_welcome");
        assert_ne!(dotted, "bae.my_crate.emails.send_welcome");
        assert!(dotted.starts_with("bae.my_crate.emails.send_welcome-"), "{dotted}");
        assert_eq!(dotted, queue_name("bae", "my_crate.emails.send_welcome"));
        assert_ne!(queue_name("bae", "a b"), queue_name("bae", "a_b"));
        let long = "x".repeat(400);
        assert!(queue_name("bae", &long).len() < 200);
        assert_ne!(queue_name("bae", &long), queue_name("bae", &"x".repeat(401)));
        assert!(queue_name("bae", "").starts_with("bae."));
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("amqp://guest:secret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
    }

    #[test]
    fn the_delivery_count_adds_the_copy_and_the_returns() {
        let mut headers = FieldTable::default();
        assert_eq!(delivery_count(&BasicProperties::default(), false), 1);
        assert_eq!(delivery_count(&BasicProperties::default(), true), 2);
        headers.insert(RabbitMq::DELIVERY_HEADER.into(), AMQPValue::LongLongInt(3));
        let p = BasicProperties::default().with_headers(headers.clone());
        assert_eq!(delivery_count(&p, false), 3);
        headers.insert(QUORUM_DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2));
        let p = BasicProperties::default().with_headers(headers);
        assert_eq!(delivery_count(&p, true), 5);
    }
}
