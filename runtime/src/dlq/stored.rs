//! What the durable stores (SQL and Redis) share to keep dead letters and pending
//! deliveries: their JSON forms and the paging of dead-letter reads.

use std::future::Future;

use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use uuid::Uuid;

use super::log::PendingDelivery;
use super::record::{AttemptRecord, DeadLetter, DeadLetterState};
use crate::envelope::Event;
use crate::error::{Error, Result};

/// A dead letter as the SQL and Redis stores keep it: the entry as JSON, and its state in
/// columns of its own (so that a redrive or discard changes one column, not the JSON).
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
pub(crate) fn encode_letter(letter: &DeadLetter, store: &str) -> Result<String> {
    serde_json::to_string(letter)
        .map_err(|e| Error::store(store, format!("cannot encode dead letter {}: {e}", letter.id)))
}

/// A failed attempt as JSON, as the stores append it to a pending delivery's history (a
/// JSON array of these).
pub(crate) fn encode_attempt(attempt: &AttemptRecord, store: &str) -> Result<String> {
    serde_json::to_string(attempt)
        .map_err(|e| Error::store(store, format!("cannot encode attempt {} of a delivery: {e}", attempt.attempt)))
}

/// A pending delivery as the SQL and Redis stores keep it beside its event: its handler,
/// the attempts made, the history as a JSON array of [`AttemptRecord`] and the id (text) of
/// the dead letter it was redriven from.
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
pub(crate) const LETTER_PAGE: u64 = 500;

/// One page of a paged read of dead letters.
pub(crate) struct LetterPage<C> {
    /// The matching entries of the page, in order (newest failure first).
    pub letters: Vec<DeadLetter>,
    /// Where the next page starts, or `None` when the read is done.
    pub next: Option<C>,
}

/// A stream of at most `limit` dead letters made of pages fetched by `fetch`, which is given
/// where to start (`None` for the first page) and how many matching entries are still
/// wanted (at most [`LETTER_PAGE`]). The stores share it so that none holds a whole result.
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
