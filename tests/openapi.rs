//! The HTTP API against its OpenAPI document (issue 20, item 1), on a live bus (the real broker,
//! the mock agencies, loopback): the bus serves the committed `schemas/openapi.json` at
//! `/openapi.json`, and schemathesis (`scripts/check-openapi`, pinned, from PyPI) sends a
//! bounded number of generated requests to every operation, with a key of each security scheme
//! and what the test made before (a dossier filed and completed, its attachment, an edXML
//! package waiting, a dead letter: so that the reads answer real data), and finds no 5xx and no
//! answer that contradicts the document.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use lienthong_core::envelope::Envelope;
use serde_json::{Value, json};
use sha2::Digest;

/// The Department of Labour: its document system pulls edXML packages in this test, so its
/// callback key opens the callbacks and the edXML pull routes.
const LDTBXH: &str = "000.00.15.H48";

/// A death dossier's funeral-allowance step from Sơn Hà's civil-status office to the Department
/// of Labour (as in tests/edxml_bus.rs): a package in the department's outbox.
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
        "data": {"loai_lien_thong": "khai_tu_xoa_thuong_tru_mai_tang",
                 "nguoi_mat": {"ho_ten": "Hồ Anh Vinh", "so_dinh_danh": "051050044861", "ngay_mat": "2026-11-01"},
                 "thu_tuc_lua_chon": ["khai_tu", "tro_cap_mai_tang"]}
    }))
    .expect("payload");
    env
}

/// Longest schemathesis run before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// `GET url` with `key`: its JSON answer, or `None` while it is not there yet.
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
    key: &str,
) -> Option<T> {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_that_contradicts_the_document() {
    let bus = Bus::start_with("openapi", |s| {
        // Thousands of requests in a minute with the one operator key.
        s.http.operator_rate_per_s = 1_000_000;
        s.http.operator_rate_burst = 1_000_000;
        // Any attachment leaves the envelope for the blob store.
        s.envelope.max_inline_attachment_bytes = 16;
        for u in &mut s.units {
            if u.code == LDTBXH
                && let lienthong_core::registry::Reach::Adapter { settings, .. } = &mut u.reach
            {
                settings.insert("transport".into(), "pull".into());
            }
        }
    })
    .await;
    let http = reqwest::Client::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // The document served is the committed one.
    let served = http
        .get(format!("{}/openapi.json", bus.http))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(served.status().as_u16(), 200);
    let served = served.text().await.expect("the document");
    let committed =
        std::fs::read_to_string(root.join("schemas/openapi.json")).expect("schemas/openapi.json");
    assert!(
        served == committed,
        "the bus serves another document than schemas/openapi.json: regenerate it with `{}`",
        lienthong::http_api::openapi::REGENERATE
    );

    // Something to read: a dossier filed over HTTP with an attachment (claim-checked) and
    // completed (Sơn Hà's civil-status office answers over AMQP, Police and Social Insurance are
    // the mock agencies), its statuses and result in the centre's queue; a package waiting in the
    // Department of Labour's outbox; a dead letter.
    answer_as_civil_status_office(&bus).await;
    let mut filed = filed_birth(9801);
    // A code as long as the pattern lets a centre make them (an 8-digit day, an 8-digit number).
    filed.ma_ho_so = format!("{SON_HA}-20261129-00009801");
    let content = b"%PDF-1.4 giay chung sinh";
    let blob = lienthong_core::envelope::hex(&sha2::Sha256::digest(content));
    filed.attachments = serde_json::from_value(json!([{
        "name": "giay_chung_sinh.pdf", "media_type": "application/pdf",
        "size_bytes": content.len(), "sha256": blob,
        "content_base64": base64::engine::general_purpose::STANDARD.encode(content)
    }]))
    .expect("attachments");
    let ma = filed.ma_ho_so.clone();
    let r = http
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key(SON_HA))
        .json(&filed)
        .send()
        .await
        .expect("POST /v1/messages");
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    let package = death(9802);
    bus.send(&package).await;
    bus.send_raw(b"{\"not\": \"an envelope\"").await;
    let agency_key = bus.callback_key(LDTBXH);
    let operator = bus.operator_key();
    eventually_async(120, || async {
        let state: Value =
            get_json(&http, format!("{}/v1/dossiers/{ma}", bus.http), &operator).await?;
        let dead: Vec<Value> =
            get_json(&http, format!("{}/v1/dead-letters", bus.http), &operator).await?;
        let waiting: Vec<Value> = get_json(
            &http,
            format!("{}/v1/edxml/{LDTBXH}/packages", bus.http),
            &agency_key,
        )
        .await?;
        (state["phase"] == "completed" && !dead.is_empty() && !waiting.is_empty()).then_some(())
    })
    .await;

    // schemathesis, with a bound on its time.
    let out = bus.dir.join("schemathesis.log");
    let log = std::fs::File::create(&out).expect("log file");
    // LIENTHONG_SCHEMATHESIS_ARGS: more options for schemathesis (`--seed N`, `--report har`, …).
    let extra = std::env::var("LIENTHONG_SCHEMATHESIS_ARGS").unwrap_or_default();
    let mut child = Command::new(root.join("scripts/check-openapi"))
        .arg(&bus.http)
        .args(extra.split_whitespace())
        .env("LIENTHONG_UNIT_KEY", bus.key(SON_HA))
        .env("LIENTHONG_AGENCY_KEY", &agency_key)
        .env("LIENTHONG_OPERATOR_KEY", &operator)
        .env("LIENTHONG_AGENCY_UNIT", LDTBXH)
        .env("LIENTHONG_PACKAGE", &package.message_id)
        .env("LIENTHONG_DOSSIER", &ma)
        .env("LIENTHONG_BLOB", &blob)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("scripts/check-openapi starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    println!("{report}");
    assert!(
        status.is_some(),
        "schemathesis took longer than {RUN_LIMIT:?}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "schemathesis found answers that contradict schemas/openapi.json (above; took {:?})",
        started.elapsed()
    );
    bus.stop().await;
}
