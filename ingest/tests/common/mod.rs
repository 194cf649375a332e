//! What the ingest's in-process tests share: a publisher that acknowledges at once (what Kafka does
//! is not what these tests are about), an ingest served on a free port with it, and raw-socket
//! helpers to play clients that are slow, stalled or malformed.
#![allow(dead_code)] // each test binary uses its own part

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rum_ingest::{
    router, serve, AppState, IngestConfig, IngestMetrics, PublishError, Publisher, ServerLimits,
    BEACON_PATH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Acknowledges every message at once, counts them and keeps their keys (`site|route|device`)
/// and values.
#[derive(Default)]
pub struct Acknowledging(
    pub AtomicUsize,
    pub Mutex<Vec<String>>,
    pub Mutex<Vec<Vec<u8>>>,
);

impl Publisher for Acknowledging {
    fn publish<'a>(
        &'a self,
        key: &'a str,
        payload: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1.lock().unwrap().push(key.to_owned());
        self.2.lock().unwrap().push(payload.to_owned());
        Box::pin(async { Ok(()) })
    }
    fn is_ready(&self, _timeout: Duration) -> bool {
        true
    }
    fn queue_depth(&self) -> i32 {
        0
    }
    fn flush(&self, _timeout: Duration) -> Result<(), PublishError> {
        Ok(())
    }
}

/// An ingest served in the background.
pub struct Served {
    pub addr: SocketAddr,
    pub state: AppState,
    pub published: Arc<Acknowledging>,
    pub stop: Option<oneshot::Sender<()>>,
    pub server: JoinHandle<()>,
}

impl Served {
    /// The number of published messages.
    pub fn published(&self) -> usize {
        self.published.0.load(Ordering::SeqCst)
    }

    /// The keys of the published messages, in order.
    pub fn published_keys(&self) -> Vec<String> {
        self.published.1.lock().unwrap().clone()
    }

    /// The published messages, decoded as a consumer does, in order.
    pub fn published_messages(&self) -> Vec<rum_schemas::BeaconMessage> {
        self.published
            .2
            .lock()
            .unwrap()
            .iter()
            .map(|value| rum_schemas::BeaconMessage::decode(value).expect("a valid message"))
            .collect()
    }

    pub async fn start(configure: impl FnOnce(&mut IngestConfig)) -> Served {
        let mut config = IngestConfig {
            port: 0,
            rate_limit_per_second: 0,
            ..IngestConfig::default()
        };
        configure(&mut config);
        config.validate().expect("test config is valid");
        let published = Arc::new(Acknowledging::default());
        let metrics = Arc::new(IngestMetrics::new().unwrap());
        let state = AppState::new(&config, published.clone(), metrics);
        let listener = rum_ingest::listen("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router(state.clone()),
            ServerLimits::from_config(&config),
            state.events.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Served {
            addr,
            state,
            published,
            stop: Some(stop),
            server,
        }
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    pub fn count(&self, family: &str, label: &str) -> u64 {
        let m = &self.state.metrics;
        let vec = match family {
            "timeouts" => &m.timeouts,
            "refused" => &m.connections_refused,
            "errors" => &m.connection_errors,
            "rejected" => &m.beacons_rejected,
            other => panic!("no family {other}"),
        };
        vec.with_label_values(&[label]).get()
    }

    /// Waits (bounded) until the server has `n` connections open.
    pub async fn wait_for_open_connections(&self, n: i64) {
        for _ in 0..500 {
            if self.state.metrics.connections.get() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{} connections open, expected {n}",
            self.state.metrics.connections.get()
        );
    }
}

pub const BEACON: &str =
    r#"{"site":"shop","route":"/","metrics":[{"name":"LCP","value":1200,"id":"v1"}]}"#;

pub fn beacon_request(body: &str) -> String {
    format!(
        "POST {BEACON_PATH} HTTP/1.1\r\nHost: ingest\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads until the end of the answer's head, or the end of the stream; bounded by 10 s.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer or the end of the stream within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

/// True when the server closed the connection (end of stream or reset) within 10 s.
pub async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

pub async fn post_beacon(served: &Served) -> String {
    let mut stream = served.connect().await;
    stream
        .write_all(beacon_request(BEACON).as_bytes())
        .await
        .unwrap();
    read_head(&mut stream).await
}
