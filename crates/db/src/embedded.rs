//! The embedded backend's data directory seen from outside the pool: its
//! boot-time checks, its record, and the guardrail that warns a server on
//! PostgreSQL about embedded data that was never exported.

#[cfg(feature = "postgres")]
use std::collections::HashSet;
use std::path::PathBuf;
#[cfg(feature = "postgres")]
use std::sync::{Mutex, PoisonError};

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

/// Logs [`unexported_data_warning`] the first time a process connects to
/// PostgreSQL with this embedded directory configured: a hub opens many
/// pools (and test suites many more), and one warning says it all.
#[cfg(feature = "postgres")]
pub(crate) fn warn_once(config: &Config) {
    static WARNED: Mutex<Option<HashSet<Option<PathBuf>>>> = Mutex::new(None);
    let first = WARNED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .insert(embedded_data_dir(config));
    if first && let Some(warning) = unexported_data_warning(config) {
        tracing::warn!("{warning}");
    }
}
