//! The evaluator: a pure function of the stored data and `now`. It keeps no state, so a restart
//! does not reset a pending alert and two replicas send identical alerts. (What `rum alerts` keeps
//! across evaluations during a ClickHouse outage is in [`crate::outage`], outside this function.)
//!
//! Two kinds of condition, one function each, both building their alert with [`Finding::alert`]:
//!
//! * [`p75_poor`] holds at the end `E` of the last complete step when every step of `[E - for, E)`
//!   has samples and a p75 strictly above the threshold, and the window holds at least
//!   `min_samples` samples in all (per window, not per step). It starts where the run of bad steps
//!   ending at `E` starts (looked for within the lookback). "Above" is each step's
//!   [`StepStat::above`], decided in SQL: exactly from the rating counts at the metric's poor or good
//!   threshold (each sample weighing `1 / sample_rate` unless `alerts.weighting = "unweighted"`),
//!   from the sketch at any other ([`AboveBy`](crate::store::AboveBy)); the p75 shown is the
//!   sketch's (weighted the same way). Its alert carries a `report` annotation (the `rum report`
//!   command of its site); [`crate::attribution`] adds the top target once the alerts are ranked.
//! * [`beacons_stopped`] holds for a site when `[E - for, E)` has no sample while
//!   `[E - for - 1d, E - 1d)` had at least `beacons_stopped.min_page_loads` page loads, counted as
//!   the samples of the site's most frequent metric there (a page load sends each metric at most
//!   once; summing the metrics counted 20 beacons of five vitals as 100). It starts a minute after
//!   the site's last stored minute.
//!
//! Firing alerts end `now + 3 intervals` (re-sent every interval). An alert that held at
//! `now - interval` and no longer holds is sent once as resolved, ending `now`.
//!
//! At most `max_alerts` are sent an evaluation, ranked so that every replica keeps the same ones:
//! firing before resolved, then by severity (`critical`, `warning`, others), then by the samples
//! behind the alert (the window's for p75, the day-earlier window's for beacons stopped: the
//! biggest audience first), then by alert name, site, route and device. The rest are counted in one
//! [`TRUNCATED`](crate::TRUNCATED) alert, sent first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use rum_schemas::MetricName;

use crate::attribution::report_command;
use crate::config::Weighting;
use crate::rules::{MetricRule, Rules};
use crate::store::{severity_rank, spans, StepStat, StoredData, DAY_SECS};
use crate::{BEACONS_METRIC, BEACONS_STOPPED, TRUNCATED};

/// Whether an alert is firing or was just resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertState {
    /// The condition holds at `now`.
    Firing,
    /// The condition held an interval ago and no longer holds.
    Resolved,
}

/// One alert as it goes to Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `alertname`, `site`, `route`, `device`, `metric`, `severity` (route and device only on p75 alerts).
    pub labels: BTreeMap<String, String>,
    /// `summary`, `p75`, `threshold`, `samples` (`page_loads_yesterday` for beacons stopped), and `query`:
    /// SQL to investigate, for `clickhouse-client --database rum` (tables unqualified: the database is
    /// configurable).
    pub annotations: BTreeMap<String, String>,
    /// Unix seconds at which the bad period started, from the data.
    pub starts_at: u32,
    /// Unix seconds at which Alertmanager considers it over unless re-sent.
    pub ends_at: u32,
    /// Firing or resolved.
    pub state: AlertState,
}

impl Alert {
    /// The `alertname` label.
    pub fn name(&self) -> &str {
        self.label("alertname")
    }

    /// A label's value, "" when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// A condition found to hold: what every alert is built from (its labels, its annotations, where
/// it started, and the samples behind it, which rank it).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The `alertname` label.
    pub alertname: &'static str,
    /// The `severity` label.
    pub severity: String,
    /// The other labels (`site`, `route`, `device`, `metric` as the kind has them).
    pub subject: Vec<(&'static str, String)>,
    /// The `summary` annotation.
    pub summary: String,
    /// The other annotations.
    pub details: Vec<(&'static str, String)>,
    /// Unix seconds at which the condition started.
    pub starts_at: u32,
    /// The samples behind the finding; more ranks first.
    pub samples: u64,
}

impl Finding {
    /// The alert's labels: `alertname`, `severity` and the subject.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = self
            .subject
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        labels.insert("alertname".into(), self.alertname.into());
        labels.insert("severity".into(), self.severity.clone());
        labels
    }

    /// The alert builder: the one place labels and annotations are put together.
    pub fn alert(&self, state: AlertState, ends_at: u32) -> Alert {
        let mut annotations: BTreeMap<String, String> = self
            .details
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        annotations.insert("summary".into(), self.summary.clone());
        Alert {
            labels: self.labels(),
            annotations,
            starts_at: self.starts_at,
            ends_at,
            state,
        }
    }

    fn subject_label(&self, key: &str) -> &str {
        self.subject
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The ranking (see the module header); lower sends first.
    fn rank_key(&self, state: AlertState) -> impl Ord + '_ {
        (
            state,
            severity_rank(&self.severity),
            Reverse(self.samples),
            self.alertname,
            self.subject_label("site"),
            self.subject_label("route"),
            self.subject_label("device"),
        )
    }
}

type SeriesKey<'a> = (&'a str, &'a str, &'a str, &'a str);

/// One p75 rule with its alert name and metric.
pub type MetricRuleRef<'a> = (&'static str, MetricName, &'a MetricRule);

/// Every alert to send at `now`: at most `max_alerts` firing and resolved ones, ranked (see the
/// module header), plus one [`TRUNCATED`](crate::TRUNCATED) alert first when some were left out.
pub fn evaluate(
    rules: &Rules,
    data: &StoredData,
    now: u32,
    interval_secs: u32,
    max_alerts: usize,
) -> Vec<Alert> {
    let spans = spans(rules, now, interval_secs);
    let series = group_series(rules, data);
    let site_minutes = group_site_minutes(data);
    let weighting = data.weighting;
    let holding_now = holding_at(
        rules,
        &series,
        &site_minutes,
        spans.end,
        spans.start,
        weighting,
    );
    let mut holding_before = holding_at(
        rules,
        &series,
        &site_minutes,
        spans.previous_end,
        spans.start,
        weighting,
    );
    holding_before.retain(|labels, _| !holding_now.contains_key(labels));

    let mut ranked: Vec<(AlertState, Finding)> = holding_now
        .into_values()
        .map(|f| (AlertState::Firing, f))
        .chain(
            holding_before
                .into_values()
                .map(|f| (AlertState::Resolved, f)),
        )
        .collect();
    ranked.sort_by(|(sa, a), (sb, b)| a.rank_key(*sa).cmp(&b.rank_key(*sb)));
    let omitted = ranked.len().saturating_sub(max_alerts) as u64 + data.not_fetched;
    ranked.truncate(max_alerts);

    let firing_until = now + 3 * interval_secs;
    let mut alerts = Vec::with_capacity(ranked.len() + 1);
    if omitted > 0 {
        alerts.push(truncated(omitted, max_alerts, now).alert(AlertState::Firing, firing_until));
    }
    alerts.extend(ranked.iter().map(|(state, f)| match state {
        AlertState::Firing => f.alert(*state, firing_until),
        AlertState::Resolved => f.alert(*state, now),
    }));
    alerts
}

/// The summary of the alerts left out by the cap.
fn truncated(omitted: u64, max_alerts: usize, now: u32) -> Finding {
    Finding {
        alertname: TRUNCATED,
        severity: "warning".into(),
        subject: Vec::new(),
        summary: format!(
            "{omitted} alerts were not sent: more than alerts.max_alerts ({max_alerts}) held at this evaluation; \
             the most severe, with the most samples, were sent"
        ),
        details: vec![
            ("omitted", omitted.to_string()),
            ("max_alerts", max_alerts.to_string()),
        ],
        starts_at: now,
        samples: 0,
    }
}

/// The steps of each in-scope series, by step start.
fn group_series<'a>(
    rules: &Rules,
    data: &'a StoredData,
) -> BTreeMap<SeriesKey<'a>, BTreeMap<u32, &'a StepStat>> {
    let mut series: BTreeMap<SeriesKey<'a>, BTreeMap<u32, &'a StepStat>> = BTreeMap::new();
    for s in &data.steps {
        if rules.site_in_scope(&s.site) && rules.route_in_scope(&s.route) {
            series
                .entry((&s.site, &s.route, &s.device, &s.metric))
                .or_default()
                .insert(s.step_start, s);
        }
    }
    series
}

/// Samples of one site by metric, then by minute.
pub type SiteMetricMinutes<'a> = BTreeMap<&'a str, BTreeMap<u32, u64>>;

fn group_site_minutes(data: &StoredData) -> HashMap<&str, SiteMetricMinutes<'_>> {
    let mut sites: HashMap<&str, SiteMetricMinutes<'_>> = HashMap::new();
    for m in &data.site_minutes {
        *sites
            .entry(m.site.as_str())
            .or_default()
            .entry(m.metric.as_str())
            .or_default()
            .entry(m.minute)
            .or_default() += m.samples;
    }
    sites
}

/// The conditions that hold at step end `end`, keyed by their labels.
fn holding_at(
    rules: &Rules,
    series: &BTreeMap<SeriesKey<'_>, BTreeMap<u32, &StepStat>>,
    site_minutes: &HashMap<&str, SiteMetricMinutes<'_>>,
    end: u32,
    lookback_start: u32,
    weighting: Weighting,
) -> BTreeMap<BTreeMap<String, String>, Finding> {
    let mut out = BTreeMap::new();
    for rule in rules.metric_rules() {
        for (&key, steps) in series {
            if key.3 != rule.1.as_str() {
                continue;
            }
            if let Some(f) = p75_poor(rules, rule, key, steps, end, lookback_start, weighting) {
                out.insert(f.labels(), f);
            }
        }
    }
    if rules.beacons_stopped.enabled {
        for (site, minutes) in site_minutes {
            if !rules.site_in_scope(site) {
                continue;
            }
            if let Some(f) = beacons_stopped(rules, site, minutes, end) {
                out.insert(f.labels(), f);
            }
        }
    }
    out
}

/// Whether one series' p75 is poor at step end `end` (see the module header); `steps` by start,
/// read as `weighting` says (the `query` annotation reads them the same way).
pub fn p75_poor(
    rules: &Rules,
    (alertname, metric, rule): MetricRuleRef<'_>,
    (site, route, device, _): SeriesKey<'_>,
    steps: &BTreeMap<u32, &StepStat>,
    end: u32,
    lookback_start: u32,
    weighting: Weighting,
) -> Option<Finding> {
    let step = rules.step_minutes * 60;
    let window_start = end.saturating_sub(rules.for_minutes * 60);
    // Not `p75 > threshold`: the sketch's p75 is off by up to 0.5% (see `AboveBy`).
    let bad = |start: u32| {
        steps
            .get(&start)
            .copied()
            .filter(|s| s.samples > 0 && s.above)
    };
    let window: Vec<&StepStat> = (window_start..end)
        .step_by(step as usize)
        .map(bad)
        .collect::<Option<_>>()?;
    let samples: u64 = window.iter().map(|s| s.samples).sum();
    if window.is_empty() || samples < rules.min_samples {
        return None;
    }
    let mut starts_at = window_start;
    while starts_at >= lookback_start + step && bad(starts_at - step).is_some() {
        starts_at -= step;
    }
    let lowest = window.iter().map(|s| s.p75).fold(f64::INFINITY, f64::min);
    let latest = window.last().map_or(lowest, |s| s.p75);
    let fmt = |v: f64| {
        if metric == MetricName::CLS {
            format!("{v:.3}")
        } else {
            format!("{v:.0} ms")
        }
    };
    Some(Finding {
        alertname,
        severity: rule.severity.clone(),
        subject: vec![
            ("site", site.to_string()),
            ("route", route.to_string()),
            ("device", device.to_string()),
            ("metric", metric.as_str().to_string()),
        ],
        summary: format!(
            "p75 {} {} above {} on {site} {route} {device}: in every {}-minute step of the last {} minutes (lowest step {}, {samples} samples)",
            metric.as_str(),
            fmt(latest),
            fmt(rule.threshold),
            rules.step_minutes,
            rules.for_minutes,
            fmt(lowest),
        ),
        details: vec![
            ("p75", format!("{latest}")),
            ("threshold", format!("{}", rule.threshold)),
            ("samples", samples.to_string()),
            (
                "query",
                investigate_series_sql(
                    (site, route, device, metric.as_str()),
                    step,
                    starts_at.min(window_start).saturating_sub(3600),
                    end,
                    weighting,
                ),
            ),
        ]
        .into_iter()
        .chain(report_command(site).map(|c| ("report", c)))
        .collect(),
        starts_at,
        samples,
    })
}

/// Whether a site stopped sending at step end `end` (see the module header); `metrics` are its
/// samples by metric and minute.
pub fn beacons_stopped(
    rules: &Rules,
    site: &str,
    metrics: &SiteMetricMinutes<'_>,
    end: u32,
) -> Option<Finding> {
    let rule = &rules.beacons_stopped;
    let window = rule.for_minutes * 60;
    let sum = |minutes: &BTreeMap<u32, u64>, from: u32, to: u32| -> u64 {
        minutes.range(from..to).map(|(_, n)| n).sum()
    };
    let today: u64 = metrics
        .values()
        .map(|m| sum(m, end.saturating_sub(window), end))
        .sum();
    // Page loads: the most frequent metric's samples (each page load sends a metric at most once).
    let yesterday = metrics
        .values()
        .map(|m| {
            sum(
                m,
                end.saturating_sub(window + DAY_SECS),
                end.saturating_sub(DAY_SECS),
            )
        })
        .max()
        .unwrap_or(0);
    if today > 0 || yesterday < rule.min_page_loads {
        return None;
    }
    let starts_at = metrics
        .values()
        .filter_map(|m| {
            m.range(end.saturating_sub(DAY_SECS)..end)
                .filter(|(_, n)| **n > 0)
                .map(|(m, _)| m + 60)
                .next_back()
        })
        .max()
        .unwrap_or(end - window);
    Some(Finding {
        alertname: BEACONS_STOPPED,
        severity: rule.severity.clone(),
        subject: vec![
            ("site", site.to_string()),
            ("metric", BEACONS_METRIC.to_string()),
        ],
        summary: format!(
            "no beacons from {site} for the last {} minutes, while the same minutes yesterday had {yesterday} page loads",
            rule.for_minutes
        ),
        details: vec![
            ("samples", "0".into()),
            ("page_loads_yesterday", yesterday.to_string()),
            (
                "query",
                format!(
                    "SELECT toStartOfFiveMinute(minute) AS t, countMerge(samples) AS samples FROM vitals_1m \
                     WHERE site = {} AND minute >= toDateTime({}) AND minute < toDateTime({}) GROUP BY t ORDER BY t",
                    quote(site),
                    end.saturating_sub(window + DAY_SECS),
                    end
                ),
            ),
        ],
        starts_at,
        samples: yesterday,
    })
}

/// A SQL string literal.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// p75 and samples per step of one series, for `clickhouse-client --database rum`.
fn investigate_series_sql(
    (site, route, device, metric): SeriesKey<'_>,
    step_secs: u32,
    from: u32,
    to: u32,
    weighting: Weighting,
) -> String {
    let inner = crate::store::steps_sql(step_secs, weighting)
        .replacen('?', &format!("[{}]", quote(metric)), 1)
        .replacen('?', &from.to_string(), 1)
        .replacen('?', &to.to_string(), 1);
    format!(
        "SELECT toDateTime(step_start) AS step, p75, samples FROM ({inner}) WHERE site = {} AND route = {} AND device = {} ORDER BY step",
        quote(site),
        quote(route),
        quote(device)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SiteMinute;

    // A multiple of the 5-minute step.
    const T0: u32 = 1_800_000_100 / 300 * 300;
    const CAP: usize = 500;

    /// A step of LCP whose exact p75 is `p75` (so above the default 4000 exactly when it is).
    fn step(route: &str, start: u32, p75: f64, samples: u64) -> StepStat {
        StepStat {
            site: "shop".into(),
            route: route.into(),
            device: "mobile".into(),
            metric: "LCP".into(),
            step_start: start,
            p75,
            samples,
            above: p75 > 4000.0,
        }
    }

    fn by_start(stats: &[StepStat]) -> BTreeMap<u32, &StepStat> {
        stats.iter().map(|s| (s.step_start, s)).collect()
    }

    /// A step whose sketch p75 is `p75` while the exact decision (from the counts) is `above`.
    fn sketched(start: u32, p75: f64, above: bool) -> StepStat {
        StepStat {
            above,
            ..step("edge", start, p75, 1000)
        }
    }

    fn slow_steps(route: &str, from: u32, n: u32, samples: u64) -> Vec<StepStat> {
        (0..n)
            .map(|i| step(route, from + i * 300, 5000.0, samples))
            .collect()
    }

    fn steps_data(steps: Vec<StepStat>) -> StoredData {
        StoredData {
            steps,
            ..Default::default()
        }
    }

    /// LCP samples by minute.
    fn minutes(pairs: &[(u32, u64)]) -> SiteMetricMinutes<'static> {
        BTreeMap::from([("LCP", pairs.iter().copied().collect())])
    }

    #[test]
    fn fires_after_the_whole_window_and_not_a_minute_before() {
        let data = steps_data(slow_steps("slow", T0, 8, 20));
        let rules = Rules::default();
        assert!(evaluate(&rules, &data, T0 + 29 * 60, 60, CAP).is_empty());
        let alerts = evaluate(&rules, &data, T0 + 30 * 60, 60, CAP);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(a.name(), "WebVitalsLCPP75Poor");
        assert_eq!(a.starts_at, T0);
        assert_eq!(a.ends_at, T0 + 30 * 60 + 180);
        assert_eq!(a.annotations["samples"], "120");
        // Later evaluations keep the same start.
        assert_eq!(
            evaluate(&rules, &data, T0 + 40 * 60 + 7, 60, CAP)[0].starts_at,
            T0
        );
    }

    #[test]
    fn too_few_samples_or_a_gap_never_fire() {
        let rules = Rules::default();
        let thin = steps_data(slow_steps("thin", T0, 12, 8));
        for minute in 0..60 {
            assert!(evaluate(&rules, &thin, T0 + minute * 60, 60, CAP).is_empty());
        }
        let mut gap = slow_steps("gap", T0, 6, 100);
        gap.remove(3);
        assert!(evaluate(&rules, &steps_data(gap), T0 + 30 * 60, 60, CAP).is_empty());
    }

    #[test]
    fn resolves_once_after_recovery() {
        let rules = Rules::default();
        let mut steps = slow_steps("slow", T0, 6, 20);
        steps.push(step("slow", T0 + 30 * 60, 1000.0, 20));
        let data = steps_data(steps);
        let resolved = evaluate(&rules, &data, T0 + 35 * 60, 60, CAP);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, AlertState::Resolved);
        assert_eq!(resolved[0].ends_at, T0 + 35 * 60);
        assert!(evaluate(&rules, &data, T0 + 36 * 60, 60, CAP).is_empty());
    }

    #[test]
    fn p75_poor_finds_the_start_of_the_bad_run_and_its_numbers() {
        let rules = Rules::default();
        let mut stats = slow_steps("slow", T0, 8, 10);
        stats.insert(0, step("slow", T0 - 300, 1000.0, 10));
        let steps: BTreeMap<u32, &StepStat> = stats.iter().map(|s| (s.step_start, s)).collect();
        let rule = rules.metric_rules()[0];
        let key = ("shop", "slow", "mobile", "LCP");
        let end = T0 + 40 * 60;
        let f = p75_poor(
            &rules,
            rule,
            key,
            &steps,
            end,
            T0 - 3600,
            Weighting::SampleRate,
        )
        .unwrap();
        assert_eq!(f.alertname, "WebVitalsLCPP75Poor");
        assert_eq!(
            f.starts_at, T0,
            "the good step before the run stops the search"
        );
        assert_eq!(f.samples, 60);
        assert_eq!(
            f.subject,
            [
                ("site", "shop".to_string()),
                ("route", "slow".into()),
                ("device", "mobile".into()),
                ("metric", "LCP".into())
            ]
        );
        assert!(p75_poor(
            &rules,
            rule,
            key,
            &steps,
            T0 + 30 * 60,
            T0 - 3600,
            Weighting::SampleRate
        )
        .is_some());
        // Every step bad, but 6 x 8 = 48 samples: under the 50 the window needs.
        let thin_stats = slow_steps("thin", T0, 6, 8);
        let thin: BTreeMap<u32, &StepStat> = thin_stats.iter().map(|s| (s.step_start, s)).collect();
        assert!(p75_poor(
            &rules,
            rule,
            key,
            &thin,
            T0 + 30 * 60,
            T0,
            Weighting::SampleRate
        )
        .is_none());
        // A p75 equal to the threshold is not above it.
        let at = [step("slow", T0, 4000.0, 100)];
        let one: BTreeMap<u32, &StepStat> = at.iter().map(|s| (s.step_start, s)).collect();
        let short = Rules {
            for_minutes: 5,
            ..Default::default()
        };
        assert!(p75_poor(&short, rule, key, &one, T0 + 300, T0, Weighting::SampleRate).is_none());
    }

    #[test]
    fn the_stored_decision_decides_not_the_sketch_p75() {
        let rules = Rules::default();
        let rule = rules.metric_rules()[0];
        let key = ("shop", "edge", "mobile", "LCP");
        let end = T0 + 30 * 60;
        // The data: 600 LCP of 2500 ms and 400 of 4000 ms a step. The sketch says 4003.2, the
        // counts say p75 = 4000, not above 4000: no alert.
        let at_threshold: Vec<StepStat> = (0..6)
            .map(|i| sketched(T0 + i * 300, 4003.2, false))
            .collect();
        assert!(p75_poor(
            &rules,
            rule,
            key,
            &by_start(&at_threshold),
            end,
            T0,
            Weighting::SampleRate
        )
        .is_none());
        assert!(evaluate(&rules, &steps_data(at_threshold), end, 60, CAP).is_empty());
        // Above by the counts while the sketch reads under the threshold: it fires, and shows the
        // sketch's p75.
        let above: Vec<StepStat> = (0..6)
            .map(|i| sketched(T0 + i * 300, 3990.0, true))
            .collect();
        let f = p75_poor(
            &rules,
            rule,
            key,
            &by_start(&above),
            end,
            T0,
            Weighting::SampleRate,
        )
        .unwrap();
        assert_eq!(f.details[0], ("p75", "3990".to_string()));
        assert_eq!(f.samples, 6000);
        let alerts = evaluate(&rules, &steps_data(above.clone()), end, 60, CAP);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].name(), "WebVitalsLCPP75Poor");
        // One step not above by the counts in the window: nothing, whatever its sketch says.
        let mut one_not = above.clone();
        one_not[2] = sketched(T0 + 600, 9000.0, false);
        assert!(p75_poor(
            &rules,
            rule,
            key,
            &by_start(&one_not),
            end,
            T0,
            Weighting::SampleRate
        )
        .is_none());
        // The start of the run is found the same way: a step before it whose sketch is above but
        // whose counts are not stops the search.
        let mut run = above;
        run.insert(0, sketched(T0 - 300, 4003.2, false));
        run.insert(0, sketched(T0 - 600, 3990.0, true));
        let f = p75_poor(
            &rules,
            rule,
            key,
            &by_start(&run),
            end,
            T0 - 3600,
            Weighting::SampleRate,
        )
        .unwrap();
        assert_eq!(f.starts_at, T0);
    }

    #[test]
    fn beacons_stopped_needs_the_minimum_volume_a_day_earlier() {
        let rules = Rules::default();
        let end = T0 + 2 * DAY_SECS;
        let yesterday = end - DAY_SECS - 600;
        // 100 samples the same minutes yesterday, silent for the last 40 minutes.
        let enough = minutes(&[(yesterday, 60), (yesterday + 60, 40), (end - 40 * 60, 5)]);
        let f = beacons_stopped(&rules, "busy", &enough, end).unwrap();
        assert_eq!(f.alertname, "WebVitalsBeaconsStopped");
        assert_eq!(f.severity, "critical");
        assert_eq!(f.samples, 100);
        assert_eq!(f.starts_at, end - 40 * 60 + 60);
        assert_eq!(
            f.subject,
            [("site", "busy".to_string()), ("metric", "beacons".into())]
        );
        let alert = f.alert(AlertState::Firing, end + 180);
        assert_eq!(alert.annotations["page_loads_yesterday"], "100");
        // 99 is under the default minimum; a sample in the window means not stopped.
        let thin = minutes(&[(yesterday, 99)]);
        assert!(beacons_stopped(&rules, "thin", &thin, end).is_none());
        let live = minutes(&[(yesterday, 500), (end - 60, 1)]);
        assert!(beacons_stopped(&rules, "live", &live, end).is_none());
        // With no minute today it starts when the window does.
        let f = beacons_stopped(&rules, "busy", &minutes(&[(yesterday, 100)]), end).unwrap();
        assert_eq!(f.starts_at, end - 30 * 60);
    }

    #[test]
    fn beacons_stopped_counts_page_loads_not_samples_of_every_metric() {
        let rules = Rules::default();
        let end = T0 + 2 * DAY_SECS;
        let yesterday = end - DAY_SECS - 600;
        // 20 beacons of five vitals: 100 samples, 20 page loads.
        let five: SiteMetricMinutes<'_> = ["LCP", "INP", "CLS", "FCP", "TTFB"]
            .into_iter()
            .map(|m| (m, BTreeMap::from([(yesterday, 20)])))
            .collect();
        assert!(beacons_stopped(&rules, "five", &five, end).is_none());
        // 100 page loads with LCP, 60 of them with INP too: 100 page loads.
        let loads: SiteMetricMinutes<'_> = BTreeMap::from([
            ("LCP", BTreeMap::from([(yesterday, 100)])),
            ("INP", BTreeMap::from([(yesterday, 60)])),
        ]);
        let f = beacons_stopped(&rules, "busy", &loads, end).unwrap();
        assert_eq!(f.samples, 100);
        // A sample of any metric today means not stopped; the last one of any metric is the start.
        let mut live = loads.clone();
        live.insert("CLS", BTreeMap::from([(end - 60, 1)]));
        assert!(beacons_stopped(&rules, "busy", &live, end).is_none());
        let mut gone = loads;
        gone.insert("CLS", BTreeMap::from([(end - 40 * 60, 1)]));
        gone.insert("TTFB", BTreeMap::from([(end - 50 * 60, 1)]));
        let f = beacons_stopped(&rules, "busy", &gone, end).unwrap();
        assert_eq!(f.starts_at, end - 40 * 60 + 60);
    }

    #[test]
    fn beacons_stopped_needs_traffic_yesterday() {
        let rules = Rules::default();
        let now = T0 + 2 * DAY_SECS;
        let minute = |site: &str, at: u32| SiteMinute {
            site: site.into(),
            metric: "LCP".into(),
            minute: at,
            samples: 100,
        };
        let data = StoredData {
            site_minutes: vec![
                minute("busy", now - DAY_SECS - 600),
                minute("busy", now - 40 * 60),
                minute("new", now - 40 * 60),
                minute("live", now - DAY_SECS - 600),
                minute("live", now - 1000),
                minute("live", now - 60),
            ],
            ..Default::default()
        };
        let alerts = evaluate(&rules, &data, now, 60, CAP);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].name(), "WebVitalsBeaconsStopped");
        assert_eq!(alerts[0].label("site"), "busy");
        assert_eq!(alerts[0].starts_at, now - 40 * 60 + 60);
    }

    #[test]
    fn the_builder_puts_labels_and_annotations_together() {
        let f = Finding {
            alertname: "X",
            severity: "warning".into(),
            subject: vec![("site", "shop".into())],
            summary: "s".into(),
            details: vec![("samples", "7".into())],
            starts_at: 10,
            samples: 7,
        };
        let a = f.alert(AlertState::Resolved, 20);
        assert_eq!(
            a.labels,
            BTreeMap::from([
                ("alertname".to_string(), "X".to_string()),
                ("severity".into(), "warning".into()),
                ("site".into(), "shop".into()),
            ])
        );
        assert_eq!(
            a.annotations,
            BTreeMap::from([
                ("samples".to_string(), "7".to_string()),
                ("summary".into(), "s".into()),
            ])
        );
        assert_eq!(
            (a.starts_at, a.ends_at, a.state),
            (10, 20, AlertState::Resolved)
        );
    }

    /// `n` stopped sites, `site-000` with the fewest samples yesterday.
    fn stopped_sites(n: u64, now: u32) -> StoredData {
        StoredData {
            site_minutes: (0..n)
                .map(|i| SiteMinute {
                    site: format!("site-{i:03}"),
                    metric: "LCP".into(),
                    minute: now - DAY_SECS - 600,
                    samples: 100 + i,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_cap_keeps_the_biggest_and_counts_the_rest_in_one_alert() {
        let now = T0 + 2 * DAY_SECS;
        let data = stopped_sites(30, now);
        let alerts = evaluate(&Rules::default(), &data, now, 60, 10);
        assert_eq!(alerts.len(), 11, "{alerts:?}");
        let summary = &alerts[0];
        assert_eq!(summary.name(), "RumAlertsTruncated");
        assert_eq!(summary.label("severity"), "warning");
        assert_eq!(summary.annotations["omitted"], "20");
        assert_eq!(summary.annotations["max_alerts"], "10");
        assert_eq!((summary.starts_at, summary.ends_at), (now, now + 180));
        let kept: Vec<&str> = alerts[1..].iter().map(|a| a.label("site")).collect();
        let expected: Vec<String> = (20..30).rev().map(|i| format!("site-{i:03}")).collect();
        assert_eq!(kept, expected);
        // Candidates the store counted but did not read are omitted too.
        let counted = StoredData {
            not_fetched: 5,
            ..data.clone()
        };
        let alerts = evaluate(&Rules::default(), &counted, now, 60, 10);
        assert_eq!(alerts[0].annotations["omitted"], "25");
        // Under the cap: no summary.
        assert_eq!(evaluate(&Rules::default(), &data, now, 60, 30).len(), 30);
    }

    #[test]
    fn the_cap_ranks_firing_then_severity_then_samples() {
        let now = T0 + 2 * DAY_SECS;
        let mut data = stopped_sites(3, now);
        // A slow route: warning, with more samples than any stopped site (critical).
        data.steps = (0..6)
            .map(|i| step("slow", now - 30 * 60 + i * 300, 9000.0, 1000))
            .collect();
        let alerts = evaluate(&Rules::default(), &data, now, 60, 3);
        let names: Vec<(&str, &str)> = alerts.iter().map(|a| (a.name(), a.label("site"))).collect();
        assert_eq!(
            names,
            [
                ("RumAlertsTruncated", ""),
                ("WebVitalsBeaconsStopped", "site-002"),
                ("WebVitalsBeaconsStopped", "site-001"),
                ("WebVitalsBeaconsStopped", "site-000"),
            ]
        );
        // A resolved alert ranks after every firing one: the slow route recovers in the next
        // step, while one site is still stopped.
        let later = now + 300;
        let mut next = stopped_sites(1, later);
        next.steps = data.steps.clone();
        next.steps.push(step("slow", now, 100.0, 1000));
        let alerts = evaluate(&Rules::default(), &next, later, 300, 1);
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert_eq!(alerts[0].annotations["omitted"], "1");
        assert_eq!(
            (alerts[1].name(), alerts[1].state),
            ("WebVitalsBeaconsStopped", AlertState::Firing)
        );
        let all = evaluate(&Rules::default(), &next, later, 300, 2);
        assert_eq!(
            (all[1].name(), all[1].state),
            ("WebVitalsLCPP75Poor", AlertState::Resolved)
        );
        // The same data in any order gives the same alerts.
        let mut reversed = data.clone();
        reversed.site_minutes.reverse();
        reversed.steps.reverse();
        assert_eq!(
            evaluate(&Rules::default(), &reversed, now, 60, 3),
            evaluate(&Rules::default(), &data, now, 60, 3)
        );
    }
}
