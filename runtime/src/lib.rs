//! Runtime of [better-auth-events](https://docs.rs/better-auth-events): the envelope, the
//! bus, handlers, middleware, async backends, stores, replay and the schema registry.
//!
//! Use it through the `better-auth-events` facade crate, which adds the `#[derive(Event)]`
//! and `#[handler]` macros and a prelude.
//!
//! # Layout
//!
//! Modules depend on each other one way, from the bottom up; none reaches back up:
//!
//! ```text
//! replay                                  replays stored events into a bus's handlers
//! bus (dispatch, builder, validation)     emit, emit_sync, emit_batch, registration
//! route · backend (worker_pool)           the route table · where async deliveries go
//! delivery                                one event for one async handler, retries
//! handler (context, options, retry, …) · middleware
//! cause                                   which event's handler runs on this task
//! envelope (cloudevents, shared, depth) · schema
//!                                         the envelope, its CloudEvents form, nesting limits · schemas
//! event · event_type · error · clock      TypedEvent · EventType · Error · ids and time
//! ```
//!
//! Stores (`store`) are leaves beside them: they depend on the envelope, the event and
//! the error, and nothing depends on them but the bus and replay, through the
//! [`EventStore`] trait.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
pub mod broker;
mod bus;
mod cause;
mod clock;
mod delivery;
pub mod dlq;
mod envelope;
mod error;
mod event;
mod event_type;
mod handler;
mod middleware;
mod outbox;
mod redact;
pub mod replay;
mod route;
pub mod schema;
pub mod store;
mod worker;

pub use async_trait::async_trait;

pub use backend::{AsyncBackend, BackpressurePolicy, Room, WorkerPool, WorkerPoolConfig};
pub use bus::{
    BatchConfig, BusStats, EmitReceipt, EmitStatus, EventBus, EventBusBuilder, IntoEnvelope, ValidationMode,
};
pub use cause::{Cause, current_cause};
pub use clock::new_event_id;
pub use delivery::{Delivery, DeliveryFailure, ShutdownReport, UnfinishedDelivery};
pub use envelope::{DEFAULT_SOURCE, Envelope, Event, EventMetadata, MAX_PAYLOAD_DEPTH, SPEC_VERSION, ext};
pub use error::{BoxError, Error, ErrorChain, EventError, HandlerError, Result};
pub use event::{EventData, EventInfo, EventRegistration, TypedEvent, registered_events};
pub use event_type::EventType;
pub use handler::{
    Backoff, Dep, DepRequirement, Dependencies, DynHandlerFn, EventHandler, FromContext, Handler, HandlerContext,
    HandlerFuture, HandlerMode, HandlerOptions, IntoHandlerResult, RetryPolicy, TypedHandlerFn, registered_handlers,
};
pub use middleware::{CorrelationMiddleware, EventMiddleware, Flow, TracingMiddleware};
pub use replay::{ReplayBuilder, ReplayEngine, ReplayFailure, ReplayProgress, ReplayReport, ReplayUnreadable};
pub use store::{AppendOutcome, EventQuery, EventStore, MemoryStore, Order, QueryBuilder, StoredEvent};
pub use worker::{Worker, WorkerBuilder, WorkerReport};

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
    pub use crate::schema::upcast::{
        PreviousVersion, Upcast, UpcasterRegistration, previous_is_earlier, previous_is_same_event,
    };

    /// Whether semver version `a` precedes `b`, at compile time.
    pub use better_auth_events_lock::version_precedes;

    pub use crate::event::{EventRegistration, TypedEvent};
    pub use crate::handler::{
        Backoff, DepRequirement, FromContext, Handler, HandlerContext, HandlerFuture, HandlerMode, HandlerRegistration,
        HandlerSpec, IntoHandlerResult, RetryPolicy,
    };

    /// The `Duration` of a literal checked by the macro.
    pub const fn duration(secs: u64, nanos: u32) -> Duration {
        Duration::new(secs, nanos)
    }
}
