//! AMQP plumbing on lapin: connecting, publishing with publisher confirms (and `mandatory`,
//! where a `basic.return` is a failure even though a confirm ack follows) on channels that are
//! reopened when the broker closes them, message properties.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};

use crate::health::Health;

/// Publishing failed: the message must be treated as not sent.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed.
    #[error("publish failed: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker returned a `mandatory` message (no queue bound for the routing key).
    #[error("message returned by the broker: {code} {text}")]
    Returned {
        /// AMQP reply code (312 NO_ROUTE).
        code: u16,
        /// Reply text.
        text: String,
    },
    /// The broker nacked the message (it could not store it; e.g. a full queue with reject-publish).
    #[error("message nacked by the broker")]
    Nacked,
    /// No confirm arrived in time.
    #[error("no publisher confirm within {0} ms")]
    Timeout(u64),
    /// A batch this message went out in was not confirmed (the batch's error, as text).
    #[error("batch not confirmed: {0}")]
    Batch(String),
    /// The broker closed the publishing channel (a channel-level error such as `NOT_FOUND - no
    /// exchange …` or `PRECONDITION_FAILED - …`) and it could not be reopened, or re-declaring
    /// the topology failed; the publisher keeps trying in the background (see [`Publisher`]).
    #[error("the channel cannot publish: {0}")]
    Channel(String),
    /// The broker refuses messages this large (`PRECONDITION_FAILED - message size … is larger
    /// than configured max size …`, its `max_message_size`): sending it again cannot help.
    #[error("the broker refuses a message this large: {0}")]
    TooLarge(String),
}

impl PublishError {
    /// The broker's error when it closed the channel for this publish (a soft, channel-level
    /// AMQP error such as 404 NOT_FOUND or 406 PRECONDITION_FAILED), as text.
    fn channel_error(&self) -> Option<String> {
        match self {
            PublishError::Amqp(e) => match e.kind() {
                lapin::ErrorKind::ProtocolError(a)
                    if matches!(a.kind(), lapin::protocol::AMQPErrorKind::Soft(_)) =>
                {
                    Some(a.get_message().to_string())
                }
                lapin::ErrorKind::InvalidChannelState(..) | lapin::ErrorKind::InvalidChannel(_) => {
                    Some(e.to_string())
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// The broker's limit in a "message size N is larger than configured max size M" refusal, bytes.
fn max_size_in(why: &str) -> Option<u64> {
    let rest = &why[why.find("configured max size ")? + "configured max size ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Now, s since the epoch.
fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Connect to the broker, naming the connection `lienthong/<name>` (the bus names it
/// `lienthong/<prefix>/<component>`) so operators can see it.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    connect_with(url, name, &lapin::tcp::OwnedTLSConfig::default()).await
}

/// [`connect`] with the TLS settings of an `amqps://` URL ([`tls_config`]).
pub async fn connect_with(
    url: &str,
    name: &str,
    tls: &lapin::tcp::OwnedTLSConfig,
) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("lienthong/{name}")));
    Connection::connect_with_config(url, props, tls.clone(), lapin::runtime::default_runtime()?)
        .await
}

/// The TLS settings of the broker link from `[bus]`: the CA bundle (`tls_ca`, PEM) trusted for
/// the broker's certificate, and the client certificate and key (`tls_client_cert`,
/// `tls_client_key`, PEM) when the broker asks for one. Errors name the file that cannot be
/// read.
pub fn tls_config(
    bus: &crate::registry::BusSettings,
) -> Result<lapin::tcp::OwnedTLSConfig, String> {
    let read = |what: &str, p: &str| {
        std::fs::read(p).map_err(|e| format!("[bus] {what} {p}: {}", e.kind()))
    };
    let cert_chain = match &bus.tls_ca {
        Some(p) => Some(
            String::from_utf8(read("tls_ca", p)?)
                .map_err(|_| format!("[bus] tls_ca {p}: not a PEM text file"))?,
        ),
        None => None,
    };
    let identity = match (&bus.tls_client_cert, &bus.tls_client_key) {
        (Some(c), Some(k)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
            pem: read("tls_client_cert", c)?,
            key: read("tls_client_key", k)?,
        }),
        (None, None) => None,
        _ => {
            return Err(
                "[bus] tls_client_cert and tls_client_key go together: set both or neither".into(),
            );
        }
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// [`connect`], retrying with exponential backoff (200 ms up to 3 s, 15 times: about 30 s in
/// all) while the broker may still be starting; the error names the URL without its password.
pub async fn connect_patiently(
    url: &str,
    name: &str,
    tls: &lapin::tcp::OwnedTLSConfig,
) -> Result<Connection, ConnectError> {
    connect_any_patiently(&[url.to_string()], name, tls).await
}

/// Connect to the first of `urls` (the nodes of a cluster, in order) that lets the bus in.
/// Errors: the last node's error (each failure is logged with its node).
pub async fn connect_any(
    urls: &[String],
    name: &str,
    tls: &lapin::tcp::OwnedTLSConfig,
) -> Result<Connection, lapin::Error> {
    let mut last = None;
    for (i, url) in urls.iter().enumerate() {
        match connect_with(url, name, tls).await {
            Ok(c) => {
                if i > 0 {
                    tracing::info!(message = "connected to another node of the broker's cluster", node = %redact(url), name);
                }
                return Ok(c);
            }
            Err(e) => {
                if urls.len() > 1 {
                    tracing::warn!(message = "broker node not reachable; trying the next", node = %redact(url), error = %e);
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(
            std::io::Error::other("no broker URL"),
        )))
    }))
}

/// [`connect_any`], retrying the whole list as [`connect_patiently`] retries one URL.
pub async fn connect_any_patiently(
    urls: &[String],
    name: &str,
    tls: &lapin::tcp::OwnedTLSConfig,
) -> Result<Connection, ConnectError> {
    use backon::{ExponentialBuilder, Retryable};
    (|| async { connect_any(urls, name, tls).await })
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(3))
                .with_max_times(15),
        )
        .sleep(tokio::time::sleep)
        .notify(|e, d| {
            tracing::warn!(message = "broker not reachable yet", error = %e, retry_in_ms = d.as_millis() as u64)
        })
        .await
        .map_err(|source| ConnectError {
            url: urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(", "),
            source,
        })
}

/// The broker stayed unreachable through [`connect_patiently`]'s retries.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the broker at {url}: {source}")]
pub struct ConnectError {
    /// The AMQP URL, password removed ([`redact`]).
    pub url: String,
    /// The last attempt's error.
    #[source]
    pub source: lapin::Error,
}

/// The broker user a connection authenticated as (from its URI; `None` when the URI names
/// none, as with EXTERNAL authentication by client certificate, where the broker takes the
/// user from the certificate).
pub fn connection_user(conn: &Connection) -> Option<String> {
    let u = conn.status().username();
    (!u.is_empty()).then_some(u)
}

/// The AMQP URL without its password: `amqp://user:secret@host/vhost` → `amqp://***@host/vhost`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Re-declares what a publisher publishes to (the bus passes "declare the whole topology") on
/// the publisher's connection. Errors: the declaration's error, as text.
pub type Redeclare = Arc<
    dyn Fn(Arc<Connection>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// Who a [`Publisher`] reports to: the process's [`Health`] under `component` / `channel`, and
/// the counter `lienthong_channel_recoveries_total{component, channel}`.
#[derive(Clone)]
pub struct Supervision {
    /// The process's broker health (`/readyz`).
    pub health: Health,
    /// The supervised component (`router`, `adapters`, `http`, `tracer`).
    pub component: String,
    /// What the channel publishes (`deliver`, `dead letters`, `ingress`, `retry CA.H48`, …).
    pub channel: String,
    /// How to re-declare the topology (after a channel was closed for a missing exchange, or a
    /// `mandatory` message was returned for a missing queue).
    pub redeclare: Option<Redeclare>,
    /// The process's stop signal: no background repair (which re-declares the topology) runs
    /// once it is true.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

/// A publishing channel in confirm mode that survives channel-level errors. Every publish waits
/// (or is awaited) for its publisher confirm.
///
/// The broker closes a *channel*, not the connection, for errors such as publishing to an
/// exchange that does not exist (404 NOT_FOUND) or a precondition failure (406); lapin then
/// refuses every later publish on it. A `Publisher` notices, opens a new channel on the same
/// connection (re-declaring the topology first when it has a [`Redeclare`]), and retries the
/// publish (at most [`Publisher::ATTEMPTS`] times; the message keeps its message id, so a copy
/// the broker did take is deduplicated downstream). While it cannot, it reports the channel
/// failing in [`Health`] with the broker's error and a background task keeps repairing it with
/// backoff (200 ms doubling to 10 s), so `/readyz` turns ready again on its own once the cause
/// is removed. A lost *connection* is not repaired here: the component's supervisor reconnects.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Arc<Connection>,
    /// The connection's broker user, stamped as `user_id` on every publish (RabbitMQ refuses a
    /// `user_id` that differs from the connection's user, so the router can trust it).
    user_id: Option<ShortString>,
    channel: std::sync::Mutex<Channel>,
    confirm_timeout: Duration,
    supervision: Option<Supervision>,
    repair: tokio::sync::Mutex<RepairState>,
    healing: std::sync::atomic::AtomicBool,
    /// The broker's `max_message_size` as its last refusal named it, bytes (0: none seen), and
    /// when (s since the epoch): a larger message is refused here for [`LEARNED_MAX_SECS`]
    /// instead of being sent, because the broker answers it by closing the channel that every
    /// other publish of this publisher shares.
    max_size: std::sync::atomic::AtomicU64,
    max_size_at: std::sync::atomic::AtomicU64,
    /// Held while a publish takes its delivery tag and puts its frames on the channel's queue
    /// ([`in_wire_order`]), so that the tags lapin gives out follow the order of the frames.
    wire_order: std::sync::Mutex<()>,
}

/// Run a `basic_publish` future with `lock` held during its first poll.
///
/// The broker numbers a channel's publishes in the order their frames arrive, and its acks and
/// nacks carry only that number. lapin (4.12) takes the publish's delivery tag and then, in a
/// second step, queues its frames; two tasks publishing on one channel at once can queue their
/// frames in the other order than their tags, and each then gets the other's answer: a message
/// the broker refused (a full queue's `reject-publish`, a nack) reads as confirmed, and is lost.
/// Both steps happen in the future's first poll (nothing is awaited before the frames are
/// queued), so holding a lock across that poll keeps every publisher of the channel in order.
/// `tests/publisher_confirms.rs` fails without it.
async fn in_wire_order<F: std::future::Future>(
    lock: &std::sync::Mutex<()>,
    publish: F,
) -> F::Output {
    let mut publish = std::pin::pin!(publish);
    let mut first = true;
    std::future::poll_fn(|cx| {
        if std::mem::take(&mut first) {
            let _order = lock.lock().unwrap_or_else(|e| e.into_inner());
            publish.as_mut().poll(cx)
        } else {
            publish.as_mut().poll(cx)
        }
    })
    .await
}

/// How long a broker's `max_message_size` learned from a refusal is applied before the broker
/// is asked again (it may have been raised), s.
const LEARNED_MAX_SECS: u64 = 600;

/// The state of repairs: the last failure and when to try again.
#[derive(Default)]
struct RepairState {
    /// Set while broken: what broke it first, the latest repair's error, and when to try again.
    broken: Option<Broken>,
    /// The next wait after a failed repair.
    backoff: Duration,
}

/// A publisher that could not be repaired yet.
struct Broken {
    /// What broke it (the broker's error that closed the channel, or a returned message).
    cause: Option<String>,
    /// Why the latest repair failed.
    last: String,
    /// No repair before this.
    not_before: tokio::time::Instant,
}

impl Broken {
    /// "cause; latest repair error", clipped: the same length however long it stays broken.
    fn why(&self) -> String {
        let text = match &self.cause {
            Some(c) => format!("{c}; {}", self.last),
            None => self.last.clone(),
        };
        match text.char_indices().nth(1000) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None => text,
        }
    }
}

const REPAIR_MIN: Duration = Duration::from_millis(200);
const REPAIR_MAX: Duration = Duration::from_secs(10);

/// A publish on the wire whose confirm is still to come.
pub struct Pending {
    confirm: PublisherConfirm,
    timeout: Duration,
    /// The message's `message_id` property, if it has one.
    message_id: Option<ShortString>,
    /// The publisher it went out on (a return that belongs to another message is published
    /// again through it).
    publisher: Publisher,
}

impl Pending {
    /// Wait for the confirm: Ok only for an ack with no returned message of its own.
    ///
    /// A `basic.return` carries no delivery tag: lapin hands a returned message to the first
    /// confirm it completes after the return arrived, which, when the broker acks several
    /// publishes at once (`multiple`), may be another publish's. The return's `message_id`
    /// tells whose it is. A return of another message means this one was routed; the other
    /// message's own confirm then reads as a plain ack, so it is published again here, as its
    /// own publisher would have done ([`Publisher::publish_returned`]).
    pub async fn wait(self) -> Result<(), PublishError> {
        let Pending {
            confirm,
            timeout,
            message_id,
            publisher,
        } = self;
        let own_return = |ret| own_return(message_id.as_ref(), &publisher, ret);
        let ms = timeout.as_millis() as u64;
        match tokio::time::timeout(timeout, confirm).await {
            Err(_) => Err(PublishError::Timeout(ms)),
            Ok(Err(e)) => Err(PublishError::Amqp(e)),
            Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(ret)))) => match own_return(ret) {
                Some(ret) => Err(PublishError::Returned {
                    code: ret.reply_code,
                    text: ret.reply_text.to_string(),
                }),
                None => Ok(()),
            },
            // A nack can carry another message's return too: that one must not be dropped.
            Ok(Ok(Confirmation::Nack(ret))) => {
                if let Some(ret) = ret {
                    own_return(ret);
                }
                Err(PublishError::Nacked)
            }
        }
    }
}

/// `ret` if it is the return of the message `mine` (or either has no `message_id`); another
/// message's return is handed to [`Publisher::publish_returned`] and `None` is returned.
fn own_return(
    mine: Option<&ShortString>,
    publisher: &Publisher,
    ret: lapin::message::BasicReturnMessage,
) -> Option<lapin::message::BasicReturnMessage> {
    match (mine, ret.delivery.properties.message_id()) {
        (Some(mine), Some(theirs)) if mine != theirs => {
            publisher.publish_returned(ret);
            None
        }
        _ => Some(ret),
    }
}

/// The header that counts how often a returned message was published again on another
/// publish's behalf ([`Publisher::publish_returned`]); it gives up after [`REPUBLISH_MAX`].
const REPUBLISHED_HEADER: &str = "x-lienthong-republished";

/// At most this many republishes of one returned message on another's behalf.
const REPUBLISH_MAX: i64 = 3;

impl Publisher {
    /// Attempts of one [`Publisher::publish`] when the broker closes the channel under it.
    pub const ATTEMPTS: u32 = 3;

    /// Open a channel on `conn` and put it in confirm mode; no health reporting and no
    /// re-declaration (tools, tests).
    pub async fn new(
        conn: &Arc<Connection>,
        confirm_timeout_ms: u64,
    ) -> Result<Publisher, lapin::Error> {
        Self::open(conn, confirm_timeout_ms, None).await
    }

    /// [`Publisher::new`], reporting to `supervision` and re-declaring with its [`Redeclare`].
    pub async fn supervised(
        conn: &Arc<Connection>,
        confirm_timeout_ms: u64,
        supervision: Supervision,
    ) -> Result<Publisher, lapin::Error> {
        Self::open(conn, confirm_timeout_ms, Some(supervision)).await
    }

    async fn open(
        conn: &Arc<Connection>,
        confirm_timeout_ms: u64,
        supervision: Option<Supervision>,
    ) -> Result<Publisher, lapin::Error> {
        let channel = confirm_channel(conn).await?;
        Ok(Publisher {
            inner: Arc::new(Inner {
                user_id: connection_user(conn).map(ShortString::from),
                conn: conn.clone(),
                channel: std::sync::Mutex::new(channel),
                confirm_timeout: Duration::from_millis(confirm_timeout_ms),
                supervision,
                repair: tokio::sync::Mutex::new(RepairState::default()),
                healing: std::sync::atomic::AtomicBool::new(false),
                max_size: std::sync::atomic::AtomicU64::new(0),
                max_size_at: std::sync::atomic::AtomicU64::new(0),
                wire_order: std::sync::Mutex::new(()),
            }),
        })
    }

    /// The channel publishes go out on now (a new one after each repair).
    pub fn channel(&self) -> Channel {
        match self.inner.channel.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The broker user this publisher's connection authenticated as (stamped as `user_id` on
    /// every message it publishes); `None` when the broker did not say.
    pub fn user(&self) -> Option<&str> {
        self.inner.user_id.as_ref().map(|u| u.as_str())
    }

    /// The connection this publisher's channels are opened on.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.inner.conn
    }

    /// A working channel: the current one, or a repaired one if the broker closed it.
    async fn ready_channel(&self) -> Result<Channel, PublishError> {
        let ch = self.channel();
        if ch.status().connected() {
            return Ok(ch);
        }
        self.repair(None, false).await?;
        Ok(self.channel())
    }

    /// Put a message on the wire; the returned [`Pending`] resolves with its confirm. A channel
    /// the broker closed is reopened first (see [`Publisher`]).
    pub async fn start(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<Pending, PublishError> {
        if let Some(why) = self.known_too_large(body.len()) {
            return Err(PublishError::TooLarge(why));
        }
        // Whatever `user_id` the properties carry (a consumed message's, say), the broker
        // accepts only this connection's own.
        let props = match &self.inner.user_id {
            Some(u) => props.with_user_id(u.clone()),
            None => props,
        };
        // The current span (routing, a delivery…) goes along as the message's trace context.
        let props = if crate::telemetry::enabled() {
            let mut h = props.headers().clone().unwrap_or_default();
            crate::telemetry::inject_amqp(&mut h);
            props.with_headers(h)
        } else {
            props
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let ch = self.ready_channel().await?;
            let publish = ch.basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory,
                    immediate: false,
                },
                body,
                props.clone(),
            );
            let r = in_wire_order(&self.inner.wire_order, publish).await;
            match r {
                Ok(confirm) => {
                    return Ok(Pending {
                        confirm,
                        timeout: self.inner.confirm_timeout,
                        message_id: props.message_id().clone(),
                        publisher: self.clone(),
                    });
                }
                Err(e) => {
                    let e = PublishError::Amqp(e);
                    if tries < Self::ATTEMPTS
                        && let Some(why) = e.channel_error()
                        && self.inner.conn.status().connected()
                    {
                        self.note_closed(&why).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Publish again, in a task of its own, a message the broker returned (no queue took it)
    /// whose return lapin handed to another publish's confirm ([`Pending::wait`]): its own
    /// publish has already been reported as confirmed, so this does what its publisher would
    /// have done, [`Publisher::publish`] (re-declare the topology, publish once more), at most
    /// [`REPUBLISH_MAX`] times for one message (header `x-lienthong-republished`). Counted in
    /// `lienthong_publish_returns_republished_total{outcome}` (`published`, `failed`,
    /// `given_up`); a message that is returned again, cannot be published or is given up is
    /// logged as an error with its message id (it is in the message store: `lienthong messages
    /// resend`). Its own publish was already reported as confirmed, so its caller's handling of
    /// a failure (dead letter, parking) does not run for it.
    fn publish_returned(&self, ret: lapin::message::BasicReturnMessage) {
        let publisher = self.clone();
        tokio::spawn(async move {
            let d = ret.delivery;
            let id = message_id_of(&d.properties);
            tracing::warn!(
                message = "a returned message's return came with another publish's confirm; publishing it again",
                message_id = %id,
                exchange = %d.exchange,
                routing_key = %d.routing_key,
                broker = %format!("{} {}", ret.reply_code, ret.reply_text),
            );
            // Its return may again come with another publish's confirm: a bounded number of
            // times, then it is left to `messages resend`.
            let hops = header_i64(&d.properties, REPUBLISHED_HEADER).unwrap_or(0);
            if hops >= REPUBLISH_MAX {
                metrics::counter!("lienthong_publish_returns_republished_total", "outcome" => "given_up")
                    .increment(1);
                tracing::error!(
                    message = "a returned message was published again too often on other publishes' behalf; not again",
                    message_id = %id,
                    exchange = %d.exchange,
                    routing_key = %d.routing_key,
                );
                return;
            }
            let mut headers = d.properties.headers().clone().unwrap_or_default();
            headers.insert(REPUBLISHED_HEADER.into(), AMQPValue::LongLongInt(hops + 1));
            let props = d.properties.clone().with_headers(headers);
            let r = publisher
                .publish(
                    d.exchange.as_str(),
                    d.routing_key.as_str(),
                    &d.data,
                    props,
                    true,
                )
                .await;
            let outcome = if r.is_ok() { "published" } else { "failed" };
            metrics::counter!("lienthong_publish_returns_republished_total", "outcome" => outcome)
                .increment(1);
            if let Err(e) = r {
                tracing::error!(
                    message = "a returned message could not be published again",
                    message_id = %id,
                    exchange = %d.exchange,
                    routing_key = %d.routing_key,
                    error = %e,
                );
            }
        });
    }

    /// Publish and wait for the confirm. A channel the broker closes under the publish is
    /// reopened and the publish retried (same body and properties); a `mandatory` message the
    /// broker returns (its queue is missing) is published once more after re-declaring the
    /// topology, when this publisher has a [`Redeclare`].
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let mut tries = 0;
        let mut redeclared = false;
        loop {
            tries += 1;
            let r = self
                .start(exchange, routing_key, body, props.clone(), mandatory)
                .await?
                .wait()
                .await;
            let Err(e) = r else {
                return Ok(());
            };
            if let PublishError::Returned { code, text } = &e {
                tracing::warn!(
                    message = "the broker returned a message (no queue took it)",
                    message_id = props.message_id().as_ref().map(|m| m.as_str()).unwrap_or("-"),
                    ma_ho_so = header_str(&props, "x-ma-ho-so").as_deref().unwrap_or("-"),
                    exchange,
                    routing_key,
                    reply = %format!("{code} {text}")
                );
                if !redeclared && self.redeclare_hook().is_some() {
                    redeclared = true;
                    self.repair(
                        Some(format!("{code} {text} for {exchange}/{routing_key}")),
                        true,
                    )
                    .await?;
                    continue;
                }
                return Err(e);
            }
            let Some(why) = e.channel_error() else {
                return Err(e);
            };
            if why.contains("larger than configured max size")
                && max_size_in(&why).is_none_or(|max| body.len() as u64 > max)
            {
                // The broker closed the channel for this message's size: reopen for the others,
                // and fail this one for good. (Another message on the same channel that was
                // too large closes it under this one too: that one is tried again below.)
                if let Some(max) = max_size_in(&why) {
                    use std::sync::atomic::Ordering::Relaxed;
                    self.inner.max_size.store(max, Relaxed);
                    self.inner.max_size_at.store(epoch_secs(), Relaxed);
                }
                self.note_closed(&why).await;
                return Err(PublishError::TooLarge(why));
            }
            if tries >= Self::ATTEMPTS || !self.inner.conn.status().connected() {
                self.note_closed(&why).await;
                return Err(PublishError::Channel(why));
            }
            self.note_closed(&why).await;
        }
    }

    /// Why a message of `len` bytes is refused without sending it: the broker refused a smaller
    /// one as too large within the last [`LEARNED_MAX_SECS`].
    fn known_too_large(&self, len: usize) -> Option<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let max = self.inner.max_size.load(Relaxed);
        (max > 0
            && len as u64 > max
            && epoch_secs().saturating_sub(self.inner.max_size_at.load(Relaxed))
                < LEARNED_MAX_SECS)
            .then(|| {
                format!(
                    "message size {len} is larger than the broker's configured max size {max} (as it said when it refused a message; not sent)"
                )
            })
    }

    fn redeclare_hook(&self) -> Option<&Redeclare> {
        self.inner.supervision.as_ref()?.redeclare.as_ref()
    }

    /// The broker closed the channel (`why`): repair it now, and keep repairing in the
    /// background if that fails.
    async fn note_closed(&self, why: &str) {
        tracing::warn!(
            message = "the broker closed a publishing channel; reopening it",
            component = self.component(),
            channel = self.channel_name(),
            error = why
        );
        let _ = self.repair(Some(why.to_string()), false).await;
    }

    fn component(&self) -> &str {
        self.inner
            .supervision
            .as_ref()
            .map(|s| s.component.as_str())
            .unwrap_or("-")
    }

    fn channel_name(&self) -> &str {
        self.inner
            .supervision
            .as_ref()
            .map(|s| s.channel.as_str())
            .unwrap_or("-")
    }

    /// Reopen the channel if the broker closed it, and re-declare the topology (when the
    /// channel was reopened, or `redeclare` asks for it) — unless a failed repair's backoff has
    /// not run out, in which case its error is returned at once. `cause` is what broke it.
    async fn repair(&self, cause: Option<String>, redeclare: bool) -> Result<(), PublishError> {
        let mut st = self.inner.repair.lock().await;
        let closed = !self.channel().status().connected();
        if !closed && !redeclare {
            return Ok(());
        }
        if !self.inner.conn.status().connected() {
            return Err(PublishError::Channel(
                "the broker connection is lost; the component reconnects".into(),
            ));
        }
        if let Some(b) = &st.broken
            && tokio::time::Instant::now() < b.not_before
        {
            return Err(PublishError::Channel(b.why()));
        }
        // The first cause is kept while it stays broken (not every repair's error in turn).
        let cause = match &st.broken {
            Some(b) => b.cause.clone().or(cause),
            None => cause,
        };
        let attempt = async {
            if closed {
                let ch = confirm_channel(&self.inner.conn)
                    .await
                    .map_err(|e| format!("reopening the channel: {e}"))?;
                if let Ok(mut c) = self.inner.channel.lock() {
                    *c = ch;
                }
            }
            if let Some(re) = self.redeclare_hook() {
                re(self.inner.conn.clone())
                    .await
                    .map_err(|e| format!("re-declaring the topology: {e}"))?;
            }
            Ok::<(), String>(())
        };
        match attempt.await {
            Ok(()) => {
                let was_broken = st.broken.take().is_some();
                st.backoff = Duration::ZERO;
                if closed || was_broken {
                    tracing::info!(
                        message = "publishing channel repaired",
                        component = self.component(),
                        channel = self.channel_name(),
                        cause = cause.as_deref().unwrap_or("-")
                    );
                }
                if let Some(s) = &self.inner.supervision {
                    if closed {
                        metrics::counter!("lienthong_channel_recoveries_total", "component" => s.component.clone(), "channel" => s.channel.clone()).increment(1);
                    }
                    s.health.channel_ok(&s.component, &s.channel);
                }
                Ok(())
            }
            Err(e) => {
                let first = st.broken.is_none();
                st.backoff = (st.backoff * 2).clamp(REPAIR_MIN, REPAIR_MAX);
                let b = Broken {
                    cause,
                    last: e,
                    not_before: tokio::time::Instant::now() + st.backoff,
                };
                let why = b.why();
                st.broken = Some(b);
                if first || st.backoff >= REPAIR_MAX {
                    // Once when it breaks, then at most every REPAIR_MAX.
                    tracing::warn!(
                        message = "cannot repair a publishing channel; retrying in the background",
                        component = self.component(),
                        channel = self.channel_name(),
                        error = why,
                        retry_in_ms = st.backoff.as_millis() as u64
                    );
                }
                if let Some(s) = &self.inner.supervision {
                    s.health.channel_failed(&s.component, &s.channel, &why);
                }
                drop(st);
                self.heal_in_background();
                Err(PublishError::Channel(why))
            }
        }
    }

    /// Keep repairing until it works or the connection is gone (then the supervisor takes over),
    /// so that health recovers without traffic. One such task per publisher at a time.
    fn heal_in_background(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.healing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let p = Publisher { inner };
                let wait = {
                    let st = p.inner.repair.lock().await;
                    match &st.broken {
                        None => {
                            p.inner.healing.store(false, Ordering::Release);
                            return;
                        }
                        Some(b) => b
                            .not_before
                            .saturating_duration_since(tokio::time::Instant::now()),
                    }
                };
                let stopping = p
                    .inner
                    .supervision
                    .as_ref()
                    .and_then(|s| s.shutdown.as_ref())
                    .is_some_and(|s| *s.borrow());
                if stopping || !p.inner.conn.status().connected() {
                    p.inner.healing.store(false, Ordering::Release);
                    return;
                }
                drop(p);
                tokio::time::sleep(wait).await;
                let Some(inner) = weak.upgrade() else { return };
                let p = Publisher { inner };
                let _ = p.repair(None, true).await;
            }
        });
    }
}

/// A new channel on `conn` in confirm mode.
async fn confirm_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Properties of an envelope message: JSON, persistent (delivery mode 2), message id, kind as
/// AMQP `type`, app id `lienthong`, and headers `x-ma-ho-so`, `x-sender`, `x-receiver`.
pub fn envelope_properties(env: &crate::Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-ma-ho-so".into(),
        AMQPValue::LongString(LongString::from(env.ma_ho_so.clone())),
    );
    headers.insert(
        "x-sender".into(),
        AMQPValue::LongString(LongString::from(env.sender.clone())),
    );
    if let Some(r) = &env.receiver {
        headers.insert(
            "x-receiver".into(),
            AMQPValue::LongString(LongString::from(r.clone())),
        );
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(env.message_id.clone().into())
        .with_correlation_id(env.correlation_id.clone().into())
        .with_type(env.kind.as_str().into())
        .with_app_id("lienthong".into())
        .with_timestamp(crate::clock::now_ms().max(0) as u64 / 1000)
        .with_headers(headers)
}

/// Read a string header (long or short string) from AMQP properties.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The `message_id` property, or "" when the message has none.
pub fn message_id_of(props: &BasicProperties) -> String {
    props
        .message_id()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default()
}

/// Read an integer header from AMQP properties.
pub fn header_i64(props: &BasicProperties, name: &str) -> Option<i64> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

impl Publisher {
    /// Publish `body` (the envelope `env`) to `receiver`'s queue through the deliver exchange
    /// (`Names::deliver_exchange`; routing key = the unit's code), `mandatory`, with [`envelope_properties`], and wait for
    /// the publisher confirm. `Returned` when no queue took it even after the publisher
    /// re-declared the topology (a unit queue deleted by hand is declared again).
    pub async fn publish_to_unit(
        &self,
        deliver_exchange: &str,
        receiver: &str,
        body: &[u8],
        env: &crate::Envelope,
    ) -> Result<(), PublishError> {
        self.publish(
            deliver_exchange,
            receiver,
            body,
            envelope_properties(env),
            true,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_brokers_size_limit_is_read_from_its_refusal() {
        assert_eq!(
            super::max_size_in(
                "PRECONDITION_FAILED - message size 241136 is larger than configured max size 200000"
            ),
            Some(200_000)
        );
        assert_eq!(super::max_size_in("NOT_FOUND - no exchange"), None);
    }
}
