//! CloudEvents protocol bindings: an event as a broker message, both ways.
//!
//! Two content modes exist in every binding: *structured* (the message body is the whole
//! CloudEvents JSON document, content type `application/cloudevents+json`) and *binary*
//! (the body is the payload, the attributes travel as message headers or fields). Each
//! broker writes one mode and reads both, so that messages plain clients publish are
//! consumed too.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::delivery::Delivery;
use crate::envelope::{Envelope, Event, SharedEvent, document_bytes};
use crate::error::{Error, Result};
use crate::event::EventData;

/// The content type of a structured-mode message.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// Whether `content_type` names the structured mode (`application/cloudevents+json`,
/// with or without parameters, in any case).
pub fn is_structured(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(STRUCTURED_CONTENT_TYPE)
}

/// One event as a broker publishes it: its CloudEvents JSON document, serialized once,
/// and what a transport needs to route and deduplicate it.
#[derive(Clone, Debug)]
pub struct Outgoing {
    event_id: Uuid,
    id: String,
    event_type: String,
    json: Arc<[u8]>,
}

impl Outgoing {
    /// The message of `env`.
    pub fn new(env: &Envelope<dyn EventData>) -> Result<Self> {
        let json: Arc<[u8]> = document_bytes(env)?.into();
        Ok(Self::from_parts(env, json))
    }

    /// The message of an event shared by the deliveries of one emit.
    pub(crate) fn of_shared(event: &SharedEvent) -> Result<Self> {
        Ok(Self::from_parts(&event.env, event.cloudevent()?))
    }

    /// The message of a delivery's event.
    pub(crate) fn of_delivery(delivery: &Delivery) -> Result<Self> {
        Self::of_shared(&delivery.event)
    }

    fn from_parts(env: &Envelope<dyn EventData>, json: Arc<[u8]>) -> Self {
        Self { event_id: env.id, id: env.cloudevent_id().into_owned(), event_type: env.event_type.to_string(), json }
    }

    /// The event's id in the bus and its stores.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// The CloudEvents `id`: what a broker deduplicates on.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The CloudEvents `type`: what a broker routes on.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The structured-mode body: the CloudEvents JSON document.
    pub fn structured(&self) -> &[u8] {
        &self.json
    }

    /// The structured-mode body, shared.
    pub fn structured_shared(&self) -> Arc<[u8]> {
        Arc::clone(&self.json)
    }

    /// The binary-mode attributes: every attribute but `data`, as strings (a boolean
    /// `true`, an integer `42`), in the order of the document.
    pub fn attributes(&self) -> Result<Vec<(String, String)>> {
        Ok(self.binary()?.attributes)
    }

    /// The binary-mode body: the payload's JSON (`null` when the event has none).
    pub fn data(&self) -> Result<Vec<u8>> {
        Ok(self.binary()?.body())
    }

    /// The document split for a binary-mode message: the attributes as text and the
    /// payload's JSON as the document holds it (copied, not parsed and written again).
    pub fn binary(&self) -> Result<BinaryParts> {
        let unreadable = |e: serde_json::Error| {
            Error::CloudEvent(format!("cannot read back the document of event `{}`: {e}", self.id))
        };
        let Members(members) = serde_json::from_slice(&self.json).map_err(unreadable)?;
        let mut attributes = Vec::with_capacity(members.len());
        let mut data = None;
        for (name, value) in members {
            if name == "data" {
                data = Some(value);
                continue;
            }
            // A string attribute is its text; any other value its JSON.
            let text = if value.get().starts_with('"') {
                serde_json::from_str::<String>(value.get()).map_err(unreadable)?
            } else {
                value.get().to_owned()
            };
            attributes.push((name, text));
        }
        Ok(BinaryParts { attributes, data })
    }
}

/// A CloudEvents document split for a binary-mode message ([`Outgoing::binary`]).
#[derive(Debug)]
pub struct BinaryParts {
    /// Every attribute but `data`, as text (a string as is, a boolean `true`, an integer
    /// `42`), in the order of the document.
    pub attributes: Vec<(String, String)>,
    /// The payload's JSON text, as the document holds it; `None` when it has no `data`.
    pub data: Option<Box<RawValue>>,
}

impl BinaryParts {
    /// The message body: the payload's JSON, `null` when there is none.
    pub fn body(&self) -> Vec<u8> {
        self.data.as_ref().map_or_else(|| b"null".to_vec(), |d| d.get().as_bytes().to_vec())
    }
}

/// The members of a JSON object in document order, each value as its JSON text.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Members, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Reads a structured-mode message: the body is a CloudEvents JSON document. `Err` says
/// why the message is not a CloudEvent.
pub fn from_structured(body: &[u8]) -> std::result::Result<Event, String> {
    Event::from_cloudevent_slice(body).map_err(|e| crate::ErrorChain(&e).to_string())
}

/// Reads a binary-mode message: `attributes` are the CloudEvents attributes (header names
/// without the binding's prefix, values as strings), `content_type` the message's content
/// type (the event's `datacontenttype`), `body` the payload, which must be JSON.
pub fn from_binary<'a>(
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    content_type: Option<&str>,
    body: &[u8],
) -> std::result::Result<Event, String> {
    let mut doc = Map::new();
    for (name, value) in attributes {
        doc.insert(name.to_ascii_lowercase(), Value::String(value.to_owned()));
    }
    if !doc.contains_key("specversion") {
        return Err("not a CloudEvent: the message has no `specversion` attribute".to_owned());
    }
    if let Some(ct) = content_type {
        doc.insert("datacontenttype".to_owned(), Value::String(ct.to_owned()));
    }
    if !body.is_empty() {
        let data: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the payload is not JSON ({e}); only JSON payloads are supported"))?;
        doc.insert("data".to_owned(), data);
    }
    Event::from_cloudevent(Value::Object(doc)).map_err(|e| crate::ErrorChain(&e).to_string())
}

/// Reads a message in either mode: structured when `content_type` says so or when the
/// body is a JSON object with a `specversion` and no binary attributes came; binary
/// otherwise.
pub fn from_message<'a>(
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    content_type: Option<&str>,
    body: &[u8],
) -> std::result::Result<Event, String> {
    let attributes: Vec<(&str, &str)> = attributes.into_iter().collect();
    let structured = content_type.is_some_and(is_structured)
        || (!attributes.iter().any(|(k, _)| k.eq_ignore_ascii_case("specversion"))
            && body.first().is_some_and(|b| *b == b'{'));
    if structured { from_structured(body) } else { from_binary(attributes, content_type, body) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Event {
        Event::new("user.created").with_data(json!({"user_id": "u-1"})).with_subject("user/u-1").with_tenant("acme")
    }

    #[test]
    fn an_outgoing_message_reads_back_in_both_modes() {
        let e = event();
        let out = Outgoing::new(&e).unwrap();
        assert_eq!(out.id(), e.id.to_string());
        assert_eq!(out.event_type(), "user.created");
        let structured = from_structured(out.structured()).unwrap();
        assert_eq!(structured.id, e.id);
        assert_eq!(structured.data, e.data);

        let attrs = out.attributes().unwrap();
        assert!(attrs.iter().all(|(k, _)| k != "data"));
        let body = out.data().unwrap();
        let binary = from_binary(attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())), None, &body).unwrap();
        assert_eq!(binary.id, e.id);
        assert_eq!(binary.subject.as_deref(), Some("user/u-1"));
        assert_eq!(binary.metadata.tenant.as_deref(), Some("acme"));
        assert_eq!(binary.data, json!({"user_id": "u-1"}));
    }

    #[test]
    fn the_binary_split_keeps_the_document_order_unescapes_strings_and_copies_data() {
        let mut e = Event::new("user.created")
            .with_data(json!({"name": "A \"quoted\" é", "n": 1.5}))
            .with_subject("user/\"u-1\"");
        e.metadata.extensions.insert("attempt".to_owned(), json!(3));
        let out = Outgoing::new(&e).unwrap();
        let parts = out.binary().unwrap();
        let names: Vec<&str> = parts.attributes.iter().map(|(k, _)| k.as_str()).collect();
        let doc: Map<String, Value> = serde_json::from_slice(out.structured()).unwrap();
        let mut in_doc: Vec<(usize, &str)> = names
            .iter()
            .map(|n| (std::str::from_utf8(out.structured()).unwrap().find(&format!("\"{n}\":")).unwrap(), *n))
            .collect();
        in_doc.sort_unstable();
        assert_eq!(names, in_doc.into_iter().map(|(_, n)| n).collect::<Vec<_>>(), "document order");
        assert_eq!(names.len(), doc.len() - 1, "every attribute but data");
        let text = |name: &str| parts.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(text("subject"), Some("user/\"u-1\""));
        assert_eq!(text("attempt"), Some("3"));
        let data: Value = serde_json::from_slice(&parts.body()).unwrap();
        assert_eq!(data, json!({"name": "A \"quoted\" é", "n": 1.5}));

        let bare = Outgoing::new(&Event::new("user.created")).unwrap().binary().unwrap();
        let no_data = serde_json::from_slice::<Value>(&bare.body()).unwrap();
        assert!(bare.data.is_none() || no_data.is_null(), "{no_data}");
    }

    #[test]
    fn a_message_picks_its_mode_from_content_type_and_attributes() {
        let e = event();
        let out = Outgoing::new(&e).unwrap();
        let read = from_message([], Some("application/cloudevents+json; charset=utf-8"), out.structured()).unwrap();
        assert_eq!(read.id, e.id);
        let read = from_message([], None, out.structured()).unwrap();
        assert_eq!(read.id, e.id);
        let attrs = out.attributes().unwrap();
        let body = out.data().unwrap();
        let read =
            from_message(attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())), Some("application/json"), &body).unwrap();
        assert_eq!(read.id, e.id);
    }

    #[test]
    fn what_is_not_a_cloudevent_is_an_error_that_says_why() {
        let why = from_message([], Some("text/plain"), b"hello").unwrap_err();
        assert!(why.contains("specversion"), "{why}");
        let why = from_structured(br#"{"hello": 1}"#).unwrap_err();
        assert!(why.contains("specversion"), "{why}");
        let attrs = [("specversion", "1.0"), ("id", "x"), ("source", "/s"), ("type", "a.b")];
        let why = from_binary(attrs, Some("application/json"), b"not json").unwrap_err();
        assert!(why.contains("not JSON"), "{why}");
    }
}
