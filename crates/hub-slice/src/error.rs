//! The errors of the slice.

use uuid::Uuid;

use crate::model::RunState;

/// What can go wrong in an operation of the slice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No account has this id (or it is deleted).
    #[error("no account {0}")]
    NoSuchAccount(Uuid),
    /// No project has this id (or it is deleted).
    #[error("no project {0}")]
    NoSuchProject(Uuid),
    /// Another account already has this email address.
    #[error("the email address {0:?} is taken")]
    EmailTaken(String),
    /// The project's owner cannot be removed as a collaborator.
    #[error("account {account} owns project {project} and cannot be removed from it")]
    OwnerCannotBeRemoved {
        /// The project.
        project: Uuid,
        /// Its owner.
        account: Uuid,
    },
    /// A project cannot move from its state to the one asked for.
    #[error("project {project} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The project.
        project: Uuid,
        /// Its state now (`None`: it never had one).
        from: StateName,
        /// The state asked for.
        to: RunState,
    },
    /// The hub was made without a change feed ([`Hub::without_feed`](crate::Hub::without_feed)).
    #[error("this hub has no change feed, so it keeps no live lists")]
    NoFeed,
    /// The fixture schema lacks a table the slice needs.
    #[error("the schema spec has no table {0:?}, which the hub slice needs")]
    MissingTable(&'static str),
    /// A row image from the change feed did not have the shape of a project.
    #[error("a change-feed image of project {project} does not read as a project: {source}")]
    Image {
        /// The project's id as the image gave it (`project_id`), or nil.
        project: Uuid,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::Error),
    /// The change feed failed.
    #[error(transparent)]
    Feed(#[from] changefeed::Error),
    /// Applying the schema failed.
    #[error(transparent)]
    Schema(#[from] schema_sync::SyncError),
}

/// A state for messages: a [`RunState`] or none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateName(pub Option<RunState>);

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(state) => write!(f, "{state}"),
            None => f.write_str("no state"),
        }
    }
}

/// `Result` with the slice's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
