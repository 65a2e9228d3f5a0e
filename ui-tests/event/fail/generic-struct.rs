use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct Created<T> {
    item: T,
}

fn main() {}
