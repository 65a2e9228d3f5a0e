//! `#[derive(Event)]`: names, versions, schemas, PII marks, program-wide registration.

use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "order.placed", version = "2.1.0")]
struct OrderPlaced {
    order_id: String,
    #[event(pii)]
    email: String,
    amount_cents: u64,
}

/// No attributes: the name comes from the type name, the version is 1.0.0.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
struct PasswordResetRequested {
    user_id: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(rename_all = "camelCase")]
#[event(name = "profile.viewed")]
struct ProfileViewed {
    viewer_id: String,
    #[event(pii)]
    viewer_ip_address: String,
    #[event(pii)]
    #[serde(rename = "agent")]
    user_agent: String,
}

#[test]
fn name_and_version_come_from_the_attribute() {
    assert_eq!(OrderPlaced::NAME, "order.placed");
    assert_eq!(OrderPlaced::VERSION, "2.1.0");
    assert_eq!(OrderPlaced::event_type(), EventType::Custom("order.placed".into()));
}

#[test]
fn default_name_is_the_dotted_type_name_and_default_version_is_1_0_0() {
    assert_eq!(PasswordResetRequested::NAME, "password.reset.requested");
    assert_eq!(PasswordResetRequested::VERSION, "1.0.0");
}

#[test]
fn pii_fields_are_json_keys_after_serde_renames() {
    assert_eq!(OrderPlaced::PII_FIELDS, ["email"]);
    assert_eq!(ProfileViewed::PII_FIELDS, ["viewerIpAddress", "agent"]);
    assert!(PasswordResetRequested::PII_FIELDS.is_empty());
}

#[test]
fn registered_events_lists_every_derived_type_with_its_schema() {
    let events = registered_events();
    let order = events.iter().find(|e| e.name == "order.placed").expect("order.placed is registered");
    assert_eq!(order.version, semver::Version::new(2, 1, 0));
    assert_eq!(order.pii_fields, ["email"]);
    let schema = order.schema.as_value();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["amount_cents"]["type"], "integer");
    let required: Vec<&str> = schema["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(required.contains(&"order_id") && required.contains(&"email"), "{required:?}");

    // The built-in auth events are registered too, under the EventType names.
    for t in EventType::built_in() {
        assert!(events.iter().any(|e| e.name == t.as_str()), "built-in `{t}` is not registered");
    }
    assert!(events.iter().any(|e| e.name == "password.reset.requested"));
    assert!(events.iter().any(|e| e.name == "profile.viewed"));
}

#[test]
fn built_in_events_convert_to_their_event_type() {
    use better_auth_events::auth::*;
    assert_eq!(UserCreated::event_type(), EventType::UserCreated);
    assert_eq!(BeforeLogin::event_type(), EventType::BeforeLogin);
    assert_eq!(AfterSignup::event_type(), EventType::AfterSignup);
    assert_eq!(EventType::from(SessionExpired::NAME), EventType::SessionExpired);
    assert_eq!(UserCreated::PII_FIELDS, ["email", "name"]);
}

#[test]
fn custom_event_types_are_built_from_a_string_or_a_str() {
    let from_string = EventType::Custom(String::from("order.placed"));
    let from_str = EventType::Custom("order.placed".into());
    assert_eq!(from_string, from_str);
    assert_eq!(from_string, OrderPlaced::event_type());
}

/// What a user's `match` on an event type says about it.
fn describe(event_type: &EventType) -> String {
    match event_type {
        EventType::UserCreated => "built in: user created".to_owned(),
        EventType::Custom(name) => format!("custom: {name}"),
        other => format!("built in: {other}"),
    }
}

#[tokio::test]
async fn a_match_on_custom_sees_the_name_of_a_derived_event() {
    assert_eq!(describe(&OrderPlaced::event_type()), "custom: order.placed");
    assert_eq!(describe(&Envelope::of(OrderPlaced::default_for_test()).event_type), "custom: order.placed");
    assert_eq!(describe(&ProfileViewed::event_type()), "custom: profile.viewed");

    // And on the envelope a handler gets from an emit.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = std::sync::Arc::clone(&seen);
    let bus = EventBus::new();
    bus.subscribe(async move |e: &Envelope<OrderPlaced>| {
        s.lock().unwrap().push(describe(&e.event_type));
        Ok::<(), HandlerError>(())
    })
    .await
    .unwrap();
    let receipt = bus.emit(OrderPlaced::default_for_test()).await.unwrap();
    assert_eq!(receipt.handlers_run, 1);
    assert_eq!(describe(&receipt.event_type), "custom: order.placed");
    assert_eq!(*seen.lock().unwrap(), ["custom: order.placed"]);
}

impl OrderPlaced {
    fn default_for_test() -> Self {
        Self { order_id: "o1".into(), email: "a@b.c".into(), amount_cents: 100 }
    }
}
