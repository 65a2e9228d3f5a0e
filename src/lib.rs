//! # better-auth-events
//!
//! Typed, versioned, durable events for authentication workflows and beyond.
//!
//! `#[derive(Event)]` turns a struct into a versioned, registered event; `#[handler]` turns
//! an `async fn` into a registered handler; [`EventBus`] runs middleware, sync handlers
//! inline and async handlers on a worker pool (or another [`AsyncBackend`]).
//!
//! ```
//! use better_auth_events::prelude::*;
//!
//! #[derive(Event, Serialize, Deserialize, JsonSchema, Debug, Clone)]
//! #[event(name = "order.placed", version = "1.0.0")]
//! pub struct OrderPlaced {
//!     pub order_id: String,
//!     #[event(pii)]
//!     pub email: String,
//! }
//!
//! #[handler]
//! async fn check_order(e: &OrderPlaced) -> Result<(), HandlerError> {
//!     if e.order_id.is_empty() {
//!         return Err(HandlerError::new("order id is empty"));
//!     }
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), better_auth_events::Error> {
//! let bus = EventBus::builder().handlers(registered_handlers()).try_build().await?;
//! let receipt = bus.emit(OrderPlaced { order_id: "o-1".into(), email: "a@b.c".into() }).await?;
//! assert_eq!(receipt.handlers_run, 1);
//! # Ok(()) }
//! ```
//!
//! ## `#[derive(Event)]`
//!
//! - `#[event(name = "...")]`: the event name (CloudEvents `type`). Default: the type name's
//!   words in lowercase joined by dots: `UserCreated` → `user.created`,
//!   `HTTPRequestFailed` → `http.request.failed`. Letters, digits and `. _ - : /` only.
//! - `#[event(version = "...")]`: the schema version, a full semver version checked at compile
//!   time. Default `1.0.0`.
//! - `#[event(crate = "path")]`: where this crate is, if you renamed it.
//! - `#[event(pii)]` on a field: the field holds personal data; its JSON key (after serde
//!   `rename`/`rename_all`) is in [`TypedEvent::PII_FIELDS`] and logging middleware redacts it.
//!
//! The type must also derive (or implement) `Serialize`, `Deserialize` and `JsonSchema`
//! (add `serde` and `schemars` to your `Cargo.toml`). Every derived type is listed by
//! [`registered_events()`] with its name, version and JSON Schema.
//!
//! ## `#[handler]`
//!
//! On an `async fn` whose first event-like argument is the event, as `&E`, `&Envelope<E>` or
//! `Envelope<E>` (a clone), followed by any number of `Dep<T>` (shared dependencies added
//! with [`EventBusBuilder::dependency`]) and `&HandlerContext`. It returns `Result<(), E>`
//! for any error `E` that converts into a boxed error (`HandlerError`, `anyhow::Error`,
//! your own). Options:
//!
//! - `sync` (default): runs inside `emit`; its error is returned to the emitter.
//! - `async`: runs on the async backend; failures are retried, never seen by the emitter.
//! - `name = "..."` (default: the function's name), `priority = N` (higher first),
//!   `timeout = "5s"`, and for async handlers
//!   `retry(max_attempts = 5, backoff = "exponential", base = "200ms", max_delay = "30s", jitter)`.
//!
//! Every `#[handler]` registers itself; [`registered_handlers()`] returns them all.

#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate self as better_auth_events;

pub mod auth;

pub use better_auth_events_macros::{Event, handler};
pub use better_auth_events_runtime::{
    AppendOutcome, AsyncBackend, Backoff, BackpressurePolicy, BatchConfig, BoxError, BusStats, Cause,
    CorrelationMiddleware, DEFAULT_SOURCE, Delivery, DeliveryFailure, Dep, DepRequirement, Dependencies, DynHandlerFn,
    EmitReceipt, EmitStatus, Envelope, Error, ErrorChain, Event, EventBus, EventBusBuilder, EventData, EventError,
    EventHandler, EventInfo, EventMetadata, EventMiddleware, EventQuery, EventRegistration, EventStore, EventType,
    Flow, FromContext, Handler, HandlerContext, HandlerError, HandlerFuture, HandlerMode, HandlerOptions, IntoEnvelope,
    IntoHandlerResult, MAX_PAYLOAD_DEPTH, MemoryStore, Order, QueryBuilder, ReplayBuilder, ReplayEngine, ReplayFailure,
    ReplayProgress, ReplayReport, ReplayUnreadable, Result, RetryPolicy, SPEC_VERSION, ShutdownReport, StoredEvent,
    TracingMiddleware, TypedEvent, TypedHandlerFn, UnfinishedDelivery, ValidationMode, Worker, WorkerBuilder,
    WorkerPool, WorkerPoolConfig, WorkerReport, async_trait, broker, current_cause, dlq, ext, new_event_id,
    registered_events, registered_handlers, replay, schema, store,
};
/// The time types of envelopes and queries (`DateTime<Utc>`), re-exported.
pub use chrono;
/// The id type of events and deliveries (`Uuid`), re-exported.
pub use uuid;

/// Everything a user of the bus needs, in one import.
pub mod prelude {
    pub use better_auth_events_macros::{Event, handler};
    pub use better_auth_events_runtime::{
        AsyncBackend, Backoff, BackpressurePolicy, CorrelationMiddleware, Dep, EmitReceipt, Envelope, Event, EventBus,
        EventData, EventMiddleware, EventStore, EventType, Flow, HandlerContext, HandlerError, HandlerOptions,
        MemoryStore, RetryPolicy, TracingMiddleware, TypedEvent, Worker, WorkerPool, async_trait, registered_events,
        registered_handlers,
    };
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::json;
}

/// Generated code's path to the runtime. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use better_auth_events_runtime::__private::*;
}
