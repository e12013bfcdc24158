//! The embedded backend's data directory seen from outside the pool: its
//! boot-time checks, its record, and the guardrail that warns a server on
//! PostgreSQL about embedded data that was never exported.

use std::path::PathBuf;

use db_core::{Config, DataDir};
pub use db_pglite::{health, metadata};

/// The embedded data directory a server on PostgreSQL looks at for data
/// left behind: the configured one, else the default `~/.cocalc/pglite`.
pub fn embedded_data_dir(config: &Config) -> Option<PathBuf> {
    match &config.pglite.data_dir {
        DataDir::Path(p) => Some(p.clone()),
        _ => DataDir::default_in_home(),
    }
}

/// A one-line warning when [`embedded_data_dir`] holds data that was not
/// exported (or whose record cannot be read), naming the directory and the
/// commands that export or migrate it. Reads only the directory's record:
/// the embedded database is not opened.
///
/// ```no_run
/// let config = db::Config::new().postgres_url("postgres://hub@db.example/hub");
/// if let Some(warning) = db::embedded::unexported_data_warning(&config) {
///     eprintln!("{warning}");
/// }
/// ```
pub fn unexported_data_warning(config: &Config) -> Option<String> {
    let dir = embedded_data_dir(config)?;
    match metadata::status(&dir) {
        Ok(status) => status.warning(&dir),
        Err(e) => Some(format!(
            "cannot tell whether the embedded data directory {} holds data that was not \
             exported ({e}); check it with `cocalc-db --data-dir {} check`",
            dir.display(),
            dir.display()
        )),
    }
}
