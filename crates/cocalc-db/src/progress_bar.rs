//! A progress bar on standard error, shown only when it is a terminal.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

/// Counts rows against the expected total; invisible when standard error
/// is not a terminal (logs and pipes stay clean).
pub(crate) struct Bar {
    label: &'static str,
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar that will show `label` before its counts.
    pub(crate) fn new(label: &'static str) -> Self {
        Bar { label, bar: None }
    }
}

impl migrate::Progress for Bar {
    fn start(&mut self, total_rows: u64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(total_rows);
        let template = format!(
            "{} {{bar:40}} {{human_pos}}/{{human_len}} rows ({{per_sec}}, {{eta}} left)",
            self.label
        );
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
