//! Tax adapter: the land registration office's information-transfer form to determine land
//! financial obligations (`PhieuChuyenThongTin`, XML over HTTP, first field the dossier code),
//! reference format in `schemas/agencies/tax-land/tax-land.xsd`. Tax answers later by
//! callback with a payment notice (`ThongBaoNopTien` → bus status 6, financial obligation
//! requested) or a request for more data (`YeuCauBoSung` → status 5). `Idempotency-Key` = the
//! bus message id, also sent as `MaThamChieu`.
//!
//! Reads from the envelope: `payload.data.phieu_chuyen_thong_tin` (`thua_dat`,
//! `loai_bien_dong`, as the land registration office writes it) or else `payload.data` itself;
//! the land user is `payload.applicant`, the other party `data.ben_nhan`.
//!
//! **Payment confirmation.** Once the citizen has paid, the same step is forwarded to Tax again
//! with the receipt of payment in `payload.data.chung_tu_nop_tien` = `{"so_thong_bao",
//! "so_chung_tu", "ngay_nop": "YYYY-MM-DD", "so_tien_vnd"}` (alongside the original data). Such
//! a `dossier.forward` is not a new form: it becomes `XacNhanNopTien` (`MaHoSo`, `MaThamChieu`,
//! `SoThongBao`, `SoChungTu`, `NgayNop` yyyyMMdd, `SoTienVND`, `UrlPhanHoi`, `CoQuanChuyen`)
//! `POST`ed to `{endpoint}/api/nop-tien`, answered by a `BienNhan` like the form. Tax's later
//! callback `HoanThanhNghiaVu` (obligation fulfilled: `SoThongBao`, `NgayXacNhan`, `NoiDung`)
//! becomes status 9 (processed), a `dossier.result` whose `result.hoan_thanh_nghia_vu_tai_chinh`
//! is `{so_thong_bao, ngay_xac_nhan, noi_dung}`.

use std::sync::Arc;

use async_trait::async_trait;
use lienthong_core::{Envelope, Kind, TrangThaiHoSo};
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AgencyRequest, Operation, ResultsTo, Setup};
use crate::error::{BuildError, CallbackError, NotDeliverable};
use crate::mapping::sent_time;
use crate::outcome::{AgencyReply, Outcome, StatusLookup};
use crate::xml::{Builder, post_for_receipt, read_flat};

/// Registry name of this adapter.
pub const NAME: &str = "tax-xml";

/// XML namespace of the Tax reference interface.
pub const NS: &str = "urn:lienthong:agency:tax-land:1";

/// The adapter for one tax authority.
pub struct TaxXml {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
    results_to: ResultsTo,
}

/// The adapter of a unit with `adapter = "tax-xml"` (its registration).
pub fn build(s: Setup<'_>) -> Result<Arc<dyn Adapter>, BuildError> {
    let mut a = TaxXml::new(s.client.clone(), &s.endpoint, &s.callback_url);
    a.results_to = s.results_to();
    Ok(Arc::new(a))
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|x| !x.is_empty())
}

impl TaxXml {
    /// An adapter calling `endpoint` (e.g. `http://127.0.0.1:8490/tax`).
    pub fn new(client: crate::http::Agent, endpoint: &str, callback_url: &str) -> Self {
        TaxXml {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            callback_url: callback_url.to_string(),
            results_to: ResultsTo::Origin,
        }
    }

    /// The `PhieuChuyenThongTin` document for `env`.
    ///
    /// Errors: no parcel (`thua_dat` with `so_thua`, `so_to_ban_do`, `dia_chi`,
    /// `dien_tich_m2`), no land user, or no kind of change (`loai_bien_dong`).
    pub fn form(&self, env: &Envelope) -> Result<Vec<u8>, String> {
        let data = env
            .payload
            .data
            .clone()
            .map(Value::Object)
            .unwrap_or(Value::Null);
        let form = data.get("phieu_chuyen_thong_tin").unwrap_or(&data);
        let parcel = form
            .get("thua_dat")
            .or_else(|| data.get("thua_dat"))
            .ok_or("payload.data has no thua_dat (the land parcel)")?;
        let need = |k: &str| {
            parcel
                .get(k)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .filter(|x| !x.is_empty() && x != "null")
                .ok_or_else(|| format!("thua_dat.{k} is missing"))
        };
        let (so_thua, so_to, dia_chi, area) = (
            need("so_thua")?,
            need("so_to_ban_do")?,
            need("dia_chi")?,
            need("dien_tich_m2")?,
        );
        let loai = s(form, "loai_bien_dong")
            .or_else(|| s(&data, "loai_bien_dong"))
            .ok_or("loai_bien_dong (the kind of change) is missing")?;
        let user = env
            .payload
            .applicant
            .as_ref()
            .ok_or("payload.applicant (the land user) is missing")?;
        let mut b = Builder::new("PhieuChuyenThongTin", NS);
        b.text("MaHoSo", &env.ma_ho_so)
            .text("MaThamChieu", &env.message_id)
            .text("MaTTHC", &env.ma_tthc)
            .text("CoQuanChuyen", &env.sender)
            .text("NgayChuyen", &sent_time(env)?[..8])
            .text("UrlPhanHoi", &self.callback_url)
            .text("LoaiBienDong", loai);
        b.open("NguoiSuDungDat").text("HoTen", &user.ho_ten);
        if let Some(v) = &user.so_dinh_danh {
            b.text("SoDinhDanh", v);
        }
        if let Some(v) = &user.dia_chi {
            b.text("DiaChi", v);
        }
        b.close("NguoiSuDungDat");
        if let Some(other) = data.get("ben_nhan").or_else(|| form.get("ben_nhan"))
            && let Some(name) = s(other, "ho_ten")
        {
            b.open("BenNhan").text("HoTen", name);
            if let Some(v) = s(other, "so_dinh_danh") {
                b.text("SoDinhDanh", v);
            }
            if let Some(v) = s(other, "dia_chi") {
                b.text("DiaChi", v);
            }
            b.close("BenNhan");
        }
        b.open("ThuaDat")
            .text("SoThua", &so_thua)
            .text("SoToBanDo", &so_to)
            .text("DiaChi", &dia_chi)
            .text("DienTichM2", &area);
        if let Some(v) = s(parcel, "muc_dich_su_dung") {
            b.text("MucDichSuDung", v);
        }
        if let Some(v) = s(parcel, "so_phat_hanh_gcn") {
            b.text("SoPhatHanhGCN", v);
        }
        b.close("ThuaDat");
        if let Some(v) = data
            .get("gia_tri_hop_dong_vnd")
            .or_else(|| form.get("gia_tri_hop_dong_vnd"))
            .and_then(Value::as_u64)
        {
            b.text("GiaTriHopDongVND", &v.to_string());
        }
        Ok(b.finish("PhieuChuyenThongTin"))
    }

    /// The `XacNhanNopTien` document (payment confirmation) for `env`, whose
    /// `payload.data.chung_tu_nop_tien` is the receipt of payment.
    ///
    /// Errors: `chung_tu_nop_tien` is not an object, or lacks `so_thong_bao`, `so_chung_tu`,
    /// `ngay_nop` (a real date, `YYYY-MM-DD`) or `so_tien_vnd` (a whole number of đồng).
    pub fn payment_confirmation(&self, env: &Envelope) -> Result<Vec<u8>, String> {
        let receipt = env
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get(PAYMENT_RECEIPT))
            .filter(|v| !v.is_null())
            .ok_or("payload.data has no chung_tu_nop_tien (the receipt of payment)")?;
        if !receipt.is_object() {
            return Err("chung_tu_nop_tien must be an object".into());
        }
        let need = |k: &str| {
            s(receipt, k).ok_or_else(|| format!("chung_tu_nop_tien.{k} is missing or not text"))
        };
        let so_thong_bao = need("so_thong_bao")?;
        let so_chung_tu = need("so_chung_tu")?;
        let ngay = need("ngay_nop")?;
        let ngay_nop = chrono::NaiveDate::parse_from_str(ngay, "%Y-%m-%d")
            .map_err(|_| format!("chung_tu_nop_tien.ngay_nop {ngay:?} is not a date YYYY-MM-DD"))?
            .format("%Y%m%d")
            .to_string();
        let so_tien = match receipt.get("so_tien_vnd") {
            None | Some(Value::Null) => {
                return Err("chung_tu_nop_tien.so_tien_vnd is missing".into());
            }
            Some(v) => v.as_u64().ok_or_else(|| {
                format!("chung_tu_nop_tien.so_tien_vnd {v} is not a whole number of đồng")
            })?,
        };
        let mut b = Builder::new("XacNhanNopTien", NS);
        b.text("MaHoSo", &env.ma_ho_so)
            .text("MaThamChieu", &env.message_id)
            .text("SoThongBao", so_thong_bao)
            .text("SoChungTu", so_chung_tu)
            .text("NgayNop", &ngay_nop)
            .text("SoTienVND", &so_tien.to_string())
            .text("UrlPhanHoi", &self.callback_url)
            .text("CoQuanChuyen", &env.sender);
        Ok(b.finish("XacNhanNopTien"))
    }
}

/// Key of `payload.data` that makes a `dossier.forward` a payment confirmation.
pub const PAYMENT_RECEIPT: &str = "chung_tu_nop_tien";

/// Whether `env` is a payment confirmation: a `dossier.forward` whose `payload.data` carries
/// `chung_tu_nop_tien` (any non-null value; a malformed one is refused by
/// [`TaxXml::payment_confirmation`]).
pub fn is_payment_confirmation(env: &Envelope) -> bool {
    env.kind.as_str() == Kind::FORWARD
        && env
            .payload
            .data
            .as_ref()
            .and_then(|d| d.get(PAYMENT_RECEIPT))
            .is_some_and(|v| !v.is_null())
}

#[async_trait]
impl Adapter for TaxXml {
    fn name(&self) -> &'static str {
        NAME
    }

    fn interface(&self) -> &'static str {
        "the Tax interface"
    }

    fn operations(&self) -> &'static [Operation] {
        &[Operation::Submit, Operation::Cancel]
    }

    /// Submit: a payment confirmation ([`is_payment_confirmation`]: `XacNhanNopTien` to
    /// `{endpoint}/api/nop-tien`) or the form (`PhieuChuyenThongTin` to
    /// `{endpoint}/api/phieu-chuyen`); cancel: `YeuCauHuy` to
    /// `{endpoint}/api/phieu-chuyen/{MaHoSo}/huy`.
    fn request(&self, op: Operation, env: &Envelope) -> Result<AgencyRequest, NotDeliverable> {
        let (label, url, built, document) = match op {
            Operation::Cancel => (
                "cancel",
                format!("{}/api/phieu-chuyen/{}/huy", self.endpoint, env.ma_ho_so),
                crate::xml::cancel_document(env, NS),
                "YeuCauHuy",
            ),
            _ if is_payment_confirmation(env) => (
                "payment confirmation",
                format!("{}/api/nop-tien", self.endpoint),
                self.payment_confirmation(env),
                "XacNhanNopTien",
            ),
            _ => (
                "submit",
                format!("{}/api/phieu-chuyen", self.endpoint),
                self.form(env),
                "PhieuChuyenThongTin",
            ),
        };
        let body = built.map_err(|reason| NotDeliverable::Unmappable { document, reason })?;
        Ok(AgencyRequest::new(op, label, url, env, body))
    }

    async fn send(&self, req: &AgencyRequest) -> Outcome {
        post_for_receipt(
            &self.client,
            req.label,
            &req.url,
            &req.key,
            req.body.clone(),
            NS,
        )
        .await
    }

    /// `GET {endpoint}/api/phieu-chuyen/{MaHoSo}` ([`crate::xml::status_lookup`]).
    async fn status(&self, ma_ho_so: &str) -> StatusLookup {
        let url = format!("{}/api/phieu-chuyen/{ma_ho_so}", self.endpoint);
        crate::xml::status_lookup(&self.client, &url, ma_ho_so, NS).await
    }

    fn parse_callback(
        &self,
        _content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AgencyReply, CallbackError> {
        let f = read_flat(body, NS).map_err(CallbackError::Format)?;
        let need = |k: &str| {
            f.get(k)
                .map(str::to_string)
                .ok_or_else(|| format!("{} lacks {k}", f.root))
        };
        let mut result = Map::new();
        let (status, reason) = match f.root.as_str() {
            "ThongBaoNopTien" => {
                let total: u64 = need("TongSoTienVND")?
                    .parse()
                    .map_err(|_| "TongSoTienVND is not a whole number of đồng".to_string())?;
                let mut notice = Map::new();
                notice.insert("so_thong_bao".into(), json!(need("SoThongBao")?));
                notice.insert("ngay_thong_bao".into(), json!(need("NgayThongBao")?));
                notice.insert("tong_so_tien_vnd".into(), json!(total));
                notice.insert("han_nop".into(), json!(need("HanNop")?));
                for (from, to) in [
                    ("LePhiTruocBaVND", "le_phi_truoc_ba_vnd"),
                    ("ThueTNCNVND", "thue_tncn_vnd"),
                    ("TienSuDungDatVND", "tien_su_dung_dat_vnd"),
                ] {
                    if let Some(v) = f.get(from).and_then(|x| x.parse::<u64>().ok()) {
                        notice.insert(to.into(), json!(v));
                    }
                }
                result.insert("thong_bao_nop_tien".into(), Value::Object(notice));
                (
                    TrangThaiHoSo::FINANCIAL_OBLIGATION.0,
                    f.get("NoiDung")
                        .map(str::to_string)
                        .or(Some(format!("Thông báo nộp tiền {}", need("SoThongBao")?))),
                )
            }
            "YeuCauBoSung" => {
                result.insert(
                    "yeu_cau_bo_sung".into(),
                    json!({"ngay_yeu_cau": need("NgayYeuCau")?, "noi_dung": need("NoiDung")?}),
                );
                (
                    TrangThaiHoSo::SUPPLEMENT_REQUESTED.0,
                    Some(need("NoiDung")?),
                )
            }
            "HoanThanhNghiaVu" => {
                let so = need("SoThongBao")?;
                let mut done = Map::new();
                done.insert("so_thong_bao".into(), json!(so));
                done.insert("ngay_xac_nhan".into(), json!(need("NgayXacNhan")?));
                if let Some(v) = f.get("NoiDung") {
                    done.insert("noi_dung".into(), json!(v));
                }
                result.insert("hoan_thanh_nghia_vu_tai_chinh".into(), Value::Object(done));
                (
                    TrangThaiHoSo::PROCESSED.0,
                    f.get("NoiDung").map(str::to_string).or(Some(format!(
                        "Đã hoàn thành nghĩa vụ tài chính theo thông báo {so}"
                    ))),
                )
            }
            other => {
                return Err(CallbackError::Format(format!(
                    "expected <ThongBaoNopTien>, <YeuCauBoSung> or <HoanThanhNghiaVu>, got <{other}>"
                )));
            }
        };
        Ok(AgencyReply {
            ma_ho_so: need("MaHoSo")?,
            reference: need("MaThamChieu")?,
            receipt: f.get("SoThongBao").map(str::to_string),
            status,
            result,
            reason,
            officer: f.get("CanBoXuLy").map(str::to_string),
        }
        .cleaned())
    }

    fn results_to(&self) -> ResultsTo {
        self.results_to
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::read_flat;

    /// Whether `t` can express `env` (the request built and dropped), with the reason.
    fn check(t: &TaxXml, env: &Envelope) -> Result<(), String> {
        t.prepare(env).map(|_| ()).map_err(|e| e.to_string())
    }

    const MA: &str = "000.20.59.H48-261129-7500";

    fn adapter() -> TaxXml {
        TaxXml::new(
            crate::http::Agent::plain(reqwest::Client::new()),
            "http://127.0.0.1:9/tax/",
            "http://bus.example/v1/callbacks/CT.H48",
        )
    }

    fn forward(data: Value) -> Envelope {
        let mut env = Envelope::new(
            Kind::FORWARD,
            MA,
            "1.010059",
            "000.10.12.H48",
            Some("CT.H48"),
            "01a226b5-6400-7000-8000-0000000000aa",
        );
        env.payload = serde_json::from_value(json!({
            "applicant": {"ho_ten": "Lê Phương Nguyệt", "so_dinh_danh": "051175040533"},
            "data": data
        }))
        .expect("payload");
        env
    }

    fn land_data() -> Value {
        json!({"phieu_chuyen_thong_tin": {"loai_bien_dong": "tang_cho",
            "thua_dat": {"so_thua": "283", "so_to_ban_do": "7", "dien_tich_m2": 3407.0,
                         "dia_chi": "thôn Tình Phú, xã Phổ Phong"}},
            "gia_tri_hop_dong_vnd": 301_900_000u64})
    }

    fn paid(receipt: Value) -> Envelope {
        let mut data = land_data();
        data["chung_tu_nop_tien"] = receipt;
        forward(data)
    }

    fn receipt() -> Value {
        json!({"so_thong_bao": "TB-CT-0000000abc", "so_chung_tu": "BL-2026-000417",
               "ngay_nop": "2026-12-03", "so_tien_vnd": 7_547_500u64})
    }

    #[test]
    fn a_forward_without_a_receipt_of_payment_is_the_form() {
        let env = forward(land_data());
        assert!(!is_payment_confirmation(&env));
        let t = adapter();
        assert_eq!(check(&t, &env), Ok(()));
        let f = read_flat(&t.form(&env).expect("form"), NS).expect("xml");
        assert_eq!(f.root, "PhieuChuyenThongTin");
        assert_eq!(f.get("MaHoSo"), Some(MA));
    }

    #[test]
    fn a_forward_with_a_receipt_of_payment_is_a_payment_confirmation() {
        let env = paid(receipt());
        assert!(is_payment_confirmation(&env));
        let t = adapter();
        assert_eq!(check(&t, &env), Ok(()));
        let doc = t.payment_confirmation(&env).expect("document");
        let f = read_flat(&doc, NS).expect("xml");
        assert_eq!(f.root, "XacNhanNopTien");
        let order: Vec<&str> = [
            "MaHoSo",
            "MaThamChieu",
            "SoThongBao",
            "SoChungTu",
            "NgayNop",
            "SoTienVND",
            "UrlPhanHoi",
            "CoQuanChuyen",
        ]
        .to_vec();
        let text = String::from_utf8(doc).expect("utf-8");
        let positions: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("<{k}>")).expect(k))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(f.get("MaHoSo"), Some(MA));
        assert_eq!(f.get("MaThamChieu"), Some(env.message_id.as_str()));
        assert_eq!(f.get("SoThongBao"), Some("TB-CT-0000000abc"));
        assert_eq!(f.get("SoChungTu"), Some("BL-2026-000417"));
        assert_eq!(f.get("NgayNop"), Some("20261203"));
        assert_eq!(f.get("SoTienVND"), Some("7547500"));
        assert_eq!(
            f.get("UrlPhanHoi"),
            Some("http://bus.example/v1/callbacks/CT.H48")
        );
        assert_eq!(f.get("CoQuanChuyen"), Some("000.10.12.H48"));
    }

    #[test]
    fn a_receipt_of_payment_without_its_fields_is_refused_with_the_field() {
        let t = adapter();
        for (field, bad, expect) in [
            ("so_thong_bao", Value::Null, "so_thong_bao is missing"),
            ("so_thong_bao", json!(""), "so_thong_bao is missing"),
            ("so_chung_tu", Value::Null, "so_chung_tu is missing"),
            ("ngay_nop", Value::Null, "ngay_nop is missing"),
            ("ngay_nop", json!("03/12/2026"), "not a date YYYY-MM-DD"),
            ("ngay_nop", json!("2026-02-30"), "not a date YYYY-MM-DD"),
            ("so_tien_vnd", Value::Null, "so_tien_vnd is missing"),
            ("so_tien_vnd", json!(-5), "not a whole number"),
            ("so_tien_vnd", json!(12.5), "not a whole number"),
            ("so_tien_vnd", json!("7547500"), "not a whole number"),
        ] {
            let mut r = receipt();
            if bad.is_null() {
                r.as_object_mut().expect("object").remove(field);
            } else {
                r[field] = bad.clone();
            }
            let env = paid(r);
            let err = check(&t, &env).expect_err(field);
            assert!(err.contains(expect), "{field} = {bad}: {err}");
            assert!(err.contains("XacNhanNopTien"), "{err}");
        }
        let err = check(&t, &paid(json!("TB-1"))).expect_err("not an object");
        assert!(err.contains("must be an object"), "{err}");
    }

    #[test]
    fn a_cancel_and_other_kinds_are_judged_as_before() {
        let t = adapter();
        let mut env = paid(receipt());
        env.kind = Kind(Kind::STATUS.into());
        env.status = Some(TrangThaiHoSo::STOPPED);
        assert!(!is_payment_confirmation(&env));
        assert_eq!(check(&t, &env), Ok(()));
        env.status = Some(TrangThaiHoSo::PROCESSED);
        assert!(check(&t, &env).is_err());
    }

    #[test]
    fn the_obligation_fulfilled_callback_is_status_9_with_its_result() {
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<HoanThanhNghiaVu xmlns="{NS}"><MaHoSo>{MA}</MaHoSo><MaThamChieu>0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee</MaThamChieu><SoThongBao>TB-CT-0000000abc</SoThongBao><NgayXacNhan>20261204</NgayXacNhan><CanBoXuLy>Phạm Văn Thuế</CanBoXuLy><NoiDung>Đã nhận đủ tiền</NoiDung></HoanThanhNghiaVu>"#
        );
        let r = adapter()
            .parse_callback(Some("application/xml"), body.as_bytes())
            .expect("reply");
        assert_eq!(r.status, 9);
        assert_eq!(r.ma_ho_so, MA);
        assert_eq!(r.reference, "0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee");
        assert_eq!(r.receipt.as_deref(), Some("TB-CT-0000000abc"));
        assert_eq!(r.officer.as_deref(), Some("Phạm Văn Thuế"));
        assert_eq!(r.reason.as_deref(), Some("Đã nhận đủ tiền"));
        assert_eq!(
            Value::Object(r.result),
            json!({"hoan_thanh_nghia_vu_tai_chinh": {"so_thong_bao": "TB-CT-0000000abc",
                   "ngay_xac_nhan": "20261204", "noi_dung": "Đã nhận đủ tiền"}})
        );
        let without = body.replace("<NgayXacNhan>20261204</NgayXacNhan>", "");
        let err = adapter()
            .parse_callback(None, without.as_bytes())
            .expect_err("no date");
        assert!(err.to_string().contains("HoanThanhNghiaVu lacks NgayXacNhan"), "{err}");
    }

    #[test]
    fn the_payment_notice_is_status_6_and_an_unknown_root_is_refused() {
        let body = format!(
            r#"<ThongBaoNopTien xmlns="{NS}"><MaHoSo>{MA}</MaHoSo><MaThamChieu>0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee</MaThamChieu><SoThongBao>TB-1</SoThongBao><NgayThongBao>20261201</NgayThongBao><TongSoTienVND>7547500</TongSoTienVND><HanNop>20261231</HanNop></ThongBaoNopTien>"#
        );
        let r = adapter()
            .parse_callback(None, body.as_bytes())
            .expect("reply");
        assert_eq!(r.status, 6);
        assert_eq!(
            r.result["thong_bao_nop_tien"]["tong_so_tien_vnd"],
            7_547_500
        );
        let err = adapter()
            .parse_callback(None, format!(r#"<TuChoi xmlns="{NS}"/>"#).as_bytes())
            .expect_err("unknown");
        assert!(err.to_string().contains("<HoanThanhNghiaVu>"), "{err}");
    }
}
