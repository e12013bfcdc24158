//! The operations: accounts, projects, collaborators, states, heartbeats.

use std::sync::Arc;
use std::time::Duration;

use changefeed::Feed;
use chrono::{NaiveDateTime, Timelike, Utc};
use db::{Executor, Json, Pool, params};
use uuid::Uuid;

use crate::error::{Error, Result, StateName};
use crate::live::LiveProjects;
use crate::model::{
    Account, Group, Heartbeat, Host, Member, NewAccount, PROJECT_COLUMNS, Project, ProjectState,
    RunState, Users,
};

/// The table whose changes the live lists follow.
pub(crate) const PROJECTS: &str = "projects";

/// The slice of the hub on one pool, with the change feed the live lists
/// of projects follow.
pub struct Hub<P: Pool> {
    pool: P,
    /// `None` for a hub that serves no live lists ([`Hub::without_feed`]).
    feed: Option<Arc<Feed<P>>>,
}

impl<P: Pool> std::fmt::Debug for Hub<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl<P: Pool> Hub<P> {
    /// Starts the slice on `pool`, whose schema holds the fixture's
    /// [`TABLES`](crate::TABLES) ([`sync_schema`](crate::sync_schema)):
    /// starts a change feed and enables it on `projects` (a no-op when it
    /// is enabled already).
    pub async fn start(pool: P) -> Result<Hub<P>> {
        Hub::start_with(pool, changefeed::Options::new()).await
    }

    /// [`Hub::start`] with the feed's options.
    pub async fn start_with(pool: P, options: changefeed::Options) -> Result<Hub<P>> {
        let feed = Feed::start(pool.clone(), options).await?;
        feed.enable(PROJECTS).await?;
        Ok(Hub {
            pool,
            feed: Some(Arc::new(feed)),
        })
    }

    /// The slice on `pool` without a change feed of its own, for a process
    /// that serves no live lists ([`Hub::live_projects`] then fails with
    /// [`Error::NoFeed`]). Whether `projects` has a feed (its trigger) is
    /// left as it is.
    pub fn without_feed(pool: P) -> Hub<P> {
        Hub { pool, feed: None }
    }

    /// The pool.
    pub fn pool(&self) -> &P {
        &self.pool
    }

    /// Stops the feed: every live list stops following.
    pub fn close(&self) {
        if let Some(feed) = &self.feed {
            feed.close();
        }
    }

    /// Creates an account. [`Error::EmailTaken`] if another account has the
    /// address (compared lower-cased).
    pub async fn create_account(&self, new: &NewAccount) -> Result<Account> {
        let email = new.email_address.trim().to_lowercase();
        let inserted = self
            .pool
            .query_one_as(
                "INSERT INTO accounts (account_id, email_address, first_name, last_name, created)
                 VALUES ($1, $2, $3, $4, $5)
                 RETURNING account_id, email_address, first_name, last_name, created",
                &params![
                    Uuid::new_v4(),
                    email.as_str(),
                    new.first_name.as_str(),
                    new.last_name.as_str(),
                    now()
                ],
            )
            .await;
        match inserted {
            Err(e) if e.is_unique_violation() => Err(Error::EmailTaken(email)),
            other => Ok(other?),
        }
    }

    /// The account `id`, unless there is none or it is deleted.
    pub async fn get_account(&self, id: Uuid) -> Result<Option<Account>> {
        Ok(self
            .pool
            .query_opt_as(
                "SELECT account_id, email_address, first_name, last_name, created
                 FROM accounts WHERE account_id = $1 AND deleted IS NOT TRUE",
                &params![id],
            )
            .await?)
    }

    /// Creates a project owned by `owner` ([`Error::NoSuchAccount`] if there
    /// is no such account), in state [`RunState::Opened`].
    pub async fn create_project(
        &self,
        owner: Uuid,
        title: &str,
        description: &str,
    ) -> Result<Project> {
        let (title, description) = (title.to_owned(), description.to_owned());
        self.pool.transaction(move |tx| {
            let (title, description) = (title.clone(), description.clone());
            Box::pin(async move {
                require_account(tx, owner).await?;
                let users = Users::from([(
                    owner,
                    Member {
                        group: Group::Owner,
                    },
                )]);
                let state = ProjectState {
                    state: RunState::Opened,
                    time: Utc::now(),
                    error: None,
                };
                let sql = format!(
                    "INSERT INTO projects (project_id, title, description, users, state, created, last_edited)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)
                     RETURNING {PROJECT_COLUMNS}"
                );
                let project = tx
                    .query_one_as(
                        &sql,
                        &params![
                            Uuid::new_v4(),
                            title,
                            description,
                            Json(&users),
                            Json(&state),
                            now()
                        ],
                    )
                    .await?;
                Ok(project)
            })
        })
        .await
    }

    /// The project `id`, deleted or not; `None` if there is none.
    pub async fn get_project(&self, id: Uuid) -> Result<Option<Project>> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE project_id = $1");
        Ok(self.pool.query_opt_as(&sql, &params![id]).await?)
    }

    /// The projects `account` owns or collaborates on, not deleted, the
    /// most recently edited first.
    pub async fn list_projects(&self, account: Uuid) -> Result<Vec<Project>> {
        // `users ? key` is answered by the fixture's GIN index on `users`.
        let sql = format!(
            "SELECT {PROJECT_COLUMNS} FROM projects
             WHERE users ? $1 AND deleted IS NOT TRUE
             ORDER BY last_edited DESC NULLS LAST, project_id"
        );
        Ok(self
            .pool
            .query_as(&sql, &params![account.to_string()])
            .await?)
    }

    /// Adds `account` to `project` as a collaborator; `false` if it is a
    /// member already. [`Error::NoSuchProject`], [`Error::NoSuchAccount`].
    pub async fn add_collaborator(&self, project: Uuid, account: Uuid) -> Result<bool> {
        self.pool
            .transaction(move |tx| {
                Box::pin(async move {
                    require_account(tx, account).await?;
                    let users = lock_users(tx, project).await?;
                    if users.contains_key(&account) {
                        return Ok(false);
                    }
                    let entry = Member {
                        group: Group::Collaborator,
                    };
                    tx.execute(
                        "UPDATE projects
                     SET users = jsonb_set(COALESCE(users, '{}'::jsonb), ARRAY[$2::text], $3),
                         last_edited = $4
                     WHERE project_id = $1",
                        &params![project, account.to_string(), Json(&entry), now()],
                    )
                    .await?;
                    Ok(true)
                })
            })
            .await
    }

    /// Removes collaborator `account` from `project`; `false` if it was not
    /// a member. The owner cannot be removed
    /// ([`Error::OwnerCannotBeRemoved`]).
    pub async fn remove_collaborator(&self, project: Uuid, account: Uuid) -> Result<bool> {
        self.pool
            .transaction(move |tx| {
                Box::pin(async move {
                    let users = lock_users(tx, project).await?;
                    match users.get(&account) {
                        None => return Ok(false),
                        Some(m) if m.group == Group::Owner => {
                            return Err(Error::OwnerCannotBeRemoved { project, account });
                        }
                        Some(_) => {}
                    }
                    tx.execute(
                        "UPDATE projects SET users = users - $2::text, last_edited = $3
                     WHERE project_id = $1",
                        &params![project, account.to_string(), now()],
                    )
                    .await?;
                    Ok(true)
                })
            })
            .await
    }

    /// Moves `project` to state `to`, stamped with the hub's clock, if its
    /// current state allows it ([`RunState::may_follow`];
    /// [`Error::InvalidTransition`] otherwise). Starting it records
    /// `last_started` and, when given, `last_started_by`.
    pub async fn set_state(
        &self,
        project: Uuid,
        to: RunState,
        by: Option<Uuid>,
    ) -> Result<ProjectState> {
        self.pool
            .transaction(move |tx| {
                Box::pin(async move {
                    let current: Option<Json<ProjectState>> = tx
                        .query_opt_scalar(
                            "SELECT state FROM projects
                         WHERE project_id = $1 AND deleted IS NOT TRUE FOR UPDATE",
                            &params![project],
                        )
                        .await?
                        .ok_or(Error::NoSuchProject(project))?;
                    let from = current.map(|Json(s)| s.state);
                    if !to.may_follow(from) {
                        return Err(Error::InvalidTransition {
                            project,
                            from: StateName(from),
                            to,
                        });
                    }
                    let state = ProjectState {
                        state: to,
                        time: Utc::now(),
                        error: None,
                    };
                    let started = to == RunState::Running;
                    tx.execute(
                        "UPDATE projects SET state = $2,
                         last_started = CASE WHEN $3 THEN $4 ELSE last_started END,
                         last_started_by = CASE WHEN $3 THEN COALESCE($5, last_started_by)
                                                ELSE last_started_by END
                     WHERE project_id = $1",
                        &params![project, Json(&state), started, now(), by],
                    )
                    .await?;
                    Ok(state)
                })
            })
            .await
    }

    /// Records a heartbeat of a host: creates its row the first time, then
    /// updates its status, version, capacity and `last_seen`. Returns the
    /// `last_seen` recorded.
    pub async fn heartbeat(&self, beat: &Heartbeat) -> Result<NaiveDateTime> {
        Ok(self
            .pool
            .query_one_scalar(
                "INSERT INTO project_hosts
                     (id, name, region, status, version, capacity, last_seen, created, updated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7)
                 ON CONFLICT (id) DO UPDATE SET
                     status = EXCLUDED.status, version = EXCLUDED.version,
                     capacity = EXCLUDED.capacity, last_seen = EXCLUDED.last_seen,
                     updated = EXCLUDED.updated
                 RETURNING last_seen",
                &params![
                    beat.host_id,
                    beat.name.as_str(),
                    beat.region.as_str(),
                    beat.status.as_str(),
                    beat.version.as_str(),
                    Json(&beat.capacity),
                    now()
                ],
            )
            .await?)
    }

    /// The hosts whose last heartbeat is at most `within` old, the most
    /// recent first.
    pub async fn live_hosts(&self, within: Duration) -> Result<Vec<Host>> {
        let since = chrono::Duration::from_std(within)
            .ok()
            .and_then(|d| now().checked_sub_signed(d))
            .unwrap_or(NaiveDateTime::MIN);
        Ok(self
            .pool
            .query_as(
                "SELECT id, name, region, status, version, last_seen, capacity
                 FROM project_hosts
                 WHERE last_seen >= $1 AND deleted IS NULL
                 ORDER BY last_seen DESC, id",
                &params![since],
            )
            .await?)
    }

    /// A live list of the projects `account` owns or collaborates on, kept
    /// current by the change feed ([`LiveProjects`]).
    pub async fn live_projects(&self, account: Uuid) -> Result<LiveProjects> {
        let feed = self.feed.as_ref().ok_or(Error::NoFeed)?;
        LiveProjects::start(Arc::clone(feed), account).await
    }
}

/// The hub's clock, as `timestamp` columns hold it (UTC, microseconds).
fn now() -> NaiveDateTime {
    let t = Utc::now().naive_utc();
    // The server keeps microseconds: round here so that what is returned
    // equals what is stored.
    t.with_nanosecond(t.and_utc().timestamp_subsec_micros() * 1_000)
        .unwrap_or(t)
}

/// [`Error::NoSuchAccount`] unless `account` exists and is not deleted.
async fn require_account(tx: &mut impl Executor, account: Uuid) -> Result<()> {
    let exists: bool = tx
        .query_one_scalar(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE account_id = $1 AND deleted IS NOT TRUE)",
            &params![account],
        )
        .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::NoSuchAccount(account))
    }
}

/// The members of `project`, its row locked until the transaction ends.
async fn lock_users(tx: &mut impl Executor, project: Uuid) -> Result<Users> {
    let users: Option<Json<Users>> = tx
        .query_opt_scalar(
            "SELECT COALESCE(users, '{}'::jsonb) FROM projects
             WHERE project_id = $1 AND deleted IS NOT TRUE FOR UPDATE",
            &params![project],
        )
        .await?;
    users
        .map(Json::into_inner)
        .ok_or(Error::NoSuchProject(project))
}
