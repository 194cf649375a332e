//! The vitals as Prometheus histograms, with buckets on Google's thresholds so that
//! "p75 above the poor threshold" is exact from the buckets: `histogram_quantile` interpolates
//! only inside a bucket, and a threshold is always a bucket edge.
//!
//! A global budget bounds the label sets `{site, route, device}` across the five families
//! (`consumer.max_series`): the first label sets seen keep their own series; once the budget is
//! spent, beacons of a new label set are observed under [`FOLDED`] (`other` for all three labels,
//! the one label set whose device is not a device) and counted in `rum_consumer_series_folded_total`.
//! The budget includes the folded label set, so `/metrics` holds at most `max_series` label sets
//! and at most `max_series` x [`worst_case_bytes_per_label_set`] bytes of vitals.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Registry};
use rum_schemas::limits::MAX_SITE_LEN;
use rum_schemas::route::{MAX_ROUTE_LEN, OTHER_ROUTE};
use rum_schemas::{BeaconMessage, Device, MetricName};

/// The label set beacons are observed under once the budget is spent.
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
    /// Beacons observed under [`FOLDED`] because the budget was spent.
    folded: IntCounter,
    /// Label sets with series, the folded one included.
    label_sets: IntGauge,
}

/// The histograms of one label set, one slot per family, filled when first observed.
type Children = Vec<Option<Histogram>>;

/// The label sets that have their own series: at most `max - 1`, one place stays for [`FOLDED`].
struct SeriesBudget {
    max: usize,
    admitted: HashSet<String>,
    folded_used: bool,
}

impl SeriesBudget {
    /// True when the label set (`site|route|device`) has, or now gets, its own series.
    fn admit(&mut self, key: &str) -> bool {
        if self.admitted.contains(key) {
            return true;
        }
        if self.admitted.len() + 1 < self.max {
            self.admitted.insert(key.to_owned());
            return true;
        }
        self.folded_used = true;
        false
    }

    fn in_use(&self) -> usize {
        self.admitted.len() + usize::from(self.folded_used)
    }
}

impl VitalsHistograms {
    /// Builds and registers the five histograms, the folded-beacon counter and the label-set
    /// gauge, for at most `max_series` label sets.
    pub fn register(registry: &Registry, max_series: usize) -> Result<Self, prometheus::Error> {
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
            "Beacons observed in the vitals histograms under site, route and device \"other\" because consumer.max_series label sets were in use.",
        )?;
        let label_sets = IntGauge::new(
            "rum_consumer_series_label_sets",
            "Label sets (site, route, device) with series in the vitals histograms, \"other\" included; at most consumer.max_series.",
        )?;
        registry.register(Box::new(folded.clone()))?;
        registry.register(Box::new(label_sets.clone()))?;
        Ok(Self {
            families,
            budget: Mutex::new(SeriesBudget {
                max: max_series,
                admitted: HashSet::new(),
                folded_used: false,
            }),
            folded,
            label_sets,
        })
    }

    /// Observes every metric of stored beacons (FID has no histogram). A label set's histograms
    /// are looked up in their families, and its place in the budget checked, once per call.
    pub fn observe_all<'a>(&self, messages: impl IntoIterator<Item = &'a BeaconMessage>) {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        let mut children: HashMap<(&str, &str, Device), (bool, Children)> = HashMap::new();
        let mut folded_children: Children = vec![None; self.families.len()];
        let mut folded = 0;
        for message in messages {
            let labels = (
                message.site.as_str(),
                message.route.as_str(),
                message.device,
            );
            let (own, slots) = match children.entry(labels) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let own = budget.admit(&message.key());
                    let slots = if own { self.families.len() } else { 0 };
                    e.insert((own, vec![None; slots]))
                }
            };
            let (slots, values) = if *own {
                (slots, [labels.0, labels.1, labels.2.as_str()])
            } else {
                folded += 1;
                (&mut folded_children, FOLDED)
            };
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

    fn beacon(site: &str, route: &str, device: Device, metrics: &[MetricName]) -> BeaconMessage {
        BeaconMessage {
            site: site.into(),
            route: route.into(),
            device,
            nav_type: "navigate".into(),
            sample_rate: 1.0,
            received_at: 1,
            metrics: metrics
                .iter()
                .map(|&name| MetricSample {
                    name,
                    value: 2_000.0,
                    id: String::new(),
                    rating: Rating::Good,
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
        let vitals = VitalsHistograms::register(&registry, 3).unwrap();
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
    fn a_budget_of_one_folds_everything() {
        let registry = Registry::new();
        let vitals = VitalsHistograms::register(&registry, 1).unwrap();
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
        let vitals = VitalsHistograms::register(&registry, 10).unwrap();
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
        let vitals = VitalsHistograms::register(&registry, 10).unwrap();
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
