//! The vitals as Prometheus histograms, with buckets on Google's thresholds so that
//! "p75 above the poor threshold" is exact from the buckets: `histogram_quantile` interpolates
//! only inside a bucket, and a threshold is always a bucket edge.
//!
//! A global budget bounds the label sets `{site, route, device}` across the five families
//! (`consumer.max_series`), fold sets included, so `/metrics` holds at most `max_series` label sets
//! and at most `max_series` x [`worst_case_bytes_per_label_set`] bytes of vitals:
//! - a new label set gets its own series while own places remain (all but a tenth of the budget
//!   and one place for [`FOLDED`]);
//! - then a new label set of a site that has places is observed under the site's fold set
//!   `{site=S, route="other", device="other"}` (created from the reserve while it lasts), so the
//!   site's own series keep counting and a per-site view still sees all its beacons;
//! - else under [`FOLDED`] (`other` for all three labels). Both folds count in
//!   `rum_consumer_series_folded_total`; `device="other"` marks a fold set, no beacon has it.
//!
//! A label set not observed for `consumer.series_idle_secs` is removed from every family and its
//! place freed (`rum_consumer_series_removed_total`), so a one-off flood of label sets does not hold
//! the budget for the life of the process (the places are kept in [`crate::series_budget`]); the clock
//! is a parameter ([`VitalsHistograms::observe_all_at`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::series_budget::{Placement, SeriesBudget, SWEEP_LIMIT};

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Registry};
use rum_schemas::limits::MAX_SITE_LEN;
use rum_schemas::route::{MAX_ROUTE_LEN, OTHER_ROUTE};
use rum_schemas::{BeaconMessage, Device, MetricName};

/// The label set beacons are observed under once the budget is spent and their site has no fold set.
pub const FOLDED: [&str; 3] = [OTHER_ROUTE, OTHER_ROUTE, OTHER_ROUTE];

/// Observed values below this (in the exported unit: a microsecond, or CLS 0.000001) count as 0,
/// so that a sum prints in at most [`MAX_SUM_CHARS`] characters (a sum of 1e-300 prints 300 zeros).
pub const MIN_OBSERVED: f64 = 1e-6;

/// The longest printed count: `u64::MAX` as the encoder prints it (`18446744073709552000`).
const MAX_COUNT_CHARS: usize = 20;
/// The longest printed sum: `0.` and 5 zeros and 17 digits (sums are 0, or from 1e-6 to 1e23).
const MAX_SUM_CHARS: usize = 24;

/// The histogram of one metric: its name, unit scale and bucket edges (in the exported unit).
struct Spec {
    metric: MetricName,
    name: &'static str,
    help: &'static str,
    /// Multiplies the stored value (ms) into the exported unit (s); 1 for CLS.
    scale: f64,
    buckets: &'static [f64],
}

/// Bucket edges: dense around each metric's thresholds, which are edges themselves.
const SPECS: [Spec; 5] = [
    Spec {
        metric: MetricName::LCP,
        name: "rum_web_vitals_lcp_seconds",
        help: "Largest Contentful Paint, seconds.",
        scale: 0.001,
        buckets: &[
            0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0,
        ],
    },
    Spec {
        metric: MetricName::INP,
        name: "rum_web_vitals_inp_seconds",
        help: "Interaction to Next Paint, seconds.",
        scale: 0.001,
        buckets: &[0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0],
    },
    Spec {
        metric: MetricName::CLS,
        name: "rum_web_vitals_cls",
        help: "Cumulative Layout Shift (unitless).",
        scale: 1.0,
        buckets: &[0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.4, 0.6, 1.0, 2.0],
    },
    Spec {
        metric: MetricName::FCP,
        name: "rum_web_vitals_fcp_seconds",
        help: "First Contentful Paint, seconds.",
        scale: 0.001,
        buckets: &[0.25, 0.5, 1.0, 1.4, 1.8, 2.2, 2.6, 3.0, 4.0, 6.0, 10.0],
    },
    Spec {
        metric: MetricName::TTFB,
        name: "rum_web_vitals_ttfb_seconds",
        help: "Time To First Byte, seconds.",
        scale: 0.001,
        buckets: &[0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.4, 1.8, 2.5, 4.0, 10.0],
    },
];

/// One histogram family per metric, labelled `{site, route, device}`, within a series budget.
pub struct VitalsHistograms {
    families: Vec<(MetricName, f64, HistogramVec)>,
    budget: Mutex<SeriesBudget>,
    /// Beacons observed under a fold set (the site's or [`FOLDED`]) because the budget was spent.
    folded: IntCounter,
    /// Label sets removed after `consumer.series_idle_secs` without a beacon.
    removed: IntCounter,
    /// Label sets with series, fold sets included.
    label_sets: IntGauge,
}

/// The histograms of one label set, one slot per family, filled when first observed.
type Children = Vec<Option<Histogram>>;

impl VitalsHistograms {
    /// Builds and registers the five histograms, the folded-beacon and removed-label-set counters
    /// and the label-set gauge, for at most `max_series` label sets, each removed after `idle`
    /// without a beacon.
    pub fn register(
        registry: &Registry,
        max_series: usize,
        idle: Duration,
    ) -> Result<Self, prometheus::Error> {
        let mut families = Vec::with_capacity(SPECS.len());
        for spec in &SPECS {
            let family = HistogramVec::new(
                HistogramOpts::new(spec.name, spec.help).buckets(spec.buckets.to_vec()),
                &["site", "route", "device"],
            )?;
            registry.register(Box::new(family.clone()))?;
            families.push((spec.metric, spec.scale, family));
        }
        let folded = IntCounter::new(
            "rum_consumer_series_folded_total",
            "Beacons observed in the vitals histograms under route and device \"other\" (of their site, or site \"other\" too) because consumer.max_series label sets were in use.",
        )?;
        let removed = IntCounter::new(
            "rum_consumer_series_removed_total",
            "Label sets removed from the vitals histograms after consumer.series_idle_secs without a beacon, their places in consumer.max_series freed.",
        )?;
        let label_sets = IntGauge::new(
            "rum_consumer_series_label_sets",
            "Label sets (site, route, device) with series in the vitals histograms, \"other\" ones included; at most consumer.max_series.",
        )?;
        registry.register(Box::new(folded.clone()))?;
        registry.register(Box::new(removed.clone()))?;
        registry.register(Box::new(label_sets.clone()))?;
        Ok(Self {
            families,
            budget: Mutex::new(SeriesBudget::new(max_series, idle)),
            folded,
            removed,
            label_sets,
        })
    }

    /// Observes every metric of stored beacons (FID has no histogram), now.
    pub fn observe_all<'a>(&self, messages: impl IntoIterator<Item = &'a BeaconMessage>) {
        self.observe_all_at(messages, Instant::now());
    }

    /// Observes every metric of stored beacons at `now`: first removes the label sets idle at `now`
    /// (see [`SWEEP_EVERY`](crate::series_budget::SWEEP_EVERY)), then places each label set once per call.
    pub fn observe_all_at<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a BeaconMessage>,
        now: Instant,
    ) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let removed = budget.sweep(now, SWEEP_LIMIT);
        for labels in &removed {
            let labels = [&*labels[0], &*labels[1], &*labels[2]];
            for (_, _, family) in &self.families {
                // A family the label set never had a value in has no series to remove.
                let _ = family.remove_label_values(&labels);
            }
        }
        self.removed.inc_by(removed.len() as u64);
        let mut children: HashMap<(&str, &str, Device), (Placement, Children)> = HashMap::new();
        let mut site_children: HashMap<&str, Children> = HashMap::new();
        let mut global_children: Children = vec![None; self.families.len()];
        let mut folded = 0;
        for message in messages {
            let site = message.site.as_str();
            let labels = (site, message.route.as_str(), message.device);
            let (placement, own_slots) = match children.entry(labels) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let placement = budget.place(site, labels.1, labels.2.as_str(), now);
                    let slots = if placement == Placement::Own {
                        self.families.len()
                    } else {
                        0
                    };
                    e.insert((placement, vec![None; slots]))
                }
            };
            let (slots, values) = match placement {
                Placement::Own => (own_slots, [site, labels.1, labels.2.as_str()]),
                Placement::SiteFold => (
                    site_children
                        .entry(site)
                        .or_insert_with(|| vec![None; self.families.len()]),
                    [site, OTHER_ROUTE, OTHER_ROUTE],
                ),
                Placement::Global => (&mut global_children, FOLDED),
            };
            if *placement != Placement::Own {
                folded += 1;
            }
            for sample in &message.metrics {
                let Some(i) = self.families.iter().position(|(m, _, _)| *m == sample.name) else {
                    continue;
                };
                let (_, scale, family) = &self.families[i];
                let value = sample.value * scale;
                slots[i]
                    .get_or_insert_with(|| family.with_label_values(&values))
                    .observe(if value < MIN_OBSERVED { 0.0 } else { value });
            }
        }
        self.folded.inc_by(folded);
        self.label_sets.set(budget.in_use() as i64);
    }
}

/// The most bytes one label set adds to the exposition (13,827, the README states it): every
/// family's buckets, `+Inf`, sum and count, with the longest site, route and device and the longest
/// printed values. Lines look like `NAME_bucket{device="D",route="R",site="S",le="B"} COUNT` (the
/// encoder sorts labels by name).
pub fn worst_case_bytes_per_label_set() -> usize {
    let device = Device::ALL
        .iter()
        .map(|d| d.as_str().len())
        .max()
        .unwrap_or(0);
    // `{device="...",route="...",site="..."`; labels need no escapes (`[a-z0-9._-]`).
    let labels = "{device=\"\"".len()
        + device.max(OTHER_ROUTE.len())
        + ",route=\"\"".len()
        + MAX_ROUTE_LEN
        + ",site=\"\"".len()
        + MAX_SITE_LEN;
    let mut total = 0;
    for spec in &SPECS {
        let name = spec.name.len();
        // `NAME_bucket` LABELS `,le="B"} COUNT\n` for each edge and `+Inf`.
        let bucket = name + "_bucket".len() + labels + ",le=\"\"} ".len() + MAX_COUNT_CHARS + 1;
        let edges: usize = spec.buckets.iter().map(|b| b.to_string().len()).sum();
        total += (spec.buckets.len() + 1) * bucket + edges + "+Inf".len();
        // `NAME_sum` LABELS `} SUM\n` and `NAME_count` LABELS `} COUNT\n`.
        total += name + "_sum".len() + labels + "} ".len() + MAX_SUM_CHARS + 1;
        total += name + "_count".len() + labels + "} ".len() + MAX_COUNT_CHARS + 1;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use rum_schemas::{MetricSample, Rating};

    const IDLE: Duration = Duration::from_secs(3_600);

    fn beacon(site: &str, route: &str, device: Device, metrics: &[MetricName]) -> BeaconMessage {
        BeaconMessage {
            site: site.into(),
            route: route.into(),
            device,
            nav_type: "navigate".into(),
            sample_rate: 1.0,
            received_at: 1,
            page_id: String::new(),
            release: String::new(),
            rtt: "unknown".into(),
            browser: "unknown".into(),
            browser_major: 0,
            metrics: metrics
                .iter()
                .map(|&name| MetricSample {
                    name,
                    value: 2_000.0,
                    id: String::new(),
                    rating: Rating::Good,
                    resend: false,
                    attribution: Default::default(),
                })
                .collect(),
        }
    }

    fn sample_count(registry: &Registry, family: &str, labels: [&str; 3]) -> Option<u64> {
        let family = registry.gather().into_iter().find(|f| f.name() == family)?;
        family
            .get_metric()
            .iter()
            .find(|m| {
                let l = m.get_label();
                [l[0].value(), l[1].value(), l[2].value()] == [labels[2], labels[1], labels[0]]
            })
            .map(|m| m.get_histogram().get_sample_count())
    }

    fn scalar(registry: &Registry, name: &str) -> f64 {
        let family = registry.gather().into_iter().find(|f| f.name() == name);
        let family = family.expect(name);
        let metric = &family.get_metric()[0];
        if metric.get_counter().get_value() != 0.0 {
            metric.get_counter().get_value()
        } else {
            metric.get_gauge().get_value()
        }
    }

    #[test]
    fn folds_new_label_sets_into_other_once_the_budget_is_spent() {
        let registry = Registry::new();
        let vitals = VitalsHistograms::register(&registry, 3, IDLE).unwrap();
        let all = [MetricName::LCP, MetricName::INP];
        let a = beacon("shop", "cart", Device::Mobile, &all);
        let b = beacon("shop", "home", Device::Desktop, &[MetricName::LCP]);
        vitals.observe_all([&a, &b, &a]);
        assert_eq!(scalar(&registry, "rum_consumer_series_label_sets"), 2.0);
        // The third label set would take the place kept for the fold: it folds, with a fourth.
        let c = beacon("blog", "post", Device::Tablet, &all);
        let d = beacon("evil", "x1", Device::Mobile, &[MetricName::CLS]);
        vitals.observe_all([&c, &d, &c, &a]);
        let lcp = "rum_web_vitals_lcp_seconds";
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "cart", "mobile"]),
            Some(3)
        );
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "home", "desktop"]),
            Some(1)
        );
        assert_eq!(
            sample_count(&registry, lcp, ["blog", "post", "tablet"]),
            None
        );
        assert_eq!(sample_count(&registry, lcp, FOLDED), Some(2));
        assert_eq!(
            sample_count(&registry, "rum_web_vitals_cls", FOLDED),
            Some(1)
        );
        assert_eq!(scalar(&registry, "rum_consumer_series_folded_total"), 3.0);
        assert_eq!(scalar(&registry, "rum_consumer_series_label_sets"), 3.0);
        // A label set admitted before keeps its series in a later call.
        vitals.observe_all([&b]);
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "home", "desktop"]),
            Some(2)
        );
        assert_eq!(scalar(&registry, "rum_consumer_series_folded_total"), 3.0);
    }

    #[test]
    fn a_site_with_places_folds_into_its_own_fold_set_when_the_budget_is_spent() {
        let registry = Registry::new();
        // 20 places: 17 own, 2 for sites' fold sets, 1 for "other".
        let vitals = VitalsHistograms::register(&registry, 20, IDLE).unwrap();
        let lcp = "rum_web_vitals_lcp_seconds";
        let home = beacon("shop", "home", Device::Mobile, &[MetricName::LCP]);
        let flood: Vec<_> = (0..16)
            .map(|i| {
                beacon(
                    &format!("flood{i}"),
                    "x",
                    Device::Mobile,
                    &[MetricName::LCP],
                )
            })
            .collect();
        vitals.observe_all(flood.iter().chain([&home]));
        assert_eq!(scalar(&registry, "rum_consumer_series_label_sets"), 17.0);
        // The budget of own places is spent: the shop's new routes fold into the shop's fold set,
        // its own series keep counting; a site without places goes to "other".
        let cart = beacon("shop", "cart", Device::Desktop, &[MetricName::LCP]);
        let account = beacon("shop", "account", Device::Tablet, &[MetricName::LCP]);
        let stranger = beacon("new-site", "home", Device::Mobile, &[MetricName::LCP]);
        vitals.observe_all([&cart, &account, &home, &stranger, &cart]);
        let shop_fold = ["shop", "other", "other"];
        assert_eq!(sample_count(&registry, lcp, shop_fold), Some(3));
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "home", "mobile"]),
            Some(2)
        );
        assert_eq!(sample_count(&registry, lcp, FOLDED), Some(1));
        // A second flooding site takes the last reserved place; a third has to go to "other".
        let more = [0, 1].map(|i| {
            beacon(
                &format!("flood{i}"),
                "y",
                Device::Mobile,
                &[MetricName::LCP],
            )
        });
        vitals.observe_all(&more);
        assert_eq!(
            sample_count(&registry, lcp, ["flood0", "other", "other"]),
            Some(1)
        );
        assert_eq!(
            sample_count(&registry, lcp, ["flood1", "other", "other"]),
            None
        );
        assert_eq!(sample_count(&registry, lcp, FOLDED), Some(2));
        assert_eq!(scalar(&registry, "rum_consumer_series_label_sets"), 20.0);
        assert_eq!(scalar(&registry, "rum_consumer_series_folded_total"), 6.0);
    }

    #[test]
    fn a_flood_is_removed_once_idle_and_a_real_site_gets_its_own_series_again() {
        let registry = Registry::new();
        let vitals = VitalsHistograms::register(&registry, 20, IDLE).unwrap();
        let lcp = "rum_web_vitals_lcp_seconds";
        let start = Instant::now();
        let at = |minutes: u64| start + Duration::from_secs(60 * minutes);
        let home = beacon("shop", "home", Device::Mobile, &[MetricName::LCP]);
        let flood: Vec<_> = (0..100)
            .map(|i| {
                beacon(
                    &format!("flood{i}"),
                    "x",
                    Device::ALL[i % 4],
                    &[MetricName::LCP],
                )
            })
            .collect();
        vitals.observe_all_at([&home].into_iter().chain(&flood), at(0));
        let cart = beacon("shop", "cart", Device::Desktop, &[MetricName::LCP]);
        vitals.observe_all_at([&cart], at(10));
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "cart", "desktop"]),
            None
        );
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "other", "other"]),
            Some(1)
        );
        // The shop's home page has a beacon every 20 minutes; the flood never comes back.
        for minutes in [20, 40] {
            vitals.observe_all_at([&home], at(minutes));
        }
        // 17 own, the shop's fold set and "other" (one reserved place is free).
        assert_eq!(scalar(&registry, "rum_consumer_series_label_sets"), 19.0);
        assert!(sample_count(&registry, lcp, ["flood0", "x", "mobile"]).is_some());
        // An hour after their last beacons the flood and the shop's fold set are gone.
        vitals.observe_all_at([&cart, &home], at(70));
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "cart", "desktop"]),
            Some(1)
        );
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "home", "mobile"]),
            Some(4)
        );
        assert_eq!(
            sample_count(&registry, lcp, ["flood0", "x", "mobile"]),
            None
        );
        assert_eq!(
            sample_count(&registry, lcp, ["shop", "other", "other"]),
            None
        );
        assert_eq!(sample_count(&registry, lcp, FOLDED), None);
        assert_eq!(scalar(&registry, "rum_consumer_series_label_sets"), 2.0);
        // 16 flood label sets with places, the shop's fold set and "other".
        assert_eq!(scalar(&registry, "rum_consumer_series_removed_total"), 18.0);
        let text = rum_telemetry::encode(&registry);
        assert!(!text.contains("flood"), "{text}");
    }

    #[test]
    fn a_budget_of_one_folds_everything() {
        let registry = Registry::new();
        let vitals = VitalsHistograms::register(&registry, 1, IDLE).unwrap();
        vitals.observe_all([&beacon("shop", "cart", Device::Mobile, &[MetricName::TTFB])]);
        assert_eq!(
            sample_count(&registry, "rum_web_vitals_ttfb_seconds", FOLDED),
            Some(1)
        );
        assert_eq!(scalar(&registry, "rum_consumer_series_label_sets"), 1.0);
    }

    #[test]
    fn values_too_small_to_matter_count_as_zero_so_a_sum_stays_short() {
        let registry = Registry::new();
        let vitals = VitalsHistograms::register(&registry, 10, IDLE).unwrap();
        let mut tiny = beacon("shop", "cart", Device::Mobile, &[MetricName::CLS]);
        tiny.metrics[0].value = 1e-300;
        let mut small = beacon("shop", "cart", Device::Mobile, &[MetricName::CLS]);
        small.metrics[0].value = 0.000_123;
        vitals.observe_all([&tiny, &tiny, &small]);
        let text = rum_telemetry::encode(&registry);
        assert!(
            text.contains(
                "rum_web_vitals_cls_sum{device=\"mobile\",route=\"cart\",site=\"shop\"} 0.000123\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "rum_web_vitals_cls_count{device=\"mobile\",route=\"cart\",site=\"shop\"} 3\n"
        ));
    }

    #[test]
    fn the_worst_case_size_of_a_label_set_is_the_documented_one() {
        assert_eq!(worst_case_bytes_per_label_set(), 13_827);
        assert_eq!(MAX_COUNT_CHARS, (u64::MAX as f64).to_string().len());
        for sum in [MIN_OBSERVED * 1.234_567_890_123_456_7, 1.1e23, 0.1 + 0.2] {
            assert!(sum.to_string().len() <= MAX_SUM_CHARS, "{sum}");
        }
    }

    #[test]
    fn the_worst_case_label_set_fills_its_bound() {
        let registry = Registry::new();
        let vitals = VitalsHistograms::register(&registry, 10, IDLE).unwrap();
        let all = [
            MetricName::LCP,
            MetricName::INP,
            MetricName::CLS,
            MetricName::FCP,
            MetricName::TTFB,
        ];
        let site = "s".repeat(MAX_SITE_LEN);
        let route = "r".repeat(MAX_ROUTE_LEN);
        vitals.observe_all([&beacon(&site, &route, Device::Desktop, &all)]);
        // Each line of the label set, with its value padded to the longest a value can print.
        let text = rum_telemetry::encode(&registry);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&site)).collect();
        assert_eq!(
            lines.len(),
            5 * 3 + 13 + 4 * 11,
            "buckets, +Inf, sum and count"
        );
        let padded: usize = lines
            .iter()
            .map(|line| {
                let value = line.rsplit(' ').next().unwrap_or_default();
                let longest = if line.contains("_sum{") {
                    MAX_SUM_CHARS
                } else {
                    MAX_COUNT_CHARS
                };
                line.len() + 1 + longest - value.len()
            })
            .sum();
        assert_eq!(padded, worst_case_bytes_per_label_set());
    }

    #[test]
    fn every_threshold_is_a_bucket_edge() {
        for spec in &SPECS {
            let (good, poor) = spec.metric.thresholds();
            for threshold in [good * spec.scale, poor * spec.scale] {
                assert!(
                    spec.buckets.iter().any(|b| (b - threshold).abs() < 1e-12),
                    "{}: {threshold} is not a bucket edge",
                    spec.name
                );
            }
            assert!(
                spec.buckets.windows(2).all(|w| w[0] < w[1]),
                "{} buckets ascend",
                spec.name
            );
        }
    }
}
