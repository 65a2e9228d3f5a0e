//! Two upcasters from one version (a fork in the chain) are refused at start-up, by the
//! chain and by the bus. The chain is program-wide, so this test has a binary of its own.

use better_auth_events::prelude::*;
use better_auth_events::schema::UpcastChain;

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "fork.event", version = "1.0.0")]
struct V1 {
    a: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "fork.event", version = "2.0.0", previous = V1)]
struct V2 {
    a: String,
    #[serde(default)]
    b: Option<String>,
}

// Also from 1.0.0: should have said `previous = V2`.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[event(name = "fork.event", version = "3.0.0", previous = V1)]
struct V3 {
    a: String,
    #[serde(default)]
    c: Option<String>,
}

#[tokio::test]
async fn two_upcasters_from_one_version_are_a_start_up_error() {
    let err = UpcastChain::from_registered().unwrap_err().to_string();
    assert!(err.contains("`fork.event` 1.0.0 has two upcasters (to "), "{err}");
    assert!(err.contains("keep one `previous = ..` per version"), "{err}");
    let err = EventBus::builder().try_build().await.unwrap_err().to_string();
    assert!(err.contains("has two upcasters"), "{err}");
}
