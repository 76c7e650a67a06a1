//! The AMQP topology: every exchange, queue and binding name (all under one prefix), the full
//! argument set of each queue, idempotent declaration with a named error for a queue that
//! exists with other arguments, and export as a RabbitMQ definitions file.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Connection, ExchangeKind};
use serde_json::{Value, json};

use crate::registry::Settings;

/// Names of everything the bus declares, under `prefix` (default `lienthong`).
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
        }
    }
    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// `<p>.ingress` (fanout): every message enters here (AMQP senders and the HTTP API).
    pub fn ingress_exchange(&self) -> String {
        format!("{}.ingress", self.prefix)
    }
    /// `<p>.router`: the router's queue, bound to the ingress exchange.
    pub fn router_queue(&self) -> String {
        format!("{}.router", self.prefix)
    }
    /// `<p>.deliver` (direct): the router publishes here with routing key = receiver unit code.
    pub fn deliver_exchange(&self) -> String {
        format!("{}.deliver", self.prefix)
    }
    /// `<p>.unit.<code>`: one queue per unit, bound to the deliver exchange with key `<code>`.
    pub fn unit_queue(&self, code: &str) -> String {
        format!("{}.unit.{code}", self.prefix)
    }
    /// `<p>.dlx` (fanout): the dead-letter exchange of every work queue, and where components
    /// republish messages they cannot handle, with the reason in headers.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    /// `<p>.dead`: the dead-letter queue; keeps every dead-lettered message for operators.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// `<p>.dead.log`: a second queue on the dead-letter exchange, consumed by the tracer
    /// into the dead-letter log of the store.
    pub fn dead_log_queue(&self) -> String {
        format!("{}.dead.log", self.prefix)
    }
    /// `<p>.dead.process`: a third queue on the dead-letter exchange, consumed by the process
    /// manager (in the router): a dead letter of a message it sent blocks the dossier's step
    /// visibly instead of leaving it waiting.
    pub fn dead_process_queue(&self) -> String {
        format!("{}.dead.process", self.prefix)
    }
    /// `<p>.parking` (fanout exchange and queue): the end of the line. The dead-letter exchange
    /// of the two dead-letter queues, so that a message rejected there (by an operator's tool,
    /// or a poison dead-letter log entry past the delivery limit) is kept, never dropped and
    /// never cycled back.
    pub fn parking(&self) -> String {
        format!("{}.parking", self.prefix)
    }
    /// `<p>.retry.<ms>` (fanout exchange and queue): a delayed retry step. Messages wait there
    /// `<ms>` milliseconds (queue TTL), then are dead-lettered to `<p>.deliver` with their
    /// routing key (the unit code), back onto the unit's queue.
    pub fn retry(&self, delay_ms: u64) -> String {
        format!("{}.retry.{delay_ms}", self.prefix)
    }
    /// `<p>.trace` (fanout): trace events.
    pub fn trace_exchange(&self) -> String {
        format!("{}.trace", self.prefix)
    }
    /// `<p>.trace.store`: the tracer's queue.
    pub fn trace_queue(&self) -> String {
        format!("{}.trace.store", self.prefix)
    }
}

/// An exchange to declare.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    /// Name.
    pub name: String,
    /// `fanout` or `direct`.
    pub kind: &'static str,
}

/// A queue to declare, with its full argument set.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Name.
    pub name: String,
    /// Arguments (`x-queue-type`, `x-dead-letter-exchange`, `x-delivery-limit`, `x-overflow`,
    /// `x-dead-letter-strategy`), as (name, value) with values that are strings or integers.
    pub arguments: Vec<(&'static str, Value)>,
}

/// A binding.
#[derive(Debug, Clone)]
pub struct BindingSpec {
    /// Source exchange.
    pub exchange: String,
    /// Destination queue.
    pub queue: String,
    /// Routing key.
    pub routing_key: String,
}

/// Declaring the topology failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A queue exists with an argument different from the bus's.
    #[error(
        "queue {queue:?} already exists with a different {argument:?} argument ({detail}); delete it or rename the prefix, then start again"
    )]
    QueueArgument {
        /// Queue name.
        queue: String,
        /// Argument name, e.g. `x-queue-type`.
        argument: String,
        /// The broker's words.
        detail: String,
    },
    /// An exchange exists with another type or other arguments.
    #[error("exchange {exchange:?} already exists with a different {what}: {detail}")]
    Exchange {
        /// Exchange name.
        exchange: String,
        /// What differs.
        what: String,
        /// The broker's words.
        detail: String,
    },
    /// Any other broker error, with the object being declared.
    #[error("declaring {object}: {source}")]
    Amqp {
        /// What was being declared.
        object: String,
        /// The error.
        source: lapin::Error,
    },
}

/// The whole topology of one installation.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Names.
    pub names: Names,
    /// Exchanges.
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues.
    pub queues: Vec<QueueSpec>,
    /// Bindings.
    pub bindings: Vec<BindingSpec>,
}

/// Declaring the topology failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TopologyFailure {
    /// A queue or exchange exists with other arguments: retrying will not help.
    pub mismatch: bool,
    /// What went wrong, one line per object.
    pub message: String,
}

/// Declare the topology of `settings` (every exchange, queue and binding; idempotent), turning
/// mismatches into one readable error.
pub async fn declare(settings: &Settings, conn: &lapin::Connection) -> Result<(), TopologyFailure> {
    Topology::plan(settings).apply(conn).await.map_err(|errs| {
        let mismatch = errs
            .iter()
            .any(|e| !matches!(e, TopologyError::Amqp { .. }));
        let lines: Vec<String> = errs.iter().map(|e| format!("  - {e}")).collect();
        TopologyFailure {
            mismatch,
            message: format!(
                "the broker's topology does not match this configuration:\n{}",
                lines.join("\n")
            ),
        }
    })
}

impl Topology {
    /// The topology for `settings`: one queue per unit of the registry.
    pub fn plan(settings: &Settings) -> Topology {
        let n = Names::new(&settings.bus.prefix);
        let work_args = |n: &Names| -> Vec<(&'static str, Value)> {
            vec![
                ("x-queue-type", json!("quorum")),
                ("x-dead-letter-exchange", json!(n.dead_letter_exchange())),
                ("x-dead-letter-strategy", json!("at-least-once")),
                ("x-overflow", json!("reject-publish")),
                ("x-delivery-limit", json!(settings.topology.delivery_limit)),
            ]
        };
        // `dead` keeps dead letters for operators: no delivery limit (browsing must never move
        // a message), dead-lettered to `parking` only if a consumer rejects one. `dead.log` (the
        // tracer's) and `dead.process` (the process manager's) are work queues: a delivery limit
        // like every work queue, but their dead letters go to `parking`, not back to `dlx` (that
        // would be a cycle). `parking` is the end of the line.
        let dead_args = vec![
            ("x-queue-type", json!("quorum")),
            ("x-dead-letter-exchange", json!(n.parking())),
            ("x-dead-letter-strategy", json!("at-least-once")),
            ("x-overflow", json!("reject-publish")),
        ];
        let mut dead_log_args = dead_args.clone();
        dead_log_args.push(("x-delivery-limit", json!(settings.topology.delivery_limit)));
        // Parking's own dead-letter exchange is parking: a message a tool rejects there goes
        // back to its tail instead of being dropped (a cycle with a rejection, which RabbitMQ
        // allows), so every queue has a dead-letter exchange and none loses anything.
        let parking_args = vec![
            ("x-queue-type", json!("quorum")),
            ("x-dead-letter-exchange", json!(n.parking())),
            ("x-dead-letter-strategy", json!("at-least-once")),
            ("x-overflow", json!("reject-publish")),
        ];
        let mut exchanges = vec![
            ExchangeSpec {
                name: n.ingress_exchange(),
                kind: "fanout",
            },
            ExchangeSpec {
                name: n.deliver_exchange(),
                kind: "direct",
            },
            ExchangeSpec {
                name: n.dead_letter_exchange(),
                kind: "fanout",
            },
            ExchangeSpec {
                name: n.parking(),
                kind: "fanout",
            },
        ];
        let mut queues = vec![
            QueueSpec {
                name: n.router_queue(),
                arguments: work_args(&n),
            },
            QueueSpec {
                name: n.dead_letter_queue(),
                arguments: dead_args.clone(),
            },
            QueueSpec {
                name: n.dead_log_queue(),
                arguments: dead_log_args.clone(),
            },
            QueueSpec {
                name: n.dead_process_queue(),
                arguments: dead_log_args,
            },
            QueueSpec {
                name: n.parking(),
                arguments: parking_args,
            },
        ];
        let mut bindings = vec![
            BindingSpec {
                exchange: n.ingress_exchange(),
                queue: n.router_queue(),
                routing_key: String::new(),
            },
            BindingSpec {
                exchange: n.dead_letter_exchange(),
                queue: n.dead_letter_queue(),
                routing_key: String::new(),
            },
            BindingSpec {
                exchange: n.dead_letter_exchange(),
                queue: n.dead_log_queue(),
                routing_key: String::new(),
            },
            BindingSpec {
                exchange: n.dead_letter_exchange(),
                queue: n.dead_process_queue(),
                routing_key: String::new(),
            },
            BindingSpec {
                exchange: n.parking(),
                queue: n.parking(),
                routing_key: String::new(),
            },
        ];
        // The trace exchange exists only when trace events cross the broker: with `[store]
        // trace_direct` (the default) every process writes them into the store itself, and
        // nothing can publish a trace event (the broker refuses a publish to an exchange that
        // does not exist).
        if !settings.store.trace_direct {
            exchanges.push(ExchangeSpec {
                name: n.trace_exchange(),
                kind: "fanout",
            });
            queues.push(QueueSpec {
                name: n.trace_queue(),
                arguments: work_args(&n),
            });
            bindings.push(BindingSpec {
                exchange: n.trace_exchange(),
                queue: n.trace_queue(),
                routing_key: String::new(),
            });
        }
        let mut delays = settings.retry.delays_ms.clone();
        delays.sort_unstable();
        delays.dedup();
        for d in delays {
            exchanges.push(ExchangeSpec {
                name: n.retry(d),
                kind: "fanout",
            });
            queues.push(QueueSpec {
                name: n.retry(d),
                arguments: vec![
                    ("x-queue-type", json!("quorum")),
                    ("x-message-ttl", json!(d)),
                    ("x-dead-letter-exchange", json!(n.deliver_exchange())),
                    ("x-dead-letter-strategy", json!("at-least-once")),
                    ("x-overflow", json!("reject-publish")),
                    ("x-delivery-limit", json!(settings.topology.delivery_limit)),
                ],
            });
            bindings.push(BindingSpec {
                exchange: n.retry(d),
                queue: n.retry(d),
                routing_key: String::new(),
            });
        }
        let mut units: Vec<&crate::registry::Unit> = settings.units.iter().collect();
        units.sort_unstable_by(|a, b| a.code.cmp(&b.code));
        for u in units {
            let code = u.code.as_str();
            // A unit's queue is bounded (`x-overflow = reject-publish` is in `work_args`): once
            // full the broker nacks publishes to it, and the router parks them (queue-full)
            // instead of letting one unit's backlog fill the broker's disk.
            let mut arguments = work_args(&n);
            let (len, bytes) = settings.topology.unit_queue_limits(u);
            arguments.push(("x-max-length", json!(len)));
            arguments.push(("x-max-length-bytes", json!(bytes)));
            queues.push(QueueSpec {
                name: n.unit_queue(code),
                arguments,
            });
            bindings.push(BindingSpec {
                exchange: n.deliver_exchange(),
                queue: n.unit_queue(code),
                routing_key: code.to_string(),
            });
        }
        // On a cluster: how many nodes hold a replica of each quorum queue when it is declared
        // (RabbitMQ's default: every node of the cluster, up to 7).
        if let Some(size) = settings.topology.quorum_initial_group_size {
            for q in &mut queues {
                q.arguments
                    .push(("x-quorum-initial-group-size", json!(size)));
            }
        }
        Topology {
            names: n,
            exchanges,
            queues,
            bindings,
        }
    }

    /// Declare everything, idempotently. Each declaration runs on its own channel so that a
    /// mismatch closes only that channel; every mismatched queue is reported, by name and argument.
    pub async fn apply(&self, conn: &Connection) -> Result<(), Vec<TopologyError>> {
        let mut errors = Vec::new();
        for x in &self.exchanges {
            if let Err(e) = declare_exchange(conn, x).await {
                errors.push(e);
            }
        }
        for q in &self.queues {
            if let Err(e) = declare_queue(conn, q).await {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ch = conn.create_channel().await.map_err(|e| {
            vec![TopologyError::Amqp {
                object: "channel".into(),
                source: e,
            }]
        })?;
        for b in &self.bindings {
            ch.queue_bind(
                ShortString::from(b.queue.as_str()),
                ShortString::from(b.exchange.as_str()),
                ShortString::from(b.routing_key.as_str()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                vec![TopologyError::Amqp {
                    object: format!("binding {} -> {}", b.exchange, b.queue),
                    source: e,
                }]
            })?;
        }
        let _ = ch.close(200, "topology applied".into()).await;
        Ok(())
    }

    /// Delete every queue and exchange of this topology (tests and `topology delete`). Each
    /// deletion runs on its own channel so one failure does not stop the rest; the first error
    /// is returned at the end.
    pub async fn delete(&self, conn: &Connection) -> Result<(), lapin::Error> {
        let mut first_err = None;
        for q in &self.queues {
            let r = async {
                let ch = conn.create_channel().await?;
                ch.queue_delete(
                    ShortString::from(q.name.as_str()),
                    QueueDeleteOptions::default(),
                )
                .await?;
                let _ = ch.close(200, "deleted".into()).await;
                Ok::<(), lapin::Error>(())
            }
            .await;
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        for x in &self.exchanges {
            let r = async {
                let ch = conn.create_channel().await?;
                ch.exchange_delete(
                    ShortString::from(x.name.as_str()),
                    ExchangeDeleteOptions::default(),
                )
                .await?;
                let _ = ch.close(200, "deleted".into()).await;
                Ok::<(), lapin::Error>(())
            }
            .await;
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The topology as a RabbitMQ definitions document (import with `rabbitmqctl
    /// import_definitions` or the management UI), for vhost `vhost`.
    pub fn export(&self, vhost: &str) -> Value {
        json!({
            "rabbit_version": "3.10.0",
            "vhosts": [{"name": vhost}],
            "exchanges": self.exchanges.iter().map(|x| json!({
                "name": x.name, "vhost": vhost, "type": x.kind, "durable": true,
                "auto_delete": false, "internal": false, "arguments": {}
            })).collect::<Vec<_>>(),
            "queues": self.queues.iter().map(|q| json!({
                "name": q.name, "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": q.arguments.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<serde_json::Map<_, _>>()
            })).collect::<Vec<_>>(),
            "bindings": self.bindings.iter().map(|b| json!({
                "source": b.exchange, "vhost": vhost, "destination": b.queue,
                "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}
            })).collect::<Vec<_>>(),
            "policies": [],
        })
    }
}

fn to_field_table(args: &[(&'static str, Value)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let val = match v {
            Value::String(s) => AMQPValue::LongString(LongString::from(s.clone())),
            Value::Number(n) => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
            other => AMQPValue::LongString(LongString::from(other.to_string())),
        };
        t.insert(ShortString::from(*k), val);
    }
    t
}

async fn declare_exchange(conn: &Connection, x: &ExchangeSpec) -> Result<(), TopologyError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| TopologyError::Amqp {
            object: format!("exchange {}", x.name),
            source: e,
        })?;
    let kind = if x.kind == "direct" {
        ExchangeKind::Direct
    } else {
        ExchangeKind::Fanout
    };
    let res = ch
        .exchange_declare(
            ShortString::from(x.name.as_str()),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match res {
        Ok(()) => {
            let _ = ch.close(200, "ok".into()).await;
            Ok(())
        }
        Err(e) => {
            let text = e.to_string();
            if text.contains("PRECONDITION_FAILED") || text.contains("inequivalent") {
                Err(TopologyError::Exchange {
                    exchange: x.name.clone(),
                    what: "type or arguments".into(),
                    detail: text,
                })
            } else {
                Err(TopologyError::Amqp {
                    object: format!("exchange {}", x.name),
                    source: e,
                })
            }
        }
    }
}

async fn declare_queue(conn: &Connection, q: &QueueSpec) -> Result<(), TopologyError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| TopologyError::Amqp {
            object: format!("queue {}", q.name),
            source: e,
        })?;
    let res = ch
        .queue_declare(
            ShortString::from(q.name.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            to_field_table(&q.arguments),
        )
        .await;
    match res {
        Ok(_) => {
            let _ = ch.close(200, "ok".into()).await;
            Ok(())
        }
        Err(e) => {
            let text = e.to_string();
            match inequivalent_arg(&text) {
                Some(arg) => Err(TopologyError::QueueArgument {
                    queue: q.name.clone(),
                    argument: arg,
                    detail: text,
                }),
                None if text.contains("PRECONDITION_FAILED") => Err(TopologyError::QueueArgument {
                    queue: q.name.clone(),
                    argument: "durable/exclusive/auto_delete".into(),
                    detail: text,
                }),
                None => Err(TopologyError::Amqp {
                    object: format!("queue {}", q.name),
                    source: e,
                }),
            }
        }
    }
}

/// The argument name in RabbitMQ's "inequivalent arg 'x-queue-type' for queue …" error.
fn inequivalent_arg(text: &str) -> Option<String> {
    let start = text.find("inequivalent arg '")? + "inequivalent arg '".len();
    let rest = &text[start..];
    let end = rest.find('\'')?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_has_the_full_argument_set() {
        let s = Settings::from_toml(crate::registry::DEFAULT_CONFIG, false).expect("config");
        let t = Topology::plan(&s);
        let arg = |q: &QueueSpec, k: &str| {
            q.arguments
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
        };
        for q in &t.queues {
            assert_eq!(arg(q, "x-queue-type"), Some(json!("quorum")), "{}", q.name);
            assert_eq!(
                arg(q, "x-overflow"),
                Some(json!("reject-publish")),
                "{}",
                q.name
            );
            match q.name.as_str() {
                "lienthong.parking" => assert_eq!(
                    arg(q, "x-dead-letter-exchange"),
                    Some(json!("lienthong.parking"))
                ),
                "lienthong.dead" => {
                    assert_eq!(
                        arg(q, "x-dead-letter-exchange"),
                        Some(json!("lienthong.parking"))
                    );
                    assert_eq!(arg(q, "x-delivery-limit"), None);
                }
                name if name.starts_with("lienthong.retry.") => {
                    assert_eq!(
                        arg(q, "x-dead-letter-exchange"),
                        Some(json!("lienthong.deliver"))
                    );
                    assert!(arg(q, "x-message-ttl").is_some());
                }
                "lienthong.dead.log" | "lienthong.dead.process" => {
                    assert_eq!(
                        arg(q, "x-dead-letter-exchange"),
                        Some(json!("lienthong.parking"))
                    );
                    assert_eq!(arg(q, "x-delivery-limit"), Some(json!(50)));
                }
                _ => {
                    assert_eq!(
                        arg(q, "x-dead-letter-exchange"),
                        Some(json!("lienthong.dlx")),
                        "{}",
                        q.name
                    );
                    assert_eq!(arg(q, "x-delivery-limit"), Some(json!(50)), "{}", q.name);
                    assert_eq!(
                        arg(q, "x-dead-letter-strategy"),
                        Some(json!("at-least-once")),
                        "{}",
                        q.name
                    );
                }
            }
        }
        assert!(t.queues.iter().any(|q| q.name == "lienthong.unit.CA.H48"));
    }

    #[test]
    fn broker_error_text_gives_the_argument() {
        let t = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received the value 'quorum' of type 'longstr' but current is none";
        assert_eq!(inequivalent_arg(t).as_deref(), Some("x-queue-type"));
    }
}
