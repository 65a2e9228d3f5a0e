//! The macro's model of a handler: what each argument of the function is (the event,
//! a dependency, the context), with the original tokens for spans.

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

/// The function `#[handler]` is on, with its arguments classified.
pub(crate) struct Handler<'a> {
    /// The function as written.
    pub(crate) func: &'a syn::ItemFn,
    /// Its arguments, in order; `None` for one that could not be classified (the error
    /// is recorded).
    pub(crate) args: Vec<Option<Arg>>,
}

impl<'a> Handler<'a> {
    /// Classifies the arguments of `func`, recording unsupported ones in `cx`.
    pub(crate) fn from_ast(cx: &Ctxt, func: &'a syn::ItemFn) -> Self {
        let args = func
            .sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                syn::FnArg::Receiver(_) => None,
                syn::FnArg::Typed(pat) => Some(classify(cx, &pat.ty)),
            })
            .collect();
        Self { func, args }
    }

    /// The event argument: the first argument that takes the event.
    pub(crate) fn event(&self) -> Option<&EventArg> {
        self.args.iter().find_map(|a| match a {
            Some(Arg::Event(e)) => Some(e),
            _ => None,
        })
    }

    /// The declared return type.
    pub(crate) fn return_type(&self) -> Option<&'a syn::Type> {
        match &self.func.sig.output {
            syn::ReturnType::Default => None,
            syn::ReturnType::Type(_, ty) => Some(ty),
        }
    }
}

pub(crate) fn last_segment(ty: &syn::Type) -> Option<&syn::PathSegment> {
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
