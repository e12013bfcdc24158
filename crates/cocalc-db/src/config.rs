//! Building the database [`Config`] from command-line flags and the
//! environment.
//!
//! Precedence, highest first:
//!
//! 1. flags (`--db`, `--data-dir`, `--database-url`);
//! 2. the environment, read only through [`Config::from_env`] (`COCALC_DB`,
//!    `COCALC_PGLITE_DATA_DIR`, `COCALC_PGLITE_RELAXED_DURABILITY`,
//!    `DATABASE_URL`, `PG*`);
//! 3. this binary's own defaults, those of the packaged single-binary
//!    edition: the embedded backend, with its data in `~/.cocalc/pglite`.
//!
//! The library's defaults (Postgres, a `memory://` cluster) are left alone:
//! the binary applies its defaults only where the environment is silent. To
//! know that, [`EnvFacts::from_process`] checks whether `COCALC_DB` and
//! `COCALC_PGLITE_DATA_DIR` are *present* and reads `HOME`; their values are
//! still taken from [`Config::from_env`], the single reader of configuration.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use db::{BackendKind, Config, ConfigError, DataDir};

/// The backends `--db` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DbChoice {
    /// A PostgreSQL server.
    Postgres,
    /// The embedded backend (PGlite).
    Pglite,
}

impl From<DbChoice> for BackendKind {
    fn from(choice: DbChoice) -> Self {
        match choice {
            DbChoice::Postgres => BackendKind::Postgres,
            DbChoice::Pglite => BackendKind::Pglite,
        }
    }
}

/// The flags that choose and locate the database, shared by every command.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct DbArgs {
    /// Backend to use [default: $COCALC_DB, else pglite]
    #[arg(long, value_enum, global = true, value_name = "BACKEND")]
    pub(crate) db: Option<DbChoice>,

    /// Embedded data directory, or memory:// for a temporary cluster; implies
    /// --db pglite [default: $COCALC_PGLITE_DATA_DIR, else ~/.cocalc/pglite]
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "database_url"
    )]
    pub(crate) data_dir: Option<PathBuf>,

    /// PostgreSQL server URL; implies --db postgres [default: $DATABASE_URL
    /// and PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) database_url: Option<String>,

    /// Give up opening a PostgreSQL connection after this many seconds
    /// (0: wait as long as the acquire timeout) [default: the URL's
    /// connect_timeout, else $PGCONNECT_TIMEOUT, else 10 for check and 30
    /// for the rest]
    #[arg(long, global = true, value_name = "SECONDS")]
    pub(crate) connect_timeout: Option<u64>,
}

/// What the binary needs to know about the environment beyond
/// [`Config::from_env`]'s result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvFacts {
    /// `COCALC_DB` is set (and not blank).
    pub(crate) backend_set: bool,
    /// `COCALC_PGLITE_DATA_DIR` is set (and not blank).
    pub(crate) data_dir_set: bool,
    /// `DATABASE_URL` is set (and not blank): a server is meant.
    pub(crate) url_set: bool,
    /// The home directory, for the default data directory.
    pub(crate) home: Option<PathBuf>,
}

impl EnvFacts {
    /// Reads the facts from the process environment.
    ///
    /// Presence checks only: the values of these variables are read by
    /// [`Config::from_env`]. A blank value counts as unset, as it does there
    /// for `COCALC_PGLITE_DATA_DIR`.
    pub(crate) fn from_process() -> Self {
        let present = |name: &str| {
            std::env::var_os(name).is_some_and(|v| !v.to_string_lossy().trim().is_empty())
        };
        EnvFacts {
            backend_set: present("COCALC_DB"),
            data_dir_set: present("COCALC_PGLITE_DATA_DIR"),
            url_set: present("DATABASE_URL"),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// The configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// The environment holds an invalid value (for example a typo in
    /// `COCALC_DB`).
    Config(ConfigError),
    /// The default data directory is needed but `HOME` is not set.
    NoHome,
    /// Two flags name different databases.
    Conflict(&'static str),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Config(e) => e.fmt(f),
            ResolveError::NoHome => f.write_str(
                "HOME is not set, so the default data directory ~/.cocalc/pglite is unknown; \
                 pass --data-dir or set COCALC_PGLITE_DATA_DIR",
            ),
            ResolveError::Conflict(flags) => write!(f, "{flags} name different databases"),
        }
    }
}

impl std::error::Error for ResolveError {}

impl From<ConfigError> for ResolveError {
    fn from(e: ConfigError) -> Self {
        ResolveError::Config(e)
    }
}

/// Builds the configuration from the process environment and `args`.
pub(crate) fn from_process(args: &DbArgs) -> Result<Config, ResolveError> {
    resolve(args, Config::from_env(), &EnvFacts::from_process())
}

/// Applies the binary's defaults and then the flags to `env` (the result of
/// [`Config::from_env`] or [`Config::from_lookup`]).
///
/// An invalid environment is an error even when a flag would override the
/// variable: a typo in `COCALC_DB` is never silently ignored.
pub(crate) fn resolve(
    args: &DbArgs,
    env: Result<Config, ConfigError>,
    facts: &EnvFacts,
) -> Result<Config, ResolveError> {
    let mut config = env?;
    // A flag naming one backend beside a flag of the other is a mistake to
    // report, not a choice to make silently.
    match (args.db, &args.database_url, &args.data_dir) {
        (Some(DbChoice::Pglite), Some(_), _) => {
            return Err(ResolveError::Conflict("--db pglite and --database-url"));
        }
        (Some(DbChoice::Postgres), _, Some(_)) => {
            return Err(ResolveError::Conflict("--db postgres and --data-dir"));
        }
        _ => {}
    }
    if !facts.backend_set {
        // A DATABASE_URL says which server is meant: it selects PostgreSQL
        // unless COCALC_DB or a flag says otherwise.
        config.backend = if facts.url_set {
            BackendKind::Postgres
        } else {
            BackendKind::Pglite
        };
    }
    if let Some(url) = &args.database_url {
        // The flag's URL wins over PGHOST & co. PGPASSWORD still supplies a
        // password the URL lacks.
        config.backend = BackendKind::Postgres;
        let pg = &mut config.postgres;
        pg.host = None;
        pg.port = None;
        pg.user = None;
        pg.database = None;
        if db::redact_url(url) != *url {
            pg.password = None;
        }
        pg.url = Some(url.clone());
    }
    if let Some(dir) = &args.data_dir {
        config.backend = BackendKind::Pglite;
        config.pglite.data_dir = parse_data_dir(dir);
    }
    if let Some(db) = args.db {
        config.backend = db.into();
    }
    if let Some(seconds) = args.connect_timeout {
        config.postgres.connect_timeout =
            db::connect_timeout_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
        // The flag wins over the URL's own `connect_timeout` too.
        if let Some(url) = &mut config.postgres.url {
            *url = db::split_connect_timeout(url).0;
        }
    }
    if config.backend == BackendKind::Pglite && args.data_dir.is_none() && !facts.data_dir_set {
        let home = facts.home.as_deref().ok_or(ResolveError::NoHome)?;
        config.pglite.data_dir = DataDir::Path(DataDir::default_under(home));
    }
    Ok(config)
}

/// `memory://` or a directory.
fn parse_data_dir(dir: &Path) -> DataDir {
    match dir.to_str() {
        Some(s) => DataDir::parse(s),
        None => DataDir::Path(dir.to_path_buf()),
    }
}

/// Where the data is, with any password redacted.
pub(crate) fn location(config: &Config) -> (&'static str, String) {
    if config.backend == BackendKind::Pglite {
        let dir = match &config.pglite.data_dir {
            DataDir::Memory => "memory:// (temporary)".to_owned(),
            dir => dir.to_string(),
        };
        return ("data directory", dir);
    }
    let pg = &config.postgres;
    if let Some(url) = &pg.url {
        return ("server", db::redact_url(url));
    }
    let parts: Vec<String> = [
        ("host", pg.host.clone()),
        ("port", pg.port.map(|p| p.to_string())),
        ("user", pg.user.clone()),
        ("dbname", pg.database.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
    .collect();
    if parts.is_empty() {
        ("server", "libpq defaults".to_owned())
    } else {
        ("server", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> (Result<Config, ConfigError>, EnvFacts) {
        let lookup = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        let present = |k: &str| lookup(k).is_some_and(|v| !v.trim().is_empty());
        let facts = EnvFacts {
            backend_set: present("COCALC_DB"),
            data_dir_set: present("COCALC_PGLITE_DATA_DIR"),
            url_set: present("DATABASE_URL"),
            home: Some(PathBuf::from("/home/ada")),
        };
        (Config::from_lookup(lookup), facts)
    }

    fn resolve_with(args: &DbArgs, vars: &[(&str, &str)]) -> Result<Config, ResolveError> {
        let (config, facts) = env(vars);
        resolve(args, config, &facts)
    }

    fn home_dir() -> DataDir {
        DataDir::Path(PathBuf::from("/home/ada/.cocalc/pglite"))
    }

    #[test]
    fn flags_naming_two_databases_are_refused() {
        let url = "postgres://u@db.example/hub";
        for args in [
            DbArgs {
                db: Some(DbChoice::Pglite),
                database_url: Some(url.into()),
                ..DbArgs::default()
            },
            DbArgs {
                db: Some(DbChoice::Postgres),
                data_dir: Some(PathBuf::from("/tmp/x")),
                ..DbArgs::default()
            },
        ] {
            let e = resolve_with(&args, &[]).expect_err("conflicting flags");
            assert!(e.to_string().contains("name different databases"), "{e}");
        }
    }

    #[test]
    fn the_connect_timeout_flag_beats_the_urls() {
        let args = DbArgs {
            database_url: Some("postgres://u@h/db?connect_timeout=5&sslmode=disable".into()),
            connect_timeout: Some(2),
            ..DbArgs::default()
        };
        let c = resolve_with(&args, &[]).expect("config");
        assert_eq!(
            c.postgres.url.as_deref(),
            Some("postgres://u@h/db?sslmode=disable")
        );
        assert_eq!(
            c.postgres.connect_timeout,
            Some(std::time::Duration::from_secs(2))
        );
    }

    #[test]
    fn a_database_url_alone_selects_postgres() {
        let url = "postgres://u@db.example/hub";
        let c = resolve_with(&DbArgs::default(), &[("DATABASE_URL", url)]).expect("config");
        assert_eq!(c.backend, BackendKind::Postgres);
        assert_eq!(c.postgres.url.as_deref(), Some(url));
        // COCALC_DB and the flags still decide.
        let c = resolve_with(
            &DbArgs::default(),
            &[("DATABASE_URL", url), ("COCALC_DB", "pglite")],
        )
        .expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
        let args = DbArgs {
            data_dir: Some(PathBuf::from("/tmp/x")),
            ..DbArgs::default()
        };
        let c = resolve_with(&args, &[("DATABASE_URL", url)]).expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
    }

    #[test]
    fn nothing_set_means_embedded_in_home() {
        let c = resolve_with(&DbArgs::default(), &[]).expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
        assert_eq!(c.pglite.data_dir, home_dir());
        assert!(!c.pglite.relaxed_durability);
    }

    #[test]
    fn environment_beats_binary_defaults() {
        let c = resolve_with(&DbArgs::default(), &[("COCALC_DB", "postgres")]).expect("config");
        assert_eq!(c.backend, BackendKind::Postgres);

        let c = resolve_with(
            &DbArgs::default(),
            &[
                ("COCALC_PGLITE_DATA_DIR", "memory://"),
                ("COCALC_PGLITE_RELAXED_DURABILITY", "1"),
            ],
        )
        .expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
        assert_eq!(c.pglite.data_dir, DataDir::Memory);
        assert!(c.pglite.relaxed_durability);
    }

    #[test]
    fn blank_variables_count_as_unset() {
        let c = resolve_with(
            &DbArgs::default(),
            &[("COCALC_DB", " "), ("COCALC_PGLITE_DATA_DIR", "")],
        )
        .expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
        assert_eq!(c.pglite.data_dir, home_dir());
    }

    #[test]
    fn flags_beat_environment() {
        let args = DbArgs {
            db: Some(DbChoice::Pglite),
            data_dir: Some("/srv/db".into()),
            database_url: None,
            connect_timeout: None,
        };
        let c = resolve_with(
            &args,
            &[("COCALC_DB", "postgres"), ("COCALC_PGLITE_DATA_DIR", "/x")],
        )
        .expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
        assert_eq!(c.pglite.data_dir, DataDir::Path("/srv/db".into()));

        let args = DbArgs {
            db: Some(DbChoice::Postgres),
            ..DbArgs::default()
        };
        let c = resolve_with(&args, &[("COCALC_DB", "pglite")]).expect("config");
        assert_eq!(c.backend, BackendKind::Postgres);
    }

    #[test]
    fn data_dir_flag_implies_pglite() {
        let args = DbArgs {
            data_dir: Some("memory://".into()),
            ..DbArgs::default()
        };
        let c = resolve_with(&args, &[("COCALC_DB", "postgres")]).expect("config");
        assert_eq!(c.backend, BackendKind::Pglite);
        assert_eq!(c.pglite.data_dir, DataDir::Memory);
    }

    #[test]
    fn database_url_implies_postgres_and_beats_pg_variables() {
        let args = DbArgs {
            database_url: Some("postgres://u:pw@db.example/hub".into()),
            ..DbArgs::default()
        };
        let c = resolve_with(
            &args,
            &[
                ("COCALC_DB", "pglite"),
                ("DATABASE_URL", "postgres://other/x"),
                ("PGHOST", "elsewhere"),
                ("PGPORT", "6432"),
                ("PGPASSWORD", "envpw"),
            ],
        )
        .expect("config");
        assert_eq!(c.backend, BackendKind::Postgres);
        assert_eq!(
            c.postgres.url.as_deref(),
            Some("postgres://u:pw@db.example/hub")
        );
        assert_eq!((c.postgres.host, c.postgres.port), (None, None));
        assert_eq!(c.postgres.password, None);
    }

    #[test]
    fn pgpassword_fills_in_for_a_url_without_one() {
        let args = DbArgs {
            database_url: Some("postgres://u@db.example/hub".into()),
            ..DbArgs::default()
        };
        let c = resolve_with(&args, &[("PGPASSWORD", "envpw")]).expect("config");
        assert_eq!(c.postgres.password.as_deref(), Some("envpw"));
    }

    #[test]
    fn postgres_from_environment_keeps_its_settings() {
        let c = resolve_with(
            &DbArgs::default(),
            &[
                ("COCALC_DB", "postgres"),
                ("DATABASE_URL", "postgres://h/db"),
            ],
        )
        .expect("config");
        assert_eq!(c.backend, BackendKind::Postgres);
        assert_eq!(c.postgres.url.as_deref(), Some("postgres://h/db"));
        // The library default is untouched when the embedded backend is unused.
        assert_eq!(c.pglite.data_dir, DataDir::Memory);
    }

    #[test]
    fn a_typo_in_cocalc_db_is_an_error_even_with_a_flag() {
        for args in [
            DbArgs::default(),
            DbArgs {
                db: Some(DbChoice::Pglite),
                ..DbArgs::default()
            },
        ] {
            let err = resolve_with(&args, &[("COCALC_DB", "pglit")]).expect_err("typo");
            let msg = err.to_string();
            assert!(msg.contains("postgres, pglite"), "{msg}");
        }
    }

    #[test]
    fn missing_home_is_an_error_only_when_needed() {
        let facts = EnvFacts::default();
        let err = resolve(&DbArgs::default(), Ok(Config::new()), &facts).expect_err("no home");
        assert_eq!(err, ResolveError::NoHome);
        assert!(err.to_string().contains("--data-dir"));

        let args = DbArgs {
            data_dir: Some("/srv/db".into()),
            ..DbArgs::default()
        };
        assert!(resolve(&args, Ok(Config::new()), &facts).is_ok());
        let args = DbArgs {
            db: Some(DbChoice::Postgres),
            ..DbArgs::default()
        };
        assert!(resolve(&args, Ok(Config::new()), &facts).is_ok());
    }
}
