//! Reading old events through compatible steps and past dropped versions: a minor version
//! without `previous` reads the one before it as it is (the snapshot check only lets a
//! compatible change through at a minor bump), the chain goes on from there through the
//! next upcaster, and a type that declares `drop_versions_before` refuses older events
//! with an error that says so. The chain is program-wide, so this test has a binary of
//! its own.

use better_auth_events::Error;
use better_auth_events::prelude::*;
use better_auth_events::schema::UpcastChain;

mod v1 {
    use better_auth_events::prelude::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
    #[event(name = "steps.profile_updated", version = "1.0.0")]
    pub struct ProfileUpdated {
        pub user_id: String,
    }
}

mod v1_1 {
    use better_auth_events::prelude::*;

    /// 1.1.0 adds an optional field and declares no `previous`.
    #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
    #[event(name = "steps.profile_updated", version = "1.1.0")]
    pub struct ProfileUpdated {
        pub user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub locale: Option<String>,
    }
}

/// 2.0.0 renames `user_id`, upcast from 1.1.0.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "steps.profile_updated", version = "2.0.0", previous = v1_1::ProfileUpdated)]
struct ProfileUpdated {
    #[event(renamed_from = "user_id")]
    account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locale: Option<String>,
}

/// 2.0.0 of another event changes a type and drops what came before.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[event(name = "steps.quota_set", version = "2.0.0", drop_versions_before = "2.0.0")]
struct QuotaSet {
    bytes: u64,
}

fn stored(name: &str, version: &str, data: serde_json::Value) -> Event {
    Event::new(name.to_owned()).with_version(version).with_data(data)
}

#[test]
fn the_chain_with_a_compatible_step_is_accepted_at_start_up() {
    UpcastChain::from_registered().expect("1.0.0 reaches 2.0.0 through 1.1.0");
}

#[test]
fn a_minor_version_without_previous_reads_the_one_before_as_it_is() -> Result<(), Error> {
    let old = stored("steps.profile_updated", "1.0.0", json!({ "user_id": "u-1" }));
    let read = old.into_typed::<v1_1::ProfileUpdated>()?;
    assert_eq!(read.data, v1_1::ProfileUpdated { user_id: "u-1".into(), locale: None });
    Ok(())
}

#[test]
fn the_chain_goes_on_through_the_next_upcaster_of_the_same_major() -> Result<(), Error> {
    let old = stored("steps.profile_updated", "1.0.0", json!({ "user_id": "u-1" }));
    let read = old.into_typed::<ProfileUpdated>()?;
    assert_eq!(read.data, ProfileUpdated { account_id: "u-1".into(), locale: None });
    let newer = stored("steps.profile_updated", "1.1.0", json!({ "user_id": "u-2", "locale": "fr" }));
    assert_eq!(newer.into_typed::<ProfileUpdated>()?.data.locale.as_deref(), Some("fr"));
    Ok(())
}

#[test]
fn a_dropped_version_is_refused_with_a_reason() {
    let old = stored("steps.quota_set", "1.0.0", json!({ "bytes": "10 GB" }));
    let err = old.into_typed::<QuotaSet>().expect_err("1.0.0 is dropped").to_string();
    assert!(err.contains("reads versions from 2.0.0 on"), "{err}");
    assert!(err.contains("drop_versions_before"), "{err}");
    let current = stored("steps.quota_set", "2.0.0", json!({ "bytes": 10 }));
    assert_eq!(current.into_typed::<QuotaSet>().map(|e| e.data.bytes).ok(), Some(10));
}
