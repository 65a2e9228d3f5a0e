//! How deep the JSON of an event may nest, and the checks that hold it to that without
//! recursing over it.
//!
//! serde_json's parser refuses a document that nests arrays and objects more than
//! [`READABLE_DEPTH`] levels deep ("recursion limit exceeded"), so an event deeper than that
//! could be written but never read back. And serde_json's serializer, like the `Clone`,
//! `Drop` and `Debug` of `serde_json::Value`, recurses once per level, so a value nested
//! thousands of levels deep overflows the stack of whatever serializes it. Hence:
//!
//! - a dynamic payload (`serde_json::Value`) and the extension attributes are measured
//!   with an explicit stack ([`check_event`], [`check_extensions`]) before anything
//!   serializes or validates them;
//! - any payload, typed or dynamic, is serialized through [`write_bounded`], whose
//!   formatter counts the levels it opens and stops the serialization one level past the
//!   limit: the recursion of the serializer never goes deeper than the limit.
//!
//! Depth counts levels of arrays and objects: `1` and `"a"` are 0 deep, `[]` and `{}` 1,
//! `{"a": [1]}` 2.

use std::cell::Cell;
use std::io;

use serde::Serialize;
use serde_json::Value;

use super::{Envelope, EventMetadata};
use crate::error::{Error, Result};
use crate::event::EventData;

/// The most levels of arrays and objects serde_json's parser reads in one document; one
/// more is "recursion limit exceeded".
pub(crate) const READABLE_DEPTH: usize = 127;

/// The deepest an event's payload may nest, in levels of arrays and objects (`1` is 0 deep,
/// `[]` and `{}` 1 deep, `[[1]]` 2 deep).
///
/// `emit`, every store's `append` and the CloudEvents serialization refuse a deeper payload
/// with [`Error::Validation`], because it could not be read back: this is the depth
/// serde_json reads (127 levels) less the one level of the CloudEvents document that wraps
/// the payload. A stored payload of this depth reads back from every store.
pub const MAX_PAYLOAD_DEPTH: usize = READABLE_DEPTH - 1;

/// The deepest an extension attribute's value may nest: the metadata document a store
/// keeps holds it two levels down (`{"extensions": {"name": value}}`).
pub(crate) const MAX_EXTENSION_DEPTH: usize = READABLE_DEPTH - 2;

/// The depth of `value`, measured with an explicit stack (one entry per open level).
pub(crate) fn value_depth(value: &Value) -> usize {
    let mut open: Vec<Children<'_>> = Vec::new();
    let mut deepest = 0;
    if let Some(children) = Children::of(value) {
        open.push(children);
        deepest = 1;
    }
    while let Some(level) = open.last_mut() {
        match level.next() {
            Some(child) => {
                if let Some(children) = Children::of(child) {
                    open.push(children);
                    deepest = deepest.max(open.len());
                }
            }
            None => {
                open.pop();
            }
        }
    }
    deepest
}

/// The values inside an array or an object, one level of [`value_depth`]'s walk.
enum Children<'a> {
    Array(std::slice::Iter<'a, Value>),
    Object(serde_json::map::Values<'a>),
}

impl<'a> Children<'a> {
    fn of(value: &'a Value) -> Option<Self> {
        match value {
            Value::Array(items) => Some(Self::Array(items.iter())),
            Value::Object(map) => Some(Self::Object(map.values())),
            _ => None,
        }
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = &'a Value;

    fn next(&mut self) -> Option<&'a Value> {
        match self {
            Self::Array(items) => items.next(),
            Self::Object(values) => values.next(),
        }
    }
}

/// Drops `value` one level at a time: `Value`'s own `Drop` recurses once per level.
pub(crate) fn dismantle(value: Value) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => pending.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// The error for `what` of event `event_type` nesting past `limit`: `depth` levels when it
/// was measured, more than `limit` when the serialization stopped there.
pub(crate) fn too_deep(event_type: &str, what: &str, depth: Option<usize>, limit: usize) -> Error {
    let depth = match depth {
        Some(depth) => format!("{depth} levels"),
        None => format!("more than {limit} levels"),
    };
    Error::Validation {
        event_type: event_type.to_owned(),
        message: format!(
            "{what} nests {depth} deep; the limit is {limit} levels of arrays and objects, the most that \
             can be read back once stored; flatten it, or carry the deep part as a JSON string"
        ),
    }
}

/// What `emit` checks before anything else looks at the event: a dynamic payload at most
/// [`MAX_PAYLOAD_DEPTH`] deep, every extension attribute at most [`MAX_EXTENSION_DEPTH`]
/// deep. A value refused is taken out of the event and dropped one level at a time, so
/// that dropping the event does not recurse over it either. A typed payload is checked
/// when it is serialized (store, CloudEvents).
pub(crate) fn check_event(env: &mut Envelope<dyn EventData>) -> Result<()> {
    if let Some(dynamic) = env.downcast_mut::<Value>() {
        let depth = value_depth(&dynamic.data);
        if depth > MAX_PAYLOAD_DEPTH {
            dismantle(std::mem::take(&mut dynamic.data));
            return Err(too_deep(dynamic.event_type.as_str(), "the payload", Some(depth), MAX_PAYLOAD_DEPTH));
        }
    }
    if let Err(error) = check_extensions(env.event_type.as_str(), &env.metadata) {
        for value in env.metadata.extensions.values_mut() {
            if value_depth(value) > MAX_EXTENSION_DEPTH {
                dismantle(std::mem::take(value));
            }
        }
        return Err(error);
    }
    Ok(())
}

/// The check of a store that keeps events as they are rather than as JSON text: the
/// payload and the extension attributes within their limits, measured without recursion
/// (a typed payload by a serialization that stops at the limit).
pub(crate) fn check_stored(env: &Envelope<dyn EventData>) -> Result<()> {
    let event_type = env.event_type.as_str();
    match env.downcast_ref::<Value>() {
        Some(dynamic) => {
            let depth = value_depth(&dynamic.data);
            if depth > MAX_PAYLOAD_DEPTH {
                return Err(too_deep(event_type, "the payload", Some(depth), MAX_PAYLOAD_DEPTH));
            }
        }
        None => write_bounded(io::sink(), env.data.as_serialize(), MAX_PAYLOAD_DEPTH)
            .map_err(|e| e.into_error(event_type, "the payload", MAX_PAYLOAD_DEPTH))?,
    }
    check_extensions(event_type, &env.metadata)
}

/// Refuses an extension attribute nested deeper than [`MAX_EXTENSION_DEPTH`].
pub(crate) fn check_extensions(event_type: &str, metadata: &EventMetadata) -> Result<()> {
    for (name, value) in &metadata.extensions {
        let depth = value_depth(value);
        if depth > MAX_EXTENSION_DEPTH {
            let what = format!("extension attribute `{name}`");
            return Err(too_deep(event_type, &what, Some(depth), MAX_EXTENSION_DEPTH));
        }
    }
    Ok(())
}

/// Why [`write_bounded`] wrote no complete document.
#[derive(Debug)]
pub(crate) enum Unwritten {
    /// The value nests deeper than the limit; the serialization stopped there.
    TooDeep,
    /// The value's `Serialize` failed.
    Json(serde_json::Error),
}

impl Unwritten {
    /// The crate's error for a `what` of event `event_type` that was held to `limit` levels
    /// of its own.
    pub(crate) fn into_error(self, event_type: &str, what: &str, limit: usize) -> Error {
        match self {
            Self::TooDeep => too_deep(event_type, what, None, limit),
            Self::Json(source) => Error::Serialization { event_type: event_type.to_owned(), source },
        }
    }
}

/// Writes `value` as compact JSON (as `serde_json::to_writer` does) unless it nests more
/// than `limit` levels of arrays and objects: then the serialization stops at the first
/// level past the limit, so it never recurses deeper than that.
pub(crate) fn write_bounded<W: io::Write, T: Serialize + ?Sized>(
    out: W,
    value: &T,
    limit: usize,
) -> std::result::Result<(), Unwritten> {
    let exceeded = Cell::new(false);
    let mut serializer = serde_json::Serializer::with_formatter(out, Bounded { depth: 0, limit, exceeded: &exceeded });
    match value.serialize(&mut serializer) {
        Ok(()) => Ok(()),
        // The formatter's error may come back wrapped by the value's `Serialize` (an erased
        // payload turns it into a message): the flag says what happened.
        Err(_) if exceeded.get() => Err(Unwritten::TooDeep),
        Err(e) => Err(Unwritten::Json(e)),
    }
}

/// serde_json's compact formatter, counting the levels open and failing the write of the
/// first one past `limit`.
struct Bounded<'a> {
    depth: usize,
    limit: usize,
    exceeded: &'a Cell<bool>,
}

impl Bounded<'_> {
    /// Accounts for `levels` more levels; fails past the limit.
    fn enter(&mut self, levels: usize) -> io::Result<()> {
        if self.depth.saturating_add(levels) > self.limit {
            self.exceeded.set(true);
            return Err(io::Error::other(format!("JSON nests more than {} levels deep", self.limit)));
        }
        self.depth += levels;
        Ok(())
    }
}

impl serde_json::ser::Formatter for Bounded<'_> {
    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.enter(1)?;
        writer.write_all(b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        writer.write_all(b"]")
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.enter(1)?;
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        writer.write_all(b"}")
    }

    /// A `RawValue` is written as it is, without the calls above: its levels are counted
    /// from its text.
    fn write_raw_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let levels = text_depth(fragment);
        self.enter(levels)?;
        self.depth -= levels;
        writer.write_all(fragment.as_bytes())
    }
}

/// The depth of a JSON text, by one pass over its bytes: brackets and braces count outside
/// strings only, and a string ends at a quote that no backslash escapes.
pub(crate) fn text_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn depth_counts_levels_of_arrays_and_objects() {
        assert_eq!(value_depth(&json!(1)), 0);
        assert_eq!(value_depth(&json!([])), 1);
        assert_eq!(value_depth(&json!({})), 1);
        assert_eq!(value_depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
        assert_eq!(value_depth(&json!([[], [[[]]], 1])), 4);
        assert_eq!(value_depth(&nested(300)), 300);
        for text in ["1", "[]", r#"{"a": [1, {"b": []}], "c": 2}"#, r#"["[[[", {"k\"[": "]\\"}, [[]]]"#] {
            let value: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(text_depth(text), value_depth(&value), "{text}");
        }
    }

    #[test]
    fn serde_json_reads_exactly_the_readable_depth() {
        let text = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(serde_json::from_str::<Value>(&text(READABLE_DEPTH)).is_ok());
        let err = serde_json::from_str::<Value>(&text(READABLE_DEPTH + 1)).expect_err("one level too deep");
        assert!(err.to_string().contains("recursion limit exceeded"), "{err}");
    }

    #[test]
    fn bounded_writes_stop_one_level_past_the_limit() {
        let mut out = Vec::new();
        write_bounded(&mut out, &nested(5), 5).expect("at the limit");
        assert_eq!(out, serde_json::to_vec(&nested(5)).expect("serializes"));
        assert!(matches!(write_bounded(io::sink(), &nested(6), 5), Err(Unwritten::TooDeep)));
        // A `RawValue` (one level of array around three raw ones) is counted from its text.
        let raw = serde_json::value::RawValue::from_string("[[[1]]]".to_owned()).expect("raw JSON");
        let doc = [&*raw];
        write_bounded(io::sink(), &doc[..], 4).expect("raw fragment within the limit");
        assert!(matches!(write_bounded(io::sink(), &doc[..], 3), Err(Unwritten::TooDeep)));
    }

    #[test]
    fn dismantle_takes_apart_what_drop_would_recurse_over() {
        let mut v = json!(1);
        for i in 0..50_000 {
            // Not `json!({"k": v})`: the macro copies `v` by serializing it, recursively.
            v = if i % 2 == 0 {
                Value::Array(vec![v, json!(i)])
            } else {
                Value::Object([("k".to_owned(), v)].into_iter().collect())
            };
        }
        assert_eq!(value_depth(&v), 50_000);
        dismantle(v);
    }
}
