//! The program-wide registrations `#[handler]` submits, and [`registered_handlers`].

use std::time::Duration;

use super::{DepRequirement, Handler, HandlerMode, RetryPolicy};

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
