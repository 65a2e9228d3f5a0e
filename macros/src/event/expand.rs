//! Code generation of `#[derive(Event)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::{attr, check, lock};
use crate::ctxt::Ctxt;

pub(crate) fn expand(input: &syn::DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::default();
    let container = attr::container(&cx, input);
    let ident = &input.ident;

    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "`#[derive(Event)]` does not support generic parameters: an event has one name, one version and one schema; \
             define a concrete struct for each event",
        );
    }

    let mut pii_keys = Vec::new();
    let mut renames: Vec<(String, String)> = Vec::new();
    // Each serialized field's shape, with the span to point at.
    let mut shapes: Vec<(lock::FieldShape, proc_macro2::Span)> = Vec::new();
    match &input.data {
        syn::Data::Struct(data) => match &data.fields {
            syn::Fields::Named(fields) => {
                for f in &fields.named {
                    let fa = attr::field(&cx, &container, f);
                    if let Some(key) = &fa.json_key {
                        let ty = &f.ty;
                        let is_option = matches!(ty, syn::Type::Path(p) if p.qself.is_none()
                            && p.path.segments.last().is_some_and(|s| s.ident == "Option"));
                        shapes.push((
                            lock::FieldShape {
                                key: key.clone(),
                                ty: quote!(#ty).to_string().replace(' ', ""),
                                optional: is_option || fa.serde_default || container.serde_default,
                            },
                            f.ident.as_ref().map_or_else(|| f.ty.span(), |i| i.span()),
                        ));
                    }
                    if let Some(old) = &fa.renamed_from {
                        match &fa.json_key {
                            Some(key) if *key == old.value() => cx.error_spanned_by(
                                old,
                                format!("`renamed_from` names the field's current key `{key}`; give the key it had in the previous version"),
                            ),
                            Some(key) => renames.push((key.clone(), old.value())),
                            None => cx.error_spanned_by(old, "`renamed_from` on a field serde skips has no effect; remove it"),
                        }
                    }
                    if let Some(span) = fa.pii {
                        match fa.json_key {
                            Some(key) => pii_keys.push(key),
                            None => cx.syn_error(syn::Error::new(
                                span,
                                "`#[event(pii)]` on a field serde skips: the field never leaves the process, so remove `pii`",
                            )),
                        }
                    }
                }
            }
            syn::Fields::Unnamed(fields) => cx.error_spanned_by(
                fields,
                "`#[derive(Event)]` needs named fields (`struct UserCreated { user_id: String }`): \
                 an event's payload is a JSON object whose keys are its field names",
            ),
            syn::Fields::Unit => cx.error_spanned_by(
                ident,
                "`#[derive(Event)]` needs named fields (`struct UserCreated { user_id: String }`); \
                 for an event without data, use `struct Name {}`",
            ),
        },
        syn::Data::Enum(data) => cx.error_spanned_by(
            data.enum_token,
            "`#[derive(Event)]` supports structs with named fields only; define one struct per event instead of an enum",
        ),
        syn::Data::Union(data) => {
            cx.error_spanned_by(data.union_token, "`#[derive(Event)]` supports structs with named fields only, not unions")
        }
    }

    let name = match &container.name {
        Some(lit) => {
            let value = lit.value();
            if let Some(problem) = check::name_problem(&value) {
                cx.error_spanned_by(
                    lit,
                    format!("invalid event name `{value}`: {problem}; use lowercase words separated by dots, such as `user.created`"),
                );
            }
            value
        }
        None => check::default_name(&ident.to_string()),
    };

    let version = match &container.version {
        Some(lit) => {
            let value = lit.value();
            if let Err(e) = check::parse_version(&value) {
                cx.error_spanned_by(
                    lit,
                    format!("invalid event version `{value}`: {e}; use a full semver version such as `1.0.0`"),
                );
            }
            value
        }
        None => "1.0.0".to_owned(),
    };

    if let (Some(upcast), None) = (&container.manual_upcast, &container.previous) {
        cx.error_spanned_by(
            upcast,
            "`upcast` needs `previous`: `#[event(previous = UserCreatedV1, upcast = \"manual\")]`",
        );
    }

    cx.check()?;
    let snapshot = snapshot_check(&name, &version, &ident.to_string(), &shapes, container.version.as_ref(), ident)?;

    let krate = container.krate.clone().unwrap_or_else(|| syn::parse_quote!(::better_auth_events));
    let private = quote!(#krate::__private);
    let (rename_new, rename_old): (Vec<&String>, Vec<&String>) = renames.iter().map(|(n, o)| (n, o)).unzip();
    let shape_keys = shapes.iter().map(|(f, _)| &f.key);
    let shape_types = shapes.iter().map(|(f, _)| &f.ty);
    let shape_optional = shapes.iter().map(|(f, _)| f.optional);
    let previous = container.previous.as_ref().map(|prev| {
        let manual = container.manual_upcast.as_ref().is_some_and(|u| u.value() == "manual");
        let registration = if manual {
            quote_spanned!(prev.span()=> #private::UpcasterRegistration::manual::<#prev, #ident>())
        } else {
            quote!(#private::UpcasterRegistration::auto::<#prev, #ident>())
        };
        let checks = quote_spanned! {prev.span()=>
            const _: () = ::core::assert!(
                #private::same_name(<#prev as #private::TypedEvent>::NAME, <#ident as #private::TypedEvent>::NAME),
                "`previous` must name an earlier version of the same event: its `#[event(name = ..)]` differs"
            );
            const _: () = ::core::assert!(
                #private::version_precedes(<#prev as #private::TypedEvent>::VERSION, <#ident as #private::TypedEvent>::VERSION),
                "`previous` must name an earlier version: its `#[event(version = ..)]` is not lower than this one's"
            );
        };
        quote! {
            const _: () = #private::assert_event::<#prev>();
            #checks
            #private::inventory::submit! { #registration }
        }
    });
    Ok(quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #private::TypedEvent for #ident {
                const NAME: &'static str = #name;
                const VERSION: &'static str = #version;
                const PII_FIELDS: &'static [&'static str] = &[#(#pii_keys),*];
                const RENAMED_FIELDS: &'static [(&'static str, &'static str)] = &[#((#rename_new, #rename_old)),*];
                const FIELD_SHAPES: &'static [(&'static str, &'static str, bool)] =
                    &[#((#shape_keys, #shape_types, #shape_optional)),*];
            }

            #previous

            #snapshot

            #private::inventory::submit! {
                #private::EventRegistration::of::<#ident>(::core::module_path!())
            }
        };
    })
}

/// Compares the struct with its snapshots in `events.lock/` (when that directory exists);
/// in update mode writes this version's snapshot. Returns the `include_bytes!` that make
/// cargo rebuild when a snapshot read here changes.
fn snapshot_check(
    name: &str,
    version: &str,
    type_name: &str,
    shapes: &[(lock::FieldShape, proc_macro2::Span)],
    version_lit: Option<&syn::LitStr>,
    ident: &syn::Ident,
) -> syn::Result<TokenStream> {
    let Some(dir) = lock::dir() else { return Ok(TokenStream::new()) };
    let fields: Vec<lock::FieldShape> = shapes.iter().map(|(f, _)| f.clone()).collect();
    let path = dir.join(lock::file_name(name, version));
    let at_version = || version_lit.map_or_else(|| ident.span(), |l| l.span());
    let span_of = |key: &str| shapes.iter().find(|(f, _)| f.key == key).map_or_else(at_version, |(_, s)| *s);
    let track = |p: &std::path::Path| {
        let p = p.to_string_lossy().into_owned();
        quote!(
            const _: &[u8] = ::core::include_bytes!(#p);
        )
    };
    if lock::update_mode() {
        lock::write(&path, name, version, type_name, &fields).map_err(|e| syn::Error::new(ident.span(), e))?;
        return Ok(track(&path));
    }
    if path.is_file() {
        let released = lock::read(&path).map_err(|e| syn::Error::new(ident.span(), e))?;
        let changes = lock::diff(&released, &fields);
        if let Some(first) = changes.first() {
            let all: Vec<String> = changes.iter().map(lock::ShapeChange::describe).collect();
            return Err(syn::Error::new(
                span_of(first.key()),
                format!(
                    "`{name}` {version} no longer matches its snapshot `events.lock/{}`: {}; a released version never changes, \
                     so bump the version (or, if {version} was never released, run the build with {}=update)",
                    lock::file_name(name, version),
                    all.join(", "),
                    lock::UPDATE_VAR
                ),
            ));
        }
        return Ok(track(&path));
    }
    // A new version: check the bump against the newest earlier snapshot.
    let this = semver::Version::parse(version).map_err(|e| syn::Error::new(at_version(), e.to_string()))?;
    let Some((previous, previous_path)) = lock::versions_of(&dir, name).into_iter().rfind(|(v, _)| *v < this) else {
        return Ok(TokenStream::new());
    };
    let old = lock::read(&previous_path).map_err(|e| syn::Error::new(ident.span(), e))?;
    let changes = lock::diff(&old, &fields);
    let needed = if changes.iter().any(lock::ShapeChange::is_breaking) {
        Some(2)
    } else if !changes.is_empty() {
        Some(1)
    } else {
        None
    };
    let actual = if this.major > previous.major {
        2
    } else if this.minor > previous.minor {
        1
    } else {
        0
    };
    let names = ["patch", "minor", "major"];
    if let Some(needed) = needed
        && actual < needed
    {
        let fix = if needed == 2 {
            semver::Version::new(previous.major + 1, 0, 0)
        } else {
            semver::Version::new(previous.major, previous.minor + 1, 0)
        };
        let all: Vec<String> = changes.iter().map(lock::ShapeChange::describe).collect();
        let why = if needed == 2 {
            "breaks BACKWARD compatibility (a Rust struct is a closed content model)"
        } else {
            "is a compatible change"
        };
        return Err(syn::Error::new(
            at_version(),
            format!(
                "`{name}` {previous} → {version} is a {} bump, but the change since `events.lock/{}` {why}: {}; use version {fix} or later",
                names[actual],
                lock::file_name(name, &previous.to_string()),
                all.join(", ")
            ),
        ));
    }
    Ok(track(&previous_path))
}
