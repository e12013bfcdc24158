//! Offline normalization: a light, idempotent rewrite of spec text that maps
//! what people type (`VARCHAR(32)`, `INT4`, `TIMESTAMP`) to what the server
//! prints (`character varying(32)`, `integer`, `timestamp without time
//! zone`). It is the identity on text the server produced, so it is applied
//! to both sides of every comparison, live or offline.

use crate::spec::{Index, Schema, Table};

/// Collapses runs of whitespace outside quoted literals and identifiers to
/// one space, and trims.
pub(crate) fn collapse(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut quote: Option<char> = None;
    let mut pending_space = false;
    for c in expr.trim().chars() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => pending_space = true,
            None => {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// Folds `ARRAY[('a'::T)::U, ('b'::T)::U]` into `(ARRAY['a'::T, 'b'::T])::U[]`
/// wherever it occurs outside literals.
///
/// The server stores `c IN ('a', 'b')` on a varchar column as the second
/// form, and the first once that text is parsed again, as when pg_dump's
/// output is restored: both mean the same, so comparisons use one of them.
pub(crate) fn fold_array_casts(expr: &str) -> String {
    const OPEN: &str = "ARRAY[(";
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = find_outside_literals(rest, OPEN) {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        match fold_one(candidate) {
            Some((folded, used)) => {
                out.push_str(&folded);
                rest = &candidate[used..];
            }
            None => {
                out.push_str(OPEN);
                rest = &candidate[OPEN.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The byte offset of `needle` in `s`, skipping `'...'` literals.
fn find_outside_literals(s: &str, needle: &str) -> Option<usize> {
    let mut in_literal = false;
    for (i, c) in s.char_indices() {
        if c == '\'' {
            in_literal = !in_literal;
        } else if !in_literal && s[i..].starts_with(needle) {
            return Some(i);
        }
    }
    None
}

/// Folds the `ARRAY[(...)::U, ...]` at the start of `s`: the folded text and
/// the bytes it replaces.
fn fold_one(s: &str) -> Option<(String, usize)> {
    let mut pos = "ARRAY[".len();
    let mut elements = Vec::new();
    let mut outer: Option<&str> = None;
    loop {
        let rest = &s[pos..];
        let body = rest.strip_prefix("('")?;
        let mut end = None;
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                    chars.next();
                } else {
                    end = Some(i);
                    break;
                }
            }
        }
        let end = end?;
        let literal = &body[..end];
        let after = body[end + 1..].strip_prefix("::")?;
        let close = after.find(')')?;
        let inner = &after[..close];
        let after = after[close + 1..].strip_prefix("::")?;
        let stop = after.find([',', ']'])?;
        let cast = &after[..stop];
        if inner.is_empty() || cast.is_empty() || *outer.get_or_insert(cast) != cast {
            return None;
        }
        elements.push(format!("'{literal}'::{inner}"));
        pos = s.len() - after.len() + stop;
        if s[pos..].starts_with(']') {
            pos += 1;
            break;
        }
        pos += s[pos..].strip_prefix(", ").map_or(1, |_| 2);
    }
    let outer = outer?;
    Some((format!("(ARRAY[{}])::{outer}[]", elements.join(", ")), pos))
}

/// The server's spelling of a type name.
pub fn normalize_type(type_: &str) -> String {
    let s = collapse(type_);
    if s.contains('"') {
        return s;
    }
    let mut s = s.to_ascii_lowercase();
    // The built-in types live in pg_catalog; the server prints them bare.
    if let Some(bare) = s.strip_prefix("pg_catalog.") {
        s = bare.trim_start().to_owned();
    }
    let mut arrays = String::new();
    while let Some(base) = s.strip_suffix("[]") {
        arrays.push_str("[]");
        s = base.trim_end().to_owned();
    }
    let (head, params) = match s.find('(') {
        Some(i) if s.ends_with(')') => (
            s[..i].trim_end().to_owned(),
            Some(s[i + 1..s.len() - 1].replace(' ', "")),
        ),
        _ => match s.find('(') {
            // `timestamp(3) with time zone`
            Some(i) => {
                let close = s[i..].find(')').map_or(s.len(), |j| i + j);
                let rest = s[close + 1..].trim().to_owned();
                (
                    format!("{} {rest}", s[..i].trim_end()).trim().to_owned(),
                    Some(s[i + 1..close].replace(' ', "")),
                )
            }
            None => (s.clone(), None),
        },
    };
    let p = |base: &str| match &params {
        Some(p) => format!("{base}({p})"),
        None => base.to_owned(),
    };
    let zoned = |base: &str, tz: &str| match &params {
        Some(p) => format!("{base}({p}) {tz}"),
        None => format!("{base} {tz}"),
    };
    let out = match head.as_str() {
        "int" | "integer" | "int4" => "integer".to_owned(),
        "int8" | "bigint" => "bigint".to_owned(),
        "int2" | "smallint" => "smallint".to_owned(),
        "serial" | "serial4" => "serial".to_owned(),
        "bigserial" | "serial8" => "bigserial".to_owned(),
        "smallserial" | "serial2" => "smallserial".to_owned(),
        "bool" | "boolean" => "boolean".to_owned(),
        "float8" | "double precision" => "double precision".to_owned(),
        "float" if params.is_none() => "double precision".to_owned(),
        "float4" | "real" => "real".to_owned(),
        "varchar" | "character varying" => p("character varying"),
        "char" | "character" | "bpchar" if params.is_none() => "character(1)".to_owned(),
        "char" | "character" | "bpchar" => p("character"),
        "decimal" | "numeric" => p("numeric"),
        "varbit" | "bit varying" => p("bit varying"),
        "bit" if params.is_none() => "bit(1)".to_owned(),
        "timestamp" | "timestamp without time zone" => zoned("timestamp", "without time zone"),
        "timestamptz" | "timestamp with time zone" => zoned("timestamp", "with time zone"),
        "time" | "time without time zone" => zoned("time", "without time zone"),
        "timetz" | "time with time zone" => zoned("time", "with time zone"),
        _ => p(&head),
    };
    out + &arrays
}

/// The serial pseudo-type's underlying type (`serial` → `integer`), or the
/// type itself.
pub(crate) fn storage_type(normalized: &str) -> &str {
    match normalized {
        "serial" => "integer",
        "bigserial" => "bigint",
        "smallserial" => "smallint",
        other => other,
    }
}

/// Whether a normalized type is one of the serial pseudo-types.
pub(crate) fn is_serial(normalized: &str) -> bool {
    matches!(normalized, "serial" | "bigserial" | "smallserial")
}

/// What the server would make of a table, as far as can be told offline:
/// normalized types and expressions, primary-key and serial columns NOT NULL,
/// a UNIQUE flag dropped where it duplicates the primary key.
pub(crate) fn normalize_table(table: &Table) -> Table {
    let mut t = table.clone();
    for c in &mut t.columns {
        c.type_ = normalize_type(&c.type_);
        c.default = c
            .default
            .as_deref()
            .map(|d| strip_outer_parens(&collapse(d)));
        c.check = c.check.as_deref().map(normalize_check);
        if is_serial(&c.type_) || table.primary_key.contains(&c.name) {
            c.not_null = true;
        }
        if c.unique && table.primary_key.len() == 1 && table.primary_key[0] == c.name {
            c.unique = false;
        }
    }
    for i in &mut t.indexes {
        *i = normalize_index(i);
    }
    t
}

/// [`normalize_table`] for a check expression.
pub(crate) fn normalize_check(check: &str) -> String {
    fold_array_casts(&strip_outer_parens(&collapse(check)))
}

/// Removes every pair of parentheses around the whole expression (`((n >=
/// 0))` is `n >= 0`); they never change its meaning.
pub(crate) fn strip_outer_parens(expr: &str) -> String {
    let mut e = expr.trim();
    loop {
        let inner = crate::introspect::strip_parens(e);
        if inner.len() == e.len() {
            return e.to_owned();
        }
        e = inner.trim();
    }
}

/// [`normalize_table`] for an index.
pub(crate) fn normalize_index(index: &Index) -> Index {
    let mut i = index.clone();
    i.method = i.method.trim().to_ascii_lowercase();
    i.keys = i.keys.iter().map(|k| collapse(k)).collect();
    i.where_ = i.where_.as_deref().map(|e| fold_array_casts(&collapse(e)));
    i
}

/// What the server would make of each table, as far as can be told offline:
/// normalized types and expressions, primary-key and serial columns NOT NULL,
/// a UNIQUE flag dropped where it duplicates the primary key.
pub fn normalize(schema: &Schema) -> Schema {
    Schema {
        schema: schema.schema.clone(),
        tables: schema.tables.iter().map(normalize_table).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_server_spelling_idempotently() {
        for (typed, server) in [
            ("INTEGER", "integer"),
            ("int4", "integer"),
            ("VARCHAR(32)", "character varying(32)"),
            ("CHAR(64)", "character(64)"),
            ("NUMERIC(20, 10)", "numeric(20,10)"),
            ("TEXT[]", "text[]"),
            ("VARCHAR(8)[]", "character varying(8)[]"),
            ("TIMESTAMP", "timestamp without time zone"),
            ("TIMESTAMP WITH TIME ZONE", "timestamp with time zone"),
            ("timestamptz(3)", "timestamp(3) with time zone"),
            ("BIT VARYING", "bit varying"),
            ("DOUBLE  PRECISION", "double precision"),
            ("JSONB[]", "jsonb[]"),
            ("SERIAL", "serial"),
            ("pg_catalog.int4", "integer"),
            ("PG_CATALOG.TIMESTAMPTZ", "timestamp with time zone"),
        ] {
            assert_eq!(normalize_type(typed), server, "{typed}");
            assert_eq!(normalize_type(server), server, "{server}");
        }
    }

    #[test]
    fn array_casts_fold_to_the_first_deparsed_form() {
        let first = "((c)::text = ANY ((ARRAY['a'::character varying, 'it''s, ]'::character varying])::text[]))";
        let second = "((c)::text = ANY (ARRAY[('a'::character varying)::text, ('it''s, ]'::character varying)::text]))";
        assert_eq!(fold_array_casts(second), first);
        assert_eq!(fold_array_casts(first), first);
        // Mixed casts, and look-alikes inside literals, stay as they are.
        for kept in [
            "x = ANY (ARRAY[('a'::character varying)::text, ('b'::bpchar)::name])",
            "x = 'ARRAY[(''a''::t)::u]'",
            "ARRAY[(1)::text]",
        ] {
            assert_eq!(fold_array_casts(kept), kept);
        }
        let twice = format!("{second} AND {second}");
        assert_eq!(fold_array_casts(&twice), format!("{first} AND {first}"));
    }

    #[test]
    fn collapse_keeps_literals() {
        assert_eq!(collapse("  a  IN ('x  y',\n 'z') "), "a IN ('x  y', 'z')");
    }
}
