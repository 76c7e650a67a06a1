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

use async_trait::async_trait;
use lienthong_core::{Envelope, Kind, TrangThaiHoSo};
use serde_json::{Map, Value, json};

use crate::adapter::{Adapter, AgencyReply, AgencyStatus, Outcome};
use crate::xml::{Builder, post_for_receipt, read_flat};

/// Path of the status lookup under the endpoint (the test call of `lienthong check`).
const PROBE_PATH: &str = "/api/phieu-chuyen";

/// Registry name of this adapter.
pub const NAME: &str = "tax-xml";

/// XML namespace of the Tax reference interface.
pub const NS: &str = "urn:lienthong:agency:tax-land:1";

/// The adapter for one tax authority.
pub struct TaxXml {
    client: crate::http::Agent,
    endpoint: String,
    callback_url: String,
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
            .text(
                "NgayChuyen",
                &lienthong_core::clock::to_dvcqg(chrono::Utc::now())[..8],
            )
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
}

#[async_trait]
impl Adapter for TaxXml {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self, env: &Envelope) -> Result<(), String> {
        crate::adapter::check_operation(env, "the Tax interface", || self.form(env).map(|_| ()))
    }

    async fn deliver(&self, env: &Envelope) -> Outcome {
        match env.kind.as_str() {
            Kind::FORWARD => match self.form(env) {
                Ok(body) => {
                    let url = format!("{}/api/phieu-chuyen", self.endpoint);
                    post_for_receipt(&self.client, "submit", &url, &env.message_id, body, NS).await
                }
                Err(reason) => Outcome::Permanent {
                    reason: format!("cannot map the envelope to PhieuChuyenThongTin: {reason}"),
                },
            },
            Kind::STATUS
                if matches!(
                    env.status,
                    Some(TrangThaiHoSo::WITHDRAWN) | Some(TrangThaiHoSo::STOPPED)
                ) =>
            {
                let body = crate::xml::cancel_document(env, NS);
                let url = format!("{}/api/phieu-chuyen/{}/huy", self.endpoint, env.ma_ho_so);
                post_for_receipt(&self.client, "cancel", &url, &env.message_id, body, NS).await
            }
            other => Outcome::Permanent {
                reason: format!("the Tax interface has no operation for a {other} message"),
            },
        }
    }

    async fn probe(&self) -> crate::http::Probe {
        crate::xml::probe_xml_not_found(&self.client, &self.endpoint, PROBE_PATH, NS).await
    }

    async fn status(&self, ma_ho_so: &str) -> Result<AgencyStatus, String> {
        let url = format!("{}/api/phieu-chuyen/{ma_ho_so}", self.endpoint);
        crate::xml::status_lookup(&self.client, &url, ma_ho_so, NS).await
    }

    fn parse_callback(
        &self,
        _content_type: Option<&str>,
        body: &[u8],
    ) -> Result<AgencyReply, String> {
        let f = read_flat(body, NS)?;
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
            other => {
                return Err(format!(
                    "expected <ThongBaoNopTien> or <YeuCauBoSung>, got <{other}>"
                ));
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
        })
    }
}
