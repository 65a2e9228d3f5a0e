//! The schema registry: dynamic schemas, validation with every violation, the version rules,
//! lookups, and the bus validating dynamic events against it.

use better_auth_events::prelude::*;
use better_auth_events::schema::{CompatibilityMode, EventSchema, FieldType, SchemaOrigin, SchemaRegistry};
use better_auth_events::{Error, ValidationMode};

fn user_created_v1() -> EventSchema {
    EventSchema::builder()
        .name("user.created")
        .version("1.0.0")
        .field("user_id", FieldType::String, true)
        .field("email", FieldType::String, true)
        .build()
}

#[tokio::test]
async fn the_seed_validation_example_works_as_written() -> Result<(), Error> {
    let mut registry = SchemaRegistry::new();
    registry.register(user_created_v1())?;
    let bus = EventBus::builder().schema_registry(registry).try_build().await?;

    bus.emit(Event::new("user.created").with_data(json!({
        "user_id": "123",
        "email": "user@example.com"
    })))
    .await?; // ✅ Valid

    let err = bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123" }))).await.unwrap_err();
    assert_eq!(err.to_string(), "validation failed for event `user.created`: missing required field 'email'");
    Ok(())
}

#[test]
fn every_violation_is_reported_with_its_pointer() {
    let mut registry = SchemaRegistry::new();
    registry
        .register(
            EventSchema::builder()
                .name("profile.updated")
                .version("1.0.0")
                .field("user_id", FieldType::String, true)
                .field("age", FieldType::Integer, true)
                .field("tags", FieldType::Array(Box::new(FieldType::String)), false)
                .closed()
                .build(),
        )
        .unwrap();
    let bad = Event::new("profile.updated").with_data(json!({ "age": "old", "tags": ["a", 5], "nick": "x" }));
    let err = registry.validate(&bad).unwrap_err().to_string();
    for needle in ["missing required field 'user_id'", "unknown field 'nick'", "(at /age)", "(at /tags/1)"] {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
    assert_eq!(err.matches("; ").count(), 3, "four violations in one error: {err}");
}

#[test]
fn derived_events_are_registered_with_their_generated_schemas() {
    let registry = SchemaRegistry::from_registered_events().expect("no conflicts among derived events");
    let s = registry.latest("user.created").expect("the built-in user.created");
    assert_eq!(s.version.to_string(), "1.0.0");
    assert!(matches!(s.origin, SchemaOrigin::Rust { type_name } if type_name.ends_with("auth::UserCreated")));
    let ok = Event::new("user.created").with_data(json!({ "user_id": "u", "email": "e@x.y" }));
    registry.validate(&ok).unwrap();
    let wrong_type = Event::new("user.created").with_data(json!({ "user_id": 5, "email": "e@x.y" }));
    assert!(registry.validate(&wrong_type).unwrap_err().to_string().contains("(at /user_id)"));
    assert!(registry.versions("session.expired").len() == 1);
    assert!(registry.list().count() >= 11);
}

#[test]
fn version_rules_need_the_right_bump() {
    let mut registry = SchemaRegistry::new();
    registry.register(user_created_v1()).unwrap();
    // Identical again: fine. Different content under the same version: refused.
    registry.register(user_created_v1()).unwrap();
    let changed =
        EventSchema::builder().name("user.created").version("1.0.0").field("user_id", FieldType::String, true).build();
    let err = registry.register(changed).unwrap_err().to_string();
    assert!(err.contains("`user.created` 1.0.0 is already registered with a different schema"), "{err}");

    // A compatible change under BACKWARD (e-mail becomes optional: old data still reads)
    // needs at least a minor bump.
    let optional_email = |v: &str| {
        EventSchema::builder()
            .name("user.created")
            .version(v)
            .field("user_id", FieldType::String, true)
            .field("email", FieldType::String, false)
            .build()
    };
    let err = registry.register(optional_email("1.0.1")).unwrap_err().to_string();
    assert!(err.contains("1.0.0 → 1.0.1 is a patch bump"), "{err}");
    assert!(err.contains("property became optional at `/properties/email`"), "{err}");
    assert!(err.contains("a minor bump is needed: use version 1.1.0 or later"), "{err}");
    registry.register(optional_email("1.1.0")).unwrap();

    // Changing a field's type breaks BACKWARD: it needs a major bump.
    let numeric_id = |v: &str| {
        EventSchema::builder()
            .name("user.created")
            .version(v)
            .field("user_id", FieldType::Integer, true)
            .field("email", FieldType::String, false)
            .build()
    };
    let err = registry.register(numeric_id("1.2.0")).unwrap_err().to_string();
    assert!(err.contains("breaks BACKWARD compatibility"), "{err}");
    assert!(err.contains("type changed at `/properties/user_id/type`"), "{err}");
    assert!(err.contains("use version 2.0.0 or later"), "{err}");
    registry.register(numeric_id("2.0.0")).unwrap();

    // An identical schema needs no bump.
    registry.register(numeric_id("2.0.1")).unwrap();
    assert_eq!(
        registry.versions("user.created").iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["1.0.0", "1.1.0", "2.0.0", "2.0.1"]
    );
    assert_eq!(registry.latest("user.created").unwrap().version.to_string(), "2.0.1");
    assert!(registry.get("user.created", "1.1.0").is_some());
    assert!(registry.get("user.created", "9.9.9").is_none());

    let err = registry.register(EventSchema::builder().name("x").version("1.0").build()).unwrap_err().to_string();
    assert!(err.contains("invalid version `1.0`"), "{err}");
}

#[test]
fn transitive_modes_compare_with_every_earlier_version() {
    let v = |version: &str, fields: &[&str]| {
        let mut b = EventSchema::builder().name("t").version(version).closed();
        for f in fields {
            b = b.field(*f, FieldType::String, false);
        }
        b.build()
    };
    // FORWARD: new data must read with the old schema. Removing an optional field from a
    // closed model is forward-compatible; adding one is not.
    let mut plain = SchemaRegistry::with_mode(CompatibilityMode::Forward);
    plain.register(v("1.0.0", &["a"])).unwrap();
    plain.register(v("1.1.0", &["a", "b"])).unwrap_err();
    let mut transitive = SchemaRegistry::with_mode(CompatibilityMode::FullTransitive);
    transitive.register(v("1.0.0", &["a"])).unwrap();
    transitive.register(v("2.0.0", &["a", "b"])).unwrap();
    // Back to `a` alone is FULL-compatible with 2.0.0? No: it removes `b`. With 1.0.0 it is
    // identical, but transitive checks 2.0.0 too.
    let err = transitive.register(v("2.1.0", &["a"])).unwrap_err().to_string();
    assert!(err.contains("FULL_TRANSITIVE"), "{err}");
    let report = transitive.check_compatibility(&v("3.0.0", &["a", "b"]));
    assert_eq!(report.mode, CompatibilityMode::FullTransitive);
    assert!(!report.is_compatible(), "differs from 1.0.0");
}

#[tokio::test]
async fn the_bus_can_be_lenient_or_reject_unknown_events() {
    let registry = || {
        let mut r = SchemaRegistry::new();
        r.register(user_created_v1()).unwrap();
        r
    };
    let invalid = || Event::new("user.created").with_data(json!({ "user_id": "123" }));
    let lenient =
        EventBus::builder().schema_registry(registry()).validation(ValidationMode::Lenient).try_build().await.unwrap();
    lenient.emit(invalid()).await.expect("lenient lets it through");
    let off =
        EventBus::builder().schema_registry(registry()).validation(ValidationMode::Off).try_build().await.unwrap();
    off.emit(invalid()).await.expect("off does not check");

    let strict = EventBus::builder().schema_registry(registry()).reject_unknown_events(true).try_build().await.unwrap();
    let err = strict.emit(Event::new("order.paid")).await.unwrap_err();
    assert!(err.to_string().contains("unknown event type"), "{err}");

    // A valid dynamic event carries the version it was checked against.
    let store = MemoryStore::new();
    let bus = EventBus::builder().schema_registry(registry()).store(store.clone()).try_build().await.unwrap();
    let receipt =
        bus.emit(Event::new("user.created").with_data(json!({ "user_id": "1", "email": "e" }))).await.unwrap();
    let stored = store.get(receipt.id).await.unwrap().unwrap();
    assert_eq!(stored.event.version.as_deref(), Some("1.0.0"));
}

/// Every `FieldType` holds its values to its type and format: one value it accepts and
/// the values it refuses.
#[test]
fn every_field_type_is_enforced_formats_included() {
    let cases: Vec<(FieldType, Vec<serde_json::Value>, Vec<serde_json::Value>)> = vec![
        (FieldType::String, vec![json!("x")], vec![json!(1), json!(null)]),
        (FieldType::Integer, vec![json!(3)], vec![json!(3.5), json!("3")]),
        (FieldType::Number, vec![json!(3.5), json!(3)], vec![json!("3.5")]),
        (FieldType::Boolean, vec![json!(true)], vec![json!("true"), json!(1)]),
        (FieldType::Object, vec![json!({ "a": 1 })], vec![json!([1]), json!("{}")]),
        (FieldType::Array(Box::new(FieldType::Integer)), vec![json!([1, 2])], vec![json!(["1"]), json!(1)]),
        (
            FieldType::DateTime,
            vec![json!("2026-12-03T10:00:00Z"), json!("2026-12-03T10:00:00.123+01:00")],
            vec![json!("yesterday"), json!("2026-13-03T10:00:00Z"), json!(1_700_000_000)],
        ),
        (
            FieldType::Uuid,
            vec![json!("01a23c1c-d971-76d4-9800-f4660eed6662")],
            vec![json!("not-a-uuid"), json!("01a23c1c-d971-76d4-9800")],
        ),
        (FieldType::Email, vec![json!("ann@example.com")], vec![json!("not-an-email"), json!("ann@")]),
        (FieldType::Any, vec![json!(null), json!({ "x": [1] })], vec![]),
    ];
    for (i, (field, good, bad)) in cases.into_iter().enumerate() {
        let name = format!("format.case{i}");
        let mut registry = SchemaRegistry::new();
        registry
            .register(EventSchema::builder().name(&name).version("1.0.0").field("v", field.clone(), true).build())
            .expect("register");
        let schema = registry.get(&name, "1.0.0").unwrap_or_else(|| panic!("{name} registered"));
        for value in good {
            assert!(schema.validate_value(&json!({ "v": value })).is_ok(), "{field:?} refused {value}");
        }
        for value in bad {
            assert!(schema.validate_value(&json!({ "v": value })).is_err(), "{field:?} accepted {value}");
        }
    }
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "test.formats.session_started", version = "1.0.0")]
struct SessionStarted {
    session_id: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
}

/// A derived schema's formats (schemars writes `uuid` and `date-time`) are enforced on
/// dynamic events of that name.
#[tokio::test]
async fn derived_formats_are_enforced_on_dynamic_events() -> Result<(), Error> {
    let bus = EventBus::builder().try_build().await?;
    let ok = json!({ "session_id": "01a23c1c-d971-76d4-9800-f4660eed6662", "at": "2026-12-03T10:00:00Z" });
    bus.emit(Event::new(SessionStarted::NAME).with_data(ok)).await?;
    for bad in [
        json!({ "session_id": "not-a-uuid", "at": "2026-12-03T10:00:00Z" }),
        json!({ "session_id": "01a23c1c-d971-76d4-9800-f4660eed6662", "at": "yesterday" }),
    ] {
        let err = bus.emit(Event::new(SessionStarted::NAME).with_data(bad.clone())).await;
        assert!(matches!(err, Err(Error::Validation { .. })), "{bad} was accepted: {err:?}");
    }
    Ok(())
}

/// A version older than one registered already is refused: versions never go backwards.
#[test]
fn a_version_that_goes_backwards_is_refused() {
    let mut registry = SchemaRegistry::new();
    let at = |v: &str| {
        EventSchema::builder().name("account.closed").version(v).field("user_id", FieldType::String, true).build()
    };
    registry.register(at("1.0.0")).expect("first version");
    let err = registry.register(at("0.9.0")).expect_err("0.9.0 comes after 1.0.0");
    assert!(err.to_string().contains("versions never go backwards"), "{err}");
    registry.register(at("1.0.0")).expect("the same schema again is fine");
    registry.register(at("1.1.0")).expect("a later version");
}

/// A renamed field is carried by the generated upcaster (new code reads old events), so
/// BACKWARD takes the rename as a minor change; FORWARD and FULL, which also ask old code
/// to read new events, refuse it and say why.
#[test]
fn a_rename_is_a_minor_change_under_backward_only() {
    let v1 = user_created_v1;
    let v2 = |version: &str| {
        EventSchema::builder()
            .name("user.created")
            .version(version)
            .field("user_id", FieldType::String, true)
            .field("email_address", FieldType::String, true)
            .build()
            .with_rename("email_address", "email")
    };

    let mut backward = SchemaRegistry::with_mode(CompatibilityMode::Backward);
    backward.register(v1()).expect("1.0.0");
    let err = backward.register(v2("1.0.1")).expect_err("a rename is more than a patch");
    assert!(err.to_string().contains("field `email` renamed to `email_address`"), "{err}");
    backward.register(v2("1.1.0")).expect("a rename is a minor change under BACKWARD");
    // Without the rename declared, the same schema drops `email` and adds a required field.
    let mut undeclared = SchemaRegistry::with_mode(CompatibilityMode::Backward);
    undeclared.register(v1()).expect("1.0.0");
    let mut plain = v2("1.1.0");
    plain.renames.clear();
    undeclared.register(plain).expect_err("an undeclared rename breaks BACKWARD");

    for mode in [CompatibilityMode::Forward, CompatibilityMode::Full] {
        let mut registry = SchemaRegistry::with_mode(mode);
        registry.register(v1()).expect("1.0.0");
        let err = registry.register(v2("1.1.0")).expect_err("old readers cannot read the new key").to_string();
        assert!(err.contains("BACKWARD compatible only"), "{mode}: {err}");
        registry.register(v2("2.0.0")).expect("a major bump is allowed");
    }
    let mut fresh = SchemaRegistry::with_mode(CompatibilityMode::Backward);
    fresh.register(v1()).expect("1.0.0");
    assert!(fresh.check_compatibility(&v2("1.1.0")).is_compatible(), "the report agrees with register");
    let mut forward = SchemaRegistry::with_mode(CompatibilityMode::Forward);
    forward.register(v1()).expect("1.0.0");
    assert!(!forward.check_compatibility(&v2("1.1.0")).is_compatible());
}
