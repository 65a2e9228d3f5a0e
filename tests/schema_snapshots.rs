//! The run-time half of `events.lock/`: writing the snapshots (the derive only reads them),
//! catching a change inside a nested type that the derive cannot see, and the version
//! rules for a new version.

use better_auth_events::prelude::*;
use better_auth_events::schema::{SnapshotReport, check_snapshots_with};

#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
struct Address {
    city: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "snap.moved", version = "1.1.0")]
struct Moved {
    user_id: String,
    to: Address,
}

fn read(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_missing_directory_says_how_to_create_it() {
    let report = check_snapshots_with("/nonexistent/events.lock", false).unwrap();
    assert!(report.no_directory);
    assert!(report.to_string().contains("BAE_EVENTS_LOCK=update cargo test"), "{report}");
}

#[test]
fn update_mode_creates_a_missing_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("events.lock");
    let report = check_snapshots_with(&dir, true).unwrap();
    assert!(!report.no_directory && dir.is_dir(), "{report:?}");
    // The fields the derive compares are recorded too, exactly as the derive reads them,
    // so a later compile in check mode finds a complete snapshot.
    let doc = read(&dir.join("snap.moved@1.1.0.json"));
    assert_eq!(
        doc["fields"],
        serde_json::json!([
            { "key": "user_id", "type": "String", "optional": false },
            { "key": "to", "type": "Address", "optional": false },
        ])
    );
}

/// The built-in authentication events are locked in this repository (`auth.lock/`, checked
/// by `tests/built_in_snapshots.rs`), never in a user's directory: update mode writes the
/// program's own events only.
#[test]
fn update_mode_writes_only_the_programs_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let report = check_snapshots_with(dir.path(), true).unwrap();
    assert!(report.written.iter().all(|id| id.starts_with("snap.")), "{:?}", report.written);
    assert!(!dir.path().join("session.expired@1.0.0.json").exists(), "a built-in event was written");
    let check = check_snapshots_with(dir.path(), false).unwrap();
    assert!(check.missing.is_empty(), "built-in events are not reported missing: {:?}", check.missing);
}

#[test]
fn update_mode_records_schemas_and_check_mode_then_passes() {
    let dir = tempfile::tempdir().unwrap();
    let first = check_snapshots_with(dir.path(), false).unwrap();
    assert!(first.missing.contains(&"snap.moved@1.1.0".to_owned()), "{first:?}");
    let written = check_snapshots_with(dir.path(), true).unwrap();
    assert!(written.written.contains(&"snap.moved@1.1.0".to_owned()));
    let doc = read(&dir.path().join("snap.moved@1.1.0.json"));
    assert_eq!(doc["schema"]["properties"]["user_id"]["type"], "string");
    let report: SnapshotReport = check_snapshots_with(dir.path(), false).unwrap();
    assert!(report.checked.contains(&"snap.moved@1.1.0".to_owned()));
    assert!(report.missing.is_empty() && report.written.is_empty());
}

#[test]
fn a_change_inside_a_nested_type_is_caught_against_the_recorded_schema() {
    let dir = tempfile::tempdir().unwrap();
    check_snapshots_with(dir.path(), true).unwrap();
    // Pretend 1.1.0 was released when `Address` also had a required `zip`.
    let path = dir.path().join("snap.moved@1.1.0.json");
    let mut doc = read(&path);
    let address = doc["schema"]["$defs"]["Address"].as_object_mut().expect("Address is a $def");
    address.get_mut("properties").unwrap()["zip"] = json!({ "type": "string" });
    address.get_mut("required").unwrap().as_array_mut().unwrap().push(json!("zip"));
    std::fs::write(&path, doc.to_string()).unwrap();
    let err = check_snapshots_with(dir.path(), false).unwrap_err().to_string();
    assert!(err.contains("`snap.moved` 1.1.0 changed since its snapshot"), "{err}");
    assert!(err.contains("/properties/to/properties/zip"), "{err}");
}

#[test]
fn a_new_version_is_checked_against_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    // 1.0.0 was released with `user_id` as a number: 1.1.0 changes its type, a major change.
    let old = json!({
        "name": "snap.moved",
        "version": "1.0.0",
        "schema": {
            "type": "object",
            "properties": { "user_id": { "type": "integer" }, "to": { "type": "object" } },
            "required": ["user_id", "to"]
        }
    });
    std::fs::write(dir.path().join("snap.moved@1.0.0.json"), old.to_string()).unwrap();
    let err = check_snapshots_with(dir.path(), false).unwrap_err().to_string();
    assert!(err.contains("`snap.moved` 1.0.0 → 1.1.0 is a minor bump, but the change breaks BACKWARD"), "{err}");
    assert!(err.contains("use version 2.0.0 or later"), "{err}");
}

#[test]
fn update_mode_writes_the_migration_files_of_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    // 1.0.0 was released with an extra optional field `note` that 1.1.0 drops.
    let mut schema = <Moved as better_auth_events::TypedEvent>::event_schema().to_value();
    schema["properties"]["note"] = json!({ "type": "string" });
    let old = json!({ "name": "snap.moved", "version": "1.0.0", "schema": schema });
    std::fs::write(dir.path().join("snap.moved@1.0.0.json"), old.to_string()).unwrap();
    let report = check_snapshots_with(dir.path(), true).unwrap();
    assert_eq!(report.migrations.len(), 2, "{report:?}");
    let sql: Vec<String> = report.migrations.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert!(report.migrations[0].to_string_lossy().contains("migrations/postgres/"));
    assert!(sql[0].contains("(data - 'note')") && sql[0].contains("version = '1.1.0'"), "{}", sql[0]);
    assert!(sql[1].contains("json_remove(data, '$.\"note\"')"), "{}", sql[1]);
}

#[test]
fn update_mode_rewrites_the_fields_of_an_unreleased_version() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot taken before `to` was added, with its schema: update mode records the
    // struct as it is now, fields and schema alike, and keeps what else the file says.
    let path = dir.path().join("snap.moved@1.1.0.json");
    let stale = json!({
        "name": "snap.moved",
        "version": "1.1.0",
        "type": "Moved",
        "fields": [{ "key": "user_id", "type": "String", "optional": false }],
        "schema": { "type": "object" }
    });
    std::fs::write(&path, stale.to_string()).unwrap();
    let report = check_snapshots_with(dir.path(), true).unwrap();
    assert!(report.written.contains(&"snap.moved@1.1.0".to_owned()), "{report:?}");
    let doc = read(&path);
    assert_eq!(doc["type"], "Moved");
    assert_eq!(doc["fields"][1], json!({ "key": "to", "type": "Address", "optional": false }));
    assert_eq!(doc["schema"], <Moved as better_auth_events::TypedEvent>::event_schema().to_value());
    // Nothing changes on a second run, so the file is left as it is.
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    check_snapshots_with(dir.path(), true).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before);
    check_snapshots_with(dir.path(), false).unwrap();
}

#[test]
fn the_runtime_reads_what_the_ui_tests_snapshots_hold() {
    // The files the derive's ui cases compare with are snapshots in the shared format.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-tests/events.lock");
    let snapshot = better_auth_events_lock::Snapshot::read(&dir.join("ui.lock.same@1.0.0.json")).unwrap();
    assert_eq!(snapshot.fields.map(|f| f.len()), Some(2));
    assert!(better_auth_events_lock::Snapshot::read(&dir.join("ui.lock.broken@1.0.0.json")).is_err());
}

#[test]
fn a_version_older_than_a_released_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 2.0.0 is released; the program declares `snap.moved` 1.1.0 and has no snapshot of it.
    let newer = json!({
        "name": "snap.moved",
        "version": "2.0.0",
        "schema": { "type": "object", "properties": { "user_id": { "type": "string" } }, "required": ["user_id"] }
    });
    std::fs::write(dir.path().join("snap.moved@2.0.0.json"), newer.to_string()).unwrap();
    let err = check_snapshots_with(dir.path(), false).unwrap_err().to_string();
    assert!(err.contains("`snap.moved` is declared as 1.1.0, but 2.0.0 is released already"), "{err}");
    assert!(err.contains("versions never go backwards"), "{err}");
}
