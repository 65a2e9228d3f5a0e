//! Checks of the model: the input's shape, the event name and version, and the attributes
//! that contradict each other. Nothing here generates code.

use heck::ToSnakeCase;

use super::ast::{Container, Data};
use crate::ctxt::Ctxt;

/// Records in `cx` every problem of `cont`.
pub(crate) fn check(cx: &Ctxt, cont: &Container<'_>) {
    check_shape(cx, cont);
    check_name(cx, cont);
    check_version(cx, cont);
    check_upcast(cx, cont);
    check_drop_versions_before(cx, cont);
    check_fields(cx, cont);
}

fn check_shape(cx: &Ctxt, cont: &Container<'_>) {
    if !cont.generics.params.is_empty() {
        cx.error_spanned_by(
            cont.generics,
            "`#[derive(Event)]` does not support generic parameters: an event has one name, one version and one schema; \
             define a concrete struct for each event",
        );
    }
    match &cont.data {
        Data::Struct(_) => {}
        Data::Tuple(fields) => cx.error_spanned_by(
            fields,
            "`#[derive(Event)]` needs named fields (`struct UserCreated { user_id: String }`): \
             an event's payload is a JSON object whose keys are its field names",
        ),
        Data::Unit => cx.error_spanned_by(
            cont.ident,
            "`#[derive(Event)]` needs named fields (`struct UserCreated { user_id: String }`); \
             for an event without data, use `struct Name {}`",
        ),
        Data::Enum(token) => cx.error_spanned_by(
            token,
            "`#[derive(Event)]` supports structs with named fields only; define one struct per event instead of an enum",
        ),
        Data::Union(token) => {
            cx.error_spanned_by(token, "`#[derive(Event)]` supports structs with named fields only, not unions")
        }
    }
}

fn check_name(cx: &Ctxt, cont: &Container<'_>) {
    let Some(lit) = &cont.attrs.name else { return };
    let value = lit.value();
    if let Some(problem) = better_auth_events_lock::name_problem(&value) {
        cx.error_spanned_by(
            lit,
            format!(
                "invalid event name `{value}`: {problem}; use lowercase words separated by dots, such as `user.created`"
            ),
        );
    }
}

fn check_version(cx: &Ctxt, cont: &Container<'_>) {
    let Some(lit) = &cont.attrs.version else { return };
    let value = lit.value();
    if let Err(e) = parse_version(&value) {
        cx.error_spanned_by(
            lit,
            format!("invalid event version `{value}`: {e}; use a full semver version such as `1.0.0`"),
        );
    }
}

fn check_drop_versions_before(cx: &Ctxt, cont: &Container<'_>) {
    let Some(lit) = &cont.attrs.drop_versions_before else { return };
    let value = lit.value();
    let first = match parse_version(&value) {
        Ok(v) => v,
        Err(e) => {
            cx.error_spanned_by(
                lit,
                format!("invalid version `{value}` in `drop_versions_before`: {e}; use a full semver version such as `2.0.0`"),
            );
            return;
        }
    };
    if let Ok(own) = parse_version(&cont.version())
        && first > own
    {
        cx.error_spanned_by(
            lit,
            format!(
                "`drop_versions_before = \"{value}\"` is after the event's own version {own}: this type would not read \
                 its own events; give a version up to {own}"
            ),
        );
    }
}

fn check_upcast(cx: &Ctxt, cont: &Container<'_>) {
    if let (Some(upcast), None) = (&cont.attrs.upcast, &cont.attrs.previous) {
        cx.error_spanned_by(
            upcast,
            "`upcast` needs `previous`: `#[event(previous = UserCreatedV1, upcast = \"manual\")]`",
        );
    }
}

fn check_fields(cx: &Ctxt, cont: &Container<'_>) {
    for field in cont.fields() {
        if let Some(old) = &field.attrs.renamed_from {
            match &field.json_key {
                Some(key) if *key == old.value() => cx.error_spanned_by(
                    old,
                    format!(
                        "`renamed_from` names the field's current key `{key}`; give the key it had in the previous version"
                    ),
                ),
                Some(_) => {}
                None => cx.error_spanned_by(old, "`renamed_from` on a field serde skips has no effect; remove it"),
            }
        }
        if let (Some(pii), None) = (&field.attrs.pii, &field.json_key) {
            cx.error_spanned_by(
                pii,
                "`#[event(pii)]` on a field serde skips: the field never leaves the process, so remove `pii`",
            );
        }
    }
}

/// The default event name of a type: its words in lowercase, joined by dots
/// (`UserCreated` → `user.created`, `HTTPRequestFailed` → `http.request.failed`).
pub(crate) fn default_name(type_name: &str) -> String {
    type_name.to_snake_case().replace('_', ".")
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
    fn versions_must_be_full_semver() {
        assert!(parse_version("1.0.0").is_ok());
        assert!(parse_version("2.1.0-beta.1").is_ok());
        assert!(parse_version("1.0").is_err());
        assert!(parse_version("v1.0.0").is_err());
    }

    #[test]
    fn contradicting_attributes_are_reported() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[event(upcast = "manual")]
            struct S<T> {
                #[event(pii)] #[serde(skip)] a: T,
                #[event(renamed_from = "b")] b: String,
            }
        };
        let cx = Ctxt::new();
        let cont = Container::from_ast(&cx, &input);
        check(&cx, &cont);
        let messages: Vec<String> = cx.check().unwrap_err().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].starts_with("`#[derive(Event)]` does not support generic parameters"));
        assert!(messages[1].starts_with("`upcast` needs `previous`"));
        assert!(messages[2].starts_with("`#[event(pii)]` on a field serde skips"));
        assert!(messages[3].starts_with("`renamed_from` names the field's current key `b`"));
    }
}
