//! The mock agencies (`lienthong-mock`, and in process for the tests): the reference interfaces
//! of `schemas/agencies/` (Police and Customs REST/JSON; Social Insurance and Tax XML;
//! departments' edXML document systems, push; the Đức Phổ civil-status software; TP Quảng
//! Ngãi's civil-status software behind SOAP 1.1, in [`civil_status_soap`]; the DVCQG portal), served on loopback for the demo, the bench and the tests. Every request is validated against those schema files (JSON Schema, XSD via
//! libxml2), never against the adapters' Rust types. Calls (requests) and effects (dossiers
//! actually registered) are counted separately, so tests can prove "delivered exactly once".
//! Latency, 503s and refusals are configurable; `/_mock/faults` scripts answers per dossier.
//!
//! **Scripted decisions.** `POST /_mock/decisions` with [`Decision`] as JSON, `{"agency": …,
//! "ma_ho_so": …, "status": 3 | 5 | 6 | 9, "delay_ms": …, "reason": …}`, fixes how that agency
//! decides that dossier, instead of at random (`refusal_rate`): whenever the dossier is
//! submitted with a new idempotency key (a replay keeps its first answer), the callback carries
//! that decision, `reason` as its reason or text, after `delay_ms` (instead of
//! `callback_delay_ms`). It holds until replaced by another decision for the same agency and
//! dossier or cleared by `/_mock/reset`; it applies to submits, not to Tax's payment
//! confirmations. What each interface can express ([`Decision::check`]; anything else is
//! answered 400 with the reason): Police, Social Insurance, Customs, edXML departments and the
//! civil-status software decide 3 (refused) or 9 (processed); Tax answers a form with 6 (a
//! payment notice, `ThongBaoNopTien`) or 5 (a request for more data, `YeuCauBoSung`) and has no
//! refusal; DVCQG decides nothing. A cancel (`…/huy`, or an edXML recall package, status 13) of a
//! dossier whose callback is still pending stops that callback: a cancelled dossier gets no
//! later result. Every cancel is counted in the stats (`cancels`).
//!
//! **Tax payment confirmation.** `POST /tax/api/nop-tien` (`XacNhanNopTien`, validated against
//! the Tax XSD, idempotent as the form) is accepted only for a `SoThongBao` the mock issued for
//! that `MaHoSo` (else `BienNhan` `LOI` `E_KHONG_TIM_THAY`); after the callback delay the mock
//! posts `HoanThanhNghiaVu` and holds the dossier at status 9.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lienthong_core::registry::{MockSettings, Reach, Settings};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod civil_status_soap;

const POLICE_SUBMIT: &str =
    include_str!("../../schemas/agencies/police-residence/submit.schema.json");
const POLICE_CANCEL: &str =
    include_str!("../../schemas/agencies/police-residence/cancel.schema.json");
const CUSTOMS_SUBMIT: &str = include_str!("../../schemas/agencies/customs/submit.schema.json");
const CIVIL_SUBMIT: &str = include_str!("../../schemas/agencies/civil-status/submit.schema.json");
const BHXH_XSD: &str = include_str!("../../schemas/agencies/bhxh/bhxh.xsd");
const TAX_XSD: &str = include_str!("../../schemas/agencies/tax-land/tax-land.xsd");
const TAX_NS: &str = lienthong_adapters::tax_xml::NS;
const BHXH_NS: &str = "urn:lienthong:agency:bhxh:1";

/// The modelled agencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agency {
    /// Police residence registration (REST/JSON).
    Police,
    /// Social Insurance (XML).
    Bhxh,
    /// A department's document system taking edXML packages (push), `/edxml/<unit code>`.
    Edxml,
    /// Tax: the land information-transfer form (XML), `/tax`.
    Tax,
    /// The National Public Service Portal's sync service (DVCQG), `/dvcqg`.
    Dvcqg,
    /// Customs (REST/JSON, synthetic procedure), `/customs`.
    Customs,
    /// A civil-status office's software, connected by the config-only `mapped` adapter,
    /// `/civil-status/<unit code>`.
    CivilStatus,
    /// A civil-status office's software behind a SOAP 1.1 service, connected by the `mapped`
    /// adapter with `soap`, `/civil-status-soap/<unit code>/HoTichService`.
    CivilStatusSoap,
}

/// A scripted answer: the next matching request gets this status (and Retry-After, seconds).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Fault {
    /// Which agency.
    pub agency: Agency,
    /// Only requests for this dossier (any dossier when absent).
    #[serde(default)]
    pub ma_ho_so: Option<String>,
    /// Statuses to answer, in order (e.g. `[503, 503]`, or `[400]`). A 2xx is a refusal in a
    /// readable body of the interface's format (Police, Customs: `{MaLoi, MoTaLoi}`; BHXH,
    /// Tax: `BienNhan` `LOI`; DVCQG and the civil-status software: `error_code` "99"; edXML:
    /// a status package 02; the SOAP civil-status software: a Client fault, and a Server
    /// fault with a 5xx), never an unreadable page. Codes below 100 are behaviours, not
    /// statuses: [`COMMIT_TRUNCATED`], [`COMMIT_SLOW`] and [`ERROR_IN_200`]; for the SOAP
    /// software also [`SOAP_CLIENT_FAULT`], [`SOAP_SERVER_FAULT`], [`SOAP_BUSY_FAULT`] and
    /// [`GARBAGE`].
    pub responses: Vec<u16>,
    /// Retry-After seconds to send with 503/429 answers.
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    /// Send Retry-After as an HTTP date (now + `retry_after_s`) instead of seconds.
    #[serde(default)]
    pub retry_after_as_date: bool,
}

/// A scripted decision (`POST /_mock/decisions`): how `agency` decides dossier `ma_ho_so`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Decision {
    /// Which agency.
    pub agency: Agency,
    /// The dossier (`MaHoSo`).
    pub ma_ho_so: String,
    /// TrangThaiHoSo of the decision: 3 refused, 5 more data requested, 6 financial
    /// obligation (a payment notice), 9 processed; see [`Decision::check`].
    pub status: u8,
    /// Callback delay for this dossier, ms (instead of `callback_delay_ms`).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// The refusal's reason, or the text of a request for more data or of a notice.
    #[serde(default)]
    pub reason: Option<String>,
}

impl Decision {
    /// Whether the agency's interface can express the decision. Err says why not.
    pub fn check(&self) -> Result<(), String> {
        if self.ma_ho_so.is_empty() {
            return Err("ma_ho_so is empty".into());
        }
        if self.reason.as_deref() == Some("") {
            return Err("reason is empty (leave it out for the mock's text)".into());
        }
        match (self.agency, self.status) {
            (Agency::Dvcqg, _) => {
                Err("the DVCQG portal decides nothing: it only stores what is synced to it".into())
            }
            (Agency::Tax, 5 | 6) => Ok(()),
            (Agency::Tax, 3 | 9) => Err(format!(
                "the Tax interface answers a form only with ThongBaoNopTien (6) or YeuCauBoSung (5): it has no refusal, and its 9 (HoanThanhNghiaVu) answers a payment confirmation (POST /tax/api/nop-tien), not a form; status {} cannot be scripted for tax",
                self.status
            )),
            (_, 3 | 9) => Ok(()),
            (a, 5 | 6) => Err(format!(
                "the {} interface answers only 3 (refused) or 9 (processed): status {} (5 more data, 6 financial obligation) is not expressible there; only tax answers 5 or 6",
                agency_name(a),
                self.status
            )),
            (_, other) => Err(format!(
                "status {other} is not a decision: use 3, 5, 6 or 9"
            )),
        }
    }
}

fn agency_name(a: Agency) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Fault code: register the dossier, then answer with a truncated body (the answer is lost).
pub const COMMIT_TRUNCATED: u16 = 1;
/// Fault code: register the dossier, then answer only after [`SLOW_ANSWER_MS`] (past a client
/// timeout shorter than that).
pub const COMMIT_SLOW: u16 = 2;
/// How long a [`COMMIT_SLOW`] answer takes, ms.
pub const SLOW_ANSWER_MS: u64 = 3_000;
/// Fault code (DVCQG): answer HTTP 200 with `error_code` "99", a failure inside a 200 (the
/// SOAP civil-status software: `KetQua trangThai="TU_CHOI"` in a 200).
pub const ERROR_IN_200: u16 = 3;
/// Fault code (SOAP civil-status software): HTTP 500 with a `Client` fault, `MaLoi`
/// `E_DU_LIEU` (the agency's refusal).
pub const SOAP_CLIENT_FAULT: u16 = 4;
/// Fault code (SOAP civil-status software): HTTP 500 with a `Server` fault, `MaLoi`
/// `E_HE_THONG` (transient).
pub const SOAP_SERVER_FAULT: u16 = 5;
/// Fault code (SOAP civil-status software): HTTP 200 with an HTML page (an unreadable answer).
pub const GARBAGE: u16 = 6;
/// Fault code (SOAP civil-status software): HTTP 500 with a `Client` fault `E_QUA_TAI`
/// (overloaded), which the shipped configuration's fault table reads as transient.
pub const SOAP_BUSY_FAULT: u16 = 7;

/// Counters per agency.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// HTTP requests received on the submit endpoint (including failed and repeated ones).
    pub calls: u64,
    /// Dossiers registered (once per idempotency key).
    pub effects: u64,
    /// Requests refused by schema validation.
    pub invalid: u64,
    /// Answers with a repeated idempotency key (no new effect).
    pub replays: u64,
    /// Callbacks delivered to the bus.
    pub callbacks: u64,
    /// Cancels received.
    pub cancels: u64,
}

#[derive(Clone)]
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: String,
}

#[derive(Default)]
struct Data {
    counts: HashMap<Agency, Counts>,
    answers: HashMap<(Agency, String), Answer>,
    /// Which dossier an idempotency key was first used for.
    key_owner: HashMap<(Agency, String), String>,
    dossiers: HashMap<(Agency, String), (String, u8)>,
    requests: HashMap<(Agency, String), Vec<Value>>,
    /// The W3C `traceparent` of each request that carried one: (method and path, value).
    traceparents: Vec<(String, String)>,
    faults: Vec<(Fault, VecDeque<u16>)>,
    /// Scripted decisions by agency and dossier.
    decisions: HashMap<(Agency, String), Decision>,
    /// Tax: the payment notices (`SoThongBao`) issued, by dossier.
    tax_notices: HashMap<String, std::collections::HashSet<String>>,
    /// DVCQG: sessions handed out, dossiers by MaHoSo, progress entries.
    dvcqg_sessions: std::collections::HashSet<String>,
    dvcqg_dossiers: HashMap<String, Value>,
    dvcqg_progress: Vec<Value>,
}

#[derive(Clone)]
struct Mock {
    settings: MockSettings,
    police_submit: Arc<jsonschema::Validator>,
    police_cancel: Arc<jsonschema::Validator>,
    customs_submit: Arc<jsonschema::Validator>,
    civil_submit: Arc<jsonschema::Validator>,
    callback_keys: Arc<HashMap<Agency, String>>,
    /// Callback keys of the units reached by the `edxml` adapter, by unit code.
    edxml_keys: Arc<HashMap<String, String>>,
    /// DVCQG credentials (username, password, dstcode, madonvi) from the `dvcqg-sync` unit.
    dvcqg: Arc<Option<[String; 4]>>,
    data: Arc<Mutex<Data>>,
    client: reqwest::Client,
    xml_lock: Arc<Mutex<()>>,
}

/// A running mock.
pub struct MockServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Stops it.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// The server task.
    pub task: tokio::task::JoinHandle<()>,
}

/// The path under the mock's base URL that serves the interface of `adapter` for `unit`
/// (`police`, `bhxh`, `tax`, `customs`, `dvcqg`, `edxml/<unit>`, `civil-status/<unit>`); None
/// for an adapter the mock does not serve. A `mapped` unit with `soap` is served elsewhere:
/// see [`path_of`].
pub fn path_for(adapter: &str, unit: &str) -> Option<String> {
    Some(match adapter {
        "police-rest" => "police".to_string(),
        "bhxh-xml" => "bhxh".to_string(),
        "tax-xml" => "tax".to_string(),
        "customs-rest" => "customs".to_string(),
        "dvcqg-sync" => "dvcqg".to_string(),
        "edxml" => format!("edxml/{unit}"),
        "mapped" => format!("civil-status/{unit}"),
        _ => return None,
    })
}

/// The path under the mock's base URL that serves `unit`'s interface: [`path_for`] its
/// adapter, except a `mapped` unit with `soap`, served by the SOAP civil-status software
/// (`civil-status-soap/<unit>`).
pub fn path_of(unit: &lienthong_core::registry::Unit) -> Option<String> {
    let Reach::Adapter {
        adapter, settings, ..
    } = &unit.reach
    else {
        return None;
    };
    if adapter == "mapped" && settings.contains_key("soap") {
        return Some(format!("civil-status-soap/{}", unit.code));
    }
    path_for(adapter, &unit.code)
}

/// Point the endpoint of every unit reached by an adapter the mock serves at the mock whose
/// base URL is `base` (`http://127.0.0.1:8490`): what the demo, the bench and the tests run
/// the registry of `deploy/config/` against.
pub fn point_adapters_at(settings: &mut Settings, base: &str) {
    let base = base.trim_end_matches('/');
    for u in &mut settings.units {
        if let Some(path) = path_of(u)
            && let Reach::Adapter { endpoint, .. } = &mut u.reach
        {
            *endpoint = format!("{base}/{path}");
        }
    }
}

/// Serve the mock agencies on `settings.mock.listen` (port 0 picks a free one). Callback keys
/// come from the registry units reached by the `police-rest`, `bhxh-xml`, `tax-xml`,
/// `customs-rest`, `edxml` and `mapped` adapters; the portal's credentials from the
/// `dvcqg-sync` unit.
pub async fn serve(settings: &Settings) -> anyhow::Result<MockServer> {
    let mut keys = HashMap::new();
    let mut edxml_keys = HashMap::new();
    let mut dvcqg = None;
    for u in &settings.units {
        if let Reach::Adapter {
            adapter, settings, ..
        } = &u.reach
            && adapter == "dvcqg-sync"
        {
            let g = |k: &str| {
                settings
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            dvcqg = Some([g("username"), g("password"), g("dstcode"), g("madonvi")]);
        }
        if let Reach::Adapter {
            adapter,
            callback_key: Some(k),
            ..
        } = &u.reach
        {
            match adapter.as_str() {
                "police-rest" => keys.insert(Agency::Police, k.clone()),
                "bhxh-xml" => keys.insert(Agency::Bhxh, k.clone()),
                "edxml" | "mapped" => edxml_keys.insert(u.code.clone(), k.clone()),
                "tax-xml" => keys.insert(Agency::Tax, k.clone()),
                "customs-rest" => keys.insert(Agency::Customs, k.clone()),
                _ => None,
            };
        }
    }
    let compile = |s: &str| -> anyhow::Result<jsonschema::Validator> {
        let v: Value = serde_json::from_str(s)?;
        jsonschema::draft202012::options()
            .build(&v)
            .map_err(|e| anyhow::anyhow!("agency schema: {e}"))
    };
    let mock = Mock {
        settings: settings.mock.clone(),
        police_submit: Arc::new(compile(POLICE_SUBMIT)?),
        police_cancel: Arc::new(compile(POLICE_CANCEL)?),
        customs_submit: Arc::new(compile(CUSTOMS_SUBMIT)?),
        civil_submit: Arc::new(compile(CIVIL_SUBMIT)?),
        callback_keys: Arc::new(keys),
        edxml_keys: Arc::new(edxml_keys),
        dvcqg: Arc::new(dvcqg),
        data: Arc::default(),
        client: match &settings.mock.ca_bundle {
            Some(ca) => crate::tls::client_trusting(std::path::Path::new(ca))?,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        },
        xml_lock: Arc::default(),
    };
    let app = Router::new()
        .route("/police/v1/ho-so", post(police_submit))
        .route("/police/v1/ho-so/{ma}", get(police_status))
        .route("/police/v1/ho-so/{ma}/huy", post(police_cancel))
        .route("/bhxh/api/ho-so", post(bhxh_submit))
        .route("/bhxh/api/ho-so/{ma}", get(bhxh_status))
        .route("/bhxh/api/ho-so/{ma}/huy", post(bhxh_cancel))
        .route("/edxml/{unit}", post(edxml_submit))
        .route("/civil-status/{unit}/ho-so", post(civil_submit))
        .route("/civil-status/{unit}/ho-so/{ma}", get(civil_status))
        .route(
            "/civil-status-soap/{unit}/HoTichService",
            post(civil_status_soap::service),
        )
        .route("/customs/v1/xac-nhan-to-khai", post(customs_submit))
        .route("/customs/v1/xac-nhan-to-khai/{ma}", get(customs_status))
        .route("/dvcqg/auth", post(dvcqg_auth))
        .route("/dvcqg/integration", post(dvcqg_integration))
        .route("/_mock/dvcqg/{ma}", get(dvcqg_view))
        .route("/_mock/dvcqg-expire", post(dvcqg_expire))
        .route("/tax/api/phieu-chuyen", post(tax_submit))
        .route("/tax/api/phieu-chuyen/{ma}", get(tax_status))
        .route("/tax/api/phieu-chuyen/{ma}/huy", post(tax_cancel))
        .route("/tax/api/nop-tien", post(tax_payment))
        .route("/_mock/stats", get(stats))
        .route("/_mock/requests/{agency}/{ma}", get(requests))
        .route("/_mock/traceparents", get(traceparents))
        .route("/_mock/faults", post(add_fault))
        .route("/_mock/decisions", post(add_decision))
        .route("/_mock/reset", post(reset))
        .layer(axum::middleware::from_fn_with_state(
            mock.clone(),
            note_traceparent,
        ))
        .with_state(mock);
    let listener = tokio::net::TcpListener::bind(&settings.mock.listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = match (&settings.mock.tls_cert, &settings.mock.tls_key) {
        (Some(cert), Some(key)) => {
            // HTTPS (axum-server with rustls): what an agency's endpoint is in a deployment.
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|e| anyhow::anyhow!("[mock] tls_cert {cert} / tls_key {key}: {e}"))?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                let _ = rx.await;
                stopper.graceful_shutdown(Some(Duration::from_secs(1)));
            });
            let listener = listener.into_std()?;
            let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle);
            tokio::spawn(async move {
                let _ = server.serve(app.into_make_service()).await;
            })
        }
        _ => tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }),
    };
    Ok(MockServer {
        addr,
        stop: tx,
        task,
    })
}

/// The answer, as a fault behaviour may spoil it after the dossier was registered.
async fn answered(a: &Answer, behaviour: Option<u16>) -> Response {
    match behaviour {
        Some(COMMIT_TRUNCATED) => {
            let cut = a.body.len() / 2;
            let mut end = cut;
            while !a.body.is_char_boundary(end) {
                end -= 1;
            }
            let mut broken = a.clone();
            broken.body = a.body[..end].to_string();
            answer(&broken)
        }
        Some(COMMIT_SLOW) => {
            tokio::time::sleep(Duration::from_millis(SLOW_ANSWER_MS)).await;
            answer(a)
        }
        _ => answer(a),
    }
}

fn answer(a: &Answer) -> Response {
    let mut r = (a.status, a.body.clone()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    r
}

fn police_error(status: StatusCode, code: &str, text: &str) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: json!({"MaLoi": code, "MoTaLoi": text}).to_string(),
    }
}

fn bhxh_receipt(ok: bool, ma: &str, receipt: &str, err: Option<(&str, &str)>) -> Answer {
    let mut b = lienthong_adapters::xml::Builder::new("BienNhan", BHXH_NS);
    b.text("KetQua", if ok { "THANH_CONG" } else { "LOI" })
        .text("MaHoSo", ma);
    if ok {
        b.text("MaTiepNhan", receipt)
            .text("ThoiDiemTiepNhan", &now14());
    }
    if let Some((c, t)) = err {
        b.text("MaLoi", c).text("MoTaLoi", t);
    }
    Answer {
        status: StatusCode::OK,
        content_type: "application/xml; charset=utf-8",
        body: String::from_utf8_lossy(&b.finish("BienNhan")).into_owned(),
    }
}

fn now14() -> String {
    lienthong_core::clock::to_dvcqg(chrono::Utc::now())
}

impl Mock {
    async fn latency(&self) {
        let (lo, hi) = (
            self.settings.latency_min_ms,
            self.settings
                .latency_max_ms
                .max(self.settings.latency_min_ms),
        );
        let ms = rand::rng().random_range(lo..=hi);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn count(&self, a: Agency, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut d) = self.data.lock() {
            f(d.counts.entry(a).or_default());
        }
    }

    /// A scripted or random transient answer, if one applies to this request.
    fn injected(&self, a: Agency, ma: &str) -> Option<(u16, Option<(u64, bool)>)> {
        if let Ok(mut d) = self.data.lock() {
            for (f, q) in d.faults.iter_mut() {
                if f.agency == a
                    && f.ma_ho_so.as_deref().is_none_or(|m| m == ma)
                    && let Some(s) = q.pop_front()
                {
                    return Some((s, f.retry_after_s.map(|r| (r, f.retry_after_as_date))));
                }
            }
            d.faults.retain(|(_, q)| !q.is_empty());
        }
        if rand::rng().random_bool(self.settings.unavailable_rate.clamp(0.0, 1.0)) {
            return Some((503, None));
        }
        None
    }

    /// The agency's idempotency rule, shared by every interface: record the request; a key
    /// already used for another dossier gets `conflict(owner)`; a repeated key gets the stored
    /// answer (no new effect); a new key stores `fresh()` and registers the dossier (status 2).
    /// Returns (answer, whether this is the first — the effect). None if the state is poisoned.
    #[allow(clippy::too_many_arguments)]
    fn claim_key(
        &self,
        a: Agency,
        key: &str,
        ma: &str,
        receipt: &str,
        request: Value,
        conflict: impl FnOnce(&str) -> Answer,
        fresh: impl FnOnce() -> Answer,
    ) -> Option<(Answer, bool)> {
        let k = (a, ma.to_string());
        let receipt = receipt.to_string();
        self.claim(a, key, ma, request, conflict, fresh, move |d| {
            d.dossiers.insert(k, (receipt, 2));
        })
    }

    /// [`Mock::claim_key`] with what a new key does to the mock's records (`register`, run
    /// under the lock with the new answer stored).
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        a: Agency,
        key: &str,
        ma: &str,
        request: Value,
        conflict: impl FnOnce(&str) -> Answer,
        fresh: impl FnOnce() -> Answer,
        register: impl FnOnce(&mut Data),
    ) -> Option<(Answer, bool)> {
        let mut d = self.data.lock().ok()?;
        d.requests
            .entry((a, ma.to_string()))
            .or_default()
            .push(request);
        let k = (a, key.to_string());
        if let Some(owner) = d.key_owner.get(&k)
            && owner != ma
        {
            return Some((conflict(owner), false));
        }
        if let Some(prev) = d.answers.get(&k) {
            return Some((prev.clone(), false));
        }
        let ans = fresh();
        d.key_owner.insert(k.clone(), ma.to_string());
        d.answers.insert(k, ans.clone());
        register(&mut d);
        Some((ans, true))
    }

    /// The scripted decision for this agency and dossier, if any.
    fn decision(&self, a: Agency, ma: &str) -> Option<Decision> {
        self.data
            .lock()
            .ok()
            .and_then(|d| d.decisions.get(&(a, ma.to_string())).cloned())
    }

    /// Whether a new dossier is refused: by its scripted decision (3), else at the refusal rate.
    fn refuses(&self, decision: Option<&Decision>) -> bool {
        match decision {
            Some(d) => d.status == 3,
            None => rand::rng().random_bool(self.settings.refusal_rate.clamp(0.0, 1.0)),
        }
    }

    /// After the callback delay (the decision's `delay_ms`, else `callback_delay_ms`), decide
    /// the dossier and post the result, unless it was cancelled meanwhile (status 8: the
    /// callback is never sent).
    fn callback_later(&self, cb: Later) {
        let key = cb
            .key
            .clone()
            .or_else(|| self.callback_keys.get(&cb.agency).cloned())
            .unwrap_or_default();
        let m = self.clone();
        let delay = Duration::from_millis(cb.delay_ms.unwrap_or(self.settings.callback_delay_ms));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let a = cb.agency;
            if let Ok(mut d) = m.data.lock() {
                if let Some((_, st)) = d.dossiers.get_mut(&(a, cb.ma.clone())) {
                    if *st == 8 {
                        return;
                    }
                    *st = cb.decided;
                }
                if let Some(n) = &cb.notice {
                    d.tax_notices
                        .entry(cb.ma.clone())
                        .or_default()
                        .insert(n.clone());
                }
            }
            for attempt in 0..20u32 {
                let mut post = m
                    .client
                    .post(&cb.url)
                    .bearer_auth(&key)
                    .header(header::CONTENT_TYPE, cb.content_type);
                if let Some(tp) = &cb.traceparent {
                    post = post.header("traceparent", tp);
                }
                if a == Agency::CivilStatusSoap {
                    post = post.header(
                        "SOAPAction",
                        format!("\"{}\"", civil_status_soap::CALLBACK_ACTION),
                    );
                }
                let r = post.body(cb.body.clone()).send().await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        m.count(a, |c| c.callbacks += 1);
                        return;
                    }
                    Ok(resp) if resp.status().is_client_error() => {
                        tracing::warn!(message = "the bus refused a mock callback", status = %resp.status(), url = cb.url);
                        return;
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1)))
                            .await
                    }
                }
            }
        });
    }
}

/// A result the mock posts to the bus later ([`Mock::callback_later`]).
struct Later {
    agency: Agency,
    ma: String,
    /// The status the dossier takes at the mock when the callback is sent.
    decided: u8,
    url: String,
    body: String,
    content_type: &'static str,
    /// Callback key (default: the agency's).
    key: Option<String>,
    /// Delay, ms (default `callback_delay_ms`).
    delay_ms: Option<u64>,
    /// Tax: the payment notice number this callback issues.
    notice: Option<String>,
    /// The W3C `traceparent` to send with the callback: the agency continues the trace of the
    /// request it answers (Police does).
    traceparent: Option<String>,
}

fn idem_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn injected_answer(a: Agency, status: u16, retry_after: Option<(u64, bool)>) -> Response {
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let (code, text) = if st.is_server_error() {
        ("E_TAM_NGUNG", "Hệ thống tạm thời không phục vụ (giả lập)")
    } else {
        ("E_DU_LIEU", "Dữ liệu hồ sơ không hợp lệ (lỗi giả lập)")
    };
    let mut r = match a {
        Agency::CivilStatus if st.is_success() => answer(&Answer {
            status: st,
            ..civil_answer("99", text, "")
        }),
        Agency::Police | Agency::Customs | Agency::CivilStatus => {
            answer(&police_error(st, code, text))
        }
        Agency::Bhxh if st.is_success() => answer(&bhxh_receipt(false, "", "", Some((code, text)))),
        Agency::Tax if st.is_success() => answer(&tax_receipt(false, "", "", Some((code, text)))),
        Agency::Dvcqg if st.is_success() => {
            (st, Json(json!({"error_code": "99", "message": text}))).into_response()
        }
        Agency::CivilStatusSoap => return civil_status_soap::injected(status, retry_after),
        Agency::Bhxh | Agency::Edxml | Agency::Tax | Agency::Dvcqg => {
            (st, text.to_string()).into_response()
        }
    };
    if let Some((s, as_date)) = retry_after {
        let text = if as_date {
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(s))
        } else {
            s.to_string()
        };
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// Header the edXML adapter sends with the unit's callback URL (a lienthong convention; a real
/// department's system knows where to send its status packages).
pub const EDXML_CALLBACK_HEADER: &str = "X-Lienthong-Callback-Url";

fn edxml_text(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// A department's document system taking an edXML package (push): the package must read
/// (namespace-aware, `lienthong_adapters::edxml::read`), be addressed to this unit and carry a
/// `DocumentId` and the dossier code in `Code/CodeNumber`. The `DocumentId` is the idempotency
/// key. Answers 200 with a status package 01 (arrived) answering the `DocumentId` — the
/// receipt the `edxml` adapter requires (a plain 2xx is an unknown outcome to it) — and
/// replays it for the same `DocumentId`; later posts status 06 (finished), or 02 (rejected)
/// at the mock's refusal rate, to the callback URL. A scripted 2xx fault answers a status
/// package 02 (rejected) for the package.
async fn edxml_submit(
    State(m): State<Mock>,
    Path(unit): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use lienthong_adapters::edxml::{dossier, read, write};
    let a = Agency::Edxml;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let parsed = tokio::task::spawn_blocking(move || read::read_bytes(&body)).await;
    let pkg = match parsed {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            m.count(a, |c| c.invalid += 1);
            return edxml_text(
                StatusCode::BAD_REQUEST,
                format!("not an edXML package: {e}"),
            );
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let h = &pkg.message_header;
    if h.status_code.as_ref().map(|c| c.0.as_str())
        == Some(lienthong_adapters::edxml::StatusCode::RECALL_REQUESTED)
    {
        return edxml_recall(&m, &unit, &pkg);
    }
    let ma = h
        .code
        .as_ref()
        .and_then(|c| c.code_number.clone())
        .unwrap_or_default();
    if let Some((s, ra)) = m.injected(a, &ma)
        && s >= 100
    {
        if (200..300).contains(&s)
            && let Some(doc) = &h.document_id
        {
            let rejected = dossier::status_package(
                &unit,
                doc,
                lienthong_adapters::edxml::StatusCode::REJECTED,
                "Dữ liệu hồ sơ không hợp lệ (lỗi giả lập)",
                "",
            );
            return match write::write(&rejected, Vec::new(), Vec::new()) {
                Ok((b, _)) => (
                    StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
                    [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                    b,
                )
                    .into_response(),
                Err(e) => edxml_text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
        }
        return injected_answer(a, s, ra);
    }
    let Some(doc_id) = h.document_id.clone() else {
        m.count(a, |c| c.invalid += 1);
        return edxml_text(
            StatusCode::BAD_REQUEST,
            "no MessageHeader/DocumentId".into(),
        );
    };
    if !h
        .to
        .iter()
        .any(|t| t.organ_id.as_deref() == Some(unit.as_str()))
    {
        m.count(a, |c| c.invalid += 1);
        return edxml_text(
            StatusCode::BAD_REQUEST,
            format!("the package is not addressed to {unit}"),
        );
    }
    let arrived = dossier::status_package(&unit, &doc_id, "01", "Đã đến (giả lập)", "");
    let arrived = write::write(&arrived, Vec::new(), Vec::new())
        .map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let claimed = m.claim_key(
        a,
        &doc_id,
        &ma,
        &doc_id,
        json!({"document_id": doc_id, "subject": h.subject}),
        |owner| Answer {
            status: StatusCode::CONFLICT,
            content_type: "text/plain; charset=utf-8",
            body: format!("DocumentId already used for dossier {owner}"),
        },
        || Answer {
            status: StatusCode::OK,
            content_type: "application/xml; charset=utf-8",
            body: arrived.clone(),
        },
    );
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if first {
        m.count(a, |c| c.effects += 1);
        let dec = m.decision(a, &ma);
        let refused = m.refuses(dec.as_ref());
        let (code, decided, text) = if refused {
            (
                "02",
                3,
                dec.as_ref()
                    .and_then(|d| d.reason.as_deref())
                    .unwrap_or("Từ chối tiếp nhận: hồ sơ không thuộc thẩm quyền (giả lập)"),
            )
        } else {
            ("06", 9, "Đã xử lý xong, chi trả trợ cấp mai táng (giả lập)")
        };
        let done = dossier::status_package(&unit, &doc_id, code, text, "Lê Thị Mai (giả lập)");
        let url = headers
            .get(EDXML_CALLBACK_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let (Some(url), Ok((body, _))) = (url, write::write(&done, Vec::new(), Vec::new())) {
            m.callback_later(Later {
                traceparent: None,
                agency: a,
                ma: ma.clone(),
                decided,
                url,
                body: String::from_utf8_lossy(&body).into_owned(),
                content_type: "application/xml; charset=utf-8",
                key: m.edxml_keys.get(&unit).cloned(),
                delay_ms: dec.as_ref().and_then(|d| d.delay_ms),
                notice: None,
            });
        }
    } else {
        m.count(a, |c| c.replays += 1);
    }
    answer(&ans)
}

/// A recall (status package 13, answering the `DocumentId` of a package this unit took): the
/// dossier is stopped (8) and its pending result is never sent; answers 200 with a status
/// package 15 (recall accepted), or 16 (refused) when the dossier is already decided (3 or 9);
/// 404 for a `DocumentId` the mock never took. Counted in `cancels`.
fn edxml_recall(m: &Mock, unit: &str, pkg: &lienthong_adapters::edxml::Package) -> Response {
    use lienthong_adapters::edxml::{StatusCode as Code, dossier, write};
    let a = Agency::Edxml;
    m.count(a, |c| c.cancels += 1);
    let Some(doc_id) = pkg
        .message_header
        .response_for
        .first()
        .and_then(|r| r.document_id.clone())
    else {
        m.count(a, |c| c.invalid += 1);
        return edxml_text(
            StatusCode::BAD_REQUEST,
            "a recall (13) needs ResponseFor/DocumentId".into(),
        );
    };
    let Ok(mut d) = m.data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(ma) = d.key_owner.get(&(a, doc_id.clone())).cloned() else {
        return edxml_text(
            StatusCode::NOT_FOUND,
            format!("no document {doc_id} at {unit}"),
        );
    };
    let (code, text) = match d.dossiers.get_mut(&(a, ma)) {
        Some((_, 3 | 9)) => (Code::RECALL_REFUSED, "Hồ sơ đã được giải quyết (giả lập)"),
        Some((_, st)) => {
            *st = 8;
            (Code::RECALL_ACCEPTED, "Đồng ý thu hồi hồ sơ (giả lập)")
        }
        None => (Code::RECALL_ACCEPTED, "Đồng ý thu hồi hồ sơ (giả lập)"),
    };
    drop(d);
    let pkg = dossier::status_package(unit, &doc_id, code, text, "Lê Thị Mai (giả lập)");
    match write::write(&pkg, Vec::new(), Vec::new()) {
        Ok((body, _)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => edxml_text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn tax_receipt(ok: bool, ma: &str, receipt: &str, err: Option<(&str, &str)>) -> Answer {
    let mut b = lienthong_adapters::xml::Builder::new("BienNhan", TAX_NS);
    b.text("KetQua", if ok { "THANH_CONG" } else { "LOI" })
        .text("MaHoSo", ma);
    if ok {
        b.text("MaTiepNhan", receipt)
            .text("ThoiDiemTiepNhan", &now14());
    }
    if let Some((c, t)) = err {
        b.text("MaLoi", c).text("MoTaLoi", t);
    }
    Answer {
        status: StatusCode::OK,
        content_type: "application/xml; charset=utf-8",
        body: String::from_utf8_lossy(&b.finish("BienNhan")).into_owned(),
    }
}

/// A Tax request read up to its idempotency key: the flat document (root `root`, valid against
/// the Tax XSD, `Idempotency-Key` = `MaThamChieu`), the dossier code and the key; or the
/// answer to give at once (an injected fault, a refusal).
async fn tax_read(
    m: &Mock,
    headers: &HeaderMap,
    body: &Bytes,
    root: &str,
) -> Result<(lienthong_adapters::xml::Flat, String, String), Response> {
    let a = Agency::Tax;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let flat = lienthong_adapters::xml::read_flat(body, TAX_NS);
    let ma = flat
        .as_ref()
        .ok()
        .and_then(|f| f.get("MaHoSo").map(str::to_string))
        .unwrap_or_default();
    if let Some((s, ra)) = m.injected(a, &ma)
        && s >= 100
    {
        return Err(injected_answer(a, s, ra));
    }
    let lock = m.xml_lock.clone();
    let b = body.clone();
    let valid = tokio::task::spawn_blocking(move || {
        let _g = lock.lock();
        validate_tax(&b)
    })
    .await
    .unwrap_or_else(|e| Err(vec![e.to_string()]));
    if let Err(errs) = valid {
        m.count(a, |c| c.invalid += 1);
        return Err(answer(&tax_receipt(
            false,
            &ma,
            "",
            Some(("E_XSD", &errs.join("; "))),
        )));
    }
    let f = match flat {
        Ok(f) if f.root == root => f,
        Ok(f) => {
            m.count(a, |c| c.invalid += 1);
            let text = format!("expected {root}, got {}", f.root);
            return Err(answer(&tax_receipt(false, &ma, "", Some(("E_XML", &text)))));
        }
        Err(_) => {
            return Err(answer(&tax_receipt(
                false,
                &ma,
                "",
                Some(("E_XML", "unreadable")),
            )));
        }
    };
    let Some(key) = idem_key(headers).filter(|k| f.get("MaThamChieu") == Some(k.as_str())) else {
        return Err(answer(&tax_receipt(
            false,
            &ma,
            "",
            Some(("E_IDEMPOTENCY", "Idempotency-Key must equal MaThamChieu")),
        )));
    };
    Ok((f, ma, key))
}

/// Tax taking the land information-transfer form: validated against the Tax XSD, the
/// `Idempotency-Key` must equal `MaThamChieu`; answers a `BienNhan`, then posts a payment notice
/// (`ThongBaoNopTien`, amounts from `GiaTriHopDongVND`: 0.5 % registration fee and 2 % personal
/// income tax, made-up rates of the mock) or, at the mock's refusal rate, a request for more data
/// (`YeuCauBoSung`) to `UrlPhanHoi`; a scripted decision (5 or 6) chooses instead.
async fn tax_submit(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let a = Agency::Tax;
    let (f, ma, key) = match tax_read(&m, &headers, &body, "PhieuChuyenThongTin").await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let receipt = format!("CT-{}", &key[key.len().saturating_sub(10)..]);
    let claimed = m.claim_key(
        a,
        &key,
        &ma,
        &receipt,
        json!({"xml": String::from_utf8_lossy(&body)}),
        |owner| {
            let text = format!("Idempotency-Key already used for dossier {owner}");
            tax_receipt(false, &ma, "", Some(("E_IDEMPOTENCY", &text)))
        },
        || tax_receipt(true, &ma, &receipt, None),
    );
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if first {
        m.count(a, |c| c.effects += 1);
        let dec = m.decision(a, &ma);
        let more = match &dec {
            Some(d) => d.status == 5,
            None => rand::rng().random_bool(m.settings.refusal_rate.clamp(0.0, 1.0)),
        };
        let text = dec.as_ref().and_then(|d| d.reason.as_deref());
        let today = &now14()[..8];
        let (decided, xml, notice) = if more {
            let mut b = lienthong_adapters::xml::Builder::new("YeuCauBoSung", TAX_NS);
            b.text("MaHoSo", &ma)
                .text("MaThamChieu", &key)
                .text("NgayYeuCau", today)
                .text(
                    "NoiDung",
                    text.unwrap_or("Đề nghị bổ sung hợp đồng tặng cho có công chứng (giả lập)"),
                )
                .text("CanBoXuLy", "Phạm Văn Thuế (giả lập)");
            (5, b.finish("YeuCauBoSung"), None)
        } else {
            let value: u64 = f
                .get("GiaTriHopDongVND")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100_000_000);
            let (fee, pit) = (value / 200, value / 50);
            let so = format!("TB-{receipt}");
            let mut b = lienthong_adapters::xml::Builder::new("ThongBaoNopTien", TAX_NS);
            b.text("MaHoSo", &ma)
                .text("MaThamChieu", &key)
                .text("SoThongBao", &so)
                .text("NgayThongBao", today)
                .text("LePhiTruocBaVND", &fee.to_string())
                .text("ThueTNCNVND", &pit.to_string())
                .text("TongSoTienVND", &(fee + pit).to_string())
                .text("HanNop", today)
                .text("CanBoXuLy", "Phạm Văn Thuế (giả lập)")
                .text(
                    "NoiDung",
                    text.unwrap_or(
                        "Thông báo nộp lệ phí trước bạ và thuế thu nhập cá nhân (giả lập)",
                    ),
                );
            (6, b.finish("ThongBaoNopTien"), Some(so))
        };
        if let Some(url) = f.get("UrlPhanHoi") {
            m.callback_later(Later {
                traceparent: None,
                agency: a,
                ma: ma.clone(),
                decided,
                url: url.to_string(),
                body: String::from_utf8_lossy(&xml).into_owned(),
                content_type: "application/xml; charset=utf-8",
                key: None,
                delay_ms: dec.and_then(|d| d.delay_ms),
                notice,
            });
        }
    } else {
        m.count(a, |c| c.replays += 1);
    }
    answer(&ans)
}

/// Tax taking a payment confirmation (`XacNhanNopTien`): validated against the Tax XSD, the
/// `Idempotency-Key` must equal `MaThamChieu` and is honoured as for the form. A `SoThongBao`
/// the mock issued for this `MaHoSo` (and a dossier not cancelled) gets a `BienNhan`, the
/// dossier goes to 4 (in progress), and after the callback delay `HoanThanhNghiaVu` is posted
/// to `UrlPhanHoi` and the dossier is at 9; any other gets `BienNhan` `LOI` (`E_KHONG_TIM_THAY`,
/// or `E_DA_DUNG_XU_LY` for a cancelled dossier), a permanent failure, also replayed.
async fn tax_payment(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let a = Agency::Tax;
    let (f, ma, key) = match tax_read(&m, &headers, &body, "XacNhanNopTien").await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let so = f.get("SoThongBao").unwrap_or("").to_string();
    let refusal = {
        let Ok(d) = m.data.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        if !d.tax_notices.get(&ma).is_some_and(|n| n.contains(&so)) {
            Some((
                "E_KHONG_TIM_THAY",
                format!("Không tìm thấy thông báo nộp tiền {so} của hồ sơ {ma}"),
            ))
        } else if d
            .dossiers
            .get(&(a, ma.clone()))
            .is_some_and(|(_, st)| *st == 8)
        {
            Some(("E_DA_DUNG_XU_LY", format!("Hồ sơ {ma} đã dừng xử lý")))
        } else {
            None
        }
    };
    let receipt = format!("XN-{}", &key[key.len().saturating_sub(10)..]);
    let ok = refusal.is_none();
    let k = (a, ma.clone());
    let claimed = m.claim(
        a,
        &key,
        &ma,
        json!({"xml": String::from_utf8_lossy(&body)}),
        |owner| {
            let text = format!("Idempotency-Key already used for dossier {owner}");
            tax_receipt(false, &ma, "", Some(("E_IDEMPOTENCY", &text)))
        },
        || match &refusal {
            None => tax_receipt(true, &ma, &receipt, None),
            Some((code, text)) => tax_receipt(false, &ma, "", Some((code, text))),
        },
        |d| {
            if ok && let Some((_, st)) = d.dossiers.get_mut(&k) {
                *st = 4;
            }
        },
    );
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if !first {
        m.count(a, |c| c.replays += 1);
    } else if ok {
        m.count(a, |c| c.effects += 1);
        let mut b = lienthong_adapters::xml::Builder::new("HoanThanhNghiaVu", TAX_NS);
        b.text("MaHoSo", &ma)
            .text("MaThamChieu", &key)
            .text("SoThongBao", &so)
            .text("NgayXacNhan", &now14()[..8])
            .text("CanBoXuLy", "Phạm Văn Thuế (giả lập)")
            .text(
                "NoiDung",
                &format!(
                    "Đã nhận đủ tiền theo chứng từ {}; hoàn thành nghĩa vụ tài chính (giả lập)",
                    f.get("SoChungTu").unwrap_or("")
                ),
            );
        if let Some(url) = f.get("UrlPhanHoi") {
            m.callback_later(Later {
                traceparent: None,
                agency: a,
                ma: ma.clone(),
                decided: 9,
                url: url.to_string(),
                body: String::from_utf8_lossy(&b.finish("HoanThanhNghiaVu")).into_owned(),
                content_type: "application/xml; charset=utf-8",
                key: None,
                delay_ms: None,
                notice: None,
            });
        }
    }
    answer(&ans)
}

async fn tax_status(State(m): State<Mock>, Path(ma): Path<String>) -> Response {
    let found = m
        .data
        .lock()
        .ok()
        .and_then(|d| d.dossiers.get(&(Agency::Tax, ma.clone())).cloned());
    match found {
        Some((receipt, st)) => {
            let mut b = lienthong_adapters::xml::Builder::new("TrangThai", TAX_NS);
            b.text("MaHoSo", &ma)
                .text("MaTiepNhan", &receipt)
                .text("TrangThaiHoSo", &st.to_string());
            answer(&Answer {
                status: StatusCode::OK,
                content_type: "application/xml; charset=utf-8",
                body: String::from_utf8_lossy(&b.finish("TrangThai")).into_owned(),
            })
        }
        None => answer(&Answer {
            status: StatusCode::NOT_FOUND,
            ..tax_receipt(
                false,
                &ma,
                "",
                Some(("E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ")),
            )
        }),
    }
}

async fn tax_cancel(State(m): State<Mock>, Path(ma): Path<String>) -> Response {
    m.count(Agency::Tax, |c| c.cancels += 1);
    let mut d = match m.data.lock() {
        Ok(d) => d,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    match d.dossiers.get_mut(&(Agency::Tax, ma.clone())) {
        Some((receipt, st)) => {
            *st = 8;
            let r = receipt.clone();
            answer(&tax_receipt(true, &ma, &r, None))
        }
        None => answer(&tax_receipt(
            false,
            &ma,
            "",
            Some(("E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ")),
        )),
    }
}

fn civil_answer(code: &str, message: &str, receipt: &str) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type: "application/json",
        body: json!({"error_code": code, "message": message, "MaTiepNhan": receipt}).to_string(),
    }
}

/// A civil-status office's software (the config-only `mapped` adapter's shipped example):
/// validated against `schemas/agencies/civil-status/submit.schema.json`; answers 200 with
/// `error_code` "00" (or another code and a message: a failure inside a 200), then posts the
/// registration (`KetQua` `DA_DANG_KY`, or `TU_CHOI` at the refusal rate) to `UrlPhanHoi`.
async fn civil_submit(
    State(m): State<Mock>,
    Path(unit): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let a = Agency::CivilStatus;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            m.count(a, |c| c.invalid += 1);
            return answer(&civil_answer("01", &format!("JSON không hợp lệ: {e}"), ""));
        }
    };
    let ma = v
        .get("MaHoSo")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some((s, ra)) = m.injected(a, &ma) {
        if s >= 100 {
            return injected_answer(a, s, ra);
        }
        if s == ERROR_IN_200 {
            return answer(&civil_answer("99", "Lỗi hệ thống (giả lập)", ""));
        }
    }
    let errors: Vec<String> = m
        .civil_submit
        .iter_errors(&v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !errors.is_empty() {
        m.count(a, |c| c.invalid += 1);
        return answer(&civil_answer("02", &errors.join("; "), ""));
    }
    let Some(key) = idem_key(&headers).filter(|k| v["MaThamChieu"].as_str() == Some(k.as_str()))
    else {
        return answer(&civil_answer(
            "03",
            "Idempotency-Key phải bằng MaThamChieu",
            "",
        ));
    };
    let receipt = format!("HT-{}", &key[key.len().saturating_sub(10)..]);
    let claimed = m.claim_key(
        a,
        &key,
        &ma,
        &receipt,
        v.clone(),
        |owner| {
            civil_answer(
                "04",
                &format!("Idempotency-Key đã dùng cho hồ sơ {owner}"),
                "",
            )
        },
        || civil_answer("00", "Đã tiếp nhận", &receipt),
    );
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if first {
        m.count(a, |c| c.effects += 1);
        let dec = m.decision(a, &ma);
        let refused = m.refuses(dec.as_ref());
        let why = dec
            .as_ref()
            .and_then(|d| d.reason.clone())
            .unwrap_or_else(|| "Giấy chứng sinh không hợp lệ (giả lập)".into());
        let so = format!(
            "{}/2026",
            100 + (ma.len() * 7 + ma.bytes().map(u32::from).sum::<u32>() as usize) % 900
        );
        let cb = if refused {
            json!({"MaHoSo": ma, "MaThamChieu": key, "MaTiepNhan": receipt, "KetQua": "TU_CHOI",
                   "GhiChu": why, "CanBo": "Công chức hộ tịch (giả lập)"})
        } else {
            json!({"MaHoSo": ma, "MaThamChieu": key, "MaTiepNhan": receipt, "KetQua": "DA_DANG_KY",
                   "SoDangKy": so, "QuyenSo": "01/2026", "NgayDangKy": &now14()[..8],
                   "CanBo": "Lê Thị Hộ Tịch (giả lập)", "GhiChu": "Đã đăng ký"})
        };
        if let Some(url) = v.get("UrlPhanHoi").and_then(Value::as_str) {
            m.callback_later(Later {
                traceparent: None,
                agency: a,
                ma: ma.clone(),
                decided: if refused { 3 } else { 9 },
                url: url.to_string(),
                body: cb.to_string(),
                content_type: "application/json",
                key: m.edxml_keys.get(&unit).cloned(),
                delay_ms: dec.and_then(|d| d.delay_ms),
                notice: None,
            });
        }
    } else {
        m.count(a, |c| c.replays += 1);
    }
    answer(&ans)
}

async fn civil_status(
    State(m): State<Mock>,
    Path((_unit, ma)): Path<(String, String)>,
) -> Response {
    let found = m
        .data
        .lock()
        .ok()
        .and_then(|d| d.dossiers.get(&(Agency::CivilStatus, ma.clone())).cloned());
    match found {
        Some((receipt, st)) => Json(json!({"MaHoSo": ma, "MaTiepNhan": receipt,
            "KetQua": if st == 9 { "DA_DANG_KY" } else if st == 3 { "TU_CHOI" } else { "DANG_XU_LY" }}))
        .into_response(),
        None => answer(&police_error(StatusCode::NOT_FOUND, "E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ")),
    }
}

/// Customs confirming an import declaration (synthetic procedure): the body is validated
/// against `schemas/agencies/customs/submit.schema.json`, `Idempotency-Key` must equal
/// `MaThamChieu`; answers 202 `{MaTiepNhan}`, then posts the result (status 9, or 3 at the
/// refusal rate) to `UrlPhanHoi`.
async fn customs_submit(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let a = Agency::Customs;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            m.count(a, |c| c.invalid += 1);
            return answer(&police_error(
                StatusCode::BAD_REQUEST,
                "E_JSON",
                &e.to_string(),
            ));
        }
    };
    let ma = v
        .get("MaHoSo")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some((s, ra)) = m.injected(a, &ma)
        && s >= 100
    {
        return injected_answer(a, s, ra);
    }
    let errors: Vec<String> = m
        .customs_submit
        .iter_errors(&v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !errors.is_empty() {
        m.count(a, |c| c.invalid += 1);
        return answer(&police_error(
            StatusCode::BAD_REQUEST,
            "E_SCHEMA",
            &errors.join("; "),
        ));
    }
    let Some(key) = idem_key(&headers).filter(|k| v["MaThamChieu"].as_str() == Some(k.as_str()))
    else {
        return answer(&police_error(
            StatusCode::BAD_REQUEST,
            "E_IDEMPOTENCY",
            "Idempotency-Key must equal MaThamChieu",
        ));
    };
    let receipt = format!("HQ.H48.{}", &key[key.len().saturating_sub(12)..]);
    let claimed = m.claim_key(
        a,
        &key,
        &ma,
        &receipt,
        v.clone(),
        |owner| {
            police_error(
                StatusCode::CONFLICT,
                "E_IDEMPOTENCY",
                &format!("Idempotency-Key already used for dossier {owner}"),
            )
        },
        || Answer {
            status: StatusCode::ACCEPTED,
            content_type: "application/json",
            body: json!({"MaHoSo": ma, "MaTiepNhan": receipt, "ThoiDiemTiepNhan": now14()})
                .to_string(),
        },
    );
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if first {
        m.count(a, |c| c.effects += 1);
        let dec = m.decision(a, &ma);
        let refused = m.refuses(dec.as_ref());
        let why = dec
            .as_ref()
            .and_then(|d| d.reason.clone())
            .unwrap_or_else(|| "Không tìm thấy tờ khai hải quan (giả lập)".into());
        let cb = if refused {
            json!({"MaHoSo": ma, "MaThamChieu": key, "MaTiepNhan": receipt, "TrangThaiHoSo": 3,
                   "LyDo": why, "NguoiXuLy": "Cán bộ Hải quan (giả lập)"})
        } else {
            json!({"MaHoSo": ma, "MaThamChieu": key, "MaTiepNhan": receipt, "TrangThaiHoSo": 9,
                   "KetQua": {"XacNhan": true, "SoToKhai": v["SoToKhai"], "TrangThaiToKhai": "Đã thông quan", "NgayXacNhan": &now14()[..8]},
                   "NguoiXuLy": "Trương Văn Hải (giả lập)"})
        };
        if let Some(url) = v.get("UrlPhanHoi").and_then(Value::as_str) {
            m.callback_later(Later {
                traceparent: None,
                agency: a,
                ma: ma.clone(),
                decided: if refused { 3 } else { 9 },
                url: url.to_string(),
                body: cb.to_string(),
                content_type: "application/json",
                key: None,
                delay_ms: dec.and_then(|d| d.delay_ms),
                notice: None,
            });
        }
    } else {
        m.count(a, |c| c.replays += 1);
    }
    answer(&ans)
}

async fn customs_status(State(m): State<Mock>, Path(ma): Path<String>) -> Response {
    let found = m
        .data
        .lock()
        .ok()
        .and_then(|d| d.dossiers.get(&(Agency::Customs, ma.clone())).cloned());
    match found {
        Some((receipt, st)) => {
            Json(json!({"MaHoSo": ma, "MaTiepNhan": receipt, "TrangThaiHoSo": st})).into_response()
        }
        None => answer(&police_error(
            StatusCode::NOT_FOUND,
            "E_KHONG_TIM_THAY",
            "Không tìm thấy hồ sơ",
        )),
    }
}

fn dvcqg_error(code: &str, message: &str) -> Response {
    Json(json!({"error_code": code, "message": message})).into_response()
}

fn dvcqg_dstcode_ok(m: &Mock, headers: &HeaderMap) -> bool {
    let want = m.dvcqg.as_ref().as_ref().map(|c| c[2].as_str());
    headers.get("dstcode").and_then(|v| v.to_str().ok()) == want
}

/// DVCQG login: header `dstcode` and body `{"username", "password"}` as the `dvcqg-sync` unit
/// is configured; answers `{"error_code": "00", "session"}`, or a failure inside a 200.
async fn dvcqg_auth(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    m.count(Agency::Dvcqg, |c| c.calls += 1);
    let Some(cfg) = m.dvcqg.as_ref().as_ref() else {
        return dvcqg_error("01", "the mock has no dvcqg-sync unit configured");
    };
    if !dvcqg_dstcode_ok(&m, &headers) {
        m.count(Agency::Dvcqg, |c| c.invalid += 1);
        return dvcqg_error("01", "dstcode không hợp lệ");
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v.get("username").and_then(Value::as_str) != Some(cfg[0].as_str())
        || v.get("password").and_then(Value::as_str) != Some(cfg[1].as_str())
    {
        return dvcqg_error("01", "Sai tên đăng nhập hoặc mật khẩu");
    }
    let session = uuid::Uuid::now_v7().simple().to_string();
    if let Ok(mut d) = m.data.lock() {
        d.dvcqg_sessions.insert(session.clone());
    }
    Json(json!({"error_code": "00", "session": session})).into_response()
}

fn digits(v: &Value, k: &str, n: usize) -> bool {
    v.get(k)
        .and_then(Value::as_str)
        .is_some_and(|s| s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
}

/// DVCQG integration calls: `TraCuuHoSo`, `DongBoHoSoMC` (insert or update, checked against
/// `isUpdating`), `CapNhatTienDoHoSoMC` (the dossier must exist; a repeated entry — same
/// MaHoSo, ThoiDiemXuLy and TrangThai — is counted as a replay, not a second effect).
async fn dvcqg_integration(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let a = Agency::Dvcqg;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return dvcqg_error("05", &format!("JSON không hợp lệ: {e}")),
    };
    let ma = v
        .get("mahoso")
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/data/0/MaHoSo").and_then(Value::as_str))
        .unwrap_or("")
        .to_string();
    if let Some((s, ra)) = m.injected(a, &ma) {
        if s >= 100 {
            return injected_answer(a, s, ra);
        }
        if s == ERROR_IN_200 {
            return dvcqg_error("99", "Lỗi hệ thống (giả lập)");
        }
    }
    if !dvcqg_dstcode_ok(&m, &headers) {
        m.count(a, |c| c.invalid += 1);
        return dvcqg_error("01", "dstcode không hợp lệ");
    }
    let madonvi = m
        .dvcqg
        .as_ref()
        .as_ref()
        .map(|c| c[3].clone())
        .unwrap_or_default();
    let Ok(mut d) = m.data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let session_ok = v
        .get("session")
        .and_then(Value::as_str)
        .is_some_and(|s| d.dvcqg_sessions.contains(s));
    if !session_ok {
        return dvcqg_error("02", "Phiên làm việc không hợp lệ hoặc đã hết hạn");
    }
    if v.get("madonvi").and_then(Value::as_str) != Some(madonvi.as_str()) {
        d.counts.entry(a).or_default().invalid += 1;
        return dvcqg_error("03", "madonvi không hợp lệ");
    }
    match v.get("service").and_then(Value::as_str).unwrap_or("") {
        "TraCuuHoSo" => {
            let found: Vec<Value> = d.dvcqg_dossiers.get(&ma).cloned().into_iter().collect();
            Json(json!({"error_code": "00", "result": found})).into_response()
        }
        "DongBoHoSoMC" => {
            let updating = match v.get("isUpdating").and_then(Value::as_str) {
                Some("True") => true,
                Some("False") => false,
                _ => return dvcqg_error("05", "isUpdating phải là \"True\" hoặc \"False\""),
            };
            let Some(items) = v.get("data").and_then(Value::as_array) else {
                return dvcqg_error("05", "thiếu data");
            };
            for it in items {
                let ok = it
                    .get("MaHoSo")
                    .and_then(Value::as_str)
                    .is_some_and(|x| !x.is_empty())
                    && it
                        .get("MaTTHC")
                        .and_then(Value::as_str)
                        .is_some_and(|x| !x.is_empty())
                    && digits(it, "NgayTiepNhan", 14)
                    && it
                        .get("TrangThaiHoSo")
                        .and_then(Value::as_str)
                        .and_then(|x| x.parse::<u8>().ok())
                        .is_some_and(|x| (1..=10).contains(&x))
                    && it.get("TaiLieuNop").is_some_and(Value::is_array);
                if !ok {
                    d.counts.entry(a).or_default().invalid += 1;
                    return dvcqg_error(
                        "05",
                        "hồ sơ thiếu MaHoSo, MaTTHC, NgayTiepNhan (yyyyMMddHHmmss), TrangThaiHoSo (1–10) hoặc TaiLieuNop",
                    );
                }
                let key = it["MaHoSo"].as_str().unwrap_or("").to_string();
                let exists = d.dvcqg_dossiers.contains_key(&key);
                if exists != updating {
                    return dvcqg_error(
                        "04",
                        if exists {
                            "Hồ sơ đã tồn tại (isUpdating phải là True)"
                        } else {
                            "Không tìm thấy hồ sơ để cập nhật"
                        },
                    );
                }
                d.dvcqg_dossiers.insert(key, it.clone());
            }
            Json(json!({"error_code": "00"})).into_response()
        }
        "CapNhatTienDoHoSoMC" => {
            let Some(items) = v.get("data").and_then(Value::as_array).cloned() else {
                return dvcqg_error("05", "thiếu data");
            };
            for it in items {
                let key = it
                    .get("MaHoSo")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if !d.dvcqg_dossiers.contains_key(&key) {
                    return dvcqg_error("04", "Không tìm thấy hồ sơ");
                }
                if !digits(&it, "ThoiDiemXuLy", 14) || it.get("TrangThai").is_none() {
                    d.counts.entry(a).or_default().invalid += 1;
                    return dvcqg_error("05", "thiếu ThoiDiemXuLy (yyyyMMddHHmmss) hoặc TrangThai");
                }
                let same = |p: &Value| {
                    p["MaHoSo"] == it["MaHoSo"]
                        && p["ThoiDiemXuLy"] == it["ThoiDiemXuLy"]
                        && p["TrangThai"] == it["TrangThai"]
                };
                if d.dvcqg_progress.iter().any(same) {
                    d.counts.entry(a).or_default().replays += 1;
                } else {
                    d.dvcqg_progress.push(it);
                    d.counts.entry(a).or_default().effects += 1;
                }
            }
            Json(json!({"error_code": "00"})).into_response()
        }
        other => dvcqg_error("05", &format!("service không hỗ trợ: {other}")),
    }
}

/// What the mock portal holds for a dossier: `{"dossier", "progress": [...]}`.
async fn dvcqg_view(State(m): State<Mock>, Path(ma): Path<String>) -> Response {
    let Ok(d) = m.data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let progress: Vec<Value> = d
        .dvcqg_progress
        .iter()
        .filter(|p| p["MaHoSo"] == ma.as_str())
        .cloned()
        .collect();
    Json(json!({"dossier": d.dvcqg_dossiers.get(&ma), "progress": progress})).into_response()
}

/// Forget every DVCQG session (as when they expire).
async fn dvcqg_expire(State(m): State<Mock>) -> Response {
    if let Ok(mut d) = m.data.lock() {
        d.dvcqg_sessions.clear();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn police_submit(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let a = Agency::Police;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return answer(&police_error(
                StatusCode::BAD_REQUEST,
                "E_JSON",
                &format!("Body is not JSON: {e}"),
            ));
        }
    };
    let ma = v
        .get("MaHoSo")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut behaviour = None;
    if let Some((s, ra)) = m.injected(a, &ma) {
        if s >= 100 {
            return injected_answer(a, s, ra);
        }
        behaviour = Some(s);
    }
    let errors: Vec<String> = m
        .police_submit
        .iter_errors(&v)
        .take(10)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !errors.is_empty() {
        m.count(a, |c| c.invalid += 1);
        return answer(&police_error(
            StatusCode::BAD_REQUEST,
            "E_SCHEMA",
            &errors.join("; "),
        ));
    }
    let Some(key) = idem_key(&headers) else {
        return answer(&police_error(
            StatusCode::BAD_REQUEST,
            "E_IDEMPOTENCY",
            "Idempotency-Key header is required",
        ));
    };
    if v.get("MaThamChieu").and_then(Value::as_str) != Some(key.as_str()) {
        return answer(&police_error(
            StatusCode::BAD_REQUEST,
            "E_IDEMPOTENCY",
            "Idempotency-Key differs from MaThamChieu",
        ));
    }
    let receipt = format!("CA.H48.{}", &key[key.len().saturating_sub(12)..]);
    let claimed = m.claim_key(a, &key, &ma, &receipt, v.clone(), |owner| {
        police_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "E_IDEMPOTENCY",
            &format!("Idempotency-Key already used for dossier {owner}"),
        )
    }, || Answer {
        status: StatusCode::ACCEPTED,
        content_type: "application/json",
        body: json!({"MaHoSo": ma, "MaTiepNhan": receipt, "TrangThaiHoSo": 2, "ThoiDiemTiepNhan": now14()}).to_string(),
    });
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if first {
        m.count(a, |c| c.effects += 1);
        let dec = m.decision(a, &ma);
        let refused = m.refuses(dec.as_ref());
        let why = dec
            .as_ref()
            .and_then(|d| d.reason.clone())
            .unwrap_or_else(|| {
                "Địa chỉ cư trú không khớp Cơ sở dữ liệu quốc gia về dân cư (giả lập)".into()
            });
        let loai = v.get("LoaiYeuCau").and_then(Value::as_str).unwrap_or("");
        let cong_dan = v
            .pointer("/CongDan/HoVaTen")
            .and_then(Value::as_str)
            .unwrap_or("");
        let noi = v.get("NoiCuTru").and_then(Value::as_str).unwrap_or("");
        let cb = if refused {
            json!({"MaHoSo": ma, "MaThamChieu": key, "MaTiepNhan": receipt, "TrangThaiHoSo": 3, "ThoiDiemXuLy": now14(),
                   "NguoiXuLy": "Cán bộ tiếp nhận (giả lập)", "NoiDungXuLy": "Không tiếp nhận", "LyDo": why})
        } else {
            let what = if loai == "XOA_DANG_KY_THUONG_TRU" {
                format!("Đã xóa đăng ký thường trú của {cong_dan}")
            } else {
                format!("Đã đăng ký thường trú cho {cong_dan}")
            };
            json!({"MaHoSo": ma, "MaThamChieu": key, "MaTiepNhan": receipt, "TrangThaiHoSo": 9, "ThoiDiemXuLy": now14(),
                   "NguoiXuLy": "Thượng úy Lê Văn Phúc (giả lập)", "NoiDungXuLy": what,
                   "KetQua": {"NoiThuongTru": noi, "NgayDangKy": &now14()[..8], "SoHoSoCuTru": format!("051.{}", &receipt[receipt.len().saturating_sub(6)..])}})
        };
        if let Some(url) = v.get("UrlPhanHoi").and_then(Value::as_str) {
            m.callback_later(Later {
                traceparent: headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                agency: a,
                ma: ma.clone(),
                decided: if refused { 3 } else { 9 },
                url: url.to_string(),
                body: cb.to_string(),
                content_type: "application/json",
                key: None,
                delay_ms: dec.and_then(|d| d.delay_ms),
                notice: None,
            });
        }
    } else {
        m.count(a, |c| c.replays += 1);
    }
    answered(&ans, behaviour).await
}

async fn police_status(State(m): State<Mock>, Path(ma): Path<String>) -> Response {
    let found = m
        .data
        .lock()
        .ok()
        .and_then(|d| d.dossiers.get(&(Agency::Police, ma.clone())).cloned());
    match found {
        Some((receipt, st)) => Json(json!({"MaHoSo": ma, "MaTiepNhan": receipt, "TrangThaiHoSo": st, "ThoiDiemCapNhat": now14()})).into_response(),
        None => answer(&police_error(StatusCode::NOT_FOUND, "E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ")),
    }
}

async fn police_cancel(State(m): State<Mock>, Path(ma): Path<String>, body: Bytes) -> Response {
    m.count(Agency::Police, |c| c.cancels += 1);
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return answer(&police_error(
                StatusCode::BAD_REQUEST,
                "E_JSON",
                &e.to_string(),
            ));
        }
    };
    let errors: Vec<String> = m
        .police_cancel
        .iter_errors(&v)
        .take(10)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !errors.is_empty() {
        return answer(&police_error(
            StatusCode::BAD_REQUEST,
            "E_SCHEMA",
            &errors.join("; "),
        ));
    }
    let Ok(mut d) = m.data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match d.dossiers.get_mut(&(Agency::Police, ma.clone())) {
        None => answer(&police_error(
            StatusCode::NOT_FOUND,
            "E_KHONG_TIM_THAY",
            "Không tìm thấy hồ sơ",
        )),
        Some((_, 3 | 9)) => answer(&police_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "E_DA_GIAI_QUYET",
            "Hồ sơ đã được giải quyết",
        )),
        Some((receipt, st)) => {
            *st = 8;
            Json(json!({"MaHoSo": ma, "MaTiepNhan": receipt, "TrangThaiHoSo": 8, "ThoiDiemCapNhat": now14()})).into_response()
        }
    }
}

/// Validate an XML document against the BHXH XSD (libxml2). Errors are the validator's messages.
pub fn validate_bhxh(xml: &[u8]) -> Result<(), Vec<String>> {
    validate_xsd(BHXH_XSD, xml)
}

/// Validate an XML document against the Tax XSD (libxml2).
pub fn validate_tax(xml: &[u8]) -> Result<(), Vec<String>> {
    validate_xsd(TAX_XSD, xml)
}

/// Validate an XML document against `xsd` (libxml2). Errors are the validator's messages.
pub fn validate_xsd(xsd: &str, xml: &[u8]) -> Result<(), Vec<String>> {
    use libxml::parser::Parser;
    use libxml::schemas::{SchemaParserContext, SchemaValidationContext};
    let doc = Parser::default()
        .parse_string(xml)
        .map_err(|e| vec![format!("not well-formed XML: {e:?}")])?;
    let mut parser = SchemaParserContext::from_buffer(xsd);
    let mut ctx = SchemaValidationContext::from_parser(&mut parser).map_err(|errs| {
        errs.iter()
            .map(|e| format!("XSD: {}", e.message.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
    })?;
    ctx.validate_document(&doc).map_err(|errs| {
        errs.iter()
            .map(|e| {
                format!(
                    "line {}: {}",
                    e.line.unwrap_or(0),
                    e.message.clone().unwrap_or_default().trim()
                )
            })
            .collect()
    })
}

async fn bhxh_validate(m: &Mock, body: &Bytes) -> Result<(), Vec<String>> {
    let lock = m.xml_lock.clone();
    let b = body.clone();
    tokio::task::spawn_blocking(move || {
        let _g = lock.lock();
        validate_bhxh(&b)
    })
    .await
    .unwrap_or_else(|e| Err(vec![e.to_string()]))
}

async fn bhxh_submit(State(m): State<Mock>, headers: HeaderMap, body: Bytes) -> Response {
    let a = Agency::Bhxh;
    m.count(a, |c| c.calls += 1);
    m.latency().await;
    let flat = lienthong_adapters::xml::read_flat(&body, BHXH_NS);
    let ma = flat
        .as_ref()
        .ok()
        .and_then(|f| f.get("MaHoSo").map(str::to_string))
        .unwrap_or_default();
    let mut behaviour = None;
    if let Some((s, ra)) = m.injected(a, &ma) {
        if s >= 100 {
            return injected_answer(a, s, ra);
        }
        behaviour = Some(s);
    }
    if let Err(errs) = bhxh_validate(&m, &body).await {
        m.count(a, |c| c.invalid += 1);
        return answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_XSD", &errs.join("; "))),
        ));
    }
    let Ok(f) = flat else {
        return answer(&bhxh_receipt(false, &ma, "", Some(("E_XML", "unreadable"))));
    };
    if f.root != "HoSoBHXH" {
        return answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_XML", "expected HoSoBHXH")),
        ));
    }
    let Some(key) = idem_key(&headers) else {
        return answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_IDEMPOTENCY", "Idempotency-Key header is required")),
        ));
    };
    if f.get("MaThamChieu") != Some(key.as_str()) {
        return answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_IDEMPOTENCY", "Idempotency-Key differs from MaThamChieu")),
        ));
    }
    let receipt = format!("BHXH-5127-{}", &key[key.len().saturating_sub(10)..]);
    let record = json!({"xml": String::from_utf8_lossy(&body)});
    let claimed = m.claim_key(
        a,
        &key,
        &ma,
        &receipt,
        record,
        |owner| {
            let text = format!("Idempotency-Key already used for dossier {owner}");
            bhxh_receipt(false, &ma, "", Some(("E_IDEMPOTENCY", &text)))
        },
        || bhxh_receipt(true, &ma, &receipt, None),
    );
    let Some((ans, first)) = claimed else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if first {
        m.count(a, |c| c.effects += 1);
        let dec = m.decision(a, &ma);
        let refused = m.refuses(dec.as_ref());
        let loai = f.get("LoaiYeuCau").unwrap_or("");
        let mut b = lienthong_adapters::xml::Builder::new("KetQuaHoSo", BHXH_NS);
        b.text("MaHoSo", &ma)
            .text("MaThamChieu", &key)
            .text("MaTiepNhan", &receipt);
        let today = &now14()[..8];
        if refused {
            b.text("TrangThaiHoSo", "3")
                .text("ThoiDiemXuLy", &now14())
                .text("NguoiXuLy", "Cán bộ BHXH (giả lập)")
                .text("NoiDungXuLy", "Không giải quyết")
                .text(
                    "LyDo",
                    dec.as_ref()
                        .and_then(|d| d.reason.as_deref())
                        .unwrap_or("Thông tin đối tượng không khớp cơ sở dữ liệu BHXH (giả lập)"),
                );
        } else if loai == "TRO_CAP_MAI_TANG" {
            b.text("TrangThaiHoSo", "9")
                .text("ThoiDiemXuLy", &now14())
                .text("NguoiXuLy", "Trần Văn Quý (giả lập)")
                .text("NoiDungXuLy", "Đã giải quyết trợ cấp mai táng")
                .text("SoTienTroCap", "23400000");
        } else {
            let ms = format!("51{:08}", rand::rng().random_range(0..100_000_000u32));
            b.text("TrangThaiHoSo", "9")
                .text("ThoiDiemXuLy", &now14())
                .text("NguoiXuLy", "Nguyễn Thị Thu Hằng (giả lập)")
                .text("NoiDungXuLy", "Đã cấp thẻ BHYT cho trẻ em dưới 6 tuổi")
                .text("MaSoBHXH", &ms)
                .text("SoTheBHYT", &format!("TE151{ms}"))
                .text("GiaTriTuNgay", today)
                .text("GiaTriDenNgay", "20321119")
                .text("NoiDangKyKCB", f.get("NoiDangKyKCB").unwrap_or("Trạm Y tế"));
        }
        if let Some(url) = f.get("UrlPhanHoi") {
            m.callback_later(Later {
                traceparent: None,
                agency: a,
                ma: ma.clone(),
                decided: if refused { 3 } else { 9 },
                url: url.to_string(),
                body: String::from_utf8_lossy(&b.finish("KetQuaHoSo")).into_owned(),
                content_type: "application/xml; charset=utf-8",
                key: None,
                delay_ms: dec.and_then(|d| d.delay_ms),
                notice: None,
            });
        }
    } else {
        m.count(a, |c| c.replays += 1);
    }
    answered(&ans, behaviour).await
}

async fn bhxh_status(State(m): State<Mock>, Path(ma): Path<String>) -> Response {
    let found = m
        .data
        .lock()
        .ok()
        .and_then(|d| d.dossiers.get(&(Agency::Bhxh, ma.clone())).cloned());
    match found {
        Some((receipt, st)) => {
            let mut b = lienthong_adapters::xml::Builder::new("TrangThai", BHXH_NS);
            b.text("MaHoSo", &ma)
                .text("MaTiepNhan", &receipt)
                .text("TrangThaiHoSo", &st.to_string())
                .text("ThoiDiemCapNhat", &now14());
            answer(&Answer {
                status: StatusCode::OK,
                content_type: "application/xml; charset=utf-8",
                body: String::from_utf8_lossy(&b.finish("TrangThai")).into_owned(),
            })
        }
        None => answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ")),
        )),
    }
}

async fn bhxh_cancel(State(m): State<Mock>, Path(ma): Path<String>, body: Bytes) -> Response {
    m.count(Agency::Bhxh, |c| c.cancels += 1);
    if let Err(errs) = bhxh_validate(&m, &body).await {
        return answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_XSD", &errs.join("; "))),
        ));
    }
    let Ok(mut d) = m.data.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match d.dossiers.get_mut(&(Agency::Bhxh, ma.clone())) {
        None => answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_KHONG_TIM_THAY", "Không tìm thấy hồ sơ")),
        )),
        Some((_, 3 | 9)) => answer(&bhxh_receipt(
            false,
            &ma,
            "",
            Some(("E_DA_GIAI_QUYET", "Hồ sơ đã được giải quyết")),
        )),
        Some((receipt, st)) => {
            *st = 8;
            let r = receipt.clone();
            answer(&bhxh_receipt(true, &ma, &r, None))
        }
    }
}

async fn stats(State(m): State<Mock>) -> Response {
    let counts = m.data.lock().map(|d| d.counts.clone()).unwrap_or_default();
    let mut out = serde_json::Map::new();
    for a in [
        Agency::Police,
        Agency::Bhxh,
        Agency::Edxml,
        Agency::Tax,
        Agency::Dvcqg,
        Agency::Customs,
        Agency::CivilStatus,
        Agency::CivilStatusSoap,
    ] {
        out.insert(
            agency_name(a),
            json!(counts.get(&a).cloned().unwrap_or_default()),
        );
    }
    Json(Value::Object(out)).into_response()
}

async fn requests(State(m): State<Mock>, Path((agency, ma)): Path<(String, String)>) -> Response {
    // The serde name (`civil_status`), or with a hyphen (`civil-status`).
    let a: Agency = match serde_json::from_value(json!(agency.replace('-', "_"))) {
        Ok(a) => a,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let v = m
        .data
        .lock()
        .ok()
        .and_then(|d| d.requests.get(&(a, ma)).cloned())
        .unwrap_or_default();
    Json(v).into_response()
}

/// Note the `traceparent` a request carries (the bus continues its trace into the agency).
async fn note_traceparent(
    State(m): State<Mock>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        && let Ok(mut d) = m.data.lock()
    {
        let at = format!("{} {}", req.method(), req.uri().path());
        d.traceparents.push((at, tp.to_string()));
    }
    next.run(req).await
}

/// `GET /_mock/traceparents`: every `traceparent` received, `[[method and path, value]…]`.
async fn traceparents(State(m): State<Mock>) -> Response {
    let v = m
        .data
        .lock()
        .map(|d| d.traceparents.clone())
        .unwrap_or_default();
    Json(v).into_response()
}

async fn add_fault(State(m): State<Mock>, Json(f): Json<Fault>) -> Response {
    let q: VecDeque<u16> = f.responses.iter().copied().collect();
    if let Ok(mut d) = m.data.lock() {
        d.faults.push((f, q));
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Script how an agency decides a dossier (see the module doc): 204, or 400 with
/// `{"error"}` when the agency's interface cannot express the decision.
async fn add_decision(State(m): State<Mock>, Json(dec): Json<Decision>) -> Response {
    if let Err(why) = dec.check() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response();
    }
    if let Ok(mut d) = m.data.lock() {
        d.decisions.insert((dec.agency, dec.ma_ho_so.clone()), dec);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(m): State<Mock>) -> Response {
    if let Ok(mut d) = m.data.lock() {
        *d = Data::default();
    }
    StatusCode::NO_CONTENT.into_response()
}
