//! Peak memory of reading a large result on the embedded backend, through
//! `fetch` (a row stream) or `query` (the whole result collected).
//!
//! `cargo run -p db-pglite --example fetch_memory -- fetch|query [ROWS]`
//! prints the process's peak resident memory (`VmHWM`) after opening the
//! database and after reading the result. Run each mode in its own process:
//! the peak is the process's whole life.
#![allow(clippy::print_stdout)]

use db_core::{Config, DataDir, Executor, Pool, params};
use db_pglite::PglitePool;
use futures::TryStreamExt as _;

/// The process's peak resident set size, in MB.
fn peak_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> db_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "fetch".into());
    let rows: i64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(500_000);
    let pool = PglitePool::open(&Config::new().pglite(DataDir::Memory)).await?;
    // About 100 bytes a row on the wire: an int8, a 32-character text and a
    // 50-character text.
    let sql =
        "SELECT i::int8, md5(i::text), repeat('x', 50) FROM generate_series(1, $1::int8) AS i";
    let n = params![rows];
    // Warm up the backend and the statement before the baseline.
    pool.query("SELECT 1", &[]).await?;
    let baseline = peak_mb();
    let started = std::time::Instant::now();
    let (count, bytes) = match mode.as_str() {
        "query" => {
            let mut client = pool.acquire().await?;
            let all = client.query(sql, &n).await?;
            let bytes: usize = all.iter().map(|r| r.get::<String, _>(1).len()).sum();
            (all.len(), bytes)
        }
        _ => {
            let mut stream = pool.fetch(sql, &n);
            let (mut count, mut bytes) = (0, 0);
            while let Some(row) = stream.try_next().await? {
                count += 1;
                bytes += row.get::<String, _>(1).len();
            }
            (count, bytes)
        }
    };
    println!(
        "{mode}: {count} rows ({bytes} bytes of md5 text) in {:.2?}; peak RSS {baseline:.0} MB after open, {:.0} MB after reading",
        started.elapsed(),
        peak_mb()
    );
    pool.close().await;
    Ok(())
}
