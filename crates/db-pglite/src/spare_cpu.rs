//! Whether the machine has a core to spare for a spinning waiter.
//!
//! A waiter that spins keeps its core busy; that only pays while another
//! core runs the thread it waits for. On a machine whose cores other
//! processes keep busy, the spinner takes the core its peer needs, and both
//! lose the scheduler's favour for threads that sleep: the hand-off goes
//! from microseconds to a scheduler tick. So spinning is allowed only while
//! the CPU time other processes used recently leaves at least one core
//! idle besides the one a waiter's peer runs on.
//!
//! The estimate comes from `/proc/stat` (all CPUs) minus `/proc/self/stat`
//! (this process, whose own spinning must not count against it), sampled
//! at most every [`INTERVAL`] by whichever waiter asks. Where `/proc` is not
//! readable the answer is always yes, and the waiters' own adaptation (see
//! `handoff::Spin`) is what remains.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// How often the estimate is renewed.
const INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Cores other processes may keep busy, on average over [`INTERVAL`], with
/// spinning still allowed: a waiter and its peer need two cores, and half a
/// core of others' work leaves them most of that.
const OTHERS_ALLOWANCE: f64 = 0.5;

struct Estimate {
    /// Whether the last interval left a core to spare.
    spare: AtomicBool,
    /// When the estimate is due again, in nanoseconds since `epoch`.
    due_ns: AtomicU64,
    epoch: Instant,
    last: Mutex<Option<Sample>>,
}

#[derive(Clone, Copy)]
struct Sample {
    /// Clock ticks of all CPUs, busy and idle.
    total: u64,
    /// Clock ticks of all CPUs, idle (including waiting for I/O).
    idle: u64,
    /// Clock ticks this process ran.
    own: u64,
}

fn estimate() -> &'static Estimate {
    static ESTIMATE: OnceLock<Estimate> = OnceLock::new();
    ESTIMATE.get_or_init(|| Estimate {
        spare: AtomicBool::new(true),
        due_ns: AtomicU64::new(0),
        epoch: Instant::now(),
        last: Mutex::new(None),
    })
}

/// Whether, by the last estimate, a spinning waiter finds a core of its own.
pub(crate) fn core_to_spare() -> bool {
    let e = estimate();
    let now = u64::try_from(e.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if now >= e.due_ns.load(Ordering::Relaxed)
        && let Ok(mut last) = e.last.try_lock()
    {
        e.due_ns.store(
            now.saturating_add(u64::try_from(INTERVAL.as_nanos()).unwrap_or(u64::MAX)),
            Ordering::Relaxed,
        );
        if let Some(sample) = sample() {
            if let Some(previous) = *last {
                e.spare
                    .store(spare(&previous, &sample, cores()), Ordering::Relaxed);
            }
            *last = Some(sample);
        }
    }
    e.spare.load(Ordering::Relaxed)
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| usize::from(n) as f64)
}

/// Whether the CPU time others used between two samples leaves a core to
/// spare: all busy time, less this process's, in cores.
fn spare(previous: &Sample, now: &Sample, cores: f64) -> bool {
    let total = now.total.saturating_sub(previous.total);
    if total == 0 {
        // Too soon to tell: keep the previous answer's optimism.
        return true;
    }
    let busy = total.saturating_sub(now.idle.saturating_sub(previous.idle));
    let others = busy.saturating_sub(now.own.saturating_sub(previous.own));
    let others_cores = others as f64 / total as f64 * cores;
    cores - others_cores >= 2.0 - OTHERS_ALLOWANCE
}

fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse(&stat, &own)
}

/// Reads the all-CPU line of `/proc/stat` and this process's user and
/// system time from `/proc/self/stat`.
fn parse(stat: &str, own: &str) -> Option<Sample> {
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal guest guest_nice; the
    // guest times are already counted in user and nice.
    let total = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    // The command name may hold spaces; the fields after its closing
    // parenthesis start with the state (field 3); utime and stime are
    // fields 14 and 15.
    let after = own.rsplit_once(')')?.1;
    let mut rest = after.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(Sample {
        total,
        idle,
        own: utime + stime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "4242 (a (strange) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                       30 20 0 0 20 0 5 0 100 1000 100";

    #[test]
    fn parses_proc_stat_and_self_stat() {
        let stat = "cpu  100 5 50 800 10 0 3 2 0 0\ncpu0 50 2 25 400 5 0 1 1 0 0\n";
        let s = parse(stat, OWN).expect("a sample");
        assert_eq!(s.total, 970);
        assert_eq!(s.idle, 810);
        assert_eq!(s.own, 50);
    }

    #[test]
    fn a_core_is_spare_unless_others_keep_one_busy() {
        let at = |total, idle, own| Sample { total, idle, own };
        // Two cores, 200 ticks: we used 150, others nothing.
        assert!(spare(&at(0, 0, 0), &at(200, 50, 150), 2.0));
        // Others used a whole core (100 of 200 ticks) besides our 50.
        assert!(!spare(&at(0, 0, 0), &at(200, 50, 50), 2.0));
        // One core: never a core to spare.
        assert!(!spare(&at(0, 0, 0), &at(100, 100, 0), 1.0));
    }

    #[test]
    fn the_live_estimate_answers() {
        // Whatever the machine is doing, asking twice works.
        let _ = core_to_spare();
        let _ = core_to_spare();
    }
}
