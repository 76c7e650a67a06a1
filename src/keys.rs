//! `lienthong keys new`: a fresh key and the forms the configuration takes it in (the key for
//! the party that presents it, its `sha256:` hash for the bus's file), and with `--broker` a
//! broker password with the hash `topology export` puts into RabbitMQ's definitions, with
//! `--console USER` a console account's password and its argon2 hash.

use lienthong_core::broker_users;
use lienthong_core::secret::{KeyHash, new_key};

/// The text `lienthong keys new [--broker]` prints. Errors: the operating system gave no
/// randomness.
pub fn new(broker: bool) -> anyhow::Result<String> {
    let key = new_key().map_err(|e| anyhow::anyhow!("no randomness from the system: {e}"))?;
    if broker {
        let mut salt = [0u8; 4];
        getrandom::fill(&mut salt)
            .map_err(|e| anyhow::anyhow!("no randomness from the system: {e}"))?;
        let hash = broker_users::password_hash(&key, salt);
        return Ok(format!(
            "password: {key}\n\
             amqp_password_hash = \"{hash}\"\n\
             \n\
             The password goes to the system that connects (for the bus: [bus] amqp_password =\n\
             \"env:NAME\" or \"file:PATH\" holding it); the hash goes into the configuration\n\
             ([bus] amqp_password_hash, or the unit's amqp_password_hash) for `lienthong topology\n\
             export` to create the broker user with ({}).\n",
            broker_users::HASHING_ALGORITHM
        ));
    }
    Ok(format!(
        "key: {key}\n\
         {}\n\
         \n\
         Give the key to the party that presents it (a centre's software, an agency's callback,\n\
         an operator). Put either the key (or env:NAME / file:PATH holding it) or, better, the\n\
         sha256 line's value into the configuration (api_key, callback_key, operator_key): the\n\
         bus keeps and compares only the hash.\n",
        KeyHash::of(&key).to_config()
    ))
}

/// The text `lienthong keys new --console USER [--role ROLE]` prints: a fresh password and the
/// `[[console.accounts]]` entry with its argon2id hash. Errors: no randomness.
pub fn console_account(user: &str, role: &str) -> anyhow::Result<String> {
    let password = new_key().map_err(|e| anyhow::anyhow!("no randomness from the system: {e}"))?;
    let hash = crate::console::session::hash_password(&password)?;
    let user = user.replace(['"', '\\'], "");
    Ok(format!(
        "password: {password}\n\
         \n\
         [[console.accounts]]\n\
         user = \"{user}\"\n\
         password_hash = \"{hash}\"\n\
         role = \"{role}\"\n\
         \n\
         Give the password to the person; put the entry into the configuration (the bus keeps\n\
         only the hash). They log in at /console.\n"
    ))
}
