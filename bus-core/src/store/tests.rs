//! Tests of the store as a whole: the upgrade of a store written by the releases before
//! versioned migrations, the group-commit writer (a failing write fails alone; the
//! checkpointer bounds the WAL), and the retention sweeps.

use rusqlite::Connection;

use crate::params;
use crate::store::db::Db;

use super::connection::Store;
use super::dossiers::Origin;
use super::messages::MessageSelection;
use super::migrations::{MIGRATIONS, latest_version, version};
use super::writer::MessageWriter;

/// The dossier-index note of a message without status or applicant.
fn note(ma_ho_so: &str, kind: &str, sender: &str, receiver: &str) -> super::DossierNote {
    super::DossierNote {
        ma_ho_so: ma_ho_so.into(),
        ma_tthc: "1.001193".into(),
        kind: kind.into(),
        status: None,
        sender: sender.into(),
        receiver: receiver.into(),
        applicant: None,
    }
}

/// The schema of the releases before versioned migrations (`user_version` 0).
const SCHEMA_V0: &str = include_str!("../../tests/fixtures/store-v0.sql");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lt-{tag}-{}", crate::envelope::new_message_id()))
}

/// Every table and index of a store, with its SQL (as SQLite keeps it).
fn schema_of(c: &Db) -> Vec<(String, String)> {
    c.prepare("SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut st| st.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("schema")
}

/// A store the previous release wrote (its schema statements, some rows in every table group)
/// opens with this build: it is upgraded to the latest version, its rows are all there, and it
/// is written to as usual. Migration 1 adds nothing to it.
#[tokio::test]
async fn a_store_of_the_previous_release_is_upgraded_and_keeps_its_data() {
    let dir = temp_dir("upgrade");
    let path = dir.join("old.db");
    std::fs::create_dir_all(&dir).expect("dir");
    {
        let c = Connection::open(&path).expect("open");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.execute_batch(SCHEMA_V0).expect("old schema");
        c.execute(
            "INSERT INTO messages VALUES ('m1', 1, 'D-1', 'dossier.forward', 'A', 'B', x'7b7d')",
            [],
        )
        .expect("message");
        c.execute(
            "INSERT INTO dossier_origins VALUES ('D-1', 'T-1', 'A', 'c1', 1)",
            [],
        )
        .expect("origin");
        c.execute(
            "INSERT INTO process_outbox (message_id, ma_ho_so, receiver, body, created_ms) VALUES ('o1', 'D-1', 'B', x'7b7d', 1)",
            [],
        )
        .expect("outbox");
        c.execute(
            "INSERT INTO adapter_deliveries VALUES ('m1', 'B', 'D-1', 'T-1', 'dossier.forward', 'A', 'A', 'c1', 'r1', 1, 'delivered')",
            [],
        )
        .expect("delivery");
        c.execute(
            "INSERT INTO edxml_outbox (id, unit, ma_ho_so, document_id, envelope, package, state, created_ms, updated_ms) VALUES ('e1', 'B', 'D-1', 'doc', '{}', x'00', 'waiting', 1, 1)",
            [],
        )
        .expect("edxml");
        c.execute(
            "INSERT INTO trace_events (event_id, at_ms, at, ma_ho_so, event, component) VALUES ('t0', 1, '1970-01-01T07:00:00.001+07:00', 'D-1', 'routed', 'router')",
            [],
        )
        .expect("trace");
        assert_eq!(version(&Db::Sqlite(c)).expect("version"), 0);
    }
    // What migration 1 would create on a new file is exactly what the old release created.
    let old_schema = schema_of(&Db::Sqlite(Connection::open(&path).expect("open")));
    let fresh = Db::Sqlite(Connection::open_in_memory().expect("memory"));
    fresh.execute_batch(MIGRATIONS[0]).expect("migration 1");
    assert_eq!(
        schema_of(&fresh).iter().map(|(n, _)| n).collect::<Vec<_>>(),
        old_schema.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "migration 1 declares the old release's tables and indexes"
    );

    let writer = MessageWriter::start(&path).expect("writer");
    let store = Store::open(&path)
        .expect("store")
        .with_writer(writer.clone());
    store
        .with(|c| {
            assert_eq!(version(c)?, latest_version());
            Ok(())
        })
        .expect("version");
    let upgraded = store.with(|c| Ok(schema_of(c))).expect("schema");
    for table in &old_schema {
        if table.0 == "trace_events" {
            // Migration 4 appends the chain's columns (store/chain.rs) and nothing else.
            let (_, sql) = upgraded
                .iter()
                .find(|(n, _)| n == "trace_events")
                .expect("trace_events");
            let old_cols = table.1.trim_end().trim_end_matches(')').trim_end();
            assert!(sql.starts_with(old_cols), "{sql}");
            assert!(sql.contains("chain_hash BLOB"), "{sql}");
            continue;
        }
        if table.0 == "dossier_origins" {
            // Migration 10 moves the origins into the dossier index's rows and drops the table.
            assert!(
                !upgraded.iter().any(|(n, _)| n == "dossier_origins"),
                "{upgraded:?}"
            );
            continue;
        }
        if table.0 == "deliveries_by_dossier" || table.0 == "trace_by_message" {
            // Migration 8 drops the first, which nothing read; migration 11 the second, whose
            // reads go through the index by dossier.
            assert!(!upgraded.iter().any(|(n, _)| *n == table.0), "{upgraded:?}");
            continue;
        }
        // Migrations that append columns and change nothing else (SQLite writes added columns
        // after the last column, before the primary key): 6, the dead letters' history, body and
        // replay columns; 12, how a stored body is encoded (NULL: as routed).
        let appended = [
            (
                "dead_letters",
                ", history TEXT, body BLOB, replayed_ms INTEGER, replayed_by TEXT",
            ),
            ("messages", ", body_encoding TEXT"),
        ];
        if let Some((name, added)) = appended.iter().find(|(n, _)| *n == table.0) {
            let (_, sql) = upgraded.iter().find(|(n, _)| n == name).expect("the table");
            assert!(sql.contains(added), "{sql}");
            assert_eq!(sql.replacen(added, "", 1), table.1, "{sql}");
            continue;
        }
        assert!(
            upgraded.contains(table),
            "{} is unchanged by the upgrade",
            table.0
        );
    }
    let kept = store
        .stored_messages(&MessageSelection {
            ma_ho_so: Some("D-1".into()),
            ..MessageSelection::default()
        })
        .expect("messages");
    assert_eq!(kept.len(), 1);
    // The old release's body, kept as routed, reads back as it was.
    assert_eq!(kept[0].body, b"{}");
    assert_eq!(
        store
            .origin("D-1")
            .expect("origin")
            .map(|o| (o.origin_unit, o.correlation_id)),
        Some(("A".into(), "c1".into()))
    );
    assert_eq!(
        store.delivery("m1").expect("delivery").map(|d| d.receipt),
        Some("r1".into())
    );
    assert_eq!(store.unsent(Some("D-1"), 0).expect("unsent").len(), 1);
    assert_eq!(store.edxml_waiting("B", 10).expect("edxml").len(), 1);
    // Written to as usual.
    writer
        .accept(None, "m2", note("D-1", "dossier.status", "B", "A"), b"{}")
        .await
        .expect("accept");
    store
        .write(|c| {
            c.execute("DELETE FROM messages WHERE message_id = 'm1'", params![])
                .map(|_| ())
        })
        .await
        .expect("write");
    let ids: Vec<String> = store
        .stored_messages(&MessageSelection {
            ma_ho_so: Some("D-1".into()),
            ..MessageSelection::default()
        })
        .expect("messages")
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, ["m2"]);
    // The old trace event stays, unchained; the chain starts with the first new event, and
    // verifying says how many came before it.
    writer
        .insert_events(vec![{
            let mut e = crate::trace::TraceEvent::new(
                crate::trace::TraceEventKind::Delivered,
                "adapter:B",
                None,
            );
            e.ma_ho_so = Some("D-1".into());
            e
        }])
        .await
        .expect("event");
    let r = store.verify_trace(None, None).expect("verify");
    assert!(r.ok(), "{:?}", r.breaks);
    assert_eq!((r.unchained_before, r.checked), (1, 1));
    let d = store.verify_dossier_chain("D-1").expect("dossier");
    assert!(d.verified && d.unchained == 1, "{d:?}");
    // Opening again changes nothing.
    drop(store);
    let again = Store::open(&path).expect("reopen");
    assert_eq!(
        again.with(|c| version(c)).expect("version"),
        latest_version()
    );
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
}

/// Migration 9 gives the dossiers filed over the HTTP API before it (an origin, no index row)
/// their row: `completed` at their last stored result, else `running`; rows already there stay.
/// Migration 10 then moves every origin into its row.
#[test]
fn migration_9_indexes_the_dossiers_filed_over_http_before_it() {
    let dir = temp_dir("v9");
    let path = dir.join("v8.db");
    std::fs::create_dir_all(&dir).expect("dir");
    {
        let c = Connection::open(&path).expect("open");
        for m in &MIGRATIONS[..8] {
            c.execute_batch(m).expect("migration");
        }
        c.pragma_update(None, "user_version", 8).expect("version");
        c.execute_batch(
            "INSERT INTO dossier_origins VALUES ('D-2', 'T-1', 'A', 'c2', 10), ('D-3', 'T-1', 'A', 'c3', 20), ('D-4', 'T-1', 'A', 'c4', 30);
             INSERT INTO messages VALUES ('m2', 11, 'D-2', 'dossier.forward', 'A', 'B', x'7b7d'), ('m3', 15, 'D-2', 'dossier.result', 'B', 'A', x'7b7d');
             INSERT INTO dossiers (ma_ho_so, ma_tthc, centre, search, phase, holder, received_ms, updated_ms) VALUES ('D-4', 'T-1', 'A', 'd-4 t-1', 'running', 'B', 30, 31);",
        )
        .expect("rows");
    }
    let store = Store::open(&path).expect("store");
    let row = |ma: &str| {
        store
            .with(|c| {
                c.query_row(
                    "SELECT centre, phase, holder, received_ms, ended_ms FROM dossiers WHERE ma_ho_so = ?1",
                    params![ma],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
            })
            .expect("row")
    };
    assert_eq!(
        row("D-2"),
        ("A".into(), "completed".into(), None, 10, Some(15))
    );
    assert_eq!(row("D-3"), ("A".into(), "running".into(), None, 20, None));
    assert_eq!(
        row("D-4"),
        ("A".into(), "running".into(), Some("B".into()), 30, None)
    );
    // Migration 10 then moved each origin into its row.
    for (ma, correlation) in [("D-2", "c2"), ("D-3", "c3"), ("D-4", "c4")] {
        let o = store.origin(ma).expect("origin").expect("recorded");
        assert_eq!(
            (o.origin_unit.as_str(), o.correlation_id.as_str()),
            ("A", correlation)
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

/// A file written by a newer build is refused, not written to.
#[test]
fn a_store_of_a_newer_release_is_refused() {
    let dir = temp_dir("newer");
    let path = dir.join("new.db");
    std::fs::create_dir_all(&dir).expect("dir");
    {
        let c = Connection::open(&path).expect("open");
        c.pragma_update(None, "user_version", latest_version() + 1)
            .expect("version");
    }
    let err = Store::open(&path).err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("newer")),
        "{err:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The retention sweeps delete what ended long enough ago and nothing else: the process
/// outbox keeps unsent envelopes and those of running or blocked dossiers; the edXML outbox
/// keeps packages not yet acknowledged.
#[tokio::test]
async fn retention_sweeps_keep_what_may_still_be_needed() {
    let dir = temp_dir("retention");
    let path = dir.join("s.db");
    let writer = MessageWriter::start(&path).expect("writer");
    let store = Store::open(&path).expect("store");
    let old = crate::clock::now_ms() - 10 * 86_400_000;
    writer
        .transact(move |c| {
            for (ma, phase) in [("ENDED", "done"), ("RUNS", "running"), ("BLOCKED", "done")] {
                c.execute(
                    "INSERT INTO processes VALUES (?1, 'T', 'A', ?2, 1, '{}')",
                    params![ma, phase],
                )?;
            }
            c.execute("INSERT INTO process_blocked VALUES ('BLOCKED', 1)", params![])?;
            for (id, ma, sent) in [
                ("o-ended", "ENDED", Some(old)),
                ("o-unsent", "ENDED", None),
                ("o-runs", "RUNS", Some(old)),
                ("o-blocked", "BLOCKED", Some(old)),
            ] {
                c.execute(
                    "INSERT INTO process_outbox (message_id, ma_ho_so, receiver, body, created_ms, sent_ms) VALUES (?1, ?2, 'B', x'7b7d', ?3, ?4)",
                    params![id, ma, old, sent],
                )?;
            }
            for (id, state) in [("e-done", "done"), ("e-failed", "failed"), ("e-waiting", "waiting")] {
                c.execute(
                    "INSERT INTO edxml_outbox (id, unit, ma_ho_so, document_id, envelope, package, state, created_ms, updated_ms) VALUES (?1, 'B', 'D', 'doc', '{}', x'00', ?2, ?3, ?3)",
                    params![id, state, old],
                )?;
            }
            Ok(())
        })
        .await
        .expect("rows");
    // Nothing is old enough for a 30-day retention.
    assert_eq!(writer.purge_process_outbox(30 * 86_400_000).await, Ok(0));
    assert_eq!(writer.purge_edxml_outbox(30 * 86_400_000).await, Ok(0));
    assert_eq!(writer.purge_process_outbox(86_400_000).await, Ok(1));
    assert_eq!(writer.purge_edxml_outbox(86_400_000).await, Ok(2));
    let left: Vec<String> = store
        .with(|c| {
            c.prepare("SELECT message_id FROM process_outbox UNION ALL SELECT id FROM edxml_outbox ORDER BY 1")?
                .query_map(params![], |r| r.get(0))?
                .collect()
        })
        .expect("left");
    assert_eq!(left, ["e-waiting", "o-blocked", "o-runs", "o-unsent"]);
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_blob_is_fetched_by_its_dossiers_parties_and_goes_with_the_retention() {
    let dir = temp_dir("blobs");
    let path = dir.join("s.db");
    let writer = MessageWriter::start(&path).expect("writer");
    let store = Store::open(&path).expect("store");
    let origin = Origin {
        ma_ho_so: "C-261129-0001".into(),
        ma_tthc: "T".into(),
        origin_unit: "CENTRE".into(),
        correlation_id: "c".into(),
    };
    writer
        .accept(
            Some(origin),
            "m1",
            note("C-261129-0001", "dossier.forward", "CENTRE", "AGENCY"),
            b"{}",
        )
        .await
        .expect("accept");
    writer
        .record_blobs("C-261129-0001", vec!["aa".repeat(32)])
        .await
        .expect("record");
    let sha = "aa".repeat(32);
    assert_eq!(store.blob_party(&sha, "CENTRE").ok(), Some(true));
    assert_eq!(store.blob_party(&sha, "AGENCY").ok(), Some(true));
    assert_eq!(store.blob_party(&sha, "OTHER").ok(), Some(false));
    assert_eq!(
        store.blob_party(&"bb".repeat(32), "CENTRE").ok(),
        Some(false)
    );
    // Within the retention it stays; past it, it is returned for deletion and forgotten.
    assert_eq!(writer.purge_blob_index(86_400_000).await, Ok(vec![]));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(writer.purge_blob_index(0).await, Ok(vec![sha.clone()]));
    assert_eq!(store.blob_party(&sha, "CENTRE").ok(), Some(false));
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
}

/// A write handed to the group commit returns its value after the commit; one that fails
/// is rolled back alone and answered with its error, and the writes batched with it (isolated
/// or not) commit. The trace events of the writes, written together at the end of each batch,
/// are those of the writes that succeeded, on a chain that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transact_is_rolled_back_alone() {
    let dir = std::env::temp_dir().join(format!("lt-store-{}", crate::envelope::new_message_id()));
    let path = dir.join("s.db");
    let writer = MessageWriter::start(&path).expect("writer");
    writer
        .transact(|c| {
            c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY); CREATE TABLE u (k TEXT)")
        })
        .await
        .expect("create");
    // Queued together, so that they share batches: every third one breaks the key. Between
    // them, writes that are not isolated (the router's): a failing write right after one
    // must not roll it back.
    let mut pending = Vec::new();
    let mut plain = Vec::new();
    for i in 0..60 {
        let w = writer.clone();
        plain.push(tokio::spawn(async move {
            w.write_unit(false, move |c| {
                c.execute("INSERT INTO u VALUES (?1)", params![format!("u{i}")])
                    .map(|_| ())
            })
            .await?;
            // And events on their own, as the router's tracer writes them.
            w.insert_events(vec![traced(i, "u")]).await
        }));
        let w = writer.clone();
        pending.push(tokio::spawn(async move {
            w.transact_traced(move |c| {
                c.execute("INSERT INTO t VALUES (?1)", params![format!("k{i}")])?;
                if i % 3 == 0 {
                    // The same key again: a constraint error, after a row was written.
                    c.execute("INSERT INTO t VALUES (?1)", params![format!("k{i}")])?;
                }
                let n = c.query_row(
                    "SELECT count(*) FROM t WHERE k = ?1",
                    params![format!("k{i}")],
                    |r| r.get::<_, i64>(0),
                )?;
                Ok((n, vec![traced(i, "k"), traced(i, "k2")]))
            })
            .await
        }));
    }
    let mut failed = 0;
    for (i, p) in pending.into_iter().enumerate() {
        match p.await.expect("task") {
            Ok(n) => assert_eq!(n, 1, "write {i} sees its own row"),
            Err(e) => {
                assert_eq!(i % 3, 0, "write {i} failed: {e}");
                assert!(e.contains("UNIQUE"), "{e}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 20);
    for p in plain {
        p.await
            .expect("task")
            .expect("a write that is not isolated");
    }
    let reader = Store::open(&path).expect("reader");
    let plain_rows: i64 = reader
        .with(|c| c.query_row("SELECT count(*) FROM u", params![], |r| r.get(0)))
        .expect("read");
    assert_eq!(plain_rows, 60, "every write that is not isolated is kept");
    let kept: Vec<String> = reader
        .with(|c| {
            c.prepare("SELECT k FROM t ORDER BY k")?
                .query_map(params![], |r| r.get(0))?
                .collect()
        })
        .expect("read");
    let mut want: Vec<String> = (0..60)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("k{i}"))
        .collect();
    want.sort();
    assert_eq!(
        kept, want,
        "the failed writes left nothing, the others everything"
    );
    let mut traced_ids: Vec<String> = reader
        .with(|c| {
            c.prepare("SELECT message_id FROM trace_events WHERE message_id LIKE 'k%'")?
                .query_map(params![], |r| r.get(0))?
                .collect()
        })
        .expect("read");
    traced_ids.sort();
    let mut want: Vec<String> = want
        .iter()
        .flat_map(|k| [k.clone(), format!("k2{}", &k[1..])])
        .collect();
    want.sort();
    assert_eq!(traced_ids, want, "the events of the writes that succeeded");
    let chain = reader.verify_trace(None, None).expect("verify");
    assert!(chain.ok() && chain.checked == 60 + 80, "{chain:?}");
    for d in 0..4 {
        let ma = format!("D-{d}");
        let v = reader.verify_dossier_chain(&ma).expect("verify");
        assert!(v.verified, "{ma}: {v:?}");
    }
    // A write that panics fails alone; the writer thread goes on.
    let panicked = writer
        .transact(|c| {
            c.execute("INSERT INTO t VALUES ('p')", params![])?;
            if !c.in_transaction() {
                return Ok(());
            }
            panic!("a bug in a write");
        })
        .await;
    assert!(
        panicked.as_ref().is_err_and(|e| e.contains("panicked")),
        "{panicked:?}"
    );
    writer
        .transact(|c| {
            c.execute("INSERT INTO t VALUES ('after')", params![])
                .map(|_| ())
        })
        .await
        .expect("the writer still writes");
    let rows: Vec<String> = reader
        .with(|c| {
            c.prepare("SELECT k FROM t WHERE k IN ('p', 'after')")?
                .query_map(params![], |r| r.get(0))?
                .collect()
        })
        .expect("read");
    assert_eq!(rows, ["after"], "the panicking write was rolled back");
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
}

/// A trace event of write `i` (`<prefix><i>`) of dossier `D-<i mod 4>`.
fn traced(i: usize, prefix: &str) -> crate::trace::event::TraceEvent {
    use crate::trace::event::{TraceEvent, TraceEventKind};
    let mut e =
        TraceEvent::new(TraceEventKind::Routed, "router", None).message_id(format!("{prefix}{i}"));
    e.ma_ho_so = Some(format!("D-{}", i % 4));
    e
}

/// The writer's commits do not checkpoint; its checkpointer does, so the envelopes reach
/// the database file and the WAL stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_moves_the_writers_wal_into_the_database() {
    let dir = std::env::temp_dir().join(format!("lt-store-{}", crate::envelope::new_message_id()));
    let path = dir.join("s.db");
    // Bodies kept as routed: this one would compress to almost nothing.
    let writer = MessageWriter::start_with(
        &path,
        super::WriterOptions {
            compression: super::BodyCompression::None,
            ..super::WriterOptions::default()
        },
    )
    .expect("writer");
    let body = vec![b'x'; 5120];
    // ~8 to 10 KiB of WAL frames each (the body's overflow pages, the row, two indexes) and a
    // commit each: far past RESET_WAL_BYTES.
    let n = 12_000usize;
    for i in 0..n {
        let id = format!("m{i}");
        writer
            .accept(None, &id, note("D-1", "dossier.forward", "A", "B"), &body)
            .await
            .expect("accept");
    }
    let db_bytes = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // While no write follows, up to one checkpoint interval at the log's end stays in the WAL
    // (readers read it there; `wal_checkpoint.rs`); the bound leaves as much again to spare.
    let expected = (n * 5120) as u64 - 2 * super::CHECKPOINT_WAL_BYTES as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while db_bytes() < expected && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(db_bytes() >= expected, "database file {} bytes", db_bytes());
    let reader = Store::open(&path).expect("reader");
    let kept = reader
        .stored_messages(&MessageSelection {
            ma_ho_so: Some("D-1".into()),
            ..MessageSelection::default()
        })
        .expect("read");
    assert_eq!(kept.len(), n);
    // How large the WAL stays (the writer starts it over past RESET_WAL_BYTES) depends on how the
    // checkpointer thread is scheduled: on a 2-core machine under load it was seen both at
    // 59 MB and past 200 MB. A size is a target for the benchmark (bytes written per dossier),
    // not for a test: here only what the checkpointer must do, copy every row into the file.
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_dossier_index_follows_each_routed_message_and_finds_names_without_diacritics() {
    use super::dossiers::{DossierQuery, fold};
    assert_eq!(fold("Đăng ký khai sinh"), "dang ky khai sinh");
    assert_eq!(fold("NGUYỄN Thị Đào"), "nguyen thi dao");
    let dir = temp_dir("dossier-index");
    let path = dir.join("s.db");
    let writer = MessageWriter::start(&path).expect("writer");
    let store = Store::open(&path).expect("store");
    let file = |ma: &str, centre: &str, name: &str| {
        let origin = Origin {
            ma_ho_so: ma.into(),
            ma_tthc: "1.001193".into(),
            origin_unit: centre.into(),
            correlation_id: format!("c-{ma}"),
        };
        let mut n = note(ma, "dossier.forward", centre, "CA.H48");
        n.applicant = Some(name.into());
        (origin, n)
    };
    for (i, (ma, centre, name)) in [
        ("A-261201-0001", "CENTRE-A", "Nguyễn Thị Đào"),
        ("A-261201-0002", "CENTRE-A", "Trần Văn Bình"),
        ("B-261201-0001", "CENTRE-B", "Lê Đức Anh"),
    ]
    .into_iter()
    .enumerate()
    {
        let (o, n) = file(ma, centre, name);
        writer
            .accept(Some(o), &format!("f{i}"), n, b"{}")
            .await
            .expect("accept");
    }
    // Police reports it is processing the second, then returns the first's result.
    let mut processing = note("A-261201-0002", "dossier.status", "CA.H48", "CENTRE-A");
    processing.status = Some(4);
    writer
        .accept(None, "s1", processing, b"{}")
        .await
        .expect("status");
    writer
        .accept(
            None,
            "r1",
            note("A-261201-0001", "dossier.result", "CA.H48", "CENTRE-A"),
            b"{}",
        )
        .await
        .expect("result");
    let now = crate::clock::now_ms();
    // Sorted: the three were received within a few ms (newest first, ties by code).
    let list = |q: DossierQuery| {
        let mut codes: Vec<String> = store
            .dossiers(&q, now)
            .expect("list")
            .items
            .into_iter()
            .map(|r| r.ma_ho_so)
            .collect();
        codes.sort();
        codes
    };
    let search = |t: &str| {
        list(DossierQuery {
            text: Some(t.into()),
            ..Default::default()
        })
    };
    assert_eq!(search("nguyen thi dao"), ["A-261201-0001"]);
    assert_eq!(search("DAO nguyen"), ["A-261201-0001"], "any word order");
    assert_eq!(search("đức"), ["B-261201-0001"]);
    assert_eq!(
        search("d"),
        ["A-261201-0001", "B-261201-0001"],
        "d finds đ (Đức, Đào; Bình has none)"
    );
    assert_eq!(search("100%").len(), 0, "LIKE wildcards are literal");
    assert_eq!(
        list(DossierQuery {
            centre: Some("CENTRE-A".into()),
            phase: Some("open".into()),
            ..Default::default()
        }),
        ["A-261201-0002"]
    );
    let page = store
        .dossiers(
            &DossierQuery {
                phase: Some("completed".into()),
                ..Default::default()
            },
            now,
        )
        .expect("completed");
    assert_eq!(page.total, 1);
    let done = &page.items[0];
    assert_eq!(done.ma_ho_so, "A-261201-0001");
    assert_eq!(done.holder, None, "an ended dossier is held by nobody");
    assert!(done.ended_ms.is_some());
    assert_eq!(
        list(DossierQuery {
            holder: Some("CA.H48".into()),
            ..Default::default()
        }),
        ["A-261201-0002", "B-261201-0001"],
        "the one it reported on is still its own"
    );
    let first = store
        .dossiers(
            &DossierQuery {
                limit: Some(2),
                offset: Some(2),
                ..Default::default()
            },
            now,
        )
        .expect("page 2");
    assert_eq!((first.total, first.items.len()), (3, 1));
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
}

/// Processes that start together on a new store (the router's and the adapters' on one
/// machine) each open it: switching the new file to WAL, migrating it and opening it again
/// never fail with "database is locked".
#[test]
fn a_new_store_opened_by_many_connections_at_once_opens_for_each() {
    for round in 0..20 {
        let dir =
            std::env::temp_dir().join(format!("lt-open-{}", crate::envelope::new_message_id()));
        let path = dir.join("s.db");
        let start = std::sync::Arc::new(std::sync::Barrier::new(6));
        let opened: Vec<_> = (0..6)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    super::migrations::open_sqlite(&path).map(|_| ())
                })
            })
            .collect();
        for o in opened {
            let r = o.join().expect("thread");
            assert!(r.is_ok(), "round {round}: {r:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A new store file gets `PAGE_SIZE`-byte pages; a store created with other pages (1 KiB, as
/// the first release of issue 21 made them) keeps them and is migrated as before.
#[test]
fn a_new_store_has_small_pages_and_an_older_store_keeps_its_own() {
    let page_size = |c: &Connection| -> i64 {
        c.query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size")
    };
    let dir = temp_dir("pages");
    let new = super::migrations::open_sqlite(&dir.join("new.db")).expect("a new store");
    assert_eq!(page_size(&new), i64::from(super::migrations::PAGE_SIZE));
    assert_eq!(super::migrations::PAGE_SIZE, 512);
    let old_path = dir.join("old.db");
    {
        let old = Connection::open(&old_path).expect("an older file");
        old.execute_batch("PRAGMA page_size = 1024; CREATE TABLE lt_before (x INTEGER);")
            .expect("an older store's first table");
    }
    let old = super::migrations::open_sqlite(&old_path).expect("the older store, migrated");
    assert_eq!(page_size(&old), 1024);
    let old = Db::Sqlite(old);
    assert_eq!(version(&old).expect("version"), latest_version());
    drop((new, old));
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes sent one at a time every millisecond (none queued behind another), without waiting
/// for their answers, through a running writer with `steady` as its steady commit delay and no
/// commit delay under load: for each write after the first `warm`, whether it found an earlier
/// write in its own commit (the writer's connection, inside the transaction, sees more rows than
/// a reader, which sees only what was committed); and the median interval between those writes
/// as sent (a loaded machine stretches the sleeps).
async fn joined_a_commit(
    steady: std::time::Duration,
    warm: usize,
    n: usize,
) -> (Vec<bool>, std::time::Duration) {
    let dir = temp_dir("steady-writes");
    let path = dir.join("s.db");
    let writer = MessageWriter::start_with(
        &path,
        super::WriterOptions {
            commit_delay: std::time::Duration::ZERO,
            steady_delay: steady,
            ..super::WriterOptions::default()
        },
    )
    .expect("writer");
    writer
        .write_unit(false, |c| {
            c.execute_batch("CREATE TABLE pace_probe (n INTEGER)")
        })
        .await
        .expect("the probe's table");
    let reader = std::sync::Arc::new(std::sync::Mutex::new(
        Connection::open(&path).expect("a reader"),
    ));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![false; n]));
    let mut answers = Vec::new();
    let mut sent = Vec::new();
    for i in 0..n {
        let (reader, seen) = (reader.clone(), seen.clone());
        let answer = writer
            .start_unit(false, move |c| {
                c.execute("INSERT INTO pace_probe (n) VALUES (?1)", params![i as i64])?;
                let mine: i64 =
                    c.query_row("SELECT count(*) FROM pace_probe", params![], |r| r.get(0))?;
                let committed: i64 = reader
                    .lock()
                    .map_err(|_| rusqlite::Error::InvalidQuery)?
                    .query_row("SELECT count(*) FROM pace_probe", [], |r| r.get(0))?;
                if let Ok(mut seen) = seen.lock() {
                    // Rows of this transaction besides this write's own.
                    seen[i] = mine - committed > 1;
                }
                Ok(())
            })
            .expect("queued");
        answers.push(answer);
        sent.push(std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for a in answers {
        a.await.expect("answered").expect("committed");
    }
    drop(writer);
    let _ = std::fs::remove_dir_all(dir);
    let seen = seen.lock().expect("the writes' findings").clone();
    let mut gaps: Vec<_> = sent[warm..].windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    (seen[warm..].to_vec(), gaps[gaps.len() / 2])
}

/// The steady commit delay through a running writer ([`super::writer`]'s `Pace` and its
/// wiring): writes arriving on their own about a millisecond apart commit together when the
/// steady delay is on and one at a time when it is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_arriving_steadily_one_at_a_time_share_commits_only_with_the_steady_delay() {
    let fraction = |v: &[bool]| v.iter().filter(|b| **b).count() as f64 / v.len() as f64;
    // 10 ms (the shipped default is 3): long enough that a wait gathers company, and the waits
    // go on, even when a loaded machine stretches the 1 ms sleeps to several.
    // A machine too busy to send every millisecond or so does not make the case: measured again
    // (a few times at most).
    let mut on = joined_a_commit(std::time::Duration::from_millis(10), 50, 300).await;
    for _ in 0..4 {
        if on.1 <= std::time::Duration::from_micros(2_500) {
            break;
        }
        on = joined_a_commit(std::time::Duration::from_millis(10), 50, 300).await;
    }
    let (on, gap) = on;
    let (off, _) = joined_a_commit(std::time::Duration::ZERO, 50, 300).await;
    // With the wait, a lone write gathers the writes of the next 10 ms (about nine on a quiet
    // machine), and the one arriving during that commit commits alone: most writes find an
    // earlier one in their commit. Without it, a write finds another only when the writer was
    // late enough for two to be queued.
    assert!(
        fraction(&on) >= 0.3,
        "with the steady delay, writes {gap:?} apart: {on:?}"
    );
    assert!(
        fraction(&off) + 0.2 <= fraction(&on),
        "without it: {off:?}; with it: {on:?}"
    );
}
