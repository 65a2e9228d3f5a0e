//! The emit pipeline, one step per function: [`EventBus::prepare`] (bus state, source,
//! validation), [`EventBus::run_middleware`], [`EventBus::run_inline`] (sync handlers), the
//! store's append, and [`EventBus::hand_over`] (async deliveries). `emit`, `emit_sync`
//! and `emit_batch` are these steps in order.

use std::any::TypeId;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use super::validation::validate_dynamic;
use super::{EmitReceipt, EmitStatus, EventBus, IntoEnvelope};
use futures::future::BoxFuture;

use crate::backend::Room;
use crate::broker::{BrokerBackend, Outgoing};
use crate::delivery::{Delivery, DeliveryTarget};
use crate::envelope::check_attributes;
use crate::envelope::depth::check_event as check_depth;
use crate::envelope::{DEFAULT_SOURCE, Envelope, Event, SharedEvent};
use crate::error::{Error, HandlerError, Result};
use crate::event::EventData;
use crate::handler::{Handler, HandlerContext, HandlerMode, caught};
use crate::middleware::Flow;
use crate::outbox::Outbox;
use crate::route::Route;

/// Which handlers an emit runs inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Sync handlers inline, async ones on the backend (`emit`).
    Emit,
    /// Every handler inline (`emit_sync`).
    AllInline,
}

impl EventBus {
    /// One emit: every step in order. The route table is held, without a reference count,
    /// until the inline handlers have run; only a route with async handlers is cloned out.
    pub(super) async fn dispatch<E: IntoEnvelope>(&self, event: E, phase: Phase) -> Result<EmitReceipt> {
        let mut env = event.into_envelope();
        self.prepare(&mut env)?;
        if !self.inner.middleware.is_empty()
            && let Some(dropped) = self.run_middleware(&mut env).await?
        {
            return Ok(dropped);
        }
        let routes = self.inner.routes.load();
        let route = routes.route::<E::Data>(&env.event_type);
        let handlers_run = match route {
            Some(route) => self.run_inline(&env, route, phase).await?,
            None => 0,
        };
        if phase == Phase::Emit
            && let Some(broker) = &self.inner.broker
        {
            drop(routes);
            return self.emit_to_broker(env, broker, handlers_run).await;
        }
        let async_route = route.filter(|r| phase == Phase::Emit && !r.asynchronous.is_empty()).cloned();
        drop(routes);
        if let (Some(route), Some(outbox)) = (&async_route, &self.inner.delivery_env.outbox) {
            return self.emit_durable(env, route, outbox, handlers_run).await;
        }
        // Room for the async deliveries is taken before the event is stored: an emit refused
        // for want of room (or by a shutdown) has stored nothing.
        let room = match &async_route {
            Some(route) => Some(self.reserve(route.asynchronous.len()).await?),
            None => None,
        };
        let position = match &self.inner.store {
            Some(store) => Some(store.append(&env).await?.position()),
            None => None,
        };
        let (Some(route), Some(room)) = (async_route, room) else {
            // The event ends here: the receipt takes its type rather than a copy of it.
            return Ok(EmitReceipt { position, ..EmitReceipt::from_envelope(env, handlers_run) });
        };
        let mut receipt = EmitReceipt { position, ..EmitReceipt::emitted(&env, handlers_run) };
        let (n, pending) = self.hand_over(env, &route, room)?;
        drop(route);
        if let Some(pending) = pending {
            pending.await?;
        }
        receipt.async_deliveries = n;
        Ok(receipt)
    }

    /// Room in the backend for `n` deliveries: at once when there is some, else as the
    /// backpressure policy says.
    #[inline]
    pub(super) async fn reserve(&self, n: usize) -> Result<Room> {
        let backend = &*self.inner.backend;
        match backend.try_reserve(n)? {
            Some(room) => Ok(room),
            None => backend.reserve(n).await,
        }
    }

    /// The end of an emit on a bus whose store keeps an outbox: the event and one pending
    /// delivery per async handler go in one transaction. Deliveries the backend has room
    /// for are leased to this process and run at once; the others wait in the store for
    /// the pump, so the emit never waits for queue room and never fails for want of it.
    /// An event stored before (same id) is not delivered again.
    async fn emit_durable<T: EventData>(
        &self,
        env: Envelope<T>,
        route: &Arc<Route>,
        outbox: &Arc<Outbox>,
        handlers_run: usize,
    ) -> Result<EmitReceipt> {
        self.start_outbox();
        let names: Vec<&str> = route.asynchronous.iter().map(|t| t.handler.name()).collect();
        let room = self.inner.backend.try_reserve(names.len()).ok().flatten();
        let lease = room.as_ref().map(|_| outbox.lease_from_now());
        let outcome = {
            let events: [&Envelope<dyn EventData>; 1] = [&env];
            let mut outcomes = outbox.log()?.append_with_deliveries(&events, &names, lease).await?;
            outcomes.pop().ok_or_else(|| Error::store("outbox", "an append returned no outcome for its event"))?
        };
        let mut receipt =
            EmitReceipt { position: Some(outcome.position()), ..EmitReceipt::emitted(&env, handlers_run) };
        if outcome.is_duplicate() {
            return Ok(receipt);
        }
        receipt.async_deliveries = names.len();
        let Some(room) = room else {
            outbox.wake.notify_one();
            return Ok(receipt);
        };
        let handed = match self.hand_over(env, route, room) {
            Ok((_, Some(pending))) => pending.await,
            Ok((_, None)) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = handed {
            // The deliveries are stored: they are not lost, the pump hands them over again.
            tracing::warn!(target: "better_auth_events", backend = self.inner.backend.name(), "the backend refused deliveries already in the outbox; they will be handed over again: {}", crate::ErrorChain(&e));
            let keys: Vec<_> = names
                .iter()
                .map(|h| crate::dlq::DeliveryKey { event_id: receipt.id, handler: (*h).to_owned() })
                .collect();
            outbox.release(&keys).await;
            outbox.wake.notify_one();
        }
        Ok(receipt)
    }

    /// The end of an emit on a bus whose backend is a broker: the event is published once,
    /// whatever handlers this process knows (the broker routes it to every subscribed
    /// handler, wherever it runs).
    ///
    /// With an outbox, the event and one pending publication go in one transaction; the
    /// publication is marked done once the broker confirmed the message, and is left to
    /// the pump when the broker cannot take it now (the emit succeeds: the event is
    /// stored). Without one, the event is stored, then published; a publish that fails is
    /// the emit's error.
    async fn emit_to_broker<T: EventData>(
        &self,
        env: Envelope<T>,
        broker: &BrokerBackend,
        handlers_run: usize,
    ) -> Result<EmitReceipt> {
        let mut receipt = EmitReceipt::emitted(&env, handlers_run);
        let shared = SharedEvent::new(env);
        if let Some(outbox) = &self.inner.delivery_env.outbox {
            self.start_outbox();
            let names = [broker.relay_name()];
            let outcome = {
                let events: [&Envelope<dyn EventData>; 1] = [&shared.env];
                let mut outcomes =
                    outbox.log()?.append_with_deliveries(&events, &names, Some(outbox.lease_from_now())).await?;
                outcomes.pop().ok_or_else(|| Error::store("outbox", "an append returned no outcome for its event"))?
            };
            receipt.position = Some(outcome.position());
            if outcome.is_duplicate() {
                return Ok(receipt);
            }
            receipt.async_deliveries = 1;
            let key = crate::dlq::DeliveryKey { event_id: receipt.id, handler: broker.relay_name().to_owned() };
            match publish(broker, &shared).await {
                Ok(()) => outbox.completed(key),
                Err(e) => {
                    // Stored with its publication: the pump publishes it again.
                    tracing::warn!(target: "better_auth_events", event_id = %receipt.id, broker = broker.broker().name(), "cannot publish an event already in the outbox; it will be published again: {}", crate::ErrorChain(&e));
                    outbox.release(std::slice::from_ref(&key)).await;
                }
            }
            return Ok(receipt);
        }
        if let Some(store) = &self.inner.store {
            let outcome = store.append(&shared.env).await?;
            receipt.position = Some(outcome.position());
            if outcome.is_duplicate() {
                return Ok(receipt);
            }
        }
        publish(broker, &shared).await?;
        receipt.async_deliveries = 1;
        Ok(receipt)
    }

    /// What every event gets before the middleware: its JSON must not nest too deep to be
    /// read back, the bus must be usable, the event gets the bus's source if it has none,
    /// and a dynamic event's name and payload are validated.
    #[inline]
    pub(super) fn prepare(&self, env: &mut Envelope<dyn EventData>) -> Result<()> {
        // First: everything after it (validation, handlers, the store) may recurse over it.
        check_depth(env)?;
        check_attributes(env)?;
        self.check_usable()?;
        let inner = &*self.inner;
        if let Some(source) = &inner.source
            && env.source == DEFAULT_SOURCE
        {
            env.source = source.clone();
        }
        if let Some(dynamic) = env.downcast_mut::<serde_json::Value>() {
            // A typed event's name was checked when its type compiled; a dynamic one's here.
            if let Some(problem) = better_auth_events_lock::name_problem(dynamic.event_type.as_str()) {
                return Err(Error::Validation {
                    event_type: dynamic.event_type.to_string(),
                    message: format!(
                        "invalid event name: {problem}; use lowercase words separated by dots, such as `user.created`"
                    ),
                });
            }
            validate_dynamic(&inner.registry, inner.validation, dynamic)?;
        }
        Ok(())
    }

    /// Runs the middleware in order; returns the receipt of an event one of them dropped.
    pub(super) async fn run_middleware(&self, env: &mut Envelope<dyn EventData>) -> Result<Option<EmitReceipt>> {
        for mw in &self.inner.middleware {
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

    /// Runs the inline handlers of `route` on `env`: its sync handlers, and in
    /// [`Phase::AllInline`] its async ones too. The first error stops the emit
    /// ([`Error::Handler`]). Returns how many ran.
    #[inline]
    pub(super) fn run_inline<'a>(
        &'a self,
        env: &'a Envelope<dyn EventData>,
        route: &'a Route,
        phase: Phase,
    ) -> impl Future<Output = Result<usize>> + Send + 'a {
        let inline_async = match phase {
            Phase::Emit => 0,
            Phase::AllInline => route.asynchronous.len(),
        };
        let handlers = route.sync.iter().chain(route.async_handlers().take(inline_async));
        self.run_handlers(env, handlers, move |h, result| {
            result.map_err(|source| Error::Handler {
                handler: h.inner.name.clone(),
                event_type: env.event_type.to_string(),
                source,
            })
        })
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
            redriven_from: None,
        };
        // Made on the first handler that takes another payload type; most emits have none.
        let mut conversions: Option<Box<Conversions>> = None;
        let mut succeeded = 0;
        for h in handlers {
            if h.inner.uses_context && ctx.deps.is_none() {
                ctx.deps = Some(Arc::clone(&delivery_env.deps));
            }
            ctx.handler.clone_from(&h.inner.name);
            ctx.mode = h.mode();
            // The usual call: the handler takes this payload as it is, with no timeout and
            // no cause to record; its future is polled right here.
            let plain = h.payload_type() == payload && h.timeout().is_none() && !delivery_env.track_cause;
            let result = if plain {
                caught(h.call_caught(env, &ctx).await)
            } else {
                let conversions = conversions.get_or_insert_default();
                Box::pin(self.invoke_converted(h, env, payload, &ctx, conversions)).await
            };
            let ok = result.is_ok();
            on_result(h, result)?;
            if ok {
                succeeded += 1;
            }
        }
        Ok(succeeded)
    }

    /// A handler as [`EventBus::run_handlers`] calls it outside its usual path: it takes
    /// another payload type (converted once per type into `conversions`), has a timeout,
    /// or runs under a middleware that reads the cause.
    async fn invoke_converted(
        &self,
        h: &Handler,
        env: &Envelope<dyn EventData>,
        payload: Option<TypeId>,
        ctx: &HandlerContext,
        conversions: &mut Conversions,
    ) -> std::result::Result<(), HandlerError> {
        let converted = conversions.for_handler(h, env, payload)?;
        let env = converted.as_ref().map_or(env, |c| &c.env);
        if self.inner.delivery_env.track_cause {
            crate::cause::with_cause(env, h.invoke(env, ctx)).await
        } else {
            h.invoke(env, ctx).await
        }
    }

    /// The handlers registered for the events named `name`.
    pub(crate) fn route_for(&self, name: &str) -> Option<Arc<Route>> {
        self.inner.routes.load().by_name(name).cloned()
    }

    /// Hands the event to the async backend: one delivery per async handler of `route`,
    /// all sharing one copy of the event (converted once per payload type for handlers
    /// that take another type). Returns how many deliveries were handed over, and the backend's
    /// future to await when it could not take them at once (its queue is full, or it takes
    /// deliveries only asynchronously). The deliveries are made here, before any await, so
    /// an emit's future never holds the event twice.
    pub(super) fn hand_over<T: EventData>(
        &self,
        env: Envelope<T>,
        route: &Route,
        mut room: Room,
    ) -> Result<(usize, Option<BoxFuture<'_, Result<()>>>)> {
        let shared: Arc<SharedEvent> = SharedEvent::new(env);
        let payload = payload_type(&shared.env);
        let mut conversions = Conversions::default();
        // A delivery whose event cannot be read as its handler's type fails on its own,
        // reported (and dead-lettered) as any delivery that failed for good; the emit and
        // the other deliveries go on.
        let mut delivery = |target: &Arc<DeliveryTarget>| -> Option<Delivery> {
            match conversions.for_handler(&target.handler, &shared.env, payload) {
                Ok(converted) => Some(Delivery {
                    event: converted.unwrap_or_else(|| Arc::clone(&shared)),
                    target: Arc::clone(target),
                    progress: None,
                }),
                Err(error) => {
                    poisoned(target, &shared, error);
                    None
                }
            }
        };
        let all: Vec<Delivery> = route.asynchronous.iter().filter_map(&mut delivery).collect();
        let n = all.len();
        if n == 0 {
            return Ok((0, None));
        }
        room.shrink_to(n);
        let backend = &*self.inner.backend;
        let pending = backend.send_reserved(room, all)?.map(|back| backend.publish_all(back));
        Ok((n, pending))
    }
}

/// Publishes one event to the broker.
pub(super) async fn publish(broker: &BrokerBackend, event: &SharedEvent) -> Result<()> {
    broker.broker().publish(&Outgoing::of_shared(event)?).await
}

/// Reports a delivery whose event cannot be read as its handler's type, and dead-letters
/// it in the background when the bus has a dead-letter queue.
fn poisoned(target: &Arc<DeliveryTarget>, event: &Arc<SharedEvent>, error: HandlerError) {
    if target.env.outbox.is_none() {
        target.fail_for_good(&event.env, 0, chrono::Utc::now(), &error);
        return;
    }
    let (target, event) = (Arc::clone(target), Arc::clone(event));
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move { target.poisoned(&event.env, None, &error).await });
        }
        Err(_) => target.fail_for_good(&event.env, 0, chrono::Utc::now(), &error),
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
                reason: crate::ErrorChain(&e).to_string(),
            })?),
        };
        let converted = h.inner.call.convert(dynamic)?;
        self.typed.push((want, Arc::clone(&converted)));
        Ok(Some(converted))
    }
}
