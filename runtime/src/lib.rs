//! Runtime of [better-auth-events](https://docs.rs/better-auth-events): the envelope, the
//! bus, handlers, middleware, the worker pool and the store slot.
//!
//! Use it through the `better-auth-events` facade crate, which adds the `#[derive(Event)]`
//! and `#[handler]` macros and a prelude.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod bus;
mod envelope;
mod error;
mod event;
mod event_type;
mod handler;
mod middleware;
pub mod replay;
pub mod schema;
pub mod store;

pub use async_trait::async_trait;

pub use backend::{
    AsyncBackend, BackpressurePolicy, Delivery, DeliveryFailure, ShutdownReport, UnfinishedDelivery, WorkerPool,
    WorkerPoolConfig,
};
pub use bus::{
    BatchConfig, BusStats, Cause, EmitReceipt, EmitStatus, EventBus, EventBusBuilder, IntoEnvelope, ValidationMode,
    current_cause,
};
pub use envelope::{DEFAULT_SOURCE, Envelope, Event, EventMetadata, SPEC_VERSION, ext, new_event_id};
pub use error::{BoxError, Error, ErrorChain, HandlerError, Result};
pub use event::{EventData, EventInfo, EventRegistration, TypedEvent, registered_events};
pub use event_type::EventType;
pub use handler::{
    Backoff, Dep, DepRequirement, Dependencies, DynHandlerFn, FromContext, Handler, HandlerContext, HandlerFuture,
    HandlerMode, HandlerOptions, IntoHandlerResult, RetryPolicy, TypedHandlerFn, registered_handlers,
};
pub use middleware::{CorrelationMiddleware, EventMiddleware, Flow, TracingMiddleware};
pub use replay::{ReplayBuilder, ReplayEngine, ReplayFailure, ReplayProgress, ReplayReport};
pub use store::{AppendOutcome, EventQuery, EventStore, MemoryStore, Order, QueryBuilder, StoredEvent};

/// What generated code uses. Not public API: anything here may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use core::option::Option;
    pub use core::result::Result;
    pub use std::boxed::Box;
    pub use std::time::Duration;

    pub use inventory;
    pub use schemars;
    pub use serde;

    pub use crate::envelope::Envelope;
    pub use crate::error::HandlerError;
    pub use crate::schema::upcast::{Upcast, UpcasterRegistration};

    /// Whether two names are equal, at compile time.
    pub const fn same_name(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// The leading number of `v` from byte `i`, and the index after it.
    const fn number(v: &[u8], mut i: usize) -> (u64, usize) {
        let mut n: u64 = 0;
        while i < v.len() && v[i].is_ascii_digit() {
            n = n.saturating_mul(10).saturating_add((v[i] - b'0') as u64);
            i += 1;
        }
        (n, i)
    }

    /// Whether semver version `a` precedes `b`, at compile time. Both were checked as
    /// semver by the derive; build metadata is ignored, and two pre-releases of the same
    /// version compare byte by byte (a simplification of semver's identifier rules).
    pub const fn version_precedes(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let (mut i, mut j) = (0, 0);
        let mut part = 0;
        while part < 3 {
            let (x, ni) = number(a, i);
            let (y, nj) = number(b, j);
            if x != y {
                return x < y;
            }
            // Skip the dot (or stop at `-`/`+`).
            i = if ni < a.len() && a[ni] == b'.' { ni + 1 } else { ni };
            j = if nj < b.len() && b[nj] == b'.' { nj + 1 } else { nj };
            part += 1;
        }
        let a_pre = i < a.len() && a[i] == b'-';
        let b_pre = j < b.len() && b[j] == b'-';
        match (a_pre, b_pre) {
            (true, false) => true,
            (false, _) => false,
            (true, true) => {
                while i < a.len() && j < b.len() && a[i] != b'+' && b[j] != b'+' {
                    if a[i] != b[j] {
                        return a[i] < b[j];
                    }
                    i += 1;
                    j += 1;
                }
                (i == a.len() || a[i] == b'+') && j < b.len() && b[j] != b'+'
            }
        }
    }

    pub use crate::event::{EventRegistration, TypedEvent};
    pub use crate::handler::{
        Backoff, DepRequirement, FromContext, Handler, HandlerContext, HandlerFuture, HandlerMode, HandlerRegistration,
        HandlerSpec, IntoHandlerResult, RetryPolicy,
    };

    /// Asserts at compile time that a handler's event type is an event.
    pub const fn assert_event<T: TypedEvent>() {}

    /// Asserts at compile time that a handler's argument can be extracted.
    pub const fn assert_from_context<T: FromContext>() {}

    /// Asserts at compile time that a handler's return type is a `Result<(), E>`.
    pub fn assert_handler_result<T: IntoHandlerResult>() {}

    /// The `Duration` of a literal checked by the macro.
    pub const fn duration(secs: u64, nanos: u32) -> Duration {
        Duration::new(secs, nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::__private::version_precedes;

    #[test]
    fn version_precedes_orders_like_semver() {
        let ordered = [
            "0.9.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-beta",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0+build.7",
            "10.0.0",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                let expected = i < j;
                let got = version_precedes(a, b);
                assert_eq!(got, expected, "{a} precedes {b}: expected {expected}, got {got}");
                let parsed = semver::Version::parse(a).unwrap() < semver::Version::parse(b).unwrap();
                assert_eq!(got, parsed, "{a} < {b} disagrees with the semver crate");
            }
        }
        assert!(!version_precedes("1.0.0", "1.0.0+build"), "build metadata is ignored");
    }
}
