//! What `rum alerts` does while ClickHouse cannot be read: firing alerts are not resolved, and the
//! outage itself alerts.
//!
//! Without data the evaluator cannot tell whether an alert still holds. Sending nothing would let
//! Alertmanager expire every firing alert at its `endsAt` (3 intervals) and notify "resolved" for
//! all of them; so each failed evaluation re-sends the last evaluation's firing alerts with `endsAt`
//! moved to `now + 3 intervals`. After `alerts.store_unavailable_after` failures in a row,
//! [`STORE_UNAVAILABLE`](crate::STORE_UNAVAILABLE) (critical) fires too, from the first failure;
//! the first evaluation that reads ClickHouse again sends it resolved.
//!
//! This is the only state the evaluator keeps, in memory. A restart during an outage would lose it,
//! and Alertmanager would resolve every firing alert at its `endsAt`; so when an evaluation fails
//! and nothing is remembered (after a start, or when nothing fired since), `rum alerts` reads back
//! the firing alerts of ours that Alertmanager holds ([`crate::recall`]) and re-sends those
//! ([`StoreOutage::remember`]). If Alertmanager cannot be read either, the failure is counted
//! (`rum_alerts_recall_errors_total`) and logged, and the alerts expire at their `endsAt`. The
//! new process counts the failures again and raises the outage alert after the same number of
//! them. Replicas recall each other's alerts too (the same `generatorURL`): they are identical.

use crate::evaluate::{Alert, AlertState, Finding};
use crate::STORE_UNAVAILABLE;

/// The evaluator's memory across evaluations: the last firing set and the failures in a row.
#[derive(Debug, Clone)]
pub struct StoreOutage {
    after: u32,
    failures: u32,
    since: u32,
    last_firing: Vec<Alert>,
    alert_sent: bool,
}

impl StoreOutage {
    /// Raises [`STORE_UNAVAILABLE`] after `after` failed evaluations in a row (at least 1).
    pub fn new(after: u32) -> Self {
        Self {
            after: after.max(1),
            failures: 0,
            since: 0,
            last_firing: Vec::new(),
            alert_sent: false,
        }
    }

    /// Whether no firing alert is remembered (nothing fired at the last successful evaluation, or
    /// none succeeded since the start).
    pub fn remembers_nothing(&self) -> bool {
        self.last_firing.is_empty()
    }

    /// Remembers `firing` as the last firing alerts (those Alertmanager holds of ours, after a
    /// restart); the next failed evaluations re-send them.
    pub fn remember(&mut self, firing: Vec<Alert>) {
        self.last_firing = firing
            .into_iter()
            .filter(|a| a.state == AlertState::Firing)
            .collect();
    }

    /// Failed evaluations in a row (0 after a successful one).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An evaluation read ClickHouse: its alerts are sent, the firing ones remembered, and the
    /// outage alert, if it was sent, is sent resolved.
    pub fn succeeded(&mut self, mut alerts: Vec<Alert>, now: u32) -> Vec<Alert> {
        self.last_firing = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .cloned()
            .collect();
        if self.alert_sent {
            alerts.insert(0, self.finding(now).alert(AlertState::Resolved, now));
        }
        self.failures = 0;
        self.alert_sent = false;
        alerts
    }

    /// An evaluation could not read ClickHouse: the last firing alerts again, ending 3 intervals
    /// from `now`, and the outage alert once the failures reach the threshold.
    pub fn failed(&mut self, now: u32, interval_secs: u32) -> Vec<Alert> {
        if self.failures == 0 {
            self.since = now;
        }
        self.failures = self.failures.saturating_add(1);
        let ends_at = now + 3 * interval_secs;
        let mut alerts = Vec::with_capacity(self.last_firing.len() + 1);
        if self.failures >= self.after {
            alerts.push(self.finding(now).alert(AlertState::Firing, ends_at));
            self.alert_sent = true;
        }
        alerts.extend(self.last_firing.iter().map(|a| Alert {
            ends_at,
            ..a.clone()
        }));
        alerts
    }

    fn finding(&self, now: u32) -> Finding {
        Finding {
            alertname: STORE_UNAVAILABLE,
            severity: "critical".into(),
            subject: Vec::new(),
            summary: format!(
                "the rum alert evaluator cannot read ClickHouse: {} evaluations in a row failed; \
                 its firing alerts are kept firing, none is resolved, new ones cannot fire",
                self.failures
            ),
            details: vec![("failures", self.failures.to_string())],
            starts_at: self.since.min(now),
            samples: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn alert(name: &str, state: AlertState, ends_at: u32) -> Alert {
        Alert {
            labels: BTreeMap::from([("alertname".to_string(), name.to_string())]),
            annotations: BTreeMap::new(),
            starts_at: 100,
            ends_at,
            state,
        }
    }

    fn names(alerts: &[Alert]) -> Vec<(&str, AlertState, u32)> {
        alerts
            .iter()
            .map(|a| (a.name(), a.state, a.ends_at))
            .collect()
    }

    #[test]
    fn an_outage_keeps_the_firing_alerts_and_alerts_after_n_failures() {
        let mut outage = StoreOutage::new(3);
        let sent = outage.succeeded(
            vec![
                alert("Slow", AlertState::Firing, 1030),
                alert("Gone", AlertState::Resolved, 1000),
            ],
            1000,
        );
        assert_eq!(sent.len(), 2, "a success passes its alerts through");
        // Two failures: the firing alert again, extended; no resolved one; no outage alert yet.
        assert_eq!(
            names(&outage.failed(1010, 10)),
            [("Slow", AlertState::Firing, 1040)]
        );
        assert_eq!(
            names(&outage.failed(1020, 10)),
            [("Slow", AlertState::Firing, 1050)]
        );
        assert_eq!(outage.failures(), 2);
        // The third: the outage alert fires, from the first failure.
        let third = outage.failed(1030, 10);
        assert_eq!(
            names(&third),
            [
                ("RumAlertsStoreUnavailable", AlertState::Firing, 1060),
                ("Slow", AlertState::Firing, 1060)
            ]
        );
        assert_eq!(third[0].starts_at, 1010);
        assert_eq!(third[0].label("severity"), "critical");
        assert_eq!(third[0].annotations["failures"], "3");
        assert_eq!(third[1].starts_at, 100, "the alert keeps its start");
        // Back: the outage alert is resolved once.
        let back = outage.succeeded(vec![alert("Slow", AlertState::Firing, 1070)], 1040);
        assert_eq!(
            names(&back),
            [
                ("RumAlertsStoreUnavailable", AlertState::Resolved, 1040),
                ("Slow", AlertState::Firing, 1070)
            ]
        );
        assert_eq!(outage.failures(), 0);
        assert_eq!(outage.succeeded(Vec::new(), 1050), []);
    }

    #[test]
    fn recalled_alerts_are_re_sent_until_an_evaluation_succeeds() {
        let mut outage = StoreOutage::new(3);
        assert!(outage.remembers_nothing());
        outage.remember(vec![
            alert("Slow", AlertState::Firing, 0),
            alert("Gone", AlertState::Resolved, 0),
        ]);
        assert!(!outage.remembers_nothing());
        assert_eq!(
            names(&outage.failed(1010, 10)),
            [("Slow", AlertState::Firing, 1040)]
        );
        outage.succeeded(Vec::new(), 1020);
        assert!(outage.remembers_nothing());
    }

    #[test]
    fn a_short_outage_sends_no_outage_alert_and_resolves_none() {
        let mut outage = StoreOutage::new(3);
        outage.succeeded(vec![alert("Slow", AlertState::Firing, 1030)], 1000);
        outage.failed(1010, 10);
        let back = outage.succeeded(Vec::new(), 1020);
        assert!(back.is_empty(), "{back:?}");
        // Nothing firing is remembered after a success without alerts.
        assert!(outage.failed(1030, 10).is_empty());
    }
}
