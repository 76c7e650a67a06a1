//! Publisher confirms matched to the right message when many tasks publish on one channel at
//! once: a message the broker did not take is never reported as taken, and none is published
//! twice.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_lite::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lienthong_core::amqp::{PublishError, Publisher, Redeclare, Supervision};
use lienthong_core::health::Health;

/// Tasks publishing at once on the one publisher, and messages each.
const TASKS: usize = 16;
const PER_TASK: usize = 250;

/// A routing key no queue is bound to, until the publisher's re-declaration binds it.
const UNROUTABLE: &str = "NO.SUCH.UNIT";

/// Half the messages go to a unit whose queue exists (A), half to a routing key no queue is
/// bound to, mandatory: the broker returns them, until the publisher's re-declaration binds
/// that key to a second queue (B), as re-declaring the topology brings back a deleted queue.
/// Every routable message must be confirmed and be in A once. Every unroutable one must be
/// either reported returned to its own publish and in no queue, or in B once (its confirm may
/// read as routed only because it was published again). Two races of one channel are behind
/// this: AMQP numbers a channel's publishes in the order their frames reach the broker, and
/// lapin took the number before queueing the frames (two tasks could swap: each got the other's
/// answer, a refused message read as confirmed); and a `basic.return` carries no number, so lapin
/// hands it to whichever confirm completes next (`Pending::wait` sorts it out by message id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_refused_or_returned_message_reads_as_routed_when_tasks_share_a_channel() {
    let bus = Bus::start("publisher-confirms").await;
    let queue = bus.names.unit_queue(SON_HA_CIVIL);
    let exchange = bus.names.deliver_exchange();
    let second = format!("{}.publisher-confirms-b", bus.settings.bus.prefix);
    let ch = bus.conn.create_channel().await.expect("channel");
    ch.queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .expect("purge");
    // Queue B, bound to nothing yet; the re-declaration binds the unroutable key to it.
    ch.queue_declare(
        second.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("queue B");
    let redeclare: Redeclare = {
        let (second, exchange) = (second.clone(), exchange.clone());
        Arc::new(move |conn: Arc<lapin::Connection>| {
            let (second, exchange) = (second.clone(), exchange.clone());
            Box::pin(async move {
                let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
                ch.queue_bind(
                    second.as_str().into(),
                    exchange.as_str().into(),
                    UNROUTABLE.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| e.to_string())?;
                let _ = ch.close(200, "declared".into()).await;
                Ok(())
            })
        })
    };
    let publisher = Publisher::supervised(
        &bus.conn,
        30_000,
        Supervision {
            health: Health::default(),
            component: "test".into(),
            channel: "publisher-confirms".into(),
            redeclare: Some(redeclare),
            shutdown: None,
        },
    )
    .await
    .expect("publisher");
    // Half of each task's messages are routable.
    let routable = |id: &str| {
        let (t, i) = id["order-".len()..].split_once('-').unwrap_or(("0", "0"));
        (t.parse::<usize>().unwrap_or(0) + i.parse::<usize>().unwrap_or(0)) % 2 == 0
    };
    let outcomes: HashMap<String, (bool, Result<(), PublishError>)> =
        race(&publisher, "order", move |id| {
            let key = if routable(id) {
                SON_HA_CIVIL
            } else {
                UNROUTABLE
            };
            (exchange.clone(), key.to_string(), true)
        })
        .await
        .into_iter()
        .map(|(id, outcome)| {
            let r = routable(&id);
            (id, (r, outcome))
        })
        .collect();
    // Messages published again on another's behalf are still on their way: B is read after A.
    let in_a = drain(&ch, &queue, 3).await;
    let in_b = drain(&ch, &second, 3).await;
    // Queue B is not part of the bus's topology: deleted before the checks, pass or fail.
    let _ = ch
        .queue_delete(second.as_str().into(), QueueDeleteOptions::default())
        .await;
    let mut wrong = Vec::new();
    for (id, (routable, outcome)) in &outcomes {
        let (a, b) = (in_a.get(id).copied(), in_b.get(id).copied());
        let fine = match (routable, outcome) {
            (true, Ok(())) => a == Some(1) && b.is_none(),
            (false, Err(PublishError::Returned { .. })) => a.is_none() && b.is_none(),
            (false, Ok(())) => a.is_none() && b == Some(1),
            _ => false,
        };
        if !fine {
            let kind = if *routable { "routable" } else { "unroutable" };
            wrong.push(format!(
                "{id} ({kind}): {outcome:?}, in A {a:?}, in B {b:?}"
            ));
        }
    }
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "{} of {} publishes were reported wrongly, lost or doubled: {:?}",
        wrong.len(),
        TASKS * PER_TASK,
        &wrong[..wrong.len().min(10)],
    );
    bus.stop().await;
}

/// Publish [`TASKS`] × [`PER_TASK`] messages on `publisher` from tasks running at once; each
/// task puts its messages on the wire one after the other without waiting for their confirms
/// (as the router keeps hundreds in flight), then waits for them all. `to(id)` gives a
/// message's exchange, routing key and `mandatory` flag; ids are `<prefix>-<task>-<i>`. Returns
/// each message id with what its publish was told.
async fn race(
    publisher: &Publisher,
    prefix: &str,
    to: impl Fn(&str) -> (String, String, bool) + Clone + Send + 'static,
) -> Vec<(String, Result<(), PublishError>)> {
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (publisher, to, prefix) = (publisher.clone(), to.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut in_flight = Vec::new();
            for i in 0..PER_TASK {
                let id = format!("{prefix}-{t}-{i}");
                let (exchange, key, mandatory) = to(&id);
                let props = BasicProperties::default()
                    .with_message_id(id.as_str().into())
                    .with_delivery_mode(2);
                let body = vec![b'x'; 1000 + (i % 7) * 400];
                let started = publisher
                    .start(&exchange, &key, &body, props, mandatory)
                    .await;
                in_flight.push((id, started));
            }
            let mut out = Vec::new();
            for (id, started) in in_flight {
                let outcome = match started {
                    Ok(pending) => pending.wait().await,
                    Err(e) => Err(e),
                };
                out.push((id, outcome));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all
}

/// The message ids in `queue` and how often each is there (read until it stays empty for
/// `idle_s`).
async fn drain(ch: &lapin::Channel, queue: &str, idle_s: u64) -> HashMap<String, u32> {
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            format!("publisher-confirms-{queue}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut held: HashMap<String, u32> = HashMap::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_secs(idle_s), consumer.next()).await
    {
        let id = lienthong_core::amqp::message_id_of(&d.properties);
        *held.entry(id).or_default() += 1;
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    held
}

/// A bounded queue (`x-max-length` 20, `reject-publish`) that a consumer drains while 4,000
/// publishes race on one channel: the queue fills and empties again and again, so the broker
/// acks and nacks publishes side by side. Every message the publisher reports as confirmed must
/// reach the consumer, and none it reports as refused (nacked) may. Without the publisher's
/// wire-order lock two racing publishes could swap their answers: a refused message read as
/// confirmed (lost) and a taken one as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nack_from_a_full_queue_reaches_the_publish_it_refuses() {
    let bus = Bus::start("publisher-nacks").await;
    let queue = format!("{}.publisher-nacks", bus.settings.bus.prefix);
    let ch = bus.conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        lapin::types::AMQPValue::LongLongInt(20),
    );
    args.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("bounded queue");
    // The consumer, reading as the publishes go.
    let reader = {
        let ch = bus.conn.create_channel().await.expect("channel");
        ch.basic_qos(10, lapin::options::BasicQosOptions::default())
            .await
            .expect("qos");
        let queue = queue.clone();
        tokio::spawn(async move { drain(&ch, &queue, 15).await })
    };
    let outcomes = {
        let queue = queue.clone();
        // A publisher of its own with a confirm timeout that a loaded broker cannot reach.
        let publisher = Publisher::new(&bus.conn, 60_000).await.expect("publisher");
        race(&publisher, "nack", move |_| {
            (String::new(), queue.clone(), false)
        })
        .await
    };
    let read = reader.await.expect("reader");
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let nacked = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Err(PublishError::Nacked)))
        .count();
    let mut wrong: Vec<String> = outcomes
        .iter()
        .filter_map(|(id, outcome)| {
            let got = read.get(id).copied();
            let fine = match outcome {
                Ok(()) => got == Some(1),
                Err(PublishError::Nacked) => got.is_none(),
                _ => false,
            };
            (!fine).then(|| format!("{id}: {outcome:?}, read {got:?}"))
        })
        .collect();
    wrong.sort();
    assert!(
        wrong.is_empty(),
        "{} of {} publishes got another's answer ({nacked} nacked): {:?}",
        wrong.len(),
        outcomes.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(nacked > 0, "the queue was never full: nothing tested");
    bus.stop().await;
}
