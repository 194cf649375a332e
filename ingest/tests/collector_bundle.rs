//! `GET /rum.js`: the collector bundle named by `ingest.collector_bundle`, read once at start and
//! served with long cache headers; without one, a 404 that says what to configure.

use rum_ingest::{Ingest, IngestConfig, BUNDLE_PATH};
use rum_schemas::kafka::KafkaConfig;
use rum_testkit::{free_port, test_dir};

const BUNDLE: &str = "(()=>{/* the collector */})();\n";

/// An ingest (its producer never needs the broker here) served in the background; returns its base URL.
async fn serve(configure: impl FnOnce(&mut IngestConfig)) -> String {
    let mut config = IngestConfig {
        port: free_port(),
        ..IngestConfig::default()
    };
    configure(&mut config);
    config.validate().expect("test config is valid");
    let kafka = KafkaConfig {
        brokers: format!("127.0.0.1:{}", free_port()),
        ..KafkaConfig::default()
    };
    let ingest = Ingest::bind(&config, &kafka).await.expect("ingest binds");
    let base = format!("http://{}", ingest.local_addr().unwrap());
    tokio::spawn(ingest.run(std::future::pending()));
    base
}

#[tokio::test]
async fn serves_the_collector_bundle_with_long_cache_headers() {
    let dir = test_dir().join(format!("collector-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rum.iife.js");
    std::fs::write(&path, BUNDLE).unwrap();
    let base = serve(|c| c.collector_bundle = Some(path.clone())).await;
    // Read once at start: a later change of the file does not change what is served.
    std::fs::write(&path, "changed").unwrap();

    let response = reqwest::get(format!("{base}{BUNDLE_PATH}")).await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(response.text().await.unwrap(), BUNDLE);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn answers_404_naming_the_setting_when_no_bundle_is_configured_or_found() {
    let missing = test_dir().join("no-such-dir/rum.iife.js");
    for bundle in [None, Some(missing)] {
        let base = serve(|c| c.collector_bundle = bundle).await;
        let response = reqwest::get(format!("{base}{BUNDLE_PATH}")).await.unwrap();
        assert_eq!(response.status(), 404);
        let text = response.text().await.unwrap();
        assert!(text.contains("ingest.collector_bundle"), "{text}");
    }
}
