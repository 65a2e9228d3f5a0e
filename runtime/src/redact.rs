//! Error messages that never carry the values of an event's payload: payloads hold
//! personal data (`#[event(pii)]` fields), and error messages end up in logs.

/// How serde quotes an unexpected value in its messages, and what stands in for it.
const QUOTED: &[(&str, char, &str)] = &[
    ("string \"", '"', "a string"),
    ("integer `", '`', "an integer"),
    ("floating point `", '`', "a number"),
    ("boolean `", '`', "a boolean"),
    ("character `", '`', "a character"),
    ("unknown variant `", '`', "an unknown variant"),
];

/// `message` with every value serde quoted in it replaced by its kind
/// (`invalid type: string "+1-555-0100", expected i64` becomes
/// `invalid type: a string, expected i64`). Field names and the expected types stay.
pub(crate) fn scrub_serde_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    'scan: while !rest.is_empty() {
        for (prefix, close, stand_in) in QUOTED {
            if let Some(after) = rest.strip_prefix(prefix) {
                // The value runs to its closing quote; a string's may hold escaped quotes.
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' && *close == '"' {
                        escaped = true;
                    } else if c == *close {
                        out.push_str(stand_in);
                        rest = &after[i + c.len_utf8()..];
                        continue 'scan;
                    }
                }
                // No closing quote: the rest is the value.
                out.push_str(stand_in);
                break 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// A serde_json error whose message quotes no value.
pub(crate) fn scrub_serde_error(error: &serde_json::Error) -> serde_json::Error {
    <serde_json::Error as serde::de::Error>::custom(scrub_serde_message(&error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_values_are_replaced_by_their_kind() {
        let cases = [
            (r#"invalid type: string "+1-555-SECRET", expected i64"#, "invalid type: a string, expected i64"),
            (r#"invalid type: string "say \"hi\"", expected u32"#, "invalid type: a string, expected u32"),
            ("invalid value: integer `5000000000`, expected u32", "invalid value: an integer, expected u32"),
            ("invalid type: floating point `1.5`, expected a string", "invalid type: a number, expected a string"),
            ("unknown variant `mallory`, expected `admin` or `user`", "an unknown variant, expected `admin` or `user`"),
            ("missing field `email`", "missing field `email`"),
            (r#"invalid type: string "unterminated"#, "invalid type: a string"),
        ];
        for (raw, scrubbed) in cases {
            assert_eq!(scrub_serde_message(raw), scrubbed, "{raw}");
        }
        let err = serde_json::from_value::<u32>(serde_json::json!("+1-555-SECRET")).unwrap_err();
        assert!(!scrub_serde_error(&err).to_string().contains("SECRET"));
    }
}
