//! Exchanging health observations and drains between nodes, and keeping the merged view the
//! answers use.
//!
//! Every node serves, on its admin listener at `EXCHANGE_PATH`, its own report and every report it
//! holds from other nodes (with their versions), plus its drain set; every exchange interval it
//! pulls that from each peer. Relaying means two nodes whose link broke still learn each other's
//! view through a third. Both directions are authenticated with HMAC-SHA256 over a shared secret:
//! the request signs (node, time, nonce), the response signs (nonce, body). A request outside the
//! replay window or with a nonce seen before is refused, and a response that does not carry the
//! signature for our own fresh nonce is dropped, so neither can be replayed; every refusal is
//! counted. Old reports and drains are ignored by version anyway (see `merge::accept` and
//! `DrainSet::apply`).
//!
//! Peers may be `https://` URLs (nodes with `tls`): their certificates are verified against
//! `peer_ca_file` alone when it is set, else against the system's roots, never skipped. A peer
//! whose certificate does not verify is unreachable, like one that does not answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub mod auth;

pub use auth::{AuthError, EXCHANGE_PATH, Hold, MAX_HOLD, RequestHeaders};
use auth::{NonceCache, request_headers, response_signature, verify, verify_request};

use crate::clock::now_ms;
use crate::drain::{Drain, DrainSet};
use crate::merge::{self, EffectiveHealth, EndpointKey, MergeSettings, Report, Vote};
use crate::probe::{SharedHealthView, chain};
use crate::state::Snapshots;

/// Long-polls a node holds at once at most; beyond, it answers at once (a plain pull).
const MAX_HELD: usize = 64;
/// The least time between two long-polls to one peer, so that a peer whose generation moves
/// all the time cannot make a follower spin.
const MIN_FOLLOW_GAP: Duration = Duration::from_millis(10);

/// What one node hands another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    pub from: String,
    pub reports: Vec<Report>,
    pub drains: DrainSet,
    /// The sender's generation when it built this message: it moves when a verdict or a drain
    /// it holds changes, and a follower long-polls for the next one. 0 from a node that does
    /// not hold long-polls.
    #[serde(default)]
    pub generation: u64,
}

/// What a node knows of one peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    pub url: String,
    /// The peer's node id, once heard from.
    pub node: Option<String>,
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
}

/// Settings the cluster runs with.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub node: String,
    pub region: String,
    pub peers: Vec<String>,
    /// CA certificates (PEM) that `https://` peers must chain to, instead of the system's roots.
    pub peer_ca: Option<PathBuf>,
    pub secret: Option<Vec<u8>>,
    pub exchange_interval: Duration,
    pub merge: MergeSettings,
    pub state_dir: Option<PathBuf>,
}

struct Inner {
    reports: HashMap<String, Report>,
    drains: DrainSet,
    own_version: u64,
    nonces: NonceCache,
    peers: Vec<PeerStatus>,
    /// Effective up/down per endpoint last published, to log changes.
    last_verdicts: HashMap<EndpointKey, bool>,
    last_isolated: Vec<String>,
}

/// A drain request from the admin API or CLI.
#[derive(Debug, Clone, Deserialize)]
pub struct DrainRequest {
    pub dc: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Seconds until the drain lifts by itself.
    #[serde(default)]
    pub for_seconds: Option<u64>,
    /// Drain even if it leaves a service with no healthy DC.
    #[serde(default)]
    pub force: bool,
}

/// Why a drain or undrain was not applied.
#[derive(Debug, thiserror::Error)]
pub enum DrainRefused {
    #[error("unknown data center {0:?}")]
    UnknownDc(String),
    #[error("service {service:?} has no endpoints in data center {dc:?}")]
    UnknownService { dc: String, service: String },
    #[error("draining {dc} would leave no healthy data center for: {}; use force to drain anyway", services.join(", "))]
    LastHealthy { dc: String, services: Vec<String> },
    #[error("the drain could not be persisted, so it was not applied: {0}")]
    NotPersisted(String),
}

/// The health exchange and merge of one node.
pub struct Cluster {
    pub settings: ClusterSettings,
    local: SharedHealthView,
    snapshots: Arc<Snapshots>,
    inner: Mutex<Inner>,
    http: reqwest::Client,
    /// Moves when a verdict or a drain this node holds changes: what followers long-poll for.
    generation: tokio::sync::watch::Sender<u64>,
    /// Bounds the long-polls held at once.
    held: tokio::sync::Semaphore,
    /// Cancelled when `run` stops, so held long-polls answer at once.
    stopping: CancellationToken,
}

impl Cluster {
    /// A cluster with the drains persisted in the state directory (a corrupt drain file is set
    /// aside and reported; peers will hand the drains back).
    pub fn new(
        settings: ClusterSettings,
        local: SharedHealthView,
        snapshots: Arc<Snapshots>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let drains = match settings.state_dir.as_ref() {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("creating state directory {}: {e}", dir.display())
                })?;
                let path = dir.join("drains.json");
                match DrainSet::load(&path) {
                    Ok(d) => d,
                    Err(e) => {
                        let aside = path.with_extension(format!("corrupt-{}", now_ms()));
                        let _ = std::fs::rename(&path, &aside);
                        error!(error = %e, moved_to = %aside.display(), "drain file unreadable; starting without it");
                        DrainSet::default()
                    }
                }
            }
            None => DrainSet::default(),
        };
        let timeout = settings.exchange_interval.min(Duration::from_secs(2));
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("steerdns-peer/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.peer_ca {
            // A private cluster's CA: trusting the public roots as well would let any publicly
            // trusted certificate for a peer's name pass.
            http = http.tls_certs_only(crate::tls::read_ca_file(path)?);
        }
        let http = http
            .build()
            .map_err(|e| anyhow::anyhow!("building the peer HTTP client: {}", chain(&e)))?;
        let peers = settings
            .peers
            .iter()
            .map(|url| PeerStatus {
                url: url.trim_end_matches('/').to_string(),
                ..PeerStatus::default()
            })
            .collect();
        let cluster = Arc::new(Cluster {
            settings,
            local,
            snapshots,
            inner: Mutex::new(Inner {
                reports: HashMap::new(),
                drains,
                own_version: 0,
                nonces: NonceCache::default(),
                peers,
                last_verdicts: HashMap::new(),
                last_isolated: Vec::new(),
            }),
            http,
            // 0 means "does not hold" in the exchange message.
            generation: tokio::sync::watch::Sender::new(1),
            held: tokio::sync::Semaphore::new(MAX_HELD),
            stopping: CancellationToken::new(),
        });
        cluster.refresh();
        Ok(cluster)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds this node's report from its probers, merges everything and publishes the view
    /// the answers use.
    pub fn refresh(&self) {
        let view = self.local.load_full();
        let now = now_ms();
        let now_inst = tokio::time::Instant::now();
        let mut inner = self.lock();
        let version = (inner.own_version + 1).max(now);
        inner.own_version = version;
        let mut own = Report::new(&self.settings.node, &self.settings.region, version, now);
        own.ready = view.ready;
        for obs in view.observations().filter(|o| o.confirmed) {
            let age = now_inst.saturating_duration_since(obs.since).as_millis() as u64;
            own.insert(
                &EndpointKey::new(obs.target.addr, &obs.target.check),
                Vote {
                    up: obs.status == crate::health::Status::Up,
                    since_ms: now.saturating_sub(age),
                    rtt_ms: obs.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
                    error: obs.last_error.clone(),
                },
            );
        }
        let news = inner
            .reports
            .get(&own.node)
            .is_none_or(|old| !old.same_verdicts(&own));
        inner.reports.insert(own.node.clone(), own);
        if news {
            self.bump();
        }
        let zones = self.snapshots.zones.load();
        let targets = zones.probe_targets();
        // A node being cut off has lost every endpoint within one probe (interval plus timeout).
        let settle_ms = targets
            .iter()
            .map(|(_, c)| (c.interval + c.timeout).as_millis() as u64)
            .max()
            .unwrap_or(0);
        let settings = MergeSettings {
            settle_ms,
            ..self.settings.merge
        };
        let merged = merge::merge(&inner.reports, now, settings);

        for (key, verdict) in &merged.endpoints {
            let before = inner.last_verdicts.insert(key.clone(), verdict.up);
            if before.is_some_and(|b| b != verdict.up) || (before.is_none() && !verdict.up) {
                info!(
                    endpoint = %key.addr, check = %key.check, up = verdict.up,
                    down_votes = verdict.down_votes, counted_votes = verdict.counted_votes,
                    "effective health changed"
                );
                self.snapshots.events.push(
                    "health",
                    format!(
                        "{} ({}) is {}: {} of {} votes down",
                        key.addr,
                        key.check,
                        if verdict.up { "up" } else { "DOWN" },
                        verdict.down_votes,
                        verdict.counted_votes
                    ),
                );
            }
        }
        if merged.isolated != inner.last_isolated {
            if merged.isolated.contains(&self.settings.node) {
                warn!(node = %self.settings.node, "this node sees every endpoint down while its peers see them up: it is probably cut off, and its votes are ignored");
            }
            if !merged.isolated.is_empty() {
                warn!(isolated = ?merged.isolated, "isolation guard: ignoring the votes of nodes that see everything down");
            }
            self.snapshots.events.push(
                "isolation",
                if merged.isolated.is_empty() {
                    "isolation guard: no node isolated".to_string()
                } else {
                    format!(
                        "isolation guard: ignoring the votes of {}",
                        merged.isolated.join(", ")
                    )
                },
            );
            inner.last_isolated = merged.isolated.clone();
        }

        let eff = EffectiveHealth::new(view.ready, targets, merged, inner.drains.clone(), now);
        drop(inner);
        self.snapshots.store_health(Arc::new(eff));
    }

    /// Tells the followers that something they must hear of changed.
    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Holds a peer's long-poll until this node's generation is past `hold.after`, for
    /// `hold.wait` at most, or at once when too many are held or the node is stopping.
    pub async fn hold(&self, hold: Hold) {
        let Ok(_permit) = self.held.try_acquire() else {
            return;
        };
        let mut generation = self.generation.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(
                hold.wait.min(MAX_HOLD),
                generation.wait_for(|g| *g != hold.after),
            ) => {}
            _ = self.stopping.cancelled() => {}
        }
    }

    /// The message this node serves to its peers.
    pub fn exchange_message(&self) -> Exchange {
        // Read before the content: a change made meanwhile is then in the content and also
        // moves the generation past this value, so the follower's next long-poll sees it
        // again rather than never.
        let generation = *self.generation.borrow();
        let inner = self.lock();
        let mut reports: Vec<Report> = inner.reports.values().cloned().collect();
        reports.sort_by(|a, b| a.node.cmp(&b.node));
        Exchange {
            from: self.settings.node.clone(),
            reports,
            drains: inner.drains.clone(),
            generation,
        }
    }

    /// Checks an incoming exchange request. Refusals are counted.
    pub fn authenticate(&self, headers: &RequestHeaders<'_>) -> Result<String, AuthError> {
        let Some(secret) = self.settings.secret.as_deref() else {
            return Err(AuthError::Missing);
        };
        let result = {
            let mut inner = self.lock();
            verify_request(secret, headers, now_ms(), &mut inner.nonces)
        };
        if let Err(e) = result {
            self.count_refusal(e);
            warn!(peer = headers.node.unwrap_or("?"), reason = %e, "peer request refused");
        }
        result
    }

    fn count_refusal(&self, e: AuthError) {
        self.snapshots.metrics.record_auth_refused(e.label());
    }

    /// Signs a response body for a request's nonce.
    pub fn sign_response(&self, nonce: &str, body: &[u8]) -> Option<String> {
        self.settings
            .secret
            .as_deref()
            .map(|s| response_signature(s, nonce, body))
    }

    /// Takes in what a peer holds; true if anything changed.
    pub fn absorb(&self, msg: Exchange) -> bool {
        let mut inner = self.lock();
        let mut changed = false;
        // Whether a verdict or a drain changed: what this node's own followers must hear of
        // (a newer report saying the same thing waits for their next pull).
        let mut news = false;
        for r in msg.reports {
            // Nobody else speaks for this node.
            if r.node != self.settings.node {
                let differs = inner
                    .reports
                    .get(&r.node)
                    .is_none_or(|old| !old.same_verdicts(&r));
                if merge::accept(&mut inner.reports, r) {
                    changed = true;
                    news |= differs;
                }
            }
        }
        let before = inner.drains.clone();
        if inner.drains.merge(&msg.drains) {
            changed = true;
            news = true;
            for (key, d) in &inner.drains.entries {
                if before.entries.get(key) != Some(d) {
                    info!(dc = %d.dc, service = ?d.service, active = d.active, by = %d.issued_by, from = %msg.from, "drain learnt from a peer");
                    self.snapshots.events.push(
                        "drain",
                        format!(
                            "{} {} ({}) by {}, learnt from {}",
                            if d.active { "drain of" } else { "undrain of" },
                            d.dc,
                            d.service.as_deref().unwrap_or("all services"),
                            d.issued_by,
                            msg.from
                        ),
                    );
                }
            }
            let drains = inner.drains.clone();
            drop(inner);
            self.persist(&drains);
        }
        if news {
            self.bump();
        }
        changed
    }

    fn persist(&self, drains: &DrainSet) {
        if let Some(dir) = &self.settings.state_dir
            && let Err(e) = drains.save(&dir.join("drains.json"))
        {
            error!(error = %e, "persisting drains failed");
        }
    }

    /// Pulls every peer once, concurrently, and merges what they hold.
    pub async fn exchange_round(self: &Arc<Self>) {
        let Some(secret) = self.settings.secret.clone() else {
            return;
        };
        let urls: Vec<String> = self.lock().peers.iter().map(|p| p.url.clone()).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, url) in urls.into_iter().enumerate() {
            let me = self.clone();
            let secret = secret.clone();
            tasks.spawn(async move { (i, me.pull(&url, &secret, None).await) });
        }
        let mut changed = false;
        while let Some(joined) = tasks.join_next().await {
            let Ok((i, result)) = joined else { continue };
            let now = now_ms();
            match result {
                Ok(msg) => {
                    let from = msg.from.clone();
                    changed |= self.absorb(msg);
                    self.snapshots.metrics.record_peer_exchange(true);
                    let mut inner = self.lock();
                    if let Some(p) = inner.peers.get_mut(i) {
                        if p.consecutive_failures > 0 || p.last_ok_ms.is_none() {
                            info!(peer = %p.url, node = %from, "peer reachable");
                            self.snapshots
                                .events
                                .push("peer", format!("peer {} ({from}) reachable", p.url));
                        }
                        p.node = Some(from);
                        p.last_ok_ms = Some(now);
                        p.last_error = None;
                        p.consecutive_failures = 0;
                    }
                }
                Err(e) => {
                    self.snapshots.metrics.record_peer_exchange(false);
                    let mut inner = self.lock();
                    if let Some(p) = inner.peers.get_mut(i) {
                        if p.consecutive_failures == 0 {
                            warn!(peer = %p.url, error = %e, "peer lost");
                            self.snapshots
                                .events
                                .push("peer", format!("peer {} lost: {e}", p.url));
                        } else {
                            debug!(peer = %p.url, error = %e, "peer still unreachable");
                        }
                        p.last_error = Some(e);
                        p.consecutive_failures += 1;
                    }
                }
            }
        }
        if changed {
            self.refresh();
        }
    }

    /// One exchange request to `url`; with `hold`, a long-poll.
    async fn pull(&self, url: &str, secret: &[u8], hold: Option<Hold>) -> Result<Exchange, String> {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut req = self.http.get(format!("{url}{EXCHANGE_PATH}"));
        if let Some(h) = hold {
            // The client's timeout bounds a plain pull; a held one may take the hold too.
            req = req.timeout(h.wait + self.settings.exchange_interval.min(Duration::from_secs(2)));
        }
        for (name, value) in request_headers(secret, &self.settings.node, now_ms(), &nonce, hold) {
            req = req.header(name, value);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("request failed: {}", chain(&e)))?;
        let status = resp.status();
        let signature = resp
            .headers()
            .get(auth::H_SIGNATURE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the response: {}", chain(&e)))?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let signed = signature
            .is_some_and(|sig| verify(secret, &[b"response", nonce.as_bytes(), &body], &sig));
        if !signed {
            self.count_refusal(AuthError::BadSignature);
            return Err("response signature invalid (wrong secret, tampered or replayed)".into());
        }
        serde_json::from_slice(&body).map_err(|e| format!("bad exchange message: {e}"))
    }

    /// Runs the exchange until shutdown: pulls peers every interval, and republishes the merged
    /// view as soon as the local probers change their view or the zones are replaced (woken by
    /// their watch channels, no polling), and every interval (reports age, drains expire).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut exchange = tokio::time::interval(self.settings.exchange_interval);
        exchange.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local = self.local.subscribe();
        let mut zones = self.snapshots.changes();
        let mut last_zones = zones.borrow_and_update().zones;
        let mut followers = tokio::task::JoinSet::new();
        if let Some(secret) = self.settings.secret.clone() {
            let urls: Vec<String> = self.lock().peers.iter().map(|p| p.url.clone()).collect();
            for url in urls {
                followers.spawn(self.clone().follow(url, secret.clone(), shutdown.clone()));
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.stopping.cancel();
                    followers.shutdown().await;
                    return;
                }
                _ = exchange.tick() => {
                    self.exchange_round().await;
                    // Ages and expiries move even when nothing else does.
                    self.refresh();
                }
                Ok(()) = local.changed() => {
                    local.mark_unchanged();
                    self.refresh();
                }
                Ok(()) = zones.changed() => {
                    // Health swaps (our own refreshes among them) wake this too: only a new
                    // zone set needs a new merged view.
                    let now = zones.borrow_and_update().zones;
                    if now != last_zones {
                        last_zones = now;
                        self.refresh();
                    }
                }
            }
        }
    }

    /// Follows one peer with long-polls: each asks the peer to answer once its generation moves
    /// past the one last seen, so a changed verdict or drain arrives within a round trip
    /// instead of at the next pull (which stays, as anti-entropy, with the peer bookkeeping).
    /// A peer that does not hold (an older version) or fails is asked again after an interval.
    async fn follow(self: Arc<Self>, url: String, secret: Vec<u8>, shutdown: CancellationToken) {
        let mut after: Option<u64> = None;
        loop {
            let hold = after.map(|after| Hold {
                after,
                wait: MAX_HOLD,
            });
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.pull(&url, &secret, hold) => r,
            };
            let pause = match result {
                Ok(msg) => {
                    after = (msg.generation > 0).then_some(msg.generation);
                    if self.absorb(msg) {
                        self.refresh();
                    }
                    match after {
                        Some(_) => MIN_FOLLOW_GAP.saturating_sub(started.elapsed()),
                        None => self.settings.exchange_interval,
                    }
                }
                Err(error) => {
                    debug!(peer = %url, %error, "long-poll failed; the periodic exchange goes on");
                    after = None;
                    self.settings.exchange_interval
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Issues a drain on this node; it reaches the peers with the next exchange.
    pub fn drain(&self, req: DrainRequest) -> Result<Drain, DrainRefused> {
        let zones = self.snapshots.zones.load();
        let service = req.service.as_deref().map(normalise_service);
        if !zones
            .zones
            .iter()
            .any(|z| z.datacenters.iter().any(|d| *d.name == *req.dc))
        {
            return Err(DrainRefused::UnknownDc(req.dc));
        }
        let now = now_ms();
        let drain = Drain {
            dc: req.dc.clone(),
            service: service.clone(),
            reason: req.reason.unwrap_or_default(),
            active: true,
            expires_ms: req.for_seconds.map(|s| now + s * 1000),
            issued_ms: now,
            issued_by: self.settings.node.clone(),
        };
        // Services this drain would leave with nothing healthy.
        let health = self.snapshots.health.load();
        let mut affected = 0;
        let mut stranded = Vec::new();
        for (zone, svc) in zones.services() {
            let name = svc.name.as_str();
            if service.as_deref().is_some_and(|s| s != name) {
                continue;
            }
            let has_dc = svc
                .dcs
                .iter()
                .any(|d| *zone.datacenters[d.dc].name == *req.dc);
            if !has_dc {
                continue;
            }
            affected += 1;
            let healthy_elsewhere = svc.dcs.iter().any(|d| {
                let dc_name = &zone.datacenters[d.dc].name;
                **dc_name != *req.dc
                    && !health.is_drained(dc_name, name)
                    && d.endpoints
                        .iter()
                        .any(|ip| health.is_up(*ip, svc.check.as_deref()))
            });
            if !healthy_elsewhere {
                stranded.push(name.to_string());
            }
        }
        if let (Some(s), 0) = (&service, affected) {
            return Err(DrainRefused::UnknownService {
                dc: req.dc,
                service: s.clone(),
            });
        }
        if !stranded.is_empty() && !req.force {
            stranded.sort();
            return Err(DrainRefused::LastHealthy {
                dc: req.dc,
                services: stranded,
            });
        }
        self.decide(drain.clone())?;
        info!(dc = %drain.dc, service = ?drain.service, reason = %drain.reason, expires_ms = ?drain.expires_ms, forced = req.force, "drained");
        self.snapshots.events.push(
            "drain",
            format!(
                "drained {} ({}) on {}: {}",
                drain.dc,
                drain.service.as_deref().unwrap_or("all services"),
                drain.issued_by,
                drain.reason
            ),
        );
        Ok(drain)
    }

    /// Lifts a drain (by recording a newer undrain).
    pub fn undrain(&self, dc: &str, service: Option<&str>) -> Result<Drain, DrainRefused> {
        let undrain = Drain {
            dc: dc.to_string(),
            service: service.map(normalise_service),
            reason: String::new(),
            active: false,
            expires_ms: None,
            issued_ms: now_ms(),
            issued_by: self.settings.node.clone(),
        };
        self.decide(undrain.clone())?;
        info!(dc = %undrain.dc, service = ?undrain.service, "undrained");
        self.snapshots.events.push(
            "drain",
            format!(
                "undrained {} ({}) on {}",
                undrain.dc,
                undrain.service.as_deref().unwrap_or("all services"),
                undrain.issued_by
            ),
        );
        Ok(undrain)
    }

    /// Persists, then applies a decision: a drain the node cannot keep across a restart is
    /// refused rather than half-applied.
    fn decide(&self, d: Drain) -> Result<(), DrainRefused> {
        let mut inner = self.lock();
        let mut next = inner.drains.clone();
        next.apply(d);
        if let Some(dir) = &self.settings.state_dir {
            next.save(&dir.join("drains.json"))
                .map_err(|e| DrainRefused::NotPersisted(e.to_string()))?;
        }
        inner.drains = next;
        drop(inner);
        self.bump();
        self.refresh();
        Ok(())
    }

    /// Peers as last seen.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.lock().peers.clone()
    }

    /// Every node's report as held here, for the state API.
    pub fn reports(&self) -> Vec<Report> {
        let mut r: Vec<Report> = self.lock().reports.values().cloned().collect();
        r.sort_by(|a, b| a.node.cmp(&b.node));
        r
    }
}

/// `www.api.example.com.` and `WWW.api.example.com` name the same service.
fn normalise_service(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}
