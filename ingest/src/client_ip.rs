//! Which address a request came from, for rate limiting only: never logged, stored or published.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a configured trusted proxy; then the
//! client is the right-most address in the header that is not itself a trusted proxy (the left
//! part of the header is whatever the client chose to send). IPv6 clients are keyed by their /64,
//! since one host can hold a whole /64.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// Trusted proxies and the rule above.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

impl ClientIpResolver {
    /// A resolver trusting `X-Forwarded-For` from these networks.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` with these `X-Forwarded-For` header values.
    pub fn resolve<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // A garbled hop: stop at the last address we could trust.
                break;
            };
            client = canonical(ip);
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }
}

/// The rate-limit key of an address: IPv4 as is (and IPv4-mapped IPv6 as IPv4), IPv6 by its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn resolver() -> ClientIpResolver {
        ClientIpResolver::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    #[test]
    fn ignores_forwarded_for_from_an_untrusted_peer() {
        assert_eq!(
            resolver().resolve(ip("203.0.113.9"), ["1.2.3.4"].into_iter()),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn takes_the_right_most_untrusted_hop_behind_trusted_proxies() {
        let r = resolver();
        let xff = ["6.6.6.6, 198.51.100.7", "10.1.2.3"];
        assert_eq!(
            r.resolve(ip("10.0.0.1"), xff.into_iter()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(
            resolver().resolve(ip("127.0.0.1"), std::iter::empty()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn stops_at_a_garbled_hop() {
        let r = resolver();
        assert_eq!(
            r.resolve(ip("10.0.0.1"), ["8.8.8.8, garbage"].into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn keys_ipv6_by_slash_64_and_unmaps_ipv4() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
