//! The query of `rum report` that no analyst query answers: the merged sketches of one metric of a
//! site per time step and device, from which the report reads (in Rust, with the rules of
//! [`crate::quantile`] and [`crate::weighted_percentile`]) the p75 trend, the distribution and the
//! p75 per device. The report's other numbers come from [`crate::P75Row::with_percentiles`] and the
//! analyst queries `top_lcp_elements.sql` and `top_inp_targets.sql`.

use clickhouse::Row;
use serde::Deserialize;

use crate::{StorageError, Weighting};

/// The counts and merged sketches of one metric of a site over one time step and one device (all
/// routes together).
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct SketchStep {
    /// The start of the step, unix seconds (a multiple of the step).
    pub at: u32,
    /// The device class.
    pub device: String,
    /// Samples in the step.
    pub samples: u64,
    /// Samples rated good, needs-improvement and poor (three numbers).
    pub ratings: Vec<u64>,
    /// The same, each sample weighing `1 / sample_rate` (0 for rows written before migration 005).
    pub weighted_ratings: Vec<f64>,
    /// The sketch's buckets, increasing (see [`crate::sketch`]).
    pub buckets: Vec<i16>,
    /// The count of each bucket.
    pub counts: Vec<u64>,
    /// The weighted sketch's buckets, increasing.
    pub weighted_buckets: Vec<i16>,
    /// The weight of each (the page loads its samples stand for).
    pub weights: Vec<f64>,
}

impl SketchStep {
    /// The sketch as `(bucket, weight)` pairs sorted by bucket, weighted as `weighting` says. Like the
    /// analyst queries, a weighted read falls back to the unweighted counts where the group has no
    /// weights (rows written before migration 005 only).
    pub fn sketch(&self, weighting: Weighting) -> Vec<(i16, f64)> {
        if weighting == Weighting::SampleRate && self.weights.iter().sum::<f64>() > 0.0 {
            return self
                .weighted_buckets
                .iter()
                .copied()
                .zip(self.weights.iter().copied())
                .collect();
        }
        self.buckets
            .iter()
            .copied()
            .zip(self.counts.iter().map(|&c| c as f64))
            .collect()
    }

    /// Good, needs-improvement and poor, weighted as `weighting` says (with the same fallback).
    pub fn ratings(&self, weighting: Weighting) -> [f64; 3] {
        let mut out = [0.0; 3];
        if weighting == Weighting::SampleRate && self.weighted_ratings.iter().sum::<f64>() > 0.0 {
            for (o, w) in out.iter_mut().zip(&self.weighted_ratings) {
                *o = *w;
            }
        } else {
            for (o, c) in out.iter_mut().zip(&self.ratings) {
                *o = *c as f64;
            }
        }
        out
    }
}

/// The merged sketches of `metric` of `site` per device and per step of `step` seconds (steps
/// aligned on multiples of `step` since the epoch), over the minutes starting in `[since, until)`;
/// steps without samples are absent. Rows by step, then device. At most
/// `(until - since) / step + 1` steps times the devices.
pub async fn sketch_steps(
    client: &clickhouse::Client,
    site: &str,
    metric: &str,
    since: u32,
    until: u32,
    step: u32,
) -> Result<Vec<SketchStep>, StorageError> {
    assert!(step > 0, "a step of 0 seconds");
    // The tuples are taken apart above the GROUP BY (see `stats_sql` in queries.rs: over a cluster
    // the grouping level is sent to the shards as text).
    let sql = "SELECT at, device, samples, [good, needs_improvement, poor] AS ratings, \
                 [w_good, w_needs_improvement, w_poor] AS weighted_ratings, \
                 sk.1 AS buckets, sk.2 AS counts, wsk.1 AS weighted_buckets, wsk.2 AS weights \
               FROM ( \
                 SELECT toUInt32(intDiv(toUInt32(minute), ?) * ?) AS at, device, \
                   toUInt64(countMerge(samples)) AS samples, \
                   toUInt64(sumMerge(good)) AS good, \
                   toUInt64(sumMerge(needs_improvement)) AS needs_improvement, \
                   toUInt64(sumMerge(poor)) AS poor, \
                   toFloat64(sumMerge(weighted_good)) AS w_good, \
                   toFloat64(sumMerge(weighted_needs_improvement)) AS w_needs_improvement, \
                   toFloat64(sumMerge(weighted_poor)) AS w_poor, \
                   sumMapMerge(sketch) AS sk, \
                   sumMapMerge(weighted_sketch) AS wsk \
                 FROM vitals_1m \
                 WHERE site = ? AND metric = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
                 GROUP BY at, device \
               ) \
               WHERE samples > 0 \
               ORDER BY at, device";
    Ok(client
        .query(sql)
        .bind(step)
        .bind(step)
        .bind(site)
        .bind(metric)
        .bind(since)
        .bind(until)
        .fetch_all::<SketchStep>()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(weights: Vec<f64>, weighted_ratings: Vec<f64>) -> SketchStep {
        SketchStep {
            at: 3600,
            device: "mobile".into(),
            samples: 3,
            ratings: vec![2, 1, 0],
            weighted_ratings,
            buckets: vec![crate::ZERO_BUCKET, 691],
            counts: vec![1, 2],
            weighted_buckets: vec![crate::ZERO_BUCKET, 691],
            weights,
        }
    }

    #[test]
    fn a_step_reads_weighted_with_the_unweighted_fallback() {
        let s = step(vec![4.0, 2.0], vec![4.0, 2.0, 0.0]);
        assert_eq!(
            s.sketch(Weighting::SampleRate),
            [(crate::ZERO_BUCKET, 4.0), (691, 2.0)]
        );
        assert_eq!(
            s.sketch(Weighting::Unweighted),
            [(crate::ZERO_BUCKET, 1.0), (691, 2.0)]
        );
        assert_eq!(s.ratings(Weighting::SampleRate), [4.0, 2.0, 0.0]);
        assert_eq!(s.ratings(Weighting::Unweighted), [2.0, 1.0, 0.0]);
        // Rows from before migration 005: no weights, the counts stand in.
        let old = step(vec![], vec![0.0; 3]);
        assert_eq!(
            old.sketch(Weighting::SampleRate),
            old.sketch(Weighting::Unweighted)
        );
        assert_eq!(old.ratings(Weighting::SampleRate), [2.0, 1.0, 0.0]);
    }
}
