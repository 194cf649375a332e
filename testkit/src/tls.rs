//! A certificate authority of the test's own and a server certificate for 127.0.0.1 and localhost, made with the
//! `openssl` command line (Debian's OpenSSL 3): what TLS tests of Kafka, ClickHouse and Alertmanager trust.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::{fresh_dir, remove_dir_unless_panicking};

/// A CA and one server certificate signed by it, as PEM files in a fresh directory (removed on drop).
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Generates an RSA 2048 CA (`CN=rum-test-ca`) and a server key and certificate for `IP:127.0.0.1` and
    /// `DNS:localhost` (serverAuth), valid for a day.
    pub fn generate() -> TestCa {
        Self::generate_named("rum-test-ca")
    }

    /// A second, unrelated CA (for "an untrusted certificate" tests): its `ca.pem` does not sign this server, and
    /// its name (`CN=rum-other-ca`) differs, so a verifier finds no issuer (`UnknownIssuer`), not a bad signature.
    pub fn other() -> TestCa {
        Self::generate_named("rum-other-ca")
    }

    fn generate_named(name: &str) -> TestCa {
        let subject = format!("/CN={name}");
        let dir = fresh_dir("tls");
        let ext = dir.join("server.ext");
        fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(
            &dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
                "ca.pem", "-days", "1", "-subj", &subject,
            ],
        );
        // -nodes with `req -newkey` writes an unencrypted PKCS#8 key, which Kafka's PEM keystore reads.
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "1",
                "-extfile",
                "server.ext",
            ],
        );
        // Key and chain in one file: Kafka's `ssl.keystore.type=PEM` with `ssl.keystore.location`.
        let key = fs::read_to_string(dir.join("server.key")).expect("read server.key");
        let cert = fs::read_to_string(dir.join("server.crt")).expect("read server.crt");
        fs::write(dir.join("server-keystore.pem"), format!("{key}{cert}"))
            .expect("write server-keystore.pem");
        TestCa { dir }
    }

    /// The CA certificate (what clients trust).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server's private key (unencrypted PKCS#8).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Key and certificate in one PEM file.
    pub fn server_keystore_pem(&self) -> PathBuf {
        self.dir.join("server-keystore.pem")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        remove_dir_unless_panicking(&self.dir, "tls");
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl (apt package openssl): {e}"));
    assert!(
        output.status.success(),
        "openssl {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_certificate_verifies_against_its_ca_only() {
        let ca = TestCa::generate();
        let verify = |ca_file: &Path| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca_file)
                .arg(ca.server_cert())
                .output()
                .expect("openssl verify")
                .status
                .success()
        };
        assert!(verify(&ca.ca_pem()));
        let other = TestCa::other();
        assert!(!verify(&other.ca_pem()));
        let keystore = fs::read_to_string(ca.server_keystore_pem()).unwrap();
        assert!(keystore.contains("BEGIN PRIVATE KEY") && keystore.contains("BEGIN CERTIFICATE"));
    }
}
