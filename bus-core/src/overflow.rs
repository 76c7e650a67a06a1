//! A message the broker refused for its unit's full queue (`x-max-length` /
//! `x-max-length-bytes` with `x-overflow = reject-publish`: a nack) is parked in the first
//! delayed retry queue with the reason `queue-full`, instead of holding its publisher: after
//! the delay that queue hands it to `<p>.deliver` again under the same routing key (and keeps
//! it, dead-lettering at least once, while the unit's queue is still full).

use lapin::types::{AMQPValue, LongString};

use crate::amqp::{PublishError, Publisher, envelope_properties};
use crate::topology::Names;

/// The reason of a parked message, in its header [`PARKED_HEADER`] and in the trace.
pub const QUEUE_FULL: &str = "queue-full";

/// The header a parked message carries (value [`QUEUE_FULL`]).
pub const PARKED_HEADER: &str = "x-lienthong-parked";

/// Park `body` (envelope `env`) for `receiver` in `<p>.retry.<delays_ms[0]>`, with the
/// envelope's properties and the header [`PARKED_HEADER`]; waits for the publisher confirm.
/// Returns the retry queue's name and its delay, ms.
///
/// Errors: the publish's own; [`PublishError::Nacked`] when `[retry] delays_ms` is empty (no
/// retry queue exists).
pub async fn park_queue_full(
    publisher: &Publisher,
    names: &Names,
    delays_ms: &[u64],
    receiver: &str,
    body: &[u8],
    env: &crate::Envelope,
) -> Result<(String, u64), PublishError> {
    let Some(&delay) = delays_ms.first() else {
        return Err(PublishError::Nacked);
    };
    let props = envelope_properties(env);
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        PARKED_HEADER.into(),
        AMQPValue::LongString(LongString::from(QUEUE_FULL)),
    );
    let queue = names.retry(delay);
    publisher
        .publish(&queue, receiver, body, props.with_headers(headers), true)
        .await?;
    Ok((queue, delay))
}
