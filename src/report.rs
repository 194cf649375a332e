//! `rum report`: one self-contained HTML file to look at a site's web vitals.
//!
//! `rum report --site S [--since 7d] [--until 0] --out report.html [--routes 10] [--min-samples 20]`
//! reads ClickHouse (the `[clickhouse]` config of every command) and writes, per metric (LCP, INP,
//! CLS, FCP, TTFB): the p75 trend over the window (one point per hour for 7 days; finer or coarser
//! steps for other windows, at most [`data::MAX_POINTS`]) drawn over Google's good / needs-improvement /
//! poor bands, the distribution of the samples (from the merged sketches of `vitals_1m`), the p75
//! per device, the worst route/device pairs, and for LCP and INP the top elements and interaction
//! targets of the worst routes (from `vitals_raw`'s attribution columns).
//!
//! The file opens without a network: CSS and SVG inline, no script, no font, no URL to load. Every
//! text from the database is escaped ([`html::escape`]). Charts are drawn by `plotters`. Progress
//! goes to stderr; a bad option is one line on stderr naming it, and exit status 2.

mod charts;
mod data;
mod html;

use std::path::{Path, PathBuf};

use anyhow::Context;
use rum_clickhouse::ClickHouseConfig;

/// Options of `rum report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The site.
    #[arg(long)]
    pub site: String,
    /// The window starts this long ago: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "7d", value_parser = crate::duration::parse_secs)]
    pub since: u64,
    /// The window ends this long ago (0: now).
    #[arg(long, default_value = "0", value_parser = crate::duration::parse_secs)]
    pub until: u64,
    /// The HTML file to write (replaced if it exists; its folder must exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Rows of each metric's worst routes table, 1 to 50.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub routes: u64,
    /// A route/device pair is ranked among the worst only with at least this many samples.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_samples: u64,
    /// Count each sample once. By default each weighs `1 / sample_rate` (the page loads it stands
    /// for), as in `rum query`.
    #[arg(long)]
    pub unweighted: bool,
}

/// A bad option found after parsing: one line on stderr and exit status 2.
#[derive(Debug)]
pub struct ArgError(String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArgError {}

/// clap's error for a command line of `rum report` in one line (clap writes several: the usage
/// and a tip), or `None` for another subcommand, `--help` and `--version`. `command` is the whole
/// CLI's, used to tell which subcommand the line was for.
pub fn one_line_error(error: &clap::Error, command: clap::Command) -> Option<String> {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    let matches = command.ignore_errors(true).try_get_matches().ok()?;
    (matches.subcommand_name() == Some("report")).then(|| first_paragraph(error))
}

/// The first paragraph of a clap error, without `error: `, on one line.
fn first_paragraph(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = lines.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// Runs `rum report`.
pub async fn run(args: ReportArgs, config: &ClickHouseConfig) -> anyhow::Result<()> {
    check_out(&args.out)?;
    if args.until >= args.since {
        return Err(ArgError(format!(
            "--until ({}s ago) must be more recent than --since ({}s ago)",
            args.until, args.since
        ))
        .into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let since = unix_u32(now.saturating_sub(args.since));
    let until = unix_u32(now.saturating_sub(args.until));
    let report = data::gather(&args, config, since, until).await?;
    let page = html::page(&report);
    write_atomically(&args.out, page.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "rum report: wrote {} ({} KiB)",
        args.out.display(),
        page.len().div_ceil(1024)
    );
    Ok(())
}

/// `--out` names a file in an existing folder.
fn check_out(out: &Path) -> Result<(), ArgError> {
    if out.as_os_str().is_empty() || out.is_dir() {
        return Err(ArgError(format!(
            "--out {}: not a file name",
            out.display()
        )));
    }
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(ArgError(format!(
            "--out {}: the folder {} does not exist",
            out.display(),
            folder.display()
        )));
    }
    Ok(())
}

fn unix_u32(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it: a reader never sees half a
/// report, and a failed run leaves the old one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
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
        Report(ReportArgs),
    }

    fn parse(args: &[&str]) -> Result<ReportArgs, clap::Error> {
        let cli = Cli::try_parse_from(["rum", "report"].iter().chain(args))?;
        let Command::Report(args) = cli.command;
        Ok(args)
    }

    #[test]
    fn parses_the_options_and_names_a_bad_one_in_one_line() {
        let args = parse(&["--site", "shop", "--out", "r.html"]).unwrap();
        assert_eq!(
            (args.since, args.until, args.routes, args.min_samples),
            (7 * 86_400, 0, 10, 20)
        );
        let args = parse(&[
            "--site", "s", "--out", "r.html", "--since", "2h", "--until", "30m", "--routes", "50",
        ])
        .unwrap();
        assert_eq!((args.since, args.until, args.routes), (7200, 1800, 50));
        for (bad, flag) in [
            (
                &["--site", "s", "--out", "r", "--since", "30x"][..],
                "--since",
            ),
            (&["--site", "s", "--out", "r", "--routes", "0"], "--routes"),
            (&["--site", "s", "--out", "r", "--routes", "51"], "--routes"),
            (
                &["--site", "s", "--out", "r", "--min-samples", "0"],
                "--min-samples",
            ),
            (&["--out", "r"], "--site"),
            (&["--site", "s"], "--out"),
            (&["--site", "s", "--out", "r", "--bogus"], "--bogus"),
        ] {
            let err = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(err.exit_code(), 2);
            let line = first_paragraph(&err);
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains(flag), "{bad:?}: {line}");
            assert!(!line.starts_with("error:"), "{line}");
        }
    }

    #[test]
    fn out_must_be_a_file_in_an_existing_folder() {
        let dir = std::env::temp_dir();
        assert!(check_out(&dir.join("r.html")).is_ok());
        assert!(check_out(Path::new("r.html")).is_ok());
        assert!(check_out(&dir).unwrap_err().0.starts_with("--out "));
        let err = check_out(&dir.join("no-such-folder-4711/r.html")).unwrap_err();
        assert!(err.0.contains("does not exist"), "{err}");
    }

    #[test]
    fn writes_whole_files_only() {
        let dir = std::env::temp_dir().join(format!("rum-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.html");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
