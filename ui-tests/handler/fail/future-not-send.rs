use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler]
async fn on_user_created(e: &UserCreated) -> Result<(), HandlerError> {
    let local = std::rc::Rc::new(e.user_id.clone());
    std::future::ready(()).await;
    let _ = local;
    Ok(())
}

fn main() {}
