//! Schema snapshots checked at compile time: `events.lock/<name>@<version>.json` in the
//! crate, one file per released event version, committed.
//!
//! The derive sees tokens, so it compares the token-level shape: each field's JSON key, its
//! type as written, and whether it may be absent (`Option` or `#[serde(default)]`). A
//! change deeper down (inside a nested type) is caught at run time by
//! `schema::check_snapshots`, which compares full JSON Schemas.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The environment variable that switches to update mode (`update` or `overwrite`).
pub(crate) const UPDATE_VAR: &str = "BAE_EVENTS_LOCK";
/// The environment variable that moves the snapshot directory (default:
/// `$CARGO_MANIFEST_DIR/events.lock`).
pub(crate) const DIR_VAR: &str = "BAE_EVENTS_LOCK_DIR";

/// One field as the snapshot records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FieldShape {
    pub(crate) key: String,
    pub(crate) ty: String,
    pub(crate) optional: bool,
}

/// What changed from one shape to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ShapeChange {
    Added { key: String, optional: bool },
    Removed { key: String },
    TypeChanged { key: String, from: String, to: String },
    BecameRequired { key: String },
    BecameOptional { key: String },
}

impl ShapeChange {
    /// The field it is about.
    pub(crate) fn key(&self) -> &str {
        match self {
            Self::Added { key, .. }
            | Self::Removed { key }
            | Self::TypeChanged { key, .. }
            | Self::BecameRequired { key }
            | Self::BecameOptional { key } => key,
        }
    }

    /// Whether the change breaks BACKWARD compatibility of a closed content model (a Rust
    /// struct never carries unknown fields): everything but an added optional field or a
    /// field that became optional.
    pub(crate) fn is_breaking(&self) -> bool {
        !matches!(self, Self::Added { optional: true, .. } | Self::BecameOptional { .. })
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Added { key, optional: true } => format!("optional field `{key}` added"),
            Self::Added { key, optional: false } => format!("required field `{key}` added"),
            Self::Removed { key } => format!("field `{key}` removed"),
            Self::TypeChanged { key, from, to } => format!("field `{key}` changed type from `{from}` to `{to}`"),
            Self::BecameRequired { key } => format!("field `{key}` became required"),
            Self::BecameOptional { key } => format!("field `{key}` became optional"),
        }
    }
}

/// The changes from `old` to `new`.
pub(crate) fn diff(old: &[FieldShape], new: &[FieldShape]) -> Vec<ShapeChange> {
    let mut out = Vec::new();
    for o in old {
        match new.iter().find(|n| n.key == o.key) {
            None => out.push(ShapeChange::Removed { key: o.key.clone() }),
            Some(n) => {
                if n.ty != o.ty {
                    out.push(ShapeChange::TypeChanged { key: o.key.clone(), from: o.ty.clone(), to: n.ty.clone() });
                } else if n.optional && !o.optional {
                    out.push(ShapeChange::BecameOptional { key: o.key.clone() });
                } else if !n.optional && o.optional {
                    out.push(ShapeChange::BecameRequired { key: o.key.clone() });
                }
            }
        }
    }
    for n in new {
        if !old.iter().any(|o| o.key == n.key) {
            out.push(ShapeChange::Added { key: n.key.clone(), optional: n.optional });
        }
    }
    out
}

/// The snapshot directory, if snapshots are in use (the directory exists, or update mode
/// is on: then it is created).
///
/// Without one, snapshots are simply not checked; the first derive of a compilation says
/// once, on the build's output, how to start using them (not for this crate's own
/// events, and not when `BAE_EVENTS_LOCK=off`).
pub(crate) fn dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(DIR_VAR) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?).join("events.lock"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if update_mode() {
        return match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                // The derive has no span to hang this on; say it rather than skip silently.
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "warning: better-auth-events: cannot create {} ({e}); no snapshot was written",
                        dir.display()
                    );
                }
                None
            }
        };
    }
    note_missing(&dir);
    None
}

/// Prints, once per compilation, how to start using snapshots. A proc macro cannot emit a
/// warning on stable Rust; cargo shows what the compiler prints that is not a diagnostic.
fn note_missing(dir: &Path) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let own = std::env::var("CARGO_PKG_NAME").is_ok_and(|p| p == "better-auth-events");
    let off = std::env::var(UPDATE_VAR).is_ok_and(|v| v == "off");
    let primary = std::env::var_os("CARGO_PRIMARY_PACKAGE").is_some();
    if own || off || !primary || SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "note: better-auth-events: no {} directory, so event schemas are not checked at \
             compile time; run `{UPDATE_VAR}=update cargo test` once to create it with a snapshot \
             of every event, then commit it (`{UPDATE_VAR}=off` silences this note)",
            dir.display()
        );
    }
}

/// Whether update mode is on.
pub(crate) fn update_mode() -> bool {
    std::env::var(UPDATE_VAR).is_ok_and(|v| v == "update" || v == "overwrite")
}

pub(crate) fn file_name(name: &str, version: &str) -> String {
    format!("{name}@{version}.json")
}

/// Reads a snapshot's fields; `Err` explains what is wrong with the file.
pub(crate) fn read(path: &Path) -> Result<Vec<FieldShape>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let fields = doc
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{} has no `fields` list", path.display()))?;
    fields
        .iter()
        .map(|f| {
            Ok(FieldShape {
                key: f.get("key").and_then(Value::as_str).ok_or("a field without `key`")?.to_owned(),
                ty: f.get("type").and_then(Value::as_str).ok_or("a field without `type`")?.to_owned(),
                optional: f.get("optional").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect::<Result<_, &str>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes (or rewrites) a snapshot's fields, keeping a `schema` the run-time check wrote.
pub(crate) fn write(
    path: &Path,
    name: &str,
    version: &str,
    type_name: &str,
    fields: &[FieldShape],
) -> Result<(), String> {
    let previous: Option<Value> = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok());
    let mut doc = json!({
        "name": name,
        "version": version,
        "type": type_name,
        "fields": fields.iter().map(|f| json!({ "key": f.key, "type": f.ty, "optional": f.optional })).collect::<Vec<_>>(),
    });
    if let (Some(schema), Some(map)) = (previous.as_ref().and_then(|p| p.get("schema")), doc.as_object_mut()) {
        map.insert("schema".into(), schema.clone());
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The snapshots of `name` in `dir` other than `version`: (version, path), oldest first.
pub(crate) fn versions_of(dir: &Path, name: &str) -> Vec<(semver::Version, PathBuf)> {
    let prefix = format!("{name}@");
    let mut out: Vec<(semver::Version, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let v = file.strip_prefix(&prefix)?.strip_suffix(".json")?;
            Some((semver::Version::parse(v).ok()?, entry.path()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: &str, ty: &str, optional: bool) -> FieldShape {
        FieldShape { key: key.into(), ty: ty.into(), optional }
    }

    #[test]
    fn diff_names_every_change_and_judges_it_as_a_closed_model() {
        let old = [f("id", "String", false), f("email", "String", false), f("age", "u32", false), f("x", "u8", true)];
        let new =
            [f("id", "u64", false), f("age", "u32", true), f("locale", "Option<String>", true), f("x", "u8", false)];
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            [
                ShapeChange::TypeChanged { key: "id".into(), from: "String".into(), to: "u64".into() },
                ShapeChange::Removed { key: "email".into() },
                ShapeChange::BecameOptional { key: "age".into() },
                ShapeChange::BecameRequired { key: "x".into() },
                ShapeChange::Added { key: "locale".into(), optional: true },
            ]
        );
        let breaking: Vec<bool> = changes.iter().map(ShapeChange::is_breaking).collect();
        assert_eq!(breaking, [true, true, false, true, false]);
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_keep_the_runtime_schema() {
        let dir = std::env::temp_dir().join(format!("bae-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file_name("t.e", "1.0.0"));
        let fields = [f("a", "String", false), f("b", "Option<u8>", true)];
        write(&path, "t.e", "1.0.0", "T", &fields).unwrap();
        assert_eq!(read(&path).unwrap(), fields);
        let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        doc["schema"] = json!({ "type": "object" });
        std::fs::write(&path, doc.to_string()).unwrap();
        write(&path, "t.e", "1.0.0", "T", &fields).unwrap();
        let again: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(again["schema"], json!({ "type": "object" }));
        std::fs::write(dir.join(file_name("t.e", "0.9.0")), "{}").unwrap();
        let versions: Vec<String> = versions_of(&dir, "t.e").iter().map(|(v, _)| v.to_string()).collect();
        assert_eq!(versions, ["0.9.0", "1.0.0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
