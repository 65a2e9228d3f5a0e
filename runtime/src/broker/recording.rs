//! [`RecordingBackend`]: a backend for a user's unit tests that records what the bus would
//! publish, with helpers to assert on it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{Broker, BrokerBackend, Consumer, Outgoing, Subscription};
use crate::backend::AsyncBackend;
use crate::delivery::{Delivery, ShutdownReport};
use crate::envelope::{Envelope, Event};
use crate::error::{Error, Result};
use crate::event::TypedEvent;

/// A backend that runs nothing and records every event the bus publishes, once per event
/// as a broker would receive it: for unit tests that assert on what a piece of code
/// emitted. Clones share the record.
///
/// ```
/// use better_auth_events_runtime::{Event, EventBus, broker::RecordingBackend};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> better_auth_events_runtime::Result<()> {
/// let recorder = RecordingBackend::new();
/// let bus = EventBus::builder().broker(recorder.clone()).try_build().await?;
///
/// bus.emit(Event::new("user.signed_in").with_data(json!({ "user_id": "u-1" }))).await?;
///
/// let signed_in = recorder.assert_emitted("user.signed_in");
/// assert_eq!(signed_in.data["user_id"], "u-1");
/// recorder.assert_not_emitted("user.deleted");
/// assert_eq!(recorder.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct RecordingBackend {
    record: Arc<Mutex<Vec<Recorded>>>,
}

/// One event a [`RecordingBackend`] received.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Recorded {
    /// The event as a worker would read it.
    pub event: Event,
    /// Its CloudEvents JSON document, as a broker would carry it.
    pub cloudevent: Arc<[u8]>,
}

impl RecordingBackend {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Recorded>> {
        // A test that panicked while holding the lock left a whole record behind.
        self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every event recorded, in the order they were published.
    pub fn events(&self) -> Vec<Event> {
        self.lock().iter().map(|r| r.event.clone()).collect()
    }

    /// Every event recorded with its CloudEvents document.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.lock().clone()
    }

    /// The events of type `event_type`, in order.
    pub fn named(&self, event_type: &str) -> Vec<Event> {
        self.lock().iter().filter(|r| r.event.event_type.as_str() == event_type).map(|r| r.event.clone()).collect()
    }

    /// The events of the typed event `T`, read as `T` (upcast from older versions).
    pub fn of_type<T: TypedEvent>(&self) -> Result<Vec<Envelope<T>>> {
        self.named(T::NAME).into_iter().map(Event::into_typed).collect()
    }

    /// How many events were recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets everything recorded so far, and returns it.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock()).into_iter().map(|r| r.event).collect()
    }

    /// The last event of type `event_type`.
    ///
    /// # Panics
    ///
    /// When none was recorded; the message lists what was.
    #[track_caller]
    pub fn assert_emitted(&self, event_type: &str) -> Event {
        match self.named(event_type).pop() {
            Some(e) => e,
            None => panic!("expected an event `{event_type}` to be emitted; recorded: {}", self.summary()),
        }
    }

    /// The last event of the typed event `T`, read as `T`.
    ///
    /// # Panics
    ///
    /// When none was recorded, or the last one cannot be read as `T`.
    #[track_caller]
    pub fn assert_emitted_typed<T: TypedEvent>(&self) -> Envelope<T> {
        match self.assert_emitted(T::NAME).into_typed::<T>() {
            Ok(e) => e,
            Err(e) => panic!("the last `{}` event cannot be read as that type: {}", T::NAME, crate::ErrorChain(&e)),
        }
    }

    /// # Panics
    ///
    /// When an event of type `event_type` was recorded.
    #[track_caller]
    pub fn assert_not_emitted(&self, event_type: &str) {
        let n = self.named(event_type).len();
        assert!(n == 0, "expected no event `{event_type}`, but {n} were emitted; recorded: {}", self.summary());
    }

    /// # Panics
    ///
    /// When the events recorded, in order, are not of the types `expected`.
    #[track_caller]
    pub fn assert_sequence(&self, expected: &[&str]) {
        let got: Vec<String> = self.lock().iter().map(|r| r.event.event_type.to_string()).collect();
        assert!(got == expected, "expected the events {expected:?} in this order, recorded {got:?}");
    }

    fn summary(&self) -> String {
        let names: Vec<String> = self.lock().iter().map(|r| r.event.event_type.to_string()).collect();
        if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
    }
}

#[async_trait]
impl Broker for RecordingBackend {
    fn name(&self) -> &str {
        "recording"
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        let event = Event::from_cloudevent_slice(message.structured())?;
        self.lock().push(Recorded { event, cloudevent: message.structured_shared() });
        Ok(())
    }

    async fn subscribe(&self, _subscription: &Subscription) -> Result<Box<dyn Consumer>> {
        Err(Error::Config(
            "`RecordingBackend` records what would be published and has no consumer side; give the worker a real broker"
                .into(),
        ))
    }
}

/// Set as `.backend(recorder.clone())`, it behaves as `.broker(recorder.clone())`.
#[async_trait]
impl AsyncBackend for RecordingBackend {
    async fn publish(&self, delivery: Delivery) -> Result<()> {
        Broker::publish(self, &Outgoing::of_delivery(&delivery)?).await
    }

    async fn publish_all(&self, deliveries: Vec<Delivery>) -> Result<()> {
        match deliveries.first() {
            Some(d) => Broker::publish(self, &Outgoing::of_delivery(d)?).await,
            None => Ok(()),
        }
    }

    async fn close(&self, _deadline: Duration) -> Result<ShutdownReport> {
        Ok(ShutdownReport::default())
    }

    fn name(&self) -> &str {
        "recording"
    }

    fn as_broker(&self) -> Option<BrokerBackend> {
        Some(BrokerBackend::new(self.clone()))
    }
}
