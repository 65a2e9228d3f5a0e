use better_auth_events::prelude::*;

// events.lock/ui.lock.bump@1.0.0.json records only `user_id`; a new optional field is a
// compatible change, so a patch bump is too small.
#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "ui.lock.bump", version = "1.0.1")]
struct UserCreated {
    user_id: String,
    locale: Option<String>,
}

fn main() {}
