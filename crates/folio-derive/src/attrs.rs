//! Parsing of the `#[folio(...)]` attributes, the field-level `#[serde(...)]`
//! flags that matter to the derive, and the syntactic type checks.

use std::fmt;

use syn::{
    Attribute, Expr, ExprLit, GenericArgument, Lit, LitStr, Meta, Path, PathArguments, PathSegment,
    Token, Type, punctuated::Punctuated,
};

use crate::naming::validate_collection;

/// The keys `#[folio(...)]` accepts on the type.
const TYPE_KEYS: &str = "`collection`, `optimistic_concurrency`, `revisions`";
/// The keys `#[folio(...)]` accepts on a field.
const FIELD_KEYS: &str = "`id`, `change_vector`, `revision`";

/// Collects several errors so that one expansion reports them all.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Adds the error of `result`, if any, and returns its value.
    pub(crate) fn check<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// `Err` with every collected error, or `Ok` when there is none.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// The `#[folio(...)]` attributes of the type.
#[derive(Default)]
pub(crate) struct TypeAttrs {
    /// `collection = "name"`, already validated.
    pub(crate) collection: Option<LitStr>,
    /// `optimistic_concurrency` (`true`) or `optimistic_concurrency = bool`.
    pub(crate) optimistic_concurrency: Option<bool>,
    /// `revisions = N`: the versions kept per document (0 to 10000).
    pub(crate) revisions: Option<u32>,
}

/// Parses the `#[folio(...)]` attributes of the type, reporting bad ones to
/// `errors`.
pub(crate) fn parse_type_attrs(attrs: &[Attribute], errors: &mut Errors) -> TypeAttrs {
    let mut out = TypeAttrs::default();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("folio")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("collection") {
                if !meta.input.peek(Token![=]) {
                    return Err(meta.error("`collection` needs a value: collection = \"name\""));
                }
                let value = ungrouped(meta.value()?.parse()?);
                let Expr::Lit(ExprLit {
                    lit: Lit::Str(name),
                    ..
                }) = value
                else {
                    return Err(syn::Error::new_spanned(
                        value,
                        "`collection` takes a string literal: collection = \"name\"",
                    ));
                };
                if out.collection.is_some() {
                    return Err(meta.error("duplicate folio attribute `collection`"));
                }
                if let Err(message) = validate_collection(&name.value()) {
                    errors.push(syn::Error::new_spanned(&name, message));
                }
                out.collection = Some(name);
            } else if meta.path.is_ident("optimistic_concurrency") {
                let enabled = if meta.input.peek(Token![=]) {
                    let value = ungrouped(meta.value()?.parse()?);
                    match value {
                        Expr::Lit(ExprLit {
                            lit: Lit::Bool(enabled),
                            ..
                        }) => enabled.value,
                        other => {
                            return Err(syn::Error::new_spanned(
                                other,
                                "`optimistic_concurrency` takes `true` or `false`",
                            ));
                        }
                    }
                } else {
                    true
                };
                if out.optimistic_concurrency.is_some() {
                    return Err(meta.error("duplicate folio attribute `optimistic_concurrency`"));
                }
                out.optimistic_concurrency = Some(enabled);
            } else if meta.path.is_ident("revisions") {
                if !meta.input.peek(Token![=]) {
                    return Err(meta.error(
                        "`revisions` needs a value: revisions = N, the versions kept per document",
                    ));
                }
                let value = ungrouped(meta.value()?.parse()?);
                let keep = match &value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Int(keep),
                        ..
                    }) => keep
                        .base10_parse::<u32>()
                        .ok()
                        .filter(|keep| *keep <= 10_000),
                    _ => None,
                };
                let Some(keep) = keep else {
                    return Err(syn::Error::new_spanned(
                        value,
                        "`revisions` takes a whole number from 0 (off) to 10000: revisions = 100",
                    ));
                };
                if out.revisions.is_some() {
                    return Err(meta.error("duplicate folio attribute `revisions`"));
                }
                out.revisions = Some(keep);
            } else {
                return Err(meta.error(format!(
                    "unknown folio attribute `{}` on the type; expected one of {TYPE_KEYS}",
                    path_to_string(&meta.path)
                )));
            }
            Ok(())
        });
        errors.check(result);
    }
    out
}

/// What a field is to the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `#[folio(id)]`: the document id, a `String`.
    Id,
    /// `#[folio(change_vector)]`: an `Option<ChangeVector>`, not persisted.
    ChangeVector,
    /// `#[folio(revision)]`: a `u64`, not persisted.
    Revision,
}

impl Role {
    /// The attribute key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Role::Id => "id",
            Role::ChangeVector => "change_vector",
            Role::Revision => "revision",
        }
    }

    fn from_path(path: &Path) -> Option<Role> {
        [Role::Id, Role::ChangeVector, Role::Revision]
            .into_iter()
            .find(|role| path.is_ident(role.key()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A field's `#[folio(...)]` role and the key that gave it (for spans).
pub(crate) struct RoleAttr {
    /// The role.
    pub(crate) role: Role,
    /// The attribute key, where errors about the role point.
    pub(crate) key: Path,
}

/// Parses the `#[folio(...)]` attributes of a field, reporting bad ones to
/// `errors`.
pub(crate) fn parse_field_role(attrs: &[Attribute], errors: &mut Errors) -> Option<RoleAttr> {
    let mut out: Option<RoleAttr> = None;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("folio")) {
        let result = attr.parse_nested_meta(|meta| {
            let Some(role) = Role::from_path(&meta.path) else {
                return Err(meta.error(format!(
                    "unknown folio attribute `{}` on a field; expected one of {FIELD_KEYS}",
                    path_to_string(&meta.path)
                )));
            };
            if !(meta.input.is_empty() || meta.input.peek(Token![,])) {
                return Err(meta.error(format!("`{role}` takes no value: write #[folio({role})]")));
            }
            match &out {
                Some(previous) if previous.role == role => {
                    Err(meta.error(format!("duplicate #[folio({role})] on this field")))
                }
                Some(previous) => Err(meta.error(format!(
                    "a field can be only one of {FIELD_KEYS}, and this one is already `{}`",
                    previous.role
                ))),
                None => {
                    out = Some(RoleAttr {
                        role,
                        key: meta.path.clone(),
                    });
                    Ok(())
                }
            }
        });
        errors.check(result);
    }
    out
}

/// The `#[serde(...)]` flags that decide whether a field is persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SerdeFlags {
    /// `skip`.
    pub(crate) skip: bool,
    /// `skip_serializing`.
    pub(crate) skip_serializing: bool,
    /// `skip_deserializing`.
    pub(crate) skip_deserializing: bool,
    /// `default` or `default = "path"`.
    pub(crate) default: bool,
}

impl SerdeFlags {
    /// Reads the flags of the `#[serde(...)]` attributes. An attribute that
    /// does not parse is ignored here: serde's own derive reports it.
    pub(crate) fn parse(attrs: &[Attribute]) -> SerdeFlags {
        let mut flags = SerdeFlags::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
            let Ok(items) = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            else {
                continue;
            };
            for item in items {
                match item {
                    Meta::Path(path) if path.is_ident("skip") => flags.skip = true,
                    Meta::Path(path) if path.is_ident("skip_serializing") => {
                        flags.skip_serializing = true;
                    }
                    Meta::Path(path) if path.is_ident("skip_deserializing") => {
                        flags.skip_deserializing = true;
                    }
                    Meta::Path(path) if path.is_ident("default") => flags.default = true,
                    Meta::NameValue(pair) if pair.path.is_ident("default") => flags.default = true,
                    _ => {}
                }
            }
        }
        flags
    }

    /// Whether the field is never written (and not expected on reading):
    /// `skip`, `skip_serializing` + `skip_deserializing`, or
    /// `skip_serializing` + `default` (on the field or, `container_default`,
    /// on the type).
    pub(crate) fn never_persisted(self, container_default: bool) -> bool {
        self.skip
            || (self.skip_serializing
                && (self.skip_deserializing || self.default || container_default))
    }
}

/// `a::b::C` as text, for messages.
fn path_to_string(path: &Path) -> String {
    let segments: Vec<String> = path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    let joined = segments.join("::");
    if path.leading_colon.is_some() {
        format!("::{joined}")
    } else {
        joined
    }
}

/// The last segment of a plain path type (`a::b::C<..>` → `C<..>`).
fn last_segment(ty: &Type) -> Option<&PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

/// Whether `ty` is the path `…::name`, without generic arguments.
pub(crate) fn is_named(ty: &Type, name: &str) -> bool {
    last_segment(ty).is_some_and(|segment| segment.ident == name && segment.arguments.is_none())
}

/// Whether `ty` is `…Option<…ChangeVector>`.
pub(crate) fn is_option_change_vector(ty: &Type) -> bool {
    let Some(segment) = last_segment(ty) else {
        return false;
    };
    let PathArguments::AngleBracketed(arguments) = &segment.arguments else {
        return false;
    };
    segment.ident == "Option"
        && arguments.args.len() == 1
        && matches!(
            arguments.args.first(),
            Some(GenericArgument::Type(inner)) if is_named(inner, "ChangeVector")
        )
}

/// `value` without the invisible groups around it: a literal that reaches
/// the attribute through a `macro_rules!` fragment (`$name:literal`) arrives
/// wrapped in one.
fn ungrouped(mut value: Expr) -> Expr {
    while let Expr::Group(group) = value {
        value = *group.expr;
    }
    value
}

#[cfg(test)]
mod tests {
    use syn::{DeriveInput, parse_quote};

    use super::*;

    fn messages(errors: Errors) -> Vec<String> {
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn type_attrs(input: DeriveInput) -> (TypeAttrs, Vec<String>) {
        let mut errors = Errors::default();
        let attrs = parse_type_attrs(&input.attrs, &mut errors);
        (attrs, messages(errors))
    }

    fn field_role(field: syn::Field) -> (Option<Role>, Vec<String>) {
        let mut errors = Errors::default();
        let role = parse_field_role(&field.attrs, &mut errors).map(|attr| attr.role);
        (role, messages(errors))
    }

    #[test]
    fn type_attributes() {
        let (attrs, errors) = type_attrs(parse_quote! {
            #[derive(Document)]
            #[folio(collection = "people", optimistic_concurrency)]
            struct Person;
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            attrs.collection.map(|name| name.value()).as_deref(),
            Some("people")
        );
        assert_eq!(attrs.optimistic_concurrency, Some(true));

        let (attrs, errors) = type_attrs(parse_quote! {
            #[folio(optimistic_concurrency = false)]
            #[serde(rename_all = "camelCase")]
            struct Person;
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert!(attrs.collection.is_none());
        assert_eq!(attrs.optimistic_concurrency, Some(false));

        let (attrs, errors) = type_attrs(parse_quote!(
            struct Person;
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(attrs.collection.is_none());
        assert_eq!(attrs.optimistic_concurrency, None);
    }

    #[test]
    fn literals_from_macro_fragments() {
        // `macro_rules!` passes a `$name:literal` on in an invisible group.
        let invisible = |tokens: proc_macro2::TokenStream| {
            proc_macro2::Group::new(proc_macro2::Delimiter::None, tokens)
        };
        let name = invisible(quote::quote!("people"));
        let enabled = invisible(quote::quote!(false));
        let (attrs, errors) = type_attrs(parse_quote! {
            #[folio(collection = #name, optimistic_concurrency = #enabled)]
            struct Person;
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            attrs.collection.map(|name| name.value()).as_deref(),
            Some("people")
        );
        assert_eq!(attrs.optimistic_concurrency, Some(false));
    }

    #[test]
    fn revisions_take_the_versions_kept() {
        let (attrs, errors) = type_attrs(parse_quote! {
            #[folio(revisions = 100)]
            struct Page;
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(attrs.revisions, Some(100));
    }

    #[test]
    fn bad_type_attributes() {
        let (_, errors) = type_attrs(parse_quote! {
            #[folio(collection = "no spaces")]
            #[folio(colection = "x")]
            #[folio(optimistic_concurrency = "yes")]
            #[folio(collection = people)]
            #[folio(collection)]
            #[folio(revisions = 10001)]
            #[folio(revisions = "5")]
            #[folio(revisions)]
            struct Person;
        });
        assert_eq!(
            errors,
            [
                "invalid collection name \"no spaces\": use 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'",
                "unknown folio attribute `colection` on the type; expected one of `collection`, `optimistic_concurrency`, `revisions`",
                "`optimistic_concurrency` takes `true` or `false`",
                "`collection` takes a string literal: collection = \"name\"",
                "`collection` needs a value: collection = \"name\"",
                "`revisions` takes a whole number from 0 (off) to 10000: revisions = 100",
                "`revisions` takes a whole number from 0 (off) to 10000: revisions = 100",
                "`revisions` needs a value: revisions = N, the versions kept per document",
            ]
        );

        let (_, errors) = type_attrs(parse_quote! {
            #[folio(collection = "a", optimistic_concurrency)]
            #[folio(collection = "b", optimistic_concurrency = true)]
            struct Person;
        });
        assert_eq!(errors, ["duplicate folio attribute `collection`"]);

        let (_, errors) = type_attrs(parse_quote! {
            #[folio(optimistic_concurrency, optimistic_concurrency)]
            struct Person;
        });
        assert_eq!(
            errors,
            ["duplicate folio attribute `optimistic_concurrency`"]
        );

        let (_, errors) = type_attrs(parse_quote! {
            #[folio(collection = "")]
            struct Person;
        });
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("invalid collection name \"\""));
    }

    #[test]
    fn field_roles() {
        assert_eq!(
            field_role(parse_quote!(#[folio(id)] key: String)),
            (Some(Role::Id), vec![])
        );
        assert_eq!(
            field_role(
                parse_quote!(#[serde(skip)] #[folio(change_vector)] cv: Option<ChangeVector>)
            ),
            (Some(Role::ChangeVector), vec![])
        );
        assert_eq!(
            field_role(parse_quote!(#[folio(revision)] revision: u64)),
            (Some(Role::Revision), vec![])
        );
        assert_eq!(field_role(parse_quote!(name: String)), (None, vec![]));
    }

    #[test]
    fn bad_field_attributes() {
        let (role, errors) = field_role(parse_quote!(#[folio(key)] key: String));
        assert_eq!(role, None);
        assert_eq!(
            errors,
            [
                "unknown folio attribute `key` on a field; expected one of `id`, `change_vector`, `revision`"
            ]
        );

        let (role, errors) = field_role(parse_quote!(#[folio(id = "x")] key: String));
        assert_eq!(role, None);
        assert_eq!(errors, ["`id` takes no value: write #[folio(id)]"]);

        let (role, errors) = field_role(parse_quote!(#[folio(id)] #[folio(id)] key: String));
        assert_eq!(role, Some(Role::Id));
        assert_eq!(errors, ["duplicate #[folio(id)] on this field"]);

        let (role, errors) = field_role(parse_quote!(#[folio(id, revision)] key: String));
        assert_eq!(role, Some(Role::Id));
        assert_eq!(
            errors,
            [
                "a field can be only one of `id`, `change_vector`, `revision`, and this one is already `id`"
            ]
        );
    }

    #[test]
    fn serde_flags() {
        let field: syn::Field = parse_quote!(#[serde(skip)] x: u64);
        assert!(SerdeFlags::parse(&field.attrs).never_persisted(false));

        let field: syn::Field = parse_quote!(#[serde(rename = "r", skip_serializing)] #[serde(skip_deserializing)] x: u64);
        assert!(SerdeFlags::parse(&field.attrs).never_persisted(false));

        let field: syn::Field = parse_quote!(#[serde(skip_serializing, default = "zero")] x: u64);
        assert!(SerdeFlags::parse(&field.attrs).never_persisted(false));

        let field: syn::Field = parse_quote!(#[serde(skip_serializing)] x: u64);
        let flags = SerdeFlags::parse(&field.attrs);
        assert!(!flags.never_persisted(false));
        assert!(flags.never_persisted(true));

        for field in [
            parse_quote!(x: u64),
            parse_quote!(#[serde(skip_deserializing)] x: u64),
            parse_quote!(#[serde(default)] x: u64),
            parse_quote!(#[serde(skip_serializing_if = "is_zero")] x: u64),
            parse_quote!(#[serde(rename(serialize = "a"), with = "m")] x: u64),
            parse_quote!(#[folio(skip)] x: u64),
        ] {
            let field: syn::Field = field;
            assert!(!SerdeFlags::parse(&field.attrs).never_persisted(false));
        }
    }

    #[test]
    fn type_checks() {
        assert!(is_named(&parse_quote!(String), "String"));
        assert!(is_named(&parse_quote!(::std::string::String), "String"));
        assert!(!is_named(&parse_quote!(&str), "String"));
        assert!(!is_named(&parse_quote!(String<u8>), "String"));
        assert!(!is_named(&parse_quote!(<T as X>::String), "String"));
        assert!(is_named(&parse_quote!(u64), "u64"));
        assert!(!is_named(&parse_quote!(u32), "u64"));

        assert!(is_option_change_vector(&parse_quote!(Option<ChangeVector>)));
        assert!(is_option_change_vector(&parse_quote!(
            std::option::Option<folio::ChangeVector>
        )));
        assert!(!is_option_change_vector(&parse_quote!(ChangeVector)));
        assert!(!is_option_change_vector(&parse_quote!(Option<String>)));
        assert!(!is_option_change_vector(&parse_quote!(Vec<ChangeVector>)));
        assert!(!is_option_change_vector(&parse_quote!(Option)));
    }
}
