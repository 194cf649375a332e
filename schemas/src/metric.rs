//! The Core Web Vitals: names, accepted ranges and Google's thresholds.

use serde::{Deserialize, Serialize};

/// A metric `web-vitals` reports. FID comes only from old clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MetricName {
    /// Largest Contentful Paint, milliseconds.
    LCP,
    /// Interaction to Next Paint, milliseconds.
    INP,
    /// Cumulative Layout Shift, unitless.
    CLS,
    /// First Contentful Paint, milliseconds.
    FCP,
    /// Time To First Byte, milliseconds.
    TTFB,
    /// First Input Delay, milliseconds (web-vitals 3 and older).
    FID,
}

/// Times above ten minutes are not page loads anyone measured on purpose.
const MAX_TIME_MS: f64 = 600_000.0;
/// A CLS above 10 means the page did nothing but shift.
const MAX_CLS: f64 = 10.0;

impl MetricName {
    /// Every name, in a fixed order.
    pub const ALL: [MetricName; 6] = [
        MetricName::LCP,
        MetricName::INP,
        MetricName::CLS,
        MetricName::FCP,
        MetricName::TTFB,
        MetricName::FID,
    ];

    /// Parses the name as `web-vitals` spells it (upper case).
    pub fn parse(name: &str) -> Option<MetricName> {
        Some(match name {
            "LCP" => MetricName::LCP,
            "INP" => MetricName::INP,
            "CLS" => MetricName::CLS,
            "FCP" => MetricName::FCP,
            "TTFB" => MetricName::TTFB,
            "FID" => MetricName::FID,
            _ => return None,
        })
    }

    /// The name as `web-vitals` spells it, also the `metric` label and column value.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::LCP => "LCP",
            MetricName::INP => "INP",
            MetricName::CLS => "CLS",
            MetricName::FCP => "FCP",
            MetricName::TTFB => "TTFB",
            MetricName::FID => "FID",
        }
    }

    /// The upper end of good and of needs-improvement: `value <= good` is good, `value > poor` is poor.
    /// Milliseconds, except CLS.
    pub fn thresholds(self) -> (f64, f64) {
        match self {
            MetricName::LCP => (2500.0, 4000.0),
            MetricName::INP => (200.0, 500.0),
            MetricName::CLS => (0.1, 0.25),
            MetricName::FCP => (1800.0, 3000.0),
            MetricName::TTFB => (800.0, 1800.0),
            MetricName::FID => (100.0, 300.0),
        }
    }

    /// The largest value accepted; larger ones are measurement garbage.
    pub fn max_value(self) -> f64 {
        match self {
            MetricName::CLS => MAX_CLS,
            _ => MAX_TIME_MS,
        }
    }

    /// The rating Google's thresholds give `value`.
    pub fn rate(self, value: f64) -> Rating {
        let (good, poor) = self.thresholds();
        if value <= good {
            Rating::Good
        } else if value > poor {
            Rating::Poor
        } else {
            Rating::NeedsImprovement
        }
    }
}

/// Google's three buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rating {
    /// At or under the good threshold.
    Good,
    /// Between the two thresholds.
    NeedsImprovement,
    /// Above the poor threshold.
    Poor,
}

impl Rating {
    /// The rating as `web-vitals` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Good => "good",
            Rating::NeedsImprovement => "needs-improvement",
            Rating::Poor => "poor",
        }
    }

    /// Parses the `web-vitals` spelling.
    pub fn parse(rating: &str) -> Option<Rating> {
        Some(match rating {
            "good" => Rating::Good,
            "needs-improvement" => Rating::NeedsImprovement,
            "poor" => Rating::Poor,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in MetricName::ALL {
            assert_eq!(MetricName::parse(name.as_str()), Some(name));
        }
        assert_eq!(MetricName::parse("lcp"), None);
    }

    #[test]
    fn thresholds_are_inclusive_for_good_and_exclusive_for_poor() {
        assert_eq!(MetricName::LCP.rate(2500.0), Rating::Good);
        assert_eq!(MetricName::LCP.rate(2500.1), Rating::NeedsImprovement);
        assert_eq!(MetricName::LCP.rate(4000.0), Rating::NeedsImprovement);
        assert_eq!(MetricName::LCP.rate(4000.1), Rating::Poor);
        assert_eq!(MetricName::CLS.rate(0.0), Rating::Good);
        assert_eq!(MetricName::CLS.rate(0.26), Rating::Poor);
        assert_eq!(MetricName::INP.rate(350.0), Rating::NeedsImprovement);
    }

    #[test]
    fn ratings_round_trip() {
        for rating in [Rating::Good, Rating::NeedsImprovement, Rating::Poor] {
            assert_eq!(Rating::parse(rating.as_str()), Some(rating));
        }
    }
}
