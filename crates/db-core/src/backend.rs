//! For backend crates (`db-postgres`, `db-pglite`, the `db` facade's enum
//! dispatch); the hub never needs it.
//!
//! What a backend implements besides the traits at the crate root: the
//! [`Session`] hooks every [`Client`] has (the transaction bookkeeping and
//! the raw transaction-control path that [`Transaction`] drives), and the
//! shared pieces its driver is built from. Nothing here is re-exported at
//! the crate root, so it stays out of the hub's way (and out of `db`'s
//! prelude-like `pub use db_core::*`).
//!
//! [`Client`]: crate::Client
//! [`Transaction`]: crate::Transaction

use std::future::Future;

use crate::error::Result;

pub use crate::codec::{AddressFamilies, encode_with};
pub use crate::copy::copy_out_extra_messages;
pub use crate::notify::{ListenCommand, ListenerHub};
pub use crate::stream::RowSender;
pub use crate::trace::{finish as finish_query_span, query_span, rows_from_command_tag};
pub use crate::transaction::{
    RESET_SESSION_SQL, SessionState, StatementKind, TxStatus, flush_pending,
};

/// The driver side of a session, which [`Client`](crate::Client) requires:
/// [`Transaction`](crate::Transaction) runs on these. Calling them from the
/// hub bypasses the transaction guards (`simple_raw` runs SQL without first
/// flushing pending rollbacks), which is why they live here rather than on
/// `Client`.
pub trait Session {
    /// The transaction bookkeeping of this session; used by
    /// [`Transaction`](crate::Transaction).
    fn session_state(&mut self) -> &mut SessionState;

    /// Runs transaction-control SQL without first flushing pending rollbacks.
    /// A backend that sees the server's transaction status records it with
    /// [`SessionState::observe`]; otherwise it leaves the status as it is.
    fn simple_raw<'a>(&'a mut self, sql: &'a str) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Asks the server whether the session is in a transaction block (and
    /// whether it failed), for when [`SessionState::status`] is unknown.
    fn probe_status(&mut self) -> impl Future<Output = Result<TxStatus>> + Send;
}
