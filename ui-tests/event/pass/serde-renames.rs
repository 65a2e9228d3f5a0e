use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[event(name = "profile.viewed")]
struct ProfileViewed {
    viewer_id: String,
    #[event(pii)]
    viewer_ip_address: String,
    #[event(pii)]
    #[serde(rename = "agent")]
    user_agent: String,
    #[event(pii)]
    #[serde(rename(serialize = "mail", deserialize = "email"))]
    email_address: String,
    #[event(pii)]
    r#type: String,
}

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all(serialize = "SCREAMING_SNAKE_CASE", deserialize = "snake_case"))]
struct AccountLocked {
    #[event(pii)]
    user_name: String,
    #[serde(skip)]
    #[allow(dead_code)]
    internal_note: String,
}

fn main() {
    assert_eq!(ProfileViewed::PII_FIELDS, ["viewerIpAddress", "agent", "mail", "type"]);
    assert_eq!(AccountLocked::PII_FIELDS, ["USER_NAME"]);

    // The keys match what serde writes.
    let json = serde_json::to_value(ProfileViewed {
        viewer_id: "u1".into(),
        viewer_ip_address: "127.0.0.1".into(),
        user_agent: "curl".into(),
        email_address: "a@b.c".into(),
        r#type: "web".into(),
    })
    .unwrap();
    for key in ProfileViewed::PII_FIELDS {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
}
