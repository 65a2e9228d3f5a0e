// The crate under another name, as after `events = { package = "better-auth-events" }`.
extern crate better_auth_events as events;

mod model {
    use events::prelude::*;

    #[derive(Event, Serialize, Deserialize, JsonSchema)]
    #[event(crate = "events", name = "user.created")]
    pub struct UserCreated {
        pub user_id: String,
    }

    #[handler(crate = "events", name = "audit_user_created")]
    pub async fn audit(e: &UserCreated) -> Result<(), HandlerError> {
        let _ = e;
        Ok(())
    }
}

fn main() {
    use events::TypedEvent;

    assert_eq!(<model::UserCreated as TypedEvent>::NAME, "user.created");
    assert!(events::registered_handlers().iter().any(|h| h.name() == "audit_user_created"));
}
