//! Change feeds: resumable, lossless, filtered streams of the changes to a
//! table, on any [`db_core::Pool`] (PostgreSQL or embedded PGlite).
//!
//! ```no_run
//! use changefeed::{Event, Feed, Filter, Options, Query, Start};
//! # async fn demo<P: db_core::Pool>(pool: P) -> changefeed::Result<()> {
//! let feed = Feed::start(pool, Options::new()).await?;
//! feed.enable("projects").await?;
//! let filter: Filter = "owner = 'ada'".parse()?;
//! let mut sub = feed
//!     .subscribe(Query::table("projects").columns(["title"]).filter(filter), Start::Snapshot)
//!     .await?;
//! while let Ok(event) = sub.recv().await {
//!     if let Event::SnapshotEnd { offset } = event {
//!         // Store `offset` (or any later event's) to resume with
//!         // Start::AfterOffset after a restart.
//!         let _ = offset;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! Enabling a feed on a table installs triggers that write one row per
//! change into the shared `changefeed_log` table (its JSON images, and
//! `txid_current()`) and send `pg_notify('changefeed', <table name>)`:
//! inserts and deletes are captured per statement from its transition table
//! (one `INSERT ... SELECT` and one notification however many rows), updates
//! per row (so that each new image is paired with its old one even when keys
//! change). The notification carries no row
//! data, so a row of any size never fails the writer; it is only a nudge. The
//! table is the truth: the reader also polls on a timer, so a lost
//! notification (a listener reconnect, a lagging queue) only delays delivery.
//!
//! # Offsets and why nothing is missed or delivered twice
//!
//! The log's `id` is assigned when the change is written, before commit, so
//! on a server with concurrent writers ids do not become visible in order:
//! reading "every id above the last one" would skip a transaction that
//! commits late. Offsets are therefore not ids. A change gets its offset
//! (`pos`) only once it is committed, from a *stamp* statement that readers
//! run: in one statement (one snapshot) it takes the not-yet-stamped log rows
//! it can see, which are exactly the rows of transactions committed before
//! its snapshot, numbers them in `id` order after `changefeed_state.last_pos`
//! and advances `last_pos`, all in its own transaction.
//!
//! - Stamps are serialized by the `changefeed_state` row lock: a second
//!   stamper waits for the first to commit, continues after its offsets, and
//!   skips (rechecking `pos IS NULL`) the rows the first one stamped; a
//!   unique index on `pos` backs this. So offsets become visible in
//!   increasing order, whole stamp transactions at a time: any snapshot sees
//!   all of the offsets up to `last_pos` it sees, and no others.
//! - Hence a reader that reads `pos > cursor` in offset order and then moves
//!   `cursor` to the `last_pos` of that same snapshot never skips an offset
//!   and never reads one twice. Every committed change is stamped exactly
//!   once (by the first stamp whose snapshot sees it); a rolled-back change
//!   is never visible, so never stamped, never delivered.
//! - Order: offsets follow visibility order, which is commit order as every
//!   observer sees it, at the granularity of one stamp; within a stamp, `id`
//!   order. Two changes to the same row are always in commit order, because
//!   the second writer waits for the first one's row lock (so its log row
//!   gets a larger id and can only become visible later).
//! - A subscriber resumes with [`Start::AfterOffset`]: everything at or
//!   below its offset was delivered, everything above was not. Pruning only
//!   deletes a prefix of offsets and records it in
//!   `changefeed_state.pruned_through`; resuming below it is
//!   [`Error::ResyncRequired`], checked in the same snapshot as the read.
//! - [`Start::Snapshot`] reads the rows, stamps what it sees and reads
//!   `last_pos` in one REPEATABLE READ transaction, so the snapshot contains
//!   exactly the changes at or below the offset of its
//!   [`Event::SnapshotEnd`] (a conflict with a concurrent stamper is a
//!   serialization failure, and the snapshot is retried).
//!
//! # Fan-out and slow subscribers
//!
//! Each [`Feed`] runs one poller task per process and backend, whatever the
//! number of subscriptions; it never holds a session while handing events
//! out (on PGlite a held session blocks everyone). A stream of commits is
//! read at a pace that leaves writers at least two thirds of the database's
//! time (on PGlite the poller shares the one backend with them), a lone
//! commit at once. A new or resuming
//! subscription first catches up by reading the log itself, with
//! backpressure, then joins the poller. The poller queues events into a
//! bounded buffer per subscription; one that is full ends the subscription
//! with [`Error::Lagged`] naming the last offset whose events were all
//! queued, from which it can resume. Memory stays bounded.
//!
//! Offsets increase but are not dense: two readers stamping at once may leave
//! unused offsets between them.
//!
//! # Limits
//!
//! Watched tables live in one schema (the feed's), need a primary key and
//! report `TRUNCATE` as nothing. Filters are evaluated on the JSON image of
//! rows ([`Filter`]), so values compare as JSON (timestamps as text). A
//! snapshot is read into memory before it is handed out. Every stamp leaves
//! a dead row version in the log: PostgreSQL's autovacuum cleans it up, and
//! on PGlite (which has none) the poller runs `VACUUM` on the log every 2,000
//! offsets.

mod error;
mod event;
mod feed;
mod filter;
mod schema;

pub use error::{Error, Result};
pub use event::{Event, JsonRow};
pub use feed::{Feed, Options, Query, Start, Subscription};
pub use filter::Filter;
pub use schema::{FeedInfo, Retention};
