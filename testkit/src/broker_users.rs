//! Broker users for a test or the demo: the bus's and the units' users of a registry created
//! on the local RabbitMQ with the permissions `lienthong topology export` gives them, with
//! fresh random passwords, and deleted again when the guard is dropped.
//!
//! It drives `rabbitmqctl` (the node on this machine, or a private node by name; root or the
//! rabbitmq user).

use std::collections::BTreeMap;
use std::process::Command;

use lienthong_core::broker_users;
use lienthong_core::registry::Settings;

/// The users created, with their passwords; deletes them on drop.
pub struct BrokerUsers {
    /// User → password (random, for this run only).
    pub passwords: BTreeMap<String, String>,
    /// The node they were created on (`rabbitmqctl -n`); None: the machine's default node.
    node: Option<String>,
    /// The broker's URL as configured before any user was put in it ([`BrokerUsers::url`]).
    base_url: String,
}

/// `url` (`scheme://[user[:password]@]host…`) with `user` and `password` instead.
fn with_user(url: &str, user: &str, password: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = match url[start..].find('@') {
        Some(at) => &url[start + at + 1..],
        None => &url[start..],
    };
    format!("{}{user}:{password}@{rest}", &url[..start])
}

/// A random secret of 32 bytes, hex.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `rabbitmqctl [-n node] args`.
fn ctl(node: Option<&str>) -> Command {
    let mut c = Command::new("rabbitmqctl");
    if let Some(n) = node {
        c.args(["-n", n]);
    }
    c
}

fn rabbitmqctl(node: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    let out = ctl(node)
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

/// [`rabbitmqctl`] with `input` on its standard input.
fn rabbitmqctl_stdin(node: Option<&str>, args: &[&str], input: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = ctl(node)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run rabbitmqctl: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{input}\n").as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "rabbitmqctl {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl BrokerUsers {
    /// Give every `amqp_user` of `settings`' units a fresh password (its hash goes into
    /// `amqp_password_hash`), and create those users with their permissions in vhost `/`
    /// with `rabbitmqctl add_user` and the [`broker_users::permissions`] of `topology export`.
    /// The bus's own user is not touched.
    pub fn create(settings: &mut Settings) -> anyhow::Result<BrokerUsers> {
        Self::create_with_bus(settings, None)
    }

    /// [`BrokerUsers::create`], and when `bus_user` is given, the bus's own user too: its
    /// password goes into `[bus] amqp_url` (same host), its hash into `amqp_password_hash`,
    /// so that the bus runs as that user instead of the broker's `guest`.
    pub fn create_with_bus(
        settings: &mut Settings,
        bus_user: Option<&str>,
    ) -> anyhow::Result<BrokerUsers> {
        Self::create_on(settings, bus_user, None)
    }

    /// [`BrokerUsers::create_with_bus`] on the node `node` (`rabbitmqctl -n`; None: the
    /// machine's default node), e.g. a [`crate::private_broker::PrivateBroker`].
    pub fn create_on(
        settings: &mut Settings,
        bus_user: Option<&str>,
        node: Option<&str>,
    ) -> anyhow::Result<BrokerUsers> {
        let base_url = settings.bus.amqp_url.clone();
        let mut passwords = BTreeMap::new();
        if let Some(name) = bus_user {
            let pw = random_secret();
            let salt: [u8; 4] = rand::random();
            settings.bus.amqp_password_hash = Some(broker_users::password_hash(&pw, salt));
            settings.bus.amqp_url = with_user(&settings.bus.amqp_url, name, &pw);
            passwords.insert(name.to_string(), pw);
        }
        let bus = settings.bus.user();
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
        let permissions: Vec<_> = broker_users::permissions(settings, "/")
            .into_iter()
            .filter(|p| passwords.contains_key(p["user"].as_str().unwrap_or("")))
            .collect();
        let guard = BrokerUsers {
            passwords,
            node: node.map(str::to_string),
            base_url,
        };
        let node = guard.node.as_deref();
        if guard.passwords.is_empty() {
            return Ok(guard);
        }
        // One by one with rabbitmqctl (the password on its standard input, never on a command
        // line), with the permissions of the exported definitions. (An `import_definitions` of
        // the same document is asynchronous and was seen to lose a concurrent import.)
        for (user, pw) in &guard.passwords {
            rabbitmqctl_stdin(node, &["add_user", user], pw)?;
        }
        for p in &permissions {
            let get = |k: &str| p[k].as_str().unwrap_or("").to_string();
            rabbitmqctl(
                node,
                &[
                    "set_permissions",
                    "-p",
                    &get("vhost"),
                    &get("user"),
                    &get("configure"),
                    &get("write"),
                    &get("read"),
                ],
            )?;
        }
        Ok(guard)
    }

    /// No users (a bus that runs as the broker's default user).
    pub fn none() -> BrokerUsers {
        BrokerUsers {
            passwords: BTreeMap::new(),
            node: None,
            base_url: String::new(),
        }
    }

    /// The AMQP URL of `user`: the broker's configured URL (scheme, host, port, vhost) with
    /// this user and password.
    pub fn url(&self, user: &str) -> Option<String> {
        let pw = self.passwords.get(user)?;
        Some(with_user(&self.base_url, user, pw))
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        for user in self.passwords.keys() {
            let _ = rabbitmqctl(self.node.as_deref(), &["delete_user", user]);
        }
    }
}
