//! The driver thread: the one owner of the `Pglite` instance.
//!
//! `Pglite` is a single PostgreSQL backend that takes `&mut self` for every
//! call, so it lives on a thread of its own and serves requests in arrival
//! order. The lease queue in `pool.rs` guarantees that only the session
//! holding the backend sends statements; the inbox (`handoff.rs`) therefore
//! never holds more than that session's request, an abort or release behind
//! it, and a close.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use db_core::backend::ListenerHub;
use db_core::{Array, Column, DataDir, DbError, Error, PgliteConfig, Result, Type, Value};
use pglite_oxide::{ExecProtocolOptions, Pglite};
use tokio::sync::{OwnedSemaphorePermit, oneshot, watch};

use crate::handoff::{self, Inbox, Outbox, ReplySender};

use crate::data_dir::DirLock;
use crate::metadata;
use crate::wire::{self, EncodedParams, Messages};

/// PostgreSQL's `FirstNormalObjectId`: OIDs from here on are user-defined
/// (types made by `CREATE TYPE` or an extension), whose binary form the
/// codec does not know by OID alone.
const FIRST_USER_OID: u32 = 16_384;

/// The portal the column-type lookup runs in while a row stream's (the
/// unnamed one) is open.
const LOOKUP_PORTAL: &str = "db_type_lookup";

/// Prepared statements kept per backend before the oldest is closed.
const STATEMENT_CACHE_CAPACITY: usize = 512;

/// A request to the driver thread.
pub(crate) enum Request {
    /// One statement through the extended protocol.
    Run {
        sql: String,
        params: EncodedParams,
        reply: ReplySender<Result<Response>>,
    },
    /// The first batch of a row stream: one statement through the extended
    /// protocol, executed for at most `max_rows` rows. While rows are left
    /// its portal stays open for [`Request::FetchMore`]; any other request
    /// closes it first.
    Fetch {
        sql: String,
        params: EncodedParams,
        max_rows: u32,
        reply: ReplySender<Result<Response>>,
    },
    /// The next batch of the open row stream.
    FetchMore {
        max_rows: u32,
        reply: ReplySender<Result<Response>>,
    },
    /// A script through the simple protocol.
    Simple {
        sql: String,
        reply: ReplySender<Result<Response>>,
    },
    /// A `COPY` exchange: the statement with all its frontend copy messages,
    /// built by `wire::copy_in` or `wire::copy_out`.
    Copy {
        message: Vec<u8>,
        reply: ReplySender<Result<Response>>,
    },
    /// A session gave the backend back: roll back whatever it left open,
    /// and with `reset`, return the session to its configured settings;
    /// then let the next session have the lease.
    Release {
        reset: bool,
        permit: OwnedSemaphorePermit,
    },
    /// The transaction status byte of the last `ReadyForQuery`.
    Status { reply: ReplySender<u8> },
    /// After a statement its caller stopped waiting for: abort the
    /// transaction it left open, as a server's `statement_timeout` would.
    AbortTransaction {
        reply: ReplySender<Result<Response>>,
    },
    /// `pg_dump` (the bundled PostgreSQL 17 build) of the database as SQL
    /// text, with these extra arguments.
    Dump {
        args: Vec<String>,
        reply: ReplySender<Result<String>>,
    },
    /// A physical archive (gzipped tar) of the data directory.
    Archive { reply: ReplySender<Result<Vec<u8>>> },
    /// Shut the backend down.
    Close { reply: ReplySender<Result<()>> },
}

/// The raw response, the columns it is described by, and the transaction
/// status the backend reported after it.
pub(crate) struct Response {
    pub(crate) data: Vec<u8>,
    pub(crate) columns: Option<Arc<[Column]>>,
    pub(crate) status: u8,
    /// A row stream's batch with rows left: the statement is still running
    /// and `status` is the one from before it.
    pub(crate) suspended: bool,
}

struct Statement {
    name: String,
    oids: Vec<u32>,
    columns: Arc<[Column]>,
}

struct Driver {
    /// `None` after a crash until the backend is reopened.
    pglite: Option<Pglite>,
    /// What the backend was opened with, to reopen it after a crash.
    config: PgliteConfig,
    /// The files of an in-memory database: a private temporary directory
    /// owned here rather than by pglite-oxide, so that a crashed backend
    /// can be reopened on them.
    memory_dir: Option<tempfile::TempDir>,
    /// What every session starts with.
    setup: SessionSetup,
    hub: Arc<ListenerHub>,
    /// The persistent data directory, whose record the driver keeps.
    data_dir: Option<PathBuf>,
    statements: HashMap<String, Vec<Statement>>,
    /// What user-defined column types are decoded as, by OID, once looked
    /// up (the OID itself when they stay opaque).
    wire_types: HashMap<u32, Type>,
    order: VecDeque<(String, String)>,
    next_statement: u64,
    /// The transaction status of the last `ReadyForQuery`: `I`, `T` or `E`.
    status: u8,
    /// A row stream's portal is suspended with rows left, its exchange not
    /// yet ended by a `Sync`.
    portal: bool,
}

/// Opens the backend on a new thread and returns the request sender once it
/// is ready, and a signal that ends (its sender is dropped) once the thread
/// is through with the data directory: PGlite closed, `dir_lock` released.
pub(crate) async fn spawn(
    config: &PgliteConfig,
    setup: SessionSetup,
    hub: Arc<ListenerHub>,
    dir_lock: Option<DirLock>,
) -> Result<(Outbox<Request>, watch::Receiver<()>)> {
    let (tx, rx) = handoff::inbox::<Request>();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
    let (done_tx, done_rx) = watch::channel(());
    let config = config.clone();
    thread::Builder::new()
        .name("pglite-driver".into())
        // The WebAssembly runtime recurses deeply on some statements.
        .stack_size(32 * 1024 * 1024)
        .spawn(move || {
            // Released only when this thread is done with the files, so the
            // directory cannot be opened again while PGlite still closes.
            let held = (dir_lock, done_tx);
            match start(&config, setup, hub) {
                Err(e) => {
                    drop(held);
                    let _ = ready_tx.send(Err(e));
                }
                Ok(mut driver) => {
                    let _ = ready_tx.send(Ok(()));
                    driver.serve(rx);
                    drop(driver);
                    drop(held);
                }
            }
        })
        .map_err(|e| Error::backend("starting the PGlite driver thread", e))?;
    ready_rx
        .await
        .map_err(|_| Error::Protocol("the PGlite driver thread exited while opening".into()))??;
    Ok((tx, done_rx))
}

/// Opens PGlite and the directory's record, on the driver thread.
fn start(config: &PgliteConfig, setup: SessionSetup, hub: Arc<ListenerHub>) -> Result<Driver> {
    let data_dir = match &config.data_dir {
        DataDir::Path(p) => Some(p.clone()),
        _ => None,
    };
    let fresh = data_dir
        .as_deref()
        .is_some_and(|d| !metadata::has_cluster(d));
    let memory_dir = match &config.data_dir {
        DataDir::Path(_) => None,
        _ => Some(
            crate::memory_dir::create()
                .map_err(|e| Error::backend("creating the in-memory database's directory", e))?,
        ),
    };
    let pglite = open(config, memory_dir.as_ref())?;
    let mut driver = Driver {
        pglite: Some(pglite),
        config: config.clone(),
        memory_dir,
        setup,
        hub,
        data_dir,
        statements: HashMap::new(),
        wire_types: HashMap::new(),
        order: VecDeque::new(),
        next_statement: 0,
        status: b'I',
        portal: false,
    };
    if let Err(e) = driver
        .initialize_session()
        .and_then(|()| driver.record_open(fresh))
    {
        let _ = driver.close();
        return Err(e);
    }
    Ok(driver)
}

/// What every logical session starts with (and returns to on a reset).
pub(crate) struct SessionSetup {
    /// The settings, as SQL of this layer's own: UTC (the server backend's
    /// session default too, so `timestamp` values and `now()` agree), the
    /// application name (a literal: standard strings, quotes doubled) and
    /// the configured time limits that make sense on one shared backend
    /// session (not `idle_in_transaction_session_timeout`: it would end the
    /// session every caller shares).
    settings: String,
    /// [`db_core::Config::setup_sql`]: the caller's statements, each run
    /// alone through the extended protocol.
    statements: Vec<String>,
}

impl SessionSetup {
    pub(crate) fn new(config: &db_core::Config) -> SessionSetup {
        let name = config.effective_application_name().replace('\'', "''");
        let mut settings = format!("SET TimeZone = 'UTC'; SET application_name = '{name}'");
        for (name, millis) in config.timeouts.settings() {
            if name != "idle_in_transaction_session_timeout" {
                settings.push_str(&format!("; SET {name} = {millis}"));
            }
        }
        SessionSetup {
            settings,
            statements: config.setup_sql.clone(),
        }
    }
}

fn open(config: &PgliteConfig, memory_dir: Option<&tempfile::TempDir>) -> Result<Pglite> {
    let _span = tracing::info_span!("db.pglite.open", data_dir = %config.data_dir).entered();
    let builder = Pglite::builder().relaxed_durability(config.relaxed_durability);
    let builder = match (&config.data_dir, memory_dir) {
        (DataDir::Path(p), _) => {
            // pglite-oxide runs PostgreSQL with fsync off (with it on, the
            // WebAssembly runtime refuses PostgreSQL's fsync of directories
            // and every checkpoint fails), so a commit would reach the OS but
            // not the disk. The host file system syncs every WAL write of a
            // durable directory instead, and the data files at close.
            pglite_oxide::set_durable_wal(p, !config.relaxed_durability);
            builder.path(p.clone())
        }
        (_, Some(dir)) => builder.path(dir.path()),
        (_, None) => builder.temporary(),
    };
    let pglite = builder.open().map_err(|e| {
        Error::backend(
            format!("opening the embedded database at {}", config.data_dir),
            e,
        )
    })?;
    Ok(pglite)
}

impl Driver {
    fn serve(&mut self, rx: Inbox<Request>) {
        while let Some(request) = rx.recv() {
            if self.portal && !matches!(request, Request::FetchMore { .. }) {
                // A row stream dropped before its end: its statement ends
                // before anything else runs.
                self.close_portal();
            }
            match request {
                Request::Run { sql, params, reply } => {
                    reply.send(self.run(&sql, &params));
                }
                Request::Fetch {
                    sql,
                    params,
                    max_rows,
                    reply,
                } => {
                    reply.send(self.fetch(&sql, &params, max_rows));
                }
                Request::FetchMore { max_rows, reply } => {
                    reply.send(self.fetch_more(max_rows));
                }
                Request::Simple { sql, reply } => {
                    let result = self.simple(&sql).map(|data| Response {
                        data,
                        columns: None,
                        status: self.status,
                        suspended: false,
                    });
                    reply.send(result);
                }
                Request::Copy { message, reply } => {
                    let result = self.exchange(&message).map(|data| Response {
                        data,
                        columns: None,
                        status: self.status,
                        suspended: false,
                    });
                    reply.send(result);
                }
                Request::Release { reset, permit } => {
                    self.release(reset);
                    drop(permit);
                }
                Request::Status { reply } => {
                    reply.send(self.status);
                }
                Request::AbortTransaction { reply } => {
                    reply.send(self.abort_transaction());
                }
                Request::Dump { args, reply } => {
                    reply.send(self.dump(args));
                }
                Request::Archive { reply } => {
                    reply.send(self.archive());
                }
                Request::Close { reply } => {
                    reply.send(self.close());
                    return;
                }
            }
        }
        // Every handle is gone without an explicit close.
        let _ = self.close();
    }

    /// Closes the backend; for a persistent directory, records the clean
    /// close with the next transaction id, which tells whether anything was
    /// written since the last export.
    fn close(&mut self) -> Result<()> {
        let open = self.pglite.as_ref().is_some_and(|p| !p.is_closed());
        let next_xid = match &self.data_dir {
            Some(_) if open => Some(self.next_xid()),
            _ => None,
        };
        if let Some(pglite) = &mut self.pglite {
            pglite
                .close()
                .map_err(|e| Error::backend("closing the embedded database", e))?;
        }
        match (&self.data_dir, next_xid) {
            (Some(dir), Some(next_xid)) => metadata::record_close(dir, next_xid?),
            _ => Ok(()),
        }
    }

    /// Marks the persistent directory open, creating its record on first use.
    fn record_open(&mut self, fresh: bool) -> Result<()> {
        let Some(dir) = self.data_dir.clone() else {
            return Ok(());
        };
        let next_xid = self.next_xid()?;
        let version = self.text_value("SHOW server_version")?;
        metadata::record_open(&dir, fresh, next_xid, &version)
    }

    fn next_xid(&mut self) -> Result<u64> {
        metadata::parse_next_xid(&self.text_value(metadata::NEXT_XID_SQL)?)
    }

    /// The first column of the first row of a simple query, as text.
    fn text_value(&mut self, sql: &str) -> Result<String> {
        let data = self.simple(sql)?;
        let result = wire::read_result(&data, None, true)?;
        result
            .rows
            .first()
            .ok_or(Error::RowNotFound)?
            .try_get::<String, _>(0)
    }

    /// Fails unless the backend is idle: the maintenance requests below see
    /// only committed data and must not cut into a session's transaction.
    fn require_idle(&self, operation: &str) -> Result<()> {
        if self.status == b'I' {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "{operation} needs the embedded database outside a transaction"
            )))
        }
    }

    fn dump(&mut self, args: Vec<String>) -> Result<String> {
        let _span = tracing::info_span!("db.pglite.dump").entered();
        self.require_idle("pg_dump")?;
        let options = pglite_oxide::PgDumpOptions::new().args(args);
        let dumped = self.backend()?.dump_sql(options);
        // pg_dump shares this backend session: pglite-oxide ends it with
        // `DEALLOCATE ALL`, but leaves pg_dump's snapshot transaction open
        // and its settings (`extra_float_digits = 3`, ...) in place. Undo
        // all of it, so the session is as a fresh one.
        self.forget_statements();
        let reset = self
            .simple("ROLLBACK; RESET ALL")
            .and_then(|_| self.initialize_session());
        let dumped =
            dumped.map_err(|e| Error::backend("running pg_dump on the embedded database", e))?;
        reset?;
        Ok(dumped)
    }

    fn archive(&mut self) -> Result<Vec<u8>> {
        let _span = tracing::info_span!("db.pglite.archive").entered();
        self.require_idle("archiving the data directory")?;
        let archive = self.backend()?.dump_data_dir();
        // The archive is taken with the backend shut down and restarted, so
        // the session starts afresh: no prepared statements, no settings, no
        // LISTEN.
        self.forget_statements();
        self.restore_session()?;
        archive.map_err(|e| Error::backend("archiving the embedded data directory", e))
    }

    fn forget_statements(&mut self) {
        self.statements.clear();
        self.wire_types.clear();
        self.order.clear();
    }

    fn restore_session(&mut self) -> Result<()> {
        if self.backend()?.is_closed() {
            return Err(Error::Closed);
        }
        self.initialize_session()?;
        for channel in self.hub.channels() {
            self.simple(&format!("LISTEN {}", db_core::quote_ident(&channel)))?;
        }
        Ok(())
    }

    fn initialize_session(&mut self) -> Result<()> {
        let settings = std::mem::take(&mut self.setup.settings);
        let applied = self.backend().and_then(|backend| {
            backend
                .exec(&settings, None)
                .map_err(|e| Error::backend("applying the session settings", e))
        });
        self.setup.settings = settings;
        applied?;
        let statements = std::mem::take(&mut self.setup.statements);
        let ran = statements.iter().enumerate().try_for_each(|(index, sql)| {
            self.setup_statement(sql)
                .map_err(|e| Error::session_setup(index, sql, e))?;
            if self.status == b'I' {
                return Ok(());
            }
            self.simple("ROLLBACK")?;
            Err(Error::session_setup_left_transaction(index, sql))
        });
        self.setup.statements = statements;
        ran
    }

    /// Runs one statement of the caller's setup, alone, as the unnamed
    /// statement of an extended-protocol exchange.
    fn setup_statement(&mut self, sql: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(sql.len() + 64);
        wire::parse(&mut buf, "", sql, &[])?;
        wire::bind(&mut buf, "", &wire::encode_params(&[])?)?;
        wire::execute(&mut buf)?;
        wire::sync(&mut buf)?;
        let data = self.exchange(&buf)?;
        wire::read_result(&data, None, false).map(drop)
    }

    /// The backend, reopened first if a crash left none.
    fn backend(&mut self) -> Result<&mut Pglite> {
        if self.pglite.is_none() {
            self.reopen()?;
        }
        self.pglite.as_mut().ok_or(Error::Closed)
    }

    /// Opens the backend again on its files after a crash: PostgreSQL
    /// replays the WAL from the last checkpoint, so what was committed is
    /// there and nothing else. The session starts afresh but for `LISTEN`,
    /// and subscribers hear [`db_core::ListenEvent::Reconnected`].
    fn reopen(&mut self) -> Result<()> {
        let _span = tracing::info_span!("db.pglite.reopen").entered();
        let pglite = open(&self.config, self.memory_dir.as_ref())?;
        self.pglite = Some(pglite);
        self.status = b'I';
        self.restore_session()?;
        // As a server's listener does after its connection came back:
        // subscribers learn that the backend under them was replaced.
        self.hub.reconnected();
        Ok(())
    }

    /// A call into the backend failed inside the WebAssembly runtime (a
    /// trap, such as its call stack running out), not with an
    /// `ErrorResponse`: the backend's memory can no longer be trusted. It is
    /// abandoned without running anything more in it (pglite-oxide's own
    /// recovery and shutdown were seen to hang, or to keep a failed
    /// statement's rows) and reopened from its files, as after `kill -9`.
    fn crash(&mut self, cause: &(dyn std::error::Error + 'static)) -> Error {
        let detail = crash_detail(cause);
        tracing::error!(
            target: "db_pglite::crash",
            %detail,
            "the embedded database crashed; reopening it from its files"
        );
        if let Some(pglite) = self.pglite.take() {
            pglite.abandon();
        }
        self.forget_statements();
        self.status = b'I';
        self.portal = false;
        let reopen_error = self.reopen().err().map(|e| {
            // The next request tries again.
            tracing::error!(
                target: "db_pglite::crash",
                error = %e,
                "reopening the embedded database after a crash failed"
            );
            self.pglite = None;
            e.to_string()
        });
        Error::BackendCrashed {
            detail,
            reopen_error,
        }
    }

    fn round_trip(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        match self
            .backend()?
            .exec_protocol_raw(message, ExecProtocolOptions::no_sync())
        {
            Ok(data) => Ok(data),
            Err(e) => Err(self.crash(e.as_ref())),
        }
    }

    /// Scans a response for what the driver itself needs: notifications to
    /// fan out, the transaction status, and the first error's SQLSTATE.
    fn scan(&mut self, data: &[u8]) -> Scan {
        let mut scan = Scan::default();
        for msg in Messages::new(data) {
            let Ok((tag, body)) = msg else { break };
            match tag {
                b'1' => scan.parsed = true,
                b's' => scan.suspended = true,
                b'T' => scan.columns = wire::row_description(body).ok(),
                b'n' => scan.columns = Some(Arc::from(Vec::new())),
                b'E' if scan.error.is_none() => {
                    scan.error = wire::error_response(body).ok();
                }
                b'A' => {
                    if let Ok(n) = wire::notification(body) {
                        self.hub.dispatch(n);
                    }
                }
                b'Z' => {
                    if let Some(&s) = body.first() {
                        self.status = s;
                    }
                }
                _ => {}
            }
        }
        scan
    }

    fn simple(&mut self, sql: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(sql.len() + 8);
        wire::query(&mut buf, sql)?;
        self.exchange(&buf)
    }

    /// Sends simple-protocol messages and scans the response.
    fn exchange(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        let data = self.round_trip(message)?;
        self.scan(&data);
        Ok(data)
    }

    /// Rolls back what a released session left open and, for a session that
    /// may have changed settings or made session objects, resets them: the
    /// next session starts as a fresh one would.
    fn release(&mut self, reset: bool) {
        if self.status != b'I'
            && let Err(e) = self.simple("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back a released embedded session failed");
        }
        if reset
            && let Err(e) = self
                .simple(db_core::backend::RESET_SESSION_SQL)
                .and_then(|data| wire::read_result(&data, None, false).map(drop))
                .and_then(|()| self.initialize_session())
        {
            tracing::error!(error = %e, "resetting a released embedded session failed");
        }
    }

    /// Puts an open transaction into the failed state with the error a
    /// server's statement timeout gives (`57014`): later statements are
    /// refused and `COMMIT` rolls back, as on a server.
    fn abort_transaction(&mut self) -> Result<Response> {
        if self.status == b'T' {
            self.simple(
                "DO $db_timeout$ BEGIN RAISE EXCEPTION USING ERRCODE = 'query_canceled', \
                 MESSAGE = 'canceling statement due to statement timeout'; END $db_timeout$",
            )?;
        }
        Ok(Response {
            data: Vec::new(),
            columns: None,
            status: self.status,
            suspended: false,
        })
    }

    fn cached(&self, sql: &str, oids: &[u32]) -> Option<&Statement> {
        self.statements.get(sql)?.iter().find(|s| s.oids == oids)
    }

    fn forget(&mut self, sql: &str, oids: &[u32]) -> Option<String> {
        let list = self.statements.get_mut(sql)?;
        let i = list.iter().position(|s| s.oids == oids)?;
        let name = list.swap_remove(i).name;
        if list.is_empty() {
            self.statements.remove(sql);
        }
        Some(name)
    }

    fn run(&mut self, sql: &str, params: &EncodedParams) -> Result<Response> {
        let response = self.run_once(sql, params)?;
        // After DDL changed a cached statement's result type, PostgreSQL
        // refuses to reuse it; outside a transaction it is safe to prepare it
        // again and retry.
        let mut response = if response.retry && self.status == b'I' {
            self.run_once(sql, params)?.response
        } else {
            response.response
        };
        response.status = self.status;
        Ok(response)
    }

    fn run_once(&mut self, sql: &str, params: &EncodedParams) -> Result<Attempt> {
        let mut buf = Vec::with_capacity(sql.len() + params.bind.len() + 64);
        let bound = self.bind_statement(&mut buf, sql, params)?;
        wire::execute(&mut buf)?;
        wire::sync(&mut buf)?;
        let data = self.round_trip(&buf)?;
        let scan = self.scan(&data);
        Ok(self.after_bound(bound, sql, params, data, scan))
    }

    /// Appends the messages that bind `sql` with `params` to the unnamed
    /// portal: with the cached statement, or parsing (and describing) a new
    /// one, closing the oldest when the cache is full.
    fn bind_statement(
        &mut self,
        buf: &mut Vec<u8>,
        sql: &str,
        params: &EncodedParams,
    ) -> Result<Bound> {
        if let Some(stmt) = self.cached(sql, &params.oids) {
            let columns = Arc::clone(&stmt.columns);
            wire::bind(buf, &stmt.name, params)?;
            return Ok(Bound::Cached(columns));
        }
        if self.order.len() >= STATEMENT_CACHE_CAPACITY
            && let Some((old_sql, old_name)) = self.order.pop_front()
        {
            if let Some(list) = self.statements.get_mut(&old_sql) {
                list.retain(|s| s.name != old_name);
                if list.is_empty() {
                    self.statements.remove(&old_sql);
                }
            }
            wire::close_statement(buf, &old_name)?;
        }
        self.next_statement += 1;
        let name = format!("db_s{}", self.next_statement);
        wire::parse(buf, &name, sql, &params.oids)?;
        wire::bind(buf, &name, params)?;
        wire::describe_portal(buf)?;
        Ok(Bound::Parsed(name))
    }

    /// Caches a statement [`Driver::bind_statement`] parsed, or forgets a
    /// cached one PostgreSQL refused to reuse (the retry is the caller's).
    fn after_bound(
        &mut self,
        bound: Bound,
        sql: &str,
        params: &EncodedParams,
        data: Vec<u8>,
        scan: Scan,
    ) -> Attempt {
        let suspended = scan.suspended && scan.error.is_none();
        match bound {
            Bound::Cached(columns) => {
                // After DDL changed a cached statement's result type,
                // PostgreSQL refuses to reuse it.
                let retry = scan
                    .error
                    .as_ref()
                    .is_some_and(DbError::is_stale_cached_plan);
                if retry && let Some(name) = self.forget(sql, &params.oids) {
                    self.close_statement(&name);
                }
                Attempt {
                    response: Response {
                        data,
                        columns: Some(columns),
                        status: self.status,
                        suspended,
                    },
                    retry,
                }
            }
            Bound::Parsed(name) => {
                let columns = scan.columns.map(|c| self.resolve_wire_types(c));
                if scan.parsed {
                    if let Some(columns) = columns.clone() {
                        self.order.push_back((sql.to_owned(), name.clone()));
                        self.statements
                            .entry(sql.to_owned())
                            .or_default()
                            .push(Statement {
                                name,
                                oids: params.oids.clone(),
                                columns,
                            });
                    } else {
                        // Parsed but failed before describing: drop it, it
                        // would be re-parsed next time anyway.
                        self.close_statement(&name);
                    }
                }
                Attempt {
                    response: Response {
                        data,
                        columns,
                        status: self.status,
                        suspended,
                    },
                    retry: false,
                }
            }
        }
    }

    /// The first batch of a row stream (see [`Request::Fetch`]).
    fn fetch(&mut self, sql: &str, params: &EncodedParams, max_rows: u32) -> Result<Response> {
        let attempt = self.fetch_once(sql, params, max_rows)?;
        // As in `run`: a stale cached statement is prepared again outside a
        // transaction (its error came before any row).
        if attempt.retry && self.status == b'I' {
            return Ok(self.fetch_once(sql, params, max_rows)?.response);
        }
        Ok(attempt.response)
    }

    fn fetch_once(&mut self, sql: &str, params: &EncodedParams, max_rows: u32) -> Result<Attempt> {
        let mut buf = Vec::with_capacity(sql.len() + params.bind.len() + 64);
        let bound = self.bind_statement(&mut buf, sql, params)?;
        wire::execute_limited(&mut buf, max_rows)?;
        wire::flush(&mut buf)?;
        let data = self.round_trip(&buf)?;
        let (data, scan) = self.end_batch(data)?;
        Ok(self.after_bound(bound, sql, params, data, scan))
    }

    /// The next batch of the open row stream.
    fn fetch_more(&mut self, max_rows: u32) -> Result<Response> {
        if !self.portal {
            return Err(Error::Protocol(
                "no row stream is open on the embedded backend".into(),
            ));
        }
        self.portal = false;
        let mut buf = Vec::with_capacity(16);
        wire::execute_limited(&mut buf, max_rows)?;
        wire::flush(&mut buf)?;
        let data = self.round_trip(&buf)?;
        let (data, scan) = self.end_batch(data)?;
        Ok(Response {
            data,
            columns: None,
            status: self.status,
            suspended: scan.suspended && scan.error.is_none(),
        })
    }

    /// Scans a row stream's batch. A suspended portal stays open; a
    /// statement that completed or failed has its exchange ended by a
    /// `Sync`, whose `ReadyForQuery` (appended to the data) reports the
    /// transaction status.
    fn end_batch(&mut self, mut data: Vec<u8>) -> Result<(Vec<u8>, Scan)> {
        let mut scan = self.scan(&data);
        if scan.suspended && scan.error.is_none() {
            self.portal = true;
            return Ok((data, scan));
        }
        scan.suspended = false;
        let mut sync = Vec::with_capacity(8);
        wire::sync(&mut sync)?;
        let tail = self.round_trip(&sync)?;
        self.scan(&tail);
        data.extend_from_slice(&tail);
        Ok((data, scan))
    }

    /// Ends the exchange of a row stream dropped with rows left: closes its
    /// portal and syncs (which, outside a transaction block, commits the
    /// statement's implicit transaction, as a server does).
    fn close_portal(&mut self) {
        self.portal = false;
        let mut buf = Vec::with_capacity(16);
        if wire::close_portal(&mut buf).is_ok()
            && wire::sync(&mut buf).is_ok()
            && let Ok(data) = self.round_trip(&buf)
        {
            self.scan(&data);
        }
    }

    /// Gives columns of user-defined types the built-in type their values
    /// are decoded as (`text` for an enum: see `Column::wire_type`), looking
    /// types not seen before up in `pg_type`.
    fn resolve_wire_types(&mut self, columns: Arc<[Column]>) -> Arc<[Column]> {
        let user_type = |c: &Column| c.type_().oid() >= FIRST_USER_OID;
        if !columns.iter().any(user_type) {
            return columns;
        }
        let mut unseen: Vec<u32> = columns
            .iter()
            .filter(|c| user_type(c) && !self.wire_types.contains_key(&c.type_().oid()))
            .map(|c| c.type_().oid())
            .collect();
        unseen.sort_unstable();
        unseen.dedup();
        // An aborted transaction refuses the lookup; the values stay opaque.
        if !unseen.is_empty() && self.status != b'E' {
            match self.look_up_wire_types(&unseen) {
                Ok(found) => {
                    for oid in unseen {
                        let wire = found.iter().find(|(o, _)| *o == oid).map(|(_, w)| *w);
                        self.wire_types
                            .insert(oid, wire.unwrap_or(Type::from_oid(oid)));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "looking up user-defined column types failed");
                    if self.portal {
                        // The failed lookup aborted the stream's exchange:
                        // end it, so that the stream reports an error
                        // instead of rows that never come.
                        self.close_portal();
                    }
                }
            }
        }
        columns
            .iter()
            .map(|c| match self.wire_types.get(&c.type_().oid()) {
                Some(&wire) if wire != c.type_() => c.clone().with_wire_type(wire),
                _ => c.clone(),
            })
            .collect()
    }

    /// The wire types of the user-defined types `oids` that have one: `text`
    /// for enums and types received as text (`citext`), `text[]` for arrays
    /// of those.
    fn look_up_wire_types(&mut self, oids: &[u32]) -> Result<Vec<(u32, Type)>> {
        const SQL: &str = "SELECT t.oid, CASE \
            WHEN t.typtype = 'e' OR r.prosrc = 'textrecv' THEN 1 \
            WHEN r.prosrc = 'array_recv' AND (e.typtype = 'e' OR er.prosrc = 'textrecv') THEN 2 \
            ELSE 0 END \
            FROM pg_catalog.pg_type t \
            JOIN pg_catalog.pg_proc r ON r.oid = t.typreceive \
            LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem \
            LEFT JOIN pg_catalog.pg_proc er ON er.oid = e.typreceive \
            WHERE t.oid = ANY($1)";
        let list = Value::Array(Array::new(
            Type::OID,
            oids.iter().map(|&o| Value::Oid(o)).collect(),
        ));
        let params = wire::encode_params(&[list])?;
        let mut buf = Vec::with_capacity(SQL.len() + params.bind.len() + 64);
        // With a row stream's portal open (the unnamed one, suspended), the
        // lookup runs in a portal of its own and ends with a `Flush`: a
        // `Sync` would end the stream's exchange.
        let portal = if self.portal { LOOKUP_PORTAL } else { "" };
        wire::parse(&mut buf, "", SQL, &params.oids)?;
        wire::bind_portal(&mut buf, portal, "", &params)?;
        wire::describe_named_portal(&mut buf, portal)?;
        wire::execute_portal(&mut buf, portal, 0)?;
        if self.portal {
            wire::close_named_portal(&mut buf, portal)?;
            wire::flush(&mut buf)?;
        } else {
            wire::sync(&mut buf)?;
        }
        let data = self.round_trip(&buf)?;
        self.scan(&data);
        let result = wire::read_result(&data, None, true)?;
        let mut found = Vec::with_capacity(result.rows.len());
        for row in &result.rows {
            let oid: u32 = row.try_get(0)?;
            let wire = match row.try_get::<i32, _>(1)? {
                1 => Type::TEXT,
                2 => Type::TEXT.array_type().unwrap_or(Type::TEXT),
                _ => continue,
            };
            found.push((oid, wire));
        }
        Ok(found)
    }

    fn close_statement(&mut self, name: &str) {
        let mut buf = Vec::new();
        if wire::close_statement(&mut buf, name).is_ok()
            && wire::sync(&mut buf).is_ok()
            && let Ok(data) = self.round_trip(&buf)
        {
            self.scan(&data);
        }
    }
}

/// The first line of each error in a crash's chain: the runtime's own text
/// carries a backtrace, which belongs in no error message.
fn crash_detail(cause: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(cause), |e| e.source())
        .filter_map(|e| e.to_string().lines().next().map(str::to_owned))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

struct Attempt {
    response: Response,
    retry: bool,
}

/// How [`Driver::bind_statement`] bound a statement.
enum Bound {
    /// With the cached statement, described by these columns.
    Cached(Arc<[Column]>),
    /// With a statement it parsed under this name.
    Parsed(String),
}

#[derive(Default)]
struct Scan {
    parsed: bool,
    /// A limited `Execute` left rows in its portal (`PortalSuspended`).
    suspended: bool,
    columns: Option<Arc<[Column]>>,
    error: Option<DbError>,
}
