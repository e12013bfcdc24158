//! `cocalc-db schema ...`: plan, sync and introspect with schema-sync.
//!
//! - `schema plan --spec FILE [--allow-destructive] [--json] [--expect HASH]`
//!   prints the plan (with the drops `sync --allow-destructive` would run) and
//!   its hash; exits 0 when there is nothing to do, 2 when changes are
//!   pending, 1 on error; with `--expect`, 0 exactly when the plan's hash is
//!   the one given (the plan a pull request's reviewers saw).
//! - `schema diff OLD NEW [--json] [--expect HASH]` the same, offline: the
//!   plan from one spec file to another, as a live plan on a database synced
//!   with OLD would be.
//! - `schema sync --spec FILE [--allow-destructive] [--dry-run] [--expect HASH]
//!   [--lock-timeout D] [--lock-deadline D] [--statement-timeout D]
//!   [--concurrent-indexes]` applies it.
//! - `schema introspect [--format json|toml] [--schema NAME]` prints the
//!   live tables of schema NAME (default `public`) as a spec naming it.
//!
//! A spec file ending in `.toml` is read as TOML, anything else as JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use db::{AnyPool, Pool};
use schema_sync::{Options, Schema};

use crate::config::{self, DbArgs};
use crate::output;

/// The `schema` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Print the plan that would make the database match the spec, and its
    /// hash. Exit status: 0 nothing to do, 2 changes pending, 1 error; with
    /// --expect, 0 exactly when the plan's hash is the one given.
    #[command(after_help = crate::exit_status::PLAN)]
    Plan(PlanArgs),
    /// The plan from one spec file to another, offline (no database): what
    /// `plan` would print on a database synced with OLD.
    #[command(after_help = crate::exit_status::PLAN)]
    Diff(DiffArgs),
    /// Make the database match the spec.
    #[command(after_help = crate::exit_status::PLAIN)]
    Sync(SyncArgs),
    /// Print the live tables of one schema (default `public`) as a spec.
    #[command(after_help = crate::exit_status::PLAIN)]
    Introspect(IntrospectArgs),
}

/// `--spec FILE`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SpecArgs {
    /// The spec file (`.toml` for TOML, otherwise JSON).
    #[arg(long)]
    pub(crate) spec: PathBuf,
}

/// How a plan is printed and checked.
#[derive(Debug, Clone, Args)]
pub(crate) struct PlanOutput {
    /// Print the plan as JSON (with its hash) instead of SQL text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Exit 0 only if the plan's hash is HASH (printed with every plan), 1
    /// otherwise: gates a deploy or pull request on the reviewed plan.
    #[arg(long, value_name = "HASH")]
    pub(crate) expect: Option<String>,
}

/// Arguments of `schema plan`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PlanArgs {
    /// The spec.
    #[command(flatten)]
    pub(crate) spec: SpecArgs,
    /// Plan what `schema sync --allow-destructive` would do: drops of the
    /// tables and columns schema-sync owns that the spec lacks, narrowing
    /// type changes.
    #[arg(long)]
    pub(crate) allow_destructive: bool,
    /// Output.
    #[command(flatten)]
    pub(crate) output: PlanOutput,
}

/// Arguments of `schema diff`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DiffArgs {
    /// The older spec file.
    pub(crate) old: PathBuf,
    /// The newer spec file.
    pub(crate) new: PathBuf,
    /// Plan drops of the tables and columns OLD has and NEW lacks.
    #[arg(long)]
    pub(crate) allow_destructive: bool,
    /// Output.
    #[command(flatten)]
    pub(crate) output: PlanOutput,
}

/// Prints `plan` with its hash and picks the exit status (see the module
/// docs).
fn report_plan(name: &str, plan: &schema_sync::Plan, output: &PlanOutput) -> ExitCode {
    let hash = plan.hash();
    let text = if output.json {
        let json = serde_json::to_value(plan).map(|mut value| {
            if let Some(object) = value.as_object_mut() {
                object.insert("hash".to_owned(), serde_json::Value::String(hash.clone()));
            }
            value
        });
        match json.and_then(|v| serde_json::to_string_pretty(&v)) {
            Ok(t) => t + "\n",
            Err(e) => return output::fail(name, &format!("writing JSON: {e}")),
        }
    } else {
        format!("{plan}-- plan hash: {hash}\n")
    };
    let code = output::print(name, &text);
    if code != ExitCode::SUCCESS {
        return code;
    }
    match &output.expect {
        Some(expected) if expected.trim().eq_ignore_ascii_case(&hash) => ExitCode::SUCCESS,
        Some(expected) => output::fail(
            name,
            &format!(
                "the plan's hash is {hash}, not the expected {}",
                expected.trim()
            ),
        ),
        None if plan.is_empty() => ExitCode::SUCCESS,
        None => ExitCode::from(2),
    }
}

/// Arguments of `schema sync`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SyncArgs {
    /// The spec.
    #[command(flatten)]
    pub(crate) spec: SpecArgs,
    /// Drop columns and tables the spec does not declare, and allow narrowing
    /// type changes.
    #[arg(long)]
    pub(crate) allow_destructive: bool,
    /// Print the plan and check its hazards, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Apply the plan only if its hash is HASH (the plan `schema plan`
    /// printed for review); otherwise change nothing and exit 1.
    #[arg(long, value_name = "HASH")]
    pub(crate) expect: Option<String>,
    /// How long one DDL statement waits for its lock before the attempt is
    /// rolled back and retried (PostgreSQL; `0` waits forever).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = duration)]
    pub(crate) lock_timeout: Limit,
    /// How long the sync keeps retrying while its locks are not granted.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub(crate) lock_deadline: Limit,
    /// The longest any statement of the sync may run (PostgreSQL; `0`, the
    /// default, is no limit).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = duration)]
    pub(crate) statement_timeout: Limit,
    /// Build indexes on existing tables with CREATE INDEX CONCURRENTLY,
    /// outside the transaction (PostgreSQL; writes go on meanwhile).
    #[arg(long)]
    pub(crate) concurrent_indexes: bool,
}

/// A time limit given on the command line; `None` for `0` (no limit).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit(Option<Duration>);

/// A duration as PostgreSQL's settings take it (`300ms`, `5s`, `2min`).
fn duration(text: &str) -> Result<Limit, String> {
    db::parse_duration(text)
        .map(Limit)
        .map_err(|e| e.to_string())
}

/// Output formats of `schema introspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// JSON (the interchange format).
    Json,
    /// TOML.
    Toml,
}

/// Arguments of `schema introspect`.
#[derive(Debug, Clone, Args)]
pub(crate) struct IntrospectArgs {
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub(crate) format: Format,
    /// The schema to read.
    #[arg(long, value_name = "NAME", default_value = schema_sync::DEFAULT_SCHEMA)]
    pub(crate) schema: String,
}

pub(crate) fn read_spec(path: &Path) -> Result<Schema, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        Schema::from_toml(&text)
    } else {
        Schema::from_json(&text)
    };
    parsed.map_err(|e| format!("{}: {e}", path.display()))
}

async fn open(db: &DbArgs, name: &str, writes: bool) -> Result<AnyPool, ExitCode> {
    let config =
        config::from_process(db).map_err(|e| output::fail(name, &format!("configuration: {e}")))?;
    if writes {
        output::target(name, &config);
    }
    AnyPool::connect(&config)
        .await
        .map_err(|e| output::fail(name, &format!("open: {}", output::error_chain(&e))))
}

/// Runs a `schema` subcommand.
pub(crate) async fn run(db: &DbArgs, command: &SchemaCommand) -> ExitCode {
    if let SchemaCommand::Diff(args) = command {
        return diff(args);
    }
    let name = match command {
        SchemaCommand::Plan(_) => "schema plan",
        SchemaCommand::Diff(_) => "schema diff",
        SchemaCommand::Sync(_) => "schema sync",
        SchemaCommand::Introspect(_) => "schema introspect",
    };
    let spec = match command {
        SchemaCommand::Plan(a) => Some(&a.spec.spec),
        SchemaCommand::Sync(a) => Some(&a.spec.spec),
        SchemaCommand::Introspect(_) | SchemaCommand::Diff(_) => None,
    };
    let spec = match spec.map(|p| read_spec(p)).transpose() {
        Ok(s) => s,
        Err(e) => return output::fail(name, &e),
    };
    let writes = matches!(command, SchemaCommand::Sync(_));
    let pool = match open(db, name, writes).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let code = match (command, spec) {
        (SchemaCommand::Plan(args), Some(spec)) => {
            let options = Options::new().allow_destructive(args.allow_destructive);
            match schema_sync::plan(&pool, &spec, &options).await {
                Ok(plan) => report_plan(name, &plan, &args.output),
                Err(e) => output::fail(name, &output::error_chain(&e)),
            }
        }
        (SchemaCommand::Sync(args), Some(spec)) => {
            let mut options = Options::new()
                .allow_destructive(args.allow_destructive)
                .dry_run(args.dry_run)
                .concurrent_indexes(args.concurrent_indexes)
                .lock_deadline(args.lock_deadline.0.unwrap_or_default());
            options.lock_timeout = args.lock_timeout.0;
            options.expect_hash = args.expect.clone();
            options.statement_timeout = args.statement_timeout.0;
            match schema_sync::sync(&pool, &spec, &options).await {
                Ok(report) => {
                    let verb = if report.applied {
                        "applied"
                    } else if args.dry_run {
                        "would apply (dry run)"
                    } else {
                        "nothing to apply"
                    };
                    let mut text = report.plan.to_string();
                    text.push_str(&format!(
                        "-- plan hash: {}\n-- {verb}: {} change(s)\n",
                        report.plan.hash(),
                        report.plan.changes.len()
                    ));
                    output::print(name, &text)
                }
                Err(e) => output::fail(name, &output::error_chain(&e)),
            }
        }
        (SchemaCommand::Introspect(args), _) => {
            let live = pool.acquire().await.map_err(schema_sync::SyncError::from);
            let live = match live {
                Ok(mut client) => {
                    // One more pass through the server reaches the fixed point
                    // of its deparser (IN checks on varchar columns print
                    // differently after a re-parse), so that syncing this
                    // output into an empty database introspects identically.
                    match schema_sync::introspect(&mut client, &args.schema).await {
                        Ok(live) => schema_sync::canonicalize(&mut client, &live.schema).await,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match live {
                Ok(live) => {
                    let text = match args.format {
                        Format::Json => live.to_json().map(|t| t + "\n"),
                        Format::Toml => live.to_toml(),
                    };
                    match text {
                        Ok(t) => output::print(name, &t),
                        Err(e) => output::fail(name, &e.to_string()),
                    }
                }
                Err(e) => output::fail(name, &output::error_chain(&e)),
            }
        }
        _ => output::fail(name, "internal error: missing spec"),
    };
    pool.close().await;
    code
}

/// `schema diff OLD NEW`: the offline plan between two spec files.
fn diff(args: &DiffArgs) -> ExitCode {
    let name = "schema diff";
    let (old, new) = match (read_spec(&args.old), read_spec(&args.new)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(e), _) | (_, Err(e)) => return output::fail(name, &e),
    };
    for spec in [&old, &new] {
        if let Err(e) = schema_sync::validate(spec) {
            return output::fail(name, &e.to_string());
        }
    }
    let options = schema_sync::DiffOptions::new().allow_destructive(args.allow_destructive);
    let plan = schema_sync::snapshot::plan_between_with(&old, &new, &options);
    report_plan(name, &plan, &args.output)
}
