//! The expansion of `#[derive(Document)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{
    Data, DataStruct, DeriveInput, Field, Fields, GenericParam, LitStr, ext::IdentExt,
    spanned::Spanned,
};

use crate::{
    attrs::{
        Errors, Role, SerdeFlags, is_named, is_option_change_vector, parse_field_role,
        parse_type_attrs,
    },
    naming::{default_collection, validate_collection},
};

const NOT_A_STRUCT: &str = "Document can only be derived for structs with named fields";
const NO_ID: &str = "Document needs an id field: mark a String field with #[folio(id)]";

/// A field with a role, and where the role came from.
struct RoleField<'a> {
    field: &'a Field,
    /// `None`: the field named `id`, used without `#[folio(id)]`.
    key: Option<syn::Path>,
}

/// Expands `#[derive(Document)]` on `input` into the trait impl, or the
/// errors that prevent it.
pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let fields = match &input.data {
        Data::Struct(DataStruct {
            fields: Fields::Named(fields),
            ..
        }) => &fields.named,
        Data::Struct(DataStruct {
            fields: Fields::Unnamed(fields),
            ..
        }) => return Err(syn::Error::new_spanned(fields, NOT_A_STRUCT)),
        Data::Struct(DataStruct {
            fields: Fields::Unit,
            ..
        }) => return Err(syn::Error::new_spanned(&input.ident, NOT_A_STRUCT)),
        Data::Enum(data) => return Err(syn::Error::new_spanned(data.enum_token, NOT_A_STRUCT)),
        Data::Union(data) => return Err(syn::Error::new_spanned(data.union_token, NOT_A_STRUCT)),
    };

    let mut errors = Errors::default();

    for param in &input.generics.params {
        if let GenericParam::Lifetime(lifetime) = param {
            errors.push(syn::Error::new_spanned(
                lifetime,
                "Document can not be derived for a type with lifetime parameters: documents are owned ('static)",
            ));
        }
    }

    let type_attrs = parse_type_attrs(&input.attrs, &mut errors);
    let container_default = SerdeFlags::parse(&input.attrs).default;

    let mut id: Option<RoleField<'_>> = None;
    let mut change_vector: Option<RoleField<'_>> = None;
    let mut revision: Option<RoleField<'_>> = None;
    let mut has_role = vec![false; fields.len()];
    for (index, field) in fields.iter().enumerate() {
        let Some(attr) = parse_field_role(&field.attrs, &mut errors) else {
            continue;
        };
        has_role[index] = true;
        let slot = match attr.role {
            Role::Id => &mut id,
            Role::ChangeVector => &mut change_vector,
            Role::Revision => &mut revision,
        };
        if let Some(previous) = slot {
            errors.push(syn::Error::new_spanned(
                &attr.key,
                format!(
                    "duplicate #[folio({role})]: the {role} field is already `{}`",
                    field_name(previous.field),
                    role = attr.role,
                ),
            ));
            continue;
        }
        *slot = Some(RoleField {
            field,
            key: Some(attr.key),
        });
    }

    if id.is_none() {
        id = fields
            .iter()
            .zip(&has_role)
            .find(|(field, has_role)| {
                !**has_role
                    && field
                        .ident
                        .as_ref()
                        .is_some_and(|ident| ident.unraw() == "id")
            })
            .map(|(field, _)| RoleField { field, key: None });
    }

    match &id {
        None => errors.push(syn::Error::new_spanned(&input.ident, NO_ID)),
        Some(id) if !is_named(&id.field.ty, "String") => {
            let message = if id.key.is_some() {
                "the #[folio(id)] field must be a `String`".to_owned()
            } else {
                "the field `id` is the document id and must be a `String` \
                 (or mark another String field with #[folio(id)])"
                    .to_owned()
            };
            errors.push(syn::Error::new_spanned(&id.field.ty, message));
        }
        Some(_) => {}
    }

    if let Some(cv) = &change_vector {
        if !is_option_change_vector(&cv.field.ty) {
            errors.push(syn::Error::new_spanned(
                &cv.field.ty,
                "the #[folio(change_vector)] field must be an `Option<ChangeVector>`",
            ));
        }
        check_not_persisted(cv, Role::ChangeVector, container_default, &mut errors);
    }
    if let Some(rev) = &revision {
        if !is_named(&rev.field.ty, "u64") {
            errors.push(syn::Error::new_spanned(
                &rev.field.ty,
                "the #[folio(revision)] field must be a `u64`",
            ));
        }
        check_not_persisted(rev, Role::Revision, container_default, &mut errors);
    }

    let type_name = input.ident.unraw().to_string();
    let collection = match &type_attrs.collection {
        Some(name) => name.value(),
        None => {
            let name = default_collection(&type_name);
            if validate_collection(&name).is_err() {
                errors.push(syn::Error::new_spanned(
                    &input.ident,
                    format!(
                        "the default collection name {name:?} is not a valid collection name \
                         (1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'): \
                         set one with #[folio(collection = \"...\")]"
                    ),
                ));
            }
            name
        }
    };

    errors.finish()?;
    let Some(id) = id else {
        unreachable!("a missing id field is reported above");
    };

    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let collection = LitStr::new(&collection, ident.span());
    let type_name = LitStr::new(&type_name, ident.span());

    let optimistic_concurrency = type_attrs.optimistic_concurrency.map(|enabled| {
        quote! {
            const OPTIMISTIC_CONCURRENCY: ::core::option::Option<::core::primitive::bool> =
                ::core::option::Option::Some(#enabled);
        }
    });

    let revisions = type_attrs.revisions.map(|keep| {
        quote! {
            const REVISIONS: ::core::option::Option<::core::primitive::u32> =
                ::core::option::Option::Some(#keep);
        }
    });

    let id_member = member(id.field);
    let id_span = id.field.ty.span();
    let id_methods = quote_spanned! {id_span=>
        fn id(&self) -> &::core::primitive::str {
            &self.#id_member
        }

        fn set_id(&mut self, id: ::std::string::String) {
            self.#id_member = id;
        }
    };

    let change_vector_methods = change_vector.map(|cv| {
        let member = member(cv.field);
        let span = cv.field.ty.span();
        quote_spanned! {span=>
            fn change_vector(
                &self,
            ) -> ::core::option::Option<&::folio::__private::ChangeVector> {
                ::core::option::Option::as_ref(&self.#member)
            }

            fn set_change_vector(
                &mut self,
                change_vector: ::core::option::Option<::folio::__private::ChangeVector>,
            ) {
                self.#member = change_vector;
            }
        }
    });

    let revision_method = revision.map(|rev| {
        let member = member(rev.field);
        let span = rev.field.ty.span();
        quote_spanned! {span=>
            fn set_revision(&mut self, revision: ::core::primitive::u64) {
                self.#member = revision;
            }
        }
    });

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::folio::Document for #ident #ty_generics #where_clause {
            const COLLECTION: &'static ::core::primitive::str = #collection;
            const TYPE_NAME: &'static ::core::primitive::str = #type_name;
            #optimistic_concurrency
            #revisions

            #id_methods
            #change_vector_methods
            #revision_method
        }
    })
}

/// Reports a change-vector or revision field that serde would persist.
fn check_not_persisted(
    role_field: &RoleField<'_>,
    role: Role,
    container_default: bool,
    errors: &mut Errors,
) {
    if !SerdeFlags::parse(&role_field.field.attrs).never_persisted(container_default) {
        let name = field_name(role_field.field);
        let spanned: &dyn quote::ToTokens = match &role_field.field.ident {
            Some(ident) => ident,
            None => &role_field.field.ty,
        };
        errors.push(syn::Error::new_spanned(
            spanned,
            format!("the {role} field `{name}` must be #[serde(skip)] so it is never persisted"),
        ));
    }
}

/// The field's name as written, for messages.
fn field_name(field: &Field) -> String {
    field
        .ident
        .as_ref()
        .map_or_else(String::new, |ident| ident.unraw().to_string())
}

/// The field as a member expression (`self.#member`).
fn member(field: &Field) -> TokenStream {
    let ident = &field.ident;
    quote!(#ident)
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn errors(input: DeriveInput) -> Vec<String> {
        match expand(input) {
            Ok(tokens) => panic!("expected errors, got {tokens}"),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn expanded(input: DeriveInput) -> String {
        match expand(input) {
            Ok(tokens) => tokens.to_string(),
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    #[test]
    fn full_struct() {
        let code = expanded(parse_quote! {
            #[folio(collection = "people", optimistic_concurrency)]
            struct Person {
                #[folio(id)] key: String,
                name: String,
                #[folio(change_vector)] #[serde(skip)] cv: Option<ChangeVector>,
                #[folio(revision)] #[serde(skip)] rev: u64,
            }
        });
        assert!(
            code.contains("impl :: folio :: Document for Person"),
            "{code}"
        );
        assert!(code.contains("\"people\""), "{code}");
        assert!(code.contains("\"Person\""), "{code}");
        assert!(code.contains("Some (true)"), "{code}");
        assert!(code.contains("& self . key"), "{code}");
        assert!(code.contains("self . cv = change_vector"), "{code}");
        assert!(code.contains("self . rev = revision"), "{code}");
    }

    #[test]
    fn minimal_struct() {
        let code = expanded(parse_quote! {
            struct OrderLine { id: String }
        });
        assert!(code.contains("\"order_lines\""), "{code}");
        assert!(code.contains("\"OrderLine\""), "{code}");
        assert!(!code.contains("OPTIMISTIC_CONCURRENCY"), "{code}");
        assert!(!code.contains("fn change_vector"), "{code}");
        assert!(!code.contains("fn set_revision"), "{code}");

        let code = expanded(parse_quote! {
            #[folio(optimistic_concurrency = false)]
            struct r#Match { r#id: String }
        });
        assert!(code.contains("\"matches\""), "{code}");
        assert!(code.contains("\"Match\""), "{code}");
        assert!(code.contains("Some (false)"), "{code}");
    }

    #[test]
    fn generics() {
        let code = expanded(parse_quote! {
            struct Envelope<T: Clone, const N: usize> where T: Send { id: String, items: [T; N] }
        });
        assert!(
            code.contains(
                "impl < T : Clone , const N : usize > :: folio :: Document for Envelope < T , N > where T : Send"
            ),
            "{code}"
        );

        assert_eq!(
            errors(parse_quote!(
                struct Borrowed<'a> {
                    id: String,
                    name: &'a str,
                }
            )),
            [
                "Document can not be derived for a type with lifetime parameters: documents are owned ('static)"
            ]
        );
    }

    #[test]
    fn not_a_struct() {
        for input in [
            parse_quote!(
                enum E {
                    A,
                }
            ),
            parse_quote!(union U { a: u8 }),
            parse_quote!(
                struct T(String);
            ),
            parse_quote!(
                struct U;
            ),
        ] {
            assert_eq!(errors(input), [NOT_A_STRUCT]);
        }
    }

    #[test]
    fn id_field() {
        assert_eq!(
            errors(parse_quote!(
                struct P {
                    name: String,
                }
            )),
            [NO_ID]
        );
        // A field named `id` with another role is not the id.
        assert_eq!(
            errors(parse_quote!(
                struct P {
                    #[folio(revision)]
                    #[serde(skip)]
                    id: u64,
                }
            )),
            [NO_ID]
        );
        assert_eq!(
            errors(parse_quote!(
                struct P {
                    #[folio(id)]
                    key: u64,
                }
            )),
            ["the #[folio(id)] field must be a `String`"]
        );
        assert_eq!(
            errors(parse_quote!(
                struct P {
                    id: u64,
                }
            )),
            [
                "the field `id` is the document id and must be a `String` (or mark another String field with #[folio(id)])"
            ]
        );
        // An explicit id wins over a field named `id`.
        let code = expanded(parse_quote!(
            struct P {
                id: u64,
                #[folio(id)]
                key: String,
            }
        ));
        assert!(code.contains("& self . key"), "{code}");
    }

    #[test]
    fn role_fields() {
        assert_eq!(
            errors(parse_quote!(
                struct P {
                    #[folio(id)]
                    a: String,
                    #[folio(id)]
                    b: String,
                    #[folio(change_vector)]
                    cv: Option<String>,
                    #[folio(revision)]
                    rev: u32,
                }
            )),
            [
                "duplicate #[folio(id)]: the id field is already `a`",
                "the #[folio(change_vector)] field must be an `Option<ChangeVector>`",
                "the change_vector field `cv` must be #[serde(skip)] so it is never persisted",
                "the #[folio(revision)] field must be a `u64`",
                "the revision field `rev` must be #[serde(skip)] so it is never persisted",
            ]
        );
        // A container-level `default` completes `skip_serializing`.
        expanded(parse_quote! {
            #[serde(default)]
            struct P {
                id: String,
                #[folio(revision)] #[serde(skip_serializing)] rev: u64,
            }
        });
    }

    #[test]
    fn collections() {
        assert_eq!(
            errors(parse_quote!(
                #[folio(collection = "a/b")]
                struct P {
                    id: String,
                }
            )),
            [
                "invalid collection name \"a/b\": use 1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'"
            ]
        );
        assert_eq!(
            errors(parse_quote!(
                struct Ünïcode {
                    id: String,
                }
            )),
            [
                "the default collection name \"ünïcodes\" is not a valid collection name (1 to 128 characters of A-Z, a-z, 0-9, '_' and '-'): set one with #[folio(collection = \"...\")]"
            ]
        );
        let code = expanded(parse_quote!(
            #[folio(collection = "unicode")]
            struct Ünïcode {
                id: String,
            }
        ));
        assert!(code.contains("\"unicode\""), "{code}");
    }
}
