//! The contenders, each able to run the same statements.

use std::time::{Duration, Instant};

use db::{Executor, Value};
use pglite_oxide::{ExecProtocolOptions, Pglite};
use sqlx::{Connection, Row, ValueRef};

/// Who is being measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    DbPglite,
    OxideQuery,
    OxideRaw,
    DbPostgres,
    Sqlx,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::DbPglite => "db-pglite",
            Kind::OxideQuery => "pglite-oxide Pglite::query (JSON)",
            Kind::OxideRaw => "pglite-oxide raw wire",
            Kind::DbPostgres => "db-postgres (PG 15)",
            Kind::Sqlx => "sqlx (PG 15)",
        }
    }
}

/// A contender with its open database.
pub(crate) enum Contender {
    DbPglite(db::PglitePool),
    Oxide(Box<Pglite>, Kind, Vec<String>),
    DbPostgres(db::PgPool),
    Sqlx(sqlx::PgPool),
}

/// Why `Pglite::query` sits out the COPY workloads.
pub(crate) const NO_COPY: &str = "not applicable: Pglite::query has no COPY";

pub(crate) type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A statement and its parameters, in the shapes each contender takes.
pub(crate) struct Stmt<'a> {
    pub(crate) sql: &'a str,
    pub(crate) params: &'a [Value],
}

impl Contender {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Contender::DbPglite(_) => Kind::DbPglite,
            Contender::Oxide(_, k, _) => *k,
            Contender::DbPostgres(_) => Kind::DbPostgres,
            Contender::Sqlx(_) => Kind::Sqlx,
        }
    }

    /// Runs a script (setup), untimed.
    pub(crate) async fn batch(&mut self, sql: &str) -> BenchResult<()> {
        match self {
            Contender::DbPglite(p) => p.batch_execute(sql).await?,
            Contender::Oxide(p, _, _) => {
                p.exec(sql, None)?;
            }
            Contender::DbPostgres(p) => p.batch_execute(sql).await?,
            Contender::Sqlx(p) => {
                sqlx::raw_sql(sql).execute(&*p).await?;
            }
        }
        Ok(())
    }

    /// Runs one statement through the pool (autocommit) and returns the rows
    /// it produced, decoded by the contender's own means.
    pub(crate) async fn run(&mut self, stmt: &Stmt<'_>) -> BenchResult<usize> {
        Ok(match self {
            Contender::DbPglite(p) => p.query(stmt.sql, stmt.params).await?.len(),
            Contender::DbPostgres(p) => p.query(stmt.sql, stmt.params).await?.len(),
            Contender::Oxide(p, Kind::OxideRaw, prepared) => {
                // The floor: a statement prepared once, then bind, execute
                // and sync as protocol bytes, the response left undecoded.
                let name = match prepared.iter().position(|s| s == stmt.sql) {
                    Some(i) => format!("raw{i}"),
                    None => {
                        prepared.push(stmt.sql.to_owned());
                        let name = format!("raw{}", prepared.len() - 1);
                        p.exec_protocol_raw(
                            &parse_message(&name, stmt.sql),
                            ExecProtocolOptions::no_sync(),
                        )?;
                        name
                    }
                };
                let bytes = bind_message(&name, stmt)?;
                p.exec_protocol_raw(&bytes, ExecProtocolOptions::no_sync())?
                    .len()
            }
            Contender::Oxide(p, _, _) => {
                let params: Vec<serde_json::Value> = stmt.params.iter().map(json_param).collect();
                p.query(stmt.sql, &params, None)?.rows.len()
            }
            Contender::Sqlx(p) => {
                let mut q = sqlx::query(stmt.sql);
                for v in stmt.params {
                    q = match v {
                        Value::Int8(i) => q.bind(*i),
                        Value::Int4(i) => q.bind(*i),
                        Value::Text(s) => q.bind(s.clone()),
                        Value::Array(a) => match a.element_type {
                            db::Type::INT8 => q.bind(
                                a.elements
                                    .iter()
                                    .map(|e| if let Value::Int8(i) = e { *i } else { 0 })
                                    .collect::<Vec<i64>>(),
                            ),
                            _ => q.bind(
                                a.elements
                                    .iter()
                                    .map(|e| {
                                        if let Value::Text(s) = e {
                                            s.clone()
                                        } else {
                                            String::new()
                                        }
                                    })
                                    .collect::<Vec<String>>(),
                            ),
                        },
                        other => return Err(format!("sqlx contender cannot bind {other:?}").into()),
                    };
                }
                let rows = q.fetch_all(&*p).await?;
                // Take every value out of the row as owned bytes: the least
                // any decoding does, so the comparison favours sqlx.
                let mut values: Vec<Option<Vec<u8>>> = Vec::new();
                for r in &rows {
                    for i in 0..r.len() {
                        let raw = r.try_get_raw(i)?;
                        values.push(if raw.is_null() {
                            None
                        } else {
                            Some(raw.as_bytes()?.to_vec())
                        });
                    }
                }
                std::hint::black_box(values);
                rows.len()
            }
        })
    }

    /// Runs `COPY ... FROM STDIN` with `data` and returns the rows copied
    /// (`None` from the raw wire contender, which leaves the response
    /// undecoded). `Pglite::query` has no COPY.
    pub(crate) async fn copy_in(&mut self, sql: &str, data: &[u8]) -> BenchResult<Option<u64>> {
        Ok(Some(match self {
            Contender::DbPglite(p) => p.copy_in(sql, data).await?,
            Contender::DbPostgres(p) => p.copy_in(sql, data).await?,
            Contender::Sqlx(p) => {
                let mut conn = p.acquire().await?;
                let mut copy = conn.copy_in_raw(sql).await?;
                copy.send(data).await?;
                copy.finish().await?
            }
            Contender::Oxide(p, Kind::OxideRaw, _) => {
                // The floor: the statement, the data and CopyDone as
                // protocol bytes in one call, the response left undecoded.
                let mut query = sql.as_bytes().to_vec();
                query.push(0);
                let mut buf = Vec::with_capacity(data.len() + query.len() + 16);
                message(&mut buf, b'Q', &query);
                message(&mut buf, b'd', data);
                message(&mut buf, b'c', &[]);
                let response = p.exec_protocol_raw(&buf, ExecProtocolOptions::no_sync())?;
                if response.first() != Some(&b'G') {
                    return Err("raw COPY FROM STDIN was refused".into());
                }
                std::hint::black_box(response);
                return Ok(None);
            }
            Contender::Oxide(..) => return Err(NO_COPY.into()),
        }))
    }

    /// Runs `COPY ... TO STDOUT`, touching every chunk, and returns the
    /// bytes received (the whole raw response for the raw wire contender).
    /// `Pglite::query` has no COPY.
    pub(crate) async fn copy_out(&mut self, sql: &str) -> BenchResult<usize> {
        let mut bytes = 0;
        let count = |chunk: &[u8]| {
            bytes += std::hint::black_box(chunk).len();
            Ok(())
        };
        match self {
            Contender::DbPglite(p) => {
                p.copy_out(sql, count).await?;
            }
            Contender::DbPostgres(p) => {
                p.copy_out(sql, count).await?;
            }
            Contender::Sqlx(p) => {
                use futures::TryStreamExt as _;
                let mut conn = p.acquire().await?;
                let mut stream = conn.copy_out_raw(sql).await?;
                while let Some(chunk) = stream.try_next().await? {
                    bytes += std::hint::black_box(&chunk).len();
                }
            }
            Contender::Oxide(p, Kind::OxideRaw, _) => {
                let mut query = sql.as_bytes().to_vec();
                query.push(0);
                let mut buf = Vec::new();
                message(&mut buf, b'Q', &query);
                bytes = p
                    .exec_protocol_raw(&buf, ExecProtocolOptions::no_sync())?
                    .len();
            }
            Contender::Oxide(..) => return Err(NO_COPY.into()),
        }
        Ok(bytes)
    }

    /// Runs `n` statements inside one transaction.
    pub(crate) async fn transaction(&mut self, stmt: &Stmt<'_>, n: usize) -> BenchResult<()> {
        match self {
            Contender::DbPglite(p) => {
                let mut c = db::Pool::acquire(p).await?;
                let mut tx = db::Client::begin(&mut c).await?;
                for _ in 0..n {
                    tx.execute(stmt.sql, stmt.params).await?;
                }
                tx.commit().await?;
            }
            Contender::DbPostgres(p) => {
                let mut c = db::Pool::acquire(p).await?;
                let mut tx = db::Client::begin(&mut c).await?;
                for _ in 0..n {
                    tx.execute(stmt.sql, stmt.params).await?;
                }
                tx.commit().await?;
            }
            Contender::Sqlx(p) => {
                let mut conn = p.acquire().await?;
                let mut tx = conn.begin().await?;
                for _ in 0..n {
                    let mut q = sqlx::query(stmt.sql);
                    for v in stmt.params {
                        if let Value::Text(s) = v {
                            q = q.bind(s.clone());
                        }
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Contender::Oxide(p, _, _) => {
                p.exec("BEGIN", None)?;
                let params: Vec<serde_json::Value> = stmt.params.iter().map(json_param).collect();
                for _ in 0..n {
                    p.query(stmt.sql, &params, None)?;
                }
                p.exec("COMMIT", None)?;
            }
        }
        Ok(())
    }
}

fn json_param(v: &Value) -> serde_json::Value {
    match v {
        Value::Int8(i) => serde_json::json!(i),
        Value::Int4(i) => serde_json::json!(i),
        Value::Text(s) => serde_json::json!(s),
        Value::Array(a) => serde_json::Value::Array(a.elements.iter().map(json_param).collect()),
        _ => serde_json::Value::Null,
    }
}

fn message(buf: &mut Vec<u8>, tag: u8, body: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    buf.extend_from_slice(body);
}

/// Parse of a named statement with untyped parameters, and sync.
fn parse_message(name: &str, sql: &str) -> Vec<u8> {
    let mut parse = Vec::new();
    parse.extend_from_slice(name.as_bytes());
    parse.push(0);
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut buf = Vec::new();
    message(&mut buf, b'P', &parse);
    message(&mut buf, b'S', &[]);
    buf
}

/// Bind (text parameters, text results), execute and sync.
fn bind_message(name: &str, stmt: &Stmt<'_>) -> BenchResult<Vec<u8>> {
    let mut bind = vec![0u8];
    bind.extend_from_slice(name.as_bytes());
    bind.extend_from_slice(&[0, 0, 0]);
    bind.extend_from_slice(&(stmt.params.len() as i16).to_be_bytes());
    for p in stmt.params {
        let text = match p {
            Value::Int8(i) => i.to_string(),
            Value::Int4(i) => i.to_string(),
            Value::Text(s) => s.clone(),
            other => return Err(format!("raw contender cannot bind {other:?}").into()),
        };
        bind.extend_from_slice(&(text.len() as i32).to_be_bytes());
        bind.extend_from_slice(text.as_bytes());
    }
    bind.extend_from_slice(&[0, 0]);
    let mut buf = Vec::new();
    message(&mut buf, b'B', &bind);
    message(&mut buf, b'E', &[0, 0, 0, 0, 0]);
    message(&mut buf, b'S', &[]);
    Ok(buf)
}

/// Times `f`, returning its duration.
pub(crate) async fn timed<F, T>(f: F) -> BenchResult<Duration>
where
    F: std::future::Future<Output = BenchResult<T>>,
{
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed())
}
