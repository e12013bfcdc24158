//! `cocalc-db sql` from the user's side: where the SQL comes from (an
//! argument, `-f`, standard input, `-`), scripts of several statements, CSV
//! and JSON output, usage errors and colour.
//!
//! On the embedded backend by default; with `COCALC_DB=postgres` and
//! `DATABASE_URL` set (the conformance suite's convention) the same tests
//! run against that server with `--database-url`, on tables of their own.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::{clean_command, failure_line, on_dir, run};

/// The server to test against, if one is given.
fn server_url() -> Option<String> {
    let postgres = std::env::var("COCALC_DB").is_ok_and(|v| v == "postgres");
    postgres
        .then(|| std::env::var("DATABASE_URL").ok())
        .flatten()
}

/// `cocalc-db` on the database under test: the server, or the embedded
/// cluster in `<home>/data`.
fn cocalc_db(home: &Path) -> Command {
    match server_url() {
        Some(url) => {
            let mut cmd = clean_command();
            cmd.args(["--database-url", &url]);
            cmd
        }
        None => on_dir(&home.join("data")),
    }
}

/// A table name of this test process alone, so that runs against one
/// server do not meet.
fn table(name: &str) -> String {
    format!("sql_cli_{name}_{}", std::process::id())
}

/// Runs `cmd` with `input` on its standard input.
fn run_with_stdin(cmd: &mut Command, input: &str) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cocalc-db");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sql` and returns its standard output, which must be a success.
fn sql_ok(home: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(cocalc_db(home).arg("sql").args(args));
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

#[test]
fn sql_comes_from_an_argument_a_file_or_standard_input() {
    let home = tempfile::tempdir().expect("tempdir");
    let want = " src\n------\n here\n(1 row)\n";
    let (code, out, err) = run(cocalc_db(home.path()).args(["sql", "select 'here' as src"]));
    assert_eq!((code, out.as_str()), (0, want), "{err}");
    // The database under test is the one meant.
    let target = if server_url().is_some() {
        "server"
    } else {
        "data directory"
    };
    assert!(
        err.starts_with(&format!("cocalc-db sql: target: {target} ")),
        "{err}"
    );

    // A file large enough to need several reads, one statement.
    let file = home.path().join("query.sql");
    let padding = format!("-- {}\n", "x".repeat(200)).repeat(2_000);
    std::fs::write(&file, format!("{padding}select 'here' as src;\n")).expect("write");
    let path = file.to_str().expect("a UTF-8 path");
    assert_eq!(sql_ok(home.path(), &["-f", path]), want);
    assert_eq!(
        sql_ok(home.path(), &["--file", path, "--json"]),
        "[{\"src\":\"here\"}]\n"
    );

    for args in [&[][..], &["-"][..], &["-f", "-"][..], &["--csv"][..]] {
        let (code, out, err) = run_with_stdin(
            cocalc_db(home.path()).arg("sql").args(args),
            "select 'here' as src",
        );
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        let expected = if args == ["--csv"] {
            "src\nhere\n"
        } else {
            want
        };
        assert_eq!(out, expected, "{args:?}");
    }
}

/// psql -c's way: the server splits the text, runs it in one transaction
/// and stops at the first error, which leaves nothing of the script.
#[test]
fn a_script_runs_whole_on_the_server_or_not_at_all() {
    let home = tempfile::tempdir().expect("tempdir");
    let t = table("script");
    let script = home.path().join("script.sql");
    std::fs::write(
        &script,
        format!(
            "create table {t} (id int primary key, v text);\n\
             insert into {t} values (1, 'a;b'), (2, 'b');\n\
             -- a comment; with a semicolon\n\
             update {t} set v = 'c' where id = 2;\n\
             select * from {t};\n"
        ),
    )
    .expect("write");
    let path = script.to_str().expect("a UTF-8 path");
    assert_eq!(sql_ok(home.path(), &["-f", path]), "OK\n");
    let select = format!("select id, v from {t} order by id");
    let rows = "id,v\n1,a;b\n2,c\n";
    assert_eq!(sql_ok(home.path(), &["--csv", &select]), rows);

    // A failure in the second statement undoes the first.
    let (code, out, err) = run_with_stdin(
        cocalc_db(home.path()).arg("sql"),
        &format!("insert into {t} values (3, 'x'); insert into {t} values (1, 'dup');"),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        failure_line("sql", &err).starts_with("cocalc-db sql: ERROR 23505: duplicate key"),
        "{err}"
    );
    // A syntax error anywhere: nothing runs.
    let (code, _, err) =
        run(cocalc_db(home.path())
            .args(["sql", &format!("insert into {t} values (4, 'y'); selec 1")]));
    assert_eq!(code, 1);
    assert!(
        failure_line("sql", &err).contains("ERROR 42601: syntax error"),
        "{err}"
    );
    assert_eq!(sql_ok(home.path(), &["--csv", &select]), rows);

    // Results of a script are not printed: the empty forms.
    let drop = format!("select 1; drop table {t}");
    assert_eq!(
        sql_ok(home.path(), &["--json", "select 1 as x; select 2"]),
        "[]\n"
    );
    assert_eq!(sql_ok(home.path(), &["--csv", &drop]), "");
}

#[test]
fn csv_quotes_as_rfc_4180_and_keeps_null_apart_from_empty() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = sql_ok(
        home.path(),
        &[
            "--csv",
            "select 1 as id, 'a,b' as \"c,1\", 'say \"hi\"' as q, E'two\\nlines' as nl, \
             null::text as n, '' as e, '\\.' as dot, array['x', 'y z'] as arr, 2.50 as num \
             union all select null, 'plain', '', E'cr\\r', 'NULL', ' ', 'x', null, null",
        ],
    );
    assert_eq!(
        out,
        "id,\"c,1\",q,nl,n,e,dot,arr,num\n\
         1,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",,\"\",\"\\.\",\"{x,\"\"y z\"\"}\",2.50\n\
         ,plain,\"\",\"cr\r\",NULL, ,x,,\n"
    );
    // A query that matched no rows still has its header, as in psql.
    assert_eq!(
        sql_ok(
            home.path(),
            &["--csv", "select 1 as id, 'x' as name where false"]
        ),
        "id,name\n"
    );
}

#[test]
fn empty_results_print_their_header() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = sql_ok(home.path(), &["select 1 as id, 'x' as name where false"]);
    assert_eq!(out, " id | name\n----+------\n(0 rows)\n");
    // A statement that returns no rows at all keeps its row count.
    let t = table("empty_header");
    sql_ok(home.path(), &[&format!("create table {t} (id int)")]);
    let out = sql_ok(home.path(), &[&format!("insert into {t} values (1), (2)")]);
    assert_eq!(out, "OK, 2 rows affected\n");
    sql_ok(home.path(), &[&format!("drop table {t}")]);
}

#[test]
fn json_is_one_array_of_objects() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = sql_ok(
        home.path(),
        &[
            "--json",
            "select 1 as id, null::text as n, '' as e union all select 2, 'x', 'y'",
        ],
    );
    assert_eq!(
        out,
        "[{\"id\":1,\"n\":null,\"e\":\"\"},{\"id\":2,\"n\":\"x\",\"e\":\"y\"}]\n"
    );
    assert_eq!(
        sql_ok(home.path(), &["--json", "select 1 where false"]),
        "[]\n"
    );
}

/// Usage errors exit 64 and a missing file 1, each with one line, and in
/// both cases nothing runs: no database is opened (the embedded data
/// directory is not even created).
#[test]
fn bad_sources_fail_before_anything_runs() {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("q.sql");
    std::fs::write(&file, "select 1").expect("write");
    let path = file.to_str().expect("a UTF-8 path");
    for (args, needle) in [
        (vec!["select 1", "-f", path], "--file"),
        (vec!["-", "--file", path], "--file"),
        (vec!["--csv", "--json", "select 1"], "--json"),
    ] {
        let (code, out, err) = run(cocalc_db(home.path()).arg("sql").args(&args));
        assert_eq!(code, 64, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
    }

    let missing = home.path().join("no such.sql");
    let (code, out, err) = run(cocalc_db(home.path()).arg("sql").arg("-f").arg(&missing));
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err,
        format!(
            "cocalc-db sql: reading the SQL file {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    // A file that is not UTF-8 text is named too.
    std::fs::write(&file, b"select '\xff'").expect("write");
    let (code, _, err) = run(cocalc_db(home.path()).args(["sql", "-f", path]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!("cocalc-db sql: reading the SQL file {path}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!home.path().join("data").exists());
}

/// No ANSI escapes with `NO_COLOR` set (and not empty), even when
/// `CLICOLOR_FORCE` asks for colour, in clap's messages and in the logs.
#[test]
fn no_color_turns_colour_off() {
    let home = tempfile::tempdir().expect("tempdir");
    let escape = "\x1b[";
    let cases: [(&[&str], i32); 2] = [
        (&["sql", "--jsn", "select 1"], 64),
        (&["-vv", "sql", "select 1"], 0),
    ];
    for (args, want) in cases {
        let colour = |env: &[(&str, &str)]| {
            let mut cmd = cocalc_db(home.path());
            cmd.env_remove("NO_COLOR").env_remove("CLICOLOR");
            for (k, v) in env {
                cmd.env(k, v);
            }
            let (code, out, err) = run(cmd.args(args));
            assert_eq!(code, want, "{args:?} {env:?}: {out}{err}");
            assert!(!out.contains(escape), "{out}");
            err.contains(escape)
        };
        assert!(
            colour(&[("CLICOLOR_FORCE", "1")]),
            "{args:?}: forced colour"
        );
        assert!(!colour(&[]), "{args:?}: no terminal, no colour");
        assert!(
            !colour(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]),
            "{args:?}"
        );
        // An empty NO_COLOR does not count (no-color.org).
        assert!(
            colour(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "")]),
            "{args:?}"
        );
    }
}

#[test]
fn json_keeps_every_column_of_repeated_names() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = sql_ok(home.path(), &["--json", "select 1 as a, 2 as a, 3 as a_2"]);
    assert_eq!(out, "[{\"a\":1,\"a_2\":2,\"a_2_2\":3}]\n");
}

#[test]
fn sql_that_starts_with_a_comment_goes_after_a_double_dash() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = sql_ok(
        home.path(),
        &["--csv", "--", "-- the answer\nselect -1 as n"],
    );
    assert_eq!(out, "n\n-1\n");
}
