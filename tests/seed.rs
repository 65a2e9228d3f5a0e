//! The seed README's own snippets, as written there, with only the changes Rust itself
//! forces (each one is named where it is made).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use better_auth_events::store::MemoryStore;
use better_auth_events::{Event, EventBus, EventError, EventHandler, EventMiddleware, EventStore, EventType};
use serde_json::json;

// The seed imports `async_trait` from the `async_trait` crate; the facade re-exports it.
use better_auth_events::async_trait;

/// "Basic Usage".
#[tokio::test]
async fn basic_usage() -> Result<(), Box<dyn std::error::Error>> {
    // Create event bus
    let bus = EventBus::new();

    // Register handler. Rust forces `async |event: &Event| { .. }` where the seed writes
    // `|event: &Event| async { .. }`: a closure returning an `async` block cannot borrow
    // its argument.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    bus.on("user.created", async move |event: &Event| {
        println!("User created: {:?}", event.data);
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .await?;

    // Emit event
    bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123" }))).await?;

    assert_eq!(seen.load(Ordering::SeqCst), 1);
    Ok(())
}

/// "With Event Store": the builder's `build()` needs neither `.await` nor `?`.
#[tokio::test]
async fn with_event_store() -> Result<(), Box<dyn std::error::Error>> {
    let start_time = chrono::Utc::now();
    let store = MemoryStore::new();
    // Rust forces `store.clone()`: the seed uses `store` after handing it to the builder
    // (a `MemoryStore` clone shares its events).
    let bus = EventBus::builder().with_store(store.clone()).build();

    // Events are now persisted
    bus.emit(Event::new("user.created")).await?;

    // Query historical events
    let events = store.query().event_type("user.created").since(start_time).fetch().await?;
    assert_eq!(events.len(), 1);
    Ok(())
}

/// "Configuration": every setting the seed lists, built without `.await` or `?`.
#[tokio::test]
async fn configuration() -> Result<(), EventError> {
    let bus =
        EventBus::builder().max_handlers_per_event(100).buffer_size(1000).enable_batching(true).batch_size(50).build();
    bus.emit(Event::new("session.created")).await?;
    Ok(())
}

/// A configuration error from `build()` surfaces at the first emit; `try_build` reports
/// it at start-up.
#[tokio::test]
async fn a_configuration_error_surfaces_at_the_first_emit_or_from_try_build() {
    let bus = EventBus::builder().batch_size(0).build();
    let error = bus.emit(Event::new("user.created")).await.expect_err("a zero batch size is refused");
    assert!(matches!(error, EventError::Config(_)), "{error:?}");
    assert!(error.to_string().contains("batch_size"), "{error}");
    let error = EventBus::builder().batch_size(0).try_build().await.expect_err("refused at start-up");
    assert!(error.to_string().contains("`batch_size` must be at least 1"), "{error}");
}

/// "Event Handler": a struct implementing the seed's `EventHandler` trait, on the bus.
#[tokio::test]
async fn event_handler_trait() -> Result<(), EventError> {
    struct AuditLog {
        seen: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl EventHandler for AuditLog {
        async fn handle(&self, event: &Event) -> Result<(), EventError> {
            self.seen.lock().map_err(|_| EventError::Config("poisoned".into()))?.push(event.event_type.to_string());
            if event.data["user_id"] == "banned" {
                return Err(EventError::NotFound { what: "user `banned`".into() });
            }
            Ok(())
        }
    }

    let bus = EventBus::new();
    let log = Arc::new(AuditLog { seen: Mutex::new(Vec::new()) });
    bus.on_handler("user.created", Arc::clone(&log)).await?;
    bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123" }))).await?;
    let vetoed = bus.emit(Event::new("user.created").with_data(json!({ "user_id": "banned" }))).await;
    let error = vetoed.expect_err("the handler's error vetoes the emit");
    assert!(error.to_string().contains("handler"), "{error}");
    assert_eq!(log.seen.lock().map(|s| s.len()).unwrap_or(0), 2);
    Ok(())
}

/// "Middleware": the seed's `LoggingMiddleware`, which takes and returns an `Event`.
#[tokio::test]
async fn middleware_in_the_seed_form() -> Result<(), EventError> {
    struct LoggingMiddleware;

    #[async_trait]
    impl EventMiddleware for LoggingMiddleware {
        async fn process(&self, event: Event) -> Result<Event, EventError> {
            println!("Event: {}", event.event_type);
            Ok(event.with_correlation_id("from-the-middleware"))
        }
    }

    let store = MemoryStore::new();
    let bus = EventBus::builder().with_middleware(LoggingMiddleware).with_store(store.clone()).build();
    bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123" }))).await?;
    let stored = store.query().fetch().await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.metadata.correlation_id.as_deref(), Some("from-the-middleware"));
    assert_eq!(stored[0].event.data, json!({ "user_id": "123" }));
    Ok(())
}

/// The Quick Start emits `user.created` with a partial payload and with none: the built-in
/// authentication events are validated only when asked for.
#[tokio::test]
async fn built_in_names_take_partial_payloads_unless_validation_is_asked_for() -> Result<(), EventError> {
    let bus = EventBus::new();
    bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123" }))).await?;
    bus.emit(Event::new("user.created")).await?;

    let strict = EventBus::builder().validate_built_in_events(true).build();
    let error = strict.emit(Event::new("user.created")).await.expect_err("validated against `auth::UserCreated`");
    assert!(matches!(error, EventError::Validation { .. }), "{error:?}");
    Ok(())
}

/// `EventType::Custom` takes a `String` or anything that converts into one.
#[test]
fn custom_event_types() {
    assert_eq!(EventType::Custom("order.placed".into()).as_str(), "order.placed");
    assert_eq!(EventType::Custom(String::from("order.placed")).as_str(), "order.placed");
    assert_eq!(EventType::from("order.placed"), EventType::Custom("order.placed".into()));
}

/// The seed's store accessors exist on the trait object too.
#[tokio::test]
async fn a_missing_event_is_not_found() -> Result<(), EventError> {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let missing = better_auth_events::new_event_id();
    let error = store.find(missing).await.expect_err("nothing stored");
    assert!(matches!(error, EventError::NotFound { .. }), "{error:?}");
    assert_eq!(error.to_string(), format!("event `{missing}` not found"));
    Ok(())
}

/// "Schema Registry" and "With Schema Validation": register, validate, generate a
/// migration; the bus validates against the registry it is given.
#[tokio::test]
async fn schema_registry() -> Result<(), EventError> {
    use better_auth_events::schema::{EventSchema, FieldType, SchemaRegistry};

    let mut registry = SchemaRegistry::new();
    let my_schema = EventSchema::builder()
        .name("user.created")
        .version("1.0.0")
        .field("user_id", FieldType::String, true)
        .field("email", FieldType::String, true)
        .build();
    registry.register(my_schema.clone())?;

    // Validate events
    let event = Event::new("user.created").with_data(json!({ "user_id": "123", "email": "user@example.com" }));
    registry.validate(&event)?;

    // Generate migrations for schema changes
    let new_schema = EventSchema::builder()
        .name("user.created")
        .version("1.1.0")
        .field("user_id", FieldType::String, true)
        .field("email", FieldType::String, true)
        .field("locale", FieldType::String, false)
        .build();
    let migration = registry.generate_migration(&my_schema, &new_schema)?;
    assert!(!migration.steps.is_empty(), "adding `locale` is a step");

    let bus = EventBus::builder().schema_registry(registry).build();
    bus.emit(event).await?; // ✅ Valid
    let error = bus.emit(Event::new("user.created").with_data(json!({ "user_id": "123" }))).await.expect_err("invalid");
    assert_eq!(error.to_string(), "validation failed for event `user.created`: missing required field 'email'");
    Ok(())
}

/// "Replay Engine": replay a time range of one event type from a store into a bus.
#[tokio::test]
async fn replay_engine() -> Result<(), EventError> {
    use better_auth_events::replay::ReplayEngine;

    let store = MemoryStore::new();
    let start_time = chrono::Utc::now();
    let writer = EventBus::builder().with_store(store.clone()).build();
    writer.emit(Event::new("user.created").with_data(json!({ "user_id": "1" }))).await?;
    writer.emit(Event::new("session.created")).await?;
    let end_time = chrono::Utc::now();

    let replayed = Arc::new(AtomicUsize::new(0));
    let bus = EventBus::new();
    let counter = Arc::clone(&replayed);
    bus.on("user.created", async move |event: &Event| {
        assert!(event.metadata.replay, "replays are marked");
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
    .await?;

    let engine = ReplayEngine::new(store, bus);

    // Replay events from specific time
    engine.replay().from(start_time).to(end_time).event_type("user.created").execute().await?;
    assert_eq!(replayed.load(Ordering::SeqCst), 1);
    Ok(())
}
