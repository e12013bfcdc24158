//! The pool's listening session: one background task that owns a
//! [`PgListener`] and serves the pool's [`ListenerHub`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use db_core::backend::{ListenCommand, ListenerHub};
use db_core::{Notification, Result};
use sqlx::postgres::{PgListener, PgNotification, Postgres};
use tokio::sync::{mpsc, watch};

use crate::error::{Target, breaks_connection, from_sqlx};

/// The first and the longest pause between two tries to re-establish a lost
/// listening connection.
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(5));

/// A connection that lasted this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How long closing waits for the listening connection to be returned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The task that carries out the hub's LISTEN/UNLISTEN commands and
/// dispatches notifications.
///
/// It uses a dedicated sqlx pool of one connection, so listening never takes
/// one of the main pool's `max_connections`. The connection is opened on the
/// first `Listen`. When it is lost, the task opens a new one, re-issues
/// `LISTEN` for every channel, and only then tells subscribers
/// [`ListenEvent::Reconnected`](db_core::ListenEvent::Reconnected), retrying
/// with a backoff from 100 ms to 5 s. The task ends on shutdown (pool closed
/// or dropped) or when the hub's command channel closes.
pub(crate) struct ListenerTask {
    pub(crate) hub: Arc<ListenerHub>,
    pub(crate) commands: mpsc::UnboundedReceiver<ListenCommand>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) pool: sqlx::Pool<Postgres>,
    pub(crate) target: Target,
}

/// The live listening connection and what it listens to.
struct Session {
    listener: Option<PgListener>,
    channels: BTreeSet<String>,
    connected_at: Instant,
    /// Consecutive losses without a stable connection in between.
    losses: u32,
}

impl ListenerTask {
    pub(crate) async fn run(self) {
        let ListenerTask {
            hub,
            mut commands,
            mut shutdown,
            pool,
            target,
        } = self;
        let mut session = Session {
            listener: None,
            channels: BTreeSet::new(),
            connected_at: Instant::now(),
            losses: 0,
        };
        loop {
            if session.listener.is_none() && !session.channels.is_empty() {
                // The connection was lost while channels were listened to.
                let mut link = Link {
                    pool: &pool,
                    target: &target,
                    shutdown: &mut shutdown,
                    commands: &mut commands,
                    hub: &hub,
                };
                match reestablish(&mut session, &mut link).await {
                    Some(()) => hub.reconnected(),
                    None => break,
                }
            }
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                command = commands.recv() => match command {
                    None => break,
                    Some(ListenCommand::Listen(channel, ack)) => {
                        let result = listen(&mut session, &pool, &target, &channel).await;
                        let _ = ack.send(result);
                    }
                    Some(ListenCommand::Unlisten(channel)) => {
                        if hub.unlisten_confirmed(&channel) {
                            unlisten(&mut session, &channel).await;
                        }
                    }
                    Some(other) => {
                        tracing::warn!(target: "db::listen", ?other, "unsupported listener command");
                    }
                },
                received = next(&mut session.listener) => match received {
                    Ok(Some(n)) => hub.dispatch(notification(&n)),
                    Ok(None) => {
                        tracing::warn!(target: "db::listen", "the listening connection was lost");
                        lost(&mut session);
                    }
                    Err(error) => {
                        tracing::warn!(
                            target: "db::listen",
                            %error,
                            "receiving notifications failed; reconnecting"
                        );
                        lost(&mut session);
                    }
                },
            }
        }
        hub.close();
        // Dropping the listener returns its connection (after `UNLISTEN *`).
        drop(session);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, pool.close()).await;
    }
}

/// Resolves once the pool is closed or dropped.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|closed| *closed).await;
}

/// The next notification; `Ok(None)` when the connection was lost. Pending
/// forever while there is no connection.
async fn next(listener: &mut Option<PgListener>) -> sqlx::Result<Option<PgNotification>> {
    match listener {
        Some(l) => l.try_recv().await,
        None => std::future::pending().await,
    }
}

fn notification(n: &PgNotification) -> Notification {
    Notification {
        channel: n.channel().to_owned(),
        payload: n.payload().to_owned(),
        process_id: i32::try_from(n.process_id()).unwrap_or(i32::MAX),
    }
}

/// Forgets a lost connection; the main loop re-establishes it if channels
/// are listened to.
fn lost(session: &mut Session) {
    session.listener = None;
    if session.connected_at.elapsed() >= STABLE_AFTER {
        session.losses = 0;
    }
    session.losses += 1;
}

/// Opens a listening connection and issues `LISTEN` for `channels`.
async fn connect(
    pool: &sqlx::Pool<Postgres>,
    channels: &BTreeSet<String>,
) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    // This task decides when to stop, and it re-establishes lost connections
    // itself so it can tell subscribers.
    listener.ignore_pool_close_event(true);
    listener.eager_reconnect(false);
    if !channels.is_empty() {
        listener
            .listen_all(channels.iter().map(String::as_str))
            .await?;
    }
    Ok(listener)
}

/// What re-establishing a connection works with.
struct Link<'a> {
    pool: &'a sqlx::Pool<Postgres>,
    target: &'a Target,
    shutdown: &'a mut watch::Receiver<bool>,
    commands: &'a mut mpsc::UnboundedReceiver<ListenCommand>,
    hub: &'a ListenerHub,
}

/// Re-establishes the connection with every channel, backing off (with
/// jitter, so that many processes do not retry in step) between failures;
/// `None` on shutdown. Commands keep being served meanwhile: a new `LISTEN`
/// fails at once with the reason, instead of waiting for the server.
async fn reestablish(session: &mut Session, link: &mut Link<'_>) -> Option<()> {
    let mut pause = match session.losses {
        0 | 1 => Duration::ZERO,
        n => (RECONNECT_BACKOFF.0 * 2u32.saturating_pow(n - 2)).min(RECONNECT_BACKOFF.1),
    };
    let mut last_error = String::from("the connection was lost");
    loop {
        let wake = tokio::time::Instant::now() + jittered(pause);
        loop {
            tokio::select! {
                biased;
                () = stopped(link.shutdown) => return None,
                () = tokio::time::sleep_until(wake) => break,
                command = link.commands.recv() => match command {
                    None => return None,
                    Some(ListenCommand::Listen(channel, ack)) => {
                        let _ = ack.send(Err(db_core::Error::backend(
                            format!(
                                "LISTEN on channel {channel:?}: the listening connection to {} \
                                 is being re-established",
                                link.target.description()
                            ),
                            std::io::Error::other(last_error.clone()),
                        )));
                    }
                    Some(ListenCommand::Unlisten(channel)) => {
                        if link.hub.unlisten_confirmed(&channel) {
                            session.channels.remove(&channel);
                        }
                    }
                    Some(other) => {
                        tracing::warn!(target: "db::listen", ?other, "unsupported listener command");
                    }
                },
            }
        }
        if session.channels.is_empty() {
            // Nobody listens any more: nothing to re-establish or report.
            return Some(());
        }
        let attempt = tokio::select! {
            () = stopped(link.shutdown) => return None,
            attempt = connect(link.pool, &session.channels) => attempt,
        };
        match attempt {
            Ok(listener) => {
                tracing::info!(
                    target: "db::listen",
                    channels = session.channels.len(),
                    "the listening connection was re-established"
                );
                session.listener = Some(listener);
                session.connected_at = Instant::now();
                return Some(());
            }
            Err(error) => {
                pause = (pause * 2).clamp(RECONNECT_BACKOFF.0, RECONNECT_BACKOFF.1);
                last_error = error.to_string();
                tracing::warn!(
                    target: "db::listen",
                    server = link.target.description(),
                    %error,
                    retry_in = ?pause,
                    "re-establishing the listening connection failed"
                );
            }
        }
    }
}

/// `pause` give or take a fifth, from the clock's nanoseconds: enough to
/// spread the retries of many processes without a random number generator.
fn jittered(pause: Duration) -> Duration {
    if pause.is_zero() {
        return pause;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let permille = 800 + u64::from(nanos % 401);
    let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(millis.saturating_mul(permille) / 1000)
}

/// Issues `LISTEN` for `channel` (opening the connection on first use).
async fn listen(
    session: &mut Session,
    pool: &sqlx::Pool<Postgres>,
    target: &Target,
    channel: &str,
) -> Result<()> {
    let listener = match &mut session.listener {
        Some(listener) => listener,
        None => {
            let started = Instant::now();
            match connect(pool, &session.channels).await {
                Ok(listener) => {
                    session.connected_at = Instant::now();
                    session.listener.insert(listener)
                }
                Err(sqlx::Error::PoolTimedOut) => {
                    return Err(target.timed_out(started.elapsed(), pool.size() == 0).await);
                }
                Err(e) => return Err(target.connect_error(e)),
            }
        }
    };
    if session.channels.contains(channel) {
        return Ok(());
    }
    match listener.listen(channel).await {
        Ok(()) => {
            session.channels.insert(channel.to_owned());
            Ok(())
        }
        Err(e) => {
            if breaks_connection(&e) {
                lost(session);
            }
            Err(from_sqlx(e, || format!("LISTEN on channel {channel:?}")))
        }
    }
}

/// Issues `UNLISTEN` for `channel`; failures are logged (the channel is
/// forgotten either way, and a lost connection is re-established without it).
async fn unlisten(session: &mut Session, channel: &str) {
    if !session.channels.remove(channel) {
        return;
    }
    let Some(listener) = &mut session.listener else {
        return;
    };
    if let Err(error) = listener.unlisten(channel).await {
        tracing::warn!(target: "db::listen", %error, channel, "UNLISTEN failed");
        if breaks_connection(&error) {
            lost(session);
        }
    }
}
