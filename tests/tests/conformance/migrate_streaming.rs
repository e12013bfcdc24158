//! Moving off the embedded database in bounded memory: the import reads its
//! input on a thread of its own and stops it when it fails.

use std::io::{BufReader, Cursor, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use migrate::{ImportOptions, MigrateError, NoProgress};

use crate::TestDb;
use crate::migrate::{small_export, table_count};

/// An input whose every next piece is handed over by a task of the async
/// runtime, when asked. Read on the runtime's only thread, a read would wait
/// for a task that cannot run: it gives up after a while, failing the read.
struct HandedOver {
    ask: tokio::sync::mpsc::UnboundedSender<()>,
    given: std::sync::mpsc::Receiver<Vec<u8>>,
    piece: Cursor<Vec<u8>>,
    /// Each read's thread, and whether it had a runtime handle.
    reads: Arc<Mutex<Vec<(ThreadId, bool)>>>,
}

impl Read for HandedOver {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        self.reads
            .lock()
            .unwrap()
            .push((std::thread::current().id(), in_runtime));
        if self.piece.position() == self.piece.get_ref().len() as u64 {
            self.ask
                .send(())
                .map_err(|_| std::io::Error::other("the feeding task is gone"))?;
            let piece = self
                .given
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| {
                    std::io::Error::other("no piece came: the read blocks the runtime's thread")
                })?;
            if piece.is_empty() {
                return Ok(0);
            }
            self.piece = Cursor::new(piece);
        }
        self.piece.read(buf)
    }
}

// The default test runtime has one thread, which runs the import's future
// and the task that feeds its input.
#[tokio::test]
async fn the_import_reads_its_input_off_the_async_runtime() {
    let (sql, manifest) = small_export().await;
    let runtime_thread = std::thread::current().id();
    let (ask, mut asked) = tokio::sync::mpsc::unbounded_channel();
    let (give, given) = std::sync::mpsc::channel();
    let feeder = tokio::spawn(async move {
        let mut pieces = sql.chunks(64).map(<[u8]>::to_vec);
        while asked.recv().await.is_some() {
            if give.send(pieces.next().unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let reads = Arc::new(Mutex::new(Vec::new()));
    let input = HandedOver {
        ask,
        given,
        piece: Cursor::new(Vec::new()),
        reads: Arc::clone(&reads),
    };
    let db = TestDb::new().await;
    let report = migrate::import(
        &db.pool,
        BufReader::new(input),
        &ImportOptions::new(),
        &mut NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.rows, manifest.total_rows());
    assert!(report.verification.is_some());
    let reads = reads.lock().unwrap();
    assert!(reads.len() > 10, "{}", reads.len());
    for (thread, in_runtime) in reads.iter() {
        assert_ne!(*thread, runtime_thread);
        assert!(!in_runtime, "a read ran with a runtime handle");
    }
    feeder.abort();
}

/// Fails every read.
struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk on fire"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_that_fails_half_way_commits_nothing() {
    let (sql, _) = small_export().await;
    let text = String::from_utf8(sql).unwrap();
    // After the table was created and inside its rows.
    let cut = text.find("2\tb\n").unwrap();
    let input = Cursor::new(text.as_bytes()[..cut].to_vec()).chain(Failing);
    let db = TestDb::new().await;
    let err = migrate::import(
        &db.pool,
        BufReader::new(input),
        &ImportOptions::new(),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    match &err {
        MigrateError::Io { context, source } => {
            assert_eq!(context, "reading the export", "{err}");
            assert_eq!(source.to_string(), "disk on fire", "{err}");
        }
        other => panic!("expected an I/O error, got {other}"),
    }
    assert_eq!(table_count(&db).await, 0);
}

/// The export's text up to a table's rows, then rows without end; counts
/// what was read and tells when it is dropped.
struct Endless {
    head: Cursor<Vec<u8>>,
    row: &'static [u8],
    read: Arc<AtomicU64>,
    dropped: Arc<AtomicBool>,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = self.head.read(buf)?;
        if n == 0 {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.row[i % self.row.len()];
            }
            n = buf.len() - buf.len() % self.row.len();
        }
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::Release);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_import_stops_reading_its_input() {
    let (sql, _) = small_export().await;
    let text = String::from_utf8(sql).unwrap();
    let rows = text.find("1\ta\n").unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let input = Endless {
        head: Cursor::new(text.as_bytes()[..rows].to_vec()),
        row: b"not a number\tx\n",
        read: Arc::clone(&read),
        dropped: Arc::clone(&dropped),
    };
    let db = TestDb::new().await;
    let options = ImportOptions::new().chunk_bytes(4096);
    let err = migrate::import(&db.pool, BufReader::new(input), &options, &mut NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Statement { .. }), "{err}");
    // The reading thread stops at its next item and drops the input.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dropped.load(Ordering::Acquire) {
        assert!(
            Instant::now() < deadline,
            "still reading after {} bytes",
            read.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A few chunks ahead at most.
    let read = read.load(Ordering::Relaxed);
    assert!(read < 1 << 20, "{read} bytes read");
    assert_eq!(table_count(&db).await, 0);
}
