//! The binary on its own: copied into an empty directory and run with an
//! empty home and no configuration it passes `check`, unpacking the embedded
//! runtime from itself; with an unwritable runtime cache it fails in one line.
//! And on PostgreSQL it warns about embedded data that was never exported.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::run;

use db::{Config, DataDir, PglitePool, Pool};

/// The unprivileged account that runs the read-only test when we are root
/// (root writes through any permission bits); `cargo xtask pg` creates it too.
const SERVICE_USER: &str = "cocalc-pg";

/// A fresh directory holding only a copy of the binary, and an empty home.
struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir(root.path().join("bin")).expect("mkdir bin");
        fs::create_dir(root.path().join("home")).expect("mkdir home");
        fs::copy(
            env!("CARGO_BIN_EXE_cocalc-db"),
            root.path().join("bin/cocalc-db"),
        )
        .expect("copy the binary");
        Sandbox { root }
    }

    fn binary(&self) -> PathBuf {
        self.root.path().join("bin/cocalc-db")
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    /// The binary with an empty environment but `HOME`, run from the sandbox.
    fn command(&self) -> Command {
        let mut cmd = Command::new(self.binary());
        cmd.env_clear()
            .env("HOME", self.home())
            .current_dir(self.root.path());
        cmd
    }
}

#[test]
fn the_binary_alone_passes_check_in_an_empty_home() {
    let sandbox = Sandbox::new();
    let (code, out, err) = run(sandbox.command().arg("check"));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.ends_with("ok\n"), "{out}");
    let data = sandbox.home().join(".cocalc/pglite");
    assert!(out.contains(&data.display().to_string()), "{out}");
    // The runtime came out of the binary into the empty home's cache.
    let cache = sandbox.home().join(".cache/pglite-oxide");
    assert!(fs::read_dir(&cache).expect("runtime cache").count() > 0);
}

#[test]
fn an_unwritable_runtime_cache_fails_check_in_one_line() {
    let sandbox = Sandbox::new();
    let cache = sandbox.home().join(".cache/pglite-oxide");
    fs::create_dir_all(&cache).expect("mkdir cache");
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o555)).expect("chmod");
    let mut cmd = match service_account() {
        // Root ignores permission bits: run as the unprivileged account,
        // which owns the sandbox.
        Some((uid, gid)) => {
            for entry in [
                sandbox.root.path().to_path_buf(),
                sandbox.root.path().join("bin"),
                sandbox.binary(),
                sandbox.home(),
                sandbox.home().join(".cache"),
                cache.clone(),
            ] {
                std::os::unix::fs::chown(&entry, Some(uid), Some(gid)).expect("chown");
            }
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SERVICE_USER, "--", "env", "-i"])
                .arg(format!("HOME={}", sandbox.home().display()))
                .arg(sandbox.binary())
                .current_dir(sandbox.root.path());
            cmd
        }
        None => sandbox.command(),
    };
    let (code, out, err) = run(cmd.arg("check"));
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let expected = format!(
        "cocalc-db check: runtime cache: cannot unpack the embedded PostgreSQL runtime into {}: \
         not writable (permission denied)",
        cache.display()
    );
    assert!(err.starts_with(&expected), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_unexported_embedded_data_is_a_warning_naming_the_command() {
    let sandbox = Sandbox::new();
    let data = sandbox.home().join(".cocalc/pglite");
    let pool = PglitePool::open(&Config::new().pglite(DataDir::Path(data.clone())))
        .await
        .expect("open the embedded cluster");
    pool.batch_execute("CREATE TABLE left_behind (v int); INSERT INTO left_behind VALUES (1)")
        .await
        .expect("write");
    pool.close().await;

    // No server listens on port 1: the warning comes before connecting.
    let (code, out, err) = run(sandbox
        .command()
        .env("COCALC_DB", "postgres")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .arg("check"));
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning in:\n{err}"));
    assert!(
        warning.contains(&format!("the embedded data directory {}", data.display())),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("cocalc-db --data-dir {} export", data.display())),
        "{warning}"
    );
    assert!(err.contains("cocalc-db check: open: "), "{err}");

    // Exported and unchanged: silent.
    let pool = PglitePool::open(&Config::new().pglite(DataDir::Path(data.clone())))
        .await
        .expect("reopen");
    let next_xid = pool.next_xid().await.expect("next xid");
    db::embedded::metadata::record_export(&data, next_xid).expect("record export");
    pool.close().await;
    let (_, _, err) = run(sandbox
        .command()
        .env("COCALC_DB", "postgres")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .arg("check"));
    assert!(!err.contains("WARN"), "{err}");
}

/// `Some((uid, gid))` of [`SERVICE_USER`] when we are root, created if
/// missing (as `cargo xtask pg` does); `None` otherwise.
fn service_account() -> Option<(u32, u32)> {
    if effective_uid() != 0 {
        return None;
    }
    if lookup_account().is_none() {
        // A concurrent creator may win; only a still-missing user fails.
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ])
            .status();
    }
    Some(lookup_account().expect("create the unprivileged test account"))
}

/// Our effective uid, from /proc (std has no getter for it).
fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .expect("effective uid")
}

/// [`SERVICE_USER`]'s ids from /etc/passwd.
fn lookup_account() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string(Path::new("/etc/passwd")).ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != SERVICE_USER {
            return None;
        }
        let mut ids = fields.skip(1).map(str::parse);
        Some((ids.next()?.ok()?, ids.next()?.ok()?))
    })
}
