//! `cocalc-db export`, `import`, `migrate`, `backup` and `restore` on the
//! embedded backend: exit codes and messages. Imports go into embedded data
//! directories here; the conformance suite covers PostgreSQL targets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
mod common;

use common::{failure_line, on_dir as cocalc_db, run};

fn seed(dir: &Path) {
    for sql in [
        "CREATE TABLE items (id serial PRIMARY KEY, name text)",
        "INSERT INTO items (name) VALUES ('a'), (E'b\\tc'), (NULL)",
    ] {
        let (code, out, err) = run(cocalc_db(dir).args(["sql", sql]));
        assert_eq!(code, 0, "{out}{err}");
    }
}

/// A seeded embedded database in `tmp/source`, exported to `tmp/hub.sql`:
/// both paths and the export's standard error.
fn seeded_export(tmp: &Path) -> (PathBuf, PathBuf, String) {
    let source = tmp.join("source");
    seed(&source);
    let file = tmp.join("hub.sql");
    let (code, out, err) = run(cocalc_db(&source).arg("export").arg("--out").arg(&file));
    assert_eq!(code, 0, "{out}{err}");
    (source, file, err)
}

/// Restores `archive` into `dir`, which must succeed.
fn restore_into(dir: &Path, archive: &Path) {
    let (code, out, err) = run(cocalc_db(dir).arg("restore").arg("--from").arg(archive));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn export_then_import_and_migrate_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source, file, err) = seeded_export(tmp.path());
    assert!(err.contains("exported 1 tables, 3 rows"), "{err}");
    let text = std::fs::read_to_string(&file).expect("export file");
    assert!(text.contains("-- cocalc-db-manifest: "), "{text}");
    assert!(text.contains("COPY \"public\".\"items\" (\"id\", \"name\") FROM stdin;"));
    // The data directory records the export.
    let record = std::fs::read_to_string(source.join("cocalc-db.json")).expect("record");
    assert!(record.contains("\"last_export\""), "{record}");

    // To standard output.
    let (code, out, err) = run(cocalc_db(&source).arg("export"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("b\\tc"), "{out}");

    let target = tmp.path().join("target");
    let (code, out, err) = run(cocalc_db(&source)
        .args(["import", "--from"])
        .arg(&file)
        .arg("--to")
        .arg(&target));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "verified 1 tables (3 rows, counts and checksums), 1 sequences and 6 schema objects"
        ),
        "{out}"
    );
    assert!(out.contains("verified the file: "), "{out}");

    // Again: the target holds tables now.
    let (code, _, err) = run(cocalc_db(&source)
        .args(["import", "--from"])
        .arg(&file)
        .arg("--to")
        .arg(&target));
    assert_eq!(code, 1, "{err}");
    assert!(
        failure_line("import", &err)
            .starts_with("cocalc-db import: the target already holds 1 table(s)"),
        "{err}"
    );
    // Forced, the export's objects clash; the statement and line are named.
    let (code, _, err) = run(cocalc_db(&source)
        .args(["import", "--force", "--from"])
        .arg(&file)
        .arg("--to")
        .arg(&target));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("of the export: ERROR 42P07"), "{err}");

    // A checksum that does not match: the table is named.
    let tampered = tmp.path().join("tampered.sql");
    let manifest_line = text
        .lines()
        .find(|l| l.starts_with("-- cocalc-db-manifest"))
        .expect("manifest");
    let checksum = manifest_line
        .split("\"checksum\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("checksum");
    let changed = manifest_line.replace(checksum, "12345");
    std::fs::write(&tampered, text.replace(manifest_line, &changed)).expect("write");
    let (code, _, err) = run(cocalc_db(&source)
        .args(["import", "--from"])
        .arg(&tampered)
        .arg("--to")
        .arg(tmp.path().join("other")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the end marker says"), "{err}");
    // Unverified, the file may be anything, but its manifest still counts.
    let (code, _, err) = run(cocalc_db(&source)
        .args(["import", "--unverified", "--from"])
        .arg(&tampered)
        .arg("--to")
        .arg(tmp.path().join("other")));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("table \"public\".\"items\": expected 3 rows with checksum 12345"),
        "{err}"
    );

    // Export, import and verify in one step.
    let (code, out, err) = run(cocalc_db(&source)
        .args(["migrate", "--to"])
        .arg(tmp.path().join("migrated")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified 1 tables"), "{out}");
    assert!(err.contains("exported 1 tables"), "{err}");
    // With --keep, the export streamed into the import is also a file,
    // the same as `export` writes.
    let kept = tmp.path().join("kept.sql");
    let (code, out, err) = run(cocalc_db(&source)
        .args(["migrate", "--keep"])
        .arg(&kept)
        .arg("--to")
        .arg(tmp.path().join("migrated-again")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verified 1 tables"), "{out}");
    assert!(
        err.contains(&format!("to the import and {}", kept.display())),
        "{err}"
    );
    let kept_text = std::fs::read_to_string(&kept).expect("kept file");
    let body = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .filter(|l| !l.starts_with("-- cocalc-db-end"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&kept_text), body(&text));
    // Not into the embedded database itself.
    let (code, _, err) = run(cocalc_db(&source).args(["migrate", "--to"]).arg(&source));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is the embedded database being exported"),
        "{err}"
    );

    // An unreachable server is a one-line failure.
    let (code, _, err) = run(cocalc_db(&source)
        .args(["import", "--from"])
        .arg(&file)
        .args(["--to", "postgres://nobody@127.0.0.1:1/none"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        failure_line("import", &err)
            .starts_with("cocalc-db import: connecting to postgres://nobody@127.0.0.1:1/none"),
        "{err}"
    );
}

/// Whether the data directory's record holds an export.
fn recorded_export(dir: &Path) -> bool {
    let record = std::fs::read_to_string(dir.join("cocalc-db.json")).expect("record");
    assert!(record.contains("\"last_export\""), "{record}");
    !record.contains("\"last_export\": null")
}

#[test]
fn only_an_export_to_a_file_or_a_verified_migrate_is_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed(&source);
    assert!(!recorded_export(&source));

    // Into a pipe: may be gone.
    let (code, out, err) = run(cocalc_db(&source).arg("export"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("-- cocalc-db-end: "), "{out}");
    assert!(!recorded_export(&source));

    // A migrate that fails at login exported, but nothing arrived.
    let (code, _, err) = run(cocalc_db(&source).args([
        "migrate",
        "--to",
        "postgres://nobody:wrong@127.0.0.1:1/none",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(!recorded_export(&source), "{err}");

    // Redirected to a file, standard output counts.
    let file = std::fs::File::create(tmp.path().join("redirected.sql")).expect("file");
    let (code, _, err) = run(cocalc_db(&source).arg("export").stdout(file));
    assert_eq!(code, 0, "{err}");
    assert!(recorded_export(&source));

    let again = tmp.path().join("again");
    seed(&again);
    let (code, out, err) = run(cocalc_db(&again)
        .args(["migrate", "--to"])
        .arg(tmp.path().join("migrated")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(recorded_export(&again));
}

#[test]
fn a_truncated_or_hand_made_file_needs_unverified() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source, file, _) = seeded_export(tmp.path());
    let text = std::fs::read_to_string(&file).expect("export file");
    // `head -n`, cut after the data, before keys and indexes.
    let lines = text[..text.find("-- Sequence values").expect("sequences")]
        .matches('\n')
        .count();
    let cut = tmp.path().join("cut.sql");
    let head: String = text.split_inclusive('\n').take(lines).collect();
    std::fs::write(&cut, head).expect("write");
    let (code, out, err) = run(cocalc_db(&source)
        .args(["import", "--from"])
        .arg(&cut)
        .arg("--to")
        .arg(tmp.path().join("cut-target")));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        failure_line("import", &err)
            .starts_with("cocalc-db import: the export is incomplete: its end marker"),
        "{err}"
    );
    assert!(err.contains(&format!("stops at line {lines}")), "{err}");
    assert!(!out.contains("verified"), "{out}");

    let hand = tmp.path().join("hand.sql");
    std::fs::write(&hand, "CREATE TABLE hand (a int);\n").expect("write");
    let (code, _, err) = run(cocalc_db(&source)
        .args(["import", "--from"])
        .arg(&hand)
        .arg("--to")
        .arg(tmp.path().join("hand-target")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the export has no manifest"), "{err}");
    let (code, out, err) = run(cocalc_db(&source)
        .args(["import", "--unverified", "--from"])
        .arg(&hand)
        .arg("--to")
        .arg(tmp.path().join("hand-target")));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("not verified (--unverified): nothing shows that the file is whole"),
        "{out}"
    );
    assert!(
        out.contains("not verified (--unverified): the file has no manifest"),
        "{out}"
    );
}

#[test]
fn import_targets_must_be_postgres_urls_or_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (source, file, _) = seeded_export(tmp.path());
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir(&cwd).expect("cwd");

    for to in [
        "postgress://user:secret@host/db",
        "mysql://user:secret@host/db",
        "memory://",
        "",
    ] {
        for command in ["import", "migrate"] {
            let mut cmd = cocalc_db(&source);
            cmd.current_dir(&cwd).arg(command);
            if command == "import" {
                cmd.arg("--from").arg(&file);
            }
            let (code, out, err) = run(cmd.args(["--to", to]));
            assert_eq!(code, 1, "{command} --to {to:?}: {out}{err}");
            assert!(
                err.starts_with(&format!("cocalc-db {command}: --to ")),
                "{command} --to {to:?}: {err}"
            );
            assert!(err.contains("postgres:// or postgresql://"), "{err}");
            assert!(!err.contains("secret"), "{err}");
            assert!(!out.contains("verified"), "{out}");
        }
    }
    // Nothing was created in the current directory, nor named after a URL.
    let created: Vec<_> = std::fs::read_dir(&cwd).expect("cwd").collect();
    assert!(created.is_empty(), "{created:?}");
    assert!(!tmp.path().join("postgress:").exists());

    // The scheme's case does not matter: this is a server, not a directory.
    let (code, _, err) = run(cocalc_db(&source)
        .current_dir(&cwd)
        .args(["import", "--from"])
        .arg(&file)
        .args(["--to", "POSTGRES://nobody:secret@127.0.0.1:1/none"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        failure_line("import", &err).starts_with(
            "cocalc-db import: connecting to postgres://nobody:<redacted>@127.0.0.1:1/none"
        ),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
    assert_eq!(std::fs::read_dir(&cwd).expect("cwd").count(), 0);
}

#[test]
fn backup_and_restore_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed(&source);
    let archive = tmp.path().join("hub.backup");
    let (code, out, err) = run(cocalc_db(&source).arg("backup").arg("--out").arg(&archive));
    assert_eq!(code, 0, "{out}{err}");
    assert!(archive.is_file());
    let (code, _, err) = run(cocalc_db(&source).arg("backup").arg("--out").arg(&archive));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");

    let restored = tmp.path().join("restored");
    restore_into(&restored, &archive);
    let (code, out, err) =
        run(cocalc_db(&restored).args(["sql", "select count(*) as n from items", "--json"]));
    assert_eq!((code, out.as_str()), (0, "[{\"n\":3}]\n"), "{err}");

    let (code, _, err) = run(cocalc_db(&restored)
        .arg("restore")
        .arg("--from")
        .arg(&archive));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not empty"), "{err}");
    let (code, _, err) = run(cocalc_db(&restored)
        .args(["restore", "--force", "--from"])
        .arg(&archive));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_backup_after_the_catalog_was_rewritten_restores_the_same_database() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed(&source);
    // VACUUM FULL gives every table, the catalogs too, new files and
    // deletes the template's: the archive must not bring those back.
    for sql in [
        "DROP TABLE items",
        "CREATE TABLE kept (v int)",
        "VACUUM FULL",
    ] {
        let (code, out, err) = run(cocalc_db(&source).args(["sql", sql]));
        assert_eq!(code, 0, "{sql}: {out}{err}");
    }
    let archive = tmp.path().join("hub.backup");
    let (code, out, err) = run(cocalc_db(&source).arg("backup").arg("--out").arg(&archive));
    assert_eq!(code, 0, "{out}{err}");
    let restored = tmp.path().join("restored");
    restore_into(&restored, &archive);
    let catalog = "SELECT string_agg(relname || ':' || relfilenode, ',' ORDER BY relname) AS c \
                   FROM pg_class WHERE relnamespace = 'public'::regnamespace \
                   OR relname LIKE 'pg_class%'";
    let (code, before, err) = run(cocalc_db(&source).args(["sql", catalog, "--json"]));
    assert_eq!(code, 0, "{err}");
    let (code, after, err) = run(cocalc_db(&restored).args(["sql", catalog, "--json"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(before, after);
    assert!(
        after.contains("kept:") && !after.contains("items"),
        "{after}"
    );
}

/// The entries of `dir` whose name starts with a dot: partial files.
fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[cfg(unix)]
#[test]
fn export_and_backup_write_regular_files_or_standard_output_only() {
    use std::os::unix::fs::FileTypeExt as _;

    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("source");
    seed(&source);
    let fifo = tmp.path().join("fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let real = tmp.path().join("real.sql");
    std::fs::write(&real, "kept").expect("write");
    let link = tmp.path().join("link.sql");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    for (out, kind) in [
        (fifo.as_path(), "a FIFO"),
        (link.as_path(), "a symbolic link"),
        (Path::new("/dev/null"), "a device"),
    ] {
        let (code, _, err) = run(cocalc_db(&source).args(["export", "--out"]).arg(out));
        assert_eq!(code, 1, "{err}");
        assert_eq!(
            err,
            format!(
                "cocalc-db export: {} is {kind}; write to a regular file (or to standard output with --out -)\n",
                out.display()
            )
        );
        let (code, _, err) = run(cocalc_db(&source)
            .args(["backup", "--force", "--out"])
            .arg(out));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("is {kind}")), "{err}");
    }
    assert!(
        std::fs::symlink_metadata(&fifo)
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&real).expect("real"), "kept");
    assert!(
        std::fs::symlink_metadata("/dev/null")
            .expect("null")
            .file_type()
            .is_char_device()
    );
    // None of them counts as an export, and nothing partial is left.
    assert!(!recorded_export(&source));
    assert!(hidden(tmp.path()).is_empty(), "{:?}", hidden(tmp.path()));

    // `-` is standard output.
    let (code, out, err) = run(cocalc_db(&source).args(["export", "--out", "-"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("-- cocalc-db-end: "), "{out}");
    assert!(!tmp.path().join("-").exists() && !source.join("-").exists());
    let output = cocalc_db(&source)
        .args(["backup", "--out", "-"])
        .output()
        .expect("backup");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        output.stdout.get(..2),
        Some(&[0x1f, 0x8b][..]),
        "a gzip stream"
    );
}

/// A source directory big enough that writing it out takes a while.
#[cfg(unix)]
fn big_source(tmp: &std::path::Path) -> std::path::PathBuf {
    let source = tmp.join("source");
    seed(&source);
    let (code, out, err) = run(cocalc_db(&source).args([
        "sql",
        "INSERT INTO items (name) SELECT repeat(md5(i::text), 8) FROM generate_series(1, 400000) i",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    source
}

/// Runs `cocalc-db COMMAND --out FILE` on `source`, sends it SIGTERM and then
/// SIGINT (a run each) once its partial file beside FILE appeared, and checks
/// that it stops with 143 / 130, writes no FILE and leaves nothing hidden
/// beside it.
#[cfg(unix)]
fn interrupt_while_writing(source: &std::path::Path, command: &str, file: &std::path::Path) {
    let out_dir = file.parent().expect("a directory");
    for signal in ["-TERM", "-INT"] {
        let mut child = cocalc_db(source)
            .args([command, "--out"])
            .arg(file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(120);
        while hidden(out_dir).is_empty() {
            assert!(Instant::now() < deadline, "no partial file appeared");
            assert!(
                child.try_wait().expect("wait").is_none(),
                "{command} ended first"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let output = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&output.stderr);
        let expected = if signal == "-TERM" { 143 } else { 130 };
        assert_eq!(output.status.code(), Some(expected), "{signal}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        assert!(!file.exists());
        assert!(
            hidden(out_dir).is_empty(),
            "{signal}: {:?}",
            hidden(out_dir)
        );
    }
}

#[cfg(unix)]
#[test]
fn an_interrupted_export_leaves_no_partial_file_and_closes_the_database() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = big_source(tmp.path());
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    interrupt_while_writing(&source, "export", &out_dir.join("hub.sql"));
    let record = std::fs::read_to_string(source.join("cocalc-db.json")).expect("record");
    assert!(record.contains("\"open\": false"), "{record}");
    assert!(!recorded_export(&source));
}

/// Ctrl-C or SIGTERM during `backup --out` leaves no partial file beside the
/// target (the archive is written on a thread that outlives the command).
#[cfg(unix)]
#[test]
fn an_interrupted_backup_leaves_no_partial_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = big_source(tmp.path());
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    interrupt_while_writing(&source, "backup", &out_dir.join("hub.tgz"));
}

/// `export` and `migrate` only read the embedded database: a mistyped
/// `--data-dir` fails naming it, instead of creating an empty cluster there
/// and exporting (or migrating) nothing with exit 0.
#[test]
fn export_and_migrate_of_a_missing_data_dir_fail_and_create_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let typo = tmp.path().join("typo-dir");
    for args in [
        vec!["export", "--out", "-"],
        vec!["migrate", "--to", "postgres://nobody@127.0.0.1:1/none"],
    ] {
        let (code, out, err) = run(cocalc_db(&typo).args(&args));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("no embedded database"), "{args:?}: {err}");
        assert!(err.contains(&typo.display().to_string()), "{err}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}
