//! AMQP plumbing on lapin: connecting, publishing with publisher confirms (and `mandatory`,
//! where a `basic.return` is a failure even though a confirm ack follows), message properties.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use lapin::{Confirmation, PublisherConfirm};

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
}

/// Connect to the broker, naming the connection `lienthong/<name>` (the bus names it
/// `lienthong/<prefix>/<component>`) so operators can see it.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("lienthong/{name}")));
    Connection::connect(url, props).await
}

/// A channel in confirm mode. Every publish waits (or is awaited) for its publisher confirm.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
}

/// A publish on the wire whose confirm is still to come.
pub struct Pending {
    confirm: PublisherConfirm,
    timeout: Duration,
}

impl Pending {
    /// Wait for the confirm: Ok only for an ack with no returned message.
    pub async fn wait(self) -> Result<(), PublishError> {
        let ms = self.timeout.as_millis() as u64;
        match tokio::time::timeout(self.timeout, self.confirm).await {
            Err(_) => Err(PublishError::Timeout(ms)),
            Ok(Err(e)) => Err(PublishError::Amqp(e)),
            Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(ret)))) => Err(PublishError::Returned {
                code: ret.reply_code,
                text: ret.reply_text.to_string(),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
        }
    }
}

impl Publisher {
    /// Open a channel on `conn` and put it in confirm mode.
    pub async fn new(
        conn: &Connection,
        confirm_timeout_ms: u64,
    ) -> Result<Publisher, lapin::Error> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            confirm_timeout: Duration::from_millis(confirm_timeout_ms),
        })
    }

    /// The underlying channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Put a message on the wire; the returned [`Pending`] resolves with its confirm.
    pub async fn start(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<Pending, PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory,
                    immediate: false,
                },
                body,
                props,
            )
            .await?;
        Ok(Pending {
            confirm,
            timeout: self.confirm_timeout,
        })
    }

    /// Publish and wait for the confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        self.start(exchange, routing_key, body, props, mandatory)
            .await?
            .wait()
            .await
    }
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
