//! `rum query`: stored percentiles from ClickHouse, for people and scripts.
//!
//! `rum query p75 --site shop [--route R] [--device D] [--since 30m] [--until 0] [--percentile N]...
//! [--format table|json|csv]` prints p75 (and each `--percentile`, 1 to 99), the sample count and the
//! good / needs-improvement / poor shares per route, device and metric
//! (`rum_clickhouse::P75Row::with_percentiles`: the columns of
//! `clickhouse/queries/p75_by_route_device.sql`, with more nearest-rank percentiles of the same merged
//! sketches). `table` is aligned columns under a header; `json` is one object a line with the fields
//! `site, route, device, metric, p75, samples, good_share, needs_improvement_share, poor_share` and a
//! `pNN` beside `p75` for each other percentile; `csv` is a header line (the JSON field names) and one
//! line a row, quoted as RFC 4180 says. The percentiles are of the samples, not weighted by their
//! sample rate.

use std::io::{self, Write};

use anyhow::Context;
use rum_clickhouse::{ClickHouseConfig, P75Row};
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
    /// --percentile 99`): nearest rank over the merged sketches, within 0.5%, unweighted.
    #[arg(long = "percentile", value_name = "N", value_parser = parse_percentile)]
    pub percentiles: Vec<u8>,
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

/// A row of `rum query p75`: the p75 row and every percentile printed, p75 among them, in
/// increasing order.
#[derive(Debug, Clone, PartialEq)]
pub struct PercentilesRow {
    /// Site, route, device, metric, p75, samples and rating shares.
    pub row: P75Row,
    /// `(N, the N-th percentile)`, increasing in N, one of them 75.
    pub percentiles: Vec<(u8, f64)>,
}

impl PercentilesRow {
    /// The row's cells in column order: site, route, device, metric, each percentile as
    /// `percentile(metric, value)`, samples, then the three rating shares as `share(value)`.
    fn cells(
        &self,
        percentile: impl Fn(&str, f64) -> String,
        share: impl Fn(f64) -> String,
    ) -> Vec<String> {
        let r = &self.row;
        let mut cells = vec![
            r.site.clone(),
            r.route.clone(),
            r.device.clone(),
            r.metric.clone(),
        ];
        cells.extend(
            self.percentiles
                .iter()
                .map(|&(_, v)| percentile(&r.metric, v)),
        );
        cells.push(r.samples.to_string());
        cells.extend(
            [r.good_share, r.needs_improvement_share, r.poor_share]
                .into_iter()
                .map(share),
        );
        cells
    }

    /// `row` with the percentiles `extra` (increasing, without 75) at `values`, and p75.
    fn new(row: P75Row, extra: &[u8], values: &[f64]) -> PercentilesRow {
        let mut percentiles: Vec<(u8, f64)> =
            extra.iter().copied().zip(values.iter().copied()).collect();
        percentiles.push((75, row.p75));
        percentiles.sort_unstable_by_key(|&(p, _)| p);
        PercentilesRow { row, percentiles }
    }
}

/// The JSON object: the fields of [`P75Row`] with `pNN` beside `p75`, in increasing order.
impl serde::Serialize for PercentilesRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = &self.row;
        let mut map = serializer.serialize_map(Some(8 + self.percentiles.len()))?;
        map.serialize_entry("site", &r.site)?;
        map.serialize_entry("route", &r.route)?;
        map.serialize_entry("device", &r.device)?;
        map.serialize_entry("metric", &r.metric)?;
        for (p, value) in &self.percentiles {
            map.serialize_entry(&format!("p{p}"), value)?;
        }
        map.serialize_entry("samples", &r.samples)?;
        map.serialize_entry("good_share", &r.good_share)?;
        map.serialize_entry("needs_improvement_share", &r.needs_improvement_share)?;
        map.serialize_entry("poor_share", &r.poor_share)?;
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
            let rows = rum_clickhouse::bounded(
                "querying p75",
                config.request_timeout(),
                P75Row::with_percentiles(
                    &config.client(),
                    &args.site,
                    route.as_deref(),
                    args.device.map(Device::as_str),
                    since,
                    until,
                    &extra,
                ),
            )
            .await
            .with_context(|| format!("querying p75 from ClickHouse at {}", config.url))?;
            let rows: Vec<PercentilesRow> = rows
                .into_iter()
                .map(|(row, values)| PercentilesRow::new(row, &extra, &values))
                .collect();
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
            render(&rows, &percentile_columns(&extra), args.format, out)?;
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
            let mut header: Vec<String> = ["site", "route", "device", "metric"]
                .map(String::from)
                .to_vec();
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
            let mut header: Vec<String> = ["site", "route", "device", "metric"]
                .map(String::from)
                .to_vec();
            header.extend(columns.iter().map(|p| format!("p{p}")));
            header.extend(["samples", "good", "needs_improvement", "poor"].map(String::from));
            // Text columns align left, numbers right.
            const NUMERIC_FROM: usize = 4;
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
                    if i >= NUMERIC_FROM {
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
            row("root", "mobile", metric, p75, 7).row,
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
        render(&rows, &[75], Format::Table, &mut out).unwrap();
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
        render(&[], &[75], Format::Table, &mut out).unwrap();
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
        render(&rows, &[75], Format::Json, &mut out).unwrap();
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
        render(&[], &[75], Format::Json, &mut out).unwrap();
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
        render(&rows, &[50, 75, 99], Format::Table, &mut out).unwrap();
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
        render(&rows, &[50, 75, 99], Format::Json, &mut out).unwrap();
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
        assert_eq!(old, rows[0].row);

        let mut out = Vec::new();
        render(&rows, &[50, 75, 99], Format::Csv, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "site,route,device,metric,p50,p75,p99,samples,good_share,needs_improvement_share,poor_share\n\
             shop,root,mobile,LCP,2003.2,2510.7,7001.9,7,0.75,0.2,0.05\n\
             shop,root,mobile,CLS,0,0.0512,0.25,7,0.75,0.2,0.05\n"
        );
        let mut out = Vec::new();
        render(&[], &[75], Format::Csv, &mut out).unwrap();
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
        row.row.site = "x\ny".into();
        let mut out = Vec::new();
        render(&[row], &[75], Format::Csv, &mut out).unwrap();
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
