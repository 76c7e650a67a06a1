//! Customs adapter: REST/JSON, reference format in `schemas/agencies/customs/` (submit → 202
//! receipt, result by callback, status lookup; `Idempotency-Key` = the bus message id). No
//! documented liên thông flow involves Customs yet: it serves the **synthetic** procedure
//! `SYN.HQ.001` (confirming an import customs declaration), labelled synthetic in the catalogue.
//! Reads `payload.data.to_khai_hai_quan` (`so_to_khai`, `ngay_to_khai` YYYY-MM-DD, `so_khung`,
//! `so_may`) and the applicant.

use std::sync::Arc;

use async_trait::async_trait;
use lienthong_core::Envelope;
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::http::post_json_for_receipt;
use crate::mapping::{date8, sent_time};
use crate::outcome::{AgencyReply, Outcome, StatusLookup};

/// Registry name of this adapter.
pub const NAME: &str = "customs-rest";

/// The adapter for one Customs unit.
pub struct CustomsRest {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
    results_to: ResultsTo,
}

/// The adapter of a unit with `adapter = "customs-rest"` (its registration).
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    let mut a = CustomsRest::new(s.client.clone(), &s.endpoint, &s.callback_url);
    a.results_to = s.results_to();
    Ok(Arc::new(a))
}

impl CustomsRest {
    /// An adapter calling `endpoint` (e.g. `http://127.0.0.1:8490/customs`).
    pub fn new(client: crate::http::Agent, endpoint: &str, callback_url: &str) -> Self {
        CustomsRest {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            callback_url: callback_url.to_string(),
            results_to: ResultsTo::Origin,
        }
    }

    /// The `XacNhanToKhai` body for `env`.
    ///
    /// Errors: no `to_khai_hai_quan` with a 12-digit `so_to_khai` and a date.
    pub fn submit_body(&self, env: &Envelope) -> Result<Value, String> {
        let decl = env
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get("to_khai_hai_quan"))
            .ok_or("payload.data.to_khai_hai_quan (the customs declaration) is missing")?;
        let so = decl
            .get("so_to_khai")
            .and_then(Value::as_str)
            .filter(|s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or("to_khai_hai_quan.so_to_khai must be 12 digits")?;
        let ngay = decl
            .get("ngay_to_khai")
            .and_then(Value::as_str)
            .and_then(date8)
            .ok_or("to_khai_hai_quan.ngay_to_khai (YYYY-MM-DD) is missing or invalid")?;
        let applicant = env
            .payload
            .applicant
            .clone()
            .ok_or("payload.applicant is missing")?;
        let mut who = json!({"HoVaTen": applicant.ho_ten});
        if let Some(v) = &applicant.so_dinh_danh {
            who["SoDinhDanh"] = json!(v);
        }
        if let Some(v) = &applicant.so_dien_thoai {
            who["SoDienThoai"] = json!(v);
        }
        let mut body = json!({
            "MaHoSo": env.ma_ho_so, "MaThamChieu": env.message_id, "MaTTHC": env.ma_tthc,
            "MaDonViGui": env.sender, "NgayGui": sent_time(env)?,
            "UrlPhanHoi": self.callback_url, "SoToKhai": so, "NgayToKhai": ngay, "NguoiNopHoSo": who,
        });
        for (from, to) in [("so_khung", "SoKhung"), ("so_may", "SoMay")] {
            if let Some(v) = decl.get(from).and_then(Value::as_str) {
                body[to] = json!(v);
            }
        }
        Ok(body)
    }
}

#[async_trait]
impl Adapter for CustomsRest {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "the Customs interface"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Submit]
    }

    /// Submit: `POST {endpoint}/v1/xac-nhan-to-khai` with [`CustomsRest::submit_body`].
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        let unmappable = |reason: String| NotDeliverable::Unmappable {
            document: "XacNhanToKhai",
            reason,
        };
        let body = self.submit_body(env).map_err(unmappable)?;
        let bytes = serde_json::to_vec(&body).map_err(|e| unmappable(e.to_string()))?;
        let url = format!("{}/v1/xac-nhan-to-khai", self.endpoint);
        Ok(AgencyRequest::new(op, "submit", url, env, bytes))
    }

    async fn send(&self, req: &AgencyRequest) -> Outcome {
        post_json_for_receipt(
            &self.client,
            req.label,
            &req.url,
            &req.key,
            req.body.clone(),
        )
        .await
    }

    /// `GET {endpoint}/v1/xac-nhan-to-khai/{MaHoSo}` ([`crate::http::json_status_lookup`]).
    async fn status(&self, ma_ho_so: &str) -> StatusLookup {
        let url = format!("{}/v1/xac-nhan-to-khai/{ma_ho_so}", self.endpoint);
        crate::http::json_status_lookup(&self.client, &url, ma_ho_so).await
    }

    /// The result: `{"MaHoSo", "MaThamChieu", "TrangThaiHoSo" (9 or 3), "KetQua": {...},
    /// "LyDo", "NguoiXuLy"}`.
    fn parse_callback(&self, _: Option<&str>, body: &[u8]) -> Result<AgencyReply, CallbackError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| CallbackError::Format(format!("the result is not JSON: {e}")))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("the result lacks {k}"))
        };
        let status = v
            .get("TrangThaiHoSo")
            .and_then(Value::as_u64)
            .filter(|n| (1..=10).contains(n))
            .ok_or("TrangThaiHoSo must be a number 1–10")? as u8;
        let mut result = Map::new();
        if let Some(k) = v.get("KetQua").and_then(Value::as_object) {
            for (key, val) in k {
                result.insert(crate::mapping::snake(key), val.clone());
            }
        }
        Ok(AgencyReply {
            ma_ho_so: s("MaHoSo")?,
            reference: s("MaThamChieu")?,
            receipt: v
                .get("MaTiepNhan")
                .and_then(Value::as_str)
                .map(str::to_string),
            status,
            result,
            reason: v.get("LyDo").and_then(Value::as_str).map(str::to_string),
            officer: v
                .get("NguoiXuLy")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
        .cleaned())
    }

    fn results_to(&self) -> ResultsTo {
        self.results_to
    }
}
