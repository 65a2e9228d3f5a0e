//! Checks of event names and versions, kept free of proc-macro types so unit tests reach them.

use heck::ToSnakeCase;

/// The default event name of a type: its words in lowercase, joined by dots
/// (`UserCreated` → `user.created`, `HTTPRequestFailed` → `http.request.failed`).
pub(crate) fn default_name(type_name: &str) -> String {
    type_name.to_snake_case().replace('_', ".")
}

/// Why `name` is not a valid event name, if it is not.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
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

/// The version as semver, or the parser's complaint.
pub(crate) fn parse_version(version: &str) -> Result<semver::Version, String> {
    semver::Version::parse(version).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_dotted_lowercase_words() {
        assert_eq!(default_name("UserCreated"), "user.created");
        assert_eq!(default_name("SessionExpired"), "session.expired");
        assert_eq!(default_name("HTTPRequestFailed"), "http.request.failed");
        assert_eq!(default_name("Ping"), "ping");
    }

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

    #[test]
    fn versions_must_be_full_semver() {
        assert!(parse_version("1.0.0").is_ok());
        assert!(parse_version("2.1.0-beta.1").is_ok());
        assert!(parse_version("1.0").is_err());
        assert!(parse_version("v1.0.0").is_err());
    }
}
