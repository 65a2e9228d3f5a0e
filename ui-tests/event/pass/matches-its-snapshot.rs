use better_auth_events::prelude::*;

// events.lock/ui.lock.same@1.0.0.json records exactly these fields.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.same", version = "1.0.0")]
struct UserCreated {
    user_id: String,
    #[serde(default)]
    locale: Option<String>,
}

// A compatible change since ui.lock.same@1.0.0 with a minor bump.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.same", version = "1.1.0")]
struct UserCreatedV11 {
    user_id: String,
    #[serde(default)]
    locale: Option<String>,
    #[serde(default)]
    referrer: Option<String>,
}

fn main() {}
