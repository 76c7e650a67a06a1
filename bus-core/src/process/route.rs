//! Route resolution: whose a message is (the process manager's or the routing rules'), which
//! unit takes a role for a centre, which optional steps the applicant chose, and the
//! procedure's cut-off.

use chrono::NaiveTime;
use serde_json::Value;

use crate::envelope::Envelope;
use crate::registry::{Procedure, Registry, UnitKind};

/// The unit with `role` nearest to `near` in the parent tree (ties: lowest code):
/// [`Registry::resolve_role`].
pub fn resolve_role(registry: &Registry, role: &str, near: &str) -> Option<String> {
    registry.resolve_role(role, near)
}

/// The optional procedures the applicant chose (`payload.data.thu_tuc_lua_chon`).
pub fn chosen(env: &Envelope) -> Vec<String> {
    env.payload
        .data
        .as_ref()
        .and_then(|d| d.get("thu_tuc_lua_chon"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The procedure's cut-off time of day, when it has one.
pub fn cutoff(p: &Procedure) -> Option<NaiveTime> {
    p.cutoff_time
        .as_deref()
        .and_then(|c| crate::calendar::hhmm(c).ok())
}

/// Whether `env` starts a process: a `dossier.forward` with no receiver.
pub fn starts_process(env: &Envelope) -> bool {
    crate::filing::forward_without_receiver(env)
}

/// Whether `env` is the process manager's rather than the routing rules': a forward with no
/// receiver, or any message of a dossier it runs (`runs`, from
/// [`crate::store::Store::lookup_dossier`]), except a message addressed to the national portal
/// (routed as usual). The router and the HTTP API both ask this, with the same store read.
pub fn manages(registry: &Registry, env: &Envelope, runs: bool) -> bool {
    let to_portal = env
        .receiver
        .as_deref()
        .and_then(|r| registry.unit(r))
        .is_some_and(|u| u.kind == UnitKind::Portal);
    !to_portal && (starts_process(env) || runs)
}

/// The officer who handled the message, when the envelope names one.
pub fn handler_officer(env: &Envelope) -> Option<String> {
    env.payload.handler.as_ref().and_then(|h| h.officer.clone())
}
