//! The outbox pump: runs the deliveries a bus's store holds that nobody runs — those left
//! by a process that died (once their lease ends), those stored while the queue was full,
//! retries falling due, and redriven dead letters.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;

use super::{BusInner, EventBus};
use crate::delivery::{Delivery, Progress};
use crate::dlq::DeliveryKey;
use crate::error::Result;
use crate::outbox::Outbox;

/// Most deliveries claimed at once.
const PUMP_BATCH: usize = 64;

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
            let Some(inner) = bus.upgrade() else { return };
            if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            match pump_once(&inner, &outbox).await {
                // A full batch: more may be due.
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(target: "better_auth_events", "cannot run the outbox's due deliveries, trying again: {}", crate::ErrorChain(&e));
                }
            }
            next_wait(&inner, &outbox).await
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = outbox.wake.notified() => {}
        }
    }
}

/// How long to sleep: until the next delivery of this bus's handlers falls due, at most the
/// poll interval.
async fn next_wait(inner: &BusInner, outbox: &Outbox) -> Duration {
    let routes = inner.routes.load();
    let names: Vec<&str> = routes.async_targets().into_keys().collect();
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

/// Claims one batch of due deliveries and hands it to the backend. Returns whether the batch
/// was full.
async fn pump_once(inner: &BusInner, outbox: &Outbox) -> Result<bool> {
    let routes = inner.routes.load_full();
    let targets = routes.async_targets();
    if targets.is_empty() {
        return Ok(false);
    }
    let names: Vec<&str> = targets.keys().copied().collect();
    let log = outbox.log()?;
    let claimed = log.claim_due(&names, PUMP_BATCH, outbox.lease_from_now()).await?;
    let full = claimed.len() == PUMP_BATCH;
    let mut deliveries = Vec::with_capacity(claimed.len());
    for pending in claimed {
        let Some(target) = targets.get(pending.handler.as_str()) else { continue };
        let progress = (pending.attempts > 0 || pending.redriven_from.is_some()).then(|| {
            Box::new(Progress {
                attempts: pending.attempts,
                history: pending.history.clone(),
                redriven_from: pending.redriven_from,
            })
        });
        match target.handler.inner.call.convert(&pending.event) {
            Ok(event) => deliveries.push(Delivery { event, target: Arc::clone(target), progress }),
            Err(error) => target.poisoned(&pending.event, pending.redriven_from, &error).await,
        }
    }
    if deliveries.is_empty() {
        return Ok(full);
    }
    let keys: Vec<DeliveryKey> = deliveries.iter().map(Delivery::key).collect();
    let backend = &inner.backend;
    let handed = async {
        let room = backend.reserve(deliveries.len()).await?;
        if let Some(back) = backend.send_reserved(room, deliveries)? {
            backend.publish_all(back).await?;
        }
        Ok::<(), crate::Error>(())
    };
    if let Err(e) = handed.await {
        // Not taken: back to the store for the next round.
        outbox.release(&keys).await;
        return Err(e);
    }
    Ok(full)
}
