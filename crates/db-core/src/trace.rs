//! Tracing helpers shared by the backends: one `db.query` span per
//! statement and a completion event on target `db::query`.

use std::time::{Duration, Instant};

use tracing::Span;

use crate::lex::{summary, without_literals};

/// A span for one statement. Bind values are never recorded, nor the
/// literals in its text ([`without_literals`]).
pub fn query_span(system: &'static str, sql: &str) -> Span {
    tracing::debug_span!(
        "db.query",
        db.system.name = system,
        db.query.text = %Redacted(sql),
        db.response.returned_rows = tracing::field::Empty,
        rows_affected = tracing::field::Empty,
    )
}

/// SQL text shown without its literals, computed only when a subscriber
/// records it.
struct Redacted<'a>(&'a str);

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&without_literals(self.0))
    }
}

/// Records the outcome of a statement on its span and emits the completion
/// event, at WARN when it took longer than `slow`, naming the statement by
/// its first words ([`summary`]).
pub fn finish(
    span: &Span,
    sql: &str,
    started: Instant,
    slow: Duration,
    outcome: Result<(usize, u64), &crate::Error>,
) {
    let elapsed = started.elapsed();
    match outcome {
        Ok((rows, affected)) => {
            span.record("db.response.returned_rows", rows);
            span.record("rows_affected", affected);
            if elapsed >= slow {
                let statement = summary(sql);
                tracing::warn!(target: "db::query", parent: span, ?elapsed, rows, affected, statement, "slow statement");
            } else {
                tracing::debug!(target: "db::query", parent: span, ?elapsed, rows, affected, "statement done");
            }
        }
        Err(error) => {
            tracing::debug!(target: "db::query", parent: span, ?elapsed, %error, "statement failed");
        }
    }
}

/// Parses the row count of a command tag (`SELECT 3`, `INSERT 0 2`,
/// `UPDATE 1`); 0 for tags without one (`CREATE TABLE`).
pub fn rows_from_command_tag(tag: &str) -> u64 {
    let mut words = tag.split_ascii_whitespace();
    match words.next() {
        Some("SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE") => {
            words.last().and_then(|n| n.parse().ok()).unwrap_or(0)
        }
        _ => 0,
    }
}
