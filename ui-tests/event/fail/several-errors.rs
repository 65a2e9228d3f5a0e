use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(nmae = "user.created", version = "1.0", version = "2.0.0")]
struct UserCreated {
    #[event(secret)]
    password_hash: String,
    #[event(pii = true)]
    email: String,
}

fn main() {}
