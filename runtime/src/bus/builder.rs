//! [`EventBusBuilder`]: the configuration of a bus, checked when it is built.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::validation::{Validation, ValidationMode, default_registry};
use super::{BusInner, EventBus, check_new_handler};
use crate::backend::{AsyncBackend, BackpressurePolicy, WorkerPool, WorkerPoolConfig};
use crate::delivery::{DeliveryEnv, DeliveryFailure, FailureHook, Stats};
use crate::error::{Error, Result};
use crate::handler::{Dependencies, Handler, RetryPolicy};
use crate::middleware::EventMiddleware;
use crate::outbox::Outbox;
use crate::route::RouteTable;
use crate::schema::SchemaRegistry;
use crate::store::EventStore;

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
    delivery_lease: Duration,
    outbox_poll: Duration,
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
            delivery_lease: crate::outbox::DEFAULT_LEASE,
            outbox_poll: crate::outbox::DEFAULT_POLL,
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

    /// Publishes every event to `broker`, once, for the [`crate::Worker`]s subscribed to
    /// it (in this process or others) to run the async handlers: the same as
    /// `.backend(BrokerBackend::new(broker))`.
    pub fn broker(self, broker: impl crate::broker::Broker) -> Self {
        self.backend(crate::broker::BrokerBackend::new(broker))
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

    /// Whether dynamic events with the name of a built-in authentication event
    /// (`user.created`, `login.before`, …) are validated against its schema (default off).
    ///
    /// Off by default so that the seed's `Event::new("user.created")`, with a partial
    /// payload or none, can be emitted; turn it on to hold dynamic events of those names
    /// to the fields of `better_auth_events::auth`.
    pub fn validate_built_in_events(mut self, on: bool) -> Self {
        self.validation.built_in = on;
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

    /// How long a process holds an async delivery it runs before another process (or the
    /// next start of this one) may take it over (default 60 s). With a store that keeps an
    /// outbox, a delivery whose process died runs again once its lease ends; a handler
    /// attempt that runs longer than the lease may run twice. Retries do not count against
    /// it: a delivery in backoff waits in the store, unleased.
    pub fn delivery_lease(mut self, lease: Duration) -> Self {
        self.delivery_lease = lease.max(Duration::from_millis(10));
        self
    }

    /// How often the bus looks in its store's outbox for deliveries nobody runs: those
    /// another process left when it died, redriven dead letters, retries falling due
    /// (default 1 s; a retry that falls due sooner wakes it sooner).
    pub fn outbox_poll_interval(mut self, every: Duration) -> Self {
        self.outbox_poll = every.max(Duration::from_millis(1));
        self
    }

    /// Builds the bus, as the seed writes it: `EventBus::builder().with_store(store).build()`.
    ///
    /// It does not fail: a configuration that fails its checks (see
    /// [`EventBusBuilder::try_build`]) gives a bus whose every emit and registration returns
    /// the error ([`Error::Config`]) and logs it once here. Use `try_build().await?` to get
    /// the error at start-up instead.
    pub fn build(self) -> EventBus {
        self.assemble().unwrap_or_else(|e| {
            tracing::error!(target: "better_auth_events", "the event bus configuration is invalid, every emit will fail: {e}");
            EventBus::broken(e)
        })
    }

    /// Checks the configuration and builds the bus.
    ///
    /// Fails on duplicate handler names, a handler's missing dependency, more handlers per
    /// event than allowed, a zero worker count, queue or batch size, pool settings given
    /// together with another backend, and derived event schemas that conflict.
    pub async fn try_build(self) -> Result<EventBus> {
        self.assemble()
    }

    fn assemble(mut self) -> Result<EventBus> {
        crate::clock::warm_clock();
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
        let backend: Arc<dyn AsyncBackend> = match self.backend.take() {
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
        for h in std::mem::take(&mut self.handlers) {
            check_new_handler(&handlers, &h, &self.deps, self.max_handlers_per_event)?;
            handlers.push(h);
        }
        let registry = match self.registry.take() {
            Some(r) => Arc::new(r),
            None => default_registry()?,
        };
        Ok(self.into_bus(backend, handlers, registry, None))
    }

    /// The bus of this configuration, checked already, with `handlers` on `backend`.
    fn into_bus(
        self,
        backend: Arc<dyn AsyncBackend>,
        handlers: Vec<Handler>,
        registry: Arc<SchemaRegistry>,
        broken: Option<String>,
    ) -> EventBus {
        let outbox = match &self.store {
            Some(store) if broken.is_none() => Outbox::of(store, self.delivery_lease, self.outbox_poll).map(Arc::new),
            _ => None,
        };
        let delivery_env = Arc::new(DeliveryEnv {
            deps: Arc::new(self.deps),
            default_retry: self.default_retry,
            on_failure: self.on_failure,
            track_cause: self.middleware.iter().any(|m| m.needs_cause()),
            stats: Arc::new(Stats::default()),
            outbox,
        });
        let bus = EventBus {
            inner: Arc::new(BusInner {
                routes: ArcSwap::from_pointee(RouteTable::new(handlers, &delivery_env)),
                register_lock: std::sync::Mutex::new(()),
                middleware: self.middleware,
                store: self.store,
                broker: backend.as_broker(),
                backend,
                delivery_env,
                source: self.source,
                max_handlers_per_event: self.max_handlers_per_event,
                batch: self.batch,
                validation: self.validation,
                registry,
                closed: AtomicBool::new(false),
                broken,
                pump: std::sync::Mutex::new(None),
            }),
        };
        bus.start_outbox();
        bus
    }
}

impl EventBus {
    /// A bus that refuses every emit and registration with `error`.
    fn broken(error: Error) -> Self {
        EventBusBuilder::default().into_bus(
            Arc::new(WorkerPool::default()),
            Vec::new(),
            Arc::new(SchemaRegistry::new()),
            Some(error.to_string()),
        )
    }
}
