//! `rum snippet`: the script tag a site embeds, with the collector's content-hashed URL and its
//! Subresource Integrity hash, computed from the very bundle the ingest serves
//! (`ingest.collector_bundle`, or `--bundle`) by the same code (`rum_ingest::HashedBundle`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use rum_ingest::{HashedBundle, IngestConfig};
use rum_schemas::limits::{is_valid_sample_rate, is_valid_site, normalize_release};

/// Options of `rum snippet`.
#[derive(clap::Args)]
pub struct Args {
    /// Where browsers reach the ingest, e.g. `https://rum.example`.
    #[arg(long)]
    url: String,
    /// The site the page belongs to.
    #[arg(long)]
    site: String,
    /// The share of page loads measured (0.0001 to 1); the collector's default when absent.
    #[arg(long)]
    sample_rate: Option<f64>,
    /// The bundle to hash; default: `ingest.collector_bundle` of the config (point it, or this, at
    /// `collector/dist/rum.attribution.iife.js` for the attribution build).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The site's release, sent with every beacon (1 to 64 printable ASCII characters).
    #[arg(long)]
    release: Option<String>,
    /// Report soft navigations (a single-page app's route changes) as page views of their own.
    #[arg(long)]
    soft_navs: bool,
}

/// Prints the tag.
pub fn run(args: Args, ingest: &IngestConfig) -> anyhow::Result<()> {
    let Some(path) = args.bundle.as_ref().or(ingest.collector_bundle.as_ref()) else {
        bail!(
            "no bundle: pass --bundle or set ingest.collector_bundle (RUM_INGEST_COLLECTOR_BUNDLE)"
        );
    };
    let bundle = HashedBundle::read(path)
        .with_context(|| format!("cannot read the collector bundle {}", path.display()))?;
    println!("{}", tag(&bundle, &args)?);
    Ok(())
}

/// The tag, after checking that every value is safe inside an HTML attribute.
fn tag(bundle: &HashedBundle, args: &Args) -> anyhow::Result<String> {
    let url = args.url.trim_end_matches('/');
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let safe = |c: char| !c.is_whitespace() && !c.is_control() && !"\"'<>&`".contains(c);
    if !scheme_ok || !url.chars().all(safe) || url.contains(['?', '#']) {
        bail!("--url must be an http(s) URL without query or fragment, like https://rum.example");
    }
    if !is_valid_site(&args.site) {
        bail!("--site: a site name is [a-z0-9._-], at most 64 characters");
    }
    let rate = args.sample_rate.map(|r| r.to_string());
    if args.sample_rate.is_some_and(|r| !is_valid_sample_rate(r)) {
        bail!("--sample-rate must be between 0.0001 and 1");
    }
    // Printable ASCII may hold `"`, `&`, `<`, `>` or `'`: escaped for the attribute (the browser's
    // dataset gives the release back as it was).
    let release = match &args.release {
        Some(r) => Some(html_attribute(normalize_release(r).ok_or_else(|| {
            anyhow::anyhow!("--release: 1 to 64 printable ASCII characters, not starting or ending with a space")
        })?)),
        None => None,
    };
    let mut data = vec![("site", args.site.as_str())];
    if let Some(rate) = &rate {
        data.push(("sample-rate", rate));
    }
    if let Some(release) = &release {
        data.push(("release", release));
    }
    if args.soft_navs {
        data.push(("report-soft-navs", ""));
    }
    Ok(bundle.script_tag(url, &data))
}

/// `text` for a double-quoted HTML attribute.
fn html_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, site: &str, sample_rate: Option<f64>) -> Args {
        Args {
            url: url.into(),
            site: site.into(),
            sample_rate,
            bundle: None,
            release: None,
            soft_navs: false,
        }
    }

    #[test]
    fn release_and_soft_navigations_are_data_attributes_escaped() {
        let bundle = HashedBundle::new(&b"x"[..]);
        let mut a = args("https://rum.example", "shop", None);
        a.release = Some("  v1 \"beta\" <&> 'x'  ".into());
        a.soft_navs = true;
        let printed = tag(&bundle, &a).unwrap();
        assert!(
            printed.ends_with(
                " data-site=\"shop\" data-release=\"v1 &quot;beta&quot; &lt;&amp;&gt; &#39;x&#39;\" \
                 data-report-soft-navs=\"\"></script>"
            ),
            "{printed}"
        );
        for bad in ["", "   ", "caf\u{e9}", "a\tb", &"x".repeat(65)] {
            a.release = Some(bad.into());
            let err = tag(&bundle, &a).unwrap_err().to_string();
            assert!(err.starts_with("--release"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn prints_the_hashed_url_the_integrity_and_the_data_attributes() {
        let bundle = HashedBundle::new(&b"(()=>{})();"[..]);
        let tag = tag(&bundle, &args("https://rum.example/", "shop", Some(0.25))).unwrap();
        assert_eq!(
            tag,
            format!(
                "<script src=\"https://rum.example{}\" integrity=\"{}\" crossorigin=\"anonymous\" \
                 data-site=\"shop\" data-sample-rate=\"0.25\"></script>",
                bundle.path(),
                bundle.integrity()
            )
        );
    }

    #[test]
    fn refuses_values_that_would_break_out_of_an_attribute() {
        let bundle = HashedBundle::new(&b"x"[..]);
        for bad in [
            args("https://rum.example\"><script>", "shop", None),
            args("javascript:alert(1)", "shop", None),
            args("https://rum.example", "Shop\"", None),
            args("https://rum.example", "shop", Some(2.0)),
        ] {
            assert!(tag(&bundle, &bad).is_err(), "{} {}", bad.url, bad.site);
        }
    }
}
