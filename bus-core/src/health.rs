//! The broker links of one `lienthong run` process as `/readyz` reports them: which supervised
//! components hold a broker connection, and which of their channels the broker closed (or whose
//! re-declaration failed) and could not be reopened yet, with the broker's error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// `lienthong_broker_connected{component}`: 1 while the component holds its broker
/// connection, 0 while it reconnects (a gauge).
pub const BROKER_CONNECTED: &str = "lienthong_broker_connected";
/// `lienthong_broker_reconnects_total{component}`: broker connections a component opened again
/// after losing one.
pub const BROKER_RECONNECTS: &str = "lienthong_broker_reconnects_total";

/// `lienthong_broker_blocked{component}`: 1 while the broker blocks the component's connection
/// (`connection.blocked`: a memory or disk alarm; publishes wait), 0 otherwise (a gauge).
pub const BROKER_BLOCKED: &str = "lienthong_broker_blocked";

/// Follow `conn`'s `connection.blocked` / `connection.unblocked` notifications (RabbitMQ's
/// resource alarms, <https://www.rabbitmq.com/docs/connection-blocked>) into
/// [`BROKER_BLOCKED`] and the log, until the returned task is aborted or the connection ends.
pub fn watch_blocked(conn: &lapin::Connection, component: &str) -> tokio::task::JoinHandle<()> {
    use futures_lite::StreamExt;
    let component = component.to_string();
    let mut events = Box::pin(conn.events_listener());
    // Blocked before the listener existed (the topology was declared first): the status says.
    let now = if conn.status().blocked() { 1.0 } else { 0.0 };
    metrics::gauge!(BROKER_BLOCKED, "component" => component.clone()).set(now);
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                lapin::Event::ConnectionBlocked(reason) => {
                    tracing::warn!(message = "the broker blocks this connection: publishes wait until its alarm clears", component = %component, reason = %reason);
                    metrics::gauge!(BROKER_BLOCKED, "component" => component.clone()).set(1.0);
                }
                lapin::Event::ConnectionUnblocked => {
                    tracing::info!(message = "the broker unblocked this connection", component = %component);
                    metrics::gauge!(BROKER_BLOCKED, "component" => component.clone()).set(0.0);
                }
                _ => {}
            }
        }
    })
}

/// The state of one supervised component (`router`, `adapters`, `tracer`, `http`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    /// Whether the component holds an open broker connection.
    pub connected: bool,
    /// Channels of the component that cannot publish right now, by channel name (`deliver`,
    /// `dead letters`, …), each with the broker's error. Empty when every channel works.
    pub failing: BTreeMap<String, String>,
}

impl ComponentHealth {
    /// Connected, and no channel failing.
    pub fn ok(&self) -> bool {
        self.connected && self.failing.is_empty()
    }
}

/// Shared, cheap to clone. Components report their connection
/// ([`Health::set_connected`]); publishers report a channel the broker closed
/// ([`Health::channel_failed`]) and its recovery ([`Health::channel_ok`]).
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, ComponentHealth>>>,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, ComponentHealth>) -> R) -> Option<R> {
        self.inner.lock().ok().map(|mut m| f(&mut m))
    }

    /// Record whether `component` holds a broker connection. A new connection has new
    /// channels: the failures recorded for the old ones are cleared.
    pub fn set_connected(&self, component: &str, connected: bool) {
        metrics::gauge!(BROKER_CONNECTED, "component" => component.to_string()).set(if connected {
            1.0
        } else {
            0.0
        });
        self.with(|m| {
            let c = m.entry(component.to_string()).or_default();
            c.connected = connected;
            c.failing.clear();
        });
    }

    /// `channel` of `component` cannot publish: the broker closed it or re-declaring what it
    /// publishes to failed; `error` is the broker's (or the declaration's) error.
    pub fn channel_failed(&self, component: &str, channel: &str, error: &str) {
        self.with(|m| {
            m.entry(component.to_string())
                .or_default()
                .failing
                .insert(channel.to_string(), error.to_string());
        });
    }

    /// `channel` of `component` works again.
    pub fn channel_ok(&self, component: &str, channel: &str) {
        self.with(|m| {
            if let Some(c) = m.get_mut(component) {
                c.failing.remove(channel);
            }
        });
    }

    /// Every component's state, and whether all are connected with no channel failing.
    pub fn snapshot(&self) -> (bool, BTreeMap<String, ComponentHealth>) {
        let m = self.with(|m| m.clone()).unwrap_or_default();
        (m.values().all(ComponentHealth::ok), m)
    }

    /// One line per problem (`router: channel deliver: NOT_FOUND - no exchange …`), for logs
    /// and the `/readyz` body.
    pub fn problems(&self) -> Vec<String> {
        let (_, m) = self.snapshot();
        let mut out = Vec::new();
        for (name, c) in &m {
            if !c.connected {
                out.push(format!("{name}: no broker connection"));
            }
            for (ch, e) in &c.failing {
                out.push(format!("{name}: channel {ch}: {e}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_channel_makes_the_process_unready_until_it_recovers() {
        let h = Health::default();
        h.set_connected("router", true);
        h.set_connected("http", true);
        assert!(h.snapshot().0);
        h.channel_failed("router", "deliver", "NOT_FOUND - no exchange 'x.deliver'");
        let (ok, m) = h.snapshot();
        assert!(!ok);
        assert_eq!(
            m["router"].failing["deliver"],
            "NOT_FOUND - no exchange 'x.deliver'"
        );
        assert_eq!(
            h.problems(),
            vec!["router: channel deliver: NOT_FOUND - no exchange 'x.deliver'".to_string()]
        );
        h.channel_ok("router", "deliver");
        assert!(h.snapshot().0);
        h.channel_failed("http", "ingress", "closed");
        h.set_connected("http", false);
        assert_eq!(h.problems(), vec!["http: no broker connection".to_string()]);
        h.set_connected("http", true);
        assert!(
            h.snapshot().0,
            "a new connection clears the old channels' failures"
        );
    }
}
