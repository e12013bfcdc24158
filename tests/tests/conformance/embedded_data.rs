//! The embedded data directory's record (who created it, whether its data
//! was exported), the guardrail a server on PostgreSQL gets from it, and the
//! boot-time checks that refuse unusable directories in one line. These tests
//! open their own embedded databases, whatever the matrix cell.

use std::path::Path;
use std::process::Command;

use db::embedded::metadata::{self, EmbeddedDataStatus};
use db::embedded::unexported_data_warning;
use db::{BackendKind, Config, DataDir, PglitePool, Pool, StorageProblem};

fn config(dir: &Path) -> Config {
    Config::new().pglite(DataDir::Path(dir.to_path_buf()))
}

async fn open(dir: &Path) -> PglitePool {
    PglitePool::open(&config(dir)).await.unwrap()
}

/// A server configuration on PostgreSQL whose embedded directory is `dir`.
fn postgres_mode(dir: &Path) -> Config {
    config(dir).backend(BackendKind::Postgres)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_tells_whether_the_data_was_exported() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    assert_eq!(metadata::status(dir).unwrap(), EmbeddedDataStatus::NoData);

    let pool = open(dir).await;
    assert_eq!(pool.data_dir(), Some(&*dir.canonicalize().unwrap()));
    let meta = metadata::read(dir).unwrap().unwrap();
    assert_eq!(meta.format, metadata::FORMAT);
    assert_eq!(meta.created_by.backend, "pglite");
    assert!(meta.created_by.postgres.starts_with("17"), "{meta:?}");
    assert_eq!(meta.created_by.pglite_oxide, metadata::PGLITE_OXIDE_VERSION);
    assert!(meta.open);
    // Reading consumes no transaction id.
    pool.query("SELECT relname FROM pg_class", &[])
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(metadata::status(dir).unwrap(), EmbeddedDataStatus::Unused);
    assert_eq!(unexported_data_warning(&postgres_mode(dir)), None);

    let pool = open(dir).await;
    pool.batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('a')")
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(
        metadata::status(dir).unwrap(),
        EmbeddedDataStatus::NeverExported
    );

    // An export records the transaction id from before its dump.
    let pool = open(dir).await;
    let before = pool.next_xid().await.unwrap();
    metadata::record_export(pool.data_dir().unwrap(), before).unwrap();
    assert!(
        matches!(
            metadata::status(dir).unwrap(),
            EmbeddedDataStatus::NotClosedCleanly {
                exported_at: Some(_)
            }
        ),
        "open right now"
    );
    pool.close().await;
    assert!(matches!(
        metadata::status(dir).unwrap(),
        EmbeddedDataStatus::Exported { .. }
    ));
    assert_eq!(unexported_data_warning(&postgres_mode(dir)), None);

    // Reading leaves it exported; a committed write does not.
    let pool = open(dir).await;
    pool.query("SELECT v FROM kept", &[]).await.unwrap();
    pool.close().await;
    assert!(matches!(
        metadata::status(dir).unwrap(),
        EmbeddedDataStatus::Exported { .. }
    ));
    let pool = open(dir).await;
    pool.execute("INSERT INTO kept VALUES ('b')", &[])
        .await
        .unwrap();
    pool.close().await;
    let status = metadata::status(dir).unwrap();
    assert!(
        matches!(status, EmbeddedDataStatus::ChangedSinceExport { .. }),
        "{status:?}"
    );
    let warning = unexported_data_warning(&postgres_mode(dir)).unwrap();
    assert!(warning.contains(&*dir.to_string_lossy()), "{warning}");
    assert!(
        warning.contains("changed since its last export"),
        "{warning}"
    );
    assert!(
        warning.contains("cocalc-db --data-dir") && warning.contains(" export --out FILE`"),
        "{warning}"
    );
    assert!(warning.contains("migrate --to URL"), "{warning}");
    assert!(!warning.contains('\n'), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_a_record_counts_as_never_exported() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pool = open(dir).await;
    pool.close().await;
    // As left by a version that kept no record.
    std::fs::remove_file(metadata::path(dir)).unwrap();
    assert_eq!(
        metadata::status(dir).unwrap(),
        EmbeddedDataStatus::NeverExported
    );
    // Its history is unknown, so it stays that way until exported.
    let pool = open(dir).await;
    pool.close().await;
    let meta = metadata::read(dir).unwrap().unwrap();
    assert_eq!(meta.created_next_xid, None);
    assert_eq!(
        metadata::status(dir).unwrap(),
        EmbeddedDataStatus::NeverExported
    );
    let warning = unexported_data_warning(&postgres_mode(dir)).unwrap();
    assert!(warning.contains("never exported"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_another_postgres_major_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = dir.path().join("tmp").join("pglite").join("base");
    std::fs::create_dir_all(&pgdata).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "16\n").unwrap();
    let err = PglitePool::open(&config(dir.path())).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, db::Error::DataDirIncompatible { .. }),
        "{msg}"
    );
    assert!(msg.contains(&*dir.path().to_string_lossy()), "{msg}");
    assert!(
        msg.contains("PostgreSQL 16") && msg.contains("PostgreSQL 17"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    // Nothing was touched.
    assert_eq!(
        std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap(),
        "16\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        metadata::path(dir.path()),
        format!(r#"{{"format": {}}}"#, metadata::FORMAT + 1),
    )
    .unwrap();
    let err = PglitePool::open(&config(dir.path())).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, db::Error::DataDirIncompatible { .. }),
        "{msg}"
    );
    assert!(msg.contains("a newer cocalc-db"), "{msg}");
    // A server on PostgreSQL cannot tell either, and says so.
    let warning = unexported_data_warning(&postgres_mode(dir.path())).unwrap();
    assert!(warning.contains("cannot tell"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_data_directory_fails_before_opening() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = PglitePool::open(&config(&file.join("data")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            db::Error::DataDirUnwritable {
                problem: StorageProblem::NotADirectory,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("a file"), "{err}");
}

/// The runtime cache is resolved from the environment, so this runs in a
/// child process with `XDG_CACHE_HOME` under a file: nothing can be unpacked.
#[test]
fn an_unusable_runtime_cache_fails_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hold-data-dir"))
        .arg(dir.path().join("data"))
        .env("XDG_CACHE_HOME", file.join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let cache = file.join("cache").join("pglite-oxide");
    assert!(
        stderr.starts_with(&format!(
            "cannot unpack the embedded PostgreSQL runtime into {}: not a directory",
            cache.display()
        )),
        "{stderr}"
    );
}
