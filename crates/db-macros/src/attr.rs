//! The `#[db(...)]` attributes of a struct and of its fields.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, LitStr, Path, Type};

use crate::case::RenameAll;

/// The attributes of the struct itself.
#[derive(Default)]
pub(crate) struct Container {
    /// `rename_all = "camelCase"`.
    pub(crate) rename_all: Option<RenameAll>,
    /// `crate = "db_core"`: where `FromRow`, `Row`, ... live.
    pub(crate) krate: Option<Path>,
}

/// The attributes of one field, each with the span of its key for errors.
#[derive(Default)]
pub(crate) struct Field {
    /// `rename = "column"`.
    pub(crate) rename: Option<LitStr>,
    /// `default`: a missing column gives `Default::default()`.
    pub(crate) default: Option<Span>,
    /// `flatten`: the field is a `FromRow` of the same row.
    pub(crate) flatten: Option<Span>,
    /// `try_from = "T"`: read as `T`, then `TryFrom`.
    pub(crate) try_from: Option<(Span, Type)>,
    /// `json` or `json(nullable)`: a `json`/`jsonb` column deserialized
    /// into the field's type (`nullable`: SQL NULL gives `None`).
    pub(crate) json: Option<(Span, Json)>,
}

/// How a `json` field reads SQL NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Json {
    /// `json`: as any other column (an error unless `T` reads it).
    Plain,
    /// `json(nullable)`: the field is `Option<T>`, NULL gives `None`.
    Nullable,
}

const CONTAINER_KEYS: &str = "`rename_all` or `crate`";
const FIELD_KEYS: &str = "`rename`, `default`, `flatten`, `json` or `try_from`";

/// The `#[db(...)]` attributes of the struct.
pub(crate) fn container(attrs: &[Attribute]) -> syn::Result<Container> {
    let mut out = Container::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("db")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                let lit: LitStr = meta.value()?.parse()?;
                let rule = RenameAll::parse(&lit)?;
                set_once(&meta, &mut out.rename_all, rule)
            } else if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                let path = lit.parse::<Path>().map_err(|e| {
                    syn::Error::new(lit.span(), format!("`crate` needs a path: {e}"))
                })?;
                set_once(&meta, &mut out.krate, path)
            } else {
                Err(unknown(&meta, "struct", CONTAINER_KEYS))
            }
        })?;
    }
    Ok(out)
}

/// The `#[db(...)]` attributes of a field.
pub(crate) fn field(attrs: &[Attribute]) -> syn::Result<Field> {
    let mut out = Field::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("db")) {
        attr.parse_nested_meta(|meta| {
            let span = meta
                .path
                .get_ident()
                .map_or_else(Span::call_site, |i| i.span());
            if meta.path.is_ident("rename") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(lit.span(), "a column name cannot be empty"));
                }
                set_once(&meta, &mut out.rename, lit)
            } else if meta.path.is_ident("default") {
                set_once(&meta, &mut out.default, span)
            } else if meta.path.is_ident("flatten") {
                set_once(&meta, &mut out.flatten, span)
            } else if meta.path.is_ident("try_from") {
                let lit: LitStr = meta.value()?.parse()?;
                let ty = lit.parse::<Type>().map_err(|e| {
                    syn::Error::new(lit.span(), format!("`try_from` needs a type: {e}"))
                })?;
                set_once(&meta, &mut out.try_from, (span, ty))
            } else if meta.path.is_ident("json") {
                let mut mode = Json::Plain;
                if meta.input.peek(syn::token::Paren) {
                    meta.parse_nested_meta(|option| {
                        if option.path.is_ident("nullable") {
                            mode = Json::Nullable;
                            Ok(())
                        } else {
                            Err(option.error(format!(
                                "unknown `json` option `{}`; expected `nullable`",
                                path_name(&option.path)
                            )))
                        }
                    })?;
                }
                set_once(&meta, &mut out.json, (span, mode))
            } else {
                Err(unknown(&meta, "field", FIELD_KEYS))
            }
        })?;
    }
    out.check()?;
    Ok(out)
}

impl Field {
    /// Refuses combinations that have no meaning.
    fn check(&self) -> syn::Result<()> {
        if let Some(flatten) = self.flatten {
            let other = [
                self.rename.as_ref().map(|_| "rename"),
                self.default.map(|_| "default"),
                self.try_from.as_ref().map(|_| "try_from"),
                self.json.as_ref().map(|_| "json"),
            ];
            if let Some(other) = other.into_iter().flatten().next() {
                return Err(syn::Error::new(
                    flatten,
                    format!(
                        "`flatten` reads the field from the whole row through its own FromRow; \
                         it cannot be combined with `{other}`"
                    ),
                ));
            }
        }
        if let (Some((json, _)), Some(_)) = (&self.json, &self.try_from) {
            return Err(syn::Error::new(
                *json,
                "`json` and `try_from` both say how to read the column; use one",
            ));
        }
        Ok(())
    }
}

fn set_once<T>(meta: &ParseNestedMeta<'_>, slot: &mut Option<T>, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format!("duplicate `{}`", path_name(&meta.path))));
    }
    *slot = Some(value);
    Ok(())
}

fn unknown(meta: &ParseNestedMeta<'_>, place: &str, expected: &str) -> syn::Error {
    meta.error(format!(
        "unknown {place} attribute `{}`; expected {expected}",
        path_name(&meta.path)
    ))
}

fn path_name(path: &Path) -> String {
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    segments.join("::")
}
