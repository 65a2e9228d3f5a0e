//! Migration plans between two versions of an event schema: what changed field by field,
//! applying the plan to a stored payload, and the SQL that rewrites stored payloads.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One change of a migration plan.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MigrationStep {
    /// A field was added. `default` is the value old payloads get; `None` when the field is
    /// required and has no default, which needs user code.
    AddField {
        /// JSON key.
        field: String,
        /// The value old payloads get.
        default: Option<Value>,
    },
    /// An optional field without a default was added; old payloads are left without it
    /// (absent, not `null`, which a non-nullable type would refuse).
    AddOptionalField {
        /// JSON key.
        field: String,
    },
    /// A field was removed; old payloads lose it.
    RemoveField {
        /// JSON key.
        field: String,
    },
    /// A field was renamed (`#[event(renamed_from = "old")]`); old payloads move the value.
    RenameField {
        /// The old JSON key.
        from: String,
        /// The new JSON key.
        to: String,
    },
    /// A field's type changed; needs user code (`impl Upcast`).
    ChangeType {
        /// JSON key.
        field: String,
        /// The old field schema.
        from: Value,
        /// The new field schema.
        to: Value,
    },
}

impl MigrationStep {
    /// Whether this step can run without user code.
    pub fn is_automatic(&self) -> bool {
        match self {
            Self::AddField { default, .. } => default.is_some(),
            Self::AddOptionalField { .. } | Self::RemoveField { .. } | Self::RenameField { .. } => true,
            Self::ChangeType { .. } => false,
        }
    }
}

impl fmt::Display for MigrationStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddField { field, default: Some(d) } => write!(f, "add `{field}` with default {d}"),
            Self::AddField { field, default: None } => {
                write!(f, "add required `{field}` without a default (needs user code)")
            }
            Self::AddOptionalField { field } => write!(f, "add optional `{field}` (old payloads leave it out)"),
            Self::RemoveField { field } => write!(f, "remove `{field}`"),
            Self::RenameField { from, to } => write!(f, "rename `{from}` to `{to}`"),
            Self::ChangeType { field, from, to } => {
                write!(f, "change the type of `{field}` from {} to {} (needs user code)", short(from), short(to))
            }
        }
    }
}

fn short(schema: &Value) -> String {
    schema.get("type").map(ToString::to_string).unwrap_or_else(|| schema.to_string())
}

/// The SQL dialect a plan renders to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlDialect {
    /// PostgreSQL (JSONB operators).
    Postgres,
    /// SQLite (JSON1 functions).
    Sqlite,
}

/// How to bring payloads of one version of an event to the next.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationPlan {
    /// Event name.
    pub event_type: String,
    /// The version payloads are in.
    pub from: Version,
    /// The version they are brought to.
    pub to: Version,
    /// The changes, in the order they apply: renames, removals, additions, type changes.
    pub steps: Vec<MigrationStep>,
}

impl fmt::Display for MigrationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} → {}:", self.event_type, self.from, self.to)?;
        if self.steps.is_empty() {
            return writeln!(f, "  (no change)");
        }
        for step in &self.steps {
            writeln!(f, "  - {step}")?;
        }
        Ok(())
    }
}

fn properties(schema: &Value) -> (Map<String, Value>, BTreeSet<String>) {
    let props = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    (props, required)
}

/// The field schema with `$ref`s resolved against `root` and annotations stripped, for
/// comparing types.
fn shape(root: &Value, field: &Value) -> Value {
    let mut current = field;
    for _ in 0..32 {
        match current
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|p| root.pointer(p))
        {
            Some(target) => current = target,
            None => break,
        }
    }
    let mut out = current.clone();
    if let Some(map) = out.as_object_mut() {
        for key in ["title", "description", "default", "examples", "$comment", "deprecated"] {
            map.remove(key);
        }
    }
    out
}

impl MigrationPlan {
    /// The plan from `old` to `new` JSON Schemas. `renames` lists `(new_key, old_key)`
    /// pairs (from `#[event(renamed_from = "..")]`).
    pub fn between(
        event_type: &str,
        from: Version,
        old: &Value,
        to: Version,
        new: &Value,
        renames: &[(String, String)],
    ) -> Self {
        let (old_props, _) = properties(old);
        let (new_props, new_required) = properties(new);
        let mut steps = Vec::new();
        let renamed_old: BTreeSet<&str> = renames.iter().map(|(_, o)| o.as_str()).collect();
        let renamed_new: BTreeSet<&str> = renames.iter().map(|(n, _)| n.as_str()).collect();
        for (new_key, old_key) in renames {
            if old_props.contains_key(old_key) && new_props.contains_key(new_key) {
                steps.push(MigrationStep::RenameField { from: old_key.clone(), to: new_key.clone() });
                let (a, b) = (shape(old, &old_props[old_key]), shape(new, &new_props[new_key]));
                if a != b {
                    steps.push(MigrationStep::ChangeType { field: new_key.clone(), from: a, to: b });
                }
            }
        }
        for key in old_props.keys() {
            if !new_props.contains_key(key) && !renamed_old.contains(key.as_str()) {
                steps.push(MigrationStep::RemoveField { field: key.clone() });
            }
        }
        for (key, schema) in &new_props {
            if old_props.contains_key(key) || renamed_new.contains(key.as_str()) {
                continue;
            }
            let step = match schema.get("default") {
                Some(d) => MigrationStep::AddField { field: key.clone(), default: Some(d.clone()) },
                None if !new_required.contains(key) => MigrationStep::AddOptionalField { field: key.clone() },
                None => MigrationStep::AddField { field: key.clone(), default: None },
            };
            steps.push(step);
        }
        for (key, schema) in &new_props {
            if let Some(before) = old_props.get(key) {
                let (a, b) = (shape(old, before), shape(new, schema));
                if a != b {
                    steps.push(MigrationStep::ChangeType { field: key.clone(), from: a, to: b });
                }
            }
        }
        Self { event_type: event_type.to_owned(), from, to, steps }
    }

    /// Whether every step runs without user code.
    pub fn is_automatic(&self) -> bool {
        self.steps.iter().all(MigrationStep::is_automatic)
    }

    /// The steps that need user code.
    pub fn manual_steps(&self) -> impl Iterator<Item = &MigrationStep> {
        self.steps.iter().filter(|s| !s.is_automatic())
    }

    fn require_automatic(&self) -> Result<()> {
        let manual: Vec<String> = self.manual_steps().map(ToString::to_string).collect();
        if manual.is_empty() {
            Ok(())
        } else {
            Err(Error::Schema(format!(
                "`{}` {} → {} needs user code: {}; implement `Upcast<Previous>` for the new type",
                self.event_type,
                self.from,
                self.to,
                manual.join("; ")
            )))
        }
    }

    /// Applies the plan to one payload. Fails when a step needs user code.
    pub fn apply(&self, payload: Value) -> Result<Value> {
        self.require_automatic()?;
        let Value::Object(mut map) = payload else {
            return Err(Error::Validation {
                event_type: self.event_type.clone(),
                message: format!("a {} payload must be a JSON object to migrate", self.from),
            });
        };
        for step in &self.steps {
            match step {
                MigrationStep::RenameField { from, to } => {
                    if let Some(v) = map.remove(from) {
                        map.insert(to.clone(), v);
                    }
                }
                MigrationStep::RemoveField { field } => {
                    map.remove(field);
                }
                MigrationStep::AddField { field, default: Some(d) } => {
                    map.entry(field.clone()).or_insert_with(|| d.clone());
                }
                MigrationStep::AddField { default: None, .. }
                | MigrationStep::AddOptionalField { .. }
                | MigrationStep::ChangeType { .. } => {}
            }
        }
        Ok(Value::Object(map))
    }

    /// The SQL that rewrites stored payloads of this event from `from` to `to` in place,
    /// in the `event_store` table of the PostgreSQL or SQLite store. Fails when a step
    /// needs user code.
    pub fn to_sql(&self, dialect: SqlDialect) -> Result<String> {
        self.require_automatic()?;
        let data = match dialect {
            SqlDialect::Postgres => self.postgres_expr(),
            SqlDialect::Sqlite => self.sqlite_expr(),
        };
        Ok(format!(
            "-- {} {} → {}: {}\nUPDATE event_store\n   SET data = {data},\n       version = {}\n WHERE event_type = {}\n   AND version = {};\n",
            self.event_type,
            self.from,
            self.to,
            if self.steps.is_empty() {
                "no change to the payload".to_owned()
            } else {
                self.steps.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            },
            sql_str(&self.to.to_string()),
            sql_str(&self.event_type),
            sql_str(&self.from.to_string()),
        ))
    }

    fn postgres_expr(&self) -> String {
        let mut expr = "data".to_owned();
        for step in &self.steps {
            expr = match step {
                MigrationStep::RenameField { from, to } => format!(
                    "(CASE WHEN {expr} ? {f} THEN ({expr} - {f}) || jsonb_build_object({t}, {expr} -> {f}) ELSE {expr} END)",
                    f = sql_str(from),
                    t = sql_str(to)
                ),
                MigrationStep::RemoveField { field } => format!("({expr} - {})", sql_str(field)),
                MigrationStep::AddField { field, default: Some(d) } => {
                    format!("(jsonb_build_object({}, {}::jsonb) || {expr})", sql_str(field), sql_str(&d.to_string()))
                }
                MigrationStep::AddField { default: None, .. }
                | MigrationStep::AddOptionalField { .. }
                | MigrationStep::ChangeType { .. } => expr,
            };
        }
        expr
    }

    fn sqlite_expr(&self) -> String {
        let mut expr = "data".to_owned();
        for step in &self.steps {
            expr = match step {
                MigrationStep::RenameField { from, to } => format!(
                    "(CASE WHEN json_type({expr}, {f}) IS NOT NULL THEN json_remove(json_set({expr}, {t}, json({expr} -> {f})), {f}) ELSE {expr} END)",
                    f = sql_str(&json_path(from)),
                    t = sql_str(&json_path(to))
                ),
                MigrationStep::RemoveField { field } => format!("json_remove({expr}, {})", sql_str(&json_path(field))),
                MigrationStep::AddField { field, default: Some(d) } => {
                    format!("json_insert({expr}, {}, json({}))", sql_str(&json_path(field)), sql_str(&d.to_string()))
                }
                MigrationStep::AddField { default: None, .. }
                | MigrationStep::AddOptionalField { .. }
                | MigrationStep::ChangeType { .. } => expr,
            };
        }
        expr
    }

    /// Writes [`MigrationPlan::to_sql`] as a new migration file in `dir` (created if
    /// missing), named `<UTC timestamp>_<event>_<from>_to_<to>.sql` as sqlx migrations are,
    /// and returns its path. Nothing runs: apply it with your migration tool.
    pub fn write_sql_migration(&self, dir: impl AsRef<Path>, dialect: SqlDialect) -> Result<PathBuf> {
        let sql = self.to_sql(dialect)?;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Schema(format!("cannot create migration directory {}: {e}", dir.display())))?;
        let slug: String = format!("{}_{}_to_{}", self.event_type, self.from, self.to)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!("{}_{slug}.sql", chrono::Utc::now().format("%Y%m%d%H%M%S")));
        std::fs::write(&path, sql)
            .map_err(|e| Error::Schema(format!("cannot write migration file {}: {e}", path.display())))?;
        Ok(path)
    }
}

/// A SQL string literal.
fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQLite JSON path to a top-level key, quoted so dots and quotes in keys are safe.
fn json_path(key: &str) -> String {
    format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}
