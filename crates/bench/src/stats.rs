//! Timing samples and their summary.

use std::time::Duration;

use serde::Serialize;

/// The samples of one contender on one workload.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples(Vec<Duration>);

impl Samples {
    pub(crate) fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub(crate) fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub(crate) fn summary(&self) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        let mut v = self.0.clone();
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Summary {
            samples: v.len(),
            median_us: at(0.5).as_secs_f64() * 1e6,
            p99_us: at(0.99).as_secs_f64() * 1e6,
            max_us: at(1.0).as_secs_f64() * 1e6,
        })
    }
}

/// Median, p99 and max of a set of samples, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Summary {
    pub(crate) samples: usize,
    pub(crate) median_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}
