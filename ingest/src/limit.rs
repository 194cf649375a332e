//! Rate limiting at two levels, each a token bucket (GCRA, `governor`'s keyed limiter) per key:
//! per client (an IPv4 address, an IPv6 /64) and per network (an IPv6 /48, or the trusted proxy
//! that could not name its client; see `client_ip`). A request must pass both. The client level is
//! checked first: a client over its own budget is refused without spending its network's, so one
//! abuser cannot drain its neighbours' share by being refused.
//!
//! Memory stays bounded under millions of distinct keys: a housekeeping pass every second forgets
//! keys whose bucket is full again, and if more than `max_clients` remain in a table (an attack
//! from very many addresses), that table is replaced by an empty one. That forgets the buckets,
//! letting some clients burst once more, which is the lesser harm than running out of memory.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::client_ip::Client;

/// Which level refused a request, and how long until it would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    /// The client's own budget.
    Client(Duration),
    /// The budget of its network (IPv6 /48, or the proxy that could not name it).
    Network(Duration),
}

/// A budget: beacons a second and the burst.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Beacons a second.
    pub per_second: NonZeroU32,
    /// Beacons at once.
    pub burst: NonZeroU32,
}

/// One level: a keyed limiter with a bound on the keys it remembers.
struct Level {
    quota: Quota,
    table: RwLock<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
}

impl Level {
    fn new(budget: Budget) -> Self {
        let quota = Quota::per_second(budget.per_second).allow_burst(budget.burst);
        Self {
            quota,
            table: RwLock::new(Arc::new(DefaultKeyedRateLimiter::keyed(quota))),
        }
    }

    fn current(&self) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn check(&self, key: &IpAddr, clock: &DefaultClock) -> Result<(), Duration> {
        self.current()
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(clock.now()))
    }

    fn housekeep(&self, max_keys: usize) -> bool {
        let table = self.current();
        table.retain_recent();
        if table.len() <= max_keys {
            table.shrink_to_fit();
            return false;
        }
        *self.table.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(DefaultKeyedRateLimiter::keyed(self.quota));
        true
    }
}

/// The two levels, each with a bound on the keys it remembers.
pub struct ClientRateLimiter {
    client: Level,
    network: Option<Level>,
    max_clients: usize,
    clock: DefaultClock,
}

impl ClientRateLimiter {
    /// `client` per client, `network` (when on) per network, at most `max_clients` keys a level.
    pub fn new(client: Budget, network: Option<Budget>, max_clients: usize) -> Self {
        Self {
            client: Level::new(client),
            network: network.map(Level::new),
            max_clients,
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token at each level that applies to `client`, or says which refused.
    pub fn check(&self, client: &Client) -> Result<(), OverBudget> {
        // Without a network level, a client behind a proxy that could not name it is keyed by
        // that proxy: merged, but limited. Its own claim would be a fresh bucket at each rotation
        // with nothing above it.
        let key = match (&self.network, client.unidentified) {
            (None, true) => client.network,
            _ => client.key,
        };
        if let Some(key) = key {
            self.client
                .check(&key, &self.clock)
                .map_err(OverBudget::Client)?;
        }
        if let (Some(level), Some(network)) = (&self.network, client.network) {
            level
                .check(&network, &self.clock)
                .map_err(OverBudget::Network)?;
        }
        Ok(())
    }

    /// Keys remembered now, both levels together.
    pub fn len(&self) -> usize {
        self.client.current().len() + self.network.as_ref().map_or(0, |l| l.current().len())
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets idle keys; resets a level's table when still over the bound. True on a reset.
    pub fn housekeep(&self) -> bool {
        let client = self.client.housekeep(self.max_clients);
        let network = self
            .network
            .as_ref()
            .is_some_and(|l| l.housekeep(self.max_clients));
        client || network
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_second: u32, burst: u32) -> Budget {
        Budget {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn at(s: &str) -> Client {
        Client::at(s.parse().unwrap())
    }

    #[test]
    fn allows_the_burst_then_refuses_with_a_wait() {
        let limiter = ClientRateLimiter::new(budget(1, 3), None, 100);
        let client = at("192.0.2.1");
        for _ in 0..3 {
            assert!(limiter.check(&client).is_ok());
        }
        let Err(OverBudget::Client(wait)) = limiter.check(&client) else {
            panic!("refused by the client level");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            limiter.check(&at("192.0.2.2")).is_ok(),
            "other clients are not affected"
        );
    }

    #[test]
    fn a_sweep_over_the_slash_64s_of_one_slash_48_meets_the_network_budget() {
        let limiter = ClientRateLimiter::new(budget(1, 2), Some(budget(1, 32)), 100_000);
        let mut passed = 0;
        for i in 0..1_000u16 {
            let client = at(&format!("2001:db8:7:{i:x}::1"));
            match limiter.check(&client) {
                Ok(()) => passed += 1,
                Err(OverBudget::Network(_)) => {}
                Err(OverBudget::Client(_)) => panic!("each /64 is fresh"),
            }
        }
        assert_eq!(passed, 32, "the /48's burst, not 1,000 /64 bursts");
        assert!(
            limiter.check(&at("2001:db8:8::1")).is_ok(),
            "another /48 is not affected"
        );
        assert!(
            limiter.check(&at("192.0.2.1")).is_ok(),
            "IPv4 has no network level"
        );
    }

    #[test]
    fn a_client_over_its_own_budget_does_not_spend_its_network_share() {
        let limiter = ClientRateLimiter::new(budget(1, 2), Some(budget(1, 4)), 100);
        let abuser = at("2001:db8:7:1::1");
        for _ in 0..100 {
            let _ = limiter.check(&abuser);
        }
        for i in 2..4 {
            let neighbour = at(&format!("2001:db8:7:{i}::1"));
            assert!(
                limiter.check(&neighbour).is_ok(),
                "the /48 still has room for the neighbours"
            );
        }
    }

    #[test]
    fn an_unnamed_client_is_limited_by_its_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let unnamed = Client {
            key: None,
            network: Some(proxy),
            unidentified: true,
        };
        let with_network = ClientRateLimiter::new(budget(1, 1), Some(budget(1, 3)), 100);
        let passed = (0..10)
            .filter(|_| with_network.check(&unnamed).is_ok())
            .count();
        assert_eq!(passed, 3, "the network's burst");
        let without = ClientRateLimiter::new(budget(1, 2), None, 100);
        let passed = (0..10).filter(|_| without.check(&unnamed).is_ok()).count();
        assert_eq!(passed, 2, "keyed by the proxy at the client level");
    }

    #[test]
    fn without_a_network_level_clients_behind_an_unknown_hop_are_keyed_by_the_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let limiter = ClientRateLimiter::new(budget(1, 2), None, 100);
        // A client rotating its claim: each claim would be a fresh bucket with nothing above it.
        let passed = (0..10u8)
            .filter(|i| {
                let claim = Client {
                    key: Some(IpAddr::from([198, 51, 100, *i])),
                    network: Some(proxy),
                    unidentified: true,
                };
                limiter.check(&claim).is_ok()
            })
            .count();
        assert_eq!(passed, 2, "the proxy's bucket at the client level");
        assert!(
            limiter.check(&at("198.51.100.200")).is_ok(),
            "a client the proxy names keeps its own bucket"
        );
    }

    #[test]
    fn stays_bounded_under_many_distinct_clients() {
        let limiter = ClientRateLimiter::new(budget(1, 1), Some(budget(16, 16)), 1_000);
        for i in 0..5_000u32 {
            let _ = limiter.check(&Client::at(IpAddr::from(i.to_be_bytes())));
        }
        assert_eq!(limiter.len(), 5_000);
        assert!(limiter.housekeep(), "over the bound: reset");
        assert!(limiter.is_empty());
        for i in 0..5_000u128 {
            let v6 = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | i << 80);
            let _ = limiter.check(&Client::at(IpAddr::V6(v6)));
        }
        assert!(limiter.len() > 1_000);
        assert!(limiter.housekeep(), "the network level is bounded too");
        let _ = limiter.check(&at("192.0.2.1"));
        assert!(!limiter.housekeep(), "under the bound: kept");
    }
}
