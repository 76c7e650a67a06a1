//! Fresh keys for a test's or the demo's settings: the shipped configurations carry only
//! placeholders, which `lienthong run` refuses, so every run gets keys of its own.

use lienthong_core::registry::{Reach, SECRET_SETTINGS, Settings};
use lienthong_core::secret::weakness;

/// A fresh key (32 random bytes, base64url; `lienthong keys new`'s form).
pub fn fresh() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Replace every key and password of `settings` that is weak or a placeholder with a fresh
/// one: the operator key, the units' API and callback keys, and the secrets of adapter
/// settings (the national portal's password, …). Units without a key stay without.
pub fn fill(settings: &mut Settings) {
    let renew = |k: &mut String| {
        if weakness(k).is_some() {
            *k = fresh();
        }
    };
    match &mut settings.http.operator_key {
        Some(k) => renew(k),
        None => settings.http.operator_key = Some(fresh()),
    }
    for u in &mut settings.units {
        if let Some(k) = &mut u.api_key {
            renew(k);
        }
        if let Reach::Adapter {
            callback_key,
            settings,
            ..
        } = &mut u.reach
        {
            if let Some(k) = callback_key {
                renew(k);
            }
            for name in SECRET_SETTINGS {
                if let Some(serde_json::Value::String(v)) = settings.get_mut(name) {
                    renew(v);
                }
            }
        }
    }
}
