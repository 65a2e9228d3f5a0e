//! [`HandlerOptions`] and [`HandlerMode`]: a handler's name, mode, order, timeout and
//! retry policy.

use std::borrow::Cow;
use std::time::Duration;

use super::RetryPolicy;

/// Whether a handler runs inside `emit` or on the async backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HandlerMode {
    /// Runs inline inside `emit`, in order; its error is returned to the emitter.
    #[default]
    Sync,
    /// Handed to the async backend; its failures go to retries and never to the emitter.
    Async,
}

/// Options of a handler: name, mode, order, timeout and retry policy.
#[derive(Clone, Debug, Default)]
pub struct HandlerOptions {
    /// The handler's name, unique on a bus; used in errors, logs and delivery ids.
    pub name: Option<Cow<'static, str>>,
    /// Sync (inline) or async (backend).
    pub mode: HandlerMode,
    /// Higher runs first; equal priorities run in registration order.
    pub priority: i32,
    /// Longest a single attempt may take.
    pub timeout: Option<Duration>,
    /// Retry policy of async deliveries (none: the bus default).
    pub retry: Option<RetryPolicy>,
}

impl HandlerOptions {
    /// Default options: a sync handler with priority 0, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options of an async handler.
    pub fn asynchronous() -> Self {
        Self { mode: HandlerMode::Async, ..Self::default() }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: HandlerMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the timeout of one attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}
