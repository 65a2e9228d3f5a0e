//! What the derive emits when the input has errors: the errors, and a `TypedEvent` impl
//! with no registration behind it, so that every use of the type as an event still
//! type-checks and the errors are the only ones the compiler reports.

use proc_macro2::TokenStream;
use quote::quote;

use super::ast::{Container, Data};
use super::expand::private_path;

/// The errors and a stand-in impl.
pub(crate) fn expand(cont: &Container<'_>, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    // A union can be neither serialized nor an event: an impl would only add errors.
    if matches!(cont.data, Data::Union(_)) {
        return error;
    }
    let private = private_path(cont);
    let ident = cont.ident;
    let (impl_generics, ty_generics, where_clause) = cont.generics.split_for_impl();
    // On a generic type the supertraits become bounds, so the impl holds wherever they do.
    let bounds = (!cont.generics.params.is_empty()).then(|| {
        let mut predicates = where_clause.map(|w| w.predicates.clone()).unwrap_or_default();
        predicates.push(syn::parse_quote! {
            Self: #private::serde::Serialize
                + #private::serde::de::DeserializeOwned
                + #private::schemars::JsonSchema
                + ::core::marker::Send
                + ::core::marker::Sync
                + 'static
        });
        quote!(where #predicates)
    });
    let where_clause = bounds.unwrap_or_else(|| quote!(#where_clause));
    quote! {
        #error

        #[doc(hidden)]
        #[allow(unused_qualifications)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::TypedEvent for #ident #ty_generics #where_clause {
                const NAME: &'static str = "";
                const VERSION: &'static str = "0.0.0";
            }
        };
    }
}
