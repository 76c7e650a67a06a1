//! Police residence-registration adapter: REST/JSON, reference format in
//! `schemas/agencies/police-residence/` (submit → 202 receipt, result by callback, status
//! lookup, cancel; `Idempotency-Key` = the bus message id).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use lienthong_core::Envelope;
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::mapping::{
    blob_base_of, data_str, date8, fetchable, request_type, sent_time, sex_code, subject,
};
use crate::outcome::{AgencyReply, Outcome, StatusLookup};

/// Registry name of this adapter.
pub const NAME: &str = "police-rest";

/// The adapter for one Police unit.
pub struct PoliceRest {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
    blob_base: String,
    settings: Map<String, Value>,
    results_to: ResultsTo,
}

/// The adapter of a unit with `adapter = "police-rest"` (its registration).
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    let mut a = PoliceRest::new(s.client.clone(), &s.endpoint, &s.callback_url, s.settings.clone());
    a.results_to = s.results_to();
    Ok(Arc::new(a))
}

impl PoliceRest {
    /// An adapter calling `endpoint` (base URL, e.g. `http://127.0.0.1:8490/police`); results
    /// come back to `callback_url`. `settings.request_types` maps MaTTHC → LoaiYeuCau.
    pub fn new(
        client: crate::http::Agent,
        endpoint: &str,
        callback_url: &str,
        settings: Map<String, Value>,
    ) -> Self {
        PoliceRest {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            blob_base: blob_base_of(callback_url),
            callback_url: callback_url.to_string(),
            settings,
            results_to: ResultsTo::Origin,
        }
    }

    /// The submit body for `env` (public so tests and `lienthong` tools can show it).
    pub fn submit_body(&self, env: &Envelope) -> Result<Value, String> {
        let loai = request_type(&self.settings, &env.ma_tthc).ok_or_else(|| {
            format!(
                "police-rest has no request type for procedure {} (settings.request_types)",
                env.ma_tthc
            )
        })?;
        let (person, raw) = subject(env).ok_or("payload.data has neither tre (newborn) nor nguoi_mat (deceased): no citizen to register")?;
        let ngay_sinh = person
            .ngay_sinh
            .as_deref()
            .and_then(date8)
            .ok_or("the citizen's ngay_sinh (YYYY-MM-DD) is missing or invalid")?;
        let mut cong_dan = json!({ "HoVaTen": person.ho_ten, "NgaySinh": ngay_sinh });
        if let Some(g) = sex_code(person.gioi_tinh.as_deref()) {
            cong_dan["GioiTinh"] = json!(g);
        }
        if let Some(id) = &person.so_dinh_danh {
            cong_dan["SoDinhDanh"] = json!(id);
        }
        if let Some(d) = raw.get("ngay_mat").and_then(Value::as_str).and_then(date8) {
            cong_dan["NgayMat"] = json!(d);
        }
        let applicant = env.payload.applicant.clone().unwrap_or_default();
        let mut chu = json!({ "HoVaTen": applicant.ho_ten });
        if let Some(d) = applicant.ngay_sinh.as_deref().and_then(date8) {
            chu["NgaySinh"] = json!(d);
        }
        if let Some(g) = sex_code(applicant.gioi_tinh.as_deref()) {
            chu["GioiTinh"] = json!(g);
        }
        for (from, to) in [
            (&applicant.so_dinh_danh, "SoDinhDanh"),
            (&applicant.so_dien_thoai, "SoDienThoai"),
            (&applicant.dia_chi, "DiaChi"),
        ] {
            if let Some(v) = from {
                chu[to] = json!(v);
            }
        }
        let noi_cu_tru = data_str(env, &["noi_dang_ky_thuong_tru"])
            .or_else(|| raw.get("noi_thuong_tru").and_then(Value::as_str).map(str::to_string))
            .or(applicant.dia_chi.clone())
            .ok_or("no residence address (noi_dang_ky_thuong_tru, nguoi_mat.noi_thuong_tru or the applicant's dia_chi)")?;
        let files: Vec<Value> = env
            .attachments
            .iter()
            .map(|a| {
                let mut f = json!({ "TenTep": a.name, "LoaiTep": a.media_type, "KichThuoc": a.size_bytes, "MaBam": a.sha256 });
                match (&a.content_base64, &a.reference) {
                    (Some(c), _) => f["NoiDung"] = json!(c),
                    (None, Some(r)) => f["DuongDan"] = json!(fetchable(r, &self.blob_base)),
                    (None, None) => {}
                }
                f
            })
            .collect();
        let mut body = json!({
            "MaHoSo": env.ma_ho_so,
            "MaTTHC": env.ma_tthc,
            "MaThamChieu": env.message_id,
            "MaDonViGui": env.sender,
            "NgayGui": sent_time(env)?,
            "UrlPhanHoi": self.callback_url,
            "LoaiYeuCau": loai,
            "ChuHoSo": chu,
            "CongDan": cong_dan,
            "NoiCuTru": noi_cu_tru,
        });
        if let Some(d) = &env.payload.data {
            body["DuLieuHoSo"] = Value::Object(d.clone());
        }
        if !files.is_empty() {
            body["TepDinhKem"] = Value::Array(files);
        }
        Ok(body)
    }

}

#[async_trait]
impl Adapter for PoliceRest {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "the police residence interface"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Submit, Operation::Cancel]
    }

    /// Submit: `POST {endpoint}/v1/ho-so` with [`PoliceRest::submit_body`]; cancel: `POST
    /// {endpoint}/v1/ho-so/{MaHoSo}/huy` with `{MaHoSo, MaThamChieu, LyDo, NgayGui}`.
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        let unmappable = |reason: String| NotDeliverable::Unmappable {
            document: "the police submit format",
            reason,
        };
        let (label, url, body) = match op {
            Operation::Cancel => {
                let body = json!({
                    "MaHoSo": env.ma_ho_so,
                    "MaThamChieu": env.message_id,
                    "LyDo": env.payload.reason.clone().unwrap_or_else(|| "Dừng xử lý theo yêu cầu".into()),
                    "NgayGui": sent_time(env).map_err(unmappable)?,
                });
                let url = format!("{}/v1/ho-so/{}/huy", self.endpoint, env.ma_ho_so);
                ("cancel", url, body)
            }
            _ => (
                "submit",
                format!("{}/v1/ho-so", self.endpoint),
                self.submit_body(env).map_err(unmappable)?,
            ),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| unmappable(e.to_string()))?;
        Ok(AgencyRequest::new(op, label, url, env, bytes))
    }

    async fn send(&self, req: &AgencyRequest) -> Outcome {
        crate::http::post_json_for_receipt(
            &self.client,
            req.label,
            &req.url,
            &req.key,
            req.body.clone(),
        )
        .await
    }

    /// `GET {endpoint}/v1/ho-so/{MaHoSo}` ([`crate::http::json_status_lookup`]).
    async fn status(&self, ma_ho_so: &str) -> StatusLookup {
        let url = format!("{}/v1/ho-so/{ma_ho_so}", self.endpoint);
        crate::http::json_status_lookup(&self.client, &url, ma_ho_so).await
    }

    fn parse_callback(
        &self,
        _content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AgencyReply, CallbackError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Format(format!("callback body is not JSON: {e}")))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let ma_ho_so = s("MaHoSo").ok_or("callback lacks MaHoSo")?;
        let reference = s("MaThamChieu").ok_or("callback lacks MaThamChieu")?;
        let status = v
            .get("TrangThaiHoSo")
            .and_then(Value::as_u64)
            .ok_or("callback lacks TrangThaiHoSo")?;
        if !(1..=10).contains(&status) {
            return Err(format!("callback TrangThaiHoSo {status} is outside 1–10").into());
        }
        if status == 9 && v.get("KetQua").and_then(Value::as_object).is_none() {
            return Err("a callback with TrangThaiHoSo 9 must carry KetQua".into());
        }
        if status == 3 && s("LyDo").is_none() {
            return Err("a callback with TrangThaiHoSo 3 must carry LyDo".into());
        }
        let mut result = Map::new();
        if let Some(k) = v.get("KetQua").and_then(Value::as_object) {
            for (from, to) in [
                ("NoiThuongTru", "noi_thuong_tru"),
                ("NgayDangKy", "ngay_dang_ky"),
                ("SoHoSoCuTru", "so_ho_so_cu_tru"),
            ] {
                if let Some(x) = k.get(from) {
                    result.insert(to.into(), x.clone());
                }
            }
        }
        if let Some(r) = s("MaTiepNhan") {
            result.insert("ma_tiep_nhan".into(), json!(r));
        }
        if let Some(t) = s("ThoiDiemXuLy") {
            result.insert("thoi_diem_xu_ly".into(), json!(t));
        }
        if let Some(t) = s("NoiDungXuLy") {
            result.insert("noi_dung_xu_ly".into(), json!(t));
        }
        Ok(AgencyReply {
            ma_ho_so,
            reference,
            receipt: s("MaTiepNhan"),
            status: status as u8,
            result,
            reason: s("LyDo").or(s("NoiDungXuLy")),
            officer: s("NguoiXuLy"),
        }
        .cleaned())
    }

    fn results_to(&self) -> ResultsTo {
        self.results_to
    }
}

/// Decode an attachment's inline content (used by tests and tools).
pub fn decode_inline(b64: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())
}
