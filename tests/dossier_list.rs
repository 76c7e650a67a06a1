//! The dossier list, through the real broker and the HTTP API: routed and process-manager
//! dossiers are listed with their phase and holder, found by an applicant's name typed without
//! diacritics, filtered, refused without the operator key, and exported as CSV and XLSX (over
//! HTTP and by `lienthong dossiers` / `lienthong trace`) with the Vietnamese text intact.

mod common;

use std::io::Read;
use std::process::Command;

use common::procs::EXE;
use common::*;
use lienthong_core::envelope::Kind;
use serde_json::{Map, Value, json};

/// `GET /v1/dossiers?<query>` with the operator key: status and body.
async fn list(bus: &Bus, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/v1/dossiers?{query}", bus.http))
        .bearer_auth(bus.operator_key())
        .send()
        .await
        .expect("list");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The codes of a listed page, sorted.
fn codes(page: &Value) -> Vec<String> {
    let mut c: Vec<String> = page["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ma_ho_so"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    c.sort();
    c
}

/// The text of every cell of the first worksheet of an XLSX file (its shared strings).
fn xlsx_strings(bytes: &[u8]) -> String {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("an XLSX is a zip");
    let mut xml = String::new();
    zip.by_name("xl/sharedStrings.xml")
        .expect("shared strings")
        .read_to_string(&mut xml)
        .expect("utf-8");
    xml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dossiers_are_listed_found_without_diacritics_filtered_and_exported_for_excel() {
    let bus = Bus::start("dossier-list").await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;

    // Routed: one answered by the civil-status office, one still with it.
    let done = birth(9101, SON_HA_CIVIL);
    bus.send(&done).await;
    let at_civil = next(&mut civil, 15).await;
    let mut result = at_civil.reply(Kind::RESULT, SON_HA_CIVIL, SON_HA);
    result.payload.result = Some(Map::from_iter([(
        "so_dang_ky_khai_sinh".to_string(),
        json!("153/2026"),
    )]));
    bus.send(&result).await;
    let mut open = birth(9102, SON_HA_CIVIL);
    if let Some(a) = open.payload.applicant.as_mut() {
        a.ho_ten = "Nguyễn Thị Đào".into();
    }
    bus.send(&open).await;
    let _ = next(&mut civil, 15).await;
    // Run by the process manager: its first step is the civil-status office's.
    let managed = filed_birth(9103);
    bus.send(&managed).await;

    let all = eventually_async(20, || async {
        let (_, page) = list(&bus, "q=261129-910").await;
        let done_row = page["items"]
            .as_array()?
            .iter()
            .find(|i| i["ma_ho_so"] == done.ma_ho_so.as_str())?
            .clone();
        (page["total"] == 3 && done_row["phase"] == "completed").then_some(page)
    })
    .await;
    let row = |ma: &str| {
        all["items"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["ma_ho_so"] == ma).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(row(&done.ma_ho_so)["holder"], Value::Null, "{all:#}");
    assert!(row(&done.ma_ho_so)["ended_ms"].is_i64(), "{all:#}");
    assert_eq!(row(&open.ma_ho_so)["phase"], "running");
    assert_eq!(row(&open.ma_ho_so)["holder"], SON_HA_CIVIL);
    assert_eq!(row(&open.ma_ho_so)["centre"], SON_HA);
    let pm = row(&managed.ma_ho_so);
    assert_eq!(pm["managed"], true, "{pm:#}");
    assert_eq!(pm["holder"], SON_HA_CIVIL, "{pm:#}");
    assert!(pm["due_ms"].is_i64(), "a legal due time: {pm:#}");

    // Found by the applicant's name without diacritics or case, in any word order.
    let (_, page) = list(&bus, "q=nguyen%20thi%20DAO").await;
    assert_eq!(codes(&page), [open.ma_ho_so.clone()]);
    let (_, page) = list(&bus, "q=luc%20dinh%20261129-910").await;
    assert_eq!(
        codes(&page),
        [done.ma_ho_so.clone(), managed.ma_ho_so.clone()]
    );
    // Filters.
    let (_, page) = list(
        &bus,
        &format!("q=261129-910&holder={SON_HA_CIVIL}&phase=open"),
    )
    .await;
    assert_eq!(
        codes(&page),
        [open.ma_ho_so.clone(), managed.ma_ho_so.clone()]
    );
    let (_, page) = list(&bus, "q=261129-910&phase=completed&limit=1").await;
    assert_eq!(
        (page["total"].as_u64(), codes(&page)),
        (Some(1), vec![done.ma_ho_so.clone()])
    );
    let (_, page) = list(&bus, "q=261129-910&since=2000-01-01&until=2000-01-02").await;
    assert_eq!(page["total"], 0);
    // A bad filter is a 400 that says what is wrong; no key, no list.
    let (status, problem) = list(&bus, "phase=lost").await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("running")),
        "{problem}"
    );
    let (status, _) = list(&bus, "colour=red").await;
    assert_eq!(status, 400, "unknown filters are refused");
    let anonymous = reqwest::Client::new()
        .get(format!("{}/v1/dossiers", bus.http))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anonymous.status().as_u16(), 401);

    // Exports: CSV (BOM, Vietnamese intact) and XLSX over HTTP.
    let client = reqwest::Client::new();
    let csv = client
        .get(format!("{}/v1/dossiers?q=261129-910&format=csv", bus.http))
        .bearer_auth(bus.operator_key())
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status().as_u16(), 200);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .is_ok_and(|d| d.starts_with("attachment")),
        "a download"
    );
    let bytes = csv.bytes().await.expect("csv body");
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        "UTF-8 with BOM for Excel"
    );
    let text = String::from_utf8_lossy(&bytes[3..]).to_string();
    assert_eq!(text.lines().count(), 4, "heading + 3 dossiers: {text}");
    assert!(text.contains("Nguyễn Thị Đào"), "{text}");
    assert!(
        text.contains("Đã xử lý xong"),
        "the phase in Vietnamese: {text}"
    );
    let xlsx = client
        .get(format!(
            "{}/v1/dossiers/{}/trace?format=xlsx",
            bus.http, done.ma_ho_so
        ))
        .bearer_auth(bus.operator_key())
        .send()
        .await
        .expect("xlsx")
        .bytes()
        .await
        .expect("xlsx body");
    let strings = xlsx_strings(&xlsx);
    assert!(strings.contains("Sự kiện (event)"), "{strings}");
    assert!(
        strings.contains("delivered") || strings.contains("routed"),
        "{strings}"
    );

    // The same from the command line, reading the bus's store.
    let config = bus.dir.join("list-config.toml");
    bus.settings.write_file(&config).expect("config");
    let out = Command::new(EXE)
        .arg("--config")
        .arg(&config)
        .args(["dossiers", "--q", "nguyen thi dao", "--json"])
        .output()
        .expect("lienthong dossiers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(codes(&page), [open.ma_ho_so.clone()]);
    let xlsx_path = bus.dir.join("dossiers.xlsx");
    let table = Command::new(EXE)
        .arg("--config")
        .arg(&config)
        .args(["dossiers", "--q", "261129-910", "--xlsx"])
        .arg(&xlsx_path)
        .output()
        .expect("lienthong dossiers --xlsx");
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    let strings = xlsx_strings(&std::fs::read(&xlsx_path).expect("xlsx written"));
    assert!(strings.contains("Nguyễn Thị Đào"), "{strings}");
    assert!(strings.contains("Mã hồ sơ (dossier)"), "{strings}");
    let shown = Command::new(EXE)
        .arg("--config")
        .arg(&config)
        .args([
            "dossiers",
            "--centre",
            SON_HA,
            "--q",
            "261129-910",
            "--phase",
            "open",
        ])
        .output()
        .expect("lienthong dossiers");
    let table = String::from_utf8_lossy(&shown.stdout);
    assert!(
        table.contains(&open.ma_ho_so) && !table.contains(&done.ma_ho_so),
        "{table}"
    );
}

/// A dossier a centre files over HTTP (`POST /v1/messages`, routed to a named receiver: not a
/// process-manager dossier) is in the index like one published over AMQP: listed with its centre
/// and holder, then completed by the office's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_filed_over_http_is_listed_and_followed() {
    let bus = Bus::start("dossier-list-http").await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let filed = birth(9201, SON_HA_CIVIL);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", bus.http))
        .bearer_auth(bus.key(SON_HA))
        .json(&filed)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    let at_civil = next(&mut civil, 15).await;
    assert_eq!(at_civil.ma_ho_so, filed.ma_ho_so);
    let row = eventually_async(20, || async {
        let (_, page) = list(&bus, "q=261129-920").await;
        page["items"]
            .as_array()?
            .iter()
            .find(|i| i["ma_ho_so"] == filed.ma_ho_so.as_str())
            .cloned()
    })
    .await;
    assert_eq!(row["centre"], SON_HA, "{row:#}");
    assert_eq!(row["holder"], SON_HA_CIVIL, "{row:#}");
    assert_eq!(row["phase"], "running", "{row:#}");

    let mut result = at_civil.reply(Kind::RESULT, SON_HA_CIVIL, SON_HA);
    result.payload.result = Some(Map::from_iter([(
        "so_dang_ky_khai_sinh".to_string(),
        json!("154/2026"),
    )]));
    bus.send(&result).await;
    eventually_async(20, || async {
        let (_, page) = list(&bus, "q=261129-920&phase=completed").await;
        (codes(&page) == [filed.ma_ho_so.clone()]).then_some(())
    })
    .await;
}
