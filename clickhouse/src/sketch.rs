//! The quantile sketch of `vitals_1m`, in Rust: the same buckets and the same p75 as the SQL.
//!
//! The sketch is DDSketch's log-bucket map. A value `v > 0` lands in bucket
//! `ceil(ln(v) / ln(GAMMA))`, clamped to `[-MAX_BUCKET, MAX_BUCKET]`; bucket `k` holds the values in
//! `(GAMMA^(k-1), GAMMA^k]`. Values `<= 0` land in [`ZERO_BUCKET`]. A bucket stands for the value
//! `2 * GAMMA^k / (GAMMA + 1)`, which is within `(GAMMA - 1) / (GAMMA + 1)` (0.49999%) of every value
//! in the bucket; the zero bucket stands for 0.
//!
//! Sketches merge by adding the counts of equal buckets (ClickHouse `sumMap`), so a quantile over any
//! window and grouping is read from the merged sketch: take the buckets in increasing order, and the
//! first whose cumulative count reaches `q * n` holds the nearest-rank quantile (the `ceil(q * n)`-th
//! smallest value); its representative value is within 0.5% of it.
//!
//! The SQL side (one source of truth, checked by the tests below):
//! * `clickhouse/migrations/002_vitals_1m.sql` fills the buckets:
//!   `toInt16(if(value <= 0, -32768, greatest(-32000, least(32000, ceil(log(value) / log(1.01005))))))`;
//! * `clickhouse/queries/*.sql` read a quantile from `sk = sumMapMerge(sketch)` (keys sorted):
//!   `idx = arrayFirstIndex(c -> c >= 0.75 * n, arrayCumSum(sk.2))`,
//!   `if((sk.1)[idx] = -32768, 0, 2 * pow(1.01005, (sk.1)[idx]) / (1.01005 + 1))`.

/// The ratio between bucket bounds: relative accuracy `(GAMMA - 1) / (GAMMA + 1)` ≈ 0.5%.
pub const GAMMA: f64 = 1.01005;

/// `GAMMA` exactly as it is written in the SQL files (a literal, not a formatted float).
pub const GAMMA_LITERAL: &str = "1.01005";

/// The bucket of values `<= 0` (the smallest `Int16`, so it sorts before every other bucket).
pub const ZERO_BUCKET: i16 = i16::MIN;

/// Buckets are clamped to `[-MAX_BUCKET, MAX_BUCKET]`: values outside about `1e-139 ..= 1e139`
/// share the end buckets (no web vital comes near).
pub const MAX_BUCKET: i16 = 32000;

/// The bucket of a value, as the materialized view computes it. NaN goes to the zero bucket
/// (the ingest never stores one); +infinity to `MAX_BUCKET`.
pub fn bucket_of(v: f64) -> i16 {
    if v.is_nan() || v <= 0.0 {
        return ZERO_BUCKET;
    }
    let k = (v.ln() / GAMMA.ln()).ceil();
    k.clamp(-f64::from(MAX_BUCKET), f64::from(MAX_BUCKET)) as i16
}

/// The SQL of [`bucket_of`] applied to the Float64 expression `value`: the bucket expression of the
/// rollup view (`vitals_1m_rollup`, migrations 004 and 005), as an `Int16`.
pub fn bucket_sql(value: &str) -> String {
    format!(
        "toInt16(if({value} <= 0, {ZERO_BUCKET}, greatest(-{MAX_BUCKET}, least({MAX_BUCKET}, ceil(log({value}) / log({GAMMA_LITERAL}))))))"
    )
}

/// The value a bucket stands for: `2 * GAMMA^k / (GAMMA + 1)`, and 0 for the zero bucket.
pub fn value_of_bucket(k: i16) -> f64 {
    if k == ZERO_BUCKET {
        0.0
    } else {
        2.0 * GAMMA.powi(i32::from(k)) / (GAMMA + 1.0)
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of a sketch given as `(bucket, count)` pairs, in any order,
/// a bucket possibly repeated (its counts add up, as in `sumMap`).
///
/// Same rule as the SQL: the first bucket, in increasing order, whose cumulative count is
/// `>= q * n`. `None` when the sketch is empty or `q` is not in `[0, 1]`.
pub fn quantile(buckets: &[(i16, u64)], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted: Vec<(i16, u64)> = buckets.iter().copied().filter(|&(_, c)| c > 0).collect();
    sorted.sort_unstable_by_key(|&(k, _)| k);
    let n: u64 = sorted.iter().map(|&(_, c)| c).sum();
    if n == 0 {
        return None;
    }
    let target = q * n as f64;
    let mut cumulative = 0u64;
    for (k, c) in sorted {
        cumulative += c;
        if cumulative as f64 >= target {
            return Some(value_of_bucket(k));
        }
    }
    None
}

/// Weighted ranks tolerate this relative error: sums of weights like `1 / 0.3` are not exact in
/// binary and depend on the order of the additions (two servers, two merges), so a cumulative weight
/// within `1e-9` of the rank's counts as reaching it (at an exact tie p75 is then the lower value,
/// as the alerts' weighted decision says "not above"). A millionth of a page load in a thousand;
/// with integer counts below 10^9 it changes no rank.
pub const WEIGHT_TIE_TOLERANCE: f64 = 1e-9;

/// The nearest-rank `p`-th percentile (`p` in 1..=99) of a weighted sketch given as
/// `(bucket, weight)` pairs sorted by bucket, as `rum query` reads it (`queries.rs`, `stats_sql`):
/// the first bucket whose cumulative weight `c` has `c * 100 >= p * total * (1 - `
/// [`WEIGHT_TIE_TOLERANCE`]`)`. With unit weights, the bucket of the `ceil(p * n / 100)`-th smallest
/// sample. `None` when the total weight is not positive.
pub fn weighted_percentile(sorted: &[(i16, f64)], p: u8) -> Option<f64> {
    let total: f64 = sorted.iter().map(|&(_, w)| w).sum();
    if total <= 0.0 || !(1..=99).contains(&p) {
        return None;
    }
    let mut cumulative = 0.0;
    for &(k, w) in sorted {
        cumulative += w;
        if cumulative * 100.0 >= f64::from(p) * total * (1.0 - WEIGHT_TIE_TOLERANCE) {
            return Some(value_of_bucket(k));
        }
    }
    None
}

/// The exact weighted nearest-rank `p`-th percentile (`p` in 1..=99) of `(value, weight)` pairs: the
/// smallest value whose cumulative weight (over the values sorted) `c` has `c * 100 >= p * total`.
/// With unit weights, the `ceil(p * n / 100)`-th smallest value. What [`weighted_percentile`]
/// approximates (within `(GAMMA - 1) / (GAMMA + 1)`: the first bucket reaching the rank holds it).
/// `None` when the total weight is not positive.
pub fn exact_weighted_percentile(values: &[(f64, f64)], p: u8) -> Option<f64> {
    let total: f64 = values.iter().map(|&(_, w)| w).sum();
    if total <= 0.0 || !(1..=99).contains(&p) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut cumulative = 0.0;
    for (v, w) in sorted {
        cumulative += w;
        if cumulative * 100.0 >= f64::from(p) * total {
            return Some(v);
        }
    }
    None
}

/// The weighted sketch of `(value, weight)` pairs, as `(bucket, weight)` pairs sorted by bucket (what
/// `sumMapMerge(weighted_sketch)` returns).
pub fn weighted_sketch_of(values: impl IntoIterator<Item = (f64, f64)>) -> Vec<(i16, f64)> {
    let mut map = std::collections::BTreeMap::<i16, f64>::new();
    for (v, w) in values {
        *map.entry(bucket_of(v)).or_default() += w;
    }
    map.into_iter().collect()
}

/// A sketch of some values, as `(bucket, count)` pairs sorted by bucket (what `sumMapMerge` returns).
pub fn sketch_of(values: impl IntoIterator<Item = f64>) -> Vec<(i16, u64)> {
    let mut map = std::collections::BTreeMap::<i16, u64>::new();
    for v in values {
        *map.entry(bucket_of(v)).or_default() += 1;
    }
    map.into_iter().collect()
}

/// The exact nearest-rank `q`-quantile: the `ceil(q * n)`-th smallest value (the smallest for q = 0).
/// What the sketch approximates. `None` for no values or `q` outside `[0, 1]`.
pub fn exact_quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_buckets_are_the_views_and_the_queries() {
        let view = include_str!("../migrations/005_attribution.sql");
        for value in ["value", "prev_value"] {
            assert!(view.contains(&bucket_sql(value)), "{value}");
        }
        let by_dimension = include_str!("../queries/p75_by_dimension.sql");
        assert!(by_dimension.contains(&bucket_sql("value")));
    }

    /// The largest relative error a bucket's value can have: (gamma - 1) / (gamma + 1).
    const ALPHA: f64 = (GAMMA - 1.0) / (GAMMA + 1.0);

    #[test]
    fn buckets_hold_values_between_powers_of_gamma() {
        assert_eq!(bucket_of(1.0), 0);
        assert_eq!(bucket_of(GAMMA), 1);
        assert_eq!(bucket_of(1.005), 1);
        assert_eq!(bucket_of(0.999), 0);
        assert_eq!(bucket_of(1.0 / GAMMA / GAMMA * 1.000_001), -1);
        // Checked against ClickHouse 18.16: ceil(log(x) / log(1.01005)).
        assert_eq!(bucket_of(1000.0), 691);
        assert_eq!(bucket_of(2500.0), 783);
        assert_eq!(bucket_of(0.1), -230);
        for v in [0.001, 0.05, 1.0, 3.7, 200.0, 2500.0, 600_000.0] {
            let k = i32::from(bucket_of(v));
            assert!(
                GAMMA.powi(k - 1) < v * (1.0 + 1e-12),
                "{v} above bucket {k}"
            );
            assert!(v <= GAMMA.powi(k) * (1.0 + 1e-12), "{v} below bucket {k}");
        }
    }

    #[test]
    fn zero_negative_nan_and_extremes() {
        assert_eq!(bucket_of(0.0), ZERO_BUCKET);
        assert_eq!(bucket_of(-0.0), ZERO_BUCKET);
        assert_eq!(bucket_of(-5.0), ZERO_BUCKET);
        assert_eq!(bucket_of(f64::NAN), ZERO_BUCKET);
        assert_eq!(bucket_of(f64::INFINITY), MAX_BUCKET);
        assert_eq!(bucket_of(f64::MAX), MAX_BUCKET);
        assert_eq!(bucket_of(f64::MIN_POSITIVE), -MAX_BUCKET);
        assert_eq!(bucket_of(1e-300), -MAX_BUCKET);
        assert_eq!(value_of_bucket(ZERO_BUCKET), 0.0);
        const { assert!(ZERO_BUCKET < -MAX_BUCKET, "the zero bucket sorts first") };
    }

    #[test]
    fn a_bucket_value_is_within_half_a_percent_of_its_values() {
        assert!((ALPHA - 0.005).abs() < 1e-6, "{ALPHA}");
        let mut v = 1e-4;
        while v < 1e7 {
            let got = value_of_bucket(bucket_of(v));
            let err = (got - v).abs() / v;
            assert!(err <= ALPHA + 1e-9, "{v}: {got} ({err})");
            v *= 1.000_37;
        }
    }

    #[test]
    fn quantile_matches_the_sql_on_1_to_1000() {
        // The SQL gives 753.6 (checked on ClickHouse 18.16); exact nearest rank is 750.
        let sketch = sketch_of((1..=1000).map(f64::from));
        let p75 = quantile(&sketch, 0.75).unwrap();
        assert!((p75 - 753.6).abs() < 0.05, "{p75}");
        assert_eq!(
            exact_quantile(&(1..=1000).map(f64::from).collect::<Vec<_>>(), 0.75),
            Some(750.0)
        );
    }

    #[test]
    fn quantile_is_within_alpha_of_the_nearest_rank() {
        let values: Vec<f64> = (0..5000).map(|i| 0.3 * 1.0021f64.powi(i)).collect();
        let sketch = sketch_of(values.iter().copied());
        for q in [0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
            let exact = exact_quantile(&values, q).unwrap();
            let got = quantile(&sketch, q).unwrap();
            assert!(
                (got - exact).abs() / exact <= ALPHA + 1e-9,
                "q={q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn quantile_merges_unsorted_and_repeated_buckets() {
        let merged = quantile(&[(10, 1), (-5, 2), (10, 2), (ZERO_BUCKET, 1), (3, 0)], 0.75);
        // Sorted: zero x1, -5 x2, 10 x3 (n = 6): the 4.5th sample is in bucket 10.
        assert_eq!(merged, Some(value_of_bucket(10)));
        assert_eq!(quantile(&[(ZERO_BUCKET, 3), (7, 1)], 0.75), Some(0.0));
        assert_eq!(
            quantile(&[(ZERO_BUCKET, 3), (7, 2)], 0.75),
            Some(value_of_bucket(7))
        );
        assert_eq!(quantile(&[(7, 4)], 0.0), Some(value_of_bucket(7)));
    }

    #[test]
    fn quantile_of_nothing_or_a_bad_q_is_none() {
        assert_eq!(quantile(&[], 0.75), None);
        assert_eq!(quantile(&[(3, 0)], 0.75), None);
        assert_eq!(quantile(&[(3, 1)], 1.5), None);
        assert_eq!(quantile(&[(3, 1)], -0.1), None);
        assert_eq!(quantile(&[(3, 1)], f64::NAN), None);
        assert_eq!(exact_quantile(&[], 0.5), None);
    }

    #[test]
    fn exact_quantile_is_the_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(exact_quantile(&v, 0.0), Some(1.0));
        assert_eq!(exact_quantile(&v, 0.2), Some(1.0));
        assert_eq!(exact_quantile(&v, 0.75), Some(4.0));
        assert_eq!(exact_quantile(&v, 1.0), Some(5.0));
    }

    /// `rum query p75 --percentile P` in Rust: the first bucket whose cumulative count `c` has
    /// `c * 100 >= P * n` (`queries.rs`, `percentiles_sql`): the bucket of the `ceil(P * n / 100)`-th
    /// smallest sample, in integers.
    fn percentile(sketch: &[(i16, u64)], p: u8) -> f64 {
        let n: u64 = sketch.iter().map(|&(_, c)| c).sum();
        let mut cumulative = 0;
        for &(k, c) in sketch {
            cumulative += c;
            if cumulative * 100 >= u64::from(p) * n {
                return value_of_bucket(k);
            }
        }
        unreachable!("the last bucket's cumulative count is n")
    }

    /// The exact nearest-rank percentile: the `ceil(p * n / 100)`-th smallest value.
    fn exact_percentile(sorted: &[f64], p: u8) -> f64 {
        let rank = (u64::from(p) * sorted.len() as u64).div_ceil(100) as usize;
        sorted[rank.max(1) - 1]
    }

    /// The bound, from the bucket width: bucket `k` holds `(GAMMA^(k-1), GAMMA^k]` and stands for
    /// `r = 2 * GAMMA^k / (GAMMA + 1)`, so for a value `v` of it `r / v` lies in
    /// `[2 / (GAMMA + 1), 2 * GAMMA / (GAMMA + 1))`: `|r - v| / v <= (GAMMA - 1) / (GAMMA + 1)` = ALPHA,
    /// 0.49999%. Buckets sort like their values, so the first bucket whose cumulative count reaches
    /// the rank holds the exact nearest-rank value: the sketch's percentile is within ALPHA of it
    /// (and exactly 0 when that value is <= 0), whatever the distribution or the merge.
    #[test]
    fn percentiles_are_within_alpha_of_the_nearest_rank_on_several_distributions() {
        use rand::{Rng, SeedableRng};
        use rand_distr::Distribution;
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let lognormal = rand_distr::LogNormal::new(7.6, 0.6).unwrap();
        let distributions: Vec<(&str, Vec<f64>)> = vec![
            (
                "uniform 1..10000 ms",
                (0..20_000)
                    .map(|_| rng.random_range(1.0..10_000.0))
                    .collect(),
            ),
            (
                "log-normal (median 2 s)",
                (0..20_000).map(|_| lognormal.sample(&mut rng)).collect(),
            ),
            ("constant 1234.5", vec![1234.5; 1000]),
            (
                "two-point 600 x 2500 + 400 x 4000",
                [vec![2500.0; 600], vec![4000.0; 400]].concat(),
            ),
            (
                "CLS, 80% zeros",
                (0..5000)
                    .map(|i| {
                        if i % 5 == 0 {
                            rng.random_range(0.001..0.5)
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            ),
            ("three values", vec![10.0, 20.0, 30.0]),
        ];
        let percentiles = [50u8, 75, 90, 95, 99];
        let mut worst = [0.0f64; 5];
        for (name, values) in &distributions {
            let sketch = sketch_of(values.iter().copied());
            let mut sorted = values.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            for (i, &p) in percentiles.iter().enumerate() {
                let exact = exact_percentile(&sorted, p);
                let got = percentile(&sketch, p);
                let err = if exact == 0.0 {
                    assert_eq!(got, 0.0, "{name} p{p}: {got} for 0");
                    0.0
                } else {
                    (got - exact).abs() / exact
                };
                assert!(
                    err <= ALPHA + 1e-12,
                    "{name} p{p}: {got} vs exact {exact} ({err})"
                );
                worst[i] = worst[i].max(err);
            }
        }
        for (p, err) in percentiles.iter().zip(worst) {
            eprintln!("p{p}: worst relative error {:.4}%", err * 100.0);
        }
        // The rank, not a neighbour: 600 x 2500 + 400 x 4000 has p60 in 2500's bucket, p61 in 4000's.
        let two_point = sketch_of([vec![2500.0; 600], vec![4000.0; 400]].concat());
        assert_eq!(
            percentile(&two_point, 60),
            value_of_bucket(bucket_of(2500.0))
        );
        assert_eq!(
            percentile(&two_point, 61),
            value_of_bucket(bucket_of(4000.0))
        );
        // And p75 is the SQL's `c >= 0.75 * n` (0.75 is exact in binary).
        for (_, values) in &distributions {
            let sketch = sketch_of(values.iter().copied());
            assert_eq!(Some(percentile(&sketch, 75)), quantile(&sketch, 0.75));
        }
    }

    /// The weighted sketch against the exact weighted nearest rank, with mixed sample rates (weights
    /// 1, 2, 4, 10 and 100: sums exact in binary, so the two walk the same ranks): within ALPHA.
    #[test]
    fn weighted_percentiles_are_within_alpha_of_the_weighted_nearest_rank() {
        use rand::{Rng, SeedableRng};
        use rand_distr::Distribution;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x3e16);
        let lognormal = rand_distr::LogNormal::new(7.6, 0.6).unwrap();
        let weights = [1.0, 2.0, 4.0, 10.0, 100.0];
        let mut worst = [0.0f64; 5];
        for round in 0..50 {
            let n = if round % 2 == 0 { 17 } else { 3000 };
            let values: Vec<(f64, f64)> = (0..n)
                .map(|_| {
                    let v = if round % 5 == 0 {
                        rng.random_range(0..4) as f64 * 1000.0
                    } else {
                        lognormal.sample(&mut rng)
                    };
                    (v, weights[rng.random_range(0..weights.len())])
                })
                .collect();
            let sketch = weighted_sketch_of(values.iter().copied());
            for (i, p) in [50u8, 75, 90, 95, 99].into_iter().enumerate() {
                let exact = exact_weighted_percentile(&values, p).unwrap();
                let got = weighted_percentile(&sketch, p).unwrap();
                let err = if exact == 0.0 {
                    assert_eq!(got, 0.0, "round {round} p{p}");
                    0.0
                } else {
                    (got - exact).abs() / exact
                };
                assert!(err <= ALPHA + 1e-12, "round {round} p{p}: {got} vs {exact}");
                worst[i] = worst[i].max(err);
            }
        }
        // Unit weights: the unweighted rank.
        let values = [5.0, 1.0, 4.0, 2.0, 3.0];
        let unit: Vec<(f64, f64)> = values.iter().map(|&v| (v, 1.0)).collect();
        assert_eq!(exact_weighted_percentile(&unit, 75), Some(4.0));
        assert_eq!(exact_weighted_percentile(&unit, 20), Some(1.0));
        // One page load sampled at 1% outweighs 99 at 100%: 1 x 100 ms (weight 1) .. and 5000 ms
        // (weight 100) puts p75 at 5000.
        let mixed = [(100.0, 1.0), (200.0, 1.0), (5000.0, 100.0)];
        assert_eq!(exact_weighted_percentile(&mixed, 75), Some(5000.0));
        assert_eq!(exact_weighted_percentile(&[], 75), None);
        assert_eq!(weighted_percentile(&[(3, 0.0)], 75), None);
        for (p, err) in [50, 75, 90, 95, 99].iter().zip(worst) {
            eprintln!("weighted p{p}: worst relative error {:.4}%", err * 100.0);
        }
    }

    /// Every SQL file that computes buckets or bucket values uses the same gamma, zero bucket and clamp.
    #[test]
    fn the_sql_files_use_the_same_constants() {
        let root = env!("CARGO_MANIFEST_DIR");
        let migration =
            std::fs::read_to_string(format!("{root}/migrations/002_vitals_1m.sql")).unwrap();
        let bucket_expr = bucket_sql("value");
        assert!(
            migration.contains(&bucket_expr),
            "002_vitals_1m.sql lacks `{bucket_expr}`"
        );
        assert_eq!(GAMMA_LITERAL.parse::<f64>().unwrap(), GAMMA);

        let mut files = Vec::new();
        for entry in std::fs::read_dir(format!("{root}/queries")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sql") {
                files.push(path);
            }
        }
        assert!(!files.is_empty(), "no query files");
        let value_expr = format!(
            "if((sk.1)[idx] = {ZERO_BUCKET}, 0, 2 * pow({GAMMA_LITERAL}, (sk.1)[idx]) / ({GAMMA_LITERAL} + 1))"
        );
        for path in [std::path::PathBuf::from(format!(
            "{root}/migrations/002_vitals_1m.sql"
        ))]
        .into_iter()
        .chain(files.iter().cloned())
        {
            let text = std::fs::read_to_string(&path).unwrap();
            // Every number that looks like a gamma (1.0...) is this one.
            for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                if word.starts_with("1.0") && word.len() > 3 {
                    assert_eq!(
                        word,
                        GAMMA_LITERAL,
                        "{}: gamma literal {word}",
                        path.display()
                    );
                }
            }
            // Files reading a sketch (the top_* files read raw values and quantileExact).
            if path.starts_with(format!("{root}/queries")) && text.contains("sumMap") {
                assert!(
                    text.contains(&value_expr),
                    "{} must read p75 with `{value_expr}`",
                    path.display()
                );
                assert!(
                    text.contains("-32768") && !text.contains("32767"),
                    "{}",
                    path.display()
                );
            }
        }
    }
}
