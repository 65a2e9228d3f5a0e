//! Handlers: the erased [`Handler`] the bus runs, the [`HandlerContext`] and [`Dep`]
//! arguments, [`HandlerOptions`], [`RetryPolicy`], and the program-wide registrations made
//! by `#[handler]`.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::backend::SharedEvent;
use crate::envelope::{Envelope, Event};
use crate::error::{BoxError, HandlerError};
use crate::event::{EventData, TypedEvent};

/// The future a handler returns once erased.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// Whether a handler runs inside `emit` or on the async backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HandlerMode {
    /// Runs inline inside `emit`, in order; its error is returned to the emitter.
    #[default]
    Sync,
    /// Handed to the async backend; its failures go to retries and never to the emitter.
    Async,
}

/// How the delay between retries grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// `base`, `2 × base`, `3 × base`, …
    Linear,
    /// `base`, `2 × base`, `4 × base`, …
    Exponential,
}

impl std::str::FromStr for Backoff {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" | "constant" => Ok(Self::Fixed),
            "linear" => Ok(Self::Linear),
            "exponential" => Ok(Self::Exponential),
            other => Err(format!("unknown backoff `{other}`; expected `fixed`, `linear` or `exponential`")),
        }
    }
}

/// How often and how patiently a failed async delivery is retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Whether a random amount (below the delay itself, which is already capped at
    /// `max_delay`) is added to each delay, so retries of many events spread out.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::Exponential,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Sets the number of attempts (the first included).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the first delay.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Sets the longest delay.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// The delays before each retry, in order (`max_attempts - 1` of them).
    ///
    /// The exponential and fixed schedules come from the `backon` crate. Each delay is
    /// first capped at [`max_delay`](Self::max_delay); jitter then adds a random amount
    /// below that delay (so a jittered delay lies in `[d, 2d)`), and every delay is
    /// rounded to whole microseconds so float rounding never shows up as `200.000003ms`.
    pub fn delays(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        use backon::BackoffBuilder;
        let retries = self.max_attempts.saturating_sub(1) as usize;
        let (base, max, jitter) = (self.base, self.max_delay, self.jitter);
        let steps: Box<dyn Iterator<Item = Duration> + Send> = match self.backoff {
            Backoff::Fixed => {
                Box::new(backon::ConstantBuilder::default().with_delay(base.min(max)).with_max_times(retries).build())
            }
            Backoff::Exponential => Box::new(
                backon::ExponentialBuilder::default()
                    .with_min_delay(base.min(max))
                    .with_max_delay(max)
                    .with_factor(2.0)
                    .with_max_times(retries)
                    .build(),
            ),
            // backon has no linear schedule.
            Backoff::Linear => Box::new((1..=retries as u32).map(move |i| base.saturating_mul(i).min(max))),
        };
        Box::new(steps.map(move |d| {
            let d = if jitter { d.saturating_add(d.mul_f64(fastrand::f64())) } else { d };
            Duration::from_micros((d.as_nanos() as f64 / 1000.0).round() as u64)
        }))
    }
}

/// Options of a handler: name, mode, order, timeout and retry policy.
#[derive(Clone, Debug, Default)]
pub struct HandlerOptions {
    /// The handler's name, unique on a bus; used in errors, logs and delivery ids.
    pub name: Option<Cow<'static, str>>,
    /// Sync (inline) or async (backend).
    pub mode: HandlerMode,
    /// Higher runs first; equal priorities run in registration order.
    pub priority: i32,
    /// Longest a single attempt may take.
    pub timeout: Option<Duration>,
    /// Retry policy of async deliveries (none: the bus default).
    pub retry: Option<RetryPolicy>,
}

impl HandlerOptions {
    /// Default options: a sync handler with priority 0, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Options of an async handler.
    pub fn asynchronous() -> Self {
        Self { mode: HandlerMode::Async, ..Self::default() }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: HandlerMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the priority (higher first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the timeout of one attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

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
}

impl HandlerContext {
    /// A context for calling a handler outside a bus (tests, tools).
    pub fn new(event_id: Uuid, handler: impl Into<Cow<'static, str>>, deps: Arc<Dependencies>) -> Self {
        Self { event_id, handler: handler.into(), attempt: 1, mode: HandlerMode::Sync, replay: false, deps: Some(deps) }
    }

    /// The id of the event being handled.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }

    /// The name of the handler running.
    pub fn handler_name(&self) -> &str {
        &self.handler
    }

    /// The stable id of this (event, handler) delivery: the same across retries and
    /// redeliveries, so handlers with side effects can use it as an idempotency key.
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

/// The calling convention of every handler once erased.
pub(crate) trait ErasedCall: Send + Sync + 'static {
    /// Runs the handler on an envelope whose payload is the handler's own type.
    fn call<'a>(&'a self, env: &'a Envelope<dyn EventData>, ctx: &'a HandlerContext) -> HandlerFuture<'a>;

    /// The payload type the handler takes, `None` for dynamic (JSON) handlers.
    fn payload_type(&self) -> Option<TypeId>;

    /// Reads a dynamic event as the handler's payload type.
    fn convert(&self, event: &Event) -> Result<Arc<SharedEvent>, HandlerError>;
}

struct TypedFn<T: TypedEvent> {
    f: for<'a> fn(&'a Envelope<T>, &'a HandlerContext) -> HandlerFuture<'a>,
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
            None => Box::pin(std::future::ready(Err(HandlerError::EventMismatch {
                event_type: env.event_type.to_string(),
                expected: std::any::type_name::<T>(),
                reason: format!("the payload is a `{}`", env.data.type_name()),
            }))),
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
/// The closure is cloned for each call (an `async` closure that uses captured state can
/// only be called by value), so capture shared state in an `Arc`, not large values.
pub trait TypedHandlerFn<'a, T: 'a>: Send + Sync + 'static {
    /// The future it returns.
    type Fut: Future<Output = Self::Output> + Send + 'a;
    /// What the future yields.
    type Output: IntoHandlerResult;
    /// Calls the closure.
    fn call(&self, env: &'a Envelope<T>) -> Self::Fut;
}

impl<'a, T: 'a, F, Fut> TypedHandlerFn<'a, T> for F
where
    F: FnOnce(&'a Envelope<T>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'a,
    Fut::Output: IntoHandlerResult,
{
    type Fut = Fut;
    type Output = Fut::Output;

    fn call(&self, env: &'a Envelope<T>) -> Fut {
        (self.clone())(env)
    }
}

/// A closure over `&Event` (dynamic `on`): `async |event: &Event| { .. }`.
///
/// Write it as an `async` closure: a plain closure returning an `async` block cannot
/// borrow the event in stable Rust. The closure is cloned for each call, so capture
/// shared state in an `Arc`.
pub trait DynHandlerFn<'a>: Send + Sync + 'static {
    /// The future it returns.
    type Fut: Future<Output = Self::Output> + Send + 'a;
    /// What the future yields.
    type Output: IntoHandlerResult;
    /// Calls the closure.
    fn call(&self, event: &'a Event) -> Self::Fut;
}

impl<'a, F, Fut> DynHandlerFn<'a> for F
where
    F: FnOnce(&'a Event) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future + Send + 'a,
    Fut::Output: IntoHandlerResult,
{
    type Fut = Fut;
    type Output = Fut::Output;

    fn call(&self, event: &'a Event) -> Fut {
        (self.clone())(event)
    }
}

struct TypedClosure<T, F> {
    f: F,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: TypedEvent, F: for<'a> TypedHandlerFn<'a, T>> ErasedCall for TypedClosure<T, F> {
    fn call<'a>(&'a self, env: &'a Envelope<dyn EventData>, _ctx: &'a HandlerContext) -> HandlerFuture<'a> {
        match env.downcast_ref::<T>() {
            Some(env) => {
                let fut = self.f.call(env);
                Box::pin(async move { fut.await.into_handler_result() })
            }
            None => Box::pin(std::future::ready(Err(HandlerError::EventMismatch {
                event_type: env.event_type.to_string(),
                expected: std::any::type_name::<T>(),
                reason: format!("the payload is a `{}`", env.data.type_name()),
            }))),
        }
    }

    fn payload_type(&self) -> Option<TypeId> {
        Some(TypeId::of::<T>())
    }

    fn convert(&self, event: &Event) -> Result<Arc<SharedEvent>, HandlerError> {
        convert_to::<T>(event)
    }
}

struct DynClosure<F> {
    f: F,
}

impl<F: for<'a> DynHandlerFn<'a>> ErasedCall for DynClosure<F> {
    fn call<'a>(&'a self, env: &'a Envelope<dyn EventData>, _ctx: &'a HandlerContext) -> HandlerFuture<'a> {
        match env.downcast_ref::<serde_json::Value>() {
            Some(event) => {
                let fut = self.f.call(event);
                Box::pin(async move { fut.await.into_handler_result() })
            }
            None => Box::pin(std::future::ready(Err(HandlerError::EventMismatch {
                event_type: env.event_type.to_string(),
                expected: "serde_json::Value",
                reason: format!("the payload is a `{}`", env.data.type_name()),
            }))),
        }
    }

    fn payload_type(&self) -> Option<TypeId> {
        None
    }

    fn convert(&self, event: &Event) -> Result<Arc<SharedEvent>, HandlerError> {
        Ok(SharedEvent::new(event.clone()))
    }
}

pub(crate) struct HandlerInner {
    pub(crate) name: Cow<'static, str>,
    pub(crate) event_name: Cow<'static, str>,
    pub(crate) mode: HandlerMode,
    pub(crate) priority: i32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) requirements: Vec<DepRequirement>,
    /// Whether the handler reads its context (takes `&HandlerContext`, `HandlerContext` or a
    /// `Dep<T>`): only then does a call's context carry the bus's dependencies.
    pub(crate) uses_context: bool,
    pub(crate) location: Option<&'static str>,
    /// `call.payload_type()`, asked once.
    pub(crate) payload_type: Option<TypeId>,
    pub(crate) call: Box<dyn ErasedCall>,
}

/// A handler ready to be registered on a bus: a `#[handler]` function, a closure given to
/// [`Handler::typed`] or [`Handler::dynamic`], with its options.
#[derive(Clone)]
pub struct Handler {
    pub(crate) inner: Arc<HandlerInner>,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handler")
            .field("name", &self.inner.name)
            .field("event", &self.inner.event_name)
            .field("mode", &self.inner.mode)
            .field("priority", &self.inner.priority)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

static CLOSURE_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn closure_name(options: &HandlerOptions, event: &str) -> Cow<'static, str> {
    options.name.clone().unwrap_or_else(|| {
        let n = CLOSURE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Cow::Owned(format!("{event}#closure-{n}"))
    })
}

impl Handler {
    fn from_parts(
        options: HandlerOptions,
        name: Cow<'static, str>,
        event_name: Cow<'static, str>,
        requirements: Vec<DepRequirement>,
        uses_context: bool,
        location: Option<&'static str>,
        call: Box<dyn ErasedCall>,
    ) -> Self {
        Self {
            inner: Arc::new(HandlerInner {
                name,
                event_name,
                mode: options.mode,
                priority: options.priority,
                timeout: options.timeout,
                retry: options.retry,
                requirements,
                uses_context,
                location,
                payload_type: call.payload_type(),
                call,
            }),
        }
    }

    /// A handler of the typed event `T` from a closure over `&Envelope<T>`:
    /// `Handler::typed(HandlerOptions::new(), async |e: &Envelope<UserCreated>| { .. })`.
    pub fn typed<T: TypedEvent, F: for<'a> TypedHandlerFn<'a, T>>(options: HandlerOptions, f: F) -> Self {
        let name = closure_name(&options, T::NAME);
        let call = Box::new(TypedClosure::<T, F> { f, _t: std::marker::PhantomData });
        Self::from_parts(options, name, Cow::Borrowed(T::NAME), Vec::new(), false, None, call)
    }

    /// A handler of the events named `event_type` from a closure over `&Event`:
    /// `Handler::dynamic("user.created", HandlerOptions::new(), async |e: &Event| { .. })`.
    pub fn dynamic<F: for<'a> DynHandlerFn<'a>>(
        event_type: impl Into<crate::EventType>,
        options: HandlerOptions,
        f: F,
    ) -> Self {
        let event_name: Cow<'static, str> = match event_type.into() {
            crate::EventType::Custom(name) => Cow::Owned(name),
            built_in => Cow::Owned(built_in.as_str().to_owned()),
        };
        let name = closure_name(&options, &event_name);
        Self::from_parts(options, name, event_name, Vec::new(), false, None, Box::new(DynClosure { f }))
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The name of the event it handles.
    pub fn event_name(&self) -> &str {
        &self.inner.event_name
    }

    /// Sync or async.
    pub fn mode(&self) -> HandlerMode {
        self.inner.mode
    }

    /// Its priority (higher first).
    pub fn priority(&self) -> i32 {
        self.inner.priority
    }

    /// Its timeout per attempt.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// Its retry policy, if it has its own.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.inner.retry.as_ref()
    }

    /// The dependencies it needs registered on the bus.
    pub fn requirements(&self) -> &[DepRequirement] {
        &self.inner.requirements
    }

    /// Where a `#[handler]` was defined (`module::path:line`), if known.
    pub fn location(&self) -> Option<&'static str> {
        self.inner.location
    }

    /// Runs the handler once, as the bus would: with its timeout, catching a panic.
    pub async fn invoke(&self, env: &Envelope<dyn EventData>, ctx: &HandlerContext) -> Result<(), HandlerError> {
        let fut = self.call_caught(env, ctx);
        let outcome = match self.inner.timeout {
            // Boxed: a timer is large, and only handlers with a timeout pay for it; the
            // future of every other emit stays small (cheaper to build and move).
            Some(limit) => match Box::pin(tokio::time::timeout(limit, fut)).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(HandlerError::Timeout(limit)),
            },
            None => fut.await,
        };
        caught(outcome)
    }

    /// The handler's own future, catching a panic (read the outcome with [`caught`]):
    /// [`Handler::invoke`] without the timeout. Not an `async fn`, so a caller that awaits
    /// it in its own async block adds no state machine of ours.
    #[inline]
    pub(crate) fn call_caught<'a>(
        &'a self,
        env: &'a Envelope<dyn EventData>,
        ctx: &'a HandlerContext,
    ) -> futures::future::CatchUnwind<std::panic::AssertUnwindSafe<HandlerFuture<'a>>> {
        use futures::FutureExt;
        std::panic::AssertUnwindSafe(self.inner.call.call(env, ctx)).catch_unwind()
    }
}

/// The outcome of a [`Handler::call_caught`] future: a panic is a [`HandlerError::Panicked`]
/// with its message.
#[inline]
pub(crate) fn caught(outcome: std::thread::Result<Result<(), HandlerError>>) -> Result<(), HandlerError> {
    outcome.unwrap_or_else(panicked)
}

/// The error of a handler that panicked.
#[cold]
fn panicked(panic: Box<dyn Any + Send>) -> Result<(), HandlerError> {
    Err(HandlerError::Panicked(panic_message(panic.as_ref())))
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_delays_double_up_to_the_cap() {
        let p = RetryPolicy::default()
            .max_attempts(5)
            .base(Duration::from_millis(100))
            .max_delay(Duration::from_millis(300))
            .jitter(false);
        let d: Vec<_> = p.delays().collect();
        assert_eq!(d, [100, 200, 300, 300].map(Duration::from_millis));
    }

    #[test]
    fn linear_and_fixed_delays() {
        let p = RetryPolicy::default().backoff(Backoff::Linear).max_attempts(4).jitter(false);
        assert_eq!(p.delays().collect::<Vec<_>>(), [100, 200, 300].map(Duration::from_millis));
        let p = RetryPolicy::default().backoff(Backoff::Fixed).max_attempts(3).jitter(false);
        assert_eq!(p.delays().collect::<Vec<_>>(), [100, 100].map(Duration::from_millis));
        assert_eq!(RetryPolicy::none().delays().count(), 0);
    }

    #[test]
    fn jittered_delays_stay_within_bounds() {
        for backoff in [Backoff::Exponential, Backoff::Linear, Backoff::Fixed] {
            let plain = RetryPolicy::default()
                .backoff(backoff)
                .max_attempts(6)
                .base(Duration::from_millis(100))
                .max_delay(Duration::from_millis(250))
                .jitter(false);
            let fixed: Vec<_> = plain.delays().collect();
            assert_eq!(fixed.len(), 5);
            assert!(fixed.iter().all(|d| *d <= Duration::from_millis(250)), "{backoff:?}: {fixed:?}");
            let jittered = plain.clone().jitter(true);
            // Over many draws, every delay stays in [d, 2d) and at least one differs from d.
            let mut spread = false;
            for _ in 0..50 {
                for (d, j) in fixed.iter().zip(jittered.delays()) {
                    assert!(j >= *d && j < *d * 2, "{backoff:?}: {j:?} outside [{d:?}, 2×{d:?})");
                    spread |= j != *d;
                }
            }
            assert!(spread, "{backoff:?}: jitter never changed a delay");
        }
    }

    #[test]
    fn backoff_parses_its_names() {
        assert_eq!("exponential".parse::<Backoff>(), Ok(Backoff::Exponential));
        assert!("quadratic".parse::<Backoff>().unwrap_err().contains("expected `fixed`"));
    }
}
