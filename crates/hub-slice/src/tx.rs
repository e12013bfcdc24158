//! The one place the slice opens a transaction.
//!
//! Today's API has no transaction on the pool: a transaction is a guard on
//! a held session (`pool.acquire()` then `client.begin()`), and its
//! lifetime borrows the session, so the work runs as a closure returning a
//! boxed future (a closure with a borrowed argument cannot return an
//! `async` block's future unboxed on stable Rust and still promise `Send`).
//! When `pool.transaction(retry closure)` lands, [`in_transaction`] becomes
//! a call to it.

use std::future::Future;
use std::pin::Pin;

use db::{Client, Pool, Transaction};

use crate::error::{Error, Result};

/// A boxed `Send` future borrowing for `'a`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many times a transaction runs when the server asks for a retry
/// (serialization failure, deadlock).
const ATTEMPTS: u32 = 3;

/// Runs `work` in a transaction of its own and commits it; runs it again
/// from the start, up to [`ATTEMPTS`] times, when the database says the
/// transaction may succeed if retried. Any other error rolls it back.
pub(crate) async fn in_transaction<P, T, F>(pool: &P, mut work: F) -> Result<T>
where
    P: Pool,
    T: Send,
    F: for<'t, 'c> FnMut(&'t mut Transaction<'c, P::Client>) -> BoxFuture<'t, Result<T>> + Send,
{
    let mut attempt = 1;
    loop {
        let result = async {
            let mut client = pool.acquire().await?;
            let mut tx = client.begin().await?;
            let out = work(&mut tx).await?;
            tx.commit().await?;
            Ok(out)
        }
        .await;
        match result {
            Err(Error::Db(e)) if e.is_retryable() && attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "transaction retried");
                attempt += 1;
            }
            other => return other,
        }
    }
}
