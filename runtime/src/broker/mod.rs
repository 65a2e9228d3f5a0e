//! Message brokers: the [`Broker`] trait that carries events between processes, the
//! [`BrokerBackend`] that makes a broker a bus's async backend (producer side), and what
//! the consumer side (the [`crate::Worker`]) reads from it.
//!
//! A broker publishes each event **once**, as a CloudEvent in its transport's binding, and
//! routes it to every subscribed handler: N async handlers never mean N messages. Each
//! handler consumes and acknowledges on its own ([`Subscription::group`] is its consumer
//! group, queue or durable consumer), so a handler that fails never makes one that
//! succeeded run again.
//!
//! Brokers shipped with this crate, each behind a cargo feature:
//!
//! | feature | broker |
//! |---|---|
//! | `redis` | `RedisStreams`: one stream, one consumer group per handler |
//! | `rabbitmq` | `RabbitMq`: a topic exchange, one durable queue per handler |
//! | `nats` | `NatsJetStream`: a stream, one durable pull consumer per handler |
//! | `postgres` | `PostgresQueue`: the event store's own delivery table, no broker |
//!
//! and [`MemoryBroker`] (in one process, with the same semantics: for tests, or a producer
//! and its workers in one process), and, for unit tests, [`RecordingBackend`], which
//! records what would be published.

pub mod binding;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod group_commit;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "postgres")]
mod postgres_queue;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
mod recording;
#[cfg(feature = "redis")]
mod redis_streams;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::binding::Outgoing;
pub use self::memory::{DeadMessage, MemoryBroker};
#[cfg(feature = "nats")]
pub use self::nats::{NatsJetStream, NatsJetStreamBuilder};
#[cfg(feature = "postgres")]
pub use self::postgres_queue::PostgresQueue;
#[cfg(feature = "rabbitmq")]
pub use self::rabbitmq::{RabbitMq, RabbitMqBuilder, lapin};
pub use self::recording::{Recorded, RecordingBackend};
#[cfg(feature = "redis")]
pub use self::redis_streams::{RedisStreams, RedisStreamsBuilder};
use crate::backend::AsyncBackend;
use crate::delivery::{Delivery, ShutdownReport};
use crate::envelope::Event;
use crate::error::Result;
/// The `redis` crate [`RedisStreams`] is built on, to hand it a connection of the same
/// version ([`RedisStreamsBuilder::connection`]).
#[cfg(feature = "redis")]
pub use ::redis;

/// A message broker that carries events from the processes that emit them to the
/// [`crate::Worker`]s that handle them.
///
/// Implementations publish with publisher confirms (a publish returns once the broker has
/// the message), deliver at least once, and count deliveries so that a worker knows which
/// attempt it runs.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// The broker's name, for logs and errors (`"redis-streams"`, `"rabbitmq"`, ...).
    fn name(&self) -> &str;

    /// Publishes one event, once, for every handler subscribed to its type. Returns when
    /// the broker has it (confirmed, persisted as the broker persists).
    async fn publish(&self, message: &Outgoing) -> Result<()>;

    /// Opens the consumer of one handler: creates its consumer group, queue or durable
    /// consumer if missing (idempotent: every worker of that handler shares it).
    async fn subscribe(&self, subscription: &Subscription) -> Result<Box<dyn Consumer>>;

    /// Closes the broker's connections. Publishing afterwards fails.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// What a handler subscribes to on a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscription {
    /// The handler's name: its consumer group, queue or durable consumer. Workers of one
    /// handler share it and split its messages; each handler has its own.
    pub group: String,
    /// The event types (CloudEvents `type`) the handler takes.
    pub event_types: Vec<String>,
    /// Most messages this consumer holds unacknowledged at once.
    pub prefetch: usize,
    /// How long a message stays with a consumer that has not acknowledged it before the
    /// broker gives it to another (a consumer that died).
    pub visibility_timeout: Duration,
}

impl Subscription {
    /// The subscription of handler `group` to `event_types`, with 64 messages of prefetch
    /// and a visibility timeout of 60 seconds.
    pub fn new(group: impl Into<String>, event_types: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            group: group.into(),
            event_types: event_types.into_iter().map(Into::into).collect(),
            prefetch: 64,
            visibility_timeout: Duration::from_secs(60),
        }
    }

    /// Sets the prefetch.
    pub fn with_prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Sets the visibility timeout.
    pub fn with_visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Whether this subscription takes events of `event_type`.
    pub fn takes(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|t| t == event_type)
    }
}

/// One handler's consumer on a broker.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Up to `max` messages for this handler, waiting at most `wait` for the first; empty
    /// when none came. Messages a dead consumer held past the visibility timeout come back
    /// here too.
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Inbound>>;
}

/// One message as a consumer received it.
#[non_exhaustive]
pub struct Inbound {
    /// The event, read from the transport's CloudEvents binding; `Err` (with the reason) for
    /// a message that is not a CloudEvent.
    pub event: std::result::Result<Event, String>,
    /// Which delivery of this message this is for this handler: 1 the first time, then one
    /// more for each retry or redelivery.
    pub delivery_count: u32,
    /// How to settle it.
    pub acker: Box<dyn Acker>,
}

impl Inbound {
    /// A received message.
    pub fn new(event: std::result::Result<Event, String>, delivery_count: u32, acker: Box<dyn Acker>) -> Self {
        Self { event, delivery_count: delivery_count.max(1), acker }
    }
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("event_id", &self.event.as_ref().map(|e| e.id))
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

/// Settles one received message. A message dropped unsettled stays unacknowledged: the
/// broker redelivers it (after the visibility timeout, or when the consumer's connection
/// closes).
#[async_trait]
pub trait Acker: Send + Sync {
    /// The handler succeeded: the message is done for this handler.
    async fn ack(self: Box<Self>) -> Result<()>;

    /// The handler failed and will be tried again: redeliver the message to this handler
    /// (only) after `delay`, counting one more delivery.
    async fn retry(self: Box<Self>, delay: Duration) -> Result<()>;

    /// The message is dead for this handler: put it where the broker keeps dead messages
    /// (a dead-letter exchange, a dead stream or subject) with `reason`, and never deliver
    /// it to this handler again.
    async fn dead(self: Box<Self>, reason: &str) -> Result<()>;

    /// Gives the message back unhandled, to be delivered again at once (to any consumer of
    /// this handler); used when a worker stops. The default leaves it unacknowledged, for
    /// the broker to redeliver after the visibility timeout.
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// A [`Broker`] as a bus's async backend: every emitted event is published once, for all
/// its handlers, wherever they run; the [`crate::Worker`]s subscribed to the broker run
/// them.
///
/// On a bus whose store keeps an outbox, the event and one pending *publication* are
/// written in one transaction; the publication is marked done once the broker confirmed
/// the message, and a process that dies in between leaves it for the next bus on that
/// store to publish (at least once: a worker may see an event twice).
///
/// ```no_run
/// # use better_auth_events_runtime::{EventBus, broker::RecordingBackend};
/// # async fn run() -> better_auth_events_runtime::Result<()> {
/// let broker = RecordingBackend::new(); // or `RedisStreams`, `RabbitMq`, `NatsJetStream`, ...
/// let bus = EventBus::builder().broker(broker).try_build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BrokerBackend {
    broker: Arc<dyn Broker>,
    relay: String,
}

impl BrokerBackend {
    /// `broker` as a backend.
    pub fn new(broker: impl Broker) -> Self {
        Self::from_arc(Arc::new(broker))
    }

    /// A shared broker as a backend.
    pub fn from_arc(broker: Arc<dyn Broker>) -> Self {
        let relay = format!("{RELAY_PREFIX}{}", broker.name());
        Self { broker, relay }
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The name under which the outbox keeps this broker's pending publications.
    pub fn relay_name(&self) -> &str {
        &self.relay
    }
}

impl std::fmt::Debug for BrokerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBackend").field("broker", &self.broker.name()).finish()
    }
}

/// The outbox keeps a broker's pending publications under this prefix and the broker's
/// name: no handler name starts with `@`.
pub(crate) const RELAY_PREFIX: &str = "@publish/";

#[async_trait]
impl AsyncBackend for BrokerBackend {
    async fn publish(&self, delivery: Delivery) -> Result<()> {
        self.broker.publish(&Outgoing::of_delivery(&delivery)?).await
    }

    /// Every delivery of one emit shares its event: one message.
    async fn publish_all(&self, deliveries: Vec<Delivery>) -> Result<()> {
        match deliveries.first() {
            Some(d) => self.broker.publish(&Outgoing::of_delivery(d)?).await,
            None => Ok(()),
        }
    }

    async fn close(&self, _deadline: Duration) -> Result<ShutdownReport> {
        self.broker.close().await?;
        Ok(ShutdownReport::default())
    }

    fn name(&self) -> &str {
        self.broker.name()
    }

    fn as_broker(&self) -> Option<BrokerBackend> {
        Some(self.clone())
    }
}
