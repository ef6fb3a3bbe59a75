//! How one exchange request reaches a peer: the `Transport` trait, and `HttpTransport`, the real
//! one (reqwest, to the peer's admin listener at `EXCHANGE_PATH`, HTTPS verified against
//! `peer_ca_file` alone when set, else the system's roots, never skipped). The in-memory network
//! the partition tests use is `memory::MemoryTransport`. Either signs the request with the
//! asker's credentials, delivers it, and hands back the peer's message only if it carries the
//! signature for the request's own nonce (`open`).

use std::path::Path;
use std::time::Duration;

use super::auth::{AuthError, Credentials, EXCHANGE_PATH, H_SIGNATURE, Hold};
use super::book::Exchange;
use crate::clock::now_ms;
use crate::health::probe::chain;

/// One exchange request: who asks whom, on what terms. A struct rather than arguments, so that
/// what a request carries can grow (a digest of what the asker holds, say) without touching
/// every transport's signature.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeRequest<'a> {
    /// The peer as configured: a URL for HTTP, a node id on a `MemoryTransport`.
    pub peer: &'a str,
    /// Who asks, and the secret the request is signed with and the answer must be signed with.
    pub credentials: &'a Credentials,
    /// A long-poll's terms; none for a plain pull.
    pub hold: Option<Hold>,
    /// What the asker holds (`book::Digest`, encoded), so that the peer sends only what is
    /// newer; none asks for everything, as older nodes do.
    pub digest: Option<&'a str>,
    /// When to give up, the hold included: a transport must not take longer.
    pub timeout: Duration,
}

/// Why an exchange request brought nothing back.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("reading the response: {0}")]
    Read(String),
    #[error("HTTP {status}: {body}")]
    Status { status: String, body: String },
    #[error("refused by the peer: {0}")]
    Refused(AuthError),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// Counted like a refused request: the peer has another secret, or someone replays or
    /// tampers with its answers.
    #[error("response signature invalid (wrong secret, tampered or replayed)")]
    BadSignature,
    #[error("bad exchange message: {0}")]
    Decode(String),
}

/// Carries exchange requests to peers.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Signs `request` with its credentials, delivers it to `request.peer`, and returns the
    /// peer's message once `open` accepts it; gives up after `request.timeout`.
    async fn exchange(&self, request: ExchangeRequest<'_>) -> Result<Exchange, ExchangeError>;
}

/// Checks that an answer carries the signature for our request's `nonce`, and decodes it: what
/// every transport does with the bytes it got back.
pub fn open(
    credentials: &Credentials,
    nonce: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<Exchange, ExchangeError> {
    if !credentials.response_valid(nonce, body, signature) {
        return Err(ExchangeError::BadSignature);
    }
    serde_json::from_slice(body).map_err(|e| ExchangeError::Decode(e.to_string()))
}

/// Exchange requests over HTTP(S), to `PEER_URL` + `EXCHANGE_PATH`.
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A client that connects within `connect_timeout` and trusts, for `https://` peers, the CAs
    /// in `peer_ca` alone when given, else the system's roots.
    pub fn new(peer_ca: Option<&Path>, connect_timeout: Duration) -> anyhow::Result<HttpTransport> {
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .timeout(connect_timeout)
            .connect_timeout(connect_timeout)
            .user_agent(concat!("steerdns-peer/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = peer_ca {
            // A private cluster's CA: trusting the public roots as well would let any publicly
            // trusted certificate for a peer's name pass.
            http = http.tls_certs_only(crate::tls::read_ca_file(path)?);
        }
        let client = http
            .build()
            .map_err(|e| anyhow::anyhow!("building the peer HTTP client: {}", chain(&e)))?;
        Ok(HttpTransport { client })
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn exchange(&self, request: ExchangeRequest<'_>) -> Result<Exchange, ExchangeError> {
        let signed = request
            .credentials
            .sign_request(request.hold, request.digest, now_ms());
        let mut req = self
            .client
            .get(format!("{}{EXCHANGE_PATH}", request.peer))
            .timeout(request.timeout);
        for (name, value) in signed.headers {
            req = req.header(name, value);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ExchangeError::Request(chain(&e)))?;
        let status = resp.status();
        let signature = resp
            .headers()
            .get(H_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .bytes()
            .await
            .map_err(|e| ExchangeError::Read(chain(&e)))?;
        if !status.is_success() {
            return Err(ExchangeError::Status {
                status: status.to_string(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        open(
            request.credentials,
            &signed.nonce,
            &body,
            signature.as_deref(),
        )
    }
}
