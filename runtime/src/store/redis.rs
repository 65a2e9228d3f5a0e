//! [`RedisStore`]: events in a Redis stream, through the `redis` crate.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, Value};
use uuid::Uuid;

use super::{
    AppendOutcome, EncodedEvent, EncodedRow, EventQuery, EventStore, Order, PAGE_SIZE, Page, QueryBuilder, StoredEvent,
    paged_stream, unreadable,
};
use crate::dlq::{
    AttemptRecord, DeadLetter, DeadLetterCounts, DeadLetterFilter, DeadLetterState, DeliveryKey, DeliveryLog,
    LETTER_PAGE, LetterPage, PendingDelivery, StoredDelivery, StoredLetter, distinct_handlers, encode_attempt,
    encode_letter, paged_letters,
};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorChain, Result};
use crate::event::EventData;

/// The store's name, in logs and errors.
const STORE: &str = "redis";

/// The key prefix when none is set.
pub const DEFAULT_PREFIX: &str = "bae";

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EVENT_BYTES: usize = 64 << 20;

/// Encoded bytes sent in one script call at most; a batch above it is split (each part
/// atomic on its own). Well below Redis' 1 GiB `client-query-buffer-limit`.
const CHUNK_BYTES: usize = 64 << 20;

/// Ids looked up (`HMGET`) or written (`HSET`) per command inside the script: Lua's
/// `unpack` stops at about 8,000 values.
const SCRIPT_SLICE: usize = 1000;

/// The append script. KEYS: the stream, the id hash, the position counter. ARGV[1] is the
/// number of events `n`, ARGV[2..n+1] their ids, then for each event the number of its
/// field/value arguments followed by them (the `id` field is added by the script).
///
/// With deliveries, KEYS also has the outbox hash and then one due set per handler, and
/// ARGV ends with the deliveries' stored value, their score and the handlers' names (as
/// many as due sets): each event stored now (not a duplicate) gets a pending delivery per
/// handler, in the same script.
///
/// Every read and every check comes before the first write, so a script that fails (a key
/// of the wrong type, a counter behind the stream) fails before writing anything; Redis
/// refuses a script for lack of memory at its first write only. Returns one integer per
/// event, in input order: its new position, or minus the position of the copy already stored.
const APPEND_LUA: &str = r#"
local stream, ids, counter = KEYS[1], KEYS[2], KEYS[3]
local n = tonumber(ARGV[1])
local nh = math.max(#KEYS - 4, 0)
local d = #ARGV - nh - 1
for k = 4, #KEYS do
  local t = redis.call('TYPE', KEYS[k])['ok']
  local want = (k == 4) and 'hash' or 'zset'
  if t ~= 'none' and t ~= want then
    return redis.error_reply('key ' .. KEYS[k] .. ' is a ' .. t .. ', not a ' .. want)
  end
end
local pos = tonumber(redis.call('GET', counter) or '0')
if pos == nil then
  return redis.error_reply('position counter ' .. counter .. ' is not a number')
end
if pos == 0 and redis.call('EXISTS', stream) == 1 then
  -- The counter is gone but the stream is not: go on after the stream's last id.
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local ms, seq = string.match(info[i + 1], '^(%d+)%-(%d+)$')
      if ms ~= '0' then
        return redis.error_reply('stream ' .. stream .. ' has ids RedisStore did not write: ' .. info[i + 1])
      end
      pos = tonumber(seq)
    end
  end
end
local known = {}
local i = 1
while i <= n do
  local j = math.min(i + SLICE - 1, n)
  local found = redis.call('HMGET', ids, unpack(ARGV, i + 1, j + 1))
  for k = 1, #found do
    if found[k] then
      known[ARGV[i + k]] = tonumber(found[k])
    end
  end
  i = j + 1
end
local out = {}
local fresh = {}
local a = n + 2
for e = 1, n do
  local id = ARGV[e + 1]
  local nf = tonumber(ARGV[a])
  local p = known[id]
  if p then
    out[e] = -p
  else
    pos = pos + 1
    local ps = string.format('%d', pos)
    redis.call('XADD', stream, '0-' .. ps, 'id', id, unpack(ARGV, a + 1, a + nf))
    known[id] = pos
    fresh[#fresh + 1] = id
    fresh[#fresh + 1] = ps
    out[e] = pos
  end
  a = a + 1 + nf
end
local m = #fresh
local s = 1
while s <= m do
  local t = math.min(s + 2 * SLICE - 1, m)
  redis.call('HSET', ids, unpack(fresh, s, t))
  s = t + 1
end
if m > 0 then
  redis.call('SET', counter, string.format('%d', pos))
end
if nh > 0 and m > 0 then
  local value, score = ARGV[d], ARGV[d + 1]
  for k = 1, nh do
    local name, due = ARGV[d + 1 + k], KEYS[4 + k]
    local s = 1
    while s <= m do
      local t = math.min(s + 2 * SLICE - 1, m)
      local fields, members = {}, {}
      for f = s, t, 2 do
        fields[#fields + 1] = fresh[f] .. ':' .. name
        fields[#fields + 1] = value
        members[#members + 1] = score
        members[#members + 1] = fresh[f]
      end
      redis.call('HSET', KEYS[4], unpack(fields))
      redis.call('ZADD', due, unpack(members))
      s = t + 1
    end
  end
end
return out
"#;

static APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(&APPEND_LUA.replace("SLICE", &SCRIPT_SLICE.to_string())));

/// Claims due deliveries. KEYS: the outbox, the id hash, the stream, then one due set per
/// handler. ARGV: now, the limit, the lease's end (times in microseconds), then the
/// handlers' names in the order of their due sets (`ARGV[k]` names the handler of
/// `KEYS[k]`).
///
/// Takes the members of every due set whose score (when it can be claimed) is not after
/// now, the lowest scores first, up to the limit; moves each one's score to the lease's end
/// and returns, per delivery, its handler, its stored value and its event's stream entry. A
/// member without a delivery is dropped; one whose event the stream no longer has is left
/// as it is.
const CLAIM_LUA: &str = r#"
local outbox, ids, stream = KEYS[1], KEYS[2], KEYS[3]
local now, limit, lease = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local found = {}
for k = 4, #KEYS do
  local due = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #due, 2 do
    found[#found + 1] = { tonumber(due[i + 1]), k, due[i] }
  end
end
table.sort(found, function(x, y)
  if x[1] ~= y[1] then return x[1] < y[1] end
  if x[2] ~= y[2] then return x[2] < y[2] end
  return x[3] < y[3]
end)
local out = {}
for c = 1, math.min(limit, #found) do
  local k, id = found[c][2], found[c][3]
  local value = redis.call('HGET', outbox, id .. ':' .. ARGV[k])
  if not value then
    redis.call('ZREM', KEYS[k], id)
  else
    local p = redis.call('HGET', ids, id)
    local entry = p and redis.call('XRANGE', stream, '0-' .. p, '0-' .. p)[1]
    if entry then
      redis.call('ZADD', KEYS[k], lease, id)
      out[#out + 1] = { ARGV[k], value, entry }
    end
  end
end
return out
"#;

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));

/// Records a failed attempt. KEYS: the outbox, the delivery's due set. ARGV: the delivery's
/// field, its event id, the new due time, the attempt count, the attempt as JSON. Appends
/// the attempt to the history, and makes the delivery due at the new time, unleased.
/// Returns 0 when the delivery is not pending.
const RETRY_LUA: &str = r#"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return 0
end
local _, _, from, history = string.match(value, '^(%S+) (%S+) (%S+) (.*)$')
if not history then
  return redis.error_reply('delivery ' .. ARGV[1] .. ' of ' .. KEYS[1] .. ' is unreadable')
end
if history == '[]' then
  history = '[' .. ARGV[5] .. ']'
else
  history = string.sub(history, 1, -2) .. ',' .. ARGV[5] .. ']'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. from .. ' ' .. history)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"#;

static RETRY: LazyLock<Script> = LazyLock::new(|| Script::new(RETRY_LUA));

/// Gives leased deliveries back. KEYS: the outbox, then the due set of each delivery. ARGV:
/// per delivery, its field and its event id. Each one still pending can be claimed again
/// from its due time.
const RELEASE_LUA: &str = r#"
for i = 2, #KEYS do
  local value = redis.call('HGET', KEYS[1], ARGV[2 * i - 3])
  local due = value and string.match(value, '^(%S+) ')
  if due then
    redis.call('ZADD', KEYS[i], due, ARGV[2 * i - 2])
  end
end
return 0
"#;

static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

/// Moves a delivery to the dead-letter queue. KEYS: the outbox, the delivery's due set, the
/// letters, their states, their order. ARGV: the delivery's field, its event id, the
/// letter's id, the letter as JSON, its order member. Burying the same letter again adds
/// nothing.
const BURY_LUA: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[4]) == 1 then
  redis.call('HSET', KEYS[4], ARGV[3], 'dead')
  redis.call('ZADD', KEYS[5], 0, ARGV[5])
end
return 0
"#;

static BURY: LazyLock<Script> = LazyLock::new(|| Script::new(BURY_LUA));

/// Sends a dead letter back. KEYS: the states, the outbox, the delivery's due set. ARGV: the
/// letter's id, its new state, the delivery's field, its stored value, its score, its event
/// id. Returns 1, or 0 (changing nothing) when the letter is not dead.
const REDRIVE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'dead' then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
return 1
"#;

static REDRIVE: LazyLock<Script> = LazyLock::new(|| Script::new(REDRIVE_LUA));

/// Discards a dead letter. KEYS: the states. ARGV: the letter's id, its new state. Returns
/// 1, or 0 (changing nothing) when the letter is not dead.
const DISCARD_LUA: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'dead' then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

static DISCARD: LazyLock<Script> = LazyLock::new(|| Script::new(DISCARD_LUA));

/// An event store on Redis Streams (feature `redis`). Cheap to clone: clones share one
/// multiplexed connection, re-established on its own when it drops.
///
/// ```no_run
/// # async fn demo() -> better_auth_events_runtime::Result<()> {
/// use better_auth_events_runtime::store::RedisStore;
///
/// let store = RedisStore::new("redis://127.0.0.1:6379").await?;
/// let logins = store.query().event_type("user.login").newest_first().limit(10).fetch().await?;
/// # Ok(()) }
/// ```
///
/// # Layout
///
/// Keys under a prefix (default `bae`, see [`RedisStoreBuilder::prefix`]), three for the
/// events:
///
/// - `{prefix}:events`, a stream. The entry at global position `p` has the id `0-p`, so
///   `XRANGE {prefix}:events 0-10 0-20` reads positions 10 to 20. Its fields: `id` (UUID),
///   `type`, `source`, `subject`, `version`, `tenant`, `correlation_id`, `ts` (RFC 3339, UTC,
///   exactly 6 fractional digits: `2026-01-01T12:00:00.000000Z`), `data` (the payload, JSON)
///   and `metadata` (correlation, causation, tenant, actor, trace context, extensions, as
///   JSON); `subject`, `version`, `tenant` and `correlation_id` are left out when absent. Any
///   Redis Streams consumer (`XREAD`, consumer groups) can follow it.
/// - `{prefix}:ids`, a hash from event id to position: idempotent appends and [`get`](EventStore::get).
/// - `{prefix}:position`, the last position given.
///
/// and the outbox and the dead-letter queue ([`DeliveryLog`]):
///
/// - `{prefix}:outbox`, a hash from `{event id}:{handler}` to each pending delivery:
///   `{due} {attempts} {redriven from} {history}`, `due` in microseconds since the Unix
///   epoch, `redriven from` the dead letter's id or `-`, `history` the failed attempts as a
///   JSON array.
/// - `{prefix}:due:{handler}`, per handler, a sorted set of the event ids of its pending
///   deliveries, scored by when each can be claimed (microseconds: its due time, or the end
///   of its lease if later). A claim takes the members scored up to now and moves them to
///   the end of its lease.
/// - `{prefix}:dlq:letters`, a hash from dead letter id to the entry as JSON;
///   `{prefix}:dlq:states`, from id to its state (`dead`, `redriven {time}` or
///   `discarded {time} {reason}`); `{prefix}:dlq:order`, a sorted set (every score 0) of
///   `{time}:{id}`, `time` the last failure as 16 hex digits that sort as the times do, so
///   that newest first is a reverse lexicographic range.
///
/// Every change that must be atomic (an append with its deliveries, a claim, a retry, a
/// burial, a redrive, a discard) is one Lua script.
///
/// The keys belong to the store: write to them only through it.
///
/// # Durability
///
/// `append` returns once Redis holds the event **in memory**. What survives a restart or
/// crash of Redis is what its persistence keeps: without AOF, a restart loses every event
/// since the last RDB snapshot (all of them with `save ""`). For the guarantee the bus
/// promises ("nothing acknowledged is lost"), run Redis with `appendonly yes` and
/// `appendfsync always` (nothing lost) or `appendfsync everysec` (up to a second lost on a
/// power failure or kernel crash; a crash of the Redis process alone loses nothing). With
/// replicas, [`RedisStoreBuilder::wait_for_replicas`] makes `append` wait until they have the
/// events too. Prefer `SqliteStore` or `PostgresStore` when that is not an option.
///
/// # Atomicity and order
///
/// A batch is appended by one Lua script, which Redis runs without interleaving any other
/// command: positions are given in commit order (a reader that saw position `p` never later
/// finds a new event below `p`), and an idempotency check and its write cannot race.
/// Every event is encoded before anything is sent, so an event that cannot be serialized
/// stores nothing. Redis does not roll a script back, so the script makes every check
/// before its first write; what could still cut it short (the server killed mid-script)
/// leaves a prefix of the batch stored, which appending the batch again completes
/// (duplicates are detected). A batch of more than 64 MiB encoded is sent in parts of at
/// most 64 MiB, each atomic on its own.
///
/// # Queries
///
/// Reads by position are direct (`XRANGE` / `XREVRANGE` on the entry ids) and [`get`](EventStore::get)
/// is two O(1)-ish lookups. Redis has no secondary index here: the filters of a query
/// (type, source, subject, tenant, correlation id, time) are applied by the client to the
/// entries it scans, page by page (1,000 entries a round trip; memory stays flat). A
/// filtered query or count therefore reads every entry of the range it covers: fine for
/// replays and for tailing with `after_position`, slow for a selective query over millions
/// of events. An unfiltered `count` is `XLEN`.
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    inner: Arc<Inner>,
}

/// The store's connection: a [`ConnectionManager`] that sends a command a second time when
/// the first try found the connection refused.
///
/// When its attempts to reconnect all fail, the manager keeps that failure and hands it to
/// the next command, which starts a new attempt: without a second try, the first command
/// after the server is back would fail with the refusal of an outage already over. A
/// refused connection sent nothing, so the second try never runs a command twice. While the
/// server stays unreachable, a command thus fails once a second round of attempts has failed.
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

struct Inner {
    /// The URL without its password, for messages.
    url: String,
    prefix: String,
    events_key: String,
    ids_key: String,
    position_key: String,
    outbox_key: String,
    letters_key: String,
    states_key: String,
    order_key: String,
    max_event_bytes: usize,
    wait_for_replicas: Option<(u32, Duration)>,
}

/// Configures and connects a [`RedisStore`]: `RedisStore::builder(url).prefix("app").build().await?`.
#[must_use = "a builder does nothing until `build` connects"]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_event_bytes: usize,
    wait_for_replicas: Option<(u32, Duration)>,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("wait_for_replicas", &self.wait_for_replicas)
            .finish()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.inner.url).field("prefix", &self.inner.prefix).finish()
    }
}

impl RedisStoreBuilder {
    /// The key prefix (default `bae`): every key of the store starts with `{prefix}:` (see
    /// [`RedisStore`]'s layout). Stores with different prefixes on one server are
    /// independent, unless one prefix is another's followed by `:due` (the due sets of the
    /// first store's handlers would share names with the second's keys).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long `build` (and each reconnection attempt) may take to connect (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its answer before failing (default 30 s). A timed-out
    /// append may still have been stored: appending it again is safe.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The largest event accepted, encoded (default 64 MiB, below Redis' 512 MiB
    /// `proto-max-bulk-len`). A batch holding a bigger event fails before anything is sent.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes.max(1);
        self
    }

    /// After each append, waits (Redis `WAIT`) until `replicas` replicas have the events, at
    /// most `timeout` (at least 1 ms); if fewer acknowledge in time, `append` fails with
    /// [`Error::Store`] although the primary has the events (appending again is safe).
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait_for_replicas = Some((replicas, timeout.max(Duration::from_millis(1))));
        self
    }

    /// Connects, and checks that the store's keys, if they exist, have the right types.
    ///
    /// Fails with [`Error::Store`] naming the URL (without its password) when the server is
    /// unreachable, within the connect timeout, or with [`Error::Config`] for an empty prefix.
    pub async fn build(self) -> Result<RedisStore> {
        if self.prefix.is_empty() {
            return Err(Error::Config("the prefix of a RedisStore must not be empty".into()));
        }
        let url = redact(&self.url);
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| failure(format!("invalid Redis URL `{url}`"), e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = match tokio::time::timeout(self.connect_timeout, ConnectionManager::new_with_config(client, config))
            .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(failure(format!("cannot connect to Redis at {url}"), e)),
            Err(_) => {
                return Err(Error::store(
                    STORE,
                    format!("cannot connect to Redis at {url}: no connection within {:?}", self.connect_timeout),
                ));
            }
        };
        let p = &self.prefix;
        let inner = Inner {
            events_key: format!("{p}:events"),
            ids_key: format!("{p}:ids"),
            position_key: format!("{p}:position"),
            outbox_key: format!("{p}:outbox"),
            letters_key: format!("{p}:dlq:letters"),
            states_key: format!("{p}:dlq:states"),
            order_key: format!("{p}:dlq:order"),
            prefix: self.prefix.clone(),
            url,
            max_event_bytes: self.max_event_bytes,
            wait_for_replicas: self.wait_for_replicas,
        };
        let store = RedisStore { conn: Connection(conn), inner: Arc::new(inner) };
        store.check_key_types().await?;
        tracing::debug!(url = %store.inner.url, prefix = %store.inner.prefix, "redis event store connected");
        Ok(store)
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port/db`, `rediss://…` with TLS if the
    /// `redis` crate was built with it) with the default prefix `bae`.
    pub async fn new(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// A builder, to set the key prefix, timeouts or replica acknowledgements.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            wait_for_replicas: None,
        }
    }

    /// A query builder over this store: `store.query().event_type("user.created").fetch().await?`.
    pub fn query(&self) -> QueryBuilder<'_> {
        QueryBuilder::new(self)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The key of the stream holding the events (`{prefix}:events`), for consumers that read
    /// it with plain Redis commands.
    pub fn stream_key(&self) -> &str {
        &self.inner.events_key
    }

    fn context(&self, what: impl fmt::Display) -> String {
        format!("{what} (Redis at {})", self.inner.url)
    }

    async fn check_key_types(&self) -> Result<()> {
        let inner = &self.inner;
        let mut pipe = redis::pipe();
        let expected = [
            (&inner.events_key, "stream"),
            (&inner.ids_key, "hash"),
            (&inner.position_key, "string"),
            (&inner.outbox_key, "hash"),
            (&inner.letters_key, "hash"),
            (&inner.states_key, "hash"),
            (&inner.order_key, "zset"),
        ];
        for (key, _) in &expected {
            pipe.cmd("TYPE").arg(key);
        }
        let types: Vec<String> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context("cannot read the types of the store's keys"), e))?;
        for ((key, want), got) in expected.into_iter().zip(&types) {
            if got != "none" && got != want {
                return Err(Error::store(
                    STORE,
                    self.context(format_args!(
                        "key `{key}` is a {got}, not a {want}: something else uses the prefix `{}`; choose \
                         another with `RedisStoreBuilder::prefix`",
                        inner.prefix
                    )),
                ));
            }
        }
        Ok(())
    }

    /// Runs the append script over `chunk`, with the pending deliveries of the events it
    /// stores when there are `deliveries`.
    async fn append_chunk(
        &self,
        chunk: &[EncodedEvent],
        deliveries: Option<&NewDeliveries>,
        out: &mut Vec<AppendOutcome>,
    ) -> Result<()> {
        let inner = &self.inner;
        let mut invocation = APPEND.prepare_invoke();
        invocation.key(&inner.events_key).key(&inner.ids_key).key(&inner.position_key).arg(chunk.len());
        if let Some(d) = deliveries {
            invocation.key(&inner.outbox_key);
            for handler in &d.handlers {
                invocation.key(self.due_key(handler));
            }
        }
        for e in chunk {
            invocation.arg(&e.id);
        }
        let ts: Vec<String> = chunk.iter().map(|e| format_ts(e.timestamp)).collect();
        for (e, ts) in chunk.iter().zip(&ts) {
            let optional = [
                ("subject", &e.subject),
                ("version", &e.version),
                ("tenant", &e.tenant),
                ("correlation_id", &e.correlation_id),
            ];
            let present = optional.iter().filter(|(_, v)| v.is_some()).count();
            invocation.arg(2 * (5 + present));
            invocation.arg("type").arg(&e.event_type).arg("source").arg(&e.source);
            for (name, value) in optional {
                if let Some(value) = value {
                    invocation.arg(name).arg(value);
                }
            }
            invocation.arg("ts").arg(ts).arg("data").arg(&e.data).arg("metadata").arg(&e.metadata);
        }
        if let Some(d) = deliveries {
            invocation.arg(&d.value).arg(d.score);
            for handler in &d.handlers {
                invocation.arg(handler);
            }
        }
        let positions: Vec<i64> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot append to `{}`", inner.events_key)), e))?;
        if positions.len() != chunk.len() {
            return Err(Error::store(
                STORE,
                self.context(format_args!(
                    "the append script returned {} outcomes for {} events",
                    positions.len(),
                    chunk.len()
                )),
            ));
        }
        for p in positions {
            out.push(match p {
                p if p > 0 => AppendOutcome::Stored { position: p.unsigned_abs() },
                p if p < 0 => AppendOutcome::Duplicate { position: p.unsigned_abs() },
                _ => return Err(Error::store(STORE, self.context("the append script returned position 0"))),
            });
        }
        Ok(())
    }

    async fn wait_for_replicas(&self) -> Result<()> {
        let Some((replicas, timeout)) = self.inner.wait_for_replicas else {
            return Ok(());
        };
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let acked: i64 = redis::cmd("WAIT")
            .arg(replicas)
            .arg(millis)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context("WAIT for replicas failed"), e))?;
        if acked < i64::from(replicas) {
            return Err(Error::store(
                STORE,
                self.context(format_args!(
                    "the events are on the primary but only {acked} of {replicas} replicas acknowledged them within \
                     {timeout:?}; appending them again is safe"
                )),
            ));
        }
        Ok(())
    }

    /// Entries of the stream from `start` to `end` (`XRANGE`) or, descending, from `end` down
    /// to `start` (`XREVRANGE`), at most `count`.
    async fn range(&self, order: Order, start: &str, end: &str, count: u64) -> Result<Vec<RawEntry>> {
        let key = &self.inner.events_key;
        let cmd = match order {
            Order::Ascending => {
                let mut c = redis::cmd("XRANGE");
                c.arg(key).arg(start).arg(end);
                c
            }
            Order::Descending => {
                let mut c = redis::cmd("XREVRANGE");
                c.arg(key).arg(end).arg(start);
                c
            }
        };
        let mut cmd = cmd;
        cmd.arg("COUNT").arg(count);
        let value: Value = cmd
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot read `{key}`")), e))?;
        parse_entries(value, key)
    }

    /// Up to `count` entries past `after` in `order`, the store's scan step.
    async fn scan(&self, order: Order, after: Option<u64>, count: u64) -> Result<Vec<RawEntry>> {
        match (order, after) {
            (Order::Ascending, None) => self.range(order, "-", "+", count).await,
            (Order::Ascending, Some(a)) => match a.checked_add(1) {
                Some(next) => self.range(order, &format!("0-{next}"), "+", count).await,
                None => Ok(Vec::new()),
            },
            (Order::Descending, None) => self.range(order, "-", "+", count).await,
            (Order::Descending, Some(a)) if a <= 1 => Ok(Vec::new()),
            (Order::Descending, Some(a)) => self.range(order, "-", &format!("0-{}", a - 1), count).await,
        }
    }

    /// One page of `query` for [`paged_stream`].
    async fn page(&self, query: EventQuery) -> Result<Page> {
        let limit = query.limit.unwrap_or(u64::MAX);
        if limit == 0 {
            return Ok(Page { events: Vec::new(), next_after: None });
        }
        // Unfiltered, every entry scanned is a match: read no more than wanted.
        let scan = if is_unfiltered(&query) { limit.min(PAGE_SIZE) } else { PAGE_SIZE };
        let entries = self.scan(query.order, query.after_position, scan).await?;
        let full_scan = entries.len() as u64 >= scan;
        let mut events = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.position);
            // An entry that cannot be read is its error, in its place.
            if let Some(event) = entry.matching(&query, &self.inner.events_key).transpose() {
                events.push(event);
                if events.len() as u64 >= limit {
                    return Ok(Page { events, next_after: last });
                }
            }
        }
        Ok(Page { events, next_after: if full_scan { last } else { None } })
    }
}

#[async_trait]
impl EventStore for RedisStore {
    fn name(&self) -> &str {
        STORE
    }

    async fn append_batch(&self, events: &[&Envelope<dyn EventData>]) -> Result<Vec<AppendOutcome>> {
        self.append_rows(events, None).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<StoredEvent>> {
        let ids_key = &self.inner.ids_key;
        let position: Option<u64> = redis::cmd("HGET")
            .arg(ids_key)
            .arg(id.to_string())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot read `{ids_key}`")), e))?;
        let Some(position) = position else { return Ok(None) };
        let entry_id = format!("0-{position}");
        let mut entries = self.range(Order::Ascending, &entry_id, &entry_id, 1).await?;
        match entries.pop() {
            Some(entry) => entry.into_row(&self.inner.events_key)?.decode(STORE).map(Some),
            None => {
                tracing::warn!(
                    %id, position, stream = %self.inner.events_key,
                    "redis store: the id index names a position the stream no longer has (trimmed?)"
                );
                Ok(None)
            }
        }
    }

    async fn count(&self, query: &EventQuery) -> Result<u64> {
        if is_unfiltered(query) {
            let key = &self.inner.events_key;
            return redis::cmd("XLEN")
                .arg(key)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(|e| failure(self.context(format_args!("cannot count `{key}`")), e));
        }
        let mut n = 0;
        let mut after = None;
        loop {
            let entries = self.scan(Order::Ascending, after, PAGE_SIZE).await?;
            let full = entries.len() as u64 >= PAGE_SIZE;
            for entry in entries {
                after = Some(entry.position);
                match entry.matching(query, &self.inner.events_key) {
                    Ok(found) => n += u64::from(found.is_some()),
                    // It passed the filters read without decoding it, and `stream` yields it
                    // (as an error): it is counted, as the SQL stores count such rows.
                    Err(Error::UnreadableEvent { .. }) => n += 1,
                    Err(e) => return Err(e),
                }
            }
            if !full {
                return Ok(n);
            }
        }
    }

    fn stream(&self, query: EventQuery) -> BoxStream<'_, Result<StoredEvent>> {
        paged_stream(query, move |q| self.page(q))
    }

    fn delivery_log(&self) -> Option<&dyn DeliveryLog> {
        Some(self)
    }
}

impl RedisStore {
    /// Appends `events` and, with `deliveries`, the pending deliveries of those stored now:
    /// the path of [`EventStore::append_batch`] and [`DeliveryLog::append_with_deliveries`].
    async fn append_rows(
        &self,
        events: &[&Envelope<dyn EventData>],
        deliveries: Option<&NewDeliveries>,
    ) -> Result<Vec<AppendOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Encode everything first: a payload that cannot be serialized stores nothing.
        let encoded = events.iter().map(|e| EncodedEvent::encode(e)).collect::<Result<Vec<_>>>()?;
        let max = self.inner.max_event_bytes;
        let mut chunks: Vec<&[EncodedEvent]> = Vec::new();
        let (mut start, mut bytes) = (0, 0usize);
        for (i, e) in encoded.iter().enumerate() {
            let size = encoded_size(e);
            if size > max {
                return Err(Error::store(
                    STORE,
                    format!(
                        "event {} (`{}`) is {size} bytes encoded, over the limit of {max} bytes \
                         (RedisStoreBuilder::max_event_bytes); nothing of the batch was stored",
                        e.id, e.event_type
                    ),
                ));
            }
            if bytes + size > CHUNK_BYTES && i > start {
                chunks.push(&encoded[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += size;
        }
        chunks.push(&encoded[start..]);
        if chunks.len() > 1 {
            tracing::debug!(events = encoded.len(), parts = chunks.len(), "redis store: batch split in parts");
        }
        let mut out = Vec::with_capacity(encoded.len());
        for chunk in chunks {
            self.append_chunk(chunk, deliveries, &mut out).await?;
        }
        self.wait_for_replicas().await?;
        Ok(out)
    }
}

/// The deliveries an append writes for the events it stores.
struct NewDeliveries {
    /// The handlers' names, each once.
    handlers: Vec<String>,
    /// What the outbox keeps for each: due now, no attempt yet.
    value: String,
    /// When they can be claimed: now, or the end of the appender's lease.
    score: i64,
}

/// The outbox and the dead-letter queue, in the keys described in [`RedisStore`]'s layout.
#[async_trait]
impl DeliveryLog for RedisStore {
    async fn append_with_deliveries(
        &self,
        events: &[&Envelope<dyn EventData>],
        handlers: &[&str],
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Vec<AppendOutcome>> {
        let handlers = distinct_handlers(handlers);
        if handlers.is_empty() {
            return self.append_rows(events, None).await;
        }
        let now = micros(Utc::now());
        let deliveries = NewDeliveries {
            handlers: handlers.into_iter().map(str::to_owned).collect(),
            value: delivery_value(now, 0, None, "[]"),
            score: lease_until.map_or(now, |lease| micros(lease).max(now)),
        };
        self.append_rows(events, Some(&deliveries)).await
    }

    async fn claim_due(
        &self,
        handlers: &[&str],
        limit: usize,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<PendingDelivery>> {
        let handlers = distinct_handlers(handlers);
        if handlers.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let mut invocation = CLAIM.prepare_invoke();
        invocation.key(&inner.outbox_key).key(&inner.ids_key).key(&inner.events_key);
        // Lua reads numbers as doubles: a limit above 2^32 (more than any claim can hold)
        // would reach Redis as a float.
        let limit = limit.min(u32::MAX as usize);
        invocation.arg(micros(Utc::now())).arg(limit).arg(micros(lease_until));
        for handler in &handlers {
            invocation.key(self.due_key(handler)).arg(*handler);
        }
        let reply: Value = invocation.invoke_async(&mut self.conn.clone()).await.map_err(|e| {
            failure(self.context(format_args!("cannot claim due deliveries of `{}`", inner.outbox_key)), e)
        })?;
        let bad = |what: &str| Error::store(STORE, self.context(format_args!("unexpected reply to a claim: {what}")));
        let items = match reply {
            Value::Array(items) => items,
            Value::Nil => Vec::new(),
            other => return Err(bad(&format!("expected an array, got {other:?}"))),
        };
        let mut claimed = Vec::with_capacity(items.len());
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(parts) = item else { return Err(bad("a delivery is not an array")) };
            let Ok([handler, value, entry]) = <[Value; 3]>::try_from(parts) else {
                return Err(bad("a delivery is not a handler, a value and an entry"));
            };
            let handler = text(handler).map_err(|e| bad(&format!("a handler is {e}")))?;
            let value = text(value).map_err(|e| bad(&format!("a delivery is {e}")))?;
            claimed.push((handler, value));
            entries.push(entry);
        }
        let entries = parse_entries(Value::Array(entries), &inner.events_key)?;
        let mut out = Vec::with_capacity(claimed.len());
        for ((handler, value), entry) in claimed.into_iter().zip(entries) {
            // A delivery that cannot be read stays leased, and comes back when its lease
            // ends: it must not keep the others of the batch from running.
            match self.claimed(handler, &value, entry) {
                Ok(delivery) => out.push(delivery),
                Err(e) => tracing::error!(
                    prefix = %inner.prefix, error = %ErrorChain(&e),
                    "a claimed delivery is unreadable; it is left leased"
                ),
            }
        }
        tracing::trace!(prefix = %inner.prefix, claimed = out.len(), "deliveries claimed");
        Ok(out)
    }

    async fn complete(&self, done: &[DeliveryKey]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in done {
            pipe.cmd("HDEL").arg(&inner.outbox_key).arg(field(key)).ignore();
            pipe.cmd("ZREM").arg(self.due_key(&key.handler)).arg(key.event_id.to_string()).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(|e| {
            failure(
                self.context(format_args!("cannot remove {} done deliveries from `{}`", done.len(), inner.outbox_key)),
                e,
            )
        })
    }

    async fn retry_at(&self, key: &DeliveryKey, at: DateTime<Utc>, attempt: &AttemptRecord) -> Result<()> {
        let inner = &self.inner;
        let pending: i64 = RETRY
            .key(&inner.outbox_key)
            .key(self.due_key(&key.handler))
            .arg(field(key))
            .arg(key.event_id.to_string())
            .arg(micros(at))
            .arg(attempt.attempt)
            .arg(encode_attempt(attempt, STORE)?)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| {
                failure(
                    self.context(format_args!(
                        "cannot record attempt {} of the delivery of event {} to `{}`",
                        attempt.attempt, key.event_id, key.handler
                    )),
                    e,
                )
            })?;
        if pending == 0 {
            tracing::debug!(event_id = %key.event_id, handler = %key.handler, "retry of a delivery no longer pending");
        }
        Ok(())
    }

    async fn release(&self, keys: &[DeliveryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = RELEASE.prepare_invoke();
        invocation.key(&self.inner.outbox_key);
        for key in keys {
            invocation.key(self.due_key(&key.handler)).arg(field(key)).arg(key.event_id.to_string());
        }
        invocation
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot release {} deliveries", keys.len())), e))
    }

    async fn next_due(&self, handlers: &[&str]) -> Result<Option<DateTime<Utc>>> {
        let handlers = distinct_handlers(handlers);
        if handlers.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for handler in &handlers {
            pipe.cmd("ZRANGE").arg(self.due_key(handler)).arg(0).arg(0).arg("WITHSCORES");
        }
        let firsts: Vec<Vec<(String, f64)>> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context("cannot read when the next delivery is due"), e))?;
        let Some(first) = firsts.iter().flatten().map(|(_, score)| *score).reduce(f64::min) else {
            return Ok(None);
        };
        // Scores are whole microseconds, exact in a double until the year 2255.
        from_micros(first.round() as i64).map(Some)
    }

    async fn pending_deliveries(&self) -> Result<u64> {
        let key = &self.inner.outbox_key;
        redis::cmd("HLEN")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot count the deliveries of `{key}`")), e))
    }

    async fn bury(&self, letter: &DeadLetter) -> Result<()> {
        let inner = &self.inner;
        let key = DeliveryKey { event_id: letter.event.id, handler: letter.handler.clone() };
        BURY.key(&inner.outbox_key)
            .key(self.due_key(&letter.handler))
            .key(&inner.letters_key)
            .key(&inner.states_key)
            .key(&inner.order_key)
            .arg(field(&key))
            .arg(letter.event.id.to_string())
            .arg(letter.id.to_string())
            .arg(encode_letter(letter, STORE)?)
            .arg(order_member(letter.last_failure, letter.id))
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| {
                failure(
                    self.context(format_args!(
                        "cannot move the delivery of event {} to `{}` to the dead-letter queue",
                        letter.event.id, letter.handler
                    )),
                    e,
                )
            })?;
        tracing::debug!(
            prefix = %inner.prefix, dead_letter = %letter.id, event_id = %letter.event.id,
            handler = %letter.handler, "delivery dead-lettered"
        );
        Ok(())
    }

    fn dead_letters(&self, filter: DeadLetterFilter) -> BoxStream<'_, Result<DeadLetter>> {
        let limit = filter.limit;
        let filter = Arc::new(filter);
        paged_letters(limit, move |cursor, want| {
            let filter = Arc::clone(&filter);
            async move { self.letters_page(&filter, cursor, want).await }
        })
    }

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        let inner = &self.inner;
        let (entry, state): (Option<String>, Option<String>) = redis::pipe()
            .cmd("HGET")
            .arg(&inner.letters_key)
            .arg(id.to_string())
            .cmd("HGET")
            .arg(&inner.states_key)
            .arg(id.to_string())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot read dead letter {id}")), e))?;
        entry.map(|entry| self.decode_letter(id, &entry, state.as_deref())).transpose()
    }

    async fn redrive(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        let inner = &self.inner;
        let entry: Option<String> = redis::cmd("HGET")
            .arg(&inner.letters_key)
            .arg(id.to_string())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot read dead letter {id}")), e))?;
        let Some(entry) = entry else { return Ok(None) };
        // The entry never changes once buried: its event and handler, read before the
        // script, are those the script sends back.
        let mut letter = StoredLetter { entry: &entry, state: "dead", state_at: None, reason: None }.decode(STORE)?;
        let now = Utc::now().trunc_subsecs(6);
        let key = DeliveryKey { event_id: letter.event.id, handler: letter.handler.clone() };
        let won: i64 = REDRIVE
            .key(&inner.states_key)
            .key(&inner.outbox_key)
            .key(self.due_key(&letter.handler))
            .arg(id.to_string())
            .arg(format!("redriven {}", format_ts(now)))
            .arg(field(&key))
            .arg(delivery_value(micros(now), 0, Some(id), "[]"))
            .arg(micros(now))
            .arg(letter.event.id.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot redrive dead letter {id}")), e))?;
        if won != 1 {
            return Ok(None);
        }
        letter.state = DeadLetterState::Redriven { at: now };
        Ok(Some(letter))
    }

    async fn discard(&self, id: Uuid, reason: &str) -> Result<bool> {
        let now = Utc::now().trunc_subsecs(6);
        let done: i64 = DISCARD
            .key(&self.inner.states_key)
            .arg(id.to_string())
            .arg(format!("discarded {} {reason}", format_ts(now)))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot discard dead letter {id}")), e))?;
        Ok(done == 1)
    }

    async fn dead_letter_counts(&self, filter: &DeadLetterFilter) -> Result<DeadLetterCounts> {
        // Redis has no index to group by: the matching entries are read, page by page.
        let mut all = filter.clone();
        all.limit = None;
        let mut counts = DeadLetterCounts::default();
        let mut letters = self.dead_letters(all);
        while let Some(letter) = letters.next().await {
            let letter = letter?;
            counts.add(&letter.handler, letter.event_type(), 1);
        }
        Ok(counts)
    }
}

impl RedisStore {
    /// The due set of `handler`'s deliveries.
    fn due_key(&self, handler: &str) -> String {
        format!("{}:due:{handler}", self.inner.prefix)
    }

    /// A claimed delivery: its handler, its value in the outbox, its event's entry.
    fn claimed(&self, handler: String, value: &str, entry: RawEntry) -> Result<PendingDelivery> {
        let event = entry.into_row(&self.inner.events_key)?.decode(STORE)?.event;
        let Some((attempts, redriven_from, history)) = parse_delivery_value(value) else {
            return Err(Error::store(
                STORE,
                self.context(format_args!(
                    "the delivery of event {} to `{handler}` in `{}` is unreadable: `{value}`",
                    event.id, self.inner.outbox_key
                )),
            ));
        };
        StoredDelivery { handler, attempts, history, redriven_from }.decode(event, STORE)
    }

    /// A dead letter from its entry and its state (`dead`, `redriven {time}`,
    /// `discarded {time} {reason}`).
    fn decode_letter(&self, id: impl fmt::Display, entry: &str, state: Option<&str>) -> Result<DeadLetter> {
        let bad = |what: String| Error::store(STORE, self.context(format_args!("dead letter {id} {what}")));
        let state = state.ok_or_else(|| bad(format!("has no state in `{}`", self.inner.states_key)))?;
        let mut parts = state.splitn(3, ' ');
        let name = parts.next().unwrap_or_default();
        let state_at = parts
            .next()
            .map(|at| {
                DateTime::parse_from_rfc3339(at)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|e| bad(format!("has an unreadable state time `{at}`: {e}")))
            })
            .transpose()?;
        let reason = parts.next().map(str::to_owned);
        StoredLetter { entry, state: name, state_at, reason }.decode(STORE)
    }

    /// Up to `want` dead letters matching `filter`, newest failure first, after the order
    /// member `cursor`. Reads [`LETTER_PAGE`] members a round trip and filters them here.
    async fn letters_page(
        &self,
        filter: &DeadLetterFilter,
        cursor: Option<String>,
        want: u64,
    ) -> Result<LetterPage<String>> {
        let inner = &self.inner;
        // Members are `{time}:{id}`: `(x` excludes x and every member it starts, `[x` takes
        // them, so a time bound is a bound on the members' first 16 characters.
        let max = match cursor {
            Some(member) => format!("({member}"),
            None => filter.to.map_or_else(|| "+".to_owned(), |to| format!("({}", order_time(to))),
        };
        let min = filter.from.map_or_else(|| "-".to_owned(), |from| format!("[{}", order_time(from)));
        let members: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
            .arg(&inner.order_key)
            .arg(&max)
            .arg(&min)
            .arg("LIMIT")
            .arg(0)
            .arg(LETTER_PAGE)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context(format_args!("cannot read `{}`", inner.order_key)), e))?;
        if members.is_empty() {
            return Ok(LetterPage { letters: Vec::new(), next: None });
        }
        let ids: Vec<&str> = members.iter().map(|m| m.split_once(':').map_or(m.as_str(), |(_, id)| id)).collect();
        let (entries, states): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&inner.letters_key)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&inner.states_key)
            .arg(&ids)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| failure(self.context("cannot read dead letters"), e))?;
        let mut letters = Vec::new();
        for ((member, id), (entry, state)) in members.iter().zip(&ids).zip(entries.iter().zip(&states)) {
            let entry = entry.as_deref().ok_or_else(|| {
                Error::store(
                    STORE,
                    self.context(format_args!(
                        "dead letter {id} is in `{}` but not in `{}`",
                        inner.order_key, inner.letters_key
                    )),
                )
            })?;
            let letter = self.decode_letter(id, entry, state.as_deref())?;
            if filter.matches(&letter) {
                letters.push(letter);
                if letters.len() as u64 >= want {
                    return Ok(LetterPage { letters, next: Some(member.clone()) });
                }
            }
        }
        let full = members.len() as u64 >= LETTER_PAGE;
        Ok(LetterPage { letters, next: if full { members.last().cloned() } else { None } })
    }
}

/// A delivery's field in the outbox: `{event id}:{handler}`.
fn field(key: &DeliveryKey) -> String {
    format!("{}:{}", key.event_id, key.handler)
}

/// A pending delivery as the outbox keeps it: `{due} {attempts} {redriven from} {history}`.
fn delivery_value(due: i64, attempts: u32, redriven_from: Option<Uuid>, history: &str) -> String {
    match redriven_from {
        Some(from) => format!("{due} {attempts} {from} {history}"),
        None => format!("{due} {attempts} - {history}"),
    }
}

/// The attempts, the dead letter it was redriven from and the history of a
/// [`delivery_value`].
fn parse_delivery_value(value: &str) -> Option<(i64, Option<&str>, &str)> {
    let mut parts = value.splitn(4, ' ');
    let (_due, attempts, from, history) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((attempts.parse().ok()?, (from != "-").then_some(from), history))
}

/// A time as the outbox keeps it: microseconds since the Unix epoch.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| Error::store(STORE, format!("a due time of {micros} µs is out of range")))
}

/// A dead letter's failure time as the first part of its order member: 16 hex digits whose
/// order is the times' (the sign bit flipped, so times before 1970 sort first).
fn order_time(t: DateTime<Utc>) -> String {
    format!("{:016x}", u64::from_ne_bytes(micros(t).to_ne_bytes()) ^ (1 << 63))
}

/// A dead letter's member in the order set: `{time}:{id}`.
fn order_member(last_failure: DateTime<Utc>, id: Uuid) -> String {
    format!("{}:{id}", order_time(last_failure))
}

/// Whether `query` has no filter (position, limit and order aside).
fn is_unfiltered(query: &EventQuery) -> bool {
    let mut bare = query.clone();
    bare.after_position = None;
    bare.limit = None;
    bare.order = Order::default();
    bare == EventQuery::all()
}

/// `2026-01-01T12:00:00.000000Z`: what the `ts` field holds.
fn format_ts(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Bytes of the arguments an event adds to the script call.
fn encoded_size(e: &EncodedEvent) -> usize {
    const FIXED: usize = 128; // field names, `ts`, argument framing
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    FIXED
        + 2 * e.id.len()
        + e.event_type.len()
        + e.source.len()
        + opt(&e.subject)
        + opt(&e.version)
        + opt(&e.tenant)
        + opt(&e.correlation_id)
        + e.data.len()
        + e.metadata.len()
}

/// A stream entry as read, its fields still text.
#[derive(Default)]
struct RawEntry {
    position: u64,
    id: Option<String>,
    event_type: Option<String>,
    source: Option<String>,
    subject: Option<String>,
    version: Option<String>,
    tenant: Option<String>,
    correlation_id: Option<String>,
    ts: Option<String>,
    data: Option<String>,
    metadata: Option<String>,
}

impl RawEntry {
    /// The entry as a stored event if it matches `query`. The cheap text filters run before
    /// the JSON is parsed; [`EventQuery::matches`] has the last word.
    fn matching(self, query: &EventQuery, key: &str) -> Result<Option<StoredEvent>> {
        let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        let type_ok = query.event_types.is_empty()
            || self.event_type.as_deref().is_some_and(|t| query.event_types.iter().any(|q| q == t));
        let cheap = type_ok
            && query.source.as_ref().is_none_or(|s| self.source.as_ref() == Some(s))
            && eq(&query.subject, &self.subject)
            && eq(&query.tenant, &self.tenant)
            && eq(&query.correlation_id, &self.correlation_id);
        if !cheap {
            return Ok(None);
        }
        let event = self.into_row(key)?.decode(STORE)?;
        Ok(query.matches(&event).then_some(event))
    }

    /// The entry as a row; an entry that cannot be read is an [`Error::UnreadableEvent`].
    fn into_row(self, key: &str) -> Result<EncodedRow> {
        let RawEntry { position, id, event_type, source, subject, version, ts, data, metadata, .. } = self;
        let foreign = |field: &str| {
            format!(
                "stream entry 0-{position} of `{key}` has no `{field}` field: the stream holds entries \
                 RedisStore did not write"
            )
        };
        let Some(id) = id else { return Err(unreadable(STORE, position, None, "id", &foreign("id"))) };
        let bad = |what: &str, cause: &dyn fmt::Display| unreadable(STORE, position, Some(&id), what, cause);
        let missing = |field: &str| bad(field, &foreign(field));
        let ts = ts.ok_or_else(|| missing("ts"))?;
        let timestamp = DateTime::parse_from_rfc3339(&ts)
            .map_err(|e| bad("time", &format_args!("stream entry 0-{position} of `{key}` has the time `{ts}`: {e}")))?
            .with_timezone(&Utc);
        let event_type = event_type.ok_or_else(|| missing("type"))?;
        let source = source.ok_or_else(|| missing("source"))?;
        let data = data.ok_or_else(|| missing("data"))?;
        let position = i64::try_from(position).map_err(|_| bad("position", &"it is too large"))?;
        Ok(EncodedRow { position, id, event_type, source, subject, timestamp, version, data, metadata })
    }
}

/// Reads an `XRANGE` / `XREVRANGE` reply.
fn parse_entries(value: Value, key: &str) -> Result<Vec<RawEntry>> {
    let bad = |what: String| Error::store(STORE, format!("unexpected reply reading `{key}`: {what}"));
    let items = match value {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return Err(bad(format!("expected an array of entries, got {other:?}"))),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(bad("an entry is not an array".into()));
        };
        let mut parts = parts.into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(bad("an entry has no id or no fields".into()));
        };
        let id = text(id).map_err(|e| bad(format!("an entry id is {e}")))?;
        let position = match id.split_once('-') {
            Some(("0", seq)) => seq.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::store(
                STORE,
                format!("stream `{key}` holds entry {id}, not of the form 0-<position>: RedisStore did not write it"),
            )
        })?;
        let pairs: Vec<(Value, Value)> = match fields {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                let mut pairs = Vec::with_capacity(10);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            Value::Map(pairs) => pairs,
            other => return Err(bad(format!("entry {id} has fields {other:?}"))),
        };
        let mut entry = RawEntry { position, ..RawEntry::default() };
        for (k, v) in pairs {
            let k = text(k).map_err(|e| bad(format!("a field name of entry {id} is {e}")))?;
            let slot = match k.as_str() {
                "id" => &mut entry.id,
                "type" => &mut entry.event_type,
                "source" => &mut entry.source,
                "subject" => &mut entry.subject,
                "version" => &mut entry.version,
                "tenant" => &mut entry.tenant,
                "correlation_id" => &mut entry.correlation_id,
                "ts" => &mut entry.ts,
                "data" => &mut entry.data,
                "metadata" => &mut entry.metadata,
                _ => continue,
            };
            *slot = Some(text(v).map_err(|e| bad(format!("field `{k}` of entry {id} is {e}")))?);
        }
        out.push(entry);
    }
    Ok(out)
}

/// A string reply as text.
fn text(value: Value) -> std::result::Result<String, String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned()),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        other => Err(format!("not a string: {other:?}")),
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

/// A Redis error with what the store was doing.
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
    Error::store(STORE, RedisFailure { context, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact("redis://:secret@host:6379"), "redis://:***@host:6379");
        assert_eq!(redact("redis://user:secret@host/1"), "redis://user:***@host/1");
        assert_eq!(redact("rediss://token@host"), "rediss://***@host");
        assert_eq!(redact("unix:///tmp/redis.sock"), "unix:///tmp/redis.sock");
    }

    #[test]
    fn timestamps_have_six_fractional_digits() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").expect("time").with_timezone(&Utc);
        assert_eq!(format_ts(t), "2026-01-01T12:00:00.000000Z");
        let t = t + chrono::Duration::microseconds(1234);
        assert_eq!(format_ts(t), "2026-01-01T12:00:00.001234Z");
    }

    #[test]
    fn order_members_sort_as_their_times() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z").expect("time").with_timezone(&Utc);
        let times = [
            DateTime::parse_from_rfc3339("1960-01-01T00:00:00Z").expect("time").with_timezone(&Utc),
            DateTime::UNIX_EPOCH,
            t,
            t + chrono::Duration::microseconds(1),
            t + chrono::Duration::days(365 * 100),
        ];
        let keys: Vec<String> = times.iter().map(|t| order_time(*t)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert!(keys.iter().all(|k| k.len() == 16));
    }

    #[test]
    fn delivery_values_read_back() {
        let from = Uuid::now_v7();
        let history = r#"[{"attempt":1,"error":{"kind":"failed","message":"a b c"}}]"#;
        let value = delivery_value(42, 3, Some(from), history);
        let from = from.to_string();
        assert_eq!(parse_delivery_value(&value), Some((3, Some(from.as_str()), history)));
        assert_eq!(parse_delivery_value(&delivery_value(42, 0, None, "[]")), Some((0, None, "[]")));
        assert_eq!(parse_delivery_value("42 x - []"), None);
    }

    #[test]
    fn unfiltered_ignores_position_limit_and_order() {
        let mut q = EventQuery::all();
        q.after_position = Some(3);
        q.limit = Some(2);
        q.order = Order::Descending;
        assert!(is_unfiltered(&q));
        q.tenant = Some("t".into());
        assert!(!is_unfiltered(&q));
    }
}
