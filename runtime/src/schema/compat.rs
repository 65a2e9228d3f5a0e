//! Compatibility between two JSON Schemas, after the rules of Confluent Schema Registry for
//! JSON Schema.
//!
//! The checker walks both schemas side by side and lists every [`Difference`], each with
//! the JSON pointer where it happens (in the new schema) and its [`DifferenceKind`]. Each kind
//! has an [`Effect`]: whether the new schema accepts more data (it *widens*: old data still
//! reads, but data written with the new schema may not read with the old one), less data
//! (it *narrows*), something else (*both*), or the same data (*none*: titles, descriptions).
//!
//! | mode | a change is compatible when the new schema… |
//! |---|---|
//! | `Backward` | reads every instance of the old one: no narrowing |
//! | `Forward` | writes only instances the old one reads: no widening |
//! | `Full` | both: neither narrows nor widens |
//! | `…Transitive` | the same, against every earlier version, not only the last |
//! | `None` | always |
//!
//! **Content models.** An object schema is *open* when it accepts properties it does not
//! list (`additionalProperties` absent or `true`) and *closed* when it does not
//! (`additionalProperties: false`). Adding an optional property to a closed model widens
//! it (old data never had it); adding one to an open model narrows it (old data may have
//! had that key with any value). A schema generated from a Rust struct describes data that
//! never carries unknown fields, so [`CheckOptions::closed_by_default`] treats its objects
//! as closed unless they say otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// How compatible two versions of a schema must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityMode {
    /// The new schema reads data written with the last one (consumers upgrade first).
    #[default]
    Backward,
    /// [`CompatibilityMode::Backward`] against every earlier version.
    BackwardTransitive,
    /// The last schema reads data written with the new one (producers upgrade first).
    Forward,
    /// [`CompatibilityMode::Forward`] against every earlier version.
    ForwardTransitive,
    /// Backward and forward against the last version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
    /// No check.
    None,
}

impl CompatibilityMode {
    /// Whether the mode checks against every earlier version.
    pub fn is_transitive(self) -> bool {
        matches!(self, Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive)
    }

    /// Whether a difference with `effect` breaks this mode.
    pub fn is_broken_by(self, effect: Effect) -> bool {
        match self {
            Self::None => false,
            Self::Backward | Self::BackwardTransitive => matches!(effect, Effect::Narrows | Effect::Both),
            Self::Forward | Self::ForwardTransitive => matches!(effect, Effect::Widens | Effect::Both),
            Self::Full | Self::FullTransitive => !matches!(effect, Effect::None),
        }
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        })
    }
}

/// What a difference does to the set of instances a schema accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    /// Nothing (documentation only).
    None,
    /// The new schema accepts more: breaks forward compatibility.
    Widens,
    /// The new schema accepts less: breaks backward compatibility.
    Narrows,
    /// The new schema accepts something else: breaks both.
    Both,
}

/// The kind of a difference between two schemas.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DifferenceKind {
    /// The set of JSON types grew (e.g. `integer` → `number`, `string` → `["string","null"]`).
    TypeWidened,
    /// The set of JSON types shrank.
    TypeNarrowed,
    /// The type changed to an unrelated one.
    TypeChanged,
    /// An optional property was added to a closed content model.
    PropertyAddedToClosedModel,
    /// A required property was added to a closed content model.
    RequiredPropertyAddedToClosedModel,
    /// A property was added to an open content model.
    PropertyAddedToOpenModel,
    /// A required property was added to an open content model.
    RequiredPropertyAddedToOpenModel,
    /// A property was removed from a closed content model.
    PropertyRemovedFromClosedModel,
    /// A required property was removed from a closed content model.
    RequiredPropertyRemovedFromClosedModel,
    /// A property was removed from an open content model.
    PropertyRemovedFromOpenModel,
    /// An existing property became required.
    RequiredAttributeAdded,
    /// An existing property became optional.
    RequiredAttributeRemoved,
    /// `additionalProperties` went from closed to open.
    AdditionalPropertiesOpened,
    /// `additionalProperties` went from open to closed.
    AdditionalPropertiesClosed,
    /// An enum gained values.
    EnumExtended,
    /// An enum lost values.
    EnumNarrowed,
    /// An enum changed values both ways.
    EnumChanged,
    /// A `const` appeared, disappeared or changed.
    ConstChanged,
    /// A bound (`maxLength`, `maximum`, `maxItems`, …) now allows more.
    LimitLoosened(&'static str),
    /// A bound now allows less.
    LimitTightened(&'static str),
    /// A string `pattern` was added.
    PatternAdded,
    /// A string `pattern` was removed.
    PatternRemoved,
    /// A string `pattern` changed.
    PatternChanged,
    /// A `format` was added.
    FormatAdded,
    /// A `format` was removed.
    FormatRemoved,
    /// A `format` changed.
    FormatChanged,
    /// `uniqueItems` was turned on.
    UniqueItemsAdded,
    /// `uniqueItems` was turned off.
    UniqueItemsRemoved,
    /// An `anyOf`/`oneOf` gained alternatives.
    SumTypeExtended,
    /// An `anyOf`/`oneOf` lost alternatives.
    SumTypeNarrowed,
    /// An `allOf` gained members.
    ProductTypeExtended,
    /// An `allOf` lost members.
    ProductTypeNarrowed,
    /// The combinator changed (`oneOf` ↔ `anyOf` ↔ `allOf`, or one appeared).
    CombinedTypeChanged,
    /// `title`, `description`, `examples`, `default` or other annotations changed.
    AnnotationChanged,
}

impl DifferenceKind {
    /// What this kind of difference does to the accepted instances.
    pub fn effect(&self) -> Effect {
        use DifferenceKind::*;
        match self {
            AnnotationChanged => Effect::None,
            TypeWidened
            | PropertyAddedToClosedModel
            | PropertyRemovedFromOpenModel
            | RequiredAttributeRemoved
            | AdditionalPropertiesOpened
            | EnumExtended
            | LimitLoosened(_)
            | PatternRemoved
            | FormatRemoved
            | UniqueItemsRemoved
            | SumTypeExtended
            | ProductTypeNarrowed => Effect::Widens,
            TypeNarrowed
            | PropertyAddedToOpenModel
            | RequiredPropertyAddedToOpenModel
            | PropertyRemovedFromClosedModel
            | RequiredAttributeAdded
            | AdditionalPropertiesClosed
            | EnumNarrowed
            | LimitTightened(_)
            | PatternAdded
            | FormatAdded
            | UniqueItemsAdded
            | SumTypeNarrowed
            | ProductTypeExtended => Effect::Narrows,
            TypeChanged
            | RequiredPropertyAddedToClosedModel
            | RequiredPropertyRemovedFromClosedModel
            | EnumChanged
            | ConstChanged
            | PatternChanged
            | FormatChanged
            | CombinedTypeChanged => Effect::Both,
        }
    }
}

impl fmt::Display for DifferenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DifferenceKind::*;
        let text = match self {
            TypeWidened => "type widened",
            TypeNarrowed => "type narrowed",
            TypeChanged => "type changed",
            PropertyAddedToClosedModel => "optional property added to a closed content model",
            RequiredPropertyAddedToClosedModel => "required property added to a closed content model",
            PropertyAddedToOpenModel => "property added to an open content model",
            RequiredPropertyAddedToOpenModel => "required property added to an open content model",
            PropertyRemovedFromClosedModel => "property removed from a closed content model",
            RequiredPropertyRemovedFromClosedModel => "required property removed from a closed content model",
            PropertyRemovedFromOpenModel => "property removed from an open content model",
            RequiredAttributeAdded => "property became required",
            RequiredAttributeRemoved => "property became optional",
            AdditionalPropertiesOpened => "additional properties allowed",
            AdditionalPropertiesClosed => "additional properties forbidden",
            EnumExtended => "enum values added",
            EnumNarrowed => "enum values removed",
            EnumChanged => "enum values changed",
            ConstChanged => "const changed",
            LimitLoosened(k) => return write!(f, "`{k}` loosened"),
            LimitTightened(k) => return write!(f, "`{k}` tightened"),
            PatternAdded => "pattern added",
            PatternRemoved => "pattern removed",
            PatternChanged => "pattern changed",
            FormatAdded => "format added",
            FormatRemoved => "format removed",
            FormatChanged => "format changed",
            UniqueItemsAdded => "unique items required",
            UniqueItemsRemoved => "unique items no longer required",
            SumTypeExtended => "alternatives added",
            SumTypeNarrowed => "alternatives removed",
            ProductTypeExtended => "`allOf` members added",
            ProductTypeNarrowed => "`allOf` members removed",
            CombinedTypeChanged => "combined type changed",
            AnnotationChanged => "annotation changed",
        };
        f.write_str(text)
    }
}

/// One difference between two schemas.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Difference {
    /// JSON pointer into the schema, e.g. `/properties/email`.
    pub pointer: String,
    /// What changed.
    pub kind: DifferenceKind,
}

impl Difference {
    /// The effect of the difference.
    pub fn effect(&self) -> Effect {
        self.kind.effect()
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() { "#" } else { &self.pointer };
        write!(f, "{} at `{at}`", self.kind)
    }
}

/// The outcome of a compatibility check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatibilityReport {
    /// The mode checked.
    pub mode: CompatibilityMode,
    /// Every difference found, in schema order.
    pub differences: Vec<Difference>,
}

impl CompatibilityReport {
    /// Whether the new schema is compatible under the mode.
    pub fn is_compatible(&self) -> bool {
        self.breaking().next().is_none()
    }

    /// The differences that break the mode.
    pub fn breaking(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| self.mode.is_broken_by(d.effect()))
    }

    /// Whether the schemas accept the same instances (annotations aside).
    pub fn is_equivalent(&self) -> bool {
        self.differences.iter().all(|d| d.effect() == Effect::None)
    }
}

/// Options of a check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Treat object schemas without `additionalProperties` as closed (schemas generated
    /// from Rust structs).
    pub closed_by_default: bool,
}

/// Lists the differences from `old` to `new` and judges them under `mode`.
pub fn check(old: &Value, new: &Value, mode: CompatibilityMode, options: CheckOptions) -> CompatibilityReport {
    let mut walker = Walker { old_root: old, new_root: new, options, out: Vec::new(), seen: BTreeSet::new() };
    walker.compare(old, new, String::new());
    CompatibilityReport { mode, differences: walker.out }
}

struct Walker<'a> {
    old_root: &'a Value,
    new_root: &'a Value,
    options: CheckOptions,
    out: Vec<Difference>,
    /// `$ref` pairs being compared, to stop on recursive schemas.
    seen: BTreeSet<(String, String)>,
}

const ANNOTATIONS: &[&str] =
    &["title", "description", "examples", "default", "$comment", "deprecated", "readOnly", "writeOnly"];

/// JSON types, with `integer` a subset of `number`.
fn types_of(schema: &Map<String, Value>) -> Option<BTreeSet<String>> {
    match schema.get("type")? {
        Value::String(t) => Some(std::iter::once(t.clone()).collect()),
        Value::Array(ts) => Some(ts.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()),
        _ => None,
    }
}

fn covers(set: &BTreeSet<String>, t: &str) -> bool {
    set.contains(t) || (t == "integer" && set.contains("number"))
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl<'a> Walker<'a> {
    fn push(&mut self, pointer: &str, kind: DifferenceKind) {
        self.out.push(Difference { pointer: pointer.to_owned(), kind });
    }

    /// Follows a local `$ref` (`#/$defs/x`, `#/definitions/x`) within `root`.
    fn resolve(root: &'a Value, schema: &'a Value) -> (&'a Value, Option<String>) {
        let mut current = schema;
        let mut last_ref = None;
        for _ in 0..32 {
            let Some(r) = current.get("$ref").and_then(Value::as_str) else { break };
            let Some(pointer) = r.strip_prefix('#') else { break };
            match root.pointer(pointer) {
                Some(target) => {
                    last_ref = Some(r.to_owned());
                    current = target;
                }
                None => break,
            }
        }
        (current, last_ref)
    }

    fn compare(&mut self, old: &'a Value, new: &'a Value, at: String) {
        let (old, old_ref) = Self::resolve(self.old_root, old);
        let (new, new_ref) = Self::resolve(self.new_root, new);
        if let (Some(o), Some(n)) = (&old_ref, &new_ref)
            && !self.seen.insert((o.clone(), n.clone()))
        {
            return;
        }
        match (old, new) {
            (Value::Bool(a), Value::Bool(b)) if a != b => {
                self.push(&at, if *b { DifferenceKind::TypeWidened } else { DifferenceKind::TypeNarrowed });
            }
            (Value::Bool(true), Value::Object(_)) => self.push(&at, DifferenceKind::TypeNarrowed),
            (Value::Object(_), Value::Bool(true)) => self.push(&at, DifferenceKind::TypeWidened),
            (Value::Bool(false), Value::Object(_)) => self.push(&at, DifferenceKind::TypeWidened),
            (Value::Object(_), Value::Bool(false)) => self.push(&at, DifferenceKind::TypeNarrowed),
            (Value::Object(o), Value::Object(n)) => self.compare_objects(o, n, &at),
            _ => {}
        }
        if let (Some(o), Some(n)) = (old_ref, new_ref) {
            self.seen.remove(&(o, n));
        }
    }

    fn compare_objects(&mut self, o: &'a Map<String, Value>, n: &'a Map<String, Value>, at: &str) {
        for key in ANNOTATIONS {
            if o.get(*key) != n.get(*key) {
                self.push(&format!("{at}/{key}"), DifferenceKind::AnnotationChanged);
            }
        }
        self.compare_combined(o, n, at);
        self.compare_types(o, n, at);
        self.compare_enum_const(o, n, at);
        self.compare_limits(o, n, at);
        self.compare_strings(o, n, at);
        self.compare_objects_keywords(o, n, at);
        self.compare_arrays(o, n, at);
    }

    fn compare_types(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, at: &str) {
        let (old_types, new_types) = match (types_of(o), types_of(n)) {
            (None, None) => return,
            // A type constraint appeared or went away.
            (None, Some(_)) => return self.push(&format!("{at}/type"), DifferenceKind::TypeNarrowed),
            (Some(_), None) => return self.push(&format!("{at}/type"), DifferenceKind::TypeWidened),
            (Some(a), Some(b)) => (a, b),
        };
        let new_covers_old = old_types.iter().all(|t| covers(&new_types, t));
        let old_covers_new = new_types.iter().all(|t| covers(&old_types, t));
        let kind = match (new_covers_old, old_covers_new) {
            (true, true) => return,
            (true, false) => DifferenceKind::TypeWidened,
            (false, true) => DifferenceKind::TypeNarrowed,
            (false, false) => DifferenceKind::TypeChanged,
        };
        self.push(&format!("{at}/type"), kind);
    }

    fn compare_enum_const(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, at: &str) {
        match (o.get("enum").and_then(Value::as_array), n.get("enum").and_then(Value::as_array)) {
            (Some(a), Some(b)) => {
                let added = b.iter().any(|v| !a.contains(v));
                let removed = a.iter().any(|v| !b.contains(v));
                let kind = match (added, removed) {
                    (false, false) => None,
                    (true, false) => Some(DifferenceKind::EnumExtended),
                    (false, true) => Some(DifferenceKind::EnumNarrowed),
                    (true, true) => Some(DifferenceKind::EnumChanged),
                };
                if let Some(kind) = kind {
                    self.push(&format!("{at}/enum"), kind);
                }
            }
            (None, Some(_)) => self.push(&format!("{at}/enum"), DifferenceKind::EnumNarrowed),
            (Some(_), None) => self.push(&format!("{at}/enum"), DifferenceKind::EnumExtended),
            (None, None) => {}
        }
        if o.get("const") != n.get("const") {
            self.push(&format!("{at}/const"), DifferenceKind::ConstChanged);
        }
    }

    fn compare_limits(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, at: &str) {
        // Upper bounds: a larger value allows more. Lower bounds: a smaller value allows more.
        const UPPER: &[&str] = &["maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties"];
        const LOWER: &[&str] = &["minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties"];
        for (keys, upper) in [(UPPER, true), (LOWER, false)] {
            for key in keys {
                let a = o.get(*key).and_then(Value::as_f64);
                let b = n.get(*key).and_then(Value::as_f64);
                let kind = match (a, b) {
                    (None, None) => continue,
                    (Some(_), None) => DifferenceKind::LimitLoosened(key),
                    (None, Some(_)) => DifferenceKind::LimitTightened(key),
                    (Some(a), Some(b)) if a == b => continue,
                    (Some(a), Some(b)) => {
                        if (b > a) == upper {
                            DifferenceKind::LimitLoosened(key)
                        } else {
                            DifferenceKind::LimitTightened(key)
                        }
                    }
                };
                self.push(&format!("{at}/{key}"), kind);
            }
        }
        let (a, b) = (o.get("multipleOf").and_then(Value::as_f64), n.get("multipleOf").and_then(Value::as_f64));
        let kind = match (a, b) {
            (None, None) => None,
            (Some(_), None) => Some(DifferenceKind::LimitLoosened("multipleOf")),
            (None, Some(_)) => Some(DifferenceKind::LimitTightened("multipleOf")),
            (Some(a), Some(b)) if a == b => None,
            // A divisor of the old step accepts every old value: loosened.
            (Some(a), Some(b)) if (a / b).fract() == 0.0 => Some(DifferenceKind::LimitLoosened("multipleOf")),
            (Some(a), Some(b)) if (b / a).fract() == 0.0 => Some(DifferenceKind::LimitTightened("multipleOf")),
            (Some(_), Some(_)) => Some(DifferenceKind::TypeChanged),
        };
        if let Some(kind) = kind {
            self.push(&format!("{at}/multipleOf"), kind);
        }
    }

    fn compare_strings(&mut self, o: &Map<String, Value>, n: &Map<String, Value>, at: &str) {
        for (key, added, removed, changed) in [
            ("pattern", DifferenceKind::PatternAdded, DifferenceKind::PatternRemoved, DifferenceKind::PatternChanged),
            ("format", DifferenceKind::FormatAdded, DifferenceKind::FormatRemoved, DifferenceKind::FormatChanged),
        ] {
            let kind = match (o.get(key), n.get(key)) {
                (None, None) => continue,
                (None, Some(_)) => added,
                (Some(_), None) => removed,
                (Some(a), Some(b)) if a == b => continue,
                (Some(_), Some(_)) => changed,
            };
            self.push(&format!("{at}/{key}"), kind);
        }
    }

    fn is_closed(&self, schema: &Map<String, Value>) -> bool {
        match schema.get("additionalProperties") {
            Some(Value::Bool(false)) => true,
            Some(_) => false,
            None => {
                self.options.closed_by_default
                    && schema.get("patternProperties").is_none()
                    && (schema.contains_key("properties") || types_of(schema).is_some_and(|t| t.contains("object")))
            }
        }
    }

    fn compare_objects_keywords(&mut self, o: &'a Map<String, Value>, n: &'a Map<String, Value>, at: &str) {
        static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        let old_props = o.get("properties").and_then(Value::as_object).unwrap_or(&EMPTY);
        let new_props = n.get("properties").and_then(Value::as_object).unwrap_or(&EMPTY);
        let required = |m: &Map<String, Value>| -> BTreeSet<String> {
            m.get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let (old_req, new_req) = (required(o), required(n));
        let is_object_schema =
            |m: &Map<String, Value>| m.contains_key("properties") || types_of(m).is_some_and(|t| t.contains("object"));
        if !is_object_schema(o) && !is_object_schema(n) {
            return;
        }
        let (old_closed, new_closed) = (self.is_closed(o), self.is_closed(n));
        match (old_closed, new_closed) {
            (true, false) => {
                self.push(&format!("{at}/additionalProperties"), DifferenceKind::AdditionalPropertiesOpened)
            }
            (false, true) => {
                self.push(&format!("{at}/additionalProperties"), DifferenceKind::AdditionalPropertiesClosed)
            }
            _ => {}
        }
        if let (Some(a @ Value::Object(_)), Some(b @ Value::Object(_))) =
            (o.get("additionalProperties"), n.get("additionalProperties"))
        {
            self.compare(a, b, format!("{at}/additionalProperties"));
        }
        let keys: BTreeMap<&String, ()> = old_props.keys().chain(new_props.keys()).map(|k| (k, ())).collect();
        for key in keys.keys() {
            let here = format!("{at}/properties/{}", escape(key));
            match (old_props.get(*key), new_props.get(*key)) {
                (Some(a), Some(b)) => {
                    match (old_req.contains(*key), new_req.contains(*key)) {
                        (false, true) => self.push(&here, DifferenceKind::RequiredAttributeAdded),
                        (true, false) => self.push(&here, DifferenceKind::RequiredAttributeRemoved),
                        _ => {}
                    }
                    self.compare(a, b, here);
                }
                (None, Some(_)) => {
                    let req = new_req.contains(*key);
                    let kind = match (old_closed, req) {
                        (true, false) => DifferenceKind::PropertyAddedToClosedModel,
                        (true, true) => DifferenceKind::RequiredPropertyAddedToClosedModel,
                        (false, false) => DifferenceKind::PropertyAddedToOpenModel,
                        (false, true) => DifferenceKind::RequiredPropertyAddedToOpenModel,
                    };
                    self.push(&here, kind);
                }
                (Some(_), None) => {
                    let req = old_req.contains(*key);
                    let kind = match (new_closed, req) {
                        (true, false) => DifferenceKind::PropertyRemovedFromClosedModel,
                        (true, true) => DifferenceKind::RequiredPropertyRemovedFromClosedModel,
                        // Removing a required property from an open model: new data may lack
                        // it, old readers required it.
                        (false, true) => DifferenceKind::RequiredAttributeRemoved,
                        (false, false) => DifferenceKind::PropertyRemovedFromOpenModel,
                    };
                    self.push(&here, kind);
                }
                (None, None) => {}
            }
        }
        // `required` naming properties that no schema lists (open models).
        for key in new_req.difference(&old_req) {
            if !new_props.contains_key(key) {
                self.push(&format!("{at}/required/{}", escape(key)), DifferenceKind::RequiredAttributeAdded);
            }
        }
        for key in old_req.difference(&new_req) {
            if !old_props.contains_key(key) {
                self.push(&format!("{at}/required/{}", escape(key)), DifferenceKind::RequiredAttributeRemoved);
            }
        }
    }

    fn compare_arrays(&mut self, o: &'a Map<String, Value>, n: &'a Map<String, Value>, at: &str) {
        match (o.get("items"), n.get("items")) {
            (Some(a), Some(b)) => self.compare(a, b, format!("{at}/items")),
            (None, Some(_)) => self.push(&format!("{at}/items"), DifferenceKind::TypeNarrowed),
            (Some(_), None) => self.push(&format!("{at}/items"), DifferenceKind::TypeWidened),
            (None, None) => {}
        }
        let unique = |m: &Map<String, Value>| m.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false);
        match (unique(o), unique(n)) {
            (false, true) => self.push(&format!("{at}/uniqueItems"), DifferenceKind::UniqueItemsAdded),
            (true, false) => self.push(&format!("{at}/uniqueItems"), DifferenceKind::UniqueItemsRemoved),
            _ => {}
        }
    }

    fn compare_combined(&mut self, o: &'a Map<String, Value>, n: &'a Map<String, Value>, at: &str) {
        for key in ["anyOf", "oneOf", "allOf"] {
            let (a, b) = (o.get(key).and_then(Value::as_array), n.get(key).and_then(Value::as_array));
            match (a, b) {
                (None, None) => {}
                (Some(_), None) | (None, Some(_)) => {
                    // `anyOf` ↔ `oneOf` with the same members is a change of combinator.
                    self.push(&format!("{at}/{key}"), DifferenceKind::CombinedTypeChanged);
                }
                (Some(a), Some(b)) => {
                    let here = format!("{at}/{key}");
                    // Pair members that are equal first, then by position.
                    let mut unmatched_new: Vec<(usize, &'a Value)> = b.iter().enumerate().collect();
                    let mut unmatched_old: Vec<(usize, &'a Value)> = Vec::new();
                    for (i, item) in a.iter().enumerate() {
                        if let Some(pos) = unmatched_new.iter().position(|(_, v)| *v == item) {
                            unmatched_new.remove(pos);
                        } else {
                            unmatched_old.push((i, item));
                        }
                    }
                    let pairs = unmatched_old.len().min(unmatched_new.len());
                    for ((_, old_item), (j, new_item)) in unmatched_old.iter().zip(unmatched_new.iter()).take(pairs) {
                        self.compare(old_item, new_item, format!("{here}/{j}"));
                    }
                    let grew = unmatched_new.len() > pairs;
                    let shrank = unmatched_old.len() > pairs;
                    let (more, fewer) = if key == "allOf" {
                        (DifferenceKind::ProductTypeExtended, DifferenceKind::ProductTypeNarrowed)
                    } else {
                        (DifferenceKind::SumTypeExtended, DifferenceKind::SumTypeNarrowed)
                    };
                    if grew {
                        self.push(&here, more);
                    }
                    if shrank {
                        self.push(&here, fewer);
                    }
                }
            }
        }
    }
}
