//! `cocalc-db schema ...` on the embedded backend: exit codes of `plan`,
//! `sync`, and the introspect → sync → introspect round trip.

mod common;

use common::{on_dir as cocalc_db, run};

const SPEC: &str = r#"
[[tables]]
name = "Accounts"
primary_key = ["id"]

[[tables.columns]]
name = "id"
type = "BIGSERIAL"

[[tables.columns]]
name = "kind"
type = "VARCHAR(16)"
default = "'user'"
check = "kind IN ('user', 'admin')"

[[tables.indexes]]
name = "accounts_kind_idx"
keys = ["lower(kind) text_pattern_ops"]
where = "kind IS NOT NULL"
"#;

#[test]
fn plan_sync_and_introspect_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, SPEC).expect("write spec");
    let db = dir.path().join("db");

    let (code, out, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(&spec));
    assert_eq!(code, 2, "pending changes exit 2\n{out}\n{err}");
    assert!(
        out.contains("CREATE TABLE \"public\".\"Accounts\""),
        "{out}"
    );

    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "sync", "--dry-run", "--spec"])
        .arg(&spec));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("dry run"), "{out}");

    let (code, out, err) = run(cocalc_db(&db).args(["schema", "sync", "--spec"]).arg(&spec));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("-- applied: 2 change(s)"), "{out}");

    let (code, out, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(&spec));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["-- nothing to do", "-- plan hash: 00329e5a4735a00b"],
        "{err}"
    );

    for (format, file) in [("json", "live.json"), ("toml", "live.toml")] {
        let (code, live, err) =
            run(cocalc_db(&db).args(["schema", "introspect", "--format", format]));
        assert_eq!(code, 0, "{err}");
        let path = dir.path().join(file);
        std::fs::write(&path, &live).expect("write");
        let other = dir.path().join(format!("db-{format}"));
        let (code, out, err) = run(cocalc_db(&other)
            .args(["schema", "sync", "--spec"])
            .arg(&path));
        assert_eq!(code, 0, "{out}\n{err}");
        let (code, again, err) =
            run(cocalc_db(&other).args(["schema", "introspect", "--format", format]));
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            live, again,
            "introspect, sync, introspect gives the same spec"
        );
    }

    let missing = dir.path().join("missing.json");
    let (code, _, err) = run(cocalc_db(&db)
        .args(["schema", "plan", "--spec"])
        .arg(&missing));
    assert_eq!(code, 1);
    assert!(err.contains("missing.json"), "{err}");
}

/// A spec with a typo, an empty object or an empty file is refused naming
/// what is wrong, even with `--allow-destructive`, and nothing is dropped.
#[test]
fn a_spec_with_a_typo_or_nothing_in_it_is_refused_and_drops_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).expect("spec");
    let (code, out, err) = run(cocalc_db(&db).args(["schema", "sync", "--spec"]).arg(&spec));
    assert_eq!(code, 0, "{out}{err}");
    let bad = [
        (
            "typo.json",
            r#"{"table": [{"name": "Accounts", "columns": []}]}"#,
            "table",
        ),
        ("empty.json", "{}", "tables"),
        ("empty.toml", "", "tables"),
        (
            "column-typo.json",
            r#"{"tables": [{"name": "Accounts", "columns": [{"name": "id", "typ": "BIGINT"}]}]}"#,
            "typ",
        ),
        (
            "index-typo.toml",
            "[[tables]]\nname = \"t\"\n[[tables.indexes]]\nname = \"i\"\nkey = [\"x\"]\n",
            "key",
        ),
    ];
    for (name, text, key) in bad {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).expect("write");
        for command in ["plan", "sync"] {
            let mut cmd = cocalc_db(&db);
            cmd.args(["schema", command, "--spec"]).arg(&path);
            if command == "sync" {
                cmd.arg("--allow-destructive");
            }
            let (code, out, err) = run(&mut cmd);
            assert_ne!(code, 0, "{name} {command}: {out}{err}");
            assert!(
                err.contains(key),
                "{name} {command}: the error names {key:?}: {err}"
            );
            assert!(
                err.contains("line"),
                "{name} {command}: the error gives the position: {err}"
            );
        }
    }
    let (code, out, err) = run(cocalc_db(&db).args(["sql", "SELECT count(*) FROM \"Accounts\""]));
    assert_eq!(code, 0, "the table is still there: {out}{err}");
}

/// The lock and statement limits and concurrent index builds are flags of
/// `schema sync`; a value that is not a duration is refused by name.
#[test]
fn sync_takes_lock_and_statement_limits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).expect("spec");
    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "sync", "--spec"])
        .arg(&spec)
        .args(["--lock-timeout", "500ms", "--lock-deadline", "1min"])
        .args(["--statement-timeout", "30s", "--concurrent-indexes"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "sync", "--spec"])
        .arg(&spec)
        .args(["--lock-timeout", "soon"]));
    assert_eq!(code, 64, "a usage error: {out}{err}");
    assert!(
        err.contains("--lock-timeout") && err.contains("\"soon\""),
        "{err}"
    );
}

fn plan_hash(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("-- plan hash: "))
        .unwrap_or_else(|| panic!("no plan hash in {out}"))
        .to_owned()
}

/// Every plan carries a hash; `--expect` gates on it; `schema diff OLD NEW`
/// gives offline the plan (and hash) that `schema plan` gives live on a
/// database synced with OLD; `--json` prints the same plan as JSON.
#[test]
fn plans_have_a_hash_to_gate_on_and_diff_matches_the_live_plan() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let old = tmp.path().join("old.toml");
    let new = tmp.path().join("new.toml");
    std::fs::write(&old, SPEC).expect("old");
    let newer = format!(
        "{SPEC}\n[[tables.columns]]\nname = \"note\"\ntype = \"TEXT\"\ndefault = \"''\"\n\n\
         [[tables]]\nname = \"extra\"\n[[tables.columns]]\nname = \"id\"\ntype = \"INTEGER\"\n"
    );
    std::fs::write(&new, newer).expect("new");
    let (code, out, err) = run(cocalc_db(&db).args(["schema", "sync", "--spec"]).arg(&old));
    assert_eq!(code, 0, "{out}{err}");

    let (code, live, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(&new));
    assert_eq!(code, 2, "changes pending: {live}{err}");
    let hash = plan_hash(&live);
    let (code, offline, err) = run(cocalc_db(&db).args(["schema", "diff"]).arg(&old).arg(&new));
    assert_eq!(code, 2, "{offline}{err}");
    assert_eq!(
        plan_hash(&offline),
        hash,
        "live:\n{live}\noffline:\n{offline}"
    );

    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "plan", "--spec"])
        .arg(&new)
        .args(["--expect", &hash]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "plan", "--spec"])
        .arg(&new)
        .args(["--expect", "0123456789abcdef"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&hash) && err.contains("0123456789abcdef"),
        "{err}"
    );

    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "plan", "--json", "--spec"])
        .arg(&new));
    assert_eq!(code, 2, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["hash"], hash.as_str());
    assert_eq!(json["changes"].as_array().map(Vec::len), Some(2), "{json}");
}

/// A spec naming its schema: `diff` from a `public` spec gives offline the
/// live plan (create the schema, then its tables, every statement
/// qualified), `--json` names the schema, the sync leaves `public` alone and
/// `introspect --schema` reads it back.
#[test]
fn a_spec_names_its_schema_in_plans_diffs_and_introspection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let old = tmp.path().join("old.toml");
    let new = tmp.path().join("new.toml");
    std::fs::write(&old, SPEC).expect("old");
    std::fs::write(&new, format!("schema = \"App 1\"\n{SPEC}")).expect("new");
    let (code, out, err) = run(cocalc_db(&db).args(["schema", "sync", "--spec"]).arg(&old));
    assert_eq!(code, 0, "{out}{err}");

    let (code, live, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(&new));
    assert_eq!(code, 2, "changes pending: {live}{err}");
    assert!(
        live.starts_with("-- create schema \"App 1\"\nCREATE SCHEMA \"App 1\";"),
        "{live}"
    );
    assert!(
        live.contains("CREATE TABLE \"App 1\".\"Accounts\""),
        "{live}"
    );
    let (code, offline, err) = run(cocalc_db(&db).args(["schema", "diff"]).arg(&old).arg(&new));
    assert_eq!(code, 2, "{offline}{err}");
    assert_eq!(offline, live);
    let (code, same, err) = run(cocalc_db(&db).args(["schema", "diff"]).arg(&old).arg(&old));
    assert_eq!(code, 0, "{same}{err}");
    assert_ne!(plan_hash(&same), plan_hash(&live));

    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "plan", "--json", "--spec"])
        .arg(&new));
    assert_eq!(code, 2, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json["schema"], "App 1", "{json}");
    assert_eq!(json["hash"], plan_hash(&live).as_str());
    assert_eq!(json["changes"][0]["kind"], "create_schema", "{json}");
    assert_eq!(json["changes"][1]["schema"], "App 1", "{json}");

    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "sync", "--allow-destructive", "--spec"])
        .arg(&new));
    assert_eq!(code, 0, "{out}{err}");
    for spec in [&old, &new] {
        let (code, out, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(spec));
        assert_eq!(code, 0, "both schemas converged: {out}{err}");
    }
    let (code, out, err) = run(cocalc_db(&db).args([
        "schema",
        "introspect",
        "--schema",
        "App 1",
        "--format",
        "toml",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("schema = \"App 1\"\n"), "{out}");
    assert!(out.contains("name = \"Accounts\""), "{out}");

    // A schema that is not schema-sync's business is refused by name.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"schema": "pg_catalog", "tables": []}"#).expect("bad");
    let (code, out, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(&bad));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("pg_catalog"), "{err}");
}

/// `schema plan --allow-destructive` shows the drops for review, and
/// `schema sync --expect HASH` applies only the reviewed plan.
#[test]
fn a_destructive_plan_is_reviewed_and_synced_by_its_hash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("db");
    let old = tmp.path().join("old.toml");
    let new = tmp.path().join("new.toml");
    std::fs::write(
        &old,
        format!("{SPEC}\n[[tables]]\nname = \"gone\"\n[[tables.columns]]\nname = \"id\"\ntype = \"INTEGER\"\n"),
    )
    .expect("old");
    std::fs::write(&new, SPEC).expect("new");
    let (code, out, err) = run(cocalc_db(&db).args(["schema", "sync", "--spec"]).arg(&old));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(&new));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("--allow-destructive would drop"), "{out}");
    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "plan", "--allow-destructive", "--spec"])
        .arg(&new));
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("DROP TABLE \"public\".\"gone\""), "{out}");
    let hash = plan_hash(&out);
    let (code, out, err) = run(cocalc_db(&db)
        .args([
            "schema",
            "sync",
            "--allow-destructive",
            "--expect",
            "0123456789abcdef",
            "--spec",
        ])
        .arg(&new));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&hash), "{err}");
    let (code, out, err) = run(cocalc_db(&db)
        .args([
            "schema",
            "sync",
            "--allow-destructive",
            "--expect",
            &hash,
            "--spec",
        ])
        .arg(&new));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("DROP TABLE"), "{out}");
}
