//! Parsing of `#[handler(..)]` arguments.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;

use crate::attr::Attr;
use crate::ctxt::Ctxt;
use crate::symbol::{
    self, ASYNC, BACKOFF, BACKOFFS, BASE, CRATE, HANDLER_KEYS, JITTER, MAX_ATTEMPTS, MAX_DELAY, NAME, PRIORITY, RETRY,
    RETRY_KEYS, SYNC, TIMEOUT,
};

/// A duration literal with its value.
pub(crate) struct DurationLit {
    pub(crate) value: Duration,
}

/// `retry(..)`.
#[derive(Default)]
pub(crate) struct Retry {
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<String>,
    pub(crate) base: Option<DurationLit>,
    pub(crate) max_delay: Option<DurationLit>,
    pub(crate) jitter: Option<bool>,
}

/// Everything `#[handler(..)]` says.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) is_async: bool,
    pub(crate) mode_span: Option<Span>,
    pub(crate) name: Option<syn::LitStr>,
    pub(crate) priority: Option<i32>,
    pub(crate) timeout: Option<DurationLit>,
    pub(crate) retry: Option<Retry>,
    pub(crate) retry_span: Option<Span>,
    pub(crate) krate: Option<syn::Path>,
}

fn key_of(path: &syn::Path) -> String {
    crate::event::path_str(path)
}

fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _ = meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

fn lit_str(meta: &syn::meta::ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<syn::LitStr> {
    let err = || syn::Error::new_spanned(&meta.path, format!("`{key}` needs a value: `{key} = {example}`"));
    let value = meta.value().map_err(|_| err())?;
    match value.parse::<syn::Expr>()? {
        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Ok(s),
        other => Err(syn::Error::new_spanned(other, format!("expected a string literal: `{key} = {example}`"))),
    }
}

fn duration(meta: &syn::meta::ParseNestedMeta<'_>, key: &str) -> syn::Result<DurationLit> {
    let lit = lit_str(meta, key, "\"500ms\"")?;
    let text = lit.value();
    match humantime::parse_duration(&text) {
        Ok(value) if value.is_zero() => Err(syn::Error::new_spanned(&lit, format!("`{key}` must be longer than zero"))),
        Ok(value) => Ok(DurationLit { value }),
        Err(e) => Err(syn::Error::new_spanned(
            &lit,
            format!("invalid duration `{text}` for `{key}`: {e}; write it like \"200ms\", \"5s\" or \"1m 30s\""),
        )),
    }
}

const RETRY_OPTION: &str = "retry option";
const HANDLER_ARGUMENT: &str = "handler argument";

fn retry(cx: &Ctxt, meta: &syn::meta::ParseNestedMeta<'_>) -> Retry {
    let mut max_attempts = Attr::none(cx, RETRY_OPTION, MAX_ATTEMPTS);
    let mut backoff = Attr::none(cx, RETRY_OPTION, BACKOFF);
    let mut base = Attr::none(cx, RETRY_OPTION, BASE);
    let mut max_delay = Attr::none(cx, RETRY_OPTION, MAX_DELAY);
    let mut jitter = Attr::none(cx, RETRY_OPTION, JITTER);
    if !meta.input.peek(syn::token::Paren) {
        cx.error_spanned_by(
            &meta.path,
            "`retry` takes options: `retry(max_attempts = 5, backoff = \"exponential\", base = \"200ms\")`",
        );
        let _ = skip_value(meta);
        return Retry::default();
    }
    let result = meta.parse_nested_meta(|inner| {
        let key = key_of(&inner.path);
        let outcome: syn::Result<()> = (|| {
            match key.as_str() {
                MAX_ATTEMPTS => {
                    let lit: syn::LitInt = inner
                        .value()?
                        .parse()
                        .map_err(|e| syn::Error::new(e.span(), "expected an integer: `max_attempts = 5`"))?;
                    let n: u32 = lit.base10_parse()?;
                    if n == 0 {
                        return Err(syn::Error::new_spanned(
                            &lit,
                            "`max_attempts` counts the first attempt too, so it must be at least 1",
                        ));
                    }
                    max_attempts.set(&inner.path, n);
                }
                BACKOFF => {
                    let lit = lit_str(&inner, BACKOFF, "\"exponential\"")?;
                    let v = lit.value();
                    if !BACKOFFS.contains(&v.as_str()) {
                        return Err(syn::Error::new_spanned(
                            &lit,
                            format!("unknown backoff `{v}`; expected {}", symbol::one_of(BACKOFFS)),
                        ));
                    }
                    backoff.set(&inner.path, v);
                }
                BASE => {
                    let d = duration(&inner, BASE)?;
                    base.set(&inner.path, d);
                }
                MAX_DELAY => {
                    let d = duration(&inner, MAX_DELAY)?;
                    max_delay.set(&inner.path, d);
                }
                JITTER => {
                    let on = if inner.input.peek(syn::Token![=]) {
                        inner.value()?.parse::<syn::LitBool>()?.value
                    } else {
                        true
                    };
                    jitter.set(&inner.path, on);
                }
                _ => {
                    cx.error_spanned_by(
                        &inner.path,
                        format!("unknown retry option `{key}`; expected {}", symbol::one_of(RETRY_KEYS)),
                    );
                    skip_value(&inner)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            cx.syn_error(e);
            // Skip what is left of this option so the next ones still parse.
            while !inner.input.is_empty() && !inner.input.peek(syn::Token![,]) {
                let _ = inner.input.parse::<proc_macro2::TokenTree>();
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        cx.syn_error(e);
    }
    let r = Retry {
        max_attempts: max_attempts.get(),
        backoff: backoff.get(),
        base: base.get(),
        max_delay: max_delay.get(),
        jitter: jitter.get(),
    };
    if let (Some(base), Some(max)) = (&r.base, &r.max_delay)
        && base.value > max.value
    {
        cx.error_spanned_by(&meta.path, "retry `base` is longer than `max_delay`");
    }
    r
}

pub(crate) fn parse(cx: &Ctxt, tokens: TokenStream) -> Args {
    let mut args = Args::default();
    let mut name = Attr::none(cx, HANDLER_ARGUMENT, NAME);
    let mut priority = Attr::none(cx, HANDLER_ARGUMENT, PRIORITY);
    let mut timeout = Attr::none(cx, HANDLER_ARGUMENT, TIMEOUT);
    let mut retry_attr = Attr::none(cx, HANDLER_ARGUMENT, RETRY);
    let mut krate = Attr::none(cx, HANDLER_ARGUMENT, CRATE);
    let parser = syn::meta::parser(|meta| {
        let key = key_of(&meta.path);
        let outcome: syn::Result<()> = (|| {
            match key.as_str() {
                ASYNC | SYNC => {
                    if meta.input.peek(syn::Token![=]) {
                        return Err(syn::Error::new_spanned(
                            &meta.path,
                            format!("`{key}` takes no value: write `#[handler({key})]`"),
                        ));
                    }
                    if args.mode_span.is_some() {
                        cx.error_spanned_by(
                            &meta.path,
                            "conflicting handler modes: give either `sync` or `async`, once",
                        );
                    } else {
                        args.is_async = key == ASYNC;
                        args.mode_span = Some(syn::spanned::Spanned::span(&meta.path));
                    }
                }
                NAME => {
                    let lit = lit_str(&meta, NAME, "\"send_welcome\"")?;
                    if lit.value().trim().is_empty() {
                        return Err(syn::Error::new_spanned(&lit, "a handler name cannot be empty"));
                    }
                    name.set(&meta.path, lit);
                }
                PRIORITY => {
                    let expr: syn::Expr = meta.value()?.parse()?;
                    let n = match &expr {
                        syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(i), .. }) => i.base10_parse::<i32>()?,
                        syn::Expr::Unary(syn::ExprUnary { op: syn::UnOp::Neg(_), expr: inner, .. }) => match &**inner {
                            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(i), .. }) => -i.base10_parse::<i32>()?,
                            _ => return Err(syn::Error::new_spanned(&expr, "expected an integer: `priority = 10`")),
                        },
                        _ => return Err(syn::Error::new_spanned(&expr, "expected an integer: `priority = 10`")),
                    };
                    priority.set(&meta.path, n);
                }
                TIMEOUT => {
                    let d = duration(&meta, TIMEOUT)?;
                    timeout.set(&meta.path, d);
                }
                RETRY => {
                    let r = retry(cx, &meta);
                    args.retry_span.get_or_insert(syn::spanned::Spanned::span(&meta.path));
                    retry_attr.set(&meta.path, r);
                }
                CRATE => {
                    let lit = lit_str(&meta, CRATE, "\"::better_auth_events\"")?;
                    let path = lit
                        .parse::<syn::Path>()
                        .map_err(|_| syn::Error::new_spanned(&lit, format!("`{}` is not a path", lit.value())))?;
                    krate.set(&meta.path, path);
                }
                _ => {
                    cx.error_spanned_by(
                        &meta.path,
                        format!("unknown handler argument `{key}`; expected {}", symbol::one_of(HANDLER_KEYS)),
                    );
                    skip_value(&meta)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            cx.syn_error(e);
            while !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                let _ = meta.input.parse::<proc_macro2::TokenTree>();
            }
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        cx.syn_error(e);
    }
    args.name = name.get();
    args.priority = priority.get();
    args.timeout = timeout.get();
    args.retry = retry_attr.get();
    args.krate = krate.get();
    if let (Some(span), false) = (args.retry_span, args.is_async) {
        cx.syn_error(syn::Error::new(
            span,
            "`retry` applies to async handlers: write `#[handler(async, retry(..))]`; a sync handler's error goes straight to the emitter",
        ));
    }
    args
}
