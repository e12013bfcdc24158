//! `@electric-sql/pglite` on Node.js, what the TypeScript predecessor used.
//! `cargo xtask bench` installs it with npm under `target/`; without `node`
//! the contender is reported as skipped.

use std::time::Duration;

use crate::stats::Samples;
use crate::{Entry, Options, Report};

/// The contender's name in the tables.
pub(crate) const NAME: &str = "@electric-sql/pglite (Node.js)";

const SCRIPT: &str = r#"
import { PGlite } from '@electric-sql/pglite';
const [pointN, insertN] = process.argv.slice(2).map(Number);
const t0 = performance.now();
const db = new PGlite();
await db.waitReady;
const openMs = performance.now() - t0;
await db.exec(`CREATE TABLE bench_kv (id int8 PRIMARY KEY, v text NOT NULL);
  INSERT INTO bench_kv SELECT g, md5(g::text) FROM generate_series(1, 10000) g;
  CREATE TABLE bench_ins (id bigserial PRIMARY KEY, v text);`);
const time = async (n, f) => {
  const out = [];
  await f(-1);
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await f(i);
    out.push((performance.now() - s) * 1000);
  }
  return out;
};
const point = await time(pointN, (i) => db.query('SELECT id, v FROM bench_kv WHERE id = $1', [((i * 2654435761) % 10000) + 1]));
const insert = await time(insertN, (i) => db.query('INSERT INTO bench_ins (v) VALUES ($1)', ['row ' + i]));
console.log(JSON.stringify({ openMs, point, insert }));
await db.close();
"#;

fn samples(v: &serde_json::Value) -> Samples {
    let mut s = Samples::default();
    for us in v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_f64)
    {
        s.push(Duration::from_secs_f64(us / 1e6));
    }
    s
}

fn skipped(report: &mut Report, why: String) {
    for w in report
        .workloads
        .iter_mut()
        .filter(|w| w.condition.as_deref() == Some(crate::workloads::IDLE))
        .filter(|w| w.name == "point SELECT by primary key" || w.name == "autocommit INSERT")
    {
        w.entries.push(Entry {
            contender: NAME.into(),
            summary: None,
            note: Some(format!("skipped: {why}")),
        });
    }
}

/// Runs the Node contender and adds its figures to the report.
pub(crate) async fn run(o: &Options, report: &mut Report, point: usize, insert: usize) {
    let Some(dir) = &o.node_dir else {
        return skipped(
            report,
            "no Node.js installation of @electric-sql/pglite was given".into(),
        );
    };
    let script = dir.join("bench.mjs");
    if let Err(e) = std::fs::write(&script, SCRIPT) {
        return skipped(report, format!("writing {}: {e}", script.display()));
    }
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(point.to_string())
        .arg(insert.to_string())
        .current_dir(dir)
        .output()
        .await;
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return skipped(
                report,
                format!(
                    "node failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            );
        }
        Err(e) => return skipped(report, format!("running node: {e}")),
    };
    let json: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(j) => j,
        Err(e) => return skipped(report, format!("reading node's output: {e}")),
    };
    for (workload, key) in [
        ("point SELECT by primary key", "point"),
        ("autocommit INSERT", "insert"),
    ] {
        // Node runs once, on the otherwise idle machine.
        if let Some(w) = report
            .workloads
            .iter_mut()
            .find(|w| w.name == workload && w.condition.as_deref() == Some(crate::workloads::IDLE))
        {
            w.entries.push(Entry {
                contender: NAME.into(),
                summary: samples(&json[key]).summary(),
                note: None,
            });
        }
    }
    if let Some(ms) = json["openMs"].as_f64() {
        report.figures.push((
            "open a temporary database: @electric-sql/pglite (Node.js)".into(),
            format!("{ms:.0} ms"),
        ));
    }
}
