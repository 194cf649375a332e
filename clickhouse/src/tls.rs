//! TLS of the `https://` links (ClickHouse, and Alertmanager in `rum-alerts`): rustls with ring.
//!
//! With a CA file, only its certificates are trusted: a private CA is the reason to give one, and
//! adding the public roots would let any publicly trusted certificate pass for the server. Without
//! one, Mozilla's roots (compiled in, `webpki-roots`), as a managed service's certificate needs.
//!
//! Also the TCP connections of the ClickHouse client ([`http_client`]): a connect timeout, and a
//! reset instead of a FIN when a connection ends while a request is being sent ([`ResetIfCut`]).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rum_schemas::config::{io_reason, require_non_empty, require_readable_file, ConfigError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// TCP keepalive of the connections to ClickHouse (the `clickhouse` crate's own choice).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Idle connections are closed before ClickHouse's `keep_alive_timeout` (3 s by default) does it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks the URL of an `http://` or `https://` link and its CA file, and builds its TLS settings
/// (`None` for `http://`): a scheme and a host, no credentials in the URL (the URL is printed in
/// logs and errors; `credentials` says where they go instead), a CA file only with `https://`.
pub fn check_link(
    url_key: &str,
    url: &str,
    ca_key: &str,
    ca_file: Option<&Path>,
    credentials: &str,
) -> Result<Option<ClientConfig>, ConfigError> {
    require_non_empty(url_key, url)?;
    let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        (None, None) => {
            return Err(ConfigError::new(
                url_key,
                "must start with http:// or https://",
            ))
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ConfigError::new(url_key, "has no host"));
    }
    if authority.contains('@') {
        return Err(ConfigError::new(
            url_key,
            format!("must not hold credentials (user:password@): {credentials}"),
        ));
    }
    match (https, ca_file) {
        (true, ca_file) => client_tls_config(ca_key, ca_file).map(Some),
        (false, Some(_)) => Err(ConfigError::new(
            ca_key,
            format!("is set but {url_key} is not https://"),
        )),
        (false, None) => Ok(None),
    }
}

/// The certificates of a PEM file, checked as trust anchors. Errors name `key` and the path.
pub fn load_ca_file(key: &str, path: &Path) -> Result<RootCertStore, ConfigError> {
    require_readable_file(key, path)?;
    let unusable = |reason: String| ConfigError::new(key, format!("{}: {reason}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| unusable(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(pem_reason(&e)))?;
    if certificates.is_empty() {
        return Err(unusable("holds no PEM certificate".into()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| unusable(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(e) => io_reason(e),
        other => format!("not PEM ({other:?})"),
    }
}

/// The TLS settings of a client: the CA file's certificates, or Mozilla's roots without one.
pub fn client_tls_config(key: &str, ca_file: Option<&Path>) -> Result<ClientConfig, ConfigError> {
    match ca_file {
        Some(path) => Ok(trusting(load_ca_file(key, path)?)),
        None => Ok(public_roots_tls_config()),
    }
}

/// TLS settings trusting Mozilla's roots, as a public service's certificate needs.
pub fn public_roots_tls_config() -> ClientConfig {
    trusting(RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    })
}

/// TLS settings that trust no server: what a client gets when its CA file became unreadable
/// after start (every https request then fails; nothing is trusted by mistake).
pub fn untrusting_tls_config() -> ClientConfig {
    trusting(RootCertStore::empty())
}

/// TLS 1.2 and 1.3 (rustls' safe defaults; ClickHouse 18.16 serves both) with ring, trusting `roots`.
fn trusting(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTP/1.1 client for `http://` and `https://` URLs, trusting `tls`, whose TCP connections
/// fail after `connect_timeout` (`clickhouse.connect_timeout_ms`: a host that drops the packets
/// fails the request after this, not after the OS's SYN retries of about two minutes) and end with
/// a reset when cut while a request is sent ([`ResetIfCut`]). Nothing else is bounded here (the TLS
/// handshake, sending, the answer): callers bound each request as a whole with
/// [`bounded`](crate::bounded) and `clickhouse.request_timeout_ms`.
pub fn http_client<B>(
    tls: ClientConfig,
    connect_timeout: Duration,
) -> HyperClient<HttpsConnector<TcpConnector>, B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let mut tcp = HttpConnector::new();
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(TcpConnector(tcp));
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

/// The TCP connector of [`http_client`]: [`HttpConnector`]'s connections, as [`ResetIfCut`].
#[derive(Clone)]
pub struct TcpConnector(HttpConnector);

impl tower_service::Service<Uri> for TcpConnector {
    type Response = ResetIfCut;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<ResetIfCut, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            Ok(ResetIfCut {
                io: connecting.await?,
                sending: false,
            })
        })
    }
}

/// A TCP connection that ends with a reset (RST), not a FIN, when it is closed while a request is
/// being sent: dropped by a timeout or an aborted INSERT, or its process killed.
///
/// ClickHouse 18.16 takes a FIN in the middle of a chunked request body for the end of the body:
/// it stores the rows sent so far and answers 200 (measured: an INSERT of 300,000 rows dropped by
/// the `clickhouse` crate before `end()` stored 292,608 of them; one cut by a 300 ms timeout stored
/// 2.5 million). A reset makes it fail the INSERT instead, so a batch below `max_insert_block_size`
/// is stored whole or not at all. So `SO_LINGER` is 0 from the first byte a request sends until the
/// first byte of its answer (or the server's close), and back to the default after: a connection
/// closed while idle in the pool ends with a FIN, as usual. A request sent whole whose answer was
/// not awaited may still be executed by ClickHouse either way.
pub struct ResetIfCut {
    io: TokioIo<tokio::net::TcpStream>,
    sending: bool,
}

impl ResetIfCut {
    fn set_sending(&mut self, sending: bool) {
        if self.sending == sending {
            return;
        }
        self.sending = sending;
        let tcp = self.io.inner();
        // The socket stays usable if this fails; the close is then a FIN as without it.
        let _ = if sending {
            tcp.set_zero_linger()
        } else {
            // Not a blocking linger: `None` restores the default (close returns at once).
            #[allow(deprecated)]
            tcp.set_linger(None)
        };
    }
}

impl hyper::rt::Read for ResetIfCut {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            // Bytes of the answer, or the server's close: nothing of a request is in flight.
            self.set_sending(false);
        }
        polled
    }
}

impl hyper::rt::Write for ResetIfCut {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !buf.is_empty() {
            self.set_sending(true);
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().any(|b| !b.is_empty()) {
            self.set_sending(true);
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for ResetIfCut {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA certificate (`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
    /// -subj /CN=test-ca -days 36500`), for parsing only.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUBo85KwaE4oSZg8kxIwvdhWik8A0wCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjEyMDIwNjU5NDdaGA8yMTI2MTEwODA2
NTk0N1owEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABCK01amTchUwzB/mA2QcGpKMG63pbLYr0wlfHfF4Gq0TmCA9Mud1J+mSKncx
hTNuWnW7Ze0SFJV00QzWATlz/byjUzBRMB0GA1UdDgQWBBQ+Ex1+OxapwYTEaoCh
o6NUh+zDeDAfBgNVHSMEGDAWgBQ+Ex1+OxapwYTEaoCho6NUh+zDeDAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQDPHmfgZGQ38gVmBSIv3Gopzsdc
wKMNs2vw6CC0OnA01QIgFh8izaNzBtcH/zsgEyKq1uKcwNcNY6ryzpKvHzqkzYw=
-----END CERTIFICATE-----
";

    fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rum-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_ca_file_that_is_missing_empty_or_not_pem_names_the_key() {
        let err = load_ca_file("clickhouse.ca_file", Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "clickhouse.ca_file: cannot read /nonexistent/ca.pem: not found"
        );
        let empty = temp_file("empty.pem", "");
        let err = load_ca_file("clickhouse.ca_file", &empty).unwrap_err();
        assert!(err.reason.ends_with("holds no PEM certificate"), "{err}");
        let garbage = temp_file(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        );
        let err = load_ca_file("alerts.ca_file", &garbage).unwrap_err();
        assert_eq!(err.key, "alerts.ca_file");
        assert!(err.reason.contains("not a usable CA certificate"), "{err}");
    }

    #[test]
    fn a_link_needs_a_scheme_and_a_host_and_no_credentials() {
        let check = |url: &str| {
            check_link(
                "clickhouse.url",
                url,
                "clickhouse.ca_file",
                None,
                "put them in clickhouse.user and clickhouse.password",
            )
        };
        assert!(check("http://clickhouse:8123").unwrap().is_none());
        assert!(check("https://clickhouse:8443/?x=1").unwrap().is_some());
        assert_eq!(
            check("clickhouse:8123").unwrap_err().reason,
            "must start with http:// or https://"
        );
        assert_eq!(check("http:///x").unwrap_err().reason, "has no host");
        for url in [
            "https://rum:pa55w0rd@clickhouse:8443",
            "http://rum@clickhouse:8123/",
        ] {
            let err = check(url).unwrap_err();
            assert_eq!(err.to_string(), "clickhouse.url: must not hold credentials (user:password@): put them in clickhouse.user and clickhouse.password");
        }
        // An @ after the host is a path or a query, not credentials.
        check("http://clickhouse:8123/?user=a@b").unwrap();
    }

    #[test]
    fn a_ca_file_needs_https() {
        let err = check_link(
            "alerts.alertmanager_url",
            "http://am:9093",
            "alerts.ca_file",
            Some(Path::new("/etc/hostname")),
            "",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "alerts.ca_file: is set but alerts.alertmanager_url is not https://"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_gets_no_answer_fails_after_the_connect_timeout() {
        // A listener whose accept queue is full: the kernel drops further SYNs, so a connection
        // attempt gets no answer (as from a host behind a dropping firewall).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        while let Ok(stream) =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
        {
            queued.push(stream);
            assert!(queued.len() < 100, "the accept queue never filled");
        }
        // Not the default: the client takes the configured value.
        let connect_timeout = Duration::from_millis(2500);
        let client = http_client::<String>(public_roots_tls_config(), connect_timeout);
        let request = hyper::Request::get(format!("http://{addr}/"))
            .body(String::new())
            .unwrap();
        let started = tokio::time::Instant::now();
        // Paused time: the timers fire as soon as the runtime is idle, in their order.
        let answer = tokio::time::timeout(connect_timeout * 6, client.request(request)).await;
        let err = answer
            .expect("the connect timeout ends the attempt first")
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert_eq!(started.elapsed(), connect_timeout);
    }

    #[test]
    fn a_pem_ca_file_and_the_default_roots_build_a_tls_config() {
        let ca = temp_file("ca.pem", CA_PEM);
        assert_eq!(load_ca_file("k", &ca).unwrap().len(), 1);
        client_tls_config("k", Some(&ca)).unwrap();
        client_tls_config("k", None).unwrap();
    }
}
