//! The [`Tracer`]: how a component hands its trace events on, above the store: published to
//! the trace exchange in batches with publisher confirms (the tracer component stores them), or
//! straight into the store through the process's group commit (`[store] trace_direct`).

use crate::amqp::{PublishError, Publisher};
use crate::store::db::{Db, DbError};
use crate::store::writer::MessageWriter;

use super::event::TraceEvent;

/// Publishes trace events to `<prefix>.trace` on a confirm channel, batched: the events that
/// arrive while the previous batch is being written go out together as one message (a JSON
/// array, at most [`TRACE_BATCH_MAX`] events), so a busy router sends one trace message for many
/// hops instead of one per event. An idle tracer sends each event at once (no linger). Every
/// event's [`TracePending`] resolves with its batch's publisher confirm.
#[derive(Clone)]
pub struct Tracer {
    sink: Sink,
}

#[derive(Clone)]
enum Sink {
    /// Batches published to the trace exchange (the tracer component stores them).
    Broker(
        tokio::sync::mpsc::UnboundedSender<(
            Vec<TraceEvent>,
            tokio::sync::oneshot::Sender<Confirmed>,
        )>,
    ),
    /// Straight into the store, in the process's group commit ([`Tracer::to_store`]).
    Store(MessageWriter),
}

/// At most this many events in one trace message.
pub const TRACE_BATCH_MAX: usize = 256;

type Confirmed = Result<(), String>;

/// A trace event on its way; [`TracePending::wait`] for its publisher confirm.
pub struct TracePending(tokio::sync::oneshot::Receiver<Confirmed>);

impl TracePending {
    /// Wait for the confirm of the batch that carries the event.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PublishError::Batch(e)),
            Err(_) => Err(PublishError::Batch("the trace publisher stopped".into())),
        }
    }
}

impl Tracer {
    /// A tracer publishing on `publisher` to `exchange`. Spawns its batching task on the current
    /// Tokio runtime (it ends when the last clone of the tracer is dropped).
    ///
    /// Each trace message carries `user_id` = `broker_user` (the bus's own broker user, see
    /// [`broker_user`]): RabbitMQ refuses a message whose `user_id` is not the publishing
    /// connection's user, so the tracer component can tell the bus's trace messages from ones
    /// another broker user published.
    pub fn new(publisher: Publisher, exchange: String, broker_user: String) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_publisher(publisher, exchange, broker_user, rx));
        Tracer {
            sink: Sink::Broker(tx),
        }
    }

    /// A tracer writing straight into the store through `writer`'s group commit (no trace
    /// message through the broker): an event's [`TracePending`] resolves when its transaction
    /// has committed. For components that share the store file with the tracer (`[store]
    /// trace_direct`).
    pub fn to_store(writer: MessageWriter) -> Self {
        Tracer {
            sink: Sink::Store(writer),
        }
    }

    /// Put an event on the wire; await the returned [`TracePending`] before acking the delivery
    /// the event describes, so that an acked message always has its trace.
    pub async fn start(&self, ev: &TraceEvent) -> Result<TracePending, PublishError> {
        self.start_all(vec![ev.clone()])
    }

    /// Put several events on the wire in one batch (they are never split across messages);
    /// the pending resolves with that batch's confirm.
    pub fn start_all(&self, events: Vec<TraceEvent>) -> Result<TracePending, PublishError> {
        super::metrics::count(&events);
        match &self.sink {
            Sink::Broker(tx) => {
                let (done, wait) = tokio::sync::oneshot::channel();
                tx.send((events, done))
                    .map_err(|_| PublishError::Batch("the trace publisher stopped".into()))?;
                Ok(TracePending(wait))
            }
            Sink::Store(writer) => writer
                .start_events(events)
                .map(TracePending)
                .map_err(PublishError::Batch),
        }
    }

    /// Publish an event and wait for its confirm.
    pub async fn emit(&self, ev: &TraceEvent) -> Result<(), PublishError> {
        self.start(ev).await?.wait().await
    }

    /// Publish events together and wait for their confirm.
    pub async fn emit_all(&self, events: Vec<TraceEvent>) -> Result<(), PublishError> {
        self.start_all(events)?.wait().await
    }

    /// Run a store `write` and trace `events`, and wait for both: the state change and the
    /// trace of it. A tracer that writes straight into the store ([`Tracer::to_store`]) puts
    /// both in one group commit of its own writer (all or nothing, one commit instead of two:
    /// the write in a savepoint of its own, its events with the batch's other events when it
    /// succeeded, [`MessageWriter::transact_traced`]; `writer` is then not used: a process has one, `Ctx::writer`, which its
    /// tracer writes through). Otherwise the write commits through `writer` first and the
    /// events are published after it, so that no event tells of a write that failed. Returns
    /// the write's value. Errors (as text): the write or its commit failed, or the trace was
    /// not confirmed; the write has then committed and the events may be lost, so callers use
    /// it only for idempotent writes and retry the whole step.
    pub async fn emit_with<T: Send + 'static>(
        &self,
        writer: &MessageWriter,
        events: Vec<TraceEvent>,
        write: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, String> {
        self.emit_from(writer, move |c| Ok((write(c)?, events)))
            .await
    }

    /// [`Tracer::emit_with`] for a write whose events depend on what it finds: `write` returns
    /// its value and the events that tell of it (none: nothing is traced), which are written
    /// in the same group commit when the write succeeded (a tracer into the store), or published
    /// after the write committed (a tracer through the broker). Same errors as `emit_with`.
    pub async fn emit_from<T: Send + 'static>(
        &self,
        writer: &MessageWriter,
        write: impl FnOnce(&Db) -> Result<(T, Vec<TraceEvent>), DbError> + Send + 'static,
    ) -> Result<T, String> {
        match &self.sink {
            // The writer counts the events once they have committed.
            Sink::Store(own) => own.transact_traced(write).await,
            Sink::Broker(_) => {
                let (v, events) = writer.transact(write).await?;
                if !events.is_empty() {
                    self.emit_all(events).await.map_err(|e| e.to_string())?;
                }
                Ok(v)
            }
        }
    }
}

/// The batching task behind a [`Tracer`].
async fn batch_publisher(
    publisher: Publisher,
    exchange: String,
    user: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(
        Vec<TraceEvent>,
        tokio::sync::oneshot::Sender<Confirmed>,
    )>,
) {
    while let Some((first, w)) = rx.recv().await {
        let mut events = first;
        let mut waiters = vec![w];
        // Take what is queued; under load, let the other tasks run a few times to fill the batch
        // (no timer: an idle tracer adds no latency).
        for round in 0..4 {
            let before = events.len();
            while events.len() < TRACE_BATCH_MAX {
                match rx.try_recv() {
                    Ok((more, w)) => {
                        events.extend(more);
                        waiters.push(w);
                    }
                    Err(_) => break,
                }
            }
            if round == 0 && events.len() == before || events.len() >= TRACE_BATCH_MAX {
                break;
            }
            tokio::task::yield_now().await;
        }
        let body = if events.len() == 1 {
            serde_json::to_vec(&events[0])
        } else {
            serde_json::to_vec(&events)
        }
        .unwrap_or_default();
        let props = lapin::BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(events[0].event_id.clone().into())
            .with_user_id(user.as_str().into());
        match publisher.start(&exchange, "", &body, props, false).await {
            Ok(pending) => {
                // The confirm is awaited apart, so the next batch goes out meanwhile.
                tokio::spawn(async move {
                    let r = pending.wait().await.map_err(|e| e.to_string());
                    for w in waiters {
                        let _ = w.send(r.clone());
                    }
                });
            }
            Err(e) => {
                let r: Confirmed = Err(e.to_string());
                for w in waiters {
                    let _ = w.send(r.clone());
                }
            }
        }
    }
}

/// The broker user an AMQP URL logs in as (`amqp://user:pass@host/…`, percent-decoded; RabbitMQ's
/// default `guest` when the URL names none). The tracer component accepts a published trace
/// message only with this `user_id`.
pub fn broker_user(amqp_url: &str) -> String {
    let rest = amqp_url.split_once("://").map_or(amqp_url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return "guest".to_string();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    if user.is_empty() {
        return "guest".to_string();
    }
    percent_decode(user)
}

/// Decode `%XX` escapes (others left as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::broker_user;

    #[test]
    fn the_broker_user_is_read_from_the_url() {
        assert_eq!(
            broker_user("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "guest"
        );
        assert_eq!(broker_user("amqps://bus%2Dqn:p%40ss@h/v"), "bus-qn");
        assert_eq!(broker_user("amqp://127.0.0.1:5672"), "guest");
    }
}
