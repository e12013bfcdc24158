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
            spread: None,
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
    /// How the medians and p99s of several runs spread, for a summary
    /// across runs ([`Summary::across`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) spread: Option<Spread>,
}

/// The lowest and highest of several runs' medians and p99s.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Spread {
    pub(crate) runs: usize,
    pub(crate) median_lo_us: f64,
    pub(crate) median_hi_us: f64,
    pub(crate) p99_lo_us: f64,
    pub(crate) p99_hi_us: f64,
}

/// The median of `v` (the mean of the middle two for an even count).
pub(crate) fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The lowest and highest of `v`.
pub(crate) fn range(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

impl Summary {
    /// Several runs of one workload as one: the median of their medians and
    /// of their p99s, the worst maximum, and how they spread.
    pub(crate) fn across(runs: &[Summary]) -> Option<Summary> {
        let medians: Vec<f64> = runs.iter().map(|s| s.median_us).collect();
        let p99s: Vec<f64> = runs.iter().map(|s| s.p99_us).collect();
        let (median_lo_us, median_hi_us) = range(&medians);
        let (p99_lo_us, p99_hi_us) = range(&p99s);
        Some(Summary {
            samples: runs.iter().map(|s| s.samples).sum(),
            median_us: median(&medians)?,
            p99_us: median(&p99s)?,
            max_us: runs.iter().map(|s| s.max_us).fold(0.0, f64::max),
            spread: Some(Spread {
                runs: runs.len(),
                median_lo_us,
                median_hi_us,
                p99_lo_us,
                p99_hi_us,
            }),
        })
    }
}
