//! The evaluator: a pure function of the stored data and `now`. It keeps no state, so a restart
//! does not reset a pending alert and two replicas send identical alerts.
//!
//! * A p75 alert holds at the end `E` of the last complete step when every step of
//!   `[E - for, E)` has samples and a p75 strictly above the threshold, and the window holds at
//!   least `min_samples` samples in all (per window, not per step). It starts where the run of bad
//!   steps ending at `E` starts (looked for within the lookback).
//! * Beacons stopped holds for a site when `[E - for, E)` has no sample while `[E - for - 1d, E - 1d)`
//!   had some. It starts a minute after the site's last stored minute.
//! * Firing alerts end `now + 3 intervals` (re-sent every interval). An alert that held at
//!   `now - interval` and no longer holds is sent once as resolved, ending `now`.

use std::collections::{BTreeMap, HashMap};

use crate::rules::Rules;
use crate::store::{spans, StepStat, StoredData, DAY_SECS};
use crate::{BEACONS_METRIC, BEACONS_STOPPED};

/// Whether an alert is firing or was just resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// `summary`, `p75`, `threshold`, `samples` (`samples_yesterday` for beacons stopped), and `query`:
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
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// A label's value, "" when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// A condition that holds at one step end.
struct Holding {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: u32,
}

type SeriesKey<'a> = (&'a str, &'a str, &'a str, &'a str);

/// Every alert to send at `now`: the firing ones and the ones resolved since `now - interval`.
pub fn evaluate(rules: &Rules, data: &StoredData, now: u32, interval_secs: u32) -> Vec<Alert> {
    let current = spans(rules, now, interval_secs);
    let lookback_start = current.start;
    let previous_end = spans(rules, now.saturating_sub(interval_secs), interval_secs).end;
    let series = group_series(rules, data);
    let site_minutes = group_site_minutes(data);
    let holding_now = holding_at(rules, &series, &site_minutes, current.end, lookback_start);
    let holding_before = holding_at(rules, &series, &site_minutes, previous_end, lookback_start);

    let mut alerts: Vec<Alert> = Vec::new();
    for h in holding_now.values() {
        alerts.push(Alert {
            labels: h.labels.clone(),
            annotations: h.annotations.clone(),
            starts_at: h.starts_at,
            ends_at: now + 3 * interval_secs,
            state: AlertState::Firing,
        });
    }
    for (key, h) in holding_before {
        if !holding_now.contains_key(&key) {
            alerts.push(Alert {
                labels: h.labels,
                annotations: h.annotations,
                starts_at: h.starts_at,
                ends_at: now,
                state: AlertState::Resolved,
            });
        }
    }
    alerts
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

fn group_site_minutes(data: &StoredData) -> HashMap<&str, BTreeMap<u32, u64>> {
    let mut sites: HashMap<&str, BTreeMap<u32, u64>> = HashMap::new();
    for m in &data.site_minutes {
        *sites
            .entry(m.site.as_str())
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
    site_minutes: &HashMap<&str, BTreeMap<u32, u64>>,
    end: u32,
    lookback_start: u32,
) -> BTreeMap<BTreeMap<String, String>, Holding> {
    let mut out = BTreeMap::new();
    let step = rules.step_minutes * 60;
    let window = rules.for_minutes * 60;
    for (alertname, metric, rule) in rules.metric_rules() {
        for (&(site, route, device, m), steps) in series {
            if m != metric.as_str() {
                continue;
            }
            let bad = |start: u32| {
                steps
                    .get(&start)
                    .filter(|s| s.samples > 0 && s.p75 > rule.threshold)
            };
            let window_start = end.saturating_sub(window);
            let window_steps: Option<Vec<&StepStat>> = (window_start..end)
                .step_by(step as usize)
                .map(|start| bad(start).copied())
                .collect();
            let Some(window_steps) = window_steps else {
                continue;
            };
            let samples: u64 = window_steps.iter().map(|s| s.samples).sum();
            if window_steps.is_empty() || samples < rules.min_samples {
                continue;
            }
            let mut starts_at = window_start;
            while starts_at >= lookback_start + step && bad(starts_at - step).is_some() {
                starts_at -= step;
            }
            let lowest = window_steps
                .iter()
                .map(|s| s.p75)
                .fold(f64::INFINITY, f64::min);
            let latest = window_steps.last().map_or(lowest, |s| s.p75);
            let unit = if metric == rum_schemas::MetricName::CLS {
                ""
            } else {
                " ms"
            };
            let fmt = |v: f64| {
                if unit.is_empty() {
                    format!("{v:.3}")
                } else {
                    format!("{v:.0}{unit}")
                }
            };
            let labels = labels(&[
                ("alertname", alertname),
                ("site", site),
                ("route", route),
                ("device", device),
                ("metric", metric.as_str()),
                ("severity", &rule.severity),
            ]);
            let mut annotations = BTreeMap::new();
            annotations.insert(
                "summary".into(),
                format!(
                    "p75 {} {} above {} on {site} {route} {device}: in every {}-minute step of the last {} minutes (lowest step {}, {samples} samples)",
                    metric.as_str(),
                    fmt(latest),
                    fmt(rule.threshold),
                    rules.step_minutes,
                    rules.for_minutes,
                    fmt(lowest),
                ),
            );
            annotations.insert("p75".into(), format!("{latest}"));
            annotations.insert("threshold".into(), format!("{}", rule.threshold));
            annotations.insert("samples".into(), samples.to_string());
            annotations.insert(
                "query".into(),
                investigate_series_sql(
                    site,
                    route,
                    device,
                    metric.as_str(),
                    step,
                    starts_at.min(window_start).saturating_sub(3600),
                    end,
                ),
            );
            out.insert(
                labels.clone(),
                Holding {
                    labels,
                    annotations,
                    starts_at,
                },
            );
        }
    }
    let stopped = &rules.beacons_stopped;
    if stopped.enabled {
        let window = stopped.for_minutes * 60;
        let sum = |minutes: &BTreeMap<u32, u64>, from: u32, to: u32| -> u64 {
            minutes.range(from..to).map(|(_, n)| n).sum()
        };
        let mut sites: Vec<_> = site_minutes.iter().collect();
        sites.sort_by_key(|(site, _)| *site);
        for (site, minutes) in sites {
            if !rules.site_in_scope(site) {
                continue;
            }
            let today = sum(minutes, end.saturating_sub(window), end);
            let yesterday = sum(
                minutes,
                end.saturating_sub(window + DAY_SECS),
                end.saturating_sub(DAY_SECS),
            );
            if today > 0 || yesterday == 0 {
                continue;
            }
            let starts_at = minutes
                .range(end.saturating_sub(DAY_SECS)..end)
                .filter(|(_, n)| **n > 0)
                .map(|(m, _)| m + 60)
                .next_back()
                .unwrap_or(end - window);
            let labels = labels(&[
                ("alertname", BEACONS_STOPPED),
                ("site", site),
                ("metric", BEACONS_METRIC),
                ("severity", &stopped.severity),
            ]);
            let mut annotations = BTreeMap::new();
            annotations.insert(
                "summary".into(),
                format!(
                    "no beacons from {site} for the last {} minutes, while the same minutes yesterday had {yesterday} samples",
                    stopped.for_minutes
                ),
            );
            annotations.insert("samples".into(), "0".into());
            annotations.insert("samples_yesterday".into(), yesterday.to_string());
            annotations.insert(
                "query".into(),
                format!(
                    "SELECT toStartOfFiveMinute(minute) AS t, countMerge(samples) AS samples FROM vitals_1m \
                     WHERE site = {} AND minute >= toDateTime({}) AND minute < toDateTime({}) GROUP BY t ORDER BY t",
                    quote(site),
                    end.saturating_sub(window + DAY_SECS),
                    end
                ),
            );
            out.insert(
                labels.clone(),
                Holding {
                    labels,
                    annotations,
                    starts_at,
                },
            );
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

/// A SQL string literal.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// p75 and samples per step of one series, for `clickhouse-client --database rum`.
fn investigate_series_sql(
    site: &str,
    route: &str,
    device: &str,
    metric: &str,
    step_secs: u32,
    from: u32,
    to: u32,
) -> String {
    let inner = crate::store::steps_sql(step_secs)
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

    fn step(route: &str, start: u32, p75: f64, samples: u64) -> StepStat {
        StepStat {
            site: "shop".into(),
            route: route.into(),
            device: "mobile".into(),
            metric: "LCP".into(),
            step_start: start,
            p75,
            samples,
        }
    }

    fn slow_steps(route: &str, from: u32, n: u32, samples: u64) -> Vec<StepStat> {
        (0..n)
            .map(|i| step(route, from + i * 300, 5000.0, samples))
            .collect()
    }

    #[test]
    fn fires_after_the_whole_window_and_not_a_minute_before() {
        let data = StoredData {
            steps: slow_steps("slow", T0, 8, 20),
            site_minutes: vec![],
        };
        let rules = Rules::default();
        assert!(evaluate(&rules, &data, T0 + 29 * 60, 60).is_empty());
        let alerts = evaluate(&rules, &data, T0 + 30 * 60, 60);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(a.name(), "WebVitalsLCPP75Poor");
        assert_eq!(a.starts_at, T0);
        assert_eq!(a.ends_at, T0 + 30 * 60 + 180);
        assert_eq!(a.annotations["samples"], "120");
        // Later evaluations keep the same start.
        assert_eq!(
            evaluate(&rules, &data, T0 + 40 * 60 + 7, 60)[0].starts_at,
            T0
        );
    }

    #[test]
    fn too_few_samples_or_a_gap_never_fire() {
        let rules = Rules::default();
        let thin = StoredData {
            steps: slow_steps("thin", T0, 12, 8),
            site_minutes: vec![],
        };
        for minute in 0..60 {
            assert!(evaluate(&rules, &thin, T0 + minute * 60, 60).is_empty());
        }
        let mut gap = slow_steps("gap", T0, 6, 100);
        gap.remove(3);
        let gap = StoredData {
            steps: gap,
            site_minutes: vec![],
        };
        assert!(evaluate(&rules, &gap, T0 + 30 * 60, 60).is_empty());
    }

    #[test]
    fn resolves_once_after_recovery() {
        let rules = Rules::default();
        let mut steps = slow_steps("slow", T0, 6, 20);
        steps.push(step("slow", T0 + 30 * 60, 1000.0, 20));
        let data = StoredData {
            steps,
            site_minutes: vec![],
        };
        let resolved = evaluate(&rules, &data, T0 + 35 * 60, 60);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, AlertState::Resolved);
        assert_eq!(resolved[0].ends_at, T0 + 35 * 60);
        assert!(evaluate(&rules, &data, T0 + 36 * 60, 60).is_empty());
    }

    #[test]
    fn beacons_stopped_needs_traffic_yesterday() {
        let rules = Rules::default();
        let now = T0 + 2 * DAY_SECS;
        let minute = |site: &str, at: u32| SiteMinute {
            site: site.into(),
            minute: at,
            samples: 5,
        };
        let data = StoredData {
            steps: vec![],
            site_minutes: vec![
                minute("busy", now - DAY_SECS - 600),
                minute("busy", now - 40 * 60),
                minute("new", now - 40 * 60),
                minute("live", now - DAY_SECS - 600),
                minute("live", now - 1000),
                minute("live", now - 60),
            ],
        };
        let alerts = evaluate(&rules, &data, now, 60);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].name(), "WebVitalsBeaconsStopped");
        assert_eq!(alerts[0].label("site"), "busy");
        assert_eq!(alerts[0].starts_at, now - 40 * 60 + 60);
    }
}
