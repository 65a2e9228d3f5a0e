//! The cause scope: which event's handler is running on a task, so that an event emitted
//! from inside a handler can name its cause ([`crate::CorrelationMiddleware`]).

use std::future::Future;

use uuid::Uuid;

use crate::envelope::Envelope;
use crate::event::EventData;

/// The event being handled when an emit happens inside a handler; read by
/// [`crate::CorrelationMiddleware`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Id of the event being handled.
    pub event_id: Uuid,
    /// Its correlation id.
    pub correlation_id: Option<String>,
}

tokio::task_local! {
    static CAUSE: Cause;
}

/// The event whose handler is running on this task, if the bus records it (some
/// middleware's [`crate::EventMiddleware::needs_cause`] is true).
pub fn current_cause() -> Option<Cause> {
    CAUSE.try_with(Clone::clone).ok()
}

/// Runs `f` with `env` as the current cause.
pub(crate) async fn with_cause<F: Future>(env: &Envelope<dyn EventData>, f: F) -> F::Output {
    CAUSE.scope(Cause { event_id: env.id, correlation_id: env.metadata.correlation_id.clone() }, f).await
}
