//! Declarative schema sync: table specs, diffed against the live catalog into
//! reviewable plans whose SQL runs on PostgreSQL 13 and newer and on PGlite.
//!
//! ```no_run
//! # async fn demo<P: db_core::Pool>(pool: P) -> Result<(), schema_sync::SyncError> {
//! use schema_sync::{Column, Index, Options, Schema, Table};
//! let schema = Schema::new().in_schema("hub").table(
//!     Table::new("accounts")
//!         .column(Column::new("account_id", "UUID"))
//!         .column(Column::new("email", "VARCHAR(254)").unique())
//!         .column(Column::new("created", "TIMESTAMP").not_null().default("now()"))
//!         .primary_key(["account_id"])
//!         .index(Index::new("accounts_created_idx", ["created DESC"])),
//! );
//! let plan = schema_sync::plan(&pool, &schema, &Options::new()).await?;
//! println!("{plan}");
//! let report = schema_sync::sync(&pool, &schema, &Options::new()).await?;
//! assert!(schema_sync::plan(&pool, &schema, &Options::new()).await?.is_empty());
//! # let _ = report; Ok(()) }
//! ```
//!
//! # The interchange format (JSON or TOML)
//!
//! The JSON form is the shape of `shared/fixtures/cocalc-control-plane-schema.json`,
//! which loads unchanged. Files are read strictly: `tables` is required, and
//! an unknown key anywhere is an error naming it and its line; the fixture's
//! annotations (`format`, `source`, `counts`, `skipped`, `durability`,
//! `kind`, `source_query`, `comment`, `nullability_declared`, ...) are known
//! and ignored (see [`Schema`]).
//!
//! ```json
//! { "schema": "public",
//!   "tables": [ {
//!     "name": "t",
//!     "columns": [ { "name": "id", "type": "BIGINT", "not_null": false,
//!                    "default": null, "check": null, "unique": false,
//!                    "null_backfill": null } ],
//!     "primary_key": ["id"],
//!     "indexes": [ { "name": "t_lower_x_idx", "unique": false, "method": "btree",
//!                    "keys": ["lower(x) text_pattern_ops"], "where": null,
//!                    "include": [] } ] } ] }
//! ```
//!
//! - `schema` (optional, default `public`) is the schema the tables live
//!   in: any characters, always quoted, at most 63 bytes. Schemas that are
//!   not schema-sync's business are refused: `pg_catalog`,
//!   `information_schema`, anything starting with `pg_`, schema-sync's own
//!   `schema_sync`, and the changefeed's `changefeed` (compared without
//!   regard to ASCII case). In TOML it is a top-level `schema = "..."`
//!   before the first `[[tables]]`; in the builder [`Schema::in_schema`].
//! - `type` is a type name (`VARCHAR(32)`, `TEXT[]`, `SERIAL`, `NUMERIC(20,10)`,
//!   `timestamp with time zone`, `public.my_enum`): a quoted or qualified
//!   name or one of PostgreSQL's multi-word type names (`double precision`,
//!   `character varying`, `bit varying`, `national character [varying]`,
//!   `time[stamp] [(p)] with[out] time zone`, `interval` with fields),
//!   integer modifiers and array brackets, nothing else (no constraint
//!   clauses, `COLLATE` or `SETOF`). Before any DDL runs the server
//!   resolves each type (`to_regtype`; serial types are their own case):
//!   one it does not know is [`SyncError::UnknownType`].
//! - `default`, `check` (without `CHECK` and outer parentheses), `null_backfill`,
//!   index `keys` (with ordering and operator class) and `where` are SQL
//!   expressions. Each must be one self-contained expression: balanced
//!   parentheses and brackets, no `;`, no comment, no `,` outside parentheses
//!   (checked by [`validate`] before anything is sent). A `default` may also
//!   be a number (finite, and exactly what was written: 64-bit integers,
//!   decimals of at most 15 significant digits) or a boolean. No text
//!   field may hold a NUL character. All of these, `not_null`, `unique`,
//!   `primary_key`, `indexes`, `method` (a plain name, default `btree`) and
//!   `include` are optional.
//! - Every generated DDL statement is sent alone through the extended
//!   protocol, which refuses a second statement, so no text in a spec can run
//!   SQL of its own.
//! - Identifiers (table, column, index names) may hold any characters; they are
//!   always quoted. At most 63 bytes.
//! - TOML uses the same field names (`[[tables]]`, `[[tables.columns]]`,
//!   `[[tables.indexes]]`); absent optional fields mean null/false/empty.
//!
//! # Semantics
//!
//! - A spec describes one schema. A sync creates it when it is missing
//!   (`CREATE SCHEMA`, recorded as owned), reads only its tables and
//!   qualifies every statement with it, so specs for different schemas
//!   synced into one database never touch each other's tables, even with
//!   `allow_destructive`. Types and functions that expressions name are
//!   resolved through the session's `search_path`; qualify those that live
//!   in the spec's schema (`app.my_enum`). Plans carry the schema
//!   ([`Plan::schema`], [`Change::schema`]) and [`Plan::hash`] covers it.
//! - What a sync created or a synced spec declared is recorded, by schema,
//!   in the ledger `schema_sync.owned` (the schema itself when the sync
//!   created it, tables, columns, UNIQUE and CHECK constraints, primary
//!   keys); only owned objects are dropped or replaced. A live check or
//!   key is adopted only when it is exactly the spec's; one made by hand
//!   is drift, even under the name schema-sync would give it. A ledger written before schemas existed is read as
//!   `public`'s and migrated in place by the next sync.
//! - Comparison is on canonical forms: the server canonicalizes the spec's
//!   existing tables (created in a scratch schema inside a transaction that
//!   is rolled back) and the result is cached, per schema, in
//!   `schema_sync.state` after each sync, so a plan for an unchanged spec is one introspection (three
//!   catalog queries) and an in-memory diff.
//! - Serial columns compare as `serial`/`bigserial`; their owned sequence
//!   default is not compared.
//! - Column checks are named `<table>_<column>_check` (PostgreSQL's own
//!   scheme; when that is longer than 63 bytes the truncated names carry 8
//!   hex digits of a digest of both, so columns whose names differ only
//!   past the cut get distinct checks); UNIQUE columns get PostgreSQL's default `<table>_<column>_key`.
//! - Indexes created by schema-sync carry `COMMENT ON INDEX ... IS
//!   'schema-sync:v1:<sha256>'`; only such indexes are ever replaced or dropped.
//!   Unknown indexes, extra tables and columns, and constraints outside the
//!   model are reported as [`Drift`]. Columns and tables are dropped only with
//!   `allow_destructive`, which also admits narrowing type changes. A column
//!   that objects schema-sync does not own depend on (read from `pg_depend`:
//!   indexes and constraints made by hand, other tables' foreign keys,
//!   views) is never dropped: it is drift naming them.
//! - A type change rebuilds the owned indexes whose key expressions or
//!   predicate use the column: PostgreSQL would re-parse their stored
//!   definitions for the new type, which fails (`COALESCE(n, 0)` once `n` is
//!   text) or keeps a definition the spec does not say. They are dropped
//!   before the `ALTER COLUMN ... TYPE` and created again from the spec
//!   after it, in the same transaction. A column check rebuilt for a type
//!   change is likewise dropped before it (`x > 5` fails once x is text).
//! - Primary keys are added to tables without one, or, when schema-sync
//!   owns the key, swapped (`DROP CONSTRAINT <live name>, ADD PRIMARY KEY
//!   (...)`) when the spec's differs, or dropped (hazard
//!   `LOOSENS_CONSTRAINT`) when the spec has none.
//! - [`sync`] takes the advisory lock [`LOCK_KEY`] through `Pool::lock`
//!   (polled; up to the lock deadline, then [`SyncError::SyncInProgress`]
//!   names the holder), runs every transactional change in one transaction (with
//!   `SET LOCAL lock_timeout` / `statement_timeout` on PostgreSQL), checks
//!   NOT NULL preconditions first ([`SyncError::NullRows`] names the column
//!   and the count), refuses `DESTRUCTIVE` hazards unless allowed, and before
//!   committing verifies that the plan from the new state is empty.
//!   Concurrent index builds (PostgreSQL only, never PGlite) run after the
//!   commit and are checked for validity: a failed or invalid build is
//!   dropped (`DROP INDEX CONCURRENTLY IF EXISTS`) and the error
//!   ([`SyncError::PartiallyApplied`]) lists what stays committed. An
//!   invalid live index never matches the spec: it is built again.
//! - What the server rejects (a type, default, check or index expression) is
//!   reported as [`SyncError::Rejected`] with the table and the column or
//!   index, from the server's error position.
//! - The offline diff ([`diff`], [`snapshot::plan_between`]) compares with a
//!   light offline normalization ([`normalize`]: type names in the server's
//!   spelling, whitespace, outer parentheses of defaults and checks) and
//!   writes SQL from the spec as written, so it yields the same changes as
//!   the live plan for the same two states when both specs spell each
//!   expression the same way; other spellings of one expression
//!   (`lower((v))`, `n>=0`) are a change offline, none live.

mod apply;
mod ddl;
mod introspect;
mod normalize;
mod ownership;
mod plan;
pub mod snapshot;
mod spec;
mod validate;

pub use apply::{
    LOCK_KEY, LockHolder, NAMESPACE, Options, Report, SyncError, canonicalize, plan, sync,
};
pub use ddl::{OWNER_MARKER, check_name, index_marker, is_owner_marker, pkey_name, unique_name};
pub use introspect::{Dependent, LiveSchema, OtherConstraint, introspect};
pub use normalize::{normalize, normalize_type};
pub use plan::{
    Change, ChangeKind, DiffOptions, Drift, DriftKind, Hazard, HazardKind, NullCheck, Plan, diff,
};
pub use spec::{Column, DEFAULT_SCHEMA, FormatError, Index, Schema, Table};
pub use validate::{MAX_IDENTIFIER_BYTES, ValidationError, ValidationErrors, validate};
