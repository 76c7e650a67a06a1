//! DVCQG progress sync adapter: keeps the National Public Service Portal (Cổng Dịch vụ công
//! quốc gia) in step with a dossier, as the open-source OpenCPS (`VietOpenCPS/opencps-v2`,
//! `DVCQGIntegrationActionImpl.java`) does it:
//!
//! 1. log in: `POST {endpoint}{auth_path}` with header `dstcode` and body
//!    `{"username", "password"}`; the answer's `session` is kept and reused (logged in again
//!    once when a call fails for want of a session);
//! 2. every call: `POST {endpoint}{integration_path}`, header `dstcode`, body
//!    `{"session", "madonvi", "service", …}`;
//! 3. `TraCuuHoSo` (`mahoso`): a non-empty `result` array means the portal has the dossier, so
//!    `DongBoHoSoMC` is sent with `isUpdating` `"True"`, else `"False"`;
//! 4. `DongBoHoSoMC` (`isUpdating`, `data`: [dossier]) then `CapNhatTienDoHoSoMC`
//!    (`data`: [progress]).
//!
//! Success is `error_code` `"00"` **inside a 200 body** (OpenCPS also takes the number 0, and so
//! does this adapter); any other `error_code` in a 200 is a failure (permanent). Under the one
//! rule of [`crate::adapter`], a 2xx that is not a JSON object with an `error_code` (HTML,
//! empty, truncated, XML), a login answer without `session` and a `TraCuuHoSo` answer without
//! a `result` array are unknown outcomes, never failures. The status lookup is `TraCuuHoSo`:
//! an empty `result` is "not found". Dates are `yyyyMMddHHmmss`,
//! Asia/Ho_Chi_Minh. Registry settings: `auth_path` (default `/auth`), `integration_path`
//! (default `/integration`; the real paths are deployment configuration, not in OpenCPS's
//! source), `username`, `password`, `dstcode`, `madonvi`. Idempotency: `DongBoHoSoMC` is an
//! upsert by `MaHoSo`; a repeated `CapNhatTienDoHoSoMC` of the same message carries the same
//! `ThoiDiemXuLy` and `TrangThai` (whether the portal dedupes progress entries is not
//! documented: unverified).
//!
//! Dates the sender gives in `payload.data` (the process manager gives them all, already as
//! `yyyyMMddHHmmss`) win over the envelope's `sent_at`: `ngay_tiep_nhan` (NgayTiepNhan),
//! `ngay_hen_tra` (NgayHenTra), `thoi_diem_xu_ly` (ThoiDiemXuLy), `ngay_bat_dau` (NgayBatDau),
//! `ngay_ket_thuc_theo_quy_dinh` (NgayKetThucTheoQuyDinh, the legal deadline); the handler unit
//! and officer are `payload.handler`.

use std::sync::Arc;

use async_trait::async_trait;
use lienthong_core::{Envelope, Kind};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::adapter::{Adapter, AgencyRequest, Operation, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::outcome::{AgencyReply, AgencyStatus, Outcome, StatusLookup};
use crate::http::{
    exchange, failure_status, lookup_failed, lookup_unreadable, snippet, unreadable,
};

/// Registry name of this adapter.
pub const NAME: &str = "dvcqg-sync";

/// The adapter for the portal.
pub struct Dvcqg {
    client: crate::http::Agent,
    auth_url: String,
    integration_url: String,
    username: String,
    password: String,
    dstcode: String,
    madonvi: String,
    session: Mutex<Option<String>>,
}

/// The adapter of a unit with `adapter = "dvcqg-sync"` (its registration).
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    Ok(Arc::new(Dvcqg::new(s.client.clone(), &s.endpoint, s.settings)))
}

fn setting(settings: &Map<String, Value>, k: &str, default: &str) -> String {
    settings
        .get(k)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// `sent_at` (RFC 3339) as `yyyyMMddHHmmss` in Vietnam time; "" when unreadable.
pub fn dvcqg_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| lienthong_core::clock::to_dvcqg(t.with_timezone(&chrono::Utc)))
        .unwrap_or_default()
}

/// Whether a 200 body says success: `error_code` `"00"` (or the number 0, as OpenCPS accepts).
pub fn succeeded(body: &Value) -> bool {
    match body.get("error_code") {
        Some(Value::String(s)) => s == "00" || s == "0",
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        _ => false,
    }
}

fn error_text(body: &Value) -> String {
    let code = body
        .get("error_code")
        .map(|c| c.to_string())
        .unwrap_or_else(|| "(none)".into());
    let msg = ["message", "error_message", "msg"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .unwrap_or("");
    format!("error_code {code} {msg}").trim().to_string()
}

impl Dvcqg {
    /// An adapter for the portal at `endpoint` with the unit's `settings` (see the module doc).
    pub fn new(client: crate::http::Agent, endpoint: &str, settings: &Map<String, Value>) -> Self {
        let base = endpoint.trim_end_matches('/');
        Dvcqg {
            client,
            auth_url: format!("{base}{}", setting(settings, "auth_path", "/auth")),
            integration_url: format!(
                "{base}{}",
                setting(settings, "integration_path", "/integration")
            ),
            username: setting(settings, "username", ""),
            password: setting(settings, "password", ""),
            dstcode: setting(settings, "dstcode", ""),
            madonvi: setting(settings, "madonvi", ""),
            session: Mutex::new(None),
        }
    }

    /// One call: a 2xx JSON object carrying `error_code` (whatever its value), or the outcome.
    async fn post(&self, op: &str, url: &str, body: &Value) -> Result<Value, Outcome> {
        let request = self
            .client
            .post(url)
            .header("dstcode", &self.dstcode)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(body);
        let r = exchange(&self.client, op, request).await?;
        if !r.status.is_success() {
            return Err(failure_status(op, r.status, &r.headers, snippet(&r.body)));
        }
        match serde_json::from_slice::<Value>(&r.body) {
            Ok(v) if v.get("error_code").is_some_and(|c| !c.is_null()) => Ok(v),
            Ok(v) if v.is_object() => Err(unreadable(
                op,
                r.status,
                "the answer has no error_code",
                &r.body,
            )),
            Ok(_) => Err(unreadable(
                op,
                r.status,
                "the body is JSON but not an object",
                &r.body,
            )),
            Err(e) => Err(unreadable(
                op,
                r.status,
                format!("the body is not JSON ({e})"),
                &r.body,
            )),
        }
    }

    /// The session, logging in when there is none.
    async fn session(&self, fresh: bool) -> Result<String, Outcome> {
        let mut s = self.session.lock().await;
        if !fresh && let Some(v) = s.as_ref() {
            return Ok(v.clone());
        }
        let body = json!({"username": self.username, "password": self.password});
        let v = self.post("login", &self.auth_url, &body).await?;
        if !succeeded(&v) {
            return Err(Outcome::Permanent {
                reason: format!("login refused: {}", error_text(&v)),
            });
        }
        match v.get("session").and_then(Value::as_str) {
            Some(tok) if !tok.is_empty() => {
                *s = Some(tok.to_string());
                Ok(tok.to_string())
            }
            _ => Err(unreadable(
                "login",
                reqwest::StatusCode::OK,
                "error_code 00 without a session",
                v.to_string().as_bytes(),
            )),
        }
    }

    /// Call `service` with `fields`; success is `error_code` "00" in the 200 body. A failure
    /// is retried once after a new login (the session may have expired).
    pub async fn call(&self, service: &str, fields: Map<String, Value>) -> Result<Value, Outcome> {
        let mut last = None;
        for fresh in [false, true] {
            let session = self.session(fresh).await?;
            let mut body = Map::new();
            body.insert("session".into(), json!(session));
            body.insert("madonvi".into(), json!(self.madonvi));
            body.insert("service".into(), json!(service));
            body.extend(fields.clone());
            let v = self
                .post(service, &self.integration_url, &Value::Object(body))
                .await?;
            if succeeded(&v) {
                return Ok(v);
            }
            last = Some(v);
        }
        Err(Outcome::Permanent {
            reason: format!(
                "{service}: {}",
                last.as_ref().map(error_text).unwrap_or_default()
            ),
        })
    }

    /// `TraCuuHoSo`: the portal's records of the dossier (the `result` array; empty when it
    /// has none). An answer without a `result` array is an unknown outcome.
    pub async fn lookup(&self, ma_ho_so: &str) -> Result<Vec<Value>, Outcome> {
        let mut f = Map::new();
        f.insert("mahoso".into(), json!(ma_ho_so));
        let v = self.call("TraCuuHoSo", f).await?;
        match v.get("result").and_then(Value::as_array) {
            Some(a) => Ok(a.clone()),
            None => Err(unreadable(
                "TraCuuHoSo",
                reqwest::StatusCode::OK,
                "error_code 00 without a result array",
                v.to_string().as_bytes(),
            )),
        }
    }

    /// `TraCuuHoSo`: whether the portal already has the dossier.
    pub async fn exists(&self, ma_ho_so: &str) -> Result<bool, Outcome> {
        Ok(!self.lookup(ma_ho_so).await?.is_empty())
    }

    /// The `DongBoHoSoMC` dossier object for `env` (field names as OpenCPS sends them).
    pub fn dossier(env: &Envelope) -> Value {
        let data = env.payload.data.clone().unwrap_or_default();
        let d = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let applicant = env.payload.applicant.clone().unwrap_or_default();
        let status = env.status.map(|s| s.0).unwrap_or(match env.kind.as_str() {
            Kind::RESULT => 9,
            Kind::FORWARD => 2,
            _ => 4,
        });
        let files: Vec<Value> = env
            .attachments
            .iter()
            .map(|a| {
                json!({"TenTepDinhKem": a.name, "MaThanhPhanHoSo": "", "TepDinhKemId": a.sha256,
                       "DuongDanTaiTepTin": a.reference.clone().unwrap_or_default(), "IsDeleted": "False"})
            })
            .collect();
        json!({
            "MaHoSo": env.ma_ho_so,
            "MaTTHC": env.ma_tthc,
            "TenTTHC": d("ten_tthc"),
            "MaLinhVuc": d("ma_linh_vuc"),
            "TenLinhVuc": d("ten_linh_vuc"),
            "ChuHoSo": applicant.ho_ten,
            "LoaiDoiTuong": "1",
            "MaDoiTuong": applicant.so_dinh_danh.clone().unwrap_or_default(),
            "ThongTinKhac": "",
            "Email": "",
            "Fax": "",
            "SoDienThoai": applicant.so_dien_thoai.clone().unwrap_or_default(),
            "TrichYeuHoSo": d("trich_yeu"),
            "NgayTiepNhan": data.get("ngay_tiep_nhan").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| dvcqg_time(&env.sent_at)),
            "NgayHenTra": d("ngay_hen_tra"),
            "TrangThaiHoSo": status.to_string(),
            "NgayTra": if status >= 9 { dvcqg_time(&env.sent_at) } else { String::new() },
            "ThongTinTra": "",
            "HinhThuc": "0",
            "NgayKetThucXuLy": if status >= 9 { dvcqg_time(&env.sent_at) } else { String::new() },
            "DonViXuLy": env.sender,
            "GhiChu": "",
            "TaiLieuNop": files,
            "DanhSachLePhi": [],
            "DanhSachTepDinhKemKhac": [],
            "DanhSachHoSoBoSung": [],
            "DanhSachGiayToKetQua": [],
        })
    }

    /// The `CapNhatTienDoHoSoMC` progress object for `env`.
    pub fn progress(env: &Envelope) -> Value {
        let h = env.payload.handler.clone().unwrap_or_default();
        let data = env.payload.data.clone().unwrap_or_default();
        let status = env.status.map(|s| s.0).unwrap_or(match env.kind.as_str() {
            Kind::RESULT => 9,
            Kind::FORWARD => 2,
            _ => 4,
        });
        json!({
            "MaHoSo": env.ma_ho_so,
            "NguoiXuLy": h.officer.unwrap_or_default(),
            "ChucDanh": h.title.unwrap_or_default(),
            "ThoiDiemXuLy": data.get("thoi_diem_xu_ly").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| dvcqg_time(&env.sent_at)),
            "PhongBanXuLy": h.unit.unwrap_or_else(|| env.sender.clone()),
            "NoiDungXuLy": env.payload.reason.clone().unwrap_or_default(),
            "TrangThai": status.to_string(),
            "NgayBatDau": data.get("ngay_bat_dau").and_then(Value::as_str).unwrap_or(""),
            "NgayKetThucTheoQuyDinh": data.get("ngay_ket_thuc_theo_quy_dinh").and_then(Value::as_str).unwrap_or(""),
        })
    }
}

#[async_trait]
impl Adapter for Dvcqg {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "the portal sync"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Submit, Operation::Cancel, Operation::Progress]
    }

    /// Every operation is a sync: the body is `{"dossier": …, "progress": …}`
    /// ([`Dvcqg::dossier`], [`Dvcqg::progress`]), sent as `DongBoHoSoMC` then
    /// `CapNhatTienDoHoSoMC` to `{endpoint}{integration_path}`.
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        let body = json!({"dossier": Self::dossier(env), "progress": Self::progress(env)});
        let bytes = serde_json::to_vec(&body).map_err(|e| NotDeliverable::Unmappable {
            document: "DongBoHoSoMC",
            reason: e.to_string(),
        })?;
        Ok(AgencyRequest::new(
            op,
            "DongBoHoSoMC",
            self.integration_url.clone(),
            env,
            bytes,
        ))
    }

    /// `TraCuuHoSo` (does the portal have the dossier?), then `DongBoHoSoMC` with
    /// `isUpdating` accordingly, then `CapNhatTienDoHoSoMC`.
    async fn send(&self, req: &AgencyRequest) -> Outcome {
        let (dossier, progress) = match serde_json::from_slice::<Value>(&req.body) {
            Ok(mut v) => (v["dossier"].take(), v["progress"].take()),
            Err(e) => {
                return Outcome::Permanent {
                    reason: format!("the prepared sync request is not JSON: {e}"),
                };
            }
        };
        let exists = match self.exists(&req.ma_ho_so).await {
            Ok(e) => e,
            Err(o) => return o,
        };
        let mut f = Map::new();
        f.insert(
            "isUpdating".into(),
            json!(if exists { "True" } else { "False" }),
        );
        f.insert("data".into(), json!([dossier]));
        if let Err(o) = self.call("DongBoHoSoMC", f).await {
            return o;
        }
        let trang_thai = progress["TrangThai"].as_str().unwrap_or("").to_string();
        let mut p = Map::new();
        p.insert("data".into(), json!([progress]));
        match self.call("CapNhatTienDoHoSoMC", p).await {
            Ok(_) => Outcome::Delivered {
                receipt: format!(
                    "DVCQG {} and progress {trang_thai}",
                    if exists { "updated" } else { "inserted" },
                ),
            },
            Err(o) => o,
        }
    }

    /// `TraCuuHoSo` (after a login): a non-empty `result` is found (its first record's
    /// `TrangThaiHoSo`), an empty one not found; also the test call of `lienthong check`, which
    /// thereby proves the login, the session, `dstcode` and `madonvi`.
    async fn status(&self, ma_ho_so: &str) -> StatusLookup {
        let records = match self.lookup(ma_ho_so).await {
            Ok(r) => r,
            Err(Outcome::Unknown {
                reason,
                answer: Some(answer),
            }) => return StatusLookup::Unreadable { reason, answer },
            Err(o) => return lookup_failed(o),
        };
        let Some(first) = records.first() else {
            return StatusLookup::NotFound {
                reason: format!("TraCuuHoSo: the portal has no dossier {ma_ho_so}"),
            };
        };
        let status = first
            .get("TrangThaiHoSo")
            .and_then(|s| {
                s.as_str()
                    .and_then(|x| x.parse::<u8>().ok())
                    .or(s.as_u64().and_then(|n| u8::try_from(n).ok()))
            })
            .filter(|n| (1..=10).contains(n));
        match status {
            Some(status) => StatusLookup::Found(AgencyStatus {
                ma_ho_so: ma_ho_so.to_string(),
                receipt: None,
                status,
            }),
            None => lookup_unreadable(
                "TraCuuHoSo",
                reqwest::StatusCode::OK,
                "the portal's record has no TrangThaiHoSo 1–10",
                first.to_string().as_bytes(),
            ),
        }
    }

    fn parse_callback(&self, _: Option<&str>, _: &[u8]) -> Result<AgencyReply, CallbackError> {
        Err(CallbackError::NoCallbacks {
            interface: "the portal sync",
        })
    }
}
