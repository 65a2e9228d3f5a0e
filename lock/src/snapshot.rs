//! The snapshot files: `events.lock/<name>@<version>.json`, one per released event version.
//!
//! ```json
//! {
//!   "name": "user.created",
//!   "version": "1.0.0",
//!   "type": "UserCreated",
//!   "fields": [{ "key": "user_id", "type": "String", "optional": false }],
//!   "schema": { "type": "object", "...": "..." }
//! }
//! ```
//!
//! `fields` is what the derive compares at compile time, `schema` what the runtime
//! compares; a file may lack either (written by hand, or by an older release).

use std::fmt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde_json::{Map, Value};

use crate::shape::FieldShape;

/// One snapshot file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The event name.
    pub name: String,
    /// The event version, as written.
    pub version: String,
    /// The Rust type the snapshot was taken from, if recorded.
    pub type_name: Option<String>,
    /// The fields the derive compares, if recorded.
    pub fields: Option<Vec<FieldShape>>,
    /// The payload's JSON Schema, if recorded.
    pub schema: Option<Value>,
}

/// What is wrong with a snapshot file.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or its directory could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The file is JSON but not a snapshot.
    Format {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        problem: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Write { path, source } => write!(f, "cannot write {}: {source}", path.display()),
            Self::Json { path, source } => write!(f, "{} is not valid JSON: {source}", path.display()),
            Self::Format { path, problem } => write!(f, "{}: {problem}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

/// The file name of the snapshot of `name` at `version`.
pub fn file_name(name: &str, version: &str) -> String {
    format!("{name}@{version}.json")
}

fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

fn field(value: &Value) -> Result<FieldShape, String> {
    let key = value.get("key").and_then(Value::as_str).ok_or("a field without `key`")?;
    let ty = value.get("type").and_then(Value::as_str).ok_or_else(|| format!("field `{key}` has no `type`"))?;
    let optional = match value.get("optional") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| format!("`optional` of field `{key}` is not a boolean"))?,
    };
    Ok(FieldShape::new(key, ty, optional))
}

impl Snapshot {
    /// A snapshot of `name` at `version` with nothing recorded yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), ..Self::default() }
    }

    /// Reads a snapshot file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.into(), source })?;
        let doc: Value = serde_json::from_str(&text).map_err(|source| Error::Json { path: path.into(), source })?;
        Self::from_json(&doc).map_err(|problem| Error::Format { path: path.into(), problem })
    }

    /// A snapshot from its JSON document; `Err` says what is wrong with it.
    pub fn from_json(doc: &Value) -> Result<Self, String> {
        let map = doc.as_object().ok_or("not a JSON object")?;
        let name = string(map, "name")?.ok_or("no `name`")?;
        let version = string(map, "version")?.ok_or("no `version`")?;
        let fields = match map.get("fields") {
            None | Some(Value::Null) => None,
            Some(Value::Array(fields)) => Some(fields.iter().map(field).collect::<Result<_, _>>()?),
            Some(_) => return Err("`fields` is not a list".into()),
        };
        Ok(Self { name, version, type_name: string(map, "type")?, fields, schema: map.get("schema").cloned() })
    }

    /// The JSON document of this snapshot.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("name".into(), self.name.clone().into());
        map.insert("version".into(), self.version.clone().into());
        if let Some(ty) = &self.type_name {
            map.insert("type".into(), ty.clone().into());
        }
        if let Some(fields) = &self.fields {
            let fields = fields
                .iter()
                .map(|f| serde_json::json!({ "key": f.key, "type": f.ty, "optional": f.optional }))
                .collect();
            map.insert("fields".into(), Value::Array(fields));
        }
        if let Some(schema) = &self.schema {
            map.insert("schema".into(), schema.clone());
        }
        Value::Object(map)
    }

    /// The text of the file: pretty-printed JSON and a final newline.
    pub fn to_text(&self) -> String {
        // A `Value` always serializes.
        serde_json::to_string_pretty(&self.to_json()).unwrap_or_default() + "\n"
    }

    /// Writes the snapshot to `path`, unless the file already holds exactly this text.
    /// Returns whether it wrote.
    pub fn write(&self, path: &Path) -> Result<bool, Error> {
        let text = self.to_text();
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        std::fs::write(path, text).map_err(|source| Error::Write { path: path.into(), source })?;
        Ok(true)
    }
}

/// The snapshots of `name` in `dir`: (version, path), oldest first. Files whose version
/// is not semver are left out.
pub fn versions_of(dir: &Path, name: &str) -> Vec<(Version, PathBuf)> {
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

/// The newest snapshot of `name` in `dir` before `version`: the one a new version's bump
/// is judged against.
pub fn previous_of(dir: &Path, name: &str, version: &Version) -> Option<(Version, PathBuf)> {
    versions_of(dir, name).into_iter().rfind(|(v, _)| v < version)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("bae-lock-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn snapshots_round_trip() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join(file_name("t.e", "1.0.0"));
        let snapshot = Snapshot {
            type_name: Some("T".into()),
            fields: Some(vec![FieldShape::new("a", "String", false), FieldShape::new("b", "Option<u8>", true)]),
            schema: Some(serde_json::json!({ "type": "object" })),
            ..Snapshot::new("t.e", "1.0.0")
        };
        assert!(snapshot.write(&path).unwrap());
        assert_eq!(Snapshot::read(&path).unwrap(), snapshot);
        assert!(!snapshot.write(&path).unwrap(), "an unchanged snapshot is not rewritten");
    }

    #[test]
    fn a_snapshot_may_lack_fields_or_schema() {
        let doc = serde_json::json!({ "name": "t.e", "version": "1.0.0", "schema": true });
        let snapshot = Snapshot::from_json(&doc).unwrap();
        assert_eq!(snapshot.fields, None);
        assert_eq!(snapshot.schema, Some(Value::Bool(true)));
        let doc = serde_json::json!({ "name": "t.e", "version": "1.0.0", "fields": [{ "key": "a", "type": "u8" }] });
        assert_eq!(Snapshot::from_json(&doc).unwrap().fields, Some(vec![FieldShape::new("a", "u8", false)]));
    }

    #[test]
    fn malformed_snapshots_say_what_is_wrong() {
        let problem = |doc: Value| Snapshot::from_json(&doc).unwrap_err();
        assert_eq!(problem(serde_json::json!([])), "not a JSON object");
        assert_eq!(problem(serde_json::json!({ "version": "1.0.0" })), "no `name`");
        assert_eq!(
            problem(serde_json::json!({ "name": "a", "version": "1.0.0", "fields": {} })),
            "`fields` is not a list"
        );
        assert_eq!(
            problem(serde_json::json!({ "name": "a", "version": "1.0.0", "fields": [{ "type": "u8" }] })),
            "a field without `key`"
        );
        let dir = TempDir::new("malformed");
        let path = dir.0.join("x.json");
        std::fs::write(&path, "{ \"name\": ").unwrap();
        let err = Snapshot::read(&path).unwrap_err().to_string();
        assert!(err.ends_with("is not valid JSON: EOF while parsing a value at line 1 column 10"), "{err}");
    }

    #[test]
    fn versions_are_found_in_semver_order() {
        let dir = TempDir::new("versions");
        for file in ["t.e@1.10.0.json", "t.e@1.2.0.json", "t.e@0.9.0.json", "t.e@nope.json", "t.f@1.0.0.json"] {
            std::fs::write(dir.0.join(file), "{}").unwrap();
        }
        let versions: Vec<String> = versions_of(&dir.0, "t.e").iter().map(|(v, _)| v.to_string()).collect();
        assert_eq!(versions, ["0.9.0", "1.2.0", "1.10.0"]);
        let previous = |v: &str| previous_of(&dir.0, "t.e", &Version::parse(v).unwrap()).map(|(v, _)| v.to_string());
        assert_eq!(previous("1.10.0").as_deref(), Some("1.2.0"));
        assert_eq!(previous("1.5.0").as_deref(), Some("1.2.0"));
        assert_eq!(previous("0.9.0"), None);
    }
}
