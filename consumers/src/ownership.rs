//! Which partitions this member owns, and from which offset each may still be written.
//!
//! Exactly once into ClickHouse rests on three rules:
//! 1. A batch is one INSERT into `vitals_raw`; the materialized views fill `vitals_1m` and
//!    `kafka_offsets` in the same INSERT, so a batch is stored whole or not at all.
//! 2. Before writing a partition for the first time after it was assigned, the member reads that
//!    partition's highest stored offset from `kafka_offsets` (its *floor*) and skips every message at
//!    or below it. Kafka's committed offset is only a hint for where to start reading, so a crash
//!    between the INSERT and the commit replays messages that are then skipped, not stored twice.
//! 3. A member writes only partitions it owns. Ownership changes only inside a poll (the rebalance
//!    callbacks run there), and the member never polls while an INSERT is in flight, so a revoked
//!    partition's messages still in hand are dropped before the next write, and the new owner reads
//!    the floor only after the old owner's last INSERT finished.
//!
//! The floors assume a topic's offsets only grow. A topic deleted and created again restarts at 0:
//! give the consumers a new `kafka.topic` then, or they skip the new topic's first messages as
//! stored. (`rum standalone`, whose embedded broker is new on every start, keeps its floors per
//! start for this reason: `ConsumerConfig::topic_incarnation`.)
//!
//! The remaining window: a process killed while its INSERT is still being processed by ClickHouse,
//! with the next owner reading the floor before ClickHouse finishes that INSERT. Rejoining the group
//! takes seconds and an INSERT of a batch milliseconds, so this needs ClickHouse to stall mid-insert
//! for longer than a rebalance.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rum_kafka::KafkaLog;

/// Partitions owned, and the next offset each may write (`None` until read from ClickHouse).
#[derive(Debug, Default)]
pub struct Ownership {
    floors: HashMap<i32, Option<i64>>,
}

impl Ownership {
    /// True when this member owns `partition`.
    pub fn owns(&self, partition: i32) -> bool {
        self.floors.contains_key(&partition)
    }

    /// Owned partitions whose floor is not known yet.
    pub fn floors_missing(&self) -> Vec<i32> {
        self.floors
            .iter()
            .filter(|(_, f)| f.is_none())
            .map(|(p, _)| *p)
            .collect()
    }

    /// Records the floor read from ClickHouse: the next offset to write is `stored + 1`.
    pub fn set_floor(&mut self, partition: i32, next: i64) {
        if let Some(floor) = self.floors.get_mut(&partition) {
            *floor = Some(next);
        }
    }

    /// True when the message at `offset` of `partition` may be written: owned and above the floor.
    /// Panics-free for unknown partitions (they are not owned).
    pub fn should_write(&self, partition: i32, offset: i64) -> bool {
        matches!(self.floors.get(&partition), Some(Some(next)) if offset >= *next)
    }

    /// Splits a batch into what may be written and what not, in order: a message is written when its
    /// partition is owned, it is above the floor, and no earlier message of the batch had the same or
    /// a later offset of that partition (a partition assigned again is read again from its committed
    /// offset, so a batch can hold a message twice).
    pub fn select<T>(
        &self,
        batch: Vec<T>,
        position: impl Fn(&T) -> (i32, i64),
    ) -> (Vec<T>, Vec<T>) {
        let mut next: HashMap<i32, i64> = HashMap::new();
        let (mut keep, mut skip) = (Vec::with_capacity(batch.len()), Vec::new());
        for item in batch {
            let (partition, offset) = position(&item);
            let in_order = next.get(&partition).is_none_or(|n| offset >= *n);
            if in_order && self.should_write(partition, offset) {
                next.insert(partition, offset + 1);
                keep.push(item);
            } else {
                skip.push(item);
            }
        }
        (keep, skip)
    }

    /// Moves the floor past a written message.
    pub fn advance(&mut self, partition: i32, offset: i64) {
        if let Some(Some(next)) = self.floors.get_mut(&partition) {
            *next = (*next).max(offset + 1);
        }
    }

    /// Owned partitions.
    pub fn partitions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self.floors.keys().copied().collect();
        p.sort_unstable();
        p
    }

    fn assign(&mut self, partitions: impl Iterator<Item = i32>) {
        for p in partitions {
            // A newly assigned partition's floor must be read again: another member may have written it.
            self.floors.insert(p, None);
        }
    }

    fn revoke(&mut self, partitions: impl Iterator<Item = i32>) {
        let revoked: HashSet<i32> = partitions.collect();
        self.floors.retain(|p, _| !revoked.contains(p));
    }
}

/// The consumer's context: keeps [`Ownership`] in step with the group's rebalances, and logs
/// librdkafka's errors.
pub struct OwnershipContext {
    topic: String,
    /// Shared with the consume loop.
    pub ownership: Arc<Mutex<Ownership>>,
    log: KafkaLog,
}

impl OwnershipContext {
    /// A context for members consuming `topic`.
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_string(),
            ownership: Arc::new(Mutex::new(Ownership::default())),
            log: KafkaLog::new("consumer"),
        }
    }

    fn partitions<'a>(
        &'a self,
        list: &'a rdkafka::TopicPartitionList,
    ) -> impl Iterator<Item = i32> + 'a {
        list.elements()
            .into_iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect::<Vec<_>>()
            .into_iter()
    }
}

rum_kafka::log_through!(OwnershipContext, log);

impl ConsumerContext for OwnershipContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: Vec<i32> = self.partitions(list).collect();
            tracing::info!(?revoked, "partitions revoked");
            self.ownership
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .revoke(revoked.into_iter());
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned: Vec<i32> = self.partitions(list).collect();
                tracing::info!(?assigned, "partitions assigned");
                self.ownership
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .assign(assigned.into_iter());
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_owned_partitions_above_their_floor() {
        let mut o = Ownership::default();
        o.assign([0, 1].into_iter());
        assert!(
            !o.should_write(0, 5),
            "floor unknown: nothing may be written"
        );
        assert_eq!(o.floors_missing().len(), 2);
        o.set_floor(0, 10);
        assert!(!o.should_write(0, 9), "stored before");
        assert!(o.should_write(0, 10));
        o.advance(0, 12);
        assert!(!o.should_write(0, 12) && o.should_write(0, 13));
        assert!(!o.should_write(2, 100), "not owned");
    }

    #[test]
    fn selects_each_offset_once_even_when_a_batch_holds_it_twice() {
        let mut o = Ownership::default();
        o.assign([0, 1].into_iter());
        o.set_floor(0, 5);
        o.set_floor(1, 0);
        let batch = vec![
            (0, 4),
            (0, 5),
            (0, 6),
            (1, 0),
            (0, 5),
            (0, 6),
            (0, 7),
            (2, 1),
        ];
        let (keep, skip) = o.select(batch, |m| *m);
        assert_eq!(keep, vec![(0, 5), (0, 6), (1, 0), (0, 7)]);
        assert_eq!(skip, vec![(0, 4), (0, 5), (0, 6), (2, 1)]);
    }

    #[test]
    fn a_revoked_then_reassigned_partition_needs_its_floor_again() {
        let mut o = Ownership::default();
        o.assign([3].into_iter());
        o.set_floor(3, 7);
        o.revoke([3].into_iter());
        assert!(!o.owns(3) && !o.should_write(3, 100));
        o.assign([3].into_iter());
        assert!(
            !o.should_write(3, 100),
            "another member may have written it meanwhile"
        );
        assert_eq!(o.floors_missing(), vec![3]);
    }
}
