//! Client duplicates: `web-vitals` gives each metric of a page load an id, and the collector may
//! send a metric again in a later beacon when its value changed (CLS grows while the page lives).
//! The first value stored for a `(site, metric id)` wins; later ones are dropped and counted.
//!
//! The memory of ids is bounded (`consumer.dedup_capacity`, oldest forgotten first) and per
//! process: a re-send that arrives after its first value was forgotten, or after a restart of the
//! consumer, is stored again. Page loads re-send within seconds, so a capacity of minutes of traffic
//! is enough.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use rum_schemas::BeaconMessage;

/// Recently stored metric ids, as 64-bit hashes of `(site, id)`.
pub struct SeenMetricIds {
    capacity: usize,
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl SeenMetricIds {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            set: HashSet::with_capacity(capacity.min(1 << 20)),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
        }
    }

    fn key(site: &str, id: &str) -> u64 {
        // DefaultHasher::new() has fixed keys: the same id hashes the same in every process.
        let mut h = DefaultHasher::new();
        (site, id).hash(&mut h);
        h.finish()
    }

    /// Removes from `message` the metrics stored before or already kept in this batch (`batch`);
    /// returns how many were removed. Metrics without an id are always kept.
    pub fn drop_seen(&self, message: &mut BeaconMessage, batch: &mut HashSet<u64>) -> usize {
        let before = message.metrics.len();
        let site = message.site.clone();
        message.metrics.retain(|m| {
            if m.id.is_empty() {
                return true;
            }
            let key = Self::key(&site, &m.id);
            !self.set.contains(&key) && batch.insert(key)
        });
        before - message.metrics.len()
    }

    /// Remembers the ids of a stored batch.
    pub fn remember(&mut self, batch: HashSet<u64>) {
        for key in batch {
            if self.set.insert(key) {
                self.order.push_back(key);
            }
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rum_schemas::{Device, MetricName, MetricSample};

    fn message(site: &str, ids: &[&str]) -> BeaconMessage {
        BeaconMessage {
            site: site.into(),
            route: "root".into(),
            device: Device::Mobile,
            nav_type: "navigate".into(),
            sample_rate: 1.0,
            received_at: 0,
            metrics: ids
                .iter()
                .map(|id| MetricSample {
                    name: MetricName::CLS,
                    value: 0.1,
                    id: (*id).into(),
                    rating: MetricName::CLS.rate(0.1),
                })
                .collect(),
        }
    }

    #[test]
    fn the_first_value_of_an_id_wins_within_and_across_batches() {
        let mut seen = SeenMetricIds::new(100);
        let mut batch = HashSet::new();
        let mut first = message("shop", &["a", "b", ""]);
        let mut again = message("shop", &["a", ""]);
        assert_eq!(seen.drop_seen(&mut first, &mut batch), 0);
        assert_eq!(seen.drop_seen(&mut again, &mut batch), 1, "same batch");
        assert_eq!(again.metrics.len(), 1, "the metric without an id stays");
        seen.remember(batch);
        let mut later = message("shop", &["b", "c"]);
        assert_eq!(
            seen.drop_seen(&mut later, &mut HashSet::new()),
            1,
            "a later batch"
        );
        let mut other_site = message("blog", &["a"]);
        assert_eq!(
            seen.drop_seen(&mut other_site, &mut HashSet::new()),
            0,
            "ids are per site"
        );
    }

    #[test]
    fn forgets_the_oldest_ids_beyond_its_capacity() {
        let mut seen = SeenMetricIds::new(2);
        for id in ["a", "b", "c"] {
            let mut batch = HashSet::new();
            seen.drop_seen(&mut message("s", &[id]), &mut batch);
            seen.remember(batch);
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen.drop_seen(&mut message("s", &["a"]), &mut HashSet::new()),
            0,
            "forgotten"
        );
        assert_eq!(
            seen.drop_seen(&mut message("s", &["c"]), &mut HashSet::new()),
            1
        );
    }
}
