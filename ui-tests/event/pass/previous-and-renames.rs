use better_auth_events::prelude::*;
use better_auth_events::schema::Upcast;

mod v1 {
    use better_auth_events::prelude::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema)]
    #[event(name = "profile.updated", version = "1.0.0")]
    pub struct ProfileUpdated {
        pub user_id: String,
        pub display_name: String,
    }
}

/// Generated upcaster: a rename and a new optional field.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "profile.updated", version = "1.1.0", previous = v1::ProfileUpdated)]
struct ProfileUpdatedV2 {
    user_id: String,
    #[event(renamed_from = "display_name")]
    name: String,
    #[serde(default)]
    locale: Option<String>,
}

/// Hand-written upcaster.
#[derive(Event, Serialize, Deserialize, JsonSchema, Debug)]
#[event(name = "profile.updated", version = "2.0.0-rc.1", previous = ProfileUpdatedV2, upcast = "manual")]
struct ProfileUpdated {
    user_number: u64,
    name: String,
}

impl Upcast<ProfileUpdatedV2> for ProfileUpdated {
    fn upcast(old: ProfileUpdatedV2) -> Self {
        Self { user_number: old.user_id.len() as u64, name: old.name }
    }
}

fn main() {
    let old = Envelope::of(v1::ProfileUpdated { user_id: "abc".into(), display_name: "Ann".into() }).to_dynamic().unwrap();
    let new: Envelope<ProfileUpdated> = old.into_typed().unwrap();
    assert_eq!(new.data.user_number, 3);
    assert_eq!(new.data.name, "Ann");
}
