//! The outbox pump: runs the deliveries a bus's store holds that nobody runs — those left
//! by a process that died (once their lease ends), those stored while the queue was full,
//! retries falling due, and redriven dead letters.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;

use super::{BusInner, EventBus};
use crate::broker::BrokerBackend;
use crate::delivery::{Delivery, Progress};
use crate::envelope::SharedEvent;
use crate::error::Result;
use crate::outbox::Outbox;

/// Most deliveries claimed at once.
const PUMP_BATCH: usize = 64;

/// How long the pump waits for queue room when the backend has none.
const NO_ROOM_WAIT: Duration = Duration::from_millis(10);

/// What one round of the pump did.
enum Round {
    /// It claimed a full batch: more may be due.
    Full,
    /// It claimed what was due (maybe nothing).
    Partial,
    /// The backend had no room, so it claimed nothing.
    NoRoom,
    /// The broker refused what the round claimed: try again after the poll interval.
    Refused,
}

impl EventBus {
    /// Starts the outbox's tasks (completions and the pump) on the current tokio runtime,
    /// once; a bus built outside a runtime starts them on its first emit.
    pub(super) fn start_outbox(&self) {
        let Some(outbox) = &self.inner.delivery_env.outbox else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Ok(mut pump) = self.inner.pump.lock() else { return };
        if pump.is_some() || self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        outbox.start_completer();
        *pump = Some(runtime.spawn(run_pump(Arc::downgrade(&self.inner), Arc::clone(outbox))));
    }

    /// Stops the pump (at shutdown).
    pub(super) fn stop_pump(&self) {
        if let Ok(mut pump) = self.inner.pump.lock()
            && let Some(task) = pump.take()
        {
            task.abort();
        }
    }
}

/// The pump's loop: claim what is due, hand it to the backend, sleep until the next due
/// time (at most the poll interval) or a wake-up. It holds the bus only while it works, so
/// dropping the bus ends it.
async fn run_pump(bus: Weak<BusInner>, outbox: Arc<Outbox>) {
    loop {
        let wait = {
            // It runs on while a shutdown drains (retries falling due within its deadline);
            // the shutdown stops it.
            let Some(inner) = bus.upgrade() else { return };
            match pump_once(&inner, &outbox).await {
                // A full batch: more may be due.
                Ok(Round::Full) => continue,
                Ok(Round::Partial) => next_wait(&inner, &outbox).await,
                // The queue is full: its workers free room within moments.
                Ok(Round::NoRoom) => NO_ROOM_WAIT.min(outbox.poll),
                Ok(Round::Refused) => outbox.poll,
                Err(e) => {
                    tracing::warn!(target: "better_auth_events", "cannot run the outbox's due deliveries, trying again: {}", crate::ErrorChain(&e));
                    outbox.poll
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = outbox.wake.notified() => {}
        }
    }
}

/// Whether a delivery of this bus's handlers falls due in the outbox by `until` (a retry,
/// a redrive, one stored while the queue was full; not one this process holds leased).
pub(super) async fn due_by(inner: &BusInner, outbox: &Outbox, until: chrono::DateTime<Utc>) -> bool {
    let routes = inner.routes.load();
    let names = outbox_names(inner, &routes);
    if names.is_empty() {
        return false;
    }
    match outbox.log() {
        Ok(log) => log.next_due(&names).await.ok().flatten().is_some_and(|at| at <= until),
        Err(_) => false,
    }
}

/// How long to sleep: until the next delivery of this bus's handlers falls due, at most the
/// poll interval.
async fn next_wait(inner: &BusInner, outbox: &Outbox) -> Duration {
    let routes = inner.routes.load();
    let names = outbox_names(inner, &routes);
    if names.is_empty() {
        return outbox.poll;
    }
    let next = match outbox.log() {
        Ok(log) => log.next_due(&names).await,
        Err(e) => Err(e),
    };
    match next {
        Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(outbox.poll),
        _ => outbox.poll,
    }
}

/// The names under which this bus's pending work waits in the outbox: its async
/// handlers', or the one publication name of its broker.
fn outbox_names<'a>(inner: &'a BusInner, routes: &'a crate::route::RouteTable) -> Vec<&'a str> {
    match &inner.broker {
        Some(broker) => vec![broker.relay_name()],
        None => routes.async_targets().into_keys().collect(),
    }
}

/// Claims one batch of publications due (left by a process that died, or by a publish that
/// failed) and publishes each to the broker.
async fn publish_due(outbox: &Outbox, broker: &BrokerBackend) -> Result<Round> {
    let names = [broker.relay_name()];
    let claimed = outbox.log()?.claim_due(&names, PUMP_BATCH, outbox.lease_from_now()).await?;
    let full = claimed.len() == PUMP_BATCH;
    let mut failed = Vec::new();
    for pending in claimed {
        let key = pending.key();
        let shared = SharedEvent::new(pending.event);
        match super::dispatch::publish(broker, &shared).await {
            Ok(()) => outbox.completed(key),
            Err(e) => {
                tracing::warn!(target: "better_auth_events", event_id = %key.event_id, broker = broker.broker().name(), "cannot publish an event from the outbox; it stays pending: {}", crate::ErrorChain(&e));
                failed.push(key);
            }
        }
    }
    if failed.is_empty() {
        return Ok(if full { Round::Full } else { Round::Partial });
    }
    outbox.release(&failed).await;
    // The broker is failing: wait before trying again rather than spin on it.
    Ok(Round::Refused)
}

/// Claims one batch of due deliveries, as many as the backend has room for, and hands them
/// over.
async fn pump_once(inner: &BusInner, outbox: &Outbox) -> Result<Round> {
    if let Some(broker) = &inner.broker {
        return publish_due(outbox, broker).await;
    }
    let routes = inner.routes.load_full();
    let targets = routes.async_targets();
    if targets.is_empty() {
        return Ok(Round::Partial);
    }
    // Room first, one delivery at a time, as much as there is: a claim never takes more
    // than the backend can take at once.
    let backend = &inner.backend;
    let mut rooms = Vec::new();
    while rooms.len() < PUMP_BATCH {
        match backend.try_reserve(1) {
            Ok(Some(room)) => rooms.push(room),
            _ => break,
        }
    }
    if rooms.is_empty() {
        return Ok(Round::NoRoom);
    }
    let names: Vec<&str> = targets.keys().copied().collect();
    let log = outbox.log()?;
    let claimed = log.claim_due(&names, rooms.len(), outbox.lease_from_now()).await?;
    let round = if claimed.len() == PUMP_BATCH { Round::Full } else { Round::Partial };
    let mut not_taken = Vec::new();
    for pending in claimed {
        // Unregistered since the claim began: give it back.
        let Some(target) = targets.get(pending.handler.as_str()) else {
            not_taken.push(pending.key());
            continue;
        };
        let progress = (pending.attempts > 0 || pending.redriven_from.is_some()).then(|| {
            Box::new(Progress {
                attempts: pending.attempts,
                history: pending.history.clone(),
                redriven_from: pending.redriven_from,
            })
        });
        let delivery = match target.handler.inner.call.convert(&pending.event) {
            Ok(event) => Delivery { event, target: Arc::clone(target), progress },
            Err(error) => {
                target.poisoned(&pending.event, pending.redriven_from, &error).await;
                continue;
            }
        };
        let Some(room) = rooms.pop() else { break };
        let key = delivery.key();
        let handed = match backend.send_reserved(room, vec![delivery]) {
            Ok(None) => Ok(()),
            Ok(Some(back)) => backend.publish_all(back).await,
            Err(e) => Err(e),
        };
        if let Err(e) = handed {
            tracing::warn!(target: "better_auth_events", event_id = %key.event_id, handler = %key.handler, "the backend refused a delivery from the outbox; it stays pending: {}", crate::ErrorChain(&e));
            not_taken.push(key);
        }
    }
    // Not taken: back to the store for the next round.
    outbox.release(&not_taken).await;
    Ok(round)
}
