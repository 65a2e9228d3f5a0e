//! A value given at most once in an attribute, shared by both macros' parsers.

use quote::ToTokens;

use crate::ctxt::Ctxt;

/// An attribute key that may be given once: a second occurrence is the error
/// "duplicate {what} `{name}`", spanned on that second occurrence.
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    /// What the key is: "event attribute", "handler argument", …
    what: &'static str,
    name: &'static str,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    /// A key not given yet.
    pub(crate) fn none(cx: &'c Ctxt, what: &'static str, name: &'static str) -> Self {
        Self { cx, what, name, value: None }
    }

    /// Records `value`, given at `obj`; reports a duplicate if it was already given.
    pub(crate) fn set<A: ToTokens>(&mut self, obj: A, value: T) {
        if self.value.is_some() {
            self.cx.error_spanned_by(obj, format!("duplicate {} `{}`", self.what, self.name));
        } else {
            self.value = Some(value);
        }
    }

    /// Records `value` if it is `Some`.
    pub(crate) fn set_opt<A: ToTokens>(&mut self, obj: A, value: Option<T>) {
        if let Some(value) = value {
            self.set(obj, value);
        }
    }

    /// The value, if given.
    pub(crate) fn get(self) -> Option<T> {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_value_is_a_duplicate_and_the_first_is_kept() {
        let cx = Ctxt::new();
        let mut name = Attr::none(&cx, "event attribute", "name");
        name.set(quote::quote!(name), 1);
        name.set(quote::quote!(name), 2);
        assert_eq!(name.get(), Some(1));
        let messages: Vec<String> = cx.check().unwrap_err().into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["duplicate event attribute `name`"]);
    }
}
