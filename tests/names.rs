//! Dynamic event names follow the rule derived names follow at compile time.

use better_auth_events::Error;
use better_auth_events::prelude::*;

#[tokio::test]
async fn a_dynamic_event_with_an_invalid_name_is_refused_and_not_stored() -> Result<(), Error> {
    let store = MemoryStore::new();
    let bus = EventBus::builder().store(store.clone()).try_build().await?;
    for (name, problem) in [
        ("", "it is empty"),
        ("has space", "it contains whitespace"),
        ("user..created", "dots must separate non-empty words"),
        ("usér.created", "only ASCII letters"),
    ] {
        let error = bus.emit(Event::new(name)).await.expect_err(name);
        assert!(matches!(error, Error::Validation { .. }), "{name:?}: {error:?}");
        let text = error.to_string();
        assert!(text.contains(problem) && text.contains("such as `user.created`"), "{name:?}: {text}");
    }
    assert_eq!(store.query().count().await?, 0, "nothing was stored");
    bus.emit(Event::new("com.example/order-placed:v1")).await?;
    assert_eq!(store.query().count().await?, 1);
    Ok(())
}
