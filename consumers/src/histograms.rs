//! The vitals as Prometheus histograms, with buckets on Google's thresholds so that
//! "p75 above the poor threshold" is exact from the buckets: `histogram_quantile` interpolates
//! only inside a bucket, and a threshold is always a bucket edge.

use std::collections::HashMap;

use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};
use rum_schemas::{BeaconMessage, Device, MetricName};

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

/// One histogram family per metric, labelled `{site, route, device}`.
pub struct VitalsHistograms {
    families: Vec<(MetricName, f64, HistogramVec)>,
}

/// The histograms of one label set, one slot per family, filled when first observed.
type Children = Vec<Option<Histogram>>;

impl VitalsHistograms {
    /// Builds and registers the five histograms.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let mut families = Vec::with_capacity(SPECS.len());
        for spec in &SPECS {
            let family = HistogramVec::new(
                HistogramOpts::new(spec.name, spec.help).buckets(spec.buckets.to_vec()),
                &["site", "route", "device"],
            )?;
            registry.register(Box::new(family.clone()))?;
            families.push((spec.metric, spec.scale, family));
        }
        Ok(Self { families })
    }

    /// Observes every metric of stored beacons (FID has no histogram). A label set's histograms
    /// are looked up in their families once per call, not once per metric.
    pub fn observe_all<'a>(&self, messages: impl IntoIterator<Item = &'a BeaconMessage>) {
        let mut children: HashMap<(&str, &str, Device), Children> = HashMap::new();
        for message in messages {
            let labels = (
                message.site.as_str(),
                message.route.as_str(),
                message.device,
            );
            let slots = children
                .entry(labels)
                .or_insert_with(|| vec![None; self.families.len()]);
            for sample in &message.metrics {
                let Some(i) = self.families.iter().position(|(m, _, _)| *m == sample.name) else {
                    continue;
                };
                let (_, scale, family) = &self.families[i];
                slots[i]
                    .get_or_insert_with(|| {
                        family.with_label_values(&[labels.0, labels.1, labels.2.as_str()])
                    })
                    .observe(sample.value * scale);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
