//! Transactions from the pool (`pool.begin()`, owning their session),
//! transaction options (`begin_with`), `pool.transaction` with retries on
//! serialization failures and deadlocks, and pools as executors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use db::{
    AnyClient, AnyPool, BackendKind, Client, Error, Executor, IsolationLevel, Pool, SqlState,
    Transaction, TxOptions, params,
};

use crate::TestDb;

/// A database with `t (id int PRIMARY KEY, note text)`; on a server, one
/// connection at most, so that a session that goes back to the pool is
/// the one the next caller gets.
async fn setup() -> TestDb {
    let db = TestDb::with_config(|c| c.max_connections(1)).await;
    db.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
        .await;
    db
}

async fn ids(pool: &AnyPool) -> Vec<i32> {
    pool.query_scalar("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
}

/// Raises `code` from inside the server, as a conflict would.
fn raise(code: &str) -> String {
    assert!(code.chars().all(|c| c.is_ascii_alphanumeric()));
    format!("DO $$ BEGIN RAISE EXCEPTION 'raised for the test' USING ERRCODE = '{code}'; END $$")
}

/// Whether the session of the next caller is inside a transaction that
/// wrote (one left open by the previous user would be).
async fn leaked_transaction(pool: &AnyPool) -> bool {
    let xid: Option<i64> = pool
        .query_one_scalar("SELECT txid_current_if_assigned()", &[])
        .await
        .unwrap();
    xid.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_transaction_owns_its_session_and_can_move_to_another_task() {
    let db = setup().await;
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    // Kept in a struct and moved into a task: it borrows nothing.
    struct Job {
        tx: Transaction<'static, AnyClient>,
    }
    let mut job = Job { tx };
    let task = tokio::spawn(async move {
        job.tx
            .execute("INSERT INTO t VALUES (2)", &[])
            .await
            .unwrap();
        job.tx.commit().await
    });
    task.await.unwrap().unwrap();
    assert_eq!(ids(&db.pool).await, vec![1, 2]);
    assert!(!leaked_transaction(&db.pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pool_transaction_rolls_back_before_its_session_is_reused() {
    let db = setup().await;
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    drop(tx);
    // The next user (the same session, the only one) starts clean.
    assert!(!leaked_transaction(&db.pool).await);
    assert_eq!(ids(&db.pool).await, Vec::<i32>::new());

    // Dropped in another task, and after a failed statement.
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    let err = tx.execute("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO));
    tokio::spawn(async move { drop(tx) }).await.unwrap();
    let mut client = db.pool.acquire().await.unwrap();
    let mut tx = client.begin().await.expect("a clean session");
    tx.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    drop(client);
    assert_eq!(ids(&db.pool).await, vec![3]);

    // Cut short while it starts: nothing of it stays either.
    for _ in 0..20 {
        let begin = db.pool.begin();
        tokio::select! {
            biased;
            _ = tokio::task::yield_now() => {}
            _ = begin => {}
        }
    }
    assert!(!leaked_transaction(&db.pool).await);
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (4)", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(ids(&db.pool).await, vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_of_a_pool_transaction_are_guards_too() {
    let db = setup().await;
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    {
        let mut sp = tx.begin().await.unwrap();
        assert_eq!(sp.depth(), 2);
        sp.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    }
    {
        let mut sp = tx.begin().await.unwrap();
        sp.execute("INSERT INTO t VALUES (3)", &[]).await.unwrap();
        sp.commit().await.unwrap();
    }
    // SQL text that ends the transaction is noticed as on a held client.
    tx.execute("COMMIT", &[]).await.unwrap();
    let err = tx
        .execute("INSERT INTO t VALUES (4)", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TransactionLost(_)), "{err}");
    drop(tx);
    assert_eq!(ids(&db.pool).await, vec![1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_begin_while_holding_a_session() {
    let db = TestDb::new().await;
    let held = db.pool.acquire().await.unwrap();
    let line = line!() - 1;
    let second = tokio::time::timeout(Duration::from_secs(5), db.pool.begin())
        .await
        .expect("must not hang");
    let third = tokio::time::timeout(
        Duration::from_secs(5),
        db.pool.transaction(|tx| {
            Box::pin(async move { tx.query_one_scalar::<i32>("SELECT 1", &[]).await })
        }),
    )
    .await
    .expect("must not hang");
    match db.backend() {
        BackendKind::Pglite => {
            for err in [second.unwrap_err(), third.unwrap_err()] {
                let msg = err.to_string();
                assert!(matches!(err, Error::WouldDeadlock { .. }), "{msg}");
                assert!(
                    msg.contains(&format!("pool_transactions.rs:{line}")),
                    "{msg}"
                );
            }
        }
        _ => {
            second
                .expect("a server hands out another connection")
                .commit()
                .await
                .unwrap();
            assert_eq!(third.unwrap(), 1);
        }
    }
    drop(held);

    // A pool transaction holds the backend like a held client: on PGlite,
    // asking the pool again from the same task names where it began.
    let tx = db.pool.begin().await.unwrap();
    let line = line!() - 1;
    let again = tokio::time::timeout(Duration::from_secs(5), db.pool.acquire())
        .await
        .expect("must not hang");
    match db.backend() {
        BackendKind::Pglite => {
            let msg = again.unwrap_err().to_string();
            assert!(
                msg.contains(&format!("pool_transactions.rs:{line}")),
                "{msg}"
            );
        }
        _ => drop(again.unwrap()),
    }
    tx.commit().await.unwrap();
}

const LEVELS: [(IsolationLevel, &str); 4] = [
    (IsolationLevel::ReadUncommitted, "read uncommitted"),
    (IsolationLevel::ReadCommitted, "read committed"),
    (IsolationLevel::RepeatableRead, "repeatable read"),
    (IsolationLevel::Serializable, "serializable"),
];

/// The server's view of the transaction's modes.
async fn modes(tx: &mut impl Executor) -> (String, String, String) {
    let mut show = async |name: &str| -> String {
        tx.query_one_scalar(&format!("SHOW {name}"), &[])
            .await
            .unwrap()
    };
    (
        show("transaction_isolation").await,
        show("transaction_read_only").await,
        show("transaction_deferrable").await,
    )
}

fn expect(level: &str, read_only: &str, deferrable: &str) -> (String, String, String) {
    (level.into(), read_only.into(), deferrable.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_with_sets_what_the_server_reports() {
    let db = setup().await;
    for (level, name) in LEVELS {
        let options = TxOptions::new().isolation(level);
        let mut tx = db.pool.begin_with(options).await.unwrap();
        assert_eq!(
            modes(&mut tx).await,
            expect(name, "off", "off"),
            "{level:?}"
        );
        tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        tx.rollback().await.unwrap();

        let mut client = db.pool.acquire().await.unwrap();
        let mut tx = client.begin_with(options.read_only(true)).await.unwrap();
        assert_eq!(modes(&mut tx).await, expect(name, "on", "off"), "{level:?}");
        tx.commit().await.unwrap();
        // The modes were the transaction's: the next one has the defaults.
        let mut tx = client.begin().await.unwrap();
        assert_eq!(modes(&mut tx).await, expect("read committed", "off", "off"));
        tx.commit().await.unwrap();
    }
    let report = TxOptions::new()
        .isolation(IsolationLevel::Serializable)
        .read_only(true)
        .deferrable(true);
    let mut tx = db.pool.begin_with(report).await.unwrap();
    assert_eq!(modes(&mut tx).await, expect("serializable", "on", "on"));
    tx.commit().await.unwrap();
    let mut tx = db
        .pool
        .begin_with(TxOptions::new().read_only(false).deferrable(false))
        .await
        .unwrap();
    assert_eq!(modes(&mut tx).await, expect("read committed", "off", "off"));
    tx.commit().await.unwrap();
    assert!(!leaked_transaction(&db.pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_refuses_writes() {
    let db = setup().await;
    let mut tx = db
        .pool
        .begin_with(TxOptions::new().read_only(true))
        .await
        .unwrap();
    let n: i64 = tx
        .query_one_scalar("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(n, 0);
    let err = tx
        .execute("INSERT INTO t VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{err}"
    );
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(err, Error::TransactionAborted { depth: 1 }),
        "{err}"
    );

    let mut client = db.pool.acquire().await.unwrap();
    let mut tx = client
        .begin_with(TxOptions::new().read_only(true))
        .await
        .unwrap();
    let err = tx
        .batch_execute("CREATE TABLE u (id int)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "{err}"
    );
    drop(tx);
    // The session writes again once the read-only transaction is over.
    client
        .execute("INSERT INTO t VALUES (2)", &[])
        .await
        .unwrap();
    drop(client);
    assert_eq!(ids(&db.pool).await, vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_on_a_savepoint_are_refused() {
    let db = setup().await;
    let mut tx = db.pool.begin().await.unwrap();
    tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
    for options in [
        TxOptions::new().isolation(IsolationLevel::Serializable),
        TxOptions::new().read_only(true),
        TxOptions::new().deferrable(false),
    ] {
        let err = tx.begin_with(options).await.unwrap_err();
        assert!(matches!(err, Error::SavepointOptions { depth: 2 }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("savepoint") && msg.contains("isolation level"),
            "{msg}"
        );
    }
    // Nothing was sent: the transaction goes on, and a plain savepoint works.
    let mut sp = tx.begin_with(TxOptions::new()).await.unwrap();
    assert_eq!(sp.depth(), 2);
    sp.execute("INSERT INTO t VALUES (2)", &[]).await.unwrap();
    sp.commit().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids(&db.pool).await, vec![1, 2]);
}

/// Runs `pool.transaction_with` whose body inserts `id` and then, on the
/// attempts `fail_on` selects, runs `failure`; returns the result and the
/// number of attempts.
async fn attempts_of(
    pool: &AnyPool,
    options: TxOptions,
    id: i32,
    failure: String,
    fail_on: fn(u32) -> bool,
) -> (Result<i32, Error>, u32) {
    let attempts = AtomicU32::new(0);
    let result = pool
        .transaction_with(options, |tx| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            let failure = failure.clone();
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO t VALUES ($1, $2)",
                    &params![id, attempt.to_string()],
                )
                .await?;
                if fail_on(attempt) {
                    tx.batch_execute(&failure).await?;
                }
                Ok(id)
            })
        })
        .await;
    (result, attempts.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_retried_and_the_success_commits_once() {
    let db = setup().await;
    for (id, code) in [(1, "40001"), (2, "40P01")] {
        let (result, attempts) =
            attempts_of(&db.pool, TxOptions::new(), id, raise(code), |a| a < 3).await;
        assert_eq!(result.unwrap(), id, "{code}");
        assert_eq!(attempts, 3, "{code}");
    }
    let notes: Vec<(i32, String)> = db
        .pool
        .query_as("SELECT id, note FROM t ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(notes, vec![(1, "3".into()), (2, "3".into())]);
    assert!(!leaked_transaction(&db.pool).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_bound_is_honoured() {
    let db = setup().await;
    let always = |_: u32| true;
    let (result, attempts) =
        attempts_of(&db.pool, TxOptions::new(), 1, raise("40001"), always).await;
    let err = result.unwrap_err();
    assert!(err.is_serialization_failure(), "{err}");
    assert_eq!(attempts, TxOptions::DEFAULT_ATTEMPTS);

    let options = TxOptions::new().attempts(5);
    let (result, attempts) = attempts_of(&db.pool, options, 1, raise("40P01"), always).await;
    assert!(result.unwrap_err().is_deadlock());
    assert_eq!(attempts, 5);

    let once = TxOptions::new().attempts(0);
    let (result, attempts) = attempts_of(&db.pool, once, 1, raise("40001"), always).await;
    assert!(result.unwrap_err().is_serialization_failure());
    assert_eq!(attempts, 1);
    assert_eq!(ids(&db.pool).await, Vec::<i32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_errors_are_not_retried_and_nothing_is_committed() {
    let db = setup().await;
    for failure in [
        raise("22012"),
        "SELECT 1/0".to_owned(),
        "INSERT INTO t VALUES (1)".to_owned(),
    ] {
        let (result, attempts) = attempts_of(
            &db.pool,
            TxOptions::new().attempts(5),
            1,
            failure.clone(),
            |_| true,
        )
        .await;
        let err = result.unwrap_err();
        assert!(!err.is_retryable(), "{failure}: {err}");
        assert!(err.as_db_error().is_some(), "{failure}: {err}");
        assert_eq!(attempts, 1, "{failure}");
    }
    // An error of the caller's own.
    #[derive(Debug)]
    enum AppError {
        Db(Error),
        NoSuchAccount,
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            AppError::Db(e)
        }
    }
    let attempts = AtomicU32::new(0);
    let result: Result<(), AppError> = db
        .pool
        .transaction(|tx| {
            attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                Err(AppError::NoSuchAccount)
            })
        })
        .await;
    assert!(matches!(result, Err(AppError::NoSuchAccount)), "{result:?}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(ids(&db.pool).await, Vec::<i32>::new());

    // A conflict inside the caller's error type is still one.
    let attempts = AtomicU32::new(0);
    let result: Result<u32, AppError> = db
        .pool
        .transaction(|tx| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                if attempt == 1 {
                    tx.batch_execute(&raise("40001")).await?;
                }
                Ok(attempt)
            })
        })
        .await;
    if let Err(AppError::Db(e)) = &result {
        panic!("{e}");
    }
    assert!(matches!(result, Ok(2)), "{result:?}");
    assert_eq!(ids(&db.pool).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_at_commit_or_swallowed_is_retried() {
    let db = setup().await;
    // A deferred constraint trigger raises 40001 from COMMIT, as a
    // serializable transaction's commit can, when the transaction asks.
    db.pool
        .batch_execute(
            "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF current_setting('test.fail_commit', true) = 'on' THEN \
                 RAISE EXCEPTION 'conflict at commit' USING ERRCODE = '40001'; \
               END IF; RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON t \
               DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()",
        )
        .await
        .unwrap();
    let attempts = AtomicU32::new(0);
    let committed = db
        .pool
        .transaction(|tx| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                if attempt == 1 {
                    tx.batch_execute("SET LOCAL test.fail_commit = on").await?;
                }
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                Ok::<_, Error>(attempt)
            })
        })
        .await
        .unwrap();
    assert_eq!((committed, attempts.load(Ordering::SeqCst)), (2, 2));

    // Always failing at commit: the bound ends it with the commit's error.
    let attempts = AtomicU32::new(0);
    let err = db
        .pool
        .transaction(|tx| {
            attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tx.batch_execute("SET LOCAL test.fail_commit = on").await?;
                tx.execute("INSERT INTO t VALUES (2)", &[]).await
            })
        })
        .await
        .unwrap_err();
    assert!(err.is_serialization_failure(), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    // A conflict the closure swallowed: its commit cannot keep anything,
    // and the attempt is run again.
    let attempts = AtomicU32::new(0);
    let done = db
        .pool
        .transaction(|tx| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                tx.execute("INSERT INTO t VALUES (3)", &[]).await?;
                if attempt == 1 {
                    let _ignored = tx.batch_execute(&raise("40001")).await;
                }
                Ok::<_, Error>(attempt)
            })
        })
        .await
        .unwrap();
    assert_eq!((done, attempts.load(Ordering::SeqCst)), (2, 2));
    assert_eq!(ids(&db.pool).await, vec![1, 3]);
}

/// Two serializable transactions that each read what the other writes
/// (write skew: two doctors on call, each goes off call if the other is
/// on). On a server both run at once and one of them fails with 40001, to
/// be run again; on PGlite they run one after the other. Either way exactly
/// one goes off call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_serialization_conflict_is_retried() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE doctors (id int PRIMARY KEY, on_call bool NOT NULL)")
        .await;
    db.sql("INSERT INTO doctors VALUES (1, true), (2, true)")
        .await;
    let concurrent = db.backend() != BackendKind::Pglite;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    // More attempts than the default: a loser may retry before the winner
    // has committed, and lose again.
    let serializable = TxOptions::new()
        .isolation(IsolationLevel::Serializable)
        .attempts(6);
    let tasks: Vec<_> = [1_i32, 2]
        .into_iter()
        .map(|me| {
            let (pool, barrier, attempts) =
                (db.pool.clone(), Arc::clone(&barrier), Arc::clone(&attempts));
            let first = Arc::new(AtomicBool::new(true));
            tokio::spawn(async move {
                pool.transaction_with(serializable, |tx| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let wait = concurrent && first.swap(false, Ordering::SeqCst);
                    let barrier = Arc::clone(&barrier);
                    Box::pin(async move {
                        let on_call: i64 = tx
                            .query_one_scalar("SELECT count(*) FROM doctors WHERE on_call", &[])
                            .await?;
                        if wait {
                            barrier.wait().await;
                        }
                        if on_call < 2 {
                            return Ok(false);
                        }
                        tx.execute(
                            "UPDATE doctors SET on_call = false WHERE id = $1",
                            &params![me],
                        )
                        .await?;
                        Ok::<_, Error>(true)
                    })
                })
                .await
            })
        })
        .collect();
    let mut went_off = 0;
    for task in tasks {
        went_off += usize::from(task.await.unwrap().unwrap());
    }
    assert_eq!(went_off, 1);
    let on_call: i64 = db
        .pool
        .query_one_scalar("SELECT count(*) FROM doctors WHERE on_call", &[])
        .await
        .unwrap();
    assert_eq!(on_call, 1);
    let attempts = attempts.load(Ordering::SeqCst);
    if concurrent {
        assert!(attempts >= 3, "the conflict was retried: {attempts}");
    } else {
        assert_eq!(attempts, 2);
    }
}

/// Two transactions that lock two rows in opposite orders: on a server
/// one is chosen as the deadlock's victim (40P01) and run again; on PGlite
/// they run one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_deadlock_is_retried() {
    let db = TestDb::new().await;
    db.sql("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
        .await;
    db.sql("INSERT INTO counters VALUES (1, 0), (2, 0)").await;
    let concurrent = db.backend() != BackendKind::Pglite;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = [(1_i32, 2_i32), (2, 1)]
        .into_iter()
        .map(|(a, b)| {
            let (pool, barrier, attempts) =
                (db.pool.clone(), Arc::clone(&barrier), Arc::clone(&attempts));
            let first = Arc::new(AtomicBool::new(true));
            tokio::spawn(async move {
                pool.transaction_with(TxOptions::new().attempts(6), |tx| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let wait = concurrent && first.swap(false, Ordering::SeqCst);
                    let barrier = Arc::clone(&barrier);
                    Box::pin(async move {
                        let bump = "UPDATE counters SET n = n + 1 WHERE id = $1";
                        tx.execute(bump, &params![a]).await?;
                        if wait {
                            barrier.wait().await;
                        }
                        tx.execute(bump, &params![b]).await?;
                        Ok::<_, Error>(())
                    })
                })
                .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let counts: Vec<i32> = db
        .pool
        .query_scalar("SELECT n FROM counters ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(counts, vec![2, 2], "each transaction committed once");
    let attempts = attempts.load(Ordering::SeqCst);
    if concurrent {
        assert!(attempts >= 3, "the deadlock was retried: {attempts}");
    } else {
        assert_eq!(attempts, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_closure_may_borrow_from_its_caller() {
    let db = setup().await;
    let notes = vec!["first".to_owned(), "second".to_owned()];
    let count = db
        .pool
        .transaction(|tx| {
            let notes = &notes;
            Box::pin(async move {
                for (id, note) in (1_i32..).zip(notes) {
                    tx.execute("INSERT INTO t VALUES ($1, $2)", &params![id, note.as_str()])
                        .await?;
                }
                Ok::<_, Error>(notes.len())
            })
        })
        .await
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(ids(&db.pool).await, vec![1, 2]);
}

/// A repository function written once for every kind of executor.
async fn note_of(db: &mut impl Executor, id: i32) -> db::Result<Option<String>> {
    db.query_opt_scalar("SELECT note FROM t WHERE id = $1", &params![id])
        .await
}

async fn add_note(db: &mut impl Executor, id: i32, note: &str) -> db::Result<()> {
    db.execute("INSERT INTO t VALUES ($1, $2)", &params![id, note])
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_function_takes_a_pool_a_client_or_a_transaction() {
    let db = setup().await;
    let mut pool = db.pool.clone();
    add_note(&mut pool, 1, "by the pool").await.unwrap();
    assert_eq!(
        note_of(&mut pool, 1).await.unwrap().as_deref(),
        Some("by the pool")
    );
    // The pool's own methods still take `&self`.
    let _: Vec<(i32,)> = db.pool.query_as("SELECT id FROM t", &[]).await.unwrap();

    let mut client = db.pool.acquire().await.unwrap();
    add_note(&mut client, 2, "by a client").await.unwrap();
    assert_eq!(
        note_of(&mut client, 2).await.unwrap().as_deref(),
        Some("by a client")
    );
    let mut tx = client.begin().await.unwrap();
    add_note(&mut tx, 3, "by a client's transaction")
        .await
        .unwrap();
    assert_eq!(
        note_of(&mut tx, 1).await.unwrap().as_deref(),
        Some("by the pool")
    );
    drop(tx);
    drop(client);

    let mut tx = db.pool.begin().await.unwrap();
    add_note(&mut tx, 4, "by a pool transaction").await.unwrap();
    assert_eq!(
        note_of(&mut tx, 4).await.unwrap().as_deref(),
        Some("by a pool transaction")
    );
    tx.commit().await.unwrap();
    assert_eq!(note_of(&mut pool, 3).await.unwrap(), None);
    assert_eq!(ids(&db.pool).await, vec![1, 2, 4]);

    // Inside `pool.transaction` too.
    db.pool
        .transaction(|tx| {
            Box::pin(async move { add_note(tx, 5, "in a retried transaction").await })
        })
        .await
        .unwrap();
    assert_eq!(ids(&db.pool).await, vec![1, 2, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_pool_transaction_rolls_it_back() {
    let db = setup().await;
    let (wrote, written) = tokio::sync::oneshot::channel();
    let mut wrote = Some(wrote);
    let pool = db.pool.clone();
    let task = tokio::spawn(async move {
        pool.transaction(|tx| {
            let wrote = wrote.take();
            Box::pin(async move {
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                if let Some(wrote) = wrote {
                    let _ = wrote.send(());
                }
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            })
        })
        .await
    });
    written.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(!leaked_transaction(&db.pool).await);
    assert_eq!(ids(&db.pool).await, Vec::<i32>::new());
    db.pool
        .transaction(|tx| Box::pin(async move { add_note(tx, 2, "after").await }))
        .await
        .unwrap();
    assert_eq!(ids(&db.pool).await, vec![2]);
}
