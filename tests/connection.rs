//! Connection options of HTTP adapters against a real HTTP server on loopback: OAuth2 client
//! credentials (token fetched once, reused, renewed after a 401; refused credentials are a
//! permanent failure), an API key read from the environment, and the LGSP headers.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use lienthong_adapters::Outcome;
use lienthong_core::envelope::Envelope;
use lienthong_core::registry::{DEFAULT_CONFIG, Reach, Settings, Unit};
use serde_json::{Value, json};

#[derive(Default)]
struct Agency {
    /// The token the agency currently accepts.
    current: String,
    tokens_issued: u32,
    /// Headers of the last submit.
    last: Option<HeaderMap>,
}

type Shared = Arc<Mutex<Agency>>;

async fn token(State(a): State<Shared>, headers: HeaderMap, body: String) -> impl IntoResponse {
    // client_id "lienthong", secret "s3cret", HTTP Basic (RFC 6749 §2.3.1).
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if basic != "Basic bGllbnRob25nOnMzY3JldA==" || !body.contains("grant_type=client_credentials")
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        );
    }
    let mut g = a.lock().expect("lock");
    g.tokens_issued += 1;
    g.current = format!("t{}", g.tokens_issued);
    (
        StatusCode::OK,
        axum::Json(json!({"access_token": g.current, "token_type": "Bearer", "expires_in": 3600})),
    )
}

async fn submit(State(a): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    let mut g = a.lock().expect("lock");
    g.last = Some(headers.clone());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let lgsp = headers.get("accesskey").is_some() && headers.get("partnercode").is_some();
    if (bearer.is_empty() || bearer != g.current) && key != Some("k-123") && !lgsp {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"MaLoi": "E_AUTH", "MoTaLoi": "unauthorised"})),
        );
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"MaTiepNhan": "CA-1", "MaHoSo": "x"})),
    )
}

async fn agency() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/oauth/token", post(token))
        .route("/police/v1/ho-so", post(submit))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

fn police_with(base: &str, connection: Value) -> Unit {
    let s = Settings::from_toml(DEFAULT_CONFIG, false).expect("config");
    let mut u = s
        .units
        .iter()
        .find(|u| u.code == "CA.H48")
        .cloned()
        .expect("police");
    if let Reach::Adapter {
        endpoint, settings, ..
    } = &mut u.reach
    {
        *endpoint = format!("{base}/police");
        settings.insert("connection".into(), connection);
    }
    u
}

fn birth() -> Envelope {
    let mut env = Envelope::new(
        "dossier.forward",
        "000.20.59.H48-261129-0001",
        "1.001193",
        "000.20.59.H48",
        Some("CA.H48"),
        "c1",
    );
    env.payload = serde_json::from_value(json!({
        "applicant": {"ho_ten": "Đinh Văn Lực"},
        "data": {"tre": {"ho_ten": "Đinh Thị Bảo Ngọc", "ngay_sinh": "2026-11-20", "gioi_tinh": "nu"},
                 "noi_dang_ky_thuong_tru": "Thị trấn Di Lăng"}
    }))
    .expect("payload");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_client_credentials_fetches_once_reuses_and_renews_after_a_401() {
    let (base, state) = agency().await;
    let unit = police_with(
        &base,
        json!({"auth": "oauth2_client_credentials", "oauth2_token_url": format!("{base}/oauth/token"),
               "oauth2_client_id": "lienthong", "oauth2_client_secret": "s3cret"}),
    );
    let adapter = lienthong_adapters::build(&unit, "http://127.0.0.1:1").expect("adapter");
    let env = birth();
    for _ in 0..3 {
        let out = adapter.deliver(&env).await;
        assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    }
    assert_eq!(state.lock().expect("lock").tokens_issued, 1, "token reused");
    // The agency revokes the token: a 401, a new token, the same request again.
    state.lock().expect("lock").current = "revoked".into();
    let out = adapter.deliver(&env).await;
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    assert_eq!(state.lock().expect("lock").tokens_issued, 2);
    // Wrong secret: the token endpoint refuses; permanent, and it says why.
    let bad = police_with(
        &base,
        json!({"auth": "oauth2_client_credentials", "oauth2_token_url": format!("{base}/oauth/token"),
               "oauth2_client_id": "lienthong", "oauth2_client_secret": "wrong"}),
    );
    let out = lienthong_adapters::build(&bad, "http://127.0.0.1:1")
        .expect("adapter")
        .deliver(&env)
        .await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("no OAuth2 token") && reason.contains("401")),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_from_the_environment_and_lgsp_headers_are_sent_and_their_absence_is_a_401() {
    let (base, state) = agency().await;
    // SAFETY: set before any thread of this test reads it; no other test uses this variable.
    unsafe { std::env::set_var("LIENTHONG_TEST_POLICE_KEY", "k-123") };
    let unit = police_with(
        &base,
        json!({"auth": "api_key", "api_key": "env:LIENTHONG_TEST_POLICE_KEY"}),
    );
    let out = lienthong_adapters::build(&unit, "http://127.0.0.1:1")
        .expect("adapter")
        .deliver(&birth())
        .await;
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    let unit = police_with(
        &base,
        json!({"auth": "lgsp", "lgsp_app_name": "lienthong", "lgsp_access_key": "ak",
               "lgsp_secret_key": "sk", "lgsp_partner_code": "H48"}),
    );
    let out = lienthong_adapters::build(&unit, "http://127.0.0.1:1")
        .expect("adapter")
        .deliver(&birth())
        .await;
    assert!(matches!(out, Outcome::Delivered { .. }), "{out:?}");
    let h = state.lock().expect("lock").last.clone().expect("a request");
    assert_eq!(
        h.get("appname").and_then(|v| v.to_str().ok()),
        Some("lienthong")
    );
    assert_eq!(h.get("secretkey").and_then(|v| v.to_str().ok()), Some("sk"));
    // No credentials: 401, reported as such, permanent.
    let unit = police_with(&base, json!({}));
    let out = lienthong_adapters::build(&unit, "http://127.0.0.1:1")
        .expect("adapter")
        .deliver(&birth())
        .await;
    assert!(
        matches!(&out, Outcome::Permanent { reason } if reason.contains("authentication refused (HTTP 401)")),
        "{out:?}"
    );
    // A missing variable is a configuration error naming it.
    let unit = police_with(
        &base,
        json!({"auth": "api_key", "api_key": "env:LIENTHONG_NOT_SET_X"}),
    );
    let e = lienthong_adapters::build(&unit, "http://127.0.0.1:1")
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("LIENTHONG_NOT_SET_X"), "{e}");
}
