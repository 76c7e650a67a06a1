//! Secrets: the shipped placeholder keys stop `lienthong run`; keys from `keys new`, from
//! `env:` and as `sha256:` hashes work; and no configured secret shows in the output of a
//! run, `topology export`, `check` or an error body.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::procs::*;
use common::*;

#[test]
fn a_run_with_the_shipped_placeholder_keys_is_refused_naming_each_setting() {
    let dir = std::env::temp_dir().join(format!(
        "lienthong-placeholders-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    // No --config: the embedded default, as shipped.
    let out = Command::new(EXE)
        .arg("run")
        .current_dir(&dir)
        .env_remove("LIENTHONG_CONFIG")
        .output()
        .expect("lienthong runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "it started with placeholder keys");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to start with keys that are not secret"),
        "{err}"
    );
    assert!(
        err.contains("http.operator_key: it is a placeholder"),
        "{err}"
    );
    assert!(
        err.contains("units.CA.H48.callback_key: it is a placeholder"),
        "{err}"
    );
    assert!(
        err.contains("bus.amqp_password: it is a placeholder"),
        "{err}"
    );
    assert!(err.contains("lienthong keys new"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_keys_new_env_and_hashes_work_and_no_secret_shows_in_any_output() {
    // A key from `keys new`, configured only as its hash.
    let printed = Command::new(EXE)
        .args(["keys", "new"])
        .output()
        .expect("keys new");
    let text = String::from_utf8_lossy(&printed.stdout).to_string();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("a key line")
        .to_string();
    let hash = text
        .lines()
        .find(|l| l.starts_with("sha256:"))
        .expect("a hash line")
        .to_string();
    let (mut s, dir) = settings("secrets");
    let users = broker_users(&mut s);
    // During a rotation the unit's next key works beside the current one.
    let next = lienthong_testkit::keys::fresh();
    for u in &mut s.units {
        if u.code == SON_HA {
            u.api_key = Some(hash.clone());
            u.api_key_next = Some(next.clone());
        }
    }
    // The operator key from the environment of the process (as a service unit would give it).
    let operator = lienthong_testkit::keys::fresh();
    s.http.operator_key = Some("env:LIENTHONG_TEST_OPERATOR_KEY".into());
    let port = free_port();
    s.http.listen = format!("127.0.0.1:{port}");
    let mut secrets: Vec<String> = vec![key.clone(), operator.clone(), next.clone()];
    secrets.extend(users.passwords.values().cloned());
    for u in &s.units {
        secrets.extend(u.api_key.clone().filter(|k| !k.starts_with("sha256:")));
        if let lienthong_core::registry::Reach::Adapter {
            callback_key: Some(k),
            ..
        } = &u.reach
        {
            secrets.push(k.clone());
        }
    }
    let config = dir.join("config.toml");
    s.write_file(&config).expect("config");
    let file = std::fs::read_to_string(&config).expect("read config");
    assert!(!file.contains(&key), "the key itself is in the file");
    assert!(!file.contains(&operator), "the operator key is in the file");

    let log = dir.join("run.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut run = Proc(
        Command::new(EXE)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env("RUST_LOG", "debug,lapin=warn,h2=warn,hyper=warn")
            .env("LIENTHONG_TEST_OPERATOR_KEY", &operator)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("lienthong run starts"),
    );
    wait_ready_from(&log, port).await;
    let http = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let env = birth(9501, SON_HA_CIVIL);
    let r = client
        .post(format!("{http}/v1/messages"))
        .bearer_auth(&key)
        .json(&env)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED, "the hashed key");
    let r = client
        .post(format!("{http}/v1/messages"))
        .bearer_auth(&next)
        .json(&birth(9502, SON_HA_CIVIL))
        .send()
        .await
        .expect("http");
    assert_eq!(
        r.status(),
        reqwest::StatusCode::ACCEPTED,
        "the next key (rotation)"
    );
    let r = client
        .get(format!("{http}/v1/dead-letters"))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), reqwest::StatusCode::OK, "the env: operator key");
    // Wrong keys, and keys where they do not belong: the error bodies name no key.
    let mut bodies = String::new();
    for (path, k) in [
        ("/v1/dead-letters", key.as_str()),
        ("/v1/dossiers/x/trace", "wrong-key"),
    ] {
        let r = client
            .get(format!("{http}{path}"))
            .bearer_auth(k)
            .send()
            .await
            .expect("http");
        assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
        bodies.push_str(&r.text().await.unwrap_or_default());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let _ = run.wait();
    let mut outputs = vec![
        (
            "the run's log".to_string(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        ),
        ("error bodies".to_string(), bodies),
    ];
    for args in [
        vec!["topology", "export"],
        vec!["check", "--json"],
        vec!["trace", &env.ma_ho_so],
    ] {
        let o = Command::new(EXE)
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env("LIENTHONG_TEST_OPERATOR_KEY", &operator)
            .output()
            .expect("lienthong");
        outputs.push((
            format!("lienthong {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ));
    }
    for (what, text) in &outputs {
        assert!(
            !text.is_empty() || what == "error bodies",
            "{what} is empty"
        );
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret shows in {what}");
        }
    }
    let s2 = s.clone();
    // The topology this test's run declared goes with it.
    let conn = lapin::Connection::connect(AMQP_URL, Default::default())
        .await
        .expect("broker");
    let _ = lienthong_core::topology::Topology::plan(&s2)
        .delete(&conn)
        .await;
    drop(users);
    let _ = std::fs::remove_dir_all(&dir);
}
