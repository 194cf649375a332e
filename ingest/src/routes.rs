//! Bounded site and route labels, whatever clients send.
//!
//! **Sites.** Sites listed under `[ingest.sites]` are always taken. With `ingest.only_known_sites`
//! off, other sites are taken while fewer than `ingest.max_sites` of them have been seen by this
//! process; a beacon for a new one beyond that is refused (403 `site_limit`), never kept under its
//! own name. Refused rather than folded into one `other` site: a p75 of many sites mixed is no
//! site's p75 (and an alert on it is noise), a refused beacon costs nothing downstream (no Kafka
//! message, no row), and the client and the operator learn at once (the answer, the counted
//! reason) that a real new site needs listing. The table lives in the process: N replicas, or
//! restarts, may each take up to `max_sites` different sites, so the one hard bound is
//! `ingest.only_known_sites = true` with the sites listed, the production setting.
//!
//! **Routes.** A site keeps at most `ingest.max_routes_per_site` route slugs; later new routes
//! become `other`. So that one client cannot fill a real site's places with made-up routes (and
//! push the real routes that come later into `other`), a new route takes a place only once it has
//! been sent by `ingest.route_min_clients` distinct clients; until then its beacons are published
//! under `other` (kept, not dropped). A client is the rate limiter's key (an IPv4 address, an IPv6
//! /64) hashed with a key drawn at start: no address is stored. The routes waiting for clients
//! are a candidate table per site of at most `ingest.max_route_candidates_per_site` entries (the
//! oldest is forgotten for a new one), of which one client may have opened at most
//! `ingest.max_route_candidates_per_client`: one client alone can neither admit a route nor
//! churn out the candidates of real routes.
//!
//! **Memory.** Per site: each admitted route about 120 bytes, each candidate about 200 (with
//! `route_min_clients` up to 3; 8 bytes more for each further client): at the defaults (500
//! routes, 128 candidates) about 85 KB a site at most, times the listed sites plus `max_sites`
//! (10,000 by default: 850 MB if every site filled up; a few MB for a list of sites).
//! [`RouteLimits::max_bytes`] computes it; the ingest logs it at start.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::RwLock;

use rum_schemas::route::OTHER_ROUTE;

use crate::client_ip::Client;

/// About the memory of one admitted route: the slug (at most 32 bytes and the allocator's
/// overhead), its `String` and its place in a hash set at worst load.
const BYTES_PER_ROUTE: usize = 120;
/// About the memory of one candidate route (3 clients): the hashed route and clients in the table
/// at worst load, the clients' vector, its place in the age order and in the per-client counts.
const BYTES_PER_CANDIDATE: usize = 200;

/// The bounds, from `[ingest]`.
#[derive(Debug, Clone)]
pub struct RouteLimits {
    /// `ingest.max_routes_per_site`.
    pub max_routes: usize,
    /// `ingest.max_sites`: sites taken besides the listed ones.
    pub max_sites: usize,
    /// `ingest.route_min_clients`.
    pub min_clients: usize,
    /// `ingest.max_route_candidates_per_site`.
    pub candidates_per_site: usize,
    /// `ingest.max_route_candidates_per_client`.
    pub candidates_per_client: usize,
}

impl RouteLimits {
    /// About the most memory the tables can take, with `listed` sites besides `max_sites`.
    pub fn max_bytes(&self, listed: usize) -> usize {
        let per_candidate = BYTES_PER_CANDIDATE + 8 * self.min_clients.saturating_sub(3);
        let per_site = self.max_routes * BYTES_PER_ROUTE + self.candidates_per_site * per_candidate;
        (listed + self.max_sites) * per_site
    }
}

/// A client, hashed: the rate limiter's key of its address under a per-process secret key.
/// Clients a trusted proxy could not name count as one, their proxy (their own claim is not
/// believed: a client could name itself anew on every beacon).
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
    /// The route has not yet been sent by `ingest.route_min_clients` distinct clients.
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

/// A beacon for a new site beyond `ingest.max_sites`.
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
}

/// The site table and each site's routes.
pub struct RouteCap {
    limits: RouteLimits,
    listed: HashSet<String>,
    /// Keys client addresses and candidate routes; its random key never leaves the process.
    hasher: RandomState,
    sites: RwLock<Sites>,
}

#[derive(Default)]
struct Sites {
    by_name: HashMap<String, RwLock<SiteRoutes>>,
    /// Sites in `by_name` that are not listed: at most `max_sites`.
    unlisted: usize,
}

/// One site's admitted routes and candidates.
#[derive(Default)]
struct SiteRoutes {
    admitted: HashSet<String>,
    /// Candidates by hashed route.
    candidates: HashMap<u64, Candidate>,
    /// The candidates' hashed routes, oldest first.
    age: VecDeque<u64>,
    /// Open candidates by the client that opened them (only clients with one or more).
    opened_by: HashMap<ClientKey, usize>,
}

struct Candidate {
    opener: ClientKey,
    /// The other distinct clients that sent the route (fewer than `min_clients - 1`).
    others: Vec<ClientKey>,
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
            sites: RwLock::new(Sites::default()),
        }
    }

    /// The key of a client (the rate limiter's key, hashed; see [`ClientKey`]).
    pub fn client_key(&self, client: &Client) -> ClientKey {
        let identity = if client.unidentified {
            client.network
        } else {
            client.key
        };
        ClientKey(self.hasher.hash_one(identity))
    }

    /// The route to publish a beacon of `site` from `client` under, or [`SiteLimit`] when the
    /// site is new and `max_sites` unlisted sites are taken.
    pub fn apply(
        &self,
        site: &str,
        route: String,
        client: ClientKey,
    ) -> Result<Labelled, SiteLimit> {
        if route == OTHER_ROUTE {
            return Ok(Labelled::Own(route));
        }
        {
            let sites = self.sites.read().unwrap_or_else(|e| e.into_inner());
            if let Some(routes) = sites.by_name.get(site) {
                if routes
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .admitted
                    .contains(&route)
                {
                    return Ok(Labelled::Own(route));
                }
                let mut routes = routes.write().unwrap_or_else(|e| e.into_inner());
                return Ok(self.route_of(&mut routes, route, client));
            }
        }
        let listed = self.listed.contains(site);
        let mut sites = self.sites.write().unwrap_or_else(|e| e.into_inner());
        if !sites.by_name.contains_key(site) {
            if !listed && sites.unlisted >= self.limits.max_sites {
                return Err(SiteLimit);
            }
            sites
                .by_name
                .insert(site.to_owned(), RwLock::new(SiteRoutes::default()));
            sites.unlisted += usize::from(!listed);
        }
        let routes = sites
            .by_name
            .get_mut(site)
            .expect("inserted above")
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        Ok(self.route_of(routes, route, client))
    }

    /// The decision for a route that was not admitted at the first look.
    fn route_of(&self, routes: &mut SiteRoutes, route: String, client: ClientKey) -> Labelled {
        let limits = &self.limits;
        if routes.admitted.contains(&route) {
            return Labelled::Own(route);
        }
        if routes.admitted.len() >= limits.max_routes {
            return Labelled::Folded(Fold::RouteLimit);
        }
        if limits.min_clients <= 1 {
            routes.admitted.insert(route.clone());
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
            routes.admitted.insert(route.clone());
            if routes.admitted.len() >= limits.max_routes {
                // No route will be admitted any more: the candidates have nothing to wait for.
                *routes = SiteRoutes {
                    admitted: std::mem::take(&mut routes.admitted),
                    ..SiteRoutes::default()
                };
            }
            return Labelled::Own(route);
        }
        if routes.opened_by.get(&client).copied().unwrap_or(0) >= limits.candidates_per_client {
            return Labelled::Folded(Fold::Unconfirmed);
        }
        if routes.candidates.len() >= limits.candidates_per_site {
            if let Some(oldest) = routes.age.front().copied() {
                routes.forget(oldest);
            }
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
            ..Held::default()
        };
        for routes in sites.by_name.values() {
            let routes = routes.read().unwrap_or_else(|e| e.into_inner());
            held.routes += routes.admitted.len();
            held.candidates += routes.candidates.len();
        }
        held
    }
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
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn limits(max_routes: usize, max_sites: usize, min_clients: usize) -> RouteLimits {
        RouteLimits {
            max_routes,
            max_sites,
            min_clients,
            candidates_per_site: 8,
            candidates_per_client: 2,
        }
    }

    fn client(cap: &RouteCap, n: u8) -> ClientKey {
        cap.client_key(&Client::at(IpAddr::from([198, 51, 100, n])))
    }

    fn route(cap: &RouteCap, site: &str, route: &str, client: ClientKey) -> String {
        match cap.apply(site, route.into(), client).expect("site taken") {
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
        assert_eq!(
            cap.held(),
            Held {
                sites: 1,
                routes: 1,
                candidates: 0
            }
        );
    }

    #[test]
    fn counts_ipv6_clients_by_their_slash_64() {
        let cap = RouteCap::new(limits(10, 10, 2), []);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let key = |ip: IpAddr| cap.client_key(&Client::at(ip));
        assert_eq!(key(one), key(same));
        assert_eq!(route(&cap, "s", "cart", key(one)), "other");
        assert_eq!(route(&cap, "s", "cart", key(same)), "other");
        assert_eq!(route(&cap, "s", "cart", key(other)), "cart");
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
    fn forgets_the_oldest_candidate_when_the_table_is_full() {
        let cap = RouteCap::new(limits(100, 10, 2), []);
        for i in 0..8 {
            route(&cap, "s", &format!("r{i}"), client(&cap, i));
        }
        route(&cap, "s", "new", client(&cap, 100));
        assert_eq!(cap.held().candidates, 8);
        assert_eq!(
            route(&cap, "s", "r0", client(&cap, 200)),
            "other",
            "r0 was forgotten"
        );
        assert_eq!(
            route(&cap, "s", "r2", client(&cap, 200)),
            "r2",
            "r2 was kept"
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

    #[test]
    fn the_documented_memory_bound_holds_for_the_defaults() {
        let limits = RouteLimits {
            max_routes: 500,
            max_sites: 10_000,
            min_clients: 3,
            candidates_per_site: 128,
            candidates_per_client: 8,
        };
        assert_eq!(limits.max_bytes(0) / 10_000, 85_600, "about 85 KB a site");
    }

    #[test]
    fn other_is_never_a_candidate_nor_takes_a_place() {
        let cap = RouteCap::new(limits(1, 10, 3), []);
        assert_eq!(route(&cap, "s", OTHER_ROUTE, client(&cap, 1)), OTHER_ROUTE);
        assert_eq!(cap.held().routes + cap.held().candidates, 0);
    }
}
