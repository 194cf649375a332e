//! Final values, not first values: `web-vitals` gives each metric of a page load an id, and the
//! collector sends a metric again when its value changed (CLS and INP grow while the page lives, LCP
//! changes until the first input). The last value sent is the one stored: it replaces the one before
//! it in `vitals_raw` (a row with the next `revision`) and in `vitals_1m` (the rollup takes the
//! replaced value out of its bucket, in the same minute, and puts the new one in).
//!
//! **Where the value before comes from.** A metric id's messages share a Kafka key
//! (`site|route|device`), hence a partition, and a partition is written in offset order: the value
//! a re-send replaces is the latest one stored before it. It is looked for
//! - in the INSERT being planned (the id sent twice in one batch: one row, with the last value);
//! - in [`FinalValues`], what this consumer stored (bounded by `consumer.dedup_capacity`, oldest
//!   first out; a partition's memory is forgotten whenever its floor is read again, since another
//!   member may have written it since);
//! - in `vitals_raw` itself, when the beacon says the metric was sent before (`resend`, see
//!   `rum_schemas::MetricSample`) and the memory has no value: after a restart, a rebalance, or
//!   more ids than the memory holds.
//!
//! **Rules**, for a metric whose id has a value already:
//! - the same value again is dropped (`rum_consumer_metrics_deduplicated_total`);
//! - another route or device than the first value's, or another UTC day, is dropped and counted
//!   (`rum_consumer_resends_dropped_total{reason}`): the replacement row takes the first row's
//!   `received_at`, route, device and sample rate, so that the rollup's retraction lands in the same
//!   group with the weight it added, and one INSERT stays in one day's partition;
//! - otherwise the new value replaces it (`rum_consumer_metrics_replaced_total`).
//!
//! **Exactly once.** At most one row of an id is in `vitals_raw` without its rollup: an INSERT holds
//! one row per id, and rows a killed writer left without their rollup are rolled up alone before
//! anything else is written (`crate::write::Writer::write_group`). Reading such a row back gives its
//! rollup with the retraction of the value it replaced, which was rolled up already.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use rum_schemas::Rating;

/// A map keyed by 64-bit hashes, which uses them as they are instead of hashing them again.
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// The hasher of [`KeyMap`]: a `u64` key is its own hash.
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

/// The key of a metric id: SipHash with fixed keys of `(site, metric, id)`, 64 bits. It lives in
/// memory only.
pub fn metric_key(site: &str, metric: &str, id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (site, metric, id).hash(&mut h);
    h.finish()
}

/// The hash of a row's `(route, device)`: a replacement must have its first value's.
pub fn place(route: &str, device: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (route, device).hash(&mut h);
    h.finish()
}

const DAY: u32 = 86_400;

/// The stored value of a metric id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Current {
    /// The value.
    pub value: f64,
    /// Its rating.
    pub rating: Rating,
    /// Its revision (0: the first value).
    pub revision: u32,
    /// The first row's `received_at` (unix seconds): every replacement has it.
    pub received_at: u32,
    /// [`place`] of the first row.
    pub place: u64,
    /// The first row's sample rate: a replacement keeps it, so that it takes out the weight it added.
    pub sample_rate: f64,
}

struct Entry {
    current: Current,
    partition: i32,
    epoch: u64,
}

/// What this consumer stored of recent metric ids, bounded: about 100 bytes an id with the hash
/// table's slack (25 MB at the default 250,000 ids).
pub struct FinalValues {
    capacity: usize,
    map: KeyMap<Entry>,
    order: VecDeque<u64>,
    /// A partition's entries count only while its epoch is the one they were stored under.
    epochs: HashMap<i32, u64>,
    next_epoch: u64,
}

impl FinalValues {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: KeyMap::with_capacity_and_hasher(capacity.min(1 << 20), Default::default()),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
            epochs: HashMap::new(),
            next_epoch: 0,
        }
    }

    /// Forgets what is remembered of `partition`'s ids: its floor is being read again, and another
    /// member may have written them in between.
    pub fn forget_partition(&mut self, partition: i32) {
        self.next_epoch += 1;
        self.epochs.insert(partition, self.next_epoch);
    }

    fn epoch(&self, partition: i32) -> u64 {
        self.epochs.get(&partition).copied().unwrap_or(0)
    }

    /// The stored value of `key`, when this consumer stored it in `partition` since it last read the
    /// partition's floor.
    pub fn get(&self, key: u64, partition: i32) -> Option<Current> {
        self.map
            .get(&key)
            .filter(|e| e.partition == partition && e.epoch == self.epoch(partition))
            .map(|e| e.current)
    }

    /// Remembers the stored value of `key` in `partition`.
    pub fn remember(&mut self, key: u64, partition: i32, current: Current) {
        let epoch = self.epoch(partition);
        let entry = Entry {
            current,
            partition,
            epoch,
        };
        if self.map.insert(key, entry).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One metric with an id, among the messages an INSERT writes, in offset order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occurrence {
    /// [`metric_key`].
    pub key: u64,
    /// [`place`] of its message.
    pub place: u64,
    /// Its message's partition.
    pub partition: i32,
    /// Its message's `received_at` (unix seconds).
    pub received_at: u32,
    /// The value.
    pub value: f64,
    /// Its rating.
    pub rating: Rating,
    /// Its message's sample rate.
    pub sample_rate: f64,
    /// Where it is: (message index in the batch, metric index in the message).
    pub at: (usize, usize),
}

/// Why a metric with an id is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The value stored already, sent again.
    Unchanged,
    /// A later message of the same INSERT replaces it: one row with the last value.
    Superseded,
    /// Its first value was received on another UTC day.
    OtherDay,
    /// Its first value has another route or device.
    OtherPlace,
}

/// What becomes of a metric with an id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    /// Written: the row's `received_at` and sample rate (the first value's), its revision, and the
    /// value and rating it replaces.
    Keep {
        /// The row's `received_at`.
        received_at: u32,
        /// The row's sample rate.
        sample_rate: f64,
        /// Its revision.
        revision: u32,
        /// The value it replaces.
        replaces: Option<(f64, Rating)>,
    },
    /// Not written.
    Drop(Dropped),
}

/// Counts of one INSERT's resolution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Metrics that replaced a value (stored, or earlier in the same INSERT).
    pub replaced: u64,
    /// The same value sent again.
    pub unchanged: u64,
    /// Re-sends of a first value received on another UTC day.
    pub other_day: u64,
    /// Re-sends with another route or device than the first value.
    pub other_place: u64,
}

/// The fates of an INSERT's metrics with ids, and what to remember once it is stored.
#[derive(Debug, Default)]
pub struct Resolved {
    /// By (message index, metric index).
    pub fates: HashMap<(usize, usize), Fate>,
    /// The stored value of each id the INSERT writes: (key, partition, value).
    pub current: Vec<(u64, i32, Current)>,
    /// The counts.
    pub counts: Counts,
}

/// Resolves the metrics with ids of one INSERT of `day` (start of its UTC day), in offset order.
/// `before` gives an id's value stored before this INSERT, if any.
pub fn resolve(
    occurrences: &[Occurrence],
    day: u32,
    before: impl Fn(&Occurrence) -> Option<Current>,
) -> Resolved {
    struct Pending {
        base: Option<Current>,
        received_at: u32,
        sample_rate: f64,
        place: u64,
        value: f64,
        rating: Rating,
        at: (usize, usize),
        partition: i32,
    }
    let mut resolved = Resolved::default();
    let mut order: Vec<u64> = Vec::new();
    let mut pending: KeyMap<Pending> = KeyMap::default();
    for o in occurrences {
        // The value stored before this INSERT, asked only for an id's first metric in it.
        let stored = if pending.contains_key(&o.key) {
            None
        } else {
            before(o)
        };
        let (value, received_at, place) = match (pending.get(&o.key), &stored) {
            (Some(p), _) => (p.value, p.received_at, p.place),
            (None, Some(c)) => (c.value, c.received_at, c.place),
            (None, None) => {
                order.push(o.key);
                pending.insert(
                    o.key,
                    Pending {
                        base: None,
                        received_at: o.received_at,
                        sample_rate: o.sample_rate,
                        place: o.place,
                        value: o.value,
                        rating: o.rating,
                        at: o.at,
                        partition: o.partition,
                    },
                );
                continue;
            }
        };
        let dropped = if place != o.place {
            resolved.counts.other_place += 1;
            Some(Dropped::OtherPlace)
        } else if received_at - received_at % DAY != day {
            resolved.counts.other_day += 1;
            Some(Dropped::OtherDay)
        } else if value == o.value {
            resolved.counts.unchanged += 1;
            Some(Dropped::Unchanged)
        } else {
            None
        };
        if let Some(why) = dropped {
            resolved.fates.insert(o.at, Fate::Drop(why));
            continue;
        }
        resolved.counts.replaced += 1;
        match (pending.get_mut(&o.key), stored) {
            (Some(p), _) => {
                resolved.fates.insert(p.at, Fate::Drop(Dropped::Superseded));
                p.value = o.value;
                p.rating = o.rating;
                p.at = o.at;
            }
            (None, base) => {
                order.push(o.key);
                pending.insert(
                    o.key,
                    Pending {
                        base,
                        received_at,
                        sample_rate: base.map_or(o.sample_rate, |b| b.sample_rate),
                        place,
                        value: o.value,
                        rating: o.rating,
                        at: o.at,
                        partition: o.partition,
                    },
                );
            }
        }
    }
    for key in order {
        let Some(p) = pending.remove(&key) else {
            continue;
        };
        let revision = p.base.map_or(0, |b| b.revision.saturating_add(1));
        resolved.fates.insert(
            p.at,
            Fate::Keep {
                received_at: p.received_at,
                sample_rate: p.sample_rate,
                revision,
                replaces: p.base.map(|b| (b.value, b.rating)),
            },
        );
        resolved.current.push((
            key,
            p.partition,
            Current {
                value: p.value,
                rating: p.rating,
                revision,
                received_at: p.received_at,
                place: p.place,
                sample_rate: p.sample_rate,
            },
        ));
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: u32 = 20_000 * DAY;

    fn occ(id: &str, value: f64, at: (usize, usize)) -> Occurrence {
        Occurrence {
            key: metric_key("shop", "CLS", id),
            place: place("cart", "mobile"),
            partition: 0,
            received_at: D + 60 + at.0 as u32,
            value,
            rating: rum_schemas::MetricName::CLS.rate(value),
            sample_rate: 1.0,
            at,
        }
    }

    fn stored(value: f64, revision: u32) -> Current {
        Current {
            value,
            rating: rum_schemas::MetricName::CLS.rate(value),
            revision,
            received_at: D + 5,
            place: place("cart", "mobile"),
            sample_rate: 0.5,
        }
    }

    #[test]
    fn a_first_value_is_kept_as_revision_zero_and_remembered() {
        let r = resolve(&[occ("a", 0.05, (0, 0))], D, |_| None);
        assert_eq!(
            r.fates[&(0, 0)],
            Fate::Keep {
                received_at: D + 60,
                sample_rate: 1.0,
                revision: 0,
                replaces: None
            }
        );
        assert_eq!(r.current.len(), 1);
        assert_eq!(r.current[0].2.value, 0.05);
        assert_eq!(r.counts, Counts::default());
    }

    #[test]
    fn a_resend_replaces_the_stored_value_in_its_first_rows_minute() {
        let r = resolve(&[occ("a", 0.3, (4, 1))], D, |_| Some(stored(0.05, 0)));
        assert_eq!(
            r.fates[&(4, 1)],
            Fate::Keep {
                received_at: D + 5,
                sample_rate: 0.5,
                revision: 1,
                replaces: Some((0.05, Rating::Good))
            }
        );
        assert_eq!(r.current[0].2.revision, 1);
        assert_eq!(r.current[0].2.received_at, D + 5);
        assert_eq!(r.counts.replaced, 1);
    }

    #[test]
    fn one_insert_writes_one_row_per_id_with_the_last_value() {
        // First value and two re-sends in one INSERT: one row, the last value, replacing nothing.
        let occurrences = [
            occ("a", 0.05, (0, 0)),
            occ("a", 0.1, (1, 0)),
            occ("b", 0.2, (1, 1)),
            occ("a", 0.3, (2, 0)),
        ];
        let r = resolve(&occurrences, D, |_| None);
        assert_eq!(r.fates[&(0, 0)], Fate::Drop(Dropped::Superseded));
        assert_eq!(r.fates[&(1, 0)], Fate::Drop(Dropped::Superseded));
        assert_eq!(
            r.fates[&(2, 0)],
            Fate::Keep {
                received_at: D + 60,
                sample_rate: 1.0,
                revision: 0,
                replaces: None
            }
        );
        assert!(matches!(r.fates[&(1, 1)], Fate::Keep { revision: 0, .. }));
        assert_eq!(r.current.len(), 2);
        assert_eq!(r.counts.replaced, 2);
        // With a stored value: the one row replaces the stored one, once.
        let r = resolve(&occurrences[..2], D, |o| {
            (o.key == metric_key("shop", "CLS", "a")).then(|| stored(0.01, 3))
        });
        assert_eq!(
            r.fates[&(1, 0)],
            Fate::Keep {
                received_at: D + 5,
                sample_rate: 0.5,
                revision: 4,
                replaces: Some((0.01, Rating::Good))
            }
        );
        assert_eq!(r.fates[&(0, 0)], Fate::Drop(Dropped::Superseded));
    }

    #[test]
    fn the_same_value_another_place_or_another_day_is_dropped_and_counted() {
        let r = resolve(&[occ("a", 0.05, (0, 0))], D, |_| Some(stored(0.05, 0)));
        assert_eq!(r.fates[&(0, 0)], Fate::Drop(Dropped::Unchanged));
        assert!(r.current.is_empty());
        let mut elsewhere = occ("a", 0.3, (0, 0));
        elsewhere.place = place("home", "mobile");
        let r = resolve(&[elsewhere], D, |_| Some(stored(0.05, 0)));
        assert_eq!(r.fates[&(0, 0)], Fate::Drop(Dropped::OtherPlace));
        let mut yesterday = stored(0.05, 0);
        yesterday.received_at = D - 10;
        let r = resolve(&[occ("a", 0.3, (0, 0))], D, |_| Some(yesterday));
        assert_eq!(r.fates[&(0, 0)], Fate::Drop(Dropped::OtherDay));
        assert_eq!(
            r.counts,
            Counts {
                other_day: 1,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn the_memory_is_bounded_and_forgets_a_partition_read_again() {
        let mut m = FinalValues::new(2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            m.remember(metric_key("s", "CLS", id), 0, stored(i as f64, 0));
        }
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(metric_key("s", "CLS", "a"), 0), None, "oldest out");
        assert_eq!(m.get(metric_key("s", "CLS", "c"), 0).unwrap().value, 2.0);
        assert_eq!(
            m.get(metric_key("s", "CLS", "c"), 1),
            None,
            "another partition"
        );
        m.forget_partition(0);
        assert_eq!(m.get(metric_key("s", "CLS", "c"), 0), None, "read again");
        m.remember(metric_key("s", "CLS", "c"), 0, stored(7.0, 1));
        assert_eq!(m.get(metric_key("s", "CLS", "c"), 0).unwrap().value, 7.0);
        assert_eq!(m.len(), 2, "an update takes no new place");
    }

    #[test]
    fn keys_are_per_site_metric_and_id() {
        assert_ne!(
            metric_key("shop", "CLS", "a"),
            metric_key("blog", "CLS", "a")
        );
        assert_ne!(
            metric_key("shop", "CLS", "a"),
            metric_key("shop", "INP", "a")
        );
        assert_ne!(metric_key("shop", "ab", "c"), metric_key("shopa", "b", "c"));
    }
}
