//! The reader: one poller per [`Feed`], fanning out to subscriptions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use db_core::Pool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::columns::{self, Columns};
use crate::error::{Error, Result};
use crate::event::{Event, LogRow, Spec};
use crate::fanout::Router;
use crate::filter::Filter;
use crate::schema::{self, FeedInfo, LogInfo, Names, Retention};
use crate::snapshot::{self, Plan};

/// Offsets read per statement (whole ticks, so about this many) by the
/// poller and by catching-up subscribers.
const BATCH: i64 = 1_000;
/// After a poll that took `d` and found more than one change, the poller
/// is busy: it polls again `max(PACE * d, BUSY_GAP)` after, without waiting
/// for nudges, until a poll finds nothing. Under a stream of commits the
/// reader so takes a small share of the database's time (on PGlite it
/// shares the one backend with the writers; on a server, the CPUs) and reads
/// bigger batches, while a lone commit is still read at once.
const PACE: u32 = 4;
const BUSY_GAP: Duration = Duration::from_millis(5);

/// How a [`Feed`] reads and keeps the log.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Poll this often even without a notification (a lost notification
    /// only delays delivery by this much).
    pub poll_interval: Duration,
    /// Events buffered per subscription before it is dropped with
    /// [`Error::Lagged`].
    pub subscriber_buffer: usize,
    /// What the poller prunes from the log.
    pub retention: Retention,
    /// How often the poller prunes (when `retention` limits anything).
    pub prune_interval: Duration,
    /// The schema of the feed's own tables and trigger function,
    /// `changefeed` when `None`. A feed of an earlier release kept them in
    /// the connection's `current_schema()`, next to the watched tables;
    /// [`Feed::start`] moves them from there in place. Watched tables are
    /// named as SQL names them, in any schema.
    pub schema: Option<String>,
    /// After a nudge, wait this long for more before reading, so that a
    /// stream of small commits costs one read per interval rather than one
    /// per commit (writers share the backend with the reader on PGlite).
    /// Zero by default: a tokio sleep costs about 1-2 ms of latency.
    pub coalesce: Duration,
    /// Rows a snapshot reads per batch (each batch is one short
    /// transaction, and at most this many rows are held at a time; at
    /// least 1). See [`Start::Snapshot`].
    pub snapshot_batch: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            poll_interval: Duration::from_millis(250),
            subscriber_buffer: 1024,
            retention: Retention::default_limits(),
            prune_interval: Duration::from_secs(60),
            schema: None,
            coalesce: Duration::ZERO,
            snapshot_batch: 1_000,
        }
    }
}

impl Options {
    /// The defaults: poll every 250 ms, buffer 1024 events per subscriber,
    /// keep changes for 7 days ([`Retention::default_limits`]), read
    /// snapshots in batches of 1,000 rows.
    pub fn new() -> Options {
        Options::default()
    }

    /// Sets [`Options::poll_interval`].
    pub fn poll_interval(mut self, every: Duration) -> Options {
        self.poll_interval = every;
        self
    }

    /// Sets [`Options::subscriber_buffer`].
    pub fn subscriber_buffer(mut self, events: usize) -> Options {
        self.subscriber_buffer = events.max(1);
        self
    }

    /// Sets [`Options::retention`].
    pub fn retention(mut self, retention: Retention) -> Options {
        self.retention = retention;
        self
    }

    /// Sets [`Options::prune_interval`].
    pub fn prune_interval(mut self, every: Duration) -> Options {
        self.prune_interval = every;
        self
    }

    /// Sets [`Options::coalesce`].
    pub fn coalesce(mut self, wait: Duration) -> Options {
        self.coalesce = wait;
        self
    }

    /// Sets [`Options::snapshot_batch`].
    pub fn snapshot_batch(mut self, rows: usize) -> Options {
        self.snapshot_batch = rows.max(1);
        self
    }

    /// Sets [`Options::schema`].
    pub fn schema(mut self, schema: impl Into<String>) -> Options {
        self.schema = Some(schema.into());
        self
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Start {
    /// With the changes assigned offsets after the subscription was made.
    Now,
    /// With the matching rows as they are ([`Event::SnapshotRow`]), then
    /// [`Event::SnapshotEnd`], then every later change: nothing missed,
    /// nothing twice.
    ///
    /// The rows are read in primary-key order in batches of
    /// [`Options::snapshot_batch`], each its own short transaction (on
    /// PGlite the backend is free between batches), and sent with
    /// backpressure. Change events (with their offsets) to rows already
    /// sent may therefore come before [`Event::SnapshotEnd`]: applying every
    /// event in order, snapshot rows as inserts, gives the table (filtered
    /// and projected) as of the end's offset. Resume only from the end's
    /// offset or a later one: an offset before it does not stand for a
    /// complete state.
    Snapshot,
    /// With the changes after this offset; [`Error::ResyncRequired`] if
    /// some were pruned, [`Error::OffsetAhead`] if it was not assigned yet.
    AfterOffset(i64),
}

/// What a subscription asks for: a table, optionally some columns and a
/// filter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Query {
    /// The table.
    pub table: String,
    /// The columns wanted (the key columns are always included); all when
    /// `None`.
    pub columns: Option<Vec<String>>,
    /// Only rows matching this; all when `None`.
    pub filter: Option<Filter>,
}

impl Query {
    /// Every column of every row of `table`.
    pub fn table(table: impl Into<String>) -> Query {
        Query {
            table: table.into(),
            columns: None,
            filter: None,
        }
    }

    /// Only these columns (and the key).
    pub fn columns<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Query {
        self.columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Only rows matching `filter`.
    pub fn filter(mut self, filter: Filter) -> Query {
        self.filter = Some(filter);
        self
    }
}

struct SubShared {
    terminal: Mutex<Option<Error>>,
    live: AtomicBool,
}

impl SubShared {
    /// Records why the subscription ends; its sender is dropped right after.
    fn end(&self, error: Error) {
        let mut t = self.terminal.lock().unwrap_or_else(PoisonError::into_inner);
        if t.is_none() {
            *t = Some(error);
        }
    }
}

/// A live subscription registered with the poller.
struct Live {
    spec: Arc<Spec>,
    /// Every event up to this offset has been queued.
    cursor: i64,
    sender: mpsc::Sender<Event>,
    shared: Arc<SubShared>,
}

struct Hub {
    /// The offset through which the poller has fanned out.
    last: i64,
    subs: Vec<Live>,
    closed: bool,
}

struct Inner<P: Pool> {
    pool: P,
    names: Names,
    options: Options,
    hub: Mutex<Hub>,
    stopped: AtomicBool,
}

impl<P: Pool> Inner<P> {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A change-feed reader on one pool: one poller task that reads the change
/// log and fans it out to every [`Subscription`] made through it.
///
/// Make one per process (and backend) and share it; dropping it (or
/// [`Feed::close`]) stops the poller and ends the subscriptions with
/// [`Error::Closed`].
pub struct Feed<P: Pool> {
    inner: Arc<Inner<P>>,
    poller: JoinHandle<()>,
}

impl<P: Pool> std::fmt::Debug for Feed<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("schema", &self.inner.names.schema)
            .finish_non_exhaustive()
    }
}

impl<P: Pool> Feed<P> {
    /// Creates the feed's tables if needed, listens for nudges and starts
    /// the poller. Must be called within a Tokio runtime.
    pub async fn start(pool: P, options: Options) -> Result<Feed<P>> {
        let (names, legacy) = match &options.schema {
            Some(s) => (Names::new(s), None),
            None => (
                Names::new(schema::DEFAULT_SCHEMA),
                Some(schema::current_schema(&pool).await?),
            ),
        };
        schema::ensure_base(&pool, &names, legacy.as_deref()).await?;
        // Tables renamed, changed or dropped while no reader ran are
        // noticed before anyone subscribes.
        schema::detect(&pool, &names).await?;
        let stream = pool.listen(schema::CHANNEL).await?;
        schema::tick_pool(&pool, &names).await?;
        let (last, _) = schema::positions(&pool, &names).await?;
        let inner = Arc::new(Inner {
            pool,
            names,
            options,
            hub: Mutex::new(Hub {
                last,
                subs: Vec::new(),
                closed: false,
            }),
            stopped: AtomicBool::new(false),
        });
        let poller = tokio::spawn(run(Arc::clone(&inner), stream));
        Ok(Feed { inner, poller })
    }

    /// The pool.
    pub fn pool(&self) -> &P {
        &self.inner.pool
    }

    /// Enables a feed on `table`, named as SQL names it (`accounts`,
    /// `app.accounts`, `"Mixed Case"`; an unqualified name by
    /// `search_path`): installs the shared trigger function once and the
    /// triggers on the table once; enabling again changes nothing. Returns
    /// the table's key columns. The feed follows the table (by OID) through
    /// renames. The feed's own tables, partitioned tables and partitions
    /// are [`Error::Refused`].
    pub async fn enable(&self, table: &str) -> Result<Vec<String>> {
        schema::enable(&self.inner.pool, &self.inner.names, table).await
    }

    /// Disables the feed on `table`: removes its triggers, and the trigger
    /// function when no feed is left; its subscriptions end with
    /// [`Event::End`] and the table's row images are removed from the log
    /// (their offsets stay, with nothing to deliver). Returns whether a feed
    /// was enabled.
    pub async fn disable(&self, table: &str) -> Result<bool> {
        schema::disable(&self.inner.pool, &self.inner.names, table).await
    }

    /// The enabled feeds with their retained offsets and log size.
    pub async fn list(&self) -> Result<Vec<FeedInfo>> {
        schema::list(&self.inner.pool, &self.inner.names).await
    }

    /// The log's size and offsets, over every table.
    pub async fn log_info(&self) -> Result<LogInfo> {
        schema::log_info(&self.inner.pool, &self.inner.names).await
    }

    /// Prunes the log now as [`Options::retention`] allows; returns the
    /// number of changes removed.
    pub async fn prune(&self) -> Result<u64> {
        self.prune_with(self.inner.options.retention).await
    }

    /// Prunes the log now as `retention` allows.
    pub async fn prune_with(&self, retention: Retention) -> Result<u64> {
        schema::prune(&self.inner.pool, &self.inner.names, retention).await
    }

    /// `(last offset assigned, offsets pruned through)`: a subscription can
    /// resume after any offset at or above the second.
    pub async fn positions(&self) -> Result<(i64, i64)> {
        schema::tick_pool(&self.inner.pool, &self.inner.names).await?;
        schema::positions(&self.inner.pool, &self.inner.names).await
    }

    /// Subscribes to the changes of `query.table`, which needs an enabled
    /// feed ([`Error::NotEnabled`] otherwise).
    ///
    /// The columns of the query and of its filter must be columns of the
    /// table ([`Error::NoSuchColumn`]) and the filter's values values of the
    /// columns' types, as the server reads them ([`Error::FilterType`]);
    /// see [`Filter`] for what a filter means.
    #[tracing::instrument(name = "changefeed.subscribe", level = "debug", skip_all, fields(table = %query.table, ?start))]
    pub async fn subscribe(&self, query: Query, start: Start) -> Result<Subscription> {
        let inner = &self.inner;
        if inner.hub().closed {
            return Err(Error::Closed);
        }
        let (watched, key_columns) =
            schema::feed_of(&inner.pool, &inner.names, &query.table).await?;
        let relation = watched.name;
        // The columns and the filter mean what they would in SQL: checked
        // against the catalog, the filter's values read as the columns'
        // types by the server.
        let checked = {
            let mut client = inner.pool.acquire().await?;
            let cols = Columns::load(&mut client, &relation).await?;
            columns::check(
                &mut client,
                &relation,
                &cols,
                &key_columns,
                query.columns.as_deref(),
                query.filter.as_ref(),
            )
            .await?
        };
        let spec = Arc::new(Spec {
            relid: watched.relid,
            relation,
            columns: query.columns,
            filter: checked.filter.clone(),
            key_columns,
        });
        let (cursor, snapshot) = match start {
            Start::Now => {
                schema::tick_pool(&inner.pool, &inner.names).await?;
                (schema::positions(&inner.pool, &inner.names).await?.0, None)
            }
            Start::AfterOffset(offset) => {
                schema::tick_pool(&inner.pool, &inner.names).await?;
                let (head, pruned) = schema::positions(&inner.pool, &inner.names).await?;
                if pruned > offset {
                    return Err(Error::ResyncRequired {
                        pruned_before: pruned + 1,
                    });
                }
                if offset > head {
                    return Err(Error::OffsetAhead { offset, head });
                }
                (offset, None)
            }
            Start::Snapshot => {
                let plan = Plan::new(&spec.relation, &checked, inner.options.snapshot_batch);
                let first = snapshot::batch(&inner.pool, &inner.names, &plan, None).await?;
                (first.offset, Some((plan, first)))
            }
        };
        let (sender, receiver) = mpsc::channel(inner.options.subscriber_buffer);
        let shared = Arc::new(SubShared {
            terminal: Mutex::new(None),
            live: AtomicBool::new(false),
        });
        let task = tokio::spawn(join(
            Arc::clone(inner),
            Arc::clone(&spec),
            cursor,
            snapshot,
            sender,
            Arc::clone(&shared),
        ));
        Ok(Subscription {
            receiver,
            shared,
            task,
            last_offset: cursor,
        })
    }

    /// Stops the poller and ends every subscription with [`Error::Closed`].
    pub fn close(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.poller.abort();
        close_all(&self.inner, || Error::Closed);
    }
}

impl<P: Pool> Drop for Feed<P> {
    fn drop(&mut self) {
        self.close();
    }
}

fn close_all<P: Pool>(inner: &Inner<P>, error: impl Fn() -> Error) {
    let mut hub = inner.hub();
    hub.closed = true;
    for live in hub.subs.drain(..) {
        live.shared.end(error());
    }
}

/// The events of one subscription.
///
/// Events arrive in offset order. After an error from [`Subscription::recv`]
/// the subscription is over; [`Error::Lagged`] and the offsets of the
/// events say where to resume.
pub struct Subscription {
    receiver: mpsc::Receiver<Event>,
    shared: Arc<SubShared>,
    task: JoinHandle<()>,
    last_offset: i64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("last_offset", &self.last_offset)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event. Once it returns an error the subscription is over.
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Result<Event> {
        match self.receiver.recv().await {
            Some(event) => {
                if let Some(offset) = event.offset() {
                    self.last_offset = offset;
                }
                Ok(event)
            }
            None => Err(self
                .shared
                .terminal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or(Error::Closed)),
        }
    }

    /// Whether the subscription has caught up with the feed's poller (after
    /// its snapshot and any backlog, which it reads with backpressure) and is
    /// now fed by it, so that falling behind ends it with [`Error::Lagged`].
    pub fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::Acquire)
    }

    /// The offset of the last event received (or where the subscription
    /// started).
    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Delivers the snapshot, catches up from `cursor` by reading the log
/// itself (with backpressure), then hands the subscription to the poller.
async fn join<P: Pool>(
    inner: Arc<Inner<P>>,
    spec: Arc<Spec>,
    mut cursor: i64,
    snapshot: Option<(Plan, snapshot::Batch)>,
    sender: mpsc::Sender<Event>,
    shared: Arc<SubShared>,
) {
    if let Some((plan, first)) = snapshot {
        match snapshot::stream(&inner.pool, &inner.names, &spec, &plan, first, &sender).await {
            Ok(Some(offset)) => cursor = offset,
            Ok(None) => return,
            Err(e) => {
                shared.end(e);
                return;
            }
        }
    }
    let mut events = Vec::new();
    loop {
        {
            let mut hub = inner.hub();
            if hub.closed {
                shared.end(Error::Closed);
                return;
            }
            if cursor >= hub.last {
                shared.live.store(true, Ordering::Release);
                hub.subs.push(Live {
                    spec,
                    cursor,
                    sender,
                    shared,
                });
                return;
            }
        }
        let batch =
            match schema::read(&inner.pool, &inner.names, cursor, Some(spec.relid), BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    shared.end(e);
                    return;
                }
            };
        if batch.pruned_through > cursor {
            shared.end(Error::ResyncRequired {
                pruned_before: batch.pruned_through + 1,
            });
            return;
        }
        for row in &batch.rows {
            events.clear();
            spec.events(row, &mut events);
            for event in events.drain(..) {
                let ends = event.ends().map(|(t, r)| (t.to_owned(), r));
                if sender.send(event).await.is_err() {
                    return;
                }
                if let Some((table, reason)) = ends {
                    shared.end(Error::Ended { table, reason });
                    return;
                }
            }
        }
        cursor = batch.through;
    }
}

/// The poller: reads on every nudge and every `poll_interval`.
async fn run<P: Pool>(inner: Arc<Inner<P>>, stream: db_core::NotificationStream) {
    let mut last_prune = Instant::now();
    let mut last_detect: Option<Instant> = None;
    let mut failures = 0u32;
    // Idle, the poller listens and reads on every nudge. Busy (a poll found
    // several changes), it reads on its own clock and stops listening until
    // a poll finds nothing, so that a stream of commits does not wake it (and,
    // on a server, its listener session) once per commit.
    let mut stream = Some(stream);
    let mut busy = false;
    let mut listen_failed = false;
    loop {
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        if stream.is_none() && !busy {
            // Listening again before the next poll, which reads whatever was
            // committed while nobody listened.
            match inner.pool.listen(schema::CHANNEL).await {
                Ok(s) => {
                    if listen_failed {
                        tracing::info!(target: "changefeed", "listening for changes again");
                    }
                    listen_failed = false;
                    stream = Some(s);
                }
                Err(db_core::Error::Closed) => {
                    close_all(&inner, || Error::Closed);
                    return;
                }
                Err(e) => {
                    // Once per outage: it is retried every poll interval.
                    if !listen_failed {
                        tracing::warn!(target: "changefeed", error = %e, "listening for changes failed; polling every interval until it works");
                    }
                    listen_failed = true;
                }
            }
        }
        if last_detect.is_none_or(|at| at.elapsed() >= inner.options.poll_interval) {
            last_detect = Some(Instant::now());
            if let Err(e) = schema::detect(&inner.pool, &inner.names).await {
                tracing::warn!(target: "changefeed", error = %e, "checking the watched tables for changes failed");
            }
        }
        let started = Instant::now();
        match poll(&inner).await {
            Ok(ticked) => {
                failures = 0;
                busy = ticked > u64::from(!busy);
            }
            Err(Error::Db(db_core::Error::Closed)) | Err(Error::Closed) => {
                close_all(&inner, || Error::Closed);
                return;
            }
            Err(e) => {
                failures += 1;
                busy = false;
                tracing::warn!(target: "changefeed", error = %e, failures, "reading the change log failed; retrying");
            }
        }
        let retention = inner.options.retention;
        if (retention.max_age.is_some() || retention.max_rows.is_some())
            && last_prune.elapsed() >= inner.options.prune_interval
        {
            last_prune = Instant::now();
            if let Err(e) = schema::prune(&inner.pool, &inner.names, retention).await {
                tracing::warn!(target: "changefeed", error = %e, "pruning the change log failed");
            }
        }
        if busy {
            stream = None;
            let gap = (started.elapsed() * PACE).clamp(BUSY_GAP, inner.options.poll_interval);
            tokio::time::sleep(gap).await;
            continue;
        }
        let pause = inner.options.poll_interval * failures.clamp(1, 20);
        let Some(nudges) = stream.as_mut() else {
            tokio::time::sleep(pause).await;
            continue;
        };
        tokio::select! {
            event = nudges.recv() => match event {
                Ok(_) => {
                    // Coalesce: one read covers every nudge of the interval.
                    if !inner.options.coalesce.is_zero() {
                        tokio::time::sleep(inner.options.coalesce).await;
                    }
                    while let Ok(Some(_)) = nudges.try_recv() {}
                }
                Err(_) => {
                    close_all(&inner, || Error::Closed);
                    return;
                }
            },
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Gives offsets to newly committed changes and fans out everything after
/// the poller's position. Returns how many offsets it gave.
#[tracing::instrument(name = "changefeed.poll", level = "debug", skip_all, fields(schema = %inner.names.schema))]
async fn poll<P: Pool>(inner: &Inner<P>) -> Result<u64> {
    let ticked = schema::tick_pool(&inner.pool, &inner.names).await?;
    loop {
        let (after, idle) = {
            let hub = inner.hub();
            (hub.last, hub.subs.is_empty())
        };
        if idle {
            let (last_pos, _) = schema::positions(&inner.pool, &inner.names).await?;
            let mut hub = inner.hub();
            // Skipping ahead is only right while nobody would miss it.
            if hub.subs.is_empty() {
                hub.last = hub.last.max(last_pos);
                return Ok(ticked);
            }
            continue;
        }
        let batch = schema::read(&inner.pool, &inner.names, after, None, BATCH).await?;
        fan_out(
            &mut inner.hub(),
            &batch.rows,
            batch.pruned_through,
            batch.through,
        );
        if !batch.more {
            return Ok(ticked);
        }
    }
}

fn fan_out(hub: &mut Hub, rows: &[LogRow], pruned_through: i64, through: i64) {
    hub.subs.retain(|live| {
        if pruned_through > live.cursor {
            live.shared.end(Error::ResyncRequired {
                pruned_before: pruned_through + 1,
            });
            return false;
        }
        true
    });
    let router = Router::new(hub.subs.iter().map(|live| &*live.spec));
    let mut ended = vec![false; hub.subs.len()];
    let mut targets = Vec::new();
    let mut events = Vec::new();
    for row in rows {
        router.route(row, &mut targets);
        for &i in &targets {
            let (Some(live), Some(false)) = (hub.subs.get(i), ended.get(i).copied()) else {
                continue;
            };
            if row.pos <= live.cursor {
                continue;
            }
            events.clear();
            live.spec.events(row, &mut events);
            if events.is_empty() {
                continue;
            }
            // All of one change's events or none, so that the resume offset
            // is exact: everything before this change was queued.
            if live.sender.capacity() < events.len() {
                live.shared.end(Error::Lagged {
                    last_offset: row.pos - 1,
                });
                ended[i] = true;
                continue;
            }
            for event in events.drain(..) {
                let ends = event.ends().map(|(t, r)| (t.to_owned(), r));
                if live.sender.try_send(event).is_err() {
                    ended[i] = true;
                    break;
                }
                if let Some((table, reason)) = ends {
                    live.shared.end(Error::Ended { table, reason });
                    ended[i] = true;
                    break;
                }
            }
        }
    }
    let mut ended = ended.into_iter();
    hub.subs.retain_mut(|live| {
        live.cursor = live.cursor.max(through);
        !ended.next().unwrap_or(true) && !live.sender.is_closed()
    });
    hub.last = hub.last.max(through);
}
