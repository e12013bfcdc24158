//! `cocalc-db check`: the boot-time health check.
//!
//! Steps, each timed: resolve the configuration; for the embedded backend,
//! make sure the runtime cache can be written and, for a persistent cluster,
//! that its directory is writable and of a compatible version; open the
//! database (which also detects a directory locked by another process); run
//! `SELECT 1` and read `server_version`; close.
//!
//! On PostgreSQL the report also warns about embedded data that was never
//! exported; the warning does not fail the check.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use db::embedded::{health, unexported_data_warning};
use db::{AnyPool, BackendKind, DataDir, Pool};

use crate::config::{self, DbArgs};
use crate::output;

/// One finished step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// Its name, as used in failure messages.
    pub(crate) name: &'static str,
    /// How long it took.
    pub(crate) elapsed: Duration,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// The backend.
    pub(crate) backend: BackendKind,
    /// The server's `server_version`.
    pub(crate) server_version: String,
    /// Where the data is: `("data directory", path)` or
    /// `("server", redacted URL)`.
    pub(crate) location: (&'static str, String),
    /// `durable` or `relaxed`, for the embedded backend.
    pub(crate) durability: Option<&'static str>,
    /// Embedded data that needs exporting, on PostgreSQL; a data directory
    /// others may read, on the embedded backend.
    pub(crate) warning: Option<String>,
    /// The steps, in order.
    pub(crate) steps: Vec<Step>,
}

/// A failed step and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    step: &'static str,
    cause: String,
}

/// Times the steps as they finish.
struct Steps(Vec<Step>);

impl Steps {
    /// Runs `f` as step `name`; records its time on success.
    async fn run<T, E, F>(&mut self, name: &'static str, f: F) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let start = Instant::now();
        let result = f.await;
        let elapsed = start.elapsed();
        match result {
            Ok(v) => {
                tracing::debug!(
                    step = name,
                    elapsed_ms = elapsed.as_secs_f64() * 1e3,
                    "check step done"
                );
                self.0.push(Step { name, elapsed });
                Ok(v)
            }
            Err(e) => Err(Failure {
                step: name,
                cause: output::error_chain(&e),
            }),
        }
    }
}

/// How long `check` waits to open a connection unless told.
const CHECK_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the check and prints its report, or one failure line.
pub(crate) async fn run(args: &DbArgs) -> ExitCode {
    match check(args).await {
        Ok(report) => output::print("check", &render(&report)),
        Err(f) => output::fail("check", &format!("{}: {}", f.step, f.cause)),
    }
}

/// The steps of the check.
async fn check(args: &DbArgs) -> Result<Report, Failure> {
    let mut steps = Steps(Vec::new());
    let mut config = steps
        .run("configuration", async { config::from_process(args) })
        .await?;
    // A boot-time check should not hang for the 30 s of a pool's acquire
    // timeout on a server that accepts connections and never answers.
    if config.postgres.connect_timeout.is_none() && args.connect_timeout.is_none() {
        config.postgres.connect_timeout = Some(CHECK_CONNECT_TIMEOUT);
    }
    let created = match &config.pglite.data_dir {
        DataDir::Path(dir) if config.backend == BackendKind::Pglite && !dir.exists() => {
            Some(dir.clone())
        }
        _ => None,
    };
    if config.backend == BackendKind::Pglite {
        steps
            .run("runtime cache", async { health::check_runtime_cache() })
            .await?;
        if let DataDir::Path(dir) = &config.pglite.data_dir {
            steps
                .run("data directory", async { health::check_data_dir(dir) })
                .await?;
        }
    }
    let warning = match (&config.backend, &config.pglite.data_dir) {
        (BackendKind::Postgres, _) => unexported_data_warning(&config),
        (BackendKind::Pglite, DataDir::Path(dir)) => health::permission_warning(dir),
        _ => None,
    };
    let pool = steps.run("open", AnyPool::connect(&config)).await;
    // A data directory that only this check's probe created goes with a
    // failed open, like everything the open made.
    if pool.is_err()
        && let Some(dir) = &created
    {
        let _ = std::fs::remove_dir(dir);
    }
    let pool = pool?;
    let version = steps.run("query", query(&pool)).await;
    // Close even when the query failed, so the embedded cluster shuts down
    // cleanly and its lock is released.
    let start = Instant::now();
    pool.close().await;
    let server_version = version?;
    steps.0.push(Step {
        name: "close",
        elapsed: start.elapsed(),
    });
    Ok(Report {
        backend: config.backend,
        server_version,
        location: config::location(&config),
        durability: (config.backend == BackendKind::Pglite).then_some(
            if config.pglite.relaxed_durability {
                "relaxed"
            } else {
                "durable"
            },
        ),
        warning,
        steps: steps.0,
    })
}

/// `SELECT 1`, checked, then `server_version`.
async fn query(pool: &AnyPool) -> db::Result<String> {
    let one: i32 = pool.query_one("SELECT 1", &[]).await?.try_get(0)?;
    if one != 1 {
        return Err(db::Error::Protocol(format!("SELECT 1 returned {one}")));
    }
    pool.server_version().await
}

/// The report as text.
pub(crate) fn render(report: &Report) -> String {
    let mut fields = vec![
        ("backend", report.backend.to_string()),
        ("server version", report.server_version.clone()),
        (report.location.0, report.location.1.clone()),
    ];
    if let Some(d) = report.durability {
        fields.push(("durability", d.to_owned()));
    }
    if let Some(w) = &report.warning {
        fields.push(("warning", w.clone()));
    }
    let mut out = String::new();
    for (label, value) in fields {
        out.push_str(&format!("{:<16}{value}\n", format!("{label}:")));
    }
    out.push_str("steps:\n");
    let total: Duration = report.steps.iter().map(|s| s.elapsed).sum();
    for step in &report.steps {
        out.push_str(&format!("  {:<16}{:>9}\n", step.name, ms(step.elapsed)));
    }
    out.push_str(&format!("  {:<16}{:>9}\n", "total", ms(total)));
    out.push_str("ok\n");
    out
}

/// `12.3 ms`.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use db::Config;

    use super::*;

    #[test]
    fn report_layout() {
        let report = Report {
            backend: BackendKind::Pglite,
            server_version: "17.5".into(),
            location: ("data directory", "/home/ada/.cocalc/pglite".into()),
            durability: Some("durable"),
            warning: None,
            steps: vec![
                Step {
                    name: "configuration",
                    elapsed: Duration::from_micros(300),
                },
                Step {
                    name: "open",
                    elapsed: Duration::from_millis(512),
                },
            ],
        };
        assert_eq!(
            render(&report),
            "backend:        pglite\n\
             server version: 17.5\n\
             data directory: /home/ada/.cocalc/pglite\n\
             durability:     durable\n\
             steps:\n  \
               configuration      0.3 ms\n  \
               open             512.0 ms\n  \
               total            512.3 ms\n\
             ok\n"
        );
    }

    #[test]
    fn a_warning_is_a_line_of_a_passing_report() {
        let report = Report {
            backend: BackendKind::Postgres,
            server_version: "15.8".into(),
            location: ("server", "postgres://hub@db.example/hub".into()),
            durability: None,
            warning: Some("the embedded data directory /x holds data".into()),
            steps: Vec::new(),
        };
        let text = render(&report);
        assert!(
            text.contains("\nwarning:        the embedded data directory /x holds data\n"),
            "{text}"
        );
        assert!(text.ends_with("ok\n"), "{text}");
    }

    #[test]
    fn postgres_location_is_redacted() {
        let config = Config::new().postgres_url("postgres://hub:secret@db.example:5432/hub");
        assert_eq!(
            config::location(&config),
            (
                "server",
                "postgres://hub:<redacted>@db.example:5432/hub".into()
            )
        );
        assert_eq!(
            config::location(&Config::new()),
            ("server", "libpq defaults".into())
        );
    }
}
