//! The middleware pipeline: [`EventMiddleware`], its [`Flow`], and the built-ins
//! [`TracingMiddleware`] and [`CorrelationMiddleware`].

use async_trait::async_trait;

use crate::envelope::{Envelope, Event};
use crate::error::{Error, EventError};
use crate::event::EventData;

/// What a middleware decides for an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Pass the (possibly changed) event to the next middleware, then store and handlers.
    Continue,
    /// Drop the event: no handler runs, nothing is stored, `emit` reports it as dropped with
    /// this reason. Rejecting with an error is returning `Err` instead.
    Drop(String),
}

/// A step of the pipeline every event goes through before the handlers and the store.
///
/// Implement one of its two methods. [`EventMiddleware::process_envelope`] sees the event
/// in place, as `&mut Envelope<dyn EventData>`, with a typed payload still typed: it can
/// read and change
/// the header (correlation ids, tenant, subject), read the payload as JSON
/// (`event.data.to_json()`), change a typed payload in place
/// (`event.data.downcast_mut::<UserCreated>()`) or replace it (`event.data.set_json(..)`),
/// drop the event with [`Flow::Drop`], or reject it by returning an error (the emitter gets
/// it). [`EventMiddleware::process`] is the seed's form: it takes the event as a dynamic
/// [`Event`] and returns it, changed or not; it costs a JSON round trip of the payload per
/// event. Middleware run in the order they were added to the builder.
///
/// ```
/// use better_auth_events_runtime::{async_trait, Envelope, EventData, EventMiddleware, Flow, Error};
///
/// struct DropTestTenants;
///
/// #[async_trait]
/// impl EventMiddleware for DropTestTenants {
///     fn name(&self) -> &str { "drop-test-tenants" }
///
///     async fn process_envelope(&self, event: &mut Envelope<dyn EventData>) -> Result<Flow, Error> {
///         if event.metadata.tenant.as_deref() == Some("test") {
///             return Ok(Flow::Drop("test tenant".into()));
///         }
///         Ok(Flow::Continue)
///     }
/// }
/// ```
///
/// The seed's form:
///
/// ```
/// use better_auth_events_runtime::{async_trait, Event, EventError, EventMiddleware};
///
/// struct LoggingMiddleware;
///
/// #[async_trait]
/// impl EventMiddleware for LoggingMiddleware {
///     async fn process(&self, event: Event) -> Result<Event, EventError> {
///         println!("Event: {}", event.event_type);
///         Ok(event)
///     }
/// }
/// ```
#[async_trait]
pub trait EventMiddleware: Send + Sync + 'static {
    /// The middleware's name, used in errors and logs.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Whether this middleware reads [`crate::current_cause`]: the bus then records the
    /// event being handled while handlers run (a small cost per handler call).
    fn needs_cause(&self) -> bool {
        false
    }

    /// Inspects, changes, drops or rejects one event, in place. The default runs
    /// [`EventMiddleware::process`] on a dynamic copy of the event and writes what it
    /// returns back: header and payload.
    async fn process_envelope(&self, event: &mut Envelope<dyn EventData>) -> Result<Flow, Error> {
        let processed = self.process(event.to_dynamic()?).await?;
        let Envelope { id, event_type, source, subject, timestamp, version, metadata, data } = processed;
        event
            .data
            .set_json(data)
            .map_err(|source| Error::Serialization { event_type: event_type.to_string(), source })?;
        event.id = id;
        event.event_type = event_type;
        event.source = source;
        event.subject = subject;
        event.timestamp = timestamp;
        event.version = version;
        event.metadata = metadata;
        Ok(Flow::Continue)
    }

    /// The seed's form: takes the event as a dynamic [`Event`] and returns it, changed or
    /// not; an error rejects it. Called only by the default
    /// [`EventMiddleware::process_envelope`]. The default returns the event unchanged.
    async fn process(&self, event: Event) -> Result<Event, EventError> {
        Ok(event)
    }
}

/// Logs every event through `tracing` at `INFO` (target `better_auth_events`), with the
/// payload's `#[event(pii)]` fields replaced by `"[REDACTED]"`.
#[derive(Clone, Debug)]
pub struct TracingMiddleware {
    include_payload: bool,
}

impl Default for TracingMiddleware {
    fn default() -> Self {
        Self { include_payload: true }
    }
}

impl TracingMiddleware {
    /// Logs header and redacted payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs the header only.
    pub fn without_payload() -> Self {
        Self { include_payload: false }
    }

    /// The line this middleware logs for `event` (redacted payload as JSON).
    pub fn render(&self, event: &Envelope<dyn EventData>) -> String {
        let mut line = format!("event {} id={} source={}", event.event_type, event.id, event.source);
        if let Some(v) = &event.version {
            line.push_str(&format!(" version={v}"));
        }
        if let Some(c) = &event.metadata.correlation_id {
            line.push_str(&format!(" correlation_id={c}"));
        }
        if self.include_payload {
            match event.redacted_data() {
                Ok(data) => line.push_str(&format!(" data={data}")),
                Err(e) => line.push_str(&format!(" data=<unserializable: {e}>")),
            }
        }
        line
    }
}

#[async_trait]
impl EventMiddleware for TracingMiddleware {
    fn name(&self) -> &str {
        "tracing"
    }

    async fn process_envelope(&self, event: &mut Envelope<dyn EventData>) -> Result<Flow, Error> {
        if tracing::enabled!(target: "better_auth_events", tracing::Level::INFO) {
            let line = self.render(event);
            tracing::info!(
                target: "better_auth_events",
                event_type = %event.event_type,
                event_id = %event.id,
                "{line}"
            );
        }
        Ok(Flow::Continue)
    }
}

/// Fills correlation and causation ids.
///
/// An event emitted while a handler runs (sync or async) gets the handled event's id as
/// causation id and its correlation id; an event emitted outside any handler gets its own
/// id as correlation id, so every workflow has one. Ids already set are kept.
#[derive(Clone, Debug, Default)]
pub struct CorrelationMiddleware;

impl CorrelationMiddleware {
    /// The middleware.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl EventMiddleware for CorrelationMiddleware {
    fn name(&self) -> &str {
        "correlation"
    }

    fn needs_cause(&self) -> bool {
        true
    }

    async fn process_envelope(&self, event: &mut Envelope<dyn EventData>) -> Result<Flow, Error> {
        let cause = crate::cause::current_cause();
        if event.metadata.causation_id.is_none()
            && let Some(cause) = &cause
        {
            event.metadata.causation_id = Some(cause.event_id.to_string());
        }
        if event.metadata.correlation_id.is_none() {
            let id = match &cause {
                Some(cause) => cause.correlation_id.clone().unwrap_or_else(|| cause.event_id.to_string()),
                None => event.id.to_string(),
            };
            event.metadata.correlation_id = Some(id);
        }
        Ok(Flow::Continue)
    }
}
