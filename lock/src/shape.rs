//! The token-level shape of an event's fields and how two shapes differ.

use std::fmt;

/// One serialized field as a snapshot records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldShape {
    /// The field's JSON key (after serde renames).
    pub key: String,
    /// The field's type as written, without spaces (`Option<String>`).
    pub ty: String,
    /// Whether the field may be absent (`Option`, or serde's `default`).
    pub optional: bool,
}

impl FieldShape {
    /// A field shape.
    pub fn new(key: impl Into<String>, ty: impl Into<String>, optional: bool) -> Self {
        Self { key: key.into(), ty: ty.into(), optional }
    }
}

/// What changed in one field from one shape to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeChange {
    /// A field was added.
    Added {
        /// Its key.
        key: String,
        /// Whether it may be absent.
        optional: bool,
    },
    /// A field was removed.
    Removed {
        /// Its key.
        key: String,
    },
    /// A field's type, as written, changed.
    TypeChanged {
        /// Its key.
        key: String,
        /// The type before.
        from: String,
        /// The type after.
        to: String,
    },
    /// An optional field became required.
    BecameRequired {
        /// Its key.
        key: String,
    },
    /// A required field became optional.
    BecameOptional {
        /// Its key.
        key: String,
    },
    /// A field was renamed (`#[event(renamed_from = "..")]`): the generated upcaster moves
    /// the old key to the new one, so new code reads old events (BACKWARD compatible), but
    /// code that knows only the old key cannot read new events (not FORWARD compatible).
    Renamed {
        /// The key before.
        from: String,
        /// The key now.
        to: String,
    },
}

impl ShapeChange {
    /// The key of the field it is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Added { key, .. }
            | Self::Removed { key }
            | Self::TypeChanged { key, .. }
            | Self::BecameRequired { key }
            | Self::BecameOptional { key } => key,
            Self::Renamed { to, .. } => to,
        }
    }

    /// Whether the change breaks BACKWARD compatibility of a closed content model (a Rust
    /// struct never carries unknown fields): everything but an added optional field, a
    /// field that became optional, and a rename the upcaster carries.
    pub fn is_breaking(&self) -> bool {
        !matches!(self, Self::Added { optional: true, .. } | Self::BecameOptional { .. } | Self::Renamed { .. })
    }
}

impl fmt::Display for ShapeChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Added { key, optional: true } => write!(f, "optional field `{key}` added"),
            Self::Added { key, optional: false } => write!(f, "required field `{key}` added"),
            Self::Removed { key } => write!(f, "field `{key}` removed"),
            Self::TypeChanged { key, from, to } => write!(f, "field `{key}` changed type from `{from}` to `{to}`"),
            Self::BecameRequired { key } => write!(f, "field `{key}` became required"),
            Self::BecameOptional { key } => write!(f, "field `{key}` became optional"),
            Self::Renamed { from, to } => write!(f, "field `{from}` renamed to `{to}`"),
        }
    }
}

/// The changes from `old` to `new`: first the fields of `old` in their order, then the
/// fields only `new` has.
pub fn diff(old: &[FieldShape], new: &[FieldShape]) -> Vec<ShapeChange> {
    diff_renamed(old, new, &[])
}

/// [`diff`] with the renames `new` declares, as `(new_key, old_key)` pairs: a field of
/// `old` under `old_key` is compared with the field of `new` under `new_key` (its type and
/// optionality), and the pair is one [`ShapeChange::Renamed`] rather than a removal and an
/// addition. A rename whose old key `old` lacks, or whose new key `old` has already, is
/// not one and is ignored.
pub fn diff_renamed<'a>(old: &'a [FieldShape], new: &[FieldShape], renames: &[(&'a str, &'a str)]) -> Vec<ShapeChange> {
    let renamed: Vec<(&str, &str)> = renames
        .iter()
        .copied()
        .filter(|(to, from)| {
            old.iter().any(|o| o.key == *from)
                && !old.iter().any(|o| o.key == *to)
                && new.iter().any(|n| n.key == *to)
                && !new.iter().any(|n| n.key == *from)
        })
        .collect();
    // The key each old field has in `new`.
    let key_in_new = |o: &'a FieldShape| -> &'a str {
        renamed.iter().find(|(_, from)| *from == o.key).map_or(o.key.as_str(), |(to, _)| to)
    };
    let mut out = Vec::new();
    for o in old {
        let key = key_in_new(o);
        if key != o.key {
            out.push(ShapeChange::Renamed { from: o.key.clone(), to: key.to_owned() });
        }
        match new.iter().find(|n| n.key == key) {
            None => out.push(ShapeChange::Removed { key: o.key.clone() }),
            Some(n) if n.ty != o.ty => {
                out.push(ShapeChange::TypeChanged { key: key.to_owned(), from: o.ty.clone(), to: n.ty.clone() })
            }
            Some(n) if n.optional && !o.optional => out.push(ShapeChange::BecameOptional { key: key.to_owned() }),
            Some(n) if !n.optional && o.optional => out.push(ShapeChange::BecameRequired { key: key.to_owned() }),
            Some(_) => {}
        }
    }
    for n in new {
        if !old.iter().any(|o| key_in_new(o) == n.key) {
            out.push(ShapeChange::Added { key: n.key.clone(), optional: n.optional });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: &str, ty: &str, optional: bool) -> FieldShape {
        FieldShape::new(key, ty, optional)
    }

    #[test]
    fn diff_names_every_change_and_judges_it_as_a_closed_model() {
        let old = [f("id", "String", false), f("email", "String", false), f("age", "u32", false), f("x", "u8", true)];
        let new =
            [f("id", "u64", false), f("age", "u32", true), f("locale", "Option<String>", true), f("x", "u8", false)];
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            [
                ShapeChange::TypeChanged { key: "id".into(), from: "String".into(), to: "u64".into() },
                ShapeChange::Removed { key: "email".into() },
                ShapeChange::BecameOptional { key: "age".into() },
                ShapeChange::BecameRequired { key: "x".into() },
                ShapeChange::Added { key: "locale".into(), optional: true },
            ]
        );
        let breaking: Vec<bool> = changes.iter().map(ShapeChange::is_breaking).collect();
        assert_eq!(breaking, [true, true, false, true, false]);
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn a_declared_rename_is_one_compatible_change_and_its_field_is_still_compared() {
        let old = [f("id", "String", false), f("email", "String", false)];
        let new = [f("id", "String", false), f("email_address", "String", false)];
        let changes = diff_renamed(&old, &new, &[("email_address", "email")]);
        assert_eq!(changes, [ShapeChange::Renamed { from: "email".into(), to: "email_address".into() }]);
        assert!(!changes[0].is_breaking());
        assert_eq!(changes[0].to_string(), "field `email` renamed to `email_address`");
        // Undeclared, the same change is a removal and an addition.
        assert_eq!(diff(&old, &new).len(), 2);
        assert!(diff(&old, &new).iter().any(ShapeChange::is_breaking));
        // A renamed field whose type changed too is still a breaking change.
        let retyped = [f("id", "String", false), f("email_address", "u64", false)];
        let changes = diff_renamed(&old, &retyped, &[("email_address", "email")]);
        assert_eq!(
            changes[1],
            ShapeChange::TypeChanged { key: "email_address".into(), from: "String".into(), to: "u64".into() }
        );
        assert!(changes[1].is_breaking());
        // A rename from a key the old shape lacks is no rename.
        let changes = diff_renamed(&old, &new, &[("email_address", "mail")]);
        assert!(changes.iter().all(|c| !matches!(c, ShapeChange::Renamed { .. })));
    }

    #[test]
    fn a_reordered_field_is_no_change() {
        let old = [f("a", "String", false), f("b", "u8", false)];
        let new = [f("b", "u8", false), f("a", "String", false)];
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn changes_describe_themselves() {
        let descriptions: Vec<String> = [
            ShapeChange::Added { key: "a".into(), optional: false },
            ShapeChange::Added { key: "b".into(), optional: true },
            ShapeChange::Removed { key: "c".into() },
            ShapeChange::TypeChanged { key: "d".into(), from: "u8".into(), to: "u16".into() },
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            descriptions,
            [
                "required field `a` added",
                "optional field `b` added",
                "field `c` removed",
                "field `d` changed type from `u8` to `u16`"
            ]
        );
    }
}
