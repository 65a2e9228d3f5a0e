//! The route table: which handlers an event reaches, sync ones in run order and async ones
//! with what their deliveries need.

use std::any::TypeId;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::delivery::{DeliveryEnv, DeliveryTarget};
use crate::event::EventData;
use crate::event_type::EventType;
use crate::handler::{Handler, HandlerMode};

/// The handlers of one event name.
#[derive(Default)]
pub(crate) struct Route {
    /// The event name.
    name: Box<str>,
    /// Sync handlers in run order: priority (high first), then registration order.
    pub(crate) sync: Vec<Handler>,
    /// Async handlers in the same order, each with what the bus gives its deliveries.
    pub(crate) asynchronous: Vec<Arc<DeliveryTarget>>,
}

impl Route {
    /// The async handlers, in run order.
    pub(crate) fn async_handlers(&self) -> impl Iterator<Item = &Handler> {
        self.asynchronous.iter().map(|t| &t.handler)
    }
}

/// Every handler of a bus, grouped by the event name they listen to. Rebuilt whole at each
/// change of handlers and swapped in: an emit reads one table from start to end.
#[derive(Default)]
pub(crate) struct RouteTable {
    /// Handlers in registration order.
    pub(crate) handlers: Vec<Handler>,
    routes: FxHashMap<Box<str>, Arc<Route>>,
    /// The routes of typed events, by payload type: the route of the event's name, for
    /// each payload type some typed handler takes.
    by_type: FxHashMap<TypeId, Arc<Route>>,
}

impl RouteTable {
    /// The table of `handlers`; async ones get `env` with their deliveries.
    pub(crate) fn new(handlers: Vec<Handler>, env: &Arc<DeliveryEnv>) -> Self {
        let mut grouped: FxHashMap<Box<str>, Route> = FxHashMap::default();
        for h in &handlers {
            let route = grouped
                .entry(h.event_name().into())
                .or_insert_with(|| Route { name: h.event_name().into(), ..Route::default() });
            match h.mode() {
                HandlerMode::Sync => route.sync.push(h.clone()),
                HandlerMode::Async => {
                    route.asynchronous.push(Arc::new(DeliveryTarget { handler: h.clone(), env: Arc::clone(env) }))
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
            .filter_map(|h| Some((h.payload_type()?, Arc::clone(routes.get(h.event_name())?))))
            .collect();
        Self { handlers, routes, by_type }
    }

    /// The route of an event of payload type `T` named `event_type`. A typed event that
    /// carries its payload type's own name is found by its payload type, without hashing
    /// the name; any other (a renamed typed event, a dynamic one) by its name.
    pub(crate) fn route<T: EventData>(&self, event_type: &EventType) -> Option<&Arc<Route>> {
        let name = event_type.as_str();
        match self.by_type.get(&TypeId::of::<T>()) {
            Some(route) if *route.name == *name => Some(route),
            _ => self.by_name(name),
        }
    }

    /// Every async handler's delivery target, by handler name.
    pub(crate) fn async_targets(&self) -> FxHashMap<&str, &Arc<DeliveryTarget>> {
        self.routes.values().flat_map(|r| r.asynchronous.iter()).map(|t| (t.handler.name(), t)).collect()
    }

    /// The route of the events named `name`.
    pub(crate) fn by_name(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }
}
