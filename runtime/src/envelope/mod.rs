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
