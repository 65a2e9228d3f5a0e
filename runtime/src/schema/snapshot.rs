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
//! Record or refresh snapshots with `BAE_EVENTS_LOCK=update cargo test`: the derive writes
//! each event's fields at compile time, this check writes its schema at run time.

use std::fmt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde_json::Value;

use super::compat::{self, CheckOptions};
use crate::error::{Error, Result};
use crate::event::registered_events;

/// The environment variable that turns on update mode (`update` or `overwrite`).
pub const UPDATE_VAR: &str = "BAE_EVENTS_LOCK";

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
/// (`BAE_EVENTS_LOCK=update`) writes the schemas instead.
pub fn check_snapshots(dir: impl AsRef<Path>) -> Result<SnapshotReport> {
    let update = std::env::var(UPDATE_VAR).is_ok_and(|v| v == "update" || v == "overwrite");
    check_snapshots_with(dir, update)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Schema(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Schema(format!("{} is not valid JSON: {e}", path.display())))
}

/// [`check_snapshots`] with update mode given explicitly.
pub fn check_snapshots_with(dir: impl AsRef<Path>, update: bool) -> Result<SnapshotReport> {
    let dir = dir.as_ref();
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
    for event in registered_events() {
        let id = format!("{}@{}", event.name, event.version);
        let path: PathBuf = dir.join(format!("{id}.json"));
        let schema = event.schema.to_value();
        if !path.is_file() || (update && read_json(&path)?.get("schema").is_none()) {
            if update {
                let mut doc = if path.is_file() {
                    read_json(&path)?
                } else {
                    serde_json::json!({ "name": event.name, "version": event.version.to_string(), "type": event.type_name })
                };
                record_schema(&mut doc, event.field_shapes, schema.clone());
                write_json(&path, &doc)?;
                report.migrations.extend(write_migrations(dir, event.name, &event.version, &schema)?);
                report.written.push(id);
            } else {
                report.missing.push(id);
            }
            continue;
        }
        let mut doc = read_json(&path)?;
        match doc.get("schema") {
            Some(recorded) if !update => {
                let diff = compat::check(
                    recorded,
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
            _ if update => {
                record_schema(&mut doc, event.field_shapes, schema);
                write_json(&path, &doc)?;
                report.written.push(id);
            }
            _ => report.missing.push(id),
        }
    }
    // A new version must also follow the version rules against the newest earlier snapshot.
    if !update {
        for event in registered_events() {
            let earlier = snapshots_of(dir, event.name).into_iter().rfind(|(v, _)| *v < event.version);
            let Some((previous, path)) = earlier else { continue };
            if dir.join(format!("{}@{}.json", event.name, event.version)).is_file() {
                continue;
            }
            let Some(old) = read_json(&path)?.get("schema").cloned() else { continue };
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
                schema: event.schema.to_value(),
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
    let Some((previous, path)) = snapshots_of(dir, name).into_iter().rfind(|(v, _)| v < version) else {
        return Ok(Vec::new());
    };
    let Some(old) = read_json(&path)?.get("schema").cloned() else { return Ok(Vec::new()) };
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

/// Puts `schema` into a snapshot document, and the fields the derive compares at compile
/// time when the document has none yet (the crate may not have been recompiled in update
/// mode: cargo does not rebuild for an environment variable).
fn record_schema(doc: &mut Value, shapes: &[(&str, &str, bool)], schema: Value) {
    let Some(map) = doc.as_object_mut() else { return };
    map.entry("fields").or_insert_with(|| {
        shapes
            .iter()
            .map(|(key, ty, optional)| serde_json::json!({ "key": key, "type": ty, "optional": optional }))
            .collect()
    });
    map.insert("schema".into(), schema);
}

fn write_json(path: &Path, doc: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| Error::Schema(e.to_string()))? + "\n";
    std::fs::write(path, text).map_err(|e| Error::Schema(format!("cannot write {}: {e}", path.display())))
}

fn snapshots_of(dir: &Path, name: &str) -> Vec<(Version, PathBuf)> {
    let prefix = format!("{name}@");
    let mut out: Vec<(Version, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let v = file.strip_prefix(&prefix)?.strip_suffix(".json")?;
            Some((Version::parse(v).ok()?, entry.path()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
