//! Bounded attribution values, whatever clients send: each (site, route) keeps at most
//! `ingest.max_attribution_values_per_route` distinct values of each attribution string field,
//! and publishes later new values as `other` (counted in
//! `rum_ingest_attribution_values_folded_total{field, reason="value_limit"}`).
//!
//! The fields are the strings of [`Attribution`] a client chooses freely ([`FIELDS`]): LCP's
//! `target` and `url`, INP's `interaction_target`, `script_url` and `script_invoker`, CLS's
//! `largest_shift_target`. (`interaction_type` is already one of three values.) A page has a few
//! dozen of each at most; a client making them up, or a page that puts ids into its selectors,
//! would otherwise make one series or one row group per value downstream.
//!
//! **Which values keep their names.** The first ones seen in a window: each route's values are
//! forgotten every `ingest.route_idle_secs` (a day by default), so that the selectors of a new
//! release take the places of the old ones. Per process: N ingest replicas may each keep their own
//! N values (at most replicas x N a route and window downstream).
//!
//! **Which routes have tables.** The route cap ([`crate::routes`]) already bounds the routes: the
//! listed sites plus `ingest.max_sites`, each with `ingest.max_routes_per_site` routes and
//! `other`: 501,000 pairs at the defaults, too many for a table each. So at most
//! `ingest.max_attribution_routes` (site, route) pairs hold a table; one without a beacon for
//! `ingest.route_idle_secs` is forgotten (swept at most once a minute, when a new pair finds the
//! tables full); while they are full, a new pair's values are published as `other`
//! (`reason="route_limit"`).
//!
//! **Memory.** Values are kept as 32-bit hashes under a key drawn at start (never the strings;
//! two values of one field sharing a hash, about one chance in 40 million per new value at the
//! default, are counted as one). A field's set of N hashes takes a hash table of
//! `next_power_of_two(8N/7)` buckets of 5 bytes: 640 bytes at N = 100. A pair holds six, its
//! place in the table of pairs and its lock and clocks: about 4.7 KB at the default N (62 KB at
//! N = 1,000), and at the default 10,000 pairs about 47 MB at worst (every pair's every field
//! full), whatever clients send. [`AttributionLimits::max_bytes`] computes it; the ingest logs it at start.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use rum_schemas::{Attribution, MetricSample};

/// The attribution fields capped, by their name in the message (the `field` label).
pub const FIELDS: [&str; 6] = [
    "target",
    "url",
    "interaction_target",
    "script_url",
    "script_invoker",
    "largest_shift_target",
];

/// What a value beyond the cap is published as.
pub const OTHER_VALUE: &str = "other";

/// The least time between two sweeps of the table of pairs.
const SWEEP_EVERY_SECS: u64 = 60;

/// The field of [`FIELDS`] at `index`.
fn field(attribution: &mut Attribution, index: usize) -> &mut String {
    match index {
        0 => &mut attribution.target,
        1 => &mut attribution.url,
        2 => &mut attribution.interaction_target,
        3 => &mut attribution.script_url,
        4 => &mut attribution.script_invoker,
        _ => &mut attribution.largest_shift_target,
    }
}

/// Why a value was published as `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Its (site, route) has `max_attribution_values_per_route` other values of the field.
    ValueLimit,
    /// `max_attribution_routes` pairs have tables, and its pair has none.
    RouteLimit,
}

impl Fold {
    /// The `reason` labels, in variant order.
    pub const LABELS: [&'static str; 2] = ["value_limit", "route_limit"];

    /// This fold's `reason` label.
    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// The bounds, from `[ingest]`.
#[derive(Debug, Clone)]
pub struct AttributionLimits {
    /// `ingest.max_attribution_values_per_route`: distinct values of a field a (site, route) keeps.
    pub max_values: usize,
    /// `ingest.max_attribution_routes`: (site, route) pairs with a table.
    pub max_routes: usize,
    /// `ingest.route_idle_secs`: a pair without a beacon this long is forgotten, and a pair's
    /// values are forgotten this often.
    pub idle_secs: u64,
}

impl AttributionLimits {
    /// About the most memory the tables can take.
    pub fn max_bytes(&self) -> usize {
        let per_route = FIELDS.len() * set_bytes(self.max_values) + size_of::<(u64, RouteValues)>();
        table_bytes::<(u64, RouteValues)>(self.max_routes) + self.max_routes * per_route
    }
}

/// The bytes of a hash table of `capacity` entries of `T` (`hashbrown`: a power of two of
/// buckets of which 7/8 are used, one control byte each).
fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    (capacity * 8 / 7).next_power_of_two() * (size_of::<T>() + 1)
}

fn set_bytes(capacity: usize) -> usize {
    table_bytes::<u32>(capacity)
}

/// One (site, route)'s values.
struct RouteValues {
    /// The time of its last beacon with attribution.
    seen: AtomicU64,
    fields: Mutex<FieldValues>,
}

struct FieldValues {
    /// When the values were last forgotten.
    window_start: u64,
    /// Hashed values, one set per field of [`FIELDS`].
    sets: [HashSet<u32>; FIELDS.len()],
}

#[derive(Default)]
struct Pairs {
    by_key: HashMap<u64, RouteValues>,
    /// No sweep before this time.
    next_sweep: u64,
}

/// The tables of attribution values of every (site, route).
pub struct AttributionCap {
    limits: AttributionLimits,
    /// Keys pairs and values; its random key never leaves the process.
    hasher: RandomState,
    /// The clock's origin: times are whole seconds since.
    started: Instant,
    pairs: RwLock<Pairs>,
}

impl AttributionCap {
    /// A cap with these bounds.
    pub fn new(limits: AttributionLimits) -> Self {
        tracing::info!(
            max_mb = limits.max_bytes() / 1_000_000,
            "attribution tables: at most {} values a field for each of at most {} (site, route) pairs",
            limits.max_values,
            limits.max_routes
        );
        Self {
            limits,
            hasher: RandomState::new(),
            started: Instant::now(),
            pairs: RwLock::new(Pairs::default()),
        }
    }

    /// Replaces the values of `metrics` beyond the cap of (`site`, `route`) by `other`, calling
    /// `folded` for each.
    pub fn apply(
        &self,
        site: &str,
        route: &str,
        metrics: &mut [MetricSample],
        folded: impl FnMut(&'static str, Fold),
    ) {
        self.apply_at(
            site,
            route,
            metrics,
            folded,
            self.started.elapsed().as_secs(),
        );
    }

    fn apply_at(
        &self,
        site: &str,
        route: &str,
        metrics: &mut [MetricSample],
        mut folded: impl FnMut(&'static str, Fold),
        now: u64,
    ) {
        let has_values = |m: &MetricSample| {
            let a = &m.attribution;
            [
                &a.target,
                &a.url,
                &a.interaction_target,
                &a.script_url,
                &a.script_invoker,
                &a.largest_shift_target,
            ]
            .iter()
            .any(|s| !s.is_empty())
        };
        if !metrics.iter().any(has_values) {
            return;
        }
        let key = self.hasher.hash_one((site, route));
        {
            let pairs = self.pairs.read().unwrap_or_else(|e| e.into_inner());
            if let Some(values) = pairs.by_key.get(&key) {
                return self.cap_values(values, metrics, &mut folded, now);
            }
        }
        let mut pairs = self.pairs.write().unwrap_or_else(|e| e.into_inner());
        if !pairs.by_key.contains_key(&key) {
            if pairs.by_key.len() >= self.limits.max_routes && now >= pairs.next_sweep {
                pairs.next_sweep = now + SWEEP_EVERY_SECS;
                let idle = self.limits.idle_secs;
                pairs
                    .by_key
                    .retain(|_, v| v.seen.load(Ordering::Relaxed) + idle > now);
            }
            if pairs.by_key.len() >= self.limits.max_routes {
                return fold_all(metrics, &mut folded, Fold::RouteLimit);
            }
            let values = RouteValues {
                seen: AtomicU64::new(now),
                fields: Mutex::new(FieldValues {
                    window_start: now,
                    sets: Default::default(),
                }),
            };
            pairs.by_key.insert(key, values);
        }
        let values = pairs.by_key.get(&key).expect("inserted above");
        self.cap_values(values, metrics, &mut folded, now);
    }

    /// Keeps the values the pair has room for, folds the others.
    fn cap_values(
        &self,
        values: &RouteValues,
        metrics: &mut [MetricSample],
        folded: &mut impl FnMut(&'static str, Fold),
        now: u64,
    ) {
        if values.seen.load(Ordering::Relaxed) < now {
            values.seen.store(now, Ordering::Relaxed);
        }
        let mut fields = values.fields.lock().unwrap_or_else(|e| e.into_inner());
        if now >= fields.window_start + self.limits.idle_secs {
            fields.window_start = now;
            fields.sets.iter_mut().for_each(HashSet::clear);
        }
        for metric in metrics {
            for (index, name) in FIELDS.iter().enumerate() {
                let value = field(&mut metric.attribution, index);
                if value.is_empty() || value == OTHER_VALUE {
                    continue;
                }
                let hashed = self.hasher.hash_one((index, value.as_str())) as u32;
                let set = &mut fields.sets[index];
                if set.contains(&hashed) {
                    continue;
                }
                if set.len() < self.limits.max_values {
                    set.insert(hashed);
                } else {
                    *value = OTHER_VALUE.to_string();
                    folded(name, Fold::ValueLimit);
                }
            }
        }
    }

    /// The (site, route) pairs with a table: what `/metrics` shows, without visiting each table (a
    /// scrape must not lock every pair's table while beacons go through them).
    pub fn pairs(&self) -> usize {
        self.pairs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .len()
    }

    /// The (site, route) pairs with a table, and about the bytes their tables hold (visits and locks
    /// every table: for the tests of the memory bound, not for a scrape).
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        let pairs = self.pairs.read().unwrap_or_else(|e| e.into_inner());
        let bytes = table_bytes::<(u64, RouteValues)>(pairs.by_key.capacity())
            + pairs
                .by_key
                .values()
                .map(|v| {
                    let fields = v.fields.lock().unwrap_or_else(|e| e.into_inner());
                    fields
                        .sets
                        .iter()
                        .map(|s| set_bytes(s.capacity()))
                        .sum::<usize>()
                })
                .sum::<usize>();
        (pairs.by_key.len(), bytes)
    }
}

/// Folds every value of `metrics`.
fn fold_all(metrics: &mut [MetricSample], folded: &mut impl FnMut(&'static str, Fold), why: Fold) {
    for metric in metrics {
        for (index, name) in FIELDS.iter().enumerate() {
            let value = field(&mut metric.attribution, index);
            if !value.is_empty() && value != OTHER_VALUE {
                *value = OTHER_VALUE.to_string();
                folded(name, why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rum_schemas::{MetricName, Rating};

    use super::*;

    fn cap(max_values: usize, max_routes: usize) -> AttributionCap {
        AttributionCap::new(AttributionLimits {
            max_values,
            max_routes,
            idle_secs: 86_400,
        })
    }

    fn lcp(target: &str, url: &str) -> MetricSample {
        MetricSample {
            name: MetricName::LCP,
            value: 1000.0,
            id: String::new(),
            rating: Rating::Good,
            resend: false,
            attribution: Attribution {
                target: target.into(),
                url: url.into(),
                time_to_first_byte: Some(10.0),
                ..Attribution::default()
            },
        }
    }

    /// The LCP targets published for these, and the folds counted by (field, reason).
    fn send(
        cap: &AttributionCap,
        route: &str,
        targets: &[&str],
        now: u64,
    ) -> (Vec<String>, Vec<(&'static str, &'static str)>) {
        let mut published = Vec::new();
        let mut folds = Vec::new();
        for target in targets {
            let mut metrics = [lcp(target, "https://cdn.example/a.jpg")];
            cap.apply_at(
                "shop",
                route,
                &mut metrics,
                |field, why| folds.push((field, why.label())),
                now,
            );
            published.push(metrics[0].attribution.target.clone());
            assert_eq!(metrics[0].attribution.time_to_first_byte, Some(10.0));
        }
        (published, folds)
    }

    #[test]
    fn keeps_the_first_n_values_of_a_field_and_folds_the_rest_counted() {
        let cap = cap(3, 100);
        let targets = ["#a", "#b", "#a", "#c", "#d", "#e", "#b", "#f"];
        let (published, folds) = send(&cap, "product-id", &targets, 0);
        assert_eq!(
            published,
            ["#a", "#b", "#a", "#c", "other", "other", "#b", "other"]
        );
        assert_eq!(folds, [("target", "value_limit"); 3]);
        // Each route has its own places; the url (one value) never folds.
        let (published, folds) = send(&cap, "cart", &["#d", "#e"], 0);
        assert_eq!(published, ["#d", "#e"]);
        assert!(folds.is_empty());
        assert_eq!(cap.held().0, 2);
    }

    #[test]
    fn caps_every_string_field_on_its_own() {
        let cap = cap(1, 100);
        let inp = |n: u32| MetricSample {
            name: MetricName::INP,
            value: 100.0,
            id: String::new(),
            rating: Rating::Good,
            resend: false,
            attribution: Attribution {
                interaction_target: format!("#t{n}"),
                interaction_type: "pointer".into(),
                script_url: format!("https://x.example/{n}.js"),
                script_invoker: format!("B{n}.onclick"),
                ..Attribution::default()
            },
        };
        let cls = |n: u32| MetricSample {
            name: MetricName::CLS,
            value: 0.1,
            id: String::new(),
            rating: Rating::Good,
            resend: false,
            attribution: Attribution {
                largest_shift_target: format!("#ad{n}"),
                ..Attribution::default()
            },
        };
        let mut folds = Vec::new();
        let mut metrics = vec![
            inp(1),
            cls(1),
            lcp("#1", "/1.jpg"),
            inp(2),
            cls(2),
            lcp("#2", "/2.jpg"),
        ];
        cap.apply_at("s", "r", &mut metrics, |f, why| folds.push((f, why)), 0);
        folds.sort_by_key(|(f, _)| *f);
        let fields: Vec<_> = folds.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            [
                "interaction_target",
                "largest_shift_target",
                "script_invoker",
                "script_url",
                "target",
                "url"
            ]
        );
        assert!(folds.iter().all(|(_, why)| *why == Fold::ValueLimit));
        assert_eq!(metrics[3].attribution.interaction_target, "other");
        assert_eq!(
            metrics[3].attribution.interaction_type, "pointer",
            "not capped"
        );
        assert_eq!(metrics[0].attribution.script_url, "https://x.example/1.js");
    }

    #[test]
    fn a_new_route_beyond_max_routes_folds_until_an_idle_one_is_swept() {
        let cap = cap(10, 2);
        assert_eq!(send(&cap, "a", &["#x"], 0).0, ["#x"]);
        assert_eq!(send(&cap, "b", &["#x"], 0).0, ["#x"]);
        let (published, folds) = send(&cap, "c", &["#x", "#y"], 10);
        assert_eq!(published, ["other", "other"]);
        assert_eq!(
            folds,
            [
                ("target", "route_limit"),
                ("url", "route_limit"),
                ("target", "route_limit"),
                ("url", "route_limit")
            ]
        );
        // `a` stays busy; `b` goes idle for a day and its place goes to `c`.
        send(&cap, "a", &["#x"], 86_000);
        assert_eq!(send(&cap, "c", &["#x"], 86_401).0, ["#x"]);
        assert_eq!(cap.held().0, 2);
    }

    #[test]
    fn a_route_forgets_its_values_every_window() {
        let cap = cap(1, 10);
        assert_eq!(send(&cap, "r", &["#old", "#new"], 0).0, ["#old", "other"]);
        assert_eq!(
            send(&cap, "r", &["#new", "#old"], 86_400).0,
            ["#new", "other"]
        );
    }

    #[test]
    fn beacons_without_attribution_take_no_table() {
        let cap = cap(1, 1);
        let mut metrics = [lcp("", "")];
        cap.apply_at("s", "r", &mut metrics, |_, _| panic!("nothing to fold"), 0);
        assert_eq!(cap.held().0, 0);
    }

    #[test]
    fn memory_stays_within_the_stated_bound() {
        let limits = AttributionLimits {
            max_values: 100,
            max_routes: 10_000,
            idle_secs: 86_400,
        };
        let bound = limits.max_bytes();
        assert!((40_000_000..=48_000_000).contains(&bound), "{bound}");
        let cap = AttributionCap::new(AttributionLimits {
            max_routes: 20,
            ..limits
        });
        // A client making up a new value for every field of every beacon, on more routes than fit.
        for n in 0..3_000u32 {
            let route = format!("r{}", n % 40);
            let mut metrics = [lcp(&format!("#t{n}"), &format!("/i{n}.jpg"))];
            cap.apply_at("s", &route, &mut metrics, |_, _| {}, 0);
        }
        let (routes, bytes) = cap.held();
        assert_eq!(routes, 20);
        let per_pair_two_fields = 2 * set_bytes(100);
        assert!(
            bytes <= 20 * per_pair_two_fields + table_bytes::<(u64, RouteValues)>(20),
            "{bytes}"
        );
        assert!(cap.limits.max_bytes() >= bytes);
    }
}
