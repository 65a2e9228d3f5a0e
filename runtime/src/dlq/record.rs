//! What the dead-letter queue keeps: [`DeadLetter`] and the failure records inside it.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::log::PendingDelivery;
use crate::envelope::Event;
use crate::error::{Error, HandlerError, Result};

/// Why a delivery failed, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The handler returned an error that may pass on a retry.
    Failed,
    /// The handler said retrying cannot help ([`HandlerError::Permanent`]).
    Permanent,
    /// The handler panicked.
    Panicked,
    /// The handler ran past its timeout.
    TimedOut,
    /// The event could not be read as the handler's type (or failed validation or
    /// upcasting): a poison event, dead-lettered at once, never retried.
    Poison,
    /// The handler takes a dependency the bus does not have.
    MissingDependency,
}

impl FailureKind {
    /// The kind of a handler error.
    pub fn of(error: &HandlerError) -> Self {
        match error {
            HandlerError::Permanent(_) => Self::Permanent,
            HandlerError::Panicked(_) => Self::Panicked,
            HandlerError::Timeout(_) => Self::TimedOut,
            HandlerError::EventMismatch { .. } => Self::Poison,
            HandlerError::MissingDependency(_) => Self::MissingDependency,
            _ => Self::Failed,
        }
    }

    /// The kind's name as stores keep it (`failed`, `permanent`, `panicked`, `timed_out`,
    /// `poison`, `missing_dependency`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Permanent => "permanent",
            Self::Panicked => "panicked",
            Self::TimedOut => "timed_out",
            Self::Poison => "poison",
            Self::MissingDependency => "missing_dependency",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error as the dead-letter queue keeps it: its kind, its message and the message of
/// each of its causes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Why, in one word.
    pub kind: FailureKind,
    /// The error's own message.
    pub message: String,
    /// The messages of its causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
}

impl FailureRecord {
    /// The record of a handler error, with its whole source chain.
    pub fn of(error: &HandlerError) -> Self {
        let mut causes = Vec::new();
        let mut next = std::error::Error::source(error);
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        Self { kind: FailureKind::of(error), message: error.to_string(), causes }
    }
}

impl std::fmt::Display for FailureRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.causes {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// One failed attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's number, from 1 (0 for a delivery that never ran because its event
    /// could not be read).
    pub attempt: u32,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// How it failed.
    pub error: FailureRecord,
}

/// Where a dead letter stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeadLetterState {
    /// In the queue, waiting for an operator.
    Dead,
    /// Sent back to its handler with a fresh attempt budget.
    Redriven {
        /// When.
        at: DateTime<Utc>,
    },
    /// Put aside by an operator; kept as an audit record.
    Discarded {
        /// When.
        at: DateTime<Utc>,
        /// Why, as the operator said.
        reason: String,
    },
}

impl DeadLetterState {
    /// The state's name as stores keep it (`dead`, `redriven`, `discarded`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Dead => "dead",
            Self::Redriven { .. } => "redriven",
            Self::Discarded { .. } => "discarded",
        }
    }
}

/// A delivery that failed for good: the event, the handler, and every attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry's own id.
    pub id: Uuid,
    /// The delivery's stable id (the same on every attempt and redrive; see
    /// [`crate::HandlerContext::delivery_id`]).
    pub delivery_id: Uuid,
    /// The whole event, its payload as JSON.
    pub event: Event,
    /// The handler that failed.
    pub handler: String,
    /// Attempts made (0 when the handler never ran: a poison event).
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failure: DateTime<Utc>,
    /// When the last attempt failed.
    pub last_failure: DateTime<Utc>,
    /// The last error.
    pub error: FailureRecord,
    /// Every failed attempt, in order.
    pub history: Vec<AttemptRecord>,
    /// The entry this delivery was redriven from, when it came back from the queue and
    /// failed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redriven_from: Option<Uuid>,
    /// Dead, redriven or discarded.
    #[serde(flatten)]
    pub state: DeadLetterState,
}

impl DeadLetter {
    /// The event's type.
    pub fn event_type(&self) -> &str {
        self.event.event_type.as_str()
    }

    /// Whether the entry is waiting in the queue (neither redriven nor discarded).
    pub fn is_dead(&self) -> bool {
        self.state == DeadLetterState::Dead
    }
}

/// Which entries to list, count or redrive. Every condition set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// Only this handler's entries.
    pub handler: Option<String>,
    /// Only entries of this event type.
    pub event_type: Option<String>,
    /// Only entries whose last error is of this kind.
    pub kind: Option<FailureKind>,
    /// Only entries whose last failure is at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only entries whose last failure is before this time.
    pub to: Option<DateTime<Utc>>,
    /// Also entries already redriven or discarded (by default only those still dead).
    pub include_settled: bool,
    /// At most this many entries.
    pub limit: Option<u64>,
}

impl DeadLetterFilter {
    /// Every dead entry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this handler's entries.
    pub fn handler(mut self, handler: impl Into<String>) -> Self {
        self.handler = Some(handler.into());
        self
    }

    /// Only entries of this event type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Only entries whose last error is of this kind.
    pub fn kind(mut self, kind: FailureKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Only entries whose last failure is at or after `from`.
    pub fn from(mut self, from: DateTime<Utc>) -> Self {
        self.from = Some(from);
        self
    }

    /// Only entries whose last failure is before `to`.
    pub fn to(mut self, to: DateTime<Utc>) -> Self {
        self.to = Some(to);
        self
    }

    /// Also entries already redriven or discarded (the audit trail).
    pub fn include_settled(mut self) -> Self {
        self.include_settled = true;
        self
    }

    /// At most `n` entries.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether `letter` passes every condition but the limit.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        (self.include_settled || letter.is_dead())
            && self.handler.as_deref().is_none_or(|h| letter.handler == h)
            && self.event_type.as_deref().is_none_or(|t| letter.event_type() == t)
            && self.kind.is_none_or(|k| letter.error.kind == k)
            && self.from.is_none_or(|from| letter.last_failure >= from)
            && self.to.is_none_or(|to| letter.last_failure < to)
    }
}

/// How many entries a filter matches, in all and per handler and event type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterCounts {
    /// Entries in all.
    pub total: u64,
    /// Entries per handler.
    pub by_handler: BTreeMap<String, u64>,
    /// Entries per event type.
    pub by_event_type: BTreeMap<String, u64>,
}

impl DeadLetterCounts {
    /// Counts one entry.
    pub(crate) fn add(&mut self, handler: &str, event_type: &str, n: u64) {
        self.total += n;
        *self.by_handler.entry(handler.to_owned()).or_default() += n;
        *self.by_event_type.entry(event_type.to_owned()).or_default() += n;
    }
}

/// A dead letter as the SQL and Redis stores keep it: the entry as JSON, and its state in
/// columns of its own (so that a redrive or discard changes one column, not the JSON).
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) struct StoredLetter<'a> {
    /// The entry as JSON, written when it was buried.
    pub entry: &'a str,
    /// `dead`, `redriven` or `discarded`.
    pub state: &'a str,
    /// When it was redriven or discarded.
    pub state_at: Option<DateTime<Utc>>,
    /// Why it was discarded.
    pub reason: Option<String>,
}

#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
impl StoredLetter<'_> {
    /// The entry, with its current state; `store` names the store in errors.
    pub(crate) fn decode(self, store: &str) -> Result<DeadLetter> {
        let mut letter: DeadLetter = serde_json::from_str(self.entry)
            .map_err(|e| Error::store(store, format!("a dead letter is unreadable: {e}")))?;
        let at = || {
            self.state_at.ok_or_else(|| {
                Error::store(store, format!("dead letter {} is {} but has no time", letter.id, self.state))
            })
        };
        letter.state = match self.state {
            "dead" => DeadLetterState::Dead,
            "redriven" => DeadLetterState::Redriven { at: at()? },
            "discarded" => DeadLetterState::Discarded { at: at()?, reason: self.reason.clone().unwrap_or_default() },
            other => {
                return Err(Error::store(store, format!("dead letter {} has an unknown state `{other}`", letter.id)));
            }
        };
        Ok(letter)
    }
}

/// A dead letter as JSON, for the stores.
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) fn encode_letter(letter: &DeadLetter, store: &str) -> Result<String> {
    serde_json::to_string(letter)
        .map_err(|e| Error::store(store, format!("cannot encode dead letter {}: {e}", letter.id)))
}

/// A failed attempt as JSON, as the stores append it to a pending delivery's history (a
/// JSON array of these).
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) fn encode_attempt(attempt: &AttemptRecord, store: &str) -> Result<String> {
    serde_json::to_string(attempt)
        .map_err(|e| Error::store(store, format!("cannot encode attempt {} of a delivery: {e}", attempt.attempt)))
}

/// A pending delivery as the SQL and Redis stores keep it beside its event: its handler,
/// the attempts made, the history as a JSON array of [`AttemptRecord`] and the id (text) of
/// the dead letter it was redriven from.
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) struct StoredDelivery<'a> {
    /// The handler it is for.
    pub handler: String,
    /// Attempts made, as the store keeps the number.
    pub attempts: i64,
    /// The failed attempts, a JSON array.
    pub history: &'a str,
    /// The dead letter it came back from, if any.
    pub redriven_from: Option<&'a str>,
}

#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
impl StoredDelivery<'_> {
    /// The delivery of `event`; `store` names the store in errors.
    pub(crate) fn decode(self, event: Event, store: &str) -> Result<PendingDelivery> {
        let which = || format!("the delivery of event {} to `{}`", event.id, self.handler);
        let attempts = u32::try_from(self.attempts)
            .map_err(|_| Error::store(store, format!("{} has an invalid attempt count {}", which(), self.attempts)))?;
        let history: Vec<AttemptRecord> = serde_json::from_str(self.history)
            .map_err(|e| Error::store(store, format!("{} has an unreadable history: {e}", which())))?;
        let redriven_from = self
            .redriven_from
            .map(|id| {
                Uuid::parse_str(id).map_err(|e| {
                    Error::store(store, format!("{} names an unreadable dead letter id `{id}`: {e}", which()))
                })
            })
            .transpose()?;
        Ok(PendingDelivery { event, handler: self.handler, attempts, history, redriven_from })
    }
}

/// The handlers' names in `names`, each once, in their first order: a delivery is one per
/// event and handler, however often the caller names the handler.
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) fn distinct_handlers<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        if !out.contains(name) {
            out.push(name);
        }
    }
    out
}

/// Dead letters per page of the stores' paged reads ([`paged_letters`]).
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) const LETTER_PAGE: u64 = 500;

/// One page of a paged read of dead letters.
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) struct LetterPage<C> {
    /// The matching entries of the page, in order (newest failure first).
    pub letters: Vec<DeadLetter>,
    /// Where the next page starts, or `None` when the read is done.
    pub next: Option<C>,
}

/// A stream of at most `limit` dead letters made of pages fetched by `fetch`, which is given
/// where to start (`None` for the first page) and how many matching entries are still
/// wanted (at most [`LETTER_PAGE`]). The stores share it so that none holds a whole result.
#[cfg_attr(not(any(feature = "_sql", feature = "redis")), allow(dead_code))]
pub(crate) fn paged_letters<'a, C, F, Fut>(limit: Option<u64>, fetch: F) -> BoxStream<'a, Result<DeadLetter>>
where
    C: Send + 'a,
    F: FnMut(Option<C>, u64) -> Fut + Send + 'a,
    Fut: Future<Output = Result<LetterPage<C>>> + Send + 'a,
{
    struct State<C, F> {
        cursor: Option<C>,
        remaining: Option<u64>,
        done: bool,
        fetch: F,
    }
    let state = State { cursor: None, remaining: limit, done: false, fetch };
    stream::unfold(state, |mut st| async move {
        if st.done || st.remaining == Some(0) {
            return None;
        }
        let want = st.remaining.map_or(LETTER_PAGE, |r| r.min(LETTER_PAGE));
        let items: Vec<Result<DeadLetter>> = match (st.fetch)(st.cursor.take(), want).await {
            Ok(page) => {
                st.done = page.next.is_none();
                st.cursor = page.next;
                let mut letters = page.letters;
                letters.truncate(usize::try_from(want).unwrap_or(usize::MAX));
                if let Some(r) = &mut st.remaining {
                    *r = r.saturating_sub(letters.len() as u64);
                }
                letters.into_iter().map(Ok).collect()
            }
            Err(e) => {
                st.done = true;
                vec![Err(e)]
            }
        };
        Some((stream::iter(items), st))
    })
    .flatten()
    .boxed()
}
