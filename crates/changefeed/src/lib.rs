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
//! The feed's own tables and trigger function live in a schema of their own,
//! `changefeed` ([`Options::schema`]); a feed of an earlier release that
//! kept them next to the watched tables is moved there in place when a
//! [`Feed`] starts. Enabling a feed on a table installs triggers that append
//! the changes to the shared `changefeed.changefeed_log` table (JSON row
//! images, the table's OID, `txid_current()`) and send
//! `pg_notify('changefeed', '')`. Inserts and deletes are
//! captured per statement from its transition table: one log row holds the
//! images of up to 1,000 rows (and about 16 MB), so a statement costs one
//! log row, two index entries and one notification however many rows it
//! touches. Updates are captured per row, so that each new image is paired
//! with its old one even when keys change. The notification carries no row
//! data, so a row of any size never fails the writer; it is only a nudge.
//! The table is the truth: the reader also polls on a timer, so a lost
//! notification (a listener reconnect, a lagging queue) only delays
//! delivery. Writers only ever append; nothing rewrites a log row.
//!
//! # Offsets and why nothing is missed or delivered twice
//!
//! A log row's `id` is taken when the change is written, before commit, so
//! on a server with concurrent writers ids do not become visible in order:
//! reading "every id above the last one" would skip a transaction that
//! commits late. Offsets are therefore given by readers, at *ticks*, in the
//! style of PgQ: a tick is one statement (one snapshot) that takes the log
//! rows its snapshot sees and the previous tick's snapshot did not — exactly
//! the changes of the transactions that committed in between — and numbers
//! their images in `id` order after `changefeed_state.last_pos`. It records
//! them in `changefeed_ticks` as id ranges with both snapshots and a base
//! offset (at most 1,000 events per tick), so that any reader can find the
//! rows of any offset again, and advances the state, all in its own
//! transaction. A tick writes one row per 1,000 events, not one per change.
//!
//! - Ticks are serialized by a generation number in `changefeed_state`: a
//!   tick whose snapshot predates a concurrent reader's tick changes nothing
//!   and is retried with a new snapshot. So the snapshots of successive
//!   ticks only grow, every committed change is in exactly one tick (the
//!   first whose snapshot sees it), and a rolled-back change is in none.
//! - Offsets become visible whole ticks at a time: a reader that reads the
//!   ticks above its cursor and moves the cursor to the end of the last tick
//!   it read, in one snapshot, never skips an offset and never reads one
//!   twice.
//! - A tick finds the changes the previous one did not see by index: the
//!   log rows above the largest id it saw, and those of the transactions
//!   that were running when its snapshot was taken (by `txid`). So a tick
//!   costs what is new, however big the log and however long a transaction
//!   stays open (only that transaction's own rows are looked up again at
//!   each tick until it ends).
//! - Order: offsets follow visibility order, which is commit order as every
//!   observer sees it, at the granularity of one tick; within a tick, `id`
//!   order. Two changes to the same row are always in commit order, because
//!   the second writer waits for the first one's row lock, so its log row
//!   gets a larger id and can only become visible later.
//! - A subscriber resumes with [`Start::AfterOffset`]: everything at or
//!   below its offset was delivered, everything above was not. Pruning only
//!   deletes a prefix of offsets (whole log rows) and records it in
//!   `changefeed_state.pruned_through`; resuming below it is
//!   [`Error::ResyncRequired`], checked in the same snapshot as the read.
//! - [`Start::Snapshot`] reads the rows in primary-key order, in batches
//!   ([`Options::snapshot_batch`]). Each batch is one REPEATABLE READ
//!   transaction that ticks, reads `last_pos` and reads the next rows
//!   (filter and columns pushed into SQL) above the last key delivered (a
//!   conflict with a concurrent tick is a serialization failure, and the
//!   batch is retried). Before a batch's rows, the changes logged since the
//!   previous batch's offset to keys already delivered are sent as change
//!   events (an update moving a key past the last delivered one becomes a
//!   delete or an insert; keys are compared by the server, as values of
//!   their types). So after each batch the subscriber holds the table as of
//!   that batch's offset up to its last key, and after the last one, as of
//!   the offset of [`Event::SnapshotEnd`].
//!
//! Offsets are dense: each change of a table the feed log holds takes the
//! next one, whichever table it belongs to.
//!
//! # Fan-out and slow subscribers
//!
//! Each [`Feed`] runs one poller task per process and backend, whatever the
//! number of subscriptions; it never holds a session while handing events
//! out (on PGlite a held session blocks everyone). Each change is offered
//! only to the subscriptions it can concern, found through an index of
//! their `=` and `IN` filters: a thousand subscriptions filtered by owner
//! cost one read of the log, and each change costs only the subscriptions
//! it concerns. A lone commit is read at once; a stream of commits is read
//! on the poller's own clock (after a poll that found several changes it
//! polls again 5 ms later, without listening, until a poll finds nothing),
//! which leaves writers most of the database's time (on PGlite the poller
//! shares the one backend with them) and spares everyone a wake-up per
//! commit. A new or resuming subscription first catches up by reading the
//! log itself, with backpressure, then joins the poller. The poller queues events into a
//! bounded buffer per subscription; one that is full ends the subscription
//! with [`Error::Lagged`] naming the last offset whose events were all
//! queued, from which it can resume. Memory stays bounded.
//!
//! # A table's life
//!
//! Tables are named as SQL names them (`accounts`, `app.accounts`,
//! `"Mixed Case"`) and tracked by OID, so a feed follows its table through
//! a rename. `TRUNCATE` is captured by a statement trigger and reaches every
//! subscription of the table as [`Event::Truncate`], whatever its filter.
//! Renames and changes of columns are noticed by the poller (once per poll
//! interval, from the catalog, so it works for any role and on PGlite, where
//! event triggers would need a superuser) and logged as
//! [`Event::SchemaChanged`]; after a change of columns the subscription ends
//! ([`Error::Ended`]) and must resync. Disabling a feed, or dropping its
//! table, logs [`Event::End`], the last event of its subscriptions.
//!
//! # Retention
//!
//! The log keeps 7 days of changes by default ([`Retention::default_limits`]):
//! the poller prunes older ones every [`Options::prune_interval`], and with
//! them the row images of deleted rows. [`Feed::prune_with`] prunes on
//! demand. Disabling a feed removes its table's row images from the log at
//! once. On PGlite (which has no autovacuum) pruning runs `VACUUM` on the
//! log.
//!
//! # Limits
//!
//! Watched tables need a primary key; partitioned tables and partitions are
//! refused ([`Error::Refused`]), as are the feed's own tables. Live changes
//! are filtered on the JSON image of rows, snapshots in SQL; [`Filter`] says
//! where the two can differ from SQL (text orders by code point, timestamps
//! with time zone compare as text). A schema change is seen at the next
//! poll, so changes committed between the change and the poll may come
//! before its event. A log of the first layout (offsets stamped into each
//! row) is renamed `changefeed_log_v1` and kept; offsets it gave need a
//! resync.

mod columns;
mod error;
mod event;
mod fanout;
mod feed;
mod filter;
mod schema;
mod snapshot;

pub use error::{EndReason, Error, Result};
pub use event::{Event, JsonRow};
pub use feed::{Feed, Options, Query, Start, Subscription};
pub use filter::Filter;
pub use schema::{FeedInfo, LogInfo, Retention, log_tables};
