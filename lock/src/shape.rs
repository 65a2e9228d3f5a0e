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
        }
    }

    /// Whether the change breaks BACKWARD compatibility of a closed content model (a Rust
    /// struct never carries unknown fields): everything but an added optional field or a
    /// field that became optional.
    pub fn is_breaking(&self) -> bool {
        !matches!(self, Self::Added { optional: true, .. } | Self::BecameOptional { .. })
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
        }
    }
}

/// The changes from `old` to `new`: first the fields of `old` in their order, then the
/// fields only `new` has.
pub fn diff(old: &[FieldShape], new: &[FieldShape]) -> Vec<ShapeChange> {
    let mut out = Vec::new();
    for o in old {
        match new.iter().find(|n| n.key == o.key) {
            None => out.push(ShapeChange::Removed { key: o.key.clone() }),
            Some(n) if n.ty != o.ty => {
                out.push(ShapeChange::TypeChanged { key: o.key.clone(), from: o.ty.clone(), to: n.ty.clone() })
            }
            Some(n) if n.optional && !o.optional => out.push(ShapeChange::BecameOptional { key: o.key.clone() }),
            Some(n) if !n.optional && o.optional => out.push(ShapeChange::BecameRequired { key: o.key.clone() }),
            Some(_) => {}
        }
    }
    for n in new {
        if !old.iter().any(|o| o.key == n.key) {
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
