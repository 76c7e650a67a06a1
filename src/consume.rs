//! A consumer loop shared by the components: manual acks, a prefetch, one task per delivery (a
//! handler's error or panic affects only its own delivery, which stays unacked and is
//! redelivered), and on shutdown: cancel the consumer, let in-flight deliveries finish within
//! the grace period, then return (anything unfinished is redelivered by the broker).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The longest a shutdown step waits for the broker (cancelling a consumer, closing a channel or
/// a connection).
pub const SHUTDOWN_STEP: Duration = Duration::from_secs(2);

/// `lienthong_messages_in_flight{consumer}`: deliveries a consumer (its tag: `router`,
/// `adapter:<unit>`, …) has taken and not yet finished (acked, dead-lettered or given back); a
/// gauge.
pub const IN_FLIGHT: &str = "lienthong_messages_in_flight";

/// One delivery counted in [`IN_FLIGHT`] until dropped (also when its handler panics).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn new(tag: &str) -> InFlight {
        let g = metrics::gauge!(IN_FLIGHT, "consumer" => tag.to_string());
        g.increment(1.0);
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Consume `queue` on `channel` until shutdown, calling `handle` for each delivery in its own task.
pub async fn consume<F, Fut>(
    channel: Channel,
    queue: &str,
    tag: &str,
    prefetch: u16,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    handle: F,
) -> Result<(), lapin::Error>
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let handle = Arc::new(handle);
    let mut tasks = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.changed() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let h = handle.clone();
                    let in_flight = InFlight::new(tag);
                    tasks.spawn(async move {
                        h(delivery).await;
                        drop(in_flight);
                    });
                }
                Some(Err(e)) => break Err(e),
                None => break Err(lapin::Error::from(std::io::Error::other(format!("the consumer of {queue} was cancelled or its channel closed")))),
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(message = "delivery handler panicked; the delivery stays unacked and will be redelivered", queue, error = %e);
                }
            }
        }
    };
    // Every shutdown step that waits for the broker is bounded: a broker that no longer
    // answers must not keep the process from exiting (unacked work is redelivered anyway).
    let _ = tokio::time::timeout(
        SHUTDOWN_STEP,
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await;
    let drain = async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(message = "delivery handler panicked", queue, error = %e);
            }
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            message = "grace period over; unfinished deliveries will be redelivered",
            queue
        );
    }
    let _ = tokio::time::timeout(SHUTDOWN_STEP, channel.close(200, "shutdown".into())).await;
    result
}

/// Give a delivery back to the broker (nack with requeue): it is redelivered, with the same
/// message id. A failed nack is ignored: the delivery is redelivered when its channel closes.
pub async fn requeue(d: &Delivery) {
    let _ = d
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await;
}
