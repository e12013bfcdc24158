//! The code `#[derive(FromRow)]` generates.

use proc_macro2::{Ident, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Path, Type, WherePredicate, parse_quote};

use crate::attr;

/// The `FromRow` impl of `input`, or every error found in its attributes.
pub(crate) fn from_row(input: &DeriveInput) -> syn::Result<TokenStream> {
    let container = attr::container(&input.attrs)?;
    let krate: Path = container
        .krate
        .clone()
        .unwrap_or_else(|| parse_quote!(::db));
    let fields = match &input.data {
        Data::Struct(s) => &s.fields,
        Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span,
                "FromRow can be derived for structs only: an enum has no one shape of row",
            ));
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span,
                "FromRow can be derived for structs only, not unions",
            ));
        }
    };
    let params: Vec<&Ident> = input.generics.type_params().map(|p| &p.ident).collect();
    let fields_code = Gen {
        krate: &krate,
        params: &params,
        container: &container,
    };

    let mut errors: Option<syn::Error> = None;
    let mut bounds = Vec::new();
    let mut values = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        match fields_code.field(index, field, &mut bounds) {
            Ok(value) => values.push(value),
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    if let Some(errors) = errors {
        return Err(errors);
    }
    let body = match fields {
        Fields::Named(_) => quote!(Self { #(#values),* }),
        Fields::Unnamed(_) => quote!(Self ( #(#values),* )),
        Fields::Unit => {
            return Err(syn::Error::new(
                input.ident.span(),
                "FromRow needs a struct with fields: a unit struct reads nothing from a row",
            ));
        }
    };

    let mut generics = input.generics.clone();
    generics.make_where_clause().predicates.extend(bounds);
    let (impl_generics, type_generics, where_clause) = generics.split_for_impl();
    let name = &input.ident;
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::FromRow for #name #type_generics #where_clause {
            fn from_row(__db_row: &#krate::Row) -> #krate::Result<Self> {
                ::core::result::Result::Ok(#body)
            }
        }
    })
}

/// What every field's code needs.
struct Gen<'a> {
    krate: &'a Path,
    params: &'a [&'a Ident],
    container: &'a attr::Container,
}

impl Gen<'_> {
    /// The expression (`name: expr` for a named field) that reads `field`,
    /// and the bounds its type needs when it uses the struct's type
    /// parameters.
    fn field(
        &self,
        index: usize,
        field: &syn::Field,
        bounds: &mut Vec<WherePredicate>,
    ) -> syn::Result<TokenStream> {
        let attrs = attr::field(&field.attrs)?;
        let krate = self.krate;
        let ty = &field.ty;
        let generic = self.mentions_params(ty);
        let span = ty.span();

        // Where the value comes from: a column name, or a position in a
        // tuple struct.
        let column = match &field.ident {
            Some(ident) => {
                let name = match (&attrs.rename, self.container.rename_all) {
                    (Some(lit), _) => lit.value(),
                    (None, Some(rule)) => rule.apply(&ident.unraw().to_string()),
                    (None, None) => ident.unraw().to_string(),
                };
                quote!(#name)
            }
            None => {
                let refuse = |what: &str, at: proc_macro2::Span| {
                    Err(syn::Error::new(
                        at,
                        format!(
                            "`{what}` is for named fields; a tuple struct reads its fields by \
                             position"
                        ),
                    ))
                };
                if let Some(lit) = &attrs.rename {
                    return refuse("rename", lit.span());
                }
                if let Some(at) = attrs.default {
                    return refuse("default", at);
                }
                if let Some(at) = attrs.flatten {
                    return refuse("flatten", at);
                }
                let index = syn::Index::from(index);
                index.into_token_stream()
            }
        };
        let (index_type, column_name) = match &field.ident {
            Some(_) => (quote!(&str), quote!(::std::string::String::from(#column))),
            None => (
                quote!(usize),
                quote! {
                    __db_row
                        .columns()
                        .get(#column)
                        .map(|__db_column| ::std::string::String::from(__db_column.name()))
                        .unwrap_or_default()
                },
            ),
        };

        let read = if attrs.flatten.is_some() {
            if generic {
                bounds.push(parse_quote!(#ty: #krate::FromRow));
            }
            quote_spanned!(span=> <#ty as #krate::FromRow>::from_row(__db_row))
        } else if let Some((at, mode)) = &attrs.json {
            let target = match mode {
                attr::Json::Plain => ty,
                attr::Json::Nullable => option_inner(ty).ok_or_else(|| {
                    syn::Error::new(
                        *at,
                        "`json(nullable)` is for a field of type `Option<T>`: SQL NULL reads as \
                         `None`",
                    )
                })?,
            };
            if generic {
                bounds.push(parse_quote!(#krate::Json<#target>: #krate::FromValue));
            }
            match mode {
                attr::Json::Plain => quote_spanned! {span=>
                    __db_row
                        .try_get::<#krate::Json<#target>, #index_type>(#column)
                        .map(#krate::Json::into_inner)
                },
                attr::Json::Nullable => quote_spanned! {span=>
                    __db_row
                        .try_get::<::core::option::Option<#krate::Json<#target>>, #index_type>(#column)
                        .map(|__db_value| __db_value.map(#krate::Json::into_inner))
                },
            }
        } else if let Some((_, source)) = &attrs.try_from {
            if generic || self.mentions_params(source) {
                bounds.push(parse_quote!(#source: #krate::FromValue));
                bounds.push(parse_quote!(#ty: ::core::convert::TryFrom<#source>));
                bounds.push(parse_quote!(
                    <#ty as ::core::convert::TryFrom<#source>>::Error: ::core::fmt::Display
                ));
            }
            quote_spanned! {span=>
                __db_row
                    .try_get::<#source, #index_type>(#column)
                    .and_then(|__db_value| {
                        <#ty as ::core::convert::TryFrom<#source>>::try_from(__db_value).map_err(
                            |__db_error| #krate::Error::ColumnDecode {
                                column: #column_name,
                                source: #krate::FromValueError::conversion::<#ty>(__db_error),
                            },
                        )
                    })
            }
        } else {
            if generic {
                bounds.push(parse_quote!(#ty: #krate::FromValue));
            }
            quote_spanned!(span=> __db_row.try_get::<#ty, #index_type>(#column))
        };

        let value = if attrs.default.is_some() {
            if generic {
                bounds.push(parse_quote!(#ty: ::core::default::Default));
            }
            quote_spanned! {span=>
                match #read {
                    ::core::result::Result::Ok(__db_value) => __db_value,
                    ::core::result::Result::Err(#krate::Error::ColumnNotFound(_)) => {
                        <#ty as ::core::default::Default>::default()
                    }
                    ::core::result::Result::Err(__db_error) => {
                        return ::core::result::Result::Err(__db_error);
                    }
                }
            }
        } else {
            quote!(#read?)
        };
        Ok(match &field.ident {
            Some(ident) => quote!(#ident: #value),
            None => value,
        })
    }

    /// Whether `ty` names one of the struct's type parameters (then the
    /// impl states what it needs of them).
    fn mentions_params(&self, ty: &Type) -> bool {
        fn walk(tokens: TokenStream, params: &[&Ident]) -> bool {
            tokens.into_iter().any(|tt| match tt {
                TokenTree::Ident(ident) => params.iter().any(|p| **p == ident),
                TokenTree::Group(group) => walk(group.stream(), params),
                TokenTree::Punct(_) | TokenTree::Literal(_) => false,
            })
        }
        !self.params.is_empty() && walk(ty.to_token_stream(), self.params)
    }
}

/// `T` of a field typed `Option<T>` (also written `std::option::Option<T>`).
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(args) if args.args.len() == 1 => {
            match args.args.first()? {
                syn::GenericArgument::Type(inner) => Some(inner),
                _ => None,
            }
        }
        _ => None,
    }
}
