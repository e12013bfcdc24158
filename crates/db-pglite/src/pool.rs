//! The pool: one embedded backend shared by every session of the process,
//! handed out in fair FIFO order.

use std::collections::HashMap;
use std::panic::Location;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use db_core::backend::{ListenCommand, ListenerHub};
use db_core::{
    BackendKind, Config, DataDir, Error, Executor, NotificationStream, Pool, QueryResult, Result,
    Row, RowStream, TimeoutPhase, Value,
};
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::client::PgliteClient;
use crate::data_dir::{self, DirLock};
use crate::driver::{self, Request};
use crate::handoff::{self, Outbox, Spin};
use crate::lock::{LockTable, PgliteLock, SessionId};
use crate::{health, metadata};

/// Notifications buffered per subscriber before it is told it lagged.
const NOTIFY_BUFFER: usize = 1024;

/// Who holds the backend, for deadlock detection and error messages.
#[derive(Clone, Copy)]
struct Holder {
    task: Option<tokio::task::Id>,
    thread: ThreadId,
    location: &'static Location<'static>,
    /// A held client, which its owner may keep across other awaits (and so
    /// deadlock on by asking the pool again); `false` for a one-shot pool
    /// call, which ends by itself.
    held: bool,
}

impl Holder {
    fn current(location: &'static Location<'static>, held: bool) -> Holder {
        Holder {
            task: tokio::task::try_id(),
            thread: std::thread::current().id(),
            location,
            held,
        }
    }

    fn same_caller(&self, other: &Holder) -> bool {
        match (self.task, other.task) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.thread == other.thread,
            _ => false,
        }
    }
}

pub(crate) struct Shared {
    requests: Mutex<Option<Outbox<Request>>>,
    /// How callers wait for their replies.
    pub(crate) reply_spin: Arc<Spin>,
    lease: Arc<Semaphore>,
    waits: db_core::AcquireStats,
    holder: Mutex<Option<Holder>>,
    pub(crate) locks: Arc<LockTable>,
    hub: Arc<ListenerHub>,
    next_session: AtomicU64,
    closed: AtomicBool,
    acquire_timeout: Duration,
    pub(crate) slow_statement: Duration,
    /// How long a caller waits for its statement (see
    /// [`Error::StatementTimeout`]).
    pub(crate) statement_timeout: Option<Duration>,
    registry_key: Option<PathBuf>,
    /// Ends once the driver thread is through with the data directory.
    done: Mutex<Option<watch::Receiver<()>>>,
}

impl Shared {
    pub(crate) fn send(&self, request: Request) -> Result<()> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = requests.as_ref().ok_or(Error::Closed)?;
        sender.send(request).map_err(|_| Error::Closed)
    }

    pub(crate) fn session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives the backend back. A session that may have left a transaction
    /// open or changed the session is rolled back and reset by the driver
    /// before the next session's first statement, because the release is
    /// queued ahead of it.
    pub(crate) fn release(
        &self,
        session: SessionId,
        permit: OwnedSemaphorePermit,
        rollback: bool,
        reset: bool,
    ) {
        self.locks.release_all(session);
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = None;
        if rollback || reset {
            // The driver gives the lease back once it has rolled back and
            // reset: after a statement the caller stopped waiting for (a
            // timeout, a cancelled future) has ended, so the next session
            // waits for the backend in the lease queue, not inside its own
            // statement.
            if let Err(Error::Closed) = self.send(Request::Release { reset, permit }) {
                tracing::debug!("released a session of a closed embedded database");
            }
            return;
        }
        drop(permit);
    }

    /// Gives the lease of a clean session back for a while (see
    /// `PgliteClient::lock`): it keeps its advisory locks.
    pub(crate) fn yield_lease(&self, permit: OwnedSemaphorePermit) {
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = None;
        drop(permit);
    }

    /// Records the calling task as the one holding the backend: a client
    /// moved into another task transfers its ownership with its first
    /// statement there.
    pub(crate) fn touch(&self) {
        let mut holder = self.holder.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = holder.as_mut() {
            h.task = tokio::task::try_id();
            h.thread = std::thread::current().id();
        }
    }

    /// Fails fast when the calling task holds a client of the backend:
    /// waiting for it would never end. A one-shot pool call in progress in
    /// the same task (`join!` of two `pool.query`s) is no reason: it ends by
    /// itself, so the caller queues behind it like anyone else.
    fn check_not_holding(
        &self,
        location: &'static Location<'static>,
        held: bool,
    ) -> Result<Holder> {
        let me = Holder::current(location, held);
        let current = *self.holder.lock().unwrap_or_else(PoisonError::into_inner);
        match current {
            Some(h) if h.held && h.same_caller(&me) => Err(Error::WouldDeadlock {
                held_at: h.location.to_string(),
            }),
            _ => Ok(me),
        }
    }

    pub(crate) async fn lease(
        &self,
        location: &'static Location<'static>,
        held: bool,
    ) -> Result<OwnedSemaphorePermit> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let me = self.check_not_holding(location, held)?;
        let started = Instant::now();
        let permit = match self
            .waits
            .track(tokio::time::timeout(
                self.acquire_timeout,
                Arc::clone(&self.lease).acquire_owned(),
            ))
            .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                let holder = self
                    .holder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map(|h| h.location.to_string());
                return Err(Error::PoolTimedOut {
                    phase: TimeoutPhase::Acquire,
                    waited: started.elapsed(),
                    holder,
                    source: None,
                });
            }
        };
        *self.holder.lock().unwrap_or_else(PoisonError::into_inner) = Some(me);
        Ok(permit)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.hub.close();
        // Dropped without `close()`: the driver thread closes PGlite on its
        // own; a reopen in this process waits for that.
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (Some(key), Some(done)) = (&self.registry_key, done) {
            pending_close()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), done);
        }
        if let Some(key) = &self.registry_key {
            let mut open = registry().lock().unwrap_or_else(PoisonError::into_inner);
            if open
                .get(key)
                .is_some_and(|w| w.as_ptr() == std::ptr::from_ref(self))
            {
                open.remove(key);
            }
        }
        // Dropping the sender ends the driver thread, which closes PGlite.
    }
}

/// How long opening waits for a backend of this process that is still
/// closing the same directory, and closing for its driver thread.
const CLOSE_WAIT: Duration = Duration::from_secs(60);

/// Persistent directories whose backend in this process is still closing.
fn pending_close() -> &'static Mutex<HashMap<PathBuf, watch::Receiver<()>>> {
    static CLOSING: OnceLock<Mutex<HashMap<PathBuf, watch::Receiver<()>>>> = OnceLock::new();
    CLOSING.get_or_init(Mutex::default)
}

type Registry = Mutex<HashMap<PathBuf, Weak<Shared>>>;

/// Open persistent backends of this process, by canonical data directory.
fn registry() -> &'static Registry {
    static OPEN: OnceLock<Registry> = OnceLock::new();
    OPEN.get_or_init(Registry::default)
}

/// Serializes opens so two tasks opening one directory share one backend.
fn open_lock() -> &'static tokio::sync::Mutex<()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// A cloneable handle to an embedded PostgreSQL backend.
///
/// All sessions share the one backend: a held [`PgliteClient`] (or an open
/// transaction on it) owns it exclusively, others wait in FIFO order, and a
/// task that already holds it gets [`Error::WouldDeadlock`] instead of a hang.
///
/// ```no_run
/// use db_core::{Client, Config, DataDir, Executor, Pool, params};
/// # async fn demo() -> db_core::Result<()> {
/// let pool = db_pglite::PglitePool::open(&Config::new().pglite(DataDir::Memory)).await?;
/// pool.execute("CREATE TABLE t (id int8 PRIMARY KEY, name text)", &[]).await?;
/// let mut client = pool.acquire().await?;
/// let mut tx = client.begin().await?;
/// tx.execute("INSERT INTO t VALUES ($1, $2)", &params![1_i64, "ada"]).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PglitePool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PglitePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PglitePool").finish_non_exhaustive()
    }
}

impl PglitePool {
    /// Opens the embedded backend described by `config.pglite`.
    ///
    /// A persistent directory already open in this process is shared, not
    /// opened twice. Before opening, the checks of [`health::check`] fail
    /// fast, with one line naming the path, on a runtime cache or data
    /// directory that cannot be written ([`Error::RuntimeCacheUnavailable`],
    /// [`Error::DataDirUnwritable`]) or a directory written by an
    /// incompatible version ([`Error::DataDirIncompatible`]), and a directory
    /// holding something other than an embedded cluster is left alone
    /// ([`Error::DataDirForeign`]); a directory held by a live process fails
    /// with [`Error::DataDirLocked`] naming the holder's PID when known (one
    /// held by a dead or exiting process is waited for, a few seconds). A
    /// new cluster whose creation fails is removed.
    ///
    /// [`health::check`]: crate::health::check
    pub async fn open(config: &Config) -> Result<PglitePool> {
        let _serial = open_lock().lock().await;
        let canonical = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        if let DataDir::Path(p) = &config.pglite.data_dir {
            let open = registry().lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(shared) = open.get(&canonical(p)).and_then(Weak::upgrade)
                && !shared.closed.load(Ordering::Acquire)
            {
                return Ok(PglitePool { shared });
            }
        }
        let creation = data_dir::Creation::start(&config.pglite.data_dir);
        creation.undo_check(health::check(&config.pglite))?;
        // The directory exists now, so this is its final canonical form.
        let key = match &config.pglite.data_dir {
            DataDir::Path(p) => Some(canonical(p)),
            _ => None,
        };
        if let Some(key) = &key {
            // A backend of this process on the same directory that is still
            // closing (its pool dropped without `close()`) is waited for:
            // two PGlite instances must never share the files.
            let closing = pending_close()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key);
            if let Some(mut done) = closing
                && tokio::time::timeout(CLOSE_WAIT, done.changed())
                    .await
                    .is_err()
            {
                return Err(Error::DataDirLocked {
                    path: key.display().to_string(),
                    pid: Some(std::process::id()),
                });
            }
        }
        let dir_lock = key.as_deref().map(DirLock::acquire).transpose()?;
        let (hub, commands) = ListenerHub::new(NOTIFY_BUFFER);
        let setup = driver::SessionSetup::new(config);
        let spawned = driver::spawn(&config.pglite, setup, Arc::clone(&hub), dir_lock).await;
        let (sender, done) = match spawned {
            Ok(spawned) => spawned,
            // The driver thread let go of the directory before reporting.
            Err(e) => return Err(creation.undo(e)),
        };
        let shared = Arc::new(Shared {
            requests: Mutex::new(Some(sender)),
            reply_spin: Arc::new(Spin::new()),
            lease: Arc::new(Semaphore::new(1)),
            waits: db_core::AcquireStats::default(),
            holder: Mutex::new(None),
            locks: Arc::new(LockTable::default()),
            hub,
            next_session: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            acquire_timeout: config.acquire_timeout,
            slow_statement: config.slow_statement_threshold,
            statement_timeout: config.timeouts.statement,
            registry_key: key.clone(),
            done: Mutex::new(Some(done)),
        });
        if let Some(key) = key {
            registry()
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, Arc::downgrade(&shared));
        }
        spawn_listen_thread(Arc::downgrade(&shared), commands)?;
        Ok(PglitePool { shared })
    }

    /// The persistent data directory (canonical), `None` for `memory://`.
    pub fn data_dir(&self) -> Option<&Path> {
        self.shared.registry_key.as_deref()
    }

    /// PostgreSQL's next transaction id. Every writing transaction consumes
    /// one, so an unchanged value means nothing was written in between; an
    /// export reads it before dumping and records it with
    /// [`metadata::record_export`](crate::metadata::record_export).
    pub async fn next_xid(&self) -> Result<u64> {
        let text: String = self
            .query_one(metadata::NEXT_XID_SQL, &[])
            .await?
            .try_get(0)?;
        metadata::parse_next_xid(&text)
    }

    /// A client for the caller: `held` for [`Pool::acquire`], whose client
    /// the caller keeps; not for the one-shot pool calls.
    #[track_caller]
    fn lease_client(
        &self,
        held: bool,
    ) -> impl Future<Output = Result<PgliteClient>> + Send + 'static {
        let location = Location::caller();
        let shared = Arc::clone(&self.shared);
        async move {
            let permit = shared.lease(location, held).await?;
            Ok(PgliteClient::new(shared, permit, location))
        }
    }
}

// Each statement on a session of its own, as [`Pool::run`] (through a
// clone of the pool: `&mut pool.clone()`), so a function taking
// `&mut impl Executor` accepts a pool as well as a client or transaction.
// As with the pool's own calls, a task holding the backend gets
// [`Error::WouldDeadlock`].
db_core::backend::executor_for_pool!(PglitePool);

/// Runs [`listen_commands`] on a small thread of its own rather than on the
/// caller's runtime, so the pool keeps working when it outlives the runtime
/// that opened it (a pool shared by several `#[tokio::test]`s, say).
fn spawn_listen_thread(
    shared: Weak<Shared>,
    commands: tokio::sync::mpsc::UnboundedReceiver<ListenCommand>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::backend("starting the PGlite listen thread", e))?;
    std::thread::Builder::new()
        .name("pglite-listen".into())
        .spawn(move || runtime.block_on(listen_commands(shared, commands)))
        .map_err(|e| Error::backend("starting the PGlite listen thread", e))?;
    Ok(())
}

/// Carries out LISTEN/UNLISTEN for the hub, each in a lease of its own so it
/// never runs inside another session's transaction.
async fn listen_commands(
    shared: Weak<Shared>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<ListenCommand>,
) {
    while let Some(command) = commands.recv().await {
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let pool = PglitePool { shared };
        match command {
            ListenCommand::Listen(channel, ack) => {
                let sql = format!("LISTEN {}", db_core::quote_ident(&channel));
                let _ = ack.send(pool.batch_execute(&sql).await);
            }
            ListenCommand::Unlisten(channel) if pool.shared.hub.unlisten_confirmed(&channel) => {
                let sql = format!("UNLISTEN {}", db_core::quote_ident(&channel));
                // After close there is nothing left to stop listening on.
                if let Err(e) = pool.batch_execute(&sql).await
                    && !e.is_closed()
                {
                    tracing::warn!(error = %e, channel, "UNLISTEN failed");
                }
            }
            _ => {}
        }
    }
}

impl Pool for PglitePool {
    type Client = PgliteClient;
    type Lock = PgliteLock;

    fn backend(&self) -> BackendKind {
        BackendKind::Pglite
    }

    #[track_caller]
    fn acquire(&self) -> impl Future<Output = Result<PgliteClient>> + Send {
        self.lease_client(true)
    }

    #[track_caller]
    fn run<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<QueryResult>> + Send + 'a {
        let client = self.lease_client(false);
        async move { client.await?.run(sql, params).await }
    }

    #[track_caller]
    fn execute<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        let client = self.lease_client(false);
        async move { client.await?.execute(sql, params).await }
    }

    #[track_caller]
    fn query<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Vec<Row>>> + Send + 'a {
        let client = self.lease_client(false);
        async move { client.await?.query(sql, params).await }
    }

    #[track_caller]
    fn query_one<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Row>> + Send + 'a {
        let client = self.lease_client(false);
        async move { client.await?.query_one(sql, params).await }
    }

    #[track_caller]
    fn query_opt<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<Option<Row>>> + Send + 'a {
        let client = self.lease_client(false);
        async move { client.await?.query_opt(sql, params).await }
    }

    #[track_caller]
    fn batch_execute<'a>(&'a self, sql: &'a str) -> impl Future<Output = Result<()>> + Send + 'a {
        let client = self.lease_client(false);
        async move { client.await?.batch_execute(sql).await }
    }

    #[track_caller]
    fn copy_in<'a>(
        &'a self,
        statement: &'a str,
        data: &'a [u8],
    ) -> impl Future<Output = Result<u64>> + Send + 'a {
        let client = self.lease_client(false);
        async move { client.await?.copy_in(statement, data).await }
    }

    #[track_caller]
    fn copy_out<'a, F>(
        &'a self,
        statement: &'a str,
        sink: F,
    ) -> impl Future<Output = Result<u64>> + Send + 'a
    where
        F: FnMut(&[u8]) -> Result<()> + Send + 'a,
    {
        let client = self.lease_client(false);
        async move { client.await?.copy_out(statement, sink).await }
    }

    /// The stream holds the backend from its first poll until it ends or is
    /// dropped; meanwhile the pool refuses the task that polls it with
    /// [`Error::WouldDeadlock`] (naming this call), as it refuses a second
    /// [`Pool::acquire`].
    #[track_caller]
    fn fetch<'a>(&'a self, sql: &'a str, params: &'a [Value]) -> RowStream<'a> {
        let client = self.lease_client(true);
        RowStream::generate(move |tx| async move {
            let mut client = match client.await {
                Ok(client) => client,
                Err(e) => return tx.send(Err(e)).await,
            };
            let mut rows = client.fetch(sql, params);
            while let Some(row) = rows.next().await {
                tx.send(row).await;
            }
        })
    }

    async fn lock(&self, key: i64, timeout: Duration) -> Result<PgliteLock> {
        let session = self.shared.session_id();
        self.shared.locks.lock(key, session, timeout).await?;
        Ok(PgliteLock::new(
            Arc::clone(&self.shared.locks),
            key,
            session,
        ))
    }

    async fn try_lock(&self, key: i64) -> Result<Option<PgliteLock>> {
        let session = self.shared.session_id();
        Ok(self
            .shared
            .locks
            .try_lock(key, session)
            .then(|| PgliteLock::new(Arc::clone(&self.shared.locks), key, session)))
    }

    #[track_caller]
    fn listen(&self, channel: &str) -> impl Future<Output = Result<NotificationStream>> + Send {
        let location = Location::caller();
        let shared = Arc::clone(&self.shared);
        let channel = channel.to_owned();
        async move {
            // LISTEN runs in a lease of its own.
            shared.check_not_holding(location, false)?;
            shared.hub.subscribe(&channel).await
        }
    }

    fn stats(&self) -> db_core::PoolStats {
        // One backend session, lent out while its lease is taken.
        let idle = u32::from(self.shared.lease.available_permits() > 0);
        self.shared.waits.stats(1, idle)
    }

    async fn close(&self) {
        let shared = &self.shared;
        if shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wait for the session in progress, then refuse everyone else.
        let permit = Arc::clone(&shared.lease).acquire_owned().await;
        shared.lease.close();
        let (reply, done) = handoff::reply(&shared.reply_spin);
        if shared.send(Request::Close { reply }).is_ok()
            && let Ok(Err(e)) = done.await
        {
            tracing::warn!(error = %e, "closing the embedded database");
        }
        shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        shared.hub.close();
        // The directory may be opened again, in this process or another,
        // once the driver thread has let go of it.
        let done = shared
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut done) = done {
            let _ = tokio::time::timeout(CLOSE_WAIT, done.changed()).await;
        }
        if let Some(key) = &shared.registry_key {
            let mut open = registry().lock().unwrap_or_else(PoisonError::into_inner);
            if open
                .get(key)
                .is_some_and(|w| w.as_ptr() == Arc::as_ptr(&self.shared))
            {
                open.remove(key);
            }
        }
        drop(permit);
    }
}
