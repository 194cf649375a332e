//! Bounded site and route labels, whatever clients send.
//!
//! **Networks.** Admission counts a client by its network: the rate limiter's network key where it
//! has one (an IPv6 /48; the trusted proxy that could not name its client), else its client key
//! (an IPv4 address), hashed with a key drawn at start: no address is stored. One host holds a
//! whole IPv6 /64 and one routed /48 is 65,536 of them, so counting /64s would let one attacker
//! be many clients. IPv4 stays by address, not /24: addresses are scarce (cloud hosts get theirs
//! from unrelated /24s, so a /24 would cost an attacker little), while a /24 is often one office,
//! campus or ISP pool whose real visitors must count as several.
//!
//! **Sites.** Sites listed under `[ingest.sites]` are always taken. With `ingest.only_known_sites`
//! off, other sites are taken while fewer than `ingest.max_sites` of them are held by this
//! process, and while the network that sends a new one holds fewer than
//! `ingest.max_new_sites_per_client` of them; a beacon for a new one beyond either is refused
//! (403 `site_limit`), never kept under its own name, whatever its route (`other` included).
//! Refused rather than folded into one `other` site: a p75 of many sites mixed is no site's p75
//! (and an alert on it is noise), a refused beacon costs nothing downstream (no Kafka message, no
//! row), and the client and the operator learn at once (the answer, the counted reason) that a
//! real new site needs listing. An unlisted site without a beacon for `ingest.site_idle_secs` is
//! forgotten (its place and its opener's quota free again): a flood of made-up sites holds the
//! places for that long, not for the life of the process. The table lives in the process: N
//! replicas, or restarts, may each take up to `max_sites` different sites, so the one hard bound
//! is `ingest.only_known_sites = true` with the sites listed, the production setting.
//!
//! **Routes.** A site keeps at most `ingest.max_routes_per_site` route slugs; later new routes
//! become `other`. So that one client cannot fill a real site's places with made-up routes (and
//! push the real routes that come later into `other`), a new route takes a place only once it has
//! been sent from `ingest.route_min_clients` distinct networks; until then its beacons are
//! published under `other` (kept, not dropped). An admitted route without a beacon for
//! `ingest.route_idle_secs` is forgotten and its place freed; it comes back through admission. The
//! routes waiting for networks are a candidate table per site of at most
//! `ingest.max_route_candidates_per_site` entries, of which one network may have opened at most
//! `ingest.max_route_candidates_per_client`. On a full table a new candidate pushes out the oldest
//! candidate of the network holding the most: a real route's candidate (its network holds one or
//! few) survives churn by any number of networks fewer than the table's size.
//!
//! **Sweeps.** Both expiries are lazy and bounded: a site's routes are swept at most once a minute,
//! when a beacon for a route it has not admitted comes (at most `max_routes_per_site` entries); the
//! site table at most once a minute, when a new site would be refused (at most the sites held).
//!
//! **Memory.** Per site: each admitted route about 120 bytes, each candidate about 200 (with
//! `route_min_clients` up to 3; 8 bytes more for each further client): at the defaults (500
//! routes, 128 candidates) about 86 KB a site at most, times the listed sites plus `max_sites`
//! (1,000 by default: about 86 MB if every site filled up; a few MB for a list of sites).
//! [`RouteLimits::max_bytes`] computes it; the ingest logs it at start; [`Held::bytes`] measures
//! what the tables hold.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Instant;

use rum_schemas::route::OTHER_ROUTE;

use crate::client_ip::Client;

/// About the memory of one admitted route: the slug (at most 32 bytes and the allocator's
/// overhead), its `String`, its last-seen time and its place in a hash map at worst load.
const BYTES_PER_ROUTE: usize = 120;
/// About the memory of one candidate route (3 clients): the hashed route and clients in the table
/// at worst load, the clients' vector, its place in the age order and in the per-client counts.
const BYTES_PER_CANDIDATE: usize = 200;
/// About the memory of one site's entry besides its routes: name, locks, counters.
const BYTES_PER_SITE: usize = 400;
/// The least time between two sweeps of one table.
const SWEEP_EVERY_SECS: u64 = 60;

/// The bounds, from `[ingest]`.
#[derive(Debug, Clone)]
pub struct RouteLimits {
    /// `ingest.max_routes_per_site`.
    pub max_routes: usize,
    /// `ingest.max_sites`: sites taken besides the listed ones.
    pub max_sites: usize,
    /// `ingest.max_new_sites_per_client`: unlisted sites one network may hold opened.
    pub sites_per_client: usize,
    /// `ingest.route_min_clients`.
    pub min_clients: usize,
    /// `ingest.max_route_candidates_per_site`.
    pub candidates_per_site: usize,
    /// `ingest.max_route_candidates_per_client`.
    pub candidates_per_client: usize,
    /// `ingest.route_idle_secs`.
    pub route_idle_secs: u64,
    /// `ingest.site_idle_secs`.
    pub site_idle_secs: u64,
}

impl RouteLimits {
    /// About the most memory the tables can take, with `listed` sites besides `max_sites`.
    pub fn max_bytes(&self, listed: usize) -> usize {
        let per_candidate = BYTES_PER_CANDIDATE + 8 * self.min_clients.saturating_sub(3);
        let per_site = BYTES_PER_SITE
            + self.max_routes * BYTES_PER_ROUTE
            + self.candidates_per_site * per_candidate;
        (listed + self.max_sites) * per_site
    }
}

/// A network, hashed: the rate limiter's network key of a client (IPv6 /48, or the proxy that
/// could not name it), else its client key (an IPv4 address), under a per-process secret key.
/// Clients a trusted proxy could not name count as that proxy (their own claim is not believed:
/// a client could name itself anew on every beacon).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

/// The route a beacon is published under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labelled {
    /// The route keeps its slug.
    Own(String),
    /// The route is published as `other`, for this reason.
    Folded(Fold),
}

/// Why a route was published as `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// The site has `ingest.max_routes_per_site` routes.
    RouteLimit,
    /// The route has not yet been sent from `ingest.route_min_clients` distinct networks.
    Unconfirmed,
}

impl Fold {
    /// The `reason` labels of `rum_ingest_routes_folded_total`, in variant order.
    pub const LABELS: [&'static str; 2] = ["route_limit", "unconfirmed"];

    /// This fold's `reason` label.
    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// A beacon for a new site beyond `ingest.max_sites`, or beyond its network's
/// `ingest.max_new_sites_per_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteLimit;

/// What a [`RouteCap`] holds now, for the gauges of `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Sites with a route table (listed ones once they sent a beacon).
    pub sites: usize,
    /// Admitted routes over every site.
    pub routes: usize,
    /// Candidate routes over every site.
    pub candidates: usize,
    /// The bytes the tables hold, from their own capacities (the allocator's overhead aside).
    pub bytes: usize,
}

/// The site table and each site's routes.
pub struct RouteCap {
    limits: RouteLimits,
    listed: HashSet<String>,
    /// Keys networks and candidate routes; its random key never leaves the process.
    hasher: RandomState,
    /// The clock's origin: times are whole seconds since.
    started: Instant,
    sites: RwLock<Sites>,
}

#[derive(Default)]
struct Sites {
    by_name: HashMap<String, Site>,
    /// Sites in `by_name` that are not listed: at most `max_sites`.
    unlisted: usize,
    /// Unlisted sites held, by the network that opened them (only networks with one or more).
    opened_by: HashMap<ClientKey, usize>,
    /// No sweep of the table before this time.
    next_sweep: u64,
}

struct Site {
    /// The network that opened it; `None` for a listed site (never forgotten).
    opener: Option<ClientKey>,
    /// The time of its last beacon.
    seen: AtomicU64,
    routes: RwLock<SiteRoutes>,
}

/// One site's admitted routes and candidates.
#[derive(Default)]
struct SiteRoutes {
    /// Admitted routes and the time of their last beacon.
    admitted: HashMap<String, AtomicU64>,
    /// Candidates by hashed route.
    candidates: HashMap<u64, Candidate>,
    /// The candidates' hashed routes, oldest first.
    age: VecDeque<u64>,
    /// Open candidates by the network that opened them (only networks with one or more).
    opened_by: HashMap<ClientKey, usize>,
    /// No sweep of the admitted routes before this time.
    next_sweep: u64,
}

struct Candidate {
    opener: ClientKey,
    /// The other distinct networks that sent the route (fewer than `min_clients - 1`).
    others: Vec<ClientKey>,
}

/// Sets a last-seen time, writing only when it changed (most beacons of a second share it).
fn touch(seen: &AtomicU64, now: u64) {
    if seen.load(Ordering::Relaxed) < now {
        seen.store(now, Ordering::Relaxed);
    }
}

impl RouteCap {
    /// A cap with these bounds; `listed` sites are always taken.
    pub fn new(limits: RouteLimits, listed: impl IntoIterator<Item = String>) -> Self {
        let listed: HashSet<String> = listed.into_iter().collect();
        tracing::info!(
            max_mb = limits.max_bytes(listed.len()) / 1_000_000,
            "site and route tables: at most {} sites besides the {} listed",
            limits.max_sites,
            listed.len()
        );
        Self {
            limits,
            listed,
            hasher: RandomState::new(),
            started: Instant::now(),
            sites: RwLock::new(Sites::default()),
        }
    }

    /// The admission key of a client: its network (see [`ClientKey`]).
    pub fn client_key(&self, client: &Client) -> ClientKey {
        ClientKey(self.hasher.hash_one(client.network.or(client.key)))
    }

    /// The route to publish a beacon of `site` from `client` under, or [`SiteLimit`] when the
    /// site is new and may not be taken.
    pub fn apply(
        &self,
        site: &str,
        route: String,
        client: ClientKey,
    ) -> Result<Labelled, SiteLimit> {
        self.apply_at(site, route, client, self.started.elapsed().as_secs())
    }

    /// [`Self::apply`] at `now`, seconds since the cap's start.
    fn apply_at(
        &self,
        site: &str,
        route: String,
        client: ClientKey,
        now: u64,
    ) -> Result<Labelled, SiteLimit> {
        let listed = self.listed.contains(site);
        {
            let sites = self.sites.read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = sites.by_name.get(site) {
                return Ok(self.route_in(entry, route, client, now));
            }
            // A refusal under the read lock: a flood of refused sites does not serialize beacons.
            if !listed && !self.may_open(&sites, client) && now < sites.next_sweep {
                return Err(SiteLimit);
            }
        }
        let mut sites = self.sites.write().unwrap_or_else(|e| e.into_inner());
        if !sites.by_name.contains_key(site) {
            if !listed {
                if !self.may_open(&sites, client) && now >= sites.next_sweep {
                    self.sweep_sites(&mut sites, now);
                }
                if !self.may_open(&sites, client) {
                    return Err(SiteLimit);
                }
                sites.unlisted += 1;
                *sites.opened_by.entry(client).or_insert(0) += 1;
            }
            let entry = Site {
                opener: (!listed).then_some(client),
                seen: AtomicU64::new(now),
                routes: RwLock::new(SiteRoutes::default()),
            };
            sites.by_name.insert(site.to_owned(), entry);
        }
        let entry = sites.by_name.get(site).expect("inserted above");
        Ok(self.route_in(entry, route, client, now))
    }

    /// True when `client` may open one more unlisted site.
    fn may_open(&self, sites: &Sites, client: ClientKey) -> bool {
        sites.unlisted < self.limits.max_sites
            && sites.opened_by.get(&client).copied().unwrap_or(0) < self.limits.sites_per_client
    }

    /// Forgets the unlisted sites without a beacon for `site_idle_secs`.
    fn sweep_sites(&self, sites: &mut Sites, now: u64) {
        sites.next_sweep = now + SWEEP_EVERY_SECS;
        let idle = self.limits.site_idle_secs;
        let Sites {
            by_name,
            unlisted,
            opened_by,
            ..
        } = sites;
        by_name.retain(|_, entry| {
            let Some(opener) = entry.opener else {
                return true;
            };
            if entry.seen.load(Ordering::Relaxed) + idle > now {
                return true;
            }
            *unlisted -= 1;
            if let Some(count) = opened_by.get_mut(&opener) {
                *count -= 1;
                if *count == 0 {
                    opened_by.remove(&opener);
                }
            }
            false
        });
    }

    /// The route of a beacon for a site taken.
    fn route_in(&self, entry: &Site, route: String, client: ClientKey, now: u64) -> Labelled {
        touch(&entry.seen, now);
        if route == OTHER_ROUTE {
            return Labelled::Own(route);
        }
        {
            let routes = entry.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(seen) = routes.admitted.get(&route) {
                touch(seen, now);
                return Labelled::Own(route);
            }
        }
        let mut routes = entry.routes.write().unwrap_or_else(|e| e.into_inner());
        self.route_of(&mut routes, route, client, now)
    }

    /// The decision for a route that was not admitted at the first look.
    fn route_of(
        &self,
        routes: &mut SiteRoutes,
        route: String,
        client: ClientKey,
        now: u64,
    ) -> Labelled {
        let limits = &self.limits;
        if now >= routes.next_sweep {
            routes.next_sweep = now + SWEEP_EVERY_SECS;
            let idle = limits.route_idle_secs;
            routes
                .admitted
                .retain(|_, seen| seen.load(Ordering::Relaxed) + idle > now);
        }
        if let Some(seen) = routes.admitted.get(&route) {
            touch(seen, now);
            return Labelled::Own(route);
        }
        if routes.admitted.len() >= limits.max_routes {
            return Labelled::Folded(Fold::RouteLimit);
        }
        if limits.min_clients <= 1 {
            routes.admitted.insert(route.clone(), AtomicU64::new(now));
            return Labelled::Own(route);
        }
        let hashed = self.hasher.hash_one(&route);
        if let Some(candidate) = routes.candidates.get_mut(&hashed) {
            if candidate.opener == client || candidate.others.contains(&client) {
                return Labelled::Folded(Fold::Unconfirmed);
            }
            if candidate.others.len() + 2 < limits.min_clients {
                candidate.others.push(client);
                return Labelled::Folded(Fold::Unconfirmed);
            }
            routes.forget(hashed);
            routes.admitted.insert(route.clone(), AtomicU64::new(now));
            if routes.admitted.len() >= limits.max_routes {
                // No route will be admitted until one expires: the candidates have nothing to
                // wait for.
                *routes = SiteRoutes {
                    admitted: std::mem::take(&mut routes.admitted),
                    next_sweep: routes.next_sweep,
                    ..SiteRoutes::default()
                };
            }
            return Labelled::Own(route);
        }
        if routes.opened_by.get(&client).copied().unwrap_or(0) >= limits.candidates_per_client {
            return Labelled::Folded(Fold::Unconfirmed);
        }
        if routes.candidates.len() >= limits.candidates_per_site {
            routes.forget_one_of_the_most_opened();
        }
        routes.candidates.insert(
            hashed,
            Candidate {
                opener: client,
                others: Vec::with_capacity(limits.min_clients - 2),
            },
        );
        routes.age.push_back(hashed);
        *routes.opened_by.entry(client).or_insert(0) += 1;
        Labelled::Folded(Fold::Unconfirmed)
    }

    /// What the cap holds now.
    pub fn held(&self) -> Held {
        let sites = self.sites.read().unwrap_or_else(|e| e.into_inner());
        let mut held = Held {
            sites: sites.by_name.len(),
            bytes: table_bytes::<String, Site>(sites.by_name.capacity())
                + table_bytes::<ClientKey, usize>(sites.opened_by.capacity()),
            ..Held::default()
        };
        for (name, entry) in &sites.by_name {
            let routes = entry.routes.read().unwrap_or_else(|e| e.into_inner());
            held.routes += routes.admitted.len();
            held.candidates += routes.candidates.len();
            held.bytes += name.capacity() + routes.bytes();
        }
        held
    }
}

/// The bytes of a hash table of `capacity` (`hashbrown`: one control byte a bucket, a power of
/// two of buckets of which 7/8 are used, all of them below 8).
fn table_bytes<K, V>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (size_of::<(K, V)>() + 1)
}

impl SiteRoutes {
    /// Removes a candidate, from the table, the age order and its opener's count.
    fn forget(&mut self, hashed: u64) {
        let Some(candidate) = self.candidates.remove(&hashed) else {
            return;
        };
        if self.age.front() == Some(&hashed) {
            self.age.pop_front();
        } else {
            self.age.retain(|h| *h != hashed);
        }
        if let Some(count) = self.opened_by.get_mut(&candidate.opener) {
            *count -= 1;
            if *count == 0 {
                self.opened_by.remove(&candidate.opener);
            }
        }
    }

    /// Removes the oldest candidate of the network that opened the most.
    fn forget_one_of_the_most_opened(&mut self) {
        let Some(most) = self.opened_by.values().max().copied() else {
            return;
        };
        let victim = self.age.iter().copied().find(|hashed| {
            self.candidates
                .get(hashed)
                .is_some_and(|c| self.opened_by.get(&c.opener) == Some(&most))
        });
        if let Some(hashed) = victim {
            self.forget(hashed);
        }
    }

    /// The bytes these tables hold, from their capacities.
    fn bytes(&self) -> usize {
        table_bytes::<String, AtomicU64>(self.admitted.capacity())
            + self.admitted.keys().map(String::capacity).sum::<usize>()
            + table_bytes::<u64, Candidate>(self.candidates.capacity())
            + self
                .candidates
                .values()
                .map(|c| c.others.capacity() * size_of::<ClientKey>())
                .sum::<usize>()
            + self.age.capacity() * size_of::<u64>()
            + table_bytes::<ClientKey, usize>(self.opened_by.capacity())
            + size_of::<Site>()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn limits(max_routes: usize, max_sites: usize, min_clients: usize) -> RouteLimits {
        RouteLimits {
            max_routes,
            max_sites,
            sites_per_client: max_sites,
            min_clients,
            candidates_per_site: 8,
            candidates_per_client: 2,
            route_idle_secs: 86_400,
            site_idle_secs: 86_400,
        }
    }

    fn client(cap: &RouteCap, n: u8) -> ClientKey {
        cap.client_key(&Client::at(IpAddr::from([198, 51, 100, n])))
    }

    fn route(cap: &RouteCap, site: &str, route: &str, client: ClientKey) -> String {
        route_at(cap, site, route, client, 0)
    }

    fn route_at(cap: &RouteCap, site: &str, route: &str, client: ClientKey, now: u64) -> String {
        match cap
            .apply_at(site, route.into(), client, now)
            .expect("site taken")
        {
            Labelled::Own(route) => route,
            Labelled::Folded(_) => OTHER_ROUTE.into(),
        }
    }

    #[test]
    fn keeps_the_first_routes_and_folds_the_rest_into_other() {
        let cap = RouteCap::new(limits(2, 10, 1), []);
        let c = client(&cap, 1);
        assert_eq!(route(&cap, "s", "a", c), "a");
        assert_eq!(route(&cap, "s", "b", c), "b");
        assert_eq!(
            cap.apply("s", "c".into(), c),
            Ok(Labelled::Folded(Fold::RouteLimit))
        );
        assert_eq!(route(&cap, "s", "a", c), "a", "known routes stay");
        assert_eq!(route(&cap, "t", "c", c), "c", "caps are per site");
    }

    #[test]
    fn refuses_new_unlisted_sites_beyond_the_cap_but_never_listed_ones() {
        let cap = RouteCap::new(limits(5, 1, 1), ["listed".to_string()]);
        let c = client(&cap, 1);
        assert_eq!(route(&cap, "s", "a", c), "a");
        assert_eq!(cap.apply("t", "a".into(), c), Err(SiteLimit));
        assert_eq!(route(&cap, "listed", "a", c), "a");
        assert_eq!(route(&cap, "s", "b", c), "b", "a taken site stays");
        assert_eq!(cap.held().sites, 2);
    }

    #[test]
    fn a_beacon_for_other_still_needs_its_site_taken() {
        let cap = RouteCap::new(limits(5, 2, 3), []);
        let c = client(&cap, 1);
        assert_eq!(route(&cap, "a", OTHER_ROUTE, c), OTHER_ROUTE);
        assert_eq!(route(&cap, "b", OTHER_ROUTE, c), OTHER_ROUTE);
        for i in 0..200 {
            assert_eq!(
                cap.apply(&format!("random-{i}"), OTHER_ROUTE.into(), c),
                Err(SiteLimit),
                "site {i}"
            );
        }
        assert_eq!(cap.held().sites, 2);
    }

    #[test]
    fn one_network_opens_at_most_its_quota_of_sites_and_idle_sites_are_forgotten() {
        let cap = RouteCap::new(
            RouteLimits {
                sites_per_client: 3,
                site_idle_secs: 3_600,
                ..limits(5, 5, 1)
            },
            ["listed".to_string()],
        );
        let attacker = client(&cap, 66);
        for i in 0..3 {
            route(&cap, &format!("flood-{i}"), "a", attacker);
        }
        for i in 3..100 {
            assert_eq!(
                cap.apply(&format!("flood-{i}"), "a".into(), attacker),
                Err(SiteLimit)
            );
        }
        // Other networks take the two places left.
        route(&cap, "real-1", "a", client(&cap, 1));
        route(&cap, "real-2", "a", client(&cap, 2));
        assert_eq!(
            cap.apply_at("real-3", "a".into(), client(&cap, 3), 10),
            Err(SiteLimit)
        );
        // An hour later the sites without beacons are forgotten; the ones still sent stay.
        route_at(&cap, "real-1", "a", client(&cap, 1), 3_000);
        route_at(&cap, "listed", "a", client(&cap, 1), 0);
        assert_eq!(route_at(&cap, "real-3", "a", client(&cap, 3), 3_700), "a");
        assert_eq!(cap.held().sites, 1 + 1 + 1, "listed, real-1, real-3");
        assert_eq!(
            route_at(&cap, "flood-9", "a", attacker, 3_700),
            "a",
            "its quota is free again"
        );
        assert_eq!(route_at(&cap, "listed", "b", attacker, 100_000), "b");
    }

    #[test]
    fn admits_a_new_route_once_enough_distinct_clients_sent_it() {
        let cap = RouteCap::new(limits(10, 10, 3), []);
        let (a, b, c) = (client(&cap, 1), client(&cap, 2), client(&cap, 3));
        assert_eq!(
            cap.apply("s", "cart".into(), a),
            Ok(Labelled::Folded(Fold::Unconfirmed))
        );
        assert_eq!(
            route(&cap, "s", "cart", a),
            "other",
            "the same client again"
        );
        assert_eq!(route(&cap, "s", "cart", b), "other");
        assert_eq!(route(&cap, "s", "cart", c), "cart", "the third client");
        assert_eq!(route(&cap, "s", "cart", a), "cart", "then for everyone");
        let held = cap.held();
        assert_eq!((held.sites, held.routes, held.candidates), (1, 1, 0));
    }

    #[test]
    fn counts_ipv6_clients_by_their_slash_48() {
        let cap = RouteCap::new(limits(10, 10, 2), []);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let same_48: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let other: IpAddr = "2001:db8:2:3::1".parse().unwrap();
        let key = |ip: IpAddr| cap.client_key(&Client::at(ip));
        assert_eq!(key(one), key(same_64));
        assert_eq!(key(one), key(same_48));
        assert_eq!(route(&cap, "s", "cart", key(one)), "other");
        assert_eq!(route(&cap, "s", "cart", key(same_64)), "other");
        assert_eq!(route(&cap, "s", "cart", key(same_48)), "other");
        assert_eq!(route(&cap, "s", "cart", key(other)), "cart");
        // IPv4 by address.
        let v4 = |s: &str| key(s.parse().unwrap());
        assert_ne!(v4("192.0.2.1"), v4("192.0.2.2"));
    }

    #[test]
    fn admitted_routes_idle_for_route_idle_secs_free_their_places() {
        let cap = RouteCap::new(
            RouteLimits {
                route_idle_secs: 3_600,
                ..limits(2, 10, 2)
            },
            [],
        );
        let (a, b) = (client(&cap, 1), client(&cap, 2));
        for made_up in ["x", "y"] {
            route(&cap, "s", made_up, a);
            assert_eq!(route(&cap, "s", made_up, b), made_up);
        }
        assert_eq!(
            cap.apply_at("s", "cart".into(), a, 1_000),
            Ok(Labelled::Folded(Fold::RouteLimit))
        );
        // `y` still sent, `x` not: an hour later `x`'s place is free for `cart`.
        assert_eq!(route_at(&cap, "s", "y", a, 3_000), "y");
        assert_eq!(route_at(&cap, "s", "cart", a, 3_700), "other");
        assert_eq!(route_at(&cap, "s", "cart", b, 3_700), "cart");
        assert_eq!(route_at(&cap, "s", "y", b, 3_701), "y");
        // `x` comes back only through admission (and the site is full again).
        assert_eq!(
            cap.apply_at("s", "x".into(), a, 3_702),
            Ok(Labelled::Folded(Fold::RouteLimit))
        );
    }

    #[test]
    fn one_client_cannot_fill_the_routes_or_the_candidates() {
        let cap = RouteCap::new(limits(3, 10, 2), []);
        let attacker = client(&cap, 66);
        for i in 0..10_000 {
            assert_eq!(route(&cap, "shop", &format!("r{i}"), attacker), "other");
        }
        let held = cap.held();
        assert_eq!(
            (held.routes, held.candidates),
            (0, 2),
            "two candidates of its own"
        );
        // Real routes from real clients still come in.
        for real in ["home", "cart", "checkout"] {
            assert_eq!(route(&cap, "shop", real, client(&cap, 1)), "other");
            assert_eq!(route(&cap, "shop", real, client(&cap, 2)), real);
        }
    }

    #[test]
    fn clients_a_proxy_could_not_name_count_as_that_proxy() {
        let cap = RouteCap::new(limits(10, 10, 2), []);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let unnamed = |claim: [u8; 4]| Client {
            unidentified: true,
            network: Some(proxy),
            ..Client::at(IpAddr::from(claim))
        };
        let (a, b) = (unnamed([198, 51, 100, 1]), unnamed([198, 51, 100, 2]));
        assert_eq!(cap.client_key(&a), cap.client_key(&b));
        assert_eq!(route(&cap, "s", "cart", cap.client_key(&a)), "other");
        assert_eq!(route(&cap, "s", "cart", cap.client_key(&b)), "other");
    }

    #[test]
    fn a_full_candidate_table_forgets_a_candidate_of_the_network_holding_the_most() {
        let cap = RouteCap::new(limits(100, 10, 2), []);
        // The real route's candidate is the oldest; two networks hold the other seven.
        route(&cap, "s", "real", client(&cap, 1));
        for i in 0..7 {
            route(&cap, "s", &format!("a{i}"), client(&cap, 10 + i % 2));
        }
        for i in 0..100 {
            route(&cap, "s", &format!("b{i}"), client(&cap, 20 + i % 4));
        }
        assert_eq!(cap.held().candidates, 8);
        assert_eq!(
            route(&cap, "s", "real", client(&cap, 2)),
            "real",
            "the real candidate was kept"
        );
    }

    #[test]
    fn drops_the_candidates_once_the_site_is_full() {
        let cap = RouteCap::new(limits(1, 10, 2), []);
        route(&cap, "s", "a", client(&cap, 1));
        route(&cap, "s", "b", client(&cap, 1));
        assert_eq!(route(&cap, "s", "a", client(&cap, 2)), "a");
        assert_eq!(cap.held().candidates, 0);
        assert_eq!(
            cap.apply("s", "b".into(), client(&cap, 3)),
            Ok(Labelled::Folded(Fold::RouteLimit))
        );
    }

    /// Fills every site of the defaults to the most it can hold (all routes but one admitted,
    /// every candidate open, 32-byte slugs) and measures the tables against the stated bound.
    #[test]
    fn the_documented_memory_bound_holds_for_the_defaults() {
        let config = crate::IngestConfig::default();
        let limits = RouteLimits {
            max_routes: config.max_routes_per_site,
            max_sites: config.max_sites,
            sites_per_client: config.max_new_sites_per_client,
            min_clients: config.route_min_clients,
            candidates_per_site: config.max_route_candidates_per_site,
            candidates_per_client: config.max_route_candidates_per_client,
            route_idle_secs: config.route_idle_secs,
            site_idle_secs: config.site_idle_secs,
        };
        let cap = RouteCap::new(limits.clone(), []);
        let net = |n: usize| {
            cap.client_key(&Client::at(IpAddr::from([
                10,
                (n >> 16) as u8,
                (n >> 8) as u8,
                n as u8,
            ])))
        };
        let slug = |i: usize| format!("{i:0>32}");
        let mut filled = None;
        for s in 0..limits.max_sites {
            let site = format!("site-{s:0>27}");
            let opener = net(1_000_000 + s / limits.sites_per_client);
            cap.apply(&site, OTHER_ROUTE.into(), opener).unwrap();
            if s % 100 != 0 {
                // One site in 100 filled: the tables are per site, the rest is scaled.
                continue;
            }
            for r in 0..limits.max_routes - 1 {
                for c in 0..limits.min_clients {
                    cap.apply(&site, slug(r), net(c)).unwrap();
                }
            }
            for c in 0..limits.candidates_per_site {
                cap.apply(&site, slug(100_000 + c), net(10_000 + c))
                    .unwrap();
            }
            filled = Some(site);
        }
        let held = cap.held();
        assert_eq!(held.sites, limits.max_sites);
        let full_sites = limits.max_sites.div_ceil(100);
        assert_eq!(
            held.routes,
            full_sites * (limits.max_routes - 1),
            "{filled:?}"
        );
        assert_eq!(held.candidates, full_sites * limits.candidates_per_site);
        let empty = {
            let cap = RouteCap::new(limits.clone(), []);
            for s in 0..limits.max_sites {
                let opener = net(1_000_000 + s / limits.sites_per_client);
                cap.apply(&format!("site-{s:0>27}"), OTHER_ROUTE.into(), opener)
                    .unwrap();
            }
            cap.held().bytes
        };
        let per_full_site = (held.bytes - empty) / full_sites;
        let measured = empty + per_full_site * limits.max_sites;
        let bound = limits.max_bytes(0);
        println!("per full site {per_full_site} B, empty tables {empty} B, bound {bound} B");
        assert!(
            measured <= bound,
            "measured {measured} bytes over the bound {bound}"
        );
        assert!(
            measured * 2 > bound,
            "the bound {bound} is far above what is held ({measured})"
        );
        assert!(
            (80_000_000..90_000_000).contains(&bound),
            "documented: about 86 MB, is {bound}"
        );
    }

    #[test]
    fn other_is_never_a_candidate_nor_takes_a_place() {
        let cap = RouteCap::new(limits(1, 10, 3), []);
        assert_eq!(route(&cap, "s", OTHER_ROUTE, client(&cap, 1)), OTHER_ROUTE);
        assert_eq!(cap.held().routes + cap.held().candidates, 0);
    }
}
