//! Optional TLS for the admin/peer HTTP listener, and the trust roots of outgoing HTTPS to peers
//! and from the CLI. rustls with the ring provider throughout (no aws-lc-rs, no OpenSSL).
//!
//! Server side: `ServerCert` holds the certificate chain and key read from PEM files and hands
//! them to every handshake through rustls's `ResolvesServerCert`, from an `ArcSwap`, so a reload
//! (SIGHUP or `POST /api/v1/reload`) swaps in a renewed certificate without a restart; files
//! that do not load keep the previous certificate. `Incoming` accepts TCP connections and runs
//! their handshakes concurrently, each within `HANDSHAKE_TIMEOUT`, and yields the finished ones:
//! a client that fails its handshake (a plain-HTTP client, one that does not trust us, a slow
//! one) is logged at debug, counted, and dropped, and the listener carries on.
//!
//! Client side: `read_ca_file` reads a PEM bundle of CA certificates; a client given one trusts
//! those roots only. Certificates are always verified.
//!
//! The DNS listener is plain DNS by design (no DNS over TLS): only the admin/peer listener
//! speaks TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error};

use crate::telemetry::metrics::Metrics;

/// How long a client has for its TLS handshake before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; past this, new connections wait in the kernel's backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 256;

/// The PEM files of the admin/peer listener's certificate: the chain (leaf first, intermediates
/// after it) and its private key (PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads and checks a certificate chain and its key; every error names the file.
pub fn load_certified_key(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(&files.cert)
        .with_context(|| format!("reading TLS certificate file {}", files.cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "TLS certificate file {}: not valid PEM: {e}",
                files.cert.display()
            )
        })?;
    if chain.is_empty() {
        bail!(
            "TLS certificate file {}: no CERTIFICATE block in it (PEM expected)",
            files.cert.display()
        );
    }
    let key_pem = std::fs::read(&files.key)
        .with_context(|| format!("reading TLS key file {}", files.key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow!(
            "TLS key file {}: no private key in it (PEM expected: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            files.key.display()
        ),
        e => anyhow!("TLS key file {}: not valid PEM: {e}", files.key.display()),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "TLS key file {} does not match the certificate in {}",
            files.key.display(),
            files.cert.display()
        ),
        e => anyhow!(
            "TLS certificate {} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        ),
    })
}

/// The listener's certificate, re-read on reload.
pub struct ServerCert {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for ServerCert {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// Loads the files; fails, naming the file, if either is missing, unreadable, not PEM, or
    /// if the key does not belong to the certificate.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<ServerCert>> {
        let key = load_certified_key(&files)?;
        Ok(Arc::new(ServerCert {
            files,
            current: ArcSwap::from_pointee(key),
        }))
    }

    /// Re-reads the files; on an error the certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = load_certified_key(&self.files)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A TLS acceptor serving this certificate (as it is at each handshake), TLS 1.2 and 1.3,
    /// HTTP/1.1 only (the admin listener speaks nothing else).
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS connections on a TCP listener, handshakes done. Handshakes run as tasks of their own,
/// so a slow client holds up nobody; they are aborted when this is dropped.
pub struct Incoming {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    metrics: Arc<Metrics>,
}

impl Incoming {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor, metrics: Arc<Metrics>) -> Incoming {
        Incoming {
            tcp,
            acceptor,
            handshakes: JoinSet::new(),
            metrics,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The next connection whose handshake succeeded. Cancel-safe: dropping the future loses
    /// no connection (pending handshakes stay in `self`).
    pub async fn next(&mut self) -> (TlsStream<TcpStream>, SocketAddr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => {
                    match accepted {
                        Ok((stream, client)) => {
                            let acceptor = self.acceptor.clone();
                            let metrics = self.metrics.clone();
                            self.handshakes
                                .spawn(handshake(acceptor, stream, client, metrics));
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    client: SocketAddr,
    metrics: Arc<Metrics>,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some((tls, client)),
        Ok(Err(e)) => {
            // A plain-HTTP client, a client that does not trust our certificate, a scanner:
            // common and harmless, so not worth a warning each.
            debug!(%client, error = %e, "admin TLS handshake failed");
            metrics.record_admin_tls_failure("error");
            None
        }
        Err(_) => {
            debug!(%client, timeout = ?HANDSHAKE_TIMEOUT, "admin TLS handshake timed out");
            metrics.record_admin_tls_failure("timeout");
            None
        }
    }
}

/// As axum does for plain TCP: a connection that died before it was accepted is nothing; any
/// other error (out of file descriptors, say) is logged and accepting pauses for a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(error = %e, "admin listener: accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The CA certificates in a PEM file, as roots for a reqwest client (`tls_certs_only`). Fails,
/// naming the file, if it cannot be read, is not PEM or holds no certificate.
pub fn read_ca_file(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("CA file {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "CA file {}: no CERTIFICATE block in it (PEM expected)",
            path.display()
        );
    }
    certs
        .iter()
        .map(|der| {
            reqwest::Certificate::from_der(der)
                .with_context(|| format!("CA file {}: a certificate", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair {
        cert: String,
        key: String,
    }

    fn generate(name: &str) -> Pair {
        let k = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        Pair {
            cert: k.cert.pem(),
            key: k.signing_key.serialize_pem(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_a_matching_pair_and_names_the_file_on_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate("a.test");
        let b = generate("b.test");
        let files = TlsFiles {
            cert: write(dir.path(), "a.crt", &a.cert),
            key: write(dir.path(), "a.key", &a.key),
        };
        assert!(load_certified_key(&files).is_ok());

        let err = |files: &TlsFiles| format!("{:#}", load_certified_key(files).err().unwrap());
        let missing = TlsFiles {
            key: dir.path().join("nope.key"),
            ..files.clone()
        };
        let e = err(&missing);
        assert!(
            e.contains("reading TLS key file") && e.contains("nope.key"),
            "{e}"
        );
        let mismatched = TlsFiles {
            key: write(dir.path(), "b.key", &b.key),
            ..files.clone()
        };
        let e = err(&mismatched);
        assert!(e.contains("does not match") && e.contains("b.key"), "{e}");
        let no_cert = TlsFiles {
            cert: write(dir.path(), "empty.crt", "not a certificate\n"),
            ..files.clone()
        };
        let e = err(&no_cert);
        assert!(
            e.contains("no CERTIFICATE") && e.contains("empty.crt"),
            "{e}"
        );
        let key_as_cert = TlsFiles {
            key: files.cert.clone(),
            ..files.clone()
        };
        let e = err(&key_as_cert);
        assert!(e.contains("no private key") && e.contains("a.crt"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate("a.test");
        let files = TlsFiles {
            cert: write(dir.path(), "tls.crt", &a.cert),
            key: write(dir.path(), "tls.key", &a.key),
        };
        let cert = ServerCert::load(files.clone()).unwrap();
        let before = cert.current.load_full();
        // A renewed certificate written before its key: the pair does not match yet.
        let b = generate("b.test");
        write(dir.path(), "tls.crt", &b.cert);
        assert!(cert.reload().is_err());
        assert!(Arc::ptr_eq(&before, &cert.current.load_full()));
        write(dir.path(), "tls.key", &b.key);
        cert.reload().unwrap();
        let after = cert.current.load_full();
        assert!(!Arc::ptr_eq(&before, &after));
        assert_eq!(after.cert[0].as_ref(), b_der(&b.cert).as_ref());
    }

    fn b_der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_ca_file_needs_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate("a.test");
        assert_eq!(
            read_ca_file(&write(dir.path(), "ca.pem", &a.cert))
                .unwrap()
                .len(),
            1
        );
        let e = read_ca_file(&write(dir.path(), "key.pem", &a.key))
            .err()
            .unwrap();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let e = read_ca_file(&dir.path().join("missing.pem")).err().unwrap();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
