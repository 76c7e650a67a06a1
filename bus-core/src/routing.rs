//! Content-based routing decisions: who may send what to whom. The router (AMQP) and the HTTP
//! API both call [`check`], so a hop refused over HTTP is refused for the same reason over AMQP.

use crate::envelope::{Envelope, Kind, RejectCode, Rejection};
use crate::registry::{Registry, UnitKind};
use crate::store::Origin;

/// Where an accepted envelope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision {
    /// Receiver unit code (also the routing key on the deliver exchange).
    pub receiver: String,
    /// This forward starts the dossier at its centre: record the sender as origin.
    pub records_origin: bool,
}

/// Decide where `env` goes.
///
/// Rules, in order: the kind is one the bus routes (`bus.*` kinds come only from the bus); the
/// sender is a known unit; a receiver is named (choosing it from the catalogue is a later
/// feature); the receiver is a known unit; the procedure is in the catalogue and eligible; the
/// sender is a centre, the dossier's origin, or on the route; the receiver is on the procedure's
/// route, or is the centre that sent the dossier (replies are always allowed back there); the
/// national portal (unit kind `portal`) takes status and result messages from centres that sync
/// to it.
/// Step order is not enforced here.
pub fn check(
    registry: &Registry,
    env: &Envelope,
    origin: Option<&Origin>,
) -> Result<RouteDecision, Rejection> {
    let kind = env.kind.as_str();
    if !Kind::KNOWN.contains(&kind) {
        return Err(Rejection::new(
            RejectCode::UnsupportedKind,
            format!(
                "kind {kind:?} is not routed by this bus (known: {})",
                Kind::KNOWN.join(", ")
            ),
        ));
    }
    if kind == Kind::DEAD_LETTER {
        return Err(Rejection::new(
            RejectCode::UnsupportedKind,
            "bus.dead_letter notices are emitted by the bus only",
        ));
    }
    let Some(sender) = registry.unit(&env.sender) else {
        return Err(Rejection::new(
            RejectCode::UnknownSender,
            format!("sender {} is not a unit of the registry", env.sender),
        ));
    };
    let Some(receiver_code) = env.receiver.as_deref() else {
        return Err(Rejection::new(
            RejectCode::MissingReceiver,
            "no receiver: choosing the receiver from the procedure's route is not enabled in this version; name the receiver",
        ));
    };
    let Some(receiver) = registry.unit(receiver_code) else {
        return Err(Rejection::new(
            RejectCode::UnknownReceiver,
            format!("receiver {receiver_code} is not a unit of the registry"),
        ));
    };
    let Some(procedure) = registry.procedure(&env.ma_tthc) else {
        return Err(Rejection::new(
            RejectCode::UnknownProcedure,
            format!("procedure {} is not in the catalogue", env.ma_tthc),
        ));
    };
    if !procedure.eligible() {
        let flags: Vec<String> = procedure
            .exclusions
            .iter()
            .map(|e| {
                serde_json::to_value(e)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .collect();
        return Err(Rejection::new(
            RejectCode::IneligibleProcedure,
            format!(
                "procedure {} ({}) is excluded from liên thông: {}",
                procedure.ma_tthc,
                procedure.name,
                flags.join(", ")
            ),
        ));
    }
    if origin.is_some_and(|o| o.ma_tthc != env.ma_tthc) {
        return Err(Rejection::new(
            RejectCode::InvalidField,
            format!(
                "dossier {} was filed under procedure {}, not {}",
                env.ma_ho_so,
                origin.map(|o| o.ma_tthc.as_str()).unwrap_or(""),
                env.ma_tthc
            ),
        ));
    }
    let is_origin = |code: &str| origin.is_some_and(|o| o.origin_unit == code);
    let on_route_sender = registry.step_for(procedure, sender).is_some();
    // Once a dossier has an origin, only its parties speak of it: its centre and the units on
    // its route. Before, any centre may open it (under its own code: `check_issuer`).
    match origin {
        Some(o) if !(is_origin(&sender.code) || on_route_sender) => {
            return Err(Rejection::new(
                RejectCode::NotOnRoute,
                format!(
                    "sender {} ({}) is not a party of dossier {}: it was filed by {} and {} is not on the route of {}",
                    sender.code,
                    sender.name,
                    env.ma_ho_so,
                    o.origin_unit,
                    sender.code,
                    procedure.ma_tthc
                ),
            ));
        }
        None if !(sender.kind == UnitKind::Centre || on_route_sender) => {
            return Err(Rejection::new(
                RejectCode::NotOnRoute,
                format!(
                    "sender {} ({}) is neither a centre nor on the route of {}",
                    sender.code, sender.name, procedure.ma_tthc
                ),
            ));
        }
        _ => {}
    }
    if receiver.kind == UnitKind::Portal {
        // The national portal is synchronised to, never handed a dossier: it takes a centre's
        // status and result messages when that centre syncs to it.
        let ok = env.kind.is_reply() && sender.kind == UnitKind::Centre && sender.syncs_to_portal;
        if !ok {
            return Err(Rejection::new(
                RejectCode::NotOnRoute,
                format!(
                    "receiver {} ({}) is the national portal: it takes dossier.status and dossier.result from centres with syncs_to_portal = true, not a {kind} from {}",
                    receiver.code, receiver.name, sender.code
                ),
            ));
        }
        return Ok(RouteDecision {
            receiver: receiver.code.clone(),
            records_origin: false,
        });
    }
    let on_route = registry.step_for(procedure, receiver).is_some();
    let reply_to_origin = env.kind.is_reply() && is_origin(&receiver.code);
    if !(on_route || reply_to_origin) {
        let steps: Vec<String> = procedure
            .steps
            .iter()
            .map(|s| {
                format!(
                    "{} ({})",
                    s.id,
                    s.unit.as_deref().or(s.role.as_deref()).unwrap_or("?")
                )
            })
            .collect();
        let why = match origin {
            Some(o) => format!(
                "and is not {}, the centre that sent the dossier",
                o.origin_unit
            ),
            None => {
                "and no dossier.forward of this dossier from a centre has passed through the bus"
                    .to_string()
            }
        };
        return Err(Rejection::new(
            RejectCode::NotOnRoute,
            format!(
                "receiver {} ({}) is not on the route of {} [{}] {why}",
                receiver.code,
                receiver.name,
                procedure.ma_tthc,
                steps.join(", ")
            ),
        ));
    }
    let records_origin =
        env.kind.is_forward() && sender.kind == UnitKind::Centre && origin.is_none();
    if records_origin {
        check_issuer(procedure, &sender.code, &env.ma_ho_so)?;
    }
    Ok(RouteDecision {
        receiver: receiver.code.clone(),
        records_origin,
    })
}

/// The attachment references a sender may give: its own documents by an `https:` URL. A
/// `urn:lienthong:blob:` reference is minted by the bus's claim check only (`bus_minted`: the
/// message comes from the bus itself, whose HTTP API claim-checked it), so no sender can point at
/// another dossier's blob.
pub fn check_references(env: &Envelope, bus_minted: bool) -> Result<(), Rejection> {
    for a in &env.attachments {
        let Some(r) = a.reference.as_deref() else {
            continue;
        };
        let ok = if r.starts_with(crate::claimcheck::BLOB_URN) {
            bus_minted
        } else {
            r.starts_with("https://")
        };
        if !ok {
            return Err(Rejection::new(
                RejectCode::InvalidField,
                format!(
                    "attachment {:?}: reference {r:?} is not allowed: give your own document by an https:// URL, or its content inline (the bus stores large ones itself)",
                    a.name
                ),
            ));
        }
    }
    Ok(())
}

/// A message id is the sender's promise that this is one message: receivers drop a second
/// message with an id they have seen. `seen` is what the bus already holds under `env`'s id
/// ([`crate::store::Store::message_seen`]): the same sender and dossier is a redelivery (fine);
/// another sender or another dossier reusing it is refused.
pub fn check_message_id(
    env: &Envelope,
    seen: Option<&(Option<String>, String)>,
) -> Result<(), Rejection> {
    let Some((sender, ma_ho_so)) = seen else {
        return Ok(());
    };
    let other_sender = sender.as_deref().is_some_and(|s| s != env.sender);
    if other_sender || *ma_ho_so != env.ma_ho_so {
        return Err(Rejection::new(
            RejectCode::InvalidField,
            format!(
                "message_id {} was already used by another message (another sender or dossier): every message needs its own id (UUIDv7)",
                env.message_id
            ),
        ));
    }
    Ok(())
}

/// A centre opening dossier `ma_ho_so` of `procedure` must be its issuer: where the catalogue
/// says the code is built from the centre's code ([`crate::registry::Procedure::ma_ho_so_carries_issuer`]), the
/// code must start with `<centre code>-`. Together with "the first origin wins", two centres
/// cannot own one code.
pub fn check_issuer(
    procedure: &crate::registry::Procedure,
    centre: &str,
    ma_ho_so: &str,
) -> Result<(), Rejection> {
    let issued_here = ma_ho_so
        .strip_prefix(centre)
        .is_some_and(|rest| rest.starts_with('-'));
    if procedure.ma_ho_so_carries_issuer && !issued_here {
        return Err(Rejection::new(
            RejectCode::InvalidField,
            format!(
                "ma_ho_so {ma_ho_so} is not a code of {centre}: a centre opens a dossier of {} only under its own code ({centre}-<yyMMdd>-<number>)",
                procedure.ma_tthc
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{DEFAULT_CONFIG, Settings};

    fn reg() -> Registry {
        Registry::new(&Settings::from_toml(DEFAULT_CONFIG, false).expect("config"))
    }

    fn env(kind: &str, sender: &str, receiver: &str) -> Envelope {
        Envelope::new(
            kind,
            "000.20.59.H48-261129-0001",
            "1.001193",
            sender,
            Some(receiver),
            "c1",
        )
    }

    #[test]
    fn centre_may_forward_to_a_unit_on_the_route() {
        let d = check(
            &reg(),
            &env(Kind::FORWARD, "000.20.59.H48", "000.10.59.H48"),
            None,
        )
        .expect("on route");
        assert!(d.records_origin);
    }

    #[test]
    fn the_portal_takes_results_from_a_syncing_centre_only() {
        let d = check(&reg(), &env(Kind::RESULT, "000.20.59.H48", "DVCQG"), None)
            .expect("a syncing centre's result");
        assert!(!d.records_origin);
        let e = check(&reg(), &env(Kind::FORWARD, "000.20.59.H48", "DVCQG"), None)
            .expect_err("no dossier is handed to the portal");
        assert_eq!(e.code, RejectCode::NotOnRoute);
        assert!(e.detail.contains("national portal"), "{}", e.detail);
        let e = check(&reg(), &env(Kind::RESULT, "CA.H48", "DVCQG"), None)
            .expect_err("only centres sync");
        assert_eq!(e.code, RejectCode::NotOnRoute);
    }

    #[test]
    fn hop_off_the_route_is_refused() {
        let e = check(&reg(), &env(Kind::FORWARD, "000.20.59.H48", "CT.H48"), None)
            .expect_err("tax is not on the birth route");
        assert_eq!(e.code, RejectCode::NotOnRoute);
        assert!(e.detail.contains("CT.H48"));
    }

    #[test]
    fn reply_to_the_origin_centre_is_allowed_and_to_another_centre_refused() {
        let o = Origin {
            ma_ho_so: "000.20.59.H48-261129-0001".into(),
            ma_tthc: "1.001193".into(),
            origin_unit: "000.20.59.H48".into(),
            correlation_id: "c1".into(),
        };
        check(
            &reg(),
            &env(Kind::RESULT, "CA.H48", "000.20.59.H48"),
            Some(&o),
        )
        .expect("reply to origin");
        let e = check(
            &reg(),
            &env(Kind::RESULT, "CA.H48", "000.20.61.H48"),
            Some(&o),
        )
        .expect_err("other centre");
        assert_eq!(e.code, RejectCode::NotOnRoute);
    }

    #[test]
    fn only_the_parties_of_a_dossier_speak_of_it_once_it_has_an_origin() {
        let o = Origin {
            ma_ho_so: "000.20.59.H48-261129-0001".into(),
            ma_tthc: "1.001193".into(),
            origin_unit: "000.20.59.H48".into(),
            correlation_id: "c1".into(),
        };
        // Another centre, about Sơn Hà's dossier: a status to a unit on the route.
        let e = check(
            &reg(),
            &env(Kind::STATUS, "000.20.61.H48", "CA.H48"),
            Some(&o),
        )
        .expect_err("another centre");
        assert_eq!(e.code, RejectCode::NotOnRoute);
        assert!(e.detail.contains("not a party"), "{}", e.detail);
        // Its centre and the units on its route still may.
        check(
            &reg(),
            &env(Kind::STATUS, "000.20.59.H48", "CA.H48"),
            Some(&o),
        )
        .expect("its centre");
        check(
            &reg(),
            &env(Kind::STATUS, "CA.H48", "000.20.59.H48"),
            Some(&o),
        )
        .expect("a unit on its route");
    }

    #[test]
    fn a_centre_opens_dossiers_under_its_own_code_only() {
        // Đức Phổ's centre filing under Sơn Hà's code: refused.
        let e = check(
            &reg(),
            &env(Kind::FORWARD, "000.20.61.H48", "000.10.59.H48"),
            None,
        )
        .expect_err("a squatted code");
        assert_eq!(e.code, RejectCode::InvalidField);
        assert!(
            e.detail.contains("not a code of 000.20.61.H48"),
            "{}",
            e.detail
        );
        // A procedure whose codes are not built from the centre's: allowed.
        let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("config");
        for p in &mut s.procedures {
            p.ma_ho_so_carries_issuer = false;
        }
        check(
            &Registry::new(&s),
            &env(Kind::FORWARD, "000.20.61.H48", "000.10.59.H48"),
            None,
        )
        .expect("codes not built from the centre's");
    }

    #[test]
    fn two_tier_2025_config_routes_a_commune_centre_to_the_commune_civil_status() {
        let text = include_str!("../../deploy/config/quang-ngai-2025.toml");
        let reg = Registry::new(&Settings::from_toml(text, false).expect("2025 config"));
        let e = Envelope::new(
            Kind::FORWARD,
            "000.20.72.H48-261129-0001",
            "1.001193",
            "000.20.72.H48",
            Some("000.00.72.H48"),
            "c1",
        );
        check(&reg, &e, None).expect("commune centre → commune People's Committee (civil status)");
        let to_police = Envelope::new(
            Kind::FORWARD,
            "000.20.72.H48-261129-0001",
            "1.001193",
            "000.20.72.H48",
            Some("CA.H48"),
            "c1",
        );
        check(&reg, &to_police, None).expect("commune centre → Police");
    }

    #[test]
    fn unknown_receiver_and_excluded_procedure_are_refused() {
        assert_eq!(
            check(&reg(), &env(Kind::FORWARD, "000.20.59.H48", "NOPE"), None)
                .expect_err("x")
                .code,
            RejectCode::UnknownReceiver
        );
        let mut e = env(Kind::FORWARD, "000.20.59.H48", "000.00.07.H48");
        e.ma_tthc = "SYN.CHUNG-THUC".into();
        assert_eq!(
            check(&reg(), &e, None).expect_err("x").code,
            RejectCode::IneligibleProcedure
        );
    }
}
