//! [`NatsJetStream`]: a [`Broker`] on NATS JetStream.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::header::{self, HeaderMap, HeaderName, HeaderValue};
use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use futures::StreamExt;

use super::binding::{self, Outgoing};
use super::{Acker, Broker, Consumer, Inbound, Subscription};
use crate::envelope::Event;
use crate::error::{Error, Result};

/// The broker's name in logs and errors.
const NAME: &str = "nats-jetstream";
/// Where a NATS server listens by default.
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// The default stream.
const DEFAULT_STREAM: &str = "BAE_EVENTS";
/// The default subject prefix.
const DEFAULT_PREFIX: &str = "bae.events";
/// The default duplicate window.
const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The default `max_ack_pending` of a consumer (raised to the prefetch when that is larger).
const DEFAULT_MAX_ACK_PENDING: usize = 10_000;
/// The default timeout of JetStream API requests, publish acknowledgements and double acks.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How to start a NATS server with JetStream, for error messages.
const START: &str = "start one with `nats-server -js`";

/// The prefix of the binary-mode CloudEvents headers.
const CE_HEADER_PREFIX: &str = "ce-";

/// A [`Broker`] on NATS JetStream: one stream, one durable pull consumer per handler, a dead
/// stream.
///
/// # Layout
///
/// - One stream (default `BAE_EVENTS`) captures `<prefix>.>` (default prefix `bae.events`).
///   An event of type `user.created` is published **once**, on `bae.events.user.created`,
///   whatever the number of handlers.
/// - Each handler has its own durable pull consumer on that stream, named from its
///   [`Subscription::group`] (see [`NatsJetStream::consumer_name`]), filtered on the subjects of
///   its event types, with explicit acks. A new consumer starts with the messages published
///   after it was first created (deliver policy *new*).
/// - Dead messages go to a second stream (default `<stream>_DEAD`, e.g. `BAE_EVENTS_DEAD`)
///   that captures `<dead prefix>.>` (default `<prefix>_dead`, e.g. `bae.events_dead`), on
///   `<dead prefix>.<consumer name>`: one subject per handler.
///
/// # CloudEvents binding
///
/// Messages are written in the **binary content mode** of the CloudEvents NATS protocol
/// binding (1.0.3, which defines it for NATS 2.2 and later): the payload is the event's
/// `data` (JSON) and every other attribute travels in its own header, `ce-<attribute>`
/// (`ce-id`, `ce-type`, `ce-source`, `ce-datacontenttype`, extensions too), its value
/// percent-encoded as the binding prescribes. Reading accepts both modes: a message whose
/// `Content-Type` header starts with `application/cloudevents` is *structured* (the payload is
/// the CloudEvents JSON document); any other is *binary*, and a message without `ce-` headers
/// whose payload is a JSON object is tried as structured (what servers older than 2.2 and
/// the binding's 1.0.2 version write).
///
/// # What JetStream promises
///
/// - **Publishing** waits for the stream's publish acknowledgement (the message is stored).
///   Each message carries `Nats-Msg-Id` = the event id: the server drops a second message
///   with the same id published within the stream's duplicate window (default 2 minutes),
///   so a publish retried after a lost acknowledgement does not deliver the event twice.
///   After the window, the same id is stored again.
/// - **Delivery** is at least once, in stream order per consumer for first deliveries;
///   retried and redelivered messages come back out of order.
/// - **Acknowledgements**: `ack` is a double ack (`+ACK`, waiting for the server's
///   confirmation); `retry(delay)` is `-NAK {"delay": …}`, which the server redelivers to
///   this consumer only, once `delay` has passed (later if no worker is fetching);
///   `dead(reason)` publishes the message to the dead stream, then terminates it (`+TERM`,
///   never redelivered); `release()` is `-NAK` without delay (redelivered at once). A
///   message left unacknowledged is redelivered after the consumer's `ack_wait` (the
///   [`Subscription::visibility_timeout`]).
/// - **Counting**: [`Inbound::delivery_count`] is the consumer's delivery count of the message
///   (`delivered` in its reply subject), 1 the first time. Consumers have no `max_deliver`:
///   the worker decides when to give up.
///
/// # Servers before 2.10
///
/// A consumer filters on several subjects (`filter_subjects`), and a durable consumer's filter
/// can change, only from NATS 2.10 on: there, each handler's consumer filters on the subjects
/// of its types, updated when they change. On an older server (2.9 skips every message of a
/// durable consumer whose filter was updated), every consumer filters on `<prefix>.>` and
/// acknowledges and skips the messages of the types its handler does not take itself.
///
/// # Example
///
/// ```no_run
/// # use better_auth_events_runtime::{EventBus, broker::NatsJetStream};
/// # use std::time::Duration;
/// # async fn run() -> better_auth_events_runtime::Result<()> {
/// let nats = NatsJetStream::builder()
///     .url("nats://127.0.0.1:4222")
///     .stream("BAE_EVENTS")
///     .subject_prefix("bae.events")
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .build()
///     .await?;
/// let bus = EventBus::builder().broker(nats).try_build().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsJetStream {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    url: String,
    owns_client: bool,
    stream: String,
    prefix: String,
    dead_stream: String,
    dead_prefix: String,
    max_ack_pending: usize,
    multi_filter: bool,
    closed: AtomicBool,
}

impl std::fmt::Debug for NatsJetStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsJetStream")
            .field("url", &self.inner.url)
            .field("stream", &self.inner.stream)
            .field("subject_prefix", &self.inner.prefix)
            .field("dead_stream", &self.inner.dead_stream)
            .finish_non_exhaustive()
    }
}

/// Builds a [`NatsJetStream`]: where the server is, the streams and their limits.
#[derive(Debug)]
#[must_use]
pub struct NatsJetStreamBuilder {
    url: String,
    client: Option<async_nats::Client>,
    stream: String,
    prefix: String,
    dead_stream: Option<String>,
    dead_prefix: Option<String>,
    duplicate_window: Duration,
    max_age: Duration,
    max_messages: Option<u64>,
    max_bytes: Option<u64>,
    max_ack_pending: usize,
    request_timeout: Duration,
}

impl Default for NatsJetStreamBuilder {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            client: None,
            stream: DEFAULT_STREAM.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            dead_stream: None,
            dead_prefix: None,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: Duration::ZERO,
            max_messages: None,
            max_bytes: None,
            max_ack_pending: DEFAULT_MAX_ACK_PENDING,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl NatsJetStreamBuilder {
    /// The server to connect to (default `nats://127.0.0.1:4222`); several, comma-separated,
    /// for a cluster.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Uses a connected client instead of connecting to [`url`](Self::url). The broker then
    /// does not close it in [`Broker::close`] (it only flushes it): it is yours.
    pub fn client(mut self, client: async_nats::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The stream of events (default `BAE_EVENTS`). A stream name has no `.`, `*`, `>`,
    /// whitespace or path separator.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// The prefix of the subjects of events (default `bae.events`): an event of type
    /// `user.created` is published on `bae.events.user.created`, and the stream captures
    /// `bae.events.>`.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The stream of dead messages (default: the stream's name and `_DEAD`).
    pub fn dead_stream(mut self, name: impl Into<String>) -> Self {
        self.dead_stream = Some(name.into());
        self
    }

    /// The prefix of the subjects of dead messages (default: the subject prefix and `_dead`,
    /// `bae.events_dead`): a message dead for a handler goes to `<prefix>.<consumer name>`.
    /// It must not overlap the event stream's subjects.
    pub fn dead_subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dead_prefix = Some(prefix.into());
        self
    }

    /// How long the server remembers message ids to drop duplicate publishes (default 2
    /// minutes).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// How long the stream keeps a message (default: until another limit removes it). The
    /// duplicate window must not be longer.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// How many messages the stream keeps at most, the oldest going first (default: no limit).
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// How many bytes the stream keeps at most, the oldest messages going first (default: no
    /// limit).
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = Some(n);
        self
    }

    /// The `max_ack_pending` of each handler's consumer (default 10,000; never less than the
    /// subscription's prefetch): how many messages the server lets the handler's workers hold
    /// unacknowledged, retries waiting for their delay included, before it stops delivering.
    pub fn max_ack_pending(mut self, n: usize) -> Self {
        self.max_ack_pending = n.max(1);
        self
    }

    /// How long JetStream API requests, publish acknowledgements and acknowledgement
    /// confirmations may take (default 5 seconds).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Connects (unless a client was given), then creates the stream and the dead stream, or
    /// updates them to this configuration.
    pub async fn build(self) -> Result<NatsJetStream> {
        check_stream_name(&self.stream)?;
        check_subject_prefix(&self.prefix)?;
        let dead_stream = self.dead_stream.unwrap_or_else(|| format!("{}_DEAD", self.stream));
        check_stream_name(&dead_stream)?;
        let dead_prefix = self.dead_prefix.unwrap_or_else(|| format!("{}_dead", self.prefix));
        check_subject_prefix(&dead_prefix)?;
        if subjects_overlap(&self.prefix, &dead_prefix) {
            return Err(Error::backend(
                NAME,
                format!(
                    "the dead subject prefix `{dead_prefix}` overlaps the subject prefix `{}`; choose \
                     prefixes where neither starts with the other",
                    self.prefix
                ),
            ));
        }
        if dead_stream == self.stream {
            return Err(Error::backend(NAME, format!("the dead stream must not be the event stream `{dead_stream}`")));
        }

        let (client, url, owns_client) = match self.client {
            Some(client) => {
                let info = client.server_info();
                let url = format!("nats://{}:{}", info.host, info.port);
                (client, url, false)
            }
            None => {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(self.request_timeout)
                    .request_timeout(Some(self.request_timeout))
                    .connect(self.url.as_str())
                    .await
                    .map_err(|e| {
                        Error::backend(
                            NAME,
                            format!("cannot connect to NATS at {}: {e}; is the server running? {START}", self.url),
                        )
                    })?;
                (client, self.url.clone(), true)
            }
        };

        let info = client.server_info();
        if !info.jetstream {
            return Err(Error::backend(
                NAME,
                format!(
                    "the NATS server at {url} (version {}) runs without JetStream; start it with `nats-server -js` \
                     or add `jetstream {{}}` to its configuration",
                    info.version
                ),
            ));
        }
        let multi_filter = version_at_least(&info.version, (2, 10));
        let js = jetstream::ContextBuilder::new().timeout(self.request_timeout).build(client.clone());

        let limit = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let events = StreamConfig {
            name: self.stream.clone(),
            description: Some("better-auth-events: events, one message per event".to_owned()),
            subjects: vec![format!("{}.>", self.prefix)],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            duplicate_window: self.duplicate_window,
            max_age: self.max_age,
            max_messages: limit(self.max_messages),
            max_bytes: limit(self.max_bytes),
            ..Default::default()
        };
        ensure_stream(&js, &url, events).await?;
        let dead = StreamConfig {
            name: dead_stream.clone(),
            description: Some("better-auth-events: dead messages, one subject per handler".to_owned()),
            subjects: vec![format!("{dead_prefix}.>")],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        };
        ensure_stream(&js, &url, dead).await?;
        tracing::debug!(
            url = %url, stream = %self.stream, prefix = %self.prefix, dead_stream = %dead_stream,
            server = %info.version, "NATS JetStream broker ready"
        );

        Ok(NatsJetStream {
            inner: Arc::new(Inner {
                client,
                js,
                url,
                owns_client,
                stream: self.stream,
                prefix: self.prefix,
                dead_stream,
                dead_prefix,
                max_ack_pending: self.max_ack_pending,
                multi_filter,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

/// Creates the stream, or updates it to `config`.
async fn ensure_stream(js: &jetstream::Context, url: &str, config: StreamConfig) -> Result<()> {
    let name = config.name.clone();
    let subjects = config.subjects.join(", ");
    js.create_or_update_stream(config).await.map(drop).map_err(|e| {
        let why = match e.kind() {
            CreateStreamErrorKind::JetStreamUnavailable => format!(
                "JetStream does not answer at {url}: the server runs without JetStream; start it with \
                 `nats-server -js` or add `jetstream {{}}` to its configuration"
            ),
            CreateStreamErrorKind::TimedOut => {
                format!("JetStream at {url} did not answer in time; is the server overloaded or its storage full?")
            }
            CreateStreamErrorKind::JetStream(err) => format!(
                "{err}; if another stream already captures `{subjects}`, choose another subject prefix or delete \
                 that stream"
            ),
            _ => e.to_string(),
        };
        Error::backend(NAME, format!("cannot create or update stream `{name}` capturing `{subjects}`: {why}"))
    })
}

impl NatsJetStream {
    /// Header of a dead message: why it died.
    pub const DEAD_REASON_HEADER: &'static str = "Bae-Dead-Reason";
    /// Header of a dead message: the handler (its [`Subscription::group`]) it died for.
    pub const DEAD_GROUP_HEADER: &'static str = "Bae-Dead-Group";
    /// Header of a dead message: the subject it was published on.
    pub const DEAD_SUBJECT_HEADER: &'static str = "Bae-Dead-Subject";
    /// Header of a dead message: its sequence in the event stream.
    pub const DEAD_SEQUENCE_HEADER: &'static str = "Bae-Dead-Sequence";
    /// Header of a dead message: how many times it was delivered to the handler.
    pub const DEAD_DELIVERIES_HEADER: &'static str = "Bae-Dead-Deliveries";

    /// A builder, with the defaults: `nats://127.0.0.1:4222`, stream `BAE_EVENTS`, subject
    /// prefix `bae.events`, a duplicate window of 2 minutes, no limits.
    pub fn builder() -> NatsJetStreamBuilder {
        NatsJetStreamBuilder::default()
    }

    /// The client.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// The stream of events.
    pub fn stream_name(&self) -> &str {
        &self.inner.stream
    }

    /// The stream of dead messages.
    pub fn dead_stream_name(&self) -> &str {
        &self.inner.dead_stream
    }

    /// The prefix of the subjects of events.
    pub fn subject_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The subject events of `event_type` are published on: the prefix, a dot and the type.
    /// Characters a subject cannot hold (whitespace, `*`, `>`, `%`, control characters) are
    /// percent-encoded and an empty token becomes `%`, so that every type has its own subject.
    pub fn subject_for(&self, event_type: &str) -> String {
        format!("{}.{}", self.inner.prefix, subject_tokens(event_type))
    }

    /// The subject messages dead for handler `group` are published on.
    pub fn dead_subject_for(&self, group: &str) -> String {
        format!("{}.{}", self.inner.dead_prefix, consumer_name(group))
    }

    /// The name of the durable consumer of handler `group`: the name with every character
    /// other than ASCII letters, digits, `-` and `_` replaced by `_` (at most 64 of them),
    /// then `-` and a 64-bit hash of the whole name in hex, so that two handlers never share
    /// one (`my_crate::emails::send_welcome` is `my_crate__emails__send_welcome-…`).
    pub fn consumer_name(group: &str) -> String {
        consumer_name(group)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::backend(NAME, "the NATS JetStream broker is closed; build a new one to publish"));
        }
        Ok(())
    }

    fn consumer_config(&self, sub: &Subscription, name: &str) -> (PullConfig, Option<HashSet<String>>) {
        let mut subjects: Vec<String> = sub.event_types.iter().map(|t| self.subject_for(t)).collect();
        subjects.sort();
        subjects.dedup();
        let mut config = PullConfig {
            durable_name: Some(name.to_owned()),
            description: Some(format!("better-auth-events handler `{}`", sub.group)),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: sub.visibility_timeout.max(Duration::from_millis(1)),
            max_deliver: -1,
            max_ack_pending: i64::try_from(self.inner.max_ack_pending.max(sub.prefetch)).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut skip_others = None;
        if !self.inner.multi_filter {
            // Servers before 2.10 filter on one subject only, and lose track of a durable
            // consumer whose filter changed: filter on every event, skip the others here.
            config.filter_subject = format!("{}.>", self.inner.prefix);
            skip_others = Some(subjects.into_iter().collect());
        } else if subjects.is_empty() {
            // Nothing to take: a subject no event type maps to (`%` is always encoded).
            config.filter_subjects = vec![format!("{}.%none", self.inner.prefix)];
        } else {
            config.filter_subjects = subjects;
        }
        (config, skip_others)
    }
}

#[async_trait]
impl Broker for NatsJetStream {
    fn name(&self) -> &str {
        NAME
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        self.check_open()?;
        let (headers, payload) = binary_message(message)?;
        let subject = self.subject_for(message.event_type());
        let ack = self
            .inner
            .js
            .send_publish(subject.clone(), PublishMessage::build().headers(headers).payload(payload.into()))
            .await
            .map_err(|e| publish_error(&self.inner, &subject, message.id(), &e))?
            .await
            .map_err(|e| publish_error(&self.inner, &subject, message.id(), &e))?;
        if ack.duplicate {
            tracing::debug!(
                event_id = %message.id(), subject = %subject, sequence = ack.sequence,
                "NATS JetStream dropped a duplicate publish of this event (same Nats-Msg-Id within the duplicate window)"
            );
        }
        Ok(())
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Box<dyn Consumer>> {
        self.check_open()?;
        let name = consumer_name(&subscription.group);
        let (config, skip_others) = self.consumer_config(subscription, &name);
        let consumer: PullConsumer =
            self.inner.js.create_consumer_on_stream(config, self.inner.stream.as_str()).await.map_err(|e| {
                Error::backend(
                    NAME,
                    format!(
                        "cannot create or update consumer `{name}` (handler `{}`) on stream `{}` at {}: {e}; does \
                         the stream exist (build() creates it)?",
                        subscription.group, self.inner.stream, self.inner.url
                    ),
                )
            })?;
        tracing::debug!(
            consumer = %name, handler = %subscription.group, stream = %self.inner.stream,
            types = ?subscription.event_types, "NATS JetStream consumer ready"
        );
        Ok(Box::new(NatsConsumer {
            consumer,
            dead: Arc::new(DeadLetters {
                js: self.inner.js.clone(),
                subject: self.dead_subject_for(&subscription.group),
                group: subscription.group.clone(),
                consumer: name,
            }),
            skip_others,
        }))
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let flushed = self.inner.client.flush().await;
        if self.inner.owns_client {
            self.inner
                .client
                .drain()
                .await
                .map_err(|e| Error::backend(NAME, format!("cannot close the connection to {}: {e}", self.inner.url)))?;
        }
        flushed.map_err(|e| Error::backend(NAME, format!("cannot flush the connection to {}: {e}", self.inner.url)))
    }
}

fn publish_error(inner: &Inner, subject: &str, id: &str, e: &async_nats::error::Error<PublishErrorKind>) -> Error {
    let why = match e.kind() {
        PublishErrorKind::StreamNotFound => format!(
            "no stream captures `{subject}`: was stream `{}` deleted? building the broker again creates it",
            inner.stream
        ),
        PublishErrorKind::TimedOut => {
            "JetStream did not acknowledge it in time; is the server overloaded or its storage full?".to_owned()
        }
        PublishErrorKind::BrokenPipe => format!("the connection to {} broke; is the server running?", inner.url),
        _ => e.to_string(),
    };
    Error::backend(NAME, format!("cannot publish event `{id}` on `{subject}` to {}: {why}", inner.url))
}

/// One handler's durable pull consumer.
struct NatsConsumer {
    consumer: PullConsumer,
    dead: Arc<DeadLetters>,
    /// On a server without multi-subject filters: the subjects the handler takes; messages on
    /// others are acknowledged and skipped.
    skip_others: Option<HashSet<String>>,
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Inbound>> {
        let max = max.max(1);
        let mut request = self.consumer.fetch().max_messages(max);
        if !wait.is_zero() {
            request = request.expires(wait);
        }
        let mut batch = request.messages().await.map_err(|e| {
            Error::backend(
                NAME,
                format!("cannot fetch for consumer `{}`: {e}; is the server running?", self.dead.consumer),
            )
        })?;
        let mut out = Vec::with_capacity(max.min(256));
        while let Some(next) = batch.next().await {
            let message = match next {
                Ok(message) => message,
                Err(e) if out.is_empty() => {
                    return Err(Error::backend(
                        NAME,
                        format!("cannot fetch for consumer `{}`: {e}", self.dead.consumer),
                    ));
                }
                Err(e) => {
                    tracing::warn!(consumer = %self.dead.consumer, error = %e, "NATS JetStream fetch ended early");
                    break;
                }
            };
            if let Some(takes) = &self.skip_others
                && !takes.contains(message.subject.as_str())
            {
                settle(&message, AckKind::Ack, &self.dead.consumer).await?;
                continue;
            }
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let delivery_count = u32::try_from(delivered).unwrap_or(u32::MAX);
            let event = read_message(&message.message);
            out.push(Inbound::new(
                event,
                delivery_count,
                Box::new(NatsAcker { message, dead: Arc::clone(&self.dead) }),
            ));
        }
        Ok(out)
    }
}

/// Where a handler's dead messages go.
struct DeadLetters {
    js: jetstream::Context,
    subject: String,
    group: String,
    consumer: String,
}

/// Settles one message.
struct NatsAcker {
    message: jetstream::Message,
    dead: Arc<DeadLetters>,
}

/// Sends `kind` for `message` and waits for the server's confirmation (a double ack).
async fn settle(message: &jetstream::Message, kind: AckKind, consumer: &str) -> Result<()> {
    let Some(reply) = message.reply.clone() else {
        return Err(Error::backend(NAME, "the message has no reply subject: it is not a JetStream delivery"));
    };
    // A request on the client's shared reply subscription: the server answers an ack that
    // has a reply subject once it processed it.
    message.context.client().request(reply, kind.into()).await.map(drop).map_err(|e| {
        Error::backend(
            NAME,
            format!(
                "the server did not confirm {} of a message of consumer `{consumer}`: {e}; it may be delivered again",
                describe(kind)
            ),
        )
    })
}

fn describe(kind: AckKind) -> &'static str {
    match kind {
        AckKind::Ack => "the ack",
        AckKind::Nak(Some(_)) => "the delayed nak (retry)",
        AckKind::Nak(None) => "the nak (release)",
        AckKind::Term => "the termination",
        AckKind::Progress => "the progress",
        AckKind::Next => "the ack-next",
    }
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        settle(&self.message, AckKind::Ack, &self.dead.consumer).await
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<()> {
        let kind = if delay.is_zero() { AckKind::Nak(None) } else { AckKind::Nak(Some(delay)) };
        settle(&self.message, kind, &self.dead.consumer).await
    }

    async fn dead(self: Box<Self>, reason: &str) -> Result<()> {
        let dead = &self.dead;
        let message = &self.message;
        let info = message.info().ok();
        let sequence = info.as_ref().map(|i| i.stream_sequence);
        let mut headers = HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                let n: &str = name.as_ref();
                if n.eq_ignore_ascii_case(header::NATS_MESSAGE_ID.as_ref())
                    || starts_with_ignore_case(n, "Nats-Expected-")
                {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        // Deduplicated per event and handler: a dead publish repeated after a crash before
        // the termination is dropped by the dead stream.
        let original_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .or_else(|| sequence.map(|s| format!("seq-{s}")));
        if let Some(id) = original_id {
            headers.insert(header::NATS_MESSAGE_ID, header_value(&format!("{id}/{}", dead.consumer)));
        }
        headers.insert(NatsJetStream::DEAD_REASON_HEADER, header_value(reason));
        headers.insert(NatsJetStream::DEAD_GROUP_HEADER, header_value(&dead.group));
        headers.insert(NatsJetStream::DEAD_SUBJECT_HEADER, header_value(message.subject.as_str()));
        if let Some(info) = &info {
            headers.insert(NatsJetStream::DEAD_SEQUENCE_HEADER, HeaderValue::from(info.stream_sequence));
            headers.insert(NatsJetStream::DEAD_DELIVERIES_HEADER, HeaderValue::from(info.delivered));
        }
        let failed = |e: &dyn std::fmt::Display| {
            Error::backend(
                NAME,
                format!(
                    "cannot move a message of consumer `{}` to the dead subject `{}`: {e}; it stays \
                     unacknowledged and will be delivered again",
                    dead.consumer, dead.subject
                ),
            )
        };
        let ack = dead
            .js
            .send_publish(
                dead.subject.clone(),
                PublishMessage::build().headers(headers).payload(message.payload.clone()),
            )
            .await
            .map_err(|e| failed(&e))?
            .await
            .map_err(|e| failed(&e))?;
        tracing::debug!(
            consumer = %dead.consumer, dead_subject = %dead.subject, dead_sequence = ack.sequence,
            duplicate = ack.duplicate, reason, "NATS JetStream message moved to the dead stream"
        );
        settle(message, AckKind::Term, &dead.consumer).await
    }

    async fn release(self: Box<Self>) -> Result<()> {
        settle(&self.message, AckKind::Nak(None), &self.dead.consumer).await
    }
}

// ---------------------------------------------------------------------------------------
// The CloudEvents NATS binding.
// ---------------------------------------------------------------------------------------

/// The binary-mode message of `message`: `Nats-Msg-Id`, the `ce-` headers, and the payload.
fn binary_message(message: &Outgoing) -> Result<(HeaderMap, Vec<u8>)> {
    let parts = message.binary()?;
    let payload = parts.body();
    let mut headers = HeaderMap::new();
    headers.insert(header::NATS_MESSAGE_ID, header_value(message.id()));
    let mut name = String::with_capacity(CE_HEADER_PREFIX.len() + 24);
    for (attribute, value) in parts.attributes {
        name.clear();
        name.push_str(CE_HEADER_PREFIX);
        name.push_str(&attribute);
        let header_name = HeaderName::try_from(name.as_str()).map_err(|_| {
            Error::CloudEvent(format!(
                "attribute `{attribute}` of event `{}` cannot be a NATS header name",
                message.id()
            ))
        })?;
        headers.insert(header_name, HeaderValue::from(percent_encode(&value)));
    }
    Ok((headers, payload))
}

/// Reads a NATS message in either content mode. `Err` says why it is not a CloudEvent.
fn read_message(message: &async_nats::Message) -> std::result::Result<Event, String> {
    let mut attributes: Vec<(String, String)> = Vec::new();
    let mut content_type: Option<&str> = None;
    if let Some(headers) = &message.headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            let Some(value) = values.first() else { continue };
            if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.as_str());
            } else if starts_with_ignore_case(name, CE_HEADER_PREFIX) && name.len() > CE_HEADER_PREFIX.len() {
                let attribute = name[CE_HEADER_PREFIX.len()..].to_ascii_lowercase();
                let value = percent_decode(value.as_str())
                    .map_err(|why| format!("header `{name}` is not a CloudEvents attribute value: {why}"))?;
                attributes.push((attribute, value));
            }
        }
    }
    if content_type.is_some_and(|ct| starts_with_ignore_case(ct.trim_start(), "application/cloudevents")) {
        return binding::from_structured(&message.payload);
    }
    let data_content_type =
        attributes.iter().find(|(k, _)| k == "datacontenttype").map(|(_, v)| v.as_str()).or(content_type);
    binding::from_message(attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())), data_content_type, &message.payload)
}

/// Percent-encodes a header value as the binding prescribes: space, `"`, `%` and every
/// character outside printable ASCII, byte by byte of its UTF-8, upper-case hex.
fn percent_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if value.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Decodes a header value as the binding prescribes: a double-quoted value is unquoted
/// first (backslash escapes), then one round of percent-decoding; the bytes must be UTF-8.
fn percent_decode(value: &str) -> std::result::Result<String, String> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let unquoted;
    let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let mut s = String::with_capacity(value.len());
        let mut chars = value[1..value.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some(next) => s.push(next),
                    None => return Err("a quoted value ends with a lone backslash".to_owned()),
                }
            } else {
                s.push(c);
            }
        }
        unquoted = s;
        unquoted.as_str()
    } else {
        value
    };
    if !value.contains('%') {
        return Ok(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| format!("`%` without two hex digits at byte {i}"))?;
            let hi = hex_digit(hex[0]).ok_or_else(|| format!("`%` without two hex digits at byte {i}"))?;
            let lo = hex_digit(hex[1]).ok_or_else(|| format!("`%` without two hex digits at byte {i}"))?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the percent-decoded bytes are not UTF-8".to_owned())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A header value from any text: control characters (CR and LF included) become spaces.
fn header_value(s: &str) -> HeaderValue {
    if s.chars().any(char::is_control) {
        HeaderValue::from(s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>())
    } else {
        HeaderValue::from(s)
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

// ---------------------------------------------------------------------------------------
// Names.
// ---------------------------------------------------------------------------------------

/// The subject tokens of an event type: its dot-separated parts, with what a subject cannot
/// hold percent-encoded and empty parts as `%`.
fn subject_tokens(event_type: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(event_type.len());
    for (i, token) in event_type.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if token.is_empty() {
            out.push('%');
            continue;
        }
        for c in token.chars() {
            if c.is_whitespace() || c.is_control() || matches!(c, '*' | '>' | '%') {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(b >> 4)]));
                    out.push(char::from(HEX[usize::from(b & 0xf)]));
                }
            } else {
                out.push(c);
            }
        }
    }
    out
}

fn consumer_name(group: &str) -> String {
    let mut name: String = group
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    name.push('-');
    name.push_str(&format!("{:016x}", fnv1a(group.as_bytes())));
    name
}

/// FNV-1a, 64 bits: stable across releases and platforms, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn check_stream_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(Error::backend(
            NAME,
            format!(
                "`{name}` cannot be a JetStream stream name: it must be non-empty and hold no `.`, `*`, `>`, \
                 whitespace or path separator"
            ),
        ));
    }
    Ok(())
}

fn check_subject_prefix(prefix: &str) -> Result<()> {
    let bad = prefix.is_empty()
        || prefix
            .split('.')
            .any(|t| t.is_empty() || t == "*" || t == ">" || t.chars().any(|c| c.is_whitespace() || c.is_control()));
    if bad {
        return Err(Error::backend(
            NAME,
            format!(
                "`{prefix}` cannot be a subject prefix: it must be dot-separated non-empty tokens without \
                 whitespace or wildcards (like `bae.events`)"
            ),
        ));
    }
    Ok(())
}

/// Whether `a.>` and `b.>` capture a common subject.
fn subjects_overlap(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    a.iter().zip(b.iter()).all(|(x, y)| x == y)
}

/// Whether the server's `version` (`2.10.4`, `v2.9.10`, `2.11.0-beta`) is at least `min`.
fn version_at_least(version: &str, min: (u64, u64)) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= min,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_percent_encoded_as_the_binding_says() {
        assert_eq!(percent_encode("Euro € 😀"), "Euro%20%E2%82%AC%20%F0%9F%98%80");
        assert_eq!(percent_encode("a\"b%c"), "a%22b%25c");
        assert_eq!(percent_encode("/plain-value_1:2"), "/plain-value_1:2");
        assert_eq!(percent_decode("Euro%20%e2%82%ac%20%F0%9F%98%80").unwrap(), "Euro € 😀");
        assert_eq!(percent_decode("\"quoted \\\"value\\\"\"").unwrap(), "quoted \"value\"");
        assert_eq!(percent_decode("%41").unwrap(), "A");
        assert!(percent_decode("%C0%A0").is_err(), "an overlong encoding is rejected");
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%zz").is_err());
    }

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let a = consumer_name("my_crate::emails::send_welcome");
        assert!(a.starts_with("my_crate__emails__send_welcome-"), "{a}");
        assert!(!a.contains(['.', '*', '>', ' ', '/', '\\', ':']), "{a}");
        assert_ne!(a, consumer_name("my_crate::emails:send_welcome"));
        assert_ne!(consumer_name("a.b"), consumer_name("a_b"));
        assert_eq!(a, consumer_name("my_crate::emails::send_welcome"), "deterministic");
        let long = consumer_name(&"x".repeat(500));
        assert!(long.len() <= 64 + 17);
    }

    #[test]
    fn event_types_map_to_distinct_subjects() {
        assert_eq!(subject_tokens("user.created"), "user.created");
        assert_eq!(subject_tokens("a b.*.>"), "a%20b.%2A.%3E");
        assert_eq!(subject_tokens("a..b"), "a.%.b");
        assert_ne!(subject_tokens("a%20b"), subject_tokens("a b"));
    }

    #[test]
    fn versions_and_overlaps() {
        assert!(version_at_least("2.10.4", (2, 10)));
        assert!(version_at_least("v2.11.0-beta", (2, 10)));
        assert!(!version_at_least("2.9.10", (2, 10)));
        assert!(!version_at_least("garbage", (2, 10)));
        assert!(subjects_overlap("bae.events", "bae.events.dead"));
        assert!(!subjects_overlap("bae.events", "bae.events_dead"));
    }

    #[test]
    fn a_binary_message_reads_back() {
        let e = Event::new("user.created").with_data(serde_json::json!({"n": "é 1"})).with_subject("user/ü 1");
        let out = Outgoing::new(&e).unwrap();
        let (headers, payload) = binary_message(&out).unwrap();
        assert_eq!(headers.get(header::NATS_MESSAGE_ID).unwrap().as_str(), e.id.to_string());
        assert_eq!(headers.get("ce-subject").unwrap().as_str(), "user/%C3%BC%201");
        assert!(headers.get("ce-data").is_none());
        let message = async_nats::Message {
            subject: "bae.events.user.created".into(),
            reply: None,
            payload: payload.into(),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        };
        let read = read_message(&message).unwrap();
        assert_eq!(read.id, e.id);
        assert_eq!(read.subject.as_deref(), Some("user/ü 1"));
        assert_eq!(read.data, serde_json::json!({"n": "é 1"}));
    }
}
