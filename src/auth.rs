//! The built-in authentication events, defined with `#[derive(Event)]` like any other.
//!
//! Their names are those of [`crate::EventType`]'s variants: `UserCreated` is
//! `user.created`, `BeforeLogin` is `login.before`, and so on. Fields that hold personal
//! data are marked `#[event(pii)]`, so [`crate::TracingMiddleware`] redacts them.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Event;

/// A user account was created.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "user.created", version = "1.0.0")]
pub struct UserCreated {
    /// The new user's id.
    pub user_id: String,
    /// The user's e-mail address.
    #[event(pii)]
    pub email: String,
    /// The user's display name.
    #[event(pii)]
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the e-mail address was verified at creation (an OAuth sign-up, say).
    #[serde(default)]
    pub email_verified: bool,
}

/// A user's profile changed.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "user.updated", version = "1.0.0")]
pub struct UserUpdated {
    /// The user's id.
    pub user_id: String,
    /// Names of the fields that changed.
    #[serde(default)]
    pub changed_fields: Vec<String>,
}

/// A user account was deleted.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "user.deleted", version = "1.0.0")]
pub struct UserDeleted {
    /// The user's id.
    pub user_id: String,
    /// Why, if known.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A session started.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "session.created", version = "1.0.0")]
pub struct SessionCreated {
    /// The session's id.
    pub session_id: String,
    /// Its user's id.
    pub user_id: String,
    /// The client's IP address.
    #[event(pii)]
    #[serde(default)]
    pub ip_address: Option<String>,
    /// The client's user agent.
    #[event(pii)]
    #[serde(default)]
    pub user_agent: Option<String>,
    /// When the session expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A session ended by expiry or revocation.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "session.expired", version = "1.0.0")]
pub struct SessionExpired {
    /// The session's id.
    pub session_id: String,
    /// Its user's id.
    pub user_id: String,
    /// `expired`, `revoked`, `signed_out`…
    #[serde(default)]
    pub reason: Option<String>,
}

/// An external account (OAuth provider) was linked to a user.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "account.linked", version = "1.0.0")]
pub struct AccountLinked {
    /// The user's id.
    pub user_id: String,
    /// The provider (`github`, `google`…).
    pub provider: String,
    /// The account's id at the provider.
    pub provider_account_id: String,
}

/// An external account was unlinked from a user.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "account.unlinked", version = "1.0.0")]
pub struct AccountUnlinked {
    /// The user's id.
    pub user_id: String,
    /// The provider.
    pub provider: String,
}

/// A login is about to happen; a sync handler's error vetoes it (rate limits, bans).
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "login.before", version = "1.0.0")]
pub struct BeforeLogin {
    /// What the user typed to identify (e-mail, user name).
    #[event(pii)]
    pub identifier: String,
    /// `password`, `oauth:github`, `magic-link`…
    pub method: String,
    /// The client's IP address.
    #[event(pii)]
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// A login succeeded.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "login.after", version = "1.0.0")]
pub struct AfterLogin {
    /// The user's id.
    pub user_id: String,
    /// The new session's id.
    pub session_id: String,
    /// `password`, `oauth:github`, `magic-link`…
    pub method: String,
    /// The client's IP address.
    #[event(pii)]
    #[serde(default)]
    pub ip_address: Option<String>,
}

/// A sign-up is about to happen; a sync handler's error vetoes it.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "signup.before", version = "1.0.0")]
pub struct BeforeSignup {
    /// The e-mail address signing up.
    #[event(pii)]
    pub email: String,
    /// The display name given.
    #[event(pii)]
    #[serde(default)]
    pub name: Option<String>,
}

/// A sign-up succeeded.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[event(name = "signup.after", version = "1.0.0")]
pub struct AfterSignup {
    /// The new user's id.
    pub user_id: String,
    /// The e-mail address.
    #[event(pii)]
    pub email: String,
}
