//! The rules file (TOML): thresholds, how long a condition must hold, the minimum sample count,
//! severities and scope. Every key is optional; the defaults are the contract's alerts.
//!
//! ```toml
//! step_minutes = 5      # "held" = p75 above the threshold in every step of the window
//! for_minutes = 30      # the window
//! min_samples = 50      # samples in the whole window (all its steps together)
//! sites = []            # sites in scope; empty: every site
//! routes = []           # routes in scope (slugs, e.g. "product-id"); empty: every route
//!
//! [lcp]                 # WebVitalsLCPP75Poor, likewise [inp] and [cls]
//! enabled = true
//! threshold = 4000.0    # ms (CLS unitless); p75 strictly above it is poor (see MetricRule::threshold)
//! severity = "warning"
//!
//! [beacons_stopped]     # WebVitalsBeaconsStopped
//! enabled = true
//! for_minutes = 30      # silent this long, while the same minutes a day earlier had beacons
//! min_page_loads = 100  # page loads the same minutes a day earlier must hold (see BeaconsStoppedRule)
//! severity = "critical"
//! ```

use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use rum_schemas::MetricName;
use serde::{Deserialize, Serialize};

/// The whole rules file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Minutes of one step; a condition holds when it holds in every step of the window.
    pub step_minutes: u32,
    /// Minutes a p75 must stay above its threshold before the alert fires.
    pub for_minutes: u32,
    /// Samples the whole window must hold (summed over its steps), per site, route, device and metric.
    pub min_samples: u64,
    /// Sites in scope; empty means every site.
    pub sites: Vec<String>,
    /// Routes in scope; empty means every route.
    pub routes: Vec<String>,
    /// `WebVitalsLCPP75Poor`.
    pub lcp: MetricRule,
    /// `WebVitalsINPP75Poor`.
    pub inp: MetricRule,
    /// `WebVitalsCLSP75Poor`.
    pub cls: MetricRule,
    /// `WebVitalsBeaconsStopped`.
    pub beacons_stopped: BeaconsStoppedRule,
}

/// A p75-above-threshold alert of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricRule {
    /// Whether the alert is evaluated.
    pub enabled: bool,
    /// p75 strictly above this is poor (milliseconds; unitless for CLS). At the metric's poor or good
    /// threshold ([`MetricName::thresholds`]) "above" is decided exactly from the stored rating
    /// counts (sample-rate-weighted sums unless `alerts.weighting = "unweighted"`); at any other, from
    /// the sketch's p75, within its 0.5% (see [`AboveBy`](crate::store::AboveBy)).
    pub threshold: f64,
    /// The `severity` label.
    pub severity: String,
}

/// The beacons-stopped alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconsStoppedRule {
    /// Whether the alert is evaluated.
    pub enabled: bool,
    /// Minutes without a beacon (while the same minutes a day earlier had some).
    pub for_minutes: u32,
    /// Page loads the same minutes a day earlier must hold for the site's silence to alert, counted
    /// as the samples of the site's most frequent metric there (every page load sends at most one
    /// value of each metric, so 20 beacons of five vitals are 20, not 100). Keeps the many sites a
    /// public ingest may see a few times (random names) from paging a day later. Was `min_samples`
    /// (a sum over metrics); that key is refused with a message naming this one.
    pub min_page_loads: u64,
    /// The `severity` label.
    pub severity: String,
}

impl MetricRule {
    fn poor_threshold_of(metric: MetricName) -> Self {
        Self {
            enabled: true,
            threshold: metric.thresholds().1,
            severity: "warning".into(),
        }
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            step_minutes: 5,
            for_minutes: 30,
            min_samples: 50,
            sites: Vec::new(),
            routes: Vec::new(),
            lcp: MetricRule::poor_threshold_of(MetricName::LCP),
            inp: MetricRule::poor_threshold_of(MetricName::INP),
            cls: MetricRule::poor_threshold_of(MetricName::CLS),
            beacons_stopped: BeaconsStoppedRule {
                enabled: true,
                for_minutes: 30,
                min_page_loads: 100,
                severity: "critical".into(),
            },
        }
    }
}

impl Rules {
    /// Reads a rules file over the defaults and checks it. The error is one line naming the key.
    pub fn load(path: &Path) -> Result<Rules, String> {
        if !path.is_file() {
            return Err("not found".into());
        }
        Self::from_figment(Figment::from(Toml::file(path)))
    }

    /// Parses rules from TOML text over the defaults and checks them.
    pub fn from_toml(text: &str) -> Result<Rules, String> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(file: Figment) -> Result<Rules, String> {
        if file.find_value("beacons_stopped.min_samples").is_ok() {
            return Err(RENAMED_MIN_SAMPLES.into());
        }
        let rules: Rules = Figment::from(Serialized::defaults(Rules::default()))
            .merge(file)
            .extract()
            .map_err(|e| {
                let key = e.path.join(".");
                let kind = e.kind.to_string().replace('\n', " ");
                if key.is_empty() {
                    kind
                } else {
                    format!("{key}: {kind}")
                }
            })?;
        rules.validate()?;
        Ok(rules)
    }

    /// Checks every value; the error is `key: reason`.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=60).contains(&self.step_minutes) {
            return Err("step_minutes: must be between 1 and 60".into());
        }
        check_window("for_minutes", self.for_minutes, self.step_minutes)?;
        if self.min_samples == 0 {
            return Err("min_samples: must be at least 1".into());
        }
        for (i, site) in self.sites.iter().enumerate() {
            check_label(&format!("sites[{i}]"), site)?;
        }
        for (i, route) in self.routes.iter().enumerate() {
            check_label(&format!("routes[{i}]"), route)?;
        }
        for (name, rule) in [("lcp", &self.lcp), ("inp", &self.inp), ("cls", &self.cls)] {
            if !(rule.threshold.is_finite() && rule.threshold > 0.0) {
                return Err(format!("{name}.threshold: must be a number above 0"));
            }
            check_label(&format!("{name}.severity"), &rule.severity)?;
        }
        check_window(
            "beacons_stopped.for_minutes",
            self.beacons_stopped.for_minutes,
            self.step_minutes,
        )?;
        if self.beacons_stopped.min_page_loads == 0 {
            return Err("beacons_stopped.min_page_loads: must be at least 1".into());
        }
        check_label("beacons_stopped.severity", &self.beacons_stopped.severity)?;
        Ok(())
    }

    /// The enabled p75 rules with their alert names and metrics.
    pub fn metric_rules(&self) -> Vec<(&'static str, MetricName, &MetricRule)> {
        [
            (crate::LCP_P75_POOR, MetricName::LCP, &self.lcp),
            (crate::INP_P75_POOR, MetricName::INP, &self.inp),
            (crate::CLS_P75_POOR, MetricName::CLS, &self.cls),
        ]
        .into_iter()
        .filter(|(_, _, rule)| rule.enabled)
        .collect()
    }

    /// Whether a site is in scope.
    pub fn site_in_scope(&self, site: &str) -> bool {
        self.sites.is_empty() || self.sites.iter().any(|s| s == site)
    }

    /// Whether a route is in scope.
    pub fn route_in_scope(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|r| r == route)
    }
}

/// The error for the old key, which counted samples of every metric (a beacon of five vitals
/// counted five).
const RENAMED_MIN_SAMPLES: &str = "beacons_stopped.min_samples: renamed beacons_stopped.min_page_loads, which counts page \
     loads (the samples of the site's most frequent metric), not samples summed over metrics: set min_page_loads \
     (default 100) and remove min_samples";

fn check_window(key: &str, minutes: u32, step: u32) -> Result<(), String> {
    if minutes == 0 || minutes > 1440 || !minutes.is_multiple_of(step) {
        return Err(format!(
            "{key}: must be a multiple of step_minutes ({step}) between {step} and 1440"
        ));
    }
    Ok(())
}

/// Label values the pipeline produces: `[a-z0-9._-]`, not empty.
fn check_label(key: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: must be [a-z0-9._-], not empty (got {value:?})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let r = Rules::default();
        r.validate().unwrap();
        assert_eq!(
            (r.lcp.threshold, r.inp.threshold, r.cls.threshold),
            (4000.0, 500.0, 0.25)
        );
        assert_eq!((r.step_minutes, r.for_minutes, r.min_samples), (5, 30, 50));
        assert_eq!(r.beacons_stopped.for_minutes, 30);
        assert_eq!(r.beacons_stopped.min_page_loads, 100);
        assert_eq!(r.metric_rules().len(), 3);
    }

    #[test]
    fn the_example_file_spells_out_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules.example.toml");
        assert_eq!(Rules::load(&path).unwrap(), Rules::default());
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let r =
            Rules::from_toml("min_samples = 10\nsites = [\"shop\"]\n[inp]\nseverity = \"page\"\n")
                .unwrap();
        assert_eq!(r.min_samples, 10);
        assert_eq!(r.inp.severity, "page");
        assert_eq!(r.inp.threshold, 500.0);
        assert!(r.site_in_scope("shop") && !r.site_in_scope("blog"));
        assert!(r.route_in_scope("anything"));
    }

    #[test]
    fn bad_rules_name_the_key() {
        let cases = [
            ("[lcp]\nthreshold = -1.0\n", "lcp.threshold:"),
            ("[cls]\nthreshold = \"high\"\n", "cls.threshold:"),
            ("for_minutes = 32\n", "for_minutes:"),
            ("min_samples = 0\n", "min_samples:"),
            ("[inp]\nseverity = \"\"\n", "inp.severity:"),
            ("routes = [\"Bad Route\"]\n", "routes[0]:"),
            (
                "[beacons_stopped]\nfor_minutes = 0\n",
                "beacons_stopped.for_minutes:",
            ),
            (
                "[beacons_stopped]\nmin_page_loads = 0\n",
                "beacons_stopped.min_page_loads:",
            ),
            ("[lcp]\ntreshold = 3000.0\n", "lcp"),
        ];
        for (text, key) in cases {
            let err = Rules::from_toml(text).unwrap_err();
            assert!(err.starts_with(key), "{text:?} -> {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn the_old_minimum_key_is_refused_naming_the_new_one() {
        let err = Rules::from_toml("[beacons_stopped]\nmin_samples = 100\n").unwrap_err();
        assert!(
            err.starts_with("beacons_stopped.min_samples: renamed beacons_stopped.min_page_loads"),
            "{err}"
        );
        // p75's own min_samples is still the p75 rules' key.
        assert_eq!(
            Rules::from_toml("min_samples = 10\n").unwrap().min_samples,
            10
        );
    }
}
