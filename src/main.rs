//! `rum`: the Real User Monitoring pipeline in one binary.

mod bench_floor;
mod config;
mod duration;
mod loadgen;
mod query;
mod report;
mod snippet;
mod standalone;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tokio::sync::watch;

/// Real User Monitoring: Core Web Vitals from browsers to p75 per route and device.
#[derive(Parser)]
#[command(name = "rum", version, about)]
struct Cli {
    /// A TOML config file; `RUM_<SECTION>_<KEY>` variables override it.
    #[arg(long, env = "RUM_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the beacon endpoint and publish beacons to Kafka.
    Ingest,
    /// Consume beacons from Kafka into ClickHouse.
    Consume,
    /// Evaluate the stored percentiles every interval and notify Alertmanager.
    Alerts,
    /// Apply the ClickHouse migrations (idempotent).
    Migrate,
    /// Ingest and consumer in one process over an embedded Kafka (rdkafka's MockCluster).
    /// For a laptop; production runs `ingest` and `consume` against a real Kafka.
    Standalone,
    /// Send realistic demo beacons to an ingest.
    Loadgen(loadgen::Args),
    /// Print the script tag for a page: the collector's hashed URL and its integrity hash.
    Snippet(snippet::Args),
    /// Print a signed ingest token (`site=...&t=...&e=...[&k=...]`) for a site with a
    /// `token_secret` or `token_secrets` (signed with the first).
    Token(TokenArgs),
    /// Ask ClickHouse for stored percentiles (p75 per route, device and metric).
    Query(query::QueryArgs),
    /// Write one self-contained HTML report of a site's web vitals: p75 trends, distributions,
    /// worst routes and devices, top LCP elements and INP targets.
    Report(report::ReportArgs),
    /// The floors for `bench/run`: a bare axum 204 handler, or (`--kafka`) a read-and-discard consumer.
    #[command(hide = true)]
    BenchFloor(bench_floor::Args),
}

/// Options of `rum token`.
#[derive(clap::Args)]
struct TokenArgs {
    /// The site, configured under `[ingest.sites.NAME]` with a `token_secret` or `token_secrets`.
    #[arg(long)]
    site: String,
    /// How long the token is valid: seconds, or a number with s, m, h or d; at most
    /// `ingest.token_max_ttl_secs` (7 days by default).
    #[arg(long, default_value = "24h", value_parser = duration::parse_positive_secs)]
    ttl: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match report::one_line_error(&e, Cli::command()) {
            Some(line) => {
                eprintln!("rum report: {line}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    let config = match config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(line) => {
            eprintln!("rum: config error: {line}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Command::Ingest | Command::Standalone) {
        if let Err(e) = rum_ingest::fit_open_files(&config.ingest) {
            eprintln!(
                "rum: config error: {} ({}): {}",
                e.key,
                config::env_name(&e.key),
                e.reason
            );
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rum: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<report::ArgError>() => {
            eprintln!("rum report: {e}");
            ExitCode::from(2)
        }
        Err(e) if e.is::<StartConfigError>() => {
            let StartConfigError(e) = e.downcast().expect("checked above");
            eprintln!(
                "rum: config error: {} ({}): {}",
                e.key,
                config::env_name(&e.key),
                e.reason
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("rum: {}", rum_telemetry::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: config::Config) -> anyhow::Result<()> {
    match command {
        Command::Ingest => {
            let ingest = rum_ingest::Ingest::bind(&config.ingest, &config.kafka).await?;
            ingest.run(stopped(stop_channel())).await?;
        }
        Command::Consume => {
            let stop = stop_channel();
            // The dead-letter topic must exist before the first poison message holds every
            // partition (`rum standalone` creates its own in the embedded broker). A SIGTERM
            // during the check stops cleanly.
            tokio::select! {
                checked = rum_consumers::check_dlq_topic(&config.kafka, &config.consumer) => {
                    checked.map_err(StartConfigError)?;
                }
                () = stopped(stop.clone()) => return Ok(()),
            }
            let stop = stopped(stop);
            rum_consumers::run(&config.consumer, &config.kafka, &config.clickhouse, stop).await?;
        }
        Command::Alerts => {
            let stop = stopped(stop_channel());
            rum_alerts::run(&config.alerts, &config.clickhouse, stop).await?;
        }
        Command::Migrate => {
            let report = rum_clickhouse::migrate(&config.clickhouse).await?;
            println!(
                "migrations: {} applied {:?}, {} already applied (database {} at {})",
                report.applied.len(),
                report.applied,
                report.already_applied.len(),
                config.clickhouse.database,
                config.clickhouse.url
            );
        }
        Command::Standalone => standalone::run(config, stop_channel()).await?,
        Command::Loadgen(args) => loadgen::run(args).await?,
        Command::Query(args) => query::run(args, &config.clickhouse).await?,
        Command::Report(args) => report::run(args, &config.clickhouse).await?,
        Command::Snippet(args) => snippet::run(args, &config.ingest)?,
        Command::BenchFloor(args) => bench_floor::run(args, config, stop_channel()).await?,
        Command::Token(args) => println!("{}", token(&args, &config.ingest)?),
    }
    Ok(())
}

/// A setting found unusable at start, after the config was loaded (the dead-letter topic is not on
/// the brokers): one line naming the key and exit 2, as a config error.
#[derive(Debug)]
struct StartConfigError(rum_schemas::config::ConfigError);

impl std::fmt::Display for StartConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StartConfigError {}

/// `rum token`: the query string of a token for the site, signed with its current key.
fn token(args: &TokenArgs, ingest: &rum_ingest::IngestConfig) -> anyhow::Result<String> {
    let keys = ingest
        .sites
        .get(&args.site)
        .and_then(rum_ingest::token::SiteKeys::of)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "site `{0}` has no ingest.sites.{0}.token_secret (or token_secrets) in the config",
                args.site
            )
        })?;
    if args.ttl > ingest.token_max_ttl_secs {
        anyhow::bail!(
            "--ttl {} s is longer than ingest.token_max_ttl_secs ({} s): the ingest would refuse \
             the token",
            args.ttl,
            ingest.token_max_ttl_secs
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(rum_ingest::token::query(
        keys.current(),
        &args.site,
        rum_ingest::BEACON_PATH,
        now + args.ttl,
    ))
}

/// A channel that turns true on SIGINT or SIGTERM.
fn stop_channel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        let _ = tx.send(true);
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

/// Completes when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
