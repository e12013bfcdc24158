//! The reset both backends share: what a database looked like right after
//! the setup ([`Baseline`]), and undoing only what a test changed since.

use db::{AnyPool, Error, Executor, Pool, Result, Value};

const USER_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'";

/// The schema that keeps a copy of the rows the setup left, to put back
/// after each test. Its tables are never emptied by a reset.
const SEED_SCHEMA: &str = "db_testing_seed";

fn boundary_sql() -> String {
    [
        "pg_class",
        "pg_proc",
        "pg_type",
        "pg_trigger",
        "pg_namespace",
        "pg_extension",
        "pg_constraint",
        "pg_attrdef",
    ]
    .iter()
    .map(|t| format!("(SELECT coalesce(max(oid::int8), 0) FROM pg_catalog.{t})"))
    .collect::<Vec<_>>()
    .join(", ")
}

fn fingerprint_sql() -> String {
    format!(
        "SELECT md5(coalesce(string_agg(x, ';' ORDER BY x), '')) FROM (
           SELECT format('col %s %s %s %s %s %s', c.oid, a.attnum, a.attname, a.atttypid, a.attnotnull, a.attisdropped) AS x
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE {USER_SCHEMAS} AND a.attnum > 0
           UNION ALL SELECT format('con %s %s', conname, pg_catalog.pg_get_constraintdef(co.oid))
             FROM pg_catalog.pg_constraint co JOIN pg_catalog.pg_namespace n ON n.oid = co.connamespace WHERE {USER_SCHEMAS}
           UNION ALL SELECT format('def %s %s %s', adrelid, adnum, pg_catalog.pg_get_expr(adbin, adrelid))
             FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_class c ON c.oid = d.adrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}
           UNION ALL SELECT format('rel %s %s %s %s %s %s %s', c.oid, c.relname, c.relkind,
               c.relrowsecurity, c.relforcerowsecurity, c.relacl,
               CASE WHEN c.relkind IN ('v', 'm') THEN md5(pg_catalog.pg_get_viewdef(c.oid)) END)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}
           UNION ALL SELECT format('trg %s %s %s', tgname, tgrelid, tgenabled)
             FROM pg_catalog.pg_trigger WHERE NOT tgisinternal
           UNION ALL SELECT format('fn %s %s %s %s %s', p.oid::regprocedure, md5(p.prosrc),
               p.provolatile, p.prosecdef, p.proconfig)
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMAS}
           UNION ALL SELECT format('enum %s %s %s', e.enumtypid, e.enumsortorder, e.enumlabel)
             FROM pg_catalog.pg_enum e JOIN pg_catalog.pg_type t ON t.oid = e.enumtypid
             JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE {USER_SCHEMAS}
           UNION ALL SELECT format('seq %s %s %s %s %s %s %s', q.seqrelid, q.seqtypid, q.seqincrement,
               q.seqmin, q.seqmax, q.seqstart, q.seqcycle)
             FROM pg_catalog.pg_sequence q JOIN pg_catalog.pg_class c ON c.oid = q.seqrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}
           UNION ALL SELECT format('pol %s %s %s %s %s', p.polrelid, p.polname, p.polcmd,
               pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))
             FROM pg_catalog.pg_policy p
         ) s"
    )
}

/// Statements that drop what was created after `boundary`, most dependent
/// first; each tolerates its object already being gone.
fn drops_sql() -> String {
    format!(
        "SELECT stmt FROM (
           SELECT 1 AS ord, format('DROP TRIGGER IF EXISTS %I ON %s', tgname, tgrelid::regclass) AS stmt
             FROM pg_catalog.pg_trigger WHERE oid::int8 > $1 AND NOT tgisinternal
           UNION ALL SELECT 2, format('DROP INDEX IF EXISTS %I.%I', n.nspname, c.relname)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid::int8 > $1 AND c.relkind IN ('i', 'I') AND {USER_SCHEMAS}
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conindid = c.oid)
           UNION ALL SELECT 3, format('DROP %s IF EXISTS %I.%I CASCADE',
               CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                   WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
               n.nspname, c.relname)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid::int8 > $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_SCHEMAS}
           UNION ALL SELECT 4, format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure)
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE p.oid::int8 > $1 AND {USER_SCHEMAS}
           UNION ALL SELECT 5, format('DROP TYPE IF EXISTS %s CASCADE', t.oid::regtype)
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
             WHERE t.oid::int8 > $1 AND {USER_SCHEMAS} AND t.typtype IN ('e', 'd', 'r', 'm')
           UNION ALL SELECT 6, format('DROP EXTENSION IF EXISTS %I CASCADE', extname)
             FROM pg_catalog.pg_extension WHERE oid::int8 > $1
           UNION ALL SELECT 7, format('DROP SCHEMA IF EXISTS %I CASCADE', n.nspname)
             FROM pg_catalog.pg_namespace n WHERE n.oid::int8 > $1 AND {USER_SCHEMAS}
         ) s ORDER BY ord"
    )
}

/// What a database looked like right after the setup.
#[derive(Debug, Clone)]
pub(crate) struct Baseline {
    /// Every object with an OID above this was created by a test.
    boundary: i64,
    /// Catalog fingerprint of the setup's objects.
    fingerprint: String,
    /// `SELECT` that lists the setup's tables holding rows.
    nonempty_tables: Option<String>,
    /// The setup's sequences and their `last_value` after the setup.
    sequences: Vec<(String, Option<i64>)>,
    /// The tables the setup left rows in: the table, its columns (without
    /// generated ones) and its copy in [`SEED_SCHEMA`], all quoted.
    seeds: Vec<Seed>,
}

#[derive(Debug, Clone)]
struct Seed {
    table: String,
    columns: String,
    copy: String,
}

impl Baseline {
    /// Records the state of a database the setup has just been applied to
    /// (or of a copy of one: a database cloned from a template keeps the
    /// template's OIDs).
    pub(crate) async fn capture(pool: &AnyPool) -> Result<Baseline> {
        let boundary: i64 = pool
            .query_one(&format!("SELECT greatest({})", boundary_sql()), &[])
            .await?
            .try_get(0)?;
        let fingerprint: String = pool.query_one(&fingerprint_sql(), &[]).await?.try_get(0)?;
        let tables: Vec<String> = pool
            .query(
                &format!(
                    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS} AND n.nspname <> '{SEED_SCHEMA}'
                     ORDER BY 1"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_>>()?;
        let nonempty_tables = (!tables.is_empty()).then(|| {
            let checks: Vec<String> = tables
                .iter()
                .map(|t| {
                    format!(
                        "CASE WHEN EXISTS (SELECT 1 FROM ONLY {t}) THEN {} END",
                        quote_literal(t)
                    )
                })
                .collect();
            format!("SELECT unnest(ARRAY[{}]::text[]) AS t", checks.join(", "))
        });
        let sequences = sequence_states(pool).await?;
        let seeds = seeds(pool).await?;
        Ok(Baseline {
            boundary,
            fingerprint,
            nonempty_tables,
            sequences,
            seeds,
        })
    }
}

/// Copies the rows the setup left into [`SEED_SCHEMA`] (made only when
/// there are any), so that every reset can put them back. Runs once per
/// database made, right after the setup.
pub(crate) async fn keep_seeds(pool: &AnyPool) -> Result<()> {
    pool.batch_execute(&format!(
        "DO $db_testing$
         DECLARE r record; n int := 0; found_rows bool; cols text;
         BEGIN
           FOR r IN SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name
                      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind = 'r' AND {USER_SCHEMAS} AND n.nspname <> '{SEED_SCHEMA}'
                     ORDER BY 2
           LOOP
             EXECUTE format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', r.name) INTO found_rows;
             CONTINUE WHEN NOT found_rows;
             IF n = 0 THEN
               CREATE SCHEMA {SEED_SCHEMA};
               CREATE TABLE {SEED_SCHEMA}.tables (n int PRIMARY KEY, target text NOT NULL, columns text NOT NULL);
             END IF;
             n := n + 1;
             SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
               FROM pg_catalog.pg_attribute
              WHERE attrelid = r.oid AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
             EXECUTE format('CREATE TABLE {SEED_SCHEMA}.%I AS SELECT %s FROM ONLY %s', 't' || n, cols, r.name);
             INSERT INTO {SEED_SCHEMA}.tables VALUES (n, r.name, cols);
           END LOOP;
         END $db_testing$"
    ))
    .await
}

/// The seed copies [`keep_seeds`] made, in the order it made them.
async fn seeds(pool: &AnyPool) -> Result<Vec<Seed>> {
    let exists: bool = pool
        .query_one_scalar(
            &format!("SELECT pg_catalog.to_regclass('{SEED_SCHEMA}.tables') IS NOT NULL"),
            &[],
        )
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    pool.query(
        &format!(
            "SELECT target, columns, format('%I.%I', '{SEED_SCHEMA}', 't' || n) \
             FROM {SEED_SCHEMA}.tables ORDER BY n"
        ),
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Seed {
            table: r.try_get(0)?,
            columns: r.try_get(1)?,
            copy: r.try_get(2)?,
        })
    })
    .collect()
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

async fn sequence_states(pool: &AnyPool) -> Result<Vec<(String, Option<i64>)>> {
    pool.query(
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_catalog.pg_sequences ORDER BY 1",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}

/// The comment `db-testing` puts on every database it makes, and looks for
/// before it deletes anything: a database is reset only if it carries it,
/// whatever its name or the configuration says.
pub(crate) const MARKER: &str =
    "db-testing scratch database: its contents are deleted between tests";

/// Marks the database behind `pool` as made by `db-testing`.
pub(crate) async fn mark(pool: &AnyPool) -> Result<()> {
    pool.batch_execute(&format!(
        "DO $db_testing$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS %L', \
         current_database(), {}); END $db_testing$",
        quote_literal(MARKER)
    ))
    .await
}

/// Fails unless the database behind `pool` carries [`MARKER`].
pub(crate) async fn check_marked(pool: &AnyPool) -> Result<()> {
    let row = pool
        .query_one(
            "SELECT current_database()::text, \
             pg_catalog.shobj_description(d.oid, 'pg_database') IS NOT DISTINCT FROM $1 \
             FROM pg_catalog.pg_database d WHERE d.datname = current_database()",
            &[Value::from(MARKER)],
        )
        .await?;
    if row.try_get::<bool, _>(1)? {
        return Ok(());
    }
    let name: String = row.try_get(0)?;
    Err(Error::backend(
        "db-testing",
        std::io::Error::other(format!(
            "refusing to reset database {name:?}: db-testing did not create it \
             (it lacks db-testing's marker comment)"
        )),
    ))
}

/// Undoes what the last test did to the database behind `pool`. `Ok(false)`
/// asks for a rebuild: the schema of the setup itself was changed.
pub(crate) async fn reset(pool: &AnyPool, baseline: &Baseline) -> Result<bool> {
    check_marked(pool).await?;
    let mut client = pool.acquire().await?;
    let drops: Vec<String> = client
        .query(&drops_sql(), &[Value::Int8(baseline.boundary)])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_>>()?;
    let mut script = String::from("RESET ALL; SET TimeZone = 'UTC'; DISCARD TEMP;");
    for stmt in drops {
        script.push_str(&stmt);
        script.push(';');
    }
    client.batch_execute(&script).await?;
    let fingerprint: String = client
        .query_one(&fingerprint_sql(), &[])
        .await?
        .try_get(0)?;
    if fingerprint != baseline.fingerprint {
        return Ok(false);
    }
    let mut emptied: Vec<String> = baseline.seeds.iter().map(|s| s.table.clone()).collect();
    if let Some(sql) = &baseline.nonempty_tables {
        for row in client.query(sql, &[]).await? {
            if let Some(table) = row.try_get::<Option<String>, _>(0)?
                && !emptied.contains(&table)
            {
                emptied.push(table);
            }
        }
    }
    if !emptied.is_empty() {
        // One transaction: the seed rows go back in with the foreign keys'
        // and user triggers' checks off (`replica`), as they were when the
        // setup inserted them in whatever order it did.
        let mut script = format!("BEGIN; TRUNCATE {} CASCADE;", emptied.join(", "));
        if !baseline.seeds.is_empty() {
            script.push_str("SET LOCAL session_replication_role = replica;");
        }
        for seed in &baseline.seeds {
            script.push_str(&format!(
                "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {};",
                seed.table,
                seed.copy,
                cols = seed.columns
            ));
        }
        script.push_str("COMMIT");
        client.batch_execute(&script).await?;
    }
    drop(client);
    let now = sequence_states(pool).await?;
    let mut restarts = String::new();
    for ((name, before), (_, after)) in baseline.sequences.iter().zip(&now) {
        if before != after {
            match before {
                Some(v) => restarts.push_str(&format!(
                    "SELECT setval({}, {v}, true);",
                    quote_literal(name)
                )),
                None => restarts.push_str(&format!("ALTER SEQUENCE {name} RESTART;")),
            }
        }
    }
    if !restarts.is_empty() {
        pool.batch_execute(&restarts).await?;
    }
    Ok(now.len() == baseline.sequences.len())
}
