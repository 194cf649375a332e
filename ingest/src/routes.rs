//! The per-site cap on distinct routes: the first N routes a site sends keep their slug, later
//! new ones become `other`, so a site that puts ids where the normalizer cannot see them does not
//! explode the label space. The set is per process; N ingest replicas agree on the popular routes
//! (they see them first) and differ at most on the tail.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use rum_schemas::route::OTHER_ROUTE;

/// Distinct routes seen per site, bounded.
pub struct RouteCap {
    max_routes: usize,
    max_sites: usize,
    seen: RwLock<HashMap<String, HashSet<String>>>,
}

impl RouteCap {
    /// At most `max_routes` routes for each of at most `max_sites` sites.
    pub fn new(max_routes: usize, max_sites: usize) -> Self {
        Self {
            max_routes,
            max_sites,
            seen: RwLock::new(HashMap::new()),
        }
    }

    /// The route to use: `route` itself while the site is under its cap, else `other`.
    /// Sites beyond `max_sites` get `other` for every route.
    pub fn apply(&self, site: &str, route: String) -> String {
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if let Some(routes) = seen.get(site) {
                if routes.contains(&route) {
                    return route;
                }
                if routes.len() >= self.max_routes {
                    return OTHER_ROUTE.to_string();
                }
            } else if seen.len() >= self.max_sites {
                return OTHER_ROUTE.to_string();
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if !seen.contains_key(site) && seen.len() >= self.max_sites {
            return OTHER_ROUTE.to_string();
        }
        let routes = seen.entry(site.to_string()).or_default();
        if routes.contains(&route) || routes.len() < self.max_routes {
            routes.insert(route.clone());
            route
        } else {
            OTHER_ROUTE.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_routes_and_folds_the_rest_into_other() {
        let cap = RouteCap::new(2, 10);
        assert_eq!(cap.apply("s", "a".into()), "a");
        assert_eq!(cap.apply("s", "b".into()), "b");
        assert_eq!(cap.apply("s", "c".into()), "other");
        assert_eq!(cap.apply("s", "a".into()), "a", "known routes stay");
        assert_eq!(cap.apply("t", "c".into()), "c", "caps are per site");
    }

    #[test]
    fn bounds_the_number_of_sites() {
        let cap = RouteCap::new(5, 1);
        assert_eq!(cap.apply("s", "a".into()), "a");
        assert_eq!(cap.apply("t", "a".into()), "other");
    }
}
