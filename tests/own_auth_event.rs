//! A program that derives its own event under the name of a built-in authentication
//! event (`user.created` here) gets its own definition: the built-in one neither clashes
//! with it nor joins its version history. Built-in events of other names stay.

use better_auth_events::EventInfo;
use better_auth_events::prelude::*;
use better_auth_events::schema::SchemaRegistry;

/// The application's own `user.created`, with a different shape than the built-in one.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "user.created", version = "1.0.0")]
struct UserCreated {
    account_id: u64,
    plan: String,
}

#[test]
fn the_programs_own_event_replaces_the_built_in_one_of_the_same_name() {
    let events = registered_events();
    let user_created: Vec<&EventInfo> = events.iter().filter(|e| e.name == "user.created").collect();
    assert_eq!(user_created.len(), 1, "{user_created:?}");
    assert!(user_created[0].type_name.ends_with("own_auth_event::UserCreated"), "{}", user_created[0].type_name);

    // Built-in events of other names are still registered.
    assert!(events.iter().any(|e| e.name == "session.created" && e.type_name.contains("auth::SessionCreated")));
}

#[tokio::test]
async fn the_bus_builds_and_validates_against_the_programs_own_schema() {
    let registry = SchemaRegistry::from_registered_events().expect("no clash with the built-in user.created");
    let schema = registry.latest("user.created").expect("registered");
    let required = schema.schema.get("required").cloned().unwrap_or_default();
    assert_eq!(required, serde_json::json!(["account_id", "plan"]));

    let bus = EventBus::builder().try_build().await.expect("bus builds");
    bus.emit(UserCreated { account_id: 7, plan: "pro".into() }).await.expect("typed emit");
    // A dynamic `user.created` is validated against the program's schema, not the built-in one.
    let err = bus
        .emit(Event::new("user.created").with_data(serde_json::json!({ "user_id": "u1", "email": "a@b.c" })))
        .await
        .expect_err("the built-in shape is not the program's shape");
    assert!(err.to_string().contains("account_id"), "{err}");
}
