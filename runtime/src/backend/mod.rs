//! Async backends: the [`AsyncBackend`] trait of seed 002 and the default in-process
//! [`WorkerPool`].

mod worker_pool;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::worker_pool::{WorkerPool, WorkerPoolConfig};
use crate::delivery::{Delivery, ShutdownReport};
use crate::error::Result;

/// Where async handlers go: the in-process [`WorkerPool`] by default, or a broker.
///
/// The trait of seed 002 (`Publish`, `Close`, `Name`). A backend that ships deliveries to
/// an external queue serializes them with [`Delivery::cloudevent_json`] and names the
/// handler with [`Delivery::handler_name`]; the consumer side runs the handler.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use better_auth_events_runtime::{async_trait, AsyncBackend, Delivery, EventType, Result, ShutdownReport};
///
/// /// Records what would be published (the seed's MockBackend).
/// #[derive(Default)]
/// struct MockBackend { published: Mutex<Vec<EventType>> }
///
/// #[async_trait]
/// impl AsyncBackend for MockBackend {
///     async fn publish(&self, delivery: Delivery) -> Result<()> {
///         self.published.lock().unwrap().push(delivery.event_type().clone());
///         Ok(())
///     }
///     async fn close(&self, _deadline: std::time::Duration) -> Result<ShutdownReport> {
///         Ok(ShutdownReport::default())
///     }
///     fn name(&self) -> &str { "mock" }
/// }
/// ```
#[async_trait]
pub trait AsyncBackend: Send + Sync + 'static {
    /// Takes one delivery. Returns once the backend has it (queued, or acknowledged by the
    /// broker); the handler's own outcome never comes back here.
    async fn publish(&self, delivery: Delivery) -> Result<()>;

    /// Takes one delivery if it can without waiting: `Ok(None)` when taken, `Ok(Some(d))`
    /// to give it back (the bus then awaits [`AsyncBackend::publish`] with it), `Err` when it
    /// is refused for good. The default gives every delivery back; the worker pool takes it
    /// when its queue has room, which spares the emit a boxed future.
    fn try_publish(&self, delivery: Delivery) -> Result<Option<Delivery>> {
        Ok(Some(delivery))
    }

    /// Takes every async delivery of one emit. Backends that can should take all or none
    /// (the worker pool reserves queue room for all first); the default publishes in turn.
    async fn publish_all(&self, deliveries: Vec<Delivery>) -> Result<()> {
        for d in deliveries {
            self.publish(d).await?;
        }
        Ok(())
    }

    /// Stops taking deliveries and finishes what it holds within `deadline`.
    async fn close(&self, deadline: Duration) -> Result<ShutdownReport>;

    /// The backend's name, for logs and errors.
    fn name(&self) -> &str;
}

/// What to do when the worker pool's queue is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// Wait for room (the emitter slows down to the workers' pace).
    #[default]
    Wait,
    /// Wait at most this long, then fail with [`Error::Backpressure`].
    WaitFor(Duration),
    /// Fail at once with [`Error::Backpressure`].
    FailFast,
}

/// A shared backend is a backend: keep an `Arc` to inspect it while the bus uses it.
#[async_trait]
impl<B: AsyncBackend + ?Sized> AsyncBackend for Arc<B> {
    async fn publish(&self, delivery: Delivery) -> Result<()> {
        (**self).publish(delivery).await
    }

    fn try_publish(&self, delivery: Delivery) -> Result<Option<Delivery>> {
        (**self).try_publish(delivery)
    }

    async fn publish_all(&self, deliveries: Vec<Delivery>) -> Result<()> {
        (**self).publish_all(deliveries).await
    }

    async fn close(&self, deadline: Duration) -> Result<ShutdownReport> {
        (**self).close(deadline).await
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}
