//! `#[derive(Event)]`: parse the attributes (`attr`) into a model (`ast`), check it
//! (`check`, then `snapshot` against `events.lock/`), generate code (`expand`), or on
//! error emit the errors with a stand-in impl (`fallback`).

mod ast;
mod attr;
mod check;
mod expand;
mod fallback;
mod snapshot;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

pub(crate) use attr::path_str;

/// The expansion of `#[derive(Event)]` on `input`.
pub(crate) fn derive(input: &syn::DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let cont = ast::Container::from_ast(&cx, input);
    check::check(&cx, &cont);
    cx.check()
        .and_then(|()| snapshot::check(&cont))
        .map(|tracked| expand::expand(&cont, &tracked))
        .unwrap_or_else(|e| fallback::expand(&cont, e))
}
