//! The traffic of the benchmark, the same for every mode: the envelopes (a birth dossier padded
//! to the body size, each with a fresh UUIDv7 `message_id`), the producer (persistent messages,
//! publisher confirms with a window of outstanding confirms, optional pacing, a bound on
//! messages in flight) and the sink (manual acks, a prefetch), which share one book of send
//! instants so that latency = arrival − send in this process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, Connection};
use lienthong_core::envelope::{Envelope, Kind};
use serde_json::{Value, json};

/// Which property of an arriving message names the message the producer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBy {
    /// `message_id` (the message itself arrives, possibly republished).
    MessageId,
    /// `correlation_id` (an answer to the message arrives: the agency's result).
    CorrelationId,
}

/// Text of the padding: Vietnamese, as a centre's officer would write it in the dossier's notes.
const PADDING: &str = "Hồ sơ liên thông đăng ký khai sinh, đăng ký thường trú và cấp thẻ bảo hiểm y tế cho trẻ em dưới sáu tuổi; công dân đã nộp đủ thành phần hồ sơ theo quy định, cán bộ một cửa đã kiểm tra tính hợp lệ của giấy chứng sinh, giấy tờ tùy thân của cha mẹ và nơi cư trú. ";

/// Makes the benchmark's envelopes: one template, serialised once; each message gets a fresh
/// UUIDv7 `message_id` and `correlation_id` and its own dossier code, written into a copy.
pub struct Gen {
    template: Vec<u8>,
    at_message_id: usize,
    at_correlation_id: usize,
    at_seq: usize,
    ma_prefix: String,
    sender: String,
    receiver: String,
    seq: Arc<AtomicU64>,
}

/// One message to send.
pub struct Msg {
    /// The key the sink will find it by.
    pub key: String,
    /// Body (JSON envelope).
    pub body: Vec<u8>,
    /// Properties (as the bus sets them for an envelope).
    pub props: BasicProperties,
}

const MID_MARK: &str = "ffffffff-ffff-7fff-bfff-fffffffff001";
const CID_MARK: &str = "ffffffff-ffff-7fff-bfff-fffffffff002";
const SEQ_DIGITS: usize = 8;

/// A birth dossier (procedure 1.001193) to start from: the first of `samples` (JSON lines)
/// filed by `sender` under that procedure, else any birth dossier there, else a built-in one.
pub fn birth_sample(samples: &str, sender: &str) -> Envelope {
    let parsed: Vec<Envelope> = samples
        .lines()
        .filter_map(|l| serde_json::from_str::<Envelope>(l).ok())
        .filter(|e| e.ma_tthc == "1.001193" && e.kind.as_str() == Kind::FORWARD)
        .collect();
    if let Some(e) = parsed
        .iter()
        .find(|e| e.sender == sender)
        .or(parsed.first())
    {
        return e.clone();
    }
    let mut e = Envelope::new(
        Kind::FORWARD,
        "000.20.59.H48-261129-0001",
        "1.001193",
        sender,
        None,
        "00000000-0000-7000-8000-000000000000",
    );
    e.payload = serde_json::from_value(json!({
        "applicant": {"ho_ten": "Đinh Văn Lực", "ngay_sinh": "1994-05-12", "gioi_tinh": "nam",
                      "so_dinh_danh": "051094000123", "quan_he": "cha",
                      "dia_chi": "thôn Gò Da, xã Sơn Hải, huyện Sơn Hà, tỉnh Quảng Ngãi"},
        "data": {"loai_lien_thong": "khai_sinh_thuong_tru_bhyt",
                 "tre": {"ho_ten": "Đinh Thị Bảo Ngọc", "ngay_sinh": "2026-11-20", "gioi_tinh": "nu",
                         "noi_sinh": "Trung tâm Y tế huyện Sơn Hà", "dan_toc": "Hrê", "quoc_tich": "Việt Nam"},
                 "cha": {"ho_ten": "Đinh Văn Lực", "ngay_sinh": "1994-05-12", "so_dinh_danh": "051094000123"},
                 "me": {"ho_ten": "Phạm Thị Hoa", "ngay_sinh": "1997-02-03", "so_dinh_danh": "051197000456"},
                 "noi_dang_ky_thuong_tru": "thôn Gò Da, xã Sơn Hải, huyện Sơn Hà, tỉnh Quảng Ngãi",
                 "noi_dang_ky_kcb_ban_dau": "Trung tâm Y tế huyện Sơn Hà"}
    }))
    .unwrap_or_default();
    e
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Gen {
    /// Envelopes like `sample`, from `sender` to `receiver`, dossier codes
    /// `<sender>-<yymmdd>-<8 digits>` numbered from `seq`, padded to exactly `body_bytes`.
    pub fn new(
        sample: &Envelope,
        sender: &str,
        receiver: &str,
        body_bytes: usize,
        seq: Arc<AtomicU64>,
    ) -> anyhow::Result<Gen> {
        let mut env = sample.clone();
        let ma_prefix = format!(
            "{sender}-{}-",
            lienthong_core::clock::now_vn().format("%y%m%d")
        );
        env.kind = Kind(Kind::FORWARD.into());
        env.sender = sender.into();
        env.receiver = Some(receiver.into());
        env.status = None;
        env.causation_id = None;
        env.message_id = MID_MARK.into();
        env.correlation_id = CID_MARK.into();
        env.ma_ho_so = format!("{ma_prefix}{}", "9".repeat(SEQ_DIGITS));
        env.sent_at = lienthong_core::clock::now_rfc3339();
        let set_note = |env: &mut Envelope, note: String| {
            env.payload
                .data
                .get_or_insert_with(Default::default)
                .insert("ghi_chu".into(), Value::String(note));
        };
        set_note(&mut env, String::new());
        let base = env.to_bytes().len();
        if body_bytes < base {
            anyhow::bail!(
                "--body-bytes {body_bytes} is smaller than the unpadded envelope ({base} bytes)"
            );
        }
        let want = body_bytes - base;
        let mut note = String::with_capacity(want);
        'fill: while note.len() < want {
            for c in PADDING.chars() {
                if note.len() + c.len_utf8() > want {
                    break 'fill;
                }
                note.push(c);
            }
        }
        while note.len() < want {
            note.push('.');
        }
        set_note(&mut env, note);
        let template = env.to_bytes();
        if template.len() != body_bytes {
            anyhow::bail!(
                "padding missed: {} bytes instead of {body_bytes}",
                template.len()
            );
        }
        let at_message_id = find(
            &template,
            format!("\"message_id\":\"{MID_MARK}\"").as_bytes(),
        )
        .map(|i| i + "\"message_id\":\"".len())
        .context("message_id not found in the template")?;
        let at_correlation_id = find(
            &template,
            format!("\"correlation_id\":\"{CID_MARK}\"").as_bytes(),
        )
        .map(|i| i + "\"correlation_id\":\"".len())
        .context("correlation_id not found in the template")?;
        let at_seq = find(
            &template,
            format!("\"ma_ho_so\":\"{}\"", env.ma_ho_so).as_bytes(),
        )
        .map(|i| i + "\"ma_ho_so\":\"".len() + ma_prefix.len())
        .context("ma_ho_so not found in the template")?;
        Ok(Gen {
            template,
            at_message_id,
            at_correlation_id,
            at_seq,
            ma_prefix,
            sender: sender.into(),
            receiver: receiver.into(),
            seq,
        })
    }

    /// The next message; `key_by` picks the id the sink will see.
    pub fn next(&self, key_by: KeyBy) -> Msg {
        let mid = uuid::Uuid::now_v7().to_string();
        let cid = uuid::Uuid::now_v7().to_string();
        let n = self.seq.fetch_add(1, Ordering::Relaxed) % 10u64.pow(SEQ_DIGITS as u32);
        let digits = format!("{n:0width$}", width = SEQ_DIGITS);
        let mut body = self.template.clone();
        body[self.at_message_id..self.at_message_id + 36].copy_from_slice(mid.as_bytes());
        body[self.at_correlation_id..self.at_correlation_id + 36].copy_from_slice(cid.as_bytes());
        body[self.at_seq..self.at_seq + SEQ_DIGITS].copy_from_slice(digits.as_bytes());
        let ma_ho_so = format!("{}{digits}", self.ma_prefix);
        // The properties `lienthong_core::amqp::envelope_properties` gives an envelope.
        let mut headers = FieldTable::default();
        headers.insert(
            "x-ma-ho-so".into(),
            AMQPValue::LongString(LongString::from(ma_ho_so)),
        );
        headers.insert(
            "x-sender".into(),
            AMQPValue::LongString(LongString::from(self.sender.as_str())),
        );
        headers.insert(
            "x-receiver".into(),
            AMQPValue::LongString(LongString::from(self.receiver.as_str())),
        );
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(mid.as_str().into())
            .with_correlation_id(cid.as_str().into())
            .with_type(Kind::FORWARD.into())
            .with_app_id("lienthong".into())
            .with_timestamp(lienthong_core::clock::now_ms().max(0) as u64 / 1000)
            .with_headers(headers);
        let key = match key_by {
            KeyBy::MessageId => mid,
            KeyBy::CorrelationId => cid,
        };
        Msg { key, body, props }
    }
}

/// The send instants by key, and the counts the producer's flow control reads.
pub struct Book {
    key_by: KeyBy,
    sent: Mutex<HashMap<String, Instant>>,
    /// Messages published so far.
    pub published: AtomicU64,
    /// Distinct messages the sink received so far.
    pub received: AtomicU64,
}

impl Book {
    /// An empty book; the sink finds messages by `key_by`.
    pub fn new(key_by: KeyBy) -> Arc<Book> {
        Arc::new(Book {
            key_by,
            sent: Mutex::new(HashMap::new()),
            published: AtomicU64::new(0),
            received: AtomicU64::new(0),
        })
    }

    fn record_send(&self, key: String, at: Instant) {
        if let Ok(mut m) = self.sent.lock() {
            m.insert(key, at);
        }
    }

    fn take_send(&self, key: &str) -> Option<Instant> {
        self.sent.lock().ok().and_then(|mut m| m.remove(key))
    }

    /// The key of an arriving message.
    fn key_of<'a>(&self, props: &'a BasicProperties) -> Option<&'a str> {
        match self.key_by {
            KeyBy::MessageId => props.message_id().as_ref().map(|s| s.as_str()),
            KeyBy::CorrelationId => props.correlation_id().as_ref().map(|s| s.as_str()),
        }
    }
}

/// Where and how fast the producer sends.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Exchange (`""`: the default exchange, routing key = queue).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Messages to send.
    pub count: u64,
    /// Most publisher confirms outstanding.
    pub window: usize,
    /// Fixed rate, messages per second (None: as fast as the window and flow control allow).
    pub rate: Option<f64>,
    /// Most messages sent and not yet received at the sink.
    pub max_in_flight: u64,
    /// Give up when the sink has received nothing new for this long while the producer waits
    /// on flow control.
    pub stall: Duration,
}

/// What the producer did.
#[derive(Debug, Clone, Copy)]
pub struct Produced {
    /// Instant of the first publish.
    pub first_send: Instant,
}

/// Publish `plan.count` messages of `generator` with publisher confirms, pipelined: up to
/// `plan.window` confirms outstanding. A nack or a returned message is an error.
pub async fn produce(
    conn: &Connection,
    plan: &Plan,
    generator: &Gen,
    key_by: KeyBy,
    book: &Book,
) -> anyhow::Result<Produced> {
    let user_id = lienthong_core::amqp::connection_user(conn);
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut pending: VecDeque<lapin::PublisherConfirm> = VecDeque::with_capacity(plan.window + 1);
    let start = Instant::now();
    let mut first_send = None;
    let settle = |c: lapin::Result<Confirmation>| -> anyhow::Result<()> {
        match c? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(r)) => anyhow::bail!(
                "the broker returned a message: {} {}",
                r.reply_code,
                r.reply_text
            ),
            Confirmation::Nack(_) => anyhow::bail!("the broker nacked a message"),
        }
    };
    for i in 0..plan.count {
        if let Some(rate) = plan.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut last_progress = (book.received.load(Ordering::Relaxed), Instant::now());
        while book.published.load(Ordering::Relaxed)
            >= book.received.load(Ordering::Relaxed) + plan.max_in_flight
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let r = book.received.load(Ordering::Relaxed);
            if r != last_progress.0 {
                last_progress = (r, Instant::now());
            } else if last_progress.1.elapsed() > plan.stall {
                anyhow::bail!(
                    "no message reached the sink for {} s ({} of {} received)",
                    plan.stall.as_secs(),
                    r,
                    plan.count
                );
            }
        }
        let msg = generator.next(key_by);
        let now = Instant::now();
        first_send.get_or_insert(now);
        book.record_send(msg.key, now);
        let confirm = ch
            .basic_publish(
                ShortString::from(plan.exchange.as_str()),
                ShortString::from(plan.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &msg.body,
                // As a unit's software must: the broker user it connected as (the router
                // refuses a message without it, sender-mismatch).
                match &user_id {
                    Some(u) => msg.props.with_user_id(u.as_str().into()),
                    None => msg.props,
                },
            )
            .await?;
        book.published.fetch_add(1, Ordering::Relaxed);
        pending.push_back(confirm);
        while pending.len() >= plan.window {
            if let Some(c) = pending.pop_front() {
                settle(c.await)?;
            }
        }
    }
    while let Some(c) = pending.pop_front() {
        settle(c.await)?;
    }
    let _ = ch.close(200, "producer done".into()).await;
    Ok(Produced {
        first_send: first_send.unwrap_or(start),
    })
}

/// What the sink saw.
#[derive(Debug, Default)]
pub struct Sunk {
    /// End-to-end latency of each distinct message, µs, in the order they arrived.
    pub latencies_us: Vec<u32>,
    /// When each of them arrived, µs since the sink started (beside `latencies_us`).
    pub arrived_us: Vec<u64>,
    /// Distinct messages received.
    pub received: u64,
    /// Deliveries of a message already counted (redeliveries) or of an unknown key.
    pub extra: u64,
    /// Instant of the first and the last distinct arrival.
    pub first_arrival: Option<Instant>,
    /// Instant of the last distinct arrival.
    pub last_arrival: Option<Instant>,
    /// Why the sink stopped before `expect` messages, if it did.
    pub error: Option<String>,
}

/// Consume `queue` with `prefetch` and manual acks until `expect` distinct messages arrived,
/// or nothing arrived for `stall` (then `error` says so), recording each one's latency.
pub async fn sink(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    book: Arc<Book>,
    expect: u64,
    stall: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<Sunk>> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from("lienthong-bench-sink"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))?;
    let queue = queue.to_string();
    Ok(tokio::spawn(async move {
        let mut out = Sunk {
            latencies_us: Vec::with_capacity(expect.min(2_000_000) as usize),
            arrived_us: Vec::with_capacity(expect.min(2_000_000) as usize),
            ..Sunk::default()
        };
        let started = Instant::now();
        while out.received < expect {
            let next = match tokio::time::timeout(stall, consumer.next()).await {
                Err(_) => {
                    out.error = Some(format!(
                        "nothing arrived on {queue} for {} s ({} of {expect} received)",
                        stall.as_secs(),
                        out.received
                    ));
                    break;
                }
                Ok(n) => n,
            };
            let d = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    out.error = Some(format!("the sink's consumer failed: {e}"));
                    break;
                }
                None => {
                    out.error = Some("the sink's consumer was cancelled".into());
                    break;
                }
            };
            let now = Instant::now();
            match book.key_of(&d.properties).and_then(|k| book.take_send(k)) {
                Some(sent) => {
                    let us = now.saturating_duration_since(sent).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                    let at = now.saturating_duration_since(started).as_micros();
                    out.arrived_us.push(u64::try_from(at).unwrap_or(u64::MAX));
                    out.received += 1;
                    book.received.fetch_add(1, Ordering::Relaxed);
                    out.first_arrival.get_or_insert(now);
                    out.last_arrival = Some(now);
                }
                None => out.extra += 1,
            }
            if let Err(e) = d.ack(BasicAckOptions::default()).await {
                out.error = Some(format!("ack failed: {e}"));
                break;
            }
        }
        let _ = ch
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        let _ = ch.close(200, "sink done".into()).await;
        out
    }))
}

/// The lines of a latency log (`--latency-log`): per message, in the order it arrived,
/// `arrival_ms<TAB>latency_ms` (ms with µs precision), the arrival counted from the sink's start.
pub fn latency_log(sunk: &Sunk) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(sunk.latencies_us.len() * 20);
    for (at, lat) in sunk.arrived_us.iter().zip(&sunk.latencies_us) {
        let _ = writeln!(
            out,
            "{:.3}\t{:.3}",
            *at as f64 / 1000.0,
            f64::from(*lat) / 1000.0
        );
    }
    out
}

/// Percentile `p` (0–100) of sorted values, nearest rank.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_the_size_and_fresh_ids() {
        let sample = birth_sample("", "000.20.59.H48");
        let generator = Gen::new(
            &sample,
            "000.20.59.H48",
            "000.10.59.H48",
            5120,
            Arc::new(AtomicU64::new(1)),
        )
        .expect("template");
        let a = generator.next(KeyBy::MessageId);
        let b = generator.next(KeyBy::CorrelationId);
        assert_eq!(a.body.len(), 5120);
        assert_eq!(b.body.len(), 5120);
        let ea: Envelope = serde_json::from_slice(&a.body).expect("json");
        let eb: Envelope = serde_json::from_slice(&b.body).expect("json");
        assert_eq!(ea.message_id, a.key);
        assert_eq!(eb.correlation_id, b.key);
        assert_ne!(ea.message_id, eb.message_id);
        assert_ne!(ea.ma_ho_so, eb.ma_ho_so);
        assert!(ea.ma_ho_so.ends_with("00000001"));
        assert_eq!(ea.receiver.as_deref(), Some("000.10.59.H48"));
        let v = lienthong_core::envelope::EnvelopeValidator::new(&Default::default())
            .expect("validator");
        v.accept(&a.body).expect("a valid envelope");
        assert!(
            Gen::new(
                &sample,
                "000.20.59.H48",
                "000.10.59.H48",
                100,
                Arc::new(AtomicU64::new(1))
            )
            .is_err()
        );
    }

    /// The bench's bodies compress about as the sample dossiers do under the store's own
    /// compression (the birth dossier it starts from carries a base64 attachment, as real
    /// ones do): the figures of a compressing store are not flattered by the padding.
    #[test]
    fn a_padded_body_compresses_about_as_the_sample_dossiers_do() {
        use lienthong_core::store::{BodyCompression, body_codec::encode};
        let samples = include_str!("../../schemas/samples/dossiers.jsonl");
        let kept = |b: &[u8]| encode(b, BodyCompression::Zstd).map_or(b.len(), |(p, _)| p.len());
        let (raw, packed) = samples
            .lines()
            .fold((0, 0), |(r, p), l| (r + l.len(), p + kept(l.as_bytes())));
        let of_samples = raw as f64 / packed as f64;
        let body = Gen::new(
            &birth_sample(samples, "000.20.59.H48"),
            "000.20.59.H48",
            "000.10.59.H48",
            5120,
            Arc::new(AtomicU64::new(1)),
        )
        .expect("template")
        .next(KeyBy::MessageId)
        .body;
        let of_bench = body.len() as f64 / kept(&body) as f64;
        assert!(
            (of_samples * 0.8..=of_samples * 1.25).contains(&of_bench),
            "the bench's body compresses {of_bench:.2}-fold, the samples {of_samples:.2}-fold"
        );
    }

    #[test]
    fn a_latency_log_has_a_line_per_message_in_arrival_order() {
        let sunk = Sunk {
            latencies_us: vec![1500, 25_000],
            arrived_us: vec![2_000, 1_000_250],
            ..Sunk::default()
        };
        assert_eq!(latency_log(&sunk), "2.000\t1.500\n1000.250\t25.000\n");
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
