//! The mapping of an [`Envelope`] to a CloudEvents 1.0 structured JSON event and back.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::depth::{self, MAX_PAYLOAD_DEPTH};
use super::{Envelope, EventMetadata, ForeignAttributes, JSON_MEDIA_TYPE, uuid_of_cloudevent_id};
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
    map.serialize_entry("id", &env.cloudevent_id())?;
    map.serialize_entry("source", &env.source)?;
    map.serialize_entry("type", env.event_type.as_str())?;
    if let Some(subject) = &env.subject {
        map.serialize_entry("subject", subject)?;
    }
    if let Some(time) = env.cloudevent_time() {
        map.serialize_entry("time", &time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))?;
    }
    if let Some(schema) = env.dataschema() {
        map.serialize_entry("dataschema", &schema)?;
    }
    map.serialize_entry("datacontenttype", env.datacontenttype())?;
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
    let cloudevent_id = require_string(attrs, "id")?;
    if cloudevent_id.is_empty() {
        return Err("attribute `id` is empty; CloudEvents requires a non-empty id, unique within its source".to_owned());
    }
    let source = require_string(attrs, "source")?;
    if source.is_empty() {
        return Err("attribute `source` is empty".to_owned());
    }
    // Any non-empty string is a CloudEvents id. A UUID is the envelope id itself; any other
    // string maps to a UUID derived from it and the source, and is kept to be written back.
    let id = uuid_of_cloudevent_id(&source, &cloudevent_id);
    let mut foreign = ForeignAttributes::default();
    if cloudevent_id != id.hyphenated().to_string() {
        foreign.id = Some(cloudevent_id);
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
        None => {
            // The envelope needs a time (stores order by it): the time of reading, to the
            // microsecond every store keeps, while the document's lack of one is kept.
            foreign.no_time = true;
            Utc::now().trunc_subsecs(6)
        }
    };
    if let Some(ct) = take_string(attrs, "datacontenttype")? {
        if !is_json_media_type(&ct) {
            return Err(not_json_message(&ct));
        }
        if ct != JSON_MEDIA_TYPE {
            foreign.datacontenttype = Some(ct);
        }
    }
    if attrs.contains_key("data_base64") {
        return Err("binary payloads (`data_base64`) are not supported; send JSON `data`".to_owned());
    }
    let dataschema = take_string(attrs, "dataschema")?;
    if dataschema.as_deref() == Some("") {
        return Err("attribute `dataschema` is empty; a document without a schema leaves it out".to_owned());
    }
    let version = take_string(attrs, ext::SCHEMA_VERSION)?.map(Cow::Owned);
    // This crate's own documents carry the dataschema it derives from the name and version:
    // only another one, or its absence where this crate would write one, is kept.
    let ours = version.as_ref().map(|v| super::our_dataschema(event_type.as_str(), v));
    match (dataschema, ours) {
        (Some(theirs), Some(ours)) if theirs == ours => {}
        (Some(theirs), _) => foreign.dataschema = Some(theirs),
        (None, Some(_)) => foreign.no_dataschema = true,
        (None, None) => {}
    }
    let mut metadata = EventMetadata {
        correlation_id: take_string(attrs, ext::CORRELATION_ID)?,
        causation_id: take_string(attrs, ext::CAUSATION_ID)?,
        tenant: take_string(attrs, ext::TENANT)?,
        actor: take_string(attrs, ext::ACTOR)?,
        traceparent: take_string(attrs, ext::TRACEPARENT)?,
        replay: false,
        extensions: BTreeMap::new(),
        cloudevent: (!foreign.is_empty()).then(|| Box::new(foreign)),
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

/// Whether `media_type` names JSON, as CloudEvents reads `datacontenttype`:
/// `application/json`, `text/json` or any `TYPE/SUBTYPE+json`, in any case, with or without
/// parameters (`application/json; charset=utf-8`).
pub(crate) fn is_json_media_type(media_type: &str) -> bool {
    // The essence is what comes before the parameters; names are case-insensitive.
    let essence = media_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let token = |s: &str| !s.is_empty() && !s.bytes().any(|b| b.is_ascii_whitespace() || b == b'/');
    if !token(kind) || !token(subtype) {
        return false;
    }
    matches!((kind, subtype), ("application", "json") | ("text", "json"))
        || subtype.strip_suffix("+json").is_some_and(|structure| !structure.is_empty())
}

/// Why a `datacontenttype` that is not JSON is refused, and what to send instead.
fn not_json_message(media_type: &str) -> String {
    format!(
        "datacontenttype `{media_type}` is not a JSON media type; only JSON payloads are supported: send `data` as \
         JSON with `application/json`, `text/json` or a `+json` type (such as `application/cloudevents+json`)"
    )
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
    if let Some(foreign) = env.metadata.cloudevent.as_deref() {
        if foreign.id.as_deref() == Some("") {
            return Err(invalid(
                "the CloudEvents id kept in the metadata (`cloudevent.id`) is empty; remove it to write the event's UUID".into(),
            ));
        }
        if foreign.dataschema.as_deref() == Some("") {
            return Err(invalid(
                "the dataschema kept in the metadata (`cloudevent.dataschema`) is empty; remove it or name a schema URI"
                    .into(),
            ));
        }
        if let Some(ct) = &foreign.datacontenttype
            && !is_json_media_type(ct)
        {
            return Err(invalid(format!(
                "{} (kept in the metadata as `cloudevent.datacontenttype`)",
                not_json_message(ct)
            )));
        }
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
    use crate::envelope::{Event, cloudevent_uuid};
    use serde_json::json;
    use uuid::Uuid;

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
            ("id", json!(""), "attribute `id` is empty"),
            ("id", json!(7), "must be a string"),
            ("dataschema", json!(""), "attribute `dataschema` is empty"),
            ("time", json!("yesterday"), "RFC 3339"),
            ("datacontenttype", json!("text/plain"), "is not a JSON media type"),
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

    #[test]
    fn every_json_media_type_is_accepted_in_any_case_and_with_parameters() {
        for ct in [
            "application/json",
            "text/json",
            "application/cloudevents+json",
            "application/vnd.example.user+json",
            "Application/JSON",
            "TEXT/Json",
            "application/json; charset=utf-8",
            "text/json;charset=UTF-8",
            "application/problem+json ; charset=utf-8",
        ] {
            assert!(is_json_media_type(ct), "{ct}");
            let doc = json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "datacontenttype": ct, "data": {"a": 1}});
            let event = Event::from_cloudevent(doc).unwrap_or_else(|e| panic!("{ct}: {e}"));
            assert_eq!(event.datacontenttype(), ct);
            assert_eq!(event.data, json!({"a": 1}));
            let back = event.to_cloudevent().unwrap();
            assert_eq!(back["datacontenttype"], ct, "written back as sent");
        }
    }

    #[test]
    fn media_types_that_are_not_json_are_refused_with_what_to_send() {
        for ct in [
            "text/plain",
            "application/xml",
            "application/octet-stream",
            "json",
            "application/jsonx",
            "application/+json",
            "/json",
            "application/",
            "",
            "text/plain; profile=application/json",
        ] {
            assert!(!is_json_media_type(ct), "{ct}");
            let doc = json!({"specversion": "1.0", "id": "1", "source": "/x", "type": "t", "datacontenttype": ct});
            let err = Event::from_cloudevent(doc).unwrap_err().to_string();
            assert!(err.contains(&format!("datacontenttype `{ct}` is not a JSON media type")), "{ct}: {err}");
            assert!(err.contains("application/json"), "says what to send: {err}");
        }
        // One set by hand on an event is refused when the event is written.
        let mut event = Event::new("t");
        event.metadata.cloudevent =
            Some(Box::new(ForeignAttributes { datacontenttype: Some("text/plain".into()), ..Default::default() }));
        let err = event.to_cloudevent().unwrap_err().to_string();
        assert!(err.contains("datacontenttype `text/plain` is not a JSON media type"), "{err}");
    }

    #[test]
    fn a_foreign_document_is_written_back_as_the_producer_wrote_it() {
        let doc = json!({
            "specversion": "1.0",
            "id": "A234-1234-1234",
            "source": "https://example.com/producer",
            "type": "com.example.someevent",
            "dataschema": "https://example.com/schemas/some-event.json",
            "datacontenttype": "text/json",
            "region": "eu",
            "data": {"k": "v"},
        });
        let event = Event::from_cloudevent(doc.clone()).unwrap();
        assert_eq!(event.id, cloudevent_uuid("https://example.com/producer", "A234-1234-1234"));
        assert_eq!(event.id.get_version_num(), 5);
        assert_eq!(event.cloudevent_id(), "A234-1234-1234");
        assert_eq!(event.dataschema().as_deref(), Some("https://example.com/schemas/some-event.json"));
        assert_eq!(event.datacontenttype(), "text/json");
        assert_eq!(event.cloudevent_time(), None);
        assert_eq!(event.metadata.extensions.get("region"), Some(&json!("eu")), "extensions stay extensions");
        assert_eq!(event.to_cloudevent().unwrap(), doc, "the same document, with no `time` made up");
        let bytes = event.to_cloudevent_bytes().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), doc);

        // What the metadata document (a store's `metadata` column) holds: the kept
        // attributes once, under `cloudevent`, and the extensions apart from them.
        let stored = serde_json::to_value(&event.metadata).unwrap();
        assert_eq!(
            stored["cloudevent"],
            json!({
                "id": "A234-1234-1234",
                "dataschema": "https://example.com/schemas/some-event.json",
                "datacontenttype": "text/json",
                "no_time": true,
            })
        );
        assert_eq!(stored["extensions"], json!({"region": "eu"}));
        let read: EventMetadata = serde_json::from_value(stored).unwrap();
        assert_eq!(read, event.metadata);
    }

    #[test]
    fn our_own_documents_keep_nothing_extra_and_old_metadata_reads() {
        let ours = Event::new("user.created").with_version("1.0.0").with_data(json!({"a": 1}));
        let back = Event::from_cloudevent(ours.to_cloudevent().unwrap()).unwrap();
        assert_eq!(back.metadata.cloudevent, None);
        assert_eq!(back.id, ours.id);
        assert_eq!(back.cloudevent_time(), Some(ours.timestamp));
        assert!(!serde_json::to_string(&back.metadata).unwrap().contains("cloudevent"));
        // Metadata written before these attributes existed reads as it did.
        let old: EventMetadata = serde_json::from_str(r#"{"correlation_id":"c","causation_id":null,"actor":null,"tenant":null,"traceparent":null,"replay":false,"extensions":{}}"#).unwrap();
        assert_eq!(old.cloudevent, None);
        assert_eq!(old.correlation_id.as_deref(), Some("c"));
    }

    #[test]
    fn a_versioned_document_without_a_dataschema_gets_none_and_a_uuid_in_another_form_is_kept() {
        let id = Uuid::now_v7();
        let upper = id.hyphenated().to_string().to_uppercase();
        let doc = json!({"specversion": "1.0", "id": upper, "source": "/x", "type": "t", "schemaversion": "2.0.0",
            "time": "2026-01-01T12:00:00Z", "datacontenttype": "application/json", "data": {"a": 1}});
        let event = Event::from_cloudevent(doc.clone()).unwrap();
        assert_eq!(event.id, id, "a UUID is the envelope id whatever its form");
        assert_eq!(event.cloudevent_id(), upper);
        assert_eq!(event.dataschema(), None);
        assert_eq!(event.to_cloudevent().unwrap(), doc);
    }

    #[test]
    fn the_foreign_id_is_deterministic_per_source_and_id_and_dropped_once_it_no_longer_names_the_event() {
        let doc = |source: &str| json!({"specversion": "1.0", "id": "A234-1234-1234", "source": source, "type": "t"});
        let a = Event::from_cloudevent(doc("/a")).unwrap();
        assert_eq!(a.id, Event::from_cloudevent(doc("/a")).unwrap().id);
        assert_ne!(a.id, Event::from_cloudevent(doc("/b")).unwrap().id);
        // The source and id cannot run into each other.
        assert_ne!(cloudevent_uuid("/a", "b"), cloudevent_uuid("/ab", ""));
        // The namespace is the UUIDv5 of its URN in the URL namespace.
        assert_eq!(
            super::super::CLOUDEVENT_ID_NAMESPACE,
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:better-auth-events:cloudevents:id")
        );
        // Metadata copied onto another event does not give it the foreign id.
        let other = Event::new("t").with_metadata(a.metadata.clone());
        assert_eq!(other.cloudevent_id(), other.id.to_string());
        let moved = a.clone().with_source("/elsewhere");
        assert_eq!(moved.cloudevent_id(), moved.id.to_string());
        assert_eq!(a.to_cloudevent().unwrap()["id"], "A234-1234-1234");
    }
}
