//! The bus's side of a store's outbox: where a durable delivery reports its success (in
//! batches), its retries and its death, and the settings of its leases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::dlq::{AttemptRecord, DeadLetter, DeliveryKey, DeliveryLog};
use crate::error::{Error, Result};
use crate::store::EventStore;

/// Most completions written in one statement.
const COMPLETION_BATCH: usize = 512;

/// How long the completion writer waits for more completions to write with the first. A
/// completion not yet written when the process dies means its delivery runs again, which
/// at-least-once delivery allows; a shorter wait means more commits.
const COMPLETION_LINGER: Duration = Duration::from_millis(10);

/// How long a process holds a delivery it runs unless the builder says otherwise.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// How often the bus looks for deliveries other processes left, redrives and expired
/// leases unless the builder says otherwise.
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(1);

enum Completion {
    Done(DeliveryKey),
    Flush(oneshot::Sender<()>),
}

/// A bus's outbox on its store.
pub(crate) struct Outbox {
    store: Arc<dyn EventStore>,
    /// How long a claimed delivery stays with this process before another may take it.
    pub(crate) lease: Duration,
    /// How often the pump looks for due deliveries when nothing wakes it.
    pub(crate) poll: Duration,
    /// Wakes the pump: deliveries were stored without a lease, or a retry fell due sooner.
    pub(crate) wake: Notify,
    completions: mpsc::UnboundedSender<Completion>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    completer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Outbox {
    /// The outbox of `store`, if it keeps one.
    pub(crate) fn of(store: &Arc<dyn EventStore>, lease: Duration, poll: Duration) -> Option<Self> {
        store.delivery_log()?;
        let (completions, receiver) = mpsc::unbounded_channel();
        Some(Self {
            store: Arc::clone(store),
            lease,
            poll,
            wake: Notify::new(),
            completions,
            receiver: Mutex::new(Some(receiver)),
            completer: Mutex::new(None),
        })
    }

    /// The store.
    pub(crate) fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The store's delivery log.
    pub(crate) fn log(&self) -> Result<&dyn DeliveryLog> {
        self.store
            .delivery_log()
            .ok_or_else(|| Error::store(self.store.name(), "the store no longer offers its outbox"))
    }

    /// The end of a lease taken now.
    pub(crate) fn lease_from_now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        chrono::Duration::from_std(self.lease)
            .ok()
            .and_then(|lease| now.checked_add_signed(lease))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Starts the task that writes completions, on the current runtime (once).
    pub(crate) fn start_completer(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let Some(mut receiver) = self.receiver.lock().ok().and_then(|mut r| r.take()) else { return };
        // The task holds the store, not the outbox: it ends when every sender is gone.
        let store = Arc::clone(&self.store);
        let task = runtime.spawn(async move {
            let mut batch = Vec::with_capacity(COMPLETION_BATCH);
            let mut flushes = Vec::new();
            while let Some(first) = receiver.recv().await {
                // Completions that come within `COMPLETION_LINGER` of the first share its
                // write (one commit, one fsync on SQLite); a flush writes at once.
                let linger = tokio::time::Instant::now() + COMPLETION_LINGER;
                let mut next = Some(first);
                while let Some(c) = next.take() {
                    match c {
                        Completion::Done(key) => batch.push(key),
                        Completion::Flush(done) => flushes.push(done),
                    }
                    if batch.len() < COMPLETION_BATCH && flushes.is_empty() {
                        next = match tokio::time::timeout_at(linger, receiver.recv()).await {
                            Ok(c) => c,
                            Err(_) => receiver.try_recv().ok(),
                        };
                    }
                }
                if !batch.is_empty() {
                    let written = match store.delivery_log() {
                        Some(log) => log.complete(&batch).await,
                        None => Ok(()),
                    };
                    if let Err(e) = written {
                        // The deliveries stay pending; they run again once their lease ends.
                        tracing::warn!(target: "better_auth_events", deliveries = batch.len(), "cannot mark deliveries done, they will run again: {}", crate::ErrorChain(&e));
                    }
                    batch.clear();
                }
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        if let Ok(mut slot) = self.completer.lock() {
            *slot = Some(task);
        }
    }

    /// Records that a delivery's handler succeeded; written with others in one statement.
    pub(crate) fn completed(&self, key: DeliveryKey) {
        if self.completions.send(Completion::Done(key)).is_err() {
            tracing::warn!(target: "better_auth_events", "the outbox's completion writer has stopped; a succeeded delivery will run again");
        }
    }

    /// Waits until every completion recorded so far is written.
    pub(crate) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.completions.send(Completion::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// Schedules the next attempt of a delivery at `at`; wakes the pump so it sleeps no
    /// longer than that.
    pub(crate) async fn retry_at(&self, key: &DeliveryKey, at: DateTime<Utc>, failure: &AttemptRecord) {
        let written = match self.log() {
            Ok(log) => log.retry_at(key, at, failure).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            // The delivery stays leased; it runs again once its lease ends.
            tracing::warn!(target: "better_auth_events", event_id = %key.event_id, handler = %key.handler, "cannot schedule a retry, the delivery will run again when its lease ends: {}", crate::ErrorChain(&e));
        }
        self.wake.notify_one();
    }

    /// Puts a delivery in the dead-letter queue.
    pub(crate) async fn bury(&self, letter: &DeadLetter) {
        let written = match self.log() {
            Ok(log) => log.bury(letter).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(target: "better_auth_events", event_id = %letter.event.id, handler = %letter.handler, "cannot put a failed delivery in the dead-letter queue; it stays pending and runs again when its lease ends: {}", crate::ErrorChain(&e));
        }
    }

    /// Gives deliveries this process holds back to the store, due now.
    pub(crate) async fn release(&self, keys: &[DeliveryKey]) {
        if keys.is_empty() {
            return;
        }
        let written = match self.log() {
            Ok(log) => log.release(keys).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(target: "better_auth_events", deliveries = keys.len(), "cannot give deliveries back; they run again when their lease ends: {}", crate::ErrorChain(&e));
        }
    }
}
