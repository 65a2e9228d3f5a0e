//! Validation of dynamic events against the schema registry.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use crate::envelope::Event;
use crate::error::{Error, Result};
use crate::event::BUILT_IN_MODULE;
use crate::schema::{RegisteredSchema, SchemaOrigin, SchemaRegistry};

/// How strictly dynamic events are checked against the schema registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValidationMode {
    /// An invalid event is an [`Error::Validation`] (the default).
    #[default]
    Strict,
    /// An invalid event is logged and let through.
    Lenient,
    /// Dynamic events are not checked.
    Off,
}

/// The bus's validation settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Validation {
    pub(super) mode: ValidationMode,
    pub(super) reject_unknown: bool,
    /// Whether dynamic events with a built-in authentication name are checked too.
    pub(super) built_in: bool,
}

/// Checks a dynamic event against the registry; on success it carries the version it was
/// checked against.
///
/// Events whose schema is that of a built-in authentication event (the facade's
/// `better_auth_events::auth` types: `user.created`, `login.before`, …) are checked only
/// when [`Validation::built_in`] is on: by default they pass as they are, so
/// `Event::new("user.created")` with a partial payload, or none, can be emitted. A schema
/// the program registers under such a name (its own `#[derive(Event)]` type, or one given
/// to the registry) is always checked.
pub(super) fn validate_dynamic(registry: &SchemaRegistry, validation: Validation, env: &mut Event) -> Result<()> {
    if validation.mode == ValidationMode::Off {
        return Ok(());
    }
    if !registry.contains(env.event_type.as_str()) {
        if validation.reject_unknown {
            return Err(Error::Validation {
                event_type: env.event_type.to_string(),
                message:
                    "unknown event type: no schema is registered under this name, and the bus rejects unknown events"
                        .into(),
            });
        }
        return Ok(());
    }
    if !validation.built_in
        && let Ok(schema) = registry.schema_for(env)
        && is_built_in(schema)
    {
        return Ok(());
    }
    let result = registry.schema_for(env).and_then(|schema| {
        schema.validate_value_of(env)?;
        Ok(schema.version.to_string())
    });
    match result {
        Ok(version) => {
            if env.version.is_none() {
                env.version = Some(Cow::Owned(version));
            }
            Ok(())
        }
        Err(e) if validation.mode == ValidationMode::Lenient => {
            tracing::warn!(target: "better_auth_events", event_id = %env.id, "invalid dynamic event let through (lenient validation): {}", crate::ErrorChain(&e));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether `schema` is that of one of the facade's built-in authentication events.
fn is_built_in(schema: &RegisteredSchema) -> bool {
    matches!(schema.origin, SchemaOrigin::Rust { type_name }
        if type_name.strip_prefix(BUILT_IN_MODULE).is_some_and(|rest| rest.starts_with("::")))
}

/// The registry of every `#[derive(Event)]` type, built once per process; the error of
/// their schemas when they conflict.
pub(super) fn default_registry() -> Result<Arc<SchemaRegistry>> {
    static DEFAULT: OnceLock<std::result::Result<Arc<SchemaRegistry>, String>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            SchemaRegistry::from_registered_events().map(Arc::new).map_err(|e| crate::ErrorChain(&e).to_string())
        })
        .clone()
        .map_err(Error::Schema)
}
