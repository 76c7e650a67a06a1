//! The Tax adapter through the real broker: the land registration office's information-transfer
//! form reaches the mock tax authority (validated against `schemas/agencies/tax-land/`), and the
//! payment notice (status 6) or the request for more data (status 5) comes back to the land
//! registration office, the sender; a form without a parcel is dead-lettered at once. Once paid,
//! the same step forwarded again with `chung_tu_nop_tien` is a payment confirmation
//! (`XacNhanNopTien`) that comes back as status 9; one quoting a notice Tax did not issue is
//! dead-lettered with Tax's reason. Also the mock's scripted decisions (`/_mock/decisions`): a
//! scripted refusal comes back as status 3 with its reason, and a cancel (Tax's `huy`, an edXML
//! recall) stops a pending result.

mod common;

use common::*;
use lienthong_adapters::Adapter;
use lienthong_core::TrangThaiHoSo;
use lienthong_core::envelope::{Envelope, Kind};
use serde_json::{Value, json};

const LAND_OFFICE: &str = "000.10.12.H48";
const TAX: &str = "CT.H48";
/// The Department of Labour (edXML push).
const LDTBXH: &str = "000.00.15.H48";

fn land(seq: u32, with_parcel: bool) -> Envelope {
    let ma = format!("{SON_HA}-261129-{seq:04}");
    let mut env = Envelope::new(
        "dossier.forward",
        &ma,
        "1.010059",
        LAND_OFFICE,
        Some(TAX),
        &uuid::Uuid::now_v7().to_string(),
    );
    let parcel = serde_json::json!({"so_thua": "283", "so_to_ban_do": "7", "dien_tich_m2": 3407.0,
        "dia_chi": "thôn Tình Phú, xã Phổ Phong, thị xã Đức Phổ, tỉnh Quảng Ngãi", "muc_dich_su_dung": "CLN"});
    let mut form = serde_json::json!({"ma_ho_so": ma, "loai_bien_dong": "tang_cho"});
    if with_parcel {
        form["thua_dat"] = parcel;
    }
    env.payload = serde_json::from_value(serde_json::json!({
        "applicant": {"ho_ten": "Lê Phương Nguyệt", "so_dinh_danh": "051175040533", "dia_chi": "xã Phổ Khánh, thị xã Đức Phổ"},
        "data": {"phieu_chuyen_thong_tin": form, "gia_tri_hop_dong_vnd": 301_900_000u64,
                 "ben_nhan": {"ho_ten": "Nguyễn Quốc Nam", "so_dinh_danh": "051204127183"}}
    }))
    .expect("payload");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transfer_form_reaches_tax_and_the_payment_notice_returns_to_the_land_office() {
    let bus = Bus::start("tax-notice").await;
    let mut office = bus.listen(LAND_OFFICE).await;
    let envs: Vec<Envelope> = (0..30).map(|i| land(7300 + i, true)).collect();
    bus.fault("tax", &envs[0].ma_ho_so, &[503]).await;
    let bad = land(7399, false);
    bus.send(&bad).await;
    for e in &envs {
        bus.send(e).await;
    }
    let mut ids = ids_of(&envs);
    ids.push(bad.message_id.clone());
    let answers = collect_answers(&mut office, &ids, 60).await;
    assert_eq!(tally(&ids, &answers), (0, 0));
    for e in &envs {
        let n = &answers[&e.message_id][0];
        assert_eq!(n.kind.as_str(), Kind::STATUS, "{n:?}");
        assert_eq!(n.status.map(|s| s.0), Some(6), "financial obligation");
        assert_eq!(n.sender, TAX);
        let notice = &n.payload.data.as_ref().expect("data")["thong_bao_nop_tien"];
        // 0.5 % + 2 % of 301 900 000 (the mock's rates).
        assert_eq!(
            notice["tong_so_tien_vnd"],
            1_509_500 + 6_038_000,
            "{notice}"
        );
    }
    let dead = &answers[&bad.message_id][0];
    assert_eq!(dead.kind.as_str(), Kind::DEAD_LETTER);
    assert!(
        dead.payload
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("thua_dat")),
        "{dead:?}"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["tax"]["effects"], 30, "{stats}");
    assert_eq!(stats["tax"]["invalid"], 0, "valid against the XSD: {stats}");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_more_data_comes_back_as_status_5() {
    let bus = Bus::start_with("tax-more", |s| s.mock.refusal_rate = 1.0).await;
    let mut office = bus.listen(LAND_OFFICE).await;
    let env = land(7401, true);
    bus.send(&env).await;
    let n = next(&mut office, 30).await;
    assert_eq!(n.kind.as_str(), Kind::STATUS);
    assert_eq!(n.status.map(|s| s.0), Some(5));
    assert!(
        n.payload
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("bổ sung")),
        "{n:?}"
    );
    bus.stop().await;
}

/// The same step forwarded again once the land user has paid: the original data plus the
/// receipt of payment quoting notice `so_thong_bao`.
fn paid(form: &Envelope, so_thong_bao: &str) -> Envelope {
    let mut env = form.reply(Kind::FORWARD, LAND_OFFICE, TAX);
    env.causation_id = None;
    env.payload = form.payload.clone();
    let data = env.payload.data.get_or_insert_with(Default::default);
    data.insert(
        "chung_tu_nop_tien".into(),
        json!({"so_thong_bao": so_thong_bao, "so_chung_tu": "BL-2026-000417",
               "ngay_nop": "2026-12-03", "so_tien_vnd": 7_547_500u64}),
    );
    env
}

fn notice_number(status: &Envelope) -> String {
    status.payload.data.as_ref().expect("data")["thong_bao_nop_tien"]["so_thong_bao"]
        .as_str()
        .expect("so_thong_bao")
        .to_string()
}

async fn tax_status_at_mock(bus: &Bus, ma: &str) -> String {
    reqwest::get(format!("{}/tax/api/phieu-chuyen/{ma}", bus.mock_url))
        .await
        .expect("status lookup")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_confirmation_finishes_the_obligation_and_an_unknown_notice_is_dead_lettered() {
    let bus = Bus::start("tax-paid").await;
    let mut office = bus.listen(LAND_OFFICE).await;
    let (a, b) = (land(7500, true), land(7501, true));
    bus.send(&a).await;
    bus.send(&b).await;
    let notices = collect_answers(&mut office, &ids_of([&a, &b]), 60).await;
    let (na, nb) = (&notices[&a.message_id][0], &notices[&b.message_id][0]);
    assert_eq!(na.status.map(|s| s.0), Some(6), "{na:?}");
    assert_eq!(nb.status.map(|s| s.0), Some(6), "{nb:?}");
    let (so_a, so_b) = (notice_number(na), notice_number(nb));
    assert_ne!(so_a, so_b);

    let ok = paid(&a, &so_a);
    let unknown = paid(&b, "TB-CT-0000000000");
    let others = paid(&b, &so_a); // A's notice quoted for B: not issued for B.
    // A transient failure first: the confirmation is retried with the same key.
    bus.fault("tax", &a.ma_ho_so, &[503]).await;
    for e in [&ok, &unknown, &others] {
        bus.send(e).await;
    }
    let answers = collect_answers(&mut office, &ids_of([&ok, &unknown, &others]), 60).await;
    assert_eq!(tally(&ids_of([&ok, &unknown, &others]), &answers), (0, 0));

    let done = &answers[&ok.message_id][0];
    assert_eq!(done.kind.as_str(), Kind::RESULT, "{done:?}");
    assert_eq!(done.status, Some(TrangThaiHoSo::PROCESSED));
    assert_eq!(done.sender, TAX);
    assert_eq!(done.correlation_id, a.correlation_id);
    let result = done.payload.result.as_ref().expect("result");
    let fulfilled = &result["hoan_thanh_nghia_vu_tai_chinh"];
    assert_eq!(fulfilled["so_thong_bao"], so_a.as_str(), "{result:?}");
    assert!(
        fulfilled["ngay_xac_nhan"]
            .as_str()
            .is_some_and(|d| d.len() == 8 && d.bytes().all(|c| c.is_ascii_digit())),
        "{result:?}"
    );
    assert!(
        fulfilled["noi_dung"]
            .as_str()
            .is_some_and(|t| t.contains("BL-2026-000417")),
        "{result:?}"
    );

    for (e, number) in [(&unknown, "TB-CT-0000000000"), (&others, so_a.as_str())] {
        let dead = &answers[&e.message_id][0];
        assert_eq!(dead.kind.as_str(), Kind::DEAD_LETTER, "{dead:?}");
        let reason = dead.payload.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains("E_KHONG_TIM_THAY") && reason.contains(number),
            "{reason}"
        );
    }
    let store = bus.store();
    let listed = eventually(10, "the dead-letter log", || {
        store.dead_letters(10).ok().filter(|v| v.len() >= 2)
    })
    .await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|d| d.reason_code == "agency-refused"),
        "{listed:?}"
    );
    assert!(
        tax_status_at_mock(&bus, &a.ma_ho_so)
            .await
            .contains("<TrangThaiHoSo>9</TrangThaiHoSo>")
    );
    assert!(
        tax_status_at_mock(&bus, &b.ma_ho_so)
            .await
            .contains("<TrangThaiHoSo>6</TrangThaiHoSo>")
    );
    let requests = bus.mock_requests("tax", &a.ma_ho_so).await;
    assert!(
        requests.iter().any(|r| r["xml"]
            .as_str()
            .is_some_and(|x| x.contains("XacNhanNopTien"))),
        "{requests:?}"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["tax"]["invalid"], 0, "valid against the XSD: {stats}");
    assert_eq!(
        stats["tax"]["effects"], 3,
        "two forms and one confirmation: {stats}"
    );
    assert_eq!(
        stats["tax"]["callbacks"], 3,
        "two notices and one completion: {stats}"
    );
    bus.stop().await;
}

/// The adapter's documents, checked against the XSD the mock uses (libxml2).
#[test]
fn the_payment_confirmation_and_its_answer_are_valid_against_the_tax_xsd() {
    let tax = lienthong_adapters::tax_xml::TaxXml::new(
        lienthong_adapters::http::Agent::plain(reqwest::Client::new()),
        "http://127.0.0.1:9/tax",
        "http://127.0.0.1:8480/v1/callbacks/CT.H48",
    );
    let form = land(7510, true);
    let env = paid(&form, "TB-CT-0000000abc");
    assert_eq!(tax.prepare(&env).err(), None);
    let doc = tax.payment_confirmation(&env).expect("document");
    lienthong_testkit::mock::validate_tax(&doc).expect("XacNhanNopTien valid");
    lienthong_testkit::mock::validate_tax(&tax.form(&form).expect("form")).expect("form valid");
    let answer = format!(
        r#"<HoanThanhNghiaVu xmlns="{}"><MaHoSo>{}</MaHoSo><MaThamChieu>{}</MaThamChieu><SoThongBao>TB-CT-0000000abc</SoThongBao><NgayXacNhan>20261204</NgayXacNhan><CanBoXuLy>Phạm Văn Thuế</CanBoXuLy><NoiDung>Đã nhận đủ tiền</NoiDung></HoanThanhNghiaVu>"#,
        lienthong_adapters::tax_xml::NS,
        env.ma_ho_so,
        env.message_id
    );
    lienthong_testkit::mock::validate_tax(answer.as_bytes()).expect("HoanThanhNghiaVu valid");
    let reply = tax
        .parse_callback(None, answer.as_bytes())
        .expect("callback");
    assert_eq!(reply.status, 9);
    let mut broken = paid(&form, "TB-1");
    broken.payload.data.as_mut().expect("data")["chung_tu_nop_tien"]
        .as_object_mut()
        .expect("object")
        .remove("so_chung_tu");
    let err = tax.prepare(&broken).expect_err("no so_chung_tu");
    assert!(err.to_string().contains("so_chung_tu"), "{err}");
}

async fn decide(bus: &Bus, decision: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/_mock/decisions", bus.mock_url))
        .json(&decision)
        .send()
        .await
        .expect("decision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_decisions_come_back_and_a_cancel_stops_a_pending_result() {
    let bus = Bus::start("decisions").await;
    let mut centre = bus.listen(SON_HA).await;
    let mut office = bus.listen(LAND_OFFICE).await;

    // What an interface cannot express is refused with the reason.
    for (bad, why) in [
        (
            json!({"agency": "police", "ma_ho_so": "X-261129-0001", "status": 5}),
            "not expressible",
        ),
        (
            json!({"agency": "tax", "ma_ho_so": "X-261129-0001", "status": 3}),
            "no refusal",
        ),
        (
            json!({"agency": "dvcqg", "ma_ho_so": "X-261129-0001", "status": 9}),
            "decides nothing",
        ),
        (
            json!({"agency": "bhxh", "ma_ho_so": "X-261129-0001", "status": 7}),
            "not a decision",
        ),
    ] {
        let r = decide(&bus, bad.clone()).await;
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.expect("json");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(why)),
            "{bad}: {body}"
        );
    }

    let refused = birth(7600, POLICE);
    let accepted = birth(7601, POLICE);
    let reason = "Nơi cư trú không thuộc địa bàn (kịch bản)";
    let r = decide(
        &bus,
        json!({"agency": "police", "ma_ho_so": refused.ma_ho_so, "status": 3, "reason": reason}),
    )
    .await;
    assert_eq!(r.status(), 204);
    let more = land(7602, true);
    let text = "Đề nghị bổ sung bản đồ địa chính thửa đất (kịch bản)";
    let r = decide(
        &bus,
        json!({"agency": "tax", "ma_ho_so": more.ma_ho_so, "status": 5, "reason": text}),
    )
    .await;
    assert_eq!(r.status(), 204);
    // A notice held back for 5 s, cancelled meanwhile: it must never be sent.
    let held = land(7603, true);
    let r = decide(
        &bus,
        json!({"agency": "tax", "ma_ho_so": held.ma_ho_so, "status": 6, "delay_ms": 5000}),
    )
    .await;
    assert_eq!(r.status(), 204);

    let start = std::time::Instant::now();
    for e in [&refused, &accepted, &more, &held] {
        bus.send(e).await;
    }
    eventually_async(20, || async {
        let st = tax_status_at_mock(&bus, &held.ma_ho_so).await;
        st.contains("<TrangThaiHoSo>2</TrangThaiHoSo>")
            .then_some(())
    })
    .await;
    let mut cancel = held.reply(Kind::STATUS, LAND_OFFICE, TAX);
    cancel.status = Some(TrangThaiHoSo::STOPPED);
    cancel.payload.reason = Some("Người sử dụng đất rút hồ sơ".into());
    bus.send(&cancel).await;
    eventually_async(20, || async {
        let st = tax_status_at_mock(&bus, &held.ma_ho_so).await;
        st.contains("<TrangThaiHoSo>8</TrangThaiHoSo>")
            .then_some(())
    })
    .await;
    assert!(
        start.elapsed() < std::time::Duration::from_millis(4500),
        "the cancel reached the mock only after {:?}: too late to prove it stops the pending notice",
        start.elapsed()
    );

    let births = collect_answers(&mut centre, &ids_of([&refused, &accepted]), 60).await;
    assert_eq!(tally(&ids_of([&refused, &accepted]), &births), (0, 0));
    let no = &births[&refused.message_id][0];
    assert_eq!(no.kind.as_str(), Kind::STATUS, "{no:?}");
    assert_eq!(no.status, Some(TrangThaiHoSo::NOT_ACCEPTED));
    assert_eq!(no.payload.reason.as_deref(), Some(reason));
    let yes = &births[&accepted.message_id][0];
    assert_eq!(
        yes.kind.as_str(),
        Kind::RESULT,
        "not scripted: the mock's own choice, {yes:?}"
    );
    assert_eq!(yes.status, Some(TrangThaiHoSo::PROCESSED));

    let land_answers = collect_answers(&mut office, &ids_of([&more]), 60).await;
    let five = &land_answers[&more.message_id][0];
    assert_eq!(
        five.status,
        Some(TrangThaiHoSo::SUPPLEMENT_REQUESTED),
        "{five:?}"
    );
    assert_eq!(five.payload.reason.as_deref(), Some(text));

    // Past the held notice's delay: nothing came for it, and the mock still says stopped.
    let wait = std::time::Duration::from_millis(6500).saturating_sub(start.elapsed());
    tokio::time::sleep(wait).await;
    while let Ok(e) = office.try_recv() {
        assert_ne!(
            e.ma_ho_so, held.ma_ho_so,
            "a cancelled dossier got a result: {e:?}"
        );
    }
    assert!(
        tax_status_at_mock(&bus, &held.ma_ho_so)
            .await
            .contains("<TrangThaiHoSo>8</TrangThaiHoSo>")
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["tax"]["cancels"], 1, "{stats}");
    assert_eq!(
        stats["tax"]["callbacks"], 1,
        "only the request for more data: {stats}"
    );
    assert_eq!(stats["police"]["callbacks"], 2, "{stats}");
    bus.stop().await;
}

/// A death dossier's funeral-allowance step, from Sơn Hà's civil-status office to the
/// Department of Labour's edXML document system (push).
fn death(seq: u32) -> Envelope {
    let ma = format!("{SON_HA}-261129-{seq:04}");
    let mut env = Envelope::new(
        "dossier.forward",
        &ma,
        "1.011537",
        SON_HA_CIVIL,
        Some(LDTBXH),
        &uuid::Uuid::now_v7().to_string(),
    );
    env.payload = serde_json::from_value(json!({
        "applicant": {"ho_ten": "Nguyễn Thị Đào", "so_dinh_danh": "051146386321", "quan_he": "vo"},
        "data": {"nguoi_mat": {"ho_ten": "Hồ Anh Vinh", "so_dinh_danh": "051050044861", "ngay_mat": "2026-11-01"},
                 "thu_tuc_lua_chon": ["khai_tu", "tro_cap_mai_tang"]}
    }))
    .expect("payload");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edxml_branch_held_open_is_recalled_while_another_is_refused() {
    let bus = Bus::start("decisions-edxml").await;
    let mut office = bus.listen(SON_HA_CIVIL).await;
    let (refused, held) = (death(7700), death(7701));
    let reason = "Người mất không thuộc diện hưởng trợ cấp (kịch bản)";
    for d in [
        json!({"agency": "edxml", "ma_ho_so": refused.ma_ho_so, "status": 3, "reason": reason}),
        json!({"agency": "edxml", "ma_ho_so": held.ma_ho_so, "status": 9, "delay_ms": 60_000}),
    ] {
        assert_eq!(decide(&bus, d).await.status(), 204);
    }
    bus.send(&refused).await;
    bus.send(&held).await;
    let answers = collect_answers(&mut office, &ids_of([&refused]), 60).await;
    let no = &answers[&refused.message_id][0];
    assert_eq!(no.status, Some(TrangThaiHoSo::NOT_ACCEPTED), "{no:?}");
    assert_eq!(no.payload.reason.as_deref(), Some(reason));
    assert!(
        !answers.contains_key(&held.message_id),
        "the held branch is still open"
    );

    let mut recall = held.reply(Kind::STATUS, SON_HA_CIVIL, LDTBXH);
    recall.status = Some(TrangThaiHoSo::STOPPED);
    bus.send(&recall).await;
    let store = bus.store();
    let rows = eventually(20, "the recall delivered", || {
        store.timeline(&held.ma_ho_so).ok().filter(|rows| {
            rows.iter().any(|r| {
                r.event == "delivered"
                    && r.reason.as_deref().is_some_and(|x| x.contains("edXML 15"))
            })
        })
    })
    .await;
    assert!(
        !rows.iter().any(|r| r.event == "dead_lettered"),
        "{rows:#?}"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["edxml"]["cancels"], 1, "{stats}");
    assert_eq!(stats["edxml"]["callbacks"], 1, "only the refusal: {stats}");
    bus.stop().await;
}
