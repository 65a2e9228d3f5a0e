//! The event traits: [`TypedEvent`], implemented by `#[derive(Event)]`, and [`EventData`],
//! the object-safe view of any event payload (typed or dynamic JSON).

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An event type with a name, a semver version and a JSON Schema.
///
/// Implemented by `#[derive(Event)]`, which also registers the type program-wide so that
/// [`registered_events`] lists it. Implement it by hand only for types the derive cannot
/// see; such types are not listed by [`registered_events`] unless you submit an
/// [`EventRegistration`] for them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event type",
    note = "add `#[derive(Event, Serialize, Deserialize, JsonSchema)]` to `{Self}`"
)]
pub trait TypedEvent: Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static {
    /// The event name (CloudEvents `type`), for example `user.created`.
    const NAME: &'static str;
    /// The schema version, a semver version checked at compile time by the derive.
    const VERSION: &'static str;
    /// JSON keys of the fields marked `#[event(pii)]` (after serde renames).
    const PII_FIELDS: &'static [&'static str] = &[];
    /// `(new_key, old_key)` of fields marked `#[event(renamed_from = "old_key")]`.
    const RENAMED_FIELDS: &'static [(&'static str, &'static str)] = &[];
    /// `#[event(drop_versions_before = "2.0.0")]`: stored events of earlier versions are
    /// not read as this type (there is no upcaster from them); reading one is an error that
    /// says so.
    const DROPPED_BEFORE: Option<&'static str> = None;
    /// `(json_key, type_as_written, optional)` of every serialized field, as the snapshot
    /// check of the derive records them in `events.lock/`.
    #[doc(hidden)]
    const FIELD_SHAPES: &'static [(&'static str, &'static str, bool)] = &[];

    /// The [`crate::EventType`] of this event: its built-in variant, or
    /// [`crate::EventType::Custom`] with a copy of [`TypedEvent::NAME`]. Which of the two
    /// is decided when compiling.
    #[inline]
    fn event_type() -> crate::EventType {
        match const { crate::EventType::built_in_named(Self::NAME) } {
            Some(built_in) => built_in,
            None => crate::EventType::Custom(Self::NAME.to_owned()),
        }
    }

    /// The JSON Schema of this event's payload.
    fn event_schema() -> schemars::Schema {
        schemars::generate::SchemaSettings::draft2020_12().into_generator().into_root_schema_for::<Self>()
    }
}

/// The object-safe view of an event payload: a [`TypedEvent`] or a dynamic JSON [`Value`].
///
/// Middleware sees events as `Envelope<dyn EventData>`: it can read the header, read the
/// payload as JSON, downcast it to the typed struct, or replace it.
pub trait EventData: Any + Send + Sync {
    /// The payload as JSON.
    fn to_json(&self) -> Result<Value, serde_json::Error>;

    /// Replaces the payload with `value`, deserialized into the payload's own type.
    fn set_json(&mut self, value: Value) -> Result<(), serde_json::Error>;

    /// The payload for serde, without an intermediate JSON value.
    fn as_serialize(&self) -> &dyn erased_serde::Serialize;

    /// The payload as [`Any`], to downcast to the typed struct.
    fn as_any(&self) -> &dyn Any;

    /// The payload as mutable [`Any`].
    fn as_any_mut(&mut self) -> &mut dyn Any;

    /// JSON keys that hold personal data (`#[event(pii)]`); empty for dynamic payloads.
    fn pii_fields(&self) -> &'static [&'static str];

    /// The schema version of a typed payload; `None` for a dynamic one.
    fn schema_version(&self) -> Option<&'static str>;

    /// The Rust type name of the payload.
    fn type_name(&self) -> &'static str;

    /// Whether the payload is a dynamic JSON value rather than a typed struct.
    fn is_dynamic(&self) -> bool {
        false
    }
}

impl<T: TypedEvent> EventData for T {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }

    fn set_json(&mut self, value: Value) -> Result<(), serde_json::Error> {
        *self = serde_json::from_value(value)?;
        Ok(())
    }

    fn as_serialize(&self) -> &dyn erased_serde::Serialize {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn pii_fields(&self) -> &'static [&'static str] {
        T::PII_FIELDS
    }

    fn schema_version(&self) -> Option<&'static str> {
        Some(T::VERSION)
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

impl EventData for Value {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        Ok(self.clone())
    }

    fn set_json(&mut self, value: Value) -> Result<(), serde_json::Error> {
        *self = value;
        Ok(())
    }

    fn as_serialize(&self) -> &dyn erased_serde::Serialize {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn pii_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn schema_version(&self) -> Option<&'static str> {
        None
    }

    fn type_name(&self) -> &'static str {
        "serde_json::Value"
    }

    fn is_dynamic(&self) -> bool {
        true
    }
}

impl dyn EventData {
    /// Whether the payload is a `T`.
    #[inline]
    pub fn is<T: EventData>(&self) -> bool {
        // Upcast, not `as_any()`: one virtual call instead of two.
        (self as &dyn Any).type_id() == TypeId::of::<T>()
    }

    /// The payload as a `T`, if it is one.
    #[inline]
    pub fn downcast_ref<T: EventData>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref::<T>()
    }

    /// The payload as a mutable `T`, if it is one.
    #[inline]
    pub fn downcast_mut<T: EventData>(&mut self) -> Option<&mut T> {
        (self as &mut dyn Any).downcast_mut::<T>()
    }
}

/// A program-wide registration of an event type, submitted by `#[derive(Event)]`.
#[derive(Clone, Copy)]
pub struct EventRegistration {
    /// Event name.
    pub name: &'static str,
    /// Schema version.
    pub version: &'static str,
    /// JSON keys of personal-data fields.
    pub pii_fields: &'static [&'static str],
    /// Rust type name.
    pub type_name: fn() -> &'static str,
    /// Rust type id.
    pub type_id: fn() -> TypeId,
    /// JSON Schema of the payload.
    pub schema: fn() -> schemars::Schema,
    /// Module the type is defined in.
    pub module_path: &'static str,
    /// `(new_key, old_key)` of renamed fields.
    pub renamed_fields: &'static [(&'static str, &'static str)],
    /// `(json_key, type_as_written, optional)` of every serialized field: what the
    /// derive's compile-time snapshot check compares.
    pub field_shapes: &'static [(&'static str, &'static str, bool)],
}

impl EventRegistration {
    /// The registration of `T`, as the derive submits it.
    pub const fn of<T: TypedEvent>(module_path: &'static str) -> Self {
        Self {
            name: T::NAME,
            version: T::VERSION,
            pii_fields: T::PII_FIELDS,
            type_name: std::any::type_name::<T>,
            type_id: TypeId::of::<T>,
            schema: T::event_schema,
            module_path,
            renamed_fields: T::RENAMED_FIELDS,
            field_shapes: T::FIELD_SHAPES,
        }
    }
}

inventory::collect!(EventRegistration);

/// What [`registered_events`] lists for one event type.
#[derive(Clone, Debug)]
pub struct EventInfo {
    /// Event name, for example `user.created`.
    pub name: &'static str,
    /// Schema version.
    pub version: semver::Version,
    /// Rust type name.
    pub type_name: &'static str,
    /// JSON keys of fields marked `#[event(pii)]`.
    pub pii_fields: &'static [&'static str],
    /// JSON Schema of the payload.
    pub schema: schemars::Schema,
    /// `(json_key, type_as_written, optional)` of every serialized field, as the derive's
    /// compile-time snapshot check records them.
    pub field_shapes: &'static [(&'static str, &'static str, bool)],
    /// Whether it is one of the built-in authentication events of `better_auth_events::auth`
    /// (locked in that crate's repository, not in yours).
    pub built_in: bool,
}

/// The module of the built-in authentication events (`better_auth_events::auth`).
pub(crate) const BUILT_IN_MODULE: &str = "better_auth_events::auth";

impl EventRegistration {
    /// Whether this is one of the built-in authentication events of `better_auth_events::auth`.
    pub fn is_built_in(&self) -> bool {
        self.module_path == BUILT_IN_MODULE
    }
}

/// The registrations that count: every `#[derive(Event)]` type of the program, except a
/// built-in authentication event whose name the program defines itself. A program that
/// derives its own `user.created` means its own, in every version, so the built-in
/// `user.created` neither clashes with it nor joins its version history.
pub(crate) fn effective_registrations() -> &'static [&'static EventRegistration] {
    static LIST: OnceLock<Vec<&'static EventRegistration>> = OnceLock::new();
    LIST.get_or_init(|| {
        let own: HashSet<&'static str> =
            inventory::iter::<EventRegistration>.into_iter().filter(|r| !r.is_built_in()).map(|r| r.name).collect();
        inventory::iter::<EventRegistration>
            .into_iter()
            .filter(|r| !(r.is_built_in() && own.contains(r.name)))
            .collect()
    })
}

/// Every `#[derive(Event)]` type linked into the program, sorted by name then version.
///
/// A built-in authentication event (of `better_auth_events::auth`) is left out when the
/// program derives its own event of the same name: the program's definition wins. Two of
/// the program's own types registering the same `name@version` are both listed; the
/// schema registry reports that as an error when it is built.
pub fn registered_events() -> Vec<EventInfo> {
    let mut out: Vec<EventInfo> = effective_registrations()
        .iter()
        .map(|r| EventInfo {
            name: r.name,
            // The derive checked the version at compile time; a hand-written impl with a
            // bad version is listed as 0.0.0 rather than panicking.
            version: semver::Version::parse(r.version).unwrap_or(semver::Version::new(0, 0, 0)),
            type_name: (r.type_name)(),
            pii_fields: r.pii_fields,
            schema: (r.schema)(),
            field_shapes: r.field_shapes,
            built_in: r.is_built_in(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(b.name).then_with(|| a.version.cmp(&b.version)));
    out
}

/// The registrations by name, built once.
pub(crate) fn registrations_by_name() -> &'static HashMap<&'static str, Vec<&'static EventRegistration>> {
    static MAP: OnceLock<HashMap<&'static str, Vec<&'static EventRegistration>>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map: HashMap<&'static str, Vec<&'static EventRegistration>> = HashMap::new();
        for r in effective_registrations() {
            map.entry(r.name).or_default().push(r);
        }
        map
    })
}

/// The PII keys registered for an event name (the union over its versions).
pub(crate) fn registered_pii_fields(name: &str) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = registrations_by_name()
        .get(name)
        .map(|rs| rs.iter().flat_map(|r| r.pii_fields.iter().copied()).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    keys.dedup();
    keys
}
