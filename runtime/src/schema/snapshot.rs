//! The run-time half of schema snapshots: full JSON Schemas in `events.lock/`.
//!
//! `#[derive(Event)]` compares each struct's fields with `events.lock/<name>@<version>.json`
//! when the crate compiles (token level: keys, types as written, optionality). A change
//! deeper down (a field added inside a nested struct) does not show in those tokens, so
//! [`check_snapshots`] compares the full JSON Schema of every derived event with the one
//! recorded in its snapshot. Call it from a test:
//!
//! ```no_run
//! #[test]
//! fn events_lock() {
//!     better_auth_events_runtime::schema::check_snapshots("events.lock").unwrap();
//! }
//! ```
//!
//! Record or refresh snapshots with `BAE_EVENTS_LOCK=update cargo test`: in update mode
//! this check writes each event's snapshot, both the fields the derive compares and the
//! full schema. The derive only reads snapshots; it never writes a file.
//!
//! The file format and the version rules live in the `better-auth-events-lock` crate,
//! which the derive uses too.

use std::fmt;
use std::path::{Path, PathBuf};

use better_auth_events_lock::{self as lock, FieldShape, Snapshot};
use semver::Version;
use serde_json::Value;

use super::compat::{self, CheckOptions};
use crate::error::{Error, Result};
use crate::event::{EventInfo, registered_events};

/// The environment variable that turns on update mode (`update` or `overwrite`).
pub const UPDATE_VAR: &str = lock::UPDATE_VAR;

/// What [`check_snapshots`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotReport {
    /// Snapshots whose schema matched.
    pub checked: Vec<String>,
    /// Snapshots whose schema was written (update mode).
    pub written: Vec<String>,
    /// Derived events without a snapshot file (record them with update mode).
    pub missing: Vec<String>,
    /// Whether the snapshot directory was missing (nothing was checked).
    pub no_directory: bool,
    /// Migration files written in update mode (for new versions with an earlier snapshot
    /// and a plan that needs no user code), under `events.lock/migrations/{postgres,sqlite}`.
    pub migrations: Vec<PathBuf>,
}

impl fmt::Display for SnapshotReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.no_directory {
            return write!(
                f,
                "no events.lock directory: run `{UPDATE_VAR}=update cargo test` once to create it with the schemas of your events, then commit it"
            );
        }
        write!(f, "{} checked, {} written", self.checked.len(), self.written.len())?;
        if !self.missing.is_empty() {
            write!(f, ", not recorded yet: {} (run with {UPDATE_VAR}=update)", self.missing.join(", "))?;
        }
        Ok(())
    }
}

/// Checks every derived event against its snapshot in `dir`; in update mode
/// (`BAE_EVENTS_LOCK=update`) writes every snapshot instead: the fields the derive
/// compares and the schema, creating `dir` if needed.
pub fn check_snapshots(dir: impl AsRef<Path>) -> Result<SnapshotReport> {
    check_snapshots_with(dir, lock::update_mode())
}

fn read(path: &Path) -> Result<Snapshot> {
    Snapshot::read(path).map_err(|e| Error::Schema(e.to_string()))
}

fn write(path: &Path, snapshot: &Snapshot) -> Result<()> {
    snapshot.write(path).map(drop).map_err(|e| Error::Schema(e.to_string()))
}

/// [`check_snapshots`] with update mode given explicitly.
///
/// Only the program's own events are checked or written: the built-in authentication
/// events are locked in the repository of `better_auth_events`, whose own tests check them.
pub fn check_snapshots_with(dir: impl AsRef<Path>, update: bool) -> Result<SnapshotReport> {
    let events: Vec<EventInfo> = registered_events().into_iter().filter(|e| !e.built_in).collect();
    check_events(dir.as_ref(), update, &events)
}

/// [`check_snapshots_with`] for the built-in authentication events only: how
/// `better_auth_events` checks its own snapshots.
#[doc(hidden)]
pub fn check_built_in_snapshots(dir: impl AsRef<Path>, update: bool) -> Result<SnapshotReport> {
    let events: Vec<EventInfo> = registered_events().into_iter().filter(|e| e.built_in).collect();
    check_events(dir.as_ref(), update, &events)
}

fn check_events(dir: &Path, update: bool, events: &[EventInfo]) -> Result<SnapshotReport> {
    let mut report = SnapshotReport::default();
    if !dir.is_dir() && update {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Schema(format!("cannot create the snapshot directory {}: {e}", dir.display())))?;
    }
    if !dir.is_dir() {
        report.no_directory = true;
        tracing::info!(target: "better_auth_events", "{report}");
        return Ok(report);
    }
    let mut problems = Vec::new();
    for event in events {
        let id = format!("{}@{}", event.name, event.version);
        let path: PathBuf = dir.join(lock::file_name(event.name, &event.version.to_string()));
        let schema = event.schema.as_value().clone();
        let recorded = if path.is_file() { Some(read(&path)?) } else { None };
        if update {
            let first_schema = recorded.as_ref().is_none_or(|s| s.schema.is_none());
            let mut snapshot = recorded.unwrap_or_else(|| Snapshot::new(event.name, event.version.to_string()));
            snapshot.type_name.get_or_insert_with(|| event.type_name.to_owned());
            snapshot.fields = Some(field_shapes(event.field_shapes));
            snapshot.schema = Some(schema.clone());
            write(&path, &snapshot)?;
            if first_schema {
                report.migrations.extend(write_migrations(dir, event.name, &event.version, &schema)?);
            }
            report.written.push(id);
            continue;
        }
        let Some(recorded) = recorded.and_then(|s| s.schema) else {
            report.missing.push(id);
            continue;
        };
        let diff = compat::check(
            &recorded,
            &schema,
            compat::CompatibilityMode::Full,
            CheckOptions { closed_by_default: true },
        );
        if diff.is_equivalent() {
            report.checked.push(id);
        } else {
            let changes: Vec<String> = diff
                .differences
                .iter()
                .filter(|d| d.effect() != compat::Effect::None)
                .map(ToString::to_string)
                .collect();
            problems.push(format!(
                "`{}` {} changed since its snapshot {}: {}; a released version never changes, so bump the version",
                event.name,
                event.version,
                path.display(),
                changes.join("; ")
            ));
        }
    }
    // A new version must also follow the version rules against the newest earlier snapshot.
    if !update {
        for event in events {
            if dir.join(lock::file_name(event.name, &event.version.to_string())).is_file() {
                continue;
            }
            if let Some((newest, newest_path)) = lock::versions_of(dir, event.name).pop()
                && newest > event.version
            {
                problems.push(format!(
                    "`{}` is declared as {}, but {newest} is released already ({}); versions never go backwards: use a \
                     version after {newest}",
                    event.name,
                    event.version,
                    newest_path.display()
                ));
                continue;
            }
            let Some((previous, path)) = lock::previous_of(dir, event.name, &event.version) else { continue };
            let Some(old) = read(&path)?.schema else { continue };
            let mut registry = super::SchemaRegistry::new();
            registry.register(super::EventSchema {
                name: event.name.to_owned(),
                version: previous.to_string(),
                schema: old,
                origin: super::SchemaOrigin::Rust { type_name: event.type_name },
                renames: Vec::new(),
            })?;
            if let Err(e) = registry.register(super::EventSchema {
                name: event.name.to_owned(),
                version: event.version.to_string(),
                schema: event.schema.as_value().clone(),
                origin: super::SchemaOrigin::Rust { type_name: event.type_name },
                renames: Vec::new(),
            }) {
                problems.push(format!("{e} (compared with {})", path.display()));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Schema(problems.join("\n")));
    }
    Ok(report)
}

/// In update mode, for a version recorded for the first time: the SQL of the plan from the
/// newest earlier snapshot, when the plan needs no user code.
fn write_migrations(dir: &Path, name: &str, version: &Version, schema: &Value) -> Result<Vec<PathBuf>> {
    let Some((previous, path)) = lock::previous_of(dir, name, version) else {
        return Ok(Vec::new());
    };
    let Some(old) = read(&path)?.schema else { return Ok(Vec::new()) };
    let renames: Vec<(String, String)> = crate::event::registrations_by_name()
        .get(name)
        .and_then(|rs| rs.iter().find(|r| r.version == version.to_string()))
        .map(|r| r.renamed_fields.iter().map(|(n, o)| ((*n).to_owned(), (*o).to_owned())).collect())
        .unwrap_or_default();
    let plan = super::MigrationPlan::between(name, previous, &old, version.clone(), schema, &renames);
    if !plan.is_automatic() || plan.steps.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (sub, dialect) in [("postgres", super::SqlDialect::Postgres), ("sqlite", super::SqlDialect::Sqlite)] {
        out.push(plan.write_sql_migration(dir.join("migrations").join(sub), dialect)?);
    }
    Ok(out)
}

/// The fields the derive compares at compile time, as the derive recorded them in
/// `TypedEvent::FIELD_SHAPES`.
fn field_shapes(shapes: &[(&str, &str, bool)]) -> Vec<FieldShape> {
    shapes.iter().map(|(key, ty, optional)| FieldShape::new(*key, *ty, *optional)).collect()
}
