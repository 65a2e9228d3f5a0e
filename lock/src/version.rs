//! Version order at compile time, for the checks the derive generates.

/// The leading number of `v` from byte `i`, and the index after it.
const fn number(v: &[u8], mut i: usize) -> (u64, usize) {
    let mut n: u64 = 0;
    while i < v.len() && v[i].is_ascii_digit() {
        n = n.saturating_mul(10).saturating_add((v[i] - b'0') as u64);
        i += 1;
    }
    (n, i)
}

/// Whether semver version `a` precedes `b`, in a `const` context. Both must be valid
/// semver (the derive checks them); build metadata is ignored, and two pre-releases of
/// the same version compare byte by byte (a simplification of semver's identifier rules).
pub const fn version_precedes(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut part = 0;
    while part < 3 {
        let (x, ni) = number(a, i);
        let (y, nj) = number(b, j);
        if x != y {
            return x < y;
        }
        // Skip the dot (or stop at `-`/`+`).
        i = if ni < a.len() && a[ni] == b'.' { ni + 1 } else { ni };
        j = if nj < b.len() && b[nj] == b'.' { nj + 1 } else { nj };
        part += 1;
    }
    let a_pre = i < a.len() && a[i] == b'-';
    let b_pre = j < b.len() && b[j] == b'-';
    match (a_pre, b_pre) {
        (true, false) => true,
        (false, _) => false,
        (true, true) => {
            while i < a.len() && j < b.len() && a[i] != b'+' && b[j] != b'+' {
                if a[i] != b[j] {
                    return a[i] < b[j];
                }
                i += 1;
                j += 1;
            }
            (i == a.len() || a[i] == b'+') && j < b.len() && b[j] != b'+'
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_precedes_orders_like_semver() {
        let ordered = [
            "0.9.9",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-beta",
            "1.0.0",
            "1.0.1",
            "1.2.0",
            "1.10.0",
            "2.0.0+build.7",
            "10.0.0",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                let expected = i < j;
                let got = version_precedes(a, b);
                assert_eq!(got, expected, "{a} precedes {b}: expected {expected}, got {got}");
                let parsed = semver::Version::parse(a).unwrap() < semver::Version::parse(b).unwrap();
                assert_eq!(got, parsed, "{a} < {b} disagrees with the semver crate");
            }
        }
        assert!(!version_precedes("1.0.0", "1.0.0+build"), "build metadata is ignored");
    }

    #[test]
    fn version_precedes_works_in_const_context() {
        const { assert!(version_precedes("1.9.0", "1.10.0")) };
    }
}
