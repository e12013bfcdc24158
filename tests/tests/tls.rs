//! TLS to a PostgreSQL server, run by `cargo xtask test` in its TLS cell:
//! a server that rejects every connection without TLS, a certificate for
//! `localhost` and 127.0.0.1 from a throwaway CA (`COCALC_TEST_TLS_CA`),
//! and `DATABASE_URL` with `sslmode=verify-full`. Each way to get it wrong
//! fails at connect with one line naming the cause.
#![allow(missing_docs, clippy::unwrap_used)]

use db::{AnyPool, Config, Pool};

fn url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.contains("sslmode=verify-full") => url,
        other => panic!(
            "the TLS tests need the TLS cell's DATABASE_URL (cargo xtask test), got {other:?}"
        ),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by cargo xtask test's TLS cell"))
}

async fn connect(url: &str) -> db::Result<AnyPool> {
    AnyPool::connect(&Config::new().postgres_url(url)).await
}

/// The error of a connection that must fail, as one line.
async fn refused(url: &str) -> String {
    match connect(url).await {
        Ok(pool) => {
            pool.close().await;
            panic!("connecting to {url} must fail")
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains('\n'), "one line: {text}");
            text
        }
    }
}

#[tokio::test]
async fn verify_full_connects_over_tls() {
    let pool = connect(&url()).await.unwrap();
    let row = pool
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<bool, _>(0), "the session is encrypted");
    assert!(row.get::<String, _>(1).starts_with("TLS"));
    pool.close().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let wrong = url().replace(&env("COCALC_TEST_TLS_CA"), &env("COCALC_TEST_TLS_OTHER_CA"));
    let text = refused(&wrong).await;
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused() {
    // The server listens on 127.0.0.2 too; its certificate does not name it.
    let wrong = url().replace("@localhost:", "@127.0.0.2:");
    let text = refused(&wrong).await;
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(text.contains("127.0.0.2"), "names the host: {text}");
}

#[tokio::test]
async fn a_plain_connection_is_rejected_by_the_server() {
    let plain = url().replace("sslmode=verify-full", "sslmode=disable");
    let text = refused(&plain).await;
    assert!(
        text.contains("28000") || text.contains("pg_hba.conf"),
        "{text}"
    );
}

#[tokio::test]
async fn the_password_never_appears_in_a_connect_error() {
    let with_password = url()
        .replace("postgres@", "postgres:s3cr%40t@")
        .replace(&env("COCALC_TEST_TLS_CA"), &env("COCALC_TEST_TLS_OTHER_CA"));
    let text = refused(&with_password).await;
    assert!(!text.contains("s3cr"), "{text}");
}

/// The role that may log in only with a client certificate (`cert` in the
/// TLS cell's `pg_hba.conf`), created on first use.
async fn cert_role() {
    let pool = connect(&url()).await.unwrap();
    pool.batch_execute(
        "DO $$ BEGIN CREATE ROLE cocalc_cert LOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
    )
    .await
    .unwrap();
    pool.close().await;
}

/// The cell's URL for `cocalc_cert`, with the client certificate `pair`
/// (`.crt` and `.key` without the extension) when given.
fn cert_url(pair: Option<&str>) -> String {
    let url = url().replace("postgres@", "cocalc_cert@");
    match pair {
        Some(pair) => format!("{url}&sslcert={pair}.crt&sslkey={pair}.key"),
        None => url,
    }
}

#[tokio::test]
async fn a_client_certificate_logs_in_its_role() {
    cert_role().await;
    let pool = connect(&cert_url(Some(&env("COCALC_TEST_TLS_CLIENT"))))
        .await
        .unwrap();
    let row = pool
        .query_one(
            "SELECT current_user::text, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "cocalc_cert");
    assert!(
        row.get::<String, _>(1).contains("cocalc_cert"),
        "the server saw the certificate"
    );
    pool.close().await;
}

#[tokio::test]
async fn without_a_client_certificate_a_cert_role_is_refused() {
    cert_role().await;
    let text = refused(&cert_url(None)).await;
    assert!(text.contains("28000"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    cert_role().await;
    let text = refused(&cert_url(Some(&env("COCALC_TEST_TLS_OTHER_CLIENT")))).await;
    assert!(
        text.contains("UnknownCA"),
        "the server's alert names the cause: {text}"
    );
}

#[tokio::test]
async fn a_missing_client_key_file_is_named() {
    let pair = env("COCALC_TEST_TLS_CLIENT");
    let url = format!(
        "{}&sslcert={pair}.crt&sslkey={pair}.missing",
        cert_url(None)
    );
    let text = refused(&url).await;
    assert!(text.contains(".missing"), "names the file: {text}");
}

/// libpq's rule: with a root certificate named, `require` checks the
/// server's certificate against it (as `verify-ca` does).
#[tokio::test]
async fn require_with_a_root_certificate_checks_it() {
    let require = url().replace("sslmode=verify-full", "sslmode=require");
    let pool = connect(&require).await.unwrap();
    pool.close().await;
    let wrong = require.replace(&env("COCALC_TEST_TLS_CA"), &env("COCALC_TEST_TLS_OTHER_CA"));
    let text = refused(&wrong).await;
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}
