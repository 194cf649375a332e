//! `rum query`: stored percentiles from ClickHouse, for people and scripts.
//!
//! `rum query p75 --site shop [--route R] [--device D] [--since 30m] [--until 0] [--format table|json]`
//! prints p75, the sample count and the good / needs-improvement / poor shares per route, device
//! and metric (`rum_clickhouse::p75_by_route_device`, the query of
//! `clickhouse/queries/p75_by_route_device.sql`). `table` is aligned columns under a header;
//! `json` is one object a line with the fields `site, route, device, metric, p75, samples,
//! good_share, needs_improvement_share, poor_share`.

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
    /// Output: aligned columns, or one JSON object a line.
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
            let rows = rum_clickhouse::bounded(
                "querying p75",
                config.request_timeout(),
                rum_clickhouse::p75_by_route_device(
                    &config.client(),
                    &args.site,
                    route.as_deref(),
                    args.device.map(Device::as_str),
                    since,
                    until,
                ),
            )
            .await
            .with_context(|| format!("querying p75 from ClickHouse at {}", config.url))?;
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
            render(&rows, args.format, out)?;
        }
    }
    Ok(())
}

fn unix_u32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Prints rows as a table (header included, even with no rows) or as JSON lines.
pub fn render(rows: &[P75Row], format: Format, out: &mut impl Write) -> io::Result<()> {
    match format {
        Format::Json => {
            for row in rows {
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Table => {
            const HEADER: [&str; 9] = [
                "site",
                "route",
                "device",
                "metric",
                "p75",
                "samples",
                "good",
                "needs_improvement",
                "poor",
            ];
            // Text columns align left, numbers right.
            const NUMERIC_FROM: usize = 4;
            let cells: Vec<[String; 9]> = rows
                .iter()
                .map(|r| {
                    [
                        r.site.clone(),
                        r.route.clone(),
                        r.device.clone(),
                        r.metric.clone(),
                        format_p75(&r.metric, r.p75),
                        r.samples.to_string(),
                        percent(r.good_share),
                        percent(r.needs_improvement_share),
                        percent(r.poor_share),
                    ]
                })
                .collect();
            let mut widths = HEADER.map(str::len);
            for row in &cells {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let header = HEADER.map(String::from);
            for row in std::iter::once(&header).chain(&cells) {
                let mut line = String::new();
                for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
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

/// Milliseconds as whole numbers (the sketch is good to 0.5%); CLS, unitless, with 4 decimals.
fn format_p75(metric: &str, p75: f64) -> String {
    if metric == "CLS" {
        format!("{p75:.4}")
    } else {
        format!("{p75:.0}")
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
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

    fn row(route: &str, device: &str, metric: &str, p75: f64, samples: u64) -> P75Row {
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
        assert!(parse(&["--site", "s", "--format", "csv"]).is_err());
    }

    #[test]
    fn table_has_a_header_and_aligned_columns() {
        let rows = [
            row("root", "mobile", "CLS", 0.0912, 25),
            row("product-id", "desktop", "LCP", 3411.3, 22_521),
        ];
        let mut out = Vec::new();
        render(&rows, Format::Table, &mut out).unwrap();
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
        render(&[], Format::Table, &mut out).unwrap();
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
        render(&rows, Format::Json, &mut out).unwrap();
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
        render(&[], Format::Json, &mut out).unwrap();
        assert!(out.is_empty());
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
