//! A slice of the hub, written only against the public APIs of `db`,
//! `changefeed` and `schema-sync`, on the fixture schema: accounts,
//! projects and their collaborators (the `users` map of `projects`),
//! project states (the `state` JSON column), host heartbeats
//! (`project_hosts`), the projects of a user, and a live list of them that
//! the change feed keeps current.
//!
//! ```no_run
//! use db::{AnyPool, Config};
//! use hub_slice::{Hub, NewAccount, RunState};
//!
//! # async fn demo(spec: schema_sync::Schema) -> hub_slice::Result<()> {
//! let config = Config::from_env().map_err(db::Error::from)?;
//! let pool = AnyPool::connect(&config).await?;
//! hub_slice::sync_schema(&pool, &spec).await?;
//! let hub = Hub::start(pool).await?;
//!
//! let ada = hub
//!     .create_account(&NewAccount {
//!         email_address: "ada@example.com".into(),
//!         first_name: "Ada".into(),
//!         last_name: "Lovelace".into(),
//!     })
//!     .await?;
//! let live = hub.live_projects(ada.account_id).await?;
//! live.ready().await?;
//!
//! let thesis = hub.create_project(ada.account_id, "Thesis", "").await?;
//! hub.set_state(thesis.project_id, RunState::Running, Some(ada.account_id)).await?;
//! assert_eq!(hub.list_projects(ada.account_id).await?.len(), 1);
//! // The live list follows (after the feed delivers the change).
//! live.wait(|projects| projects.contains_key(&thesis.project_id)).await?;
//! # Ok(()) }
//! ```
//!
//! Multi-statement writes run in one transaction each, retried when the
//! server reports a serialization failure or deadlock.

mod error;
mod hub;
mod live;
mod model;
mod schema;

pub use error::{Error, Result, StateName};
pub use hub::Hub;
pub use live::LiveProjects;
pub use model::{
    Account, Group, Heartbeat, Host, HostCapacity, Member, NewAccount, Project, ProjectState,
    RunState, Users,
};
pub use schema::{TABLES, sync_schema};
