//! The replay engine: stream stored events back through handlers.
//!
//! ```
//! # use better_auth_events_runtime::{EventBus, MemoryStore, replay::ReplayEngine};
//! # async fn run(store: MemoryStore, bus: EventBus) -> better_auth_events_runtime::Result<()> {
//! # let (start_time, end_time) = (chrono::Utc::now(), chrono::Utc::now());
//! let engine = ReplayEngine::new(store, bus);
//! let report = engine.replay()
//!     .from(start_time)
//!     .to(end_time)
//!     .event_type("user.created")
//!     .execute()
//!     .await?;
//! println!("replayed {} events, {} handler runs", report.events, report.handlers_run);
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use uuid::Uuid;

use crate::bus::EventBus;
use crate::error::{Error, Result};
use crate::store::{EventQuery, EventStore, Order};

/// Replays events from a store into the handlers of a bus.
///
/// Replayed events are streamed (memory stays flat however long the history), marked as
/// replays (`event.metadata.replay` and [`crate::HandlerContext::is_replay`] are true, so
/// handlers with side effects can skip them), and run through the selected handlers
/// inline, sync and async handlers alike, in the bus's order. They are neither stored again
/// nor passed through the middleware (they were when they were first emitted).
#[derive(Clone)]
pub struct ReplayEngine {
    store: Arc<dyn EventStore>,
    bus: EventBus,
}

impl std::fmt::Debug for ReplayEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayEngine").field("store", &self.store.name()).field("bus", &self.bus).finish()
    }
}

impl ReplayEngine {
    /// An engine reading `store` and running the handlers of `bus` (the seed's
    /// `ReplayEngine::new(store, bus)`).
    pub fn new(store: impl EventStore, bus: EventBus) -> Self {
        Self { store: Arc::new(store), bus }
    }

    /// Starts describing a replay.
    pub fn replay(&self) -> ReplayBuilder<'_> {
        ReplayBuilder {
            engine: self,
            query: EventQuery::default(),
            handlers: None,
            dry_run: false,
            rate: None,
            progress: None,
            progress_every: 1000,
            stop_on_error: false,
        }
    }
}

/// Where a replay stands, as progress callbacks see it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReplayProgress {
    /// Events replayed so far.
    pub events: u64,
    /// Position of the last event replayed: the checkpoint to resume from.
    pub last_position: Option<u64>,
    /// Time since the replay started.
    pub elapsed: Duration,
}

impl ReplayProgress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.events as f64 / secs } else { 0.0 }
    }
}

/// A handler that failed during a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayFailure {
    /// Position of the event in the store.
    pub position: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// The handler that failed.
    pub handler: String,
    /// Its error followed by its causes, joined by `: ` (see [`crate::ErrorChain`]).
    pub error: String,
}

/// A stored event a replay could not read, and went past.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayUnreadable {
    /// Position of the event in the store.
    pub position: u64,
    /// The id stored with it, as text (it may be what cannot be read); `None` when it has
    /// none.
    pub event_id: Option<String>,
    /// Why it cannot be read: the error followed by its causes, joined by `: `.
    pub error: String,
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Events read and replayed (or, in a dry run, that would be).
    pub events: u64,
    /// Handler runs that succeeded (in a dry run: handler runs that would happen).
    pub handlers_run: u64,
    /// Handler runs that failed, the first 100 with their errors.
    pub failures: Vec<ReplayFailure>,
    /// Handler runs that failed, in all.
    pub failed: u64,
    /// Stored events that could not be read and that the replay went past, the first 100
    /// with their position, id and error.
    pub unreadable_events: Vec<ReplayUnreadable>,
    /// Stored events that could not be read, in all (each is also logged as a warning).
    pub unreadable: u64,
    /// Position of the last event the replay went past (replayed, or reported unreadable):
    /// resume after it with [`ReplayBuilder::resume_from`].
    pub last_position: Option<u64>,
    /// How long it took.
    pub elapsed: Duration,
    /// Whether this was a dry run (nothing was run).
    pub dry_run: bool,
}

/// Failures (and unreadable events) kept in a report with their error text.
const KEPT_FAILURES: usize = 100;

type ProgressFn<'a> = Box<dyn FnMut(&ReplayProgress) + Send + 'a>;

/// Describes and runs one replay. Every query filter of the store is available.
#[must_use = "a replay does nothing until `execute` runs it"]
pub struct ReplayBuilder<'a> {
    engine: &'a ReplayEngine,
    query: EventQuery,
    handlers: Option<BTreeSet<String>>,
    dry_run: bool,
    rate: Option<f64>,
    progress: Option<ProgressFn<'a>>,
    progress_every: u64,
    stop_on_error: bool,
}

impl<'a> ReplayBuilder<'a> {
    /// Events at or after `time`.
    pub fn from(mut self, time: DateTime<Utc>) -> Self {
        self.query.since = Some(time);
        self
    }

    /// Events before `time`.
    pub fn to(mut self, time: DateTime<Utc>) -> Self {
        self.query.until = Some(time);
        self
    }

    /// Events named `event_type` (repeat for several).
    pub fn event_type(mut self, event_type: impl AsRef<str>) -> Self {
        self.query.event_types.push(event_type.as_ref().to_owned());
        self
    }

    /// Events from `source`.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.query.source = Some(source.into());
        self
    }

    /// Events about `subject`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.query.subject = Some(subject.into());
        self
    }

    /// Events of one correlation id (one workflow).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.query.correlation_id = Some(id.into());
        self
    }

    /// Events of one tenant.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.query.tenant = Some(tenant.into());
        self
    }

    /// Events after this position: resume a replay from the `last_position` of its report
    /// or progress.
    pub fn resume_from(mut self, position: u64) -> Self {
        self.query.after_position = Some(position);
        self
    }

    /// At most `n` events.
    pub fn limit(mut self, n: u64) -> Self {
        self.query.limit = Some(n);
        self
    }

    /// Only these handlers (by name) run; every other handler is skipped.
    pub fn handlers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.handlers = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Count what would be replayed, run nothing.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// At most `events_per_second` events per second.
    pub fn rate_limit(mut self, events_per_second: f64) -> Self {
        self.rate = Some(events_per_second);
        self
    }

    /// Calls `f` every `every` events and once at the end.
    pub fn on_progress(mut self, every: u64, f: impl FnMut(&ReplayProgress) + Send + 'a) -> Self {
        self.progress_every = every.max(1);
        self.progress = Some(Box::new(f));
        self
    }

    /// Stop at the first handler failure or unreadable stored event, and return its error
    /// (default: record it in the report and go on).
    pub fn stop_on_error(mut self, stop: bool) -> Self {
        self.stop_on_error = stop;
        self
    }

    /// Runs the replay.
    pub async fn execute(mut self) -> Result<ReplayReport> {
        let bus = &self.engine.bus;
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::Config(format!(
                "replay rate limit must be a positive number of events per second, got {rate}"
            )));
        }
        if let Some(names) = &self.handlers {
            let known: BTreeSet<String> = bus.handlers().iter().map(|h| h.name().to_owned()).collect();
            let unknown: Vec<&str> = names.iter().filter(|n| !known.contains(*n)).map(String::as_str).collect();
            if !unknown.is_empty() {
                return Err(Error::Config(format!(
                    "replay names handlers that are not registered on the bus: {}; registered: {}",
                    unknown.join(", "),
                    known.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        self.query.order = Order::Ascending;
        let started = Instant::now();
        let mut report = ReplayReport { dry_run: self.dry_run, ..ReplayReport::default() };
        let mut stream = self.engine.store.stream(self.query.clone());
        while let Some(stored) = stream.next().await {
            let stored = match stored {
                Ok(stored) => stored,
                Err(error) => {
                    self.skip_unreadable(error, &mut report)?;
                    continue;
                }
            };
            if let Some(rate) = self.rate {
                let due = started + Duration::from_secs_f64(report.events as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
            let position = stored.position;
            let mut event = stored.event;
            event.metadata.replay = true;
            if let Some(route) = bus.route_for(event.event_type.as_str()) {
                let selected = route
                    .sync
                    .iter()
                    .chain(route.async_handlers())
                    .filter(|h| self.handlers.as_ref().is_none_or(|names| names.contains(h.name())));
                if self.dry_run {
                    report.handlers_run += selected.count() as u64;
                } else {
                    let stop = self.stop_on_error;
                    let event_id = event.id;
                    let report_ref = &mut report;
                    let run = bus
                        .run_handlers(&event, selected, |h, result| {
                            if let Err(e) = result {
                                report_ref.failed += 1;
                                if report_ref.failures.len() < KEPT_FAILURES {
                                    report_ref.failures.push(ReplayFailure {
                                        position,
                                        event_id,
                                        handler: h.name().to_owned(),
                                        error: crate::ErrorChain(&e).to_string(),
                                    });
                                }
                                if stop {
                                    return Err(Error::Handler {
                                        handler: h.inner.name.clone(),
                                        event_type: format!("{} (replay at position {position})", event.event_type),
                                        source: e,
                                    });
                                }
                            }
                            Ok(())
                        })
                        .await?;
                    report.handlers_run += run as u64;
                }
            }
            report.events += 1;
            report.last_position = Some(position);
            if report.events.is_multiple_of(self.progress_every)
                && let Some(progress) = &mut self.progress
            {
                progress(&ReplayProgress {
                    events: report.events,
                    last_position: report.last_position,
                    elapsed: started.elapsed(),
                });
            }
        }
        report.elapsed = started.elapsed();
        if let Some(progress) = &mut self.progress {
            progress(&ReplayProgress {
                events: report.events,
                last_position: report.last_position,
                elapsed: report.elapsed,
            });
        }
        tracing::info!(
            target: "better_auth_events",
            events = report.events,
            handlers_run = report.handlers_run,
            failed = report.failed,
            unreadable = report.unreadable,
            dry_run = report.dry_run,
            elapsed = ?report.elapsed,
            "replay finished"
        );
        Ok(report)
    }

    /// Records an unreadable stored event in `report` and lets the replay go past it; any
    /// other error, or any error under [`stop_on_error`](Self::stop_on_error), is returned
    /// to end the replay.
    fn skip_unreadable(&self, error: Error, report: &mut ReplayReport) -> Result<()> {
        let Error::UnreadableEvent { position, id, .. } = &error else { return Err(error) };
        if self.stop_on_error {
            return Err(error);
        }
        let text = crate::ErrorChain(&error).to_string();
        tracing::warn!(
            target: "better_auth_events",
            store = self.engine.store.name(),
            position,
            event_id = id.as_deref().unwrap_or(""),
            error = %text,
            "replay went past a stored event it cannot read"
        );
        report.unreadable += 1;
        if report.unreadable_events.len() < KEPT_FAILURES {
            report.unreadable_events.push(ReplayUnreadable { position: *position, event_id: id.clone(), error: text });
        }
        report.last_position = Some(*position);
        Ok(())
    }
}
