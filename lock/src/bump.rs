//! Which semver bump a change of an event's schema needs.

use std::fmt;

use semver::Version;

use crate::shape::ShapeChange;

/// The semver bump from one version to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bump {
    /// Only the patch number (or a pre-release) grew.
    Patch,
    /// The minor number grew.
    Minor,
    /// The major number grew.
    Major,
}

/// A new version whose bump is smaller than its change needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BumpTooSmall {
    /// The bump that was made.
    pub actual: Bump,
    /// The bump the change needs.
    pub needed: Bump,
    /// The smallest version that would be accepted.
    pub smallest: Version,
}

impl Bump {
    /// The bump from `from` to a later version `to`.
    pub fn between(from: &Version, to: &Version) -> Self {
        if to.major > from.major {
            Self::Major
        } else if to.minor > from.minor {
            Self::Minor
        } else {
            Self::Patch
        }
    }

    /// The smallest version after `from` with this bump.
    pub fn apply(self, from: &Version) -> Version {
        match self {
            Self::Major => Version::new(from.major + 1, 0, 0),
            Self::Minor => Version::new(from.major, from.minor + 1, 0),
            Self::Patch => Version::new(from.major, from.minor, from.patch + 1),
        }
    }

    /// The bump a change needs: major if it breaks compatibility, minor if the schema
    /// changed compatibly, none if it did not change.
    pub fn required(breaking: bool, changed: bool) -> Option<Self> {
        if breaking {
            Some(Self::Major)
        } else if changed {
            Some(Self::Minor)
        } else {
            None
        }
    }

    /// The bump a set of field changes needs (see [`ShapeChange::is_breaking`]).
    pub fn required_by(changes: &[ShapeChange]) -> Option<Self> {
        Self::required(changes.iter().any(ShapeChange::is_breaking), !changes.is_empty())
    }

    /// Checks that going from `previous` to the later version `next` is at least the
    /// `needed` bump.
    pub fn check(previous: &Version, next: &Version, needed: Option<Self>) -> Result<(), BumpTooSmall> {
        let actual = Self::between(previous, next);
        match needed {
            Some(needed) if actual < needed => Err(BumpTooSmall { actual, needed, smallest: needed.apply(previous) }),
            _ => Ok(()),
        }
    }
}

/// Whether `a` and `b` are in one compatibility range: the same major version, or for 0.x
/// the same minor (semver gives 0.x no compatibility across minors). Going from one range
/// to another is a new major version, whose readers need a way to read the older one.
pub fn same_major(a: &Version, b: &Version) -> bool {
    a.major == b.major && (a.major > 0 || a.minor == b.minor)
}

impl fmt::Display for Bump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Major => "major",
            Self::Minor => "minor",
            Self::Patch => "patch",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn bumps_between_versions() {
        assert_eq!(Bump::between(&v("1.2.3"), &v("2.0.0")), Bump::Major);
        assert_eq!(Bump::between(&v("1.2.3"), &v("1.3.0")), Bump::Minor);
        assert_eq!(Bump::between(&v("1.2.3"), &v("1.2.4")), Bump::Patch);
        assert_eq!(Bump::between(&v("1.0.0-alpha"), &v("1.0.0")), Bump::Patch);
        assert!(Bump::Patch < Bump::Minor && Bump::Minor < Bump::Major);
    }

    #[test]
    fn apply_gives_the_smallest_version_with_the_bump() {
        assert_eq!(Bump::Major.apply(&v("1.2.3")), v("2.0.0"));
        assert_eq!(Bump::Minor.apply(&v("1.2.3")), v("1.3.0"));
        assert_eq!(Bump::Patch.apply(&v("1.2.3")), v("1.2.4"));
    }

    #[test]
    fn one_compatibility_range_is_one_major_or_one_0x_minor() {
        assert!(same_major(&v("1.0.0"), &v("1.4.2")));
        assert!(!same_major(&v("1.9.0"), &v("2.0.0")));
        assert!(same_major(&v("0.3.0"), &v("0.3.7")));
        assert!(!same_major(&v("0.3.0"), &v("0.4.0")));
    }

    #[test]
    fn breaking_needs_major_compatible_needs_minor_identical_needs_none() {
        assert_eq!(Bump::required(true, true), Some(Bump::Major));
        assert_eq!(Bump::required(false, true), Some(Bump::Minor));
        assert_eq!(Bump::required(false, false), None);
    }

    #[test]
    fn field_changes_need_the_bump_of_the_worst_one() {
        let added_optional = ShapeChange::Added { key: "a".into(), optional: true };
        let removed = ShapeChange::Removed { key: "b".into() };
        assert_eq!(Bump::required_by(&[]), None);
        assert_eq!(Bump::required_by(std::slice::from_ref(&added_optional)), Some(Bump::Minor));
        assert_eq!(Bump::required_by(&[added_optional, removed]), Some(Bump::Major));
    }

    #[test]
    fn check_names_the_smallest_accepted_version() {
        assert_eq!(Bump::check(&v("1.0.0"), &v("1.0.1"), None), Ok(()));
        assert_eq!(Bump::check(&v("1.0.0"), &v("1.1.0"), Some(Bump::Minor)), Ok(()));
        assert_eq!(Bump::check(&v("1.0.0"), &v("3.0.0"), Some(Bump::Major)), Ok(()));
        assert_eq!(
            Bump::check(&v("1.0.0"), &v("1.1.0"), Some(Bump::Major)),
            Err(BumpTooSmall { actual: Bump::Minor, needed: Bump::Major, smallest: v("2.0.0") })
        );
        assert_eq!(
            Bump::check(&v("1.4.2"), &v("1.4.3"), Some(Bump::Minor)),
            Err(BumpTooSmall { actual: Bump::Patch, needed: Bump::Minor, smallest: v("1.5.0") })
        );
    }
}
