//! Handlers: the erased [`Handler`] the bus runs, what a handler gets besides the event
//! ([`HandlerContext`], [`Dep`]), its [`HandlerOptions`] and [`RetryPolicy`], the seed's
//! [`EventHandler`] trait, and the program-wide registrations made by `#[handler]`.

mod context;
mod erased;
mod event_handler;
mod options;
mod registry;
mod retry;

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use self::context::{Dep, DepRequirement, Dependencies, FromContext, HandlerContext, IntoHandlerResult};
pub(crate) use self::erased::ErasedCall;
use self::erased::{DynClosure, TypedClosure};
pub use self::erased::{DynHandlerFn, TypedHandlerFn};
pub use self::event_handler::EventHandler;
pub use self::options::{HandlerMode, HandlerOptions};
pub use self::registry::{HandlerRegistration, HandlerSpec, registered_handlers};
pub use self::retry::{Backoff, RetryPolicy};
use crate::envelope::Envelope;
use crate::error::HandlerError;
use crate::event::{EventData, TypedEvent};

/// The future a handler returns once erased.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

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
        let call = Box::new(TypedClosure::<T, F>::new(f));
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

    /// The handler of a `#[handler]` function; called by the code the macro generates.
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
            Box::new(erased::TypedFn::<T> { f }),
        )
    }

    /// A handler of the events named `event_type` from an [`EventHandler`] (the seed's
    /// trait): `Handler::from_event_handler("user.created", HandlerOptions::new(), MyHandler)`.
    pub fn from_event_handler<H: EventHandler>(
        event_type: impl Into<crate::EventType>,
        options: HandlerOptions,
        handler: H,
    ) -> Self {
        let handler = Arc::new(handler);
        Self::dynamic(event_type, options, async move |event: &crate::Event| {
            handler.handle(event).await.map_err(HandlerError::from_error)
        })
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

    /// The payload type it takes: its typed event's `TypeId`, `None` for a dynamic handler.
    pub(crate) fn payload_type(&self) -> Option<TypeId> {
        self.inner.payload_type
    }

    /// Runs the handler once, as the bus would: with its timeout, catching a panic.
    pub async fn invoke(&self, env: &Envelope<dyn EventData>, ctx: &HandlerContext) -> Result<(), HandlerError> {
        let call = self.call_caught(env, ctx);
        let outcome = match self.inner.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| HandlerError::Timeout(limit))?,
            None => call.await,
        };
        caught(outcome)
    }

    /// The handler's own future, with a panic caught (read its outcome with [`caught`]):
    /// [`Handler::invoke`] without the timeout.
    pub(crate) fn call_caught<'a>(
        &'a self,
        env: &'a Envelope<dyn EventData>,
        ctx: &'a HandlerContext,
    ) -> futures::future::CatchUnwind<std::panic::AssertUnwindSafe<HandlerFuture<'a>>> {
        use futures::FutureExt;
        std::panic::AssertUnwindSafe(self.inner.call.call(env, ctx)).catch_unwind()
    }
}

/// The outcome of a [`Handler::call_caught`] future: a panic becomes
/// [`HandlerError::Panicked`] with its message.
pub(crate) fn caught(outcome: std::thread::Result<Result<(), HandlerError>>) -> Result<(), HandlerError> {
    outcome.unwrap_or_else(|panic| Err(HandlerError::Panicked(panic_message(panic.as_ref()))))
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
