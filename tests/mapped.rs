//! The config-only `mapped` adapter: the shipped Đức Phổ civil-status office (connected with
//! configuration alone) against the mock's civil-status software, whose JSON Schema checks the
//! mapped document; the success rule (`error_code` "00" inside a 200); the callback mapping; an
//! XML mapping; and configuration errors that name the field.

mod common;

use common::*;
use lienthong_adapters::Outcome;
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings, Unit};
use serde_json::{Value, json};

const DUC_PHO_CIVIL: &str = "000.10.61.H48";

fn shipped_unit(s: &Settings) -> Unit {
    s.units
        .iter()
        .find(|u| u.code == DUC_PHO_CIVIL)
        .cloned()
        .expect("the shipped config connects the Đức Phổ civil-status office")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_mapping_reaches_the_civil_status_software_and_its_answers_map_back() {
    let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    s.mock.listen = "127.0.0.1:0".into();
    s.mock.unavailable_rate = 0.0;
    s.mock.latency_max_ms = 2;
    let mock = lienthong_testkit::mock::serve(&s).await.expect("mock");
    let mut unit = shipped_unit(&s);
    if let Reach::Adapter { endpoint, .. } = &mut unit.reach {
        *endpoint = format!("http://{}/civil-status/{DUC_PHO_CIVIL}", mock.addr);
    }
    let adapter = lienthong_adapters::build(&unit, "http://127.0.0.1:1").expect("adapter");
    let env = birth(8101, DUC_PHO_CIVIL);
    let out = adapter.deliver(&env).await;
    assert!(
        matches!(&out, Outcome::Delivered { receipt } if receipt.starts_with("HT-")),
        "{out:?}"
    );
    // Again: the agency answers from its idempotency record.
    assert!(matches!(
        adapter.deliver(&env).await,
        Outcome::Delivered { .. }
    ));
    let stats: Value = reqwest::get(format!("http://{}/_mock/stats", mock.addr))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["civil_status"]["effects"], 1, "{stats}");
    assert_eq!(stats["civil_status"]["replays"], 1, "{stats}");
    assert_eq!(
        stats["civil_status"]["invalid"], 0,
        "the mapped document is valid against the schema: {stats}"
    );
    let sent: Vec<Value> = reqwest::get(format!(
        "http://{}/_mock/requests/civil-status/{}",
        mock.addr, env.ma_ho_so
    ))
    .await
    .expect("requests")
    .json()
    .await
    .expect("json");
    assert_eq!(sent[0]["TreEm"]["NgaySinh"], "20261120", "date8: {sent:?}");
    assert_eq!(sent[0]["NguoiYeuCau"]["HoTen"], "Đinh Văn Lực");
    // A failure inside a 200.
    let other = birth(8102, DUC_PHO_CIVIL);
    let r = reqwest::Client::new()
        .post(format!("http://{}/_mock/faults", mock.addr))
        .json(&json!({"agency": "civil_status", "ma_ho_so": other.ma_ho_so, "responses": [lienthong_testkit::mock::ERROR_IN_200]}))
        .send()
        .await
        .expect("fault");
    assert!(r.status().is_success());
    let out = adapter.deliver(&other).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("\"99\"") && reason.contains("Lỗi hệ thống")),
        "{out:?}"
    );
    // The callback mapping.
    let cb = json!({"MaHoSo": env.ma_ho_so, "MaThamChieu": env.message_id, "MaTiepNhan": "HT-1",
                    "KetQua": "DA_DANG_KY", "SoDangKy": "123/2026", "QuyenSo": "01/2026",
                    "NgayDangKy": "20261129", "CanBo": "Lê Thị Hộ Tịch"});
    let reply = adapter
        .parse_callback(Some("application/json"), cb.to_string().as_bytes())
        .expect("callback");
    assert_eq!(reply.status, 9);
    assert_eq!(reply.reference, env.message_id);
    assert_eq!(reply.result["so_dang_ky"], "123/2026");
    assert_eq!(reply.officer.as_deref(), Some("Lê Thị Hộ Tịch"));
    let refused = json!({"MaHoSo": env.ma_ho_so, "MaThamChieu": env.message_id, "KetQua": "TU_CHOI", "GhiChu": "thiếu giấy chứng sinh"});
    let reply = adapter
        .parse_callback(None, refused.to_string().as_bytes())
        .expect("callback");
    assert_eq!(reply.status, 3);
    assert_eq!(reply.reason.as_deref(), Some("thiếu giấy chứng sinh"));
    let odd = json!({"MaHoSo": env.ma_ho_so, "MaThamChieu": env.message_id, "KetQua": "KHAC"});
    let e = adapter
        .parse_callback(None, odd.to_string().as_bytes())
        .expect_err("unknown status");
    assert!(e.to_string().contains("KHAC"), "{e}");
    let _ = mock.stop.send(());
}

fn unit_with(settings: Value) -> Unit {
    let mut u = shipped_unit(&Settings::from_toml(DEFAULT_CONFIG, false).expect("config"));
    if let Reach::Adapter { settings: s, .. } = &mut u.reach {
        *s = settings.as_object().cloned().expect("object");
    }
    u
}

#[test]
fn an_xml_mapping_nests_and_orders_elements_as_configured() {
    let u = unit_with(json!({
        "format": "xml", "xml_root": "HoSo", "xml_namespace": "urn:example:agency:1",
        "request": {
            "MaHoSo": "/ma_ho_so",
            "NguoiNop.HoTen": "/payload/applicant/ho_ten",
            "NguoiNop.NgaySinh": {"from": "/payload/applicant/ngay_sinh", "format": "date8"},
            "GhiChu": {"value": "a < b & c"}
        },
        "callback": {"ma_ho_so": "MaHoSo", "reference": "MaThamChieu", "status": "TrangThai"}
    }));
    let adapter = lienthong_adapters::mapped::Mapped::new(
        lienthong_adapters::http::Agent::plain(reqwest::Client::new()),
        "http://127.0.0.1:1",
        "http://127.0.0.1:2/cb",
        match &u.reach {
            Reach::Adapter { settings, .. } => settings,
            _ => unreachable!("an adapter unit"),
        },
    )
    .expect("mapped");
    let env = birth(8103, DUC_PHO_CIVIL);
    let xml = String::from_utf8(adapter.body(&env).expect("body")).expect("utf-8");
    let compact: String = xml.split_whitespace().collect::<Vec<_>>().join("");
    assert!(
        compact.contains(&format!(
            "<MaHoSo>{}</MaHoSo><NguoiNop><HoTen>ĐinhVănLực</HoTen><NgaySinh>19940812</NgaySinh></NguoiNop><GhiChu>a&lt;b&amp;c</GhiChu>",
            env.ma_ho_so
        )),
        "{xml}"
    );
    let back = lienthong_adapters::xml::read_flat(xml.as_bytes(), "urn:example:agency:1")
        .expect("well-formed, in the namespace");
    assert_eq!(back.root, "HoSo");
}

#[test]
fn configuration_errors_name_the_field() {
    let mk = |v: Value| {
        let u = unit_with(v);
        lienthong_adapters::build(&u, "http://127.0.0.1:1")
            .err()
            .map(|e| e.to_string())
    };
    let e = mk(json!({"format": "yaml", "request": {}, "callback": {"ma_ho_so": "/a", "reference": "/b", "status": "/c"}}))
        .expect("refused");
    assert!(e.contains("yaml"), "{e}");
    let e = mk(json!({"format": "json", "request": {"HoTen": "payload/applicant"}, "callback": {"ma_ho_so": "/a", "reference": "/b", "status": "/c"}}))
        .expect("refused");
    assert!(
        e.contains("request.HoTen") && e.contains("JSON pointer"),
        "{e}"
    );
    let e = mk(json!({"format": "json", "request": {}})).expect("refused");
    assert!(e.contains("callback"), "{e}");
    let cb = json!({"ma_ho_so": "/a", "reference": "/b", "status": "/c"});
    let e = mk(json!({"format": "json", "request": {"NgaySinh": {"from": "/x", "format": "date9"}}, "callback": cb}))
        .expect("refused");
    assert!(e.contains("request.NgaySinh") && e.contains("date9"), "{e}");
    let e =
        mk(json!({"format": "json", "request": {"MaHoSo": {"form": "/ma_ho_so"}}, "callback": cb}))
            .expect("refused");
    assert!(e.contains("request.MaHoSo") && e.contains("`from`"), "{e}");
    let e = mk(json!({"format": "json", "submit_path": "ho-so", "request": {}, "callback": cb}))
        .expect("refused");
    assert!(e.contains("submit_path") && e.contains("'/'"), "{e}");
    let e = mk(json!({"format": "json", "sumbit_path": "/ho-so", "request": {}, "callback": cb}))
        .expect("refused");
    assert!(e.contains("sumbit_path"), "an unknown key is named: {e}");
}
