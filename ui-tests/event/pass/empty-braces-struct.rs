use better_auth_events::prelude::*;

/// An event without data: `struct Name {}` (a unit struct is rejected).
#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct Ping {}

fn main() {
    assert_eq!(Ping::NAME, "ping");
    assert_eq!(serde_json::to_value(Ping {}).unwrap(), json!({}));
}
