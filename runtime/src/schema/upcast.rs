//! Upcasting: reading an event stored at an old version as the current type, through the
//! chain of upcasters `#[event(previous = ..)]` declares (v1 → v2 → v3).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use better_auth_events_lock::same_major;
use semver::Version;
use serde_json::Value;

use super::migrate::MigrationPlan;
use crate::envelope::{Envelope, Event};
use crate::error::{Error, Result};
use crate::event::TypedEvent;
use crate::event_type::same_name;

/// Conversion of the previous version of an event into this one, written by hand for
/// changes a generated migration cannot make (a field whose type changed, a value computed
/// from others). Declare it with `#[event(previous = UserCreatedV1, upcast = "manual")]`.
///
/// ```
/// # use better_auth_events_runtime::schema::Upcast;
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)] struct V1 { age: String }
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)] struct V2 { age: u32 }
/// # impl better_auth_events_runtime::TypedEvent for V1 { const NAME: &'static str = "p"; const VERSION: &'static str = "1.0.0"; }
/// # impl better_auth_events_runtime::TypedEvent for V2 { const NAME: &'static str = "p"; const VERSION: &'static str = "2.0.0"; }
/// impl Upcast<V1> for V2 {
///     fn upcast(old: V1) -> Self {
///         V2 { age: old.age.parse().unwrap_or(0) }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` declares `upcast = \"manual\"` but does not implement `Upcast<{Previous}>`",
    note = "implement `Upcast<{Previous}> for {Self}`, or let the derive generate the upcaster by removing `upcast = \"manual\"`"
)]
pub trait Upcast<Previous: TypedEvent>: TypedEvent {
    /// The new version of an old event.
    fn upcast(old: Previous) -> Self;
}

/// How one upcaster converts.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum UpcastKind {
    /// A generated migration plan between the two schemas.
    Auto {
        /// JSON Schema of the previous version.
        from_schema: fn() -> schemars::Schema,
        /// JSON Schema of the new version.
        to_schema: fn() -> schemars::Schema,
        /// `(new_key, old_key)` renames of the new version.
        renames: &'static [(&'static str, &'static str)],
    },
    /// User code: `Upcast::upcast` through JSON.
    Manual(fn(Value) -> std::result::Result<Value, String>),
}

/// The previous version of an event, as `#[event(previous = ..)]` declares it.
///
/// The derive implements it once per event with a `previous`, so a `previous` that is not
/// an event is one error at that impl; the checks and the registration below go through
/// this trait and add none.
#[doc(hidden)]
pub trait PreviousVersion: TypedEvent {
    /// The type of the previous version.
    type Previous: TypedEvent;
}

/// Whether `N`'s previous version has `N`'s name, in a `const` context.
#[doc(hidden)]
pub const fn previous_is_same_event<N: PreviousVersion>() -> bool {
    same_name(<N::Previous as TypedEvent>::NAME, N::NAME)
}

/// Whether `N`'s previous version has a lower version than `N`, in a `const` context.
#[doc(hidden)]
pub const fn previous_is_earlier<N: PreviousVersion>() -> bool {
    better_auth_events_lock::version_precedes(<N::Previous as TypedEvent>::VERSION, N::VERSION)
}

/// A program-wide registration submitted by `#[event(previous = ..)]`.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct UpcasterRegistration {
    pub name: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub from_type: fn() -> &'static str,
    pub to_type: fn() -> &'static str,
    pub kind: UpcastKind,
}

fn manual_step<P: TypedEvent, N: Upcast<P>>(value: Value) -> std::result::Result<Value, String> {
    let old: P = serde_json::from_value(value).map_err(|e| e.to_string())?;
    serde_json::to_value(N::upcast(old)).map_err(|e| e.to_string())
}

impl UpcasterRegistration {
    /// A generated upcaster from `P` to `N`.
    pub const fn auto<P: TypedEvent, N: TypedEvent>() -> Self {
        Self {
            name: N::NAME,
            from: P::VERSION,
            to: N::VERSION,
            from_type: std::any::type_name::<P>,
            to_type: std::any::type_name::<N>,
            kind: UpcastKind::Auto {
                from_schema: P::event_schema,
                to_schema: N::event_schema,
                renames: N::RENAMED_FIELDS,
            },
        }
    }

    /// A generated upcaster from `N`'s previous version to `N`.
    pub const fn auto_of<N: PreviousVersion>() -> Self {
        Self::auto::<N::Previous, N>()
    }

    /// A user-written upcaster from `N`'s previous version to `N`.
    pub const fn manual_of<N: PreviousVersion + Upcast<N::Previous>>() -> Self {
        Self::manual::<N::Previous, N>()
    }

    /// A user-written upcaster from `P` to `N`.
    pub const fn manual<P: TypedEvent, N: Upcast<P>>() -> Self {
        Self {
            name: N::NAME,
            from: P::VERSION,
            to: N::VERSION,
            from_type: std::any::type_name::<P>,
            to_type: std::any::type_name::<N>,
            kind: UpcastKind::Manual(manual_step::<P, N>),
        }
    }
}

inventory::collect!(UpcasterRegistration);

enum Step {
    Plan(MigrationPlan),
    Manual(fn(Value) -> std::result::Result<Value, String>),
}

struct Link {
    to: Version,
    step: Step,
}

/// Every upcaster of the program, by event name and source version.
pub struct UpcastChain {
    links: BTreeMap<String, BTreeMap<Version, Link>>,
}

impl std::fmt::Debug for UpcastChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (name, links) in &self.links {
            for (from, link) in links {
                m.entry(&format!("{name} {from}"), &link.to.to_string());
            }
        }
        m.finish()
    }
}

fn parse(name: &str, version: &str, of: &str) -> Result<Version> {
    Version::parse(version)
        .map_err(|e| Error::Schema(format!("`{name}` of `{of}` has an invalid version `{version}`: {e}")))
}

impl UpcastChain {
    /// Builds the chain from every `#[event(previous = ..)]` of the program and checks it:
    /// an upcaster must go to a higher version of the same event, no version may have two
    /// upcasters, a generated upcaster must not need user code, and every registered
    /// version of an event must reach its newest version.
    pub fn from_registered() -> Result<Self> {
        let mut links: BTreeMap<String, BTreeMap<Version, Link>> = BTreeMap::new();
        for r in inventory::iter::<UpcasterRegistration> {
            let from = parse(r.name, r.from, (r.from_type)())?;
            let to = parse(r.name, r.to, (r.to_type)())?;
            if to <= from {
                return Err(Error::Schema(format!(
                    "`{}` ({} {to}) declares `previous = {}` ({from}), which is not an earlier version; upcasters must go from an older version to a newer one",
                    (r.to_type)(),
                    r.name,
                    (r.from_type)()
                )));
            }
            let step = match r.kind {
                UpcastKind::Manual(f) => Step::Manual(f),
                UpcastKind::Auto { from_schema, to_schema, renames } => {
                    let renames: Vec<(String, String)> =
                        renames.iter().map(|(n, o)| ((*n).to_owned(), (*o).to_owned())).collect();
                    let plan = MigrationPlan::between(
                        r.name,
                        from.clone(),
                        &from_schema().to_value(),
                        to.clone(),
                        &to_schema().to_value(),
                        &renames,
                    );
                    if !plan.is_automatic() {
                        let manual: Vec<String> = plan.manual_steps().map(ToString::to_string).collect();
                        return Err(Error::Schema(format!(
                            "`{}` declares `previous = {}` but the change needs user code ({}); write `#[event(previous = .., upcast = \"manual\")]` and implement `Upcast<{}>` for it",
                            (r.to_type)(),
                            (r.from_type)(),
                            manual.join("; "),
                            (r.from_type)()
                        )));
                    }
                    Step::Plan(plan)
                }
            };
            let by_version = links.entry(r.name.to_owned()).or_default();
            if let Some(existing) = by_version.get(&from) {
                return Err(Error::Schema(format!(
                    "`{}` {from} has two upcasters (to {} and to {to}); keep one `previous = ..` per version",
                    r.name, existing.to
                )));
            }
            by_version.insert(from, Link { to, step });
        }
        let chain = Self { links };
        chain.check_reachability()?;
        Ok(chain)
    }

    /// Every registered version of an event with upcasters must reach its newest version.
    fn check_reachability(&self) -> Result<()> {
        let by_name = crate::event::registrations_by_name();
        for (name, links) in &self.links {
            let Some(registrations) = by_name.get(name.as_str()) else { continue };
            let versions: Vec<Version> = registrations.iter().filter_map(|r| Version::parse(r.version).ok()).collect();
            let Some(newest) = versions.iter().max() else { continue };
            for v in &versions {
                let mut at = v.clone();
                let mut hops = 0;
                while &at != newest {
                    let next = match links.get(&at) {
                        Some(link) => Some(link.to.clone()),
                        None => compatible_step(links, &at, newest),
                    };
                    match next {
                        Some(next) if hops < 64 => {
                            at = next;
                            hops += 1;
                        }
                        None if same_major(&at, newest) => break,
                        _ => {
                            return Err(Error::Schema(format!(
                                "`{name}` {v} cannot be upcast to {newest}: no upcaster goes on from {at}; add `#[event(previous = ..)]` to the version after {at}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The chain of the program, built and checked once.
    pub fn global() -> Result<&'static UpcastChain> {
        static CHAIN: OnceLock<std::result::Result<UpcastChain, String>> = OnceLock::new();
        CHAIN
            .get_or_init(|| UpcastChain::from_registered().map_err(|e| crate::ErrorChain(&e).to_string()))
            .as_ref()
            .map_err(|e| Error::Schema(e.clone()))
    }

    /// Brings a payload of `name` from version `from` to version `to`, step by step.
    pub fn upcast(&self, name: &str, from: &Version, to: &Version, mut payload: Value) -> Result<Value> {
        let mut at = from.clone();
        let mut hops = 0;
        while &at < to {
            let links = self.links.get(name);
            let mut link = links.and_then(|l| l.get(&at)).filter(|_| hops < 64);
            if link.is_none() {
                // A minor or patch step without an upcaster reads as it is: the snapshot
                // check and the registry only let a compatible change through without a
                // major bump. The chain goes on from the next upcaster of the same major.
                match links.and_then(|l| compatible_step(l, &at, to)) {
                    Some(next) if &next == to => return Ok(payload),
                    Some(next) => {
                        at = next;
                        hops += 1;
                        link = links.and_then(|l| l.get(&at)).filter(|_| hops < 64);
                    }
                    None if same_major(&at, to) => return Ok(payload),
                    None => {}
                }
            }
            let link = link.ok_or_else(|| Error::Validation {
                event_type: name.to_owned(),
                message: format!("cannot upcast from {from} to {to}: no upcaster from {at}"),
            })?;
            payload = match &link.step {
                Step::Plan(plan) => plan.apply(payload)?,
                Step::Manual(f) => f(payload).map_err(|e| Error::Validation {
                    event_type: name.to_owned(),
                    message: format!("upcasting from {at} to {} failed: {e}", link.to),
                })?,
            };
            at = link.to.clone();
            hops += 1;
        }
        if &at != to {
            return Err(Error::Validation {
                event_type: name.to_owned(),
                message: format!("cannot upcast from {from} to {to}: the chain passes from {at} over it"),
            });
        }
        Ok(payload)
    }

    /// The upcasters, as `(event, from, to)`.
    pub fn links(&self) -> impl Iterator<Item = (&str, &Version, &Version)> {
        self.links.iter().flat_map(|(name, l)| l.iter().map(move |(from, link)| (name.as_str(), from, &link.to)))
    }
}

// Defined here, beside the chain it reads through, so that the envelope does not depend on
// the schema module.
impl Event {
    /// Reads the payload as the typed event `T` (the name must match `T::NAME`). A payload
    /// of an older schema version is upcast through the chain of `#[event(previous = ..)]`.
    pub fn into_typed<T: TypedEvent>(self) -> Result<Envelope<T>> {
        if self.event_type.as_str() != T::NAME {
            return Err(Error::Validation {
                event_type: self.event_type.to_string(),
                message: format!("expected an event named `{}`", T::NAME),
            });
        }
        let data: T = read_as(self.version.as_deref(), self.data)?;
        Ok(Envelope {
            id: self.id,
            event_type: self.event_type,
            source: self.source,
            subject: self.subject,
            timestamp: self.timestamp,
            version: Some(std::borrow::Cow::Borrowed(T::VERSION)),
            metadata: self.metadata,
            data,
        })
    }
}

/// The next version after `at`, up to `to`, that has an upcaster and is in `at`'s
/// compatibility range: events of `at` read as that version as they are.
fn compatible_step(links: &BTreeMap<Version, Link>, at: &Version, to: &Version) -> Option<Version> {
    use std::ops::Bound::{Excluded, Included};
    links.range((Excluded(at), Included(to))).map(|(v, _)| v).find(|v| same_major(at, v)).cloned()
}

/// `payload` at `version` read as a `T`: upcast through the program's chain when the
/// version is older than `T`'s. The seam every typed read goes through (store reads,
/// replay, conversions of dynamic events).
pub(crate) fn read_as<T: TypedEvent>(version: Option<&str>, payload: Value) -> Result<T> {
    let payload = match version {
        Some(v) if v != T::VERSION => {
            let from = Version::parse(v).map_err(|e| Error::Validation {
                event_type: T::NAME.to_owned(),
                message: format!("invalid schema version `{v}`: {e}"),
            })?;
            let to = Version::parse(T::VERSION)
                .map_err(|e| Error::Schema(format!("`{}` has an invalid version: {e}", T::NAME)))?;
            if from > to {
                return Err(Error::Validation {
                    event_type: T::NAME.to_owned(),
                    message: format!(
                        "the event is at {from}, newer than `{}` ({to}); upgrade the reader",
                        std::any::type_name::<T>()
                    ),
                });
            }
            if let Some(first) = T::DROPPED_BEFORE.and_then(|d| Version::parse(d).ok())
                && from < first
            {
                return Err(Error::Validation {
                    event_type: T::NAME.to_owned(),
                    message: format!(
                        "the event is at {from}, but `{}` reads versions from {first} on \
                         (`#[event(drop_versions_before = \"{first}\")]`); migrate stored events with a \
                         `MigrationPlan`, or read them with a build that still has the {from} type",
                        std::any::type_name::<T>()
                    ),
                });
            }
            UpcastChain::global()?.upcast(T::NAME, &from, &to, payload)?
        }
        _ => payload,
    };
    // serde quotes the value it could not read: the message is scrubbed of it, since a
    // payload's values may be personal data and errors reach logs.
    serde_json::from_value(payload).map_err(|e| Error::Serialization {
        event_type: T::NAME.to_owned(),
        source: crate::redact::scrub_serde_error(&e),
    })
}
