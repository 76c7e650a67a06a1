//! The operators' console in a real browser: headless Chromium (Debian's `chromium`, driven
//! through `chromedriver` by fantoccini) against a bus over HTTPS that has carried traffic. An
//! operator logs in, finds a dossier by the applicant's name typed without diacritics, opens its
//! hand-overs, sees Police turn red while its mock agency answers 503, replays the dead letter
//! once the fault is over and sees it delivered, watches the live page and pauses it, and
//! downloads the control sheet (PDF) and the dossier list (XLSX). A screenshot of each page is
//! written to `target/console-screenshots/`. `./scripts/test` installs Chromium and ChromeDriver
//! (scripts/ensure-deps --browser).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use sha2::Digest;

/// chromedriver on a loopback port of its own, stopped on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Start chromedriver and a headless Chromium session that trusts exactly the bus's test
/// certificate (`spki`: the base64 SHA-256 of its public key) and downloads into `downloads`.
async fn browser(spki: &str, downloads: &Path, profile: &Path) -> (Driver, Client) {
    for tool in ["chromium", "chromedriver"] {
        assert!(
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is missing: ./scripts/ensure-deps --browser installs Debian's chromium and chromium-driver"
        );
    }
    let port = free_port();
    let driver = Driver(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1600,1000", "--lang=vi",
                format!("--user-data-dir={}", profile.display()),
                format!("--ignore-certificate-errors-spki-list={spki}"),
            ],
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
            },
        },
    });
    let caps = caps.as_object().cloned().unwrap_or_default();
    let client = ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a Chromium session");
    (driver, client)
}

/// A test CA and a certificate it signs for `localhost` and 127.0.0.1 (the CA file, the
/// certificate, its key), and the certificate's SPKI pin for Chromium.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "browser test CA");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("CA");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    // The SubjectPublicKeyInfo, DER: the body of its PEM.
    let pem: String = key
        .public_key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(pem)
        .expect("SPKI");
    let spki = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(der));
    let (a, c, k) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&a, ca.pem()).expect("CA");
    std::fs::write(&c, cert.pem()).expect("cert");
    std::fs::write(&k, key.serialize_pem()).expect("key");
    (a, c, k, spki)
}

fn tempdir(name: &str) -> PathBuf {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let d = std::env::temp_dir().join(format!("lienthong-{name}-{}", &id[id.len() - 8..]));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// Where the screenshots go: `target/console-screenshots/`.
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Load `url` until its page satisfies `ok` (at most `secs`); the page's source.
async fn until(c: &Client, url: &str, secs: u64, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        c.goto(url).await.expect("goto");
        let html = c.source().await.expect("source");
        if ok(&html) {
            return html;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s; the page: {html}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Wait for a file in `dir` whose name ends with `ext` (a finished download).
async fn downloaded(dir: &Path, ext: &str) -> Vec<u8> {
    let started = Instant::now();
    loop {
        let found = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == ext));
        if let Some(p) = found {
            return std::fs::read(p).expect("download");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a .{ext} download within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The units page's row of `unit`.
fn row_of(html: &str, unit: &str) -> String {
    html.split(&format!("id=\"unit-{unit}\""))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_dossier_sees_a_failing_agency_replays_its_dead_letter_and_downloads() {
    let certs = tempdir("browser");
    let (ca, cert, key, spki) = certificate(&certs);
    let bus = Bus::start_with("browser", move |s| {
        // The mock agencies call the bus back over HTTPS, trusting the test CA.
        s.mock.ca_bundle = Some(ca.display().to_string());
        s.http.tls_cert = Some(cert.display().to_string());
        s.http.tls_key = Some(key.display().to_string());
        // Retries run out quickly: 6 attempts in process, twice parked, then dead-lettered.
        s.retry.max_delayed_attempts = 2;
    })
    .await;
    let port = bus
        .running
        .as_ref()
        .and_then(|r| r.http_addr)
        .expect("http addr")
        .port();
    let base = format!("https://localhost:{port}");
    answer_as_civil_status_office(&bus).await;

    // A dossier that goes through, then one whose Police hand-over meets 503s until the
    // retries run out (1 + 5 attempts per round, three rounds).
    let mut fine = filed_birth(9501);
    if let Some(a) = fine.payload.applicant.as_mut() {
        a.ho_ten = "Nguyễn Thị Đào".into();
    }
    bus.send(&fine).await;
    let store = bus.store();
    let ma = fine.ma_ho_so.clone();
    eventually(40, "the first dossier delivered to Police", move || {
        let rows = store.timeline(&ma).ok()?;
        rows.iter()
            .any(|r| r.event == "delivered" && r.to.as_deref() == Some(POLICE))
            .then_some(())
    })
    .await;
    let failing = filed_birth(9502);
    bus.fault("police", &failing.ma_ho_so, &[503; 18]).await;
    bus.send(&failing).await;

    let downloads = tempdir("browser-downloads");
    let profile = tempdir("browser-profile");
    let (_driver, c) = browser(&spki, &downloads, &profile).await;

    // Log in with the operator key (an empty user name).
    c.goto(&format!("{base}/console/login"))
        .await
        .expect("login page");
    shot(&c, "01-login").await;
    c.find(Locator::Css("input[name=password]"))
        .await
        .expect("password field")
        .send_keys(&bus.operator_key())
        .await
        .expect("type");
    c.find(Locator::Css("form.login button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("log in");
    // The login's redirect lands when the server has checked the key (slower on a loaded
    // machine): wait for it rather than read the URL once.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut here = c.current_url().await.expect("url");
    while !here.path().ends_with("/console/dossiers") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        here = c.current_url().await.expect("url");
    }
    assert!(here.path().ends_with("/console/dossiers"), "{here}");

    // Search without diacritics, open the dossier, see its hand-overs.
    let search = c
        .find(Locator::Css("input[name=q]"))
        .await
        .expect("search box");
    search.send_keys("nguyen thi dao").await.expect("type");
    c.find(Locator::Css("form.filters button"))
        .await
        .expect("search button")
        .click()
        .await
        .expect("search");
    let html = c.source().await.expect("source");
    assert!(html.contains("Nguyễn Thị Đào"), "{html}");
    shot(&c, "02-dossiers").await;
    let link = format!("#dossiers a[href='/console/dossiers/{}']", fine.ma_ho_so);
    match c.find(Locator::Css(&link)).await {
        Ok(a) => a.click().await.expect("open"),
        Err(e) => panic!("{e}: {html}"),
    }
    let timeline = c.find(Locator::Css("#timeline")).await.expect("timeline");
    let text = timeline.text().await.expect("text");
    assert!(
        text.contains("routed") && text.contains("delivered"),
        "{text}"
    );
    assert!(c.source().await.expect("source").contains("toàn vẹn"));
    shot(&c, "03-dossier").await;

    // The control sheet's PDF and the dossier list's XLSX download.
    c.find(Locator::LinkText("PDF"))
        .await
        .expect("PDF link")
        .click()
        .await
        .expect("download PDF");
    let pdf = downloaded(&downloads, "pdf").await;
    assert!(pdf.starts_with(b"%PDF"), "a PDF");
    c.goto(&format!("{base}/console/dossiers?q=nguyen+thi+dao"))
        .await
        .expect("list");
    c.find(Locator::LinkText("Excel (XLSX)"))
        .await
        .expect("XLSX link")
        .click()
        .await
        .expect("download XLSX");
    let xlsx = downloaded(&downloads, "xlsx").await;
    assert!(xlsx.starts_with(b"PK"), "an XLSX (zip) file");

    // Police answers 503: its row turns red.
    let units = until(
        &c,
        &format!("{base}/console/units"),
        60,
        "Police failing",
        |h| row_of(h, POLICE).contains("class=\"failing\""),
    )
    .await;
    assert!(
        row_of(&units, POLICE).contains("503"),
        "{}",
        row_of(&units, POLICE)
    );
    shot(&c, "04-units-failing").await;

    // The retries run out: the dead letter is listed; the fault is over; replay it.
    let dl_url = format!("{base}/console/dead-letters?dossier={}", failing.ma_ho_so);
    until(&c, &dl_url, 90, "the dead letter listed", |h| {
        h.contains("retries-exhausted")
    })
    .await;
    shot(&c, "05-dead-letters").await;
    c.find(Locator::Css(
        "#dead-letters td a[href^='/console/dead-letters/']",
    ))
    .await
    .expect("the dead letter's link")
    .click()
    .await
    .expect("open the dead letter");
    assert!(c.source().await.expect("source").contains("HTTP 503"));
    shot(&c, "06-dead-letter").await;
    c.find(Locator::Css("#replay-one button"))
        .await
        .expect("replay button")
        .click()
        .await
        .expect("replay");
    // The click loads the count's page: wait for it, as for every page after a click.
    let count = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#replay-count"))
        .await
        .expect("the count first")
        .text()
        .await
        .expect("text");
    assert!(count.starts_with('1'), "{count}");
    shot(&c, "07-replay-confirm").await;
    c.find(Locator::Css("#replay-confirm button"))
        .await
        .expect("confirm")
        .click()
        .await
        .expect("confirm");
    // The replay runs on its own task; its page reloads itself until the result is there.
    let result = c
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#replay-result"))
        .await
        .expect("result")
        .text()
        .await
        .expect("text");
    assert!(result.contains("Đã gửi lại: 1"), "{result}");

    // Delivered: the dossier's timeline shows the replay (by whom) and then the delivery, and
    // Police is no longer red.
    let page = format!("{base}/console/dossiers/{}", failing.ma_ho_so);
    until(&c, &page, 60, "the replayed hand-over delivered", |h| {
        h.split("by console:operator-key")
            .nth(1)
            .is_some_and(|after| after.contains(">delivered<"))
    })
    .await;
    shot(&c, "08-dossier-replayed").await;
    until(
        &c,
        &format!("{base}/console/units"),
        30,
        "Police healthy",
        |h| {
            let row = row_of(h, POLICE);
            !row.is_empty() && !row.contains("class=\"failing\"")
        },
    )
    .await;
    shot(&c, "09-units").await;

    // Live: events arrive, and pause holds new ones back.
    c.goto(&format!("{base}/console/live")).await.expect("live");
    let started = Instant::now();
    while c.find(Locator::Css("#live tbody tr")).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(15), "live events");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(&c, "10-live").await;
    c.find(Locator::Css("#pause"))
        .await
        .expect("pause")
        .click()
        .await
        .expect("pause");
    let state = c
        .find(Locator::Css("#live-state"))
        .await
        .expect("state")
        .text()
        .await
        .expect("text");
    assert!(state.starts_with("Đã tạm dừng"), "{state}");
    let later = filed_birth(9503);
    bus.send(&later).await;
    let started = Instant::now();
    loop {
        let state = c
            .find(Locator::Css("#live-state"))
            .await
            .expect("state")
            .text()
            .await
            .expect("text");
        if !state.ends_with("(0)") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "held events counted: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = c
        .find(Locator::Css("#live tbody"))
        .await
        .expect("rows")
        .text()
        .await
        .expect("text");
    assert!(!rows.contains(&later.ma_ho_so), "paused: nothing new shown");
    c.find(Locator::Css("#pause"))
        .await
        .expect("resume")
        .click()
        .await
        .expect("resume");
    let rows = c
        .find(Locator::Css("#live tbody"))
        .await
        .expect("rows")
        .text()
        .await
        .expect("text");
    assert!(
        rows.contains(&later.ma_ho_so),
        "resumed: the held events shown"
    );
    let _ = c.close().await;
}
