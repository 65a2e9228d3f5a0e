//! The [`Envelope`] every event travels in, the dynamic [`Event`], and their mapping to
//! CloudEvents 1.0 structured JSON.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{EventData, TypedEvent};
use crate::event_type::EventType;

/// The source of events whose emitter set none (CloudEvents `source`, a URI reference).
pub const DEFAULT_SOURCE: &str = "/better-auth-events";

/// The CloudEvents spec version this crate writes and reads.
pub const SPEC_VERSION: &str = "1.0";

/// Names of the CloudEvents extension attributes the envelope maps to named fields.
pub mod ext {
    /// The schema version of the payload.
    pub const SCHEMA_VERSION: &str = "schemaversion";
    /// The correlation id.
    pub const CORRELATION_ID: &str = "correlationid";
    /// The causation id.
    pub const CAUSATION_ID: &str = "causationid";
    /// The tenant.
    pub const TENANT: &str = "tenant";
    /// The actor.
    pub const ACTOR: &str = "actor";
    /// W3C trace context (CloudEvents distributed tracing extension).
    pub const TRACEPARENT: &str = "traceparent";
    /// Set on events delivered by a replay.
    pub const REPLAY: &str = "replay";
}

/// Metadata carried with every event, mapped to CloudEvents extension attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventMetadata {
    /// Groups every event of one workflow (a sign-up, a login); CloudEvents `correlationid`.
    pub correlation_id: Option<String>,
    /// The id of the event that caused this one; CloudEvents `causationid`.
    pub causation_id: Option<String>,
    /// Who acted (a user id, a service name); CloudEvents `actor`.
    pub actor: Option<String>,
    /// The tenant the event belongs to; CloudEvents `tenant`.
    pub tenant: Option<String>,
    /// W3C trace context; CloudEvents `traceparent`.
    pub traceparent: Option<String>,
    /// Set on events delivered by a replay, so handlers with side effects can skip them.
    pub replay: bool,
    /// Any other CloudEvents extension attribute.
    pub extensions: BTreeMap<String, Value>,
}

/// An event with its header: id, type, source, subject, time, metadata and payload.
///
/// `Envelope<T>` carries a typed payload, [`Event`] (= `Envelope<Value>`) a dynamic one,
/// and `Envelope<dyn EventData>` either, as middleware sees it. It serializes to a
/// CloudEvents 1.0 structured JSON event.
#[derive(Clone)]
#[non_exhaustive]
pub struct Envelope<T: ?Sized = Value> {
    /// Unique id, a UUIDv7 (time-ordered); CloudEvents `id`.
    pub id: Uuid,
    /// Event name; CloudEvents `type`.
    pub event_type: EventType,
    /// Who produced it, a URI reference; CloudEvents `source`.
    pub source: Cow<'static, str>,
    /// What it is about (a user id, a session id); CloudEvents `subject`.
    pub subject: Option<String>,
    /// When it happened; CloudEvents `time`.
    pub timestamp: DateTime<Utc>,
    /// Schema version of the payload; CloudEvents extension `schemaversion`.
    pub version: Option<Cow<'static, str>>,
    /// Correlation, causation, tenant, actor, trace context and other extensions.
    pub metadata: EventMetadata,
    /// The payload; CloudEvents `data`.
    pub data: T,
}

/// A dynamic event: a name and a JSON payload, as in `Event::new("user.created")`.
pub type Event = Envelope<Value>;

/// Bits of a [`next_stamp`] below its millisecond: the per-millisecond counter of UUIDv7
/// "method 1" (RFC 9562 §6.2), 12 of them in `rand_a` and 10 at the top of `rand_b`.
const COUNTER_BITS: u32 = 22;

/// The last id stamp given in this process: Unix milliseconds above [`COUNTER_BITS`], the
/// counter below. One atomic, so making an id takes no lock. 42 bits of milliseconds last
/// until the year 2109.
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

/// The next id stamp at or after `millis`: strictly above every stamp given before in this
/// process, on every thread. A new millisecond starts its counter at a random value below
/// half its range (unguessable, room to count); within one millisecond, or when the clock
/// steps back, the counter goes on, and when it overflows it carries into the millisecond,
/// which runs ahead of the clock until the clock catches up. `seed` supplies the random start;
/// `stamps` is [`LAST_STAMP`] but for tests.
fn next_stamp(stamps: &AtomicU64, millis: u64, seed: impl Fn() -> u64) -> u64 {
    let floor = millis << COUNTER_BITS;
    let mut last = stamps.load(Ordering::Relaxed);
    loop {
        let next = if floor > last { floor | (seed() & ((1 << (COUNTER_BITS - 1)) - 1)) } else { last + 1 };
        match stamps.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(now) => last = now,
        }
    }
}

/// The UUIDv7 of a stamp: its millisecond, its counter, then 52 random bits, in the layout
/// of RFC 9562 §5.7, built as two words (through the byte-wise `uuid::Builder` it took
/// about a fifth of the time of making an id and its timestamp).
fn uuid_of_stamp(stamp: u64, random: u64) -> Uuid {
    let counter = stamp & ((1 << COUNTER_BITS) - 1);
    // unix_ts_ms (48 bits), ver (0b0111), rand_a (12 bits): the counter's high 12 bits.
    let high = ((stamp >> COUNTER_BITS) << 16) | (0x7 << 12) | (counter >> 10);
    // var (0b10), rand_b (62 bits): the counter's low 10 bits, then 52 random ones.
    let low = (0b10 << 62) | ((counter & 0x3ff) << 52) | (random & ((1 << 52) - 1));
    Uuid::from_u64_pair(high, low)
}

/// A fresh time-ordered event id (UUIDv7). Ids made in this process increase strictly, on
/// every thread, even within one millisecond or when the system clock steps back.
pub fn new_event_id() -> Uuid {
    id_and_time().0
}

thread_local! {
    /// The last day (since the Unix epoch) this thread turned into a date: the calendar
    /// arithmetic is then done once a day, not once an event.
    static DAY: Cell<(u64, NaiveDate)> = const { Cell::new((u64::MAX, NaiveDate::MIN)) };
}

/// The UTC time `secs` seconds and `nanos` nanoseconds after the Unix epoch.
fn utc_at(secs: u64, nanos: u32) -> DateTime<Utc> {
    let (day, second) = (secs / 86_400, (secs % 86_400) as u32);
    let date = DAY.with(|cached| match cached.get() {
        (d, date) if d == day => Some(date),
        _ => {
            let date = DateTime::from_timestamp(i64::try_from(day * 86_400).ok()?, 0)?.date_naive();
            cached.set((day, date));
            Some(date)
        }
    });
    date.zip(NaiveTime::from_num_seconds_from_midnight_opt(second, nanos))
        .map(|(date, time)| date.and_time(time).and_utc())
        .unwrap_or_default()
}

/// A fresh id and the current time (microseconds, what every store keeps), from one
/// reading of the clock.
fn id_and_time() -> (Uuid, DateTime<Utc>) {
    let now = unix_nanos();
    let (seconds, nanos) = (now / 1_000_000_000, (now % 1_000_000_000) as u32 / 1000 * 1000);
    let stamp = next_stamp(&LAST_STAMP, now / 1_000_000, rand::random::<u64>);
    (uuid_of_stamp(stamp, rand::random()), utc_at(seconds, nanos))
}

/// How long a thread counts time on from its last reading of the system clock before it
/// reads it again. The CPU's counter drifts from the system clock by some parts per
/// million, nanoseconds over this span, far below the microsecond an event's time keeps;
/// a step of the system clock (NTP, an operator) shows in event times within this span.
const RESYNC_NANOS: u64 = 1_000_000;

/// The CPU's time-stamp counter, calibrated once per process (under a millisecond; the bus
/// builder does it, so no emit waits for it). Where the CPU has no invariant counter, it
/// reads the monotonic clock instead.
static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();

thread_local! {
    /// This thread's last reading of the system clock: the counter then, and Unix
    /// nanoseconds. `(0, 0)` until the first reading.
    static ANCHOR: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Calibrates the counter behind event times now, so that no later event waits for it.
pub(crate) fn warm_clock() {
    COUNTER.get_or_init(quanta::Clock::new);
}

/// The current time in nanoseconds since the Unix epoch: the system clock, read at most
/// once per [`RESYNC_NANOS`] on each thread and counted on from there with the CPU's
/// counter (about 10 ns a reading here, against about 33 ns for `SystemTime::now`).
fn unix_nanos() -> u64 {
    let counter = COUNTER.get_or_init(quanta::Clock::new);
    ANCHOR.with(|anchor| counted_on(counter, anchor, system_unix_nanos))
}

/// The system clock in nanoseconds since the Unix epoch (0 before it; saturating in 2554).
fn system_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// [`unix_nanos`] over a given counter, anchor and system clock (tests use a mock counter):
/// the anchor's time plus the counter's advance since, or a fresh reading of `system` when
/// the anchor is unset, older than [`RESYNC_NANOS`], or ahead of the counter (which then
/// went back: another CPU's counter, or a mock).
fn counted_on(counter: &quanta::Clock, anchor: &Cell<(u64, u64)>, system: impl FnOnce() -> u64) -> u64 {
    let raw = counter.raw();
    let (at, unix) = anchor.get();
    if unix != 0 && raw >= at {
        let elapsed = counter.delta_as_nanos(at, raw);
        if elapsed < RESYNC_NANOS {
            return unix + elapsed;
        }
    }
    let unix = system();
    anchor.set((raw, unix));
    unix
}

impl Event {
    /// A dynamic event named `event_type` with a `null` payload, a fresh id and the current time.
    pub fn new(event_type: impl Into<EventType>) -> Self {
        Envelope::with_type(event_type.into(), None, Value::Null)
    }

    /// Sets the JSON payload.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Sets the schema version the payload follows.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(Cow::Owned(version.into()));
        self
    }

    /// Reads the payload as the typed event `T` (the name must match `T::NAME`). A payload
    /// of an older schema version is upcast through the chain of `#[event(previous = ..)]`.
    pub fn into_typed<T: TypedEvent>(self) -> Result<Envelope<T>> {
        if self.event_type.as_str() != T::NAME {
            return Err(Error::Validation {
                event_type: self.event_type.to_string(),
                message: format!("expected an event named `{}`", T::NAME),
            });
        }
        let data: T = crate::schema::upcast::read_as(self.version.as_deref(), self.data)?;
        Ok(Envelope {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            subject: self.subject,
            timestamp: self.timestamp,
            version: Some(Cow::Borrowed(T::VERSION)),
            metadata: self.metadata,
            data,
        })
    }
}

impl<T: TypedEvent> Envelope<T> {
    /// A fresh envelope around a typed payload: a new id, the current time, the event's
    /// name and version. (`Event::new` takes a name; this takes the typed payload.)
    #[inline]
    pub fn of(data: T) -> Self {
        Envelope::with_type(T::event_type(), Some(Cow::Borrowed(T::VERSION)), data)
    }
}

impl<T: TypedEvent> From<T> for Envelope<T> {
    fn from(data: T) -> Self {
        Envelope::of(data)
    }
}

impl<T> Envelope<T> {
    #[inline]
    pub(crate) fn with_type(event_type: EventType, version: Option<Cow<'static, str>>, data: T) -> Self {
        // Microseconds: what every store keeps, so a stored event reads back equal.
        let (id, timestamp) = id_and_time();
        Self {
            id,
            event_type,
            source: Cow::Borrowed(DEFAULT_SOURCE),
            subject: None,
            timestamp,
            version,
            metadata: EventMetadata::default(),
            data,
        }
    }

    /// Sets the source (CloudEvents `source`).
    pub fn with_source(mut self, source: impl Into<Cow<'static, str>>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the subject (CloudEvents `subject`).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.causation_id = Some(id.into());
        self
    }

    /// Sets the tenant.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.metadata.tenant = Some(tenant.into());
        self
    }

    /// Sets the actor.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.metadata.actor = Some(actor.into());
        self
    }

    /// Sets the W3C `traceparent`.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.metadata.traceparent = Some(traceparent.into());
        self
    }

    /// Sets an event's metadata wholesale.
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The same header around another payload.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Envelope<U> {
        Envelope {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            subject: self.subject,
            timestamp: self.timestamp,
            version: self.version,
            metadata: self.metadata,
            data: f(self.data),
        }
    }
}

impl<T: ?Sized> Envelope<T> {
    /// The same header with a borrowed payload.
    fn header_with<U>(&self, data: U) -> Envelope<U> {
        Envelope {
            id: self.id,
            event_type: self.event_type.clone(),
            source: self.source.clone(),
            subject: self.subject.clone(),
            timestamp: self.timestamp,
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            data,
        }
    }

    /// The dataschema URI of a versioned event: `urn:better-auth-events:schema:NAME:VERSION`.
    pub fn dataschema(&self) -> Option<String> {
        self.version.as_ref().map(|v| format!("urn:better-auth-events:schema:{}:{}", self.event_type, v))
    }

    /// The stable delivery id of this event for one handler: a UUIDv5 of the event id and
    /// the handler name. Retries and redeliveries of the same event to the same handler
    /// share it, so a handler can use it as an idempotency key.
    pub fn delivery_id(&self, handler: &str) -> Uuid {
        Uuid::new_v5(&self.id, handler.as_bytes())
    }
}

impl<T: EventData + Sized> Envelope<T> {
    /// This envelope with its payload seen as JSON: typed ⇄ dynamic conversion.
    pub fn to_dynamic(&self) -> Result<Event> {
        let data = self
            .data
            .to_json()
            .map_err(|source| Error::Serialization { event_type: self.event_type.to_string(), source })?;
        Ok(self.header_with(data))
    }
}

impl Envelope<dyn EventData> {
    /// This envelope with its payload seen as JSON.
    pub fn to_dynamic(&self) -> Result<Event> {
        let data = self
            .data
            .to_json()
            .map_err(|source| Error::Serialization { event_type: self.event_type.to_string(), source })?;
        Ok(self.header_with(data))
    }

    /// The envelope as `Envelope<T>`, if its payload is a `T`.
    #[inline]
    pub fn downcast_ref<T: EventData>(&self) -> Option<&Envelope<T>> {
        if self.data.is::<T>() {
            let ptr = self as *const Envelope<dyn EventData> as *const Envelope<T>;
            // SAFETY: an `Envelope<dyn EventData>` only comes into being by unsizing an
            // `Envelope<U>` with `U: Sized`, which keeps the layout of `Envelope<U>`; the
            // check above proved `U == T`, so the data pointer points to a valid
            // `Envelope<T>` that lives as long as `self` (the same cast `Box<dyn Any>`
            // downcasting makes).
            Some(unsafe { &*ptr })
        } else {
            None
        }
    }

    /// The envelope as a mutable `Envelope<T>`, if its payload is a `T`.
    pub fn downcast_mut<T: EventData>(&mut self) -> Option<&mut Envelope<T>> {
        if self.data.is::<T>() {
            let ptr = self as *mut Envelope<dyn EventData> as *mut Envelope<T>;
            // SAFETY: as in `downcast_ref`; the exclusive borrow of `self` is handed on.
            Some(unsafe { &mut *ptr })
        } else {
            None
        }
    }

    /// The payload as JSON with every `#[event(pii)]` field replaced by `"[REDACTED]"`.
    pub fn redacted_data(&self) -> Result<Value> {
        let mut value = self
            .data
            .to_json()
            .map_err(|source| Error::Serialization { event_type: self.event_type.to_string(), source })?;
        let keys: Cow<'_, [&str]> = if self.data.is_dynamic() {
            Cow::Owned(crate::event::registered_pii_fields(self.event_type.as_str()))
        } else {
            Cow::Borrowed(self.data.pii_fields())
        };
        if let Value::Object(map) = &mut value {
            for key in keys.iter() {
                // An absent value (`null`) stays visible: it holds no personal data.
                if let Some(v) = map.get_mut(*key)
                    && !v.is_null()
                {
                    *v = Value::String("[REDACTED]".to_owned());
                }
            }
        }
        Ok(value)
    }
}

impl<T: ?Sized> fmt::Debug for Envelope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payload is left out: it may hold personal data. Use `redacted_data()`.
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("source", &self.source)
            .field("subject", &self.subject)
            .field("timestamp", &self.timestamp)
            .field("version", &self.version)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------
// CloudEvents 1.0 structured JSON
// ---------------------------------------------------------------------------------------

/// The attributes a CloudEvents document may carry besides extensions.
const CORE_ATTRIBUTES: &[&str] =
    &["specversion", "id", "source", "type", "subject", "time", "dataschema", "datacontenttype", "data", "data_base64"];

fn serialize_envelope<S: serde::Serializer, D: Serialize + ?Sized>(
    env: &Envelope<impl ?Sized>,
    data: &D,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let m = &env.metadata;
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("specversion", SPEC_VERSION)?;
    map.serialize_entry("id", &env.id)?;
    map.serialize_entry("source", &env.source)?;
    map.serialize_entry("type", env.event_type.as_str())?;
    if let Some(subject) = &env.subject {
        map.serialize_entry("subject", subject)?;
    }
    map.serialize_entry("time", &env.timestamp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))?;
    if let Some(schema) = env.dataschema() {
        map.serialize_entry("dataschema", &schema)?;
    }
    map.serialize_entry("datacontenttype", "application/json")?;
    if let Some(v) = &env.version {
        map.serialize_entry(ext::SCHEMA_VERSION, v)?;
    }
    for (key, value) in [
        (ext::CORRELATION_ID, &m.correlation_id),
        (ext::CAUSATION_ID, &m.causation_id),
        (ext::TENANT, &m.tenant),
        (ext::ACTOR, &m.actor),
        (ext::TRACEPARENT, &m.traceparent),
    ] {
        if let Some(v) = value {
            map.serialize_entry(key, v)?;
        }
    }
    if m.replay {
        map.serialize_entry(ext::REPLAY, &true)?;
    }
    for (key, value) in &m.extensions {
        map.serialize_entry(key, value)?;
    }
    map.serialize_entry("data", data)?;
    map.end()
}

impl<T: Serialize> Serialize for Envelope<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_envelope(self, &self.data, serializer)
    }
}

impl Serialize for Envelope<dyn EventData> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_envelope(self, self.data.as_serialize(), serializer)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut attrs = BTreeMap::<String, Value>::deserialize(deserializer)?;
        let env = envelope_from_attributes(&mut attrs).map_err(D::Error::custom)?;
        let data = attrs.remove("data").unwrap_or(Value::Null);
        let data = T::deserialize(data).map_err(D::Error::custom)?;
        Ok(env.map(|()| data))
    }
}

fn take_string(attrs: &mut BTreeMap<String, Value>, key: &str) -> std::result::Result<Option<String>, String> {
    match attrs.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("attribute `{key}` must be a string, found {other}")),
    }
}

fn require_string(attrs: &mut BTreeMap<String, Value>, key: &str) -> std::result::Result<String, String> {
    take_string(attrs, key)?.ok_or_else(|| format!("required attribute `{key}` is missing"))
}

/// Reads the header attributes; leaves `data` (and nothing else) in `attrs`.
fn envelope_from_attributes(attrs: &mut BTreeMap<String, Value>) -> std::result::Result<Envelope<()>, String> {
    let spec = require_string(attrs, "specversion")?;
    if spec != SPEC_VERSION {
        return Err(format!("unsupported specversion `{spec}`; only `{SPEC_VERSION}` is supported"));
    }
    let id = require_string(attrs, "id")?;
    let id = Uuid::parse_str(&id).map_err(|e| format!("attribute `id` must be a UUID (`{id}`: {e})"))?;
    let source = require_string(attrs, "source")?;
    let event_type = EventType::from(require_string(attrs, "type")?);
    let subject = take_string(attrs, "subject")?;
    let timestamp = match take_string(attrs, "time")? {
        Some(t) => DateTime::parse_from_rfc3339(&t)
            .map_err(|e| format!("attribute `time` must be RFC 3339 (`{t}`: {e})"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    if let Some(ct) = take_string(attrs, "datacontenttype")?
        && !(ct == "application/json" || ct.ends_with("+json") || ct.starts_with("application/json;"))
    {
        return Err(format!("datacontenttype `{ct}` is not JSON; only JSON payloads are supported"));
    }
    if attrs.contains_key("data_base64") {
        return Err("binary payloads (`data_base64`) are not supported; send JSON `data`".to_owned());
    }
    let _dataschema = take_string(attrs, "dataschema")?;
    let version = take_string(attrs, ext::SCHEMA_VERSION)?.map(Cow::Owned);
    let mut metadata = EventMetadata {
        correlation_id: take_string(attrs, ext::CORRELATION_ID)?,
        causation_id: take_string(attrs, ext::CAUSATION_ID)?,
        tenant: take_string(attrs, ext::TENANT)?,
        actor: take_string(attrs, ext::ACTOR)?,
        traceparent: take_string(attrs, ext::TRACEPARENT)?,
        replay: false,
        extensions: BTreeMap::new(),
    };
    metadata.replay = match attrs.remove(ext::REPLAY) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => s == "true",
        Some(other) => return Err(format!("attribute `replay` must be a boolean, found {other}")),
    };
    let keys: Vec<String> = attrs.keys().filter(|k| !CORE_ATTRIBUTES.contains(&k.as_str())).cloned().collect();
    for key in keys {
        if let Some(v) = attrs.remove(&key) {
            metadata.extensions.insert(key, v);
        }
    }
    Ok(Envelope { id, event_type, source: Cow::Owned(source), subject, timestamp, version, metadata, data: () })
}

impl<T: Serialize> Envelope<T> {
    /// The CloudEvents 1.0 structured JSON document of this event.
    pub fn to_cloudevent(&self) -> Result<Value> {
        serde_json::to_value(self)
            .map_err(|source| Error::Serialization { event_type: self.event_type.to_string(), source })
    }

    /// The CloudEvents 1.0 structured JSON document, as bytes.
    pub fn to_cloudevent_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|source| Error::Serialization { event_type: self.event_type.to_string(), source })
    }
}

impl<T: DeserializeOwned> Envelope<T> {
    /// Reads a CloudEvents 1.0 structured JSON document.
    pub fn from_cloudevent(value: Value) -> Result<Self> {
        serde_json::from_value(value).map_err(|e| Error::CloudEvent(e.to_string()))
    }

    /// Reads a CloudEvents 1.0 structured JSON document from bytes.
    pub fn from_cloudevent_slice(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::CloudEvent(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamps_increase_strictly_across_clock_steps_and_counter_overflow() {
        let stamps = AtomicU64::new(0);
        let max_seed = || u64::MAX;
        let first = next_stamp(&stamps, 1_000, max_seed);
        assert_eq!(first >> COUNTER_BITS, 1_000);
        assert_eq!(first & ((1 << COUNTER_BITS) - 1), (1 << (COUNTER_BITS - 1)) - 1, "seeded below half the range");
        // Same millisecond, then a clock step back: the counter goes on.
        assert_eq!(next_stamp(&stamps, 1_000, max_seed), first + 1);
        assert_eq!(next_stamp(&stamps, 990, max_seed), first + 2);
        // The counter overflows: it carries into the millisecond, which runs ahead.
        stamps.store((1_000 << COUNTER_BITS) | ((1 << COUNTER_BITS) - 1), Ordering::Relaxed);
        let carried = next_stamp(&stamps, 1_000, max_seed);
        assert_eq!((carried >> COUNTER_BITS, carried & ((1 << COUNTER_BITS) - 1)), (1_001, 0));
        assert_eq!(next_stamp(&stamps, 1_001, max_seed), carried + 1, "the clock has not caught up yet");
        // A later millisecond reseeds.
        let later = next_stamp(&stamps, 1_002, || 5);
        assert_eq!((later >> COUNTER_BITS, later & ((1 << COUNTER_BITS) - 1)), (1_002, 5));
    }

    #[test]
    fn a_stamp_maps_to_a_v7_uuid_keeping_its_millisecond_and_order() {
        let stamp = (1_700_000_000_123 << COUNTER_BITS) | 0x2a_5a5a;
        let id = uuid_of_stamp(stamp, u64::MAX);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().expect("v7").to_unix();
        assert_eq!((secs, nanos), (1_700_000_000, 123_000_000));
        // The counter sits right after the version and variant bits, above the random ones.
        let bits = id.as_u128();
        assert_eq!(((bits >> 64) & 0xfff) as u64, 0x2a_5a5a >> 10);
        assert_eq!(((bits >> 52) & 0x3ff) as u64, 0x2a_5a5a & 0x3ff);
        // Random bits never outweigh the counter: the next stamp sorts above whatever they are.
        assert!(uuid_of_stamp(stamp, u64::MAX) < uuid_of_stamp(stamp + 1, 0));
    }

    #[test]
    fn the_clock_counts_on_from_the_system_clock_and_rereads_it_every_millisecond() {
        let (counter, mock) = quanta::Clock::mock();
        let anchor = Cell::new((0, 0));
        let reads = Cell::new(0);
        let system = |at: u64| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                at
            }
        };
        mock.increment(5_000);
        assert_eq!(counted_on(&counter, &anchor, system(1_000_000_000)), 1_000_000_000, "first reading");
        mock.increment(RESYNC_NANOS - 1);
        assert_eq!(counted_on(&counter, &anchor, system(7)), 1_000_000_000 + RESYNC_NANOS - 1, "counted on");
        assert_eq!(reads.get(), 1, "no second reading within the span");
        mock.increment(1);
        assert_eq!(counted_on(&counter, &anchor, system(2_000_000_000)), 2_000_000_000, "the span is over");
        mock.increment(10);
        assert_eq!(counted_on(&counter, &anchor, system(7)), 2_000_000_010);
        mock.decrement(100);
        assert_eq!(counted_on(&counter, &anchor, system(3_000_000_000)), 3_000_000_000, "the counter went back");
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn event_times_follow_the_system_clock_on_every_thread() {
        let check = || {
            for round in 0..3 {
                // Anchor this thread's clock, then let the counter run a third of a span (the
                // event below is then timed by counting on, unless the thread was preempted
                // past the span, which makes it read the clock: right either way).
                Event::new("clock.anchor");
                let spin = std::time::Instant::now();
                while spin.elapsed() < std::time::Duration::from_nanos(RESYNC_NANOS / 3) {
                    std::hint::spin_loop();
                }
                let before = DateTime::<Utc>::from(std::time::SystemTime::now());
                let event = Event::new("clock.check");
                let after = DateTime::<Utc>::from(std::time::SystemTime::now());
                // Microseconds are kept, so `before` may be up to 1 µs later than the event;
                // the counter's drift over a span is nanoseconds.
                let slack = chrono::Duration::microseconds(2);
                assert!(event.timestamp + slack >= before && event.timestamp <= after + slack, "round {round}");
                let id_millis = event.id.get_timestamp().expect("v7").to_unix();
                let id_millis = id_millis.0 * 1000 + u64::from(id_millis.1 / 1_000_000);
                assert!(id_millis.abs_diff(event.timestamp.timestamp_millis() as u64) <= 1, "round {round}");
                std::thread::sleep(std::time::Duration::from_nanos(RESYNC_NANOS * 3 / 2));
            }
        };
        check();
        std::thread::spawn(check).join().expect("the other thread's times follow the clock too");
    }

    #[test]
    fn the_day_cache_gives_the_times_chrono_gives() {
        for secs in [0_u64, 86_399, 86_400, 951_782_400, 1_700_000_000, 4_102_444_799] {
            for nanos in [0, 999_999_000] {
                let expected = DateTime::from_timestamp(secs as i64, nanos).expect("in range");
                assert_eq!(utc_at(secs, nanos), expected, "{secs} s {nanos} ns");
            }
        }
    }

    #[test]
    fn ids_are_time_ordered_uuid_v7() {
        let a = Event::new("a");
        let b = Event::new("a");
        assert_eq!(a.id.get_version_num(), 7);
        assert!(a.id < b.id, "v7 ids sort by creation time");
    }

    #[test]
    fn dynamic_event_round_trips_through_cloudevents() {
        let e = Event::new("user.created")
            .with_data(json!({"user_id": "123"}))
            .with_subject("user/123")
            .with_correlation_id("c-1")
            .with_causation_id("e-0")
            .with_tenant("acme")
            .with_actor("admin")
            .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .with_version("1.0.0");
        let mut e = e;
        e.metadata.extensions.insert("region".into(), json!("eu"));
        let doc = e.to_cloudevent().unwrap();
        assert_eq!(doc["specversion"], "1.0");
        assert_eq!(doc["type"], "user.created");
        assert_eq!(doc["datacontenttype"], "application/json");
        assert_eq!(doc["dataschema"], "urn:better-auth-events:schema:user.created:1.0.0");
        assert_eq!(doc["correlationid"], "c-1");
        assert_eq!(doc["region"], "eu");
        assert_eq!(doc["data"]["user_id"], "123");
        let back = Event::from_cloudevent(doc).unwrap();
        assert_eq!(back.id, e.id);
        assert_eq!(back.event_type, EventType::UserCreated);
        assert_eq!(back.metadata, e.metadata);
        assert_eq!(back.timestamp, e.timestamp);
        assert_eq!(back.data, e.data);
        assert_eq!(back.subject.as_deref(), Some("user/123"));
        assert_eq!(back.version.as_deref(), Some("1.0.0"));
    }

    #[test]
    fn rejects_documents_that_are_not_cloudevents_1_0() {
        let good = json!({"specversion": "1.0", "id": Uuid::now_v7(), "source": "/x", "type": "t"});
        assert!(Event::from_cloudevent(good.clone()).is_ok());
        for (key, value, needle) in [
            ("specversion", json!("0.3"), "unsupported specversion"),
            ("id", json!("not-a-uuid"), "must be a UUID"),
            ("time", json!("yesterday"), "RFC 3339"),
            ("datacontenttype", json!("text/plain"), "not JSON"),
            ("type", json!(5), "must be a string"),
        ] {
            let mut doc = good.clone();
            doc[key] = value;
            let err = Event::from_cloudevent(doc).unwrap_err().to_string();
            assert!(err.contains(needle), "{key}: {err}");
        }
        let mut doc = good;
        doc.as_object_mut().unwrap().remove("source");
        let err = Event::from_cloudevent(doc).unwrap_err().to_string();
        assert!(err.contains("required attribute `source` is missing"), "{err}");
    }
}
