//! `rum token` prints a token the ingest accepts: bound to its site, signed with the site's
//! current key, within the maximum lifetime; the secret never printed.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::rum_output;
use rum_ingest::token::{verify, Presented, SiteKeys, TokenError};
use rum_ingest::{IngestConfig, SiteConfig, BEACON_PATH};

const CONFIG: &str = r#"
[ingest.sites.shop]
token_secret = "0123456789abcdef-shop"

[ingest.sites.blog]
token_secrets = [
  { id = "k2", secret = "0123456789abcdef-blog-new" },
  { id = "k1", secret = "0123456789abcdef-blog-old" },
]

[ingest.sites.open]
"#;

struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str) -> ConfigFile {
        let dir =
            std::env::temp_dir().join(format!("rum-token-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rum.toml");
        std::fs::write(&file, CONFIG).unwrap();
        ConfigFile(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("rum.toml")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `rum token` with these arguments: its stdout's parameters, or its stderr.
fn token(config: &Path, args: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut all = vec!["token", "--config", config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = rum_output(&all, &[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stdout.contains("0123456789abcdef") && !stderr.contains("0123456789abcdef"),
        "a secret printed: {stdout} {stderr}"
    );
    if !out.status.success() {
        return Err(stderr);
    }
    Ok(stdout
        .trim()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// A site's keys, read from [`CONFIG`] as the binary reads them.
fn keys(site: &str) -> SiteKeys {
    #[derive(serde::Deserialize)]
    struct Config {
        ingest: IngestConfig,
    }
    use figment::providers::{Format, Toml};
    let config: Config = figment::Figment::from(Toml::string(CONFIG))
        .extract()
        .unwrap();
    SiteKeys::of(&config.ingest.sites[site]).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn check(keys: &SiteKeys, site: &str, params: &HashMap<String, String>) -> Result<(), TokenError> {
    let presented = Presented {
        token: params.get("t").map(String::as_str),
        expires: params.get("e").map(String::as_str),
        key_id: params.get("k").map(String::as_str),
    };
    verify(
        keys,
        site,
        BEACON_PATH,
        presented,
        now(),
        IngestConfig::default().token_max_ttl_secs,
    )
}

#[test]
fn prints_a_token_that_verifies_for_its_site_only() {
    let config = ConfigFile::new("site");
    let params = token(&config.path(), &["--site", "shop", "--ttl", "2h"]).expect("a token");
    assert_eq!(params["site"], "shop");
    assert!(!params.contains_key("k"), "a token_secret has no key id");
    let expires: u64 = params["e"].parse().unwrap();
    let now = now();
    assert!(
        (now + 7_000..=now + 7_300).contains(&expires),
        "expires in about 2 h: {expires}"
    );
    assert_eq!(check(&keys("shop"), "shop", &params), Ok(()));
    // The same secret configured for another site: the token is still refused there.
    let shared = SiteKeys::of(&SiteConfig {
        token_secret: Some("0123456789abcdef-shop".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        check(&shared, "other", &params),
        Err(TokenError::Invalid),
        "a token of one site is refused on another"
    );
}

#[test]
fn signs_with_the_first_of_rotating_keys_and_names_it() {
    let config = ConfigFile::new("rotation");
    let params = token(&config.path(), &["--site", "blog"]).expect("a token");
    assert_eq!(params["k"], "k2", "the first key signs");
    assert_eq!(check(&keys("blog"), "blog", &params), Ok(()));
    let mut renamed = params.clone();
    renamed.insert("k".into(), "k1".into());
    assert_eq!(
        check(&keys("blog"), "blog", &renamed),
        Err(TokenError::Invalid)
    );
}

#[test]
fn refuses_a_lifetime_beyond_the_maximum_and_a_site_without_a_secret() {
    let config = ConfigFile::new("refusals");
    let file = config.path();
    let too_long = token(&file, &["--site", "shop", "--ttl", "8d"]).unwrap_err();
    assert!(too_long.contains("ingest.token_max_ttl_secs"), "{too_long}");
    let within = token(&file, &["--site", "shop", "--ttl", "7d"]).expect("7 days is the maximum");
    assert_eq!(check(&keys("shop"), "shop", &within), Ok(()));
    let no_secret = token(&file, &["--site", "open"]).unwrap_err();
    assert!(no_secret.contains("token_secret"), "{no_secret}");
    let unknown = token(&file, &["--site", "nope"]).unwrap_err();
    assert!(unknown.contains("token_secret"), "{unknown}");
}
