//! A progress bar on standard error, shown only when it is a terminal.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

/// Counts rows against the expected total; invisible when standard error
/// is not a terminal (logs and pipes stay clean).
pub(crate) struct Bar {
    label: &'static str,
    bytes: bool,
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar that will show `label` before its counts of rows.
    pub(crate) fn new(label: &'static str) -> Self {
        Bar {
            label,
            bytes: false,
            bar: None,
        }
    }

    /// A bar that counts bytes; a spinner when the total is not known.
    pub(crate) fn bytes(label: &'static str) -> Self {
        Bar {
            label,
            bytes: true,
            bar: None,
        }
    }
}

impl migrate::Progress for Bar {
    fn start(&mut self, total_rows: u64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let label = self.label;
        let (bar, template) = match (self.bytes, total_rows) {
            (false, _) => (
                ProgressBar::new(total_rows),
                format!(
                    "{label} {{bar:40}} {{human_pos}}/{{human_len}} rows ({{per_sec}}, {{eta}} left)"
                ),
            ),
            (true, 0) => (
                ProgressBar::new_spinner(),
                format!("{label} {{spinner}} {{bytes}} ({{bytes_per_sec}})"),
            ),
            (true, total) => (
                ProgressBar::new(total),
                format!(
                    "{label} {{bar:40}} {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, {{eta}} left)"
                ),
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style);
        }
        self.bar = Some(bar);
    }

    fn advance(&mut self, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(rows);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
