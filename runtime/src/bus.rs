//! The [`EventBus`] and its [`EventBusBuilder`].

use std::any::TypeId;
use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use crate::backend::{
    AsyncBackend, BackpressurePolicy, Delivery, DeliveryEnv, DeliveryFailure, DeliveryTarget, FailureHook, SharedEvent,
    ShutdownReport, Stats, WorkerPool, WorkerPoolConfig,
};
use crate::envelope::{DEFAULT_SOURCE, Envelope, Event};
use crate::error::{Error, Result};
use crate::event::{EventData, TypedEvent};
use crate::event_type::EventType;
use crate::handler::{
    Dependencies, DynHandlerFn, Handler, HandlerContext, HandlerMode, HandlerOptions, RetryPolicy, TypedHandlerFn,
};
use crate::middleware::{EventMiddleware, Flow};
use crate::schema::SchemaRegistry;
use crate::store::EventStore;

/// Anything `emit` accepts: a typed event, an `Envelope<T>`, or a dynamic [`Event`].
pub trait IntoEnvelope: Send + Sized + 'static {
    /// The payload type.
    type Data: EventData;

    /// The event in its envelope.
    fn into_envelope(self) -> Envelope<Self::Data>;

    /// The work of an emit of this event (not meant to be called or overridden by hand).
    /// By default the emit keeps the event as it is and makes its envelope in place when
    /// it first runs; an envelope is kept as it is and used in place.
    #[doc(hidden)]
    fn dispatch<'a>(self, bus: &'a EventBus, how: Dispatch<'a, Self::Data>) -> impl EmitFuture<'a> {
        bus.dispatch_event(self, how)
    }
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

    fn dispatch<'a>(self, bus: &'a EventBus, how: Dispatch<'a, T>) -> impl EmitFuture<'a> {
        bus.dispatch_envelope(self, how)
    }
}

/// The future of one emit.
#[doc(hidden)]
pub trait EmitFuture<'a>: Future<Output = Result<EmitReceipt>> + Send + 'a {}

impl<'a, F: Future<Output = Result<EmitReceipt>> + Send + 'a> EmitFuture<'a> for F {}

/// How an emit runs (not meant to be built by hand): which handlers run inline, and for
/// `emit_batch`, where the event goes once its inline handlers have run.
#[doc(hidden)]
pub struct Dispatch<'a, T> {
    phase: Phase,
    held: Option<&'a mut Vec<Held<T>>>,
}

/// The event being handled when an emit happens inside a handler; read by
/// [`crate::CorrelationMiddleware`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// Id of the event being handled.
    pub event_id: Uuid,
    /// Its correlation id.
    pub correlation_id: Option<String>,
}

tokio::task_local! {
    static CAUSE: Cause;
}

/// The event whose handler is running on this task, if the bus records it (some
/// middleware's [`EventMiddleware::needs_cause`] is true).
pub fn current_cause() -> Option<Cause> {
    CAUSE.try_with(Clone::clone).ok()
}

pub(crate) async fn with_cause<F: Future>(env: &Envelope<dyn EventData>, f: F) -> F::Output {
    CAUSE.scope(Cause { event_id: env.id, correlation_id: env.metadata.correlation_id.clone() }, f).await
}

/// The work of one emit, expanded inside the emit's one `async move` block: validation,
/// middleware, inline handlers, the store, the async deliveries. `$env` is the envelope,
/// used in place; `$how` the [`Dispatch`]. Nothing in it is a nested `async fn` on the
/// usual path: each such layer measured about 5 ns per emit. Two functions expand it: one
/// for an event whose envelope is made in the future, one for an envelope made before.
///
/// With `held` (`emit_batch`), the event stops after its inline handlers: it is pushed
/// there with its async route, for the caller to store and hand over with the rest of
/// its batch.
macro_rules! dispatch_body {
    ($bus:ident, $env:ident, $how:ident, $data:ty) => {{
        let inner = &*$bus.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(source) = &inner.source
            && $env.source == DEFAULT_SOURCE
        {
            $env.source = source.clone();
        }
        if TypeId::of::<$data>() == TypeId::of::<serde_json::Value>() {
            validate_dynamic(&inner.registry, inner.validation, &mut $env)?;
        }
        for mw in &inner.middleware {
            match mw.process(&mut $env).await? {
                Flow::Continue => {}
                Flow::Drop(reason) => {
                    tracing::debug!(target: "better_auth_events", event_id = %$env.id, middleware = mw.name(), %reason, "event dropped");
                    return Ok(EmitReceipt {
                        id: $env.id,
                        event_type: $env.event_type.clone(),
                        status: EmitStatus::Dropped { middleware: mw.name().to_owned(), reason },
                        handlers_run: 0,
                        async_deliveries: 0,
                        position: None,
                    });
                }
            }
        }
        // The table is held while the handlers run, by reference or by an `arc_swap` guard
        // (no reference count taken); only a route with async deliveries is cloned out.
        let table = inner.routes.read();
        let route = table.route::<$data>(&$env.event_type);
        let mut handlers_run = 0;
        let inline_async = match ($how.phase, route) {
            (Phase::AllInline, Some(route)) => route.asynchronous.len(),
            _ => 0,
        };
        // An emit whose handlers are all async has nothing to run here.
        if let Some(route) = route
            && (!route.sync.is_empty() || inline_async > 0)
        {
            let event_type = &$env.event_type;
            let handlers = route.sync.iter().chain(route.async_handlers().take(inline_async));
            handlers_run = run_handlers!($bus, &$env, payload_of::<$data>(), handlers, |h, result| {
                result.map_err(|source| Error::Handler {
                    handler: h.inner.name.clone(),
                    event_type: event_type.to_string(),
                    source,
                })
            })?;
        }
        let route = match $how.phase {
            Phase::Emit => route.filter(|r| !r.asynchronous.is_empty()).cloned(),
            Phase::AllInline => None,
        };
        drop(table);
        if let Some(held) = $how.held {
            let receipt = EmitReceipt::emitted(&$env, handlers_run, None);
            held.push(($env, route));
            return Ok(receipt);
        }
        let position = match &inner.store {
            Some(store) => Some(store.append(&$env).await?.position()),
            None => None,
        };
        // Made only now: a receipt alive across the awaits above would take room in
        // every state of this future.
        let mut receipt = if route.is_none() {
            // The envelope ends here: its type moves into the receipt rather than being
            // copied (a custom name is a `String`); a unit variant takes its place.
            let event_type = std::mem::replace(&mut $env.event_type, EventType::UserCreated);
            EmitReceipt { id: $env.id, event_type, status: EmitStatus::Emitted, handlers_run, async_deliveries: 0, position }
        } else {
            EmitReceipt::emitted(&$env, handlers_run, position)
        };
        if let Some(route) = route {
            let (n, sent) = $bus.publish_async($env, route)?;
            if let Some(sent) = sent {
                sent.await?;
            }
            receipt.async_deliveries = n;
        }
        Ok(receipt)
    }};
}

/// Runs `$handlers` (`&Handler`s) inline on `$env` (`&Envelope<dyn EventData>`, whose
/// payload type is `$payload`, see [`payload_type`]), in order, converting the payload for
/// handlers that take another type (once per type).
/// `$on_result` (`FnMut(&Handler, Result<(), HandlerError>) -> Result<()>`) sees each
/// outcome; its error stops the run. Evaluates to the `Result` of how many handlers
/// succeeded.
///
/// A macro, not an `async fn`, so that `emit` runs its handlers in its own async block:
/// every nested `async fn` layer measured about 5 ns per emit. [`EventBus::run_handlers`]
/// is the same code as a function, for replays.
macro_rules! run_handlers {
    ($bus:expr, $env:expr, $payload:expr, $handlers:expr, $on_result:expr) => {
        'run: {
            let bus: &EventBus = $bus;
            let env: &Envelope<dyn EventData> = $env;
            let mut on_result = on_result_fn($on_result);
            let payload: Option<TypeId> = $payload;
            let mut ctx = HandlerContext {
                event_id: env.id,
                handler: Cow::Borrowed(""),
                attempt: 1,
                mode: HandlerMode::Sync,
                replay: env.metadata.replay,
                deps: None,
            };
            // Made on the first handler that takes another payload type; most emits have none.
            let mut conversions: Option<Box<Conversions>> = None;
            let mut succeeded: usize = 0;
            for h in $handlers {
                if h.inner.uses_context && ctx.deps.is_none() {
                    ctx.deps = Some(Arc::clone(&bus.inner.delivery_env.deps));
                }
                ctx.handler = h.inner.name.clone();
                ctx.mode = h.mode();
                let result = if h.inner.payload_type == payload
                    && h.timeout().is_none()
                    && !bus.inner.delivery_env.track_cause
                {
                    crate::handler::caught(h.call_caught(env, &ctx).await)
                } else {
                    bus.invoke_general(h, env, payload, &ctx, &mut conversions).await
                };
                let ok = result.is_ok();
                if let Err(e) = on_result(h, result) {
                    break 'run Err(e);
                }
                if ok {
                    succeeded += 1;
                }
            }
            // Moved out, not left to the end of the block: the drop of a type of this crate
            // is a call the emitter's crate cannot inline, made even for `None`.
            if let Some(conversions) = conversions {
                drop(conversions);
            }
            Ok(succeeded)
        }
    };
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
    fn emitted<T: ?Sized>(env: &Envelope<T>, handlers_run: usize, position: Option<u64>) -> Self {
        Self {
            id: env.id,
            event_type: env.event_type.clone(),
            status: EmitStatus::Emitted,
            handlers_run,
            async_deliveries: 0,
            position,
        }
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

/// Aligned to 128 bytes, so that in its `Arc` the reference counts (raised by every emit
/// with async deliveries) and the handler lists (read by the workers) are on different
/// cache lines: a worker reading the route does not pull the line the emitter writes.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Route {
    /// Sync handlers in run order: priority (high first), then registration order.
    pub(crate) sync: Vec<Handler>,
    /// Async handlers in the same order, each with what the bus gives it: a delivery holds
    /// the route and the number of its handler (one shared reference, the emit's own).
    pub(crate) asynchronous: Vec<DeliveryTarget>,
}

impl Route {
    /// The async handlers, in run order.
    pub(crate) fn async_handlers(&self) -> impl Iterator<Item = &Handler> {
        self.asynchronous.iter().map(|t| &t.handler)
    }
}

#[derive(Default, Clone)]
struct RouteTable {
    /// Handlers in registration order.
    handlers: Vec<Handler>,
    routes: FxHashMap<Box<str>, Arc<Route>>,
    /// The routes of typed events, by payload type: the route of the event's name, for
    /// each payload type some typed handler takes.
    by_type: FxHashMap<TypeId, Arc<Route>>,
}

impl RouteTable {
    fn rebuild(handlers: Vec<Handler>, env: &Arc<DeliveryEnv>) -> Self {
        let mut grouped: FxHashMap<Box<str>, Route> = FxHashMap::default();
        for h in &handlers {
            let route = grouped.entry(h.event_name().into()).or_default();
            match h.mode() {
                HandlerMode::Sync => route.sync.push(h.clone()),
                HandlerMode::Async => {
                    route.asynchronous.push(DeliveryTarget { handler: h.clone(), env: Arc::clone(env) })
                }
            }
        }
        for route in grouped.values_mut() {
            // Stable: equal priorities keep registration order.
            route.sync.sort_by_key(|h| std::cmp::Reverse(h.priority()));
            route.asynchronous.sort_by_key(|t| std::cmp::Reverse(t.handler.priority()));
        }
        let routes: FxHashMap<Box<str>, Arc<Route>> = grouped.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        // A typed handler always listens to its payload type's own name (`T::NAME`), so
        // a payload type has one route.
        let by_type = handlers
            .iter()
            .filter_map(|h| Some((h.inner.payload_type?, Arc::clone(routes.get(h.event_name())?))))
            .collect();
        Self { handlers, routes, by_type }
    }

    /// The route of an event of payload type `T` named `event_type`. A typed event that
    /// still has its payload type's name is found by its payload type.
    #[inline]
    fn route<T: EventData>(&self, event_type: &EventType) -> Option<&Arc<Route>> {
        if let Some(own) = T::static_event_name()
            && event_type.as_str() == own
            && let Some(route) = self.by_type.get(&TypeId::of::<T>())
        {
            return Some(route);
        }
        self.routes.get(event_type.as_str())
    }
}

/// The bus's route table, read by every emit and replaced by every change of handlers.
///
/// `current` is always the latest table. Reading it through `ArcSwap` takes two atomic
/// read-modify-writes per emit (a guard taken, a guard given back), about a tenth of the
/// time of an emit to one handler. So the table an emit first meets is also kept as
/// `stable`, with the generation it belongs to, and an emit that finds the generation
/// unchanged reads `stable` with plain loads. After a change of handlers every emit reads
/// `current`; `stable` then only holds the first table, with its handlers, until the bus
/// is dropped.
struct Routes {
    current: ArcSwap<RouteTable>,
    /// How many times the handlers have changed; raised after `current` is replaced.
    generation: AtomicU64,
    /// The first table an emit read, and the generation it was read at.
    stable: OnceLock<(u64, Arc<RouteTable>)>,
}

/// A route table as an emit holds it: the stable one, or a guard on the current one.
enum RouteTableRef<'a> {
    Stable(&'a RouteTable),
    Current(arc_swap::Guard<Arc<RouteTable>>),
}

impl std::ops::Deref for RouteTableRef<'_> {
    type Target = RouteTable;

    #[inline]
    fn deref(&self) -> &RouteTable {
        match self {
            RouteTableRef::Stable(table) => table,
            RouteTableRef::Current(guard) => guard,
        }
    }
}

impl Routes {
    fn new(table: RouteTable) -> Self {
        Self { current: ArcSwap::from_pointee(table), generation: AtomicU64::new(0), stable: OnceLock::new() }
    }

    /// The latest table, for the rare readers (registration, replay, `handlers()`).
    fn latest(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.current.load()
    }

    /// Replaces the table; callers hold the bus's registration lock.
    fn replace(&self, table: RouteTable) {
        self.current.store(Arc::new(table));
        // Release: an emit that reads the new generation then reads the new table.
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The table for an emit: the stable one while no change of handlers has happened
    /// since it was taken, the current one otherwise.
    #[inline]
    fn read(&self) -> RouteTableRef<'_> {
        let generation = self.generation.load(Ordering::Acquire);
        match self.stable.get() {
            Some((stable_at, table)) if *stable_at == generation => RouteTableRef::Stable(table),
            Some(_) => RouteTableRef::Current(self.current.load()),
            None => self.take_stable(generation),
        }
    }

    /// The first emit's read: keeps the current table as the stable one, at `generation`,
    /// read before the table is loaded here. A change landing in between leaves the pair
    /// behind the generation, which only sends emits to `current`; the pair never has a
    /// generation newer than its table.
    #[cold]
    fn take_stable(&self, generation: u64) -> RouteTableRef<'_> {
        self.stable.get_or_init(|| (generation, self.current.load_full()));
        RouteTableRef::Current(self.current.load())
    }
}

/// Configuration of how `emit_batch` writes to the store (the seed's batching settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Whether `emit_batch` appends its events to the store in batches (on) or one by one.
    pub enabled: bool,
    /// Most events per store transaction; a larger `emit_batch` is split.
    pub batch_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { enabled: true, batch_size: 500 }
    }
}

struct BusInner {
    routes: Routes,
    register_lock: std::sync::Mutex<()>,
    middleware: Vec<Arc<dyn EventMiddleware>>,
    store: Option<Arc<dyn EventStore>>,
    backend: Arc<dyn AsyncBackend>,
    delivery_env: Arc<DeliveryEnv>,
    source: Option<Cow<'static, str>>,
    max_handlers_per_event: usize,
    batch: BatchConfig,
    validation: Validation,
    registry: Arc<SchemaRegistry>,
    closed: AtomicBool,
}

/// The event bus: middleware, then sync handlers inline, then the store, then async
/// handlers on the backend.
///
/// Cheap to clone (an `Arc`); every clone is the same bus.
///
/// # Order of work in `emit`
///
/// 1. A dynamic event whose name belongs to a `#[derive(Event)]` type must read as that
///    type ([`Error::Validation`] otherwise).
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
            .field("handlers", &self.inner.routes.latest().handlers.len())
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

#[derive(Clone, Copy)]
enum Phase {
    /// Sync handlers inline, async ones on the backend.
    Emit,
    /// Every handler inline.
    AllInline,
}

impl EventBus {
    /// A bus with no handlers, no store and the default worker pool (10 workers, queue
    /// of 1000). Register handlers with [`EventBus::on`] and [`EventBus::subscribe`].
    pub fn new() -> Self {
        Self::with_backend(WorkerPool::default())
    }

    /// A bus whose async handlers go to `backend` (the seed's `NewEventBusWithBackend`).
    pub fn with_backend(backend: impl AsyncBackend) -> Self {
        crate::envelope::warm_clock();
        let stats = Arc::new(Stats::default());
        Self {
            inner: Arc::new(BusInner {
                routes: Routes::new(RouteTable::default()),
                register_lock: std::sync::Mutex::new(()),
                middleware: Vec::new(),
                store: None,
                backend: Arc::new(backend),
                delivery_env: Arc::new(DeliveryEnv {
                    deps: Arc::new(Dependencies::default()),
                    default_retry: RetryPolicy::default(),
                    on_failure: None,
                    track_cause: false,
                    stats,
                }),
                source: None,
                max_handlers_per_event: 100,
                batch: BatchConfig::default(),
                validation: Validation::default(),
                registry: default_registry(),
                closed: AtomicBool::new(false),
            }),
        }
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
        self.inner.routes.latest().handlers.clone()
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
        let _guard = self.inner.register_lock.lock().map_err(|_| Error::Config("handler registry poisoned".into()))?;
        let current = self.inner.routes.latest();
        let mut handlers = current.handlers.clone();
        check_new_handler(&handlers, &handler, &self.inner.delivery_env.deps, self.inner.max_handlers_per_event)?;
        handlers.push(handler);
        self.inner.routes.replace(RouteTable::rebuild(handlers, &self.inner.delivery_env));
        Ok(())
    }

    /// Removes the handler named `name`; returns whether there was one. Emits that start
    /// after this returns do not run it. A handler that was registered when the bus
    /// routed its first event stays in memory, never called, until the bus is dropped: the
    /// bus keeps that first table of handlers for its fast path.
    pub fn unregister(&self, name: &str) -> bool {
        let Ok(_guard) = self.inner.register_lock.lock() else { return false };
        let current = self.inner.routes.latest();
        let handlers: Vec<Handler> = current.handlers.iter().filter(|h| h.name() != name).cloned().collect();
        let removed = handlers.len() != current.handlers.len();
        if removed {
            self.inner.routes.replace(RouteTable::rebuild(handlers, &self.inner.delivery_env));
        }
        removed
    }

    /// Registers a sync handler of the events named `event_type`, as in the seed:
    ///
    /// ```
    /// # use better_auth_events_runtime::{EventBus, Event, HandlerError};
    /// # async fn run() -> Result<(), better_auth_events_runtime::Error> {
    /// let bus = EventBus::new();
    /// bus.on("user.created", async |event: &Event| {
    ///     println!("User created: {:?}", event.data);
    ///     Ok::<(), HandlerError>(())
    /// }).await?;
    /// # Ok(()) }
    /// ```
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

    /// Emits an event: a typed event, an `Envelope<T>` or a dynamic [`Event`].
    /// See the type's documentation for the order of work.
    ///
    /// The work happens when the returned future is awaited. A typed event gets its
    /// envelope (id, time) then; an envelope keeps the id and time it was made with.
    pub fn emit<E: IntoEnvelope>(&self, event: E) -> impl Future<Output = Result<EmitReceipt>> + Send + '_ {
        // Not an `async fn`: the future is then the dispatch's own, not one more layer that
        // also keeps the event (smaller to build and move on every emit).
        event.dispatch(self, Dispatch { phase: Phase::Emit, held: None })
    }

    /// Emits an event running every handler inline, async ones included, and returns the
    /// first error of any (seed 002's `EmitSync`).
    pub fn emit_sync<E: IntoEnvelope>(&self, event: E) -> impl Future<Output = Result<EmitReceipt>> + Send + '_ {
        event.dispatch(self, Dispatch { phase: Phase::AllInline, held: None })
    }

    /// Emits several events of one type. Each goes through validation, middleware and
    /// sync handlers in turn; the first error stops the batch before anything is stored.
    /// The survivors are then appended to the store in transactions of at most
    /// `batch_size` events (one by one when batching is off), then their async
    /// deliveries are handed to the backend.
    pub async fn emit_batch<E: IntoEnvelope>(&self, events: impl IntoIterator<Item = E>) -> Result<Vec<EmitReceipt>> {
        // The events past their inline part, each with its async route and its receipt's index.
        let mut held = Vec::new();
        let mut indices = Vec::new();
        let mut receipts = Vec::new();
        for event in events {
            let before = held.len();
            let receipt = event.dispatch(self, Dispatch { phase: Phase::Emit, held: Some(&mut held) }).await?;
            if held.len() > before {
                indices.push(receipts.len());
            }
            receipts.push(receipt);
        }
        if let Some(store) = &self.inner.store {
            let chunk = if self.inner.batch.enabled { self.inner.batch.batch_size.max(1) } else { 1 };
            for (group, group_indices) in held.chunks(chunk).zip(indices.chunks(chunk)) {
                let refs: Vec<&Envelope<dyn EventData>> =
                    group.iter().map(|(env, _)| env as &Envelope<dyn EventData>).collect();
                let outcomes = store.append_batch(&refs).await?;
                for (index, outcome) in group_indices.iter().zip(outcomes) {
                    receipts[*index].position = Some(outcome.position());
                }
            }
        }
        for ((env, route), index) in held.into_iter().zip(indices) {
            if let Some(route) = route {
                let (n, sent) = self.publish_async(env, route)?;
                if let Some(sent) = sent {
                    sent.await?;
                }
                receipts[index].async_deliveries = n;
            }
        }
        Ok(receipts)
    }

    /// Stops the bus: later emits fail with [`Error::Closed`]; async deliveries in flight
    /// get until `deadline` to finish; the report lists those that did not.
    pub async fn shutdown(&self, deadline: Duration) -> Result<ShutdownReport> {
        self.inner.closed.store(true, Ordering::Release);
        (*self.inner.backend).close(deadline).await
    }

    /// Whether [`EventBus::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The emit of an event whose envelope is made in place, in the emit's future, when
    /// it first runs. Building it before and moving it into the future measured about a
    /// tenth slower, for an emit to one handler.
    #[allow(clippy::manual_async_fn, reason = "an `async fn` would store the event twice")]
    pub(crate) fn dispatch_event<'a, E: IntoEnvelope>(
        &'a self,
        event: E,
        how: Dispatch<'a, E::Data>,
    ) -> impl EmitFuture<'a> {
        async move {
            let mut env = event.into_envelope();
            dispatch_body!(self, env, how, E::Data)
        }
    }

    /// The emit of an envelope made by the caller, used in place.
    #[allow(clippy::manual_async_fn, reason = "an `async fn` would store the envelope twice")]
    pub(crate) fn dispatch_envelope<'a, T: EventData>(
        &'a self,
        mut env: Envelope<T>,
        how: Dispatch<'a, T>,
    ) -> impl EmitFuture<'a> {
        async move { dispatch_body!(self, env, how, T) }
    }

    /// Runs `handlers` inline on `env`, in order, converting the payload for handlers that
    /// take another type (once per type). `on_result` sees each outcome; its error stops the
    /// run and is returned. Returns how many handlers succeeded.
    pub(crate) async fn run_handlers<'h>(
        &self,
        env: &Envelope<dyn EventData>,
        handlers: impl Iterator<Item = &'h Handler>,
        on_result: impl FnMut(&Handler, std::result::Result<(), crate::HandlerError>) -> Result<()>,
    ) -> Result<usize> {
        run_handlers!(self, env, payload_type(env), handlers, on_result)
    }

    /// The handlers registered for `event_type`: sync ones then async ones, each in run order.
    pub(crate) fn route_for(&self, event_type: &str) -> Option<Arc<Route>> {
        self.inner.routes.latest().routes.get(event_type).cloned()
    }

    /// A handler as `run_handlers!` calls it outside its usual path: it takes another
    /// payload type (converted once per type into `conversions`), has a timeout, or runs
    /// under a middleware that reads the cause.
    async fn invoke_general(
        &self,
        h: &Handler,
        env: &Envelope<dyn EventData>,
        payload: Option<TypeId>,
        ctx: &HandlerContext,
        conversions: &mut Option<Box<Conversions>>,
    ) -> std::result::Result<(), crate::HandlerError> {
        let converted =
            if h.inner.payload_type == payload { None } else { Some(conversions.get_or_insert_default().get(h, env)?) };
        let env = converted.as_ref().map_or(env, |c| &c.env);
        if self.inner.delivery_env.track_cause {
            // Boxed: only buses with a middleware that reads the cause pay for its state.
            Box::pin(with_cause(env, h.invoke(env, ctx))).await
        } else {
            h.invoke(env, ctx).await
        }
    }

    /// Hands the async deliveries of `env` to the backend: the deliveries are made here, at
    /// once, and a single one is handed over at once when the backend can take it without
    /// waiting ([`AsyncBackend::try_publish`]). Otherwise the returned future is the
    /// backend's own (already boxed), so awaiting it adds nothing to the caller's state.
    /// Returns how many deliveries there are.
    fn publish_async<T: EventData>(
        &self,
        env: Envelope<T>,
        route: Arc<Route>,
    ) -> Result<(usize, Option<BoxFuture<'_, Result<()>>>)> {
        let shared: Arc<SharedEvent> = SharedEvent::new(env);
        let payload = payload_of::<T>();
        let mut conversions = Conversions::default();
        // A delivery holds the route (which holds its handler): the last one takes over the
        // emit's own reference, so the usual single delivery touches no reference count.
        let mut delivery = |index: usize, route: Arc<Route>| -> Result<Delivery> {
            let h = &route.asynchronous[index].handler;
            let event = if h.inner.payload_type == payload {
                Arc::clone(&shared)
            } else {
                conversions.get(h, &shared.env).map_err(|source| Error::Handler {
                    handler: h.inner.name.clone(),
                    event_type: shared.env.event_type.to_string(),
                    source,
                })?
            };
            Ok(Delivery { event, route, index })
        };
        let backend = &*self.inner.backend;
        let n = route.asynchronous.len();
        let sent = if n == 1 {
            // The usual case, one async handler: no list to build, and no future if the
            // backend takes it at once.
            backend.try_publish(delivery(0, route)?)?.map(|d| backend.publish(d))
        } else {
            let mut deliveries = Vec::with_capacity(n);
            for index in 0..n.saturating_sub(1) {
                deliveries.push(delivery(index, Arc::clone(&route))?);
            }
            if n > 0 {
                deliveries.push(delivery(n - 1, route)?);
            }
            Some(backend.publish_all(deliveries))
        };
        Ok((n, sent))
    }
}

/// An event of `emit_batch` past its inline handlers, with the route of its async
/// handlers if it has any: stored and handed over once the whole batch has passed.
type Held<T> = (Envelope<T>, Option<Arc<Route>>);

/// Gives the closure passed to `run_handlers!` its argument types.
fn on_result_fn<F>(f: F) -> F
where
    F: FnMut(&Handler, std::result::Result<(), crate::HandlerError>) -> Result<()>,
{
    f
}

/// The payload type `env` carries, as handlers name theirs (`HandlerInner::payload_type`):
/// the typed struct's `TypeId`, or `None` for a dynamic payload.
fn payload_type(env: &Envelope<dyn EventData>) -> Option<TypeId> {
    if env.data.is_dynamic() { None } else { Some((&env.data as &dyn std::any::Any).type_id()) }
}

/// [`payload_type`] of an envelope whose payload is a `T`, known when compiling.
fn payload_of<T: EventData>() -> Option<TypeId> {
    if TypeId::of::<T>() == TypeId::of::<serde_json::Value>() { None } else { Some(TypeId::of::<T>()) }
}

/// The other representations of one event that some handlers need, made once per emit.
#[derive(Default)]
struct Conversions {
    /// Boxed: rarely needed, and it would make every emit's future larger.
    dynamic: Option<Box<Event>>,
    typed: Vec<(Option<TypeId>, Arc<SharedEvent>)>,
}

impl Conversions {
    fn get(
        &mut self,
        h: &Handler,
        env: &Envelope<dyn EventData>,
    ) -> std::result::Result<Arc<SharedEvent>, crate::HandlerError> {
        let want = h.inner.payload_type;
        if let Some((_, done)) = self.typed.iter().find(|(t, _)| *t == want) {
            return Ok(Arc::clone(done));
        }
        let dynamic = match &mut self.dynamic {
            Some(d) => &**d,
            None => {
                let d = env.to_dynamic().map_err(|e| crate::HandlerError::EventMismatch {
                    event_type: env.event_type.to_string(),
                    expected: "serde_json::Value",
                    reason: crate::ErrorChain(&e).to_string(),
                })?;
                &**self.dynamic.insert(Box::new(d))
            }
        };
        let converted = h.inner.call.convert(dynamic)?;
        self.typed.push((want, Arc::clone(&converted)));
        Ok(converted)
    }
}

/// Checks a dynamic event against the registry; on success it carries the version it was
/// checked against.
fn validate_dynamic<T: EventData>(
    registry: &SchemaRegistry,
    validation: Validation,
    env: &mut Envelope<T>,
) -> Result<()> {
    if validation.mode == ValidationMode::Off {
        return Ok(());
    }
    if !registry.contains(env.event_type.as_str()) {
        if validation.reject_unknown {
            return Err(Error::Validation {
                event_type: env.event_type.to_string(),
                message:
                    "unknown event type: no schema is registered under this name, and the bus rejects unknown events"
                        .into(),
            });
        }
        return Ok(());
    }
    let result = registry.schema_for(env).and_then(|schema| {
        schema.validate_value_of(env)?;
        Ok(schema.version.to_string())
    });
    match result {
        Ok(version) => {
            if env.version.is_none() {
                env.version = Some(Cow::Owned(version));
            }
            Ok(())
        }
        Err(e) if validation.mode == ValidationMode::Lenient => {
            tracing::warn!(target: "better_auth_events", event_id = %env.id, "invalid dynamic event let through (lenient validation): {}", crate::ErrorChain(&e));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The registry of every `#[derive(Event)]` type, built once per process.
fn default_registry() -> Arc<SchemaRegistry> {
    static DEFAULT: std::sync::OnceLock<std::result::Result<Arc<SchemaRegistry>, String>> = std::sync::OnceLock::new();
    match DEFAULT.get_or_init(|| {
        SchemaRegistry::from_registered_events().map(Arc::new).map_err(|e| crate::ErrorChain(&e).to_string())
    }) {
        Ok(r) => Arc::clone(r),
        Err(e) => {
            tracing::error!(target: "better_auth_events", "the schemas of the derived events conflict, so dynamic events are not validated: {e}");
            Arc::new(SchemaRegistry::new())
        }
    }
}

/// How strictly dynamic events are checked against the schema registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ValidationMode {
    /// An invalid event is an [`Error::Validation`] (the default).
    #[default]
    Strict,
    /// An invalid event is logged and let through.
    Lenient,
    /// Dynamic events are not checked.
    Off,
}

/// The bus's validation settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Validation {
    mode: ValidationMode,
    reject_unknown: bool,
}

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

/// Builds an [`EventBus`].
pub struct EventBusBuilder {
    handlers: Vec<Handler>,
    middleware: Vec<Arc<dyn EventMiddleware>>,
    store: Option<Arc<dyn EventStore>>,
    backend: Option<Arc<dyn AsyncBackend>>,
    pool: WorkerPoolConfig,
    pool_configured: bool,
    deps: Dependencies,
    source: Option<Cow<'static, str>>,
    max_handlers_per_event: usize,
    batch: BatchConfig,
    validation: Validation,
    registry: Option<SchemaRegistry>,
    default_retry: RetryPolicy,
    on_failure: Option<FailureHook>,
}

impl Default for EventBusBuilder {
    fn default() -> Self {
        Self {
            handlers: Vec::new(),
            middleware: Vec::new(),
            store: None,
            backend: None,
            pool: WorkerPoolConfig::default(),
            pool_configured: false,
            deps: Dependencies::default(),
            source: None,
            max_handlers_per_event: 100,
            batch: BatchConfig::default(),
            validation: Validation::default(),
            registry: None,
            default_retry: RetryPolicy::default(),
            on_failure: None,
        }
    }
}

impl std::fmt::Debug for EventBusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBusBuilder")
            .field("handlers", &self.handlers.len())
            .field("middleware", &self.middleware.len())
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl EventBusBuilder {
    /// Sets the event store: `emit` returns once the event is in it.
    pub fn store(mut self, store: impl EventStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Sets a store shared with other code (to query it later).
    pub fn store_arc(mut self, store: Arc<dyn EventStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The seed's name for [`EventBusBuilder::store`].
    pub fn with_store(self, store: impl EventStore) -> Self {
        self.store(store)
    }

    /// Appends a middleware to the pipeline.
    pub fn middleware(mut self, middleware: impl EventMiddleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// The seed's name for [`EventBusBuilder::middleware`].
    pub fn with_middleware(self, middleware: impl EventMiddleware) -> Self {
        self.middleware(middleware)
    }

    /// Adds one handler.
    pub fn handler(mut self, handler: Handler) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Adds handlers, typically `registered_handlers()`.
    pub fn handlers(mut self, handlers: impl IntoIterator<Item = Handler>) -> Self {
        self.handlers.extend(handlers);
        self
    }

    /// Registers a shared dependency, handed to handlers that take `Dep<T>`.
    pub fn dependency<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.deps.insert(value);
        self
    }

    /// Registers a shared dependency already in an `Arc`.
    pub fn dependency_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.deps.insert_arc(value);
        self
    }

    /// Sends async handlers to `backend` instead of the default worker pool.
    pub fn backend(mut self, backend: impl AsyncBackend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// Workers of the default pool (default 10).
    pub fn workers(mut self, n: usize) -> Self {
        self.pool.workers = n;
        self.pool_configured = true;
        self
    }

    /// Queue size of the default pool (default 1000).
    pub fn queue_size(mut self, n: usize) -> Self {
        self.pool.queue_size = n;
        self.pool_configured = true;
        self
    }

    /// The seed's name for [`EventBusBuilder::queue_size`].
    pub fn buffer_size(self, n: usize) -> Self {
        self.queue_size(n)
    }

    /// What a full queue does to the emitter (default: wait).
    pub fn backpressure(mut self, policy: BackpressurePolicy) -> Self {
        self.pool.backpressure = policy;
        self.pool_configured = true;
        self
    }

    /// Most handlers one event name may have (default 100).
    pub fn max_handlers_per_event(mut self, n: usize) -> Self {
        self.max_handlers_per_event = n;
        self
    }

    /// Whether `emit_batch` appends to the store in batches (default on).
    pub fn enable_batching(mut self, on: bool) -> Self {
        self.batch.enabled = on;
        self
    }

    /// Most events per store transaction in `emit_batch` (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch.batch_size = n;
        self
    }

    /// The CloudEvents `source` of events that set none (default `/better-auth-events`).
    pub fn source(mut self, source: impl Into<Cow<'static, str>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether dynamic events are validated against the schema registry (default on):
    /// `false` is [`ValidationMode::Off`], `true` [`ValidationMode::Strict`].
    pub fn validate_dynamic(mut self, on: bool) -> Self {
        self.validation.mode = if on { ValidationMode::Strict } else { ValidationMode::Off };
        self
    }

    /// How strictly dynamic events are validated (default [`ValidationMode::Strict`]).
    pub fn validation(mut self, mode: ValidationMode) -> Self {
        self.validation.mode = mode;
        self
    }

    /// Whether a dynamic event whose name has no schema is rejected (default: let through).
    pub fn reject_unknown_events(mut self, reject: bool) -> Self {
        self.validation.reject_unknown = reject;
        self
    }

    /// The schema registry dynamic events are validated against. Default: every
    /// `#[derive(Event)]` type of the program; a registry given here replaces it (call
    /// [`SchemaRegistry::register_derived`] on it to keep them).
    pub fn schema_registry(mut self, registry: SchemaRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The retry policy of async handlers that declare none (default: 3 attempts,
    /// exponential from 100 ms, jittered).
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_retry = policy;
        self
    }

    /// Called for every async delivery that failed its last attempt.
    pub fn on_failure(mut self, hook: impl Fn(&DeliveryFailure) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Checks the configuration and builds the bus.
    ///
    /// Fails on duplicate handler names, a handler's missing dependency, more handlers per
    /// event than allowed, a zero worker count, queue or batch size, and pool settings
    /// given together with another backend.
    pub async fn build(self) -> Result<EventBus> {
        crate::envelope::warm_clock();
        if self.pool.workers == 0 {
            return Err(Error::Config("`workers` must be at least 1".into()));
        }
        if self.pool.queue_size == 0 {
            return Err(Error::Config("`queue_size` must be at least 1".into()));
        }
        if self.batch.batch_size == 0 {
            return Err(Error::Config("`batch_size` must be at least 1".into()));
        }
        if self.max_handlers_per_event == 0 {
            return Err(Error::Config("`max_handlers_per_event` must be at least 1".into()));
        }
        let backend: Arc<dyn AsyncBackend> = match self.backend {
            Some(b) if self.pool_configured => {
                return Err(Error::Config(format!(
                    "`workers`, `queue_size` and `backpressure` configure the default worker pool, but backend `{}` was set; configure that backend instead",
                    b.name()
                )));
            }
            Some(b) => b,
            None => Arc::new(WorkerPool::with_config(self.pool)),
        };
        let mut handlers: Vec<Handler> = Vec::with_capacity(self.handlers.len());
        for h in self.handlers {
            check_new_handler(&handlers, &h, &self.deps, self.max_handlers_per_event)?;
            handlers.push(h);
        }
        let track_cause = self.middleware.iter().any(|m| m.needs_cause());
        let registry = match self.registry {
            Some(r) => Arc::new(r),
            None => Arc::new(SchemaRegistry::from_registered_events()?),
        };
        let delivery_env = Arc::new(DeliveryEnv {
            deps: Arc::new(self.deps),
            default_retry: self.default_retry,
            on_failure: self.on_failure,
            track_cause,
            stats: Arc::new(Stats::default()),
        });
        Ok(EventBus {
            inner: Arc::new(BusInner {
                routes: Routes::new(RouteTable::rebuild(handlers, &delivery_env)),
                register_lock: std::sync::Mutex::new(()),
                middleware: self.middleware,
                store: self.store,
                backend,
                delivery_env,
                source: self.source,
                max_handlers_per_event: self.max_handlers_per_event,
                batch: self.batch,
                validation: self.validation,
                registry,
                closed: AtomicBool::new(false),
            }),
        })
    }
}
