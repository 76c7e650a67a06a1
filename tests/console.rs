//! The operators' console over real HTTP on loopback against a bus with traffic: login with an
//! account (argon2) or the operator key, the session cookie's attributes, CSRF on logout, the
//! dossier search without diacritics, a dossier's page (hand-overs, trace chain; raw envelopes
//! for operators only), the English switch, exports, and the security headers.

mod common;

use common::*;
use lienthong_core::console_settings::{Account, Role};
use reqwest::redirect::Policy;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// Log in; the session cookie (`name=value`) and the `Set-Cookie` line.
async fn login(bus: &Bus, user: &str, password: &str) -> Result<(String, String), u16> {
    let r = client()
        .post(format!("{}/console/login", bus.http))
        .form(&[("user", user), ("password", password)])
        .send()
        .await
        .expect("login");
    if r.status().as_u16() != 303 {
        return Err(r.status().as_u16());
    }
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    let pair = set.split(';').next().unwrap_or("").to_string();
    Ok((pair, set))
}

async fn page(bus: &Bus, cookie: &str, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{}{path}", bus.http))
        .header("cookie", cookie)
        .send()
        .await
        .expect("page");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The CSRF token in a page's logout form.
fn csrf(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_log_in_find_a_dossier_without_diacritics_and_see_its_hand_overs() {
    let password = lienthong_testkit::keys::fresh();
    let hash = lienthong::console::session::hash_password(&password).expect("hash");
    let bus = Bus::start_with("console", |s| {
        s.console.accounts.push(Account {
            user: "lan".into(),
            password_hash: hash.clone(),
            role: Role::Viewer,
        });
    })
    .await;
    let mut civil = bus.listen(SON_HA_CIVIL).await;
    let mut filed = birth(9201, SON_HA_CIVIL);
    if let Some(a) = filed.payload.applicant.as_mut() {
        a.ho_ten = "Nguyễn Thị Đào".into();
    }
    bus.send(&filed).await;
    let _ = next(&mut civil, 15).await;

    // Without a session: the login page.
    let r = client()
        .get(format!("{}/console/dossiers", bus.http))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let (status, form) = page(&bus, "", "/console/login").await;
    assert_eq!(status, 200);
    assert!(form.contains("Đăng nhập"), "{form}");
    // A wrong password, an unknown user: refused alike.
    assert_eq!(login(&bus, "lan", "wrong").await, Err(401));
    assert_eq!(login(&bus, "nobody", &password).await, Err(401));
    let (cookie, set) = login(&bus, "lan", &password).await.expect("login");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/console"), "{set}");

    // Search without diacritics or case finds the dossier.
    let (status, html) = eventually_async(15, || async {
        let (s, h) = page(&bus, &cookie, "/console/dossiers?q=nguyen+thi+DAO").await;
        h.contains(&filed.ma_ho_so).then_some((s, h))
    })
    .await;
    assert_eq!(status, 200);
    assert!(html.contains("Nguyễn Thị Đào"), "{html}");
    assert!(
        html.contains("Đang xử lý"),
        "the phase in Vietnamese: {html}"
    );
    assert!(html.contains("lan (viewer)"), "{html}");
    let (_, none) = page(&bus, &cookie, "/console/dossiers?q=tran+van+binh").await;
    assert!(!none.contains(&filed.ma_ho_so));
    // A bad filter says what is wrong.
    let (status, bad) = page(&bus, &cookie, "/console/dossiers?phase=lost").await;
    assert_eq!(status, 200);
    assert!(
        bad.contains("phase \"lost\"") || bad.contains("phase &quot;lost&quot;"),
        "{bad}"
    );

    // The dossier's page: its hand-overs and whether its trace verifies; no raw envelopes
    // for a viewer.
    let path = format!("/console/dossiers/{}", filed.ma_ho_so);
    let (status, html) = eventually_async(15, || async {
        let (s, h) = page(&bus, &cookie, &path).await;
        h.contains("routed").then_some((s, h))
    })
    .await;
    assert_eq!(status, 200);
    assert!(html.contains("Các lần chuyển giao"), "{html}");
    assert!(html.contains(SON_HA_CIVIL), "{html}");
    assert!(html.contains("toàn vẹn"), "the chain verifies: {html}");
    assert!(
        !html.contains("Thông điệp gốc"),
        "a viewer sees no raw envelope"
    );
    let (status, _) = page(&bus, &cookie, "/console/dossiers/NO-SUCH-261201-0001").await;
    assert_eq!(status, 404);

    // Every page is framed by nobody and allows only the console's own files.
    let r = client()
        .get(format!("{}/console/units", bus.http))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("units");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .is_ok_and(|v| v.contains("default-src 'self'"))
    );
    let units = r.text().await.unwrap_or_default();
    assert!(units.contains(SON_HA_CIVIL), "{units}");

    // Live: the page, and the event stream with the dossier's recent events.
    let (status, live) = page(&bus, &cookie, "/console/live").await;
    assert_eq!(status, 200);
    assert!(live.contains("src=\"/console/live.js\""), "{live}");
    let mut stream = client()
        .get(format!("{}/console/live/events", bus.http))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("events");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    while !(seen.contains(&filed.ma_ho_so) && seen.contains("\"event\":\"routed\"")) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event within 10 s")
            .expect("stream")
            .expect("open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("id: ") && seen.contains("\"event\":\"routed\""),
        "{seen}"
    );
    // A new event arrives on the open stream.
    let later = birth(9202, SON_HA_CIVIL);
    bus.send(&later).await;
    while !seen.contains(&later.ma_ho_so) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
            .await
            .expect("the new dossier's event within 10 s")
            .expect("stream")
            .expect("open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);

    // An export from the console.
    let csv = client()
        .get(format!(
            "{}/console/dossiers/export?q=nguyen+thi+dao&format=csv",
            bus.http
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("csv")
        .bytes()
        .await
        .expect("body");
    assert!(String::from_utf8_lossy(&csv).contains("Nguyễn Thị Đào"));

    // English on request.
    let r = client()
        .get(format!("{}/console/lang/en", bus.http))
        .send()
        .await
        .expect("lang");
    let lang = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    let (_, en) = page(&bus, &format!("{cookie}; {lang}"), "/console/dossiers").await;
    assert!(en.contains("Dossiers") && en.contains("Log out"), "{en}");

    // The operator key logs in as an operator, who sees the raw envelopes.
    let (op, _) = login(&bus, "", &bus.operator_key())
        .await
        .expect("operator");
    let (_, html) = page(&bus, &op, &path).await;
    assert!(html.contains("Thông điệp gốc"), "{html}");
    assert!(html.contains(&filed.message_id), "{html}");
    // A stored body that no longer decodes: the page stays, its envelopes section says why.
    let location = bus.settings.store.location();
    let writer = lienthong_core::store::MessageWriter::start(location.clone()).expect("writer");
    let store = lienthong_core::store::Store::open(location)
        .expect("store")
        .with_writer(writer);
    let id = filed.message_id.clone();
    store
        .write(move |c| {
            c.execute(
                "UPDATE messages SET body = ?1, body_encoding = 'zstd' WHERE message_id = ?2",
                lienthong_core::params![&b"not a zstd frame"[..], id],
            )
            .map(|_| ())
        })
        .await
        .expect("damage the stored body");
    drop(store);
    let (status, html) = page(&bus, &op, &path).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Không đọc được thông điệp gốc")
            && html.contains(&format!("stored message {}", filed.message_id)),
        "{html}"
    );
    assert!(html.contains(&filed.ma_ho_so), "{html}");

    // Logout needs the session's CSRF token; then the session is gone.
    let (_, html) = page(&bus, &cookie, "/console/dossiers").await;
    let token = csrf(&html);
    assert!(!token.is_empty(), "{html}");
    let forged = client()
        .post(format!("{}/console/logout", bus.http))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status().as_u16(), 403);
    let out = client()
        .post(format!("{}/console/logout", bus.http))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status().as_u16(), 303);
    let after = client()
        .get(format!("{}/console/dossiers", bus.http))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("after");
    assert_eq!(after.status().as_u16(), 303, "the session is closed");
}

/// Post a form as the session `cookie`; the status and the page.
async fn post(bus: &Bus, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = client()
        .post(format!("{}{path}", bus.http))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Confirm a replay: the console answers with its replay's page (303), which shows the result
/// once the replay (on a task of its own) has finished; that page's HTML.
async fn replay_done(bus: &Bus, cookie: &str, form: &[(&str, &str)]) -> String {
    let r = client()
        .post(format!("{}/console/dead-letters/replay", bus.http))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 303, "the confirmation starts a replay");
    let at = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(at.starts_with("/console/dead-letters/replays/"), "{at}");
    for _ in 0..120 {
        let (status, html) = page(bus, cookie, &at).await;
        assert_eq!(status, 200, "{html}");
        if html.contains("id=\"replay-result\"") {
            assert!(!html.contains("http-equiv=\"refresh\""), "{html}");
            return html;
        }
        assert!(html.contains("id=\"replay-progress\""), "{html}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("the replay at {at} did not finish in a minute");
}

/// The `<tr>` of `unit` on the units page.
fn row_of(html: &str, unit: &str) -> String {
    html.split(&format!("<tr id=\"unit-{unit}\""))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or("")
        .to_string()
}

/// The dead-letter id of `ma`'s blocked Police hand-over, once it is in the dead-letter log.
async fn dead_letter_of(bus: &Bus, ma: &str) -> String {
    let store = bus.store();
    let m = ma.to_string();
    eventually(
        40,
        &format!("{ma}'s hand-over dead-lettered and logged"),
        move || {
            let p = store.process(&m).ok().flatten()?;
            let id = p.blocked.first()?.message_id.clone();
            let (rows, _) = store.dead_letter(&id).ok()?;
            (!rows.is_empty()).then_some(id)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_filter_dead_letters_read_their_history_and_replay_one_and_a_filter_with_the_count_first()
 {
    let password = lienthong_testkit::keys::fresh();
    let hash = lienthong::console::session::hash_password(&password).expect("hash");
    let bus = Bus::start_with("console_dl", |s| {
        s.console.accounts.push(Account {
            user: "lan".into(),
            password_hash: hash.clone(),
            role: Role::Viewer,
        });
    })
    .await;
    answer_as_civil_status_office(&bus).await;
    // Police refuses two hand-overs once (400: dead-lettered at once as agency-refused).
    let (one, other) = (filed_birth(9301), filed_birth(9302));
    bus.fault("police", &one.ma_ho_so, &[400]).await;
    bus.fault("police", &other.ma_ho_so, &[400]).await;
    bus.send(&one).await;
    bus.send(&other).await;
    let one_dl = dead_letter_of(&bus, &one.ma_ho_so).await;
    let other_dl = dead_letter_of(&bus, &other.ma_ho_so).await;

    // The units page: Police is failing (its last error came after its last success), with
    // its queue as the broker sees it; a connection check from the page passes.
    let (op, _) = login(&bus, "", &bus.operator_key())
        .await
        .expect("operator");
    let (_, units) = page(&bus, &op, "/console/units").await;
    let police_row = row_of(&units, POLICE);
    assert!(police_row.contains("class=\"failing\""), "{police_row}");
    assert!(
        police_row.contains("agency-refused") || police_row.contains("400"),
        "{police_row}"
    );
    assert!(
        !police_row.contains("<td>?</td>"),
        "the broker answered: {police_row}"
    );
    let (status, _) = post(
        &bus,
        &op,
        &format!("/console/units/{POLICE}/check"),
        &[("csrf", &csrf(&units))],
    )
    .await;
    assert_eq!(status, 303);
    let (_, units) = page(&bus, &op, "/console/units").await;
    assert!(
        row_of(&units, POLICE).contains("class=\"ok\">đạt"),
        "{}",
        row_of(&units, POLICE)
    );

    // A connection check is for units behind an adapter (a unit reading its queue over AMQP
    // has no connection the bus could check).
    let (status, _) = post(
        &bus,
        &op,
        &format!("/console/units/{SON_HA}/check"),
        &[("csrf", &csrf(&units))],
    )
    .await;
    assert_eq!(status, 400, "no connection check of an AMQP unit");

    // A viewer sees them, filtered, but cannot replay nor run a check.
    let (viewer, _) = login(&bus, "lan", &password).await.expect("viewer");
    let (_, viewer_units) = page(&bus, &viewer, "/console/units").await;
    assert!(
        !viewer_units.contains("/check\""),
        "no check button for a viewer"
    );
    let (status, _) = post(
        &bus,
        &viewer,
        "/console/units/CA.H48/check",
        &[("csrf", &csrf(&viewer_units))],
    )
    .await;
    assert_eq!(status, 403, "a viewer may not run a connection check");
    let (status, html) = page(&bus, &viewer, "/console/dead-letters?reason=agency-refused").await;
    assert_eq!(status, 200);
    assert!(html.contains(&one_dl) && html.contains(&other_dl), "{html}");
    assert!(html.contains("Chờ xử lý"), "waiting, in Vietnamese: {html}");
    assert!(
        !html.contains("type=\"checkbox\""),
        "no selection for a viewer"
    );
    let (_, narrowed) = page(
        &bus,
        &viewer,
        &format!("/console/dead-letters?dossier={}", one.ma_ho_so),
    )
    .await;
    assert!(narrowed.contains(&one_dl) && !narrowed.contains(&other_dl));
    let (_, none) = page(&bus, &viewer, "/console/dead-letters?reason=schema-invalid").await;
    assert!(!none.contains(&one_dl));
    let (status, bad) = page(&bus, &viewer, "/console/dead-letters?since=yesterday").await;
    assert_eq!(status, 200);
    assert!(bad.contains("since"), "a bad date is explained: {bad}");
    let token = csrf(&html);
    let (status, _) = post(
        &bus,
        &viewer,
        "/console/dead-letters/replay",
        &[
            ("csrf", &token),
            ("scope", "selection"),
            ("id", &one_dl),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 403, "a viewer may not replay");

    // An operator reads one: reason, the message's history, the body.
    let (op, _) = login(&bus, "", &bus.operator_key())
        .await
        .expect("operator");
    let (status, html) = page(&bus, &op, &format!("/console/dead-letters/{one_dl}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("agency-refused"), "{html}");
    assert!(html.contains("dead_lettered"), "the history: {html}");
    // The message's events, read under its dossier code (the trace has no index by message id):
    // the router's hand-over and the adapter's dead-lettering, in the attempts table.
    for ev in ["<td>routed</td>", "<td>dead_lettered</td>"] {
        assert!(html.contains(ev), "{ev} in the history: {html}");
    }
    assert!(html.contains(&one.ma_ho_so), "{html}");
    assert!(
        html.contains("id=\"body\""),
        "the body, for an operator: {html}"
    );
    assert!(html.contains("id=\"replay-one\""), "{html}");
    let token = csrf(&html);

    // Replay one: the count first, nothing done yet; a forged token is refused.
    let (status, confirm) = post(
        &bus,
        &op,
        "/console/dead-letters/replay",
        &[("csrf", &token), ("scope", "selection"), ("id", &one_dl)],
    )
    .await;
    assert_eq!(status, 200);
    assert!(confirm.contains("<strong>1</strong>"), "{confirm}");
    assert!(
        confirm.contains("name=\"confirm\" value=\"yes\""),
        "{confirm}"
    );
    let (rows, _) = bus.store().dead_letter(&one_dl).expect("log");
    assert!(
        rows.iter().all(|r| r.replayed_at.is_none()),
        "not replayed before the confirmation"
    );
    let (status, _) = post(
        &bus,
        &op,
        "/console/dead-letters/replay",
        &[
            ("csrf", "forged"),
            ("scope", "selection"),
            ("id", &one_dl),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let done = replay_done(
        &bus,
        &op,
        &[
            ("csrf", &token),
            ("scope", "selection"),
            ("id", &one_dl),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert!(done.contains("Đã gửi lại: 1"), "{done}");

    // Recorded in the trace with the operator's name; the hand-over reaches Police again.
    let store = bus.store();
    let ma = one.ma_ho_so.clone();
    eventually(
        30,
        "the replay recorded and the hand-over delivered",
        move || {
            let rows = store.timeline(&ma).ok()?;
            let replayed = rows.iter().position(|r| {
                r.event == "replayed" && r.reason.as_deref() == Some("by console:operator-key")
            })?;
            rows[replayed..]
                .iter()
                .any(|r| r.event == "delivered" && r.to.as_deref() == Some(POLICE))
                .then_some(())
        },
    )
    .await;
    let (_, units) = page(&bus, &op, "/console/units").await;
    assert!(
        !row_of(&units, POLICE).contains("class=\"failing\""),
        "delivered since its error: {}",
        row_of(&units, POLICE)
    );
    let (_, replayed) = page(&bus, &op, "/console/dead-letters?state=replayed").await;
    assert!(
        replayed.contains(&one_dl) && replayed.contains("console:operator-key"),
        "{replayed}"
    );

    // Replay a filter: the count is of what still waits (the other one only).
    let (status, confirm) = post(
        &bus,
        &op,
        "/console/dead-letters/replay",
        &[
            ("csrf", &token),
            ("scope", "filter"),
            ("reason", "agency-refused"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        confirm.contains("<strong>1</strong>") && confirm.contains(&other_dl),
        "{confirm}"
    );
    let before = confirm
        .split("name=\"before_ms\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string();
    let done = replay_done(
        &bus,
        &op,
        &[
            ("csrf", &token),
            ("scope", "filter"),
            ("reason", "agency-refused"),
            ("before_ms", &before),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert!(
        done.contains("Đã gửi lại: 1") && done.contains(&other_dl),
        "{done}"
    );
    let (_, waiting) = page(&bus, &op, "/console/dead-letters").await;
    assert!(
        !waiting.contains(&one_dl) && !waiting.contains(&other_dl),
        "{waiting}"
    );
    let (status, _) = page(&bus, &viewer, "/console/dead-letters/replays/any").await;
    assert_eq!(status, 403, "a viewer may not watch replays");

    // The same log over the API, filtered.
    let listed: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!(
            "{}/v1/dead-letters?reason=agency-refused&state=replayed&dossier={}",
            bus.http, other.ma_ho_so
        ))
        .bearer_auth(bus.operator_key())
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["message_id"], other_dl.as_str());
    assert_eq!(listed[0]["replayed_by"], "console:operator-key");
    let bad = reqwest::Client::new()
        .get(format!("{}/v1/dead-letters?state=lost", bus.http))
        .bearer_auth(bus.operator_key())
        .send()
        .await
        .expect("api");
    assert_eq!(bad.status().as_u16(), 400);
}
