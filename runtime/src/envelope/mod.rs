//! The [`Envelope`] every event travels in and the dynamic [`Event`]; their CloudEvents
//! mapping is in `cloudevents`, the shared form of the async path in `shared`, and how deep
//! their JSON may nest in `depth`.

mod cloudevents;
pub(crate) mod depth;
mod shared;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use self::cloudevents::{SPEC_VERSION, ext};
pub(crate) use self::cloudevents::{check_attributes, document_bytes};
pub use self::depth::MAX_PAYLOAD_DEPTH;
pub(crate) use self::shared::SharedEvent;
use crate::clock::id_and_time;
use crate::error::{Error, Result};
use crate::event::{EventData, TypedEvent};
use crate::event_type::EventType;

/// The source of events whose emitter set none (CloudEvents `source`, a URI reference).
pub const DEFAULT_SOURCE: &str = "/better-auth-events";

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
    /// The core CloudEvents attributes of an event read from a document another producer
    /// wrote, kept as it wrote them so the event is written back the same (see
    /// [`ForeignAttributes`]); `None` for events of this crate. These are core attributes
    /// (`id`, `dataschema`, `datacontenttype`, `time`), not extensions: no extension
    /// attribute may take their names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudevent: Option<Box<ForeignAttributes>>,
}

/// The core CloudEvents attributes of an event read from a foreign document that the
/// envelope's own fields cannot carry as the producer wrote them. Kept in
/// [`EventMetadata::cloudevent`], so the stores keep them with the rest of the metadata, and
/// written back by [`Envelope::to_cloudevent`] and every other CloudEvents writer.
///
/// Read them through [`Envelope::cloudevent_id`], [`Envelope::dataschema`],
/// [`Envelope::datacontenttype`] and [`Envelope::cloudevent_time`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ForeignAttributes {
    /// The producer's `id`, when it is not the text of [`Envelope::id`]: any string that is
    /// not a UUID (the envelope's id is then [`cloudevent_uuid`] of the source and this
    /// string), or a UUID written in another form (upper case, braces, `urn:uuid:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The producer's `dataschema`, when it is not the one this crate derives from the
    /// event's name and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    /// Set when the producer sent no `dataschema` although the event carries a schema
    /// version: none is written back, where this crate would write its own.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_dataschema: bool,
    /// The producer's `datacontenttype`, when it is a JSON media type other than
    /// `application/json` (such as `text/json` or `application/json; charset=utf-8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// Set when the producer sent no `time`: [`Envelope::timestamp`] then holds the time the
    /// event was read, and no `time` is written back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_time: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ForeignAttributes {
    /// Whether there is nothing to keep: the document was one this crate would have written.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The namespace of [`cloudevent_uuid`]: the UUIDv5 of
/// `urn:better-auth-events:cloudevents:id` in the URL namespace.
const CLOUDEVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0xd6f824a2_21d2_54d6_b709_d532f00cb89a);

/// The [`Envelope::id`] of a CloudEvent whose `id` is not a UUID: a UUIDv5, in the
/// namespace `d6f824a2-21d2-54d6-b709-d532f00cb89a`, of the event's `source` and `id`.
///
/// CloudEvents identifies an event by its source and id together, so the same foreign
/// event always maps to the same UUID (and is stored once, delivered once per handler),
/// and two producers' events with the same id map to different ones. The name hashed is
/// the length of `source` in bytes as 8 big-endian bytes, then `source`, then `id` (UTF-8):
/// another program can compute the same UUID.
///
/// ```
/// use better_auth_events_runtime::{Event, cloudevent_uuid};
///
/// let doc = serde_json::json!({
///     "specversion": "1.0", "id": "A234-1234-1234", "source": "/mycontext", "type": "com.example.someevent",
/// });
/// let event = Event::from_cloudevent(doc)?;
/// assert_eq!(event.id, cloudevent_uuid("/mycontext", "A234-1234-1234"));
/// assert_eq!(event.cloudevent_id(), "A234-1234-1234");
/// # Ok::<(), better_auth_events_runtime::Error>(())
/// ```
pub fn cloudevent_uuid(source: &str, id: &str) -> Uuid {
    let mut name = Vec::with_capacity(8 + source.len() + id.len());
    name.extend_from_slice(&(source.len() as u64).to_be_bytes());
    name.extend_from_slice(source.as_bytes());
    name.extend_from_slice(id.as_bytes());
    Uuid::new_v5(&CLOUDEVENT_ID_NAMESPACE, &name)
}

/// The envelope id of a CloudEvent with this `source` and `id`: the UUID itself when `id`
/// is one (in any of the forms UUIDs are written in), else [`cloudevent_uuid`].
pub(crate) fn uuid_of_cloudevent_id(source: &str, id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_else(|_| cloudevent_uuid(source, id))
}

/// The dataschema this crate writes for an event of this name at this schema version.
pub(crate) fn our_dataschema(event_type: &str, version: &str) -> String {
    format!("urn:better-auth-events:schema:{event_type}:{version}")
}

/// The media type of a CloudEvent's `data` when the producer names none, and the one this
/// crate writes for its own events.
pub(crate) const JSON_MEDIA_TYPE: &str = "application/json";

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

    /// The foreign attributes kept in the metadata, if any.
    fn foreign(&self) -> Option<&ForeignAttributes> {
        self.metadata.cloudevent.as_deref()
    }

    /// The event's CloudEvents `dataschema`: the producer's, for an event read from a
    /// document that named one; else, for a versioned event,
    /// `urn:better-auth-events:schema:NAME:VERSION`, unless it was read from a document that
    /// named none.
    pub fn dataschema(&self) -> Option<String> {
        match self.foreign() {
            Some(ForeignAttributes { dataschema: Some(schema), .. }) => Some(schema.clone()),
            Some(ForeignAttributes { no_dataschema: true, .. }) => None,
            _ => self.version.as_ref().map(|v| our_dataschema(self.event_type.as_str(), v)),
        }
    }

    /// The event's CloudEvents `id`: the text of [`Envelope::id`], or, for an event read
    /// from a document whose `id` was not a UUID in its usual form, that `id` as the
    /// producer wrote it.
    ///
    /// The producer's `id` is kept only while it still names this event: it is the one
    /// [`Envelope::id`] was derived from, with the same `source` (see [`cloudevent_uuid`]).
    /// Give the event another id or source and this is the text of the new id.
    pub fn cloudevent_id(&self) -> Cow<'_, str> {
        match self.foreign().and_then(|f| f.id.as_deref()) {
            Some(id) if uuid_of_cloudevent_id(&self.source, id) == self.id => Cow::Borrowed(id),
            _ => Cow::Owned(self.id.to_string()),
        }
    }

    /// The media type of the event's payload, its CloudEvents `datacontenttype`: the
    /// producer's, for an event read from a document that named a JSON type other than
    /// `application/json`; else `application/json`.
    pub fn datacontenttype(&self) -> &str {
        self.foreign().and_then(|f| f.datacontenttype.as_deref()).unwrap_or(JSON_MEDIA_TYPE)
    }

    /// The event's CloudEvents `time`: [`Envelope::timestamp`], or `None` for an event read
    /// from a document without a `time` (whose `timestamp` is then the time it was read,
    /// and whose CloudEvents document has no `time` either).
    pub fn cloudevent_time(&self) -> Option<DateTime<Utc>> {
        if self.foreign().is_some_and(|f| f.no_time) { None } else { Some(self.timestamp) }
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
