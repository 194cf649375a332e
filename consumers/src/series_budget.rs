//! The places of the vitals histograms' series budget (`consumer.max_series`): which label sets
//! have their own series, which sites have a fold set, when each was last observed, and which are
//! idle. Pure bookkeeping with the clock as a parameter; `histograms` owns the series themselves.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rum_schemas::route::OTHER_ROUTE;

use crate::histograms::FOLDED;

/// Idle label sets are looked for at most this often.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// At most this many label sets are removed by one sweep (5 series families each); more wait for the
/// next sweep. The scan itself visits at most `consumer.max_series` label sets.
pub(crate) const SWEEP_LIMIT: usize = 10_000;

/// The places of the budget kept for the sites' fold sets: a tenth (0 under a budget of 10).
pub(crate) fn fold_reserve(max_series: usize) -> usize {
    max_series / 10
}

/// Where the beacons of a label set are observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Under its own labels.
    Own,
    /// Under `{site, "other", "other"}`.
    SiteFold,
    /// Under [`FOLDED`].
    Global,
}

/// The key of a label set: `site|route|device` (no label holds `|`). A site's fold set is
/// `site|other|other`, never a real label set (no device is `other`).
fn key(site: &str, route: &str, device: &str) -> String {
    format!("{site}|{route}|{device}")
}

/// The places of the budget in use, and when each label set was last observed.
pub(crate) struct SeriesBudget {
    /// Own label sets at most: `max` less the fold reserve and the place of [`FOLDED`].
    own_capacity: usize,
    /// Site fold sets at most.
    fold_reserve: usize,
    idle: Duration,
    /// Own label sets and site fold sets, by key, with when each was last observed.
    last_seen: HashMap<String, Instant>,
    /// Own label sets per site.
    sites: HashMap<String, usize>,
    own: usize,
    site_folds: usize,
    /// When [`FOLDED`] was last observed, while it has series.
    global: Option<Instant>,
    last_sweep: Option<Instant>,
}

impl SeriesBudget {
    pub(crate) fn new(max: usize, idle: Duration) -> Self {
        let fold_reserve = fold_reserve(max);
        Self {
            own_capacity: max.saturating_sub(1 + fold_reserve),
            fold_reserve,
            idle,
            last_seen: HashMap::new(),
            sites: HashMap::new(),
            own: 0,
            site_folds: 0,
            global: None,
            last_sweep: None,
        }
    }

    /// Where a label set's beacons go at `now`, taking a place for it if it needs one and one is free.
    pub(crate) fn place(
        &mut self,
        site: &str,
        route: &str,
        device: &str,
        now: Instant,
    ) -> Placement {
        let own = key(site, route, device);
        if let Some(seen) = self.last_seen.get_mut(&own) {
            *seen = now;
            return Placement::Own;
        }
        if self.own < self.own_capacity {
            self.last_seen.insert(own, now);
            *self.sites.entry(site.to_owned()).or_default() += 1;
            self.own += 1;
            return Placement::Own;
        }
        let fold = key(site, OTHER_ROUTE, OTHER_ROUTE);
        if let Some(seen) = self.last_seen.get_mut(&fold) {
            *seen = now;
            return Placement::SiteFold;
        }
        if self.sites.contains_key(site) && self.site_folds < self.fold_reserve {
            self.last_seen.insert(fold, now);
            self.site_folds += 1;
            return Placement::SiteFold;
        }
        self.global = Some(now);
        Placement::Global
    }

    /// Frees the places of label sets idle at `now` (at most `limit`, at most once per
    /// [`SWEEP_EVERY`]) and returns their labels, for their series to be removed.
    pub(crate) fn sweep(&mut self, now: Instant, limit: usize) -> Vec<[String; 3]> {
        if self
            .last_sweep
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return Vec::new();
        }
        self.last_sweep = Some(now);
        let idle = |seen: Instant| now.saturating_duration_since(seen) >= self.idle;
        let expired: Vec<String> = self
            .last_seen
            .iter()
            .filter(|(_, seen)| idle(**seen))
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect();
        let mut removed = Vec::with_capacity(expired.len() + 1);
        for key in expired {
            self.last_seen.remove(&key);
            let mut labels = key.splitn(3, '|').map(str::to_owned);
            let labels = [0; 3].map(|_| labels.next().unwrap_or_default());
            if labels[2] == OTHER_ROUTE {
                self.site_folds -= 1;
            } else {
                self.own -= 1;
                if let Entry::Occupied(mut site) = self.sites.entry(labels[0].clone()) {
                    *site.get_mut() -= 1;
                    if *site.get() == 0 {
                        site.remove();
                    }
                }
            }
            removed.push(labels);
        }
        if removed.len() < limit && self.global.is_some_and(idle) {
            self.global = None;
            removed.push(FOLDED.map(str::to_owned));
        }
        removed
    }

    pub(crate) fn in_use(&self) -> usize {
        self.own + self.site_folds + usize::from(self.global.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const IDLE: Duration = Duration::from_secs(3_600);

    #[test]
    fn a_sweep_runs_at_most_once_a_minute_and_removes_at_most_its_limit() {
        let mut budget = SeriesBudget::new(1_000, IDLE);
        let start = Instant::now();
        for i in 0..100 {
            let placement = budget.place(&format!("s{i}"), "r", "mobile", start);
            assert_eq!(placement, Placement::Own);
        }
        assert_eq!(
            budget.place("s0", "r", "mobile", start + IDLE),
            Placement::Own
        );
        assert!(budget.sweep(start, 30).is_empty());
        // Within a minute of the last sweep nothing is looked at.
        assert!(budget
            .sweep(start + SWEEP_EVERY - Duration::from_secs(1), 30)
            .is_empty());
        let sweep = start + IDLE;
        let first = budget.sweep(sweep, 30);
        assert_eq!(first.len(), 30);
        assert!(budget
            .sweep(sweep + SWEEP_EVERY - Duration::from_secs(1), 30)
            .is_empty());
        let mut removed = first;
        for minute in 1..=3 {
            removed.extend(budget.sweep(sweep + SWEEP_EVERY * minute, 30));
        }
        // s0 was seen again: 99 removed, in four sweeps, each once.
        assert_eq!(removed.len(), 99);
        let sites: HashSet<&str> = removed.iter().map(|l| l[0].as_str()).collect();
        assert_eq!(sites.len(), 99);
        assert!(!sites.contains("s0"));
        assert_eq!(budget.in_use(), 1);
        assert_eq!((budget.own, budget.sites.len()), (1, 1));
    }
}
