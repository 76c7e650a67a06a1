//! Time in Vietnam's zone: the bus writes every timestamp in RFC 3339 with offset +07:00.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

/// UTC+7 (Asia/Ho_Chi_Minh has had no daylight saving time since 1975).
pub fn vn_offset() -> FixedOffset {
    // `east_opt` only fails outside ±24 h.
    FixedOffset::east_opt(7 * 3600).expect("+07:00 is a valid offset")
}

/// Now, in +07:00.
pub fn now_vn() -> DateTime<FixedOffset> {
    Utc::now().with_timezone(&vn_offset())
}

/// Now as RFC 3339 with milliseconds and +07:00, e.g. `2026-11-29T10:15:00.123+07:00`.
pub fn now_rfc3339() -> String {
    now_vn().to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// A time as RFC 3339 with milliseconds in +07:00.
pub fn to_rfc3339(t: DateTime<Utc>) -> String {
    t.with_timezone(&vn_offset())
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// A time in the DVCQG format `yyyyMMddHHmmss`, Asia/Ho_Chi_Minh.
pub fn to_dvcqg(t: DateTime<Utc>) -> String {
    t.with_timezone(&vn_offset())
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
