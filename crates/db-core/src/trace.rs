//! Tracing helpers shared by the backends: one `db.query` span per
//! statement and a completion event on target `db::query`.

use std::time::{Duration, Instant};

use tracing::Span;

/// A span for one statement. Bind values are never recorded.
pub fn query_span(system: &'static str, sql: &str) -> Span {
    tracing::debug_span!(
        "db.query",
        db.system.name = system,
        db.query.text = sql,
        db.response.returned_rows = tracing::field::Empty,
        rows_affected = tracing::field::Empty,
    )
}

/// Records the outcome of a statement on its span and emits the completion
/// event, at WARN when it took longer than `slow`.
pub fn finish(
    span: &Span,
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
                tracing::warn!(target: "db::query", parent: span, ?elapsed, rows, affected, "slow statement");
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
