//! The pull inbox: a unit whose software does not speak AMQP reads its own queue
//! (`<prefix>.unit.<code>`) over HTTP, with the same at-least-once contract as an AMQP consumer
//! with manual acks. `GET /v1/inbox?wait=&max=&lease=` long-polls a batch; each message is
//! leased (held unacknowledged on a broker channel of this process) until `POST /v1/inbox/ack`
//! acknowledges it or the lease runs out, when the broker puts it back in the queue
//! (redelivered). A message acked here after its lease ran out, and then delivered again, is
//! acked and dropped when it comes back; the client deduplicates by `message_id` as well.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use super::*;

/// The longest long-poll, seconds (`wait`).
pub(super) const MAX_WAIT_S: u64 = 30;
/// The most messages of one batch (`max`).
pub(super) const MAX_BATCH: u16 = 100;
/// The shortest and longest lease, seconds (`lease`); the default is 60.
pub(super) const LEASE_S: (u64, u64, u64) = (5, 600, 60);
/// How many acked message ids each process remembers per unit, to drop a redelivered copy.
const REMEMBERED: usize = 10_000;
/// How long a batch keeps gathering after its first message, before it answers.
const GATHER: Duration = Duration::from_millis(25);

/// The leases of one HTTP process.
#[derive(Default)]
pub(super) struct Inbox {
    /// Lease id → its message.
    leases: Mutex<HashMap<String, Lease>>,
    /// Per unit, the message ids acked lately (oldest first), for dropping copies.
    acked: Mutex<HashMap<String, AckedIds>>,
}

/// The message ids one unit acked lately: the set, and their order (oldest first).
type AckedIds = (HashSet<String>, VecDeque<String>);

/// One leased message: the batch (channel) it came on and its delivery tag.
struct Lease {
    unit: String,
    message_id: String,
    batch: Arc<Batch>,
    tag: u64,
    /// The message as the broker delivered it, for dead-lettering it on the unit's reject.
    body: Vec<u8>,
    props: lapin::BasicProperties,
}

/// One batch's channel: open while a lease of it is outstanding, closed (the broker requeues
/// what is unacked) when the last is acked or the lease runs out.
struct Batch {
    channel: lapin::Channel,
    outstanding: AtomicUsize,
}

impl Batch {
    async fn close(&self, why: &str) {
        if self.channel.status().connected() {
            let _ = self.channel.close(200, why.into()).await;
        }
    }
}

impl Inbox {
    fn acked_before(&self, unit: &str, message_id: &str) -> bool {
        self.acked
            .lock()
            .map(|a| a.get(unit).is_some_and(|(set, _)| set.contains(message_id)))
            .unwrap_or(false)
    }

    fn remember(&self, unit: &str, message_id: &str) {
        if let Ok(mut a) = self.acked.lock() {
            let (set, order) = a.entry(unit.to_string()).or_default();
            if set.insert(message_id.to_string()) {
                order.push_back(message_id.to_string());
                while order.len() > REMEMBERED {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
            }
        }
    }
}

/// `GET /v1/inbox` query.
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InboxQuery {
    /// Seconds to wait for a first message (0–30, default 0: answer at once).
    #[param(nullable = false, minimum = 0, maximum = 30, default = 0)]
    wait: Option<u64>,
    /// Most messages in the batch (1–100, default 10).
    #[param(nullable = false, minimum = 1, maximum = 100, default = 10)]
    max: Option<u16>,
    /// Seconds each message stays leased (5–600, default 60).
    #[param(nullable = false, minimum = 5, maximum = 600, default = 60)]
    lease: Option<u64>,
}

/// A batch of the pull inbox.
#[derive(Serialize, ToSchema)]
pub(super) struct InboxBatch {
    /// The leased messages, in queue order; empty when none came within `wait`.
    messages: Vec<InboxMessage>,
    /// How long each message stays leased, seconds.
    lease_seconds: u64,
}

/// One leased message of the pull inbox.
#[derive(Serialize, ToSchema)]
pub(super) struct InboxMessage {
    /// The lease to acknowledge (`POST /v1/inbox/ack`).
    lease_id: String,
    /// The message's id (deduplicate by it: a message may come again).
    message_id: String,
    /// Whether the broker delivered it before (a lease ran out, or a consumer died).
    redelivered: bool,
    /// The message: the envelope (`schemas/envelope.schema.json`), or its body as text when it
    /// is not JSON.
    #[schema(schema_with = envelope_or_text)]
    envelope: Value,
}

/// [`InboxMessage::envelope`]'s schema: an envelope, or a string.
fn envelope_or_text() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(lienthong_core::envelope::openapi_ref())
            .item(utoipa::openapi::schema::Object::with_type(
                utoipa::openapi::schema::Type::String,
            ))
            .build(),
    )
}

fn bad_query(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad-query", "Bad query", detail)
}

/// Read the unit's queue.
///
/// `GET /v1/inbox?wait=30&max=10&lease=60`: up to `max` messages of the caller's queue
/// (`<prefix>.unit.<code>`), each `{lease_id, message_id, redelivered, envelope}`, leased for
/// `lease` seconds; an empty `messages` after `wait` seconds without any. A message not
/// acknowledged (`POST /v1/inbox/ack`) before its lease runs out goes back to the queue and
/// comes again (`redelivered`): at least once, as over AMQP; deduplicate by `message_id`. 409
/// for a unit the bus reaches through an adapter (its messages go to that agency's system),
/// 503 when the broker is unavailable.
#[utoipa::path(
    get,
    path = "/v1/inbox",
    tag = "units",
    operation_id = "inbox",
    security(("unitKey" = [])),
    params(InboxQuery),
    responses(
        (status = 200, description = "A batch (maybe empty)", body = InboxBatch),
        (status = 400, description = "`bad-query`: an unknown parameter or one out of range",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`delivered-by-adapter`: the bus delivers this unit's messages to its system through an adapter",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn inbox(
    State(api): State<Api>,
    q: Result<Query<InboxQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    match pull(&api, q, &headers).await {
        Ok(v) => Json(v).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn pull(
    api: &Api,
    q: Result<Query<InboxQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<InboxBatch, Problem> {
    let unit = api.caller(headers)?.clone();
    let Query(q) = q.map_err(|e| bad_query(e.body_text()))?;
    let wait = q.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(bad_query(format!("wait is at most {MAX_WAIT_S} seconds")));
    }
    let max = q.max.unwrap_or(10);
    if !(1..=MAX_BATCH).contains(&max) {
        return Err(bad_query(format!("max is 1 to {MAX_BATCH}")));
    }
    let lease = q.lease.unwrap_or(LEASE_S.2);
    if !(LEASE_S.0..=LEASE_S.1).contains(&lease) {
        return Err(bad_query(format!(
            "lease is {} to {} seconds",
            LEASE_S.0, LEASE_S.1
        )));
    }
    if let Reach::Adapter { adapter, .. } = &unit.reach {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "delivered-by-adapter",
            "Delivered by an adapter",
            format!(
                "the bus delivers the messages of {} to its system through the {adapter} adapter; there is no queue to read",
                unit.code
            ),
        ));
    }
    let broker = api.broker().await?;
    let unavailable = |e: lapin::Error| {
        Problem::unavailable_because("the bus cannot read the queue right now", 5, e)
    };
    let channel = broker.conn.create_channel().await.map_err(unavailable)?;
    let batch = Arc::new(Batch {
        channel: channel.clone(),
        outstanding: AtomicUsize::new(0),
    });
    let read = read_batch(api, &unit, &channel, wait, max).await;
    let deliveries = match read {
        Ok(d) => d,
        Err(e) => {
            batch.close("inbox read failed").await;
            return Err(unavailable(e));
        }
    };
    let mut out = Vec::new();
    let mut leases = Vec::new();
    for d in deliveries {
        let message_id = lienthong_core::amqp::message_id_of(&d.properties);
        // A copy of a message this unit acked (after its lease ran out): acked, not shown.
        if !message_id.is_empty() && api.inbox.acked_before(&unit.code, &message_id) {
            let _ = channel
                .basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await;
            continue;
        }
        let envelope = serde_json::from_slice::<Value>(&d.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.data).into_owned()));
        let lease_id = lienthong_core::envelope::new_message_id();
        out.push(InboxMessage {
            lease_id: lease_id.clone(),
            message_id: message_id.clone(),
            redelivered: d.redelivered,
            envelope,
        });
        leases.push((
            lease_id,
            Lease {
                unit: unit.code.clone(),
                message_id,
                batch: batch.clone(),
                tag: d.delivery_tag,
                body: d.data,
                props: d.properties,
            },
        ));
    }
    if leases.is_empty() {
        batch.close("inbox batch empty").await;
        return Ok(InboxBatch {
            messages: out,
            lease_seconds: lease,
        });
    }
    batch.outstanding.store(leases.len(), Ordering::SeqCst);
    let ids: Vec<String> = leases.iter().map(|(id, _)| id.clone()).collect();
    if let Ok(mut map) = api.inbox.leases.lock() {
        map.extend(leases);
    }
    // When the lease runs out, what is still unacked goes back to the queue.
    let inbox = api.inbox.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(lease)).await;
        if let Ok(mut map) = inbox.leases.lock() {
            for id in &ids {
                map.remove(id);
            }
        }
        batch.close("inbox lease expired").await;
    });
    Ok(InboxBatch {
        messages: out,
        lease_seconds: lease,
    })
}

/// Up to `max` deliveries of `unit`'s queue on `channel` (manual acks, prefetch `max`): the
/// first within `wait` seconds, then what follows within [`GATHER`]; the consumer is
/// cancelled before returning, and deliveries the broker sent before the cancel are kept.
async fn read_batch(
    api: &Api,
    unit: &Unit,
    channel: &lapin::Channel,
    wait: u64,
    max: u16,
) -> Result<Vec<lapin::message::Delivery>, lapin::Error> {
    channel.basic_qos(max, BasicQosOptions::default()).await?;
    let tag = format!("inbox-{}", lienthong_core::envelope::new_message_id());
    let mut consumer = channel
        .basic_consume(
            api.ctx.names.unit_queue(&unit.code).into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut got = Vec::new();
    // With wait=0, a moment for the broker to send what the queue holds.
    let first = Duration::from_secs(wait).max(Duration::from_millis(200));
    if let Ok(Some(d)) = tokio::time::timeout(first, consumer.next()).await {
        got.push(d?);
        while got.len() < usize::from(max) {
            match tokio::time::timeout(GATHER, consumer.next()).await {
                Ok(Some(d)) => got.push(d?),
                _ => break,
            }
        }
    }
    channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await?;
    // Deliveries sent before the cancel's answer are in the consumer's buffer: they are this
    // batch's (the prefetch keeps them within `max`).
    while let Ok(Some(d)) = tokio::time::timeout(Duration::ZERO, consumer.next()).await {
        got.push(d?);
    }
    Ok(got)
}

/// `POST /v1/inbox/ack` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AckRequest {
    /// Lease ids from `GET /v1/inbox`.
    lease_ids: Vec<String>,
}

/// `POST /v1/inbox/ack`'s answer: each lease id of the request in one of the three lists.
#[derive(Serialize, ToSchema, Default)]
pub(super) struct AckResult {
    /// Acknowledged: the broker removed the message from the queue.
    acked: Vec<String>,
    /// The lease ran out: the message went back to the queue and comes again.
    expired: Vec<String>,
    /// Not a lease of this unit in this process.
    unknown: Vec<String>,
}

/// Acknowledge leased messages.
///
/// `POST /v1/inbox/ack {"lease_ids": [...]}`: acknowledge leased messages (the broker removes
/// them from the queue). 200 `{acked, expired, unknown}`: `expired` leases ran out (the message
/// went back to the queue and comes again, to be deduplicated by `message_id`); `unknown` are
/// not leases of this unit in this process (behind a load balancer, acks must reach the process
/// that leased: see README).
#[utoipa::path(
    post,
    path = "/v1/inbox/ack",
    tag = "units",
    operation_id = "inbox_ack",
    security(("unitKey" = [])),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Each lease id, acked, expired or unknown", body = AckResult),
        (status = 400, description = "`malformed-json`: not `{\"lease_ids\": [string]}`; `bad-body`",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn inbox_ack(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (unit, req): (String, AckRequest) =
        match read_request(&api, &headers, body, "{\"lease_ids\": [string]}") {
            Ok(r) => r,
            Err(p) => return p.into_response(),
        };
    let mut out = AckResult::default();
    for id in req.lease_ids {
        let Some(lease) = api.inbox.take(&unit, &id) else {
            out.unknown.push(id);
            continue;
        };
        settle(&api, &unit, id, lease, &mut out).await;
    }
    Json(out).into_response()
}

/// The caller's unit and the JSON request body, or the problem (401, a body not read, not
/// `shape`).
fn read_request<T: serde::de::DeserializeOwned>(
    api: &Api,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<(String, T), Problem> {
    let unit = api.caller(headers)?.code.clone();
    let body = body.map_err(|e| body_problem(e, api.ctx.settings.http.max_small_body_bytes))?;
    let req = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            format!("the body must be {shape}: {e}"),
        )
    })?;
    Ok((unit, req))
}

impl Inbox {
    /// Lease `id` of `unit`, taken out of the leases (`None`: not a lease of this unit here).
    fn take(&self, unit: &str, id: &str) -> Option<Lease> {
        self.leases
            .lock()
            .ok()
            .and_then(|mut map| match map.get(id) {
                Some(l) if l.unit == unit => map.remove(id),
                _ => None,
            })
    }
}

/// Acknowledge `lease`'s delivery: into `out.acked`, or `out.expired` when its channel has
/// closed (the lease ran out); the message id is remembered, and the batch's channel closed
/// with its last lease.
async fn settle(api: &Api, unit: &str, id: String, lease: Lease, out: &mut AckResult) {
    let ok = lease.batch.channel.status().connected()
        && lease
            .batch
            .channel
            .basic_ack(lease.tag, BasicAckOptions::default())
            .await
            .is_ok();
    if !lease.message_id.is_empty() {
        api.inbox.remember(unit, &lease.message_id);
    }
    if ok {
        out.acked.push(id);
    } else {
        out.expired.push(id);
    }
    if lease.batch.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
        lease.batch.close("inbox batch settled").await;
    }
}

/// `POST /v1/inbox/reject` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RejectRequest {
    /// Lease ids from `GET /v1/inbox`.
    lease_ids: Vec<String>,
    /// Why the unit's software cannot take these messages (at most 2000 characters are kept):
    /// the reason the operator reads in the dead-letter queue.
    reason: String,
}

/// Refuse leased messages: dead-letter them.
///
/// `POST /v1/inbox/reject {"lease_ids": [...], "reason": "..."}`: the unit's software cannot
/// take these messages (what a consumer's `basic.reject` without requeue does over AMQP): each
/// goes to the dead-letter queue as `agency-refused`, with the unit's reason, where the operator
/// sees it and may replay it; then it leaves the unit's queue. 200 `{acked, expired, unknown}`
/// (`acked`: dead-lettered and removed); 503 when a dead letter was not confirmed (the leases
/// not yet settled stay leased: send the reject again).
#[utoipa::path(
    post,
    path = "/v1/inbox/reject",
    tag = "units",
    operation_id = "inbox_reject",
    security(("unitKey" = [])),
    request_body = RejectRequest,
    responses(
        (status = 200, description = "Each lease id, dead-lettered (acked), expired or unknown", body = AckResult),
        (status = 400, description = "`malformed-json`: not `{\"lease_ids\": [string], \"reason\": string}`; `bad-body`",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(super) async fn inbox_reject(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (unit, req): (String, RejectRequest) = match read_request(
        &api,
        &headers,
        body,
        "{\"lease_ids\": [string], \"reason\": string}",
    ) {
        Ok(r) => r,
        Err(p) => return p.into_response(),
    };
    let broker = match api.broker().await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let dlc = lienthong_core::deadletter::DeadLetterChannel::new(
        broker.publisher.clone(),
        broker.tracer.clone(),
        api.ctx.names.clone(),
        COMPONENT,
    );
    let rejection = Rejection::new(
        RejectCode::AgencyRefused,
        format!("{unit} refused it over the HTTP inbox: {}", req.reason),
    );
    let queue = api.ctx.names.unit_queue(&unit);
    let mut out = AckResult::default();
    for id in req.lease_ids {
        let Some(lease) = api.inbox.take(&unit, &id) else {
            out.unknown.push(id);
            continue;
        };
        if !lease.batch.channel.status().connected() {
            out.expired.push(id);
            continue;
        }
        let env = serde_json::from_slice::<Envelope>(&lease.body).ok();
        let sent = dlc
            .send(lienthong_core::deadletter::DeadLetter {
                body: &lease.body,
                props: &lease.props,
                rejection: &rejection,
                queue: &queue,
                attempts: 1,
                history: &[],
                envelope: env.as_ref(),
            })
            .await;
        if let Err(e) = sent {
            // Not settled: the lease stays, for the reject to be sent again.
            if let Ok(mut map) = api.inbox.leases.lock() {
                map.insert(id, lease);
            }
            return Problem::unavailable_because(
                "the dead letter was not confirmed; the leases not yet settled stay leased",
                5,
                format!("dead letter not confirmed: {e}"),
            )
            .into_response();
        }
        settle(&api, &unit, id, lease, &mut out).await;
    }
    Json(out).into_response()
}
