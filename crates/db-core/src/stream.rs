//! [`RowStream`]: the rows of one statement, read as they arrive.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::Stream;

use crate::error::Result;
use crate::row::Row;

/// The rows of one statement as a [`Stream`], from
/// [`Executor::fetch`](crate::Executor::fetch) or
/// [`Pool::fetch`](crate::Pool::fetch).
///
/// Nothing runs until the stream is first polled. Each item is a row or an
/// error; after an error the stream ends. Dropping the stream before its end
/// is like cancelling a statement's future: the session is brought back to
/// a known state (the rest of the result discarded, the transaction status
/// asked for when needed) before it runs anything else.
#[must_use = "a row stream does nothing until polled"]
pub struct RowStream<'a> {
    body: Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>,
    slot: Arc<Mutex<Option<Result<Row>>>>,
}

impl fmt::Debug for RowStream<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowStream")
            .field("ended", &self.body.is_none())
            .finish()
    }
}

/// Hands rows from the body of a [`RowStream::generate`] to its reader.
pub struct RowSender {
    slot: Arc<Mutex<Option<Result<Row>>>>,
}

impl fmt::Debug for RowSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowSender").finish_non_exhaustive()
    }
}

impl RowSender {
    /// Passes `item` to the reader; returns once the reader asks for the
    /// next one. If the reader drops the stream instead, the body is dropped
    /// at this await.
    pub async fn send(&self, item: Result<Row>) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(item);
        YieldOnce(false).await;
    }
}

/// Pending once, without asking to be woken: the stream that polls the body
/// sees the item in the slot and returns it, and the reader polls again for
/// the next.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

impl<'a> RowStream<'a> {
    /// A stream whose rows `body` produces, handing each to the
    /// [`RowSender`] it is given; the stream ends when `body` returns.
    ///
    /// This is how backends build their streams: `body` runs only while the
    /// reader polls, so a row is produced only when the reader wants one.
    /// The sender must be used from `body` itself (not from a task it
    /// spawns).
    pub fn generate<F, Fut>(body: F) -> RowStream<'a>
    where
        F: FnOnce(RowSender) -> Fut,
        Fut: Future<Output = ()> + Send + 'a,
    {
        let slot = Arc::new(Mutex::new(None));
        let sender = RowSender {
            slot: Arc::clone(&slot),
        };
        RowStream {
            body: Some(Box::pin(body(sender))),
            slot,
        }
    }

    /// A stream of rows already read (or of one error).
    pub fn from_result(result: Result<Vec<Row>>) -> RowStream<'a> {
        RowStream::generate(|tx| async move {
            match result {
                Ok(rows) => {
                    for row in rows {
                        tx.send(Ok(row)).await;
                    }
                }
                Err(e) => tx.send(Err(e)).await,
            }
        })
    }

    fn take(&self) -> Option<Result<Row>> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Stream for RowStream<'_> {
    type Item = Result<Row>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Row>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        match body.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.body = None;
                Poll::Ready(self.take())
            }
            Poll::Pending => match self.take() {
                Some(item) => Poll::Ready(Some(item)),
                // The body waits for something that will wake this task.
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt as _;

    use super::*;
    use crate::{Column, Error, Type, Value};

    fn row(i: i64) -> Row {
        let columns: Arc<[Column]> = vec![Column::new("i", Type::INT8)].into();
        Row::new(columns, vec![Value::Int8(i)])
    }

    #[tokio::test]
    async fn rows_are_produced_as_they_are_read_and_the_body_dropped_with_the_stream() {
        let produced = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&produced);
        let mut rows = RowStream::generate(|tx| async move {
            for i in 1..=10 {
                *counter.lock().unwrap_or_else(PoisonError::into_inner) = i;
                // A real await between rows, as a backend's round trip.
                tokio::task::yield_now().await;
                tx.send(Ok(row(i))).await;
            }
            tx.send(Err(Error::RowNotFound)).await;
        });
        for i in 1..=3 {
            let got = rows.next().await.map(|r| r.map(|r| r.get::<i64, _>(0)));
            assert!(matches!(got, Some(Ok(n)) if n == i));
            assert_eq!(*produced.lock().unwrap_or_else(PoisonError::into_inner), i);
        }
        let rest: Vec<_> = rows.collect().await;
        assert_eq!(rest.len(), 8);
        assert!(matches!(rest[7], Err(Error::RowNotFound)));
        let mut empty = RowStream::from_result(Ok(Vec::new()));
        assert!(empty.next().await.is_none());
        assert!(empty.next().await.is_none());
    }
}
