//! `[console]`: the operators' web console's accounts (names, argon2 password hashes, roles)
//! and how long a login lasts.

use serde::{Deserialize, Serialize};

/// What an account may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees every page (dossiers, units, dead letters, overdue, live events); changes nothing.
    Viewer,
    /// A viewer who may also replay dead letters and see the raw envelopes.
    Operator,
}

/// One console account (`[[console.accounts]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Login name, recorded in the trace with what the account does (a replay).
    pub user: String,
    /// The password's argon2 hash in PHC string form (`$argon2id$v=19$m=…`), as `lienthong
    /// keys new --console` prints it; never the password itself.
    pub password_hash: String,
    /// `viewer` or `operator`.
    pub role: Role,
}

/// `[console]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Accounts that may log in (besides `[http] operator_key`, which logs in as an operator
    /// named `operator-key`).
    pub accounts: Vec<Account>,
    /// How long a login lasts without a request, minutes (default 480: a working day).
    pub session_idle_minutes: u32,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            accounts: Vec::new(),
            session_idle_minutes: 480,
        }
    }
}
