//! The edXML adapter through the real broker: a death dossier's funeral-allowance step goes to
//! the Department of Labour's document system as a pushed edXML package (mock department,
//! status packages back), and to a department that pulls its packages from the bus's outbox
//! (list, fetch, `done` / `fail` acknowledgements, dead letter after `fail`).

mod common;

use std::time::Duration;

use common::*;
use lienthong_adapters::edxml::{dossier, read, write};
use lienthong_core::envelope::{Envelope, Kind};

const LDTBXH: &str = "000.00.15.H48";

/// A death dossier's funeral-allowance step, from Sơn Hà's civil-status office (where the
/// dossier entered the bus here, so results return there) to `receiver`.
fn death(seq: u32, receiver: &str) -> Envelope {
    let ma = format!("{SON_HA}-261129-{seq:04}");
    let mut env = Envelope::new(
        "dossier.forward",
        &ma,
        "1.011537",
        SON_HA_CIVIL,
        Some(receiver),
        &uuid::Uuid::now_v7().to_string(),
    );
    env.payload = serde_json::from_value(serde_json::json!({
        "applicant": {"ho_ten": "Nguyễn Thị Đào", "ngay_sinh": "1946-09-12", "gioi_tinh": "nu", "so_dinh_danh": "051146386321", "quan_he": "vo"},
        "data": {"loai_lien_thong": "khai_tu_xoa_thuong_tru_mai_tang",
                 "nguoi_mat": {"ho_ten": "Hồ Anh Vinh", "ngay_sinh": "1950-04-13", "gioi_tinh": "nam", "so_dinh_danh": "051050044861", "ngay_mat": "2026-11-01"},
                 "thu_tuc_lua_chon": ["khai_tu", "tro_cap_mai_tang"]}
    }))
    .expect("payload");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_edxml_package_is_registered_once_and_its_status_package_comes_back_as_the_result()
{
    let bus = Bus::start("edxml-push").await;
    let mut centre = bus.listen(SON_HA_CIVIL).await;
    let envs: Vec<Envelope> = (0..20).map(|i| death(7000 + i, LDTBXH)).collect();
    // Two refusals of the department's system first: retried with the same DocumentId.
    bus.fault("edxml", &envs[0].ma_ho_so, &[503, 503]).await;
    for e in &envs {
        bus.send(e).await;
    }
    let ids = ids_of(&envs);
    let answers = collect_answers(&mut centre, &ids, 60).await;
    assert_eq!(tally(&ids, &answers), (0, 0));
    for e in &envs {
        let r = &answers[&e.message_id][0];
        assert_eq!(r.kind.as_str(), Kind::RESULT, "{r:?}");
        assert_eq!(r.sender, LDTBXH);
        let result = r.payload.result.as_ref().expect("result");
        assert_eq!(result["edxml_status_code"], "06");
    }
    let stats = bus.mock_stats().await;
    assert_eq!(stats["edxml"]["effects"], 20, "{stats}");
    assert_eq!(stats["edxml"]["invalid"], 0, "{stats}");
    let rows = delivered_timeline(&bus.store(), &envs[0].ma_ho_so).await;
    assert!(
        rows.iter()
            .any(|r| r.reason.as_deref().is_some_and(|x| x.contains("edXML 01"))),
        "the department's 01 (arrived) is the receipt: {rows:#?}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.event == "retried").count(),
        2,
        "{rows:#?}"
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulling_department_lists_fetches_and_acknowledges_and_a_fail_is_dead_lettered() {
    let bus = Bus::start_with("edxml-pull", |s| {
        for u in &mut s.units {
            // The Department of Labour's system pulls in this test.
            if u.code == LDTBXH
                && let lienthong_core::registry::Reach::Adapter { settings, .. } = &mut u.reach
            {
                settings.insert("transport".into(), "pull".into());
                settings.insert("max_fetches".into(), 2.into());
            }
        }
    })
    .await;
    let mut centre = bus.listen(SON_HA_CIVIL).await;
    let ldtbxh_key = bus.callback_key(LDTBXH);
    let key = ldtbxh_key.as_str();
    let http = reqwest::Client::new();
    let base = format!("{}/v1/edxml/{LDTBXH}/packages", bus.http);
    // Not this unit's key: refused.
    let r = http
        .get(&base)
        .bearer_auth(bus.callback_key("000.00.07.H48"))
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), 401);
    let a = death(7101, LDTBXH);
    let b = death(7102, LDTBXH);
    bus.send(&a).await;
    bus.send(&b).await;
    let list: Vec<serde_json::Value> = eventually_async(20, || async {
        let v: Vec<serde_json::Value> = http
            .get(&base)
            .bearer_auth(key)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(list[0]["state"], "waiting");
    // The AMQP deliveries are acked already: nothing waits in the unit's queue.
    // Fetch and read the first package.
    let id_a = a.message_id.clone();
    let pkg = http
        .get(format!("{base}/{id_a}"))
        .bearer_auth(key)
        .send()
        .await
        .expect("fetch");
    assert_eq!(pkg.status(), 200);
    let bytes = pkg.bytes().await.expect("bytes");
    let p = read::read_bytes(&bytes).expect("an edXML package");
    assert_eq!(
        p.message_header.code.and_then(|c| c.code_number),
        Some(a.ma_ho_so.clone())
    );
    let doc_id = p.message_header.document_id.expect("DocumentId");
    // done: the hand-over is complete in the trace.
    let r: serde_json::Value = http
        .post(format!("{base}/{id_a}/ack"))
        .bearer_auth(key)
        .json(&serde_json::json!({"status": "done"}))
        .send()
        .await
        .expect("ack")
        .json()
        .await
        .expect("json");
    assert_eq!(r["state"], "done");
    let store = bus.store();
    eventually(10, "the done acknowledgement in the trace", || {
        store.timeline(&a.ma_ho_so).ok().filter(|rows| {
            rows.iter().any(|r| {
                r.event == "delivered"
                    && r.reason
                        .as_deref()
                        .is_some_and(|x| x.contains("acknowledged it: done"))
            })
        })
    })
    .await;
    // Its status package (06) through the callback becomes the result.
    let status = dossier::status_package(LDTBXH, &doc_id, "06", "Đã xử lý xong", "Lê Văn Tâm");
    let (body, _) = write::write(&status, Vec::new(), Vec::new()).expect("write");
    let r = http
        .post(format!("{}/v1/callbacks/{LDTBXH}", bus.http))
        .bearer_auth(key)
        .header("content-type", "application/xml")
        .body(body)
        .send()
        .await
        .expect("callback");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let res = next(&mut centre, 20).await;
    assert_eq!(res.kind.as_str(), Kind::RESULT);
    assert_eq!(res.causation_id.as_deref(), Some(id_a.as_str()));
    // A 01 (arrived) changes nothing: traced, not forwarded.
    let arrived = dossier::status_package(LDTBXH, &doc_id, "01", "Đã đến", "");
    let (body, _) = write::write(&arrived, Vec::new(), Vec::new()).expect("write");
    let r = http
        .post(format!("{}/v1/callbacks/{LDTBXH}", bus.http))
        .bearer_auth(key)
        .header("content-type", "application/xml")
        .body(body)
        .send()
        .await
        .expect("callback");
    assert!(r.status().is_success());
    assert!(
        tokio::time::timeout(Duration::from_secs(2), centre.recv())
            .await
            .is_err(),
        "nothing forwarded for 01"
    );
    // … and the trace names the department's code, which the HTTP route does not know.
    eventually(10, "the 01 status in the trace", || {
        store.timeline(&a.ma_ho_so).ok().filter(|rows| {
            rows.iter().any(|r| {
                r.reason
                    .as_deref()
                    .is_some_and(|x| x.contains("edXML status 01 arrived: Đã đến"))
            })
        })
    })
    .await;
    // fail twice (max_fetches 2): back to waiting, then dead-lettered with the reason.
    let id_b = b.message_id.clone();
    for expected in ["waiting", "failed"] {
        let f = http
            .get(format!("{base}/{id_b}"))
            .bearer_auth(key)
            .send()
            .await
            .expect("fetch");
        assert_eq!(f.status(), 200);
        let r: serde_json::Value = http
            .post(format!("{base}/{id_b}/ack"))
            .bearer_auth(key)
            .json(&serde_json::json!({"status": "fail", "reason": "sổ văn bản đến đã khoá"}))
            .send()
            .await
            .expect("ack")
            .json()
            .await
            .expect("json");
        assert_eq!(r["state"], expected);
    }
    let dead = bus.dead(1, 10).await;
    assert_eq!(dead.len(), 1);
    let reason =
        lienthong_core::amqp::header_str(&dead[0].1, lienthong_core::deadletter::headers::REASON)
            .unwrap_or_default();
    assert!(reason.contains("sổ văn bản đến đã khoá"), "{reason}");
    let left: Vec<serde_json::Value> = http
        .get(&base)
        .bearer_auth(key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(left.is_empty(), "{left:?}");
    bus.stop().await;
}
