mod events {
    pub mod user {
        use better_auth_events::prelude::*;

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub struct UserCreated {
            pub user_id: String,
        }
    }
}

mod handlers {
    pub mod mail {
        use better_auth_events::prelude::*;

        use crate::events::user::UserCreated;

        #[handler]
        pub async fn send_welcome(e: &UserCreated) -> Result<(), HandlerError> {
            let _ = e;
            Ok(())
        }

        #[handler]
        async fn audit(e: &better_auth_events::Envelope<crate::events::user::UserCreated>) -> Result<(), HandlerError> {
            let _ = e;
            Ok(())
        }
    }
}

fn main() {
    use better_auth_events::TypedEvent;

    assert_eq!(<events::user::UserCreated as TypedEvent>::NAME, "user.created");
    let handlers = better_auth_events::registered_handlers();
    for name in ["send_welcome", "audit"] {
        let h = handlers.iter().find(|h| h.name() == name).unwrap();
        assert_eq!(h.event_name(), "user.created");
        assert!(h.location().unwrap().contains("::handlers::mail::"), "{:?}", h.location());
    }
    // The function stays callable.
    let _ = handlers::mail::send_welcome;
}
