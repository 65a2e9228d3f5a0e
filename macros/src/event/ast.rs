//! The derive's model of the input: the struct, its fields and their attributes, with
//! references to the original tokens for spans.

use proc_macro2::Span;
use quote::ToTokens;

use super::attr;
use crate::ctxt::Ctxt;

/// The input of `#[derive(Event)]`.
pub(crate) struct Container<'a> {
    /// The type's name.
    pub(crate) ident: &'a syn::Ident,
    /// `#[event(..)]` and the serde attributes that matter.
    pub(crate) attrs: attr::Container,
    /// The fields, or what the input is instead of a struct with named fields.
    pub(crate) data: Data<'a>,
    /// The type's generic parameters (an event may have none).
    pub(crate) generics: &'a syn::Generics,
}

/// The shape of the input.
pub(crate) enum Data<'a> {
    /// `struct S { .. }`.
    Struct(Vec<Field<'a>>),
    /// `struct S(..);`.
    Tuple(&'a syn::FieldsUnnamed),
    /// `struct S;`.
    Unit,
    /// An enum.
    Enum(syn::token::Enum),
    /// A union.
    Union(syn::token::Union),
}

/// One named field.
pub(crate) struct Field<'a> {
    /// The field's name.
    pub(crate) ident: &'a syn::Ident,
    /// Its type as written.
    pub(crate) ty: &'a syn::Type,
    /// `#[event(..)]` and the serde attributes that matter.
    pub(crate) attrs: attr::Field,
    /// Its JSON key after serde renames; `None` when serde skips it.
    pub(crate) json_key: Option<String>,
}

impl<'a> Container<'a> {
    /// Builds the model of `input`, recording attribute errors in `cx`.
    pub(crate) fn from_ast(cx: &Ctxt, input: &'a syn::DeriveInput) -> Self {
        let attrs = attr::Container::from_ast(cx, input);
        let data = match &input.data {
            syn::Data::Struct(data) => match &data.fields {
                syn::Fields::Named(fields) => {
                    Data::Struct(fields.named.iter().filter_map(|f| Field::from_ast(cx, &attrs, f)).collect())
                }
                syn::Fields::Unnamed(fields) => Data::Tuple(fields),
                syn::Fields::Unit => Data::Unit,
            },
            syn::Data::Enum(data) => Data::Enum(data.enum_token),
            syn::Data::Union(data) => Data::Union(data.union_token),
        };
        Self { ident: &input.ident, attrs, data, generics: &input.generics }
    }

    /// The named fields (none if the input is not a struct with named fields).
    pub(crate) fn fields(&self) -> &[Field<'a>] {
        match &self.data {
            Data::Struct(fields) => fields,
            _ => &[],
        }
    }

    /// The fields serde writes, with their JSON keys.
    pub(crate) fn serialized_fields(&self) -> impl Iterator<Item = (&Field<'a>, &str)> {
        self.fields().iter().filter_map(|f| Some((f, f.json_key.as_deref()?)))
    }

    /// The event name: `#[event(name = ..)]`, or the type's words joined by dots.
    pub(crate) fn name(&self) -> String {
        match &self.attrs.name {
            Some(lit) => lit.value(),
            None => super::check::default_name(&self.ident.to_string()),
        }
    }

    /// The event version: `#[event(version = ..)]`, or `1.0.0`.
    pub(crate) fn version(&self) -> String {
        self.attrs.version.as_ref().map_or_else(|| "1.0.0".to_owned(), syn::LitStr::value)
    }

    /// Where to point at the version: its literal, or the type's name.
    pub(crate) fn version_span(&self) -> Span {
        self.attrs.version.as_ref().map_or_else(|| self.ident.span(), syn::LitStr::span)
    }
}

impl<'a> Field<'a> {
    fn from_ast(cx: &Ctxt, container: &attr::Container, field: &'a syn::Field) -> Option<Self> {
        let ident = field.ident.as_ref()?;
        let attrs = attr::Field::from_ast(cx, field);
        let name = ident.to_string();
        let name = name.strip_prefix("r#").map(str::to_owned).unwrap_or(name);
        let json_key = if attrs.serde_skip {
            None
        } else if let Some(rename) = &attrs.serde_rename {
            Some(rename.clone())
        } else {
            let renamed = container.rename_all.as_deref().and_then(|rule| attr::apply_rename_all(rule, &name));
            Some(renamed.unwrap_or(name))
        };
        Some(Self { ident, ty: &field.ty, attrs, json_key })
    }

    /// Whether the field may be absent from the JSON: `Option`, or serde's `default`.
    pub(crate) fn optional(&self, container: &attr::Container) -> bool {
        let is_option = matches!(self.ty, syn::Type::Path(p) if p.qself.is_none()
            && p.path.segments.last().is_some_and(|s| s.ident == "Option"));
        is_option || self.attrs.serde_default || container.serde_default
    }

    /// The field's type as written, without spaces (`Option<String>`).
    pub(crate) fn type_string(&self) -> String {
        self.ty.to_token_stream().to_string().replace(' ', "")
    }

    /// Where to point at the field.
    pub(crate) fn span(&self) -> Span {
        self.ident.span()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_follow_serde_renames() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[serde(rename_all = "camelCase")]
            struct S {
                #[event(pii)] email_address: String,
                #[event(pii)] #[serde(rename = "ip")] ip_address: String,
                #[event(pii)] #[serde(skip)] secret: String,
                r#type: String,
            }
        };
        let cx = Ctxt::new();
        let c = Container::from_ast(&cx, &input);
        let keys: Vec<Option<&str>> = c.fields().iter().map(|f| f.json_key.as_deref()).collect();
        assert!(cx.check().is_ok());
        assert_eq!(keys, [Some("emailAddress"), Some("ip"), None, Some("type")]);
    }

    #[test]
    fn options_and_serde_defaults_are_optional() {
        let input: syn::DeriveInput = syn::parse_quote! {
            struct S { a: Option<u8>, #[serde(default)] b: u8, c: u8 }
        };
        let cx = Ctxt::new();
        let c = Container::from_ast(&cx, &input);
        assert!(cx.check().is_ok());
        let optional: Vec<bool> = c.fields().iter().map(|f| f.optional(&c.attrs)).collect();
        assert_eq!(optional, [true, true, false]);
        assert_eq!(c.name(), "s");
        assert_eq!(c.version(), "1.0.0");
    }
}
