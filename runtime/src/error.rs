//! Errors of the runtime: one [`Error`] for everything the bus reports, and
//! [`HandlerError`], the error a handler returns.

use std::borrow::Cow;
use std::time::Duration;

/// A boxed error that can cross threads.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the runtime's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The seed's name for [`Error`].
pub type EventError = Error;

/// Everything the bus, its builder and its backends can report.
///
/// Messages are lowercase, say what happened and, where there is one, what to do. A
/// variant with a cause prints only its own context and returns the cause from
/// [`source`](std::error::Error::source); [`ErrorChain`] prints both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sync handler failed, so `emit` reports its error (a "before" hook vetoing the action).
    ///
    /// The message names the handler and the event; what the handler returned is the
    /// [`source`](std::error::Error::source) (print an [`ErrorChain`] for both).
    #[error("handler `{handler}` failed for event `{event_type}`")]
    Handler {
        /// Name of the handler that failed.
        handler: Cow<'static, str>,
        /// Name of the event it was handling.
        event_type: String,
        /// What the handler returned.
        #[source]
        source: HandlerError,
    },

    /// A middleware rejected the event; handlers and store never saw it.
    #[error("middleware `{middleware}` rejected event `{event_type}`: {reason}")]
    Rejected {
        /// Name of the rejecting middleware.
        middleware: String,
        /// Name of the rejected event.
        event_type: String,
        /// Why it was rejected.
        reason: String,
    },

    /// An event was refused before it was stored: a dynamic event does not match the
    /// schema registered for its name or has an invalid name, or the event's JSON nests
    /// deeper than could be read back ([`MAX_PAYLOAD_DEPTH`](crate::MAX_PAYLOAD_DEPTH)).
    #[error("validation failed for event `{event_type}`: {message}")]
    Validation {
        /// Name of the event.
        event_type: String,
        /// Every violation, one per line.
        message: String,
    },

    /// Converting an event to or from JSON failed.
    #[error("cannot (de)serialize event `{event_type}`")]
    Serialization {
        /// Name of the event.
        event_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// A CloudEvents document could not be read.
    #[error("invalid CloudEvents document: {0}")]
    CloudEvent(String),

    /// The async backend's queue is full and the backpressure policy says not to wait (longer).
    #[error(
        "async queue of backend `{backend}` is full ({capacity} deliveries queued){waited}; \
         raise `queue_size`, add workers, or use `Backpressure::Wait`",
        waited = match .waited { Some(d) => format!(" after waiting {d:?}"), None => String::new() }
    )]
    Backpressure {
        /// Name of the backend.
        backend: String,
        /// Capacity of its queue.
        capacity: usize,
        /// How long the emit waited before giving up, if it waited.
        waited: Option<Duration>,
    },

    /// The bus was shut down; it accepts no more events.
    #[error("the event bus is shut down and accepts no more events")]
    Closed,

    /// The async backend failed to take a delivery.
    #[error("async backend `{backend}` failed")]
    Backend {
        /// Name of the backend.
        backend: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// The event store failed; the event was not emitted.
    #[error("event store `{store}` failed")]
    Store {
        /// Name of the store.
        store: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A stored event cannot be read back: its payload, metadata, id or time is malformed
    /// (written by another tool, or by a version that stored what it could not read).
    ///
    /// It concerns that event alone: a store's `stream` yields this error in the event's
    /// place and goes on with the next events, and a replay reports it and goes on. The
    /// message names the store, the position and the id; the cause is the
    /// [`source`](std::error::Error::source).
    #[error("event store `{store}` holds an unreadable event at position {position} ({})", describe_id(.id))]
    UnreadableEvent {
        /// Name of the store.
        store: String,
        /// The event's position in the store.
        position: u64,
        /// The id stored with it, as text (it may be what cannot be read); `None` when
        /// there is none.
        id: Option<String>,
        /// What cannot be read.
        #[source]
        source: BoxError,
    },

    /// A schema rule failed: a version bump too small for the change, a conflicting
    /// registration, an incomplete upcast chain, a snapshot that no longer matches.
    #[error("{0}")]
    Schema(String),

    /// What was asked for does not exist: an event id, a handler name.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, with its id or name.
        what: String,
    },

    /// The bus configuration is invalid (reported by `build()` or a registration).
    #[error("invalid event bus configuration: {0}")]
    Config(String),
}

/// How [`Error::UnreadableEvent`] names an event's id.
fn describe_id(id: &Option<String>) -> String {
    match id {
        Some(id) => format!("id `{id}`"),
        None => "no id".to_owned(),
    }
}

impl Error {
    /// Creates a [`Error::Store`] from any error of a store implementation.
    pub fn store(store: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Store { store: store.into(), source: source.into() }
    }

    /// Creates a [`Error::Backend`] from any error of a backend implementation.
    pub fn backend(backend: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Backend { backend: backend.into(), source: source.into() }
    }

    /// Creates an [`Error::UnreadableEvent`]: the event at `position` of `store`, whose
    /// stored id is `id`, cannot be read because of `source`.
    pub fn unreadable_event(
        store: impl Into<String>,
        position: u64,
        id: Option<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::UnreadableEvent { store: store.into(), position, id, source: source.into() }
    }

    /// The handler error, when a sync handler vetoed the event.
    pub fn as_handler_error(&self) -> Option<&HandlerError> {
        match self {
            Self::Handler { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The error a handler returns.
///
/// Any error type converts into it (`?` works on `std::io::Error`, `anyhow::Error`,
/// your own errors, and strings through [`HandlerError::new`]). The bus adds its own
/// kinds: a panic, a timeout, a missing dependency.
///
/// A handler's own error is not a layer of its own: [`HandlerError::Failed`] and
/// [`HandlerError::Permanent`] print the message of the error they hold, and their
/// [`source`](std::error::Error::source) is that error's source, so a chain names each
/// cause once.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler failed; the delivery may be retried under the handler's retry policy.
    ///
    /// Transparent: prints the held error's message; its source is the held error's source.
    Failed(BoxError),

    /// The handler failed in a way retrying cannot fix (for example a malformed event).
    ///
    /// Prints the held error's message followed by ` (permanent: not retried)`; its
    /// source is the held error's source, as for [`HandlerError::Failed`].
    Permanent(BoxError),

    /// The handler failed and asks to be retried after `delay` (a rate-limited API that
    /// said when to come back), instead of its policy's backoff. The attempt counts
    /// against the policy's `max_attempts` like any other.
    ///
    /// Prints the held error's message; its source is the held error's source.
    RetryAfter {
        /// How long to wait before the next attempt.
        delay: Duration,
        /// Why the attempt failed.
        error: BoxError,
    },

    /// The handler panicked; the panic was caught and the worker lives on.
    Panicked(String),

    /// The handler did not finish within its timeout.
    Timeout(Duration),

    /// The handler takes a `Dep<T>` that was not registered on the bus.
    MissingDependency(&'static str),

    /// The event could not be converted into the type the handler takes.
    EventMismatch {
        /// Name of the event.
        event_type: String,
        /// The Rust type the handler takes.
        expected: &'static str,
        /// Why the conversion failed.
        reason: String,
    },
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed(error) => write!(f, "{error}"),
            Self::Permanent(error) => write!(f, "{error} (permanent: not retried)"),
            Self::RetryAfter { delay, error } => write!(f, "{error} (retry after {delay:?})"),
            Self::Panicked(message) => write!(f, "handler panicked: {message}"),
            Self::Timeout(limit) => write!(f, "handler timed out after {limit:?}"),
            Self::MissingDependency(name) => write!(
                f,
                "dependency `{name}` is not registered on the bus; add it with `EventBus::builder().dependency(..)`"
            ),
            Self::EventMismatch { event_type, expected, reason } => {
                write!(f, "event `{event_type}` cannot be read as `{expected}`: {reason}")
            }
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(error) | Self::Permanent(error) | Self::RetryAfter { error, .. } => error.source(),
            _ => None,
        }
    }
}

/// Displays an error followed by each of its sources, joined by `: ` (`handler \`save\`
/// failed for event \`order.placed\`: cannot save the order: disk full`).
///
/// Each error of this crate prints only what its own layer adds and leaves its cause to
/// `source()`, so `error.to_string()` alone may not say why: print an `ErrorChain` where
/// one line must tell the whole story, as the bus's own log lines do.
///
/// ```
/// # use better_auth_events_runtime::{Error, ErrorChain};
/// let err = Error::store("sqlite", std::io::Error::other("disk full"));
/// assert_eq!(err.to_string(), "event store `sqlite` failed");
/// assert_eq!(ErrorChain(&err).to_string(), "event store `sqlite` failed: disk full");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl HandlerError {
    /// A failure with a message, retried under the handler's retry policy.
    pub fn new(message: impl Into<String>) -> Self {
        Self::Failed(Box::new(Message(message.into())))
    }

    /// A failure that must not be retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(Box::new(Message(message.into())))
    }

    /// A failure to retry after `delay` rather than after the policy's backoff: a mail API
    /// answered "429, come back in 30 s".
    ///
    /// Waits longer than 30 days are cut to 30 days.
    ///
    /// ```
    /// # use better_auth_events_runtime::HandlerError;
    /// # use std::time::Duration;
    /// let e = HandlerError::retry_after(Duration::from_secs(30));
    /// assert_eq!(e.retry_delay(), Some(Duration::from_secs(30)));
    /// ```
    pub fn retry_after(delay: Duration) -> Self {
        Self::RetryAfter { delay, error: Box::new(Message(format!("the handler asked to be retried after {delay:?}"))) }
    }

    /// This error, to be retried after `delay` rather than after the policy's backoff.
    pub fn with_retry_after(self, delay: Duration) -> Self {
        match self {
            Self::Failed(error) | Self::RetryAfter { error, .. } => Self::RetryAfter { delay, error },
            other => Self::RetryAfter { delay, error: Box::new(other) },
        }
    }

    /// The delay the handler asked for before the next attempt, if it asked.
    pub fn retry_delay(&self) -> Option<Duration> {
        match self {
            Self::RetryAfter { delay, .. } => Some(*delay),
            _ => None,
        }
    }

    /// Wraps any error; a `HandlerError` inside is unwrapped rather than nested.
    pub fn from_error(error: impl Into<BoxError>) -> Self {
        let boxed: BoxError = error.into();
        match boxed.downcast::<HandlerError>() {
            Ok(inner) => *inner,
            Err(other) => Self::Failed(other),
        }
    }

    /// Whether a retry may succeed (every kind but [`HandlerError::Permanent`],
    /// [`HandlerError::MissingDependency`] and [`HandlerError::EventMismatch`]).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Permanent(_) | Self::MissingDependency(_) | Self::EventMismatch { .. })
    }
}

impl From<Error> for HandlerError {
    fn from(error: Error) -> Self {
        Self::Failed(Box::new(error))
    }
}

impl From<std::io::Error> for HandlerError {
    fn from(error: std::io::Error) -> Self {
        Self::Failed(Box::new(error))
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(error: serde_json::Error) -> Self {
        Self::Failed(Box::new(error))
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_error_unwraps_a_boxed_handler_error() {
        let inner = HandlerError::permanent("bad input");
        let again = HandlerError::from_error(inner);
        assert!(matches!(again, HandlerError::Permanent(_)));
        assert!(!again.is_retryable());
    }

    #[test]
    fn from_error_keeps_other_errors_as_failed() {
        let io = std::io::Error::other("disk full");
        let err = HandlerError::from_error(io);
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), "disk full");
    }

    #[test]
    fn backpressure_message_tells_what_to_do() {
        let e = Error::Backpressure { backend: "worker-pool".into(), capacity: 4, waited: None };
        let text = e.to_string();
        assert!(text.contains("is full (4 deliveries queued)"), "{text}");
        assert!(text.contains("raise `queue_size`"), "{text}");
    }
}
