//! [`EventType`]: the name of an event, with the built-in authentication events as variants.

use std::borrow::Cow;
use std::fmt;

/// The type (name) of an event.
///
/// The built-in authentication events have their own variants; every other name is
/// [`EventType::Custom`]. Conversion is lossless both ways: `EventType::from("user.created")`
/// is [`EventType::UserCreated`] and `EventType::UserCreated.as_str()` is `"user.created"`,
/// so a custom variant never holds a built-in name.
///
/// `Custom` holds a `String`, so both `EventType::Custom(String::from("order.placed"))` and
/// `EventType::Custom("order.placed".into())` build one, and a `match` on
/// `EventType::Custom(name)` sees every name that is not built in, those of
/// `#[derive(Event)]` types included. An event whose name is custom therefore copies its
/// name into each envelope made for it (one small allocation per emit); a built-in
/// variant allocates nothing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum EventType {
    /// `user.created`
    UserCreated,
    /// `user.updated`
    UserUpdated,
    /// `user.deleted`
    UserDeleted,
    /// `session.created`
    SessionCreated,
    /// `session.expired`
    SessionExpired,
    /// `account.linked`
    AccountLinked,
    /// `account.unlinked`
    AccountUnlinked,
    /// `login.before`
    BeforeLogin,
    /// `login.after`
    AfterLogin,
    /// `signup.before`
    BeforeSignup,
    /// `signup.after`
    AfterSignup,
    /// Any other event name. Never a built-in name when made by [`EventType::from`] or
    /// [`EventType::from_static`]; equal to the built-in variant of its name if made directly.
    Custom(String),
}

const BUILT_IN: &[(&str, EventType)] = &[
    ("user.created", EventType::UserCreated),
    ("user.updated", EventType::UserUpdated),
    ("user.deleted", EventType::UserDeleted),
    ("session.created", EventType::SessionCreated),
    ("session.expired", EventType::SessionExpired),
    ("account.linked", EventType::AccountLinked),
    ("account.unlinked", EventType::AccountUnlinked),
    ("login.before", EventType::BeforeLogin),
    ("login.after", EventType::AfterLogin),
    ("signup.before", EventType::BeforeSignup),
    ("signup.after", EventType::AfterSignup),
];

impl EventType {
    /// The event name, as it appears in the CloudEvents `type` attribute.
    pub fn as_str(&self) -> &str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserDeleted => "user.deleted",
            Self::SessionCreated => "session.created",
            Self::SessionExpired => "session.expired",
            Self::AccountLinked => "account.linked",
            Self::AccountUnlinked => "account.unlinked",
            Self::BeforeLogin => "login.before",
            Self::AfterLogin => "login.after",
            Self::BeforeSignup => "signup.before",
            Self::AfterSignup => "signup.after",
            Self::Custom(name) => name,
        }
    }

    /// The type for a name known at compile time: its built-in variant, or `Custom` with a
    /// copy of the name. Whether the name is built in is decided at compile time when
    /// `name` is a constant (see [`EventType::built_in_named`]).
    #[inline]
    pub fn from_static(name: &'static str) -> Self {
        match Self::built_in_named(name) {
            Some(built_in) => built_in,
            None => Self::Custom(name.to_owned()),
        }
    }

    /// The built-in variant named `name`, or `None` for any other name. A `const fn`, so
    /// each event type knows at compile time whether its name is built in.
    pub const fn built_in_named(name: &str) -> Option<Self> {
        Some(if same_name(name, "user.created") {
            Self::UserCreated
        } else if same_name(name, "user.updated") {
            Self::UserUpdated
        } else if same_name(name, "user.deleted") {
            Self::UserDeleted
        } else if same_name(name, "session.created") {
            Self::SessionCreated
        } else if same_name(name, "session.expired") {
            Self::SessionExpired
        } else if same_name(name, "account.linked") {
            Self::AccountLinked
        } else if same_name(name, "account.unlinked") {
            Self::AccountUnlinked
        } else if same_name(name, "login.before") {
            Self::BeforeLogin
        } else if same_name(name, "login.after") {
            Self::AfterLogin
        } else if same_name(name, "signup.before") {
            Self::BeforeSignup
        } else if same_name(name, "signup.after") {
            Self::AfterSignup
        } else {
            return None;
        })
    }

    /// Whether this is one of the built-in authentication events.
    pub fn is_built_in(&self) -> bool {
        !matches!(self, Self::Custom(_))
    }

    /// Every built-in event type.
    pub fn built_in() -> impl Iterator<Item = EventType> {
        BUILT_IN.iter().map(|(_, t)| t.clone())
    }

    fn lookup(name: &str) -> Option<Self> {
        BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, t)| t.clone())
    }
}

/// Whether two names are equal, in a `const` context (where `==` on `str` is not callable).
pub(crate) const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// Equality, order and hash go by name, so `Custom("user.created")` equals `UserCreated`.
impl PartialEq for EventType {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventType {}

impl std::hash::Hash for EventType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for EventType {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventType {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for EventType {
    fn from(name: &str) -> Self {
        Self::lookup(name).unwrap_or_else(|| Self::Custom(name.to_owned()))
    }
}

impl From<String> for EventType {
    fn from(name: String) -> Self {
        Self::lookup(&name).unwrap_or(Self::Custom(name))
    }
}

impl From<EventType> for String {
    fn from(t: EventType) -> Self {
        t.as_str().to_owned()
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for EventType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <Cow<'de, str>>::deserialize(d)?;
        Ok(Self::from(name.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_round_trips_through_its_name() {
        for t in EventType::built_in() {
            assert!(t.is_built_in());
            assert_eq!(EventType::from(t.as_str()), t);
            assert_eq!(EventType::from(t.as_str().to_owned()), t);
        }
        assert_eq!(EventType::built_in().count(), 11);
    }

    #[test]
    fn custom_names_stay_custom_and_built_in_names_never_do() {
        let t = EventType::from("order.placed");
        assert_eq!(t, EventType::Custom("order.placed".into()));
        assert_eq!(t.to_string(), "order.placed");
        assert_eq!(EventType::from_static("user.created"), EventType::UserCreated);
        for t in EventType::built_in() {
            let name: &'static str = BUILT_IN.iter().find(|(_, b)| *b == t).map(|(n, _)| *n).unwrap();
            assert!(matches!((EventType::from_static(name), &t), (a, b) if a == *b && a.is_built_in()));
        }
        assert_eq!(EventType::from_static("order.placed"), EventType::Custom("order.placed".into()));
        assert_eq!(EventType::from("login.before"), EventType::BeforeLogin);
        assert_eq!(EventType::Custom("user.created".into()), EventType::UserCreated);
    }

    #[test]
    fn serializes_as_its_name() {
        let json = serde_json::to_string(&EventType::SessionExpired).unwrap();
        assert_eq!(json, "\"session.expired\"");
        let back: EventType = serde_json::from_str("\"account.linked\"").unwrap();
        assert_eq!(back, EventType::AccountLinked);
    }
}
