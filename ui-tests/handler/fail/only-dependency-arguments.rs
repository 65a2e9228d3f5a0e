use better_auth_events::prelude::*;

#[derive(Event, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: String,
}

struct Mailer;

#[handler]
async fn on_user_created(mailer: Dep<Mailer>, ctx: &HandlerContext) -> Result<(), HandlerError> {
    let _ = (mailer, ctx);
    Ok(())
}

fn main() {}
