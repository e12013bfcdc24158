//! `cocalc-db feed enable|disable|list` and `cocalc-db watch`.

use std::io::{self, Write};
use std::process::ExitCode;

use std::time::Duration;

use changefeed::{Event, Feed, Filter, Options, Query, Retention, Start};
use clap::{Args, Subcommand};
use db::{AnyPool, Pool};

use crate::config::{self, DbArgs};
use crate::interrupt::Shutdown;
use crate::output;

/// `cocalc-db feed ...`.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum FeedCommand {
    /// Enable a change feed on a table (installs its trigger once).
    #[command(after_help = crate::exit_status::PLAIN)]
    Enable {
        /// The table.
        table: String,
    },
    /// Disable the change feed on a table (removes its trigger).
    #[command(after_help = crate::exit_status::PLAIN)]
    Disable {
        /// The table.
        table: String,
    },
    /// List the enabled feeds with their retained offsets and log size, and
    /// the log's size and oldest offset.
    #[command(after_help = crate::exit_status::PLAIN)]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prune the change log: remove changes older than the retention (7
    /// days unless told), with the row images they hold. Subscribers that
    /// resume from a pruned offset are told to resync.
    #[command(after_help = crate::exit_status::PLAIN)]
    Prune {
        /// Remove changes older than this (`90s`, `30min`, `12h`, `7d`,
        /// `2w`).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Keep at most this many of the newest changes.
        #[arg(long, value_name = "N")]
        keep: Option<u64>,
    },
}

/// An age for `--older-than`: a number with a unit (`s`, `min`, `h`, `d`,
/// `w`); a unit is required, since a retention in milliseconds is never
/// what was meant.
fn parse_age(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!("--older-than {text:?}: expected an age with a unit, such as 90s, 30min, 12h or 7d")
    };
    let t = text.trim();
    let (number, unit) = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|at| t.split_at(at))
        .ok_or_else(invalid)?;
    let seconds = match unit.trim() {
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return Err(invalid()),
    };
    let n: f64 = number.parse().map_err(|_| invalid())?;
    // Beyond a century, the server's timestamps run out before the log does.
    let age = Duration::try_from_secs_f64(n * seconds).map_err(|_| invalid())?;
    if age > Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!("--older-than {text:?}: at most 100 years"));
    }
    Ok(age)
}

/// Arguments of `cocalc-db watch`.
#[derive(Debug, Clone, Args)]
pub(crate) struct WatchArgs {
    /// The table (a feed must be enabled on it).
    pub(crate) table: String,
    /// Only these columns (comma-separated; the key is always included).
    #[arg(long, value_name = "A,B")]
    pub(crate) columns: Option<String>,
    /// Only rows matching this filter, e.g. "owner = 'ada' AND n >= 3".
    #[arg(long = "where", value_name = "EXPR")]
    pub(crate) filter: Option<String>,
    /// Where to start: now, snapshot, or an offset to continue after.
    #[arg(long, default_value = "now", value_name = "now|snapshot|OFFSET")]
    pub(crate) from: String,
}

async fn open(db: &DbArgs, command: &str) -> Result<Feed<AnyPool>, ExitCode> {
    let config = config::from_process(db)
        .map_err(|e| output::fail(command, &format!("configuration: {e}")))?;
    // Starting a feed creates or migrates its objects when they are missing.
    output::target(command, &config);
    let pool = AnyPool::connect(&config)
        .await
        .map_err(|e| output::fail(command, &format!("open: {}", output::error_chain(&e))))?;
    match Feed::start(pool.clone(), Options::new()).await {
        Ok(feed) => Ok(feed),
        Err(e) => {
            pool.close().await;
            Err(output::fail(command, &output::error_chain(&e)))
        }
    }
}

async fn finish(feed: Feed<AnyPool>) {
    let pool = feed.pool().clone();
    drop(feed);
    pool.close().await;
}

/// Runs `cocalc-db feed ...`.
pub(crate) async fn run_feed(db: &DbArgs, command: &FeedCommand) -> ExitCode {
    let feed = match open(db, "feed").await {
        Ok(f) => f,
        Err(code) => return code,
    };
    let result = match command {
        FeedCommand::Enable { table } => feed.enable(table).await.map(|keys| {
            format!(
                "enabled a change feed on {table} (key: {})\n",
                keys.join(", ")
            )
        }),
        FeedCommand::Disable { table } => feed.disable(table).await.map(|was| {
            if was {
                format!("disabled the change feed on {table}\n")
            } else {
                format!("no change feed was enabled on {table}\n")
            }
        }),
        FeedCommand::Prune { older_than, keep } => {
            let mut retention = Retention::unlimited();
            match older_than.as_deref().map(parse_age).transpose() {
                Ok(Some(age)) => retention = retention.max_age(age),
                Ok(None) if keep.is_none() => retention = Retention::default_limits(),
                Ok(None) => {}
                Err(e) => {
                    finish(feed).await;
                    return output::fail("feed", &e);
                }
            }
            if let Some(n) = keep {
                retention = retention.max_rows(*n);
            }
            feed.prune_with(retention)
                .await
                .map(|n| format!("pruned {n} change(s)\n"))
        }
        FeedCommand::List { json } => list(&feed, *json).await,
    };
    finish(feed).await;
    match result {
        Ok(text) => output::print("feed", &text),
        Err(e) => output::fail("feed", &output::error_chain(&e)),
    }
}

/// `feed list`: the feeds, then the log as a whole.
async fn list(feed: &Feed<AnyPool>, json: bool) -> changefeed::Result<String> {
    let feeds = feed.list().await?;
    let log = feed.log_info().await?;
    if json {
        let mut text =
            serde_json::to_string_pretty(&serde_json::json!({"feeds": feeds, "log": log}))
                .unwrap_or_default();
        text.push('\n');
        return Ok(text);
    }
    let oldest = log
        .oldest_offset
        .map_or_else(|| "none".to_owned(), |o| o.to_string());
    let summary = format!(
        "log: {} change(s), {} bytes, oldest offset {oldest}, last offset {}\n",
        log.changes, log.bytes, log.last_offset
    );
    Ok(if feeds.is_empty() {
        format!("no change feeds\n{summary}")
    } else {
        let mut out = String::from("table\tkey\tfirst offset\tlast offset\tlog rows\tlog bytes\n");
        let opt = |o: Option<i64>| o.map_or_else(|| "-".to_owned(), |o| o.to_string());
        for f in feeds {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                f.table,
                f.key_columns.join(","),
                opt(f.first_offset),
                opt(f.last_offset),
                f.log_rows,
                f.log_bytes
            ));
        }
        out.push_str(&summary);
        out
    })
}

/// One event as one line of JSON: the event's envelope (`kind`, `offset`,
/// and the row under `row`, `old` or `key`), the same as the library's
/// serialization, so that no column name can collide with the event's keys.
pub(crate) fn event_line(event: &Event) -> String {
    serde_json::to_string(event).unwrap_or_else(|e| {
        serde_json::json!({"kind": "error", "message": e.to_string()}).to_string()
    })
}

fn parse_start(from: &str) -> Result<Start, String> {
    match from {
        "now" => Ok(Start::Now),
        "snapshot" => Ok(Start::Snapshot),
        n => n
            .parse::<i64>()
            .map(Start::AfterOffset)
            .map_err(|_| format!("--from {n:?}: expected now, snapshot or an offset")),
    }
}

/// Runs `cocalc-db watch`: prints one JSON object per event, flushed, until
/// Ctrl-C or SIGTERM.
pub(crate) async fn run_watch(db: &DbArgs, args: &WatchArgs) -> ExitCode {
    let start = match parse_start(&args.from) {
        Ok(s) => s,
        Err(e) => return output::fail("watch", &e),
    };
    let mut query = Query::table(args.table.clone());
    if let Some(columns) = &args.columns {
        query = query.columns(columns.split(',').map(str::trim).filter(|c| !c.is_empty()));
    }
    if let Some(filter) = &args.filter {
        match filter.parse::<Filter>() {
            Ok(f) => query = query.filter(f),
            Err(e) => return output::fail("watch", &e.to_string()),
        }
    }
    let feed = match open(db, "watch").await {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut sub = match feed.subscribe(query, start).await {
        Ok(s) => s,
        Err(e) => {
            finish(feed).await;
            return output::fail("watch", &output::error_chain(&e));
        }
    };
    let mut shutdown = Shutdown::listen();
    let stop = shutdown.recv();
    tokio::pin!(stop);
    let code = loop {
        let event = tokio::select! {
            _ = &mut stop => break ExitCode::SUCCESS,
            event = sub.recv() => event,
        };
        match event {
            Ok(event) => {
                let mut out = io::stdout().lock();
                let line = event_line(&event);
                match writeln!(out, "{line}").and_then(|()| out.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break ExitCode::SUCCESS,
                    Err(e) => break output::fail("watch", &format!("writing the output: {e}")),
                }
            }
            Err(changefeed::Error::Ended { table, reason }) => {
                // The end was the last event printed: a normal end.
                output::note(
                    "watch",
                    &format!("the change feed on {table} ended: {reason}"),
                );
                break ExitCode::SUCCESS;
            }
            Err(e) => break output::fail("watch", &output::error_chain(&e)),
        }
    };
    drop(sub);
    finish(feed).await;
    code
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use serde_json::Value as Json;

    use super::*;

    #[test]
    fn events_print_an_envelope_no_column_collides_with() {
        let row = match json!({"id": 1, "kind": "x", "offset": 3, "old": 4, "changed": 5}) {
            Json::Object(m) => m,
            _ => unreachable!(),
        };
        let e = Event::Insert { offset: 7, row };
        let printed: Json = serde_json::from_str(&event_line(&e)).unwrap_or_default();
        assert_eq!(
            printed,
            json!({"kind": "insert", "offset": 7,
                   "row": {"id": 1, "kind": "x", "offset": 3, "old": 4, "changed": 5}})
        );
        assert!(matches!(parse_start("12"), Ok(Start::AfterOffset(12))));
        assert!(parse_start("later").is_err());
    }
}
