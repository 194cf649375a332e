//! The collector bundle named by `ingest.collector_bundle`, read once at start: at its
//! content-hashed path cached as immutable, at `/rum.js` cached for 5 minutes with an `ETag`;
//! without one, a 404 that names the setting and no server path.

mod common;

use base64::Engine;
use common::Served;
use rum_ingest::BUNDLE_PATH;
use rum_testkit::test_dir;
use sha2::{Digest, Sha256, Sha384};

const BUNDLE: &str = "(()=>{/* the collector */})();\n";

/// A bundle file in a directory of its own; removed on drop.
struct BundleFile(std::path::PathBuf);

impl BundleFile {
    fn new(name: &str, text: &str) -> BundleFile {
        let dir = test_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rum.iife.js"), text).unwrap();
        BundleFile(dir)
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.join("rum.iife.js")
    }
}

impl Drop for BundleFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn get(served: &Served, path: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("http://{}{path}", served.addr));
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_string()
}

#[tokio::test]
async fn serves_the_bundle_at_its_content_hash_as_immutable() {
    let file = BundleFile::new("bundle-hashed", BUNDLE);
    let served = Served::start(|c| c.collector_bundle = Some(file.path())).await;
    // Read once at start: a later change of the file does not change what is served.
    std::fs::write(file.path(), "changed").unwrap();

    let sha256 = Sha256::digest(BUNDLE);
    let hex: String = sha256[..8].iter().map(|b| format!("{b:02x}")).collect();
    let hashed = format!("/rum.{hex}.js");
    let response = get(&served, &hashed, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        header(&response, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&response, "access-control-allow-origin"), "*");
    assert_eq!(header(&response, "etag"), format!("\"{hex}\""));
    let body = response.bytes().await.unwrap();
    assert_eq!(body, BUNDLE.as_bytes());
    // What a browser checks against `integrity="sha384-..."`.
    let expected = format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha384::digest(&body))
    );
    assert_eq!(rum_ingest::HashedBundle::new(BUNDLE).integrity(), expected);

    // Another collector's hash (a page from before a deploy) is not this bundle.
    assert_eq!(
        get(&served, "/rum.0123456789abcdef.js", None)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn serves_rum_js_with_a_short_cache_and_revalidates_by_etag() {
    let file = BundleFile::new("bundle-plain", BUNDLE);
    let served = Served::start(|c| c.collector_bundle = Some(file.path())).await;
    let response = get(&served, BUNDLE_PATH, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "cache-control"), "public, max-age=300");
    let etag = header(&response, "etag");
    assert_eq!(response.text().await.unwrap(), BUNDLE);

    let revalidated = get(&served, BUNDLE_PATH, Some(&etag)).await;
    assert_eq!(revalidated.status(), 304);
    assert_eq!(header(&revalidated, "etag"), etag);
    assert!(revalidated.bytes().await.unwrap().is_empty());
    let stale = get(&served, BUNDLE_PATH, Some("\"0123456789abcdef\"")).await;
    assert_eq!(
        stale.status(),
        200,
        "an old collector's tag gets the new one"
    );
}

#[tokio::test]
async fn answers_404_naming_the_setting_and_no_server_path() {
    let missing = test_dir().join("private-build-dir-of-the-server/rum.iife.js");
    for bundle in [None, Some(missing)] {
        let served = Served::start(|c| c.collector_bundle = bundle).await;
        let response = get(&served, BUNDLE_PATH, None).await;
        assert_eq!(response.status(), 404);
        let text = response.text().await.unwrap();
        assert!(text.contains("ingest.collector_bundle"), "{text}");
        for leak in ["private-build-dir", "/", "No such file", "os error"] {
            assert!(!text.contains(leak), "`{leak}` in {text}");
        }
    }
}
