//! A generated upcaster for a change that needs user code (a field's type changed) is
//! refused at start-up with the fix. The chain is program-wide, so this test has a binary
//! of its own.

use better_auth_events::prelude::*;
use better_auth_events::schema::UpcastChain;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "code.event", version = "1.0.0")]
struct V1 {
    age: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "code.event", version = "2.0.0", previous = V1)]
struct V2 {
    age: u32,
}

#[test]
fn a_generated_upcaster_that_needs_user_code_is_refused() {
    let err = UpcastChain::from_registered().unwrap_err().to_string();
    assert!(err.contains("declares `previous = "), "{err}");
    assert!(err.contains("change the type of `age`"), "{err}");
    assert!(err.contains("write `#[event(previous = .., upcast = \"manual\")]` and implement `Upcast<"), "{err}");
}
