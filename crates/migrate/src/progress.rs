//! Progress reporting, for a progress bar or a log.

/// Receives progress of an export or import, counted in rows.
pub trait Progress: Send {
    /// The work is about to start; `total_rows` is known in advance.
    fn start(&mut self, total_rows: u64) {
        let _ = total_rows;
    }

    /// `rows` more rows are done.
    fn advance(&mut self, rows: u64) {
        let _ = rows;
    }

    /// The work is over (successfully or not).
    fn finish(&mut self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
