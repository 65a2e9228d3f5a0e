//! What the dead-letter queue keeps: [`DeadLetter`] and the failure records inside it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Event;
use crate::error::HandlerError;

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
