//! Runs the built `cocalc-db` binary on the embedded backend.
//!
//! Each embedded open takes about half a second, so the tests are few.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{clean_command, failure_line, run};

use db::{Config, DataDir, PglitePool, Pool};

/// The cache pglite-oxide already uses, so that a fresh `HOME` does not
/// unpack its runtime (about 100 MB) again.
fn real_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
}

/// The binary with a clean configuration environment and `HOME` at `home`.
fn cocalc_db(home: &Path) -> Command {
    let mut cmd = clean_command();
    cmd.env("HOME", home)
        .env("XDG_CACHE_HOME", real_cache_dir());
    cmd
}

/// The binary on the embedded cluster in `<home>/data`.
fn on_data_dir(home: &Path) -> Command {
    let mut cmd = cocalc_db(home);
    cmd.env("COCALC_DB", "pglite")
        .env("COCALC_PGLITE_DATA_DIR", home.join("data"));
    cmd
}

#[test]
fn check_reports_the_embedded_backend() {
    let home = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = run(on_data_dir(home.path()).arg("check"));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("backend:        pglite"), "{out}");
    assert!(out.contains("server version: 17"), "{out}");
    assert!(
        out.contains(&home.path().join("data").display().to_string()),
        "{out}"
    );
    assert!(out.contains("durability:     durable"), "{out}");
    for step in [
        "configuration",
        "data directory",
        "open",
        "query",
        "close",
        "total",
    ] {
        assert!(out.contains(step), "missing step {step}:\n{out}");
    }
}

#[test]
fn the_binary_defaults_to_pglite_in_home() {
    let home = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = run(cocalc_db(home.path()).arg("check"));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let dir = home.path().join(".cocalc").join("pglite");
    assert!(out.contains(&dir.display().to_string()), "{out}");
    assert!(dir.is_dir());
}

#[test]
fn sql_prints_json_tables_and_server_errors() {
    let home = tempfile::tempdir().expect("tempdir");

    let (code, out, err) = run(on_data_dir(home.path()).args(["sql", "select 1 as one", "--json"]));
    assert_eq!((code, out.as_str()), (0, "[{\"one\":1}]\n"), "{err}");

    let (code, out, err) = run(on_data_dir(home.path()).args([
        "sql",
        "select 1 as one, null::text as two union all select 20, 'x'",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        " one | two\n-----+------\n   1 | NULL\n  20 | x\n(2 rows)\n"
    );

    let (code, out, err) = run(on_data_dir(home.path()).args(["sql", "selec 1"]));
    assert_eq!(code, 1, "stdout: {out}");
    assert!(
        failure_line("sql", &err).starts_with("cocalc-db sql: ERROR 42601: syntax error"),
        "{err}"
    );
}

#[test]
fn an_unknown_backend_lists_the_accepted_ones() {
    let home = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = run(cocalc_db(home.path())
        .env("COCALC_DB", "pglit")
        .arg("check"));
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("cocalc-db check: configuration: "), "{err}");
    assert!(err.contains("postgres, pglite"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_held_by_another_process_names_its_pid() {
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("data");
    let held = PglitePool::open(&Config::new().pglite(DataDir::Path(dir)))
        .await
        .expect("open the data directory in the test process");

    let (code, out, err) = run(on_data_dir(home.path()).arg("check"));
    held.close().await;

    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.starts_with("cocalc-db check: open: "), "{err}");
    let holder = format!("in use by process {}", std::process::id());
    assert!(err.contains(&holder), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A server that accepts TCP connections and never answers: `check` gives
/// up after its 10 s default, `--connect-timeout` sooner, and a
/// `DATABASE_URL` alone is enough to mean a server.
#[test]
fn check_gives_up_on_a_silent_server_in_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("address").port();
    let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db?sslmode=disable");
    for (args, limit) in [
        (&["check"][..], 10),
        (&["--connect-timeout", "2", "check"][..], 2),
    ] {
        let started = std::time::Instant::now();
        let (code, out, err) = run(clean_command().env("DATABASE_URL", &url).args(args));
        let waited = started.elapsed().as_secs_f64();
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            waited >= f64::from(limit) && waited < f64::from(limit) + 8.0,
            "{args:?} took {waited:.1}s"
        );
        assert!(err.contains("connect"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    drop(listener);
}

/// Statement text reaches the logs without its literals: not with `-vvv`,
/// and not in the slow-statement warning at the default level.
#[test]
fn logs_never_carry_a_statements_literals() {
    let home = tempfile::tempdir().expect("home");
    let (code, out, err) = run(on_data_dir(home.path()).args([
        "-vvv",
        "sql",
        "CREATE ROLE logged LOGIN PASSWORD 'hunter2-secret'",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("CREATE ROLE logged"),
        "the statement is named: {err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let (code, out, err) =
        run(on_data_dir(home.path()).args(["sql", "SELECT pg_sleep(1.2), 'slow-secret' AS s"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("slow statement"), "{err}");
    assert!(err.contains("SELECT pg_sleep"), "{err}");
    assert!(!err.contains("slow-secret"), "{err}");
}

/// Every command that writes says where first, on standard error: the data
/// directory, or the server with its password redacted. Commands that only
/// read do not.
#[test]
fn commands_that_write_print_their_target_first() {
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("data");
    let spec = home.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"tables": [{"name": "t", "columns": [{"name": "id", "type": "int8"}], "primary_key": ["id"]}]}"#,
    )
    .expect("spec");
    let expected = format!("target: data directory {}", data.display());
    for (args, command) in [
        (vec!["sql", "SELECT 1"], "sql"),
        (
            vec![
                "schema",
                "sync",
                "--spec",
                spec.to_str().expect("a UTF-8 path"),
            ],
            "schema sync",
        ),
        (vec!["feed", "list"], "feed"),
    ] {
        let (code, out, err) = run(on_data_dir(home.path()).args(&args));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert_eq!(
            err.lines().next(),
            Some(format!("cocalc-db {command}: {expected}").as_str()),
            "{args:?}: {err}"
        );
    }
    for args in [
        vec!["check"],
        vec![
            "schema",
            "plan",
            "--spec",
            spec.to_str().expect("a UTF-8 path"),
        ],
    ] {
        let (code, out, err) = run(on_data_dir(home.path()).args(&args));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(!err.contains("target:"), "{args:?} only reads: {err}");
    }
    // A server's URL is printed without its password, before connecting.
    let (code, _, err) = run(clean_command()
        .env("DATABASE_URL", "postgres://hub:hunter2@127.0.0.1:1/hub")
        .args(["--connect-timeout", "1", "sql", "SELECT 1"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(
            "cocalc-db sql: target: server postgres://hub:<redacted>@127.0.0.1:1/hub\n"
        ),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    failure_line("sql", &err);
}

/// A usage error exits 64, never 2, which `schema plan` gives to pending
/// changes; help and version succeed.
#[test]
fn usage_errors_exit_64_and_help_succeeds() {
    let home = tempfile::tempdir().expect("tempdir");
    let (code, _, err) =
        run(on_data_dir(home.path()).args(["schema", "plan", "--spec", "s.json", "--jsn"]));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--jsn"), "{err}");
    let (code, out, _) = run(on_data_dir(home.path()).arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("Usage"), "{out}");
}
