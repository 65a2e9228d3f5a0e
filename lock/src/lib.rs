//! The `events.lock/` snapshot format and the version rules of
//! [better-auth-events](https://docs.rs/better-auth-events).
//!
//! A snapshot, `events.lock/<name>@<version>.json`, records one released event version:
//! the fields `#[derive(Event)]` compares at compile time ([`FieldShape`]) and the full
//! JSON Schema the runtime compares in `check_snapshots`. Both read the files through
//! [`Snapshot`]; only the runtime writes them.
//!
//! The version rules ([`Bump`]) say which semver bump a change needs: none for an
//! identical shape, minor for a compatible change, major for a breaking one.
//!
//! The event name rule ([`name_problem`]) lives here too, shared by the derive and the bus.
//!
//! This crate has no proc-macro or runtime dependency, so its rules are unit-tested
//! directly.

mod bump;
mod name;
mod shape;
mod snapshot;
mod version;

pub use bump::{Bump, BumpTooSmall, same_major};
pub use name::name_problem;
pub use shape::{FieldShape, ShapeChange, diff, diff_renamed};
pub use snapshot::{Error, Snapshot, file_name, previous_of, versions_of};
pub use version::version_precedes;

/// The environment variable that switches to update mode (`update` or `overwrite`).
pub const UPDATE_VAR: &str = "BAE_EVENTS_LOCK";

/// The environment variable that moves the snapshot directory the derive reads (default:
/// `$CARGO_MANIFEST_DIR/events.lock`).
pub const DIR_VAR: &str = "BAE_EVENTS_LOCK_DIR";

/// The name of the snapshot directory in a crate.
pub const DIR_NAME: &str = "events.lock";

/// Whether `value` of [`UPDATE_VAR`] turns update mode on.
pub fn is_update_value(value: &str) -> bool {
    value == "update" || value == "overwrite"
}

/// Whether update mode is on in this process's environment.
pub fn update_mode() -> bool {
    std::env::var(UPDATE_VAR).is_ok_and(|v| is_update_value(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_mode_values() {
        assert!(is_update_value("update"));
        assert!(is_update_value("overwrite"));
        assert!(!is_update_value("off"));
        assert!(!is_update_value(""));
    }
}
