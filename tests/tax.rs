//! The Tax adapter through the real broker: the land registration office's information-transfer
//! form reaches the mock tax authority (validated against `schemas/agencies/tax-land/`), and the
//! payment notice (status 6) or the request for more data (status 5) comes back to the land
//! registration office, the sender; a form without a parcel is dead-lettered at once.

mod common;

use common::*;
use lienthong_core::envelope::{Envelope, Kind};

const LAND_OFFICE: &str = "000.10.12.H48";
const TAX: &str = "CT.H48";

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
