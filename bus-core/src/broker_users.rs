//! The broker users of the bus and of the units, with their permissions, as RabbitMQ
//! definitions (`lienthong topology export`): a unit may write only to `<p>.ingress` and read
//! only its own queue; only the bus writes to `deliver`, `dlx`, `trace` and `retry.*`.
//!
//! Permissions are three regular expressions per user and vhost (configure, write, read) over
//! resource names (rabbitmq.com/docs/access-control). Passwords are exported only as hashes in
//! RabbitMQ's `rabbit_password_hashing_sha256` format, never in clear.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registry::Settings;

/// RabbitMQ's hashing algorithm name for [`password_hash`].
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// RabbitMQ's stored form of `password`: base64(salt ‖ SHA-256(salt ‖ password)), with a
/// 4-byte `salt` (the format of `rabbitmqctl export_definitions` for
/// `rabbit_password_hashing_sha256`).
pub fn password_hash(password: &str, salt: [u8; 4]) -> String {
    use base64::Engine;
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// `s` as a regular expression matching exactly `s` (RabbitMQ permissions are Erlang regexes;
/// unit codes hold dots).
fn literal(s: &str) -> String {
    regex::escape(s)
}

/// One user of the definitions. `password_hash` empty: the user has no password and can only
/// authenticate with a client certificate (EXTERNAL).
fn user(name: &str, password_hash: Option<&str>) -> Value {
    json!({
        "name": name,
        "password_hash": password_hash.unwrap_or(""),
        "hashing_algorithm": HASHING_ALGORITHM,
        "tags": [],
        "limits": {},
    })
}

/// The users (never `guest`, which the bus must not use): the bus's own (the user of `[bus] amqp_url`, with `[bus] amqp_password_hash`)
/// and one per distinct `amqp_user` of the registry (with the first `amqp_password_hash` given
/// for it).
pub fn users(settings: &Settings) -> Vec<Value> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // RabbitMQ's own `guest` is never redefined (an import would change its password).
    seen.insert("guest".to_string());
    if let Some(bus) = settings.bus.user().filter(|u| u != "guest") {
        seen.insert(bus.clone());
        out.push(user(&bus, settings.bus.amqp_password_hash.as_deref()));
    }
    for u in &settings.units {
        let Some(name) = &u.amqp_user else { continue };
        if !seen.insert(name.clone()) {
            continue;
        }
        let hash = settings
            .units
            .iter()
            .filter(|o| o.amqp_user.as_deref() == Some(name.as_str()))
            .find_map(|o| o.amqp_password_hash.as_deref());
        out.push(user(name, hash));
    }
    out
}

/// The permissions of [`users`] in `vhost`. The bus: everything under its prefix (and the
/// default exchange). A unit's user: no configure, write `<p>.ingress`, read its units' queues
/// `<p>.unit.<code>`.
pub fn permissions(settings: &Settings, vhost: &str) -> Vec<Value> {
    let p = literal(&settings.bus.prefix);
    let mut out = Vec::new();
    let bus = settings.bus.user();
    if let Some(bus) = bus.as_ref().filter(|u| *u != "guest") {
        out.push(json!({
            "user": bus, "vhost": vhost,
            "configure": format!("^{p}\\."),
            "write": format!("^({p}\\..*|amq\\.default)$"),
            "read": format!("^{p}\\."),
        }));
    }
    let mut by_user: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for u in &settings.units {
        if let Some(name) = u.amqp_user.as_deref()
            && Some(name) != bus.as_deref()
        {
            by_user.entry(name).or_default().push(&u.code);
        }
    }
    for (name, codes) in by_user {
        let queues: Vec<String> = codes.iter().map(|c| literal(c)).collect();
        out.push(json!({
            "user": name, "vhost": vhost,
            "configure": "",
            "write": format!("^{p}\\.ingress$"),
            "read": format!("^{p}\\.unit\\.({})$", queues.join("|")),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{DEFAULT_CONFIG, Settings};

    #[test]
    fn the_hash_has_rabbitmqs_shape() {
        use base64::Engine;
        let h = password_hash("s3cret", [1, 2, 3, 4]);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&h)
            .expect("base64");
        assert_eq!(raw.len(), 36);
        assert_eq!(&raw[..4], &[1, 2, 3, 4]);
        assert_ne!(password_hash("s3cret", [1, 2, 3, 5]), h);
    }

    #[test]
    fn a_unit_writes_to_ingress_and_reads_its_own_queue_only() {
        let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("config");
        s.bus.amqp_url = "amqp://lienthong-bus@127.0.0.1:5672/%2f".into();
        for u in &mut s.units {
            if u.code == "000.20.59.H48" || u.code == "000.10.59.H48" {
                u.amqp_user = Some("son-ha".into());
                u.amqp_password_hash = Some("HASH".into());
            }
        }
        let users = users(&s);
        assert_eq!(users.len(), 2, "{users:?}");
        assert_eq!(users[0]["name"], "lienthong-bus");
        assert_eq!(users[1]["password_hash"], "HASH");
        let perms = permissions(&s, "/");
        let unit = &perms[1];
        assert_eq!(unit["write"], "^lienthong\\.ingress$");
        assert_eq!(unit["configure"], "");
        let read = regex::Regex::new(unit["read"].as_str().expect("read")).expect("regex");
        assert!(read.is_match("lienthong.unit.000.20.59.H48"));
        assert!(read.is_match("lienthong.unit.000.10.59.H48"));
        assert!(!read.is_match("lienthong.unit.CA.H48"));
        assert!(!read.is_match("lienthong.unit.000X20.59.H48"));
        let write = regex::Regex::new(unit["write"].as_str().expect("write")).expect("regex");
        for other in [
            "lienthong.deliver",
            "lienthong.dlx",
            "lienthong.trace",
            "lienthong.retry.10000",
        ] {
            assert!(!write.is_match(other), "{other}");
        }
    }
}
