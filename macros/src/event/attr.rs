//! Parsing of `#[event(..)]` on the struct and its fields, and of the serde attributes
//! that change a field's JSON key.

use heck::{ToKebabCase, ToLowerCamelCase, ToPascalCase, ToShoutyKebabCase, ToShoutySnakeCase, ToSnakeCase};
use syn::meta::ParseNestedMeta;

use crate::attr::Attr;
use crate::ctxt::Ctxt;
use crate::symbol::{
    self, CRATE, DROP_VERSIONS_BEFORE, EVENT, EVENT_KEYS, FIELD_KEYS, NAME, PII, PREVIOUS, RENAMED_FROM, UPCAST,
    VERSION,
};

const EVENT_ATTRIBUTE: &str = "event attribute";
const FIELD_ATTRIBUTE: &str = "field attribute";

/// The attributes of the struct.
pub(crate) struct Container {
    /// `name = "user.created"`.
    pub(crate) name: Option<syn::LitStr>,
    /// `version = "1.0.0"`.
    pub(crate) version: Option<syn::LitStr>,
    /// `crate = "path"`: where generated code finds the runtime.
    pub(crate) krate: Option<syn::Path>,
    /// `previous = Type`: the type of the previous version of this event.
    pub(crate) previous: Option<syn::Type>,
    /// `upcast = "manual"` or `"auto"`.
    pub(crate) upcast: Option<syn::LitStr>,
    /// `drop_versions_before = "2.0.0"`: older stored events are not read.
    pub(crate) drop_versions_before: Option<syn::LitStr>,
    /// serde's `rename_all` (the serialize side).
    pub(crate) rename_all: Option<String>,
    /// serde's container `default`: every field may be absent.
    pub(crate) serde_default: bool,
}

/// The attributes of one field.
pub(crate) struct Field {
    /// `pii`, with the key's path for spans.
    pub(crate) pii: Option<syn::Path>,
    /// `renamed_from = "old"`.
    pub(crate) renamed_from: Option<syn::LitStr>,
    /// serde's `rename` (the serialize side).
    pub(crate) serde_rename: Option<String>,
    /// serde's `skip` or `skip_serializing`.
    pub(crate) serde_skip: bool,
    /// serde's field `default`: the field may be absent.
    pub(crate) serde_default: bool,
}

/// The string literal of `key = "…"`, or an error that shows `example`.
fn string_value(cx: &Ctxt, meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> Option<syn::LitStr> {
    let Ok(value) = meta.value() else {
        cx.error_spanned_by(&meta.path, format!("`{key}` needs a value: `{key} = {example}`"));
        return None;
    };
    match value.parse::<syn::Expr>() {
        Ok(syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. })) => Some(s),
        Ok(other) => {
            cx.error_spanned_by(other, format!("expected a string literal: `{key} = {example}`"));
            None
        }
        Err(e) => {
            cx.syn_error(e);
            None
        }
    }
}

/// Skips the value of a key, if any, so parsing goes on after an error.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

/// Skips the value of a serde key, which may be any tokens up to the next comma.
fn skip_serde_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<proc_macro2::TokenStream>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_serde_value(&inner))?;
    }
    Ok(())
}

/// Reads serde's `rename = ".."` or `rename(serialize = "..", ..)`: the serialize side.
fn serde_rename(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<String>> {
    if meta.input.peek(syn::Token![=]) {
        return Ok(Some(meta.value()?.parse::<syn::LitStr>()?.value()));
    }
    let mut out = None;
    meta.parse_nested_meta(|inner| {
        let value = inner.value()?.parse::<syn::LitStr>()?.value();
        if inner.path.is_ident("serialize") {
            out = Some(value);
        }
        Ok(())
    })?;
    Ok(out)
}

impl Container {
    /// Parses the attributes of `input`, recording errors in `cx`.
    pub(crate) fn from_ast(cx: &Ctxt, input: &syn::DeriveInput) -> Self {
        let mut name = Attr::none(cx, EVENT_ATTRIBUTE, NAME);
        let mut version = Attr::none(cx, EVENT_ATTRIBUTE, VERSION);
        let mut krate = Attr::none(cx, EVENT_ATTRIBUTE, CRATE);
        let mut previous = Attr::none(cx, EVENT_ATTRIBUTE, PREVIOUS);
        let mut upcast = Attr::none(cx, EVENT_ATTRIBUTE, UPCAST);
        let mut drop_versions_before = Attr::none(cx, EVENT_ATTRIBUTE, DROP_VERSIONS_BEFORE);
        let mut rename_all = None;
        let mut serde_default = false;

        for attr in &input.attrs {
            if attr.path().is_ident("serde") {
                // Only the keys that change JSON keys matter; serde reports anything wrong.
                let _ = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("rename_all") {
                        rename_all = serde_rename(&meta)?.or(rename_all.take());
                    } else {
                        serde_default |= meta.path.is_ident("default");
                        skip_serde_value(&meta)?;
                    }
                    Ok(())
                });
                continue;
            }
            if !attr.path().is_ident(EVENT) {
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                let key = path_str(&meta.path);
                match key.as_str() {
                    NAME => name.set_opt(&meta.path, string_value(cx, &meta, NAME, "\"user.created\"")),
                    VERSION => version.set_opt(&meta.path, string_value(cx, &meta, VERSION, "\"1.0.0\"")),
                    CRATE => {
                        if let Some(lit) = string_value(cx, &meta, CRATE, "\"::better_auth_events\"") {
                            match lit.parse::<syn::Path>() {
                                Ok(path) => krate.set(&meta.path, path),
                                Err(_) => cx.error_spanned_by(&lit, format!("`{}` is not a path", lit.value())),
                            }
                        }
                    }
                    PREVIOUS => match meta.value().and_then(|v| v.parse::<syn::Type>()) {
                        Ok(ty) => previous.set(&meta.path, ty),
                        Err(_) => cx.error_spanned_by(
                            &meta.path,
                            "`previous` names the type of the previous version: `previous = UserCreatedV1`",
                        ),
                    },
                    UPCAST => {
                        if let Some(lit) = string_value(cx, &meta, UPCAST, "\"manual\"") {
                            match lit.value().as_str() {
                                "manual" | "auto" => upcast.set(&meta.path, lit),
                                other => cx.error_spanned_by(
                                    &lit,
                                    format!(
                                        "unknown upcast `{other}`; expected `\"auto\"` (generated) or `\"manual\"` (you implement `Upcast`)"
                                    ),
                                ),
                            }
                        }
                    }
                    DROP_VERSIONS_BEFORE => drop_versions_before
                        .set_opt(&meta.path, string_value(cx, &meta, DROP_VERSIONS_BEFORE, "\"2.0.0\"")),
                    PII => {
                        cx.error_spanned_by(
                            &meta.path,
                            "`pii` marks a field: put `#[event(pii)]` on the field that holds personal data",
                        );
                        skip_value(&meta)?;
                    }
                    RENAMED_FROM => {
                        cx.error_spanned_by(
                            &meta.path,
                            "`renamed_from` marks a field: put `#[event(renamed_from = \"old_key\")]` on the renamed field",
                        );
                        skip_value(&meta)?;
                    }
                    _ => {
                        cx.error_spanned_by(
                            &meta.path,
                            format!("unknown event attribute `{key}`; expected {}", symbol::one_of(EVENT_KEYS)),
                        );
                        skip_value(&meta)?;
                    }
                }
                Ok(())
            });
            if let Err(e) = result {
                cx.syn_error(e);
            }
        }
        Self {
            name: name.get(),
            version: version.get(),
            krate: krate.get(),
            previous: previous.get(),
            upcast: upcast.get(),
            drop_versions_before: drop_versions_before.get(),
            rename_all,
            serde_default,
        }
    }

    /// Whether `upcast = "manual"` was given.
    pub(crate) fn manual_upcast(&self) -> bool {
        self.upcast.as_ref().is_some_and(|u| u.value() == "manual")
    }
}

impl Field {
    /// Parses the attributes of `field`, recording errors in `cx`.
    pub(crate) fn from_ast(cx: &Ctxt, field: &syn::Field) -> Self {
        let mut pii = Attr::none(cx, FIELD_ATTRIBUTE, PII);
        let mut renamed_from = Attr::none(cx, FIELD_ATTRIBUTE, RENAMED_FROM);
        let mut serde_rename_value = None;
        let mut serde_skip = false;
        let mut serde_default = false;

        for attr in &field.attrs {
            if attr.path().is_ident("serde") {
                let _ = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("rename") {
                        serde_rename_value = serde_rename(&meta)?.or(serde_rename_value.take());
                    } else {
                        serde_skip |= meta.path.is_ident("skip") || meta.path.is_ident("skip_serializing");
                        serde_default |= meta.path.is_ident("default");
                        skip_serde_value(&meta)?;
                    }
                    Ok(())
                });
                continue;
            }
            if !attr.path().is_ident(EVENT) {
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                let key = path_str(&meta.path);
                match key.as_str() {
                    RENAMED_FROM => {
                        if let Some(lit) = string_value(cx, &meta, RENAMED_FROM, "\"old_name\"") {
                            if lit.value().trim().is_empty() {
                                cx.error_spanned_by(&lit, "`renamed_from` needs the field's previous JSON key");
                            } else {
                                renamed_from.set(&meta.path, lit);
                            }
                        }
                    }
                    PII if meta.input.peek(syn::Token![=]) => {
                        cx.error_spanned_by(&meta.path, "`pii` takes no value: write `#[event(pii)]`");
                        skip_value(&meta)?;
                    }
                    PII => pii.set(&meta.path, meta.path.clone()),
                    _ => {
                        let hint = if EVENT_KEYS.contains(&key.as_str()) {
                            format!("; `{key}` belongs on the struct, not on a field")
                        } else {
                            String::new()
                        };
                        cx.error_spanned_by(
                            &meta.path,
                            format!("unknown field attribute `{key}`; expected {}{hint}", symbol::one_of(FIELD_KEYS)),
                        );
                        skip_value(&meta)?;
                    }
                }
                Ok(())
            });
            if let Err(e) = result {
                cx.syn_error(e);
            }
        }
        Self {
            pii: pii.get(),
            renamed_from: renamed_from.get(),
            serde_rename: serde_rename_value,
            serde_skip,
            serde_default,
        }
    }
}

/// A path as written, without spaces (`a::b`).
pub(crate) fn path_str(path: &syn::Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    format!("{}{}", if path.leading_colon.is_some() { "::" } else { "" }, segments.join("::"))
}

/// serde's rename rule applied to a field name.
pub(crate) fn apply_rename_all(rule: &str, field: &str) -> Option<String> {
    Some(match rule {
        "lowercase" => field.to_lowercase(),
        "UPPERCASE" => field.to_uppercase(),
        "PascalCase" => field.to_pascal_case(),
        "camelCase" => field.to_lower_camel_case(),
        "snake_case" => field.to_snake_case(),
        "SCREAMING_SNAKE_CASE" => field.to_shouty_snake_case(),
        "kebab-case" => field.to_kebab_case(),
        "SCREAMING-KEBAB-CASE" => field.to_shouty_kebab_case(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_all_follows_serde_rules() {
        assert_eq!(apply_rename_all("camelCase", "user_id").as_deref(), Some("userId"));
        assert_eq!(apply_rename_all("SCREAMING_SNAKE_CASE", "user_id").as_deref(), Some("USER_ID"));
        assert_eq!(apply_rename_all("kebab-case", "user_id").as_deref(), Some("user-id"));
        assert_eq!(apply_rename_all("PascalCase", "user_id").as_deref(), Some("UserId"));
        assert_eq!(apply_rename_all("nonsense", "user_id"), None);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[event(nmae = "x", version = "1.0.0", version = "2.0.0")]
            struct S { #[event(secret)] a: String }
        };
        let cx = Ctxt::new();
        Container::from_ast(&cx, &input);
        let syn::Data::Struct(data) = &input.data else { panic!("struct") };
        for f in &data.fields {
            Field::from_ast(&cx, f);
        }
        let err = cx.check().unwrap_err();
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("unknown event attribute `nmae`"));
        assert_eq!(messages[1], "duplicate event attribute `version`");
        assert!(messages[2].starts_with("unknown field attribute `secret`; expected `pii` or `renamed_from`"));
    }

    #[test]
    fn serde_renames_are_read_on_the_serialize_side() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[serde(rename_all(serialize = "camelCase", deserialize = "snake_case"), default)]
            struct S {
                #[serde(rename(serialize = "out", deserialize = "in"))] a: String,
                #[serde(skip_serializing, default = "x")] b: String,
            }
        };
        let cx = Ctxt::new();
        let c = Container::from_ast(&cx, &input);
        let syn::Data::Struct(data) = &input.data else { panic!("struct") };
        let fields: Vec<Field> = data.fields.iter().map(|f| Field::from_ast(&cx, f)).collect();
        assert!(cx.check().is_ok());
        assert_eq!(c.rename_all.as_deref(), Some("camelCase"));
        assert!(c.serde_default);
        assert_eq!(fields[0].serde_rename.as_deref(), Some("out"));
        assert!(fields[1].serde_skip && fields[1].serde_default);
    }
}
