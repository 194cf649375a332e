//! `rum query`: stored percentiles from ClickHouse, for people and scripts.
//!
//! `rum query p75 --site shop [--route R] [--device D] [--since 30m] [--until 0] [--percentile N]...
//! [--by browser|release|rtt|nav_type] [--unweighted] [--format table|json|csv]` prints p75 (and each
//! `--percentile`, 1 to 99), the sample count and the good / needs-improvement / poor shares per route,
//! device and metric (`rum_clickhouse::P75Row::with_percentiles`: the columns of
//! `clickhouse/queries/p75_by_route_device.sql`, with more nearest-rank percentiles of the same merged
//! sketches), or with `--by` per value of that dimension and metric (`DimensionRow::with_percentiles`,
//! from the raw rows). `table` is aligned columns under a header; `json` is one object a line with the
//! fields `site, route, device, metric, p75, samples, good_share, needs_improvement_share, poor_share`
//! (with `--by`, the dimension's name in place of `route, device`) and a `pNN` beside `p75` for each
//! other percentile; `csv` is a header line (the JSON field names) and one line a row, quoted as RFC
//! 4180 says. Percentiles and shares weigh each sample by `1 / sample_rate` (the page loads it stands
//! for: unbiased when a site samples at different rates); `--unweighted` counts each sample once.

use std::io::{self, Write};

use anyhow::Context;
use rum_clickhouse::{ClickHouseConfig, Dimension, DimensionRow, P75Row, Weighting};
use rum_schemas::{normalize_route, Device};

/// Options of `rum query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    pub query: Query,
}

/// What to ask.
#[derive(Debug, clap::Subcommand)]
pub enum Query {
    /// p75, sample count and rating shares per route, device and metric of a site, from the
    /// per-minute sketches (within 0.5% of the exact p75).
    P75(P75Args),
}

/// Options of `rum query p75`.
#[derive(Debug, clap::Args)]
pub struct P75Args {
    /// The site.
    #[arg(long)]
    pub site: String,
    /// Only this route: a slug (`product-id`) or a path (`/product/123`, normalized like the ingest does).
    #[arg(long)]
    pub route: Option<String>,
    /// Only this device: mobile, desktop, tablet or unknown.
    #[arg(long, value_parser = parse_device)]
    pub device: Option<Device>,
    /// The window starts this long ago: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "30m", value_parser = crate::duration::parse_secs)]
    pub since: u64,
    /// The window ends this long ago (0: now).
    #[arg(long, default_value = "0", value_parser = crate::duration::parse_secs)]
    pub until: u64,
    /// Another percentile to print beside p75, an integer from 1 to 99 (repeatable: `--percentile 50
    /// --percentile 99`): nearest rank over the merged sketches, within 0.5%.
    #[arg(long = "percentile", value_name = "N", value_parser = parse_percentile)]
    pub percentiles: Vec<u8>,
    /// Per value of this dimension and metric instead of per route and device: browser (family),
    /// release, rtt (round-trip time bucket) or nav_type. Read from the raw rows (a scan of the
    /// site's window), with --route and --device as filters.
    #[arg(long, value_name = "DIMENSION", value_parser = parse_dimension)]
    pub by: Option<Dimension>,
    /// Count each sample once, instead of weighing it by 1 / its sample rate (the page loads it
    /// stands for).
    #[arg(long)]
    pub unweighted: bool,
    /// Output: aligned columns, one JSON object a line, or CSV with a header line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns under a header.
    Table,
    /// One JSON object a line.
    Json,
    /// A header line, then one line a row (RFC 4180 quoting).
    Csv,
}

/// A row of `rum query p75`: its key columns, the metric, every percentile printed (p75 among them,
/// in increasing order), the sample count and the rating shares.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentilesRow {
    /// The columns before the metric, named: site, route and device; or site and the `--by` dimension.
    pub keys: Vec<(&'static str, String)>,
    /// The metric name.
    pub metric: String,
    /// `(N, the N-th percentile)`, increasing in N, one of them 75.
    pub percentiles: Vec<(u8, f64)>,
    /// How many samples.
    pub samples: u64,
    /// The shares (0..1) of good, needs-improvement and poor samples.
    pub shares: [f64; 3],
}

/// The key columns of the rows of `by`.
fn key_names(by: Option<Dimension>) -> Vec<&'static str> {
    match by {
        None => vec!["site", "route", "device"],
        Some(d) => vec!["site", d.name()],
    }
}

impl PercentilesRow {
    /// The row's cells in column order: the keys, the metric, each percentile as
    /// `percentile(metric, value)`, samples, then the three rating shares as `share(value)`.
    fn cells(
        &self,
        percentile: impl Fn(&str, f64) -> String,
        share: impl Fn(f64) -> String,
    ) -> Vec<String> {
        let mut cells: Vec<String> = self.keys.iter().map(|(_, v)| v.clone()).collect();
        cells.push(self.metric.clone());
        cells.extend(
            self.percentiles
                .iter()
                .map(|&(_, v)| percentile(&self.metric, v)),
        );
        cells.push(self.samples.to_string());
        cells.extend(self.shares.into_iter().map(share));
        cells
    }

    /// `(p75, the percentiles extra at values)`, increasing (`extra` increasing, without 75).
    fn percentiles(p75: f64, extra: &[u8], values: &[f64]) -> Vec<(u8, f64)> {
        let mut percentiles: Vec<(u8, f64)> =
            extra.iter().copied().zip(values.iter().copied()).collect();
        percentiles.push((75, p75));
        percentiles.sort_unstable_by_key(|&(p, _)| p);
        percentiles
    }

    /// `row` with the percentiles `extra` (increasing, without 75) at `values`, and p75.
    fn new(row: P75Row, extra: &[u8], values: &[f64]) -> PercentilesRow {
        PercentilesRow {
            percentiles: Self::percentiles(row.p75, extra, values),
            keys: vec![
                ("site", row.site),
                ("route", row.route),
                ("device", row.device),
            ],
            metric: row.metric,
            samples: row.samples,
            shares: [row.good_share, row.needs_improvement_share, row.poor_share],
        }
    }

    /// A row of `dimension` with the percentiles `extra` (increasing, without 75).
    fn of_dimension(dimension: Dimension, row: DimensionRow, extra: &[u8]) -> PercentilesRow {
        PercentilesRow {
            percentiles: Self::percentiles(row.p75, extra, &row.percentiles),
            keys: vec![("site", row.site), (dimension.name(), row.value)],
            metric: row.metric,
            samples: row.samples,
            shares: [row.good_share, row.needs_improvement_share, row.poor_share],
        }
    }
}

/// The JSON object: the key columns, the metric, `pNN` for each percentile in increasing order, the
/// sample count and the shares (without `--by`, the fields of [`P75Row`]).
impl serde::Serialize for PercentilesRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map =
            serializer.serialize_map(Some(5 + self.keys.len() + self.percentiles.len()))?;
        for (name, value) in &self.keys {
            map.serialize_entry(name, value)?;
        }
        map.serialize_entry("metric", &self.metric)?;
        for (p, value) in &self.percentiles {
            map.serialize_entry(&format!("p{p}"), value)?;
        }
        map.serialize_entry("samples", &self.samples)?;
        map.serialize_entry("good_share", &self.shares[0])?;
        map.serialize_entry("needs_improvement_share", &self.shares[1])?;
        map.serialize_entry("poor_share", &self.shares[2])?;
        map.end()
    }
}

/// Runs `rum query`, printing to stdout.
pub async fn run(args: QueryArgs, config: &ClickHouseConfig) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut out = io::stdout().lock();
    match run_to(args, config, now, &mut out).await {
        // `rum query ... | head`: the reader has seen enough.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Runs `rum query` at time `now` (unix seconds), printing to `out`.
async fn run_to(
    args: QueryArgs,
    config: &ClickHouseConfig,
    now: u64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match args.query {
        Query::P75(args) => {
            if args.until >= args.since {
                anyhow::bail!(
                    "--until ({}s ago) must be more recent than --since ({}s ago)",
                    args.until,
                    args.since
                );
            }
            let since = unix_u32(now.saturating_sub(args.since));
            let until = unix_u32(now.saturating_sub(args.until));
            let route = args.route.as_deref().map(normalize_route);
            let mut extra = args.percentiles.clone();
            extra.sort_unstable();
            extra.dedup();
            extra.retain(|&p| p != 75);
            let weighting = if args.unweighted {
                Weighting::Unweighted
            } else {
                Weighting::SampleRate
            };
            let client = config.client();
            let device = args.device.map(Device::as_str);
            let rows: Vec<PercentilesRow> = match args.by {
                None => rum_clickhouse::bounded(
                    "querying p75",
                    config.request_timeout(),
                    P75Row::with_percentiles(
                        &client,
                        &args.site,
                        route.as_deref(),
                        device,
                        since,
                        until,
                        &extra,
                        weighting,
                    ),
                )
                .await
                .with_context(|| format!("querying p75 from ClickHouse at {}", config.url))?
                .into_iter()
                .map(|(row, values)| PercentilesRow::new(row, &extra, &values))
                .collect(),
                Some(dimension) => rum_clickhouse::bounded(
                    "querying p75 by dimension",
                    config.request_timeout(),
                    DimensionRow::with_percentiles(
                        &client,
                        dimension,
                        &args.site,
                        route.as_deref(),
                        device,
                        since,
                        until,
                        &extra,
                        weighting,
                    ),
                )
                .await
                .with_context(|| {
                    format!(
                        "querying p75 by {} from ClickHouse at {}",
                        dimension.name(),
                        config.url
                    )
                })?
                .into_iter()
                .map(|row| PercentilesRow::of_dimension(dimension, row, &extra))
                .collect(),
            };
            if rows.is_empty() && args.format == Format::Table {
                eprintln!(
                    "rum: no samples for site `{}`{}{} in the minutes starting in the window",
                    args.site,
                    route.map(|r| format!(", route `{r}`")).unwrap_or_default(),
                    args.device
                        .map(|d| format!(", device `{}`", d.as_str()))
                        .unwrap_or_default(),
                );
            }
            render(
                &rows,
                &key_names(args.by),
                &percentile_columns(&extra),
                args.format,
                out,
            )?;
        }
    }
    Ok(())
}

fn unix_u32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// The percentiles printed: `extra` (increasing, without 75) and 75, in increasing order.
fn percentile_columns(extra: &[u8]) -> Vec<u8> {
    let mut columns = extra.to_vec();
    columns.push(75);
    columns.sort_unstable();
    columns
}

/// Prints rows (each with the percentiles `columns`) as a table or CSV (header included, even with
/// no rows) or as JSON lines.
pub fn render(
    rows: &[PercentilesRow],
    keys: &[&str],
    columns: &[u8],
    format: Format,
    out: &mut impl Write,
) -> io::Result<()> {
    match format {
        Format::Json => {
            for row in rows {
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let mut header: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            header.push("metric".into());
            header.extend(columns.iter().map(|p| format!("p{p}")));
            header.extend(
                [
                    "samples",
                    "good_share",
                    "needs_improvement_share",
                    "poor_share",
                ]
                .map(String::from),
            );
            write_csv_line(out, &header)?;
            for row in rows {
                let cells = row.cells(|_, v| v.to_string(), |share| share.to_string());
                write_csv_line(out, &cells)?;
            }
        }
        Format::Table => {
            let mut header: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            header.push("metric".into());
            header.extend(columns.iter().map(|p| format!("p{p}")));
            header.extend(["samples", "good", "needs_improvement", "poor"].map(String::from));
            // Text columns align left, numbers right.
            let numeric_from = keys.len() + 1;
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| row.cells(format_percentile, percent))
                .collect();
            let mut widths: Vec<usize> = header.iter().map(String::len).collect();
            for row in &cells {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&cells) {
                let mut line = String::new();
                for (i, (cell, &width)) in row.iter().zip(&widths).enumerate() {
                    if i > 0 {
                        line.push_str("  ");
                    }
                    if i >= numeric_from {
                        line.push_str(&format!("{cell:>width$}"));
                    } else {
                        line.push_str(&format!("{cell:<width$}"));
                    }
                }
                writeln!(out, "{}", line.trim_end())?;
            }
        }
    }
    out.flush()
}

/// One CSV line (ending in LF): fields joined by `,`, each holding a `,`, a `"`, a CR or a LF
/// quoted with its quotes doubled (RFC 4180).
fn write_csv_line(out: &mut impl Write, fields: &[String]) -> io::Result<()> {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    writeln!(out, "{}", line.join(","))
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Milliseconds as whole numbers (the sketch is good to 0.5%); CLS, unitless, with 4 decimals.
fn format_percentile(metric: &str, value: f64) -> String {
    if metric == "CLS" {
        format!("{value:.4}")
    } else {
        format!("{value:.0}")
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// `--percentile`: an integer from 1 to 99.
fn parse_percentile(text: &str) -> Result<u8, String> {
    text.parse::<u8>()
        .ok()
        .filter(|p| (1..=99).contains(p))
        .ok_or_else(|| format!("`{text}` is not a percentile: use an integer from 1 to 99"))
}

fn parse_dimension(text: &str) -> Result<Dimension, String> {
    Dimension::parse(text).ok_or_else(|| {
        format!("`{text}` is not a dimension: use browser, release, rtt or nav_type")
    })
}

fn parse_device(text: &str) -> Result<Device, String> {
    Device::parse(text)
        .ok_or_else(|| format!("`{text}` is not a device: use mobile, desktop, tablet or unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Query(QueryArgs),
    }

    fn parse(args: &[&str]) -> Result<P75Args, clap::Error> {
        let cli = Cli::try_parse_from(["rum", "query", "p75"].iter().chain(args))?;
        let Command::Query(QueryArgs {
            query: Query::P75(p75),
        }) = cli.command;
        Ok(p75)
    }

    const KEYS: [&str; 3] = ["site", "route", "device"];

    fn p75_row(route: &str, device: &str, metric: &str, p75: f64, samples: u64) -> P75Row {
        P75Row {
            site: "shop".into(),
            route: route.into(),
            device: device.into(),
            metric: metric.into(),
            p75,
            samples,
            good_share: 0.75,
            needs_improvement_share: 0.2,
            poor_share: 0.05,
        }
    }

    fn row(route: &str, device: &str, metric: &str, p75: f64, samples: u64) -> PercentilesRow {
        PercentilesRow::new(
            P75Row {
                site: "shop".into(),
                route: route.into(),
                device: device.into(),
                metric: metric.into(),
                p75,
                samples,
                good_share: 0.75,
                needs_improvement_share: 0.2,
                poor_share: 0.05,
            },
            &[],
            &[],
        )
    }

    /// `row` with p50 and p99 too.
    fn row_50_99(metric: &str, p50: f64, p75: f64, p99: f64) -> PercentilesRow {
        PercentilesRow::new(
            p75_row("root", "mobile", metric, p75, 7),
            &[50, 99],
            &[p50, p99],
        )
    }

    #[test]
    fn parses_the_options() {
        let args = parse(&["--site", "shop"]).unwrap();
        assert_eq!(
            (args.site.as_str(), args.since, args.until),
            ("shop", 1800, 0)
        );
        assert_eq!(
            (args.route, args.device, args.format),
            (None, None, Format::Table)
        );
        let args = parse(&[
            "--site",
            "shop",
            "--route",
            "/product/123",
            "--device",
            "Mobile",
            "--since",
            "2h",
            "--until",
            "10m",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.route.as_deref(), Some("/product/123"));
        assert_eq!(args.device, Some(Device::Mobile));
        assert_eq!(
            (args.since, args.until, args.format),
            (7200, 600, Format::Json)
        );
        assert!(parse(&[]).is_err(), "--site is required");
        assert!(parse(&["--site", "s", "--device", "phone"]).is_err());
        assert!(parse(&["--site", "s", "--since", "30x"]).is_err());
        assert!(parse(&["--site", "s", "--format", "xml"]).is_err());
        assert_eq!(
            parse(&["--site", "s", "--format", "csv"]).unwrap().format,
            Format::Csv
        );
        assert!(args.percentiles.is_empty());
        assert_eq!((args.by, args.unweighted), (None, false));
        let args = parse(&["--site", "s", "--by", "release", "--unweighted"]).unwrap();
        assert_eq!((args.by, args.unweighted), (Some(Dimension::Release), true));
        let err = parse(&["--site", "s", "--by", "route"]).err().unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("use browser, release, rtt or nav_type"),
            "{err}"
        );
        let args = parse(&[
            "--site",
            "s",
            "--percentile",
            "99",
            "--percentile",
            "1",
            "--percentile",
            "75",
        ])
        .unwrap();
        assert_eq!(args.percentiles, [99, 1, 75]);
        for bad in ["0", "100", "-5", "50.5", "p90", ""] {
            let flag = format!("--percentile={bad}");
            let err = parse(&["--site", "s", &flag])
                .err()
                .unwrap_or_else(|| panic!("--percentile {bad:?} accepted"));
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(text.contains("--percentile"), "{text}");
            if !bad.is_empty() {
                assert!(text.contains("an integer from 1 to 99"), "{text}");
            }
        }
    }

    #[test]
    fn table_has_a_header_and_aligned_columns() {
        let rows = [
            row("root", "mobile", "CLS", 0.0912, 25),
            row("product-id", "desktop", "LCP", 3411.3, 22_521),
        ];
        let mut out = Vec::new();
        render(&rows, &KEYS, &[75], Format::Table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "site  route       device   metric     p75  samples   good  needs_improvement  poor",
                "shop  root        mobile   CLS     0.0912       25  75.0%              20.0%  5.0%",
                "shop  product-id  desktop  LCP       3411    22521  75.0%              20.0%  5.0%",
            ]
        );
        let mut out = Vec::new();
        render(&[], &KEYS, &[75], Format::Table, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().lines().count(),
            1,
            "header only"
        );
    }

    #[test]
    fn json_is_one_object_a_line_with_the_field_names() {
        let rows = [
            row("root", "mobile", "LCP", 2500.5, 3),
            row("a", "b", "INP", 1.0, 1),
        ];
        let mut out = Vec::new();
        render(&rows, &KEYS, &[75], Format::Json, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(lines[0]).unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        let mut expected = [
            "site",
            "route",
            "device",
            "metric",
            "p75",
            "samples",
            "good_share",
            "needs_improvement_share",
            "poor_share",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(first["p75"], 2500.5);
        assert_eq!(first["samples"], 3);
        assert_eq!(first["route"], "root");
        let mut out = Vec::new();
        render(&[], &KEYS, &[75], Format::Json, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn more_percentiles_are_columns_and_fields_in_increasing_order() {
        let rows = [
            row_50_99("LCP", 2003.2, 2510.7, 7001.9),
            row_50_99("CLS", 0.0, 0.0512, 0.25),
        ];
        assert_eq!(
            rows[0].percentiles,
            [(50, 2003.2), (75, 2510.7), (99, 7001.9)]
        );
        let mut out = Vec::new();
        render(&rows, &KEYS, &[50, 75, 99], Format::Table, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "site  route  device  metric     p50     p75     p99  samples   good  needs_improvement  poor",
                "shop  root   mobile  LCP       2003    2511    7002        7  75.0%              20.0%  5.0%",
                "shop  root   mobile  CLS     0.0000  0.0512  0.2500        7  75.0%              20.0%  5.0%",
            ]
        );

        let mut out = Vec::new();
        render(&rows, &KEYS, &[50, 75, 99], Format::Json, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "{\"site\":\"shop\",\"route\":\"root\",\"device\":\"mobile\",\"metric\":\"LCP\",\
             \"p50\":2003.2,\"p75\":2510.7,\"p99\":7001.9,\"samples\":7,\"good_share\":0.75,\
             \"needs_improvement_share\":0.2,\"poor_share\":0.05}"
        );
        // Still a P75Row to a reader that knows only those fields.
        let old: P75Row = serde_json::from_str(first).unwrap();
        assert_eq!(old, p75_row("root", "mobile", "LCP", 2510.7, 7));

        let mut out = Vec::new();
        render(&rows, &KEYS, &[50, 75, 99], Format::Csv, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "site,route,device,metric,p50,p75,p99,samples,good_share,needs_improvement_share,poor_share\n\
             shop,root,mobile,LCP,2003.2,2510.7,7001.9,7,0.75,0.2,0.05\n\
             shop,root,mobile,CLS,0,0.0512,0.25,7,0.75,0.2,0.05\n"
        );
        let mut out = Vec::new();
        render(&[], &KEYS, &[75], Format::Csv, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "site,route,device,metric,p75,samples,good_share,needs_improvement_share,poor_share\n",
            "the header only"
        );
    }

    #[test]
    fn csv_quotes_fields_with_commas_quotes_and_line_breaks() {
        assert_eq!(csv_field("shop"), "shop");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("\""), "\"\"\"\"");
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
        assert_eq!(csv_field("a\rb"), "\"a\rb\"");
        assert_eq!(csv_field("it's ; fine"), "it's ; fine");
        let mut row = row("a,\"b\"", "mobile", "LCP", 1.5, 1);
        row.keys[0].1 = "x\ny".into();
        let mut out = Vec::new();
        render(&[row], &KEYS, &[75], Format::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.split_once('\n').unwrap().1,
            "\"x\ny\",\"a,\"\"b\"\"\",mobile,LCP,1.5,1,0.75,0.2,0.05\n"
        );
    }

    /// The whole command against a real ClickHouse 18.16.
    #[tokio::test]
    async fn queries_a_real_server() {
        let server = rum_testkit::ClickHouseServer::start();
        let config = ClickHouseConfig {
            url: server.url.clone(),
            ..ClickHouseConfig::default()
        };
        rum_clickhouse::migrate(&config).await.unwrap();
        let now: u64 = 1_700_000_000;
        let mut rows = Vec::new();
        for (i, (route, device)) in [("product-id", "mobile"), ("root", "desktop")]
            .into_iter()
            .enumerate()
        {
            for v in 1..=100u32 {
                rows.push(rum_clickhouse::VitalsRawRow {
                    metric_id: format!("{i}-{v}"),
                    kafka_offset: u64::from(v),
                    ..rum_clickhouse::VitalsRawRow::measured(
                        "shop",
                        route,
                        device,
                        rum_schemas::MetricName::LCP,
                        f64::from(v * 40 * (i as u32 + 1)),
                        (now - 600) as u32 + v,
                    )
                });
            }
        }
        rum_clickhouse::insert_raw_rows(&config.client(), &rows)
            .await
            .unwrap();
        let query = |args: &[&str]| {
            let args = parse(args).unwrap();
            let config = config.clone();
            async move {
                let mut out = Vec::new();
                run_to(
                    QueryArgs {
                        query: Query::P75(args),
                    },
                    &config,
                    now,
                    &mut out,
                )
                .await
                .map(|()| String::from_utf8(out).unwrap())
            }
        };

        let table = query(&["--site", "shop"]).await.unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("site  route"), "{table}");
        // 40, 80, ..., 4000: nearest-rank p75 3000; the sketch gives 3000 * (1 +- 0.5%).
        assert!(
            lines[1].starts_with("shop  product-id  mobile   LCP"),
            "{table}"
        );

        let json = query(&[
            "--site",
            "shop",
            "--route",
            "/product/42",
            "--format",
            "json",
        ])
        .await
        .unwrap();
        let rows: Vec<P75Row> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 1, "{json}");
        assert_eq!(
            (rows[0].route.as_str(), rows[0].samples),
            ("product-id", 100)
        );
        assert!((rows[0].p75 - 3000.0).abs() / 3000.0 < 0.005, "{rows:?}");
        // LCP 40..4000 ms: 62 good (<= 2.5 s), 38 needs improvement, none poor.
        assert_eq!(
            (
                rows[0].good_share,
                rows[0].needs_improvement_share,
                rows[0].poor_share
            ),
            (0.62, 0.38, 0.0)
        );

        let desktop = query(&["--site", "shop", "--device", "desktop", "--format", "json"])
            .await
            .unwrap();
        assert_eq!(desktop.lines().count(), 1);
        assert!(desktop.contains("\"route\":\"root\""), "{desktop}");

        // A window that ends before the data: nothing.
        let none = query(&[
            "--site", "shop", "--since", "1h", "--until", "15m", "--format", "json",
        ])
        .await
        .unwrap();
        assert_eq!(none, "");
        assert!(
            query(&["--site", "shop", "--since", "5m", "--until", "10m"])
                .await
                .is_err()
        );

        // Mixed sample rates: three loads of 1 s kept at 100%, one of 5 s kept at 1% (it stands for
        // 100 loads). Weighted (the default) p75 is 5 s; --unweighted, the 3rd of 4 samples, 1 s.
        let mixed: Vec<rum_clickhouse::VitalsRawRow> = [(1000.0, 1.0, "chrome"); 3]
            .into_iter()
            .chain([(5000.0, 0.01, "safari")])
            .enumerate()
            .map(
                |(i, (value, sample_rate, browser))| rum_clickhouse::VitalsRawRow {
                    metric_id: format!("mix-{i}"),
                    sample_rate,
                    browser: browser.into(),
                    ..rum_clickhouse::VitalsRawRow::measured(
                        "mix",
                        "root",
                        "mobile",
                        rum_schemas::MetricName::LCP,
                        value,
                        (now - 300) as u32,
                    )
                },
            )
            .collect();
        rum_clickhouse::insert_raw_rows(&config.client(), &mixed)
            .await
            .unwrap();
        let p75_of = |json: &str| -> f64 {
            let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
            row["p75"].as_f64().unwrap()
        };
        let weighted = query(&["--site", "mix", "--format", "json"]).await.unwrap();
        assert!(
            (p75_of(&weighted) - 5000.0).abs() / 5000.0 < 0.005,
            "{weighted}"
        );
        assert!(
            weighted.contains("\"poor_share\":0.970873786407767"),
            "{weighted}"
        );
        let unweighted = query(&["--site", "mix", "--unweighted", "--format", "json"])
            .await
            .unwrap();
        assert!(
            (p75_of(&unweighted) - 1000.0).abs() / 1000.0 < 0.005,
            "{unweighted}"
        );
        assert!(unweighted.contains("\"poor_share\":0.25"), "{unweighted}");
        let by = query(&["--site", "mix", "--by", "browser", "--format", "csv"])
            .await
            .unwrap();
        let lines: Vec<&str> = by.lines().collect();
        assert_eq!(
            lines[0],
            "site,browser,metric,p75,samples,good_share,needs_improvement_share,poor_share"
        );
        assert_eq!(lines.len(), 3, "{by}");
        assert!(lines[1].starts_with("mix,chrome,LCP,99"), "{by}");
        assert!(lines[1].ends_with(",3,1,0,0"), "{by}");
        assert!(lines[2].starts_with("mix,safari,LCP,49"), "{by}");
        assert!(lines[2].ends_with(",1,0,0,1"), "{by}");
        let table = query(&["--site", "mix", "--by", "nav_type", "--percentile", "50"])
            .await
            .unwrap();
        assert_eq!(
            table.lines().next().unwrap(),
            "site  nav_type  metric   p50   p75  samples  good  needs_improvement   poor"
        );

        // A server that is not there: an error naming it.
        let gone = ClickHouseConfig {
            url: format!("http://127.0.0.1:{}", rum_testkit::free_port()),
            ..ClickHouseConfig::default()
        };
        let err = run_to(
            QueryArgs {
                query: Query::P75(parse(&["--site", "shop"]).unwrap()),
            },
            &gone,
            now,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains(&gone.url), "{err:#}");
    }
}
