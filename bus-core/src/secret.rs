//! Secrets in the configuration: where they come from (`env:NAME`, `file:/path`, or the value
//! itself), whether a key is strong enough to run with, and keys kept and compared as SHA-256
//! hashes in constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The least entropy a key must carry for `lienthong run` to start, bits (32 bytes).
pub const MIN_KEY_BITS: f64 = 256.0;

/// A secret setting that could not be read. Names the setting and where it points, never the
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `env:NAME` with `NAME` unset or not UTF-8.
    #[error("{setting}: environment variable {name} is not set")]
    MissingEnv {
        /// The setting (`units.CA.H48.callback_key`, `http.operator_key`, …).
        setting: String,
        /// The variable.
        name: String,
    },
    /// `file:PATH` that cannot be read.
    #[error("{setting}: cannot read {path}: {reason}")]
    File {
        /// The setting.
        setting: String,
        /// The file.
        path: String,
        /// Why (the I/O error, which never holds the file's content).
        reason: String,
    },
}

/// The value of a secret setting: `env:NAME` reads environment variable `NAME`; `file:PATH`
/// reads the file (relative to `base`, the configuration file's directory) without its
/// trailing newline; anything else is the secret itself. `setting` names it in errors.
pub fn resolve(setting: &str, value: &str, base: &Path) -> Result<String, SecretError> {
    if let Some(name) = value.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| SecretError::MissingEnv {
            setting: setting.to_string(),
            name: name.to_string(),
        });
    }
    if let Some(path) = value.strip_prefix("file:") {
        let p = base.join(path);
        return std::fs::read_to_string(&p)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| SecretError::File {
                setting: setting.to_string(),
                path: p.display().to_string(),
                reason: e.kind().to_string(),
            });
    }
    Ok(value.to_string())
}

/// A key as the bus keeps it: the SHA-256 of the key. A configured value `sha256:<64 hex>` is
/// already the hash (what `lienthong keys new` prints for the configuration), so the key
/// itself need not be in the file at all.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(…)")
    }
}

impl KeyHash {
    /// The hash of a key presented by a client.
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// The hash of a configured key: `sha256:<hex>` as given, anything else hashed.
    pub fn from_config(value: &str) -> KeyHash {
        if let Some(hex) = value.strip_prefix("sha256:")
            && let Some(bytes) = decode_hex32(hex)
        {
            return KeyHash(bytes);
        }
        KeyHash::of(value)
    }

    /// Whether `presented` is this key, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.ct_eq(&KeyHash::of(presented).0).into()
    }

    /// `sha256:<hex>`, the form for the configuration.
    pub fn to_config(&self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Why a configured key may not be run with: empty, a placeholder (`CHANGE-ME…`, `dev-…`,
/// `example…`), or fewer than [`MIN_KEY_BITS`] bits of entropy, estimated as length ×
/// log2(alphabet) with the alphabet the smallest of hex (16), base64url (64) or printable
/// ASCII (95) that holds every character. A `sha256:` hash cannot be judged and is accepted
/// (it comes from `lienthong keys new`). `None`: strong enough.
pub fn weakness(value: &str) -> Option<String> {
    if value.starts_with("sha256:") && decode_hex32(&value[7..]).is_some() {
        return None;
    }
    if value.trim().is_empty() {
        return Some("it is empty".into());
    }
    if is_placeholder(value) {
        return Some(PLACEHOLDER.into());
    }
    let alphabet: f64 = if value.chars().all(|c| c.is_ascii_hexdigit()) {
        16.0
    } else if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        64.0
    } else {
        95.0
    };
    let bits = value.chars().count() as f64 * alphabet.log2();
    (bits < MIN_KEY_BITS).then(|| {
        format!(
            "it carries at most {bits:.0} bits of entropy, fewer than {MIN_KEY_BITS:.0} (use `lienthong keys new`)"
        )
    })
}

/// What [`weakness`] says of a placeholder.
const PLACEHOLDER: &str = "it is a placeholder from an example configuration";

/// Whether `value` is a placeholder of an example configuration (`CHANGE-ME…`, `changeme`,
/// `placeholder`, `example…`, `dev-…`), case-insensitively.
pub fn is_placeholder(value: &str) -> bool {
    let lower = value.to_lowercase();
    ["change-me", "changeme", "placeholder", "example"]
        .iter()
        .any(|p| lower.contains(p))
        || lower.starts_with("dev-")
}

/// A fresh key: 32 random bytes from the operating system, base64url without padding (43
/// characters).
pub fn new_key() -> Result<String, getrandom::Error> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_the_environment_a_file_or_the_value() {
        let dir = std::env::temp_dir().join(format!("lienthong-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("k"), "from-file\n").expect("write");
        assert_eq!(resolve("s", "file:k", &dir).expect("file"), "from-file");
        assert_eq!(resolve("s", "plain", &dir).expect("plain"), "plain");
        let e =
            resolve("http.operator_key", "env:LIENTHONG_TEST_UNSET_VAR", &dir).expect_err("unset");
        assert_eq!(
            e.to_string(),
            "http.operator_key: environment variable LIENTHONG_TEST_UNSET_VAR is not set"
        );
        let e = resolve("s", "file:missing", &dir).expect_err("missing");
        assert!(e.to_string().contains("not found"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn weak_keys_are_named_and_fresh_ones_pass() {
        assert!(weakness("").is_some());
        assert!(weakness("dev-operator-key").is_some());
        assert!(weakness("CHANGE-ME: lienthong keys new").is_some());
        assert!(weakness("short-but-random-Xq9").is_some());
        assert!(weakness(&"ab".repeat(32)).is_none(), "64 hex = 256 bits");
        let k = new_key().expect("key");
        assert_eq!(k.len(), 43);
        assert!(weakness(&k).is_none(), "{k}");
        assert!(weakness(&KeyHash::of(&k).to_config()).is_none());
    }

    #[test]
    fn a_key_matches_its_hash_and_only_it() {
        let k = new_key().expect("key");
        let h = KeyHash::from_config(&k);
        assert!(h.matches(&k));
        assert!(!h.matches("other"));
        let stored = KeyHash::from_config(&h.to_config());
        assert!(stored.matches(&k));
        assert_eq!(format!("{stored:?}"), "KeyHash(…)");
    }
}
