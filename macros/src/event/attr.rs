//! Parsing of `#[event(..)]` on the struct and its fields, and of the serde attributes that
//! change a field's JSON key.

use heck::{ToKebabCase, ToLowerCamelCase, ToPascalCase, ToShoutyKebabCase, ToShoutySnakeCase, ToSnakeCase};
use syn::spanned::Spanned;

use crate::ctxt::Ctxt;
use crate::symbol::{self, CRATE, EVENT, EVENT_KEYS, FIELD_KEYS, NAME, PII, PREVIOUS, RENAMED_FROM, UPCAST, VERSION};

/// The container attributes.
pub(crate) struct Container {
    pub(crate) name: Option<syn::LitStr>,
    pub(crate) version: Option<syn::LitStr>,
    pub(crate) krate: Option<syn::Path>,
    /// `previous = Type`: the type of the previous version of this event.
    pub(crate) previous: Option<syn::Type>,
    /// `upcast = "manual"`: the user implements `Upcast<Previous>`.
    pub(crate) manual_upcast: Option<syn::LitStr>,
    /// serde's `rename_all` (the serialize side).
    pub(crate) rename_all: Option<String>,
    /// serde's container `default`: every field may be absent.
    pub(crate) serde_default: bool,
}

/// The field attributes that matter to the derive.
pub(crate) struct Field {
    /// The field's JSON key (`None` when serde skips it).
    pub(crate) json_key: Option<String>,
    pub(crate) pii: Option<proc_macro2::Span>,
    /// `renamed_from = "old"`.
    pub(crate) renamed_from: Option<syn::LitStr>,
    /// serde's field `default`: the field may be absent.
    pub(crate) serde_default: bool,
}

fn string_value(cx: &Ctxt, meta: &syn::meta::ParseNestedMeta<'_>, key: &str, example: &str) -> Option<syn::LitStr> {
    let value = match meta.value() {
        Ok(v) => v,
        Err(_) => {
            cx.error_spanned_by(&meta.path, format!("`{key}` needs a value: `{key} = {example}`"));
            return None;
        }
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

pub(crate) fn container(cx: &Ctxt, input: &syn::DeriveInput) -> Container {
    let mut out = Container {
        name: None,
        version: None,
        krate: None,
        previous: None,
        manual_upcast: None,
        rename_all: None,
        serde_default: false,
    };
    for attr in &input.attrs {
        if attr.path().is_ident("serde") {
            // Only `rename_all` matters here; serde itself reports anything wrong.
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename_all") {
                    if let Ok(v) = meta.value() {
                        if let Ok(s) = v.parse::<syn::LitStr>() {
                            out.rename_all = Some(s.value());
                        } else {
                            // rename_all(serialize = "..", deserialize = "..")
                            let _ = v.parse::<proc_macro2::TokenStream>();
                        }
                    } else {
                        let _ = meta.parse_nested_meta(|inner| {
                            if inner.path.is_ident("serialize") {
                                out.rename_all = Some(inner.value()?.parse::<syn::LitStr>()?.value());
                            } else {
                                let _ = inner.value()?.parse::<syn::LitStr>()?;
                            }
                            Ok(())
                        });
                    }
                } else if meta.path.is_ident("default") {
                    out.serde_default = true;
                    if meta.input.peek(syn::Token![=]) {
                        let _ = meta.value()?.parse::<proc_macro2::TokenStream>();
                    }
                } else if meta.input.peek(syn::Token![=]) {
                    let _ = meta.value()?.parse::<proc_macro2::TokenStream>();
                } else if meta.input.peek(syn::token::Paren) {
                    let _ = meta.parse_nested_meta(|_| Ok(()));
                }
                Ok(())
            });
            continue;
        }
        if !attr.path().is_ident(EVENT) {
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
            match key.as_str() {
                NAME => {
                    if let Some(v) = string_value(cx, &meta, NAME, "\"user.created\"") {
                        if out.name.is_some() {
                            cx.error_spanned_by(&meta.path, "duplicate event attribute `name`");
                        } else {
                            out.name = Some(v);
                        }
                    }
                }
                VERSION => {
                    if let Some(v) = string_value(cx, &meta, VERSION, "\"1.0.0\"") {
                        if out.version.is_some() {
                            cx.error_spanned_by(&meta.path, "duplicate event attribute `version`");
                        } else {
                            out.version = Some(v);
                        }
                    }
                }
                CRATE => {
                    if let Some(v) = string_value(cx, &meta, CRATE, "\"::better_auth_events\"") {
                        if out.krate.is_some() {
                            cx.error_spanned_by(&meta.path, "duplicate event attribute `crate`");
                        } else {
                            match v.parse::<syn::Path>() {
                                Ok(p) => out.krate = Some(p),
                                Err(_) => cx.error_spanned_by(&v, format!("`{}` is not a path", v.value())),
                            }
                        }
                    }
                }
                PREVIOUS => match meta.value().and_then(|v| v.parse::<syn::Type>()) {
                    Ok(ty) => {
                        if out.previous.is_some() {
                            cx.error_spanned_by(&meta.path, "duplicate event attribute `previous`");
                        } else {
                            out.previous = Some(ty);
                        }
                    }
                    Err(_) => cx.error_spanned_by(
                        &meta.path,
                        "`previous` names the type of the previous version: `previous = UserCreatedV1`",
                    ),
                },
                UPCAST => {
                    if let Some(v) = string_value(cx, &meta, UPCAST, "\"manual\"") {
                        match v.value().as_str() {
                            "manual" | "auto" if out.manual_upcast.is_some() => {
                                cx.error_spanned_by(&meta.path, "duplicate event attribute `upcast`")
                            }
                            "manual" | "auto" => out.manual_upcast = Some(v),
                            other => cx.error_spanned_by(
                                &v,
                                format!(
                                    "unknown upcast `{other}`; expected `\"auto\"` (generated) or `\"manual\"` (you implement `Upcast`)"
                                ),
                            ),
                        }
                    }
                }
                PII => {
                    cx.error_spanned_by(
                        &meta.path,
                        "`pii` marks a field: put `#[event(pii)]` on the field that holds personal data",
                    );
                }
                RENAMED_FROM => {
                    cx.error_spanned_by(
                        &meta.path,
                        "`renamed_from` marks a field: put `#[event(renamed_from = \"old_key\")]` on the renamed field",
                    );
                    if meta.input.peek(syn::Token![=]) {
                        let _ = meta.value()?.parse::<syn::Expr>();
                    }
                }
                _ => {
                    cx.error_spanned_by(
                        &meta.path,
                        format!(
                            "unknown event attribute `{}`; expected {}",
                            path_str(&meta.path),
                            symbol::one_of(EVENT_KEYS)
                        ),
                    );
                    // Skip its value, if any, so parsing goes on.
                    if meta.input.peek(syn::Token![=]) {
                        let _ = meta.value()?.parse::<syn::Expr>();
                    } else if meta.input.peek(syn::token::Paren) {
                        let _ = meta.parse_nested_meta(|_| Ok(()));
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    out
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

pub(crate) fn field(cx: &Ctxt, container: &Container, field: &syn::Field) -> Field {
    let ident = field.ident.as_ref().map(|i| {
        let s = i.to_string();
        s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
    });
    let mut json_key = match (&ident, &container.rename_all) {
        (Some(name), Some(rule)) => apply_rename_all(rule, name).or(Some(name.clone())),
        (Some(name), None) => Some(name.clone()),
        (None, _) => None,
    };
    let mut pii = None;
    let mut renamed_from: Option<syn::LitStr> = None;
    let mut serde_default = false;
    for attr in &field.attrs {
        if attr.path().is_ident("serde") {
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    if let Ok(v) = meta.value() {
                        json_key = Some(v.parse::<syn::LitStr>()?.value());
                    } else {
                        meta.parse_nested_meta(|inner| {
                            let value = inner.value()?.parse::<syn::LitStr>()?.value();
                            if inner.path.is_ident("serialize") {
                                json_key = Some(value);
                            }
                            Ok(())
                        })?;
                    }
                } else if meta.path.is_ident("skip") || meta.path.is_ident("skip_serializing") {
                    json_key = None;
                } else if meta.path.is_ident("default") {
                    serde_default = true;
                    if meta.input.peek(syn::Token![=]) {
                        let _ = meta.value()?.parse::<proc_macro2::TokenStream>();
                    }
                } else if meta.input.peek(syn::Token![=]) {
                    let _ = meta.value()?.parse::<proc_macro2::TokenStream>();
                } else if meta.input.peek(syn::token::Paren) {
                    let _ = meta.parse_nested_meta(|_| Ok(()));
                }
                Ok(())
            });
            continue;
        }
        if !attr.path().is_ident(EVENT) {
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(RENAMED_FROM) {
                if let Some(v) = string_value(cx, &meta, RENAMED_FROM, "\"old_name\"") {
                    if renamed_from.is_some() {
                        cx.error_spanned_by(&meta.path, "duplicate field attribute `renamed_from`");
                    } else if v.value().trim().is_empty() {
                        cx.error_spanned_by(&v, "`renamed_from` needs the field's previous JSON key");
                    } else {
                        renamed_from = Some(v);
                    }
                }
            } else if meta.path.is_ident(PII) {
                if meta.input.peek(syn::Token![=]) {
                    cx.error_spanned_by(&meta.path, "`pii` takes no value: write `#[event(pii)]`");
                    let _ = meta.value()?.parse::<syn::Expr>();
                } else if pii.is_some() {
                    cx.error_spanned_by(&meta.path, "duplicate field attribute `pii`");
                } else {
                    pii = Some(meta.path.span());
                }
            } else {
                let key = path_str(&meta.path);
                let hint = if EVENT_KEYS.contains(&key.as_str()) {
                    format!("; `{key}` belongs on the struct, not on a field")
                } else {
                    String::new()
                };
                cx.error_spanned_by(
                    &meta.path,
                    format!("unknown field attribute `{key}`; expected {}{hint}", symbol::one_of(FIELD_KEYS)),
                );
                if meta.input.peek(syn::Token![=]) {
                    let _ = meta.value()?.parse::<syn::Expr>();
                } else if meta.input.peek(syn::token::Paren) {
                    let _ = meta.parse_nested_meta(|_| Ok(()));
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    Field { json_key, pii, renamed_from, serde_default }
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
    fn pii_keys_follow_serde_renames() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[serde(rename_all = "camelCase")]
            struct S {
                #[event(pii)] email_address: String,
                #[event(pii)] #[serde(rename = "ip")] ip_address: String,
                #[event(pii)] #[serde(skip)] secret: String,
            }
        };
        let cx = Ctxt::default();
        let c = container(&cx, &input);
        let syn::Data::Struct(data) = &input.data else { panic!("struct") };
        let keys: Vec<Option<String>> = data.fields.iter().map(|f| field(&cx, &c, f).json_key).collect();
        assert!(cx.check().is_ok());
        assert_eq!(keys, [Some("emailAddress".into()), Some("ip".into()), None]);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[event(nmae = "x", version = "1.0.0", version = "2.0.0")]
            struct S { #[event(secret)] a: String }
        };
        let cx = Ctxt::default();
        let c = container(&cx, &input);
        let syn::Data::Struct(data) = &input.data else { panic!("struct") };
        for f in &data.fields {
            field(&cx, &c, f);
        }
        let err = cx.check().unwrap_err();
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("unknown event attribute `nmae`"));
        assert_eq!(messages[1], "duplicate event attribute `version`");
        assert!(messages[2].starts_with("unknown field attribute `secret`; expected `pii` or `renamed_from`"));
    }
}
