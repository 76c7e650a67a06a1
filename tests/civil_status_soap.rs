//! TP Quảng Ngãi's civil-status office, connected by configuration alone to a SOAP 1.1 service
//! (the `mapped` adapter with `soap`, as shipped in deploy/config/quang-ngai.toml), through the
//! real broker and the whole bus, against the mock's SOAP service on loopback (which checks
//! `SOAPAction`, the envelope and the operation's namespace, and validates the operation
//! against schemas/agencies/civil-status-soap/ho-tich.xsd): a dossier gets its receipt and,
//! by the office's `CapNhatKetQua` callback, its registration with repeated certificates and
//! transformed dates; a Client fault and a refusal inside a 200 are dead-lettered with the
//! office's reason; Server faults (in a 500, or any 5xx), a Client fault the fault table calls
//! transient and an unreadable 200 are retried until the dossier is registered, once; a death
//! dossier's lists (chosen procedures, attachments) arrive as repeated elements; nothing is
//! lost or registered twice.

mod common;

use base64::Engine;
use common::*;
use lienthong_core::envelope::{Envelope, Kind};
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings};
use lienthong_testkit::mock::{
    ERROR_IN_200, GARBAGE, SOAP_BUSY_FAULT, SOAP_CLIENT_FAULT, SOAP_SERVER_FAULT,
};
use serde_json::json;
use sha2::Digest;

/// TP Quảng Ngãi's civil-status office (SOAP 1.1).
const SOAP_CIVIL: &str = "000.10.51.H48";

/// The bus with the shipped SOAP office added to the test's trimmed registry (with fresh keys
/// and the test's broker user, as `common::settings` gives the others).
async fn start() -> Bus {
    Bus::start_with("civil-soap", |s| {
        let shipped = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
        let mut u = shipped
            .units
            .into_iter()
            .find(|u| u.code == SOAP_CIVIL)
            .expect("the shipped config connects TP Quảng Ngãi's civil-status office");
        u.parent = None;
        u.amqp_user = Some(format!("{}.units", s.bus.prefix));
        u.api_key = Some(lienthong_testkit::keys::fresh());
        match &mut u.reach {
            Reach::Adapter {
                callback_key,
                settings,
                ..
            } => {
                *callback_key = Some(lienthong_testkit::keys::fresh());
                assert_eq!(
                    settings["soap"], "1.1",
                    "the shipped office speaks SOAP 1.1"
                );
            }
            Reach::Amqp => panic!("the office is reached by an adapter"),
        }
        s.units.push(u);
    })
    .await
}

/// A death dossier filed at Sơn Hà for the office: two chosen procedures, one attachment.
fn death(seq: u32) -> Envelope {
    let mut env = birth(seq, SOAP_CIVIL);
    env.ma_tthc = "1.011537".into();
    env.payload = serde_json::from_value(json!({
        "applicant": {"ho_ten": "Trần Kim Yến", "so_dinh_danh": "051162201010", "quan_he": "vo"},
        "data": {"loai_lien_thong": "khai_tu_xoa_thuong_tru_mai_tang",
                 "thu_tuc_lua_chon": ["khai_tu", "tro_cap_mai_tang"],
                 "nguoi_mat": {"ho_ten": "Nguyễn Quốc Hùng", "ngay_mat": "2026-11-01",
                               "so_dinh_danh": "051062949985"}}
    }))
    .expect("payload");
    let content = b"%PDF-1.4 to khai khai tu";
    env.attachments = serde_json::from_value(json!([{
        "name": "to_khai_dang_ky_khai_tu.pdf", "media_type": "application/pdf",
        "size_bytes": content.len(), "sha256": hex(&sha2::Sha256::digest(content)),
        "content_base64": base64::engine::general_purpose::STANDARD.encode(content)
    }]))
    .expect("attachments");
    env
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_dossiers_are_registered_refusals_dead_lettered_and_server_faults_retried() {
    let bus = start().await;
    let mut centre = bus.listen(SON_HA).await;
    let plain = birth(9101, SOAP_CIVIL);
    let client_fault = birth(9102, SOAP_CIVIL);
    let server_faults = birth(9103, SOAP_CIVIL);
    let http_500 = birth(9104, SOAP_CIVIL);
    let busy = birth(9105, SOAP_CIVIL);
    let garbage = birth(9106, SOAP_CIVIL);
    let refused_in_200 = birth(9107, SOAP_CIVIL);
    let refused_later = birth(9108, SOAP_CIVIL);
    let died = death(9109);
    let script = [
        (&client_fault, vec![SOAP_CLIENT_FAULT]),
        (&server_faults, vec![SOAP_SERVER_FAULT, SOAP_SERVER_FAULT]),
        (&http_500, vec![500, 503]),
        (&busy, vec![SOAP_BUSY_FAULT]),
        (&garbage, vec![GARBAGE]),
        (&refused_in_200, vec![ERROR_IN_200]),
    ];
    for (env, responses) in &script {
        bus.fault_json(json!({"agency": "civil_status_soap", "ma_ho_so": env.ma_ho_so, "responses": responses}))
            .await;
    }
    let r = reqwest::Client::new()
        .post(format!("{}/_mock/decisions", bus.mock_url))
        .json(
            &json!({"agency": "civil_status_soap", "ma_ho_so": refused_later.ma_ho_so,
                      "status": 3, "reason": "Người yêu cầu không có quan hệ với trẻ (giả lập)"}),
        )
        .send()
        .await
        .expect("decision");
    assert!(r.status().is_success(), "{r:?}");
    let all = [
        &plain,
        &client_fault,
        &server_faults,
        &http_500,
        &busy,
        &garbage,
        &refused_in_200,
        &refused_later,
        &died,
    ];
    for e in all {
        bus.send(e).await;
    }
    let ids = ids_of(all);
    let answers = collect_answers(&mut centre, &ids, 90).await;
    assert_eq!(
        tally(&ids, &answers),
        (0, 0),
        "nothing lost, nothing answered twice"
    );

    // Registered: the callback's nested, repeated and transformed values in the result.
    for e in [&plain, &server_faults, &http_500, &busy, &garbage, &died] {
        let r = &answers[&e.message_id][0];
        assert_eq!(r.kind.as_str(), Kind::RESULT, "{}: {r:?}", e.ma_ho_so);
        let result = r.payload.result.as_ref().expect("result");
        let today = lienthong_core::clock::now_vn()
            .format("%Y-%m-%d")
            .to_string();
        assert_eq!(
            result["ngay_dang_ky"],
            today.as_str(),
            "dd/MM/yyyy read back: {result:?}"
        );
        let giay_to = result["giay_to"].as_array().expect("a list");
        assert_eq!(giay_to.len(), 2, "{result:?}");
        assert_eq!(giay_to[0]["loai"], "ban_chinh");
        assert_eq!(giay_to[1]["loai"], "ban_sao");
        assert_eq!(giay_to[0]["ngay_cap"], today.as_str());
        let kind = if e.ma_tthc == "1.011537" {
            "khai_tu_xoa_thuong_tru_mai_tang"
        } else {
            "khai_sinh_thuong_tru_bhyt"
        };
        assert_eq!(result["loai_lien_thong"], kind, "code table read back");
    }
    // Refused: dead-lettered with the office's words, not retried.
    let d = &answers[&client_fault.message_id][0];
    assert_eq!(d.kind.as_str(), Kind::DEAD_LETTER, "{d:?}");
    let why = d.payload.reason.as_deref().unwrap_or("");
    assert!(
        why.contains("SOAP fault soap:Client [E_DU_LIEU]") && why.contains("không hợp lệ"),
        "{why}"
    );
    let d = &answers[&refused_in_200.message_id][0];
    assert_eq!(d.kind.as_str(), Kind::DEAD_LETTER, "{d:?}");
    let why = d.payload.reason.as_deref().unwrap_or("");
    assert!(why.contains("TU_CHOI") && why.contains("nơi khác"), "{why}");
    // Decided later: a refusal by callback is status 3 with its reason.
    let s = &answers[&refused_later.message_id][0];
    assert_eq!(s.kind.as_str(), Kind::STATUS, "{s:?}");
    assert_eq!(s.status.map(|t| t.0), Some(3));
    assert!(
        s.payload
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("quan hệ")),
        "{s:?}"
    );

    // At the office: each dossier registered once, every request valid, SOAPAction and the
    // namespace checked; the faults were retried (more calls than registrations).
    let stats = bus.mock_stats().await;
    let soap = &stats["civil_status_soap"];
    assert_eq!(soap["effects"], 7, "{stats}");
    assert_eq!(soap["invalid"], 0, "{stats}");
    assert!(soap["calls"].as_u64().unwrap_or(0) >= 7 + 6, "{stats}");
    assert_eq!(soap["callbacks"], 7, "{stats}");
    let sent = bus
        .mock_requests("civil-status-soap", &plain.ma_ho_so)
        .await;
    assert_eq!(
        sent[0]["SOAPAction"],
        "urn:lienthong:agency:civil-status-soap:1/TiepNhanHoSo"
    );
    assert_eq!(sent[0]["TreEm"]["NgaySinh"], "20/11/2026", "{sent:?}");
    assert_eq!(sent[0]["TreEm"]["GioiTinh"], "2");
    assert_eq!(sent[0]["LoaiHoSo"], "KS");
    assert_eq!(sent[0]["@phienBan"], "1.0");
    let sent = bus.mock_requests("civil-status-soap", &died.ma_ho_so).await;
    assert_eq!(
        sent[0]["ThuTucLuaChon"]["MaThuTuc"],
        json!(["KT", "MT"]),
        "{sent:?}"
    );
    assert_eq!(sent[0]["NguoiMat"]["NgayMat"], "01/11/2026");
    assert_eq!(
        sent[0]["GiayToDinhKem"]["TepDinhKem"]["TenTep"],
        "to_khai_dang_ky_khai_tu.pdf"
    );
    // A fault is answered before the office records anything: the one request it holds for a
    // retried dossier is the attempt that registered it.
    let sent = bus
        .mock_requests("civil-status-soap", &server_faults.ma_ho_so)
        .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["MaThamChieu"], server_faults.message_id.as_str());
    // The trace: the receipt of the office's answer, and the Server faults' retries with their
    // reasons.
    let store = bus.store();
    let rows = delivered_timeline(&store, &plain.ma_ho_so).await;
    assert!(
        rows.iter()
            .any(|r| r.event == "delivered"
                && r.reason.as_deref().is_some_and(|x| x.contains("HTS-"))),
        "{rows:#?}"
    );
    let rows = delivered_timeline(&store, &server_faults.ma_ho_so).await;
    let retried: Vec<_> = rows.iter().filter(|r| r.event == "retried").collect();
    assert_eq!(retried.len(), 2, "{rows:#?}");
    assert!(
        retried.iter().all(|r| r
            .reason
            .as_deref()
            .is_some_and(|x| x.contains("soap:Server [E_HE_THONG]"))),
        "{rows:#?}"
    );
    bus.stop().await;
}
