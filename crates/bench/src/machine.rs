//! The machine's condition while the workloads run: a CPU load the bench
//! makes itself, the CPU time other processes take, and this process's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::contender::BenchResult;

/// The number of cores.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// A background CPU load: a child process ([`burn`]) keeping one thread
/// busy per core but one, so that a sleeping thread's wake-up finds no idle
/// core, as on a machine doing other work. A process of its own, not
/// threads of this one, because that is what a machine's other work is.
/// Stops when dropped.
pub(crate) struct Load(Option<std::process::Child>);

impl Load {
    pub(crate) fn start() -> BenchResult<Load> {
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("--burn")
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        // Let its threads get going.
        std::thread::sleep(Duration::from_millis(50));
        Ok(Load(Some(child)))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The load [`Load`] runs: one busy thread per core but one, until this
/// process's standard input closes (the parent ended) or it is killed.
pub(crate) fn burn() {
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..cores().saturating_sub(1).max(1) {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1000 {
                    x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005) + 1);
                }
            }
        });
    }
    let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
    stop.store(true, Ordering::Relaxed);
}

/// CPU time of every thread of this process, from `/proc` (nanoseconds on
/// CPU, the first field of each thread's `schedstat`).
pub(crate) fn cpu_time() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            // The thread ended meanwhile.
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// The machine's CPU use so far, all CPUs and this process, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    total: u64,
    idle: u64,
    own: u64,
}

impl Usage {
    /// Reads `/proc/stat` and `/proc/self/stat`; `None` without them.
    pub(crate) fn now() -> Option<Usage> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // utime and stime, fields 14 and 15; the name (field 2) may hold
        // spaces, so count from its closing parenthesis.
        let mut after = own.rsplit_once(')')?.1.split_whitespace().skip(11);
        let utime: u64 = after.next()?.parse().ok()?;
        let stime: u64 = after.next()?.parse().ok()?;
        Some(Usage {
            // user nice system idle iowait irq softirq steal.
            total: fields.iter().take(8).sum(),
            idle: fields.get(3)? + fields.get(4).copied().unwrap_or(0),
            own: utime + stime,
        })
    }

    /// How many cores, on average, processes other than this one kept busy
    /// since `self` (the bench's own [`Load`] among them).
    pub(crate) fn others_since(&self) -> Option<f64> {
        let now = Usage::now()?;
        let total = now.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let busy = total.saturating_sub(now.idle.saturating_sub(self.idle));
        let others = busy.saturating_sub(now.own.saturating_sub(self.own));
        Some(others as f64 / total as f64 * cores() as f64)
    }
}
