//! Broker users for a test or the demo: the units' users of a registry created on the local
//! RabbitMQ from the definitions `lienthong topology export` writes (password hashes only),
//! with fresh random passwords, and deleted again when the guard is dropped.
//!
//! It drives `rabbitmqctl` (the node on this machine; root or the rabbitmq user), as an
//! operator would import the exported definitions.

use std::collections::BTreeMap;
use std::process::Command;

use lienthong_core::broker_users;
use lienthong_core::registry::Settings;

/// The users created, with their passwords; deletes them on drop.
pub struct BrokerUsers {
    /// User → password (random, for this run only).
    pub passwords: BTreeMap<String, String>,
}

/// A random secret of 32 bytes, hex.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run rabbitmqctl: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "rabbitmqctl {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl BrokerUsers {
    /// Give every `amqp_user` of `settings`' units a fresh password (its hash goes into
    /// `amqp_password_hash`), and create those users with their permissions in vhost `/`
    /// through `rabbitmqctl import_definitions` of [`broker_users::users`] and
    /// [`broker_users::permissions`]. The bus's own user is not touched.
    pub fn create(settings: &mut Settings) -> anyhow::Result<BrokerUsers> {
        let bus = settings.bus.user();
        let mut passwords = BTreeMap::new();
        for u in &mut settings.units {
            let Some(name) = u.amqp_user.clone() else {
                continue;
            };
            if Some(&name) == bus.as_ref() {
                continue;
            }
            let pw = passwords.entry(name).or_insert_with(random_secret).clone();
            let salt: [u8; 4] = rand::random();
            u.amqp_password_hash = Some(broker_users::password_hash(&pw, salt));
        }
        let users: Vec<_> = broker_users::users(settings)
            .into_iter()
            .filter(|u| passwords.contains_key(u["name"].as_str().unwrap_or("")))
            .collect();
        let permissions: Vec<_> = broker_users::permissions(settings, "/")
            .into_iter()
            .filter(|p| passwords.contains_key(p["user"].as_str().unwrap_or("")))
            .collect();
        let guard = BrokerUsers { passwords };
        if guard.passwords.is_empty() {
            return Ok(guard);
        }
        let defs = serde_json::json!({"users": users, "permissions": permissions});
        let file = std::env::temp_dir().join(format!("lienthong-users-{}.json", random_secret()));
        std::fs::write(&file, serde_json::to_vec(&defs)?)?;
        let imported = rabbitmqctl(&["import_definitions", &file.display().to_string()]);
        let _ = std::fs::remove_file(&file);
        imported?;
        // The import is asynchronous: wait until every user exists with its permissions.
        for _ in 0..50 {
            let listed = rabbitmqctl(&["list_permissions", "-p", "/", "-q"])?;
            if guard
                .passwords
                .keys()
                .all(|u| listed.lines().any(|l| l.split('\t').next() == Some(u)))
            {
                return Ok(guard);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        anyhow::bail!("the imported broker users did not appear")
    }

    /// The AMQP URL of `user` on the local broker.
    pub fn url(&self, user: &str) -> Option<String> {
        let pw = self.passwords.get(user)?;
        Some(format!("amqp://{user}:{pw}@127.0.0.1:5672/%2f"))
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        for user in self.passwords.keys() {
            let _ = rabbitmqctl(&["delete_user", user]);
        }
    }
}
