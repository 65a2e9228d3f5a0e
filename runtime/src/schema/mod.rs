//! The schema registry: every event name and version with its JSON Schema, validation of
//! dynamic events, compatibility checks and the version rules.
//!
//! ```
//! use better_auth_events_runtime::schema::{EventSchema, FieldType, SchemaRegistry};
//! use better_auth_events_runtime::Event;
//! use serde_json::json;
//!
//! let mut registry = SchemaRegistry::new();
//! registry.register(EventSchema::builder()
//!     .name("user.created")
//!     .version("1.0.0")
//!     .field("user_id", FieldType::String, true)
//!     .field("email", FieldType::String, true)
//!     .build())?;
//!
//! let ok = Event::new("user.created").with_data(json!({ "user_id": "123", "email": "user@example.com" }));
//! assert!(registry.validate(&ok).is_ok());
//!
//! let missing = Event::new("user.created").with_data(json!({ "user_id": "123" }));
//! let err = registry.validate(&missing).unwrap_err();
//! assert!(err.to_string().contains("missing required field 'email'"));
//! # Ok::<(), better_auth_events_runtime::Error>(())
//! ```

pub mod compat;
pub mod migrate;
pub mod snapshot;
pub mod upcast;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use better_auth_events_lock::BumpTooSmall;
use semver::Version;
use serde_json::{Map, Value, json};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{EventData, EventRegistration, TypedEvent};

pub use better_auth_events_lock::Bump;
pub use compat::{CheckOptions, CompatibilityMode, CompatibilityReport, Difference, DifferenceKind, Effect};
pub use migrate::{MigrationPlan, MigrationStep, SqlDialect};
pub use snapshot::{SnapshotReport, check_built_in_snapshots, check_snapshots, check_snapshots_with};
pub use upcast::{Upcast, UpcastChain};

/// The type of a field of a dynamic schema built with [`EventSchemaBuilder::field`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldType {
    /// A JSON string.
    String,
    /// A JSON integer.
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object of any shape.
    Object,
    /// A JSON array of the given item type.
    Array(Box<FieldType>),
    /// A string holding an RFC 3339 date-time.
    DateTime,
    /// A string holding a UUID.
    Uuid,
    /// A string holding an e-mail address.
    Email,
    /// Any JSON value.
    Any,
}

impl FieldType {
    fn schema(&self) -> Value {
        match self {
            Self::String => json!({ "type": "string" }),
            Self::Integer => json!({ "type": "integer" }),
            Self::Number => json!({ "type": "number" }),
            Self::Boolean => json!({ "type": "boolean" }),
            Self::Object => json!({ "type": "object" }),
            Self::Array(items) => json!({ "type": "array", "items": items.schema() }),
            Self::DateTime => json!({ "type": "string", "format": "date-time" }),
            Self::Uuid => json!({ "type": "string", "format": "uuid" }),
            Self::Email => json!({ "type": "string", "format": "email" }),
            Self::Any => json!({}),
        }
    }
}

/// Where a schema comes from, which decides its content model in compatibility checks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaOrigin {
    /// Generated from a `#[derive(Event)]` struct: objects are closed (no unknown fields)
    /// unless the schema says otherwise.
    Rust {
        /// The Rust type.
        type_name: &'static str,
    },
    /// Written by hand or built with [`EventSchema::builder`]: objects are as open or closed
    /// as the schema declares (open when `additionalProperties` is absent).
    Dynamic,
}

/// A schema for one event name and version, ready to register.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSchema {
    /// Event name.
    pub name: String,
    /// Version, as written (checked as semver by [`SchemaRegistry::register`]).
    pub version: String,
    /// The JSON Schema of the payload.
    pub schema: Value,
    /// Where it comes from.
    pub origin: SchemaOrigin,
    /// `(new_key, old_key)` of renamed fields, for migration plans.
    pub renames: Vec<(String, String)>,
}

impl EventSchema {
    /// A builder for a dynamic schema (the seed's `EventSchema::builder()`).
    pub fn builder() -> EventSchemaBuilder {
        EventSchemaBuilder::default()
    }

    /// A dynamic schema from a JSON Schema document.
    pub fn from_json(name: impl Into<String>, version: impl Into<String>, schema: Value) -> Self {
        Self { name: name.into(), version: version.into(), schema, origin: SchemaOrigin::Dynamic, renames: Vec::new() }
    }

    /// Records that field `new_key` was called `old_key` in the previous version.
    pub fn with_rename(mut self, new_key: impl Into<String>, old_key: impl Into<String>) -> Self {
        self.renames.push((new_key.into(), old_key.into()));
        self
    }

    /// The schema of a `#[derive(Event)]` type.
    pub fn of<T: TypedEvent>() -> Self {
        Self {
            name: T::NAME.to_owned(),
            version: T::VERSION.to_owned(),
            schema: T::event_schema().to_value(),
            origin: SchemaOrigin::Rust { type_name: std::any::type_name::<T>() },
            renames: T::RENAMED_FIELDS.iter().map(|(n, o)| ((*n).to_owned(), (*o).to_owned())).collect(),
        }
    }

    fn from_registration(r: &EventRegistration) -> Self {
        Self {
            name: r.name.to_owned(),
            version: r.version.to_owned(),
            schema: (r.schema)().to_value(),
            origin: SchemaOrigin::Rust { type_name: (r.type_name)() },
            renames: r.renamed_fields.iter().map(|(n, o)| ((*n).to_owned(), (*o).to_owned())).collect(),
        }
    }

    fn check_options(&self) -> CheckOptions {
        CheckOptions { closed_by_default: matches!(self.origin, SchemaOrigin::Rust { .. }) }
    }
}

/// Builds a dynamic [`EventSchema`] field by field.
#[derive(Clone, Debug, Default)]
pub struct EventSchemaBuilder {
    name: String,
    version: String,
    fields: Vec<(String, FieldType, bool)>,
    closed: bool,
}

impl EventSchemaBuilder {
    /// The event name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The version (semver).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// A field, its type, and whether it is required.
    pub fn field(mut self, name: impl Into<String>, ty: FieldType, required: bool) -> Self {
        self.fields.push((name.into(), ty, required));
        self
    }

    /// Reject fields the schema does not list (a closed content model). Default: open.
    pub fn closed(mut self) -> Self {
        self.closed = true;
        self
    }

    /// The schema: a JSON Schema object with the fields as properties.
    pub fn build(self) -> EventSchema {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, ty, is_required) in self.fields {
            if is_required {
                required.push(Value::String(name.clone()));
            }
            properties.insert(name, ty.schema());
        }
        let mut schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.name,
            "type": "object",
            "properties": properties,
            "required": required,
        });
        if self.closed
            && let Some(map) = schema.as_object_mut()
        {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        EventSchema {
            name: self.name,
            version: self.version,
            schema,
            origin: SchemaOrigin::Dynamic,
            renames: Vec::new(),
        }
    }
}

/// One violation of a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the payload (`""` is the payload itself).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} (at {})", self.message, self.pointer)
        }
    }
}

/// Every way a payload violates its schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The event name.
    pub event_type: String,
    /// The schema version checked against, if one was found.
    pub version: Option<Version>,
    /// The violations, in payload order.
    pub violations: Vec<Violation>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.violations.iter().map(ToString::to_string).collect();
        f.write_str(&list.join("; "))
    }
}

impl std::error::Error for ValidationError {}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Validation { event_type: e.event_type.clone(), message: e.to_string() }
    }
}

/// A schema in the registry.
pub struct RegisteredSchema {
    /// Event name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// The JSON Schema.
    pub schema: Value,
    /// Where it comes from.
    pub origin: SchemaOrigin,
    validator: OnceLock<std::result::Result<Arc<jsonschema::Validator>, String>>,
}

impl fmt::Debug for RegisteredSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredSchema")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl RegisteredSchema {
    /// The compiled validator, compiled on first use and cached. Formats (`date-time`,
    /// `uuid`, `email`, …) are asserted, not mere annotations: a `FieldType::Uuid` field, or
    /// a derived `Uuid` field, refuses `"not-a-uuid"`.
    fn validator(&self) -> std::result::Result<&Arc<jsonschema::Validator>, Error> {
        self.validator
            .get_or_init(|| {
                jsonschema::options()
                    .should_validate_formats(true)
                    .build(&self.schema)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                Error::Schema(format!("the schema of `{}` {} is not a valid JSON Schema: {e}", self.name, self.version))
            })
    }

    /// Checks an event's payload against this schema (without a JSON round trip for
    /// dynamic payloads).
    pub fn validate_value_of<T: EventData>(&self, event: &Envelope<T>) -> Result<()> {
        match (&event.data as &dyn std::any::Any).downcast_ref::<Value>() {
            Some(value) => self.validate_value(value),
            None => {
                let value = event
                    .data
                    .to_json()
                    .map_err(|source| Error::Serialization { event_type: event.event_type.to_string(), source })?;
                self.validate_value(&value)
            }
        }
    }

    /// Checks a payload against this schema, reporting every violation.
    pub fn validate_value(&self, value: &Value) -> Result<()> {
        let validator = self.validator()?;
        if validator.is_valid(value) {
            return Ok(());
        }
        let violations = validator.iter_errors(value).map(|e| violation(&e)).collect();
        Err(ValidationError { event_type: self.name.clone(), version: Some(self.version.clone()), violations }.into())
    }
}

fn violation(e: &jsonschema::ValidationError<'_>) -> Violation {
    use jsonschema::error::ValidationErrorKind as K;
    let message = match e.kind() {
        K::Required { property } => {
            format!(
                "missing required field '{}'",
                property.as_str().map(str::to_owned).unwrap_or_else(|| property.to_string())
            )
        }
        K::AdditionalProperties { unexpected } => {
            let names: Vec<String> = unexpected.iter().map(|u| format!("'{u}'")).collect();
            format!("unknown field{} {}", if names.len() == 1 { "" } else { "s" }, names.join(", "))
        }
        // The validator's message quotes the offending value first; a value may be
        // personal data, so it is replaced by what it is.
        _ => {
            let shown = e.instance().to_string();
            let kind = match e.instance().as_ref() {
                Value::Null => "null",
                Value::Bool(_) => "the boolean",
                Value::Number(_) => "the number",
                Value::String(_) => "the string",
                Value::Array(_) => "the array",
                Value::Object(_) => "the object",
            };
            e.to_string().replace(&shown, kind)
        }
    };
    Violation { pointer: e.instance_path().to_string(), message }
}

/// Every event name and version with its schema. See the module documentation.
#[derive(Debug)]
pub struct SchemaRegistry {
    schemas: BTreeMap<String, BTreeMap<Version, RegisteredSchema>>,
    default_mode: CompatibilityMode,
    modes: BTreeMap<String, CompatibilityMode>,
}

impl Default for SchemaRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaRegistry {
    /// An empty registry checking BACKWARD compatibility.
    pub fn new() -> Self {
        Self { schemas: BTreeMap::new(), default_mode: CompatibilityMode::Backward, modes: BTreeMap::new() }
    }

    /// An empty registry checking `mode` for every event name.
    pub fn with_mode(mode: CompatibilityMode) -> Self {
        Self { default_mode: mode, ..Self::new() }
    }

    /// A registry with every `#[derive(Event)]` type of the program, registered name by
    /// name in version order under the version rules. Fails on the first conflict.
    pub fn from_registered_events() -> Result<Self> {
        let mut registry = Self::new();
        registry.register_derived()?;
        // The upcasters between the versions must form complete chains too.
        UpcastChain::global()?;
        Ok(registry)
    }

    /// Registers every `#[derive(Event)]` type of the program that is not registered yet
    /// (a built-in authentication event only where the program has no event of its name).
    pub fn register_derived(&mut self) -> Result<()> {
        let mut all: Vec<(Version, EventSchema)> = Vec::new();
        for r in crate::event::effective_registrations() {
            let schema = EventSchema::from_registration(r);
            let version = Version::parse(r.version).map_err(|e| {
                Error::Schema(format!(
                    "event `{}` of `{}` has an invalid version `{}`: {e}",
                    r.name,
                    (r.type_name)(),
                    r.version
                ))
            })?;
            all.push((version, schema));
        }
        all.sort_by(|a, b| a.1.name.cmp(&b.1.name).then_with(|| a.0.cmp(&b.0)));
        for (_, schema) in all {
            self.register(schema)?;
        }
        Ok(())
    }

    /// The compatibility mode of `name`.
    pub fn mode(&self, name: &str) -> CompatibilityMode {
        self.modes.get(name).copied().unwrap_or(self.default_mode)
    }

    /// Sets the compatibility mode of one event name.
    pub fn set_mode(&mut self, name: impl Into<String>, mode: CompatibilityMode) {
        self.modes.insert(name.into(), mode);
    }

    /// Registers a schema under the version rules:
    ///
    /// - the same `name@version` again is fine if the schema is the same, an error if not;
    /// - a schema identical to the previous version needs no particular bump;
    /// - a compatible change (under the name's mode) needs at least a minor bump;
    /// - an incompatible change needs a major bump.
    ///
    /// The error says which rule failed and which version would be accepted.
    pub fn register(&mut self, schema: EventSchema) -> Result<()> {
        let name = schema.name.clone();
        if name.trim().is_empty() {
            return Err(Error::Schema(
                "a schema needs an event name: `EventSchema::builder().name(\"user.created\")`".into(),
            ));
        }
        let version = Version::parse(&schema.version).map_err(|e| {
            Error::Schema(format!(
                "schema `{name}` has an invalid version `{}`: {e}; use a full semver version such as `1.0.0`",
                schema.version
            ))
        })?;
        let entry = RegisteredSchema {
            name: name.clone(),
            version: version.clone(),
            schema: schema.schema.clone(),
            origin: schema.origin.clone(),
            validator: OnceLock::new(),
        };
        // A schema must compile before it is accepted.
        entry.validator()?;
        let mode = self.mode(&name);
        let versions = self.schemas.entry(name.clone()).or_default();
        if let Some(existing) = versions.get(&version) {
            if existing.schema == schema.schema {
                return Ok(());
            }
            let by = match (&existing.origin, &schema.origin) {
                (SchemaOrigin::Rust { type_name: a }, SchemaOrigin::Rust { type_name: b }) => {
                    format!(" (by `{a}` and `{b}`)")
                }
                _ => String::new(),
            };
            return Err(Error::Schema(format!(
                "`{name}` {version} is already registered with a different schema{by}; a changed schema needs a new version"
            )));
        }
        if let Some(newest) = versions.keys().next_back()
            && *newest > version
        {
            return Err(Error::Schema(format!(
                "`{name}` {version} is older than {newest}, registered already; versions never go backwards: register \
                 a schema's versions oldest first, and give a new schema a version after {newest}"
            )));
        }
        let options = schema.check_options();
        // The version right before this one decides the bump; transitive modes also check
        // compatibility with every earlier one.
        let earlier: Vec<&RegisteredSchema> = versions.range(..version.clone()).map(|(_, s)| s).collect();
        if let Some(previous) = earlier.last() {
            let (previous_view, renamed) = renamed_view(&previous.schema, &schema.renames, mode);
            let report = compat::check(&previous_view, &schema.schema, mode, options);
            let mut breaking: Vec<String> = report.breaking().map(ToString::to_string).collect();
            if mode.is_transitive() {
                for older in &earlier[..earlier.len() - 1] {
                    let (older_view, _) = renamed_view(&older.schema, &schema.renames, mode);
                    let r = compat::check(&older_view, &schema.schema, mode, options);
                    breaking.extend(r.breaking().map(|d| format!("{d} (against {})", older.version)));
                }
            }
            let needed = Bump::required(!breaking.is_empty(), !renamed.is_empty() || !report.is_equivalent());
            if let Err(BumpTooSmall { actual, needed, smallest }) = Bump::check(&previous.version, &version, needed) {
                let why = if needed == Bump::Major {
                    let renames = if schema.renames.is_empty() || carries_renames(mode) {
                        String::new()
                    } else {
                        format!(
                            " (a renamed field is read from old events by the generated upcaster, which makes a \
                             rename BACKWARD compatible only: under {mode} compatibility, readers of {} cannot read \
                             the new key)",
                            previous.version
                        )
                    };
                    format!("the change breaks {mode} compatibility: {}{renames}", breaking.join("; "))
                } else {
                    let changes: Vec<String> =
                        renamed.iter().cloned().chain(report.differences.iter().map(ToString::to_string)).collect();
                    format!("the schema changed compatibly ({})", changes.join("; "))
                };
                return Err(Error::Schema(format!(
                    "`{name}` {} → {version} is a {actual} bump, but {why}; a {needed} bump is needed: use version {smallest} or later",
                    previous.version,
                )));
            }
        }
        versions.insert(version, entry);
        Ok(())
    }

    /// The schema of `name` at `version`.
    pub fn get(&self, name: &str, version: &str) -> Option<&RegisteredSchema> {
        let version = Version::parse(version).ok()?;
        self.schemas.get(name)?.get(&version)
    }

    /// The newest schema of `name`.
    pub fn latest(&self, name: &str) -> Option<&RegisteredSchema> {
        self.schemas.get(name)?.values().next_back()
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Vec<&Version> {
        self.schemas.get(name).map(|v| v.keys().collect()).unwrap_or_default()
    }

    /// Every registered schema, by name then version.
    pub fn list(&self) -> impl Iterator<Item = &RegisteredSchema> {
        self.schemas.values().flat_map(BTreeMap::values)
    }

    /// Whether `name` has any schema.
    pub fn contains(&self, name: &str) -> bool {
        self.schemas.contains_key(name)
    }

    /// The schema an event is checked against: its own version if it names one, else the
    /// newest. Errors on an unknown name or version.
    pub fn schema_for<T: ?Sized>(&self, event: &Envelope<T>) -> Result<&RegisteredSchema> {
        let name = event.event_type.as_str();
        let versions = self.schemas.get(name).ok_or_else(|| Error::Validation {
            event_type: name.to_owned(),
            message: "unknown event type: no schema is registered under this name".into(),
        })?;
        match &event.version {
            Some(v) => {
                let parsed = Version::parse(v).map_err(|e| Error::Validation {
                    event_type: name.to_owned(),
                    message: format!("invalid schema version `{v}`: {e}"),
                })?;
                versions.get(&parsed).ok_or_else(|| {
                    let known: Vec<String> = versions.keys().map(ToString::to_string).collect();
                    Error::Validation {
                        event_type: name.to_owned(),
                        message: format!("unknown version `{v}`; registered versions: {}", known.join(", ")),
                    }
                })
            }
            None => versions.values().next_back().ok_or_else(|| Error::Validation {
                event_type: name.to_owned(),
                message: "no schema version registered".into(),
            }),
        }
    }

    /// Validates an event's payload against its schema, reporting every violation with its
    /// JSON pointer in one error.
    pub fn validate<T: EventData>(&self, event: &Envelope<T>) -> Result<()> {
        self.schema_for(event)?.validate_value_of(event)
    }

    /// The plan that brings payloads of `old` to `new` (the seed's `generate_migration`):
    /// fields added (with their defaults), removed, renamed (`new.renames`) and retyped.
    pub fn generate_migration(&self, old: &EventSchema, new: &EventSchema) -> Result<MigrationPlan> {
        if old.name != new.name {
            return Err(Error::Schema(format!(
                "a migration goes between versions of one event, not from `{}` to `{}`",
                old.name, new.name
            )));
        }
        let parse = |s: &EventSchema| {
            Version::parse(&s.version)
                .map_err(|e| Error::Schema(format!("schema `{}` has an invalid version `{}`: {e}", s.name, s.version)))
        };
        let (from, to) = (parse(old)?, parse(new)?);
        if to <= from {
            return Err(Error::Schema(format!("a migration goes to a newer version, not from {from} to {to}")));
        }
        Ok(MigrationPlan::between(&new.name, from, &old.schema, to, &new.schema, &new.renames))
    }

    /// How `candidate` compares with the newest registered version of its name, under the
    /// name's mode (transitive modes: against every version; the report then lists the
    /// differences from each).
    pub fn check_compatibility(&self, candidate: &EventSchema) -> CompatibilityReport {
        let mode = self.mode(&candidate.name);
        let options = candidate.check_options();
        let Some(versions) = self.schemas.get(&candidate.name) else {
            return CompatibilityReport { mode, differences: Vec::new() };
        };
        let against: Vec<&RegisteredSchema> = if mode.is_transitive() {
            versions.values().collect()
        } else {
            versions.values().next_back().into_iter().collect()
        };
        let mut differences = Vec::new();
        for old in against {
            let (view, _) = renamed_view(&old.schema, &candidate.renames, mode);
            differences.extend(compat::check(&view, &candidate.schema, mode, options).differences);
        }
        CompatibilityReport { mode, differences }
    }
}

/// Whether `mode` lets the generated upcaster carry renamed fields: it reads old events
/// with new code, which is what BACKWARD compatibility asks; FORWARD and FULL also ask old
/// code to read new events, which a rename breaks.
fn carries_renames(mode: CompatibilityMode) -> bool {
    matches!(mode, CompatibilityMode::Backward | CompatibilityMode::BackwardTransitive)
}

/// `old` as the upcaster presents it to the new version under `mode`: each field renamed
/// in `renames` (`(new_key, old_key)`) moved to its new key in the top-level `properties`
/// and `required`. Returns the view and a description of each rename applied.
fn renamed_view(old: &Value, renames: &[(String, String)], mode: CompatibilityMode) -> (Value, Vec<String>) {
    let mut view = old.clone();
    let mut applied = Vec::new();
    if !carries_renames(mode) {
        return (view, applied);
    }
    for (new_key, old_key) in renames {
        let Some(properties) = view.get_mut("properties").and_then(Value::as_object_mut) else { break };
        if properties.contains_key(new_key) {
            continue;
        }
        let Some(field) = properties.remove(old_key) else { continue };
        properties.insert(new_key.clone(), field);
        if let Some(required) = view.get_mut("required").and_then(Value::as_array_mut) {
            for key in required.iter_mut() {
                if key.as_str() == Some(old_key.as_str()) {
                    *key = Value::String(new_key.clone());
                }
            }
        }
        applied.push(format!("field `{old_key}` renamed to `{new_key}`"));
    }
    (view, applied)
}
