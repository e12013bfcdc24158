//! Configuration: which backend, and how to reach it.
//!
//! [`Config::from_env`] is the only place in the workspace that reads the
//! environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Which backend a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendKind {
    /// A PostgreSQL server (the library default).
    Postgres,
    /// The embedded PGlite backend.
    Pglite,
}

impl BackendKind {
    /// The accepted spellings, for error messages.
    pub const ACCEPTED: &'static str = "postgres, pglite";
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Postgres => "postgres",
            BackendKind::Pglite => "pglite",
        })
    }
}

impl FromStr for BackendKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" | "" => Ok(BackendKind::Postgres),
            "pglite" => Ok(BackendKind::Pglite),
            _ => Err(ConfigError::UnknownBackend(s.to_owned())),
        }
    }
}

/// The configuration is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `COCALC_DB` (or `--db`) holds an unknown backend name.
    #[error("unknown database backend {0:?} in COCALC_DB; accepted values: {accepted}", accepted = BackendKind::ACCEPTED)]
    UnknownBackend(String),
    /// A variable holds a value of the wrong form.
    #[error("{variable}={value:?} is invalid: {reason}")]
    InvalidValue {
        /// The variable.
        variable: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The configuration selects a backend this build left out: `krate`
    /// (the `db` facade, or `db-testing`) was built without that backend's
    /// cargo feature (`postgres` or `pglite`, as `backend` displays).
    #[error(
        "this build has no {name} backend: enable the `{backend}` feature of `{krate}`",
        name = match backend { BackendKind::Postgres => "PostgreSQL", BackendKind::Pglite => "embedded" }
    )]
    BackendNotBuilt {
        /// The backend the configuration selects.
        backend: BackendKind,
        /// The crate whose feature adds it.
        krate: &'static str,
    },
}

/// Where the embedded cluster lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum DataDir {
    /// A temporary cluster, removed when the pool closes (`memory://`).
    Memory,
    /// A persistent cluster in this directory.
    Path(PathBuf),
}

impl DataDir {
    /// Parses `memory://` or a path.
    pub fn parse(s: &str) -> DataDir {
        if s.trim() == "memory://" {
            DataDir::Memory
        } else {
            DataDir::Path(PathBuf::from(s))
        }
    }
}

impl fmt::Display for DataDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDir::Memory => f.write_str("memory://"),
            DataDir::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl DataDir {
    /// The packaged edition's embedded data directory under `home`:
    /// `home/.cocalc/pglite`.
    pub fn default_under(home: &Path) -> PathBuf {
        home.join(".cocalc").join("pglite")
    }

    /// [`DataDir::default_under`] the home directory in `HOME`, if set.
    ///
    /// Besides [`Config::from_env`], the one other reader of the environment:
    /// a server in Postgres mode looks there for embedded data left behind.
    pub fn default_in_home() -> Option<PathBuf> {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| DataDir::default_under(Path::new(&h)))
    }
}

/// How to reach a PostgreSQL server.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// A `postgres://` URL. Its parts win over the `PG*` variables, which
    /// fill in only what it leaves out (libpq's precedence); the fields
    /// below, when set, override its parts.
    pub url: Option<String>,
    /// Host name or socket directory (`PGHOST`).
    pub host: Option<String>,
    /// Port (`PGPORT`).
    pub port: Option<u16>,
    /// User (`PGUSER`).
    pub user: Option<String>,
    /// Database (`PGDATABASE`).
    pub database: Option<String>,
    /// Password (`PGPASSWORD`). Never serialized, as it is never printed:
    /// a configuration written out does not carry it.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// Maximum connections in the pool.
    pub max_connections: u32,
    /// Connections the pool opens when it connects and keeps open
    /// afterwards, idle or not (at most `max_connections`).
    #[serde(default)]
    pub min_connections: u32,
    /// A connection idle this long is closed, down to `min_connections`;
    /// `None` keeps idle connections open.
    #[serde(with = "optional_millis", default = "default_idle_timeout")]
    pub idle_timeout: Option<Duration>,
    /// A connection this old is closed when it is next idle (and replaced
    /// up to `min_connections`), so that server-side memory and settings
    /// changes do not outlive it; `None` keeps connections for ever.
    #[serde(with = "optional_millis", default = "default_max_lifetime")]
    pub max_lifetime: Option<Duration>,
    /// Prepared statements cached per connection.
    pub statement_cache_capacity: usize,
    /// How long opening a connection may take, TLS and authentication
    /// included (`PGCONNECT_TIMEOUT`, or `connect_timeout` in the URL, in
    /// seconds as libpq reads them); the acquire timeout when `None`.
    pub connect_timeout: Option<Duration>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// libpq's `sslmode` values.
const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// `url` without its `connect_timeout` parameter, and that parameter's
/// value: the PostgreSQL backend applies it itself (the driver does not
/// know it), and `cocalc-db --connect-timeout` replaces it.
pub fn split_connect_timeout(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut timeout = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("connect_timeout", value)) => {
                timeout = Some(value.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, timeout)
}

/// [`PostgresConfig::idle_timeout`]'s default: 10 minutes.
fn default_idle_timeout() -> Option<Duration> {
    Some(Duration::from_secs(10 * 60))
}

/// [`PostgresConfig::max_lifetime`]'s default: 30 minutes.
fn default_max_lifetime() -> Option<Duration> {
    Some(Duration::from_secs(30 * 60))
}

/// A connection string with its passwords replaced, for logs, errors and
/// `Debug`: in a URL, the one in the user information (`user:secret@`,
/// wherever its last `@` is, so that an unencoded `@`, `:`, `/` or `?` in it
/// shows nothing) and any `password=` query parameter; in libpq's
/// keyword/value form (`host=h password=secret`), the `password` value,
/// quoted or not.
pub fn redact_url(url: &str) -> String {
    // A URL starts with its scheme; a `://` further on (inside a quoted or
    // unquoted keyword/value password) does not make one.
    let is_scheme = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    };
    match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => redact_uri(scheme, rest),
        _ => redact_conninfo(url),
    }
}

/// Whether a connection parameter holds a secret: `password`, libpq's
/// `sslpassword`, and other spellings a driver might echo (`passwd`).
fn is_secret_key(key: &str) -> bool {
    key.to_ascii_lowercase().contains("pass")
}

fn redact_uri(scheme: &str, rest: &str) -> String {
    // The user information ends at the last `@`: an unencoded one in the
    // password must not cut it short. (An `@` in the query instead makes
    // this redact more than needed, never less.)
    let (userinfo, tail) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:<redacted>@")),
            None => {
                out.push_str(userinfo);
                out.push('@');
            }
        }
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if is_secret_key(key) => {
                        format!("{key}=<redacted>")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// libpq's `keyword = value` form: values are single-quoted (with `\'` and
/// `\\` escapes) or run to the next space.
fn redact_conninfo(text: &str) -> String {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = rest[key_end..].trim_start();
        let Some(after_eq) = after_key.strip_prefix('=') else {
            // Not keyword/value text after all: show the word, hide nothing
            // further that could be a value.
            out.push(key.to_owned());
            rest = after_key;
            continue;
        };
        let value_text = after_eq.trim_start();
        let (value, remainder) = if let Some(quoted) = value_text.strip_prefix('\'') {
            let mut end = quoted.len();
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let stop = (end + 1).min(quoted.len());
            (&value_text[..=stop], &quoted[stop..])
        } else {
            let end = value_text
                .find(char::is_whitespace)
                .unwrap_or(value_text.len());
            (&value_text[..end], &value_text[end..])
        };
        if is_secret_key(key) {
            out.push(format!("{key}=<redacted>"));
        } else {
            out.push(format!("{key}={value}"));
        }
        rest = remainder.trim_start();
    }
    out.join(" ")
}

/// How to open the embedded backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PgliteConfig {
    /// Where the cluster lives.
    pub data_dir: DataDir,
    /// Trade crash durability for speed.
    pub relaxed_durability: bool,
}

impl Default for PgliteConfig {
    fn default() -> Self {
        PgliteConfig {
            data_dir: DataDir::Memory,
            relaxed_durability: false,
        }
    }
}

/// Server-side time limits every session of a pool starts with (and returns
/// to when it is reset on release). `None` leaves the server's setting.
///
/// On PostgreSQL they are sent with each connection's startup and enforced
/// by the server. The embedded backend cannot interrupt a running statement
/// (its WebAssembly build has no working timers): `statement_timeout` there
/// makes the *caller* stop waiting at the deadline with
/// [`Error::StatementTimeout`](crate::Error::StatementTimeout) while the
/// statement runs on; `lock_timeout` is moot (one session, no lock waits);
/// `idle_in_transaction_session_timeout` is not set (it would end the one
/// backend session every caller shares).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SessionTimeouts {
    /// `statement_timeout`.
    #[serde(with = "optional_millis", default)]
    pub statement: Option<Duration>,
    /// `lock_timeout`.
    #[serde(with = "optional_millis", default)]
    pub lock: Option<Duration>,
    /// `idle_in_transaction_session_timeout`.
    #[serde(with = "optional_millis", default)]
    pub idle_in_transaction: Option<Duration>,
}

impl SessionTimeouts {
    /// The settings as `(name, value in milliseconds)` pairs, for those set.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        [
            ("statement_timeout", self.statement),
            ("lock_timeout", self.lock),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction,
            ),
        ]
        .into_iter()
        .filter_map(|(name, d)| d.map(|d| (name, d.as_millis().to_string())))
        .collect()
    }
}

/// Parses a PostgreSQL-style duration: a number (`1.5`, `1e3`, `+5`) with
/// an optional unit (`us`, `ms`, `s`, `min`, `h`, `d`; none means
/// milliseconds, as for `statement_timeout`), rounded to whole milliseconds
/// as PostgreSQL rounds it; `0` (or what rounds to it) means no limit.
fn parse_timeout(variable: &'static str, value: &str) -> Result<Option<Duration>, ConfigError> {
    parse_duration(value).map_err(|_| ConfigError::InvalidValue {
        variable,
        value: value.to_owned(),
        reason: "expected a duration such as 300ms, 5s or 2min (a plain number is milliseconds)",
    })
}

/// Reads a connect timeout as libpq does (`PGCONNECT_TIMEOUT`, the URL's
/// `connect_timeout`): whole seconds, `0` (or a negative number) waits
/// forever (`None`), and 1 counts as 2.
pub fn parse_connect_timeout(value: &str) -> Result<Option<Duration>, &'static str> {
    let seconds: i64 = value
        .trim()
        .parse()
        .map_err(|_| "expected a whole number of seconds")?;
    Ok(connect_timeout_secs(seconds))
}

/// A connect timeout of `seconds` as libpq reads it: `0` (or less) waits
/// forever (`None`), and 1 counts as 2.
pub fn connect_timeout_secs(seconds: i64) -> Option<Duration> {
    match seconds {
        ..=0 => None,
        1 => Some(Duration::from_secs(2)),
        n => Some(Duration::from_secs(n.unsigned_abs())),
    }
}

/// Text that is not a duration (see [`parse_duration`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration such as 300ms, 5s or 2min (a plain number is milliseconds)")]
pub struct InvalidDuration(pub String);

/// Reads a duration as PostgreSQL's settings take it (`300ms`, `5s`,
/// `2min`, `1h`; a plain number is milliseconds), in whole milliseconds as
/// the server holds it; `None` for zero (off).
pub fn parse_duration(value: &str) -> Result<Option<Duration>, InvalidDuration> {
    let invalid = || InvalidDuration(value.to_owned());
    let v = value.trim();
    const UNITS: [(&str, f64); 6] = [
        ("min", 60_000.0),
        ("ms", 1.0),
        ("us", 0.001),
        ("s", 1_000.0),
        ("h", 3_600_000.0),
        ("d", 86_400_000.0),
    ];
    let (number, per_unit) = UNITS
        .iter()
        .find_map(|(unit, per)| v.strip_suffix(unit).map(|n| (n.trim_end(), *per)))
        .unwrap_or((v, 1.0));
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let millis = (number * per_unit).round_ties_even();
    if !millis.is_finite() || !(0.0..=f64::from(i32::MAX)).contains(&millis) {
        return Err(invalid());
    }
    Ok(whole_millis(Duration::from_millis(millis as u64)))
}

/// A time limit as the server holds it: whole milliseconds (rounded as
/// PostgreSQL rounds), and none for zero.
fn whole_millis(d: Duration) -> Option<Duration> {
    let millis = (d.as_secs_f64() * 1000.0).round_ties_even();
    (millis >= 1.0).then(|| Duration::from_millis(millis.min(u64::MAX as f64) as u64))
}

mod optional_millis {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        <Option<u64> as serde::Deserialize>::deserialize(d).map(|v| v.map(Duration::from_millis))
    }
}

/// The whole configuration of a pool.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// Which backend.
    pub backend: BackendKind,
    /// Server settings, used when `backend` is Postgres.
    pub postgres: PostgresConfig,
    /// Embedded settings, used when `backend` is PGlite.
    pub pglite: PgliteConfig,
    /// How long to wait for a session before failing.
    #[serde(with = "millis")]
    pub acquire_timeout: Duration,
    /// Statements slower than this are logged at WARN.
    #[serde(with = "millis")]
    pub slow_statement_threshold: Duration,
    /// Time limits every session starts with.
    #[serde(default)]
    pub timeouts: SessionTimeouts,
    /// The `application_name` every session reports (in
    /// `pg_stat_activity`, in lock-holder messages): `PGAPPNAME`, else this
    /// program's file name. A URL's `application_name` wins on a server.
    #[serde(default)]
    pub application_name: Option<String>,
    /// Statements every session runs once it is open, in order, after the
    /// settings above, and again after a reset (a released session that
    /// changed its settings is reset to a new session's state): `SET ROLE`,
    /// `SET search_path`, a temporary table. Each entry is one statement,
    /// sent alone through the extended protocol, so a second statement in
    /// an entry is refused. A failing entry fails the connect with
    /// [`Error::SessionSetup`](crate::Error::SessionSetup).
    #[serde(default)]
    pub setup_sql: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Setup statements by their first words: their literals may hold
        // secrets (`SET ROLE ... PASSWORD`), as a URL's password does.
        let setup: Vec<String> = self
            .setup_sql
            .iter()
            .map(|s| crate::lex::summary(s))
            .collect();
        f.debug_struct("Config")
            .field("backend", &self.backend)
            .field("postgres", &self.postgres)
            .field("pglite", &self.pglite)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("slow_statement_threshold", &self.slow_statement_threshold)
            .field("timeouts", &self.timeouts)
            .field("application_name", &self.application_name)
            .field("setup_sql", &setup)
            .finish()
    }
}

mod millis {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::Postgres,
            postgres: PostgresConfig {
                max_connections: 10,
                statement_cache_capacity: 100,
                idle_timeout: default_idle_timeout(),
                max_lifetime: default_max_lifetime(),
                ..PostgresConfig::default()
            },
            pglite: PgliteConfig::default(),
            acquire_timeout: Duration::from_secs(30),
            slow_statement_threshold: Duration::from_secs(1),
            timeouts: SessionTimeouts::default(),
            application_name: None,
            setup_sql: Vec::new(),
        }
    }
}

impl Config {
    /// The defaults: Postgres through libpq's defaults, 10 connections,
    /// a 30 s acquire timeout.
    pub fn new() -> Self {
        Config::default()
    }

    /// Reads `COCALC_DB`, `COCALC_PGLITE_DATA_DIR`,
    /// `COCALC_PGLITE_RELAXED_DURABILITY`, `COCALC_DB_STATEMENT_TIMEOUT`,
    /// `COCALC_DB_LOCK_TIMEOUT`, `COCALC_DB_IDLE_IN_TRANSACTION_TIMEOUT`
    /// (PostgreSQL-style durations: `300ms`, `5s`, `2min`; a plain number is
    /// milliseconds), and `DATABASE_URL`, or without it `PGHOST`, `PGPORT`,
    /// `PGUSER`, `PGDATABASE`, `PGPASSWORD` (with a URL, the driver reads
    /// them only for what the URL leaves out, as libpq does).
    ///
    /// An unknown `COCALC_DB` is an error listing the accepted values, so a
    /// typo never silently picks a backend.
    pub fn from_env() -> Result<Self, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = lookup("COCALC_DB") {
            c.backend = v.parse()?;
        }
        if let Some(v) = lookup("COCALC_PGLITE_DATA_DIR").filter(|v| !v.trim().is_empty()) {
            c.pglite.data_dir = DataDir::parse(&v);
        }
        if let Some(v) = lookup("COCALC_PGLITE_RELAXED_DURABILITY") {
            c.pglite.relaxed_durability = parse_flag("COCALC_PGLITE_RELAXED_DURABILITY", &v)?;
        }
        for (variable, slot) in [
            ("COCALC_DB_STATEMENT_TIMEOUT", &mut c.timeouts.statement),
            ("COCALC_DB_LOCK_TIMEOUT", &mut c.timeouts.lock),
            (
                "COCALC_DB_IDLE_IN_TRANSACTION_TIMEOUT",
                &mut c.timeouts.idle_in_transaction,
            ),
        ] {
            if let Some(v) = lookup(variable).filter(|v| !v.trim().is_empty()) {
                *slot = parse_timeout(variable, &v)?;
            }
        }
        // The driver reads PGSSLMODE itself and ignores a value it does not
        // know, which would mean plain text for a typo of `verify-full`;
        // libpq refuses it, and so does this.
        if let Some(v) = lookup("PGSSLMODE").filter(|v| !v.is_empty())
            && !SSL_MODES.contains(&v.as_str())
        {
            return Err(ConfigError::InvalidValue {
                variable: "PGSSLMODE",
                value: v,
                reason: "expected disable, allow, prefer, require, verify-ca or verify-full",
            });
        }
        c.application_name = lookup("PGAPPNAME").filter(|v| !v.is_empty());
        if let Some(v) = lookup("PGCONNECT_TIMEOUT").filter(|v| !v.trim().is_empty()) {
            c.postgres.connect_timeout =
                parse_connect_timeout(&v).map_err(|reason| ConfigError::InvalidValue {
                    variable: "PGCONNECT_TIMEOUT",
                    value: v.clone(),
                    reason,
                })?;
        }
        c.postgres.url = lookup("DATABASE_URL").filter(|v| !v.is_empty());
        if c.postgres.url.is_some() {
            // libpq's precedence: what an explicit URL says wins over the
            // `PG*` variables, which only fill in what it leaves out (the
            // driver reads them for that).
            return Ok(c);
        }
        c.postgres.host = lookup("PGHOST").filter(|v| !v.is_empty());
        if let Some(v) = lookup("PGPORT").filter(|v| !v.is_empty()) {
            c.postgres.port = Some(v.parse().map_err(|_| ConfigError::InvalidValue {
                variable: "PGPORT",
                value: v.clone(),
                reason: "expected a port number",
            })?);
        }
        c.postgres.user = lookup("PGUSER").filter(|v| !v.is_empty());
        c.postgres.database = lookup("PGDATABASE").filter(|v| !v.is_empty());
        c.postgres.password = lookup("PGPASSWORD");
        Ok(c)
    }

    /// Selects the backend.
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// Selects Postgres at `url`, which replaces the whole server
    /// description: host, port, user, database and password set earlier are
    /// cleared, so nothing set before can redirect the URL elsewhere.
    pub fn postgres_url(mut self, url: impl Into<String>) -> Self {
        self.backend = BackendKind::Postgres;
        self.postgres.url = Some(url.into());
        self.postgres.host = None;
        self.postgres.port = None;
        self.postgres.user = None;
        self.postgres.database = None;
        self.postgres.password = None;
        self
    }

    /// Sets [`Config::application_name`].
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The `application_name` sessions report: [`Config::application_name`],
    /// else this program's file name (`cocalc-db`, the hub's binary).
    pub fn effective_application_name(&self) -> String {
        self.application_name.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "cocalc".to_owned())
        })
    }

    /// Sets [`PostgresConfig::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.postgres.connect_timeout = Some(timeout);
        self
    }

    /// Selects the embedded backend with its data in `data_dir`.
    pub fn pglite(mut self, data_dir: DataDir) -> Self {
        self.backend = BackendKind::Pglite;
        self.pglite.data_dir = data_dir;
        self
    }

    /// Trades crash durability for speed on the embedded backend.
    pub fn relaxed_durability(mut self, on: bool) -> Self {
        self.pglite.relaxed_durability = on;
        self
    }

    /// Maximum server connections.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.postgres.max_connections = n.max(1);
        self
    }

    /// Sets [`PostgresConfig::min_connections`].
    pub fn min_connections(mut self, n: u32) -> Self {
        self.postgres.min_connections = n;
        self
    }

    /// Sets [`PostgresConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.postgres.idle_timeout = timeout;
        self
    }

    /// Sets [`PostgresConfig::max_lifetime`].
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.postgres.max_lifetime = lifetime;
        self
    }

    /// Sets [`Config::setup_sql`], one statement per entry.
    pub fn setup_sql<I>(mut self, statements: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.setup_sql = statements.into_iter().map(Into::into).collect();
        self
    }

    /// How long to wait for a session.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// `statement_timeout` for every session (see [`SessionTimeouts`] for
    /// what it means on the embedded backend). Rounded to whole
    /// milliseconds as PostgreSQL does; zero means no limit.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.statement = whole_millis(timeout);
        self
    }

    /// `lock_timeout` for every session.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.lock = whole_millis(timeout);
        self
    }

    /// `idle_in_transaction_session_timeout` for every server session.
    pub fn idle_in_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.idle_in_transaction = whole_millis(timeout);
        self
    }

    /// Statements slower than this are logged at WARN.
    pub fn slow_statement_threshold(mut self, threshold: Duration) -> Self {
        self.slow_statement_threshold = threshold;
        self
    }
}

fn parse_flag(variable: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            variable,
            value: v.to_owned(),
            reason: "expected 1 or 0",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn unset_means_postgres() {
        let c = Config::from_lookup(env(&[])).expect("config");
        assert_eq!(c.backend, BackendKind::Postgres);
        assert_eq!(c.pglite.data_dir, DataDir::Memory);
    }

    #[test]
    fn pglite_with_dir_and_relaxed_durability() {
        let c = Config::from_lookup(env(&[
            ("COCALC_DB", "pglite"),
            ("COCALC_PGLITE_DATA_DIR", "/tmp/x"),
            ("COCALC_PGLITE_RELAXED_DURABILITY", "1"),
        ]))
        .expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
        assert_eq!(c.pglite.data_dir, DataDir::Path("/tmp/x".into()));
        assert!(c.pglite.relaxed_durability);
    }

    #[test]
    fn a_typo_is_an_error_that_lists_accepted_values() {
        let err = Config::from_lookup(env(&[("COCALC_DB", "pglit")])).expect_err("typo");
        let msg = err.to_string();
        assert!(
            msg.contains("\"pglit\"") && msg.contains("postgres, pglite"),
            "{msg}"
        );
    }

    #[test]
    fn bad_port_and_flag_are_errors() {
        assert!(Config::from_lookup(env(&[("PGPORT", "x")])).is_err());
        assert!(
            Config::from_lookup(env(&[("COCALC_PGLITE_RELAXED_DURABILITY", "maybe")])).is_err()
        );
    }

    #[test]
    fn an_explicit_url_wins_over_pg_variables() {
        let c = Config::from_lookup(env(&[
            ("DATABASE_URL", "postgres://u@h/app"),
            ("PGDATABASE", "precious"),
            ("PGHOST", "elsewhere"),
            ("PGPORT", "1"),
        ]))
        .expect("config");
        assert_eq!(c.postgres.url.as_deref(), Some("postgres://u@h/app"));
        assert_eq!(c.postgres.database, None);
        assert_eq!(c.postgres.host, None);
        assert_eq!(c.postgres.port, None);
        let c = Config::from_lookup(env(&[("PGDATABASE", "precious")])).expect("config");
        assert_eq!(c.postgres.database.as_deref(), Some("precious"));
        // A URL set later replaces fields set before.
        let c = c.postgres_url("postgres://u@h/scratch");
        assert_eq!(c.postgres.database, None);
    }

    #[test]
    fn secrets_are_neither_printed_nor_serialized() {
        let c = Config::from_lookup(env(&[("PGPASSWORD", "ENVSECRET")]))
            .expect("config")
            .setup_sql(["SET app.token = 'SETUPSECRET'"]);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("ENVSECRET") && !shown.contains("SETUPSECRET"),
            "{shown}"
        );
        let written = serde_json::to_string(&c).expect("json");
        assert!(!written.contains("ENVSECRET"), "{written}");
    }

    #[test]
    fn a_mistyped_pgsslmode_is_refused() {
        for bad in ["verify_full", "VERIFY-FULL", "requir"] {
            let e = Config::from_lookup(env(&[("PGSSLMODE", bad)])).expect_err(bad);
            assert!(e.to_string().contains("PGSSLMODE"), "{e}");
        }
        for good in [
            "disable",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
            "",
        ] {
            Config::from_lookup(env(&[("PGSSLMODE", good)])).expect(good);
        }
    }

    #[test]
    fn redact_url_hides_every_password() {
        for (url, shown) in [
            ("postgres://u:pw@h/db", "postgres://u:<redacted>@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://u@h/db?password=pw&sslmode=require",
                "postgres://u@h/db?password=<redacted>&sslmode=require",
            ),
            (
                "postgresql://u:a@b@h/db?sslmode=x&PASSWORD=pw",
                "postgresql://u:<redacted>@h/db?sslmode=x&PASSWORD=<redacted>",
            ),
            ("postgres://h/db", "postgres://h/db"),
            // Characters a password should have percent-encoded, and did not.
            (
                "postgres://atuser:p@ssW0rd!x@h:5432/db",
                "postgres://atuser:<redacted>@h:5432/db",
            ),
            ("postgres://u:pa?ss@h/db", "postgres://u:<redacted>@h/db"),
            ("postgres://u:pa/ss@h/db", "postgres://u:<redacted>@h/db"),
            ("postgres://u:pa%40ss@h/db", "postgres://u:<redacted>@h/db"),
            ("postgres://u:p:w@h/db", "postgres://u:<redacted>@h/db"),
            // libpq's keyword/value form.
            (
                "host=h port=5 user=sec password=S3cretPW dbname=s1",
                "host=h port=5 user=sec password=<redacted> dbname=s1",
            ),
            (
                "host=h password = 'a b\\' c' dbname=d",
                "host=h password=<redacted> dbname=d",
            ),
            ("host=h PASSWORD=x", "host=h PASSWORD=<redacted>"),
            // A keyword/value password that looks like a URL is still one.
            (
                "host=127.0.0.1 user=u password=ab://SECRET1",
                "host=127.0.0.1 user=u password=<redacted>",
            ),
            // Every parameter that holds a secret: libpq's key passphrase,
            // and spellings a driver warns about with their value.
            (
                "postgres://u@h/db?sslpassword=K1&passwd=K2&PassWord=K3",
                "postgres://u@h/db?sslpassword=<redacted>&passwd=<redacted>&PassWord=<redacted>",
            ),
            ("host=h sslpassword=K1", "host=h sslpassword=<redacted>"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn timeouts_read_postgres_style_durations() {
        let c = Config::from_lookup(env(&[
            ("COCALC_DB_STATEMENT_TIMEOUT", "300ms"),
            ("COCALC_DB_LOCK_TIMEOUT", "2s"),
            ("COCALC_DB_IDLE_IN_TRANSACTION_TIMEOUT", "1min"),
        ]))
        .expect("config");
        assert_eq!(c.timeouts.statement, Some(Duration::from_millis(300)));
        assert_eq!(c.timeouts.lock, Some(Duration::from_secs(2)));
        assert_eq!(
            c.timeouts.idle_in_transaction,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            c.timeouts.settings()[0],
            ("statement_timeout", "300".to_owned())
        );
        let c = Config::from_lookup(env(&[("COCALC_DB_STATEMENT_TIMEOUT", "1500")])).expect("ms");
        assert_eq!(c.timeouts.statement, Some(Duration::from_millis(1500)));
        let c = Config::from_lookup(env(&[("COCALC_DB_STATEMENT_TIMEOUT", "0")])).expect("off");
        assert_eq!(c.timeouts.statement, None);
        for (value, millis) in [
            ("900us", Some(1)),
            ("1.6", Some(2)),
            ("2.5", Some(2)),
            ("1e3", Some(1000)),
            ("+5s", Some(5000)),
            ("0.4", None),
        ] {
            let c = Config::from_lookup(env(&[("COCALC_DB_LOCK_TIMEOUT", value)])).expect(value);
            assert_eq!(
                c.timeouts.lock,
                millis.map(Duration::from_millis),
                "{value}"
            );
        }
        assert_eq!(
            Config::new()
                .statement_timeout(Duration::ZERO)
                .timeouts
                .statement,
            None
        );
        for bad in ["5 parsecs", "-1s", "s", "1e99", "nan", "inf"] {
            let err = Config::from_lookup(env(&[("COCALC_DB_LOCK_TIMEOUT", bad)]));
            assert!(err.is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_redacts_passwords() {
        let c = Config::new().postgres_url("postgres://u:secret@h/db");
        assert!(!format!("{c:?}").contains("secret"));
    }
}
