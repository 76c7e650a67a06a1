//! What exists only in test builds (the `testing` feature): the process manager's clock offset
//! `LIENTHONG_CLOCK_OFFSET_S`, and the fail points armed by `FAILPOINTS`. A build without the
//! feature refuses to start when either variable is set, rather than ignore a variable its
//! operator believes in effect.

/// The variable that moves the process manager's clock (tests and demonstrations only).
pub const CLOCK_OFFSET_VAR: &str = "LIENTHONG_CLOCK_OFFSET_S";

/// Seconds `LIENTHONG_CLOCK_OFFSET_S` moves the process manager's clock by: its value in a
/// `testing` build, 0 in any other.
pub fn clock_offset_s() -> i64 {
    if cfg!(feature = "testing") {
        std::env::var(CLOCK_OFFSET_VAR)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    } else {
        0
    }
}

/// In a build without the `testing` feature: an error when `LIENTHONG_CLOCK_OFFSET_S` or
/// `FAILPOINTS` is set (they would do nothing there). `lienthong` checks it before any command
/// and [`crate::run::start`] before starting components.
pub fn refuse_in_production() -> anyhow::Result<()> {
    if cfg!(feature = "testing") {
        return Ok(());
    }
    for var in [CLOCK_OFFSET_VAR, "FAILPOINTS"] {
        if std::env::var_os(var).is_some() {
            anyhow::bail!(
                "{var} is set, but this build of lienthong has no test hooks (the `testing` feature): unset it"
            );
        }
    }
    Ok(())
}
