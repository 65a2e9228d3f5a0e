//! Migrations and upcasting across three versions of one event: plans, the chain
//! v1 → v2 → v3 for typed reads and replays, and the generated SQL run against the real
//! PostgreSQL (127.0.0.1:5432, database `test`) and an SQLite file.

use better_auth_events::prelude::*;
use better_auth_events::replay::ReplayEngine;
use better_auth_events::schema::{EventSchema, MigrationStep, SchemaRegistry, SqlDialect, Upcast, UpcastChain};
use sqlx::Row;

mod v1 {
    use super::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
    #[event(name = "evo.user.created", version = "1.0.0")]
    pub struct UserCreated {
        pub user_id: String,
        pub email: String,
        pub legacy_flag: bool,
    }
}

mod v2 {
    use super::*;

    /// Generated upcaster: `legacy_flag` removed (a major change: old readers required it),
    /// `locale` added (optional).
    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
    #[event(name = "evo.user.created", version = "2.0.0", previous = super::v1::UserCreated)]
    pub struct UserCreated {
        pub user_id: String,
        pub email: String,
        #[serde(default)]
        pub locale: Option<String>,
    }
}

mod v3 {
    use super::*;

    /// Hand-written upcaster: `email` renamed and `user_id` parsed into a number.
    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
    #[event(name = "evo.user.created", version = "3.0.0", previous = super::v2::UserCreated, upcast = "manual")]
    pub struct UserCreated {
        pub user_id: u64,
        #[event(renamed_from = "email")]
        pub email_address: String,
        #[serde(default)]
        pub locale: Option<String>,
    }

    impl Upcast<super::v2::UserCreated> for UserCreated {
        fn upcast(old: super::v2::UserCreated) -> Self {
            Self {
                user_id: old.user_id.trim_start_matches("u-").parse().unwrap_or(0),
                email_address: old.email,
                locale: old.locale,
            }
        }
    }
}

fn v1_event(i: u32) -> Event {
    Event::new("evo.user.created")
        .with_version("1.0.0")
        .with_data(json!({ "user_id": format!("u-{i}"), "email": format!("u{i}@x.y"), "legacy_flag": true }))
}

#[test]
fn the_chain_is_checked_at_start_up_and_lists_its_links() {
    let chain = UpcastChain::global().expect("a complete chain");
    let links: Vec<(String, String, String)> = chain
        .links()
        .filter(|(n, _, _)| *n == "evo.user.created")
        .map(|(n, f, t)| (n.to_owned(), f.to_string(), t.to_string()))
        .collect();
    assert_eq!(
        links,
        [
            ("evo.user.created".into(), "1.0.0".into(), "2.0.0".into()),
            ("evo.user.created".into(), "2.0.0".into(), "3.0.0".into())
        ]
    );
    let registry = SchemaRegistry::from_registered_events().expect("versions and chain are consistent");
    assert_eq!(registry.versions("evo.user.created").len(), 3);
    assert_eq!(v3::UserCreated::RENAMED_FIELDS, [("email_address", "email")]);
}

#[test]
fn an_old_event_reads_as_every_newer_version() {
    let as_v2: Envelope<v2::UserCreated> = v1_event(7).into_typed().unwrap();
    assert_eq!(as_v2.data, v2::UserCreated { user_id: "u-7".into(), email: "u7@x.y".into(), locale: None });
    let as_v3: Envelope<v3::UserCreated> = v1_event(7).into_typed().unwrap();
    assert_eq!(as_v3.data, v3::UserCreated { user_id: 7, email_address: "u7@x.y".into(), locale: None });
    assert_eq!(as_v3.version.as_deref(), Some("3.0.0"));
    // A newer event never reads as an older type.
    let newer =
        Event::new("evo.user.created").with_version("3.0.0").with_data(json!({ "user_id": 1, "email_address": "a" }));
    let err = newer.into_typed::<v1::UserCreated>().unwrap_err().to_string();
    assert!(err.contains("newer than"), "{err}");
}

#[tokio::test]
async fn stored_v1_events_replay_into_a_v3_handler() {
    let store = MemoryStore::new();
    let bus = EventBus::builder().store(store.clone()).try_build().await.unwrap();
    for i in 0..5 {
        bus.emit(v1_event(i)).await.unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let reader = EventBus::new();
    reader
        .subscribe(async move |e: &Envelope<v3::UserCreated>| {
            s.lock().unwrap().push(e.data.user_id);
            Ok::<(), HandlerError>(())
        })
        .await
        .unwrap();
    let report = ReplayEngine::new(store, reader).replay().execute().await.unwrap();
    assert_eq!((report.events, report.failed), (5, 0), "{report:?}");
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[test]
fn plans_list_every_change_and_say_what_needs_user_code() {
    let registry = SchemaRegistry::new();
    let (s1, s2, s3) = (
        EventSchema::of::<v1::UserCreated>(),
        EventSchema::of::<v2::UserCreated>(),
        EventSchema::of::<v3::UserCreated>(),
    );
    let plan = registry.generate_migration(&s1, &s2).unwrap();
    assert!(plan.is_automatic());
    assert_eq!(
        plan.steps,
        [
            MigrationStep::RemoveField { field: "legacy_flag".into() },
            MigrationStep::AddField { field: "locale".into(), default: Some(serde_json::Value::Null) },
        ]
    );
    assert_eq!(
        plan.to_string(),
        "evo.user.created 1.0.0 → 2.0.0:\n  - remove `legacy_flag`\n  - add `locale` with default null\n"
    );
    let migrated = plan.apply(v1_event(1).data).unwrap();
    assert_eq!(migrated, json!({ "user_id": "u-1", "email": "u1@x.y", "locale": null }));

    let plan = registry.generate_migration(&s2, &s3).unwrap();
    assert!(!plan.is_automatic());
    assert!(plan.steps.contains(&MigrationStep::RenameField { from: "email".into(), to: "email_address".into() }));
    assert!(plan.manual_steps().any(|s| matches!(s, MigrationStep::ChangeType { field, .. } if field == "user_id")));
    let err = plan.to_sql(SqlDialect::Postgres).unwrap_err().to_string();
    assert!(err.contains("needs user code: change the type of `user_id`"), "{err}");
    assert!(registry.generate_migration(&s2, &s1).is_err(), "a migration goes forward");
}

/// v1 payloads, a plan with every automatic step kind (rename, remove, add with default).
fn sql_plan() -> better_auth_events::schema::MigrationPlan {
    let old = EventSchema::builder()
        .name("evo.sql")
        .version("1.0.0")
        .field("user_id", better_auth_events::schema::FieldType::String, true)
        .field("mail", better_auth_events::schema::FieldType::String, true)
        .field("legacy", better_auth_events::schema::FieldType::Boolean, false)
        .build();
    let mut new = EventSchema::builder()
        .name("evo.sql")
        .version("1.1.0")
        .field("user_id", better_auth_events::schema::FieldType::String, true)
        .field("e-mail's", better_auth_events::schema::FieldType::String, true)
        .field("locale", better_auth_events::schema::FieldType::String, false)
        .build()
        .with_rename("e-mail's", "mail");
    new.schema["properties"]["locale"]["default"] = json!("en");
    SchemaRegistry::new().generate_migration(&old, &new).unwrap()
}

const ROWS: [(&str, &str, &str); 3] = [
    ("a", "1.0.0", r#"{"user_id":"1","mail":"a@x","legacy":true}"#),
    ("b", "1.0.0", r#"{"user_id":"2","mail":"b@x","locale":"fr"}"#),
    ("c", "2.0.0", r#"{"user_id":"3","mail":"untouched"}"#),
];

fn expected() -> Vec<(String, String, serde_json::Value)> {
    vec![
        ("a".into(), "1.1.0".into(), json!({ "user_id": "1", "e-mail's": "a@x", "locale": "en" })),
        ("b".into(), "1.1.0".into(), json!({ "user_id": "2", "e-mail's": "b@x", "locale": "fr" })),
        ("c".into(), "2.0.0".into(), json!({ "user_id": "3", "mail": "untouched" })),
    ]
}

#[tokio::test]
async fn the_generated_sql_rewrites_stored_payloads_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let plan = sql_plan();
    let file = plan.write_sql_migration(dir.path().join("migrations"), SqlDialect::Sqlite).unwrap();
    assert!(file.file_name().unwrap().to_string_lossy().ends_with("_evo_sql_1_0_0_to_1_1_0.sql"));
    let sql = std::fs::read_to_string(&file).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("events.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE event_store (id TEXT PRIMARY KEY, event_type TEXT, version TEXT, data TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    for (id, version, data) in ROWS {
        sqlx::query("INSERT INTO event_store VALUES (?, 'evo.sql', ?, ?)")
            .bind(id)
            .bind(version)
            .bind(data)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::raw_sql(&sql).execute(&pool).await.unwrap();
    let rows = sqlx::query("SELECT id, version, data FROM event_store ORDER BY id").fetch_all(&pool).await.unwrap();
    let got: Vec<(String, String, serde_json::Value)> =
        rows.iter().map(|r| (r.get(0), r.get(1), serde_json::from_str(&r.get::<String, _>(2)).unwrap())).collect();
    assert_eq!(got, expected());
    // What SQL did matches what the plan does in Rust.
    assert_eq!(plan.apply(serde_json::from_str(ROWS[0].2).unwrap()).unwrap(), expected()[0].2);
}

#[tokio::test]
async fn the_generated_sql_rewrites_stored_payloads_in_postgres() {
    let url = std::env::var("BAE_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
        panic!("PostgreSQL at {url} is unreachable ({e}); start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
    });
    let schema = format!("bae_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema};")).execute(&mut *conn).await.unwrap();
    sqlx::query("CREATE TABLE event_store (id TEXT PRIMARY KEY, event_type TEXT, version TEXT, data JSONB)")
        .execute(&mut *conn)
        .await
        .unwrap();
    for (id, version, data) in ROWS {
        sqlx::query("INSERT INTO event_store VALUES ($1, 'evo.sql', $2, $3::jsonb)")
            .bind(id)
            .bind(version)
            .bind(data)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let sql = sql_plan().to_sql(SqlDialect::Postgres).unwrap();
    sqlx::raw_sql(&sql).execute(&mut *conn).await.unwrap();
    let rows =
        sqlx::query("SELECT id, version, data::text FROM event_store ORDER BY id").fetch_all(&mut *conn).await.unwrap();
    let got: Vec<(String, String, serde_json::Value)> =
        rows.iter().map(|r| (r.get(0), r.get(1), serde_json::from_str(&r.get::<String, _>(2)).unwrap())).collect();
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut *conn).await.unwrap();
    assert_eq!(got, expected());
}

/// An optional field added without a default is left out of old payloads, by `apply` and
/// by the generated SQL alike, so that every migrated payload validates against the new
/// schema. Checked over many generated v1 payloads.
#[tokio::test]
async fn every_migrated_payload_validates_against_the_new_schema() {
    use better_auth_events::schema::FieldType;
    let old = EventSchema::builder()
        .name("evo.generated")
        .version("1.0.0")
        .field("user_id", FieldType::String, true)
        .field("mail", FieldType::String, true)
        .field("legacy", FieldType::Boolean, false)
        .field("age", FieldType::Integer, false)
        .build();
    let new = EventSchema::builder()
        .name("evo.generated")
        .version("2.0.0")
        .field("user_id", FieldType::String, true)
        .field("email", FieldType::String, true)
        .field("age", FieldType::Integer, false)
        .field("locale", FieldType::String, false)
        .field("signed_up_at", FieldType::DateTime, false)
        .build()
        .with_rename("email", "mail");
    let mut registry = SchemaRegistry::new();
    registry.register(old.clone()).unwrap();
    registry.register(new.clone()).unwrap();
    let plan = registry.generate_migration(&old, &new).unwrap();
    assert!(plan.is_automatic(), "{plan}");
    assert!(plan.steps.contains(&MigrationStep::AddOptionalField { field: "locale".into() }), "{plan}");
    let target = registry.get("evo.generated", "2.0.0").unwrap();

    // Generated v1 payloads: optional fields present or not.
    let mut rng = fastrand::Rng::with_seed(7);
    let payloads: Vec<serde_json::Value> = (0..500)
        .map(|i| {
            let mut p = json!({ "user_id": format!("u{i}"), "mail": format!("u{i}@example.com") });
            if rng.bool() {
                p["legacy"] = json!(rng.bool());
            }
            if rng.bool() {
                p["age"] = json!(rng.i64(0..120));
            }
            p
        })
        .collect();
    for p in &payloads {
        let migrated = plan.apply(p.clone()).unwrap();
        assert!(migrated.get("locale").is_none(), "{migrated}");
        target
            .validate_value(&migrated)
            .unwrap_or_else(|e| panic!("{p} migrated to {migrated}, which v2.0.0 refuses: {e}"));
    }

    // The same through the generated SQLite SQL, on rows of a real event_store table.
    let store = better_auth_events::store::SqliteStore::in_memory().await.unwrap();
    for p in &payloads {
        let mut e = Event::new("evo.generated").with_data(p.clone());
        e.version = Some("1.0.0".into());
        store.append(&e).await.unwrap();
    }
    let sql = plan.to_sql(SqlDialect::Sqlite).unwrap();
    sqlx::raw_sql(&sql).execute(store.pool()).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT data FROM event_store").fetch_all(store.pool()).await.unwrap();
    assert_eq!(rows.len(), payloads.len());
    for (data,) in rows {
        let migrated: serde_json::Value = serde_json::from_str(&data).unwrap();
        target
            .validate_value(&migrated)
            .unwrap_or_else(|e| panic!("the SQL wrote {migrated}, which v2.0.0 refuses: {e}"));
    }
}
