//! Classification of a handler's signature: which argument is the event, which are
//! dependencies and context, and whether the return type is a `Result`.

use crate::ctxt::Ctxt;

/// How the handler takes the event.
pub(crate) enum EventArg {
    /// `&E`
    Ref(syn::Type),
    /// `&Envelope<E>`
    EnvelopeRef(syn::Type),
    /// `Envelope<E>` (cloned from the shared envelope)
    Envelope(syn::Type),
}

impl EventArg {
    pub(crate) fn event_type(&self) -> &syn::Type {
        match self {
            Self::Ref(t) | Self::EnvelopeRef(t) | Self::Envelope(t) => t,
        }
    }
}

/// One argument of the handler.
pub(crate) enum Arg {
    Event(EventArg),
    /// `Dep<T>` or `HandlerContext` by value: extracted through `FromContext`.
    Extract(syn::Type),
    /// `&HandlerContext`
    ContextRef,
}

/// The checked signature.
pub(crate) struct Signature {
    pub(crate) args: Vec<Arg>,
    pub(crate) event_index: usize,
    pub(crate) return_type: syn::Type,
}

fn last_segment(ty: &syn::Type) -> Option<&syn::PathSegment> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        syn::Type::Group(g) => last_segment(&g.elem),
        syn::Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

fn single_generic(seg: &syn::PathSegment) -> Option<&syn::Type> {
    match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) if a.args.len() == 1 => match a.args.first() {
            Some(syn::GenericArgument::Type(t)) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

const ARG_HELP: &str = "a handler takes the event as `&E`, `&Envelope<E>` or `Envelope<E>`, \
                        then optionally `Dep<T>` dependencies and `&HandlerContext`";

fn classify(cx: &Ctxt, ty: &syn::Type) -> Option<Arg> {
    match ty {
        syn::Type::Reference(r) => {
            if let Some(m) = &r.mutability {
                cx.error_spanned_by(
                    m,
                    format!("handler arguments cannot be `&mut`: handlers share the event; {ARG_HELP}"),
                );
                return None;
            }
            let seg = last_segment(&r.elem);
            match seg {
                Some(seg) if seg.ident == "HandlerContext" => Some(Arg::ContextRef),
                Some(seg) if seg.ident == "Envelope" => match single_generic(seg) {
                    Some(t) => Some(Arg::Event(EventArg::EnvelopeRef(t.clone()))),
                    None => {
                        cx.error_spanned_by(ty, "`Envelope` needs the event type: `&Envelope<UserCreated>`");
                        None
                    }
                },
                Some(seg) if seg.ident == "Dep" => {
                    cx.error_spanned_by(ty, "take dependencies by value: `Dep<T>`, not `&Dep<T>`");
                    None
                }
                Some(_) => Some(Arg::Event(EventArg::Ref((*r.elem).clone()))),
                None => {
                    cx.error_spanned_by(ty, format!("unsupported handler argument type; {ARG_HELP}"));
                    None
                }
            }
        }
        _ => match last_segment(ty) {
            Some(seg) if seg.ident == "Envelope" => match single_generic(seg) {
                Some(t) => Some(Arg::Event(EventArg::Envelope(t.clone()))),
                None => {
                    cx.error_spanned_by(ty, "`Envelope` needs the event type: `Envelope<UserCreated>`");
                    None
                }
            },
            Some(seg) if seg.ident == "Dep" || seg.ident == "HandlerContext" => Some(Arg::Extract(ty.clone())),
            Some(seg) => {
                let name = seg.ident.to_string();
                cx.error_spanned_by(
                    ty,
                    format!("unsupported handler argument type `{name}`; to take the event, borrow it: `&{name}`; {ARG_HELP}"),
                );
                None
            }
            None => {
                cx.error_spanned_by(ty, format!("unsupported handler argument type; {ARG_HELP}"));
                None
            }
        },
    }
}

pub(crate) fn signature(cx: &Ctxt, sig: &syn::Signature) -> Option<Signature> {
    if sig.asyncness.is_none() {
        cx.error_spanned_by(sig.fn_token, "`#[handler]` requires an `async fn`; add `async` before `fn`");
    }
    if let Some(c) = &sig.constness {
        cx.error_spanned_by(c, "`#[handler]` functions cannot be `const`");
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

    let mut args = Vec::new();
    let mut event_index = None;
    let mut first_event: Option<&syn::Type> = None;
    for input in &sig.inputs {
        match input {
            syn::FnArg::Receiver(r) => {
                cx.error_spanned_by(
                    r,
                    "`#[handler]` works on free functions, not methods: move it out of the `impl` block",
                );
            }
            syn::FnArg::Typed(pat) => match classify(cx, &pat.ty) {
                Some(Arg::Event(e)) => {
                    if let Some(first) = first_event {
                        cx.error_spanned_by(
                            &pat.ty,
                            format!(
                                "a handler takes exactly one event argument, and `{}` came first; register one handler per event",
                                quote::quote!(#first).to_string().replace(" < ", "<").replace(" >", ">").replace("& ", "&")
                            ),
                        );
                    } else {
                        first_event = Some(&pat.ty);
                        event_index = Some(args.len());
                    }
                    args.push(Arg::Event(e));
                }
                Some(other) => args.push(other),
                None => {}
            },
        }
    }
    if event_index.is_none() && sig.receiver().is_none() {
        let span_on: &dyn quote::ToTokens = if sig.inputs.is_empty() { &sig.ident } else { &sig.inputs };
        cx.error_spanned_by(
            span_on,
            "handler has no event argument; take the event as `&E` or `Envelope<E>`, e.g. `async fn on_signup(e: &UserCreated)`",
        );
    }

    let return_type = match &sig.output {
        syn::ReturnType::Default => {
            cx.error_spanned_by(
                &sig.ident,
                "handler must return a `Result`: add `-> Result<(), HandlerError>` (or `anyhow::Result<()>`)",
            );
            None
        }
        syn::ReturnType::Type(_, ty) => match last_segment(ty) {
            Some(seg) if seg.ident == "Result" => Some((**ty).clone()),
            _ => {
                cx.error_spanned_by(
                    ty,
                    "handler must return a `Result`: use `Result<(), HandlerError>`, `anyhow::Result<()>` or `Result<(), E>` with your own error",
                );
                None
            }
        },
    };
    Some(Signature { args, event_index: event_index?, return_type: return_type? })
}
