//! A chain with a gap (1.0.0 has no way to 3.0.0) is refused at start-up, by the registry
//! and by the bus. The chain is program-wide, so this test has a binary of its own.

use better_auth_events::prelude::*;
use better_auth_events::schema::{SchemaRegistry, UpcastChain};

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "gap.event", version = "1.0.0")]
struct V1 {
    a: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "gap.event", version = "2.0.0")]
struct V2 {
    b: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "gap.event", version = "3.0.0", previous = V2)]
struct V3 {
    b: String,
    #[serde(default)]
    c: Option<String>,
}

#[tokio::test]
async fn a_gap_in_the_chain_is_a_start_up_error() {
    let err = UpcastChain::from_registered().unwrap_err().to_string();
    assert!(err.contains("`gap.event` 1.0.0 cannot be upcast to 3.0.0: no upcaster goes on from 1.0.0"), "{err}");
    assert!(SchemaRegistry::from_registered_events().is_err());
    let err = EventBus::builder().try_build().await.unwrap_err().to_string();
    assert!(err.contains("cannot be upcast"), "{err}");
}
