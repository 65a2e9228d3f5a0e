use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct HTTPRequestFailed {
    status: u16,
}

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "com.example/user-created:v2", version = "2.1.0-beta.1")]
struct UserCreated {
    user_id: String,
}

fn main() {
    assert_eq!(HTTPRequestFailed::NAME, "http.request.failed");
    assert_eq!(HTTPRequestFailed::VERSION, "1.0.0");
    assert!(HTTPRequestFailed::PII_FIELDS.is_empty());
    assert_eq!(UserCreated::NAME, "com.example/user-created:v2");
    assert_eq!(UserCreated::VERSION, "2.1.0-beta.1");

    let events = registered_events();
    let info = events.iter().find(|e| e.name == "http.request.failed").expect("registered");
    assert_eq!(info.version, "1.0.0".parse().unwrap());
    assert!(events.iter().any(|e| e.name == UserCreated::NAME));
}
