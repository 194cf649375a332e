//! The report's charts, drawn by `plotters` to SVG text: the p75 trend of a metric over Google's
//! good / needs-improvement / poor bands, and the distribution of its samples.
//!
//! No text from the database goes into a chart (only numbers and the metric's own labels), so the
//! SVG needs no escaping beyond what plotters does.

use plotters::prelude::*;
use rum_schemas::MetricName;

/// The size of each chart, in CSS pixels.
pub const WIDTH: u32 = 600;
/// The height of each chart.
pub const HEIGHT: u32 = 280;

/// Google's colours for the three ratings (those of Lighthouse and PageSpeed Insights).
pub const GOOD: RGBColor = RGBColor(12, 206, 107);
/// Needs improvement.
pub const NEEDS_IMPROVEMENT: RGBColor = RGBColor(255, 164, 0);
/// Poor.
pub const POOR: RGBColor = RGBColor(255, 78, 66);
/// The p75 line.
const LINE: RGBColor = RGBColor(26, 86, 219);

/// How many bars a histogram has at most (the last one holds every larger value).
pub const MAX_BINS: usize = 40;

/// The p75 of one time step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendPoint {
    /// The start of the step, unix seconds.
    pub at: i64,
    /// The p75 of the step.
    pub p75: f64,
}

/// One bar of a histogram: the values in `[lo, hi)` (the last bar: `lo` and above).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// The lower edge.
    pub lo: f64,
    /// The upper edge.
    pub hi: f64,
    /// The share (0..1) of the samples in the bar.
    pub share: f64,
}

/// The chart of `points` (the p75 per step of `step` seconds, increasing in time) over
/// `[since, until)`, on the bands of `metric`'s thresholds. Steps apart by more than `step` are not
/// joined by the line.
pub fn trend_svg(
    metric: MetricName,
    points: &[TrendPoint],
    since: i64,
    until: i64,
    step: i64,
) -> anyhow::Result<String> {
    let (good, poor) = metric.thresholds();
    let top = points.iter().map(|p| p.p75).fold(poor * 1.25, f64::max) * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let span = until - since;
        let ticks = time_ticks(since, until);
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d((since..until).with_key_points(ticks), 0f64..top)?;
        // The bands first, so that the grid and the line are drawn over them.
        chart.draw_series(
            [
                (0.0, good, GOOD),
                (good, poor, NEEDS_IMPROVEMENT),
                (poor, top, POOR),
            ]
            .into_iter()
            .map(|(lo, hi, color)| {
                Rectangle::new([(since, lo), (until, hi)], color.mix(0.16).filled())
            }),
        )?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.08))
            .x_label_formatter(&|t| time_label(*t, span))
            .y_label_formatter(&|v| format_value(metric, *v))
            .y_labels(6)
            .label_style(("sans-serif", 15))
            .draw()?;
        for run in runs(points, step) {
            chart.draw_series(LineSeries::new(
                run.iter().map(|p| (p.at, p.p75)),
                LINE.stroke_width(2),
            ))?;
        }
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.at, p.p75), 2, LINE.filled())),
        )?;
        root.present()?;
    }
    Ok(inline(svg))
}

/// The chart of the histogram `bins` of `metric`, each bar in the colour of its rating, with the
/// two thresholds drawn as lines.
pub fn histogram_svg(metric: MetricName, bins: &[Bin]) -> anyhow::Result<String> {
    let (good, poor) = metric.thresholds();
    let right = bins.last().map_or(poor * 1.5, |b| b.hi);
    let top = bins.iter().map(|b| b.share).fold(0.0, f64::max).max(0.01) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..right, 0f64..top)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.08))
            .disable_x_mesh()
            .x_labels(8)
            .x_label_formatter(&|v| format_value(metric, *v))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .y_labels(6)
            .label_style(("sans-serif", 15))
            .draw()?;
        chart.draw_series(bins.iter().map(|b| {
            let color = match metric.rate((b.lo + b.hi) / 2.0) {
                rum_schemas::Rating::Good => GOOD,
                rum_schemas::Rating::NeedsImprovement => NEEDS_IMPROVEMENT,
                rum_schemas::Rating::Poor => POOR,
            };
            let mut bar = Rectangle::new([(b.lo, 0.0), (b.hi, b.share)], color.filled());
            bar.set_margin(0, 0, 1, 1);
            bar
        }))?;
        for threshold in [good, poor] {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(threshold, 0.0), (threshold, top)],
                BLACK.mix(0.5).stroke_width(1),
            )))?;
        }
        root.present()?;
    }
    Ok(inline(svg))
}

/// The histogram of a merged sketch (`(bucket, weight)` pairs sorted by bucket): at most
/// [`MAX_BINS`] bars of equal width from 0, the last holding every value from its lower edge up.
/// The range covers the poor threshold and the 95th percentile (a long tail goes into the last bar).
pub fn bins_of(metric: MetricName, sketch: &[(i16, f64)]) -> Vec<Bin> {
    let total: f64 = sketch.iter().map(|&(_, w)| w).sum();
    let Some(p95) = rum_clickhouse::weighted_percentile(sketch, 95) else {
        return Vec::new();
    };
    let (_, poor) = metric.thresholds();
    let range = p95.max(poor * 1.5);
    let width = nice_width(range / (MAX_BINS - 1) as f64);
    let count = ((range / width).ceil() as usize + 1).min(MAX_BINS);
    let mut weights = vec![0.0; count];
    for &(bucket, w) in sketch {
        let value = rum_clickhouse::value_of_bucket(bucket);
        let i = ((value / width).floor().max(0.0) as usize).min(count - 1);
        weights[i] += w;
    }
    weights
        .into_iter()
        .enumerate()
        .map(|(i, w)| Bin {
            lo: i as f64 * width,
            hi: (i + 1) as f64 * width,
            share: w / total,
        })
        .collect()
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `raw`.
fn nice_width(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|w| *w >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// The points split where a step is missing.
fn runs(points: &[TrendPoint], step: i64) -> Vec<&[TrendPoint]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=points.len() {
        if i == points.len() || points[i].at - points[i - 1].at > step {
            runs.push(&points[start..i]);
            start = i;
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// Tick marks on round times (UTC): at most 8 over `[since, until)`.
fn time_ticks(since: i64, until: i64) -> Vec<i64> {
    const STEPS: [i64; 13] = [
        60, 300, 600, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800, 604_800, 2_592_000,
    ];
    let span = (until - since).max(1);
    let tick = STEPS
        .into_iter()
        .find(|t| span / t <= 8)
        .unwrap_or(span / 8);
    let first = (since + tick - 1).div_euclid(tick) * tick;
    (0..)
        .map(|i| first + i * tick)
        .take_while(|t| *t < until)
        .collect()
}

/// A tick's label: `03 Dec` for day ticks, `03 Dec 06:00` within a window of days, `06:00` within
/// a day (UTC).
fn time_label(at: i64, span: i64) -> String {
    let Ok(secs) = u64::try_from(at) else {
        return at.to_string();
    };
    // "Thu, 03 Dec 2026 06:00:00 GMT": a fixed layout (RFC 9110's IMF-fixdate).
    let text =
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let (day, time) = (&text[5..11], &text[17..22]);
    if span > 2 * 86_400 && at % 86_400 == 0 {
        day.to_string()
    } else if span > 86_400 {
        format!("{day} {time}")
    } else {
        time.to_string()
    }
}

/// A value as people read it: `2.51 s` or `180 ms`, CLS with two decimals.
pub fn format_value(metric: MetricName, value: f64) -> String {
    if metric == MetricName::CLS {
        format!("{value:.2}")
    } else if value >= 1000.0 {
        format!("{:.2} s", value / 1000.0)
    } else {
        format!("{value:.0} ms")
    }
}

/// The SVG as an element of an HTML page: the XML declaration and namespace dropped (HTML's parser
/// puts `<svg>` in the SVG namespace itself), so the page holds no URL at all.
fn inline(svg: String) -> String {
    let svg = match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => &svg,
    };
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sketch of `values`, each weighing 1.
    fn unit(values: impl IntoIterator<Item = f64>) -> Vec<(i16, f64)> {
        rum_clickhouse::weighted_sketch_of(values.into_iter().map(|v| (v, 1.0)))
    }

    #[test]
    fn histogram_bins_cover_the_poor_threshold_and_the_tail() {
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 10.0).collect();
        let bins = bins_of(MetricName::LCP, &unit(values));
        assert!(bins.len() <= MAX_BINS, "{}", bins.len());
        assert_eq!(bins[0].lo, 0.0);
        let width = bins[0].hi;
        assert_eq!(width, 250.0, "p95 9.5 s over 39 bars: 250 ms each");
        assert!(bins.last().unwrap().hi >= 9500.0);
        let total: f64 = bins.iter().map(|b| b.share).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        // 10..=240 ms (24 values) and 250 itself, within 0.5%, fall in the first bar or the second.
        assert!((bins[0].share - 0.024).abs() <= 0.002, "{}", bins[0].share);
        // Zeros (CLS) land in the first bar.
        let cls = bins_of(MetricName::CLS, &unit([0.0, 0.0, 0.0, 0.3]));
        assert_eq!(cls[0].share, 0.75);
        assert!(bins_of(MetricName::INP, &[]).is_empty());
    }

    #[test]
    fn the_last_bar_holds_the_tail() {
        let mut values = vec![100.0; 99];
        values.push(500_000.0);
        let bins = bins_of(MetricName::INP, &unit(values));
        assert!(bins.len() <= MAX_BINS);
        assert!((bins.last().unwrap().share - 0.01).abs() < 1e-12);
    }

    #[test]
    fn nice_widths() {
        assert_eq!(nice_width(153.8), 200.0);
        assert_eq!(nice_width(230.0), 250.0);
        assert_eq!(nice_width(0.0096), 0.01);
        assert_eq!(nice_width(40.0), 50.0);
        assert_eq!(nice_width(100.0), 100.0);
    }

    #[test]
    fn a_missing_step_breaks_the_line() {
        let p = |at| TrendPoint { at, p75: 1.0 };
        let points = [p(0), p(3600), p(10_800), p(14_400)];
        let runs = runs(&points, 3600);
        assert_eq!(runs, [&points[..2], &points[2..]]);
        assert!(super::runs(&[], 3600).is_empty());
    }

    #[test]
    fn ticks_are_round_utc_times() {
        // 2026-12-03 05:17:14 UTC, seven days back.
        let until = 1_796_274_000 + 1034;
        let ticks = time_ticks(until - 7 * 86_400, until);
        assert_eq!(ticks.len(), 7);
        assert!(ticks.iter().all(|t| t % 86_400 == 0), "{ticks:?}");
        assert_eq!(time_label(ticks[0], 7 * 86_400), "27 Nov");
        assert_eq!(time_ticks(until - 3600, until).len(), 6);
        assert_eq!(time_label(1_796_274_000, 3600), "05:00");
        assert_eq!(time_label(1_796_274_000, 2 * 86_400), "03 Dec 05:00");
    }

    #[test]
    fn values_read_as_people_read_them() {
        assert_eq!(format_value(MetricName::LCP, 2512.0), "2.51 s");
        assert_eq!(format_value(MetricName::INP, 180.4), "180 ms");
        assert_eq!(format_value(MetricName::CLS, 0.123), "0.12");
    }

    #[test]
    fn charts_are_svg_with_their_data_and_no_url() {
        let points: Vec<TrendPoint> = (0..24)
            .map(|h| TrendPoint {
                at: 1_796_274_000 + h * 3600,
                p75: 2000.0 + h as f64 * 100.0,
            })
            .collect();
        let svg = trend_svg(
            MetricName::LCP,
            &points,
            1_796_274_000,
            1_796_274_000 + 86_400,
            3600,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(!svg.contains("http"), "no URL: {svg}");
        assert_eq!(svg.matches("<circle").count(), 24);
        assert!(svg.contains("<polyline"));
        let bins = bins_of(
            MetricName::LCP,
            &unit((1..=100).map(|i| f64::from(i) * 50.0)),
        );
        let svg = histogram_svg(MetricName::LCP, &bins).unwrap();
        assert!(svg.starts_with("<svg") && !svg.contains("http"));
        // A white background, then one rectangle per bar.
        assert_eq!(svg.matches("<rect").count(), 1 + bins.len(), "{svg}");
    }
}
