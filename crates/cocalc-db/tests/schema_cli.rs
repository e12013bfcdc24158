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
    assert!(out.contains("CREATE TABLE \"Accounts\""), "{out}");

    let (code, out, err) = run(cocalc_db(&db)
        .args(["schema", "sync", "--dry-run", "--spec"])
        .arg(&spec));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("dry run"), "{out}");

    let (code, out, err) = run(cocalc_db(&db).args(["schema", "sync", "--spec"]).arg(&spec));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("-- applied: 2 change(s)"), "{out}");

    let (code, out, err) = run(cocalc_db(&db).args(["schema", "plan", "--spec"]).arg(&spec));
    assert_eq!((code, out.as_str()), (0, "-- nothing to do\n"), "{err}");

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
