//! Field mapping shared by the agency adapters: from the envelope's snake_case Vietnamese
//! payload to DVCQG-style values (dates `yyyyMMdd`, sex 1/2) and the choice of the person a
//! dossier is about.

use lienthong_core::Envelope;
use lienthong_core::envelope::Person;
use serde_json::{Map, Value};

/// The bus's blob endpoint, from the callback URL `<base>/v1/callbacks/<unit>`:
/// `<base>/v1/blobs/`.
pub fn blob_base_of(callback_url: &str) -> String {
    match callback_url.find("/v1/callbacks/") {
        Some(i) => format!("{}/v1/blobs/", &callback_url[..i]),
        None => format!("{}/v1/blobs/", callback_url.trim_end_matches('/')),
    }
}

/// An attachment reference the agency can fetch: a claim-check URN
/// (`urn:lienthong:blob:sha256:<hash>`) becomes `<blob_base><hash>` on the bus's HTTP API
/// (fetched with the agency's callback key); any other URI is passed on as it is.
pub fn fetchable(reference: &str, blob_base: &str) -> String {
    match reference.strip_prefix(lienthong_core::claimcheck::BLOB_URN) {
        Some(sha) => format!("{blob_base}{sha}"),
        None => reference.to_string(),
    }
}

/// `YYYY-MM-DD` → `yyyyMMdd`; `None` if the input is not of that shape.
pub fn date8(iso: &str) -> Option<String> {
    let d = chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d").ok()?;
    Some(d.format("%Y%m%d").to_string())
}

/// `nam` → 1, `nu` → 2 (DVCQG GioiTinh).
pub fn sex_code(s: Option<&str>) -> Option<u8> {
    match s? {
        "nam" => Some(1),
        "nu" => Some(2),
        _ => None,
    }
}

/// The person the dossier is about: `payload.data.tre` (a newborn) or `payload.data.nguoi_mat`
/// (a deceased person).
pub fn subject(env: &Envelope) -> Option<(Person, Map<String, Value>)> {
    let data = env.payload.data.as_ref()?;
    let raw = data
        .get("tre")
        .or_else(|| data.get("nguoi_mat"))?
        .as_object()?
        .clone();
    let p: Person = serde_json::from_value(Value::Object(raw.clone())).ok()?;
    Some((p, raw))
}

/// A string field of `payload.data` (or of a nested object `obj.key`).
pub fn data_str(env: &Envelope, path: &[&str]) -> Option<String> {
    let mut cur: &Value = env.payload.data.as_ref()?.get(path[0])?;
    for k in &path[1..] {
        cur = cur.get(k)?;
    }
    cur.as_str().map(str::to_string)
}

/// The request type an adapter's `settings.request_types` table gives for the envelope's
/// procedure (`{ "1.001193" = "DANG_KY_THUONG_TRU" }`).
pub fn request_type(settings: &Map<String, Value>, ma_tthc: &str) -> Option<String> {
    settings
        .get("request_types")?
        .get(ma_tthc)?
        .as_str()
        .map(str::to_string)
}

/// Scalar (string, number, bool) top-level fields of a map, as strings, in key order.
pub fn scalars(m: &Map<String, Value>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = m
        .iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k.clone(), s.clone())),
            Value::Number(n) => Some((k.clone(), n.to_string())),
            Value::Bool(b) => Some((k.clone(), b.to_string())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// A DVCQG-style PascalCase field name in the bus's snake_case (`SoToKhai` → `so_to_khai`).
pub fn snake(pascal: &str) -> String {
    let mut out = String::with_capacity(pascal.len() + 4);
    for (i, c) in pascal.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The envelope's `sent_at` as `yyyyMMddHHmmss` in Vietnam time: the time an agency document
/// carries (`NgayGui`, `NgayChuyen`, `$now`). Taken from the envelope, never the clock, so that
/// every attempt of one message sends the same bytes under its idempotency key.
///
/// Errors: `sent_at` is not an RFC 3339 time (ingress refuses such an envelope).
pub fn sent_time(env: &Envelope) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(&env.sent_at)
        .map(|t| lienthong_core::clock::to_dvcqg(t.with_timezone(&chrono::Utc)))
        .map_err(|e| format!("sent_at {:?} is not an RFC 3339 time ({e})", env.sent_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sex_map_to_dvcqg_forms() {
        assert_eq!(date8("2026-11-20").as_deref(), Some("20261120"));
        assert_eq!(date8("20/11/2026"), None);
        assert_eq!(sex_code(Some("nu")), Some(2));
        assert_eq!(sex_code(Some("x")), None);
    }
}
