//! A filing that lacks what its procedure's route needs is refused at ingress, where the centre
//! can still fix it (issue 15, item 5): over HTTP with 422 problem+json naming each missing
//! field's JSON pointer and the step that needs it, over AMQP as a dead letter with that reason
//! and a notice to the centre; a complete filing goes through, and a centre's later answer to a
//! supplement request (only the new keys) is not held to the filing's schema. Against the real
//! broker, the bus and the mock agencies on loopback.

mod common;

use common::*;
use lienthong_core::amqp::header_str;
use lienthong_core::deadletter::headers;
use lienthong_core::envelope::{Envelope, Kind, TrangThaiHoSo};
use serde_json::{Value, json};

const POINTER: &str = "/payload/data/noi_dang_ky_thuong_tru";

/// A birth dossier filed at Sơn Hà for the process manager (no receiver); without any residence
/// address when `complete` is false.
fn filing(seq: u32, complete: bool) -> Envelope {
    let mut env = birth(seq, SON_HA_CIVIL);
    env.receiver = None;
    if !complete {
        strip_residence(&mut env);
    }
    env
}

/// Remove every residence address Police could use (the dossier's, the child's, the applicant's).
fn strip_residence(env: &mut Envelope) {
    if let Some(d) = env.payload.data.as_mut() {
        d.remove("noi_dang_ky_thuong_tru");
    }
    if let Some(a) = env.payload.applicant.as_mut() {
        a.dia_chi = None;
    }
}

async fn post(bus: &Bus, env: &Envelope) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key(SON_HA))
        .json(env)
        .send()
        .await
        .expect("http")
}

/// The next envelope of `kind` for dossier `ma` on `rx` (others are skipped).
async fn next_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Envelope>,
    kind: &str,
    ma: &str,
) -> Envelope {
    let [e] = first_of_each(rx, kind, [ma]).await;
    e
}

/// The first envelope of `kind` for each dossier of `mas` on `rx`, in the order of `mas` whatever
/// the order they come in (others are skipped; panics after 30 s without any envelope).
async fn first_of_each<const N: usize>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Envelope>,
    kind: &str,
    mas: [&str; N],
) -> [Envelope; N] {
    let mut got: [Option<Envelope>; N] = std::array::from_fn(|_| None);
    while got.iter().any(Option::is_none) {
        let e = next(rx, 30).await;
        if e.kind.as_str() == kind
            && let Some(i) = mas.iter().position(|m| *m == e.ma_ho_so)
            && got[i].is_none()
        {
            got[i] = Some(e);
        }
    }
    got.map(|e| e.expect("every one came"))
}

/// The problem+json `errors[]` entry for the residence address, checked.
fn assert_residence_problem(p: &Value) {
    assert_eq!(p["type"], "urn:lienthong:problem:procedure-data-invalid");
    assert_eq!(p["status"], 422);
    let errors = p["errors"].as_array().expect("errors[]");
    assert_eq!(errors.len(), 1, "{p}");
    let e = &errors[0];
    assert_eq!(e["pointer"], POINTER);
    assert_eq!(
        e["alternatives"],
        json!([
            "/payload/data/tre/noi_thuong_tru",
            "/payload/applicant/dia_chi"
        ])
    );
    assert_eq!(e["detail"], "missing (any one of the alternatives will do)");
    assert_eq!(
        e["needed_by"],
        json!([{"step": "thuong-tru", "name": "Đăng ký thường trú", "unit": POLICE,
                "unit_name": "Công an tỉnh Quảng Ngãi"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birth_filing_without_a_residence_address_is_refused_at_ingress_with_the_pointer() {
    let bus = Bus::start("filing").await;
    let mut centre = bus.listen(SON_HA).await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let store = bus.store();

    // HTTP, a filing for the process manager: 422, the pointer and the step that needs it;
    // nothing is run.
    let incomplete = filing(1, false);
    let r = post(&bus, &incomplete).await;
    assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.expect("problem");
    assert_residence_problem(&p);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1.001193") && d.contains("schemas/procedures/")),
        "{p}"
    );

    // HTTP, the centre driving the route itself: its first forward is its filing too.
    let mut driven = birth(2, SON_HA_CIVIL);
    strip_residence(&mut driven);
    let r = post(&bus, &driven).await;
    assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert_residence_problem(&r.json().await.expect("problem"));
    assert!(
        store.origin(&driven.ma_ho_so).expect("store").is_none(),
        "a refused filing records no origin"
    );

    // AMQP: dead-lettered with the pointer in the reason, and the centre is told.
    let over_amqp = filing(3, false);
    bus.send(&over_amqp).await;
    let notice = next_for(&mut centre, Kind::DEAD_LETTER, &over_amqp.ma_ho_so).await;
    assert_eq!(
        notice.causation_id.as_deref(),
        Some(over_amqp.message_id.as_str())
    );
    let reason = notice.payload.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("procedure-data-invalid: ")
            && reason.contains(&format!("{POINTER} (or /payload/data/tre/noi_thuong_tru, /payload/applicant/dia_chi): missing"))
            && reason.contains("thuong-tru at CA.H48"),
        "{reason}"
    );
    let dead = bus.dead(1, 15).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&dead[0].0).expect("body")["message_id"],
        json!(over_amqp.message_id),
        "the dead letter is the filing, body kept"
    );
    assert_eq!(
        header_str(&dead[0].1, headers::REASON_CODE).as_deref(),
        Some("procedure-data-invalid")
    );
    assert!(
        header_str(&dead[0].1, headers::REASON).is_some_and(|r| r.contains(POINTER)),
        "the reason header carries the pointer"
    );
    for ma in [&incomplete.ma_ho_so, &over_amqp.ma_ho_so] {
        assert!(
            store.process(ma).expect("store").is_none(),
            "{ma} is not run"
        );
    }

    // Complete filings go through, over HTTP and over AMQP: the civil-status office gets them.
    let good_http = filing(4, true);
    let r = post(&bus, &good_http).await;
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    let good_amqp = filing(5, true);
    bus.send(&good_amqp).await;
    // In either order: the two filings are routed side by side.
    let [first, _] = first_of_each(
        &mut civil,
        Kind::FORWARD,
        [&good_http.ma_ho_so, &good_amqp.ma_ho_so],
    )
    .await;
    assert_eq!(first.sender, SON_HA);
    // Only those two reached the office: the refused ones never left ingress.
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(2), civil.recv())
            .await
            .is_err(),
        "nothing else for the civil-status office"
    );

    // The civil-status office asks for a supplement; the centre's answer over HTTP carries only
    // the new keys and is not held to the filing's schema: 202, and the office gets the dossier
    // again.
    let mut more = first.reply(Kind::STATUS, SON_HA_CIVIL, SON_HA);
    more.status = Some(TrangThaiHoSo::SUPPLEMENT_REQUESTED);
    more.payload.reason = Some("Bổ sung giấy chứng sinh bản chính".into());
    bus.send(&more).await;
    let asked = next_for(&mut centre, Kind::STATUS, &good_http.ma_ho_so).await;
    assert_eq!(asked.status, Some(TrangThaiHoSo::SUPPLEMENT_REQUESTED));
    let mut answer = Envelope::new(
        Kind::FORWARD,
        &good_http.ma_ho_so,
        "1.001193",
        SON_HA,
        None,
        &good_http.correlation_id,
    );
    answer.payload.data = json!({"bo_sung": {"noi_dung": "Giấy chứng sinh bản chính"}})
        .as_object()
        .cloned();
    let r = post(&bus, &answer).await;
    assert_eq!(
        r.status(),
        reqwest::StatusCode::ACCEPTED,
        "{:?}",
        r.text().await
    );
    let again = next_for(&mut civil, Kind::FORWARD, &good_http.ma_ho_so).await;
    let data = again.payload.data.clone().unwrap_or_default();
    assert_eq!(data["tiep_tuc_sau_tam_dung"], json!(true));
    assert_eq!(data["bo_sung"]["noi_dung"], "Giấy chứng sinh bản chính");
    bus.stop().await;
}
