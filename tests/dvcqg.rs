//! The DVCQG progress sync adapter against the mock portal on loopback: login with `dstcode`,
//! `TraCuuHoSo` choosing insert or update, `DongBoHoSoMC`, `CapNhatTienDoHoSoMC`; a failure
//! inside a 200 (`error_code` other than "00"), an expired session, refused credentials and a
//! 503 are each handled as they must be.

mod common;

use common::*;
use lienthong_adapters::{Adapter, Outcome};
use lienthong_core::envelope::{Envelope, TrangThaiHoSo};
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings};
use serde_json::Value;

async fn portal(
    change: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> (
    std::sync::Arc<dyn Adapter>,
    lienthong_testkit::mock::MockServer,
    String,
) {
    let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("shipped config");
    s.mock.listen = "127.0.0.1:0".into();
    s.mock.unavailable_rate = 0.0;
    s.mock.latency_min_ms = 0;
    s.mock.latency_max_ms = 2;
    let mock = lienthong_testkit::mock::serve(&s).await.expect("mock");
    let mut unit = s
        .units
        .iter()
        .find(|u| u.code == "DVCQG")
        .cloned()
        .expect("the shipped config has the portal");
    if let Reach::Adapter {
        endpoint, settings, ..
    } = &mut unit.reach
    {
        *endpoint = format!("http://{}/dvcqg", mock.addr);
        change(settings);
    }
    let adapter = lienthong_adapters::build(&unit, "http://127.0.0.1:1").expect("adapter");
    let url = format!("http://{}", mock.addr);
    (adapter, mock, url)
}

async fn view(url: &str, ma: &str) -> Value {
    reqwest::get(format!("{url}/_mock/dvcqg/{ma}"))
        .await
        .expect("view")
        .json()
        .await
        .expect("json")
}

fn with_status(mut env: Envelope, kind: &str, status: u8, reason: &str) -> Envelope {
    env.kind = lienthong_core::envelope::Kind(kind.into());
    env.status = Some(TrangThaiHoSo(status));
    env.payload.reason = Some(reason.into());
    env.sent_at = lienthong_core::clock::now_rfc3339();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_is_inserted_then_updated_with_its_progress_in_the_documented_format() {
    let (adapter, mock, url) = portal(|_| {}).await;
    let env = birth(8001, POLICE);
    let first = adapter.deliver(&env).await;
    assert!(
        matches!(&first, Outcome::Delivered { receipt } if receipt.contains("inserted")),
        "{first:?}"
    );
    let v = view(&url, &env.ma_ho_so).await;
    let d = &v["dossier"];
    assert_eq!(d["MaHoSo"], env.ma_ho_so.as_str());
    assert_eq!(d["MaTTHC"], "1.001193");
    assert_eq!(d["ChuHoSo"], "Đinh Văn Lực");
    assert_eq!(d["TrangThaiHoSo"], "2");
    assert!(
        d["NgayTiepNhan"]
            .as_str()
            .is_some_and(|t| t.len() == 14 && t.bytes().all(|b| b.is_ascii_digit())),
        "{d}"
    );
    // Later: processed (9), an update.
    let done = with_status(env.clone(), "dossier.result", 9, "Đã đăng ký thường trú");
    let second = adapter.deliver(&done).await;
    assert!(
        matches!(&second, Outcome::Delivered { receipt } if receipt.contains("updated")),
        "{second:?}"
    );
    let v = view(&url, &env.ma_ho_so).await;
    assert_eq!(v["dossier"]["TrangThaiHoSo"], "9");
    let progress = v["progress"].as_array().expect("progress");
    assert_eq!(progress.len(), 2, "{v}");
    assert_eq!(progress[1]["TrangThai"], "9");
    assert_eq!(progress[1]["NoiDungXuLy"], "Đã đăng ký thường trú");
    // The same message again: an update with the same progress entry, no second effect.
    assert!(matches!(
        adapter.deliver(&done).await,
        Outcome::Delivered { .. }
    ));
    let stats: Value = reqwest::get(format!("{url}/_mock/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["dvcqg"]["effects"], 2, "{stats}");
    assert_eq!(stats["dvcqg"]["replays"], 1, "{stats}");
    assert_eq!(stats["dvcqg"]["invalid"], 0, "{stats}");
    let _ = mock.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_inside_a_200_an_expired_session_bad_credentials_and_a_503() {
    let (adapter, mock, url) = portal(|_| {}).await;
    let http = reqwest::Client::new();
    let env = birth(8002, POLICE);
    // error_code 99 in a 200 is a failure, never a success.
    let r = http
        .post(format!("{url}/_mock/faults"))
        .json(&serde_json::json!({"agency": "dvcqg", "ma_ho_so": env.ma_ho_so, "responses": [lienthong_testkit::mock::ERROR_IN_200, lienthong_testkit::mock::ERROR_IN_200]}))
        .send()
        .await
        .expect("fault");
    assert!(r.status().is_success());
    let out = adapter.deliver(&env).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("error_code") && reason.contains("99")),
        "{out:?}"
    );
    assert!(view(&url, &env.ma_ho_so).await["dossier"].is_null());
    // An expired session: logged in again transparently.
    assert!(matches!(
        adapter.deliver(&env).await,
        Outcome::Delivered { .. }
    ));
    http.post(format!("{url}/_mock/dvcqg-expire"))
        .send()
        .await
        .expect("expire");
    let later = with_status(env.clone(), "dossier.status", 4, "Đang xử lý");
    let out = adapter.deliver(&later).await;
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    // 503: transient, retried by the common policy.
    http.post(format!("{url}/_mock/faults"))
        .json(&serde_json::json!({"agency": "dvcqg", "ma_ho_so": env.ma_ho_so, "responses": [503]}))
        .send()
        .await
        .expect("fault");
    let out = adapter.deliver(&later).await;
    assert!(matches!(out, Outcome::Transient { .. }), "{out:?}");
    let _ = mock.stop.send(());
    // Wrong password: the login is refused, a permanent failure that says so.
    let (bad, mock2, _) = portal(|s| {
        s.insert("password".into(), "wrong".into());
    })
    .await;
    let out = bad.deliver(&env).await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("login refused")),
        "{out:?}"
    );
    let _ = mock2.stop.send(());
}
