//! The emit pipeline, one step per function: [`EventBus::admit`] (bus state, source,
//! validation, middleware), [`EventBus::run_inline`] (sync handlers),
//! [`EventBus::append`] (the store) and [`EventBus::hand_over`] (async deliveries).
//! `emit`, `emit_sync` and `emit_batch` are these steps in order.

use std::any::TypeId;
use std::borrow::Cow;
use std::sync::Arc;

use super::validation::validate_dynamic;
use super::{EmitReceipt, EmitStatus, EventBus};
use crate::envelope::{DEFAULT_SOURCE, Envelope, Event, SharedEvent};
use crate::error::{Error, HandlerError, Result};
use crate::event::EventData;
use crate::handler::{Handler, HandlerContext, HandlerMode};
use crate::middleware::Flow;
use crate::route::Route;

/// Which handlers an emit runs inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Sync handlers inline, async ones on the backend (`emit`).
    Emit,
    /// Every handler inline (`emit_sync`).
    AllInline,
}

/// What the inline part of an emit leaves to do.
pub(super) struct Inline {
    /// Inline handlers that succeeded.
    pub(super) handlers_run: usize,
    /// The route whose async handlers get a delivery, if the event has any.
    pub(super) async_route: Option<Arc<Route>>,
}

impl EventBus {
    /// One emit: every step in order.
    pub(super) async fn dispatch<T: EventData>(&self, mut env: Envelope<T>, phase: Phase) -> Result<EmitReceipt> {
        if let Some(dropped) = self.admit(&mut env).await? {
            return Ok(dropped);
        }
        let inline = self.run_inline(&env, phase).await?;
        let mut receipt = EmitReceipt::emitted(&env, inline.handlers_run);
        receipt.position = self.append(&env).await?;
        if let Some(route) = inline.async_route {
            receipt.async_deliveries = self.hand_over(env, route).await?;
        }
        Ok(receipt)
    }

    /// Lets an event in, or not: the bus must be usable, the event gets the bus's source
    /// if it has none, a dynamic event is validated, then the middleware run in order.
    /// Returns the receipt of an event a middleware dropped.
    pub(super) async fn admit(&self, env: &mut Envelope<dyn EventData>) -> Result<Option<EmitReceipt>> {
        self.check_usable()?;
        let inner = &*self.inner;
        if let Some(source) = &inner.source
            && env.source == DEFAULT_SOURCE
        {
            env.source = source.clone();
        }
        if let Some(dynamic) = env.downcast_mut::<serde_json::Value>() {
            validate_dynamic(&inner.registry, inner.validation, dynamic)?;
        }
        for mw in &inner.middleware {
            if let Flow::Drop(reason) = mw.process_envelope(env).await? {
                tracing::debug!(target: "better_auth_events", event_id = %env.id, middleware = mw.name(), %reason, "event dropped");
                return Ok(Some(EmitReceipt {
                    status: EmitStatus::Dropped { middleware: mw.name().to_owned(), reason },
                    ..EmitReceipt::emitted(env, 0)
                }));
            }
        }
        Ok(None)
    }

    /// Runs the event's inline handlers: its sync handlers, and in [`Phase::AllInline`] its
    /// async ones too. The first error stops the emit ([`Error::Handler`]).
    pub(super) async fn run_inline<T: EventData>(&self, env: &Envelope<T>, phase: Phase) -> Result<Inline> {
        let route = self.inner.routes.load().route::<T>(&env.event_type).cloned();
        let Some(route) = route else {
            return Ok(Inline { handlers_run: 0, async_route: None });
        };
        let inline_async = match phase {
            Phase::Emit => 0,
            Phase::AllInline => route.asynchronous.len(),
        };
        let handlers = route.sync.iter().chain(route.async_handlers().take(inline_async));
        let handlers_run = self
            .run_handlers(env, handlers, |h, result| {
                result.map_err(|source| Error::Handler {
                    handler: h.inner.name.clone(),
                    event_type: env.event_type.to_string(),
                    source,
                })
            })
            .await?;
        let async_route = (phase == Phase::Emit && !route.asynchronous.is_empty()).then_some(route);
        Ok(Inline { handlers_run, async_route })
    }

    /// Runs `handlers` inline on `env`, in order, converting the payload for handlers that
    /// take another type (once per type). `on_result` sees each outcome; its error stops the
    /// run and is returned. Returns how many handlers succeeded.
    pub(crate) async fn run_handlers<'h>(
        &self,
        env: &Envelope<dyn EventData>,
        handlers: impl Iterator<Item = &'h Handler>,
        mut on_result: impl FnMut(&Handler, std::result::Result<(), HandlerError>) -> Result<()>,
    ) -> Result<usize> {
        let delivery_env = &self.inner.delivery_env;
        let payload = payload_type(env);
        let mut ctx = HandlerContext {
            event_id: env.id,
            handler: Cow::Borrowed(""),
            attempt: 1,
            mode: HandlerMode::Sync,
            replay: env.metadata.replay,
            deps: None,
        };
        let mut conversions = Conversions::default();
        let mut succeeded = 0;
        for h in handlers {
            if h.inner.uses_context && ctx.deps.is_none() {
                ctx.deps = Some(Arc::clone(&delivery_env.deps));
            }
            ctx.handler.clone_from(&h.inner.name);
            ctx.mode = h.mode();
            let result = match conversions.for_handler(h, env, payload) {
                Ok(converted) => {
                    let env = converted.as_ref().map_or(env, |c| &c.env);
                    if delivery_env.track_cause {
                        crate::cause::with_cause(env, h.invoke(env, &ctx)).await
                    } else {
                        h.invoke(env, &ctx).await
                    }
                }
                Err(e) => Err(e),
            };
            let ok = result.is_ok();
            on_result(h, result)?;
            if ok {
                succeeded += 1;
            }
        }
        Ok(succeeded)
    }

    /// The handlers registered for the events named `name`.
    pub(crate) fn route_for(&self, name: &str) -> Option<Arc<Route>> {
        self.inner.routes.load().by_name(name).cloned()
    }

    /// Appends the event to the store, if the bus has one; returns its position.
    pub(super) async fn append(&self, env: &Envelope<dyn EventData>) -> Result<Option<u64>> {
        match &self.inner.store {
            Some(store) => Ok(Some(store.append(env).await?.position())),
            None => Ok(None),
        }
    }

    /// Hands the event to the async backend: one delivery per async handler of `route`,
    /// all sharing one copy of the event (converted once per payload type for handlers
    /// that take another type). Returns how many deliveries there are.
    pub(super) async fn hand_over<T: EventData>(&self, env: Envelope<T>, route: Arc<Route>) -> Result<usize> {
        let shared: Arc<SharedEvent> = SharedEvent::new(env);
        let payload = payload_type(&shared.env);
        let mut conversions = Conversions::default();
        let mut deliveries = Vec::with_capacity(route.asynchronous.len());
        for target in &route.asynchronous {
            let h = &target.handler;
            let event = match conversions.for_handler(h, &shared.env, payload) {
                Ok(None) => Arc::clone(&shared),
                Ok(Some(converted)) => converted,
                Err(source) => {
                    return Err(Error::Handler {
                        handler: h.inner.name.clone(),
                        event_type: shared.env.event_type.to_string(),
                        source,
                    });
                }
            };
            deliveries.push(crate::delivery::Delivery { event, target: Arc::clone(target) });
        }
        let n = deliveries.len();
        let backend = &*self.inner.backend;
        if n == 1
            && let Some(delivery) = deliveries.pop()
        {
            // The usual case: the backend takes one delivery at once when it can.
            if let Some(delivery) = backend.try_publish(delivery)? {
                backend.publish(delivery).await?;
            }
        } else {
            backend.publish_all(deliveries).await?;
        }
        Ok(n)
    }
}

/// The payload type `env` carries, as handlers name theirs ([`Handler::payload_type`]): the
/// typed struct's `TypeId`, or `None` for a dynamic payload.
fn payload_type(env: &Envelope<dyn EventData>) -> Option<TypeId> {
    if env.data.is_dynamic() { None } else { Some((&env.data as &dyn std::any::Any).type_id()) }
}

/// The other representations of one event that some handlers need, made once per emit.
#[derive(Default)]
struct Conversions {
    dynamic: Option<Event>,
    typed: Vec<(Option<TypeId>, Arc<SharedEvent>)>,
}

impl Conversions {
    /// The event as handler `h` takes it: `None` when `env` (whose payload type is
    /// `payload`) is already that, else the converted event.
    fn for_handler(
        &mut self,
        h: &Handler,
        env: &Envelope<dyn EventData>,
        payload: Option<TypeId>,
    ) -> std::result::Result<Option<Arc<SharedEvent>>, HandlerError> {
        let want = h.payload_type();
        if want == payload {
            return Ok(None);
        }
        if let Some((_, done)) = self.typed.iter().find(|(t, _)| *t == want) {
            return Ok(Some(Arc::clone(done)));
        }
        let dynamic = match &mut self.dynamic {
            Some(d) => d,
            None => self.dynamic.insert(env.to_dynamic().map_err(|e| HandlerError::EventMismatch {
                event_type: env.event_type.to_string(),
                expected: "serde_json::Value",
                reason: e.to_string(),
            })?),
        };
        let converted = h.inner.call.convert(dynamic)?;
        self.typed.push((want, Arc::clone(&converted)));
        Ok(Some(converted))
    }
}
