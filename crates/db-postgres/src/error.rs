//! Mapping sqlx's errors to [`db_core::Error`], and diagnosing pool timeouts.

use std::time::{Duration, Instant};

use db_core::{DbError, Error, TimeoutPhase};
use sqlx::Connection as _;
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgDatabaseError, PgErrorPosition, PgSeverity,
};

/// The longest a timeout diagnosis waits for its probe connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Maps an error from running a statement.
pub(crate) fn from_sqlx(error: sqlx::Error, context: impl FnOnce() -> String) -> Error {
    match error {
        sqlx::Error::Database(e) => match e.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => Error::from(db_error(pg)),
            None => Error::backend(context(), sqlx::Error::Database(e)),
        },
        // An error of this layer's own, carried through sqlx (session setup).
        sqlx::Error::Configuration(e) if e.is::<Error>() => match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => Error::backend(context(), sqlx::Error::Configuration(e)),
        },
        sqlx::Error::PoolClosed => Error::Closed,
        // Only acquiring a connection times out, and callers that acquire
        // diagnose it with `Target::timed_out`; this is a fallback.
        sqlx::Error::PoolTimedOut => Error::PoolTimedOut {
            phase: TimeoutPhase::Acquire,
            waited: Duration::ZERO,
            holder: None,
            source: None,
        },
        other => Error::backend(context(), other),
    }
}

/// Whether the connection that produced `error` can no longer be trusted and
/// must be closed rather than reused.
pub(crate) fn breaks_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // FATAL and PANIC end the server session (a terminated backend, an
        // idle-in-transaction timeout, a crash).
        sqlx::Error::Database(e) => e
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|e| matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        _ => false,
    }
}

/// Every field of a server error, as [`DbError`].
fn db_error(e: &PgDatabaseError) -> DbError {
    let severity = match e.severity() {
        PgSeverity::Panic => "PANIC",
        PgSeverity::Fatal => "FATAL",
        PgSeverity::Error => "ERROR",
        PgSeverity::Warning => "WARNING",
        PgSeverity::Notice => "NOTICE",
        PgSeverity::Debug => "DEBUG",
        PgSeverity::Info => "INFO",
        PgSeverity::Log => "LOG",
    };
    let (position, internal_position, internal_query) = match e.position() {
        Some(PgErrorPosition::Original(p)) => (Some(p.to_string()), None, None),
        Some(PgErrorPosition::Internal { position, query }) => {
            (None, Some(position.to_string()), Some(query))
        }
        None => (None, None, None),
    };
    let line = e.line().map(|l| l.to_string());
    let optional = [
        (b'D', e.detail()),
        (b'H', e.hint()),
        (b'P', position.as_deref()),
        (b's', e.schema()),
        (b't', e.table()),
        (b'c', e.column()),
        (b'n', e.constraint()),
        (b'd', e.data_type()),
        (b'W', e.r#where()),
        (b'p', internal_position.as_deref()),
        (b'q', internal_query),
        (b'F', e.file()),
        (b'L', line.as_deref()),
        (b'R', e.routine()),
    ];
    let fields = [(b'V', severity), (b'C', e.code()), (b'M', e.message())]
        .into_iter()
        .chain(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    DbError::from_fields(fields)
}

/// The server a pool connects to, for error messages and timeout diagnosis.
#[derive(Clone)]
pub(crate) struct Target {
    options: PgConnectOptions,
    description: String,
}

impl Target {
    pub(crate) fn new(options: PgConnectOptions) -> Self {
        let description = describe(&options);
        Target {
            options,
            description,
        }
    }

    /// The server as `postgres://user@host:port/database`, never with a password.
    pub(crate) fn description(&self) -> &str {
        &self.description
    }

    /// Maps an error from opening a connection: server errors keep their
    /// SQLSTATE, everything else says where it was connecting to.
    pub(crate) fn connect_error(&self, error: sqlx::Error) -> Error {
        from_sqlx(error, || {
            format!("connecting to postgres at {}", self.description)
        })
    }

    /// Opens one connection outside any pool, within `timeout`.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<PgConnection, Error> {
        let started = Instant::now();
        match tokio::time::timeout(timeout, PgConnection::connect_with(&self.options)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.connect_error(e)),
            Err(_) => Err(Error::PoolTimedOut {
                phase: TimeoutPhase::Connect,
                waited: started.elapsed(),
                holder: None,
                source: Some(
                    format!(
                        "no connection to postgres at {} within {timeout:?}",
                        self.description
                    )
                    .into(),
                ),
            }),
        }
    }

    /// Explains a sqlx `PoolTimedOut` after `waited`.
    ///
    /// sqlx retries a refused connection silently until the acquire timeout,
    /// so when the pool was (or may have been) opening a connection this
    /// probes the server once and, if that fails, reports a timeout in the
    /// connect phase carrying the real cause.
    pub(crate) async fn timed_out(&self, waited: Duration, was_connecting: bool) -> Error {
        if was_connecting {
            match self.connect(PROBE_TIMEOUT).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                }
                Err(cause) => {
                    return Error::PoolTimedOut {
                        phase: TimeoutPhase::Connect,
                        waited,
                        holder: None,
                        source: Some(Box::new(cause)),
                    };
                }
            }
        }
        Error::PoolTimedOut {
            phase: TimeoutPhase::Acquire,
            waited,
            holder: None,
            source: None,
        }
    }
}

fn describe(o: &PgConnectOptions) -> String {
    let host = match o.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => o.get_host().to_owned(),
    };
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        host,
        o.get_port(),
        o.get_database().unwrap_or_default()
    )
}
