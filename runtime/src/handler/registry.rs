//! The program-wide registrations `#[handler]` submits, and [`registered_handlers`].

use std::borrow::Cow;
use std::time::Duration;

use super::erased::TypedFn;
use super::{DepRequirement, Handler, HandlerContext, HandlerFuture, HandlerMode, HandlerOptions, RetryPolicy};
use crate::envelope::Envelope;
use crate::event::TypedEvent;

/// What `#[handler]` generates for a function; not meant to be written by hand.
#[doc(hidden)]
pub struct HandlerSpec {
    pub name: &'static str,
    pub mode: HandlerMode,
    pub priority: i32,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub requirements: &'static [fn() -> Option<DepRequirement>],
    pub uses_context: bool,
    pub location: &'static str,
}

impl Handler {
    #[doc(hidden)]
    pub fn from_fn<T: TypedEvent>(
        spec: HandlerSpec,
        f: for<'a> fn(&'a Envelope<T>, &'a HandlerContext) -> HandlerFuture<'a>,
    ) -> Self {
        let options = HandlerOptions {
            name: Some(Cow::Borrowed(spec.name)),
            mode: spec.mode,
            priority: spec.priority,
            timeout: spec.timeout,
            retry: spec.retry,
        };
        let requirements = spec.requirements.iter().filter_map(|r| r()).collect();
        Self::from_parts(
            options,
            Cow::Borrowed(spec.name),
            Cow::Borrowed(T::NAME),
            requirements,
            spec.uses_context,
            Some(spec.location),
            Box::new(TypedFn::<T> { f }),
        )
    }
}

/// A program-wide registration submitted by `#[handler]`.
#[doc(hidden)]
pub struct HandlerRegistration {
    make: fn() -> Handler,
}

impl HandlerRegistration {
    #[doc(hidden)]
    pub const fn new(make: fn() -> Handler) -> Self {
        Self { make }
    }
}

inventory::collect!(HandlerRegistration);

/// Every `#[handler]` function linked into the program, sorted by name.
///
/// Pass them to `EventBus::builder().handlers(registered_handlers())`; filter first with
/// `Iterator::filter` to register only some.
pub fn registered_handlers() -> Vec<Handler> {
    let mut out: Vec<Handler> = inventory::iter::<HandlerRegistration>.into_iter().map(|r| (r.make)()).collect();
    out.sort_by(|a, b| a.inner.name.cmp(&b.inner.name));
    out
}
