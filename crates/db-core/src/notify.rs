//! LISTEN/NOTIFY as bounded, lag-aware streams, shared by every backend.
//!
//! A backend owns one [`ListenerHub`] per pool. Subscribers get a
//! [`NotificationStream`] per channel; the hub fans each notification out to
//! that channel's subscribers through a bounded buffer, so a slow subscriber
//! is told it lagged instead of growing memory without limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::{Error, Result};

/// One notification, as delivered by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel.
    pub channel: String,
    /// The payload (empty when none was given).
    pub payload: String,
    /// The server process that sent it.
    pub process_id: i32,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenEvent {
    /// A notification on the subscribed channel.
    Notification(Arc<Notification>),
    /// The subscriber fell behind and this many notifications were dropped
    /// for it. Resynchronise from the source of truth.
    Lagged(u64),
    /// The listening connection was lost and has been re-established (and
    /// `LISTEN` re-issued); notifications sent meanwhile may be missing.
    Reconnected,
}

/// A request from the hub to the backend's listening session.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenCommand {
    /// Issue `LISTEN` for the channel, then acknowledge.
    Listen(String, oneshot::Sender<Result<()>>),
    /// Issue `UNLISTEN` for the channel if [`ListenerHub::unlisten_confirmed`]
    /// still agrees.
    Unlisten(String),
}

struct Channel {
    sender: broadcast::Sender<ListenEvent>,
    subscribers: usize,
}

/// The per-pool fan-out point between one listening session and many
/// subscribers.
pub struct ListenerHub {
    channels: Mutex<HashMap<String, Channel>>,
    capacity: usize,
    commands: mpsc::UnboundedSender<ListenCommand>,
}

impl std::fmt::Debug for ListenerHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerHub")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl ListenerHub {
    /// A hub whose subscribers buffer up to `capacity` events each, and the
    /// receiver of the commands the backend must carry out in order.
    ///
    /// The command queue holds at most one entry per subscribe or unsubscribe
    /// in flight, so it is bounded by the number of live subscriptions.
    pub fn new(capacity: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<ListenCommand>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let hub = ListenerHub {
            channels: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            commands,
        };
        (Arc::new(hub), rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to `channel`; returns once `LISTEN` is in effect.
    pub async fn subscribe(self: &Arc<Self>, channel: &str) -> Result<NotificationStream> {
        let receiver = {
            let mut channels = self.lock();
            let entry = channels
                .entry(channel.to_owned())
                .or_insert_with(|| Channel {
                    sender: broadcast::channel(self.capacity).0,
                    subscribers: 0,
                });
            entry.subscribers += 1;
            entry.sender.subscribe()
        };
        let stream = NotificationStream {
            receiver,
            hub: Arc::clone(self),
            channel: channel.to_owned(),
        };
        // LISTEN is idempotent, so every subscription confirms it; this also
        // orders it after any UNLISTEN queued by an earlier subscriber.
        let (ack, done) = oneshot::channel();
        self.commands
            .send(ListenCommand::Listen(channel.to_owned(), ack))
            .map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)??;
        Ok(stream)
    }

    /// Delivers a notification to the subscribers of its channel.
    pub fn dispatch(&self, notification: Notification) {
        let channels = self.lock();
        if let Some(ch) = channels.get(&notification.channel) {
            // An error only means nobody is subscribed right now.
            let _ = ch
                .sender
                .send(ListenEvent::Notification(Arc::new(notification)));
        }
    }

    /// Tells every subscriber that the listening connection was re-established.
    pub fn reconnected(&self) {
        for ch in self.lock().values() {
            let _ = ch.sender.send(ListenEvent::Reconnected);
        }
    }

    /// The channels that currently have subscribers, to re-`LISTEN` after a
    /// reconnect.
    pub fn channels(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, c)| c.subscribers > 0)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Called by the backend before carrying out an `Unlisten`: true (and the
    /// channel is forgotten) only if nobody subscribed again meanwhile.
    pub fn unlisten_confirmed(&self, channel: &str) -> bool {
        let mut channels = self.lock();
        match channels.get(channel) {
            Some(c) if c.subscribers == 0 => {
                channels.remove(channel);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Ends every subscription: streams then yield [`Error::Closed`].
    pub fn close(&self) {
        self.lock().clear();
    }

    fn release(&self, channel: &str) {
        let mut channels = self.lock();
        if let Some(c) = channels.get_mut(channel) {
            c.subscribers = c.subscribers.saturating_sub(1);
            if c.subscribers == 0 {
                let _ = self
                    .commands
                    .send(ListenCommand::Unlisten(channel.to_owned()));
            }
        }
    }
}

/// The notifications of one channel. Dropping it unsubscribes.
#[derive(Debug)]
pub struct NotificationStream {
    receiver: broadcast::Receiver<ListenEvent>,
    hub: Arc<ListenerHub>,
    channel: String,
}

impl NotificationStream {
    /// The channel name.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Waits for the next event; [`Error::Closed`] once the pool is closed.
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Result<ListenEvent> {
        match self.receiver.recv().await {
            Ok(event) => Ok(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Ok(ListenEvent::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(Error::Closed),
        }
    }

    /// The next event if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<ListenEvent>> {
        match self.receiver.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Ok(Some(ListenEvent::Lagged(n))),
            Err(broadcast::error::TryRecvError::Closed) => Err(Error::Closed),
        }
    }

    /// The events as a [`futures::Stream`], ending when the pool closes.
    pub fn into_stream(self) -> impl futures::Stream<Item = ListenEvent> + Send {
        futures::stream::unfold(self, |mut s| async move {
            s.recv().await.ok().map(|event| (event, s))
        })
    }
}

impl Drop for NotificationStream {
    fn drop(&mut self) {
        self.hub.release(&self.channel);
    }
}
