//! `cargo xtask bench`: provisions what the contenders need (a throwaway
//! PostgreSQL 15, `@electric-sql/pglite` from npm when `node` is present),
//! then runs the `bench` crate in release mode.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::flags::BenchFlags;
use crate::{Result, postgres, project_root};

/// The Node PGlite release the TypeScript predecessor used.
const NODE_PGLITE: &str = "@electric-sql/pglite@0.4";

pub(crate) fn run(flags: &BenchFlags) -> Result<()> {
    let cluster = postgres::Cluster::start(15, postgres::Tls::Off)?;
    let node_dir = install_node_pglite();
    // The migrate workload runs the `cocalc-db` binary as a child process,
    // to measure what a user's export and import take (time and memory).
    let built = Command::new(env!("CARGO"))
        .current_dir(project_root())
        .args(["build", "--release", "--quiet", "-p", "cocalc-db"])
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !built.success() {
        return Err(format!("building cocalc-db failed ({built})"));
    }
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(project_root())
        .args(["run", "--release", "--quiet", "-p", "bench", "--"])
        .args(["--postgres-url", &cluster.url()]);
    match &node_dir {
        Ok(dir) => {
            cargo.arg("--node-dir").arg(dir);
        }
        Err(why) => eprintln!("==> Node PGlite skipped: {why}"),
    }
    if flags.quick {
        cargo.arg("--quick");
    }
    if let Some(json) = &flags.json {
        cargo.args(["--json", json]);
    }
    if let Some(only) = &flags.only {
        cargo.args(["--only", only]);
    }
    if let Some(runs) = &flags.runs {
        cargo.args(["--runs", runs]);
    }
    let status = cargo.status().map_err(|e| format!("running cargo: {e}"))?;
    drop(cluster);
    if status.success() {
        Ok(())
    } else {
        Err(format!("the benchmark failed ({status})"))
    }
}

/// Installs `@electric-sql/pglite` under `target/bench-node` once.
fn install_node_pglite() -> Result<PathBuf> {
    let found = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("node") || !found("npm") {
        return Err("node or npm is not installed".into());
    }
    let dir = project_root().join("target").join("bench-node");
    if dir
        .join("node_modules/@electric-sql/pglite/package.json")
        .exists()
    {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // An ES-module package so the benchmark script can `import` PGlite.
    write(
        &dir.join("package.json"),
        r#"{"private": true, "type": "module"}"#,
    )?;
    eprintln!("==> installing {NODE_PGLITE} into {}", dir.display());
    let status = Command::new("npm")
        .current_dir(&dir)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            NODE_PGLITE,
        ])
        .status()
        .map_err(|e| format!("running npm: {e}"))?;
    if status.success() {
        Ok(dir)
    } else {
        Err(format!("npm install {NODE_PGLITE} failed ({status})"))
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}
