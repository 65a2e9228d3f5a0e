//! Code generation of `#[handler]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::ast::{Arg, EventArg, Handler};
use super::attr::{self, Args, DurationLit};
use super::check;
use crate::ctxt::Ctxt;

fn duration(private: &TokenStream, d: &DurationLit) -> TokenStream {
    let secs = d.value.as_secs();
    let nanos = d.value.subsec_nanos();
    quote!(#private::duration(#secs, #nanos))
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new(
                proc_macro2::Span::call_site(),
                "`#[handler]` applies to `async fn` items, such as `async fn send_welcome(e: &UserCreated) -> anyhow::Result<()>`",
            )
            .into_compile_error();
            return quote!(#item #err);
        }
    };
    let cx = Ctxt::new();
    let args = attr::parse(&cx, args);
    let handler = Handler::from_ast(&cx, &func);
    check::check(&cx, &handler);
    match cx.check().and_then(|()| generate(&args, &handler)) {
        Ok(generated) => quote!(#func #generated),
        // Keep the function so the rest of the program still compiles against it.
        Err(e) => {
            let err = e.into_compile_error();
            quote!(#func #err)
        }
    }
}

/// The registration of a checked handler.
fn generate(args: &Args, handler: &Handler<'_>) -> syn::Result<TokenStream> {
    let func = handler.func;
    let (Some(event_arg), Some(ret)) = (handler.event(), handler.return_type()) else {
        return Err(syn::Error::new(func.sig.span(), "handler has no event argument"));
    };

    let krate = args.krate.clone().unwrap_or_else(|| syn::parse_quote!(::better_auth_events));
    let private = quote!(#krate::__private);
    let fn_ident = &func.sig.ident;
    let name = args.name.as_ref().map(syn::LitStr::value).unwrap_or_else(|| {
        let s = fn_ident.to_string();
        s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
    });

    let event_ty = event_arg.event_type();

    // Each requirement on a type the user wrote is stated once, where the generated code
    // uses the type, spanned on it: a second check of the same bound would only repeat
    // the compiler's error.
    let mut extracts = Vec::new();
    let mut call_args = Vec::new();
    let mut requirements = Vec::new();
    for (i, arg) in handler.args.iter().flatten().enumerate() {
        match arg {
            Arg::Event(EventArg::Ref(_)) => call_args.push(quote!(&__bae_env.data)),
            Arg::Event(EventArg::EnvelopeRef(_)) => call_args.push(quote!(__bae_env)),
            Arg::Event(EventArg::Envelope(t)) => {
                call_args.push(quote_spanned!(t.span()=> ::core::clone::Clone::clone(__bae_env)))
            }
            Arg::ContextRef => call_args.push(quote!(__bae_ctx)),
            Arg::Extract(ty) => {
                let var = format_ident!("__bae_arg{}", i);
                extracts.push(quote! {
                    let #var = <#ty as #private::FromContext>::from_context(__bae_ctx)?;
                });
                requirements.push(quote!(<#ty as #private::FromContext>::requirement));
                call_args.push(quote!(#var));
            }
        }
    }
    // Only a handler that reads its context makes the bus hand it the dependencies.
    let uses_context = handler.args.iter().flatten().any(|a| matches!(a, Arg::ContextRef | Arg::Extract(_)));
    let into_result = quote_spanned!(ret.span()=> <#ret as #private::IntoHandlerResult>::into_handler_result);

    let mode = if args.is_async { quote!(#private::HandlerMode::Async) } else { quote!(#private::HandlerMode::Sync) };
    let priority = args.priority.unwrap_or(0);
    let timeout = match &args.timeout {
        Some(d) => {
            let d = duration(&private, d);
            quote!(#private::Option::Some(#d))
        }
        None => quote!(#private::Option::None),
    };
    let retry = match &args.retry {
        Some(r) => {
            let mut fields = Vec::new();
            if let Some(n) = r.max_attempts {
                fields.push(quote!(max_attempts: #n,));
            }
            if let Some(b) = &r.backoff {
                let variant = match b.as_str() {
                    "fixed" => quote!(Fixed),
                    "linear" => quote!(Linear),
                    _ => quote!(Exponential),
                };
                fields.push(quote!(backoff: #private::Backoff::#variant,));
            }
            if let Some(d) = &r.base {
                let d = duration(&private, d);
                fields.push(quote!(base: #d,));
            }
            if let Some(d) = &r.max_delay {
                let d = duration(&private, d);
                fields.push(quote!(max_delay: #d,));
            }
            if let Some(j) = r.jitter {
                fields.push(quote!(jitter: #j,));
            }
            quote!(#private::Option::Some(#private::RetryPolicy {
                #(#fields)*
                ..<#private::RetryPolicy as ::core::default::Default>::default()
            }))
        }
        None => quote!(#private::Option::None),
    };

    Ok(quote! {
        #[doc(hidden)]
        #[allow(non_snake_case, non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            const __BAE_REQUIREMENTS: &[fn() -> #private::Option<#private::DepRequirement>] = &[#(#requirements),*];

            fn __bae_call<'a>(
                __bae_env: &'a #private::Envelope<#event_ty>,
                __bae_ctx: &'a #private::HandlerContext,
            ) -> #private::HandlerFuture<'a> {
                #private::Box::pin(async move {
                    let _ = __bae_ctx;
                    #(#extracts)*
                    #into_result(#fn_ident(#(#call_args),*).await)
                })
            }

            fn __bae_make() -> #private::Handler {
                #private::Handler::from_fn::<#event_ty>(
                    #private::HandlerSpec {
                        name: #name,
                        mode: #mode,
                        priority: #priority,
                        timeout: #timeout,
                        retry: #retry,
                        requirements: __BAE_REQUIREMENTS,
                        uses_context: #uses_context,
                        location: ::core::concat!(::core::module_path!(), "::", #name, ":", ::core::line!()),
                    },
                    __bae_call,
                )
            }

            #private::inventory::submit! {
                #private::HandlerRegistration::new(__bae_make)
            }
        };
    })
}
