//! The rule every event name follows, checked by the derive at compile time and by the bus
//! for dynamic events.

/// Why `name` is not a valid event name, if it is not.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > 255 {
        return Some("it is longer than 255 bytes");
    }
    if name.chars().any(char::is_whitespace) {
        return Some("it contains whitespace");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')) {
        return Some("only ASCII letters, digits and `.`, `_`, `-`, `:`, `/` are allowed");
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Some("dots must separate non-empty words");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(name_problem("user.created"), None);
        assert_eq!(name_problem("com.example/user-created:v1"), None);
        assert_eq!(name_problem(""), Some("it is empty"));
        assert_eq!(name_problem("user created"), Some("it contains whitespace"));
        assert_eq!(name_problem(".user"), Some("dots must separate non-empty words"));
        assert_eq!(name_problem("user..created"), Some("dots must separate non-empty words"));
        assert!(name_problem("usér").is_some());
    }
}
