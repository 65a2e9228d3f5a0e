use better_auth_events::prelude::*;

// events.lock/ui.lock.bump@1.0.0.json records `user_id` as a String. 2.0.0 changes its
// type, with no `previous`, no manual upcast and no `drop_versions_before`: stored 1.0.0
// events could not be read.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.bump", version = "2.0.0")]
struct UserCreated {
    user_id: u64,
}

fn main() {}
