//! Whether a host named in a URL is this machine: the one test behind every "plain text only on
//! loopback" rule (the broker link, the store's server, agencies' endpoints).

/// Whether `host` (as a URL names it: a name, an IPv4 address, or an IPv6 address with or
/// without brackets) is this machine: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_this_machine_only() {
        for h in ["localhost", "127.0.0.1", "127.8.0.2", "::1", "[::1]"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.2",
            "db.tinh.gov.vn",
            "localhost.example",
            "[2001:db8::1]",
            "",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
