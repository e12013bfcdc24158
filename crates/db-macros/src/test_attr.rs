//! `#[db_testing::test]`: a test function that gets a fresh database.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ItemFn, LitStr, Token};

/// The attribute's arguments.
#[derive(Default)]
struct Args {
    setup: Option<Expr>,
    spec: Option<LitStr>,
    seed: Option<Expr>,
}

/// One `name = value` argument.
struct Arg {
    name: syn::Ident,
    value: Expr,
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name = input.parse()?;
        input.parse::<Token![=]>()?;
        Ok(Arg {
            name,
            value: input.parse()?,
        })
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        for arg in Punctuated::<Arg, Token![,]>::parse_terminated(input)? {
            let duplicate =
                || syn::Error::new(arg.name.span(), format!("`{}` given twice", arg.name));
            match arg.name.to_string().as_str() {
                "setup" if args.setup.is_some() => return Err(duplicate()),
                "setup" => args.setup = Some(arg.value),
                "seed" if args.seed.is_some() => return Err(duplicate()),
                "seed" => args.seed = Some(arg.value),
                "spec" if args.spec.is_some() => return Err(duplicate()),
                "spec" => match arg.value {
                    Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(path),
                        ..
                    }) => args.spec = Some(path),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "`spec` is a string literal: the spec file's path, relative to the crate's Cargo.toml",
                        ));
                    }
                },
                other => {
                    return Err(syn::Error::new(
                        arg.name.span(),
                        format!("unknown argument `{other}`; expected `setup`, `spec` or `seed`"),
                    ));
                }
            }
        }
        Ok(args)
    }
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args: Args = syn::parse2(args)?;
    let function: ItemFn = syn::parse2(item)?;
    if function.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            function.sig.fn_token,
            "#[db_testing::test] functions are `async fn`",
        ));
    }
    if function.sig.inputs.len() != 1 {
        return Err(syn::Error::new_spanned(
            &function.sig.inputs,
            "#[db_testing::test] functions take one argument: the `db_testing::TestDatabase`",
        ));
    }
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = &sig.ident;
    let output = &sig.output;
    let inputs = &sig.inputs;
    let mut setup = quote!(::db_testing::Setup::new());
    if let Some(sql) = &args.setup {
        setup = quote!(#setup.sql(#sql));
    }
    let spec = args.spec.as_ref().map(|path| {
        quote! {
            let setup = setup.spec_text(
                #path,
                ::core::include_str!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #path)),
            )?;
        }
    });
    let seed = args
        .seed
        .as_ref()
        .map(|sql| quote!(let setup = setup.seed(#sql);));
    Ok(quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() #output {
            async fn body(#inputs) #output #block
            ::db_testing::__private::run(
                || {
                    let setup = #setup;
                    #spec
                    #seed
                    ::core::result::Result::Ok(setup)
                },
                body,
            )
        }
    })
}
