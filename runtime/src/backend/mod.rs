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
/// On a bus whose store keeps an outbox, a delivery stays pending in the store until its
/// handler succeeds ([`Delivery::run_to_completion`] marks it done) or it is dead-lettered;
/// a backend that takes deliveries without running them sees each again whenever its lease
/// ends ([`crate::EventBusBuilder::delivery_lease`]).
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

    /// Room for `n` deliveries, taken without waiting: `Ok(None)` when the backend would
    /// have to wait for it, an error when it refuses (a full queue whose policy is
    /// [`BackpressurePolicy::FailFast`], a closed backend).
    ///
    /// The bus reserves room *before* it stores an event, so that an emit refused for want
    /// of room stores nothing. The default: every backend has room.
    fn try_reserve(&self, _n: usize) -> Result<Option<Room>> {
        Ok(Some(Room::unlimited()))
    }

    /// Room for `n` deliveries, waiting for it as the backend's policy says.
    async fn reserve(&self, _n: usize) -> Result<Room> {
        Ok(Room::unlimited())
    }

    /// Takes deliveries whose room is reserved, without waiting: `Ok(None)` when taken,
    /// `Ok(Some(deliveries))` to give those not taken back (the bus then awaits
    /// [`AsyncBackend::publish_all`] with them). The default offers each to
    /// [`AsyncBackend::try_publish`].
    fn send_reserved(&self, room: Room, deliveries: Vec<Delivery>) -> Result<Option<Vec<Delivery>>> {
        drop(room);
        let mut back = Vec::new();
        for d in deliveries {
            if let Some(d) = self.try_publish(d)? {
                back.push(d);
            }
        }
        Ok((!back.is_empty()).then_some(back))
    }

    /// Whether the backend holds no delivery that is queued, running or waiting for a
    /// retry in this process (a shutdown waits for that before it stops the outbox). The
    /// default: always idle.
    fn is_idle(&self) -> bool {
        true
    }

    /// Stops taking deliveries and finishes what it holds within `deadline`.
    async fn close(&self, deadline: Duration) -> Result<ShutdownReport>;

    /// The broker behind this backend, if it ships events to one: the bus then publishes
    /// every emitted event once, for all its handlers, instead of one delivery per handler
    /// (see [`crate::broker::BrokerBackend`]). The default: none, deliveries run here.
    fn as_broker(&self) -> Option<crate::broker::BrokerBackend> {
        None
    }

    /// The backend's name, for logs and errors.
    fn name(&self) -> &str;
}

/// Room reserved in a backend's queue for deliveries not sent yet. Dropped unused, it
/// gives the room back.
#[derive(Debug)]
#[must_use = "dropping a room gives it back"]
pub struct Room {
    held: Option<(Arc<tokio::sync::Semaphore>, u32)>,
}

impl Room {
    /// Room in a backend that has no limit.
    pub fn unlimited() -> Self {
        Self { held: None }
    }

    /// `n` permits of `semaphore`, already taken (and forgotten) by the caller.
    pub(crate) fn taken(semaphore: &Arc<tokio::sync::Semaphore>, n: u32) -> Self {
        Self { held: Some((Arc::clone(semaphore), n)) }
    }

    /// Gives back all but `n` of the room (deliveries that will not be sent after all).
    pub(crate) fn shrink_to(&mut self, n: usize) {
        if let Some((semaphore, held)) = &mut self.held {
            let keep = u32::try_from(n).unwrap_or(u32::MAX).min(*held);
            semaphore.add_permits((*held - keep) as usize);
            *held = keep;
        }
    }

    /// Splits off room for `n` deliveries (at most what this room holds).
    pub(crate) fn split(&mut self, n: usize) -> Room {
        match &mut self.held {
            Some((semaphore, held)) => {
                let take = u32::try_from(n).unwrap_or(u32::MAX).min(*held);
                *held -= take;
                Room { held: Some((Arc::clone(semaphore), take)) }
            }
            None => Room::unlimited(),
        }
    }

    /// Keeps the room: the deliveries now in the queue hold it, and give it back one by
    /// one as they leave the queue.
    pub(crate) fn keep(mut self) {
        self.held = None;
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        if let Some((semaphore, n)) = self.held.take() {
            semaphore.add_permits(n as usize);
        }
    }
}

/// What to do when the worker pool's queue is full.
///
/// With a store that keeps an outbox (every store of this crate), an emit never waits
/// for queue room and never fails for want of it: its deliveries are stored with the
/// event, and those the queue cannot take at once are run as room frees up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// Wait for room (the emitter slows down to the workers' pace).
    #[default]
    Wait,
    /// Wait at most this long, then fail with [`crate::Error::Backpressure`].
    WaitFor(Duration),
    /// Fail at once with [`crate::Error::Backpressure`].
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

    fn try_reserve(&self, n: usize) -> Result<Option<Room>> {
        (**self).try_reserve(n)
    }

    async fn reserve(&self, n: usize) -> Result<Room> {
        (**self).reserve(n).await
    }

    fn send_reserved(&self, room: Room, deliveries: Vec<Delivery>) -> Result<Option<Vec<Delivery>>> {
        (**self).send_reserved(room, deliveries)
    }

    fn is_idle(&self) -> bool {
        (**self).is_idle()
    }

    async fn close(&self, deadline: Duration) -> Result<ShutdownReport> {
        (**self).close(deadline).await
    }

    fn as_broker(&self) -> Option<crate::broker::BrokerBackend> {
        (**self).as_broker()
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}
