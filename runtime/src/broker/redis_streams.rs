//! [`RedisStreams`]: a [`Broker`] on one Redis stream, one consumer group per handler.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use tokio::time::Instant;

use super::binding::{self, Outgoing};
use super::group_commit::GroupCommit;
use super::{Acker, Broker, Consumer, Inbound, Subscription};
use crate::envelope::Event;
use crate::error::{Error, Result};

/// The broker's name, in logs and errors.
const NAME: &str = "redis-streams";

/// The URL when none is given.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// The stream when none is given.
pub const DEFAULT_STREAM: &str = "bae:events";
/// The approximate length the stream is trimmed to when none is given.
pub const DEFAULT_MAX_LEN: u64 = 1_000_000;
/// How long a published event id is remembered for deduplication when not set.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(120);

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A consumer of a group that holds nothing and was idle this long (milliseconds) is
/// deleted when the group is subscribed to again.
const STALE_CONSUMER_MS: u64 = 60 * 60 * 1000;

/// A consumer blocks in `XREADGROUP` at most this long at a time.
const MAX_BLOCK: Duration = Duration::from_secs(1);
/// A consumer reclaims (entries retried or released by the group's consumers, or held too
/// long by a dead one) at most this often, and sooner when a retry it knows of comes due:
/// one script call per fetch would double the round trips of a busy consumer.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);
/// Without a connection of its own (a broker built from a [`ConnectionManager`]), a
/// consumer polls this often while it waits.
const POLL: Duration = Duration::from_millis(50);
/// The fields whose single value may hold a whole structured CloudEvents document.
const STRUCTURED_FIELDS: [&str; 4] = ["cloudevent", "event", "data", "message"];
/// The attributes written first, in this order; extensions follow, then `datacontenttype`
/// and `data`.
const LEADING_ATTRIBUTES: [&str; 7] = ["specversion", "id", "type", "source", "time", "subject", "dataschema"];

/// Publishes one event. KEYS: the stream, the event's dedup key. ARGV: the dedup window in
/// milliseconds (0: no deduplication), the `MAXLEN ~` of the stream (0: no trimming), then
/// the entry's fields and values. Returns the new entry's id, or nil when the event id was
/// published within the window. The check comes first and the dedup key is written after
/// the entry, so a script that fails (a key of the wrong type) leaves no key that would
/// make a republish look like a duplicate.
const PUBLISH_LUA: &str = r#"
local window, maxlen = tonumber(ARGV[1]), ARGV[2]
if window > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local id
if maxlen == '0' then
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, 3))
end
if window > 0 then
  redis.call('SET', KEYS[2], id, 'PX', window)
end
return id
"#;

static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH_LUA));

/// Takes back, for one consumer, what this group's consumers must see again. KEYS: the
/// stream, the group's retry set. ARGV: the group, the consumer, the visibility timeout in
/// milliseconds, the most entries to take.
///
/// First the entries of the retry set whose time has come (retried or released ones): each
/// is removed from the set and claimed (`XCLAIM`, which counts one more delivery). Then the
/// entries another consumer held longer than the visibility timeout (`XAUTOCLAIM ...
/// JUSTID`, which counts nothing), skipping those the retry set still holds for later
/// (claiming them only resets their idle time), each claimed again with `XCLAIM` to count
/// the delivery. Returns, per entry, its id, its fields and its delivery count (from the
/// pending entries list), then, last, the milliseconds until the next retry comes due (-1:
/// none).
const RECLAIM_LUA: &str = r#"
local stream, retry = KEYS[1], KEYS[2]
local group, me, vt, max = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local function take(id)
  local e = redis.call('XCLAIM', stream, group, me, 0, id)
  local entry = e[1]
  if entry and entry[2] then
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    local n = (p[1] and p[1][4]) or 1
    out[#out + 1] = { entry[1], entry[2], n }
  elseif entry then
    -- Redis 6.2 names a deleted entry with nil fields: nothing to deliver.
    redis.call('XACK', stream, group, id)
  end
end
local due = redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, max)
for _, id in ipairs(due) do
  redis.call('ZREM', retry, id)
  take(id)
end
if #out < max then
  local r = redis.call('XAUTOCLAIM', stream, group, me, vt, '0-0', 'COUNT', max - #out, 'JUSTID')
  for _, id in ipairs(r[2]) do
    local s = redis.call('ZSCORE', retry, id)
    if not s or tonumber(s) <= now then
      if s then redis.call('ZREM', retry, id) end
      take(id)
    end
  end
end
local upcoming = redis.call('ZRANGE', retry, 0, 0, 'WITHSCORES')
if upcoming[2] then
  out[#out + 1] = math.max(tonumber(upcoming[2]) - now, 0)
else
  out[#out + 1] = -1
end
return out
"#;

static RECLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(RECLAIM_LUA));

/// Schedules an entry of a group again. KEYS: the group's retry set. ARGV: the entry id,
/// the delay in milliseconds. The time is the server's, as in the reclaim.
const RETRY_LUA: &str = r#"
local t = redis.call('TIME')
-- Rounded up, where the reclaim rounds its time down: due never before the delay.
local now = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"#;

static RETRY: LazyLock<Script> = LazyLock::new(|| Script::new(RETRY_LUA));

/// Moves an entry of a group to the dead stream. KEYS: the stream, the dead stream, the
/// group's retry set. ARGV: the group, the entry id, the reason, the `MAXLEN ~` of the
/// dead stream (0: no trimming). Adds the entry's fields followed by `reason`, `group` and
/// `original_id` to the dead stream, then acknowledges it, in one step. Returns 0 (and
/// changes nothing) when the entry is no longer pending for the group: another consumer
/// settled it.
const DEAD_LUA: &str = r#"
local stream, dead, retry = KEYS[1], KEYS[2], KEYS[3]
local group, id, reason, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local p = redis.call('XPENDING', stream, group, id, id, 1)
if not p[1] then
  return 0
end
local e = redis.call('XRANGE', stream, id, id)[1]
local fields = (e and e[2]) or {}
fields[#fields + 1] = 'reason'
fields[#fields + 1] = reason
fields[#fields + 1] = 'group'
fields[#fields + 1] = group
fields[#fields + 1] = 'original_id'
fields[#fields + 1] = id
if maxlen == '0' then
  redis.call('XADD', dead, '*', unpack(fields))
else
  redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', unpack(fields))
end
redis.call('XACK', stream, group, id)
redis.call('ZREM', retry, id)
return 1
"#;

static DEAD: LazyLock<Script> = LazyLock::new(|| Script::new(DEAD_LUA));

/// A [`Broker`] on Redis Streams (feature `redis`): every event is one entry of one stream,
/// every handler a consumer group on it. Cheap to clone: clones share one multiplexed
/// connection, re-established on its own when it drops.
///
/// ```no_run
/// # async fn demo() -> better_auth_events_runtime::Result<()> {
/// use std::time::Duration;
/// use better_auth_events_runtime::EventBus;
/// use better_auth_events_runtime::broker::RedisStreams;
///
/// let broker = RedisStreams::builder()
///     .url("redis://127.0.0.1:6379")
///     .stream("app:events")
///     .max_len(500_000)
///     .dedup_window(Duration::from_secs(300))
///     .build()
///     .await?;
/// let bus = EventBus::builder().broker(broker).try_build().await?;
/// # Ok(()) }
/// ```
///
/// # Layout
///
/// - `{stream}` (default `bae:events`): one entry per event, added with
///   `XADD {stream} MAXLEN ~ {max_len} * ...` (so the stream keeps about the last
///   [`max_len`](RedisStreamsBuilder::max_len) events, acknowledged or not). The entry's
///   fields are the CloudEvents attributes, one field each, values as text (a boolean
///   `true`, an integer `42`): `specversion`, `id`, `type`, `source`, `time`, `subject`,
///   `dataschema` when present, the extensions (`schemaversion`, `correlationid`, `tenant`,
///   ...), `datacontenttype`, and `data`, the payload as JSON. A plain `XREAD` consumer reads
///   it field by field.
/// - `{stream}:dedup:{event id}`: set for the [dedup window](RedisStreamsBuilder::dedup_window)
///   when the event is published (its value is the entry id).
/// - One consumer group per handler, named after the handler (its name as is: Redis takes
///   any string), created at `$` (`XGROUP CREATE {stream} {group} $ MKSTREAM`) by the
///   first [`subscribe`](Broker::subscribe) of that handler: a new handler sees the events
///   published after that. Each [`Consumer`] is a consumer of its group with a unique name
///   (`{pid}-{uuid}`); consumers that hold nothing and were idle for an hour are deleted
///   when the group is subscribed to again.
/// - `{stream}:retry:{group}`: a sorted set of the group's entries waiting to be delivered
///   again (retried or released), scored by the server time (milliseconds) from which they
///   may be.
/// - `{stream}:dead`: the dead stream, where [`Acker::dead`] moves an entry: its fields
///   plus `reason`, `group` and `original_id`.
///
/// Reading, an entry is taken in this layout (a `specversion` field), or as a single field
/// named `cloudevent`, `event`, `data` or `message` holding a structured CloudEvents JSON
/// document, as other producers write it. Anything else is delivered with
/// [`Inbound::event`] = `Err(reason)`.
///
/// # Delivery
///
/// - **Publishing**: one `XADD` per event, in a Lua script that first checks the event's
///   dedup key: an event published again within the window (the outbox publishes at least
///   once) is not added again, and `publish` returns `Ok`. With deduplication off
///   (`dedup_window(Duration::ZERO)`) it is a plain `XADD`, without the script: the script
///   costs the server several times what the `XADD` does (`INFO commandstats`: about 20 µs
///   against 1.5 µs under load), a third of the publish rate. Redis answers once the entry is
///   in memory; what survives a crash of Redis is what its persistence keeps (run it with
///   `appendonly yes`).
/// - **At least once, per group**: every group reads every entry (`XREADGROUP ... >`); a
///   consumer acknowledges (and never hands out) the entries whose type its handler does
///   not take, reading only their `type` field. An entry stays in the group's pending
///   entries list until it is settled.
/// - **Order**: entries come in stream order on first delivery; retried and reclaimed ones
///   come back when due, out of order.
/// - **Visibility timeout**: an entry a consumer held unsettled longer than
///   [`Subscription::visibility_timeout`] is claimed by the next `fetch` of any consumer of
///   the group (`XAUTOCLAIM`), with one more delivery counted.
/// - **Retry**: the entry stays pending for its group only and its time is put in the
///   group's retry set; the first `fetch` of the group from then claims it (`XCLAIM`, one
///   more delivery). It comes back not before the delay; later by up to about a second
///   while consumers wait in `fetch` (and of course only when a consumer fetches), whatever
///   the delay, also beyond the visibility timeout.
///
/// Delivery counts are the pending entries list's (`XPENDING`): 1 on first delivery, one
/// more per claim.
///
/// # Redis Cluster
///
/// A publish touches the stream and its dedup key in one script: in a cluster, give the
/// stream a hash tag (`{bae}:events`) so that every key of the broker is in one slot.
#[derive(Clone)]
pub struct RedisStreams {
    inner: Arc<Shared>,
}

/// What a broker, its consumers and their ackers share.
struct Shared {
    /// Publishes and settles.
    conn: Connection,
    /// Opens one connection per consumer for blocking reads; `None` for a broker built from
    /// a connection, whose consumers poll on the shared one.
    client: Option<(redis::Client, ConnectionManagerConfig)>,
    /// The URL without its password, for messages.
    url: String,
    stream: String,
    dead: String,
    max_len: u64,
    dedup_window: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
    closed: AtomicBool,
}

impl Shared {
    fn context(&self, what: impl fmt::Display) -> String {
        format!("{what} (stream `{}` on Redis at {})", self.stream, self.url)
    }

    fn fail(&self, what: impl fmt::Display, source: RedisError) -> Error {
        failure(self.context(what), source)
    }
}

impl fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreams")
            .field("url", &self.inner.url)
            .field("stream", &self.inner.stream)
            .field("max_len", &self.inner.max_len)
            .field("dedup_window", &self.inner.dedup_window)
            .finish()
    }
}

/// Configures and connects a [`RedisStreams`]:
/// `RedisStreams::builder().url(url).stream("app:events").build().await?`.
#[must_use = "a builder does nothing until `build` connects"]
pub struct RedisStreamsBuilder {
    url: Option<String>,
    connection: Option<ConnectionManager>,
    stream: String,
    max_len: u64,
    dedup_window: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl fmt::Debug for RedisStreamsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamsBuilder")
            .field("url", &self.url.as_deref().map(redact))
            .field("connection", &self.connection.is_some())
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("dedup_window", &self.dedup_window)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

impl RedisStreamsBuilder {
    /// The Redis to connect to (default `redis://127.0.0.1:6379`): `redis://host:port/db`,
    /// `rediss://…` with TLS if the `redis` crate was built with it. Each consumer opens a
    /// connection of its own to it for its blocking reads.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self.connection = None;
        self
    }

    /// Uses an existing connection instead of a URL. Every consumer then shares it too:
    /// since a blocking read would hold up every other command on it, consumers poll
    /// (every 50 ms while they wait) instead of blocking. Prefer [`url`](Self::url) for
    /// workers.
    pub fn connection(mut self, connection: ConnectionManager) -> Self {
        self.connection = Some(connection);
        self.url = None;
        self
    }

    /// The stream's key (default `bae:events`); the broker's other keys start with it.
    pub fn stream(mut self, key: impl Into<String>) -> Self {
        self.stream = key.into();
        self
    }

    /// Trims the stream to about `n` entries as events are added (`XADD ... MAXLEN ~ n`,
    /// default 1,000,000; 0: never trimmed). Trimming drops the oldest entries whether or
    /// not every group has read them: keep it well above what consumers may lag behind. The
    /// dead stream is trimmed to the same length.
    pub fn max_len(mut self, n: u64) -> Self {
        self.max_len = n;
        self
    }

    /// How long an event id is remembered once published (default 2 minutes): the same
    /// event published again within it is not added again. `Duration::ZERO` turns
    /// deduplication off. Milliseconds; a non-zero window below 1 ms is 1 ms.
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.dedup_window = window;
        self
    }

    /// How long `build` (and each reconnection attempt) may take to connect (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its answer before failing (default 30 s); a
    /// consumer's blocking read waits this much longer than it asked the server to block.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Connects (or takes the given connection) and checks that Redis answers and runs
    /// streams (Redis 6.2 or later: `XAUTOCLAIM`).
    ///
    /// Fails with [`Error::Backend`] naming the URL (without its password) when the server
    /// is unreachable within the connect timeout, or with [`Error::Config`] for an empty
    /// stream key.
    pub async fn build(self) -> Result<RedisStreams> {
        if self.stream.is_empty() {
            return Err(Error::Config("the stream key of a RedisStreams broker must not be empty".into()));
        }
        let (conn, client, url) = match self.connection {
            Some(conn) => (conn, None, "a given connection".to_owned()),
            None => {
                let raw = self.url.unwrap_or_else(|| DEFAULT_URL.to_owned());
                let url = redact(&raw);
                let client =
                    redis::Client::open(raw.as_str()).map_err(|e| failure(format!("invalid Redis URL `{url}`"), e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.response_timeout))
                    .set_number_of_retries(3)
                    .set_max_delay(Duration::from_secs(2));
                let conn = connect(&client, config.clone(), self.connect_timeout, &url).await?;
                // Consumers block in their reads: the timeout is theirs (see `read`).
                let reader_config = config.set_response_timeout(None);
                (conn, Some((client, reader_config)), url)
            }
        };
        let inner = Shared {
            conn: Connection(conn),
            client,
            url,
            dead: format!("{}:dead", self.stream),
            stream: self.stream,
            max_len: self.max_len,
            dedup_window: self.dedup_window,
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            closed: AtomicBool::new(false),
        };
        let mut conn = inner.conn.clone();
        let version: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| inner.fail("Redis does not answer `INFO server`", e))?;
        check_version(&version).map_err(|why| Error::backend(NAME, inner.context(why)))?;
        tracing::debug!(url = %inner.url, stream = %inner.stream, "redis streams broker connected");
        Ok(RedisStreams { inner: Arc::new(inner) })
    }
}

async fn connect(
    client: &redis::Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    url: &str,
) -> Result<ConnectionManager> {
    match tokio::time::timeout(timeout, ConnectionManager::new_with_config(client.clone(), config)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(failure(
            format!("cannot connect to Redis at {url}; is the server running? start it with `redis-server`"),
            e,
        )),
        Err(_) => Err(Error::backend(
            NAME,
            format!(
                "cannot connect to Redis at {url}: no connection within {timeout:?}; is the server running and \
                 reachable? start it with `redis-server`"
            ),
        )),
    }
}

/// Checks the `redis_version` of an `INFO server` reply: `XAUTOCLAIM` came with 6.2.
fn check_version(info: &str) -> std::result::Result<(), String> {
    let Some(version) = info.lines().find_map(|l| l.strip_prefix("redis_version:")) else {
        // Not Redis itself (a compatible server): let the commands tell.
        return Ok(());
    };
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (6, 2) {
        return Err(format!("Redis {} is too old: the broker needs Redis 6.2 or later (XAUTOCLAIM)", version.trim()));
    }
    Ok(())
}

impl RedisStreams {
    /// A builder: URL or connection, stream, trimming, dedup window.
    pub fn builder() -> RedisStreamsBuilder {
        RedisStreamsBuilder {
            url: None,
            connection: None,
            stream: DEFAULT_STREAM.to_owned(),
            max_len: DEFAULT_MAX_LEN,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    /// Connects to the Redis at `url` with the defaults (stream `bae:events`).
    pub async fn new(url: impl Into<String>) -> Result<Self> {
        Self::builder().url(url).build().await
    }

    /// The stream's key.
    pub fn stream_key(&self) -> &str {
        &self.inner.stream
    }

    /// The dead stream's key: `{stream}:dead`.
    pub fn dead_stream_key(&self) -> &str {
        &self.inner.dead
    }

    /// The key of the dedup marker of event `id`: `{stream}:dedup:{id}`.
    pub fn dedup_key(&self, id: &str) -> String {
        format!("{}:dedup:{id}", self.inner.stream)
    }

    /// The key of the retry set of consumer group `group`: `{stream}:retry:{group}`.
    pub fn retry_key(&self, group: &str) -> String {
        format!("{}:retry:{group}", self.inner.stream)
    }
}

/// The stream fields of a message: its attributes, each as one field, then `data`.
fn fields(message: &Outgoing) -> Result<Vec<(String, Vec<u8>)>> {
    let parts = message.binary()?;
    // The leading attributes in their order, then the extensions, then `datacontenttype`.
    let rank = |name: &str| match LEADING_ATTRIBUTES.iter().position(|a| *a == name) {
        Some(i) => i,
        None if name == "datacontenttype" => LEADING_ATTRIBUTES.len() + 1,
        None => LEADING_ATTRIBUTES.len(),
    };
    let mut attributes = parts.attributes;
    attributes.sort_by_key(|(name, _)| rank(name));
    let mut out: Vec<(String, Vec<u8>)> = attributes.into_iter().map(|(n, v)| (n, v.into_bytes())).collect();
    if let Some(data) = parts.data {
        // The payload is JSON whatever its type: a string payload keeps its quotes.
        out.push(("data".to_owned(), data.get().as_bytes().to_vec()));
    }
    Ok(out)
}

#[async_trait]
impl Broker for RedisStreams {
    fn name(&self) -> &str {
        NAME
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        let s = &self.inner;
        if s.closed.load(Ordering::Acquire) {
            return Err(Error::backend(NAME, s.context("the broker is closed: build a new RedisStreams to publish")));
        }
        let fields = fields(message)?;
        if s.dedup_window.is_zero() {
            // Nothing to check: a plain `XADD`, without the script.
            let mut xadd = redis::cmd("XADD");
            xadd.arg(&s.stream);
            if s.max_len > 0 {
                xadd.arg("MAXLEN").arg("~").arg(s.max_len);
            }
            xadd.arg("*");
            for (name, value) in &fields {
                xadd.arg(name).arg(value);
            }
            let entry: String = xadd
                .query_async(&mut s.conn.clone())
                .await
                .map_err(|e| s.fail(format_args!("cannot publish event `{}`", message.id()), e))?;
            tracing::trace!(event_id = message.id(), entry, "event published");
            return Ok(());
        }
        let window = s.dedup_window.as_millis().max(1);
        let mut invocation = PUBLISH.key(&s.stream);
        invocation.key(self.dedup_key(message.id())).arg(u64::try_from(window).unwrap_or(u64::MAX)).arg(s.max_len);
        for (name, value) in &fields {
            invocation.arg(name).arg(value);
        }
        let mut conn = s.conn.clone();
        let added: Option<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| s.fail(format_args!("cannot publish event `{}`", message.id()), e))?;
        match added {
            Some(entry) => tracing::trace!(event_id = message.id(), entry, "event published"),
            None => tracing::debug!(
                event_id = message.id(),
                "event already published within the dedup window: not added again"
            ),
        }
        Ok(())
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Box<dyn Consumer>> {
        let s = &self.inner;
        if subscription.group.is_empty() {
            return Err(Error::Config("a subscription to RedisStreams needs a group name (the handler's)".into()));
        }
        create_group(s, &subscription.group).await?;
        prune_consumers(s, &subscription.group).await;
        let reader = match &s.client {
            Some((client, config)) => {
                Some(Connection(connect(client, config.clone(), s.connect_timeout, &s.url).await?))
            }
            None => None,
        };
        let consumer = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let vt = subscription.visibility_timeout.as_millis().max(1);
        let group = Arc::new(Group {
            retry: self.retry_key(&subscription.group),
            name: subscription.group.clone(),
            consumer,
            event_types: subscription.event_types.clone(),
            visibility_ms: u64::try_from(vt).unwrap_or(u64::MAX),
            wake: Mutex::new(None),
            acks: GroupCommit::default(),
        });
        tracing::debug!(stream = %s.stream, group = %group.name, consumer = %group.consumer, "redis streams consumer opened");
        Ok(Box::new(RedisConsumer {
            shared: Arc::clone(&self.inner),
            group,
            reader,
            prefetch: subscription.prefetch.max(1),
            next_reclaim: Instant::now(),
        }))
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        Ok(())
    }
}

/// Deletes the consumers of `group` that hold nothing and were idle for an hour (workers
/// gone: each consumer has a name of its own, so they would pile up in `XINFO CONSUMERS`).
/// Best effort: a failure is logged. A live consumer deleted by mistake is created again by
/// its next read.
async fn prune_consumers(s: &Shared, group: &str) {
    let mut conn = s.conn.clone();
    let info: std::result::Result<Value, RedisError> =
        redis::cmd("XINFO").arg("CONSUMERS").arg(&s.stream).arg(group).query_async(&mut conn).await;
    let consumers = match info {
        Ok(Value::Array(consumers)) => consumers,
        Ok(_) => return,
        Err(e) => {
            tracing::debug!(stream = %s.stream, group, error = %e, "cannot list the consumers of a group");
            return;
        }
    };
    for consumer in consumers {
        let Ok(fields) = field_pairs(consumer) else { continue };
        let get = |name: &[u8]| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice());
        let number = |name: &[u8]| get(name).and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        let (Some(name), Some(0), Some(idle)) = (get(b"name"), number(b"pending"), number(b"idle")) else { continue };
        if idle < STALE_CONSUMER_MS {
            continue;
        }
        let deleted: std::result::Result<i64, RedisError> =
            redis::cmd("XGROUP").arg("DELCONSUMER").arg(&s.stream).arg(group).arg(name).query_async(&mut conn).await;
        if let Err(e) = deleted {
            tracing::debug!(stream = %s.stream, group, error = %e, "cannot delete an idle consumer");
            return;
        }
        tracing::debug!(stream = %s.stream, group, consumer = %String::from_utf8_lossy(name), "idle consumer deleted");
    }
}

/// `XGROUP CREATE {stream} {group} $ MKSTREAM`; a group that exists is left as it is.
async fn create_group(s: &Shared, group: &str) -> Result<()> {
    let mut conn = s.conn.clone();
    let created: std::result::Result<Value, RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&s.stream)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    match created {
        Ok(_) => {
            tracing::debug!(stream = %s.stream, group, "consumer group created");
            Ok(())
        }
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(s.fail(format_args!("cannot create consumer group `{group}`"), e)),
    }
}

/// One consumer's group.
struct Group {
    name: String,
    retry: String,
    consumer: String,
    event_types: Vec<String>,
    visibility_ms: u64,
    /// When the earliest entry this consumer retried or released comes due: its next
    /// `fetch` from then reclaims at once.
    wake: Mutex<Option<Instant>>,
    /// Acknowledgements made while another's `XACK` runs go together in the next one.
    acks: GroupCommit<String>,
}

impl Group {
    fn takes(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|t| t == event_type)
    }

    fn wake_at(&self, at: Instant) {
        let mut wake = self.wake.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *wake = Some(wake.map_or(at, |w| w.min(at)));
    }

    /// The wake-up time, taken when it has come.
    fn woken(&self, now: Instant) -> (bool, Option<Instant>) {
        let mut wake = self.wake.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *wake {
            Some(at) if at <= now => {
                *wake = None;
                (true, None)
            }
            other => (false, other),
        }
    }
}

/// A handler's consumer on the stream.
struct RedisConsumer {
    shared: Arc<Shared>,
    group: Arc<Group>,
    /// Its own connection for blocking reads, when the broker has a URL.
    reader: Option<Connection>,
    prefetch: usize,
    /// When `fetch` reclaims next (see [`RECLAIM_EVERY`]).
    next_reclaim: Instant,
}

/// The fields of a stream entry and their values, as read.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A stream entry as read.
struct Entry {
    id: String,
    fields: Fields,
    deliveries: u32,
}

impl RedisConsumer {
    /// The entries due again for this group (retried, released, or held too long by
    /// another consumer), and how long until the next retry comes due.
    async fn reclaim(&self, max: usize) -> Result<(Vec<Entry>, Option<Duration>)> {
        let s = &self.shared;
        let g = &self.group;
        let mut conn = s.conn.clone();
        let reply: std::result::Result<Value, RedisError> = RECLAIM
            .key(&s.stream)
            .key(&g.retry)
            .arg(&g.name)
            .arg(&g.consumer)
            .arg(g.visibility_ms)
            .arg(max)
            .invoke_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                // The group (or the stream) was deleted: create it again, from now on.
                tracing::warn!(stream = %s.stream, group = %g.name, "consumer group missing: creating it again");
                create_group(s, &g.name).await?;
                return Ok((Vec::new(), None));
            }
            Err(e) => return Err(s.fail(format_args!("cannot reclaim the entries due for group `{}`", g.name), e)),
        };
        let bad = |what: String| Error::backend(NAME, s.context(format_args!("unexpected reply to a reclaim: {what}")));
        let Value::Array(mut items) = reply else { return Err(bad(format!("{reply:?}"))) };
        let next = match items.pop() {
            Some(Value::Int(ms)) => u64::try_from(ms).ok().map(Duration::from_millis),
            other => return Err(bad(format!("no time of the next retry but {other:?}"))),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(parts) = item else { return Err(bad("an entry is not an array".into())) };
            let mut parts = parts.into_iter();
            let (Some(id), Some(fields), Some(count)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("an entry lacks its id, fields or count".into()));
            };
            let id = text(id).map_err(|e| bad(format!("an entry id is {e}")))?;
            let fields = field_pairs(fields).map_err(|e| bad(format!("entry {id}: {e}")))?;
            let deliveries = match count {
                Value::Int(n) => u32::try_from(n).unwrap_or(u32::MAX),
                other => return Err(bad(format!("entry {id} has the delivery count {other:?}"))),
            };
            out.push(Entry { id, fields, deliveries });
        }
        Ok((out, next))
    }

    /// New entries for this group (`XREADGROUP ... >`), blocking up to `block`.
    async fn read(&mut self, max: usize, block: Option<Duration>) -> Result<Vec<Entry>> {
        let s = &self.shared;
        let g = &self.group;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(&g.name).arg(&g.consumer).arg("COUNT").arg(max);
        let (mut conn, block) = match (&self.reader, block) {
            (Some(reader), Some(b)) => (reader.clone(), Some(b)),
            (Some(reader), None) => (reader.clone(), None),
            (None, _) => (s.conn.clone(), None),
        };
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(u64::try_from(b.as_millis().max(1)).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(&s.stream).arg(">");
        let limit = block.unwrap_or_default() + s.response_timeout;
        let reply: Value = match tokio::time::timeout(limit, cmd.query_async(&mut conn)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) if e.code() == Some("NOGROUP") => {
                // The group (or the stream) was deleted: create it again, from now on.
                tracing::warn!(stream = %s.stream, group = %g.name, "consumer group missing: creating it again");
                create_group(s, &g.name).await?;
                return Ok(Vec::new());
            }
            Ok(Err(e)) => return Err(s.fail(format_args!("cannot read for group `{}`", g.name), e)),
            Err(_) => {
                return Err(Error::backend(
                    NAME,
                    s.context(format_args!("no answer to XREADGROUP for group `{}` within {limit:?}", g.name)),
                ));
            }
        };
        parse_read(reply)
            .map_err(|e| Error::backend(NAME, s.context(format_args!("unexpected reply to XREADGROUP: {e}"))))
    }

    /// Sorts entries: those of a type this handler does not take go to `skip`, the others
    /// become [`Inbound`]s.
    fn sort(&self, entries: Vec<Entry>, out: &mut Vec<Inbound>, skip: &mut Vec<String>) {
        for entry in entries {
            if entry_type(&entry.fields).is_some_and(|t| !self.group.takes(&t)) {
                skip.push(entry.id);
                continue;
            }
            let event = decode(&entry.id, &entry.fields);
            let acker = RedisAcker { shared: Arc::clone(&self.shared), group: Arc::clone(&self.group), id: entry.id };
            out.push(Inbound::new(event, entry.deliveries, Box::new(acker)));
        }
    }

    async fn ack_skipped(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let _: i64 =
            redis::cmd("XACK").arg(&s.stream).arg(&self.group.name).arg(ids).query_async(&mut conn).await.map_err(
                |e| s.fail(format_args!("cannot acknowledge entries group `{}` does not take", self.group.name), e),
            )?;
        tracing::trace!(group = %self.group.name, skipped = ids.len(), "entries of other types acknowledged");
        Ok(())
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    /// Reclaims what is due (retries, releases, entries held too long by a dead consumer),
    /// then reads new entries, blocking until the first comes or `wait` passes (in steps of
    /// at most a second, to see retries coming due). Takes at most the subscription's
    /// prefetch at once.
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Inbound>> {
        let max = max.min(self.prefetch);
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            let mut out = Vec::new();
            let mut skip = Vec::new();
            let now = Instant::now();
            let (woken, wake) = self.group.woken(now);
            if woken || now >= self.next_reclaim {
                let (due, next_retry) = self.reclaim(max).await?;
                self.next_reclaim = now + next_retry.map_or(RECLAIM_EVERY, |n| n.min(RECLAIM_EVERY));
                self.sort(due, &mut out, &mut skip);
            }
            if out.len() < max {
                let now = Instant::now();
                let left = deadline.saturating_duration_since(now);
                let block = if out.is_empty() && skip.is_empty() && !left.is_zero() {
                    let mut b = left.min(MAX_BLOCK).min(self.next_reclaim.saturating_duration_since(now));
                    if let Some(at) = wake {
                        b = b.min(at.saturating_duration_since(now));
                    }
                    Some(b.max(Duration::from_millis(1)))
                } else {
                    None
                };
                let polling = self.reader.is_none();
                let fresh = self.read(max - out.len(), block).await?;
                let none = fresh.is_empty();
                self.sort(fresh, &mut out, &mut skip);
                if polling
                    && none
                    && out.is_empty()
                    && skip.is_empty()
                    && let Some(b) = block
                {
                    tokio::time::sleep(b.min(POLL)).await;
                }
            }
            self.ack_skipped(&skip).await?;
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }
}

/// Settles one entry for one group.
struct RedisAcker {
    shared: Arc<Shared>,
    group: Arc<Group>,
    id: String,
}

impl RedisAcker {
    async fn schedule(&self, delay: Duration, what: &str) -> Result<()> {
        let s = &self.shared;
        self.group.wake_at(Instant::now() + delay);
        let mut conn = s.conn.clone();
        let _: i64 = RETRY
            .key(&self.group.retry)
            .arg(&self.id)
            .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| s.fail(format_args!("cannot {what} entry {} of group `{}`", self.id, self.group.name), e))?;
        Ok(())
    }
}

#[async_trait]
impl Acker for RedisAcker {
    /// `XACK {stream} {group} {id}`, with the ids of the group's other entries acknowledged
    /// while the previous `XACK` ran; returns once that `XACK` is done.
    async fn ack(self: Box<Self>) -> Result<()> {
        let (s, group) = (&*self.shared, &*self.group);
        let xack = |ids: Vec<String>| async move {
            let mut conn = s.conn.clone();
            let _: i64 =
                redis::cmd("XACK").arg(&s.stream).arg(&group.name).arg(&ids).query_async(&mut conn).await.map_err(
                    |e| s.fail(format_args!("cannot acknowledge {} entries for group `{}`", ids.len(), group.name), e),
                )?;
            Ok(())
        };
        let interrupted = || {
            Error::backend(
                NAME,
                format!("the acknowledgement of entry {} was interrupted; the entry may be delivered again", self.id),
            )
        };
        group.acks.submit(self.id.clone(), xack, |why| Error::backend(NAME, why), interrupted).await
    }

    /// Leaves the entry pending for this group and puts it in the group's retry set, due
    /// `delay` from now (server time); the group's next `fetch` from then claims it.
    async fn retry(self: Box<Self>, delay: Duration) -> Result<()> {
        self.schedule(delay, "retry").await
    }

    /// Adds the entry's fields with `reason`, `group` and `original_id` to `{stream}:dead`
    /// and acknowledges it, in one script.
    async fn dead(self: Box<Self>, reason: &str) -> Result<()> {
        let s = &self.shared;
        let mut conn = s.conn.clone();
        let moved: i64 = DEAD
            .key(&s.stream)
            .key(&s.dead)
            .key(&self.group.retry)
            .arg(&self.group.name)
            .arg(&self.id)
            .arg(reason)
            .arg(s.max_len)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| {
                s.fail(format_args!("cannot move entry {} of group `{}` to `{}`", self.id, self.group.name, s.dead), e)
            })?;
        if moved == 0 {
            tracing::debug!(entry = %self.id, group = %self.group.name, "entry already settled: not moved to the dead stream");
        }
        Ok(())
    }

    /// Puts the entry in the group's retry set, due now: the group's next `fetch` claims it.
    async fn release(self: Box<Self>) -> Result<()> {
        self.schedule(Duration::ZERO, "release").await
    }
}

/// The `type` of an entry, read without decoding the rest: its `type` field, or the `type`
/// of the single structured document it holds. `None` when there is none to read (the
/// entry is then handed out, and its decoding says what is wrong).
fn entry_type(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<Cow<'_, str>> {
    if let Some((_, v)) = fields.iter().find(|(k, _)| k == b"type") {
        return std::str::from_utf8(v).ok().map(Cow::Borrowed);
    }
    if let [(k, v)] = fields
        && STRUCTURED_FIELDS.iter().any(|f| f.as_bytes() == k.as_slice())
    {
        #[derive(serde::Deserialize)]
        struct TypeOnly {
            #[serde(rename = "type")]
            event_type: Option<String>,
        }
        return serde_json::from_slice::<TypeOnly>(v).ok().and_then(|t| t.event_type).map(Cow::Owned);
    }
    None
}

/// Reads an entry in either layout; `Err` says why it is not a CloudEvent.
fn decode(id: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> std::result::Result<Event, String> {
    if fields.iter().any(|(k, _)| k == b"specversion") {
        let mut attributes = Vec::with_capacity(fields.len());
        let mut content_type = None;
        let mut data: &[u8] = &[];
        for (k, v) in fields {
            let name =
                std::str::from_utf8(k).map_err(|_| format!("stream entry {id} has a field name that is not UTF-8"))?;
            match name {
                "data" => data = v,
                _ => {
                    let value = std::str::from_utf8(v)
                        .map_err(|_| format!("field `{name}` of stream entry {id} is not UTF-8"))?;
                    if name == "datacontenttype" {
                        content_type = Some(value);
                    } else {
                        attributes.push((name, value));
                    }
                }
            }
        }
        return binding::from_binary(attributes, content_type, data);
    }
    if let [(k, v)] = fields
        && STRUCTURED_FIELDS.iter().any(|f| f.as_bytes() == k.as_slice())
    {
        return binding::from_structured(v);
    }
    let names: Vec<Cow<'_, str>> = fields.iter().map(|(k, _)| String::from_utf8_lossy(k)).collect();
    Err(format!(
        "not a CloudEvent: stream entry {id} has no `specversion` field, nor a single field `cloudevent`, `event`, \
         `data` or `message` holding a structured CloudEvents document (its fields: {})",
        names.join(", ")
    ))
}

/// Reads an `XREADGROUP` reply: nil, or per stream its name and entries.
fn parse_read(reply: Value) -> std::result::Result<Vec<Entry>, String> {
    let streams: Vec<Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        Value::Map(pairs) => pairs.into_iter().map(|(k, v)| Value::Array(vec![k, v])).collect(),
        other => return Err(format!("expected streams, got {other:?}")),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(parts) = stream else { return Err("a stream is not an array".into()) };
        let Some(Value::Array(entries)) = parts.into_iter().nth(1) else {
            return Err("a stream has no entries".into());
        };
        for entry in entries {
            let Value::Array(parts) = entry else { return Err("an entry is not an array".into()) };
            let mut parts = parts.into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                return Err("an entry lacks its id or fields".into());
            };
            let id = text(id).map_err(|e| format!("an entry id is {e}"))?;
            let fields = field_pairs(fields).map_err(|e| format!("entry {id}: {e}"))?;
            out.push(Entry { id, fields, deliveries: 1 });
        }
    }
    Ok(out)
}

/// The field/value pairs of an entry (a flat array, or a map in RESP3).
fn field_pairs(fields: Value) -> std::result::Result<Fields, String> {
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut pairs = Vec::with_capacity(12);
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        Value::Nil => Vec::new(),
        other => return Err(format!("fields {other:?}")),
    };
    pairs.into_iter().map(|(k, v)| Ok((bytes(k)?, bytes(v)?))).collect()
}

fn bytes(value: Value) -> std::result::Result<Vec<u8>, String> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(format!("a field is not a string: {other:?}")),
    }
}

fn text(value: Value) -> std::result::Result<String, String> {
    String::from_utf8(bytes(value)?).map_err(|_| "not UTF-8".to_owned())
}

/// The broker's connection: a [`ConnectionManager`] that sends a command a second time when
/// the first try found the connection refused (as `RedisStore`'s does: the manager hands
/// the failure of its last reconnection attempts to the next command, which starts a new
/// attempt; a refused connection sent nothing, so the second try never runs a command
/// twice).
#[derive(Clone)]
struct Connection(ConnectionManager);

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.0.send_packed_command(cmd).await {
                Err(e) if e.is_connection_refusal() => self.0.send_packed_command(cmd).await,
                done => done,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.0.send_packed_commands(pipeline, offset, count).await {
                Err(e) if e.is_connection_refusal() => self.0.send_packed_commands(pipeline, offset, count).await,
                done => done,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// The URL with its password, if any, replaced by `***`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &userinfo[..colon], &rest[at..]),
        None => format!("{}***{}", &url[..scheme_end], &rest[at..]),
    }
}

/// A Redis error with what the broker was doing.
#[derive(Debug)]
struct RedisFailure {
    context: String,
    source: RedisError,
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver's error is the source, not part of this message.
        f.write_str(&self.context)
    }
}

impl std::error::Error for RedisFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn failure(context: String, source: RedisError) -> Error {
    Error::backend(NAME, RedisFailure { context, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(fields: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn an_event_becomes_one_field_per_attribute_and_reads_back() {
        let e = Event::new("user.created")
            .with_data(json!({"user_id": "u-1"}))
            .with_subject("user/u-1")
            .with_tenant("acme");
        let out = Outgoing::new(&e).expect("outgoing");
        let fields = fields(&out).expect("fields");
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..6], ["specversion", "id", "type", "source", "time", "subject"]);
        assert_eq!(names[names.len() - 2..], ["datacontenttype", "data"]);
        assert!(names.contains(&"tenant"), "{names:?}");
        let raw: Vec<(Vec<u8>, Vec<u8>)> = fields.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect();
        assert_eq!(entry_type(&raw).as_deref(), Some("user.created"));
        let back = decode("1-0", &raw).expect("decodes");
        assert_eq!(back.id, e.id);
        assert_eq!(back.data, json!({"user_id": "u-1"}));
        assert_eq!(back.metadata.tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn a_single_field_holding_a_document_reads_as_structured() {
        let e = Event::new("user.created").with_data(json!({"n": 1}));
        let doc = String::from_utf8(Outgoing::new(&e).expect("outgoing").structured().to_vec()).expect("utf8");
        for name in STRUCTURED_FIELDS {
            let raw = pairs(&[(name, &doc)]);
            assert_eq!(entry_type(&raw).as_deref(), Some("user.created"));
            assert_eq!(decode("1-0", &raw).expect("decodes").id, e.id);
        }
    }

    #[test]
    fn other_entries_are_not_cloudevents_and_say_why() {
        let why = decode("1-0", &pairs(&[("hello", "world"), ("n", "1")])).expect_err("not a CloudEvent");
        assert!(why.contains("specversion") && why.contains("hello, n"), "{why}");
        assert!(entry_type(&pairs(&[("hello", "world")])).is_none());
        let why = decode("1-0", &pairs(&[("message", "plain text")])).expect_err("not JSON");
        assert!(!why.is_empty());
    }

    #[test]
    fn versions_before_6_2_are_refused() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:6.2.0\r\n").is_ok());
        assert!(check_version("redis_version:6.0.9\r\n").expect_err("old").contains("6.2"));
        assert!(check_version("valkey_version:8.0\r\n").is_ok());
    }

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("redis://:secret@host:6379"), "redis://:***@host:6379");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
