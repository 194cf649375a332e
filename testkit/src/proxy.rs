//! A fault-injecting TCP proxy for HTTP links (made for ClickHouse's HTTP interface): it listens on a free
//! 127.0.0.1 port, forwards to a target, and is switched at runtime between [`Mode`]s to produce the failures a
//! client must survive — an answer lost after the server committed, a server that accepts and never answers, a
//! server that refuses connections.
//!
//! It runs on its own threads (std::net, no async runtime), so sync and async tests use it alike:
//!
//! ```ignore
//! let clickhouse = ClickHouseServer::start();
//! let proxy = FaultProxy::start(clickhouse.addr());
//! // point the client at proxy.url() ...
//! proxy.set_mode(Mode::ResetAfterAnswer { matching: "INSERT INTO vitals_raw".into(), times: 1 });
//! // ... the next INSERT INTO vitals_raw is executed by ClickHouse, and its client gets a reset
//! assert_eq!(proxy.resets(), 1);
//! ```
//!
//! **Request boundaries.** Connections stay transparent: HTTP keep-alive goes through as the client and server
//! negotiate it (no `Connection: close` is forced), and the proxy follows each request of a connection in the
//! client-to-server stream: its head up to the empty line, then a `Content-Length` body or a chunked body (chunk
//! sizes, data, trailers), then the next request's head. That is what ClickHouse's HTTP interface gets from any
//! client (the `clickhouse` crate sends queries as `Content-Length` bodies and INSERTs as chunked bodies; clients do
//! not pipeline). Bytes it cannot parse as HTTP (a head over 64 KiB, a bad chunk size) are forwarded as they come,
//! and that connection is no longer looked into.
//!
//! **Matching** ([`Mode::ResetAfterAnswer`]) is a substring test on the request line, decoded (`%XX` and `+` as in
//! a URL's query string: the `clickhouse` crate sends an INSERT as
//! `POST /?database=rum&query=INSERT+INTO+%60vitals_raw%60%28%60site%60...`), and on the first 64 KiB of a
//! `Content-Length` body (where the crate sends a SELECT's SQL). Both sides of the test are taken in lower case,
//! without identifier quotes (`` ` `` and `"`) and with every run of white space as one space. So pass the SQL as
//! written, e.g. `"INSERT INTO vitals_raw"` (matches the crate's ``INSERT INTO `vitals_raw`(`site`, ...)``) or
//! `"FROM kafka_offsets"`. A request whose body must be looked at is held until that much of its body (or all of
//! it) arrived, then forwarded. Headers are never matched (they carry credentials), and the proxy logs nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::process::free_port;

/// How long the proxy waits for the target to accept a connection; on failure the client is reset.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head (and chunk-size or trailer line) parsed; longer is forwarded unparsed.
const MAX_HEAD: usize = 64 * 1024;
/// How much of a `Content-Length` body is looked at for [`Mode::ResetAfterAnswer`].
const MATCH_WINDOW: usize = 64 * 1024;
const BUFFER: usize = 64 * 1024;

/// What the proxy does, switched at runtime with [`FaultProxy::set_mode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// For the next `times` requests matching `matching` (see the module's documentation): forward the whole
    /// request, wait until the server's answer *begins* to arrive (so the server executed it: ClickHouse answers
    /// an INSERT after it stored the rows), then reset the client (RST: `SO_LINGER` 0, then close) without
    /// forwarding any of the answer, and close the server's side. Other requests, and every request once the
    /// `times` are used up, pass. A request counts against `times` when it is forwarded, whether or not its answer
    /// comes; [`FaultProxy::resets`] counts the resets done.
    ResetAfterAnswer {
        /// The SQL to look for, case-insensitive (e.g. `"INSERT INTO vitals_raw"`).
        matching: String,
        /// How many matching requests get the reset.
        times: usize,
    },
    /// A server that accepts connections and never answers: new connections are accepted and what they send is
    /// read and discarded; existing connections stop forwarding both ways, for good (bytes are dropped, so such a
    /// connection stays dead after the mode changes back; the client has to give up on it). Nothing is closed.
    Blackhole,
    /// A server that is down: new connections are reset as soon as they are accepted, and the connections open
    /// when this mode is set are closed.
    Refuse,
    /// A request delayed on its way, as a client paused or a network path stalled while sending it would: the next
    /// request matching `matching` (its request line, as for [`Mode::ResetAfterAnswer`]), and everything its
    /// connection sends after it, is kept by the proxy instead of forwarded, until [`FaultProxy::release`] sends it
    /// on. The mode is then back to [`Mode::Pass`] for other requests; [`FaultProxy::holding`] tells whether a
    /// request is held.
    Hold {
        /// The SQL to look for, case-insensitive.
        matching: String,
    },
}

/// A fault-injecting TCP proxy on a free 127.0.0.1 port; see the module's documentation. Dropping it closes every
/// connection and stops its threads.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port in [`Mode::Pass`], forwarding to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = bind_free_port();
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(Mode::Pass),
            stopping: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            hold: Mutex::new(HeldRequest::default()),
            held_answered: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || accept_loop(&shared, &listener))
                .expect("spawn the proxy's accept thread")
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches the mode; it applies to the next bytes read on every connection (see each [`Mode`]).
    pub fn set_mode(&self, mode: Mode) {
        let refuse = mode == Mode::Refuse;
        *lock(&self.shared.mode) = mode;
        if refuse {
            self.shared.close_all();
        }
    }

    /// The current mode ([`Mode::ResetAfterAnswer`] with the `times` left).
    pub fn mode(&self) -> Mode {
        lock(&self.shared.mode).clone()
    }

    /// Connections accepted so far, whatever the mode.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Request heads seen so far on forwarded connections (more than [`connections`](Self::connections) when
    /// the client keeps connections alive).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Clients reset after their answer began to arrive ([`Mode::ResetAfterAnswer`]).
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Whether a whole request (its head and body) is held ([`Mode::Hold`]) and not yet released.
    pub fn holding(&self) -> bool {
        let hold = lock(&self.shared.hold);
        hold.server.is_some() && hold.complete
    }

    /// Whether the server began to answer a request held and released ([`Mode::Hold`]): it executed it.
    pub fn held_answered(&self) -> bool {
        self.shared.held_answered.load(Ordering::SeqCst)
    }

    /// Sends the held request (and what its connection sent after it) on to the server, and forwards that
    /// connection as usual from now on. False when no request is held.
    pub fn release(&self) -> bool {
        let mut hold = lock(&self.shared.hold);
        let Some(server) = hold.server.take() else {
            return false;
        };
        let bytes = std::mem::take(&mut hold.bytes);
        let _ = (&*server).write_all(&bytes);
        if std::mem::take(&mut hold.client_done) {
            let _ = server.shutdown(Shutdown::Write);
        }
        true
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept thread; it sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.close_all();
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// A listener on a port of [`free_port`] (another process may take one between the pick and the bind: retried).
fn bind_free_port() -> TcpListener {
    let mut last = None;
    for _ in 0..20 {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, free_port())) {
            Ok(listener) => return listener,
            Err(e) => last = Some(e),
        }
    }
    panic!("the proxy cannot bind a free port: {last:?}");
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Shared {
    target: SocketAddr,
    mode: Mutex<Mode>,
    stopping: AtomicBool,
    connections: AtomicU64,
    requests: AtomicU64,
    resets: AtomicU64,
    /// The request held by [`Mode::Hold`].
    hold: Mutex<HeldRequest>,
    /// The server answered the released request.
    held_answered: AtomicBool,
    /// The sockets of open connections, to close them on drop or [`Mode::Refuse`].
    live: Mutex<HashMap<u64, Vec<Arc<TcpStream>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// [`Mode::Hold`]'s request: the server side of its connection while held, and the bytes kept.
#[derive(Default)]
struct HeldRequest {
    server: Option<Arc<TcpStream>>,
    bytes: Vec<u8>,
    /// The client finished sending while its request was held: the server's side is shut for writing after the
    /// release, as the client's FIN would have arrived after its bytes.
    client_done: bool,
    /// The whole request is kept (its body ended).
    complete: bool,
}

impl Shared {
    /// Whether a request whose decoded request line is `line` is held; the mode is back to pass when it is.
    fn claim_hold(&self, line: &str) -> bool {
        let mut mode = lock(&self.mode);
        let hit = matches!(&*mode, Mode::Hold { matching } if line.contains(&normalized(matching)));
        if hit {
            *mode = Mode::Pass;
        }
        hit
    }

    fn blackholed(&self) -> bool {
        *lock(&self.mode) == Mode::Blackhole
    }

    /// Whether a request whose decoded request line and body prefix are `line` and `body` (both [`normalized`])
    /// gets the reset; takes one of the `times` when it does.
    fn claim_reset(&self, line: &str, body: &str) -> bool {
        let mut mode = lock(&self.mode);
        match &mut *mode {
            Mode::ResetAfterAnswer { matching, times } if *times > 0 => {
                let matching = normalized(matching);
                let hit = line.contains(&matching) || body.contains(&matching);
                if hit {
                    *times -= 1;
                }
                hit
            }
            _ => false,
        }
    }

    /// Records the sockets of connection `id`; false (and they are closed) when the proxy is stopping.
    fn register(&self, id: u64, sockets: &[Arc<TcpStream>]) -> bool {
        let mut live = lock(&self.live);
        if self.stopping.load(Ordering::SeqCst) {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
            return false;
        }
        live.insert(id, sockets.to_vec());
        true
    }

    fn unregister(&self, id: u64) {
        lock(&self.live).remove(&id);
    }

    fn close_all(&self) {
        for sockets in lock(&self.live).values() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let mode = lock(&shared.mode).clone();
        let worker = match mode {
            Mode::Refuse => {
                reset(&client);
                continue;
            }
            Mode::Blackhole => {
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("fault-proxy-hole-{id}"))
                    .spawn(move || swallow(&shared, id, client))
            }
            Mode::Pass | Mode::ResetAfterAnswer { .. } | Mode::Hold { .. } => {
                let shared = shared.clone();
                thread::Builder::new()
                    .name(format!("fault-proxy-conn-{id}"))
                    .spawn(move || relay(&shared, id, client))
            }
        };
        let mut workers = lock(&shared.workers);
        // Join the finished ones as we go, so that a long test does not pile up handles.
        let (done, running): (Vec<_>, Vec<_>) = workers.drain(..).partition(|w| w.is_finished());
        *workers = running;
        drop(workers);
        for worker in done {
            let _ = worker.join();
        }
        if let Ok(worker) = worker {
            lock(&shared.workers).push(worker);
        }
    }
}

/// Closes `stream` with a reset (RST) instead of a FIN, once every handle on it is dropped.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// [`Mode::Blackhole`]: read and discard until the client closes or the proxy stops.
fn swallow(shared: &Shared, id: u64, client: TcpStream) {
    let client = Arc::new(client);
    if !shared.register(id, std::slice::from_ref(&client)) {
        return;
    }
    let mut buf = vec![0; BUFFER];
    while matches!((&*client).read(&mut buf), Ok(n) if n > 0) {}
    shared.unregister(id);
}

/// What the two directions of one connection share.
#[derive(Default)]
struct Connection {
    /// A request that gets [`Mode::ResetAfterAnswer`] was forwarded: the next answer byte resets the client.
    armed: AtomicBool,
    /// The client was reset: the client-to-server side ends without touching the sockets.
    reset: AtomicBool,
    /// [`Mode::Blackhole`] was seen: nothing is forwarded any more, either way.
    blackholed: AtomicBool,
    /// This connection's request is the one [`Mode::Hold`] took.
    held: AtomicBool,
}

impl Connection {
    fn blackholed(&self, shared: &Shared) -> bool {
        if self.blackholed.load(Ordering::SeqCst) {
            return true;
        }
        let now = shared.blackholed();
        if now {
            self.blackholed.store(true, Ordering::SeqCst);
        }
        now
    }
}

/// A forwarded connection: client to server on this thread, server to client on another.
fn relay(shared: &Arc<Shared>, id: u64, client: TcpStream) {
    let Ok(server) = TcpStream::connect_timeout(&shared.target, TARGET_CONNECT_TIMEOUT) else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client, server) = (Arc::new(client), Arc::new(server));
    if !shared.register(id, &[client.clone(), server.clone()]) {
        return;
    }
    let conn = Arc::new(Connection::default());
    let answers = {
        let (shared, conn, client, server) =
            (shared.clone(), conn.clone(), client.clone(), server.clone());
        thread::Builder::new()
            .name(format!("fault-proxy-back-{id}"))
            .spawn(move || server_to_client(&shared, &conn, &server, &client))
    };
    client_to_server(shared, &conn, &client, &server);
    match answers {
        Ok(answers) => {
            let _ = answers.join();
        }
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
    shared.unregister(id);
    // The last handles go here: a reset client gets its RST now.
}

/// A request whose body is looked at before it is forwarded.
struct Held {
    bytes: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

fn client_to_server(
    shared: &Shared,
    conn: &Connection,
    client: &TcpStream,
    server: &Arc<TcpStream>,
) {
    let mut framer = RequestFramer::default();
    let mut held: Option<Held> = None;
    // Where in this read's bytes the request [`Mode::Hold`] took begins.
    let mut hold_from: Option<usize> = None;
    let mut buf = vec![0; BUFFER];
    let clean_eof = loop {
        let n = match (&*client).read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(_) => break false,
        };
        if conn.reset.load(Ordering::SeqCst) {
            return;
        }
        if conn.blackholed(shared) {
            continue;
        }
        let mut out = Vec::with_capacity(n);
        // A request ended in these bytes (the held one, when a request is held).
        let mut ended = false;
        for event in framer.feed(&buf[..n]) {
            match event {
                Event::Head { raw, body } => {
                    shared.requests.fetch_add(1, Ordering::SeqCst);
                    let line = decoded_request_line(&raw);
                    if shared.claim_hold(&line) {
                        // What came before the request goes on; the request and the rest are kept.
                        hold_from = Some(out.len());
                        out.extend_from_slice(&raw);
                    } else if shared.claim_reset(&line, "") {
                        conn.armed.store(true, Ordering::SeqCst);
                        out.extend_from_slice(&raw);
                    } else if matches!(body, Body::Length(n) if n > 0) {
                        held = Some(Held {
                            bytes: raw,
                            line,
                            body: Vec::new(),
                        });
                    } else {
                        out.extend_from_slice(&raw);
                    }
                }
                Event::Bytes { raw, payload } => match &mut held {
                    Some(h) => {
                        h.bytes.extend_from_slice(&raw);
                        if payload {
                            h.body.extend_from_slice(&raw);
                        }
                        if h.body.len() >= MATCH_WINDOW {
                            release(shared, conn, held.take(), &mut out);
                        }
                    }
                    None => out.extend_from_slice(&raw),
                },
                Event::End => {
                    ended = true;
                    release(shared, conn, held.take(), &mut out);
                }
            }
        }
        if let Some(from) = hold_from.take() {
            if (&**server).write_all(&out[..from]).is_err() {
                break false;
            }
            let mut hold = lock(&shared.hold);
            hold.server = Some(server.clone());
            hold.bytes = out.split_off(from);
            hold.client_done = false;
            hold.complete = ended;
            shared.held_answered.store(false, Ordering::SeqCst);
            conn.held.store(true, Ordering::SeqCst);
            continue;
        }
        if conn.held.load(Ordering::SeqCst) {
            let mut hold = lock(&shared.hold);
            if hold.server.is_some() {
                hold.bytes.extend_from_slice(&out);
                hold.complete |= ended;
                continue;
            }
            // Released (under the same lock, after the bytes kept): forwarded in order from here on.
            conn.held.store(false, Ordering::SeqCst);
        }
        if !out.is_empty() && (&**server).write_all(&out).is_err() {
            break false;
        }
    };
    if conn.reset.load(Ordering::SeqCst) {
        return;
    }
    if clean_eof && conn.held.load(Ordering::SeqCst) {
        let mut hold = lock(&shared.hold);
        if hold.server.is_some() {
            hold.client_done = true;
            return;
        }
    }
    if conn.blackholed.load(Ordering::SeqCst) {
        let _ = server.shutdown(Shutdown::Both);
    } else if clean_eof {
        let _ = server.shutdown(Shutdown::Write);
    } else {
        let _ = server.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
    }
}

/// Decides on a held request (a match in its body arms the reset) and queues its bytes.
fn release(shared: &Shared, conn: &Connection, held: Option<Held>, out: &mut Vec<u8>) {
    let Some(held) = held else { return };
    let body = String::from_utf8_lossy(&held.body[..held.body.len().min(MATCH_WINDOW)]);
    if shared.claim_reset(&held.line, &normalized(&body)) {
        conn.armed.store(true, Ordering::SeqCst);
    }
    out.extend_from_slice(&held.bytes);
}

fn server_to_client(shared: &Shared, conn: &Connection, server: &TcpStream, client: &TcpStream) {
    let mut buf = vec![0; BUFFER];
    let clean_eof = loop {
        let n = match (&*server).read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(_) => break false,
        };
        if conn.blackholed(shared) {
            continue;
        }
        if conn.held.load(Ordering::SeqCst) {
            // Nothing else is in flight on a held connection: this is the released request's answer.
            shared.held_answered.store(true, Ordering::SeqCst);
        }
        if conn.armed.load(Ordering::SeqCst) {
            // The answer began: the server executed the request. Reset the client instead of answering.
            conn.reset.store(true, Ordering::SeqCst);
            reset(client);
            // Wakes the other direction's read (Linux returns 0 on a socket shut for reading); sends nothing.
            let _ = client.shutdown(Shutdown::Read);
            let _ = server.shutdown(Shutdown::Both);
            shared.resets.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if (&*client).write_all(&buf[..n]).is_err() {
            break false;
        }
    };
    if conn.blackholed.load(Ordering::SeqCst) || conn.reset.load(Ordering::SeqCst) {
        return;
    }
    if clean_eof {
        let _ = client.shutdown(Shutdown::Write);
    } else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
}

/// SQL as matched: lower case, without identifier quotes, every run of white space one space.
fn normalized(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for word in sql.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(
            word.chars()
                .filter(|c| !matches!(c, '`' | '"'))
                .flat_map(char::to_lowercase),
        );
    }
    out
}

/// The request line (`POST /?query=... HTTP/1.1`) with `%XX` and `+` decoded, [`normalized`].
fn decoded_request_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < line.len() => {
                match std::str::from_utf8(&line[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    normalized(&String::from_utf8_lossy(&out))
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
}

/// What [`RequestFramer::feed`] finds, in stream order; every byte fed comes out in a `Head` or a `Bytes`.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A whole request head (request line, headers and the empty line).
    Head { raw: Vec<u8>, body: Body },
    /// Bytes of a body: `payload` for the content itself (not chunk-size lines, chunk ends and trailers, nor
    /// bytes forwarded unparsed).
    Bytes { raw: Vec<u8>, payload: bool },
    /// The request's body (if any) ended; the next bytes start a new request.
    End,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data (bytes left).
    ChunkEnd(u8),
    Trailer,
    /// Not HTTP as expected: everything is forwarded as is.
    Opaque,
}

/// Follows the requests of one client-to-server stream (HTTP/1.x, not pipelined or pipelined alike).
#[derive(Default)]
struct RequestFramer {
    state: State,
    /// The head, or the chunk-size / trailer line, so far.
    line: Vec<u8>,
}

impl RequestFramer {
    fn feed(&mut self, mut data: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        while !data.is_empty() {
            match self.state {
                State::Head => {
                    let old = self.line.len();
                    self.line.extend_from_slice(data);
                    let from = old.saturating_sub(3);
                    match find(&self.line[from..], b"\r\n\r\n") {
                        Some(at) => {
                            let end = from + at + 4;
                            data = &data[end - old..];
                            self.line.truncate(end);
                            let raw = std::mem::take(&mut self.line);
                            let body = body_of(&raw);
                            out.push(Event::Head { raw, body });
                            self.state = match body {
                                Body::None | Body::Length(0) => {
                                    out.push(Event::End);
                                    State::Head
                                }
                                Body::Length(n) => State::Length(n),
                                Body::Chunked => State::ChunkSize,
                            };
                        }
                        None => {
                            data = &[];
                            if self.line.len() > MAX_HEAD {
                                let raw = std::mem::take(&mut self.line);
                                push_bytes(&mut out, &raw, false);
                                self.state = State::Opaque;
                            }
                        }
                    }
                }
                State::Length(left) | State::ChunkData(left) => {
                    let take = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
                    push_bytes(&mut out, &data[..take], true);
                    data = &data[take..];
                    let left = left - take as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => {
                            out.push(Event::End);
                            State::Head
                        }
                        (State::Length(_), left) => State::Length(left),
                        (_, 0) => State::ChunkEnd(2),
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::ChunkEnd(left) => {
                    let take = usize::from(left).min(data.len());
                    push_bytes(&mut out, &data[..take], false);
                    data = &data[take..];
                    let left = left - take as u8;
                    self.state = if left == 0 {
                        State::ChunkSize
                    } else {
                        State::ChunkEnd(left)
                    };
                }
                State::ChunkSize | State::Trailer => {
                    let Some(at) = data.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(data);
                        push_bytes(&mut out, data, false);
                        data = &[];
                        if self.line.len() > MAX_HEAD {
                            self.state = State::Opaque;
                        }
                        continue;
                    };
                    self.line.extend_from_slice(&data[..=at]);
                    push_bytes(&mut out, &data[..=at], false);
                    data = &data[at + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim();
                    self.state = match self.state {
                        State::ChunkSize => {
                            let size = line.split(';').next().unwrap_or_default().trim();
                            match u64::from_str_radix(size, 16) {
                                Ok(0) => State::Trailer,
                                Ok(n) => State::ChunkData(n),
                                Err(_) => State::Opaque,
                            }
                        }
                        _ if line.is_empty() => {
                            out.push(Event::End);
                            State::Head
                        }
                        _ => State::Trailer,
                    };
                }
                State::Opaque => {
                    push_bytes(&mut out, data, false);
                    data = &[];
                }
            }
        }
        out
    }
}

/// Appends to the last `Bytes` event when it has the same `payload`.
fn push_bytes(out: &mut Vec<Event>, bytes: &[u8], payload: bool) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Event::Bytes { raw, payload: p }) = out.last_mut() {
        if *p == payload {
            raw.extend_from_slice(bytes);
            return;
        }
    }
    out.push(Event::Bytes {
        raw: bytes.to_vec(),
        payload,
    });
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body framing a request head declares: chunked wins over `Content-Length`; neither is no body.
fn body_of(head: &[u8]) -> Body {
    let text = String::from_utf8_lossy(head);
    let mut body = Body::None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            return Body::Chunked;
        }
        if name.eq_ignore_ascii_case("content-length") {
            if let Ok(n) = value.trim().parse() {
                body = Body::Length(n);
            }
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClickHouseServer;
    use std::time::Instant;

    /// The events of `input` fed in pieces of `piece` bytes, with adjacent `Bytes` of one kind merged.
    fn frame(input: &[u8], piece: usize) -> Vec<Event> {
        let mut framer = RequestFramer::default();
        let mut events = Vec::new();
        for part in input.chunks(piece) {
            for event in framer.feed(part) {
                match event {
                    Event::Bytes { raw, payload } => push_bytes(&mut events, &raw, payload),
                    other => events.push(other),
                }
            }
        }
        events
    }

    fn head(raw: &str, body: Body) -> Event {
        Event::Head {
            raw: raw.as_bytes().to_vec(),
            body,
        }
    }

    fn bytes(raw: &str, payload: bool) -> Event {
        Event::Bytes {
            raw: raw.as_bytes().to_vec(),
            payload,
        }
    }

    #[test]
    fn the_framer_follows_length_chunked_and_bodiless_requests_in_any_pieces() {
        let get = "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
        let post = "POST / HTTP/1.1\r\ncontent-length: 8\r\n\r\n";
        let insert = "POST /?query=INSERT+INTO+t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!(
            "{get}{post}SELECT 1{insert}3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n{get}"
        );
        let expected = vec![
            head(get, Body::None),
            Event::End,
            head(post, Body::Length(8)),
            bytes("SELECT 1", true),
            Event::End,
            head(insert, Body::Chunked),
            bytes("3;ext=1\r\n", false),
            bytes("abc", true),
            bytes("\r\n2\r\n", false),
            bytes("de", true),
            bytes("\r\n0\r\nX-Trailer: 1\r\n\r\n", false),
            Event::End,
            head(get, Body::None),
            Event::End,
        ];
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(
                frame(stream.as_bytes(), piece),
                expected,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn the_framer_forwards_what_is_not_http_unparsed() {
        let bad = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nrest";
        let events = frame(bad.as_bytes(), 5);
        assert_eq!(events[1..], [bytes("zz\r\nrest", false)], "{events:?}");
        let mut framer = RequestFramer::default();
        let garbage = vec![b'x'; MAX_HEAD + 1];
        let events = framer.feed(&garbage);
        assert_eq!(events.len(), 1);
        assert_eq!(framer.state, State::Opaque);
    }

    #[test]
    fn the_request_line_is_matched_decoded_and_in_lower_case() {
        // As the clickhouse crate sends an INSERT.
        let line = decoded_request_line(
            b"POST /?database=rum&query=INSERT+INTO+%60vitals_raw%60%28%60site%60%29+FORMAT+RowBinary HTTP/1.1\r\nX: y\r\n\r\n",
        );
        assert_eq!(
            line,
            "post /?database=rum&query=insert into vitals_raw(site) format rowbinary http/1.1"
        );
        assert!(line.contains(&normalized("INSERT INTO vitals_raw")));
        assert_eq!(
            normalized("SELECT max(x)\n  FROM   \"Kafka_Offsets\"\tWHERE 1"),
            "select max(x) from kafka_offsets where 1"
        );
        assert_eq!(
            decoded_request_line(b"GET /%zz%4 HTTP/1.0\r\n"),
            "get /%zz%4 http/1.0"
        );
    }

    fn clickhouse_addr(ch: &ClickHouseServer) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, ch.http_port))
    }

    /// One HTTP/1.1 connection kept alive across requests, reading each answer by its framing.
    struct KeepAlive {
        stream: TcpStream,
    }

    impl KeepAlive {
        fn connect(port: u16, timeout: Duration) -> KeepAlive {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
            stream.set_read_timeout(Some(timeout)).unwrap();
            KeepAlive { stream }
        }

        /// POSTs `sql` (to `path`); the status and the body (chunks joined).
        fn post(&mut self, path: &str, sql: &str) -> std::io::Result<(u16, String)> {
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
                sql.len()
            );
            self.exchange(&request)
        }

        /// Sends `request` as is; the status and the body of the answer.
        fn exchange(&mut self, request: &str) -> std::io::Result<(u16, String)> {
            self.stream.write_all(request.as_bytes())?;
            // An answer is framed like a request (Content-Length or chunked).
            let mut framer = RequestFramer::default();
            let (mut status, mut body) = (0, Vec::new());
            let mut buf = [0; 4096];
            loop {
                let n = self.stream.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                for event in framer.feed(&buf[..n]) {
                    match event {
                        Event::Head { raw, .. } => {
                            let text = String::from_utf8_lossy(&raw);
                            status = text.split(' ').nth(1).unwrap().parse().unwrap();
                        }
                        Event::Bytes { raw, payload: true } => body.extend_from_slice(&raw),
                        Event::Bytes { .. } => {}
                        Event::End => return Ok((status, String::from_utf8(body).unwrap())),
                    }
                }
            }
        }
    }

    fn count(ch: &ClickHouseServer, table: &str) -> u64 {
        ch.query(&format!("SELECT count() FROM {table}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn pass_forwards_many_requests_over_one_kept_alive_connection() {
        let ch = ClickHouseServer::start();
        let proxy = FaultProxy::start(clickhouse_addr(&ch));
        assert_eq!(proxy.url(), format!("http://127.0.0.1:{}", proxy.port()));
        let mut conn = KeepAlive::connect(proxy.port(), Duration::from_secs(10));
        for i in 0..200 {
            let answer = conn.post("/", &format!("SELECT {i} + 1")).unwrap();
            assert_eq!(answer, (200, format!("{}\n", i + 1)));
        }
        // A query in the URL and a chunked body (as the clickhouse crate sends an INSERT).
        ch.query("CREATE TABLE default.kept (x UInt32) ENGINE = MergeTree ORDER BY x");
        let chunked =
            "POST /?query=INSERT%20INTO%20default.kept%20FORMAT%20TSV HTTP/1.1\r\nHost: x\r\n\
                       Transfer-Encoding: chunked\r\n\r\n2\r\n1\n\r\n4\r\n2\n3\n\r\n0\r\n\r\n";
        assert_eq!(conn.exchange(chunked).unwrap(), (200, String::new()));
        assert_eq!(
            conn.post("/", "SELECT count() FROM default.kept").unwrap(),
            (200, "3\n".into())
        );
        assert_eq!(proxy.connections(), 1);
        assert_eq!(proxy.requests(), 202);
        assert_eq!(proxy.resets(), 0);
    }

    #[test]
    fn reset_after_answer_loses_the_answer_of_an_executed_insert() {
        let ch = ClickHouseServer::start();
        ch.query("CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x");
        let proxy = FaultProxy::start(clickhouse_addr(&ch));
        proxy.set_mode(Mode::ResetAfterAnswer {
            matching: "insert into default.t".into(),
            times: 2,
        });
        // On a kept-alive connection: a SELECT passes, then the INSERT (SQL in the body) is executed and reset.
        let mut conn = KeepAlive::connect(proxy.port(), Duration::from_secs(30));
        assert_eq!(conn.post("/", "SELECT 1").unwrap(), (200, "1\n".into()));
        let err = conn
            .post("/", "INSERT INTO default.t VALUES (1), (2), (3)")
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(count(&ch, "default.t"), 3, "ClickHouse stored the rows");
        assert_eq!(proxy.resets(), 1);
        // The SQL in the URL, the rows in the body: matched on the decoded request line.
        let mut conn = KeepAlive::connect(proxy.port(), Duration::from_secs(30));
        let err = conn
            .post("/?query=INSERT%20INTO%20default.t%20FORMAT%20TSV", "4\n5\n")
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(count(&ch, "default.t"), 5);
        assert_eq!(proxy.resets(), 2);
        assert_eq!(
            proxy.mode(),
            Mode::ResetAfterAnswer {
                matching: "insert into default.t".into(),
                times: 0
            }
        );
        // The times are used up: the next INSERT passes.
        let mut conn = KeepAlive::connect(proxy.port(), Duration::from_secs(30));
        assert_eq!(
            conn.post("/", "INSERT INTO default.t VALUES (6)").unwrap(),
            (200, String::new())
        );
        assert_eq!(count(&ch, "default.t"), 6);
        assert_eq!(proxy.resets(), 2);
    }

    #[test]
    fn hold_keeps_a_request_until_released_then_it_runs_and_is_answered() {
        let ch = ClickHouseServer::start();
        ch.query("CREATE TABLE default.h (x UInt32) ENGINE = MergeTree ORDER BY x");
        let proxy = FaultProxy::start(clickhouse_addr(&ch));
        proxy.set_mode(Mode::Hold {
            matching: "INSERT INTO default.h".into(),
        });
        assert!(!proxy.holding() && !proxy.release());
        let mut held = KeepAlive::connect(proxy.port(), Duration::from_secs(30));
        let insert =
            "POST /?query=INSERT%20INTO%20default.h%20FORMAT%20TSV HTTP/1.1\r\nHost: x\r\n\
                      Transfer-Encoding: chunked\r\n\r\n4\r\n1\n2\n\r\n0\r\n\r\n";
        held.stream.write_all(insert.as_bytes()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !proxy.holding() {
            assert!(std::time::Instant::now() < deadline, "the INSERT is held");
            thread::sleep(Duration::from_millis(10));
        }
        // Other connections pass meanwhile, the same INSERT included; the held one has not reached the server.
        let mut other = KeepAlive::connect(proxy.port(), Duration::from_secs(30));
        assert_eq!(
            other.post("/", "INSERT INTO default.h VALUES (7)").unwrap(),
            (200, String::new())
        );
        thread::sleep(Duration::from_millis(300));
        assert_eq!(count(&ch, "default.h"), 1);
        assert_eq!(proxy.mode(), Mode::Pass);
        // Released: it runs, and its client gets the answer on the same connection, which then goes on.
        assert!(!proxy.held_answered());
        assert!(proxy.release());
        assert!(!proxy.holding());
        assert_eq!(held.exchange("").unwrap(), (200, String::new()));
        assert!(proxy.held_answered());
        assert_eq!(count(&ch, "default.h"), 3);
        assert_eq!(
            held.post("/", "SELECT sum(x) FROM default.h").unwrap(),
            (200, "10\n".into())
        );
    }

    #[test]
    fn blackhole_never_answers_and_refuse_closes_at_once() {
        let ch = ClickHouseServer::start();
        let proxy = FaultProxy::start(clickhouse_addr(&ch));
        let mut kept = KeepAlive::connect(proxy.port(), Duration::from_secs(1));
        assert_eq!(kept.post("/", "SELECT 1").unwrap(), (200, "1\n".into()));

        proxy.set_mode(Mode::Blackhole);
        // A new connection and the existing one: accepted, never answered, not closed.
        let started = Instant::now();
        let err = KeepAlive::connect(proxy.port(), Duration::from_secs(1))
            .post("/", "SELECT 2")
            .unwrap_err();
        let waited = started.elapsed();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1500),
            "{waited:?}"
        );
        let err = kept.post("/", "SELECT 3").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");

        // Back to Pass: new connections work (the blackholed one stays dead).
        proxy.set_mode(Mode::Pass);
        let mut fresh = KeepAlive::connect(proxy.port(), Duration::from_secs(10));
        assert_eq!(fresh.post("/", "SELECT 4").unwrap(), (200, "4\n".into()));
        assert!(kept.post("/", "SELECT 5").is_err());

        // Refuse: the open connection is closed, a new one is reset at once.
        proxy.set_mode(Mode::Refuse);
        let started = Instant::now();
        assert!(fresh.post("/", "SELECT 6").is_err());
        assert!(KeepAlive::connect(proxy.port(), Duration::from_secs(10))
            .post("/", "SELECT 7")
            .is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(proxy.connections(), 4);

        // Dropped: the port is closed and the threads are gone.
        let port = proxy.port();
        drop(proxy);
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    }
}
