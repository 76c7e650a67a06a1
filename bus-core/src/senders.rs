//! Who may publish as whom over AMQP: the broker-validated `user_id` of a message against the
//! envelope's `sender`.
//!
//! RabbitMQ refuses a publish whose `user_id` property differs from the user its connection
//! authenticated as ("Validated User-ID", rabbitmq.com/docs/validated-user-id), so `user_id`
//! is the one thing in a message a unit cannot forge. The bus's own publishers stamp it on
//! every message ([`crate::amqp::Publisher`]); a unit's software must set it to its broker user
//! (most clients do not by default).

use crate::envelope::{RejectCode, Rejection};
use crate::registry::Registry;

/// Header the bus sets when it republishes a message someone else published (an operator's
/// dead-letter replay): the broker user that first published it (`""`: it had none). The
/// router honours it only on a message whose `user_id` is the bus's own ([`effective_user`]).
pub const ORIGINAL_USER_HEADER: &str = "x-lienthong-original-user-id";

/// The user a message speaks for: its validated `user_id`, or, when the bus republished it and
/// says so in [`ORIGINAL_USER_HEADER`], the user that first published it (`None`: none).
pub fn effective_user<'a>(
    bus_user: Option<&str>,
    user_id: Option<&'a str>,
    original: Option<&'a str>,
) -> Option<&'a str> {
    match original {
        Some(o) if user_id.is_some() && user_id == bus_user => (!o.is_empty()).then_some(o),
        _ => user_id,
    }
}

/// The broker user a message speaks for, for [`ORIGINAL_USER_HEADER`] when the bus republishes
/// it (a dead letter, a replay, a dead letter moved in its queue): [`effective_user`] of its
/// properties, `""` when it had none. A header the publisher set itself counts only when the
/// publisher is the bus, so a unit cannot name another user through it.
pub fn original_user(props: &lapin::BasicProperties, bus_user: Option<&str>) -> String {
    let user = props.user_id().as_ref().map(|u| u.as_str());
    let recorded = crate::amqp::header_str(props, ORIGINAL_USER_HEADER);
    effective_user(bus_user, user, recorded.as_deref())
        .unwrap_or_default()
        .to_string()
}

/// Who published a message, as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher<'a> {
    /// The bus itself (its HTTP API after authenticating the unit's key, the process manager,
    /// an operator's replay): it may publish as any unit.
    Bus,
    /// A unit's software, authenticated by the broker as this user.
    Unit(&'a str),
}

/// Check that the message's broker user (`user_id`) may publish as `sender`.
///
/// `bus_user` is the broker user the bus connects as (`[bus] amqp_url`'s user). A message with
/// no `user_id`, or from a user that is neither the bus's nor a unit's `amqp_user`, or whose
/// `sender` is not one of that user's units, is refused with [`RejectCode::SenderMismatch`]: it
/// is dead-lettered with no effect anywhere (no process step, no agency call, no notice to the
/// claimed sender).
pub fn check<'a>(
    registry: &Registry,
    bus_user: Option<&str>,
    user_id: Option<&'a str>,
    sender: &str,
) -> Result<Publisher<'a>, Rejection> {
    let Some(user) = user_id else {
        return Err(Rejection::new(
            RejectCode::SenderMismatch,
            "the message has no user_id property: set it to your broker user (RabbitMQ checks it against your connection), so that the bus knows who sent it",
        ));
    };
    if bus_user == Some(user) {
        return Ok(Publisher::Bus);
    }
    let units = registry.units_of_amqp_user(user);
    if units.iter().any(|u| u == sender) {
        return Ok(Publisher::Unit(user));
    }
    Err(Rejection::new(
        RejectCode::SenderMismatch,
        if units.is_empty() {
            format!(
                "broker user {user} publishes for no unit of the registry (no unit has amqp_user = {user:?})"
            )
        } else {
            format!(
                "broker user {user} publishes for {}, not for sender {sender}",
                units.join(", ")
            )
        },
    ))
}

/// Whether a notice about a refused message may go to its claimed `sender`: only when the
/// broker user that published it is the sender's own (or the bus). A notice to a sender that
/// did not send the message would let anyone make the bus write into any unit's queue.
pub fn authenticated(
    registry: &Registry,
    bus_user: Option<&str>,
    user_id: Option<&str>,
    sender: &str,
) -> bool {
    matches!(
        check(registry, bus_user, user_id, sender),
        Ok(Publisher::Unit(_))
    ) || (user_id.is_some() && user_id == bus_user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{DEFAULT_CONFIG, Settings};

    fn registry() -> Registry {
        let mut s = Settings::from_toml(DEFAULT_CONFIG, false).expect("config");
        for u in &mut s.units {
            if u.code == "000.20.59.H48" || u.code == "000.10.59.H48" {
                u.amqp_user = Some("son-ha".into());
            }
            if u.code == "CA.H48" {
                u.amqp_user = Some("police".into());
            }
        }
        Registry::new(&s)
    }

    #[test]
    fn a_unit_user_publishes_only_as_its_units() {
        let r = registry();
        assert_eq!(
            check(&r, Some("bus"), Some("son-ha"), "000.20.59.H48"),
            Ok(Publisher::Unit("son-ha"))
        );
        assert_eq!(
            check(&r, Some("bus"), Some("son-ha"), "000.10.59.H48"),
            Ok(Publisher::Unit("son-ha"))
        );
        let e = check(&r, Some("bus"), Some("son-ha"), "CA.H48").expect_err("not its unit");
        assert_eq!(e.code, RejectCode::SenderMismatch);
        assert!(e.detail.contains("not for sender CA.H48"), "{}", e.detail);
        let e = check(&r, Some("bus"), Some("stranger"), "CA.H48").expect_err("no unit");
        assert!(e.detail.contains("no unit"), "{}", e.detail);
        let e = check(&r, Some("bus"), None, "CA.H48").expect_err("no user_id");
        assert!(e.detail.contains("no user_id"), "{}", e.detail);
    }

    #[test]
    fn a_replay_speaks_for_the_user_that_first_published() {
        assert_eq!(
            effective_user(Some("bus"), Some("bus"), Some("son-ha")),
            Some("son-ha")
        );
        assert_eq!(effective_user(Some("bus"), Some("bus"), Some("")), None);
        assert_eq!(effective_user(Some("bus"), Some("bus"), None), Some("bus"));
        // Only the bus's own messages are believed.
        assert_eq!(
            effective_user(Some("bus"), Some("son-ha"), Some("police")),
            Some("son-ha")
        );
    }

    #[test]
    fn the_bus_publishes_as_anyone_but_notices_follow_authentication() {
        let r = registry();
        assert_eq!(
            check(&r, Some("bus"), Some("bus"), "CA.H48"),
            Ok(Publisher::Bus)
        );
        assert!(authenticated(&r, Some("bus"), Some("police"), "CA.H48"));
        assert!(!authenticated(&r, Some("bus"), Some("son-ha"), "CA.H48"));
        assert!(!authenticated(&r, Some("bus"), None, "CA.H48"));
        assert!(!authenticated(&r, None, None, "CA.H48"));
    }
}
