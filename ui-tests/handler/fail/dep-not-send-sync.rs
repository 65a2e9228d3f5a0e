use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

#[handler]
async fn on_user_created(e: &UserCreated, counter: Dep<std::rc::Rc<u8>>) -> Result<(), HandlerError> {
    let _ = (e, counter);
    Ok(())
}

fn main() {}
