//! The Customs adapter through the real broker, on the synthetic procedure SYN.HQ.001: a centre
//! asks Customs to confirm an import declaration; the mock validates the request against
//! `schemas/agencies/customs/submit.schema.json` and the result returns to the centre; a
//! declaration number of the wrong shape is dead-lettered without calling Customs.

mod common;

use common::*;
use lienthong_core::envelope::{Envelope, Kind};

const CUSTOMS: &str = "HQ.H48";

fn declaration(seq: u32, so_to_khai: &str) -> Envelope {
    let ma = format!("{SON_HA}-261129-{seq:04}");
    let mut env = Envelope::new(
        "dossier.forward",
        &ma,
        "SYN.HQ.001",
        SON_HA,
        Some(CUSTOMS),
        &uuid::Uuid::now_v7().to_string(),
    );
    env.payload = serde_json::from_value(serde_json::json!({
        "applicant": {"ho_ten": "Trần Minh Khoa", "so_dinh_danh": "051088001234", "so_dien_thoai": "0905000111"},
        "data": {"to_khai_hai_quan": {"so_to_khai": so_to_khai, "ngay_to_khai": "2026-11-20",
                                      "so_khung": "RLHFC1234NY000123", "so_may": "L15B7-1234567"}}
    }))
    .expect("payload");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customs_confirms_a_declaration_and_a_malformed_one_is_dead_lettered() {
    let bus = Bus::start("customs").await;
    let mut centre = bus.listen(SON_HA).await;
    let envs: Vec<Envelope> = (0..20)
        .map(|i| declaration(7500 + i, &format!("1056{:08}", 1000 + i)))
        .collect();
    bus.fault("customs", &envs[0].ma_ho_so, &[503]).await;
    let bad = declaration(7599, "12-34");
    bus.send(&bad).await;
    for e in &envs {
        bus.send(e).await;
    }
    let mut ids = ids_of(&envs);
    ids.push(bad.message_id.clone());
    let answers = collect_answers(&mut centre, &ids, 60).await;
    assert_eq!(tally(&ids, &answers), (0, 0));
    for e in &envs {
        let r = &answers[&e.message_id][0];
        assert_eq!(r.kind.as_str(), Kind::RESULT, "{r:?}");
        let result = r.payload.result.as_ref().expect("result");
        assert_eq!(result["xac_nhan"], true, "{result:?}");
        assert_eq!(
            result["so_to_khai"],
            e.payload.data.as_ref().expect("data")["to_khai_hai_quan"]["so_to_khai"]
        );
    }
    let d = &answers[&bad.message_id][0];
    assert_eq!(d.kind.as_str(), Kind::DEAD_LETTER);
    assert!(
        d.payload
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("so_to_khai")),
        "{d:?}"
    );
    let stats = bus.mock_stats().await;
    assert_eq!(stats["customs"]["effects"], 20, "{stats}");
    assert_eq!(stats["customs"]["invalid"], 0, "{stats}");
    bus.stop().await;
}
