//! The store's two engines against each other: a bus's store (SQLite, or PostgreSQL when the
//! suite runs with `LIENTHONG_TEST_STORE=postgres`) after real traffic is copied by `lienthong
//! store copy` into a store on the other engine; every table arrives whole, the copy's trace
//! chain verifies (`lienthong audit verify`), its dossiers and messages read the same, and a
//! copy into a store that holds rows is refused. `lienthong store migrate` creates and reports a store.
//! Against the real broker, the bus and the mock agencies on loopback, and the machine's
//! PostgreSQL (a database of the test's own).

mod common;

use common::*;
use lienthong_core::store::copy::TABLES;
use lienthong_core::store::db::Db;
use lienthong_core::store::migrations::open_connection;
use lienthong_core::store::{Store, StoreLocation};

const EXE: &str = env!("CARGO_BIN_EXE_lienthong");

/// Rows of every table of the store at `at`.
fn counts(at: &StoreLocation) -> Vec<(String, i64)> {
    let db: Db = open_connection(at).expect("open the store");
    TABLES
        .iter()
        .map(|t| {
            let n: i64 = db
                .query_row(
                    &format!("SELECT COUNT(*) FROM {t}"),
                    lienthong_core::params![],
                    |r| r.get(0),
                )
                .expect("count");
            (t.to_string(), n)
        })
        .collect()
}

/// `lienthong --config <bus's config, with [store] url = at> args…`: success and output.
fn lienthong(bus: &Bus, at: &StoreLocation, args: &[&str]) -> (bool, String) {
    let mut s = bus.settings.clone();
    s.store.url = match at {
        StoreLocation::Sqlite(p) => format!("sqlite:{}", p.display()),
        StoreLocation::Postgres(u) => u.clone(),
    };
    let config = bus.dir.join(format!("config-{}.toml", args.join("-")));
    s.write_file(&config).expect("config");
    let out = std::process::Command::new(EXE)
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .expect("lienthong runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_copied_onto_the_other_engine_whole_with_its_chain_intact() {
    let mut bus = Bus::start("store-copy").await;
    let from = bus.settings.store.location();
    let envs = send_background(&bus, 6, 1).await;
    let store = bus.store();
    for e in &envs {
        delivered_timeline(&store, &e.ma_ho_so).await;
    }
    // Stopped first, as the command asks: nothing is written during the copy.
    if let Some(r) = bus.running.take() {
        r.stop().await.expect("the bus stops");
    }

    // The other engine: a database of this test's own, or a SQLite file.
    let target_db = format!("{}_copy", bus.settings.bus.prefix);
    let to = match from {
        StoreLocation::Sqlite(_) => StoreLocation::Postgres(
            lienthong_testkit::pg::create(&target_db).expect("the target database"),
        ),
        StoreLocation::Postgres(_) => StoreLocation::Sqlite(bus.dir.join("copy.db")),
    };
    let to_arg = match &to {
        StoreLocation::Sqlite(p) => format!("sqlite:{}", p.display()),
        StoreLocation::Postgres(u) => u.clone(),
    };

    let (migrated, text) = lienthong(&bus, &to, &["store", "migrate"]);
    assert!(migrated, "store migrate: {text}");
    assert!(text.contains("schema version"), "{text}");

    let (copied, text) = lienthong(&bus, &from, &["store", "copy", "--to", &to_arg]);
    assert!(copied, "store copy: {text}");
    let (a, b) = (counts(&from), counts(&to));
    assert_eq!(a, b, "every table arrives whole");
    let events = a.iter().find(|(t, _)| t == "trace_events").map(|(_, n)| *n);
    assert!(
        events.is_some_and(|n| n >= 12),
        "the copy holds the trace: {a:?}"
    );

    // The chain, recomputed on the copy, holds; the copy reads the same dossiers.
    let (verified, text) = lienthong(&bus, &to, &["audit", "verify"]);
    assert!(verified, "audit verify on the copy: {text}");
    let copy = Store::open(&to).expect("the copy");
    for e in &envs {
        let (x, y) = (
            store.timeline(&e.ma_ho_so).expect("timeline"),
            copy.timeline(&e.ma_ho_so).expect("timeline of the copy"),
        );
        assert_eq!(
            x.iter().map(|r| &r.event).collect::<Vec<_>>(),
            y.iter().map(|r| &r.event).collect::<Vec<_>>()
        );
        // What the router reads as a message arrives (PostgreSQL in one statement, SQLite in
        // four point reads) is the same on both engines: the id is known, from its sender.
        let (x, y) = (
            store.arrival(&e.ma_ho_so, &e.message_id).expect("arrival"),
            copy.arrival(&e.ma_ho_so, &e.message_id)
                .expect("arrival on the copy"),
        );
        assert_eq!(x, y, "arrival of {}", e.message_id);
        assert_eq!(
            x.seen,
            Some((Some(e.sender.clone()), e.ma_ho_so.clone())),
            "{x:?}"
        );
    }
    let unknown = lienthong_core::store::Arrival {
        runs: false,
        origin: None,
        seen: None,
    };
    for s in [&store, &copy] {
        assert_eq!(
            s.arrival("000.00.00.H00-20261205-00000000", "no-such-id")
                .expect("arrival"),
            unknown
        );
    }
    drop(copy);

    // A second copy into the same target is refused: it holds rows now.
    let (again, text) = lienthong(&bus, &from, &["store", "copy", "--to", &to_arg]);
    assert!(!again, "a copy into a store with rows is refused");
    assert!(text.contains("is not empty"), "{text}");

    if let StoreLocation::Postgres(u) = &to {
        lienthong_testkit::pg::drop_database(u);
    }
    bus.stop().await;
}

#[test]
fn a_postgresql_connection_killed_by_the_server_is_made_again() {
    let url = pg_database("lt_test_reconnect");
    let store = Store::open(StoreLocation::Postgres(url.clone())).expect("the store");
    assert_eq!(store.dead_letter_count().expect("a read"), 0);
    // The server ends every session of the database (as a restart or a failover would).
    let admin = open_connection(&StoreLocation::Postgres(lienthong_testkit::pg::server_url()))
        .expect("admin");
    let db = url
        .split('?')
        .next()
        .and_then(|h| h.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    // Ends the store's sessions and waits until the server has let them go (the termination
    // is a signal: the backend may still answer for a moment after it is sent).
    let end_sessions = || {
        let ended: i64 = admin
            .query_row(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ?1 AND pid <> pg_backend_pid()",
                lienthong_core::params![db],
                |r| r.get(0),
            )
            .expect("terminate");
        assert!(ended >= 1, "the store's session was ended");
        for _ in 0..200 {
            let left: i64 = admin
                .query_row(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = ?1 AND pid <> pg_backend_pid()",
                    lienthong_core::params![db],
                    |r| r.get(0),
                )
                .expect("sessions left");
            if left == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the store's sessions did not end");
    };
    end_sessions();
    // The call that meets the dead connection fails; the next ones connect again.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(store.dead_letter_count().is_ok());
    }
    assert_eq!(
        answers.last().copied(),
        Some(true),
        "the store answers again: {answers:?}"
    );
    // Inside a transaction: once the connection is made again, the transaction is gone with
    // the old one. Like an aborted transaction, every call fails until it is ended, and its
    // COMMIT fails instead of reporting success for nothing.
    let lost = |r: &Result<u64, lienthong_core::store::StoreError>| {
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("lost inside a transaction"))
    };
    store
        .with(|c| c.execute_batch("BEGIN"))
        .expect("a transaction");
    end_sessions();
    assert!(store.dead_letter_count().is_err(), "the dead connection");
    let again = store.dead_letter_count();
    assert!(lost(&again), "still inside the lost transaction: {again:?}");
    let commit = store.with(|c| c.execute_batch("COMMIT"));
    assert!(
        commit
            .as_ref()
            .is_err_and(|e| e.to_string().contains("lost inside a transaction")),
        "{commit:?}"
    );
    assert_eq!(store.dead_letter_count().expect("then a read"), 0);
    // Its ROLLBACK ends it too, and succeeds (nothing of it is left to undo).
    store
        .with(|c| c.execute_batch("BEGIN"))
        .expect("a transaction");
    end_sessions();
    assert!(store.dead_letter_count().is_err(), "the dead connection");
    store
        .with(|c| c.rollback())
        .expect("the lost transaction is rolled back");
    assert_eq!(store.dead_letter_count().expect("then a read"), 0);
    drop(store);
    lienthong_testkit::pg::drop_database(&url);
}

/// A PostgreSQL database of the test's own, `<name>_<random>`: its URL (for `drop_database`).
fn pg_database(name: &str) -> String {
    lienthong_testkit::pg::create(&format!(
        "{name}_{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    ))
    .expect("a database")
}

/// A PostgreSQL database of the test's own (`<name>_<random>`) with the store's schema: its
/// URL (for `drop_database`), a group-commit writer and a reader.
fn pg_store(name: &str) -> (String, lienthong_core::store::MessageWriter, Store) {
    let url = pg_database(name);
    let at = StoreLocation::Postgres(url.clone());
    let writer = lienthong_core::store::MessageWriter::start(at.clone()).expect("the writer");
    let store = Store::open(at).expect("the store");
    (url, writer, store)
}

/// A `routed` trace event of dossier `ma`, for message `m<n>`.
fn routed(ma: &str, n: u32) -> lienthong_core::trace::event::TraceEvent {
    use lienthong_core::trace::event::{TraceEvent, TraceEventKind};
    let mut e = TraceEvent::new(TraceEventKind::Routed, "router", None).message_id(format!("m{n}"));
    e.ma_ho_so = Some(ma.to_string());
    e
}

/// A dossier's chain is verified on one snapshot of the store: on PostgreSQL, events of the
/// dossier committed while it is being verified (between the read of its events and the read
/// of its recorded head) never make a sound chain look cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_verified_while_its_events_are_written_verifies_on_postgresql() {
    let (url, writer, store) = pg_store("lt_test_snapshot");
    let ma = "000.00.00.H00-20261205-00000001";
    let writing = tokio::spawn(async move {
        for n in 0..400 {
            writer
                .insert_events(vec![routed(ma, n)])
                .await
                .expect("events written");
        }
    });
    let mut checks = 0;
    while !writing.is_finished() {
        let s = store.clone();
        let chain = tokio::task::spawn_blocking(move || s.verify_dossier_chain(ma))
            .await
            .expect("task")
            .expect("verify");
        assert!(chain.verified, "after {checks} checks: {:?}", chain.reason);
        checks += 1;
    }
    writing.await.expect("the writes");
    let chain = store.verify_dossier_chain(ma).expect("verify");
    assert!(chain.verified && chain.events == 400, "{chain:?}");
    assert!(checks > 10, "verified {checks} times while writing");
    drop(store);
    lienthong_testkit::pg::drop_database(&url);
}

/// On PostgreSQL the events of one write go in one `INSERT`; a write that repeats an event
/// already stored is written event by event instead: the repeat is ignored, does not advance
/// the chain, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_at_once_on_postgresql_skip_a_repeated_one_and_keep_the_chain() {
    let (url, writer, store) = pg_store("lt_test_at_once");
    let (a, b) = (
        "000.00.00.H00-20261205-00000001",
        "000.00.00.H00-20261205-00000002",
    );
    let ev = routed;
    let first: Vec<_> = (0..3).map(|n| ev(a, n)).collect();
    writer
        .insert_events(first.clone())
        .await
        .expect("three events");
    // Two dossiers in one write, and the second of the first write again.
    let again = vec![ev(b, 3), first[1].clone(), ev(a, 4), ev(b, 5)];
    writer
        .insert_events(again)
        .await
        .expect("four events, one repeated");
    // And one write of new events only, after it.
    writer
        .insert_events(vec![ev(a, 6), ev(b, 7)])
        .await
        .expect("two events");
    // One event at a time (its heads in the same statement): a repeated one, a new one, and
    // one that names no dossier (the store head alone moves).
    for (one, what) in [
        (first[2].clone(), "a repeated event"),
        (ev(a, 8), "a new event"),
        (
            {
                let mut e = ev(a, 9);
                e.ma_ho_so = None;
                e
            },
            "an event of no dossier",
        ),
    ] {
        writer.insert_events(vec![one]).await.expect(what);
    }
    // One event twice in one write, beside a stored one: the new one is written once.
    let twice = ev(b, 10);
    writer
        .insert_events(vec![twice.clone(), first[0].clone(), twice])
        .await
        .expect("a repeated event in one write");
    let (x, y) = (
        store.verify_dossier_chain(a).expect("verify"),
        store.verify_dossier_chain(b).expect("verify"),
    );
    assert!(x.verified && x.events == 6, "{x:?}");
    assert!(y.verified && y.events == 4, "{y:?}");
    let whole = store.verify_trace(None, None).expect("verify the store");
    assert!(whole.ok() && whole.checked == 11, "{whole:?}");
    drop(store);
    lienthong_testkit::pg::drop_database(&url);
}

/// On PostgreSQL a `SAVEPOINT` and its `RELEASE` are sent ahead of the next statement, in its
/// round trip (`Db::execute_batch_ahead`): they still run first and in order; a failure of
/// theirs is the next statement's error and leaves the transaction able only to end (its
/// `COMMIT` fails, its `ROLLBACK` succeeds); a `ROLLBACK` drops what was to be sent ahead.
#[test]
fn statements_sent_ahead_on_postgresql_run_first_and_their_failure_ends_the_transaction() {
    use lienthong_core::params;
    let url = pg_database("lt_test_ahead");
    let db: Db = open_connection(&StoreLocation::Postgres(url.clone())).expect("a connection");
    db.execute_batch("CREATE TABLE lt_ahead (x BIGINT PRIMARY KEY)")
        .expect("a table");
    let insert = |x: i64| db.execute("INSERT INTO lt_ahead (x) VALUES (?1)", params![x]);
    let rows = || -> Vec<i64> {
        let mut st = db
            .prepare_cached("SELECT x FROM lt_ahead ORDER BY x")
            .expect("a query");
        let mut xs = Vec::new();
        st.for_each(params![], |r| {
            xs.push(r.get(0)?);
            Ok(true)
        })
        .expect("the rows");
        xs
    };
    // In order: the savepoint before 2 is released with the one before 3, and the rollback to
    // the latter undoes 3 alone.
    db.begin().expect("a transaction");
    db.execute_batch_ahead("SAVEPOINT job").expect("ahead");
    insert(1).expect("1");
    db.execute_batch_ahead("RELEASE job; SAVEPOINT job")
        .expect("ahead");
    insert(2).expect("2");
    db.execute_batch_ahead("RELEASE job; SAVEPOINT job")
        .expect("ahead");
    insert(3).expect("3");
    db.execute_batch("ROLLBACK TO job; RELEASE job")
        .expect("rolled back to the last savepoint");
    // Sent ahead and never followed by a statement: the commit takes it along.
    db.execute_batch_ahead("SAVEPOINT job").expect("ahead");
    db.commit().expect("committed");
    assert_eq!(rows(), vec![1, 2]);
    // A failure of what was sent ahead is the next call's error; the transaction can then
    // only end: every call fails, the COMMIT fails (nothing is committed), and the connection
    // serves the next transaction.
    db.begin().expect("a transaction");
    insert(4).expect("4");
    db.execute_batch_ahead("RELEASE no_such_savepoint")
        .expect("ahead");
    let failed = insert(5).expect_err("the savepoint does not exist");
    assert!(failed.to_string().contains("no_such_savepoint"), "{failed}");
    let next = insert(6).expect_err("the transaction is aborted");
    assert!(next.to_string().contains("sent ahead"), "{next}");
    let rolled_back = db
        .execute_batch("ROLLBACK TO job")
        .expect_err("no way back into the transaction");
    assert!(
        rolled_back.to_string().contains("sent ahead"),
        "{rolled_back}"
    );
    let commit = db.commit().expect_err("nothing to commit");
    assert!(commit.to_string().contains("sent ahead"), "{commit}");
    assert!(!db.in_transaction());
    assert_eq!(rows(), vec![1, 2], "nothing of the failed transaction");
    // Sent ahead with the COMMIT itself: the COMMIT fails (the server rolled back) and the
    // next transaction is not refused for it.
    db.begin().expect("a transaction");
    insert(9).expect("9");
    db.execute_batch_ahead("RELEASE no_such_savepoint")
        .expect("ahead");
    let commit = db.commit().expect_err("the savepoint does not exist");
    assert!(commit.to_string().contains("no_such_savepoint"), "{commit}");
    assert!(!db.in_transaction());
    db.begin().expect("the next transaction");
    db.rollback().expect("ended");
    assert_eq!(rows(), vec![1, 2], "9 was not committed");
    // Its ROLLBACK, the other way to end it, succeeds.
    db.begin().expect("a transaction");
    db.execute_batch_ahead("RELEASE no_such_savepoint")
        .expect("ahead");
    assert!(insert(7).is_err());
    db.rollback()
        .expect("the aborted transaction is rolled back");
    // A ROLLBACK drops what was to be sent ahead: outside a transaction a SAVEPOINT would fail.
    db.begin().expect("a transaction");
    db.execute_batch_ahead("SAVEPOINT job").expect("ahead");
    db.rollback().expect("rolled back");
    insert(8).expect("8, in autocommit");
    assert_eq!(rows(), vec![1, 2, 8]);
    drop(db);
    lienthong_testkit::pg::drop_database(&url);
}

/// On PostgreSQL a transaction's `BEGIN` and the store's write lock are sent ahead of its first
/// statement, in that statement's round trip (`Db::begin`): the server sees no transaction
/// until then, the lock is held from that statement on, and a lock that cannot be had is that
/// statement's error, after which the transaction can only end and the next one starts clean.
#[test]
fn a_transaction_on_postgresql_opens_with_its_first_statement_and_a_lock_it_cannot_have_is_that_statements_error()
 {
    use lienthong_core::params;
    let url = pg_database("lt_test_begin");
    let at = StoreLocation::Postgres(url.clone());
    let (a, b): (Db, Db) = (
        open_connection(&at).expect("a connection"),
        open_connection(&at).expect("another connection"),
    );
    a.execute_batch("CREATE TABLE lt_begin (x BIGINT PRIMARY KEY)")
        .expect("a table");
    let insert = |db: &Db, x: i64| db.execute("INSERT INTO lt_begin (x) VALUES (?1)", params![x]);
    let b_pid: i64 = b
        .query_row("SELECT pg_backend_pid()::bigint", params![], |r| r.get(0))
        .expect("b's server process");
    let b_state = || -> String {
        a.query_row(
            "SELECT state FROM pg_stat_activity WHERE pid::bigint = ?1",
            params![b_pid],
            |r| r.get(0),
        )
        .expect("b's state")
    };
    b.execute_batch("SET lock_timeout = '300ms'")
        .expect("b waits for a lock at most 300 ms");
    // a holds the store's write lock.
    a.begin().expect("a's transaction");
    insert(&a, 1).expect("1");
    // b's BEGIN waits for its first statement: the server has not seen it.
    b.begin().expect("b's transaction, not sent yet");
    assert!(b.in_transaction());
    assert_eq!(
        b_state(),
        "idle",
        "no transaction on the server before b's first statement"
    );
    let refused = insert(&b, 2).expect_err("the write lock is a's");
    assert!(refused.to_string().contains("lock timeout"), "{refused}");
    let next = insert(&b, 3).expect_err("b's transaction is aborted");
    assert!(next.to_string().contains("sent ahead"), "{next}");
    b.rollback().expect("b's transaction ends");
    assert!(!b.in_transaction());
    a.commit().expect("a commits");
    // The lock free again: b's next transaction holds it from its first statement on.
    b.begin().expect("b's next transaction");
    insert(&b, 4).expect("4");
    assert_eq!(b_state(), "idle in transaction");
    b.commit().expect("b commits");
    let mut xs: Vec<i64> = Vec::new();
    a.prepare_cached("SELECT x FROM lt_begin ORDER BY x")
        .expect("a query")
        .for_each(params![], |r| {
            xs.push(r.get(0)?);
            Ok(true)
        })
        .expect("the rows");
    assert_eq!(xs, vec![1, 4], "nothing of b's refused transaction");
    drop((a, b));
    lienthong_testkit::pg::drop_database(&url);
}

/// The group commit on PostgreSQL: isolated writes queued together fail alone (each in the
/// savepoint sent ahead of its first statement), whether the failure is a statement's or the
/// write's own, and the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_writes_on_postgresql_fail_alone_in_one_group_commit() {
    use lienthong_core::params;
    let (url, writer, store) = pg_store("lt_test_isolated");
    store
        .with(|c| c.execute_batch("CREATE TABLE lt_isolated (x BIGINT PRIMARY KEY)"))
        .expect("a table");
    // 1, 1 again (the key refuses it), 2, a write that fails before any statement, 3, and
    // 4 then 4 again inside one write (its first insert is undone with it).
    let mut waits = Vec::new();
    for xs in [vec![1], vec![1], vec![2], vec![], vec![3], vec![4, 4]] {
        let wait = writer
            .start_unit(true, move |c| {
                if xs.is_empty() {
                    return Err(lienthong_core::store::db::DbError::Other(
                        "refused before any statement".into(),
                    ));
                }
                for x in xs {
                    c.execute("INSERT INTO lt_isolated (x) VALUES (?1)", params![x])?;
                }
                Ok(())
            })
            .expect("queued");
        waits.push(wait);
    }
    let mut outcomes = Vec::new();
    for w in waits {
        outcomes.push(w.await.expect("answered").is_ok());
    }
    assert_eq!(outcomes, vec![true, false, true, false, true, false]);
    let xs: Vec<i64> = store
        .with(|c| {
            let mut xs = Vec::new();
            c.prepare_cached("SELECT x FROM lt_isolated ORDER BY x")?
                .for_each(params![], |r| {
                    xs.push(r.get(0)?);
                    Ok(true)
                })?;
            Ok(xs)
        })
        .expect("the rows");
    assert_eq!(xs, vec![1, 2, 3]);
    drop(store);
    lienthong_testkit::pg::drop_database(&url);
}

/// On PostgreSQL a group commit's `BEGIN` and lock go out with its first statement: when the
/// batch's first isolated write fails before sending any, they go out with its undo, and a lock
/// that cannot be had (here: its wait cancelled) fails the batch with the lock's error. That
/// write is told its own error; the batch's other writes, the lock's (not the first write's,
/// which is not theirs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_refused_with_the_undo_of_a_write_that_sent_nothing_is_the_batchs_error() {
    use lienthong_core::params;
    use std::sync::atomic::{AtomicBool, Ordering};
    let url = pg_database("lt_test_undo_lock");
    let at = StoreLocation::Postgres(url.clone());
    let writer = lienthong_core::store::MessageWriter::start(at.clone()).expect("the writer");
    let (holder, canceller): (Db, Db) = (
        open_connection(&at).expect("another connection"),
        open_connection(&at).expect("a third connection"),
    );
    let holder = tokio::task::spawn_blocking(move || {
        holder.execute_batch("CREATE TABLE lt_undo (x BIGINT PRIMARY KEY)")?;
        // Holds the store's write lock until rolled back.
        holder.begin()?;
        holder.execute("INSERT INTO lt_undo (x) VALUES (?1)", params![1])?;
        Ok::<_, lienthong_core::store::db::DbError>(holder)
    })
    .await
    .expect("joined")
    .expect("the lock held elsewhere");
    // Every wait for the store's advisory lock in this database is cancelled, as a lock timeout
    // would end it.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    /// Stops the canceller when the test ends, also by a failed assertion (the runtime waits
    /// for its blocking tasks before the test can end).
    struct Stop(std::sync::Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop.clone());
    let cancelling = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            while !stop.load(Ordering::Relaxed) {
                canceller
                    .execute_batch(
                        "SELECT pg_cancel_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()",
                    )
                    .expect("cancelled");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    // A write that sends nothing and takes a while, so that the two after it queue up together.
    let slow = writer
        .start_unit(false, |_| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        })
        .expect("queued");
    let refused = writer
        .start_unit(true, |_| {
            Err(lienthong_core::store::db::DbError::Other(
                "refused before any statement".into(),
            ))
        })
        .expect("queued");
    let insert = writer
        .start_unit(true, |c| {
            c.execute("INSERT INTO lt_undo (x) VALUES (?1)", params![2])
                .map(|_| ())
        })
        .expect("queued");
    let slow = slow
        .await
        .expect("answered")
        .expect_err("no lock to commit with");
    assert!(slow.contains("canceling statement"), "{slow}");
    let refused = refused
        .await
        .expect("answered")
        .expect_err("its own failure");
    assert!(
        refused.contains("refused before any statement"),
        "{refused}"
    );
    let insert = insert.await.expect("answered").expect_err("no lock");
    assert!(
        insert.contains("canceling statement") && !insert.contains("refused before"),
        "{insert}"
    );
    stop.store(true, Ordering::Relaxed);
    cancelling.await.expect("the canceller stopped");
    // The lock free again, the writer's next batch commits.
    let holder = tokio::task::spawn_blocking(move || holder.rollback().map(|()| holder))
        .await
        .expect("joined")
        .expect("rolled back");
    writer
        .write_unit(true, |c| {
            c.execute("INSERT INTO lt_undo (x) VALUES (?1)", params![3])
                .map(|_| ())
        })
        .await
        .expect("committed");
    let xs = tokio::task::spawn_blocking(move || {
        let mut xs: Vec<i64> = Vec::new();
        holder
            .prepare_cached("SELECT x FROM lt_undo ORDER BY x")?
            .for_each(params![], |r| {
                xs.push(r.get(0)?);
                Ok(true)
            })?;
        drop(holder);
        Ok::<_, lienthong_core::store::db::DbError>(xs)
    })
    .await
    .expect("joined")
    .expect("the rows");
    assert_eq!(xs, vec![3]);
    drop(writer);
    lienthong_testkit::pg::drop_database(&url);
}

/// On PostgreSQL the point reads of async code (the router's arrival read, the delivery log's
/// lookup) await their answer on the async worker, through a connection of their own: they
/// answer as the blocking reads do, and once the server ends that connection, the read that
/// meets it fails and the next one connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_reads_on_postgresql_are_awaited_and_connect_again() {
    let (url, _writer, store) = pg_store("lt_test_point_reads");
    let ma = "000.00.00.H00-20261207-00000001";
    let arrival = store.arrival_now(ma, "m-1").await.expect("an arrival");
    assert_eq!(
        arrival,
        store.arrival(ma, "m-1").expect("the same, blocking")
    );
    assert!(!arrival.runs && arrival.origin.is_none() && arrival.seen.is_none());
    assert_eq!(store.delivery_now("m-1").await.expect("a lookup"), None);
    let db = url
        .split('?')
        .next()
        .and_then(|h| h.rsplit('/').next())
        .unwrap_or_default()
        .to_string();
    let admin = open_connection(&StoreLocation::Postgres(lienthong_testkit::pg::server_url()))
        .expect("admin");
    let ended: i64 = tokio::task::spawn_blocking(move || {
        admin.query_row(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ?1 AND pid <> pg_backend_pid()",
            lienthong_core::params![db],
            |r| r.get(0),
        )
    })
    .await
    .expect("task")
    .expect("terminate");
    assert!(ended >= 1);
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(store.delivery_now("m-1").await.is_ok());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(answers.last(), Some(&true), "{answers:?}");
    assert_eq!(store.arrival_now(ma, "m-1").await.expect("again"), arrival);
    drop(store);
    lienthong_testkit::pg::drop_database(&url);
}
