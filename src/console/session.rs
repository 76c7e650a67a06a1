//! Console logins: checking an account's password (argon2) or the operator key, the sessions
//! they open (a random token in an `HttpOnly`, `SameSite=Strict` cookie, `Secure` over TLS;
//! only its SHA-256 kept), each session's CSRF token, and a bound on failed logins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use lienthong_core::console_settings::Role;
use lienthong_core::registry::{Registry, Settings};
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "lt_session";

/// Who is logged in, and the token their forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    /// Account name (`operator-key` for a login with the operator key).
    pub user: String,
    /// What the account may do.
    pub role: Role,
    /// The CSRF token every state-changing form of this session carries.
    pub csrf: String,
    last: Instant,
}

/// The open sessions of this process, by the SHA-256 of their token.
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Failed logins allowed per account name per [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 10;
/// The window of [`MAX_FAILURES`].
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// No sessions; one lasts `idle` without a request.
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            idle,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Open a session: its token (for the cookie) and the session.
    pub fn open(&self, user: &str, role: Role) -> Option<(String, Session)> {
        let token = lienthong_core::secret::new_key().ok()?;
        let csrf = lienthong_core::secret::new_key().ok()?;
        let s = Session {
            user: user.to_string(),
            role,
            csrf,
            last: Instant::now(),
        };
        let mut open = self.open.lock().ok()?;
        let idle = self.idle;
        open.retain(|_, s| s.last.elapsed() < idle);
        open.insert(digest(&token), s.clone());
        Some((token, s))
    }

    /// The session of `token`, if open and not idle too long (its idle time starts again).
    pub fn get(&self, token: &str) -> Option<Session> {
        let mut open = self.open.lock().ok()?;
        let key = digest(token);
        let s = open.get_mut(&key)?;
        if s.last.elapsed() >= self.idle {
            open.remove(&key);
            return None;
        }
        s.last = Instant::now();
        Some(s.clone())
    }

    /// Whether the session of `token` is still open, without starting its idle time again (a
    /// live page's stream checks this every second: the stream alone must not keep a session
    /// open forever).
    pub fn peek(&self, token: &str) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return false;
        };
        let key = digest(token);
        match open.get(&key) {
            Some(s) if s.last.elapsed() < self.idle => true,
            Some(_) => {
                open.remove(&key);
                false
            }
            None => false,
        }
    }

    /// End the session of `token`.
    pub fn close(&self, token: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&digest(token));
        }
    }

    /// Whether `user` may try to log in now (fewer than [`MAX_FAILURES`] failures in the
    /// window).
    pub fn may_try(&self, user: &str) -> bool {
        let Ok(f) = self.failures.lock() else {
            return false;
        };
        f.get(user)
            .is_none_or(|(n, since)| *n < MAX_FAILURES || since.elapsed() >= FAILURE_WINDOW)
    }

    /// Count a failed login of `user`. Names whose window is over are forgotten here, so the
    /// map holds only the last [`FAILURE_WINDOW`]'s names (each attempt costs an argon2 hash,
    /// which bounds how many that can be).
    pub fn failed(&self, user: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            let e = f.entry(user.to_string()).or_insert((0, Instant::now()));
            if e.1.elapsed() >= FAILURE_WINDOW {
                *e = (0, Instant::now());
            }
            e.0 += 1;
        }
    }
}

/// Who `user` / `password` log in as: a `[[console.accounts]]` entry whose argon2 hash the
/// password matches, or (with no user name) the operator key. Runs argon2: call it off the
/// async runtime.
pub fn check_login(
    settings: &Settings,
    registry: &Registry,
    user: &str,
    password: &str,
) -> Option<(String, Role)> {
    let user = user.trim();
    if user.is_empty() || user == "operator-key" {
        return registry
            .is_operator_key(password)
            .then(|| ("operator-key".to_string(), Role::Operator));
    }
    let account = settings.console.accounts.iter().find(|a| a.user == user)?;
    let hash = PasswordHash::new(&account.password_hash).ok()?;
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .ok()
        .map(|()| (account.user.clone(), account.role))
}

/// The argon2id hash (PHC string, the crate's default parameters) of `password`, for
/// `[[console.accounts]] password_hash`.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no random salt: {e}"))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value of a session token (`secure`: the console is served over TLS).
pub fn session_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether two tokens are equal, in constant time.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_only() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        let parsed = PasswordHash::new(&h).expect("PHC");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_millis(50));
        let (token, session) = s.open("an", Role::Viewer).expect("open");
        assert_eq!(s.get(&token).map(|x| x.csrf), Some(session.csrf));
        assert!(s.get("other").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&token).is_none(), "idle too long");
        let (token, _) = s.open("an", Role::Viewer).expect("open");
        s.close(&token);
        assert!(s.get(&token).is_none());
        for _ in 0..MAX_FAILURES {
            assert!(s.may_try("an"));
            s.failed("an");
        }
        assert!(!s.may_try("an"));
        assert!(s.may_try("binh"));
    }

    #[test]
    fn a_stream_peeking_at_its_session_does_not_keep_it_open() {
        let s = Sessions::new(Duration::from_millis(200));
        let (token, _) = s.open("an", Role::Viewer).expect("open");
        let until = Instant::now() + Duration::from_millis(300);
        let mut open_while_peeking = 0;
        while Instant::now() < until {
            open_while_peeking += u32::from(s.peek(&token));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(open_while_peeking > 0, "open at first");
        assert!(!s.peek(&token), "peeking did not refresh the idle time");
        assert!(s.get(&token).is_none(), "expired");
    }
}
