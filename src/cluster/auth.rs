//! How nodes prove themselves to each other: HMAC-SHA256 over a shared secret. A request signs
//! (node, time, nonce, a long-poll's terms when it holds, and the digest of what the asker holds
//! when it sends one); the response signs (nonce, body).
//! A request outside the replay window or with a nonce seen before is refused, and a response
//! that does not carry the signature for the asker's own fresh nonce is dropped, so neither can
//! be replayed. Pure: the clock, the nonce cache and the secret are handed in.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where a node serves its exchange message.
pub const EXCHANGE_PATH: &str = "/api/v1/peer/exchange";
/// How far a request's clock may be from ours.
pub const REPLAY_WINDOW_MS: u64 = 30_000;
/// Headers of the exchange.
pub const H_NODE: &str = "x-steerdns-node";
pub const H_TIME: &str = "x-steerdns-time";
pub const H_NONCE: &str = "x-steerdns-nonce";
pub const H_SIGNATURE: &str = "x-steerdns-signature";
/// A long-poll: `after=GENERATION;wait_ms=N`, signed with the rest of the request.
pub const H_HOLD: &str = "x-steerdns-hold";
/// What the asker holds (`book::Digest`), signed with the rest of the request: a forged one
/// could make a peer withhold the reports the asker lacks.
pub const H_DIGEST: &str = "x-steerdns-digest";
/// How long a peer holds a long-poll at most before answering anyway (the answer then says
/// nothing new); the follower asks again at once.
pub const MAX_HOLD: Duration = Duration::from_secs(20);

/// What a long-poll asks: answer once the generation is past `after`, or after `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub after: u64,
    pub wait: Duration,
}

impl Hold {
    /// The header value.
    pub fn to_header(self) -> String {
        format!("after={};wait_ms={}", self.after, self.wait.as_millis())
    }

    /// Reads a header value; `None` when malformed. The wait is capped at [`MAX_HOLD`].
    pub fn parse(text: &str) -> Option<Hold> {
        let (after, wait) = text.split_once(';')?;
        let after = after.strip_prefix("after=")?.parse().ok()?;
        let wait_ms: u64 = wait.strip_prefix("wait_ms=")?.parse().ok()?;
        Some(Hold {
            after,
            wait: Duration::from_millis(wait_ms).min(MAX_HOLD),
        })
    }
}

/// Why a peer message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing authentication headers")]
    Missing,
    #[error("timestamp outside the replay window")]
    Expired,
    #[error("nonce already used (replay)")]
    Replayed,
    #[error("bad signature")]
    BadSignature,
}

impl AuthError {
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Replayed => "replayed",
            AuthError::BadSignature => "bad_signature",
        }
    }
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            m.update(b"\n");
        }
        m.update(p);
    }
    m
}

/// Hex HMAC-SHA256 of the parts joined by newlines.
pub fn sign(secret: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac(secret, parts).finalize().into_bytes())
}

/// Constant-time check of a hex signature.
pub fn verify(secret: &[u8], parts: &[&[u8]], signature: &str) -> bool {
    match hex::decode(signature) {
        Ok(sig) => mac(secret, parts).verify_slice(&sig).is_ok(),
        Err(_) => false,
    }
}

/// What a request's signature covers: the hold's terms too, so they cannot be stretched, and the
/// digest, labelled (a header value holds no newline, so a hold cannot pass for a digest).
fn request_parts<'a>(
    node: &'a str,
    time: &'a str,
    nonce: &'a str,
    hold: Option<&'a str>,
    digest: Option<&'a str>,
) -> Vec<&'a [u8]> {
    let mut parts: Vec<&[u8]> = vec![
        b"request",
        node.as_bytes(),
        time.as_bytes(),
        nonce.as_bytes(),
    ];
    if let Some(h) = hold {
        parts.push(h.as_bytes());
    }
    if let Some(d) = digest {
        parts.push(b"digest");
        parts.push(d.as_bytes());
    }
    parts
}

/// Headers for a signed exchange request; with `hold`, a long-poll, whose terms are signed too;
/// with `digest`, what the asker holds (signed as well).
pub fn request_headers(
    secret: &[u8],
    node: &str,
    now_ms: u64,
    nonce: &str,
    hold: Option<Hold>,
    digest: Option<&str>,
) -> Vec<(&'static str, String)> {
    let time = now_ms.to_string();
    let hold = hold.map(Hold::to_header);
    let sig = sign(
        secret,
        &request_parts(node, &time, nonce, hold.as_deref(), digest),
    );
    let mut headers = vec![
        (H_NODE, node.to_string()),
        (H_TIME, time),
        (H_NONCE, nonce.to_string()),
        (H_SIGNATURE, sig),
    ];
    if let Some(h) = hold {
        headers.push((H_HOLD, h));
    }
    if let Some(d) = digest {
        headers.push((H_DIGEST, d.to_string()));
    }
    headers
}

/// An exchange request's authentication headers as received; any of them may be missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestHeaders<'a> {
    pub node: Option<&'a str>,
    pub time: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub hold: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> RequestHeaders<'a> {
    /// Reads them through `header(name)`, from whatever holds them: an HTTP request's header
    /// map, or the list `request_headers` made.
    pub fn read(header: impl Fn(&str) -> Option<&'a str>) -> RequestHeaders<'a> {
        RequestHeaders {
            node: header(H_NODE),
            time: header(H_TIME),
            nonce: header(H_NONCE),
            signature: header(H_SIGNATURE),
            hold: header(H_HOLD),
            digest: header(H_DIGEST),
        }
    }

    /// From a list of (name, value) pairs, as `request_headers` makes it.
    pub fn from_pairs(pairs: &'a [(&'static str, String)]) -> RequestHeaders<'a> {
        RequestHeaders::read(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        })
    }
}

/// Nonces seen within the replay window.
#[derive(Default)]
pub struct NonceCache {
    seen: HashMap<String, u64>,
}

impl NonceCache {
    /// Records a nonce; false if it was seen before.
    fn fresh(&mut self, nonce: &str, now_ms: u64) -> bool {
        if self.seen.len() > 10_000 {
            self.seen
                .retain(|_, t| now_ms.saturating_sub(*t) <= 2 * REPLAY_WINDOW_MS);
        }
        if self.seen.contains_key(nonce) {
            return false;
        }
        self.seen.insert(nonce.to_string(), now_ms);
        true
    }
}

/// Checks a request's headers; returns the peer's node id.
pub fn verify_request(
    secret: &[u8],
    headers: &RequestHeaders<'_>,
    now_ms: u64,
    nonces: &mut NonceCache,
) -> Result<String, AuthError> {
    let RequestHeaders {
        node: Some(node),
        time: Some(time),
        nonce: Some(nonce),
        signature: Some(signature),
        hold,
        digest,
    } = *headers
    else {
        return Err(AuthError::Missing);
    };
    if !verify(
        secret,
        &request_parts(node, time, nonce, hold, digest),
        signature,
    ) {
        return Err(AuthError::BadSignature);
    }
    let t: u64 = time.parse().map_err(|_| AuthError::Expired)?;
    if t.abs_diff(now_ms) > REPLAY_WINDOW_MS {
        return Err(AuthError::Expired);
    }
    if !nonces.fresh(nonce, now_ms) {
        return Err(AuthError::Replayed);
    }
    Ok(node.to_string())
}

/// The signature a response carries for the request's nonce.
pub fn response_signature(secret: &[u8], nonce: &str, body: &[u8]) -> String {
    sign(secret, &[b"response", nonce.as_bytes(), body])
}

/// Whether `signature` is the response signature for `nonce` and `body`.
pub fn verify_response(secret: &[u8], nonce: &str, body: &[u8], signature: &str) -> bool {
    verify(secret, &[b"response", nonce.as_bytes(), body], signature)
}

/// Who a node is to its peers, and the secret it signs with.
#[derive(Clone)]
pub struct Credentials {
    pub node: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A request signed for sending: its headers, and the nonce its answer must be signed for.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub nonce: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Credentials {
    pub fn new(node: impl Into<String>, secret: impl Into<Vec<u8>>) -> Credentials {
        Credentials {
            node: node.into(),
            secret: secret.into(),
        }
    }

    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// A request with a fresh random nonce, stamped `now_ms`.
    pub fn sign_request(
        &self,
        hold: Option<Hold>,
        digest: Option<&str>,
        now_ms: u64,
    ) -> SignedRequest {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let headers = request_headers(&self.secret, &self.node, now_ms, &nonce, hold, digest);
        SignedRequest { nonce, headers }
    }

    /// Whether a response body carries the signature for our request's nonce.
    pub fn response_valid(&self, nonce: &str, body: &[u8], signature: Option<&str>) -> bool {
        signature.is_some_and(|sig| verify_response(&self.secret, nonce, body, sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"shared";

    fn headers(node: &str, t: u64, nonce: &str) -> Vec<(&'static str, String)> {
        request_headers(SECRET, node, t, nonce, None, None)
    }

    fn check(
        h: &[(&'static str, String)],
        secret: &[u8],
        now: u64,
        cache: &mut NonceCache,
    ) -> Result<String, AuthError> {
        verify_request(secret, &RequestHeaders::from_pairs(h), now, cache)
    }

    #[test]
    fn a_long_polls_terms_are_signed_and_read_back_capped() {
        let hold = Hold {
            after: 41,
            wait: Duration::from_secs(5),
        };
        assert_eq!(Hold::parse(&hold.to_header()), Some(hold));
        assert_eq!(
            Hold::parse("after=1;wait_ms=3600000").map(|h| h.wait),
            Some(MAX_HOLD)
        );
        for bad in ["", "after=1", "after=x;wait_ms=1", "wait_ms=1;after=1"] {
            assert_eq!(Hold::parse(bad), None, "{bad:?}");
        }
        let mut cache = NonceCache::default();
        let h = request_headers(SECRET, "b", 1_000_000, "n9", Some(hold), None);
        assert_eq!(h[4], (H_HOLD, "after=41;wait_ms=5000".to_string()));
        assert_eq!(check(&h, SECRET, 1_000_000, &mut cache), Ok("b".into()));
        // Changing the terms (a longer hold, say) breaks the signature.
        let mut tampered = request_headers(SECRET, "b", 1_000_000, "n10", Some(hold), None);
        tampered[4].1 = "after=41;wait_ms=20000".into();
        assert_eq!(
            check(&tampered, SECRET, 1_000_000, &mut cache),
            Err(AuthError::BadSignature)
        );
        // And a plain request's signature does not pass as a long-poll's.
        let mut added = headers("b", 1_000_000, "n11");
        added.push((H_HOLD, "after=1;wait_ms=1".into()));
        assert_eq!(
            check(&added, SECRET, 1_000_000, &mut cache),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_digest_is_signed_and_cannot_be_added_changed_or_dropped() {
        let mut cache = NonceCache::default();
        let t = 1_000_000;
        let h = request_headers(SECRET, "b", t, "d1", None, Some("drains=0;v=a:1"));
        assert_eq!(h[4], (H_DIGEST, "drains=0;v=a:1".to_string()));
        assert_eq!(check(&h, SECRET, t, &mut cache), Ok("b".into()));
        // Claiming to hold more than it does would make the peer withhold reports.
        let mut changed = request_headers(SECRET, "b", t, "d2", None, Some("drains=0;v=a:1"));
        changed[4].1 = "drains=0;v=a:99".into();
        let mut dropped = request_headers(SECRET, "b", t, "d3", None, Some("drains=0;v=a:1"));
        dropped.pop();
        let mut added = headers("b", t, "d4");
        added.push((H_DIGEST, "drains=0;v=a:1".into()));
        // A digest's signature does not pass for a hold's.
        let mut moved = request_headers(SECRET, "b", t, "d5", None, Some("after=1;wait_ms=1"));
        moved[4].0 = H_HOLD;
        for h in [changed, dropped, added, moved] {
            assert_eq!(
                check(&h, SECRET, t, &mut cache),
                Err(AuthError::BadSignature),
                "{h:?}"
            );
        }
    }

    #[test]
    fn signed_requests_pass_once() {
        let mut cache = NonceCache::default();
        let h = headers("b", 1_000_000, "n1");
        assert_eq!(check(&h, SECRET, 1_000_500, &mut cache), Ok("b".into()));
        assert_eq!(
            check(&h, SECRET, 1_000_600, &mut cache),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn wrong_secret_tampering_and_old_requests_are_refused() {
        let mut cache = NonceCache::default();
        let h = headers("b", 1_000_000, "n2");
        assert_eq!(
            check(&h, b"other", 1_000_000, &mut cache),
            Err(AuthError::BadSignature)
        );
        let mut tampered = h.clone();
        tampered[0].1 = "c".into();
        assert_eq!(
            check(&tampered, SECRET, 1_000_000, &mut cache),
            Err(AuthError::BadSignature)
        );
        let old = headers("b", 1_000_000, "n3");
        assert_eq!(
            check(&old, SECRET, 1_000_000 + REPLAY_WINDOW_MS + 1, &mut cache),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify_request(SECRET, &RequestHeaders::default(), 0, &mut cache),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn responses_are_bound_to_the_nonce_and_body() {
        let sig = response_signature(SECRET, "n", b"{}");
        assert!(verify_response(SECRET, "n", b"{}", &sig));
        assert!(!verify_response(SECRET, "other-nonce", b"{}", &sig));
        assert!(!verify_response(SECRET, "n", b"{ }", &sig));
        assert!(!verify_response(SECRET, "n", b"{}", "zz"));
        let me = Credentials::new("a", SECRET);
        let req = me.sign_request(None, None, 1_000_000);
        let sig = response_signature(SECRET, &req.nonce, b"{}");
        assert!(me.response_valid(&req.nonce, b"{}", Some(&sig)));
        assert!(!me.response_valid(&req.nonce, b"{}", None));
        assert!(
            !me.sign_request(None, None, 1_000_000).nonce.eq(&req.nonce),
            "every request has its own nonce"
        );
    }
}
