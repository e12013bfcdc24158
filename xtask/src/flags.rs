//! Command-line parsing, by hand: the grammar is tiny and a parser crate would
//! cost more build time than this file.

use crate::Result;

/// Printed for `help` and after every usage error.
pub(crate) const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test [--db pglite|postgres|all] [--pg 13,14,15,16,17,18] [-- <cargo test args>]
      Run the tests against each database backend and print a result matrix
      (default: --db all). --db pglite runs every crate's own tests and then
      the conformance suite on PGlite; each postgres cell starts a throwaway
      server and runs `cargo test -p conformance` against it, and one more
      cell runs it (with the TLS tests) on a TLS-only server of the newest
      version, with sslmode=verify-full. --pg lists the PostgreSQL major versions
      (default 13,14,15,16,17,18); without --pg, a server already named by $DATABASE_URL
      is used instead. Arguments after `--` are appended to every `cargo test`,
      e.g. `-- some_test_name` or `-- -- --nocapture`.
  pg [--pg 15] [--tls]
      Start a throwaway PostgreSQL server (default version 15), print its
      DATABASE_URL and keep it running until Enter or end of input (Ctrl-D).
      --tls makes it TLS-only, with a throwaway CA (the URL says
      sslmode=verify-full and where the CA is).
  bench [--quick] [--json FILE] [--only GROUP[,GROUP]] [--runs N]
      Run every benchmark contender (db-pglite, pglite-oxide, Node PGlite,
      db-postgres and sqlx on a throwaway PostgreSQL 15) in release mode and
      print medians, p99 and the tracked ratios; --json also writes them.
      The core workloads run N times (default 5, 2 with --quick) on the idle
      machine and as many under a CPU load the bench makes itself (one busy
      thread per core but one); the tables give the median of the runs and
      their spread.
      --only runs just these workload groups: core, changefeed, schema-sync,
      migrate (which runs the release `cocalc-db` binary's export, import and
      migrate as child processes and reports their time and peak RSS), hub
      (the hub slice's request mix at 1, 8 and 64 users with live project
      lists, N runs, default 3).
  codegen [--check]
      Regenerate crates/db-core/src/sqlstate.rs from PostgreSQL's errcodes.txt;
      with --check, fail if the committed file is out of date.
  help
      Print this message.
";

/// What the user asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    Test(TestFlags),
    Pg { major: u32, tls: bool },
    Bench(BenchFlags),
    Codegen { check: bool },
}

/// Options of `cargo xtask bench`.
#[derive(Debug, PartialEq, Eq, Default)]
pub(crate) struct BenchFlags {
    /// Fewer rounds and iterations, for a quick look.
    pub(crate) quick: bool,
    /// Where to write the figures as JSON.
    pub(crate) json: Option<String>,
    /// Only these workload groups (comma-separated), checked by the bench.
    pub(crate) only: Option<String>,
    /// Runs of the core workloads per condition, checked by the bench.
    pub(crate) runs: Option<String>,
}

/// Options of `cargo xtask test`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TestFlags {
    pub(crate) db: Db,
    /// PostgreSQL major versions from `--pg`, if given.
    pub(crate) pg: Option<Vec<u32>>,
    /// Everything after `--`, appended to each `cargo test`.
    pub(crate) cargo_args: Vec<String>,
}

/// Which backends `cargo xtask test` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    Pglite,
    Postgres,
    All,
}

impl Db {
    pub(crate) fn includes_pglite(self) -> bool {
        matches!(self, Db::Pglite | Db::All)
    }

    pub(crate) fn includes_postgres(self) -> bool {
        matches!(self, Db::Postgres | Db::All)
    }
}

/// Parses the arguments that follow `cargo xtask`.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Err("missing command".into());
    };
    match command.as_str() {
        "test" => parse_test(args),
        "pg" => parse_pg(args),
        "bench" => parse_bench(args),
        "codegen" => match args.next().as_deref() {
            None => Ok(Command::Codegen { check: false }),
            Some("--check") => Ok(Command::Codegen { check: true }),
            Some(other) => Err(format!("unexpected argument `{other}` to codegen")),
        },
        "help" | "-h" | "--help" => Ok(Command::Help),
        other => Err(format!("unknown command `{other}`")),
    }
}

fn parse_test(mut args: impl Iterator<Item = String>) -> Result<Command> {
    let (mut db, mut pg) = (None, None);
    let mut cargo_args = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--" {
            cargo_args.extend(args);
            break;
        }
        match option(&arg, &["--db", "--pg"], &mut args)? {
            None => return Ok(Command::Help),
            Some(("--db", value)) => set_once(&mut db, "--db", parse_db(&value)?)?,
            Some((_, value)) => set_once(&mut pg, "--pg", parse_versions(&value)?)?,
        }
    }
    let db = db.unwrap_or(Db::All);
    if pg.is_some() && !db.includes_postgres() {
        return Err("--pg only applies to --db postgres or --db all".into());
    }
    Ok(Command::Test(TestFlags { db, pg, cargo_args }))
}

fn parse_bench(mut args: impl Iterator<Item = String>) -> Result<Command> {
    let mut flags = BenchFlags::default();
    while let Some(arg) = args.next() {
        if arg == "--quick" {
            flags.quick = true;
            continue;
        }
        match option(&arg, &["--json", "--only", "--runs"], &mut args)? {
            None => return Ok(Command::Help),
            Some(("--only", value)) => set_once(&mut flags.only, "--only", value)?,
            Some(("--runs", value)) => set_once(&mut flags.runs, "--runs", value)?,
            Some((_, value)) => set_once(&mut flags.json, "--json", value)?,
        }
    }
    Ok(Command::Bench(flags))
}

fn parse_pg(mut args: impl Iterator<Item = String>) -> Result<Command> {
    let mut major = None;
    let mut tls = false;
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            tls = true;
            continue;
        }
        match option(&arg, &["--pg"], &mut args)? {
            None => return Ok(Command::Help),
            Some((_, value)) => {
                let [version] = parse_versions(&value)?[..] else {
                    return Err("`pg` starts one server: give a single --pg version".into());
                };
                set_once(&mut major, "--pg", version)?;
            }
        }
    }
    Ok(Command::Pg {
        major: major.unwrap_or(15),
        tls,
    })
}

/// Reads one option among `known`, spelled `--name value` or `--name=value`;
/// `None` means help was asked for.
fn option(
    arg: &str,
    known: &[&'static str],
    rest: &mut impl Iterator<Item = String>,
) -> Result<Option<(&'static str, String)>> {
    if arg == "-h" || arg == "--help" {
        return Ok(None);
    }
    let (name, inline_value) = match arg.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (arg, None),
    };
    let Some(&name) = known.iter().find(|&&known| known == name) else {
        return Err(if arg.starts_with('-') {
            format!("unknown option `{arg}`")
        } else {
            format!("unexpected argument `{arg}` (arguments for cargo test go after `--`)")
        });
    };
    let value = match inline_value {
        Some(value) => value,
        None => rest.next().ok_or_else(|| format!("{name} needs a value"))?,
    };
    Ok(Some((name, value)))
}

/// Rejects a repeated option rather than silently letting the last one win.
fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(format!("{name} given more than once"));
    }
    Ok(())
}

fn parse_db(value: &str) -> Result<Db> {
    match value {
        "pglite" => Ok(Db::Pglite),
        "postgres" => Ok(Db::Postgres),
        "all" => Ok(Db::All),
        other => Err(format!(
            "unknown backend `{other}` for --db (expected pglite, postgres or all)"
        )),
    }
}

/// Parses a comma-separated list of PostgreSQL major versions such as `13,15`.
fn parse_versions(value: &str) -> Result<Vec<u32>> {
    value
        .split(',')
        .map(|version| match version.trim().parse() {
            Ok(major) if major > 0 => Ok(major),
            _ => Err(format!(
                "bad PostgreSQL major version `{version}` in --pg (expected e.g. 13,15)"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &str) -> Result<Command> {
        parse(args.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn test_defaults_to_all_backends() {
        let expected = TestFlags {
            db: Db::All,
            pg: None,
            cargo_args: vec![],
        };
        assert_eq!(parse_str("test"), Ok(Command::Test(expected)));
    }

    #[test]
    fn test_options_in_both_spellings_and_passthrough() {
        let expected = TestFlags {
            db: Db::Postgres,
            pg: Some(vec![13, 15]),
            cargo_args: vec!["my_filter".into(), "--".into(), "--nocapture".into()],
        };
        let parsed = parse_str("test --db postgres --pg=13,15 -- my_filter -- --nocapture");
        assert_eq!(parsed, Ok(Command::Test(expected)));
    }

    #[test]
    fn usage_errors() {
        assert!(parse_str("").is_err());
        assert!(parse_str("frobnicate").is_err());
        assert!(parse_str("test --db mysql").is_err());
        assert!(parse_str("test --db").is_err());
        assert!(parse_str("test --db pglite --pg 15").is_err());
        assert!(parse_str("test --pg 13,x").is_err());
        assert!(parse_str("test --db all --db pglite").is_err());
        assert!(parse_str("test my_filter").is_err());
        assert!(parse_str("pg --pg 13,15").is_err());
    }

    #[test]
    fn pg_defaults_to_15() {
        assert_eq!(
            parse_str("pg"),
            Ok(Command::Pg {
                major: 15,
                tls: false
            })
        );
        assert_eq!(
            parse_str("pg --pg 13"),
            Ok(Command::Pg {
                major: 13,
                tls: false
            })
        );
        assert_eq!(
            parse_str("pg --tls --pg 16"),
            Ok(Command::Pg {
                major: 16,
                tls: true
            })
        );
        assert_eq!(parse_str("pg --help"), Ok(Command::Help));
    }
}
