//! Which partitions this member owns, from which offset each may still be written, and why every
//! message accepted by the ingest is stored exactly once in `vitals_raw` and in `vitals_1m`.
//!
//! ## What ClickHouse gives us
//! - An INSERT of one block into one table partition is one part: stored whole or not at all. The
//!   write path keeps every INSERT to one UTC day (both tables are partitioned by day or month) and
//!   below [`rum_clickhouse::ledger::MAX_ROWS_PER_INSERT`] rows.
//! - Nothing is atomic across tables, and a materialized view's failure does not undo its source's
//!   insert. So no view stands between the tables we rely on: `vitals_raw` and `vitals_1m` are
//!   written by two INSERTs, and each keeps its own record of what it holds, in the same part as
//!   the rows: `vitals_raw` rows carry their message's (topic, topic id, partition, offset);
//!   `vitals_1m` gets, in the same block as a batch's rollup rows, a *ledger row* per partition with
//!   the next offset (`vitals_1m_input_v2` is a Null table with one view, so its INSERT is one block of
//!   `vitals_1m` or nothing).
//! - An INSERT whose answer is lost (a reset connection, a timeout, a restart) may have been stored,
//!   and may even still be running. Every INSERT carries a `query_id` naming the group, topic and
//!   partitions, so unfinished ones can be found, asked to stop and waited for before anything is read
//!   again (ClickHouse 18.16 cannot kill a running INSERT; it finishes or fails, and then it is gone).
//!
//! ## The rules
//! 1. **Floors are learnt, never assumed.** A partition's floor (everything below it is in both
//!    tables) is read from the ledgers of `vitals_1m` when the partition is assigned and after ANY
//!    failed step of a write; before reading, this group's unfinished INSERTs of the partition are
//!    waited for (on every node in cluster mode). Messages below the floor are skipped.
//! 2. **`vitals_raw` is checked, not trusted.** Above the floor, `vitals_raw` may hold a prefix of
//!    the partition's messages (an INSERT that reached `vitals_raw` and not `vitals_1m`): before
//!    writing a partition whose state is unknown, the write asks `vitals_raw` for the highest offset
//!    it holds above the floor (in the INSERT's day partition of the table). Messages up to it are
//!    not inserted again; their rows are read back from `vitals_raw` and rolled up, so `vitals_1m`
//!    gets exactly the rows `vitals_raw` has. The held messages are a prefix because each partition
//!    is written in offset order, one INSERT at a time, stopping at the first failure. The prefix
//!    may run past the INSERT (its writer, killed before its rollup, cut its batches otherwise than
//!    the new owner): the partition's state then stays unknown, and its next INSERT is checked
//!    too, until one goes past the prefix.
//! 3. **Order: `vitals_raw`, then `vitals_1m` with the ledger.** So the ledger never runs ahead of
//!    `vitals_raw`, and a failure between them is repaired by rule 2 on the next attempt.
//! 4. **Only a proven owner writes.** Ownership changes only inside a poll (the rebalance
//!    callbacks). Before each INSERT the member proves it is still in the group's current generation
//!    by committing its floors (the coordinator refuses a fenced member's commit); an INSERT is sent
//!    only within `consumer.fence_lease_ms` of the last proof being sent. A partition's new owner
//!    waits the same lease after its assignment, then waits out the old owner's unfinished INSERTs of it
//!    (rule 1), then reads the floor. The old owner's last proof was sent before the generation that
//!    took the partition away began, so its last INSERT was sent before the new owner's wait ended.
//! 5. **A topic is known by its id.** Ledgers and raw rows carry the Kafka topic id. A ledger of
//!    another id (the topic deleted and created again, a broker whose log was wiped), or a floor
//!    above the partition's high watermark (a log that lost what was stored), starts a new
//!    incarnation of the partition from its start, logged and counted
//!    (`rum_consumer_topic_incarnations_total`), never skipped silently.
//!
//! ## What is left
//! - **A member paused between its last lease check and the moment its INSERT is listed by the server**
//!   (the request built and sent, a connection opened, ClickHouse's queue: INSERTs set
//!   `queue_max_wait_ms = 0`), for longer than the new owner's lease and checks. Its INSERT then lands
//!   after the new owner read the floor: a batch doubled (shown by a review with gdb pausing a member
//!   at the INSERT for 45 s; reproduced with testkit's `FaultProxy` in `Mode::Hold`, which delays one
//!   INSERT until released). The lease narrows this to a pause at one point of the code. A check
//!   inside ClickHouse was tried and taken out: each row carrying the ledger its writer read, a view
//!   on a Null input table joining the current ledger and dropping rows behind it. It closed the case
//!   above (1,380 rows for 1,080 without it, exact with it), but (a) on 18.16 a view with a JOIN
//!   subquery fails on the local shard of a `Distributed` INSERT (`Code: 393, There is no query`), so
//!   cluster mode cannot use it, and (b) a late rollup landing between the successor's raw and rollup
//!   INSERTs, when the two cut their batches differently, makes the fence drop the successor's rollup
//!   with no error: every rollup would have to be verified against the ledger afterwards.
//! - A log truncated under the same topic id (an unclean leader election) is taken for a new
//!   incarnation: what Kafka still retains of the partition is written again.
//! - A poison message too large for the dead-letter topic stops its partition (counted in
//!   `rum_consumer_dead_letter_errors_total`, not skipped).
//! - Messages that produced no rows (every metric a duplicate of an earlier one) do not appear in
//!   `vitals_raw`; the ledger still covers them once the INSERT's rollup is stored.
//! - A client's re-send of a metric id replaces its stored value (see [`crate::final_values`]), found
//!   in the same INSERT, in memory, or in `vitals_raw`. That is about client re-sends, not about Kafka
//!   messages: each message is stored once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rum_kafka::KafkaLog;

/// Where a partition resumes, and under which incarnation of the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// The topic id (or a derived incarnation name) its rows and ledgers carry.
    pub incarnation: String,
    /// The next offset to write: everything below is in both tables.
    pub next: i64,
    /// The topic ids `vitals_raw` rows above `next` may carry.
    pub raw_ids: Vec<String>,
    /// False: `vitals_raw` may hold messages at or above `next` (rule 2); checked before writing.
    pub raw_checked: bool,
}

impl Floor {
    /// A floor just read from the ledgers: `vitals_raw` not checked yet.
    pub fn new(incarnation: String, next: i64, raw_ids: Vec<String>) -> Self {
        Self {
            incarnation,
            next,
            raw_ids,
            raw_checked: false,
        }
    }
}

#[derive(Debug)]
struct Owned {
    assigned_at: Instant,
    floor: Option<Floor>,
}

/// Partitions owned, their floors, and the last proof of ownership.
#[derive(Debug, Default)]
pub struct Ownership {
    owned: HashMap<i32, Owned>,
    /// When the last successful proof (a commit in the current generation) was sent, by the
    /// monotonic clock and by the wall clock (the monotonic clock stands still while a VM or a laptop
    /// is suspended; the wall clock catches up when it resumes).
    proof: Option<(Instant, std::time::SystemTime)>,
    /// The last offset fetched of each partition since its assignment.
    fetched: HashMap<i32, i64>,
}

impl Ownership {
    /// True when this member owns `partition`.
    pub fn owns(&self, partition: i32) -> bool {
        self.owned.contains_key(&partition)
    }

    /// Owned partitions whose floor is not known: (ready to be learnt now, still within the lease).
    pub fn floors_missing(&self, lease: Duration, now: Instant) -> (Vec<i32>, Vec<i32>) {
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for (p, o) in &self.owned {
            if o.floor.is_none() {
                if now.duration_since(o.assigned_at) >= lease {
                    ready.push(*p);
                } else {
                    waiting.push(*p);
                }
            }
        }
        ready.sort_unstable();
        waiting.sort_unstable();
        (ready, waiting)
    }

    /// Records a floor read from ClickHouse.
    pub fn set_floor(&mut self, partition: i32, floor: Floor) {
        if let Some(o) = self.owned.get_mut(&partition) {
            o.floor = Some(floor);
        }
    }

    /// The floor of an owned partition, when known.
    pub fn floor(&self, partition: i32) -> Option<&Floor> {
        self.owned.get(&partition)?.floor.as_ref()
    }

    /// Records a fetched message; `Some(last)` when its offset is below the last one fetched of the
    /// partition since it was assigned (the log went back: deleted and created again, or truncated).
    /// The partition's floor is then forgotten.
    pub fn observe_fetch(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let last = self.fetched.insert(partition, offset)?;
        if offset >= last {
            return None;
        }
        if let Some(o) = self.owned.get_mut(&partition) {
            o.floor = None;
        }
        Some(last)
    }

    /// Forgets every floor (after a failed step: rule 1).
    pub fn forget_floors(&mut self) {
        for o in self.owned.values_mut() {
            o.floor = None;
        }
    }

    /// The known floors, to commit (and so prove ownership).
    pub fn known_floors(&self) -> Vec<(i32, i64)> {
        let mut f: Vec<(i32, i64)> = self
            .owned
            .iter()
            .filter_map(|(p, o)| Some((*p, o.floor.as_ref()?.next)))
            .collect();
        f.sort_unstable();
        f
    }

    /// True when a proof sent less than `lease` before `now` is at hand, by both clocks.
    pub fn proven_within(&self, lease: Duration, now: Instant) -> bool {
        self.proof.is_some_and(|(sent, sent_wall)| {
            let wall = std::time::SystemTime::now()
                .duration_since(sent_wall)
                .unwrap_or(Duration::MAX);
            now.saturating_duration_since(sent) < lease && wall < lease
        })
    }

    /// Records a successful proof sent at `sent` (the wall clock read with it).
    pub fn proven_at(&mut self, sent: Instant) {
        let wall = std::time::SystemTime::now()
            .checked_sub(sent.elapsed())
            .unwrap_or(std::time::UNIX_EPOCH);
        self.proof = Some((sent, wall));
    }

    /// True when the message at `offset` of `partition` may be written: owned and at or above the floor.
    pub fn should_write(&self, partition: i32, offset: i64) -> bool {
        matches!(self.floor(partition), Some(f) if offset >= f.next)
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

    /// Moves the floor to `next` after an INSERT stored both tables up to it. `vitals_raw` then holds
    /// nothing at or above it, unless `raw_held_above`: the check before the INSERT found more of the
    /// partition there (an INSERT of a member that cut its batches otherwise, killed before its rollup),
    /// so the next INSERT checks again (rule 2).
    pub fn advance(&mut self, partition: i32, next: i64, raw_held_above: bool) {
        if let Some(Some(f)) = self.owned.get_mut(&partition).map(|o| o.floor.as_mut()) {
            f.next = f.next.max(next);
            f.raw_checked = !raw_held_above;
        }
    }

    /// Owned partitions.
    pub fn partitions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self.owned.keys().copied().collect();
        p.sort_unstable();
        p
    }

    fn assign(&mut self, partitions: impl Iterator<Item = i32>, now: Instant) {
        for p in partitions {
            // A newly assigned partition's floor must be read again: another member may have written it.
            self.owned.insert(
                p,
                Owned {
                    assigned_at: now,
                    floor: None,
                },
            );
            // Read again from the committed offset: going back is not a reset.
            self.fetched.remove(&p);
        }
        self.proof = None;
    }

    /// Assigns `partitions` now, as a rebalance does (tests of the write path).
    #[cfg(test)]
    pub(crate) fn assign_for_tests(&mut self, partitions: &[i32]) {
        self.assign(partitions.iter().copied(), Instant::now());
    }

    fn revoke(&mut self, partitions: impl Iterator<Item = i32>) {
        let revoked: HashSet<i32> = partitions.collect();
        self.owned.retain(|p, _| !revoked.contains(p));
        self.fetched.retain(|p, _| !revoked.contains(p));
        self.proof = None;
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned: Vec<i32> = self.partitions(list).collect();
                tracing::info!(?assigned, "partitions assigned");
                // librdkafka keeps a partition's pause across a revoke and a new assignment: one paused
                // during a failed write and assigned again would never be fetched. A fresh assignment
                // fetches; the write path pauses it again if it has to.
                if let Err(e) = consumer.resume(list) {
                    tracing::warn!(error = %e, "cannot resume the assigned partitions");
                }
                self.ownership
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .assign(assigned.into_iter(), Instant::now());
            }
            Rebalance::Error(e) => tracing::error!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(next: i64) -> Floor {
        Floor::new("id".into(), next, vec!["id".into()])
    }

    #[test]
    fn writes_only_owned_partitions_above_their_floor() {
        let mut o = Ownership::default();
        let t0 = Instant::now();
        o.assign([0, 1].into_iter(), t0);
        assert!(
            !o.should_write(0, 5),
            "floor unknown: nothing may be written"
        );
        o.set_floor(0, floor(10));
        assert!(!o.should_write(0, 9), "stored before");
        assert!(o.should_write(0, 10));
        o.advance(0, 13, false);
        assert!(!o.should_write(0, 12) && o.should_write(0, 13));
        assert!(
            o.floor(0).unwrap().raw_checked,
            "after a write vitals_raw holds nothing above"
        );
        o.advance(0, 20, true);
        assert!(
            !o.floor(0).unwrap().raw_checked,
            "vitals_raw held more than the write: checked again"
        );
        assert!(!o.should_write(2, 100), "not owned");
    }

    #[test]
    fn a_new_owner_learns_floors_only_after_the_lease() {
        let mut o = Ownership::default();
        let t0 = Instant::now();
        o.assign([4, 2].into_iter(), t0);
        let lease = Duration::from_secs(5);
        assert_eq!(o.floors_missing(lease, t0), (vec![], vec![2, 4]));
        assert_eq!(o.floors_missing(lease, t0 + lease), (vec![2, 4], vec![]));
    }

    #[test]
    fn a_proof_lasts_one_lease_and_a_rebalance_voids_it() {
        let mut o = Ownership::default();
        let t0 = Instant::now();
        let lease = Duration::from_secs(5);
        o.assign([0].into_iter(), t0);
        assert!(!o.proven_within(lease, t0));
        o.proven_at(t0);
        assert!(o.proven_within(lease, t0 + Duration::from_secs(4)));
        assert!(!o.proven_within(lease, t0 + lease));
        o.revoke([0].into_iter());
        assert!(!o.proven_within(lease, t0), "a rebalance needs a new proof");
    }

    #[test]
    fn offsets_going_back_within_an_assignment_forget_the_floor() {
        let mut o = Ownership::default();
        o.assign([0, 1].into_iter(), Instant::now());
        o.set_floor(0, floor(500));
        o.set_floor(1, floor(7));
        assert_eq!(o.observe_fetch(0, 500), None);
        assert_eq!(o.observe_fetch(0, 501), None);
        assert_eq!(o.observe_fetch(1, 7), None);
        assert_eq!(
            o.observe_fetch(0, 0),
            Some(501),
            "the topic was created again"
        );
        assert!(o.floor(0).is_none() && o.floor(1).is_some());
        // Assigned again: read again from the committed offset, which is no reset.
        o.assign([1].into_iter(), Instant::now());
        assert_eq!(o.observe_fetch(1, 3), None);
    }

    #[test]
    fn a_failed_write_forgets_every_floor() {
        let mut o = Ownership::default();
        o.assign([0, 1].into_iter(), Instant::now());
        o.set_floor(0, floor(3));
        o.set_floor(1, floor(4));
        assert_eq!(o.known_floors(), vec![(0, 3), (1, 4)]);
        o.forget_floors();
        assert!(o.known_floors().is_empty());
        assert!(!o.should_write(0, 100));
    }

    #[test]
    fn selects_each_offset_once_even_when_a_batch_holds_it_twice() {
        let mut o = Ownership::default();
        o.assign([0, 1].into_iter(), Instant::now());
        o.set_floor(0, floor(5));
        o.set_floor(1, floor(0));
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
        let t0 = Instant::now();
        o.assign([3].into_iter(), t0);
        o.set_floor(3, floor(7));
        o.revoke([3].into_iter());
        assert!(!o.owns(3) && !o.should_write(3, 100));
        o.assign([3].into_iter(), t0);
        assert!(
            !o.should_write(3, 100),
            "another member may have written it meanwhile"
        );
        assert_eq!(o.floors_missing(Duration::ZERO, t0).0, vec![3]);
    }
}
