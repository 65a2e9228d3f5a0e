//! The mapping of an [`Envelope`] to a CloudEvents 1.0 structured JSON event and back.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::depth::{self, MAX_PAYLOAD_DEPTH};
use super::{Envelope, EventMetadata};
use crate::error::{Error, Result};
use crate::event::EventData;
use crate::event_type::EventType;

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
    if source.is_empty() {
        return Err("attribute `source` is empty".to_owned());
    }
    let event_type = require_string(attrs, "type")?;
    if event_type.is_empty() {
        return Err("attribute `type` is empty".to_owned());
    }
    let event_type = EventType::from(event_type);
    let subject = take_string(attrs, "subject")?;
    if subject.as_deref() == Some("") {
        return Err("attribute `subject` is empty; a document without a subject leaves it out".to_owned());
    }
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
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(other) => {
            return Err(format!(
                "attribute `replay` must be a boolean (`true`, `false`, or those as strings), found {other}"
            ));
        }
    };
    let keys: Vec<String> = attrs.keys().filter(|k| !CORE_ATTRIBUTES.contains(&k.as_str())).cloned().collect();
    for key in keys {
        if let Some(v) = attrs.remove(&key) {
            metadata.extensions.insert(key, v);
        }
    }
    Ok(Envelope { id, event_type, source: Cow::Owned(source), subject, timestamp, version, metadata, data: () })
}

/// The attributes this crate writes besides the core ones: an extension of the same name
/// would shadow them.
const BUILT_IN_EXTENSIONS: &[&str] = &[
    ext::SCHEMA_VERSION,
    ext::CORRELATION_ID,
    ext::CAUSATION_ID,
    ext::TENANT,
    ext::ACTOR,
    ext::TRACEPARENT,
    ext::REPLAY,
];

/// Checks what CloudEvents requires of an event's attributes before it is written: a
/// non-empty `type` and `source`, a `subject` that is absent or non-empty, and extension
/// attributes named with lower-case ASCII letters and digits, none shadowing a core or
/// built-in attribute, each valued with a CloudEvents type (string, boolean, integer).
pub(crate) fn check_attributes<T: ?Sized>(env: &Envelope<T>) -> Result<()> {
    let event_type = env.event_type.as_str();
    let invalid = |message: String| Error::Validation { event_type: event_type.to_owned(), message };
    if event_type.is_empty() {
        return Err(invalid(
            "invalid event name: it is empty; use lowercase words separated by dots, such as `user.created`".into(),
        ));
    }
    if env.source.is_empty() {
        return Err(invalid("the source is empty; leave the default or name the producer, such as `/auth`".into()));
    }
    if env.subject.as_deref() == Some("") {
        return Err(invalid("the subject is empty; leave it out or name what the event is about".into()));
    }
    for (name, value) in &env.metadata.extensions {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(invalid(format!(
                "extension attribute `{name}` is not a CloudEvents attribute name: use lower-case ASCII letters and digits only"
            )));
        }
        if CORE_ATTRIBUTES.contains(&name.as_str()) || BUILT_IN_EXTENSIONS.contains(&name.as_str()) {
            return Err(invalid(format!(
                "extension attribute `{name}` would shadow the attribute of that name; rename it (the envelope's own fields carry `{name}`)"
            )));
        }
        let typed = match value {
            Value::String(_) | Value::Bool(_) => true,
            Value::Number(n) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
            _ => false,
        };
        if !typed {
            // The value is not quoted: it may be personal data.
            let kind = match value {
                Value::Null => "null",
                Value::Number(_) => "a number that is not a 32-bit integer",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
                Value::String(_) | Value::Bool(_) => "of another type",
            };
            return Err(invalid(format!(
                "extension attribute `{name}` is {kind}; CloudEvents attributes are strings, booleans or 32-bit integers (a URI, time or binary value is a string)"
            )));
        }
    }
    Ok(())
}

/// The CloudEvents document of `env` as bytes, when it can be read back: its payload nests
/// at most [`MAX_PAYLOAD_DEPTH`] levels and its extension attributes at most theirs (else
/// [`Error::Validation`], with the serialization stopped at the first level too deep).
pub(crate) fn document_bytes<T: ?Sized>(env: &Envelope<T>) -> Result<Vec<u8>>
where
    Envelope<T>: Serialize,
{
    let event_type = env.event_type.as_str();
    check_attributes(env)?;
    depth::check_extensions(event_type, &env.metadata)?;
    let mut out = Vec::with_capacity(256);
    // The document is one object around the payload: with the extensions in bounds, only
    // the payload can take it past the readable depth.
    depth::write_bounded(&mut out, env, depth::READABLE_DEPTH)
        .map_err(|e| e.into_error(event_type, "the payload", MAX_PAYLOAD_DEPTH))?;
    Ok(out)
}

impl<T: Serialize> Envelope<T> {
    /// The CloudEvents 1.0 structured JSON document of this event.
    ///
    /// A payload nested deeper than [`MAX_PAYLOAD_DEPTH`] levels (or an extension attribute
    /// nested too deep to be stored) is an [`Error::Validation`]: no JSON reader could read
    /// the document back.
    pub fn to_cloudevent(&self) -> Result<Value> {
        let event_type = self.event_type.as_str();
        check_attributes(self)?;
        depth::check_extensions(event_type, &self.metadata)?;
        // Measured by a serialization that stops at the limit, before the one that builds
        // the value and recurses once per level.
        depth::write_bounded(std::io::sink(), self, depth::READABLE_DEPTH)
            .map_err(|e| e.into_error(event_type, "the payload", MAX_PAYLOAD_DEPTH))?;
        serde_json::to_value(self).map_err(|source| Error::Serialization { event_type: event_type.to_owned(), source })
    }

    /// The CloudEvents 1.0 structured JSON document, as bytes.
    ///
    /// A payload nested deeper than [`MAX_PAYLOAD_DEPTH`] levels (or an extension attribute
    /// nested too deep to be stored) is an [`Error::Validation`]: no JSON reader could read
    /// the document back. The serialization stops at the first level too deep, so a value
    /// nested however deep is an error, not a stack overflow.
    pub fn to_cloudevent_bytes(&self) -> Result<Vec<u8>> {
        document_bytes(self)
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
    use crate::envelope::Event;
    use serde_json::json;

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
