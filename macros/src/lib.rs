//! Procedural macros of [better-auth-events](https://docs.rs/better-auth-events):
//! `#[derive(Event)]` and `#[handler]`.
//!
//! Use them through the `better-auth-events` crate; the generated code refers to it as
//! `::better_auth_events` (override with `crate = "path"`).

use proc_macro::TokenStream;

mod attr;
mod ctxt;
mod event;
mod handler;
mod symbol;

/// Turns a struct into a versioned, registered event. See `better_auth_events::Event`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::derive(&input).into()
}

/// Turns an `async fn` into a registered event handler. See `better_auth_events::handler`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}
