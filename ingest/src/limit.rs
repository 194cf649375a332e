//! Per-client rate limiting: a token bucket (GCRA, `governor`) per client address.
//!
//! Memory stays bounded under millions of distinct addresses: a housekeeping pass every second
//! forgets clients whose bucket is full again, and if more than `max_clients` remain (an attack
//! from very many addresses), the table is replaced by an empty one. That forgets the buckets,
//! letting some clients burst once more, which is the lesser harm than running out of memory.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::client_ip::limit_key;

/// A keyed limiter with a bound on the clients it remembers.
pub struct ClientRateLimiter {
    quota: Quota,
    limiter: RwLock<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    max_clients: usize,
    clock: DefaultClock,
}

impl ClientRateLimiter {
    /// `per_second` beacons a second per client, with bursts of `burst`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32, max_clients: usize) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            quota,
            limiter: RwLock::new(Arc::new(DefaultKeyedRateLimiter::keyed(quota))),
            max_clients,
            clock: DefaultClock::default(),
        }
    }

    fn current(&self) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
        self.limiter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes one token for `client`, or says how long until one is available.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.current()
            .check_key(&limit_key(client))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// True when no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets idle clients; resets the table when still over the bound. Returns true on a reset.
    pub fn housekeep(&self) -> bool {
        let limiter = self.current();
        limiter.retain_recent();
        if limiter.len() <= self.max_clients {
            limiter.shrink_to_fit();
            return false;
        }
        *self.limiter.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(DefaultKeyedRateLimiter::keyed(self.quota));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn allows_the_burst_then_refuses_with_a_wait() {
        let limiter = ClientRateLimiter::new(nz(1), nz(3), 100);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(client).is_ok());
        }
        let wait = limiter.check(client).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            limiter.check("192.0.2.2".parse().unwrap()).is_ok(),
            "other clients are not affected"
        );
    }

    #[test]
    fn stays_bounded_under_many_distinct_clients() {
        let limiter = ClientRateLimiter::new(nz(1), nz(1), 1_000);
        for i in 0..5_000u32 {
            let _ = limiter.check(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(limiter.len(), 5_000);
        assert!(limiter.housekeep(), "over the bound: reset");
        assert!(limiter.is_empty());
        let _ = limiter.check("192.0.2.1".parse().unwrap());
        assert!(!limiter.housekeep(), "under the bound: kept");
    }
}
