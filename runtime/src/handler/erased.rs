//! The calling convention every handler is erased to, and the closure traits that
//! [`super::Handler::typed`] and [`super::Handler::dynamic`] take.

use std::any::TypeId;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::{HandlerContext, HandlerFuture};
use crate::envelope::{Envelope, Event, SharedEvent};
use crate::error::HandlerError;
use crate::event::{EventData, TypedEvent};

/// The calling convention of every handler once erased.
pub(crate) trait ErasedCall: Send + Sync + 'static {
    /// Runs the handler on an envelope whose payload is the handler's own type.
    fn call<'a>(&'a self, env: &'a Envelope<dyn EventData>, ctx: &'a HandlerContext) -> HandlerFuture<'a>;

    /// The payload type the handler takes, `None` for dynamic (JSON) handlers.
    fn payload_type(&self) -> Option<TypeId>;

    /// Reads a dynamic event as the handler's payload type.
    fn convert(&self, event: &Event) -> Result<Arc<SharedEvent>, HandlerError>;
}

pub(super) struct TypedFn<T: TypedEvent> {
    pub(super) f: for<'a> fn(&'a Envelope<T>, &'a HandlerContext) -> HandlerFuture<'a>,
}

/// The outcome of a call on an envelope whose payload is not the handler's type.
fn wrong_payload<'a>(env: &Envelope<dyn EventData>, expected: &'static str) -> HandlerFuture<'a> {
    Box::pin(std::future::ready(Err(HandlerError::EventMismatch {
        event_type: env.event_type.to_string(),
        expected,
        reason: format!("the payload is a `{}`", env.data.type_name()),
    })))
}

fn mismatch<T>(event: &Event, reason: impl fmt::Display) -> HandlerError {
    HandlerError::EventMismatch {
        event_type: event.event_type.to_string(),
        expected: std::any::type_name::<T>(),
        reason: reason.to_string(),
    }
}

fn convert_to<T: TypedEvent>(event: &Event) -> Result<Arc<SharedEvent>, HandlerError> {
    let data: T = crate::schema::upcast::read_as(event.version.as_deref(), event.data.clone())
        .map_err(|e| mismatch::<T>(event, e))?;
    let mut env = event.clone().map(|_| data);
    env.version = Some(Cow::Borrowed(T::VERSION));
    Ok(SharedEvent::new(env))
}

impl<T: TypedEvent> ErasedCall for TypedFn<T> {
    fn call<'a>(&'a self, env: &'a Envelope<dyn EventData>, ctx: &'a HandlerContext) -> HandlerFuture<'a> {
        match env.downcast_ref::<T>() {
            Some(env) => (self.f)(env, ctx),
            None => wrong_payload(env, std::any::type_name::<T>()),
        }
    }

    fn payload_type(&self) -> Option<TypeId> {
        Some(TypeId::of::<T>())
    }

    fn convert(&self, event: &Event) -> Result<Arc<SharedEvent>, HandlerError> {
        convert_to::<T>(event)
    }
}

/// A closure over `&Envelope<T>` (typed subscribe): `async |e: &Envelope<UserCreated>| { .. }`.
///
/// It returns `Result<(), HandlerError>`, so a closure that ends in `Ok(())` needs no type
/// annotation; `?` works on errors that convert into [`HandlerError`] (`Error`,
/// `std::io::Error`, `serde_json::Error`, strings); wrap others with
/// [`HandlerError::from_error`]. The closure is cloned for each call (an `async` closure
/// that uses captured state can only be called by value), so capture shared state in an
/// `Arc`, not large values.
pub trait TypedHandlerFn<'a, T: 'a>: Send + Sync + 'static {
    /// The future it returns.
    type Fut: Future<Output = Result<(), HandlerError>> + Send + 'a;
    /// Calls the closure.
    fn call(&self, env: &'a Envelope<T>) -> Self::Fut;
}

impl<'a, T: 'a, F, Fut> TypedHandlerFn<'a, T> for F
where
    F: FnOnce(&'a Envelope<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'a,
{
    type Fut = Fut;

    fn call(&self, env: &'a Envelope<T>) -> Fut {
        (self.clone())(env)
    }
}

/// A closure over `&Event` (dynamic `on`): `async |event: &Event| { .. }`.
///
/// Write it as an `async` closure: a plain closure returning an `async` block cannot
/// borrow the event in stable Rust. It returns `Result<(), HandlerError>`, as
/// [`TypedHandlerFn`] does. The closure is cloned for each call, so capture shared state
/// in an `Arc`.
pub trait DynHandlerFn<'a>: Send + Sync + 'static {
    /// The future it returns.
    type Fut: Future<Output = Result<(), HandlerError>> + Send + 'a;
    /// Calls the closure.
    fn call(&self, event: &'a Event) -> Self::Fut;
}

impl<'a, F, Fut> DynHandlerFn<'a> for F
where
    F: FnOnce(&'a Event) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'a,
{
    type Fut = Fut;

    fn call(&self, event: &'a Event) -> Fut {
        (self.clone())(event)
    }
}

pub(super) struct TypedClosure<T, F> {
    f: F,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> TypedClosure<T, F> {
    pub(super) fn new(f: F) -> Self {
        Self { f, _t: std::marker::PhantomData }
    }
}

impl<T: TypedEvent, F: for<'a> TypedHandlerFn<'a, T>> ErasedCall for TypedClosure<T, F> {
    fn call<'a>(&'a self, env: &'a Envelope<dyn EventData>, _ctx: &'a HandlerContext) -> HandlerFuture<'a> {
        match env.downcast_ref::<T>() {
            Some(env) => Box::pin(self.f.call(env)),
            None => wrong_payload(env, std::any::type_name::<T>()),
        }
    }

    fn payload_type(&self) -> Option<TypeId> {
        Some(TypeId::of::<T>())
    }

    fn convert(&self, event: &Event) -> Result<Arc<SharedEvent>, HandlerError> {
        convert_to::<T>(event)
    }
}

pub(super) struct DynClosure<F> {
    pub(super) f: F,
}

impl<F: for<'a> DynHandlerFn<'a>> ErasedCall for DynClosure<F> {
    fn call<'a>(&'a self, env: &'a Envelope<dyn EventData>, _ctx: &'a HandlerContext) -> HandlerFuture<'a> {
        match env.downcast_ref::<serde_json::Value>() {
            Some(event) => Box::pin(self.f.call(event)),
            None => wrong_payload(env, "serde_json::Value"),
        }
    }

    fn payload_type(&self) -> Option<TypeId> {
        None
    }

    fn convert(&self, event: &Event) -> Result<Arc<SharedEvent>, HandlerError> {
        Ok(SharedEvent::new(event.clone()))
    }
}
