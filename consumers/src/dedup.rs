//! Client duplicates: `web-vitals` gives each metric of a page load an id, and the collector may
//! send a metric again in a later beacon when its value changed (CLS grows while the page lives).
//! The first value stored for a `(site, metric id)` wins; later ones are dropped and counted.
//!
//! The memory of ids is bounded (`consumer.dedup_capacity`, oldest forgotten first) and per
//! process: a re-send that arrives after its first value was forgotten, or after a restart of the
//! consumer, is stored again. Page loads re-send within seconds, so a capacity of minutes of traffic
//! is enough.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use rum_schemas::BeaconMessage;

/// A set of metric-id keys. The keys are already 64-bit hashes, so the set uses them as they are
/// instead of hashing them again.
pub type MetricIdSet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// The hasher of [`MetricIdSet`]: a `u64` key is its own hash.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }

    /// Only `u64` keys are hashed here; other input is folded in, never ignored.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

/// Recently stored metric ids, as 64-bit hashes of `(site, id)`.
pub struct SeenMetricIds {
    capacity: usize,
    set: MetricIdSet,
    order: VecDeque<u64>,
}

impl SeenMetricIds {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            set: MetricIdSet::with_capacity_and_hasher(capacity.min(1 << 20), Default::default()),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
        }
    }

    /// An empty set for the ids of one batch, sized for `metrics` ids (no rehash while it fills).
    pub fn batch_set(metrics: usize) -> MetricIdSet {
        MetricIdSet::with_capacity_and_hasher(metrics, Default::default())
    }

    /// The key of `(site, id)`: SipHash with fixed keys (`DefaultHasher::new()`), 64 bits. It lives
    /// in memory only. [`SeenMetricIds::drop_seen`] hashes the site once per message and continues
    /// from a copy of that state for each id, which gives the same key.
    #[cfg(test)]
    fn key(site: &str, id: &str) -> u64 {
        let mut h = DefaultHasher::new();
        (site, id).hash(&mut h);
        h.finish()
    }

    /// Removes from `message` the metrics stored before or already kept in this batch (`batch`);
    /// returns how many were removed. Metrics without an id are always kept.
    pub fn drop_seen(&self, message: &mut BeaconMessage, batch: &mut MetricIdSet) -> usize {
        let before = message.metrics.len();
        // `(site, id).hash()` is `site.hash()` then `id.hash()`: the site's part is done once.
        let mut site = DefaultHasher::new();
        message.site.hash(&mut site);
        message.metrics.retain(|m| {
            if m.id.is_empty() {
                return true;
            }
            let mut h = site.clone();
            m.id.hash(&mut h);
            let key = h.finish();
            !self.set.contains(&key) && batch.insert(key)
        });
        before - message.metrics.len()
    }

    /// Remembers the ids of a stored batch.
    pub fn remember(&mut self, batch: MetricIdSet) {
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
            page_id: String::new(),
            release: String::new(),
            rtt: "unknown".into(),
            browser: "unknown".into(),
            browser_major: 0,
            metrics: ids
                .iter()
                .map(|id| MetricSample {
                    name: MetricName::CLS,
                    value: 0.1,
                    id: (*id).into(),
                    rating: MetricName::CLS.rate(0.1),
                    attribution: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_first_value_of_an_id_wins_within_and_across_batches() {
        let mut seen = SeenMetricIds::new(100);
        let mut batch = MetricIdSet::default();
        let mut first = message("shop", &["a", "b", ""]);
        let mut again = message("shop", &["a", ""]);
        assert_eq!(seen.drop_seen(&mut first, &mut batch), 0);
        assert_eq!(seen.drop_seen(&mut again, &mut batch), 1, "same batch");
        assert_eq!(again.metrics.len(), 1, "the metric without an id stays");
        seen.remember(batch);
        let mut later = message("shop", &["b", "c"]);
        assert_eq!(
            seen.drop_seen(&mut later, &mut MetricIdSet::default()),
            1,
            "a later batch"
        );
        let mut other_site = message("blog", &["a"]);
        assert_eq!(
            seen.drop_seen(&mut other_site, &mut MetricIdSet::default()),
            0,
            "ids are per site"
        );
    }

    #[test]
    fn the_key_is_the_hash_of_site_and_id() {
        let seen = SeenMetricIds::new(10);
        let mut batch = SeenMetricIds::batch_set(2);
        seen.drop_seen(&mut message("shop", &["a", "b"]), &mut batch);
        let mut expected = MetricIdSet::default();
        expected.extend([
            SeenMetricIds::key("shop", "a"),
            SeenMetricIds::key("shop", "b"),
        ]);
        assert_eq!(batch, expected);
        assert_ne!(
            SeenMetricIds::key("shop", "ab"),
            SeenMetricIds::key("shopa", "b")
        );
    }

    #[test]
    fn forgets_the_oldest_ids_beyond_its_capacity() {
        let mut seen = SeenMetricIds::new(2);
        for id in ["a", "b", "c"] {
            let mut batch = MetricIdSet::default();
            seen.drop_seen(&mut message("s", &[id]), &mut batch);
            seen.remember(batch);
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen.drop_seen(&mut message("s", &["a"]), &mut MetricIdSet::default()),
            0,
            "forgotten"
        );
        assert_eq!(
            seen.drop_seen(&mut message("s", &["c"]), &mut MetricIdSet::default()),
            1
        );
    }
}
