//! The ingest's server against slow, stalled and misbehaving clients, in-process over real sockets,
//! with a publisher that acknowledges at once (what Kafka does is not what these test).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{beacon_request, closed_by_server, post_beacon, read_head, Served, BEACON};
use rum_ingest::BEACON_PATH;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_stalled_body_holds_no_slot_and_is_answered_408_after_the_body_timeout() {
    let served = Served::start(|c| {
        c.max_in_flight = 1;
        c.body_timeout_ms = 1_000;
    })
    .await;
    // The attack of the issue: headers and `{` of a 16 kB body, then nothing, on more connections
    // than there are slots.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut stream = served.connect().await;
        let head = format!(
            "POST {BEACON_PATH} HTTP/1.1\r\nHost: ingest\r\nContent-Type: text/plain\r\nContent-Length: 16000\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    served.wait_for_open_connections(3).await;
    // Every slot is free for a client that sends its beacon whole.
    let answer = post_beacon(&served).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    for stream in &mut stalled {
        let answer = read_head(stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert_eq!(served.count("timeouts", "body"), 3);
    assert_eq!(served.count("rejected", "body_timeout"), 3);
    assert_eq!(served.published.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stalled_or_silent_head_is_closed_after_the_header_timeout() {
    let served = Served::start(|c| c.header_timeout_ms = 500).await;
    let mut silent = served.connect().await;
    let mut half_head = served.connect().await;
    half_head
        .write_all(format!("POST {BEACON_PATH} HTTP/1.1\r\nHost: ingest\r\n").as_bytes())
        .await
        .unwrap();
    assert!(closed_by_server(&mut silent).await);
    assert!(closed_by_server(&mut half_head).await);
    assert_eq!(served.count("timeouts", "head"), 2);
    served.wait_for_open_connections(0).await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let served = Served::start(|c| {
        c.idle_timeout_ms = 500;
        c.header_timeout_ms = 60_000;
    })
    .await;
    let mut stream = served.connect().await;
    for _ in 0..2 {
        stream
            .write_all(beacon_request(BEACON).as_bytes())
            .await
            .unwrap();
        let answer = read_head(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 204"), "kept alive: {answer}");
    }
    assert!(closed_by_server(&mut stream).await);
    assert_eq!(served.count("timeouts", "idle"), 1);
    assert_eq!(served.count("timeouts", "head"), 0);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let served = Served::start(|c| {
        c.max_connections = 5;
        c.header_timeout_ms = 60_000;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(served.connect().await);
    }
    served.wait_for_open_connections(5).await;
    for _ in 0..3 {
        let mut extra = served.connect().await;
        assert!(closed_by_server(&mut extra).await, "refused at once");
    }
    assert_eq!(served.count("refused", "limit"), 3);
    assert_eq!(served.state.metrics.connections.get(), 5);
    // A freed place serves the next client.
    drop(held.pop());
    served.wait_for_open_connections(4).await;
    let answer = post_beacon(&served).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

#[tokio::test]
async fn h2c_is_told_to_use_http_1_1_and_counted() {
    let served = Served::start(|_| {}).await;
    let mut stream = served.connect().await;
    // The preface and an empty SETTINGS frame, as `curl --http2-prior-knowledge` starts.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("closed within 10 s")
        .ok();
    assert_eq!(
        answer,
        [
            0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS
            0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xd, // GOAWAY HTTP_1_1_REQUIRED
        ]
    );
    assert_eq!(served.count("refused", "h2c"), 1);
    assert_eq!(served.published.0.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_request_whose_first_segment_could_begin_the_h2_preface_is_served() {
    let served = Served::start(|_| {}).await;
    let request = beacon_request(BEACON);
    // "P" could start "PRI * HTTP/2.0": held back until the next byte tells, then replayed.
    let mut stream = served.connect().await;
    stream.write_all(&request.as_bytes()[..1]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&request.as_bytes()[1..]).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    // "PRI " and then not the preface: an HTTP/1 request with a strange method, answered as one.
    let mut stream = served.connect().await;
    stream.write_all(b"PRI").await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(format!("NT {BEACON_PATH} HTTP/1.1\r\nHost: ingest\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(served.count("refused", "h2c"), 0);
}

#[tokio::test]
async fn a_head_over_max_head_bytes_gets_431_and_is_counted() {
    let served = Served::start(|c| c.max_head_bytes = 8 * 1024).await;
    let mut stream = served.connect().await;
    let padding = "a".repeat(20 * 1024);
    let request = format!(
        "POST {BEACON_PATH} HTTP/1.1\r\nHost: ingest\r\nX-Padding: {padding}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    // The server may close before it has read all of it.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    served.wait_for_open_connections(0).await;
    assert_eq!(served.count("errors", "head_too_large"), 1);
}

#[tokio::test]
async fn the_rate_limit_answers_from_the_head_before_any_body_arrives() {
    let served = Served::start(|c| {
        c.rate_limit_per_second = 1;
        c.rate_limit_burst = 1;
    })
    .await;
    let answer = post_beacon(&served).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    // The head of a second beacon, its body never sent: refused without waiting for it.
    let mut stream = served.connect().await;
    let head = format!(
        "POST {BEACON_PATH} HTTP/1.1\r\nHost: ingest\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_head(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert_eq!(served.count("rejected", "rate_limited"), 1);
    assert_eq!(served.count("timeouts", "body"), 0);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_drops_stalled_ones_after_the_drain_timeout() {
    let mut served = Served::start(|c| {
        c.header_timeout_ms = 60_000;
        c.delivery_timeout_ms = 500;
        c.drain_timeout_ms = 500;
    })
    .await;
    let mut idle = served.connect().await;
    idle.write_all(beacon_request(BEACON).as_bytes())
        .await
        .unwrap();
    assert!(read_head(&mut idle).await.starts_with("HTTP/1.1 204"));
    let mut stalled = served.connect().await;
    stalled
        .write_all(format!("POST {BEACON_PATH} HTTP/1.1\r\n").as_bytes())
        .await
        .unwrap();
    served.wait_for_open_connections(2).await;

    served.stop.take().unwrap().send(()).unwrap();
    assert!(
        closed_by_server(&mut idle).await,
        "an idle connection closes at once"
    );
    tokio::time::timeout(Duration::from_secs(10), &mut served.server)
        .await
        .expect("the server returns after the drain timeout")
        .unwrap();
    assert!(closed_by_server(&mut stalled).await);
    assert_eq!(served.count("timeouts", "drain"), 1);
    assert_eq!(served.state.metrics.connections.get(), 0);
    // The listener is closed.
    assert!(TcpStream::connect(served.addr).await.is_err());
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let served = Served::start(|c| {
        c.max_connections = 100;
        c.max_connections_per_client = 3;
        c.header_timeout_ms = 60_000;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(served.connect().await);
    }
    served.wait_for_open_connections(3).await;
    // The fourth from 127.0.0.1 is closed at once; the global cap is far.
    let mut fourth = served.connect().await;
    assert!(closed_by_server(&mut fourth).await);
    assert_eq!(served.count("refused", "client_limit"), 1);
    assert_eq!(served.count("refused", "limit"), 0);
    // A place given back is a place again.
    drop(held.pop());
    served.wait_for_open_connections(2).await;
    let answer = post_beacon(&served).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_client_cap() {
    let served = Served::start(|c| {
        c.max_connections_per_client = 1;
        c.header_timeout_ms = 60_000;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(served.connect().await);
    }
    served.wait_for_open_connections(5).await;
    assert_eq!(served.count("refused", "client_limit"), 0);
}
