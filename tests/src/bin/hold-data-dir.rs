//! Opens an embedded data directory for the conformance suite's
//! multi-process tests: `hold-data-dir DIR` holds it until stdin closes;
//! `hold-data-dir DIR --write` inserts rows in a loop and prints the id of
//! each one after its commit returned, until it is killed;
//! `hold-data-dir DIR --crash` inserts a row into `deep_rows` in a
//! transaction, then runs `deep_insert(1)` (see the conformance suite's
//! `stack_depth.rs`), prints how that ended, and holds the directory.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

use db::{Client, Config, DataDir, Executor, PglitePool, Pool, params};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: hold-data-dir DIR [--write]");
        std::process::exit(2);
    };
    let mode = args.next();
    let write = mode.as_deref() == Some("--write");
    let pool = match PglitePool::open(&Config::new().pglite(DataDir::Path(dir.into()))).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("ready");
    if mode.as_deref() == Some("--crash") {
        println!("{}", crash(&pool).await);
    }
    if write && let Err(e) = write_forever(&pool).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let _ = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin())).await;
    pool.close().await;
}

/// How a runaway recursion in an open transaction ended.
async fn crash(pool: &PglitePool) -> String {
    let Ok(mut client) = pool.acquire().await else {
        return "acquire failed".into();
    };
    let Ok(mut tx) = client.begin().await else {
        return "begin failed".into();
    };
    if let Err(e) = tx.execute("INSERT INTO deep_rows VALUES (0)", &[]).await {
        return format!("insert failed: {e}");
    }
    match tx.query("SELECT deep_insert(1)", &[]).await {
        Err(db::Error::BackendCrashed { .. }) => "crashed".into(),
        Err(e) => format!("failed otherwise: {e}"),
        Ok(_) => "returned".into(),
    }
}

async fn write_forever(pool: &PglitePool) -> db::Result<()> {
    pool.batch_execute("CREATE TABLE IF NOT EXISTS acked (id int8 PRIMARY KEY, pad text)")
        .await?;
    let start: i64 = pool
        .query_one("SELECT coalesce(max(id), 0) FROM acked", &[])
        .await?
        .get(0);
    let mut stdout = std::io::stdout().lock();
    for id in start + 1.. {
        pool.execute(
            "INSERT INTO acked VALUES ($1, repeat('x', 200))",
            &params![id],
        )
        .await?;
        // Printed only once the commit returned: the promise under test.
        if writeln!(stdout, "{id}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}
