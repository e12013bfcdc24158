//! `cocalc-db feed enable|list|disable` and `cocalc-db watch` on the
//! embedded backend: messages, JSON output, flushed event lines, a clear
//! failure without a feed, and a clean exit on SIGTERM. (Live changes from
//! other processes need a server; the conformance suite covers them.)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{on_dir as cocalc_db, run};
use serde_json::{Value as Json, json};

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = run(cocalc_db(dir).args(args));
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

#[test]
fn enable_list_watch_a_snapshot_and_stop_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    ok(
        &dir,
        &[
            "sql",
            "CREATE TABLE items (id int8 PRIMARY KEY, owner text, n int8)",
        ],
    );
    ok(
        &dir,
        &[
            "sql",
            "INSERT INTO items VALUES (1, 'ada', 10), (2, 'bob', 20), (3, 'ada', 30)",
        ],
    );

    // Without a feed, watch says so and fails.
    let (code, out, err) = run(cocalc_db(&dir).args(["watch", "items"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("no change feed is enabled on table \"items\""),
        "{err}"
    );

    let out = ok(&dir, &["feed", "enable", "items"]);
    assert_eq!(out, "enabled a change feed on items (key: id)\n");
    let listed: Json =
        serde_json::from_str(&ok(&dir, &["feed", "list", "--json"])).expect("list JSON");
    assert_eq!(listed["feeds"][0]["table"], json!("public.items"));
    assert_eq!(listed["feeds"][0]["key_columns"], json!(["id"]));
    assert_eq!(listed["feeds"][0]["log_rows"], json!(0));

    // A filtered snapshot, one flushed JSON line per event, then live until
    // SIGTERM.
    let mut child = cocalc_db(&dir)
        .args([
            "watch",
            "items",
            "--from",
            "snapshot",
            "--columns",
            "n",
            "--where",
            "owner = 'ada'",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut events = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let event: Json = serde_json::from_str(&line.expect("line")).expect("event JSON");
        let end = event["kind"] == json!("snapshot_end");
        events.push(event);
        if end {
            break;
        }
    }
    let mut rows: Vec<Json> = events[..events.len() - 1].to_vec();
    rows.sort_by_key(|e| e["row"]["id"].as_i64());
    assert_eq!(
        rows,
        vec![
            json!({"kind": "snapshot_row", "row": {"id": 1, "n": 10}}),
            json!({"kind": "snapshot_row", "row": {"id": 3, "n": 30}}),
        ]
    );
    assert!(events[events.len() - 1]["offset"].is_i64(), "{events:?}");

    let started = Instant::now();
    let (code, _, err) = run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    assert_eq!(code, 0, "{err}");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "watch did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");

    // The directory was closed cleanly: the next command opens it.
    let out = ok(&dir, &["feed", "disable", "items"]);
    assert_eq!(out, "disabled the change feed on items\n");
    assert!(ok(&dir, &["feed", "list"]).starts_with("no change feeds\nlog: "));
}

#[test]
fn prune_forgets_deleted_rows_and_list_shows_the_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    ok(
        &dir,
        &["sql", "CREATE TABLE acc (id int8 PRIMARY KEY, email text)"],
    );
    ok(&dir, &["feed", "enable", "public.acc"]);
    ok(
        &dir,
        &["sql", "INSERT INTO acc VALUES (500, 'gone@example.com')"],
    );
    ok(&dir, &["sql", "DELETE FROM acc WHERE id = 500"]);
    let listed: Json =
        serde_json::from_str(&ok(&dir, &["feed", "list", "--json"])).expect("list JSON");
    assert_eq!(listed["feeds"][0]["table"], json!("public.acc"));
    assert_eq!(listed["log"]["changes"], json!(2));
    assert_eq!(listed["log"]["oldest_offset"], json!(1));
    let text = ok(&dir, &["feed", "list"]);
    assert!(text.contains("log: 2 change(s)"), "{text}");

    // The default keeps 7 days: nothing goes.
    assert_eq!(ok(&dir, &["feed", "prune"]), "pruned 0 change(s)\n");
    let (code, _, err) = run(cocalc_db(&dir).args(["feed", "prune", "--older-than", "5"]));
    assert_eq!(code, 1);
    assert!(err.contains("--older-than \"5\""), "{err}");
    let (code, _, err) =
        run(cocalc_db(&dir).args(["feed", "prune", "--older-than", "99999999999d"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("--older-than \"99999999999d\": at most 100 years"),
        "{err}"
    );
    assert_eq!(
        ok(&dir, &["feed", "prune", "--older-than", "0s"]),
        "pruned 2 change(s)\n"
    );
    let left = ok(
        &dir,
        &[
            "sql",
            "SELECT count(*) AS images FROM changefeed.changefeed_log WHERE row_old::text LIKE '%example.com%'",
            "--json",
        ],
    );
    assert!(
        left.contains("\"images\": 0") || left.contains("\"images\":0"),
        "{left}"
    );
    let listed: Json =
        serde_json::from_str(&ok(&dir, &["feed", "list", "--json"])).expect("list JSON");
    assert_eq!(listed["log"]["changes"], json!(0));
    assert_eq!(listed["log"]["oldest_offset"], json!(null));
    assert_eq!(listed["log"]["pruned_through"], json!(2));

    // The feed's own tables cannot be watched.
    let (code, _, err) =
        run(cocalc_db(&dir).args(["feed", "enable", "changefeed.changefeed_state"]));
    assert_eq!(code, 1);
    assert!(err.contains("one of the change feed's own tables"), "{err}");
}

#[test]
fn an_export_carries_the_change_log_only_on_request() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    ok(
        &dir,
        &["sql", "CREATE TABLE acc (id int8 PRIMARY KEY, email text)"],
    );
    ok(&dir, &["feed", "enable", "acc"]);
    ok(
        &dir,
        &["sql", "INSERT INTO acc VALUES (500, 'gone@example.com')"],
    );
    ok(&dir, &["sql", "DELETE FROM acc WHERE id = 500"]);
    let without = tmp.path().join("without.sql");
    let with = tmp.path().join("with.sql");
    ok(&dir, &["export", "--out", without.to_str().expect("path")]);
    ok(
        &dir,
        &[
            "export",
            "--with-changefeed-log",
            "--out",
            with.to_str().expect("path"),
        ],
    );
    let read = |p: &Path| std::fs::read_to_string(p).expect("export");
    assert!(!read(&without).contains("gone@example.com"));
    assert!(read(&with).contains("gone@example.com"));
}

/// `watch` with a filter naming no column, a value not of the column's
/// type, a column that does not exist or an offset not yet assigned fails
/// at once with an error saying which; a filter's unquoted names fold to
/// lower case and its values are read as the column's type, as in SQL.
#[test]
fn watch_refuses_what_sql_would_and_reads_filters_as_sql_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    ok(
        &dir,
        &[
            "sql",
            "CREATE TABLE items (id int8 PRIMARY KEY, owner text, n int8)",
        ],
    );
    ok(
        &dir,
        &[
            "sql",
            "INSERT INTO items SELECT g, 'ada', g FROM generate_series(1, 6) g",
        ],
    );
    ok(&dir, &["feed", "enable", "items"]);
    for (args, expected) in [
        (
            &["--where", "nosuchcol = 1"][..],
            "column \"nosuchcol\" does not exist in table public.items",
        ),
        (
            &["--where", "nosuchcol IS NULL"][..],
            "column \"nosuchcol\" does not exist in table public.items",
        ),
        (
            &["--columns", "n,nosuch"][..],
            "column \"nosuch\" does not exist in table public.items",
        ),
        (
            &["--where", "id = 'a'", "--from", "snapshot"][..],
            "filter on column \"id\" (bigint): 'a' is not a valid value",
        ),
        (
            &["--where", "owner = 1"][..],
            "filter on column \"owner\" (text): 1 is not a valid value",
        ),
        (
            &["--from", "1000"][..],
            "offset 1000 is beyond the last offset assigned (0)",
        ),
    ] {
        let started = Instant::now();
        let (code, out, err) = run(cocalc_db(&dir).args(["watch", "items"]).args(args));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?}");
    }

    // "Id >= 5" is id >= 5, and '6' an integer.
    let mut child = cocalc_db(&dir)
        .args([
            "watch",
            "items",
            "--from",
            "snapshot",
            "--where",
            "Id >= 5 AND n IN ('6', 5)",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("stdout");
    let mut ids = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let event: Json = serde_json::from_str(&line.expect("line")).expect("event JSON");
        if event["kind"] == json!("snapshot_end") {
            break;
        }
        ids.push(event["row"]["id"].as_i64().expect("id"));
    }
    let _ = child.kill();
    let _ = child.wait();
    ids.sort_unstable();
    assert_eq!(ids, vec![5, 6]);
}
