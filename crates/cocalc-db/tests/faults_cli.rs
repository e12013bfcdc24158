//! The embedded data directory under faults, as a user meets them through
//! the `cocalc-db` binary: a bad or interrupted restore, foreign directories,
//! permissions, a lock left by a dead process, a damaged record, and a
//! creation that fails part way.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{failure_line, on_dir as cocalc_db, run};

/// Runs `sql` on the cluster in `dir`, which must succeed.
fn sql(dir: &Path, sql: &str) -> String {
    let (code, out, err) = run(cocalc_db(dir).args(["sql", sql, "--json"]));
    assert_eq!(code, 0, "{sql}: {out}{err}");
    out
}

/// A cluster in `dir` holding `items` (3 rows), plus `extra` when asked.
fn seed(dir: &Path, extra: bool) {
    sql(dir, "CREATE TABLE items (id serial PRIMARY KEY, name text)");
    sql(dir, "INSERT INTO items (name) VALUES ('a'), ('b'), ('c')");
    if extra {
        sql(dir, "CREATE TABLE keep (v int)");
        sql(dir, "INSERT INTO keep SELECT generate_series(1, 1000)");
    }
}

/// Writes a backup of `dir` to `archive`.
fn backup(dir: &Path, archive: &Path) {
    let (code, out, err) = run(cocalc_db(dir).arg("backup").arg("--out").arg(archive));
    assert_eq!(code, 0, "{out}{err}");
}

/// Files that change whenever anyone takes the directory's locks.
const LOCK_FILES: &[&str] = &["cocalc-db.pid", ".pglite-oxide.lock"];

/// Every path under `dir` with its kind and a hash of its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(root: &Path, at: &Path, into: &mut BTreeMap<PathBuf, u64>) {
        for entry in fs::read_dir(at).expect("read dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if LOCK_FILES.iter().any(|l| rel == Path::new(l)) {
                continue;
            }
            if entry.file_type().expect("type").is_dir() {
                into.insert(rel, 0);
                walk(root, &path, into);
            } else {
                let mut h = DefaultHasher::new();
                fs::read(&path).expect("read").hash(&mut h);
                into.insert(rel, h.finish() | 1);
            }
        }
    }
    let mut map = BTreeMap::new();
    walk(dir, dir, &mut map);
    map
}

/// Entries of `dir`'s parent whose name mentions `dir`'s and are not `dir`.
fn leftovers_beside(dir: &Path) -> Vec<String> {
    let name = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    fs::read_dir(dir.parent().expect("parent"))
        .expect("read parent")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != &name && n.contains(&name))
        .collect()
}

/// In `tmp`: a cluster `target` holding `items` and `keep`, and the
/// backup of another holding only `items`.
fn target_and_archive(tmp: &Path) -> (PathBuf, PathBuf) {
    let (source, target) = (tmp.join("source"), tmp.join("target"));
    seed(&source, false);
    seed(&target, true);
    let archive = tmp.join("hub.backup");
    backup(&source, &archive);
    (target, archive)
}

#[test]
fn a_truncated_archive_leaves_the_old_database_as_it_was() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (target, archive) = target_and_archive(tmp.path());
    let bytes = fs::read(&archive).expect("read archive");
    let truncated = tmp.path().join("truncated.backup");
    fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).expect("write");

    let before = snapshot(&target);
    let (code, _, err) = run(cocalc_db(&target)
        .args(["restore", "--force", "--from"])
        .arg(&truncated));
    assert_eq!(code, 1, "{err}");
    failure_line("restore", &err);
    assert_eq!(
        snapshot(&target),
        before,
        "the failed restore changed {target:?}"
    );
    assert_eq!(leftovers_beside(&target), Vec::<String>::new());
    assert_eq!(
        sql(&target, "SELECT count(*) AS n FROM keep"),
        "[{\"n\":1000}]\n"
    );
}

#[test]
fn an_interrupted_restore_leaves_the_old_or_the_new_database_never_a_mix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (target, archive) = target_and_archive(tmp.path());

    let before = snapshot(&target);
    for delay_ms in [50, 250, 500, 1000] {
        let mut child = cocalc_db(&target)
            .args(["restore", "--force", "--from"])
            .arg(&archive)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn restore");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = child.wait().expect("wait");
        if snapshot(&target) == before {
            continue;
        }
        // Unchanged, or wholly the archive's database.
        assert!(
            status.success(),
            "SIGINT after {delay_ms} ms changed {target:?}"
        );
        let tables = sql(
            &target,
            "SELECT string_agg(tablename, ',' ORDER BY tablename) AS t FROM pg_tables \
             WHERE schemaname = 'public'",
        );
        assert_eq!(tables, "[{\"t\":\"items\"}]\n", "after {delay_ms} ms");
        return;
    }
    assert_eq!(
        sql(&target, "SELECT count(*) AS n FROM keep"),
        "[{\"n\":1000}]\n"
    );
    // What an interrupted restore left beside the directory goes with the
    // next restore.
    let (code, _, err) = run(cocalc_db(&target)
        .args(["restore", "--force", "--from"])
        .arg(&archive));
    assert_eq!(code, 0, "{err}");
    assert_eq!(leftovers_beside(&target), Vec::<String>::new());
    assert_eq!(
        sql(&target, "SELECT count(*) AS n FROM items"),
        "[{\"n\":3}]\n"
    );
}

/// Runs `cmd` under `umask`, through the shell.
fn with_umask(umask: &str, cmd: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh
}

/// Paths under `dir` (and `dir` itself) that anyone but the owner can use.
fn not_private(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mode = fs::metadata(dir).expect("stat").permissions().mode() & 0o777;
    if mode != 0o700 {
        found.push(format!("{} {mode:o}", dir.display()));
    }
    for rel in snapshot(dir).keys() {
        let path = dir.join(rel);
        let meta = fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            found.push(format!("{} {mode:o}", rel.display()));
        }
    }
    found
}

#[test]
fn data_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("created");
    let (code, out, err) = run(&mut with_umask("022", cocalc_db(&dir).arg("check")));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(not_private(&dir), Vec::<String>::new(), "after creation");

    let archive = tmp.path().join("hub.backup");
    backup(&dir, &archive);
    let restored = tmp.path().join("restored");
    let (code, out, err) = run(&mut with_umask(
        "077",
        cocalc_db(&restored)
            .arg("restore")
            .arg("--from")
            .arg(&archive),
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        not_private(&restored),
        Vec::<String>::new(),
        "after restore"
    );
}

#[test]
fn check_warns_about_a_data_directory_others_can_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    sql(&dir, "SELECT 1");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (code, out, err) = run(cocalc_db(&dir).arg("check"));
    assert_eq!(code, 0, "{out}{err}");
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning in {out}"));
    assert!(warning.contains(&dir.display().to_string()), "{warning}");
    assert!(warning.contains("chmod 700"), "{warning}");
}

/// A copy of what a PostgreSQL 15 server keeps in its PGDATA, in miniature.
fn fake_server_pgdata(dir: &Path) {
    for sub in ["base/1", "global", "pg_wal"] {
        fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    fs::write(dir.join("PG_VERSION"), "15\n").expect("write");
    fs::write(dir.join("postgresql.conf"), "port = 5432\n").expect("write");
    fs::write(dir.join("global/pg_control"), [0u8; 64]).expect("write");
}

#[test]
fn a_server_data_directory_or_other_files_are_refused_and_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pgdata = tmp.path().join("pgdata");
    fake_server_pgdata(&pgdata);
    let other = tmp.path().join("photos");
    fs::create_dir_all(&other).expect("mkdir");
    fs::write(other.join("cat.jpg"), "meow").expect("write");
    let source = tmp.path().join("source");
    seed(&source, false);
    let archive = tmp.path().join("hub.backup");
    backup(&source, &archive);

    for (dir, found) in [(&pgdata, "PostgreSQL 15"), (&other, "cat.jpg")] {
        let before = snapshot(dir);
        let (code, out, err) = run(cocalc_db(dir).arg("check"));
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&dir.display().to_string()), "{err}");
        assert!(err.contains(found), "{err}");
        assert!(err.contains("not an embedded cluster"), "{err}");
        let (code, _, err) = run(cocalc_db(dir)
            .args(["restore", "--force", "--from"])
            .arg(&archive));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("not an embedded cluster"), "{err}");
        assert_eq!(snapshot(dir), before, "{dir:?} was changed");
    }
}

/// Holds the lock of `dir` as a process that is gone would: locked by the
/// test process, with `pid` written in it; released after `hold`.
fn hold_lock_for_dead_process(dir: &Path, pid: u32, hold: Duration) -> std::thread::JoinHandle<()> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("cocalc-db.pid"))
        .expect("open lock file");
    file.try_lock().expect("lock");
    file.set_len(0).expect("truncate");
    file.seek(SeekFrom::Start(0)).expect("seek");
    writeln!(file, "{pid}").expect("write pid");
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        drop(file);
    })
}

#[test]
fn a_lock_left_by_a_dead_or_exiting_process_is_waited_for() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    seed(&dir, false);

    // A process that is gone, and one that exited but was not reaped.
    let mut gone = Command::new("true").spawn().expect("spawn");
    let gone_pid = gone.id();
    gone.wait().expect("wait");
    let mut zombie = Command::new("true").spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(200));

    for pid in [gone_pid, zombie.id()] {
        let release = hold_lock_for_dead_process(&dir, pid, Duration::from_secs(1));
        let started = Instant::now();
        let (code, out, err) =
            run(cocalc_db(&dir).args(["sql", "SELECT count(*) AS n FROM items", "--json"]));
        release.join().expect("release");
        assert_eq!(
            (code, out.as_str()),
            (0, "[{\"n\":3}]\n"),
            "pid {pid}: {err}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "did not wait"
        );
        // The target line, then the one warning about the wait.
        let warning = failure_line("sql", &err);
        assert!(warning.contains(&format!("process {pid}")), "{err}");
        assert!(warning.contains("waiting"), "{err}");
    }
    zombie.wait().expect("reap");
}

#[test]
fn a_live_holder_of_the_lock_fails_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    seed(&dir, false);
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("spawn");
    let release = hold_lock_for_dead_process(&dir, sleeper.id(), Duration::from_secs(3));
    let started = Instant::now();
    let (code, _, err) = run(cocalc_db(&dir).args(["sql", "SELECT 1"]));
    let elapsed = started.elapsed();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    release.join().expect("release");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("in use by process {}", sleeper.id())),
        "{err}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "waited {elapsed:?} for a live holder"
    );
}

#[test]
fn a_damaged_record_is_reported_and_does_not_block_the_data() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    seed(&dir, false);
    let record = dir.join("cocalc-db.json");
    fs::write(&record, "{\"format\": 1, \"created_by\": tru").expect("damage");

    let (code, out, err) =
        run(cocalc_db(&dir).args(["sql", "SELECT count(*) AS n FROM items", "--json"]));
    assert_eq!((code, out.as_str()), (0, "[{\"n\":3}]\n"), "{err}");
    assert!(err.contains(&record.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
    // The next open finds a sound record again.
    let (code, out, err) = run(cocalc_db(&dir).arg("check"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("damaged"), "{err}");
}

#[test]
fn a_creation_that_fails_leaves_nothing_and_says_why() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    // Files may not grow beyond 1 MB, like a nearly full disk: PostgreSQL's
    // first WAL segment (16 MB) cannot be written.
    let sh = with_umask("077", cocalc_db(&dir).arg("check"));
    let script = sh
        .get_args()
        .nth(1)
        .expect("script")
        .to_string_lossy()
        .into_owned();
    // SIGXFSZ keeps its default action (end the process), as in a user's
    // shell: the binary must outlive it to clean up and say why.
    let limited = format!("ulimit -f 1024; {script}");
    let args: Vec<_> = sh.get_args().skip(2).map(|a| a.to_owned()).collect();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(limited).args(args);
    for (k, v) in sh.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(
        !dir.exists(),
        "left {:?}",
        fs::read_dir(&dir).map(|d| d.count())
    );
    let (code, out, err) = run(cocalc_db(&dir).arg("check"));
    assert_eq!(code, 0, "{out}{err}");
}

/// The issue's case: a function that inserts and calls itself runs the
/// WebAssembly stack out. The statement fails with one clear line, and none
/// of its rows is kept, neither at once nor in the next process.
#[test]
fn a_statement_that_crashes_the_backend_keeps_none_of_its_writes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    sql(&dir, "CREATE TABLE r (n int)");
    sql(
        &dir,
        "CREATE FUNCTION f(n int) RETURNS int LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO r VALUES (n); RETURN f(n + 1); END $$",
    );
    sql(&dir, "INSERT INTO r VALUES (0)");
    let (code, out, err) = run(cocalc_db(&dir).args(["sql", "SELECT f(1)"]));
    assert_ne!(code, 0, "{out}{err}");
    let line = failure_line("sql", &err);
    assert!(
        line.contains("crashed") || line.contains("54001"),
        "one clear line expected: {err}"
    );
    assert!(!err.contains("PostgresMainLoopOnce"), "{err}");
    assert!(sql(&dir, "SELECT count(*) AS n FROM r").contains("\"n\":1"));
}
