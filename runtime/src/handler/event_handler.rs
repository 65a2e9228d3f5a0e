//! [`EventHandler`]: a handler as a struct, the seed's trait.

use async_trait::async_trait;

use crate::envelope::Event;
use crate::error::EventError;

/// A handler of dynamic events written as a type (the seed's trait). Register one with
/// [`crate::EventBus::on_handler`] or [`super::Handler::from_event_handler`].
///
/// ```
/// use better_auth_events_runtime::{async_trait, Event, EventBus, EventError, EventHandler};
///
/// struct AuditLog;
///
/// #[async_trait]
/// impl EventHandler for AuditLog {
///     async fn handle(&self, event: &Event) -> Result<(), EventError> {
///         println!("audit: {} {}", event.event_type, event.data);
///         Ok(())
///     }
/// }
///
/// # async fn run() -> Result<(), EventError> {
/// let bus = EventBus::new();
/// bus.on_handler("user.created", AuditLog).await?;
/// bus.emit(Event::new("user.created")).await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event; an error vetoes the emit for a sync handler and is retried for
    /// an async one.
    async fn handle(&self, event: &Event) -> Result<(), EventError>;
}

/// A shared handler is a handler: keep an `Arc` to inspect it while the bus uses it.
#[async_trait]
impl<H: EventHandler + ?Sized> EventHandler for std::sync::Arc<H> {
    async fn handle(&self, event: &Event) -> Result<(), EventError> {
        (**self).handle(event).await
    }
}
