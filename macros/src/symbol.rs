//! Names of attribute keys.

pub(crate) const EVENT: &str = "event";
pub(crate) const NAME: &str = "name";
pub(crate) const VERSION: &str = "version";
pub(crate) const CRATE: &str = "crate";
pub(crate) const PII: &str = "pii";
pub(crate) const PREVIOUS: &str = "previous";
pub(crate) const UPCAST: &str = "upcast";
pub(crate) const RENAMED_FROM: &str = "renamed_from";
pub(crate) const DROP_VERSIONS_BEFORE: &str = "drop_versions_before";

pub(crate) const ASYNC: &str = "async";
pub(crate) const SYNC: &str = "sync";
pub(crate) const PRIORITY: &str = "priority";
pub(crate) const TIMEOUT: &str = "timeout";
pub(crate) const RETRY: &str = "retry";
pub(crate) const MAX_ATTEMPTS: &str = "max_attempts";
pub(crate) const BACKOFF: &str = "backoff";
pub(crate) const BASE: &str = "base";
pub(crate) const MAX_DELAY: &str = "max_delay";
pub(crate) const JITTER: &str = "jitter";

/// Container keys of `#[event(..)]`.
pub(crate) const EVENT_KEYS: &[&str] = &[NAME, VERSION, PREVIOUS, UPCAST, DROP_VERSIONS_BEFORE, CRATE];
/// Field keys of `#[event(..)]`.
pub(crate) const FIELD_KEYS: &[&str] = &[PII, RENAMED_FROM];
/// Keys of `#[handler(..)]`.
pub(crate) const HANDLER_KEYS: &[&str] = &[ASYNC, SYNC, NAME, PRIORITY, TIMEOUT, RETRY, CRATE];
/// Keys of `retry(..)`.
pub(crate) const RETRY_KEYS: &[&str] = &[MAX_ATTEMPTS, BACKOFF, BASE, MAX_DELAY, JITTER];
/// Backoff names.
pub(crate) const BACKOFFS: &[&str] = &["fixed", "linear", "exponential"];

/// "`a`, `b` or `c`".
pub(crate) fn one_of(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}
