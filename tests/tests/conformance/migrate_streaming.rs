//! Moving off the embedded database in bounded memory: the import reads its
//! input on a thread of its own and stops it when it fails, the export reads
//! large tables in pieces (by primary key, by page without one) and writes
//! what a whole-table COPY gives, and `transfer` streams one into the other.

use std::io::{BufReader, Cursor, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use db::{PglitePool, Pool};
use migrate::{ExportOptions, ImportOptions, MigrateError, NoProgress, OutputFile};

use crate::TestDb;
use crate::migrate::{export, import, small_export, table_count, temporary_pglite};

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

/// Tables that take many pieces at a small piece size: a composite text
/// key with non-ASCII, quotes, backslashes, tabs and newlines; a key of
/// types whose text must read back exactly (timestamps, floats, numerics,
/// UUIDs); a table without a key, with holes and moved rows; a key with an
/// `INCLUDE` column and rows of very different sizes; empty tables.
const CHUNKY: &str = r"
CREATE TABLE composite (city text, n int, note text, PRIMARY KEY (city, n));
INSERT INTO composite
    SELECT c, i, CASE WHEN i % 3 = 0 THEN NULL ELSE c || ' ' || md5(i::text) END
    FROM unnest(ARRAY['Zürich', 'Köln''s', E'back\\slash', E'tab\there', E'new\nline', 'ß',
                      '😀', '', 'a b', '\N', 'Ωmega']) c,
         generate_series(1, 40) i;
CREATE TABLE exact (t timestamptz, f float8, m numeric, u uuid, payload text,
                    PRIMARY KEY (t, f, m, u));
INSERT INTO exact
    SELECT timestamptz '2024-01-01 00:00:00.123456+00' + i * interval '1.000001 second',
           i * 0.1, i / 7.0, md5(i::text)::uuid, repeat('x', i % 50)
    FROM generate_series(1, 300) i;
CREATE TABLE no_key (x int, y text);
INSERT INTO no_key
    SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE repeat('ü', i % 30) END
    FROM generate_series(1, 2000) i;
DELETE FROM no_key WHERE x BETWEEN 200 AND 900;
UPDATE no_key SET y = 'moved' WHERE x % 97 = 0;
CREATE TABLE covering (id int8, tag text, big text, PRIMARY KEY (id) INCLUDE (tag));
INSERT INTO covering
    SELECT i, 't' || i, repeat(md5(i::text), CASE WHEN i % 10 = 0 THEN 2000 ELSE 1 END)
    FROM generate_series(1, 200) i;
CREATE TABLE empty_keyed (id int PRIMARY KEY);
CREATE TABLE empty_plain (a text);
";

async fn chunky_source() -> PglitePool {
    let source = temporary_pglite().await;
    source.batch_execute(CHUNKY).await.unwrap();
    source
}

/// Counts the rows of each piece the export reads.
#[derive(Default)]
struct Pieces(Vec<u64>);

impl migrate::Progress for Pieces {
    fn advance(&mut self, rows: u64) {
        self.0.push(rows);
    }
}

async fn export_in_pieces(source: &PglitePool, options: &ExportOptions) -> (String, Vec<u64>) {
    let mut sql = Vec::new();
    let mut pieces = Pieces::default();
    migrate::export(source, &mut sql, options, &mut pieces)
        .await
        .unwrap();
    (String::from_utf8(sql).unwrap(), pieces.0)
}

/// The export without what differs from one pg_dump run to the next.
fn comparable(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .filter(|l| !l.starts_with(migrate::END_PREFIX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The data lines of `table`'s COPY block.
fn data_of<'a>(text: &'a str, table: &str) -> Vec<&'a str> {
    let start = format!("COPY \"public\".\"{table}\" (");
    text.lines()
        .skip_while(|l| !l.starts_with(&start))
        .skip(1)
        .take_while(|l| *l != "\\.")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_larger_than_a_piece_export_in_pieces_with_the_same_content() {
    let source = chunky_source().await;
    let (whole, whole_pieces) = export_in_pieces(&source, &ExportOptions::new()).await;
    let (pieces, small_pieces) =
        export_in_pieces(&source, &ExportOptions::new().chunk_bytes(200)).await;
    // Each table's rows are what a COPY of the whole table gives (in the
    // order of the key, or of the pages).
    for table in [
        "composite",
        "exact",
        "no_key",
        "covering",
        "empty_keyed",
        "empty_plain",
    ] {
        let mut copied = Vec::new();
        source
            .copy_out(&format!("COPY public.{table} TO STDOUT"), |data| {
                copied.extend_from_slice(data);
                Ok(())
            })
            .await
            .unwrap();
        let copied = String::from_utf8(copied).unwrap();
        let mut expected: Vec<&str> = copied.lines().collect();
        let mut exported = data_of(&whole, table);
        assert_eq!(exported.len(), expected.len(), "{table}");
        expected.sort_unstable();
        exported.sort_unstable();
        assert_eq!(exported, expected, "{table}");
    }
    let keyed: Vec<String> = source
        .query(
            "SELECT city || '|' || n FROM composite ORDER BY city, n",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    source.close().await;
    let in_order: Vec<String> = data_of(&whole, "composite")
        .iter()
        .map(|l| {
            let mut fields = l.split('\t');
            let city = fields
                .next()
                .unwrap()
                .replace("\\t", "\t")
                .replace("\\n", "\n");
            let city = city.replace("\\\\", "\\");
            format!("{city}|{}", fields.next().unwrap())
        })
        .collect();
    assert_eq!(in_order, keyed);

    // Read in pieces of 200 bytes, the file is the same, byte for byte.
    assert_eq!(comparable(&pieces), comparable(&whole));
    assert_eq!(whole_pieces.len(), 6, "{whole_pieces:?}");
    assert!(small_pieces.len() > 300, "{}", small_pieces.len());
    assert_eq!(
        small_pieces.iter().sum::<u64>(),
        whole_pieces.iter().sum::<u64>()
    );

    // And it loads and verifies.
    let db = TestDb::new().await;
    let report = import(&db, pieces.as_bytes()).await.unwrap();
    let verified = report.verification.unwrap();
    assert_eq!(verified.tables, 6);
    assert_eq!(verified.rows, whole_pieces.iter().sum::<u64>());
    let nulls: i64 = db
        .pool
        .query_one(
            "SELECT count(*) FROM composite WHERE note IS NULL AND city = E'tab\\there'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nulls, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_streams_the_export_into_the_import() {
    let source = chunky_source().await;
    let (plain, manifest) = export(&source).await;
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.sql");
    let db = TestDb::new().await;
    let done = migrate::transfer(
        &source,
        &db.pool,
        Some(OutputFile::create(&kept, false).unwrap()),
        &ExportOptions::new().chunk_bytes(256),
        &ImportOptions::new().chunk_bytes(512),
        &mut NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(done.manifest, manifest);
    assert_eq!(done.report.rows, manifest.total_rows());
    let verified = done.report.verification.clone().unwrap();
    assert_eq!(verified.tables, manifest.tables.len());
    assert!(done.report.end_marker.is_some());
    migrate::verify(&db.pool, &manifest).await.unwrap();
    // The kept file is the export, and loads on its own.
    let kept_text = std::fs::read_to_string(&kept).unwrap();
    assert_eq!(
        comparable(&kept_text),
        comparable(&String::from_utf8(plain).unwrap())
    );
    let again = TestDb::new().await;
    import(&again, kept_text.as_bytes()).await.unwrap();

    // A target that holds tables: the import fails at once, the export
    // stops, and no file is kept.
    let not_kept = dir.path().join("not-kept.sql");
    let err = migrate::transfer(
        &source,
        &db.pool,
        Some(OutputFile::create(&not_kept, false).unwrap()),
        &ExportOptions::new().chunk_bytes(256),
        &ImportOptions::new(),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MigrateError::TargetNotEmpty { .. }), "{err}");
    assert!(!not_kept.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // The source was let go: it still answers.
    source.execute("SELECT 1", &[]).await.unwrap();

    // An export that fails: its error, and the import commits nothing.
    source.close().await;
    let empty = TestDb::new().await;
    let err = migrate::transfer(
        &source,
        &empty.pool,
        None,
        &ExportOptions::new(),
        &ImportOptions::new(),
        &mut NoProgress,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, MigrateError::Database { context, .. } if context == "holding the embedded database"),
        "{err}"
    );
    assert_eq!(table_count(&empty).await, 0);
}
