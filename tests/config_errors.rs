//! A bad configuration stops every subcommand at start: one line on stderr naming the key, exit 2.

mod common;

use common::rum_output;

const SUBCOMMANDS: [&str; 5] = ["ingest", "consume", "migrate", "standalone", "alerts"];

fn assert_config_error(env: &[(&str, &str)], key: &str, env_name: &str) {
    for sub in SUBCOMMANDS {
        let out = rum_output(&[sub], env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "rum {sub} with {env:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line, got: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(env_name),
            "rum {sub}: {stderr}"
        );
    }
}

#[test]
fn empty_kafka_brokers_stops_every_subcommand() {
    assert_config_error(
        &[("RUM_KAFKA_BROKERS", "")],
        "kafka.brokers",
        "RUM_KAFKA_BROKERS",
    );
}

#[test]
fn an_unparsable_port_stops_every_subcommand() {
    assert_config_error(
        &[("RUM_INGEST_PORT", "80a")],
        "ingest.port",
        "RUM_INGEST_PORT",
    );
    assert_config_error(
        &[("RUM_CONSUMER_PORT", "70000")],
        "consumer.port",
        "RUM_CONSUMER_PORT",
    );
}

#[test]
fn a_bad_clickhouse_url_stops_every_subcommand() {
    assert_config_error(
        &[("RUM_CLICKHOUSE_URL", "localhost:8123")],
        "clickhouse.url",
        "RUM_CLICKHOUSE_URL",
    );
}

#[test]
fn a_bad_clickhouse_cluster_stops_every_subcommand() {
    for bad in ["", "my-cluster", "rum; DROP TABLE x"] {
        assert_config_error(
            &[("RUM_CLICKHOUSE_CLUSTER", bad)],
            "clickhouse.cluster",
            "RUM_CLICKHOUSE_CLUSTER",
        );
    }
}

#[test]
fn a_typo_in_the_config_file_names_the_file() {
    let dir = std::env::temp_dir().join(format!("rum-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rum.toml");
    std::fs::write(&file, "[ingest]\nprot = 8080\n").unwrap();
    let out = rum_output(&["ingest", "--config", file.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("prot") && stderr.contains("rum.toml"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_attribution_cap_stops_every_subcommand() {
    for (env_name, value, key) in [
        (
            "RUM_INGEST_MAX_ATTRIBUTION_VALUES_PER_ROUTE",
            "0",
            "ingest.max_attribution_values_per_route",
        ),
        (
            "RUM_INGEST_MAX_ATTRIBUTION_VALUES_PER_ROUTE",
            "10001",
            "ingest.max_attribution_values_per_route",
        ),
        (
            "RUM_INGEST_MAX_ATTRIBUTION_VALUES_PER_ROUTE",
            "many",
            "ingest.max_attribution_values_per_route",
        ),
        (
            "RUM_INGEST_MAX_ATTRIBUTION_ROUTES",
            "0",
            "ingest.max_attribution_routes",
        ),
    ] {
        assert_config_error(&[(env_name, value)], key, env_name);
    }
}

#[test]
fn a_bad_alerts_weighting_stops_every_subcommand() {
    for value in ["weighted", ""] {
        assert_config_error(
            &[("RUM_ALERTS_WEIGHTING", value)],
            "alerts.weighting",
            "RUM_ALERTS_WEIGHTING",
        );
    }
}
