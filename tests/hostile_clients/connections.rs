//! Connections: stalled heads and bodies, idle connections, a connection flood, h2c, and SIGTERM
//! with a stalled request.

use std::time::{Duration, Instant};

use rum_testkit::Kafka;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{beacon, Ingest};

/// Opens a connection and sends what a stalling client sends: half a head, or a head and the
/// first byte of a 16 kB body.
async fn stall(port: u16, with_body: bool) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let path = rum_ingest::BEACON_PATH;
    let bytes = if with_body {
        format!("POST {path} HTTP/1.1\r\nHost: ingest\r\nContent-Type: text/plain\r\nContent-Length: 16000\r\n\r\n{{")
    } else {
        format!("POST {path} HTTP/1.1\r\nHost: ingest\r\n")
    };
    stream.write_all(bytes.as_bytes()).await.expect("send");
    stream
}

/// The resident memory of a process, from /proc (kB).
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_and_bodies_by_the_thousand_leave_room_for_a_real_beacon() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    // The attack: with 4 slots, 4 stalled bodies used to answer every later beacon 503.
    let ingest = Ingest::start(
        &kafka,
        &[
            ("RUM_INGEST_MAX_IN_FLIGHT", "4"),
            // Every connection comes from 127.0.0.1 here, playing as many hosts.
            ("RUM_INGEST_MAX_CONNECTIONS_PER_CLIENT", "0"),
            ("RUM_INGEST_HEADER_TIMEOUT_MS", "120000"),
            ("RUM_INGEST_BODY_TIMEOUT_MS", "120000"),
        ],
    )
    .await;
    // A fresh broker hands the producer its id first: not what is measured here.
    assert_eq!(ingest.post("", &beacon("warm-up")).await, 204);
    let before_kb = rss_kb(ingest.process.pid());
    let mut stalled = Vec::new();
    for i in 0..2_000 {
        stalled.push(stall(ingest.port, i % 2 == 0).await);
    }
    crate::common::eventually(
        "2,000 stalled connections open",
        Duration::from_secs(30),
        async || (ingest.metric("rum_ingest_connections").await >= 2_000.0).then_some(()),
    )
    .await;
    let during_kb = rss_kb(ingest.process.pid());

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let answer = http
        .post(ingest.endpoint(""))
        .header("content-type", "text/plain")
        .body(beacon("real"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let took = started.elapsed();
    println!(
        "with 2,000 stalled connections: a beacon answered {answer:?} in {took:?}; ingest RSS {before_kb} kB before, {during_kb} kB during ({} B a connection)",
        (during_kb.saturating_sub(before_kb) * 1024) / 2_000
    );
    assert_eq!(answer.ok(), Some(204), "a real beacon gets 204 within 2 s");
    assert!(
        during_kb < before_kb + 200 * 1024,
        "2,000 stalled connections cost {} kB: not bounded per connection",
        during_kb - before_kb
    );
    assert_eq!(
        ingest.metric("rum_ingest_requests_in_flight").await,
        0.0,
        "no stalled request holds a slot"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_connections_are_closed_by_their_timeouts_and_counted() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(
        &kafka,
        &[
            ("RUM_INGEST_HEADER_TIMEOUT_MS", "1000"),
            ("RUM_INGEST_BODY_TIMEOUT_MS", "1000"),
            ("RUM_INGEST_IDLE_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    assert_eq!(ingest.post("", &beacon("warm-up")).await, 204);
    // A kept-alive connection after its beacon: the idle timeout closes it.
    let mut idle = TcpStream::connect(("127.0.0.1", ingest.port))
        .await
        .unwrap();
    let body = beacon("kept-alive");
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: ingest\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        rum_ingest::BEACON_PATH,
        body.len()
    );
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..5 {
        heads.push(stall(ingest.port, false).await);
        bodies.push(stall(ingest.port, true).await);
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut answer))
        .await
        .expect("the idle connection closed by the server within 15 s")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 204"), "{text}");
    for stream in heads.iter_mut().chain(bodies.iter_mut()) {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer))
            .await
            .expect("closed by the server within 15 s")
            .ok();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    let metric = async |sample: &str| ingest.metric(sample).await;
    assert_eq!(
        metric("rum_ingest_timeouts_total{kind=\"head\"}").await,
        5.0
    );
    assert_eq!(
        metric("rum_ingest_timeouts_total{kind=\"body\"}").await,
        5.0
    );
    assert_eq!(
        metric("rum_beacons_rejected_total{reason=\"body_timeout\"}").await,
        5.0
    );
    // The warm-up's client was dropped with its connection; the scrapes above are each a new
    // client: the kept-alive connection is the only one that idled out.
    assert_eq!(
        metric("rum_ingest_timeouts_total{kind=\"idle\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_beyond_max_connections_is_refused_and_counted() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(
        &kafka,
        &[
            ("RUM_INGEST_MAX_CONNECTIONS", "100"),
            // Every connection comes from 127.0.0.1 here, playing as many hosts.
            ("RUM_INGEST_MAX_CONNECTIONS_PER_CLIENT", "0"),
            ("RUM_INGEST_HEADER_TIMEOUT_MS", "5000"),
        ],
    )
    .await;
    // Opened and held: the first 100 (less any a readiness probe still held) are served, every
    // later one is closed at once.
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(
            TcpStream::connect(("127.0.0.1", ingest.port))
                .await
                .expect("connect"),
        );
    }
    // Read from all at once for a second, well within the 5 s head timeout of the held ones.
    let reads: Vec<_> = flood
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                let read =
                    tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await;
                (matches!(read, Ok(Ok(0) | Err(_))), stream)
            })
        })
        .collect();
    let mut closed_at_once = 0usize;
    let mut held = Vec::new();
    for read in reads {
        let (closed, stream) = read.await.unwrap();
        closed_at_once += usize::from(closed);
        held.push(stream);
    }
    assert!(
        (50..=52).contains(&closed_at_once),
        "{closed_at_once} of 150 closed at once"
    );
    // Scraping needs a place: the head timeout frees the held ones.
    drop(held);
    crate::common::eventually(
        "a place to scrape from",
        Duration::from_secs(15),
        async || {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .ok()?;
            let text = http
                .get(format!("{}/metrics", ingest.base))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            Some(crate::metric_value(
                &text,
                "rum_ingest_connections_refused_total{reason=\"limit\"}",
            ))
        },
    )
    .await;
    let refused = ingest
        .metric("rum_ingest_connections_refused_total{reason=\"limit\"}")
        .await;
    assert_eq!(
        refused, closed_at_once as f64,
        "every refused connection counted once"
    );
    assert_eq!(ingest.post("", &beacon("after-the-flood")).await, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_refused_with_goaway_http_1_1_required() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let ingest = Ingest::start(&kafka, &[]).await;
    let mut stream = TcpStream::connect(("127.0.0.1", ingest.port))
        .await
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("closed within 10 s")
        .ok();
    // SETTINGS, then GOAWAY with error code 0xd (HTTP_1_1_REQUIRED), then the end of the stream.
    assert_eq!(answer.len(), 26, "{answer:?}");
    assert_eq!(&answer[9..13], &[0, 0, 8, 7]);
    assert_eq!(&answer[22..], &[0, 0, 0, 0xd]);
    // The server counts the refusal once the connection is over, which is after the client read
    // its end: wait for it, then check it is counted once.
    crate::common::eventually(
        "the h2c refusal counted",
        Duration::from_secs(10),
        async || {
            (ingest
                .metric("rum_ingest_connections_refused_total{reason=\"h2c\"}")
                .await
                > 0.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        ingest
            .metric("rum_ingest_connections_refused_total{reason=\"h2c\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stalled_request_ends_within_the_drain_deadline() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let mut ingest = Ingest::start(
        &kafka,
        &[
            ("RUM_INGEST_HEADER_TIMEOUT_MS", "120000"),
            ("RUM_INGEST_BODY_TIMEOUT_MS", "120000"),
            ("RUM_INGEST_DELIVERY_TIMEOUT_MS", "3000"),
            ("RUM_INGEST_DRAIN_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    assert_eq!(ingest.post("", &beacon("warm-up")).await, 204);
    let _stalled_body = stall(ingest.port, true).await;
    let _stalled_head = stall(ingest.port, false).await;
    crate::common::eventually(
        "the stalled connections open",
        Duration::from_secs(10),
        async || (ingest.metric("rum_ingest_connections").await >= 2.0).then_some(()),
    )
    .await;
    let started = Instant::now();
    // The drain deadline (3 s) plus the producer's flush (nothing to flush) plus 5 s.
    let status = tokio::task::spawn_blocking(move || {
        let status = ingest.process.terminate(Duration::from_secs(3 + 5));
        (status, ingest)
    })
    .await
    .unwrap()
    .0;
    println!(
        "SIGTERM with stalled requests: exited {status} after {:?}",
        started.elapsed()
    );
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_first_and_serves_beacons_through_the_delay() {
    let kafka = Kafka::start();
    kafka.create_pipeline_topics();
    let mut ingest = Ingest::start(&kafka, &[("RUM_INGEST_SHUTDOWN_DELAY_MS", "3000")]).await;
    assert_eq!(ingest.post("", &beacon("before")).await, 204);
    rum_testkit::send_signal(ingest.process.pid(), "TERM");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    crate::common::eventually(
        "/readyz answering 503 stopping",
        Duration::from_secs(10),
        async || {
            let r = http
                .get(format!("{}/readyz", ingest.base))
                .send()
                .await
                .ok()?;
            (r.status() == 503 && r.text().await.ok()? == "stopping\n").then_some(())
        },
    )
    .await;
    // Still within the delay: beacons are served.
    assert_eq!(ingest.post("", &beacon("during")).await, 204);
    let status = tokio::task::spawn_blocking(move || {
        let status = ingest.process.terminate(Duration::from_secs(20));
        (status, ingest)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "{status}");
}
