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

/// Whether process `pid` of this host still runs. Where that cannot be
/// told (not Linux), it is assumed to run, so that nothing of a live
/// process is ever removed.
pub fn process_running(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

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

/// Implements [`Executor`](crate::Executor) for a [`Pool`](crate::Pool)
/// type: each call forwards to the pool's own (each statement, and each
/// row stream, on a session of its own), so a function taking
/// `&mut impl Executor` accepts a pool as well as a client or transaction.
/// One definition for every backend's pool and the facade's enum.
#[macro_export]
#[doc(hidden)]
macro_rules! __executor_for_pool {
    ($pool:ty) => {
        impl $crate::Executor for $pool {
            #[track_caller]
            fn execute<'a>(
                &'a mut self,
                sql: &'a str,
                params: &'a [$crate::Value],
            ) -> impl ::std::future::Future<Output = $crate::Result<u64>> + Send + 'a {
                $crate::Pool::execute(&*self, sql, params)
            }

            #[track_caller]
            fn query<'a>(
                &'a mut self,
                sql: &'a str,
                params: &'a [$crate::Value],
            ) -> impl ::std::future::Future<Output = $crate::Result<Vec<$crate::Row>>> + Send + 'a
            {
                $crate::Pool::query(&*self, sql, params)
            }

            #[track_caller]
            fn query_one<'a>(
                &'a mut self,
                sql: &'a str,
                params: &'a [$crate::Value],
            ) -> impl ::std::future::Future<Output = $crate::Result<$crate::Row>> + Send + 'a {
                $crate::Pool::query_one(&*self, sql, params)
            }

            #[track_caller]
            fn query_opt<'a>(
                &'a mut self,
                sql: &'a str,
                params: &'a [$crate::Value],
            ) -> impl ::std::future::Future<Output = $crate::Result<Option<$crate::Row>>> + Send + 'a
            {
                $crate::Pool::query_opt(&*self, sql, params)
            }

            #[track_caller]
            fn run<'a>(
                &'a mut self,
                sql: &'a str,
                params: &'a [$crate::Value],
            ) -> impl ::std::future::Future<Output = $crate::Result<$crate::QueryResult>> + Send + 'a
            {
                $crate::Pool::run(&*self, sql, params)
            }

            #[track_caller]
            fn batch_execute<'a>(
                &'a mut self,
                sql: &'a str,
            ) -> impl ::std::future::Future<Output = $crate::Result<()>> + Send + 'a {
                $crate::Pool::batch_execute(&*self, sql)
            }

            #[track_caller]
            fn copy_in<'a>(
                &'a mut self,
                statement: &'a str,
                data: &'a [u8],
            ) -> impl ::std::future::Future<Output = $crate::Result<u64>> + Send + 'a {
                $crate::Pool::copy_in(&*self, statement, data)
            }

            #[track_caller]
            fn copy_out<'a, F>(
                &'a mut self,
                statement: &'a str,
                sink: F,
            ) -> impl ::std::future::Future<Output = $crate::Result<u64>> + Send + 'a
            where
                F: FnMut(&[u8]) -> $crate::Result<()> + Send + 'a,
            {
                $crate::Pool::copy_out(&*self, statement, sink)
            }

            fn fetch<'a>(
                &'a mut self,
                sql: &'a str,
                params: &'a [$crate::Value],
            ) -> $crate::RowStream<'a> {
                $crate::Pool::fetch(&*self, sql, params)
            }
        }
    };
}

pub use crate::__executor_for_pool as executor_for_pool;
