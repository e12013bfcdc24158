//! A live list of one account's projects, kept current by the change feed.
//!
//! The feed's filters cannot say "the `users` map has this key" (they
//! compare columns with values; `IS NULL` is refused on `jsonb`), so the
//! list subscribes to every change of `projects` and keeps the rows whose
//! `users` name the account: a project that gains the account is added, one
//! that loses it (collaborator removed) or is deleted leaves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use changefeed::{EndReason, Event, Feed, JsonRow, Query, Start};
use db::Pool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::hub::PROJECTS;
use crate::model::{PROJECT_FEED_COLUMNS, Project};

/// The projects of one account (owner or collaborator, not deleted), as of
/// the last change the feed delivered.
///
/// A task follows the feed: it reads an initial snapshot (the list becomes
/// [ready](LiveProjects::is_ready) at its end), then applies every change.
/// If it falls behind it resumes after the last offset it applied; if the
/// log no longer holds that offset, or the table's columns change, it reads
/// a new snapshot and swaps it in whole. Dropping the list stops the task.
#[derive(Debug)]
pub struct LiveProjects {
    account: Uuid,
    state: watch::Receiver<Live>,
    task: JoinHandle<()>,
}

/// What the following task shares with readers.
#[derive(Debug, Default)]
struct Live {
    projects: BTreeMap<Uuid, Project>,
    /// The first snapshot was applied.
    ready: bool,
    /// The offset of the last change applied.
    offset: Option<i64>,
    /// The last error the task met (it retries), or why it ended.
    last_error: Option<String>,
    /// The task ended: the feed was closed, or its table's feed ended.
    ended: bool,
    /// Subscriptions made after the first.
    resubscriptions: u64,
}

impl LiveProjects {
    pub(crate) async fn start<P: Pool>(feed: Arc<Feed<P>>, account: Uuid) -> Result<LiveProjects> {
        // The first subscription is made here, so that a feed that is not
        // there fails the call rather than the task.
        let first = feed.subscribe(query(), Start::Snapshot).await?;
        let (sender, state) = watch::channel(Live::default());
        let task = tokio::spawn(follow(feed, account, first, sender));
        Ok(LiveProjects {
            account,
            state,
            task,
        })
    }

    /// The account whose projects these are.
    pub fn account(&self) -> Uuid {
        self.account
    }

    /// Whether the initial snapshot has been applied.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().ready
    }

    /// Waits until the initial snapshot has been applied.
    pub async fn ready(&self) -> Result<()> {
        self.wait(|_| true).await
    }

    /// The projects now, the most recently edited first (the order of
    /// [`Hub::list_projects`](crate::Hub::list_projects)).
    pub fn projects(&self) -> Vec<Project> {
        let mut v: Vec<Project> = self.state.borrow().projects.values().cloned().collect();
        v.sort_by(|a, b| {
            b.last_edited
                .cmp(&a.last_edited)
                .then(a.project_id.cmp(&b.project_id))
        });
        v
    }

    /// The project `id`, if it is in the list.
    pub fn get(&self, id: Uuid) -> Option<Project> {
        self.state.borrow().projects.get(&id).cloned()
    }

    /// How many projects the list holds.
    pub fn len(&self) -> usize {
        self.state.borrow().projects.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset of the last change applied.
    pub fn offset(&self) -> Option<i64> {
        self.state.borrow().offset
    }

    /// How many times the list subscribed again: after falling behind
    /// (resuming after its last offset), after a resync (a new snapshot),
    /// or after a failure of the database.
    pub fn resubscriptions(&self) -> u64 {
        self.state.borrow().resubscriptions
    }

    /// The last error the following task met, if any (it retries).
    pub fn last_error(&self) -> Option<String> {
        self.state.borrow().last_error.clone()
    }

    /// Waits until the list is ready and `done` holds for its projects.
    /// [`changefeed::Error::Closed`] if the list stops following first.
    /// Not bounded in time: wrap it in `tokio::time::timeout`.
    pub async fn wait(&self, mut done: impl FnMut(&BTreeMap<Uuid, Project>) -> bool) -> Result<()> {
        let mut state = self.state.clone();
        let live = state
            .wait_for(|live| live.ended || (live.ready && done(&live.projects)))
            .await
            .map_err(|_| Error::Feed(changefeed::Error::Closed))?;
        if live.ready && !live.ended {
            return Ok(());
        }
        Err(Error::Feed(changefeed::Error::Closed))
    }
}

impl Drop for LiveProjects {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query() -> Query {
    Query::table(PROJECTS).columns(PROJECT_FEED_COLUMNS)
}

/// Slowest retry after a failed subscription.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Applies the subscription's events, and subscribes again when it ends
/// for a reason a new subscription cures.
async fn follow<P: Pool>(
    feed: Arc<Feed<P>>,
    account: Uuid,
    first: changefeed::Subscription,
    sender: watch::Sender<Live>,
) {
    let mut current = (first, Start::Snapshot);
    let mut backoff = Duration::from_millis(50);
    loop {
        let (mut sub, start) = current;
        // A snapshot is built aside and swapped in whole at its end, so
        // readers never see a partial list.
        let mut pending = (start == Start::Snapshot).then(BTreeMap::new);
        let resume = loop {
            match sub.recv().await {
                Ok(event) => {
                    backoff = Duration::from_millis(50);
                    apply(event, account, &mut pending, &sender);
                }
                Err(e) => break e,
            }
        };
        drop(sub);
        let offset = sender.borrow().offset;
        let start = match &resume {
            // Resume without a gap after what was applied, unless a
            // snapshot was under way (its offset is only good at its end).
            changefeed::Error::Lagged { .. } if pending.is_none() => {
                offset.map_or(Start::Snapshot, Start::AfterOffset)
            }
            changefeed::Error::Lagged { .. } | changefeed::Error::ResyncRequired { .. } => {
                Start::Snapshot
            }
            changefeed::Error::Ended {
                reason: EndReason::SchemaChanged,
                ..
            } => Start::Snapshot,
            changefeed::Error::Closed | changefeed::Error::Ended { .. } => {
                end(&sender, &resume);
                return;
            }
            // The database failed: try again from where we were.
            _ => match (pending.is_none(), offset) {
                (true, Some(o)) => Start::AfterOffset(o),
                _ => Start::Snapshot,
            },
        };
        tracing::debug!(%account, error = %resume, ?start, "live projects: subscribing again");
        current = loop {
            match feed.subscribe(query(), start).await {
                Ok(s) => {
                    sender.send_modify(|live| live.resubscriptions += 1);
                    break (s, start);
                }
                Err(e @ (changefeed::Error::Closed | changefeed::Error::NotEnabled(_))) => {
                    end(&sender, &e);
                    return;
                }
                Err(e) => {
                    tracing::warn!(%account, error = %e, "live projects: subscribing failed; retrying");
                    sender.send_modify(|live| live.last_error = Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
    }
}

fn end(sender: &watch::Sender<Live>, why: &changefeed::Error) {
    sender.send_modify(|live| {
        live.ended = true;
        live.last_error = Some(why.to_string());
    });
}

/// Applies one event to the snapshot being built, or to the live list.
fn apply(
    event: Event,
    account: Uuid,
    pending: &mut Option<BTreeMap<Uuid, Project>>,
    sender: &watch::Sender<Live>,
) {
    let offset = event.offset();
    match event {
        Event::SnapshotEnd { offset } => {
            let projects = pending.take().unwrap_or_default();
            sender.send_modify(|live| {
                live.projects = projects;
                live.ready = true;
                live.offset = Some(offset);
            });
        }
        Event::SnapshotRow { row } | Event::Insert { row, .. } | Event::Update { row, .. } => {
            let change = decode(row, account);
            on_target(
                pending,
                sender,
                offset,
                |projects, live_error| match change {
                    Ok((id, Some(project))) => {
                        projects.insert(id, project);
                    }
                    Ok((id, None)) => {
                        projects.remove(&id);
                    }
                    Err((id, e)) => {
                        // A row that does not read as a project leaves the list
                        // rather than stay stale.
                        tracing::warn!(%account, error = %e, "live projects: unreadable image");
                        projects.remove(&id);
                        *live_error = Some(e.to_string());
                    }
                },
            );
        }
        Event::Delete { key, .. } => {
            let id = key_of(&key);
            on_target(pending, sender, offset, |projects, _| {
                if let Some(id) = id {
                    projects.remove(&id);
                }
            });
        }
        Event::Truncate { .. } => {
            on_target(pending, sender, offset, |projects, _| projects.clear());
        }
        // A rename goes on; a change of columns ends the subscription,
        // which `follow` answers with a new snapshot; `End` is followed by
        // the subscription's end.
        _ => {}
    }
}

/// Runs `change` on the snapshot being built, or else on the live list
/// (recording `offset`).
fn on_target(
    pending: &mut Option<BTreeMap<Uuid, Project>>,
    sender: &watch::Sender<Live>,
    offset: Option<i64>,
    change: impl FnOnce(&mut BTreeMap<Uuid, Project>, &mut Option<String>),
) {
    match pending {
        Some(projects) => {
            let mut error = None;
            change(projects, &mut error);
            if error.is_some() {
                sender.send_modify(|live| live.last_error = error);
            }
        }
        None => sender.send_modify(|live| {
            change(&mut live.projects, &mut live.last_error);
            if offset.is_some() {
                live.offset = offset;
            }
        }),
    }
}

/// The project an image is of, and the project if it belongs in the list.
fn decode(
    row: JsonRow,
    account: Uuid,
) -> std::result::Result<(Uuid, Option<Project>), (Uuid, serde_json::Error)> {
    let id = key_of(&row).unwrap_or(Uuid::nil());
    let project: Project =
        serde_json::from_value(serde_json::Value::Object(row)).map_err(|e| (id, e))?;
    let keep = project.is_member(account) && !project.deleted;
    Ok((id, keep.then_some(project)))
}

/// The `project_id` of a row image or key.
fn key_of(row: &JsonRow) -> Option<Uuid> {
    row.get("project_id")?.as_str()?.parse().ok()
}
