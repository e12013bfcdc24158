//! Opens an embedded data directory and holds it until stdin closes, so the
//! conformance suite can test what a second process sees.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use db::{Config, DataDir, PglitePool, Pool};

#[tokio::main]
async fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: hold-data-dir DIR");
        std::process::exit(2);
    };
    let pool = match PglitePool::open(&Config::new().pglite(DataDir::Path(dir.into()))).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("ready");
    let _ = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin())).await;
    pool.close().await;
}
