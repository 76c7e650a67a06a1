//! Channel-level faults on every publishing path of the bus, injected from outside while a few
//! hundred dossiers flow: the broker closes a *channel* (not the connection) when the bus
//! publishes to an exchange that is gone (404 NOT_FOUND) or declares one that exists with other
//! arguments (406 PRECONDITION_FAILED). Each scenario deletes (or replaces) an exchange a
//! component publishes to — the HTTP API and agency callbacks (`<p>.ingress`), the router and
//! the process manager's outbox (`<p>.deliver`), dead-lettering (`<p>.dlx`), the adapters'
//! delayed retries (`<p>.retry.<ms>`), the tracer path (`<p>.trace`) — and counts, per dossier,
//! one terminal state at the centre with nothing lost, no duplicate effect at the agencies and no
//! restart of the bus. Only this test's own exchanges are touched.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use lienthong_core::envelope::{Envelope, Kind};
use serde_json::Value;

/// How long, s, a scenario may take to answer every dossier once its fault is removed. The bus
/// itself recovers in seconds; a message the broker dead-lettered into a missing exchange or one
/// of another type meanwhile (a delayed retry coming back to `<p>.deliver`, a refused message on
/// its way to `<p>.dlx`) waits in its queue until RabbitMQ's dead-letter worker tries it again,
/// after `dead_letter_worker_publisher_confirm_timeout` (180 s by default; 177 s measured on
/// 3.10.8). Under a loaded machine one such message made a 120 s bound fail, 299 of 300.
const ANSWERED_WITHIN_S: u64 = 240;

/// Delete `exchange` from a connection of the test's own (as an operator would by mistake).
async fn delete_exchange(bus: &Bus, exchange: &str) {
    let ch = bus.conn.create_channel().await.expect("channel");
    ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await
        .expect("exchange.delete");
    let _ = ch.close(200, "fault injected".into()).await;
}

/// Replace `exchange` with a fanout one of the same name (as an operator would by mistake). The
/// bus declares the exchange again as soon as a publish or its topology keeper finds it gone, so
/// the test may lose the race between its delete and its declare (406): it tries again until its
/// fanout one stands (panics after 20 tries).
async fn replace_with_fanout(bus: &Bus, exchange: &str) {
    for _ in 0..20 {
        delete_exchange(bus, exchange).await;
        let ch = bus.conn.create_channel().await.expect("channel");
        let declared = ch
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if declared.is_ok() {
            let _ = ch.close(200, "fault injected".into()).await;
            return;
        }
    }
    panic!("the fanout exchange {exchange} was not declared in 20 tries");
}

/// What the centre got back, per dossier code: the distinct message ids of its final answers
/// (`dossier.result`, or a `bus.dead_letter` notice).
#[derive(Clone, Default)]
struct Board {
    answers: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    copies: Arc<Mutex<usize>>,
    /// The test's topology prefix, to list its queues in a failure's message.
    prefix: String,
}

impl Board {
    /// Read the centre's queue into the board.
    async fn watch(bus: &Bus) -> Board {
        let board = Board {
            prefix: bus.settings.bus.prefix.clone(),
            ..Board::default()
        };
        let mut rx = bus.listen(SON_HA).await;
        let b = board.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if e.kind.as_str() != Kind::RESULT && e.kind.as_str() != Kind::DEAD_LETTER {
                    continue;
                }
                if let Ok(mut a) = b.answers.lock()
                    && !a
                        .entry(e.ma_ho_so.clone())
                        .or_default()
                        .insert(e.message_id)
                    && let Ok(mut c) = b.copies.lock()
                {
                    *c += 1;
                }
            }
        });
        board
    }

    fn done(&self) -> usize {
        self.answers.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Wait until `n` dossiers have an answer (panics after `secs`).
    async fn until(&self, n: usize, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        while self.done() < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} dossiers answered after {secs} s; the broker's queues (messages, ready):\n{}",
                self.done(),
                broker_queues(None, &self.prefix)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (lost, answered twice) among `codes`, after a 2 s wait for late duplicates.
    async fn tally(&self, codes: &[String]) -> (usize, usize, usize) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let a = self.answers.lock().expect("board");
        let lost = codes.iter().filter(|c| !a.contains_key(*c)).count();
        let twice = codes
            .iter()
            .filter(|c| a.get(*c).is_some_and(|ids| ids.len() > 1))
            .count();
        (lost, twice, self.copies.lock().map(|c| *c).unwrap_or(0))
    }
}

/// `n` dossiers: every third one filed without a receiver (the process manager runs it), the
/// others sent by the centre to Police. Returns them in order.
fn mixed(n: u32, first_seq: u32) -> Vec<Envelope> {
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                filed_birth(first_seq + i)
            } else {
                birth(first_seq + i, POLICE)
            }
        })
        .collect()
}

/// Expected effects at the mock: (Police, Social Insurance).
fn expected_effects(envs: &[Envelope]) -> (u64, u64) {
    let pm = envs.iter().filter(|e| e.receiver.is_none()).count() as u64;
    (envs.len() as u64, pm)
}

async fn readyz(bus: &Bus) -> (u16, Value) {
    let r = reqwest::get(format!("{}/readyz", bus.http))
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// The counter of channel recoveries on `/metrics` (summed over its labels).
async fn recoveries(bus: &Bus, channel: &str) -> u64 {
    let text = bus.metrics().await;
    text.lines()
        .filter(|l| {
            l.starts_with("lienthong_channel_recoveries_total")
                && l.contains(&format!("channel=\"{channel}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Send `envs` over AMQP in the background (the fault lands while they flow).
fn send_all(bus: &Bus, envs: Vec<Envelope>) -> tokio::task::JoinHandle<()> {
    let publisher = bus.unit_publisher.clone();
    let ingress = bus.names.ingress_exchange();
    tokio::spawn(async move {
        for env in envs {
            publisher
                .publish(
                    &ingress,
                    "",
                    &env.to_bytes(),
                    lienthong_core::amqp::envelope_properties(&env),
                    true,
                )
                .await
                .expect("publish confirmed");
        }
    })
}

/// The common end of a scenario: every dossier answered once, the agencies took each once,
/// readiness is back, the row goes to RELIABILITY.md.
async fn settle(
    bus: &Bus,
    board: &Board,
    envs: &[Envelope],
    fault_at: Instant,
    scenario: &str,
    fault: &str,
) {
    board.until(envs.len(), ANSWERED_WITHIN_S).await;
    let recovery = fault_at.elapsed();
    let codes: Vec<String> = envs.iter().map(|e| e.ma_ho_so.clone()).collect();
    let (lost, twice, copies) = board.tally(&codes).await;
    let stats = bus.mock_stats().await;
    let (police, bhxh) = expected_effects(envs);
    let dup = effects_beyond(&stats, police, bhxh);
    assert_eq!((lost, twice), (0, 0), "lost, answered twice");
    assert_eq!(stats["police"]["effects"], police, "{stats}");
    assert_eq!(stats["bhxh"]["effects"], bhxh, "{stats}");
    // Ready again without a restart: each failing part clears on its next retry (a publishing
    // channel's repair backs off up to 10 s), which may come after the last dossier went through.
    let until = Instant::now() + Duration::from_secs(30);
    let (mut status, mut body) = readyz(bus).await;
    while status != 200 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (status, body) = readyz(bus).await;
    }
    assert_eq!(status, 200, "ready again without a restart: {body}");
    record_reliability(Reliability {
        scenario: scenario.into(),
        fault: fault.into(),
        messages: envs.len(),
        lost,
        duplicate_effects: dup,
        recovery_ms: Some(recovery.as_millis()),
        redelivered_copies: copies,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_exchange_deleted_under_http_submissions_and_agency_callbacks_is_declared_again()
 {
    let bus = Bus::start("chan-ingress").await;
    let board = Board::watch(&bus).await;
    answer_as_civil_status_office(&bus).await;
    let envs = mixed(300, 5000);
    // Every dossier goes in over HTTP, as a centre without AMQP would send it, and each
    // agency's result comes back by callback: both publish to <p>.ingress.
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages", bus.http);
    let mut fault_at = None;
    let mut refused = 0;
    for (i, env) in envs.iter().enumerate() {
        if i == 60 {
            delete_exchange(&bus, &bus.names.ingress_exchange()).await;
            fault_at = Some(Instant::now());
        }
        // A centre's software retries a 503 after its Retry-After; a 202 is final.
        loop {
            let r = client
                .post(&url)
                .bearer_auth(bus.key(SON_HA))
                .json(env)
                .send()
                .await
                .expect("POST");
            if r.status() == reqwest::StatusCode::ACCEPTED {
                break;
            }
            assert_eq!(
                r.status(),
                reqwest::StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                r.text().await.unwrap_or_default()
            );
            refused += 1;
            assert!(refused < 50, "the API keeps refusing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    settle(
        &bus,
        &board,
        &envs,
        fault_at.expect("fault injected"),
        "ingress exchange deleted under HTTP submissions and agency callbacks",
        "exchange.delete <p>.ingress after 60 of 300 POSTs (100 run by the process manager); the HTTP API's channel is closed with 404 NOT_FOUND",
    )
    .await;
    assert!(
        recoveries(&bus, "ingress").await >= 1,
        "the HTTP API's ingress channel was reopened"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deliver_exchange_deleted_under_the_router_and_the_process_outbox_is_declared_again() {
    let bus = Bus::start("chan-deliver").await;
    let board = Board::watch(&bus).await;
    answer_as_civil_status_office(&bus).await;
    let envs = mixed(300, 5400);
    let sending = send_all(&bus, envs.clone());
    board.until(40, 60).await;
    delete_exchange(&bus, &bus.names.deliver_exchange()).await;
    let fault_at = Instant::now();
    sending.await.expect("sent");
    settle(
        &bus,
        &board,
        &envs,
        fault_at,
        "deliver exchange deleted under the router and the process manager's outbox",
        "exchange.delete <p>.deliver after 40 answers of 300 (100 run by the process manager); 404 NOT_FOUND closes the publishing channels",
    )
    .await;
    assert!(
        recoveries(&bus, "deliver").await + recoveries(&bus, "process outbox").await >= 1,
        "a router channel was reopened"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_exchange_deleted_while_dossiers_are_refused_is_declared_again() {
    let bus = Bus::start("chan-dlx").await;
    let board = Board::watch(&bus).await;
    // One dossier in ten is refused by Police (400): its dead letter and the centre's notice
    // are the answer.
    let envs: Vec<Envelope> = (0..300).map(|i| birth(5800 + i, POLICE)).collect();
    let refused: Vec<&Envelope> = envs.iter().step_by(10).collect();
    for e in &refused {
        bus.fault("police", &e.ma_ho_so, &[400]).await;
    }
    let sending = send_all(&bus, envs.clone());
    board.until(30, 60).await;
    delete_exchange(&bus, &bus.names.dead_letter_exchange()).await;
    let fault_at = Instant::now();
    sending.await.expect("sent");
    board.until(envs.len(), ANSWERED_WITHIN_S).await;
    let recovery = fault_at.elapsed();
    let codes: Vec<String> = envs.iter().map(|e| e.ma_ho_so.clone()).collect();
    let (lost, twice, copies) = board.tally(&codes).await;
    assert_eq!((lost, twice), (0, 0));
    let dead = bus.dead(refused.len(), 30).await;
    let dead_ids: HashSet<String> = dead
        .iter()
        .filter_map(|(_, p)| p.message_id().as_ref().map(|m| m.to_string()))
        .collect();
    for e in &refused {
        assert!(
            dead_ids.contains(&e.message_id),
            "{} is in the dead-letter queue",
            e.ma_ho_so
        );
    }
    let stats = bus.mock_stats().await;
    assert_eq!(
        stats["police"]["effects"],
        (envs.len() - refused.len()) as u64,
        "{stats}"
    );
    // Ready again: a topology check that failed while the exchange was gone is made again
    // within seconds (1 s, doubling).
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = readyz(&bus).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < until, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recoveries(&bus, &format!("dead letters {POLICE}")).await >= 1,
        "the adapter's dead-letter channel was reopened"
    );
    record_reliability(Reliability {
        scenario: "dead-letter exchange deleted while dossiers are refused".into(),
        fault: "exchange.delete <p>.dlx after 30 answers of 300, one in ten refused by Police (400); 404 NOT_FOUND closes the dead-letter channel".into(),
        messages: envs.len(),
        lost,
        duplicate_effects: effects_beyond(&stats, (envs.len() - refused.len()) as u64, 0),
        recovery_ms: Some(recovery.as_millis()),
        redelivered_copies: copies,
    });
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_retry_exchange_deleted_while_an_agency_is_down_is_declared_again() {
    let bus = Bus::start("chan-retry").await;
    let board = Board::watch(&bus).await;
    // 20 dossiers meet 503 for longer than the in-process budget: each is parked in
    // <p>.retry.300, whose exchange is deleted first.
    let envs: Vec<Envelope> = (0..300).map(|i| birth(6200 + i, POLICE)).collect();
    let slow: Vec<&Envelope> = envs.iter().step_by(15).collect();
    for e in &slow {
        bus.fault("police", &e.ma_ho_so, &[503; 7]).await;
    }
    delete_exchange(&bus, &bus.names.retry(300)).await;
    let fault_at = Instant::now();
    send_all(&bus, envs.clone()).await.expect("sent");
    settle(
        &bus,
        &board,
        &envs,
        fault_at,
        "delayed retry exchange deleted while an agency is down",
        "exchange.delete <p>.retry.300, then 300 dossiers, 20 of them answered 503 × 7 (past the in-process budget: parked)",
    )
    .await;
    assert!(
        recoveries(&bus, &format!("retry {POLICE}")).await >= 1,
        "the adapter's retry channel was reopened"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_exchange_deleted_under_published_trace_events_is_declared_again() {
    let bus = Bus::start_with("chan-trace", |s| s.store.trace_direct = false).await;
    let board = Board::watch(&bus).await;
    let envs: Vec<Envelope> = (0..300).map(|i| birth(6600 + i, POLICE)).collect();
    let sending = send_all(&bus, envs.clone());
    board.until(40, 60).await;
    delete_exchange(&bus, &bus.names.trace_exchange()).await;
    let fault_at = Instant::now();
    sending.await.expect("sent");
    settle(
        &bus,
        &board,
        &envs,
        fault_at,
        "trace exchange deleted under published trace events",
        "[store] trace_direct = false; exchange.delete <p>.trace after 40 answers of 300; 404 NOT_FOUND closes the trace channels",
    )
    .await;
    // Every hop of every dossier is in the trace all the same.
    let store = bus.store();
    for e in &envs {
        let ma = e.ma_ho_so.clone();
        eventually(20, &format!("{ma}'s trace is whole"), || {
            let rows = store.timeline(&ma).ok()?;
            let has = |ev: &str| rows.iter().any(|r| r.event == ev);
            (has("routed") && has("delivered")).then_some(())
        })
        .await;
    }
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliver_exchange_replaced_with_another_type_makes_the_bus_unready_until_it_is_removed() {
    let bus = Bus::start("chan-precondition").await;
    let board = Board::watch(&bus).await;
    answer_as_civil_status_office(&bus).await;
    let envs = mixed(300, 7000);
    let sending = send_all(&bus, envs.clone());
    board.until(40, 60).await;
    // Someone replaces the deliver exchange with a fanout one: the router's publishes are
    // returned (nothing is bound to it) and re-declaring the direct exchange fails with
    // 406 PRECONDITION_FAILED.
    let deliver = bus.names.deliver_exchange();
    replace_with_fanout(&bus, &deliver).await;
    let fault_at = Instant::now();
    // While it cannot publish, the bus says so, naming the component and the broker's error.
    let body = eventually_async(30, || async {
        let (status, body) = readyz(&bus).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "degraded", "{body}");
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("router") && problems.contains("type"),
        "the router and the broker's error are named: {body}"
    );
    // The fault lasts 20 s: the router holds its deliveries meanwhile instead of requeueing
    // them, so none reaches the queue's delivery limit (50 requeues) and is dead-lettered.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let stalled = board.done();
    assert!(stalled < envs.len(), "the flow waits for the fix");
    // The operator removes the wrong exchange; the bus declares the right one by itself.
    delete_exchange(&bus, &deliver).await;
    sending.await.expect("sent");
    settle(
        &bus,
        &board,
        &envs,
        fault_at,
        "deliver exchange replaced by one of another type (precondition failure) for 20 s, then removed",
        "exchange.delete + exchange.declare <p>.deliver as fanout after 40 answers of 300 (re-declaring it fails with 406 PRECONDITION_FAILED; /readyz 503 naming the router; the router holds its deliveries), then exchange.delete",
    )
    .await;
    assert!(
        bus.dead(1, 2).await.is_empty(),
        "nothing dead-lettered (no delivery limit reached while the router held its deliveries)"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_bus_declares_what_was_deleted_again_and_reports_what_it_cannot() {
    let bus = Bus::start_with("chan-keeper", |s| s.topology.check_ms = 1000).await;
    let ch = bus.conn.create_channel().await.expect("channel");
    let exists = |name: String| {
        let conn = bus.conn.clone();
        async move {
            let Ok(ch) = conn.create_channel().await else {
                return false;
            };
            let ok = ch
                .exchange_declare(
                    name.as_str().into(),
                    lapin::ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .is_ok();
            let _ = ch.close(200, "checked".into()).await;
            ok
        }
    };
    // Nothing flows. The dead-letter exchange is deleted, and the binding of the router's
    // queue to the ingress: both come back without any publish finding them gone.
    delete_exchange(&bus, &bus.names.dead_letter_exchange()).await;
    ch.queue_unbind(
        bus.names.router_queue().as_str().into(),
        bus.names.ingress_exchange().as_str().into(),
        "".into(),
        FieldTable::default(),
    )
    .await
    .expect("queue.unbind");
    let dlx = bus.names.dead_letter_exchange();
    eventually_async(10, || {
        let dlx = dlx.clone();
        let exists = &exists;
        async move { exists(dlx).await.then_some(()) }
    })
    .await;
    // A sender that publishes without `mandatory` would lose a message to an unbound ingress:
    // the binding is back, so this one arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut centre = bus.listen(SON_HA).await;
    let env = birth(7600, POLICE);
    bus.unit_publisher
        .publish(
            &bus.names.ingress_exchange(),
            "",
            &env.to_bytes(),
            lienthong_core::amqp::envelope_properties(&env),
            false,
        )
        .await
        .expect("published");
    let r = next(&mut centre, 30).await;
    assert_eq!(r.ma_ho_so, env.ma_ho_so);
    // An exchange replaced by one of another type, while idle: /readyz says so by itself.
    let deliver = bus.names.deliver_exchange();
    replace_with_fanout(&bus, &deliver).await;
    let body = eventually_async(10, || async {
        let (status, body) = readyz(&bus).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body["problems"].to_string().contains("topology"),
        "the topology keeper names it: {body}"
    );
    delete_exchange(&bus, &deliver).await;
    eventually_async(10, || async {
        let (status, _) = readyz(&bus).await;
        (status == 200).then_some(())
    })
    .await;
    bus.stop().await;
}
