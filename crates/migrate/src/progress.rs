//! Progress reporting, for a progress bar or a log.

/// Receives progress of an export or import, counted in rows (in bytes for
/// [`backup_file`](crate::backup_file) and [`restore_file`](crate::restore_file)).
pub trait Progress: Send {
    /// The work is about to start; `total_rows` is known in advance (0 when
    /// it is not).
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
