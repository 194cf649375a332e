//! `rum token` prints a token the ingest accepts.

mod common;

use common::rum_output;

#[test]
fn prints_a_token_that_verifies_for_the_beacon_path() {
    let dir = std::env::temp_dir().join(format!("rum-token-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rum.toml");
    std::fs::write(
        &file,
        "[ingest.sites.shop]\ntoken_secret = \"0123456789abcdef-shop\"\n",
    )
    .unwrap();
    let out = rum_output(
        &[
            "token",
            "--site",
            "shop",
            "--ttl",
            "2h",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let params: std::collections::HashMap<&str, &str> = line
        .trim()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(params["site"], "shop");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires: u64 = params["e"].parse().unwrap();
    assert!(
        (now + 7_000..=now + 7_300).contains(&expires),
        "expires in about 2 h: {expires}"
    );
    let verified = rum_ingest::token::verify(
        "0123456789abcdef-shop",
        rum_ingest::BEACON_PATH,
        Some(params["t"]),
        Some(params["e"]),
        now,
    );
    assert_eq!(verified, Ok(()));

    let no_secret = rum_output(
        &[
            "token",
            "--site",
            "blog",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!no_secret.status.success());
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("token_secret"));
    std::fs::remove_dir_all(&dir).unwrap();
}
