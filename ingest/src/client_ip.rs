//! Which client a request came from, for rate limiting only: never logged, stored or published.
//!
//! `X-Forwarded-For` is believed only when the TCP peer is a configured trusted proxy. It is read
//! from the right, where the proxy nearest to us wrote: each hop is the address that connected to
//! the proxy that wrote it. A trusted hop is another proxy of ours: go on to its left. The first
//! hop that is not trusted is the client; what lies to its left is whatever the client chose to
//! send. A hop is an address (`192.0.2.1`, `2001:db8::1`), with a port (`192.0.2.1:51234`,
//! `[2001:db8::1]:51234`, as Azure's gateways and some ingress controllers write), or in brackets.
//! Empty list elements are skipped (RFC 9110, 5.6.1). Bytes that are not UTF-8 (a client may send
//! any) make their hop one that does not parse; the hops to their right are read as usual.
//!
//! A hop that is `unknown` (RFC 7239's word, and Squid's) or does not parse was written by a
//! trusted proxy that could not name its own client: the client's identity ends there. Keying the
//! client by that proxy's address would put every client behind it into one bucket (one abuser
//! would starve them all); believing the hops further left would let a client name itself at
//! will. So such a client is [`Client::unidentified`]: keyed by the address to the left of the
//! unknown hop (its own claim, unverified) and, at the network level, by the proxy that could not
//! name it. A client that rotates its claim gets a fresh per-client bucket each time but shares
//! the proxy's network budget (`ingest.rate_limit_network_per_second`): the harm is bounded, and
//! honest clients behind that proxy keep their own buckets.
//!
//! IPv6 clients are keyed by their /64 (one host can hold a whole /64) and, at the network level,
//! by their /48 (one routed /48 is 65,536 /64s). IPv4 clients have no network level: carrier-grade
//! NAT already puts many people behind one address.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Trusted proxies and the rules above.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

/// The rate-limit keys of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The per-client key: an IPv4 address, an IPv6 /64; `None` when nothing names the client.
    pub key: Option<IpAddr>,
    /// The network-level key: the IPv6 /48 of the client, or the proxy that could not name it.
    pub network: Option<IpAddr>,
    /// A trusted proxy wrote `unknown` or an unparsable hop where the client's address would be.
    pub unidentified: bool,
}

impl Client {
    /// A client known by its address.
    pub fn at(ip: IpAddr) -> Client {
        let ip = canonical(ip);
        Client {
            key: Some(limit_key(ip)),
            network: network_key(ip),
            unidentified: false,
        }
    }
}

impl ClientIpResolver {
    /// A resolver trusting `X-Forwarded-For` from these networks.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// [`ClientIpResolver::resolve`] on header values as they came: bytes that are not UTF-8 are
    /// read as U+FFFD, so a hop holding them is one that does not parse (`unknown`), and the hops
    /// our proxies appended to its right are still read. (Dropping such a value would key the
    /// client as the proxy itself.)
    pub fn resolve_header_values<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> Client {
        if !self.is_trusted(canonical(peer)) {
            return Client::at(peer);
        }
        let values: Vec<Cow<'a, str>> = forwarded_for.map(String::from_utf8_lossy).collect();
        self.resolve(peer, values.iter().map(|v| v.as_ref()))
    }

    /// The client of a request from `peer` with these `X-Forwarded-For` header values, in the
    /// order they came.
    pub fn resolve<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> Client {
        let mut nearest = canonical(peer);
        if !self.is_trusted(nearest) {
            return Client::at(nearest);
        }
        let mut hops = forwarded_for
            .rev()
            .flat_map(|value| value.rsplit(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty());
        while let Some(hop) = hops.next() {
            let Some(ip) = parse_hop(hop) else {
                // `nearest` wrote this hop and could not name its client.
                let claim = hops.next().and_then(parse_hop).map(canonical);
                return Client {
                    key: claim.map(limit_key),
                    network: Some(nearest),
                    unidentified: true,
                };
            };
            nearest = canonical(ip);
            if !self.is_trusted(nearest) {
                break;
            }
        }
        Client::at(nearest)
    }
}

/// One hop of `X-Forwarded-For`: an address, optionally with a port, IPv6 optionally in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = hop.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    hop.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The per-client key of an address: IPv4 as is (and IPv4-mapped IPv6 as IPv4), IPv6 by its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(prefix(v6, 4)),
        v4 => v4,
    }
}

/// The network key of an address: the /48 of IPv6, none for IPv4.
fn network_key(ip: IpAddr) -> Option<IpAddr> {
    match canonical(ip) {
        IpAddr::V6(v6) => Some(IpAddr::V6(prefix(v6, 3))),
        IpAddr::V4(_) => None,
    }
}

/// The first `segments` 16-bit segments of `v6`, the rest zero.
fn prefix(v6: Ipv6Addr, segments: usize) -> Ipv6Addr {
    let mut s = v6.segments();
    s[segments..].fill(0);
    Ipv6Addr::from(s)
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

    fn key(r: &ClientIpResolver, peer: &str, xff: &[&str]) -> Option<IpAddr> {
        r.resolve(ip(peer), xff.iter().copied()).key
    }

    #[test]
    fn ignores_forwarded_for_from_an_untrusted_peer() {
        let r = resolver();
        assert_eq!(
            r.resolve(ip("203.0.113.9"), ["1.2.3.4"].into_iter()),
            Client::at(ip("203.0.113.9"))
        );
    }

    #[test]
    fn takes_the_right_most_untrusted_hop_behind_trusted_proxies() {
        let xff = ["6.6.6.6, 198.51.100.7", "10.1.2.3"];
        assert_eq!(key(&resolver(), "10.0.0.1", &xff), Some(ip("198.51.100.7")));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(key(&resolver(), "127.0.0.1", &[]), Some(ip("127.0.0.1")));
    }

    #[test]
    fn reads_hops_with_ports_and_brackets() {
        let r = resolver();
        for (hop, client) in [
            ("198.51.100.7:51234", "198.51.100.7"),
            ("[2001:db8:1:2::7]:443", "2001:db8:1:2::"),
            ("[2001:db8:1:2::7]", "2001:db8:1:2::"),
            ("2001:db8:1:2::7", "2001:db8:1:2::"),
            ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
            (" 10.9.9.9:80 , 198.51.100.8:1", "198.51.100.8"),
        ] {
            assert_eq!(key(&r, "10.0.0.1", &[hop]), Some(ip(client)), "{hop}");
        }
        // A trusted hop with a port is still a proxy of ours: go on to its left.
        assert_eq!(
            key(&r, "10.0.0.1", &["198.51.100.9, 10.2.2.2:8080"]),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn clients_behind_an_unknown_hop_keep_their_own_keys_under_the_proxy_network_budget() {
        let r = resolver();
        let a = r.resolve(ip("10.0.0.1"), ["198.51.100.1, unknown"].into_iter());
        let b = r.resolve(ip("10.0.0.1"), ["198.51.100.2, unknown"].into_iter());
        assert_ne!(a.key, b.key, "not merged into one bucket");
        assert_eq!(a.key, Some(ip("198.51.100.1")));
        assert!(a.unidentified && b.unidentified);
        assert_eq!(a.network, Some(ip("10.0.0.1")), "the proxy that wrote it");
        // Written by a trusted hop further in: that proxy is the network.
        let c = r.resolve(
            ip("10.0.0.1"),
            ["198.51.100.3, garbage, 10.7.7.7"].into_iter(),
        );
        assert_eq!(
            (c.key, c.network),
            (Some(ip("198.51.100.3")), Some(ip("10.7.7.7")))
        );
        // Nothing to the left: no per-client key, only the proxy's budget.
        let d = r.resolve(ip("10.0.0.1"), ["unknown"].into_iter());
        assert_eq!((d.key, d.network), (None, Some(ip("10.0.0.1"))));
        let e = r.resolve(ip("10.0.0.1"), ["unknown, unknown"].into_iter());
        assert_eq!((e.key, e.network), (None, Some(ip("10.0.0.1"))));
    }

    #[test]
    fn skips_empty_elements_and_treats_other_text_as_unknown() {
        let r = resolver();
        assert_eq!(
            key(&r, "10.0.0.1", &["198.51.100.7,, ", ""]),
            Some(ip("198.51.100.7"))
        );
        for garbage in [
            "_hidden",
            "fe80::1%eth0",
            "1.2.3.4:99999",
            "[1.2.3.4]",
            "x".repeat(5000).as_str(),
        ] {
            let c = r.resolve(ip("10.0.0.1"), [garbage].into_iter());
            assert!(c.unidentified, "{garbage}");
            assert_eq!(c.key, None);
        }
    }

    #[test]
    fn a_hop_that_is_not_text_is_unknown_and_the_hops_right_of_it_are_read() {
        let r = resolver();
        let peer = ip("10.0.0.1");
        let c = r.resolve_header_values(peer, [&b"\xff, 198.51.100.7"[..]].into_iter());
        assert_eq!(c, Client::at(ip("198.51.100.7")));
        let c = r.resolve_header_values(peer, [&b"198.51.100.7, \xff\xfe"[..]].into_iter());
        assert!(c.unidentified);
        assert_eq!((c.key, c.network), (Some(ip("198.51.100.7")), Some(peer)));
        let c = r.resolve_header_values(peer, [&b"\xff"[..], b"10.2.2.2"].into_iter());
        assert!(c.unidentified);
        assert_eq!((c.key, c.network), (None, Some(ip("10.2.2.2"))));
        let untrusted = ip("203.0.113.9");
        assert_eq!(
            r.resolve_header_values(untrusted, [&b"\xff"[..]].into_iter()),
            Client::at(untrusted)
        );
    }

    #[test]
    fn keys_ipv6_by_slash_64_and_slash_48_and_unmaps_ipv4() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let a = Client::at(ip("2001:db8:1:2::1"));
        let b = Client::at(ip("2001:db8:1:ffff::1"));
        assert_ne!(a.key, b.key);
        assert_eq!(a.network, b.network);
        assert_eq!(a.network, Some(ip("2001:db8:1::")));
        assert_eq!(Client::at(ip("192.0.2.1")).network, None);
        assert_eq!(Client::at(ip("::ffff:192.0.2.1")).network, None);
    }
}
