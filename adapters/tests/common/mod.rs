//! Shared by the adapters crate's integration tests: units of the shipped registry pointed at a
//! loopback server and built as the bus builds them (`build_with`), and one envelope per
//! operation (submit, cancel, Tax's payment confirmation, a portal status).

#![allow(dead_code)]

use std::sync::Arc;

use lienthong_adapters::Adapter;
use lienthong_core::envelope::Envelope;
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings, Unit};
use serde_json::{Value, json};

/// Police.
pub const POLICE: &str = "CA.H48";
/// Social Insurance.
pub const BHXH: &str = "BHXH.H48";
/// Tax.
pub const TAX: &str = "CT.H48";
/// Customs.
pub const CUSTOMS: &str = "HQ.H48";
/// The national portal.
pub const DVCQG: &str = "DVCQG";
/// The Đức Phổ civil-status office (mapped, JSON).
pub const MAPPED: &str = "000.10.61.H48";
/// The Department of Labour (edXML push).
pub const EDXML: &str = "000.00.15.H48";
/// The Sơn Hà centre, sender of the envelopes.
pub const SON_HA: &str = "000.20.59.H48";

/// The shipped unit `code` with its endpoint replaced by `endpoint` and, when given, its
/// `settings` keys replaced by those of `patch`.
pub fn unit(code: &str, endpoint: &str, patch: Option<Value>) -> Unit {
    let s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    let mut u = s
        .units
        .iter()
        .find(|u| u.code == code)
        .unwrap_or_else(|| panic!("unit {code} in the shipped config"))
        .clone();
    if let Reach::Adapter {
        endpoint: e,
        settings,
        ..
    } = &mut u.reach
    {
        *e = endpoint.to_string();
        if let Some(Value::Object(p)) = patch {
            settings.extend(p);
        }
    }
    u
}

/// The shipped unit `code` with `timeout_ms` set (the whole call, ms).
pub fn with_timeout(mut u: Unit, ms: u64) -> Unit {
    if let Reach::Adapter { timeout_ms, .. } = &mut u.reach {
        *timeout_ms = ms;
    }
    u
}

/// The adapter the bus would build for `u`.
pub fn build(u: &Unit) -> Arc<dyn Adapter> {
    lienthong_adapters::build_with(u, "http://127.0.0.1:9", None).expect("the adapter builds")
}

fn envelope(kind: &str, ma_tthc: &str, receiver: &str, data: Value) -> Envelope {
    let mut env = Envelope::new(
        kind,
        &format!("{SON_HA}-261129-{:04}", rand_seq()),
        ma_tthc,
        SON_HA,
        Some(receiver),
        "01a226b5-6400-7000-8000-0000000000aa",
    );
    env.payload = serde_json::from_value(json!({
        "applicant": {"ho_ten": "Đinh Văn Lực", "ngay_sinh": "1994-08-12", "gioi_tinh": "nam",
                      "so_dinh_danh": "051094000123", "so_dien_thoai": "0905123456",
                      "dia_chi": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi",
                      "quan_he": "cha"},
        "data": data,
    }))
    .expect("payload");
    env
}

fn rand_seq() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A birth dossier forwarded to `receiver` (procedure 1.001193).
pub fn birth(receiver: &str) -> Envelope {
    envelope(
        "dossier.forward",
        "1.001193",
        receiver,
        json!({"loai_lien_thong": "khai_sinh_thuong_tru_bhyt",
               "tre": {"ho_ten": "Đinh Thị Bảo Ngọc", "ngay_sinh": "2026-11-20", "gioi_tinh": "nu",
                       "noi_sinh": "Trung tâm Y tế huyện Sơn Hà"},
               "noi_dang_ky_thuong_tru": "Tổ dân phố Gò Dép, thị trấn Di Lăng, huyện Sơn Hà, tỉnh Quảng Ngãi",
               "noi_dang_ky_kcb_ban_dau": "Trung tâm Y tế huyện Sơn Hà"}),
    )
}

/// A `dossier.status` 8 (stopped) to `receiver`: the agency's cancel.
pub fn cancel(receiver: &str) -> Envelope {
    let forward = birth(receiver);
    let mut env = forward.reply("dossier.status", SON_HA, receiver);
    env.status = Some(lienthong_core::TrangThaiHoSo::STOPPED);
    env.payload.reason = Some("Dừng xử lý theo yêu cầu".into());
    env
}

fn land_data() -> Value {
    json!({"phieu_chuyen_thong_tin": {"loai_bien_dong": "tang_cho",
        "thua_dat": {"so_thua": "283", "so_to_ban_do": "7", "dien_tich_m2": 3407.0,
                     "dia_chi": "thôn Tình Phú, xã Phổ Phong"}}})
}

/// The land registration office's transfer form to Tax (procedure 1.010059).
pub fn tax_form() -> Envelope {
    envelope("dossier.forward", "1.010059", TAX, land_data())
}

/// The same step forwarded again with the receipt of payment: `XacNhanNopTien`.
pub fn tax_payment() -> Envelope {
    let mut data = land_data();
    data["chung_tu_nop_tien"] = json!({"so_thong_bao": "TB-CT-0000000abc",
        "so_chung_tu": "BL-2026-000417", "ngay_nop": "2026-12-03", "so_tien_vnd": 7_547_500u64});
    envelope("dossier.forward", "1.010059", TAX, data)
}

/// A declaration to Customs (synthetic procedure SYN.HQ.001).
pub fn customs() -> Envelope {
    envelope(
        "dossier.forward",
        "SYN.HQ.001",
        CUSTOMS,
        json!({"to_khai_hai_quan": {"so_to_khai": "106012345678", "ngay_to_khai": "2026-11-20",
                                    "so_khung": "RLHJC5500PY000001"}}),
    )
}

/// A status 4 (in progress) for the portal.
pub fn portal_status() -> Envelope {
    let mut env = birth(DVCQG);
    env.kind = lienthong_core::Kind("dossier.status".into());
    env.status = Some(lienthong_core::TrangThaiHoSo(4));
    env.payload.reason = Some("Đang xử lý".into());
    env
}
