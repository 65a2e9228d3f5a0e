//! Checks of a handler's function: an `async fn`, free, not generic, with exactly one
//! event argument and a `Result` return type.

use super::ast::{Arg, Handler, last_segment};
use crate::ctxt::Ctxt;

/// Records in `cx` every problem of `handler`'s signature.
pub(crate) fn check(cx: &Ctxt, handler: &Handler<'_>) {
    let sig = &handler.func.sig;
    if let Some(c) = &sig.constness {
        cx.error_spanned_by(c, "`#[handler]` requires an `async fn`, not a `const fn`: replace `const` with `async`");
    } else if sig.asyncness.is_none() {
        cx.error_spanned_by(sig.fn_token, "`#[handler]` requires an `async fn`; add `async` before `fn`");
    }
    if let Some(u) = &sig.unsafety {
        cx.error_spanned_by(u, "`#[handler]` functions cannot be `unsafe`");
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            "`#[handler]` functions cannot be generic: a registration needs one concrete event type",
        );
    }
    if let Some(v) = &sig.variadic {
        cx.error_spanned_by(v, "`#[handler]` functions cannot be variadic");
    }
    if let Some(r) = sig.receiver() {
        cx.error_spanned_by(r, "`#[handler]` works on free functions, not methods: move it out of the `impl` block");
    }
    check_event_argument(cx, handler);
    check_return_type(cx, handler);
}

fn check_event_argument(cx: &Ctxt, handler: &Handler<'_>) {
    let sig = &handler.func.sig;
    let typed = sig.inputs.iter().filter_map(|input| match input {
        syn::FnArg::Typed(pat) => Some(&pat.ty),
        syn::FnArg::Receiver(_) => None,
    });
    let mut first: Option<&syn::Type> = None;
    for (arg, ty) in handler.args.iter().zip(typed) {
        if !matches!(arg, Some(Arg::Event(_))) {
            continue;
        }
        match first {
            None => first = Some(ty),
            Some(first) => cx.error_spanned_by(
                ty,
                format!(
                    "a handler takes exactly one event argument, and `{}` came first; register one handler per event",
                    quote::quote!(#first).to_string().replace(" < ", "<").replace(" >", ">").replace("& ", "&")
                ),
            ),
        }
    }
    // An argument already rejected is most likely the event: saying it is missing would
    // only repeat that error. A method is rejected as a whole.
    let rejected = handler.args.iter().any(Option::is_none);
    if first.is_none() && !rejected && sig.receiver().is_none() {
        let span_on: &dyn quote::ToTokens = if sig.inputs.is_empty() { &sig.ident } else { &sig.inputs };
        cx.error_spanned_by(
            span_on,
            "handler has no event argument; take the event as `&E` or `Envelope<E>`, e.g. `async fn on_signup(e: &UserCreated)`",
        );
    }
}

fn check_return_type(cx: &Ctxt, handler: &Handler<'_>) {
    match handler.return_type() {
        None => cx.error_spanned_by(
            &handler.func.sig.ident,
            "handler must return a `Result`: add `-> Result<(), HandlerError>` (or `anyhow::Result<()>`)",
        ),
        Some(ty) if last_segment(ty).is_some_and(|seg| seg.ident == "Result") => {}
        Some(ty) => cx.error_spanned_by(
            ty,
            "handler must return a `Result`: use `Result<(), HandlerError>`, `anyhow::Result<()>` or `Result<(), E>` with your own error",
        ),
    }
}
