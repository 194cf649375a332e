//! The ingest's HTTP server: HTTP/1.1 only, every client bounded in number, time and memory.
//!
//! The ingest is public: any client may open connections and send as slowly as it likes. So:
//! * at most `ingest.max_connections` connections are open; one beyond is closed at once, counted;
//! * a request head must arrive within `ingest.header_timeout_ms` (from the accept, or from the
//!   first byte of a kept-alive connection's next request) and fit in `ingest.max_head_bytes`;
//!   a kept-alive connection may idle `ingest.idle_timeout_ms`; the body's own bound
//!   (`ingest.body_timeout_ms`) is kept by the beacon handler, which answers 408;
//! * on shutdown the listener closes, idle connections close, requests in flight get until
//!   `ingest.drain_timeout_ms` to finish, and whatever is still open then is dropped.
//!
//! The time bounds are kept by one watchdog a connection, over what the connection is doing now
//! ([`Activity`]): waiting for a head, serving a request, or idle between requests. The watchdog
//! never sleeps past the current phase's deadline nor longer than the shorter of the two bounds at
//! once: a phase that began while it slept has a deadline at least that far away, so every deadline
//! is kept exactly, and a request costs an atomic store, not a timer operation.
//!
//! HTTP/2 is not served, on purpose. Browsers speak HTTP/2 only over TLS, which a load balancer
//! terminates in front of the ingest and which speaks HTTP/1.1 to it; a beacon is one small request,
//! for which multiplexing gains nothing; and h2c would add a second surface to bound (streams a
//! connection, resets: CVE-2023-44487) with no `Connection: close` to shed load. A client that
//! starts with the HTTP/2 preface gets a SETTINGS frame and a GOAWAY with `HTTP_1_1_REQUIRED`
//! (RFC 9113, 5.4.1), the protocol's own way to say "use HTTP/1.1", and is counted.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::events::{ConnectionError, Events, Refused, Timeout};
use crate::IngestConfig;

/// The bounds the server keeps for every client.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections open at most.
    pub max_connections: usize,
    /// Connections open at most from one address (IPv6: one /64); 0: no such bound.
    pub max_connections_per_client: usize,
    /// Addresses not held to `max_connections_per_client` (the load balancers).
    pub unlimited: Vec<IpNet>,
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time requests in flight get to finish on shutdown.
    pub drain_timeout: Duration,
    /// The largest request head.
    pub max_head_bytes: usize,
}

impl ServerLimits {
    /// The bounds `[ingest]` sets.
    pub fn from_config(config: &IngestConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            max_connections_per_client: config.max_connections_per_client,
            unlimited: config.trusted_proxies.clone(),
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            drain_timeout: Duration::from_millis(config.drain_timeout_ms),
            max_head_bytes: config.max_head_bytes,
        }
    }
}

/// What the connections are told as the server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Running,
    /// Finish the request in flight, then close.
    Draining,
    /// Close now.
    Dropping,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the module's doc).
/// Returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    events: Arc<Events>,
    shutdown: impl Future<Output = ()>,
) {
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let per_client = Arc::new(PerClient::default());
    let (stage_tx, stage_rx) = watch::channel(Stage::Running);
    let limits = Arc::new(limits);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The client gave up before its connection was accepted: nothing to serve.
                Err(e) if is_peer_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: retrying at once would spin.
                    events.accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            events.connection_refused(Refused::Limit);
            continue;
        };
        let client_slot = match PerClient::enter(&per_client, peer.ip(), &limits) {
            Ok(client_slot) => client_slot,
            Err(()) => {
                events.connection_refused(Refused::ClientLimit);
                continue;
            }
        };
        events.connection_opened();
        tokio::spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            events.clone(),
            stage_rx.clone(),
            (slot, client_slot),
        ));
    }
    // New connections are refused by the kernel from here on.
    drop(listener);
    let open = max - slots.available_permits();
    tracing::info!(
        open,
        drain_timeout_ms = limits.drain_timeout.as_millis() as u64,
        "ingest stopping: finishing the requests in flight"
    );
    stage_tx.send_replace(Stage::Draining);
    let all_closed = || slots.acquire_many(max as u32);
    if tokio::time::timeout(limits.drain_timeout, all_closed())
        .await
        .is_err()
    {
        let open = max - slots.available_permits();
        tracing::warn!(
            open,
            "ingest.drain_timeout_ms is over: dropping the connections still open"
        );
        stage_tx.send_replace(Stage::Dropping);
        // Each connection's task drops its connection as soon as it is told.
        let _ = tokio::time::timeout(Duration::from_secs(5), all_closed()).await;
    }
}

/// Errors of one incoming connection, not of the listener.
fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ServerLimits>,
    events: Arc<Events>,
    mut stage: watch::Receiver<Stage>,
    _slots: (OwnedSemaphorePermit, Option<ClientSlot>),
) {
    // Counted closed however the task ends (a panic in a handler included).
    let _open = OpenConnection(events.clone());
    // Answers are written in one piece; without Nagle none waits for the client's ACK.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            activity.set(Phase::Busy);
            request.extensions_mut().insert(ConnectInfo(peer));
            let answer = router.clone().call(request);
            let activity = activity.clone();
            async move {
                let response = answer.await;
                activity.set(Phase::Idle);
                response
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own head timer is off: the watchdog keeps the head and idle bounds.
    http.max_buf_size(limits.max_head_bytes)
        .keep_alive(true)
        .header_read_timeout(None);
    let io = TokioIo::new(WatchedStream::new(stream, activity.clone()));
    let mut connection = pin!(http.serve_connection(io, service));
    let mut draining = false;
    let failed = loop {
        tokio::select! {
            ended = connection.as_mut() => break ended.err(),
            kind = activity.expired(&limits) => {
                events.timed_out(kind);
                break None;
            }
            changed = stage.changed() => {
                // The server is gone (it never drops the sender before telling): close.
                let now = changed.map_or(Stage::Dropping, |()| *stage.borrow_and_update());
                match now {
                    Stage::Draining if !draining => {
                        draining = true;
                        // Closes an idle connection now, any other after its current request.
                        connection.as_mut().graceful_shutdown();
                    }
                    Stage::Dropping => {
                        events.timed_out(Timeout::Drain);
                        break None;
                    }
                    _ => {}
                }
            }
        }
    };
    if activity.h2c.load(Ordering::Relaxed) {
        events.connection_refused(Refused::H2c);
    } else if let Some(error) = failed {
        events.connection_failed(classify(&error), &error);
    }
}

/// Counts a served connection closed when dropped.
struct OpenConnection(Arc<Events>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// Connections open by client address (IPv4 address, IPv6 /64). At most `max_connections` entries.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// A connection's place in its client's count, given back on drop.
struct ClientSlot {
    counts: Arc<PerClient>,
    key: IpAddr,
}

impl PerClient {
    /// A place for a connection from `ip`; `None` when the address is not limited.
    fn enter(
        counts: &Arc<PerClient>,
        ip: IpAddr,
        limits: &ServerLimits,
    ) -> Result<Option<ClientSlot>, ()> {
        if limits.max_connections_per_client == 0
            || limits.unlimited.iter().any(|n| n.contains(&ip))
        {
            return Ok(None);
        }
        let key = client_key(ip);
        let mut open = counts.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= limits.max_connections_per_client {
            return Err(());
        }
        *n += 1;
        Ok(Some(ClientSlot {
            counts: counts.clone(),
            key,
        }))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// One key an address: IPv4 as is (an IPv4-mapped IPv6 address too), IPv6 by its /64 (one host
/// is given a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

fn classify(error: &hyper::Error) -> ConnectionError {
    if error.is_parse_too_large() {
        ConnectionError::HeadTooLarge
    } else if error.is_parse() {
        ConnectionError::Parse
    } else {
        ConnectionError::Io
    }
}

/// What a connection does now, and since when: one word, written by the connection's own task.
struct Activity {
    start: Instant,
    /// Milliseconds since `start` at which the phase began, shifted left 2, | the phase.
    state: AtomicU64,
    /// The client sent the HTTP/2 preface and was told to use HTTP/1.1.
    h2c: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head (a new connection, or bytes of the next request arrived).
    Head = 0,
    /// A request is being answered (its own bounds apply).
    Busy = 1,
    /// Kept alive, between requests.
    Idle = 2,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            state: AtomicU64::new(Phase::Head as u64),
            h2c: AtomicBool::new(false),
        }
    }

    fn set(&self, phase: Phase) {
        let since = self.start.elapsed().as_millis() as u64;
        self.state
            .store(since << 2 | phase as u64, Ordering::Relaxed);
    }

    /// Bytes arrived: an idle connection is now receiving a head.
    fn bytes_arrived(&self) {
        let state = self.state.load(Ordering::Relaxed);
        if state & 3 == Phase::Idle as u64 {
            self.set(Phase::Head);
        }
    }

    /// Completes when the connection has been in a bounded phase longer than its bound.
    ///
    /// Sleeps until the current phase's deadline, but never longer than `step`, the shorter bound:
    /// a phase that begins while it sleeps has a deadline at least `step` away, so it is looked at
    /// in time. A connection costs a timer wake-up every `step` (10 s by default), not one a request.
    async fn expired(&self, limits: &ServerLimits) -> Timeout {
        let step = limits.header_timeout.min(limits.idle_timeout);
        loop {
            let state = self.state.load(Ordering::Relaxed);
            let since = self.start + Duration::from_millis(state >> 2);
            let now = Instant::now();
            let wake = match state & 3 {
                0 | 2 => {
                    let (bound, kind) = if state & 3 == 0 {
                        (limits.header_timeout, Timeout::Head)
                    } else {
                        (limits.idle_timeout, Timeout::Idle)
                    };
                    let deadline = since + bound;
                    if now >= deadline {
                        return kind;
                    }
                    deadline.min(now + step)
                }
                // Busy: the handler bounds its request; look again later.
                _ => now + step,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// The HTTP/2 connection preface a client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An empty SETTINGS frame (the server's preface), then GOAWAY, last stream 0, `HTTP_1_1_REQUIRED` (0xd).
const H2_GOAWAY_HTTP_1_1_REQUIRED: [u8; 26] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS: length 0, type 4, flags 0, stream 0
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY: length 8, type 7, flags 0, stream 0
    0, 0, 0, 0, // last stream id
    0, 0, 0, 0xd, // error code HTTP_1_1_REQUIRED
];

/// The client's socket, telling the connection's [`Activity`] when bytes arrive, and answering an
/// HTTP/2 preface itself.
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
    start: Start,
}

/// How the first bytes of a connection are handled.
enum Start {
    /// Everything read so far is a beginning of the HTTP/2 preface (only "P", "PR", ...): held back.
    Undecided { held: [u8; 24], len: usize },
    /// Not HTTP/2 after all: these bytes go to the HTTP/1 parser first.
    Replay { bytes: Vec<u8>, at: usize },
    /// HTTP/1: bytes pass through.
    Http1,
    /// HTTP/2, answered: the HTTP/1 side sees the end of the stream.
    Refused,
}

impl WatchedStream {
    fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            start: Start::Undecided {
                held: [0; 24],
                len: 0,
            },
        }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.start {
                Start::Http1 => {
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    if buf.filled().len() > before {
                        this.activity.bytes_arrived();
                    }
                    return Poll::Ready(Ok(()));
                }
                Start::Refused => return Poll::Ready(Ok(())),
                Start::Replay { bytes, at } => {
                    let n = (bytes.len() - *at).min(buf.remaining());
                    buf.put_slice(&bytes[*at..*at + n]);
                    *at += n;
                    if *at == bytes.len() {
                        this.start = Start::Http1;
                    }
                    return Poll::Ready(Ok(()));
                }
                Start::Undecided { held, len } => {
                    // Read straight into the caller's buffer: an HTTP/1 request differs from the
                    // preface by its second byte at the latest, and then nothing is copied.
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let new = &buf.filled()[before..];
                    if new.is_empty() {
                        if *len == 0 {
                            this.start = Start::Http1;
                            return Poll::Ready(Ok(()));
                        }
                        // The client closed: what was held back goes to the parser, then the end.
                        this.start = Start::Replay {
                            bytes: held[..*len].to_vec(),
                            at: 0,
                        };
                        continue;
                    }
                    this.activity.bytes_arrived();
                    let k = new.len().min(H2_PREFACE.len() - *len);
                    if new[..k] != H2_PREFACE[*len..*len + k] {
                        if *len == 0 {
                            this.start = Start::Http1;
                            return Poll::Ready(Ok(()));
                        }
                        // Rare: the held bytes come first.
                        let mut bytes = held[..*len].to_vec();
                        bytes.extend_from_slice(new);
                        buf.set_filled(before);
                        this.start = Start::Replay { bytes, at: 0 };
                        continue;
                    }
                    if *len + new.len() >= H2_PREFACE.len() {
                        // Best effort: a fresh socket's send buffer takes 26 bytes at once.
                        let _ = this.inner.try_write(&H2_GOAWAY_HTTP_1_1_REQUIRED);
                        this.activity.h2c.store(true, Ordering::Relaxed);
                        buf.set_filled(before);
                        this.start = Start::Refused;
                        return Poll::Ready(Ok(()));
                    }
                    held[*len..*len + new.len()].copy_from_slice(new);
                    *len += new.len();
                    buf.set_filled(before);
                }
            }
        }
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
