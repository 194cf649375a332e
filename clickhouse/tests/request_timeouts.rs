//! The `clickhouse` crate's client, as `rum` builds it ([`ClickHouseConfig::client`]), against a real
//! ClickHouse 18.16 behind testkit's [`FaultProxy`] (issue 16): an INSERT whose answer is lost after
//! ClickHouse stored it, a server that accepts connections and never answers (each request fails
//! after `clickhouse.request_timeout_ms` with [`StorageError::Timeout`]), one that refuses, and
//! kept-alive connections through the proxy. And without a proxy: an INSERT cut while it is sent
//! stores nothing (the connection ends with a reset: `rum_clickhouse::tls::ResetIfCut`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clickhouse::Row;
use rum_clickhouse::{bounded, ClickHouseConfig, StorageError};
use rum_testkit::{ClickHouseServer, FaultProxy, ProxyMode};
use serde::Serialize;

#[derive(Row, Serialize)]
struct Number {
    x: u32,
}

/// ClickHouse with table `default.t`, a proxy in front of it, and `rum`'s config pointing at the
/// proxy with a 1 s request timeout.
fn setup() -> (ClickHouseServer, FaultProxy, ClickHouseConfig) {
    let server = ClickHouseServer::start();
    server.query("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x");
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], server.http_port)));
    let config = ClickHouseConfig {
        url: proxy.url(),
        database: "default".into(),
        request_timeout_ms: 1000,
        ..ClickHouseConfig::default()
    };
    config.validate().unwrap();
    (server, proxy, config)
}

fn count(server: &ClickHouseServer) -> u64 {
    server
        .query("SELECT count() FROM default.t")
        .trim()
        .parse()
        .unwrap()
}

async fn insert(config: &ClickHouseConfig, values: &[u32]) -> Result<(), StorageError> {
    let client = config.client();
    let work = async {
        let mut insert = client.insert::<Number>("t").await?;
        for &x in values {
            insert.write(&Number { x }).await?;
        }
        insert.end().await
    };
    bounded("inserting numbers", config.request_timeout(), work).await
}

async fn select_count(config: &ClickHouseConfig) -> Result<u64, StorageError> {
    let client = config.client();
    let query = client.query("SELECT count() FROM t");
    bounded(
        "counting",
        config.request_timeout(),
        query.fetch_one::<u64>(),
    )
    .await
}

#[tokio::test]
async fn an_insert_whose_answer_is_lost_is_stored_and_fails_as_a_network_error() {
    let (server, proxy, config) = setup();
    // As the crate sends it: the SQL in the URL (``INSERT INTO `t`(`x`) FORMAT RowBinary``), the
    // rows in a chunked, lz4-compressed body.
    proxy.set_mode(ProxyMode::ResetAfterAnswer {
        matching: "INSERT INTO t".into(),
        times: 1,
    });
    let err = insert(&config, &[1, 2, 3]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::ClickHouse(clickhouse::error::Error::Network(_))
        ),
        "{err:?}"
    );
    assert_eq!(proxy.resets(), 1);
    assert_eq!(
        count(&server),
        3,
        "ClickHouse stored the batch whose answer was lost"
    );
    // The same client goes on (a new connection), and the next INSERT passes.
    insert(&config, &[4]).await.unwrap();
    assert_eq!(select_count(&config).await.unwrap(), 4);
    assert_eq!(proxy.resets(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_fails_each_request_after_the_request_timeout() {
    let (server, proxy, config) = setup();
    assert_eq!(select_count(&config).await.unwrap(), 0);
    proxy.set_mode(ProxyMode::Blackhole);
    for attempt in 0..2 {
        let started = Instant::now();
        let err = select_count(&config).await.unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(err, StorageError::Timeout { what: "counting", after } if after == Duration::from_secs(1)),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "clickhouse: counting: no answer within 1s");
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1500),
            "attempt {attempt}: {waited:?}"
        );
    }
    // An INSERT too: its rows never reach ClickHouse.
    let started = Instant::now();
    let err = insert(&config, &[1, 2]).await.unwrap_err();
    assert!(matches!(err, StorageError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    proxy.set_mode(ProxyMode::Pass);
    insert(&config, &[3]).await.unwrap();
    assert_eq!(select_count(&config).await.unwrap(), 1);
    assert_eq!(count(&server), 1);
}

#[tokio::test]
async fn a_refusing_server_fails_at_once_and_kept_alive_connections_pass() {
    let (_server, proxy, config) = setup();
    let client = config.client();
    for i in 0..50u64 {
        // fetch_all: the answer is read to its end, so the connection goes back to the pool
        // (fetch_one may drop it before the last chunk, and hyper then closes the connection).
        let n = client
            .query("SELECT toUInt64(? + 1)")
            .bind(i)
            .fetch_all::<u64>()
            .await
            .unwrap();
        assert_eq!(n, [i + 1]);
    }
    assert_eq!(proxy.requests(), 50);
    assert!(proxy.connections() <= 2, "{}", proxy.connections());

    proxy.set_mode(ProxyMode::Refuse);
    let started = Instant::now();
    let err = select_count(&config).await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::ClickHouse(clickhouse::error::Error::Network(_))
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// Waits (at most 30 s) until ClickHouse runs no INSERT into `t`, then counts its rows.
async fn count_when_settled(server: &ClickHouseServer) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .query(
            "SELECT count() FROM system.processes \
             WHERE query LIKE 'INSERT INTO%t%' AND query NOT LIKE '%system.processes%'",
        )
        .trim()
        != "0"
    {
        assert!(Instant::now() < deadline, "an INSERT still runs after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count(server)
}

#[tokio::test]
async fn an_insert_cut_while_it_is_sent_stores_nothing() {
    let server = ClickHouseServer::start();
    server.query("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x");
    let config = ClickHouseConfig {
        url: server.url.clone(),
        database: "default".into(),
        request_timeout_ms: 1000,
        ..ClickHouseConfig::default()
    };
    let client = config.client();
    // Dropped before end(), after 300,000 rows went out in many chunks (one block: under
    // max_insert_block_size). With a FIN, 18.16 stored the 292,608 rows it had received.
    {
        let mut insert = client.insert::<Number>("t").await.unwrap();
        for x in 0..300_000 {
            insert.write(&Number { x }).await.unwrap();
        }
    }
    assert_eq!(count_when_settled(&server).await, 0);
    // Cut by the request timeout while the request is being sent.
    let work = async {
        let mut insert = client.insert::<Number>("t").await?;
        for x in 0..300_000 {
            insert.write(&Number { x }).await?;
        }
        std::future::pending::<()>().await;
        insert.end().await
    };
    let err = bounded("inserting numbers", config.request_timeout(), work)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Timeout { .. }), "{err:?}");
    assert_eq!(count_when_settled(&server).await, 0);
    // The client goes on; an INSERT that ends is stored whole.
    insert(&config, &[1, 2, 3]).await.unwrap();
    assert_eq!(count_when_settled(&server).await, 3);
}
