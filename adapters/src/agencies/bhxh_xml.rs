//! Social Insurance (BHXH) adapter: XML over HTTP built and read with quick-xml, reference
//! format in `schemas/agencies/bhxh/bhxh.xsd` (submit → 200 `BienNhan`, which may still say
//! `LOI`; result by `KetQuaHoSo` callback; status lookup; cancel; `Idempotency-Key` = the bus
//! message id, also sent as `MaThamChieu`).

use std::sync::Arc;

use async_trait::async_trait;
use lienthong_core::Envelope;
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::mapping::{
    blob_base_of, data_str, date8, fetchable, request_type, scalars, sent_time, sex_code, subject,
};
use crate::outcome::{AgencyReply, Outcome, StatusLookup};
use crate::xml::{Builder, read_flat};

/// Registry name of this adapter.
pub const NAME: &str = "bhxh-xml";

/// XML namespace of the BHXH reference interface.
pub const NS: &str = "urn:lienthong:agency:bhxh:1";

/// The adapter for one Social Insurance unit.
pub struct BhxhXml {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
    blob_base: String,
    settings: Map<String, Value>,
    results_to: ResultsTo,
}

/// The adapter of a unit with `adapter = "bhxh-xml"` (its registration).
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    let mut a = BhxhXml::new(s.client.clone(), &s.endpoint, &s.callback_url, s.settings.clone());
    a.results_to = s.results_to();
    Ok(Arc::new(a))
}

impl BhxhXml {
    /// An adapter calling `endpoint` (e.g. `http://127.0.0.1:8490/bhxh`); `settings.request_types`
    /// maps MaTTHC → LoaiYeuCau.
    pub fn new(
        client: crate::http::Agent,
        endpoint: &str,
        callback_url: &str,
        settings: Map<String, Value>,
    ) -> Self {
        BhxhXml {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            blob_base: blob_base_of(callback_url),
            callback_url: callback_url.to_string(),
            settings,
            results_to: ResultsTo::Origin,
        }
    }

    /// The `HoSoBHXH` document for `env`.
    pub fn submit_body(&self, env: &Envelope) -> Result<Vec<u8>, String> {
        let loai = request_type(&self.settings, &env.ma_tthc).ok_or_else(|| {
            format!(
                "bhxh-xml has no request type for procedure {} (settings.request_types)",
                env.ma_tthc
            )
        })?;
        let (person, raw) = subject(env).ok_or(
            "payload.data has neither tre (child) nor nguoi_mat (deceased): no insured person",
        )?;
        let ngay_sinh = person
            .ngay_sinh
            .as_deref()
            .and_then(date8)
            .ok_or("the insured person's ngay_sinh (YYYY-MM-DD) is missing or invalid")?;
        let gioi_tinh = sex_code(person.gioi_tinh.as_deref())
            .ok_or("the insured person's gioi_tinh (nam/nu) is missing")?;
        let applicant = env.payload.applicant.clone().unwrap_or_default();
        let mut b = Builder::new("HoSoBHXH", NS);
        b.text("MaHoSo", &env.ma_ho_so)
            .text("MaTTHC", &env.ma_tthc)
            .text("MaThamChieu", &env.message_id)
            .text("MaDonViGui", &env.sender)
            .text("NgayGui", &sent_time(env)?)
            .text("UrlPhanHoi", &self.callback_url)
            .text("LoaiYeuCau", &loai);
        b.open("DoiTuong")
            .text("HoVaTen", &person.ho_ten)
            .text("NgaySinh", &ngay_sinh)
            .text("GioiTinh", &gioi_tinh.to_string());
        if let Some(id) = &person.so_dinh_danh {
            b.text("SoDinhDanh", id);
        }
        if let Some(m) = raw.get("ma_so_bhxh").and_then(Value::as_str) {
            b.text("MaSoBHXH", m);
        }
        if let Some(a) = raw
            .get("noi_thuong_tru")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(data_str(env, &["noi_dang_ky_thuong_tru"]))
        {
            b.text("DiaChi", &a);
        }
        if let Some(d) = raw.get("ngay_mat").and_then(Value::as_str).and_then(date8) {
            b.text("NgayMat", &d);
        }
        b.close("DoiTuong");
        b.open("NguoiKhai").text("HoVaTen", &applicant.ho_ten);
        if let Some(v) = &applicant.so_dinh_danh {
            b.text("SoDinhDanh", v);
        }
        if let Some(v) = &applicant.so_dien_thoai {
            b.text("SoDienThoai", v);
        }
        if let Some(v) = &applicant.quan_he {
            b.text("QuanHe", v);
        }
        b.close("NguoiKhai");
        if let Some(k) = data_str(env, &["noi_dang_ky_kcb_ban_dau"]) {
            b.text("NoiDangKyKCB", &k);
        }
        let extra: Vec<(String, String)> =
            env.payload.data.as_ref().map(scalars).unwrap_or_default();
        let prior: Vec<(String, String)> = env
            .payload
            .data
            .as_ref()
            .and_then(|d| {
                d.get("ket_qua_khai_sinh")
                    .or_else(|| d.get("ket_qua_khai_tu"))
            })
            .and_then(Value::as_object)
            .map(scalars)
            .unwrap_or_default();
        let fields: std::collections::BTreeMap<String, String> =
            extra.into_iter().chain(prior).collect();
        if !fields.is_empty() {
            b.open("ThongTinBoSung");
            for (k, v) in &fields {
                b.text_attr("TruongDuLieu", ("Ten", k), v);
            }
            b.close("ThongTinBoSung");
        }
        for a in &env.attachments {
            b.open("TepDinhKem")
                .text("TenTep", &a.name)
                .text("LoaiTep", &a.media_type)
                .text("KichThuoc", &a.size_bytes.to_string())
                .text("MaBam", &a.sha256);
            match (&a.content_base64, &a.reference) {
                (Some(c), _) => {
                    b.text("NoiDung", c);
                }
                (None, Some(r)) => {
                    b.text("DuongDan", &fetchable(r, &self.blob_base));
                }
                (None, None) => {}
            }
            b.close("TepDinhKem");
        }
        Ok(b.finish("HoSoBHXH"))
    }

}

#[async_trait]
impl Adapter for BhxhXml {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "the BHXH interface"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Submit, Operation::Cancel]
    }

    /// Submit: `POST {endpoint}/api/ho-so` with [`BhxhXml::submit_body`]; cancel: `POST
    /// {endpoint}/api/ho-so/{MaHoSo}/huy` with `YeuCauHuy` ([`crate::xml::cancel_document`]).
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        let unmappable = |reason: String| NotDeliverable::Unmappable {
            document: "HoSoBHXH",
            reason,
        };
        let (label, url, body) = match op {
            Operation::Cancel => (
                "cancel",
                format!("{}/api/ho-so/{}/huy", self.endpoint, env.ma_ho_so),
                crate::xml::cancel_document(env, NS).map_err(unmappable)?,
            ),
            _ => (
                "submit",
                format!("{}/api/ho-so", self.endpoint),
                self.submit_body(env).map_err(unmappable)?,
            ),
        };
        Ok(AgencyRequest::new(op, label, url, env, body))
    }

    async fn send(&self, req: &AgencyRequest) -> Outcome {
        crate::xml::post_for_receipt(
            &self.client,
            req.label,
            &req.url,
            &req.key,
            req.body.clone(),
            NS,
        )
        .await
    }

    /// `GET {endpoint}/api/ho-so/{MaHoSo}` ([`crate::xml::status_lookup`]).
    async fn status(&self, ma_ho_so: &str) -> StatusLookup {
        let url = format!("{}/api/ho-so/{ma_ho_so}", self.endpoint);
        crate::xml::status_lookup(&self.client, &url, ma_ho_so, NS).await
    }

    fn parse_callback(
        &self,
        _content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AgencyReply, CallbackError> {
        let f = read_flat(body, NS).map_err(CallbackError::Format)?;
        if f.root != "KetQuaHoSo" {
            return Err(CallbackError::Format(format!(
                "expected <KetQuaHoSo>, got <{}>",
                f.root
            )));
        }
        let need = |k: &str| {
            f.get(k)
                .map(str::to_string)
                .ok_or_else(|| format!("KetQuaHoSo lacks {k}"))
        };
        let status: u8 = need("TrangThaiHoSo")?
            .parse()
            .map_err(|_| "TrangThaiHoSo is not a number".to_string())?;
        if !(1..=10).contains(&status) {
            return Err(format!("TrangThaiHoSo {status} is outside 1–10").into());
        }
        let card = [
            "MaSoBHXH",
            "SoTheBHYT",
            "GiaTriTuNgay",
            "GiaTriDenNgay",
            "NoiDangKyKCB",
        ];
        if status == 9
            && !(card.iter().all(|k| f.get(k).is_some()) || f.get("SoTienTroCap").is_some())
        {
            return Err("a KetQuaHoSo with TrangThaiHoSo 9 must carry the card (MaSoBHXH, SoTheBHYT, GiaTriTuNgay, GiaTriDenNgay, NoiDangKyKCB) or SoTienTroCap".into());
        }
        if status == 3 && f.get("LyDo").is_none() {
            return Err("a KetQuaHoSo with TrangThaiHoSo 3 must carry LyDo".into());
        }
        let mut result = Map::new();
        for (from, to) in [
            ("MaTiepNhan", "ma_tiep_nhan"),
            ("ThoiDiemXuLy", "thoi_diem_xu_ly"),
            ("NoiDungXuLy", "noi_dung_xu_ly"),
            ("MaSoBHXH", "ma_so_bhxh"),
            ("SoTheBHYT", "so_the_bhyt"),
            ("GiaTriTuNgay", "gia_tri_tu_ngay"),
            ("GiaTriDenNgay", "gia_tri_den_ngay"),
            ("NoiDangKyKCB", "noi_dang_ky_kcb"),
        ] {
            if let Some(v) = f.get(from) {
                result.insert(to.into(), json!(v));
            }
        }
        if let Some(v) = f.get("SoTienTroCap").and_then(|s| s.parse::<u64>().ok()) {
            result.insert("so_tien_tro_cap_vnd".into(), json!(v));
        }
        Ok(AgencyReply {
            ma_ho_so: need("MaHoSo")?,
            reference: need("MaThamChieu")?,
            receipt: f.get("MaTiepNhan").map(str::to_string),
            status,
            result,
            reason: f.get("LyDo").or(f.get("NoiDungXuLy")).map(str::to_string),
            officer: f.get("NguoiXuLy").map(str::to_string),
        }
        .cleaned())
    }

    fn results_to(&self) -> ResultsTo {
        self.results_to
    }
}
