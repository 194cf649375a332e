//! The bounds of a beacon, stated once: the ingest validates against them, and consumers check a
//! decoded Kafka message against the same ones.

/// At most this many metrics in one beacon; a page load has six names, with room for re-reports.
pub const MAX_METRICS_PER_BEACON: usize = 32;
/// The longest metric id kept (web-vitals ids are ~20 characters).
pub const MAX_METRIC_ID_LEN: usize = 128;
/// The longest site name.
pub const MAX_SITE_LEN: usize = 64;
/// The smallest `sample_rate`: one page load in 10,000. Each stored sample weighs `1 / sample_rate`
/// page loads, so this bounds one beacon's weight at 10,000 (5e-324 made it infinite).
pub const MIN_SAMPLE_RATE: f64 = 0.0001;
/// The largest `sample_rate`: every page load.
pub const MAX_SAMPLE_RATE: f64 = 1.0;

/// True for a finite `sample_rate` in [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`] (NaN is not).
pub fn is_valid_sample_rate(rate: f64) -> bool {
    (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate)
}

/// True for `[a-z0-9._-]`, 1 to [`MAX_SITE_LEN`] characters.
pub fn is_valid_site(site: &str) -> bool {
    !site.is_empty()
        && site.len() <= MAX_SITE_LEN
        && site.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rates_from_one_in_ten_thousand_to_one_are_valid() {
        for rate in [MIN_SAMPLE_RATE, 0.00010001, 0.25, 1.0] {
            assert!(is_valid_sample_rate(rate), "{rate}");
        }
        for rate in [
            5e-324,
            0.0000999,
            0.0,
            -0.0,
            -0.5,
            1.0000001,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert!(!is_valid_sample_rate(rate), "{rate}");
        }
    }

    #[test]
    fn the_floor_bounds_the_weight_of_one_beacon() {
        assert_eq!(1.0 / MIN_SAMPLE_RATE, 10_000.0);
    }
}
