//! Code generation of `#[derive(Event)]`, from a checked model.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::ast::Container;

/// The path generated code reaches the runtime through: `#[event(crate = ..)]`'s
/// `__private`, or `::better_auth_events::__private`.
pub(crate) fn private_path(cont: &Container<'_>) -> TokenStream {
    match &cont.attrs.krate {
        Some(krate) => quote!(#krate::__private),
        None => quote!(::better_auth_events::__private),
    }
}

/// The `TypedEvent` impl, the upcaster of `previous`, and the registration of the event.
/// `tracked` are the snapshot files the check read.
pub(crate) fn expand(cont: &Container<'_>, tracked: &[PathBuf]) -> TokenStream {
    let private = private_path(cont);
    let ident = cont.ident;
    let name = cont.name();
    let version = cont.version();

    let pii_keys: Vec<&str> =
        cont.serialized_fields().filter(|(f, _)| f.attrs.pii.is_some()).map(|(_, key)| key).collect();
    let (rename_new, rename_old): (Vec<&str>, Vec<String>) =
        cont.serialized_fields().filter_map(|(f, key)| Some((key, f.attrs.renamed_from.as_ref()?.value()))).unzip();
    let shape_keys = cont.serialized_fields().map(|(_, key)| key);
    let shape_types = cont.serialized_fields().map(|(f, _)| f.type_string());
    let shape_optional = cont.serialized_fields().map(|(f, _)| f.optional(&cont.attrs));

    let dropped_before = match &cont.attrs.drop_versions_before {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };

    let previous = cont.attrs.previous.as_ref().map(|prev| {
        let registration = if cont.attrs.manual_upcast() {
            quote_spanned!(prev.span()=> #private::UpcasterRegistration::manual_of::<#ident>())
        } else {
            quote!(#private::UpcasterRegistration::auto_of::<#ident>())
        };
        let checks = quote_spanned! {prev.span()=>
            const _: () = ::core::assert!(
                #private::previous_is_same_event::<#ident>(),
                "`previous` must name an earlier version of the same event: its `#[event(name = ..)]` differs"
            );
            const _: () = ::core::assert!(
                #private::previous_is_earlier::<#ident>(),
                "`previous` must name an earlier version: its `#[event(version = ..)]` is not lower than this one's"
            );
        };
        quote! {
            #[automatically_derived]
            impl #private::PreviousVersion for #ident {
                type Previous = #prev;
            }
            #checks
            #private::inventory::submit! { #registration }
        }
    });

    let tracked = tracked.iter().map(|path| {
        let path = path.to_string_lossy();
        quote!(
            const _: &[u8] = ::core::include_bytes!(#path);
        )
    });

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #private::TypedEvent for #ident {
                const NAME: &'static str = #name;
                const VERSION: &'static str = #version;
                const PII_FIELDS: &'static [&'static str] = &[#(#pii_keys),*];
                const RENAMED_FIELDS: &'static [(&'static str, &'static str)] = &[#((#rename_new, #rename_old)),*];
                const DROPPED_BEFORE: ::core::option::Option<&'static str> = #dropped_before;
                const FIELD_SHAPES: &'static [(&'static str, &'static str, bool)] =
                    &[#((#shape_keys, #shape_types, #shape_optional)),*];
            }

            #previous

            #(#tracked)*

            #private::inventory::submit! {
                #private::EventRegistration::of::<#ident>(::core::module_path!())
            }
        };
    }
}
