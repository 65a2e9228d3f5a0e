//! What a handler gets besides the event: the [`HandlerContext`] and [`Dep`] arguments,
//! the bus's [`Dependencies`], and the traits the `#[handler]` macro checks arguments and
//! return types against.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use uuid::Uuid;

use super::HandlerMode;
use crate::error::{BoxError, HandlerError};

/// A type a handler argument needs registered on the bus.
#[derive(Clone, Copy, Debug)]
pub struct DepRequirement {
    /// The type id of the dependency.
    pub type_id: TypeId,
    /// Its type name, for messages.
    pub type_name: &'static str,
}

/// Shared dependencies registered on the bus, handed to handlers as [`Dep<T>`].
#[derive(Clone, Default)]
pub struct Dependencies {
    map: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.map.values().map(|(_, name)| name)).finish()
    }
}

impl Dependencies {
    /// Adds (or replaces) a dependency.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.insert_arc(Arc::new(value));
    }

    /// Adds (or replaces) a dependency already in an `Arc`.
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.map.insert(TypeId::of::<T>(), (value, std::any::type_name::<T>()));
    }

    /// The dependency of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.map.get(&TypeId::of::<T>()).and_then(|(v, _)| Arc::clone(v).downcast::<T>().ok())
    }

    pub(crate) fn contains(&self, id: TypeId) -> bool {
        self.map.contains_key(&id)
    }
}

/// A shared dependency handed to a handler: `mailer: Dep<Mailer>`.
///
/// Register the value with `EventBus::builder().dependency(Mailer::new())`; `build()` fails
/// when a handler needs a dependency nobody registered.
pub struct Dep<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Deref for Dep<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> Clone for Dep<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Dep<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a handler learns about the delivery it runs: event id, delivery id, attempt,
/// whether it is a replay, and the bus's dependencies.
#[derive(Clone, Debug)]
pub struct HandlerContext {
    pub(crate) event_id: Uuid,
    pub(crate) handler: Cow<'static, str>,
    pub(crate) attempt: u32,
    pub(crate) mode: HandlerMode,
    pub(crate) replay: bool,
    /// `None` only in the context of a handler that never reads it (see
    /// `HandlerInner::uses_context`): the bus then takes no reference to its dependencies.
    pub(crate) deps: Option<Arc<Dependencies>>,
    /// The dead letter this delivery was redriven from, if it came back from the queue.
    pub(crate) redriven_from: Option<Uuid>,
}

impl HandlerContext {
    /// A context for calling a handler outside a bus (tests, tools).
    pub fn new(event_id: Uuid, handler: impl Into<Cow<'static, str>>, deps: Arc<Dependencies>) -> Self {
        Self {
            event_id,
            handler: handler.into(),
            attempt: 1,
            mode: HandlerMode::Sync,
            replay: false,
            deps: Some(deps),
            redriven_from: None,
        }
    }

    /// The id of the event being handled.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// The name of the handler running.
    pub fn handler_name(&self) -> &str {
        &self.handler
    }

    /// The dead letter this delivery was redriven from, when an operator sent it back from
    /// the dead-letter queue ([`crate::dlq::DLQHandler::redrive`]).
    pub fn redriven_from(&self) -> Option<Uuid> {
        self.redriven_from
    }

    /// The stable id of this (event, handler) delivery: the same across retries,
    /// redeliveries after a crash and redrives from the dead-letter queue, so handlers with
    /// side effects can use it as an idempotency key.
    ///
    /// Async delivery on a store with an outbox is at least once: a process that dies
    /// after the handler's side effect and before the delivery is marked done runs it
    /// again. A handler that must not, say, send a mail twice records this id with its
    /// side effect (a unique key in the same transaction) and skips an id it has seen.
    pub fn delivery_id(&self) -> Uuid {
        Uuid::new_v5(&self.event_id, self.handler.as_bytes())
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the handler runs inline or on the async backend.
    pub fn mode(&self) -> HandlerMode {
        self.mode
    }

    /// Whether the event is delivered by a replay.
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// A dependency registered on the bus.
    pub fn dependency<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.deps.as_ref()?.get::<T>()
    }
}

/// A handler argument other than the event: [`Dep<T>`] or [`HandlerContext`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    label = "unsupported handler argument",
    note = "a handler takes the event (`&E` or `Envelope<E>`), then optionally `Dep<T>` dependencies and `&HandlerContext`"
)]
pub trait FromContext: Sized {
    /// Extracts the argument for one call.
    fn from_context(ctx: &HandlerContext) -> Result<Self, HandlerError>;

    /// The dependency it needs registered, checked by `build()`.
    fn requirement() -> Option<DepRequirement> {
        None
    }
}

impl<T: Send + Sync + 'static> FromContext for Dep<T> {
    fn from_context(ctx: &HandlerContext) -> Result<Self, HandlerError> {
        ctx.dependency::<T>().map(Dep).ok_or(HandlerError::MissingDependency(std::any::type_name::<T>()))
    }

    fn requirement() -> Option<DepRequirement> {
        Some(DepRequirement { type_id: TypeId::of::<T>(), type_name: std::any::type_name::<T>() })
    }
}

impl FromContext for HandlerContext {
    fn from_context(ctx: &HandlerContext) -> Result<Self, HandlerError> {
        Ok(ctx.clone())
    }
}

/// What a handler function may return: `Result<(), E>` for any error `E`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a valid handler return type",
    label = "handlers return `Result<(), E>`",
    note = "return `Result<(), HandlerError>`, `anyhow::Result<()>` or `Result<(), E>` where `E: std::error::Error + Send + Sync + 'static`"
)]
pub trait IntoHandlerResult {
    /// Converts into the bus's handler result.
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl<E: Into<BoxError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(HandlerError::from_error)
    }
}
