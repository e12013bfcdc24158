//! The derive macros of the hub's database layer. Use them through the `db`
//! facade (`use db::FromRow;`), which re-exports them next to the traits
//! they implement.

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod attr;
mod case;
mod compile_fail;
mod expand;
mod test_attr;

/// Implements `FromRow` for a struct: each field is read from the column of
/// its name, so a query's rows map to the struct in one call
/// (`row.decode::<Account>()`, `client.query_as::<Account>(...)`).
///
/// A named field reads the column of the same name (a raw identifier
/// `r#type` reads `type`); a tuple struct reads its fields by position.
/// Columns the struct does not name are ignored. A missing column, a
/// NULL read into a field that is not an `Option`, or a value of another
/// type is an error naming the column.
///
/// Attributes, written `#[db(...)]` as in sqlx's `#[sqlx(...)]`:
///
/// | on | attribute | meaning |
/// |---|---|---|
/// | struct | `rename_all = "camelCase"` | column names from field names by a rule: `lowercase`, `UPPERCASE`, `snake_case`, `camelCase`, `PascalCase`, `SCREAMING_SNAKE_CASE`, `kebab-case` |
/// | struct | `crate = "db_core"` | where the traits live, for crates that depend on `db-core` rather than `db` |
/// | field | `rename = "name"` | reads the column `name` (wins over `rename_all`) |
/// | field | `default` | a column the result does not have gives `Default::default()` (a NULL is still an error unless the field is an `Option`) |
/// | field | `flatten` | the field is itself a `FromRow`, read from the same row |
/// | field | `json` | a `json` or `jsonb` column deserialized into the field's type with serde (`Json<T>`); a value that does not fit is an error naming the column and serde's reason |
/// | field | `json(nullable)` | the same for a field `Option<T>`: SQL `NULL` gives `None` |
/// | field | `try_from = "T"` | reads the column as `T`, then converts with `TryFrom<T>`; a failed conversion is an error naming the column and the reason |
///
/// Generic structs work: the impl asks of each type parameter what its
/// fields need (`T: FromValue` for a column, `T: FromRow` for `flatten`,
/// `Json<T>: FromValue` for `json`).
///
/// ```
/// use std::sync::Arc;
/// use db::{Column, FromRow, Row, Type, Value};
///
/// #[derive(Debug, PartialEq, FromRow)]
/// #[db(rename_all = "camelCase")]
/// struct Account {
///     id: i64,
///     display_name: String, // the column "displayName"
///     #[db(rename = "e_mail")]
///     email: Option<String>,
///     #[db(default)]
///     tags: Vec<String>, // empty: the query has no "tags" column
///     #[db(try_from = "i64")]
///     quota: u32, // an int8 column, refused if negative or too large
///     #[db(flatten)]
///     audit: Audit,
///     #[db(json)]
///     settings: Settings, // a jsonb column
/// }
///
/// #[derive(Debug, PartialEq, serde::Deserialize)]
/// struct Settings {
///     theme: String,
/// }
///
/// #[derive(Debug, PartialEq, FromRow)]
/// struct Audit {
///     #[db(rename = "createdBy")]
///     created_by: String,
/// }
///
/// # let columns: Arc<[Column]> = vec![
/// #     Column::new("id", Type::INT8),
/// #     Column::new("displayName", Type::TEXT),
/// #     Column::new("e_mail", Type::TEXT),
/// #     Column::new("quota", Type::INT8),
/// #     Column::new("createdBy", Type::TEXT),
/// #     Column::new("settings", Type::JSONB),
/// # ].into();
/// # let row = Row::new(columns, vec![
/// #     Value::Int8(7), Value::Text("Ada".into()), Value::Null,
/// #     Value::Int8(100), Value::Text("admin".into()),
/// #     Value::Json(serde_json::json!({"theme": "dark"})),
/// # ]);
/// // `row` from `SELECT id, "displayName", e_mail, quota, "createdBy", settings ...`
/// let account: Account = row.decode()?;
/// assert_eq!(account.display_name, "Ada");
/// assert_eq!(account.tags, Vec::<String>::new());
/// assert_eq!(account.quota, 100);
/// assert_eq!(account.audit.created_by, "admin");
/// assert_eq!(account.settings.theme, "dark");
/// # Ok::<(), db::Error>(())
/// ```
///
/// A mistake in an attribute is a compile error on that attribute:
///
/// ```compile_fail
/// #[derive(db::FromRow)]
/// struct Account {
///     #[db(renamed = "id")] // unknown field attribute `renamed`; expected `rename`, ...
///     id: i64,
/// }
/// ```
#[proc_macro_derive(FromRow, attributes(db))]
pub fn derive_from_row(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::from_row(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// `#[db_testing::test]`: use it through `db-testing`, which documents it.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn db_testing_test(args: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use crate::expand;

    fn expand_ok(input: syn::DeriveInput) -> String {
        match expand::from_row(&input) {
            Ok(tokens) => tokens.to_string(),
            Err(e) => panic!("{e}"),
        }
    }

    fn expand_err(input: syn::DeriveInput) -> Vec<String> {
        match expand::from_row(&input) {
            Ok(tokens) => panic!("expected an error, got {tokens}"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn columns_are_named_by_field_rename_and_rule() {
        let code = expand_ok(parse_quote! {
            #[db(rename_all = "camelCase")]
            struct A {
                user_id: i64,
                #[db(rename = "E-Mail")]
                email: String,
                r#type: String,
            }
        });
        assert!(code.contains("\"userId\""), "{code}");
        assert!(code.contains("\"E-Mail\""), "{code}");
        assert!(code.contains("\"type\""), "{code}");
        assert!(!code.contains("\"user_id\""), "{code}");
        assert!(code.contains(":: db :: FromRow for A"), "{code}");
    }

    #[test]
    fn the_crate_path_can_be_given() {
        let code = expand_ok(parse_quote! {
            #[db(crate = "db_core")]
            struct A { id: i64 }
        });
        assert!(code.contains("db_core :: FromRow for A"), "{code}");
        assert!(!code.contains(":: db ::"), "{code}");
    }

    #[test]
    fn generic_fields_get_the_bounds_they_need() {
        let code = expand_ok(parse_quote! {
            struct Page<T, U, V> {
                item: T,
                #[db(flatten)]
                rest: U,
                #[db(default)]
                extra: Option<V>,
                plain: i64,
            }
        });
        assert!(code.contains("T : :: db :: FromValue"), "{code}");
        assert!(code.contains("U : :: db :: FromRow"), "{code}");
        assert!(code.contains("Option < V > : :: db :: FromValue"), "{code}");
        assert!(
            code.contains("Option < V > : :: core :: default :: Default"),
            "{code}"
        );
        // A field without type parameters adds no bound.
        assert!(!code.contains("i64 :"), "{code}");
    }

    #[test]
    fn json_fields_read_through_json() {
        let code = expand_ok(parse_quote! {
            struct A<T> {
                #[db(json)]
                a: T,
                #[db(json(nullable))]
                b: ::std::option::Option<Vec<T>>,
            }
        });
        assert!(
            code.contains("try_get :: < :: db :: Json < T > , & str > (\"a\")"),
            "{code}"
        );
        assert!(
            code.contains(":: db :: Json < T > : :: db :: FromValue"),
            "{code}"
        );
        assert!(
            code.contains("Option < :: db :: Json < Vec < T > >> , & str > (\"b\")"),
            "{code}"
        );
        assert!(
            code.contains(":: db :: Json < Vec < T > > : :: db :: FromValue"),
            "{code}"
        );
    }

    #[test]
    fn tuple_structs_read_by_position() {
        let code = expand_ok(parse_quote! {
            struct Pair(i64, #[db(try_from = "i64")] u8);
        });
        assert!(code.contains("try_get :: < i64 , usize > (0)"), "{code}");
        assert!(code.contains("try_get :: < i64 , usize > (1)"), "{code}");
    }

    #[test]
    fn bad_attributes_are_errors_naming_them() {
        let cases: Vec<(syn::DeriveInput, &str)> = vec![
            (
                parse_quote!(
                    struct A {
                        #[db(renamed = "x")]
                        a: i64,
                    }
                ),
                "unknown field attribute `renamed`; expected `rename`, `default`, `flatten`, `json` or `try_from`",
            ),
            (
                parse_quote!(
                    #[db(rename = "x")]
                    struct A {
                        a: i64,
                    }
                ),
                "unknown struct attribute `rename`; expected `rename_all` or `crate`",
            ),
            (
                parse_quote!(
                    #[db(rename_all = "camel")]
                    struct A {
                        a: i64,
                    }
                ),
                "unknown rename_all rule \"camel\"",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(rename = "x", rename = "y")]
                        a: i64,
                    }
                ),
                "duplicate `rename`",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(default)]
                        #[db(default)]
                        a: i64,
                    }
                ),
                "duplicate `default`",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(rename = "")]
                        a: i64,
                    }
                ),
                "a column name cannot be empty",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(flatten, rename = "x")]
                        a: B,
                    }
                ),
                "`flatten` reads the field from the whole row through its own FromRow; it cannot be combined with `rename`",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(try_from = "not a type")]
                        a: u8,
                    }
                ),
                "`try_from` needs a type",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(rename)]
                        a: u8,
                    }
                ),
                "expected `=`",
            ),
            (
                parse_quote!(
                    struct A(#[db(rename = "x")] i64);
                ),
                "`rename` is for named fields",
            ),
            (
                parse_quote!(
                    struct A(#[db(default)] i64);
                ),
                "`default` is for named fields",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(json(strict))]
                        a: B,
                    }
                ),
                "unknown `json` option `strict`; expected `nullable`",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(json(nullable))]
                        a: B,
                    }
                ),
                "`json(nullable)` is for a field of type `Option<T>`",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(json, try_from = "String")]
                        a: B,
                    }
                ),
                "`json` and `try_from` both say how to read the column; use one",
            ),
            (
                parse_quote!(
                    struct A {
                        #[db(flatten, json)]
                        a: B,
                    }
                ),
                "`flatten` reads the field from the whole row through its own FromRow; it cannot be combined with `json`",
            ),
            (
                parse_quote!(
                    enum A {
                        X,
                    }
                ),
                "FromRow can be derived for structs only",
            ),
            (
                parse_quote!(union A { x: u8 }),
                "FromRow can be derived for structs only",
            ),
            (
                parse_quote!(
                    struct A;
                ),
                "FromRow needs a struct with fields",
            ),
        ];
        for (input, expected) in cases {
            let errors = expand_err(input);
            assert!(
                errors.iter().any(|e| e.starts_with(expected)),
                "expected {expected:?}, got {errors:?}"
            );
        }
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let errors = expand_err(parse_quote! {
            struct A { #[db(x)] a: i64, #[db(y)] b: i64 }
        });
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
