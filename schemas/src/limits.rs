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
/// The shortest `page_id` (a random id per page load, joining the metrics of one page view).
pub const MIN_PAGE_ID_LEN: usize = 8;
/// The longest `page_id`.
pub const MAX_PAGE_ID_LEN: usize = 64;
/// The longest `release` (after trimming).
pub const MAX_RELEASE_LEN: usize = 64;
/// The largest `rtt` accepted (milliseconds, `navigator.connection.rtt`): a minute.
pub const MAX_RTT_MS: f64 = 60_000.0;
/// The lower edges of the `rtt` buckets after the first (milliseconds, each lower edge inclusive):
/// `[0, 100)`, `[100, 300)`, `[300, 1000)`, `[1000, MAX_RTT_MS]`. The message carries the bucket,
/// never the number: `rtt` is a label of the series, and a label must take a bounded, small set of
/// values (a raw number would make one series per value, and `navigator.connection.rtt` is
/// already rounded to 25 ms to limit fingerprinting). Four buckets separate fast, average, slow and
/// satellite-like networks; changing the edges changes the label values, so stored series split.
pub const RTT_BUCKET_EDGES_MS: [f64; 3] = [100.0, 300.0, 1000.0];
/// The bucket labels, one per interval of [`RTT_BUCKET_EDGES_MS`].
pub const RTT_BUCKETS: [&str; 4] = ["0-100", "100-300", "300-1000", "1000+"];
/// The bucket label of a beacon without `rtt`.
pub const RTT_UNKNOWN: &str = "unknown";
/// The longest element selector in an attribution (`target`, `interactionTarget`,
/// `largestShiftTarget`), after trimming.
pub const MAX_ATTRIBUTION_TARGET_LEN: usize = 256;
/// The longest URL accepted in an attribution (`url`, `scriptUrl`), as sent.
pub const MAX_ATTRIBUTION_URL_IN_LEN: usize = 2048;
/// The longest URL kept: what is left without query string and fragment is cut to this.
pub const MAX_ATTRIBUTION_URL_LEN: usize = 512;
/// The longest `scriptInvoker` (e.g. `BUTTON#buy.onclick`), after trimming.
pub const MAX_SCRIPT_INVOKER_LEN: usize = 128;

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

/// True for [`MIN_PAGE_ID_LEN`] to [`MAX_PAGE_ID_LEN`] characters of `[A-Za-z0-9_-]`.
pub fn is_valid_page_id(page_id: &str) -> bool {
    (MIN_PAGE_ID_LEN..=MAX_PAGE_ID_LEN).contains(&page_id.len())
        && page_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The release as kept: ASCII whitespace trimmed, then 1 to [`MAX_RELEASE_LEN`] printable ASCII
/// characters (`!` to `~`, spaces inside). `None` when it is not one.
pub fn normalize_release(release: &str) -> Option<&str> {
    let release = release.trim_ascii();
    is_valid_release(release).then_some(release)
}

/// True for a release as [`normalize_release`] keeps it.
pub fn is_valid_release(release: &str) -> bool {
    let bytes = release.as_bytes();
    (1..=MAX_RELEASE_LEN).contains(&bytes.len())
        && bytes.iter().all(|b| (b' '..=b'~').contains(b))
        && bytes[0] != b' '
        && bytes[bytes.len() - 1] != b' '
}

/// True for a finite `rtt` from 0 to [`MAX_RTT_MS`] milliseconds.
pub fn is_valid_rtt(rtt: f64) -> bool {
    (0.0..=MAX_RTT_MS).contains(&rtt)
}

/// The bucket of a valid `rtt` ([`RTT_BUCKETS`]), or [`RTT_UNKNOWN`] without one.
pub fn rtt_bucket(rtt: Option<f64>) -> &'static str {
    match rtt {
        None => RTT_UNKNOWN,
        Some(rtt) => {
            let i = RTT_BUCKET_EDGES_MS
                .iter()
                .take_while(|&&edge| rtt >= edge)
                .count();
            RTT_BUCKETS[i]
        }
    }
}

/// True for a label [`rtt_bucket`] gives.
pub fn is_rtt_bucket(label: &str) -> bool {
    label == RTT_UNKNOWN || RTT_BUCKETS.contains(&label)
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

    #[test]
    fn page_ids_are_8_to_64_url_safe_characters() {
        for id in ["abcd1234", "Ab_-09zZ", &"x".repeat(64), "0aB3-x_y9Q1z"] {
            assert!(is_valid_page_id(id), "{id}");
        }
        for id in [
            "",
            "abc1234",
            &"x".repeat(65),
            "abcd 1234",
            "abcd.1234",
            "abcd1234é",
            "abcd/1234",
        ] {
            assert!(!is_valid_page_id(id), "{id}");
        }
    }

    #[test]
    fn releases_are_trimmed_printable_ascii() {
        assert_eq!(normalize_release("v1.2.3"), Some("v1.2.3"));
        assert_eq!(
            normalize_release("  2024-05-01 build 7\n"),
            Some("2024-05-01 build 7")
        );
        assert_eq!(
            normalize_release(&"r".repeat(64)),
            Some("r".repeat(64).as_str())
        );
        assert_eq!(
            normalize_release(&format!(" {} ", "r".repeat(64))),
            Some("r".repeat(64).as_str())
        );
        for bad in [
            "",
            "   ",
            &"r".repeat(65),
            "v1\tbeta",
            "v1\u{7f}",
            "v\u{e9}1",
            "v1\n2",
        ] {
            assert_eq!(normalize_release(bad), None, "{bad:?}");
        }
        assert!(!is_valid_release(" v1"), "a kept release is trimmed");
    }

    #[test]
    fn rtts_fall_into_four_buckets_lower_bound_inclusive() {
        let cases = [
            (0.0, "0-100"),
            (99.99, "0-100"),
            (100.0, "100-300"),
            (299.0, "100-300"),
            (300.0, "300-1000"),
            (999.9, "300-1000"),
            (1000.0, "1000+"),
            (MAX_RTT_MS, "1000+"),
        ];
        for (rtt, bucket) in cases {
            assert!(is_valid_rtt(rtt), "{rtt}");
            assert_eq!(rtt_bucket(Some(rtt)), bucket, "{rtt}");
            assert!(is_rtt_bucket(bucket));
        }
        assert_eq!(rtt_bucket(None), "unknown");
        assert!(is_rtt_bucket("unknown"));
        for rtt in [-0.1, 60_000.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!is_valid_rtt(rtt), "{rtt}");
        }
        for label in ["", "0-99", "1000", "other"] {
            assert!(!is_rtt_bucket(label), "{label}");
        }
    }
}
