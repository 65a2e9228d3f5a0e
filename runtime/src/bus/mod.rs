//! The [`EventBus`]: registration of handlers, `emit` and its variants, shutdown.
//!
//! The emit pipeline itself (validation, middleware, inline handlers, store, hand-over to
//! the async backend) is in `dispatch`; the builder in `builder`; dynamic-event
//! validation in `validation`.

mod builder;
mod dispatch;
mod pump;
mod validation;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use uuid::Uuid;

pub use self::builder::{BatchConfig, EventBusBuilder};
use self::dispatch::Phase;
use self::validation::Validation;
pub use self::validation::ValidationMode;
use crate::backend::{AsyncBackend, WorkerPool};
use crate::delivery::{DeliveryEnv, ShutdownReport};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{EventData, TypedEvent};
use crate::event_type::EventType;
use crate::handler::{Dependencies, DynHandlerFn, EventHandler, Handler, HandlerOptions, TypedHandlerFn};
use crate::middleware::EventMiddleware;
use crate::route::{Route, RouteTable};
use crate::schema::SchemaRegistry;
use crate::store::{EventStore, OutboxTransaction};

/// Anything `emit` accepts: a typed event, an `Envelope<T>`, or a dynamic [`crate::Event`].
pub trait IntoEnvelope: Send + Sized + 'static {
    /// The payload type.
    type Data: EventData;

    /// The event in its envelope.
    fn into_envelope(self) -> Envelope<Self::Data>;
}

impl<T: TypedEvent> IntoEnvelope for T {
    type Data = T;

    #[inline]
    fn into_envelope(self) -> Envelope<T> {
        Envelope::of(self)
    }
}

impl<T: EventData> IntoEnvelope for Envelope<T> {
    type Data = T;

    #[inline]
    fn into_envelope(self) -> Envelope<T> {
        self
    }
}

/// What happened to an emitted event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmitStatus {
    /// Handlers ran (sync) or were handed to the backend (async).
    Emitted,
    /// A middleware dropped the event: no handler ran, nothing was stored.
    Dropped {
        /// The middleware.
        middleware: String,
        /// Its reason.
        reason: String,
    },
}

/// The outcome of one `emit`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmitReceipt {
    /// The event's id.
    pub id: Uuid,
    /// The event's type (after middleware).
    pub event_type: EventType,
    /// Emitted or dropped.
    pub status: EmitStatus,
    /// Handlers that ran inline, successfully.
    pub handlers_run: usize,
    /// Deliveries handed to the async backend.
    pub async_deliveries: usize,
    /// Position in the store, when the bus has one.
    pub position: Option<u64>,
}

impl EmitReceipt {
    #[inline]
    fn emitted<T: ?Sized>(env: &Envelope<T>, handlers_run: usize) -> Self {
        Self {
            id: env.id,
            event_type: env.event_type.clone(),
            status: EmitStatus::Emitted,
            handlers_run,
            async_deliveries: 0,
            position: None,
        }
    }

    /// The receipt of an emitted event that is not needed any more: it takes the event's
    /// type instead of copying it.
    #[inline]
    fn from_envelope<T>(env: Envelope<T>, handlers_run: usize) -> Self {
        let Envelope { id, event_type, .. } = env;
        Self { id, event_type, status: EmitStatus::Emitted, handlers_run, async_deliveries: 0, position: None }
    }

    /// Whether a middleware dropped the event.
    pub fn is_dropped(&self) -> bool {
        matches!(self.status, EmitStatus::Dropped { .. })
    }
}

/// Counters of a bus's async deliveries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Deliveries whose handler succeeded.
    pub succeeded: u64,
    /// Deliveries that failed every attempt.
    pub failed: u64,
    /// Retries made.
    pub retried: u64,
    /// Attempts that panicked (caught).
    pub panicked: u64,
}

struct BusInner {
    /// The handlers, swapped whole at each change: an emit reads one table throughout.
    routes: ArcSwap<RouteTable>,
    /// Serializes changes of the handlers.
    register_lock: std::sync::Mutex<()>,
    middleware: Vec<Arc<dyn EventMiddleware>>,
    store: Option<Arc<dyn EventStore>>,
    backend: Arc<dyn AsyncBackend>,
    /// The broker the backend ships events to, if it does: every event is then published
    /// once rather than delivered per handler.
    broker: Option<crate::broker::BrokerBackend>,
    delivery_env: Arc<DeliveryEnv>,
    source: Option<std::borrow::Cow<'static, str>>,
    max_handlers_per_event: usize,
    batch: BatchConfig,
    validation: Validation,
    registry: Arc<SchemaRegistry>,
    closed: AtomicBool,
    /// Why the bus could not be built as configured: every emit and registration fails
    /// with it (see [`EventBusBuilder::build`]).
    broken: Option<String>,
    /// The task that runs the outbox's due deliveries, once started.
    pump: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The event bus: middleware, then sync handlers inline, then the store, then async
/// handlers on the backend.
///
/// Cheap to clone (an `Arc`); every clone is the same bus. Dropping the last clone stops
/// its worker pool once the pool has run what is queued; call [`EventBus::shutdown`] to
/// wait for that within a deadline.
///
/// # Order of work in `emit`
///
/// 1. A dynamic event whose name belongs to a `#[derive(Event)]` type must read as that
///    type ([`Error::Validation`] otherwise); see [`EventBusBuilder::validate_built_in_events`]
///    for the built-in authentication events.
/// 2. Middleware, in the order added. One may change the event, drop it
///    ([`EmitStatus::Dropped`]) or reject it (its error).
/// 3. Sync handlers, inline, by priority (higher first) then registration order. The first
///    error stops the emit and is returned ([`Error::Handler`]): a "before" hook vetoes.
/// 4. The store, if any: `emit` returns only once the event is stored.
/// 5. Async handlers: handed to the async backend, all or none; their failures are retried
///    and reported to the failure hook, never to the emitter.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("handlers", &self.inner.routes.load().handlers.len())
            .field("middleware", &self.inner.middleware.len())
            .field("store", &self.inner.store.as_ref().map(|s| s.name().to_owned()))
            .field("backend", &self.inner.backend.name())
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no handlers, no store and the default worker pool (10 workers, queue
    /// of 1000). Register handlers with [`EventBus::on`] and [`EventBus::subscribe`].
    pub fn new() -> Self {
        Self::with_backend(WorkerPool::default())
    }

    /// A bus whose async handlers go to `backend` (the seed's `NewEventBusWithBackend`).
    ///
    /// Like [`EventBusBuilder::build`], it does not fail: if the schemas of the program's
    /// derived events conflict, every emit reports the conflict.
    pub fn with_backend(backend: impl AsyncBackend) -> Self {
        Self::builder().backend(backend).build()
    }

    /// A builder for a configured bus.
    pub fn builder() -> EventBusBuilder {
        EventBusBuilder::default()
    }

    /// The async backend's name.
    pub fn backend_name(&self) -> &str {
        self.inner.backend.name()
    }

    /// Every handler registered, in registration order.
    pub fn handlers(&self) -> Vec<Handler> {
        self.inner.routes.load().handlers.clone()
    }

    /// The dependency of type `T` registered with [`EventBusBuilder::dependency`].
    pub fn dependency<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.inner.delivery_env.deps.get::<T>()
    }

    /// Counters of async deliveries.
    pub fn stats(&self) -> BusStats {
        let s = &self.inner.delivery_env.stats;
        BusStats {
            succeeded: s.succeeded.get(),
            failed: s.failed.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
            panicked: s.panicked.load(Ordering::Relaxed),
        }
    }

    /// Registers a handler. Fails on a duplicate name, a missing dependency, or more than
    /// `max_handlers_per_event` handlers for one event.
    pub fn register(&self, handler: Handler) -> Result<()> {
        self.check_usable()?;
        let _guard = self.inner.register_lock.lock().map_err(|_| Error::Config("handler registry poisoned".into()))?;
        let mut handlers = self.inner.routes.load().handlers.clone();
        check_new_handler(&handlers, &handler, &self.inner.delivery_env.deps, self.inner.max_handlers_per_event)?;
        handlers.push(handler);
        self.inner.routes.store(Arc::new(RouteTable::new(handlers, &self.inner.delivery_env)));
        Ok(())
    }

    /// Removes the handler named `name`; returns whether there was one. Emits that start
    /// after this returns do not run it, and the bus no longer holds it: it is dropped once
    /// the emits and deliveries already running with it are done.
    pub fn unregister(&self, name: &str) -> bool {
        let Ok(_guard) = self.inner.register_lock.lock() else { return false };
        let current = self.inner.routes.load_full();
        let handlers: Vec<Handler> = current.handlers.iter().filter(|h| h.name() != name).cloned().collect();
        let removed = handlers.len() != current.handlers.len();
        if removed {
            self.inner.routes.store(Arc::new(RouteTable::new(handlers, &self.inner.delivery_env)));
        }
        removed
    }

    /// Registers a sync handler of the events named `event_type`, as in the seed:
    ///
    /// ```
    /// # use better_auth_events_runtime::{EventBus, Event};
    /// # async fn run() -> Result<(), better_auth_events_runtime::Error> {
    /// let bus = EventBus::new();
    /// bus.on("user.created", async |event: &Event| {
    ///     println!("User created: {:?}", event.data);
    ///     Ok(())
    /// }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Rust needs `async |event: &Event| { .. }` where the seed writes
    /// `|event: &Event| async { .. }`: a closure that returns an `async` block cannot
    /// borrow its argument.
    pub async fn on<F: for<'a> DynHandlerFn<'a>>(&self, event_type: impl Into<EventType>, f: F) -> Result<()> {
        self.register(Handler::dynamic(event_type, HandlerOptions::new(), f))
    }

    /// [`EventBus::on`] with options (name, async mode, priority, timeout, retry).
    pub async fn on_with<F: for<'a> DynHandlerFn<'a>>(
        &self,
        event_type: impl Into<EventType>,
        options: HandlerOptions,
        f: F,
    ) -> Result<()> {
        self.register(Handler::dynamic(event_type, options, f))
    }

    /// Registers a sync [`EventHandler`] (a handler written as a type) of the events named
    /// `event_type`.
    pub async fn on_handler(&self, event_type: impl Into<EventType>, handler: impl EventHandler) -> Result<()> {
        self.register(Handler::from_event_handler(event_type, HandlerOptions::new(), handler))
    }

    /// Registers a sync handler of the typed event `T`:
    /// `bus.subscribe(async |e: &Envelope<UserCreated>| { .. })`.
    pub async fn subscribe<T: TypedEvent, F: for<'a> TypedHandlerFn<'a, T>>(&self, f: F) -> Result<()> {
        self.register(Handler::typed::<T, F>(HandlerOptions::new(), f))
    }

    /// [`EventBus::subscribe`] with options.
    pub async fn subscribe_with<T: TypedEvent, F: for<'a> TypedHandlerFn<'a, T>>(
        &self,
        options: HandlerOptions,
        f: F,
    ) -> Result<()> {
        self.register(Handler::typed::<T, F>(options, f))
    }

    /// Emits an event: a typed event, an `Envelope<T>` or a dynamic [`crate::Event`].
    /// See the type's documentation for the order of work.
    ///
    /// The work happens when the returned future is awaited. A typed event gets its
    /// envelope (id, time) then; an envelope keeps the id and time it was made with.
    pub fn emit<E: IntoEnvelope>(&self, event: E) -> impl Future<Output = Result<EmitReceipt>> + Send + '_ {
        self.dispatch(event, Phase::Emit)
    }

    /// Emits an event running every handler inline, async ones included, and returns the
    /// first error of any (seed 002's `EmitSync`).
    pub fn emit_sync<E: IntoEnvelope>(&self, event: E) -> impl Future<Output = Result<EmitReceipt>> + Send + '_ {
        self.dispatch(event, Phase::AllInline)
    }

    /// Emits several events of one type. Each goes through validation, middleware and
    /// sync handlers in turn; the first error stops the batch before anything is stored.
    /// The survivors are then appended to the store in transactions of at most
    /// `batch_size` events (one by one when batching is off), then their async
    /// deliveries are handed to the backend.
    pub async fn emit_batch<E: IntoEnvelope>(&self, events: impl IntoIterator<Item = E>) -> Result<Vec<EmitReceipt>> {
        let mut receipts = Vec::new();
        // The events past their inline handlers, each with its async route and its receipt.
        let mut kept = Vec::new();
        for event in events {
            let mut env = event.into_envelope();
            self.prepare(&mut env)?;
            if let Some(dropped) = self.run_middleware(&mut env).await? {
                receipts.push(dropped);
                continue;
            }
            let route = self.inner.routes.load().route::<E::Data>(&env.event_type).cloned();
            let handlers_run = match &route {
                Some(route) => self.run_inline(&env, route, Phase::Emit).await?,
                None => 0,
            };
            receipts.push(EmitReceipt::emitted(&env, handlers_run));
            let async_route = route.filter(|r| !r.asynchronous.is_empty());
            kept.push((env, async_route, receipts.len() - 1));
        }
        let chunk = if self.inner.batch.enabled { self.inner.batch.batch_size.max(1) } else { 1 };
        if let Some(outbox) = &self.inner.delivery_env.outbox {
            // The events and their deliveries go in together, unleased; the pump runs them.
            self.start_outbox();
            let log = outbox.log()?;
            for group in kept.chunks(chunk) {
                let same_handlers = |a: &Option<Arc<Route>>, b: &Option<Arc<Route>>| match (a, b) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                for run in group.chunk_by(|a, b| same_handlers(&a.1, &b.1)) {
                    let names: Vec<&str> = match &self.inner.broker {
                        // One publication per event, whatever its handlers.
                        Some(broker) => vec![broker.relay_name()],
                        None => run[0]
                            .1
                            .as_ref()
                            .map(|r| r.asynchronous.iter().map(|t| t.handler.name()).collect())
                            .unwrap_or_default(),
                    };
                    let refs: Vec<&Envelope<dyn EventData>> =
                        run.iter().map(|(env, _, _)| env as &Envelope<dyn EventData>).collect();
                    let outcomes = log.append_with_deliveries(&refs, &names, None).await?;
                    for ((_, _, index), outcome) in run.iter().zip(outcomes) {
                        receipts[*index].position = Some(outcome.position());
                        if !outcome.is_duplicate() {
                            receipts[*index].async_deliveries = names.len();
                        }
                    }
                }
            }
            outbox.wake.notify_one();
            return Ok(receipts);
        }
        if let Some(broker) = &self.inner.broker {
            return self.publish_batch(broker, kept, receipts, chunk).await;
        }
        // Room for every async delivery of the batch is taken before anything is stored.
        let deliveries: usize = kept.iter().filter_map(|(_, r, _)| r.as_ref()).map(|r| r.asynchronous.len()).sum();
        let mut room = if deliveries > 0 { Some(self.reserve(deliveries).await?) } else { None };
        if let Some(store) = &self.inner.store {
            for group in kept.chunks(chunk) {
                let refs: Vec<&Envelope<dyn EventData>> =
                    group.iter().map(|(env, _, _)| env as &Envelope<dyn EventData>).collect();
                let outcomes = store.append_batch(&refs).await?;
                for ((_, _, index), outcome) in group.iter().zip(outcomes) {
                    receipts[*index].position = Some(outcome.position());
                }
            }
        }
        for (env, route, index) in kept {
            if let (Some(route), Some(room)) = (route, room.as_mut()) {
                let share = room.split(route.asynchronous.len());
                let (n, pending) = self.hand_over(env, &route, share)?;
                if let Some(pending) = pending {
                    pending.await?;
                }
                receipts[index].async_deliveries = n;
            }
        }
        Ok(receipts)
    }

    /// The end of `emit_batch` on a bus whose backend is a broker and whose store keeps no
    /// outbox: the events are stored, then each not stored before is published once.
    async fn publish_batch<T: EventData>(
        &self,
        broker: &crate::broker::BrokerBackend,
        kept: Vec<(Envelope<T>, Option<Arc<Route>>, usize)>,
        mut receipts: Vec<EmitReceipt>,
        chunk: usize,
    ) -> Result<Vec<EmitReceipt>> {
        let mut fresh = vec![true; kept.len()];
        if let Some(store) = &self.inner.store {
            for (g, group) in kept.chunks(chunk).enumerate() {
                let refs: Vec<&Envelope<dyn EventData>> =
                    group.iter().map(|(env, _, _)| env as &Envelope<dyn EventData>).collect();
                let outcomes = store.append_batch(&refs).await?;
                for (i, ((_, _, index), outcome)) in group.iter().zip(outcomes).enumerate() {
                    receipts[*index].position = Some(outcome.position());
                    fresh[g * chunk + i] = !outcome.is_duplicate();
                }
            }
        }
        for ((env, _, index), fresh) in kept.into_iter().zip(fresh) {
            if fresh {
                let shared = crate::envelope::SharedEvent::new(env);
                self::dispatch::publish(broker, &shared).await?;
                receipts[index].async_deliveries = 1;
            }
        }
        Ok(receipts)
    }

    /// Emits an event inside a database transaction of your own: the event and its pending
    /// async deliveries are written in `tx`, so they commit together with your own writes,
    /// or not at all. The transactional outbox.
    ///
    /// Middleware and sync handlers run as in [`EventBus::emit`], before the write (a sync
    /// handler's veto returns its error and writes nothing). Async handlers run once `tx`
    /// has committed: the bus's outbox pump finds their deliveries within its poll interval
    /// ([`EventBusBuilder::outbox_poll_interval`]). If `tx` rolls back, nothing was emitted.
    ///
    /// The bus's store must be the `SqliteStore` or `PostgresStore` whose pool `tx` was begun
    /// on ([`Error::Config`] otherwise). On PostgreSQL the append takes the store's advisory
    /// lock until `tx` ends (positions stay in commit order), so other appends wait for
    /// your commit: keep the transaction short.
    ///
    /// On SQLite, a transaction that reads before its first write should begin with
    /// `pool.begin_with("BEGIN IMMEDIATE")`: a deferred one whose snapshot another writer
    /// outdates meanwhile cannot start writing ("database is locked"). One whose first
    /// statement is a write, as `emit_in` alone is, needs nothing.
    ///
    /// ```no_run
    /// # use better_auth_events_runtime::{Event, EventBus, store::SqliteStore};
    /// # async fn sign_up(bus: &EventBus, store: &SqliteStore) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("INSERT INTO users (id, email) VALUES (?, ?)").bind("u1").bind("ann@example.com").execute(&mut *tx).await?;
    /// bus.emit_in(&mut tx, Event::new("user.created").with_data(serde_json::json!({ "user_id": "u1" }))).await?;
    /// tx.commit().await?; // the user row, the event and its deliveries, or none of them
    /// # Ok(()) }
    /// ```
    pub async fn emit_in<Tx: OutboxTransaction, E: IntoEnvelope>(&self, tx: &mut Tx, event: E) -> Result<EmitReceipt> {
        let store = self.inner.store.as_deref().ok_or_else(|| {
            Error::Config("`emit_in` needs a bus with a SQL store: add `.store(..)` to the builder".into())
        })?;
        let mut env = event.into_envelope();
        self.prepare(&mut env)?;
        if !self.inner.middleware.is_empty()
            && let Some(dropped) = self.run_middleware(&mut env).await?
        {
            return Ok(dropped);
        }
        let route = self.inner.routes.load().route::<E::Data>(&env.event_type).cloned();
        let handlers_run = match &route {
            Some(route) => self.run_inline(&env, route, Phase::Emit).await?,
            None => 0,
        };
        let names: Vec<&str> = match &self.inner.broker {
            Some(broker) => vec![broker.relay_name()],
            None => route.iter().flat_map(|r| r.asynchronous.iter().map(|t| t.handler.name())).collect(),
        };
        let events: [&Envelope<dyn EventData>; 1] = [&env];
        let outcome = tx
            .append_in(store, &events, &names)
            .await?
            .pop()
            .ok_or_else(|| Error::store(store.name(), "an append returned no outcome for its event"))?;
        let mut receipt =
            EmitReceipt { position: Some(outcome.position()), ..EmitReceipt::emitted(&env, handlers_run) };
        if !outcome.is_duplicate() {
            receipt.async_deliveries = names.len();
        }
        self.start_outbox();
        Ok(receipt)
    }

    /// Stops the bus: later emits fail with [`Error::Closed`]; async deliveries in flight
    /// get until `deadline` to finish; the report lists those that did not.
    ///
    /// On a bus whose store keeps an outbox, what did not finish stays pending in the store:
    /// it is given back (unleased) so that the next bus on that store runs it at once, and
    /// the deliveries this bus completed are written before this returns.
    pub async fn shutdown(&self, deadline: Duration) -> Result<ShutdownReport> {
        self.inner.closed.store(true, Ordering::Release);
        let started = std::time::Instant::now();
        if let Some(outbox) = &self.inner.delivery_env.outbox {
            // Retries that fall due within the deadline wait in the store, not in the pool:
            // the pump keeps running them until the pool is idle and none is due before the
            // deadline.
            let now = chrono::Utc::now();
            let until = chrono::Duration::from_std(deadline)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            while started.elapsed() < deadline
                && (!self.inner.backend.is_idle() || self::pump::due_by(&self.inner, outbox, until).await)
            {
                tokio::time::sleep(SHUTDOWN_POLL.min(deadline.saturating_sub(started.elapsed()))).await;
            }
        }
        self.stop_pump();
        let report = self.inner.backend.close(deadline.saturating_sub(started.elapsed())).await?;
        if let Some(outbox) = &self.inner.delivery_env.outbox {
            outbox.flush().await;
            let keys: Vec<crate::dlq::DeliveryKey> = report
                .unfinished
                .iter()
                .map(|u| crate::dlq::DeliveryKey { event_id: u.event_id, handler: u.handler.to_string() })
                .collect();
            outbox.release(&keys).await;
        }
        Ok(report)
    }

    /// Whether [`EventBus::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The error of a bus that cannot take events: shut down, or built from a configuration
    /// that failed its checks.
    #[inline]
    fn check_usable(&self) -> Result<()> {
        if let Some(reason) = &self.inner.broken {
            return Err(Error::Config(format!(
                "this bus could not be built ({reason}); fix the configuration, or use `try_build().await?` to get this error at start-up"
            )));
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

/// How often a shutdown looks whether the outbox still has deliveries due before its deadline.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

/// Checks a handler against those already registered and the bus's dependencies.
fn check_new_handler(existing: &[Handler], new: &Handler, deps: &Dependencies, max: usize) -> Result<()> {
    if let Some(dup) = existing.iter().find(|h| h.name() == new.name()) {
        let at = |h: &Handler| h.location().map(|l| format!(" (defined at {l})")).unwrap_or_default();
        return Err(Error::Config(format!(
            "handler `{}`{} is registered twice{}; give one of them another name with `#[handler(name = \"..\")]` or `HandlerOptions::name`",
            new.name(),
            at(new),
            if dup.location().is_some() { format!(", first{}", at(dup)) } else { String::new() },
        )));
    }
    for req in new.requirements() {
        if !deps.contains(req.type_id) {
            return Err(Error::Config(format!(
                "handler `{}` takes `Dep<{}>` but no `{}` is registered; add `.dependency(..)` with one to the builder",
                new.name(),
                req.type_name,
                req.type_name
            )));
        }
    }
    let same_event = existing.iter().filter(|h| h.event_name() == new.event_name()).count();
    if same_event >= max {
        return Err(Error::Config(format!(
            "event `{}` already has {same_event} handlers, the most `max_handlers_per_event` allows; raise the limit or merge handlers",
            new.event_name()
        )));
    }
    Ok(())
}
