//! An in-process network for the exchange, for tests and simulations: its nodes are real
//! `Cluster`s, joined by node id, and every request goes through the peer's
//! `Cluster::serve_exchange` (authentication, replay checks, long-poll holds, signatures) as it
//! does over HTTP, only without sockets. Faults can be set and mended while it runs:
//!
//! - a lost direction (`lose(a, b)`): a's requests to b vanish, like packets into a black hole,
//!   until a's own timeout; b's requests to a still work;
//! - a cut link (`cut(a, b)`): both directions lost, answers in flight included;
//! - a slow node (`slow(c, delay)`): its answers arrive `delay` late.
//!
//! It counts the bytes it carries (`bytes`): what the same exchange would put on the wire as
//! HTTP headers and bodies, without the HTTP framing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::auth::RequestHeaders;
use super::book::Exchange;
use super::transport::{ExchangeError, ExchangeRequest, Transport, open};
use super::{Cluster, ServeError};
use crate::clock::now_ms;

/// The network: nodes by id, and the faults between them.
#[derive(Default)]
pub struct MemoryTransport {
    nodes: Mutex<HashMap<String, Weak<Cluster>>>,
    faults: Mutex<Faults>,
    /// Bytes carried: requests' signed headers, answers' bodies and signatures.
    bytes: AtomicU64,
}

#[derive(Default)]
struct Faults {
    /// (from, to): requests from `from` to `to` are lost.
    lost: HashSet<(String, String)>,
    /// Answers of a node arrive this late.
    slow: HashMap<String, Duration>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryTransport {
    pub fn new() -> Arc<MemoryTransport> {
        Arc::new(MemoryTransport::default())
    }

    /// A node on this network: a real `Cluster` with `settings`, serving `zones`, whose local
    /// health view the caller publishes (there are no probers), joined under its node id.
    pub fn add_node(
        self: &Arc<Self>,
        settings: super::ClusterSettings,
        zones: crate::zone::ZoneSet,
    ) -> anyhow::Result<(
        Arc<Cluster>,
        Arc<crate::state::Snapshots>,
        crate::health::probe::SharedHealthView,
    )> {
        let local = crate::health::probe::LocalHealth::detached();
        let snapshots = Arc::new(crate::state::Snapshots::new(
            zones,
            None,
            Arc::new(crate::telemetry::metrics::Metrics::new()),
        ));
        let cluster =
            Cluster::with_transport(settings, local.clone(), snapshots.clone(), self.clone())?;
        self.join(&cluster);
        Ok((cluster, snapshots, local))
    }

    /// Puts `node` on the network under its node id, which its peers use as its address. Held
    /// weakly: the node's cluster holds this network.
    pub fn join(&self, node: &Arc<Cluster>) {
        lock(&self.nodes).insert(node.settings.node.clone(), Arc::downgrade(node));
    }

    /// From now on, `from`'s requests to `to` are lost (`to`'s requests to `from` still work).
    pub fn lose(&self, from: &str, to: &str) {
        lock(&self.faults)
            .lost
            .insert((from.to_string(), to.to_string()));
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.lose(a, b);
        self.lose(b, a);
    }

    /// From now on, `node`'s answers arrive `delay` late.
    pub fn slow(&self, node: &str, delay: Duration) {
        lock(&self.faults).slow.insert(node.to_string(), delay);
    }

    /// Mends every fault.
    pub fn heal(&self) {
        *lock(&self.faults) = Faults::default();
    }

    /// Bytes carried so far, both ways: the requests' headers (names and values) and the answers'
    /// bodies and signatures.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn is_lost(&self, from: &str, to: &str) -> bool {
        lock(&self.faults)
            .lost
            .contains(&(from.to_string(), to.to_string()))
    }

    fn delay(&self, node: &str) -> Option<Duration> {
        lock(&self.faults).slow.get(node).copied()
    }

    async fn deliver(&self, request: ExchangeRequest<'_>) -> Result<Exchange, ExchangeError> {
        let from = request.credentials.node.as_str();
        let to = request.peer;
        if self.is_lost(from, to) {
            // Lost on the way: nothing comes back; the caller's timeout ends the wait.
            return std::future::pending().await;
        }
        let peer = lock(&self.nodes)
            .get(to)
            .and_then(Weak::upgrade)
            .ok_or_else(|| ExchangeError::Request(format!("no node {to:?} on this network")))?;
        let signed = request
            .credentials
            .sign_request(request.hold, request.digest, now_ms());
        self.count(
            signed
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum(),
        );
        let served = peer
            .serve_exchange(&RequestHeaders::from_pairs(&signed.headers))
            .await;
        drop(peer);
        if let Some(delay) = self.delay(to) {
            tokio::time::sleep(delay).await;
        }
        if self.is_lost(from, to) {
            // Cut while the request was held or on its way back.
            return std::future::pending().await;
        }
        let served = served.map_err(|e| match e {
            ServeError::Refused(reason) => ExchangeError::Refused(reason),
            ServeError::Encode(e) => ExchangeError::Decode(e.to_string()),
        })?;
        self.count(served.body.len() + served.signature.len());
        open(
            request.credentials,
            &signed.nonce,
            &served.body,
            Some(&served.signature),
        )
    }
}

#[async_trait::async_trait]
impl Transport for MemoryTransport {
    async fn exchange(&self, request: ExchangeRequest<'_>) -> Result<Exchange, ExchangeError> {
        let timeout = request.timeout;
        match tokio::time::timeout(timeout, self.deliver(request)).await {
            Ok(result) => result,
            Err(_) => Err(ExchangeError::TimedOut(timeout)),
        }
    }
}
