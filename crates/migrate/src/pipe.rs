//! A bounded in-memory pipe from an export to an import running at the
//! same time ([`transfer`](crate::transfer)).
//!
//! The export side awaits room (it runs on the async runtime and must not
//! block it); the import side is read on the import's own reading thread,
//! where blocking is what it is for.

use std::io::{BufRead, Read};

use tokio::sync::mpsc;

use crate::error::{MigrateError, Result};

/// What travels through the pipe.
enum Message {
    /// The next bytes of the export.
    Data(Vec<u8>),
    /// The export is complete.
    End,
    /// The export failed: the reader fails with this.
    Failed(String),
}

/// A pipe holding at most `capacity` pieces in flight.
pub(crate) fn pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (
        PipeWriter { sender },
        PipeReader {
            receiver,
            current: Vec::new(),
            pos: 0,
            ended: false,
        },
    )
}

/// The export's end of the pipe.
#[derive(Debug)]
pub(crate) struct PipeWriter {
    sender: mpsc::Sender<Message>,
}

impl PipeWriter {
    /// Sends the next bytes, waiting for room. Fails once the reader is
    /// gone (the import stopped).
    pub(crate) async fn send(&self, bytes: Vec<u8>) -> Result<()> {
        self.sender
            .send(Message::Data(bytes))
            .await
            .map_err(|_| import_stopped())
    }

    /// Ends the export: the reader sees the end of its input.
    pub(crate) async fn finish(self) -> Result<()> {
        self.sender
            .send(Message::End)
            .await
            .map_err(|_| import_stopped())
    }

    /// Makes the reader fail with `message` (if it still reads).
    pub(crate) async fn fail(self, message: String) {
        let _ = self.sender.send(Message::Failed(message)).await;
    }

    /// Whether the reader is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

fn import_stopped() -> MigrateError {
    MigrateError::Io {
        context: "writing the export".into(),
        source: std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the import stopped reading it",
        ),
    }
}

/// The import's end of the pipe: a blocking reader, for a thread that is
/// not the async runtime's.
#[derive(Debug)]
pub(crate) struct PipeReader {
    receiver: mpsc::Receiver<Message>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Data(bytes) => write!(f, "Data({} bytes)", bytes.len()),
            Message::End => f.write_str("End"),
            Message::Failed(message) => write!(f, "Failed({message:?})"),
        }
    }
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos >= self.current.len() && !self.ended {
            match self.receiver.blocking_recv() {
                Some(Message::Data(bytes)) => {
                    self.current = bytes;
                    self.pos = 0;
                }
                Some(Message::End) => self.ended = true,
                Some(Message::Failed(message)) => {
                    return Err(std::io::Error::other(format!(
                        "the export failed: {message}"
                    )));
                }
                // The writer was dropped before the end: the export was
                // stopped (its future dropped), not completed.
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the export stopped before its end",
                    ));
                }
            }
        }
        Ok(self.current.get(self.pos..).unwrap_or_default())
    }

    fn consume(&mut self, amount: usize) {
        self.pos = self.pos.saturating_add(amount).min(self.current.len());
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_and_the_end_or_a_failure_is_told() {
        let (writer, mut reader) = pipe(1);
        let read = std::thread::spawn(move || {
            let mut text = String::new();
            let result = reader.read_to_string(&mut text);
            (text, result.map_err(|e| e.to_string()))
        });
        writer.send(b"one ".to_vec()).await.expect("sent");
        writer.send(b"two".to_vec()).await.expect("sent");
        writer.finish().await.expect("finished");
        let (text, result) = read.join().expect("reader");
        assert_eq!((text.as_str(), result), ("one two", Ok(7)));

        let (writer, mut reader) = pipe(1);
        let read = std::thread::spawn(move || {
            let mut text = String::new();
            reader.read_to_string(&mut text).map_err(|e| e.to_string())
        });
        writer.send(b"partial".to_vec()).await.expect("sent");
        writer.fail("disk full".into()).await;
        let err = read.join().expect("reader").expect_err("failed");
        assert!(err.contains("the export failed: disk full"), "{err}");
    }

    #[test]
    fn a_writer_dropped_before_the_end_is_no_clean_end_of_file() {
        let (writer, mut reader) = pipe(1);
        drop(writer);
        let err = reader.read(&mut [0; 4]).expect_err("stopped");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn the_writer_fails_once_the_reader_is_gone() {
        let (writer, reader) = pipe(1);
        drop(reader);
        assert!(writer.is_closed());
        let err = writer.send(b"x".to_vec()).await.expect_err("no reader");
        assert!(err.to_string().contains("the import stopped"), "{err}");
    }
}
