use better_auth_events::prelude::*;

// events.lock/ui.lock.bump@1.0.0.json records `user_id` as a String. 2.0.0 changes its
// type and says that 1.0.0 events are no longer read.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.bump", version = "2.0.0", drop_versions_before = "2.0.0")]
struct UserCreated {
    user_id: u64,
}

fn main() {
    assert_eq!(<UserCreated as better_auth_events::TypedEvent>::DROPPED_BEFORE, Some("2.0.0"));
}
