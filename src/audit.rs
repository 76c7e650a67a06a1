//! `lienthong audit verify`: recompute the trace's hash chain and check its signed checkpoints
//! (`lienthong_core::store::chain`), print what is broken (first first) and exit non-zero then.

use std::process::ExitCode;

use clap::Subcommand;
use lienthong_core::registry::Settings;
use lienthong_core::store::Store;
use lienthong_core::store::chain::{self, StoreReport};

/// `lienthong audit …`.
#[derive(Subcommand, Debug, Clone)]
pub enum AuditAction {
    /// Recompute the trace's hash chain (every event's hash, its link to the store's and to its
    /// dossier's previous event, the heads) and check the signed checkpoints against the key of
    /// [trace] signing_key. Prints the first edited, inserted or deleted event; exits 1 when
    /// anything is broken.
    Verify {
        /// Start at the first event at or after this date (YYYY-MM-DD, Vietnam time, or RFC
        /// 3339); its link to the events before is taken as it is.
        #[arg(long)]
        from: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Run an audit command on the store of `settings`.
pub fn run(settings: &Settings, action: &AuditAction) -> anyhow::Result<ExitCode> {
    match action {
        AuditAction::Verify { from, json } => {
            let from_ms = from.as_deref().map(parse_date).transpose()?;
            let report = verify(settings, from_ms)?;
            let text = if *json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                render(&report, from.as_deref())
            };
            print!("{text}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The verification `lienthong audit verify` runs: the store of `settings` (which must exist),
/// checkpoints checked against the public half of `[trace] signing_key` when configured.
pub fn verify(settings: &Settings, from_ms: Option<i64>) -> anyhow::Result<StoreReport> {
    let path = settings.store.location();
    if !path.exists() {
        anyhow::bail!("no store at {path}");
    }
    let trusted = match &settings.trace.signing_key {
        Some(r) => Some(
            chain::load_signing_key(r)
                .map_err(anyhow::Error::msg)?
                .verifying_key(),
        ),
        None => None,
    };
    let store = Store::open(&path)?;
    Ok(store.verify_trace(from_ms, trusted.as_ref())?)
}

/// `YYYY-MM-DD` (midnight, +07:00) or RFC 3339, as ms since the epoch.
fn parse_date(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("--from {s:?}: expected YYYY-MM-DD or RFC 3339"))?;
    let tz = chrono::FixedOffset::east_opt(7 * 3600)
        .ok_or_else(|| anyhow::anyhow!("the +07:00 offset"))?;
    let t = d
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(tz).single())
        .ok_or_else(|| anyhow::anyhow!("--from {s:?}: not a valid date"))?;
    Ok(t.timestamp_millis())
}

/// The report as text: what was checked, then OK or each broken link, first first.
pub fn render(r: &StoreReport, from: Option<&str>) -> String {
    let mut o = String::new();
    let since = from.map_or("from the start of the chain".to_string(), |f| {
        format!("from {f}")
    });
    o += &format!("trace chain: {} event(s) checked {since}\n", r.checked);
    if let Some(s) = r.chain_started_ms {
        let when = chrono::DateTime::from_timestamp_millis(s)
            .map(lienthong_core::clock::to_rfc3339)
            .unwrap_or_default();
        o += &format!(
            "chain started {when}; {} event(s) written before it are not covered\n",
            r.unchained_before
        );
    }
    o += &format!(
        "checkpoints: {} ({} signed and verified, {} unsigned); signatures checked against {}\n",
        r.checkpoints,
        r.checkpoints_signed_ok,
        r.checkpoints_unsigned,
        r.trusted_key.as_deref().map_or(
            "the key each checkpoint names (no [trace] signing_key configured: checkpoints are not signed by this installation)".to_string(),
            |k| format!("the configured key {k}")
        )
    );
    if r.ok() {
        o += "OK: the trace verifies\n";
        return o;
    }
    o += &format!("BROKEN: {} problem(s), the first first\n", r.breaks.len());
    for b in &r.breaks {
        let kind = serde_json::to_value(&b.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut at = String::new();
        if let Some(id) = &b.event_id {
            at += &format!(" event {id}");
        }
        if let Some(t) = &b.at {
            at += &format!(" at {t}");
        }
        if let Some(ma) = &b.ma_ho_so {
            at += &format!(" of dossier {ma}");
        }
        if let Some(s) = b.seq {
            at += &format!(" (position {s})");
        }
        o += &format!("  {kind}:{at}: {}\n", b.detail);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    #[test]
    fn dates_are_read_in_vietnam_time_or_rfc_3339() {
        assert_eq!(
            parse_date("2026-01-02").expect("date"),
            parse_date("2026-01-02T00:00:00+07:00").expect("rfc")
        );
        assert!(parse_date("02/01/2026").is_err());
    }
}
