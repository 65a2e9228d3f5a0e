use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
#[event(name = "utilisateur.créé")]
struct UserCreated {
    user_id: String,
}

fn main() {}
