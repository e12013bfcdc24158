//! The rows the slice reads and writes, as the fixture schema holds them.
//!
//! `timestamp` columns (without time zone) hold UTC and are read as
//! [`NaiveDateTime`]: the change feed's JSON images write them without an
//! offset, so the same struct reads from a query ([`db::FromRow`]) and from
//! an image (serde).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// An account (`accounts`), the columns the slice uses.
#[derive(Debug, Clone, PartialEq, db::FromRow)]
pub struct Account {
    /// `account_id`.
    pub account_id: Uuid,
    /// `email_address`, lower-cased; unique.
    pub email_address: Option<String>,
    /// `first_name`.
    pub first_name: Option<String>,
    /// `last_name`.
    pub last_name: Option<String>,
    /// `created` (UTC).
    pub created: Option<NaiveDateTime>,
}

/// What [`Hub::create_account`](crate::Hub::create_account) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The email address (stored lower-cased).
    pub email_address: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
}

/// A member's role on a project, as the fixture's `projects.users` map
/// records it (`{"<account_id>": {"group": "owner"}, ...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// The project's owner (one per project).
    Owner,
    /// A collaborator.
    Collaborator,
    /// A group this slice does not know (written by another component).
    #[serde(other)]
    Other,
}

/// One entry of `projects.users`. Other keys of the entry (`hide`,
/// `upgrades`) are ignored when read and kept as they are by the slice's
/// writes, which change only whole entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's role.
    pub group: Group,
}

/// `projects.users`: account id to membership.
pub type Users = BTreeMap<Uuid, Member>;

/// Where a project is in its life (`projects.state.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, never started.
    Opened,
    /// Being started on a host.
    Starting,
    /// Running on a host.
    Running,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// A state this slice does not know (written by another component).
    #[serde(other)]
    Unknown,
}

impl RunState {
    /// Whether a project in state `from` (`None`: no state yet) may move
    /// to `self`.
    pub fn may_follow(self, from: Option<RunState>) -> bool {
        use RunState::*;
        match (from, self) {
            (_, Unknown | Opened) => false,
            (None | Some(Unknown), _) => true,
            (Some(Opened | Stopped), Starting | Running) => true,
            (Some(Starting), Running | Stopped) => true,
            (Some(Running), Stopping | Stopped) => true,
            (Some(Stopping), Stopped) => true,
            _ => false,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Opened => "opened",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
            RunState::Unknown => "an unknown state",
        })
    }
}

/// `projects.state`: the state and when the project entered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    /// The state.
    pub state: RunState,
    /// When it was entered (the hub's clock).
    pub time: DateTime<Utc>,
    /// Why the last transition failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A project (`projects`), the columns the slice uses. Read from queries
/// ([`db::FromRow`]) and from the change feed's row images (serde).
#[derive(Debug, Clone, PartialEq, db::FromRow, Deserialize)]
pub struct Project {
    /// `project_id`.
    pub project_id: Uuid,
    /// `title`.
    pub title: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `users`: the owner and the collaborators (empty for SQL `NULL`).
    #[db(json)]
    #[serde(default, deserialize_with = "null_as_default")]
    pub users: Users,
    /// `state`.
    #[db(json(nullable))]
    #[serde(default)]
    pub state: Option<ProjectState>,
    /// `created` (UTC).
    pub created: Option<NaiveDateTime>,
    /// `last_edited` (UTC).
    pub last_edited: Option<NaiveDateTime>,
    /// `deleted` (false for SQL `NULL`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub deleted: bool,
}

impl Project {
    /// Whether `account` is the owner or a collaborator.
    pub fn is_member(&self, account: Uuid) -> bool {
        self.users.contains_key(&account)
    }

    /// The owner, if the map names one.
    pub fn owner(&self) -> Option<Uuid> {
        self.users
            .iter()
            .find(|(_, m)| m.group == Group::Owner)
            .map(|(id, _)| *id)
    }

    /// The state, if the project has one.
    pub fn run_state(&self) -> Option<RunState> {
        self.state.as_ref().map(|s| s.state)
    }
}

/// The columns of [`Project`] as every query of the slice selects them (the
/// feed's images carry the same columns, with SQL `NULL` where the query
/// coalesces).
pub(crate) const PROJECT_COLUMNS: &str = "project_id, title, description, \
     COALESCE(users, '{}'::jsonb) AS users, state, created, last_edited, \
     COALESCE(deleted, false) AS deleted";

/// The columns a live list subscribes to (the key is always included).
pub(crate) const PROJECT_FEED_COLUMNS: [&str; 7] = [
    "title",
    "description",
    "users",
    "state",
    "created",
    "last_edited",
    "deleted",
];

/// What a host reports in a heartbeat (`project_hosts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// `id`.
    pub host_id: Uuid,
    /// `name`.
    pub name: String,
    /// `region`.
    pub region: String,
    /// `status` (`running`, `draining`, ...).
    pub status: String,
    /// `version` of the host's software.
    pub version: String,
    /// `capacity`.
    pub capacity: HostCapacity,
}

/// `project_hosts.capacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapacity {
    /// CPU cores.
    pub cores: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Projects running now.
    pub projects: u32,
}

/// A host (`project_hosts`), the columns the slice uses.
#[derive(Debug, Clone, PartialEq, db::FromRow)]
pub struct Host {
    /// `id`.
    pub id: Uuid,
    /// `name`.
    pub name: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `status`.
    pub status: Option<String>,
    /// `version`.
    pub version: Option<String>,
    /// `last_seen` (UTC): the last heartbeat.
    pub last_seen: Option<NaiveDateTime>,
    /// `capacity`.
    #[db(json(nullable))]
    pub capacity: Option<HostCapacity>,
}

/// Reads JSON `null` as the type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use RunState::*;
        assert!(Running.may_follow(Some(Opened)));
        assert!(Stopped.may_follow(Some(Running)));
        assert!(Running.may_follow(Some(Stopped)));
        assert!(Running.may_follow(None));
        assert!(!Stopped.may_follow(Some(Stopped)));
        assert!(!Opened.may_follow(Some(Stopped)));
        assert!(!Stopping.may_follow(Some(Opened)));
        assert!(!Unknown.may_follow(None));
    }

    #[test]
    fn a_feed_image_reads_as_a_project() {
        let image = serde_json::json!({
            "project_id": "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
            "title": "Thesis",
            "description": null,
            "users": {"6f1c1d2e-3a4b-4c5d-8e9f-000000000001": {"group": "owner", "hide": false}},
            "state": {"state": "running", "time": "2026-11-30T12:00:00.5Z"},
            "created": "2026-11-30T11:59:00.123456",
            "last_edited": null,
            "deleted": null,
        });
        let p: Project = serde_json::from_value(image).expect("a project");
        assert_eq!(p.title.as_deref(), Some("Thesis"));
        assert_eq!(p.run_state(), Some(RunState::Running));
        assert_eq!(
            p.owner().map(|u| u.as_u128()),
            Some(0x6f1c1d2e3a4b4c5d8e9f000000000001)
        );
        assert!(!p.deleted);
        let none: Project = serde_json::from_value(serde_json::json!({
            "project_id": "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
            "users": null, "state": {"state": "archived", "time": "2026-11-30T12:00:00Z"}
        }))
        .expect("nulls and unknown states read");
        assert!(none.users.is_empty());
        assert_eq!(none.run_state(), Some(RunState::Unknown));
    }
}
