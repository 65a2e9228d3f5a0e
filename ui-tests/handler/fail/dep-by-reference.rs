use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

struct Mailer;

#[handler]
async fn on_user_created(e: &UserCreated, mailer: &Dep<Mailer>) -> Result<(), HandlerError> {
    let _ = (e, mailer);
    Ok(())
}

fn main() {}
