//! Transport failures in words an operator can act on: a reqwest error's `source()` chain is
//! read (rustls certificate errors, DNS, refused connections, connect vs read timeouts, resets)
//! into what failed, at which agency and address, with which configured limit, and what to do.

use std::error::Error as StdError;

use crate::outcome::Outcome;

/// Who an adapter calls, and with what limits: what a reason needs to name the agency, the
/// timeout that fired and the trust that was used. Built by [`crate::http::Agent::for_agency`]
/// and [`crate::http::Agent::for_unit`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peer {
    /// The unit's code in the registry (`CT.H48`); empty when unknown.
    pub unit_code: String,
    /// The unit's name (`Cục Thuế tỉnh Quảng Ngãi`).
    pub unit_name: String,
    /// Time allowed for TCP + TLS, ms (`connect_timeout_ms`).
    pub connect_timeout_ms: u64,
    /// Longest stall between two reads of the answer, ms (`read_timeout_ms`).
    pub read_timeout_ms: u64,
    /// Whole call, ms (the unit's `timeout_ms`).
    pub timeout_ms: u64,
    /// The unit's `ca_bundle` (PEM path), when it trusts its own CA instead of the system roots.
    pub ca_bundle: Option<String>,
}

impl Peer {
    /// "name (code)", or "the agency" when the unit is not known.
    pub fn who(&self) -> String {
        match (self.unit_name.is_empty(), self.unit_code.is_empty()) {
            (_, true) => "the agency".into(),
            (true, false) => self.unit_code.clone(),
            (false, false) => format!("{} ({})", self.unit_name, self.unit_code),
        }
    }

    /// "; run `lienthong check CODE`", or nothing when the unit is not known.
    fn hint(&self) -> String {
        if self.unit_code.is_empty() {
            String::new()
        } else {
            format!("; run `lienthong check {}`", self.unit_code)
        }
    }
}

/// A certificate or handshake problem, from the `rustls::Error` in a failure's source chain.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsProblem {
    /// The agency's certificate has expired; `not_after` is its last valid day (UTC,
    /// `YYYY-MM-DD`) when the verifier said it.
    Expired {
        /// Last valid day.
        not_after: Option<String>,
    },
    /// The agency's certificate is not valid yet (or this host's clock is wrong).
    NotYetValid {
        /// First valid day (UTC, `YYYY-MM-DD`), when known.
        not_before: Option<String>,
    },
    /// The chain does not lead to a CA the unit trusts (its `ca_bundle`, else the system roots).
    UnknownIssuer,
    /// The certificate is not valid for the endpoint's host name.
    NameMismatch {
        /// The name the bus expected (the endpoint's host), when the verifier said it.
        expected: Option<String>,
        /// The names the certificate carries.
        presented: Vec<String>,
    },
    /// The certificate is a CA's (basic constraints CA:TRUE), served as the server's own: what
    /// `openssl req -x509` makes by default for a self-signed certificate.
    CaAsServerCertificate,
    /// The certificate has been revoked.
    Revoked,
    /// The agency refused the handshake with a certificate alert: our client certificate
    /// (mTLS) is missing, expired or not trusted by the agency.
    ClientCertificateRefused {
        /// The TLS alert it sent (`CertificateRequired`, `BadCertificate`, …).
        alert: String,
    },
    /// The endpoint answered something that is not TLS (an `http://` service on an `https`
    /// endpoint).
    NotTls,
    /// Anything else rustls reported.
    Other {
        /// rustls's words.
        detail: String,
    },
}

/// A presented name as rustls writes it (`DnsName("a.example")`, `IpAddress(…)`) without the
/// wrapper.
fn bare_name(n: &str) -> String {
    match (n.find('('), n.rfind(')')) {
        (Some(i), Some(j)) if i < j => n[i + 1..j].trim_matches('"').to_string(),
        _ => n.to_string(),
    }
}

/// `UnixTime` as a UTC date, `YYYY-MM-DD`.
fn day(t: rustls::pki_types::UnixTime) -> Option<String> {
    let secs = i64::try_from(t.as_secs()).ok()?;
    chrono::DateTime::from_timestamp(secs, 0).map(|d| d.date_naive().to_string())
}

impl TlsProblem {
    /// The problem a rustls error describes.
    pub fn from_rustls(e: &rustls::Error) -> TlsProblem {
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        match e {
            E::InvalidCertificate(c) => match c {
                C::Expired => TlsProblem::Expired { not_after: None },
                C::ExpiredContext { not_after, .. } => TlsProblem::Expired {
                    not_after: day(*not_after),
                },
                C::NotValidYet => TlsProblem::NotYetValid { not_before: None },
                C::NotValidYetContext { not_before, .. } => TlsProblem::NotYetValid {
                    not_before: day(*not_before),
                },
                C::UnknownIssuer => TlsProblem::UnknownIssuer,
                C::NotValidForName => TlsProblem::NameMismatch {
                    expected: None,
                    presented: Vec::new(),
                },
                C::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsProblem::NameMismatch {
                    expected: Some(expected.to_str().into_owned()),
                    presented: presented.iter().map(|n| bare_name(n)).collect(),
                },
                C::Revoked => TlsProblem::Revoked,
                // webpki's error inside rustls's `Other` (no public type to match on).
                C::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
                    TlsProblem::CaAsServerCertificate
                }
                _ => TlsProblem::Other {
                    detail: e.to_string(),
                },
            },
            E::AlertReceived(
                a @ (A::BadCertificate
                | A::CertificateRequired
                | A::UnknownCA
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::CertificateUnknown
                | A::UnsupportedCertificate
                | A::AccessDenied),
            ) => TlsProblem::ClientCertificateRefused {
                alert: format!("{a:?}"),
            },
            E::InvalidMessage(_) => TlsProblem::NotTls,
            other => TlsProblem::Other {
                detail: other.to_string(),
            },
        }
    }

    /// The problem in words, with what to do; `ca_bundle` is the unit's trust, if its own.
    pub fn describe(&self, ca_bundle: Option<&str>) -> String {
        match self {
            TlsProblem::Expired { not_after } => format!(
                "its certificate expired{}: the agency must renew it",
                not_after
                    .as_deref()
                    .map(|d| format!(" on {d}"))
                    .unwrap_or_default()
            ),
            TlsProblem::NotYetValid { not_before } => format!(
                "its certificate is not valid yet{}: check this host's clock, or wait until the agency's new certificate takes effect",
                not_before
                    .as_deref()
                    .map(|d| format!(" (valid from {d})"))
                    .unwrap_or_default()
            ),
            TlsProblem::UnknownIssuer => match ca_bundle {
                Some(p) => format!(
                    "its certificate is signed by an unknown issuer, not by a CA of the unit's ca_bundle {p}: add the agency's CA to that file"
                ),
                None => "its certificate is signed by an unknown issuer, not by a CA of the system's roots: set the agency's CA as the unit's ca_bundle".into(),
            },
            TlsProblem::NameMismatch {
                expected,
                presented,
            } => format!(
                "its certificate is not valid for the name {}{}: the endpoint's host must be a name the certificate carries",
                expected.as_deref().unwrap_or("of the endpoint"),
                if presented.is_empty() {
                    String::new()
                } else {
                    format!(" (it names {})", presented.join(", "))
                }
            ),
            TlsProblem::Revoked => {
                "its certificate has been revoked: the agency must replace it".into()
            }
            TlsProblem::CaAsServerCertificate => {
                "its certificate is a CA certificate (CA:TRUE, as a self-signed `openssl req -x509` makes by default), not a server certificate: the agency must serve a server certificate (CA:FALSE) issued by a CA the unit trusts (set that CA as the unit's ca_bundle)".into()
            }
            TlsProblem::ClientCertificateRefused { alert } => format!(
                "the agency refused the handshake (TLS alert {alert}): check the unit's client certificate (client_cert, client_key), its dates and that the agency trusts its CA"
            ),
            TlsProblem::NotTls => {
                "the endpoint does not answer in TLS: is it an http:// service?".into()
            }
            TlsProblem::Other { detail } => format!("certificate or handshake refused: {detail}"),
        }
    }
}

/// What failed below HTTP.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The TLS handshake failed (nothing was sent).
    Tls(TlsProblem),
    /// The endpoint's host name did not resolve (nothing was sent).
    Dns {
        /// The host name.
        host: String,
    },
    /// Nothing accepted the connection at the address (nothing was sent).
    Refused,
    /// TCP + TLS were not established within `connect_timeout_ms` (nothing was sent).
    ConnectTimeout {
        /// The configured limit, ms.
        ms: u64,
    },
    /// Another failure while connecting (network unreachable, …; nothing was sent).
    Connect,
    /// The request was sent and the answer did not come in time.
    ReadTimeout,
    /// The connection was reset or closed before the answer was complete.
    Closed,
    /// The request could not be built (a header value the HTTP library refuses, a bad URL):
    /// nothing was sent.
    Build,
    /// Anything else (after the request may have been sent).
    Other,
}

/// One failed HTTP exchange with an agency, read from reqwest's error.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportError {
    /// What failed.
    pub failure: Failure,
    /// The whole reason, naming the agency, its address, the limit and the fix.
    pub reason: String,
}

/// Every error of `e`'s source chain, `e` first; an `io::Error`'s inner error is included
/// (its own `source()` skips it, and that is where rustls puts its error).
fn chain<'a>(e: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(x) = cur {
        out.push(x);
        if out.len() > 32 {
            break;
        }
        cur = match x
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => x.source(),
        };
    }
    out
}

impl TransportError {
    /// Classify `e`, a failed call to `peer`.
    pub fn new(e: &reqwest::Error, peer: &Peer) -> TransportError {
        use std::io::ErrorKind as K;
        let all = chain(e);
        let detail = all
            .last()
            .map(|x| x.to_string())
            .unwrap_or_else(|| e.to_string());
        let url = e.url();
        let host = url
            .and_then(|u| u.host_str())
            .unwrap_or("(unknown host)")
            .to_string();
        let addr = match url.and_then(|u| u.port_or_known_default()) {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let io_kind = |kinds: &[K]| {
            all.iter().any(|x| {
                x.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| kinds.contains(&io.kind()))
            })
        };
        let closed_by_hyper = all.iter().any(|x| {
            x.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        });
        let who = peer.who();
        let hint = peer.hint();
        let tls = all
            .iter()
            .find_map(|x| x.downcast_ref::<rustls::Error>())
            .map(TlsProblem::from_rustls);
        let (failure, reason) = if let Some(p) = tls {
            let text = p.describe(peer.ca_bundle.as_deref());
            (
                Failure::Tls(p),
                format!(
                    "TLS handshake with {who} at {addr} failed: {text}; nothing was sent{hint}"
                ),
            )
        } else if e.is_builder() {
            (
                Failure::Build,
                format!(
                    "the request to {who} at {addr} could not be built ({detail}); nothing was sent"
                ),
            )
        } else if e.is_dns() {
            (
                Failure::Dns { host: host.clone() },
                format!(
                    "the host name {host} of {who} did not resolve ({detail}): check the unit's endpoint and this host's DNS; nothing was sent{hint}"
                ),
            )
        } else if e.is_timeout() && e.is_connect() {
            (
                Failure::ConnectTimeout {
                    ms: peer.connect_timeout_ms,
                },
                format!(
                    "connect timeout: no connection to {who} at {addr} within connect_timeout_ms = {} ms (TCP and TLS); nothing was sent{hint}",
                    peer.connect_timeout_ms
                ),
            )
        } else if e.is_timeout() {
            let limit = if peer.read_timeout_ms < peer.timeout_ms {
                format!(
                    "no data for read_timeout_ms = {} ms (timeout_ms = {} ms)",
                    peer.read_timeout_ms, peer.timeout_ms
                )
            } else {
                format!(
                    "no complete answer within timeout_ms = {} ms (read_timeout_ms = {} ms)",
                    peer.timeout_ms, peer.read_timeout_ms
                )
            };
            (
                Failure::ReadTimeout,
                format!(
                    "read timeout: no answer from {who} at {addr}: {limit}; the agency may have taken it"
                ),
            )
        } else if io_kind(&[K::ConnectionRefused]) {
            (
                Failure::Refused,
                format!(
                    "connection refused by {addr}: nothing listens there (the system of {who} is down, or the endpoint's port is wrong); nothing was sent{hint}"
                ),
            )
        } else if e.is_connect() {
            (
                Failure::Connect,
                format!("could not connect to {who} at {addr}: {detail}; nothing was sent{hint}"),
            )
        } else if closed_by_hyper
            || io_kind(&[
                K::ConnectionReset,
                K::ConnectionAborted,
                K::BrokenPipe,
                K::UnexpectedEof,
            ])
        {
            (
                Failure::Closed,
                format!(
                    "the connection to {who} at {addr} was reset or closed before the answer was complete ({detail}); the agency may have taken the request"
                ),
            )
        } else {
            (
                Failure::Other,
                format!("exchange with {who} at {addr} failed: {e} ({detail})"),
            )
        };
        TransportError { failure, reason }
    }

    /// Whether the failure came before anything was sent: DNS, a refused or timed-out
    /// connection, a failed TLS handshake, a request that could not be built.
    pub fn before_sending(&self) -> bool {
        matches!(
            self.failure,
            Failure::Tls(_)
                | Failure::Dns { .. }
                | Failure::Refused
                | Failure::ConnectTimeout { .. }
                | Failure::Connect
                | Failure::Build
        )
    }

    /// As the outcome of operation `op`. A failure before sending is [`Outcome::Transient`]:
    /// nothing reached the agency, so sending again is safe. This includes a refused TLS
    /// certificate (expired, unknown issuer, wrong name): it is a configuration problem on one
    /// side, but one that is fixed outside the bus (the agency renews its certificate, the
    /// operator installs its CA), after which the same message must go through without anyone
    /// replaying it; the delayed retry rounds (`[retry] delays_ms`, up to `max_age_ms`, two
    /// days by default) give that time, and the precise reason, in every round's history and
    /// in the final dead letter, tells the operator what to fix. A failure after sending
    /// (read timeout, connection closed mid-answer) is [`Outcome::Unknown`] with no answer.
    pub fn outcome(&self, op: &str) -> Outcome {
        if self.before_sending() {
            Outcome::Transient {
                reason: format!("{op} could not connect: {}", self.reason),
                retry_after: None,
            }
        } else {
            Outcome::Unknown {
                reason: format!("{op} failed after the request was sent: {}", self.reason),
                answer: None,
            }
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}
