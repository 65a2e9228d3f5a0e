use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

struct Service;

impl Service {
    #[handler]
    async fn on_user_created(&self, e: &UserCreated) -> Result<(), HandlerError> {
        let _ = e;
        Ok(())
    }
}

fn main() {}
