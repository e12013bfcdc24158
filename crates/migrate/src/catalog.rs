//! What a database holds, measured the same way on every backend: tables
//! with row counts and content checksums, sequences with their state.

use db_core::{Executor, Value};

use crate::error::{MigrateError, Result};
use crate::manifest::{SchemaObjects, SequenceState, TableSummary, qualified};

/// Session settings that fix the text form of every value, so that a row
/// prints identically on PGlite 17 and PostgreSQL 13 and newer (and a
/// `regclass` value prints schema-qualified, so that the import, which runs
/// with an empty `search_path`, finds its table). Set with `SET LOCAL`:
/// they end with the caller's transaction.
pub(crate) const PINNED_OUTPUT: &str = "SET LOCAL TimeZone = 'UTC'; \
     SET LOCAL DateStyle = 'ISO'; SET LOCAL IntervalStyle = 'postgres'; \
     SET LOCAL extra_float_digits = 1; SET LOCAL bytea_output = 'hex'; \
     SET LOCAL search_path = pg_catalog";

/// Schemas that belong to the server, never to the data.
const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// `(schema, name)` of every ordinary table outside the system schemas.
pub(crate) async fn tables<E: Executor>(exec: &mut E) -> Result<Vec<(String, String)>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND {SYSTEM_SCHEMAS} ORDER BY 1, 2"
    );
    pairs(exec, &sql, "listing the tables").await
}

/// `(schema, name)` of every sequence outside the system schemas.
pub(crate) async fn sequences<E: Executor>(exec: &mut E) -> Result<Vec<(String, String)>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND {SYSTEM_SCHEMAS} ORDER BY 1, 2"
    );
    pairs(exec, &sql, "listing the sequences").await
}

async fn pairs<E: Executor>(exec: &mut E, sql: &str, what: &str) -> Result<Vec<(String, String)>> {
    pairs_with(exec, sql, &[], what).await
}

async fn pairs_with<E: Executor>(
    exec: &mut E,
    sql: &str,
    params: &[Value],
    what: &str,
) -> Result<Vec<(String, String)>> {
    let rows = exec
        .query(sql, params)
        .await
        .map_err(MigrateError::db(what))?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect::<db_core::Result<_>>()
        .map_err(MigrateError::db(what))
}

/// The checksum of a table without rows.
pub(crate) const EMPTY_CHECKSUM: &str = "0";

/// The row count and checksum of one table. The caller pins the output
/// settings ([`PINNED_OUTPUT`]) in its transaction first.
///
/// The checksum is the sum of the first 64 bits of each row text's md5 (the
/// row as `ROW(t.*)`: a bare `t` would be a column of that name, if the
/// table has one), as
/// numeric: order-independent, and computed the same way on PostgreSQL 13
/// (which lacks `bit_xor`) and on PGlite 17.
pub(crate) async fn summarize<E: Executor>(
    exec: &mut E,
    schema: &str,
    name: &str,
) -> Result<TableSummary> {
    let table = qualified(schema, name);
    let sql = format!(
        "SELECT count(*)::int8, coalesce(sum(('x' || left(md5(ROW(t.*)::text), 16))::bit(64)::int8::numeric), {EMPTY_CHECKSUM})::text \
         FROM {table} AS t"
    );
    let context = || format!("checksumming {table}");
    let row = exec
        .query_one(&sql, &[])
        .await
        .map_err(MigrateError::db(context()))?;
    let rows = row
        .try_get::<i64, _>(0)
        .map_err(MigrateError::db(context()))?;
    let checksum = row
        .try_get::<String, _>(1)
        .map_err(MigrateError::db(context()))?;
    Ok(TableSummary {
        schema: schema.to_owned(),
        name: name.to_owned(),
        rows,
        checksum,
    })
}

/// Every table's summary.
pub(crate) async fn summarize_all<E: Executor>(exec: &mut E) -> Result<Vec<TableSummary>> {
    let mut out = Vec::new();
    for (schema, name) in tables(exec).await? {
        out.push(summarize(exec, &schema, &name).await?);
    }
    Ok(out)
}

/// A sequence's state.
pub(crate) async fn sequence_state<E: Executor>(
    exec: &mut E,
    schema: &str,
    name: &str,
) -> Result<SequenceState> {
    let seq = qualified(schema, name);
    let context = || format!("reading sequence {seq}");
    let row = exec
        .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
        .await
        .map_err(MigrateError::db(context()))?;
    Ok(SequenceState {
        schema: schema.to_owned(),
        name: name.to_owned(),
        last_value: row
            .try_get::<i64, _>(0)
            .map_err(MigrateError::db(context()))?,
        is_called: row
            .try_get::<bool, _>(1)
            .map_err(MigrateError::db(context()))?,
    })
}

/// Every sequence's state.
pub(crate) async fn sequence_states<E: Executor>(exec: &mut E) -> Result<Vec<SequenceState>> {
    let mut out = Vec::new();
    for (schema, name) in sequences(exec).await? {
        out.push(sequence_state(exec, &schema, &name).await?);
    }
    Ok(out)
}

/// The column a sequence belongs to (serial, identity or `OWNED BY`), as
/// `(table schema, table, column)`.
pub(crate) async fn owning_column<E: Executor>(
    exec: &mut E,
    seq: &SequenceState,
) -> Result<Option<(String, String, String)>> {
    let sql = "SELECT tn.nspname::text, t.relname::text, a.attname::text \
         FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_class s ON s.oid = d.objid AND d.classid = 'pg_catalog.pg_class'::regclass \
         JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace \
         JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
         JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
         WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND sn.nspname = $1 AND s.relname = $2";
    let params = [
        Value::from(seq.schema.as_str()),
        Value::from(seq.name.as_str()),
    ];
    let context = || format!("finding the column of sequence {}", seq.qualified());
    let row = exec
        .query_opt(sql, &params)
        .await
        .map_err(MigrateError::db(context()))?;
    row.map(|r| {
        Ok((
            r.try_get::<String, _>(0)?,
            r.try_get::<String, _>(1)?,
            r.try_get::<String, _>(2)?,
        ))
    })
    .transpose()
    .map_err(MigrateError::db(context()))
}

/// The columns COPY moves for a table: all but dropped and generated ones,
/// in order, quoted.
pub(crate) async fn copy_columns<E: Executor>(
    exec: &mut E,
    schema: &str,
    name: &str,
) -> Result<Vec<String>> {
    let sql = "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 \
         AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum";
    let params = [Value::from(schema), Value::from(name)];
    let context = || format!("listing the columns of {}", qualified(schema, name));
    let rows = exec
        .query(sql, &params)
        .await
        .map_err(MigrateError::db(context()))?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map(|c| db_core::quote_ident(&c)))
        .collect::<db_core::Result<_>>()
        .map_err(MigrateError::db(context()))
}

/// The primary key of a table, `(column, type)` in key order (without
/// `INCLUDE` columns), the type as `format_type` spells it; empty for a
/// table without one.
pub(crate) async fn primary_key<E: Executor>(
    exec: &mut E,
    schema: &str,
    name: &str,
) -> Result<Vec<(String, String)>> {
    let sql = "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod) \
         FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
         WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary AND k.ord <= i.indnkeyatts \
         ORDER BY k.ord";
    let params = [Value::from(schema), Value::from(name)];
    pairs_with(
        exec,
        sql,
        &params,
        &format!("reading the primary key of {}", qualified(schema, name)),
    )
    .await
}

/// A table's pages and bytes on disk (TOAST included).
pub(crate) async fn relation_size<E: Executor>(
    exec: &mut E,
    schema: &str,
    name: &str,
) -> Result<(u64, u64)> {
    let sql = "SELECT pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int8, \
         pg_catalog.pg_table_size(c.oid) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2";
    let params = [Value::from(schema), Value::from(name)];
    let context = || format!("reading the size of {}", qualified(schema, name));
    let row = exec
        .query_one(sql, &params)
        .await
        .map_err(MigrateError::db(context()))?;
    let pages = row
        .try_get::<i64, _>(0)
        .map_err(MigrateError::db(context()))?;
    let bytes = row
        .try_get::<i64, _>(1)
        .map_err(MigrateError::db(context()))?;
    Ok((
        u64::try_from(pages).unwrap_or(0),
        u64::try_from(bytes).unwrap_or(0),
    ))
}

/// Up to `limit` qualified names of the tables a database holds.
pub(crate) async fn some_tables<E: Executor>(exec: &mut E, limit: usize) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND {SYSTEM_SCHEMAS} ORDER BY 1, 2 LIMIT {limit}"
    );
    let found = pairs(exec, &sql, "checking whether the target is empty").await?;
    Ok(found.iter().map(|(s, n)| qualified(s, n)).collect())
}

/// SQL quoting `expr` always, as [`db_core::quote_ident`] does, so names
/// read from the catalog compare equal to names built in Rust.
fn quoted(expr: &str) -> String {
    format!("('\"' || replace({expr}::text, '\"', '\"\"') || '\"')")
}

/// The names of the schema's objects, by kind (see [`SchemaObjects`]).
/// Sorted in Rust: the servers' collations may differ.
pub(crate) async fn schema_objects<E: Executor>(exec: &mut E) -> Result<SchemaObjects> {
    let (ns, rel) = (quoted("n.nspname"), quoted("c.relname"));
    let not_extension = |class: &str, oid: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = '{class}'::regclass \
             AND e.objid = {oid} AND e.deptype = 'e')"
        )
    };
    let relations = format!(
        "pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE {SYSTEM_SCHEMAS} AND {}",
        not_extension("pg_catalog.pg_class", "c.oid")
    );
    let sql = format!(
        "SELECT 'tables', {ns} || '.' || {rel} FROM {relations} AND c.relkind IN ('r', 'p') \
         UNION ALL SELECT 'columns', {ns} || '.' || {rel} || '.' || {att} \
           FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE {SYSTEM_SCHEMAS} AND {rel_not_ext} AND c.relkind IN ('r', 'p') \
           AND a.attnum > 0 AND NOT a.attisdropped \
         UNION ALL SELECT 'constraints', {ns} || '.' || {rel} || '.' || {con} \
           FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE {SYSTEM_SCHEMAS} AND {rel_not_ext} AND k.contype <> 'n' \
         UNION ALL SELECT 'indexes', {ns} || '.' || {rel} FROM {relations} AND c.relkind IN ('i', 'I') \
         UNION ALL SELECT 'sequences', {ns} || '.' || {rel} FROM {relations} AND c.relkind = 'S' \
         UNION ALL SELECT 'triggers', {ns} || '.' || {rel} || '.' || {trg} \
           FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           WHERE {SYSTEM_SCHEMAS} AND {rel_not_ext} AND NOT t.tgisinternal \
         UNION ALL SELECT 'functions', {ns} || '.' || {pro} || '(' || \
           pg_catalog.pg_get_function_identity_arguments(p.oid) || ')' \
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
           WHERE {SYSTEM_SCHEMAS} AND {pro_not_ext}",
        att = quoted("a.attname"),
        con = quoted("k.conname"),
        trg = quoted("t.tgname"),
        pro = quoted("p.proname"),
        rel_not_ext = not_extension("pg_catalog.pg_class", "c.oid"),
        pro_not_ext = not_extension("pg_catalog.pg_proc", "p.oid"),
    );
    let what = "reading the schema's objects";
    let mut objects = SchemaObjects::default();
    for (kind, name) in pairs(exec, &sql, what).await? {
        if let Some(names) = objects.kind_mut(&kind) {
            names.insert(name);
        }
    }
    Ok(objects)
}
