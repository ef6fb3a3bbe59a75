//! The cluster wing: exchanging health observations and drains between nodes, and keeping the
//! merged view the answers use.
//!
//! Every node serves its own report and every report it holds from other nodes (with their
//! versions), every node's heartbeat, plus its drain set; every exchange interval it pulls from
//! its peers, and it follows them with long-polls that a peer answers as soon as a verdict or
//! drain it holds changes. Each request carries a digest of what the asker holds (report
//! versions and heartbeats), and the answer holds only what is newer (`book::Digest`), a changed
//! report as the votes that changed (`book::ReportDelta`): a steady state costs the heartbeats
//! that moved, not reports. Up to `FULL_MESH_PEERS` peers a node pulls and follows every peer,
//! and each round one peer (in turn) is asked for every report newer than the asker holds, the
//! others only for their own (`exchange_round`): relaying means two nodes whose link broke still
//! learn each other's view through a third. With more, it pulls and follows `fanout` peers,
//! gossip-style, and pushes go two hops (`book::Reach::Near`). Old reports and drains are
//! ignored by version (see `merge::accept` and `DrainSet::apply`).
//!
//! One job per file:
//! - `auth`: signing and checking requests and answers, the replay window, nonces, hold terms;
//! - `book`: what a node holds (reports, drains, peers) and how a message or a refresh changes
//!   it, as plain synchronous code; the `Exchange` message;
//! - `policy`: operator drain requests → drain decisions (the last-healthy-DC guard);
//! - `news`: the log lines and events of all that;
//! - `transport`: the `Transport` trait and `HttpTransport`;
//! - `memory`: `MemoryTransport`, an in-process network with faults, for tests;
//! - `partitions` (tests only): partition scenarios on that network;
//! - `sim` (hidden): a simulated cluster of many nodes on that network, for the exchange's
//!   traffic test and scale benchmark;
//! - this file: the `Cluster` handle that ties them to the clock, the local health view, the
//!   snapshots and the tasks (`run`, `follow`, `serve_exchange`).
//!
//! ```text
//! probe's HealthView --refresh--> Book --merge--> EffectiveHealth --> Snapshots
//! peer's Exchange --transport--> absorb --> Book        (then refresh)
//! peer's request --serve_exchange: auth, hold--> Book's message, signed
//! operator's DrainRequest --policy--> Drain --persist--> Book
//! ```

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

pub mod auth;
pub mod book;
pub mod memory;
pub mod news;
#[cfg(test)]
mod partitions;
pub mod policy;
#[doc(hidden)]
pub mod sim;
pub mod transport;

pub use auth::{AuthError, Credentials, EXCHANGE_PATH, Hold, MAX_HOLD, RequestHeaders};
pub use book::{Digest, Exchange, PeerStatus};
pub use policy::{DrainRefused, DrainRequest};
pub use transport::{ExchangeError, ExchangeRequest, HttpTransport, Transport};

use crate::clock::now_ms;
use crate::health::HealthView;
use crate::health::drain::{Drain, DrainSet};
use crate::health::merge::{EffectiveHealth, Lookup, MergeSettings, Report};
use crate::health::probe::SharedHealthView;
use crate::state::Snapshots;
use crate::zone::ZoneSet;
use crate::zone::check::Check;
use auth::{NonceCache, response_signature, verify_request};
use book::{Book, Reach};

/// Long-polls a node holds at once at most; beyond, it answers at once (a plain pull).
const MAX_HELD: usize = 64;
/// The least time between two long-polls to one peer, so that a peer whose generation moves
/// all the time cannot make a follower spin.
const MIN_FOLLOW_GAP: Duration = Duration::from_millis(10);
/// The longest a plain pull may take (it is shorter with a shorter exchange interval).
const MAX_PULL: Duration = Duration::from_secs(2);
/// The least time between two merges of the merge loop: what wakes it within that time (peers'
/// answers arriving one after another as every node sees a DC fail, the probers' stores) is
/// merged once, at its end. The first wake-up after a quiet spell merges at once.
const MERGE_GAP: Duration = Duration::from_millis(10);
/// Up to this many peers, a node pulls every peer each round and follows every peer: every
/// change reaches every node first hand, in one round trip (a small cluster's full mesh).
pub const FULL_MESH_PEERS: usize = 8;
/// Beyond, a node pulls and follows this many peers at least (see `fanout`).
const MIN_FANOUT: usize = 3;
/// A follower moves on to the next peer of its lane after this many failures in a row (see
/// `follow`).
const FOLLOW_MOVES_AFTER: u32 = 3;

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

/// An exchange request served: the message, and its signature for the request's nonce.
#[derive(Debug, Clone)]
pub struct Served {
    pub body: Vec<u8>,
    pub signature: String,
}

/// Why an exchange request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Refused(#[from] AuthError),
    #[error("encoding the exchange message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The health exchange and merge of one node.
pub struct Cluster {
    pub settings: ClusterSettings,
    /// This node's id and the cluster secret; none on a node without peers.
    credentials: Option<Credentials>,
    local: SharedHealthView,
    snapshots: Arc<Snapshots>,
    book: Mutex<Book>,
    nonces: Mutex<NonceCache>,
    peers: Mutex<Vec<PeerStatus>>,
    /// The version of the merge last published (see `publish`).
    published: Mutex<u64>,
    /// What the last refresh read and built (locked under `book`, by `refresh` only).
    kept: Mutex<Kept>,
    transport: Arc<dyn Transport>,
    /// Moves when a verdict or a drain this node holds changes: what followers long-poll for.
    generation: tokio::sync::watch::Sender<u64>,
    /// Bounds the long-polls held at once.
    held: tokio::sync::Semaphore,
    /// Cancelled when `run` stops, so held long-polls answer at once.
    stopping: CancellationToken,
    /// Periodic pull rounds so far: picks the round's relay peer (see `relay_peer`), or its
    /// peers (see `round_peers`).
    rounds: std::sync::atomic::AtomicUsize,
    /// The peers' indices in an order of this node's own (shuffled at start): the turns of the
    /// periodic pulls and the lanes of the followers, so that in a large cluster every node
    /// pulls and follows other peers (see `fanout`).
    order: Vec<usize>,
    /// How many peers a round pulls and how many followers follow (`fanout`).
    fanout: usize,
    /// Woken when a pull or a long-poll took in something newer: the merge loop then merges
    /// once for however many arrived meanwhile (a merge reads every node's report, and many
    /// nodes' answers arriving together would otherwise each pay for one).
    absorbed: tokio::sync::Notify,
}

/// What a refresh read and built, for the next to skip what would come out the same. The
/// view and zones are held, not only compared by address: an address can be reused once freed.
#[derive(Default)]
struct Kept {
    /// The probers' view last made into this node's report.
    view: Option<Arc<HealthView>>,
    /// The zones last read, with their probe targets and the settle time of lone down votes.
    zones: Option<(Arc<ZoneSet>, Arc<ProbeTargets>, u64)>,
    /// The lookup of the targets' verdicts built at the last merge that judged any endpoint
    /// again, for those zones.
    lookup: Option<Lookup>,
}

type ProbeTargets = HashSet<(IpAddr, Arc<Check>)>;

impl Kept {
    /// The targets of `zones` and their settle time, listed again only for another zone set
    /// (which also drops the lookup built for the one before).
    fn targets(&mut self, zones: &Arc<ZoneSet>) -> (Arc<ProbeTargets>, u64) {
        match &self.zones {
            Some((z, targets, settle)) if Arc::ptr_eq(z, zones) => (targets.clone(), *settle),
            _ => {
                let targets = Arc::new(zones.probe_targets());
                let settle = book::settle_ms(&targets);
                self.zones = Some((zones.clone(), targets.clone(), settle));
                self.lookup = None;
                (targets, settle)
            }
        }
    }
}

/// Locks, going on past a panic elsewhere: every value under these locks is replaced whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// A cluster that exchanges over HTTP(S), with the drains persisted in the state directory
    /// (a corrupt drain file is set aside and reported; peers will hand the drains back).
    pub fn new(
        settings: ClusterSettings,
        local: SharedHealthView,
        snapshots: Arc<Snapshots>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let drains = load_drains(&settings)?;
        let transport = HttpTransport::new(settings.peer_ca.as_deref(), pull_timeout(&settings))?;
        Ok(Cluster::build(
            settings,
            local,
            snapshots,
            Arc::new(transport),
            drains,
        ))
    }

    /// A cluster that exchanges over `transport` (`peer_ca` is not used then).
    pub fn with_transport(
        settings: ClusterSettings,
        local: SharedHealthView,
        snapshots: Arc<Snapshots>,
        transport: Arc<dyn Transport>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let drains = load_drains(&settings)?;
        Ok(Cluster::build(
            settings, local, snapshots, transport, drains,
        ))
    }

    fn build(
        settings: ClusterSettings,
        local: SharedHealthView,
        snapshots: Arc<Snapshots>,
        transport: Arc<dyn Transport>,
        drains: DrainSet,
    ) -> Arc<Cluster> {
        let peers: Vec<PeerStatus> = settings.peers.iter().map(|u| PeerStatus::new(u)).collect();
        let mut order: Vec<usize> = (0..peers.len()).collect();
        {
            use rand::seq::SliceRandom;
            order.shuffle(&mut rand::rng());
        }
        let fanout = fanout(peers.len());
        let credentials = settings
            .secret
            .as_ref()
            .map(|s| Credentials::new(settings.node.clone(), s.clone()));
        let cluster = Arc::new(Cluster {
            book: Mutex::new(Book::new(&settings.node, &settings.region, drains)),
            settings,
            credentials,
            local,
            snapshots,
            nonces: Mutex::new(NonceCache::default()),
            peers: Mutex::new(peers),
            published: Mutex::new(0),
            kept: Mutex::new(Kept::default()),
            transport,
            // 0 means "does not hold" in the exchange message.
            generation: tokio::sync::watch::Sender::new(1),
            held: tokio::sync::Semaphore::new(MAX_HELD),
            stopping: CancellationToken::new(),
            absorbed: tokio::sync::Notify::new(),
            rounds: std::sync::atomic::AtomicUsize::new(0),
            order,
            fanout,
        });
        cluster.refresh();
        cluster
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        lock(&self.book)
    }

    /// Rebuilds this node's report from its probers, merges everything and publishes the view
    /// the answers use.
    ///
    /// Work follows what changed (see `Kept`): a probers' view already made into this node's
    /// report is not read again, the zones' targets are listed once per zone set, and a merge
    /// that judged no endpoint again keeps the lookup the answers read. A steady node (the
    /// merge every interval that ages the reports) then costs a beat, a merge that looks at
    /// each node once, and the drains.
    pub fn refresh(&self) {
        let mut book = self.book();
        let mut kept = lock(&self.kept);
        // Read under the lock: refreshes then merge what they read in the order they merge,
        // and `publish` can keep an older merge from replacing a newer one.
        let view = self.local.load_full();
        let zones = self.snapshots.zones.load_full();
        let (targets, settle_ms) = kept.targets(&zones);
        let settings = MergeSettings {
            settle_ms,
            ..self.settings.merge
        };
        let now = now_ms();
        let r = if kept.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, &view)) {
            book.refresh_same(now, tokio::time::Instant::now(), settings)
        } else {
            book.refresh(&view, now, tokio::time::Instant::now(), settings)
        };
        kept.view = Some(view.clone());
        let steering = book.steer(&zones, now, settings.stale_after_ms);
        let lookup = match &kept.lookup {
            Some(lookup) if !r.judged => lookup.clone(),
            _ => {
                let lookup = Lookup::new(targets.iter().cloned(), &r.merged);
                kept.lookup = Some(lookup.clone());
                lookup
            }
        };
        drop(kept);
        drop(book);
        // The new report is in the book before the followers wake to read it.
        if r.news {
            self.bump();
        }
        let events = &self.snapshots.events;
        for change in &r.changes {
            news::verdict_changed(events, change);
        }
        if let Some(isolated) = &r.isolation {
            news::isolation_changed(events, &self.settings.node, isolated);
        }
        let eff = EffectiveHealth::with_lookup(view.ready, lookup, r.merged, r.drains, now)
            .with_steering(steering);
        self.publish(r.version, eff);
    }

    /// Makes `health`, merged at `version`, the view the answers use, unless a later merge was
    /// published already: refreshes run on several tasks (the merge loop, the pull rounds, the
    /// followers), and one that lost the race to publish must not put back what a later one
    /// replaced (a drain just decided, say).
    fn publish(&self, version: u64, mut health: EffectiveHealth) {
        let mut published = lock(&self.published);
        if version > *published {
            *published = version;
            health.keep_answers(&self.snapshots.health.load());
            self.snapshots.store_health(Arc::new(health));
        }
    }

    /// Tells the followers that something they must hear of changed.
    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Serves one exchange request, whatever carried it (the admin listener, a
    /// `MemoryTransport`): authenticates it (refusals are counted and logged), holds it while
    /// it is a long-poll with nothing new to say, and returns this node's message signed for
    /// the request's nonce.
    pub async fn serve_exchange(&self, request: &RequestHeaders<'_>) -> Result<Served, ServeError> {
        let secret = self.authenticate(request)?;
        // Present: authentication needs it.
        let nonce = request.nonce.ok_or(AuthError::Missing)?;
        // A long-poll, signed: answer once something changed, or when the hold runs out.
        if let Some(hold) = request.hold.and_then(Hold::parse) {
            self.hold(hold).await;
        }
        // A malformed digest from a peer that signed it asks for everything.
        let digest = request.digest.map(|d| Digest::parse(d).unwrap_or_default());
        if let Some(d) = &digest {
            self.book().absorb_beats(d);
        }
        // A long-poll's answer is first hand (see `Book::message`); where pushes are relayed
        // (a large cluster), a held one's goes a hop further (`Reach::Near`). A request for
        // first-hand news now (no wait) stays first hand in every cluster: a starting follower
        // would otherwise take in much of the cluster from each peer it follows.
        let reach = match request.hold {
            None => Reach::All,
            Some(h)
                if self.relays_pushes() && Hold::parse(h).is_some_and(|h| !h.wait.is_zero()) =>
            {
                Reach::Near
            }
            Some(_) => Reach::Own,
        };
        let body = serde_json::to_vec(&self.exchange_message(digest.as_ref(), reach))?;
        let signature = response_signature(secret, nonce, &body);
        Ok(Served { body, signature })
    }

    /// Checks an incoming exchange request, and returns the secret to sign the answer with.
    /// Refusals are counted.
    fn authenticate(&self, request: &RequestHeaders<'_>) -> Result<&[u8], AuthError> {
        let Some(credentials) = &self.credentials else {
            return Err(AuthError::Missing);
        };
        let result = verify_request(
            credentials.secret(),
            request,
            now_ms(),
            &mut lock(&self.nonces),
        );
        match result {
            Ok(_) => Ok(credentials.secret()),
            Err(e) => {
                self.count_refusal(e);
                news::request_refused(request.node, e);
                Err(e)
            }
        }
    }

    fn count_refusal(&self, e: AuthError) {
        self.snapshots.metrics.record_auth_refused(e.label());
    }

    /// Holds a peer's long-poll until this node's generation is past `hold.after`, for
    /// `hold.wait` at most, or at once when too many are held or the node is stopping.
    async fn hold(&self, hold: Hold) {
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

    /// The message this node serves to a peer that holds `digest`.
    fn exchange_message(&self, digest: Option<&Digest>, reach: Reach) -> Exchange {
        // Read before the content: a change made meanwhile is then in the content and also
        // moves the generation past this value, so the follower's next long-poll sees it
        // again rather than never.
        let generation = *self.generation.borrow();
        let mut msg = self.book().message(generation, digest, reach);
        if digest.is_some() {
            alive_now(&mut msg.heartbeats, &self.settings.node);
        }
        msg
    }

    /// The size of the whole state this node serves (every report, drain and heartbeat, as
    /// to an asker without a digest), for the exchange benchmarks.
    #[doc(hidden)]
    pub fn full_state_bytes(&self) -> usize {
        serde_json::to_vec(&self.exchange_message(None, Reach::All)).map_or(0, |b| b.len())
    }

    /// Takes in what a peer holds; true if anything changed.
    fn absorb(&self, msg: Exchange) -> bool {
        let from = msg.from.clone();
        let mut book = self.book();
        let got = book.absorb(msg);
        // Persisted before the book is free again: a refresh (which needs it) cannot publish a
        // learnt drain or undrain before it is on disk, and two answers taken in at once cannot
        // write their sets in the wrong order (the older last). Drains change seldom.
        if let Some(drains) = &got.drains {
            self.persist(drains);
        }
        drop(book);
        for d in &got.learnt {
            news::drain_learnt(&self.snapshots.events, d, &from);
        }
        if got.news || (got.relayed && self.relays_pushes()) {
            self.bump();
        }
        got.changed
    }

    /// Whether this node relays pushes: in a cluster too large for every node to follow
    /// every other (see `fanout`), a held long-poll is answered with the reports this node
    /// took in first hand too, and such a report wakes this node's followers, so that a
    /// change goes two hops by push (`Reach::Near`) and the periodic pulls bring it to the
    /// rest.
    fn relays_pushes(&self) -> bool {
        self.fanout < self.settings.peers.len()
    }

    fn persist(&self, drains: &DrainSet) {
        if let Some(dir) = &self.settings.state_dir
            && let Err(e) = drains.save(&dir.join("drains.json"))
        {
            error!(error = %e, "persisting drains failed");
        }
    }

    /// One exchange request to `peer`; with `hold`, a long-poll. A response with a bad
    /// signature is counted as a refusal.
    async fn pull(
        &self,
        credentials: &Credentials,
        peer: &str,
        hold: Option<Hold>,
    ) -> Result<Exchange, ExchangeError> {
        let base = pull_timeout(&self.settings);
        // What this node holds as it asks: a held answer brings what changed since.
        let digest = self.book().digest_header(now_ms());
        let request = ExchangeRequest {
            peer,
            credentials,
            hold,
            digest: Some(&digest),
            // A held pull may take the hold too.
            timeout: hold.map_or(base, |h| h.wait + base),
        };
        let result = self.transport.exchange(request).await;
        if let Err(ExchangeError::BadSignature) = result {
            self.count_refusal(AuthError::BadSignature);
        }
        result
    }

    /// Pulls peers once and merges what they hold.
    ///
    /// In a small cluster (`FULL_MESH_PEERS` peers at most), every peer, concurrently: one (the
    /// round's relay, see `relay_peer`) for every report newer than this node holds, the others
    /// for their own only (a hold of no time, answered at once and first hand), heartbeats and
    /// drains from all. Every node's report reaches this one first hand anyway (its long-poll,
    /// or this pull); relays are for the nodes it cannot reach, and asking every peer for them
    /// made each of N nodes take in every report N − 1 times whenever its digest lagged.
    ///
    /// In a larger one, `fanout` peers in turn (`round_peers`), each for everything newer than
    /// this node holds (gossip: what one node knows reaches all in a few rounds), spread over
    /// the interval so that each pull's digest already holds what the one before brought.
    pub async fn exchange_round(self: &Arc<Self>) {
        let Some(credentials) = self.credentials.clone() else {
            return;
        };
        let round = self
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // (peer index, url, hold, how long after the round's start)
        let pulls: Vec<(usize, String, Option<Hold>, Duration)> = {
            let peers = lock(&self.peers);
            let url = |i: usize| peers.get(i).map(|p| p.url.clone());
            if self.relays_pushes() {
                let gap = self.settings.exchange_interval / self.fanout.max(1) as u32;
                round_peers(&self.order, self.fanout, round)
                    .into_iter()
                    .enumerate()
                    .filter_map(|(j, i)| Some((i, url(i)?, None, gap * j as u32)))
                    .collect()
            } else {
                let relay = relay_peer(&peers, round);
                (0..peers.len())
                    .filter_map(|i| {
                        let hold = (Some(i) != relay).then_some(FIRST_HAND);
                        Some((i, url(i)?, hold, Duration::ZERO))
                    })
                    .collect()
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (i, url, hold, after) in pulls {
            let me = self.clone();
            let credentials = credentials.clone();
            tasks.spawn(async move {
                tokio::time::sleep(after).await;
                (i, me.pull(&credentials, &url, hold).await)
            });
        }
        let mut changed = false;
        let events = &self.snapshots.events;
        while let Some(joined) = tasks.join_next().await {
            let Ok((i, result)) = joined else { continue };
            let now = now_ms();
            match result {
                Ok(msg) => {
                    let from = msg.from.clone();
                    changed |= self.absorb(msg);
                    self.snapshots.metrics.record_peer_exchange(true);
                    if let Some(p) = lock(&self.peers).get_mut(i)
                        && p.succeeded(&from, now)
                    {
                        news::peer_reachable(events, &p.url, &from);
                    }
                }
                Err(e) => {
                    self.snapshots.metrics.record_peer_exchange(false);
                    if let Some(p) = lock(&self.peers).get_mut(i) {
                        let error = e.to_string();
                        let first = p.failed(error.clone());
                        news::peer_failed(events, &p.url, &error, first);
                    }
                }
            }
        }
        if changed {
            self.absorbed.notify_one();
        }
    }

    /// Runs the exchange until shutdown: pulls peers every interval and follows each (tasks of
    /// their own, so that a peer slow to answer delays nothing else), and republishes the
    /// merged view as soon as the local probers change their view, a peer's answer brought
    /// something newer, or the zones are replaced (woken by their channels, no polling), and
    /// every interval (reports age, drains expire); at most once per `MERGE_GAP`, for all that
    /// woke it meanwhile.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ages = tokio::time::interval(self.settings.exchange_interval);
        ages.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local = self.local.subscribe();
        let mut zones = self.snapshots.changes();
        let mut last_zones = zones.borrow_and_update().zones;
        let mut exchanges = tokio::task::JoinSet::new();
        if let Some(credentials) = &self.credentials {
            exchanges.spawn(self.clone().pull_every_interval(shutdown.clone()));
            let urls: Vec<String> = lock(&self.peers).iter().map(|p| p.url.clone()).collect();
            for lane in follow_lanes(&self.order, self.fanout) {
                let lane: Vec<String> = lane.iter().filter_map(|i| urls.get(*i).cloned()).collect();
                exchanges.spawn(
                    self.clone()
                        .follow(lane, credentials.clone(), shutdown.clone()),
                );
            }
        }
        // `build` merged.
        let mut merged = tokio::time::Instant::now();
        let mut pending = false;
        loop {
            let next = merged + MERGE_GAP;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.stopping.cancel();
                    exchanges.shutdown().await;
                    return;
                }
                // Ages and expiries move even when nothing else does.
                _ = ages.tick() => pending = true,
                // A peer's news: one merge for all that arrived since the last.
                _ = self.absorbed.notified() => pending = true,
                Ok(()) = local.changed() => {
                    local.mark_unchanged();
                    pending = true;
                }
                Ok(()) = zones.changed() => {
                    // Health swaps (our own refreshes among them) wake this too: only a new
                    // zone set needs a new merged view.
                    let now = zones.borrow_and_update().zones;
                    if now != last_zones {
                        last_zones = now;
                        pending = true;
                    }
                }
                _ = tokio::time::sleep_until(next), if pending => {}
            }
            if pending && tokio::time::Instant::now() >= next {
                pending = false;
                self.refresh();
                merged = tokio::time::Instant::now();
            }
        }
    }

    /// Pulls every peer each exchange interval: the anti-entropy under the long-polls, and the
    /// peer bookkeeping. A round lasts as long as its slowest peer (a pull's timeout at most),
    /// which is why it runs apart from the merge loop.
    async fn pull_every_interval(self: Arc<Self>, shutdown: CancellationToken) {
        let mut exchange = tokio::time::interval(self.settings.exchange_interval);
        exchange.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = exchange.tick() => self.exchange_round().await,
            }
        }
    }

    /// Follows one peer with long-polls: each asks the peer to answer once its generation moves
    /// past the one last seen, so a changed verdict or drain arrives within a round trip
    /// instead of at the next pull (which stays, as anti-entropy). A peer that does not hold
    /// (an older version) is asked again after an interval; one that fails, sooner at first
    /// (`retry_after`), so that a peer that starts or comes back is followed at once.
    ///
    /// The peer is the first of `lane` (in a small cluster, the only one); after
    /// `FOLLOW_MOVES_AFTER` failures in a row the follower moves on to the next, so that in a
    /// large cluster, where a node follows `fanout` peers only, a peer that is gone does not
    /// leave the node deaf to pushes.
    ///
    /// A plain pull that works (the first, and the first after a failure) counts in the peer
    /// bookkeeping as the periodic pull's would: the peer is reachable. Failures are the
    /// periodic pull's to count, once an interval.
    async fn follow(
        self: Arc<Self>,
        lane: Vec<String>,
        credentials: Credentials,
        shutdown: CancellationToken,
    ) {
        // The first request (and the first after a failure) asks for the peer's first-hand
        // news at once: relayed reports come with the periodic pull (see `exchange_round`).
        let mut after: Option<u64> = Some(0);
        let mut failures: u32 = 0;
        let mut at = 0;
        loop {
            let Some(url) = lane.get(at % lane.len().max(1)) else {
                return;
            };
            let hold = after.map(|after| match after {
                0 => FIRST_HAND,
                after => Hold {
                    after,
                    wait: MAX_HOLD,
                },
            });
            let started = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.pull(&credentials, url, hold) => r,
            };
            let pause = match result {
                Ok(msg) => {
                    failures = 0;
                    if hold.is_none_or(|h| h.after == 0) {
                        self.reached(url, &msg.from);
                    }
                    after = (msg.generation > 0).then_some(msg.generation);
                    if self.absorb(msg) {
                        self.absorbed.notify_one();
                    }
                    match after {
                        Some(_) => MIN_FOLLOW_GAP.saturating_sub(started.elapsed()),
                        None => self.settings.exchange_interval,
                    }
                }
                Err(error) => {
                    debug!(peer = %url, %error, "long-poll failed; the periodic exchange goes on");
                    after = Some(0);
                    failures = failures.saturating_add(1);
                    if lane.len() > 1 && failures.is_multiple_of(FOLLOW_MOVES_AFTER) {
                        at += 1;
                    }
                    retry_after(failures, self.settings.exchange_interval)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Records that `url` answered as node `from`.
    fn reached(&self, url: &str, from: &str) {
        let mut peers = lock(&self.peers);
        if let Some(p) = peers.iter_mut().find(|p| p.url == url)
            && p.succeeded(from, now_ms())
        {
            news::peer_reachable(&self.snapshots.events, &p.url, from);
        }
    }

    /// Issues a drain on this node; it reaches the peers at once (they follow this node) and
    /// with the next exchange.
    pub fn drain(&self, req: DrainRequest) -> Result<Drain, DrainRefused> {
        let forced = req.force;
        let drain = policy::plan_drain(
            req,
            &self.snapshots.zones.load(),
            &self.snapshots.health.load(),
            &self.settings.node,
            now_ms(),
        )?;
        self.decide(drain.clone())?;
        news::drained(&self.snapshots.events, &drain, forced);
        Ok(drain)
    }

    /// Lifts a drain (by recording a newer undrain).
    pub fn undrain(&self, dc: &str, service: Option<&str>) -> Result<Drain, DrainRefused> {
        let undrain = policy::plan_undrain(dc, service, &self.settings.node, now_ms());
        self.decide(undrain.clone())?;
        news::undrained(&self.snapshots.events, &undrain);
        Ok(undrain)
    }

    /// Persists, then applies a decision: a drain the node cannot keep across a restart is
    /// refused rather than half-applied.
    fn decide(&self, d: Drain) -> Result<(), DrainRefused> {
        let Some(file) = self.drains_file() else {
            return Err(DrainRefused::NoStateDir);
        };
        let mut book = self.book();
        let next = book.with_decision(d);
        next.save(&file)
            .map_err(|e| DrainRefused::NotPersisted(e.to_string()))?;
        book.set_drains(next);
        drop(book);
        self.bump();
        self.refresh();
        Ok(())
    }

    /// Where this node keeps its drains; `None` without a state directory, when drains issued
    /// here are refused (drains learnt from peers are held in memory, and peers hand them back
    /// after a restart).
    pub fn drains_file(&self) -> Option<std::path::PathBuf> {
        self.settings
            .state_dir
            .as_ref()
            .map(|dir| dir.join("drains.json"))
    }

    /// Peers as last seen.
    pub fn peers(&self) -> Vec<PeerStatus> {
        lock(&self.peers).clone()
    }

    /// Every node's report as held here, for the state API.
    pub fn reports(&self) -> Vec<Report> {
        self.book().reports()
    }
}

/// Stamps this node's heartbeat in what it sends with the time it sends it: its own report is
/// current as of now (its probers' changes are merged within `MERGE_GAP`), and a heartbeat only
/// as old as the last refresh would leave it an exchange interval older wherever it goes.
fn alive_now(beats: &mut std::collections::BTreeMap<String, u64>, node: &str) {
    let beat = beats.entry(node.to_string()).or_default();
    *beat = (*beat).max(now_ms());
}

/// A request for the peer's first-hand news now: a long-poll that holds for no time.
const FIRST_HAND: Hold = Hold {
    after: 0,
    wait: Duration::ZERO,
};

/// The peer a periodic round asks for relayed reports: the peers that answered their last
/// pull, in turn (all in turn when none did).
fn relay_peer(peers: &[PeerStatus], round: usize) -> Option<usize> {
    let answering: Vec<usize> = (0..peers.len())
        .filter(|i| peers[*i].consecutive_failures == 0)
        .collect();
    if answering.is_empty() {
        return (!peers.is_empty()).then(|| round % peers.len());
    }
    Some(answering[round % answering.len()])
}

/// How many peers a node with `peers` peers pulls each round and follows: all of them up to
/// `FULL_MESH_PEERS`; beyond, about log2 of them (`MIN_FANOUT` at least): 5 of 29, 7 of 99.
/// Gossip with that fanout reaches every node in a few rounds, and a node's cost per round
/// stays near constant instead of growing with the cluster (every node pulling every other
/// made 9,900 pulls a second in a cluster of 100, and as many long-polls held).
pub fn fanout(peers: usize) -> usize {
    if peers <= FULL_MESH_PEERS {
        return peers;
    }
    let log2 = (usize::BITS - peers.leading_zeros()) as usize;
    log2.max(MIN_FANOUT).min(peers)
}

/// The peers a round pulls in a large cluster: the next `fanout` of `order`, in turn, so that
/// every peer is pulled once every `order.len() / fanout` rounds (rounded up).
fn round_peers(order: &[usize], fanout: usize, round: usize) -> Vec<usize> {
    if order.is_empty() {
        return Vec::new();
    }
    let n = order.len();
    let k = fanout.min(n);
    (0..k).map(|j| order[((round % n) * k + j) % n]).collect()
}

/// The peers each follower follows, by lane: with a fanout of every peer, one lane per peer;
/// with less, `fanout` lanes that share the peers out in `order` (lane j holds the j-th, the
/// (j + fanout)-th, ...), the first of each followed and the others its stand-ins.
fn follow_lanes(order: &[usize], fanout: usize) -> Vec<Vec<usize>> {
    let lanes = fanout.min(order.len());
    (0..lanes)
        .map(|j| order.iter().skip(j).step_by(lanes).copied().collect())
        .collect()
}

/// How long a follower waits before asking a peer again after `failures` failures in a row:
/// an eighth of the exchange interval, doubling up to the interval.
fn retry_after(failures: u32, interval: Duration) -> Duration {
    let shift = failures.saturating_sub(1).min(3);
    (interval / 8).saturating_mul(1 << shift).min(interval)
}

/// How long a plain pull may take: an exchange interval, two seconds at most.
fn pull_timeout(settings: &ClusterSettings) -> Duration {
    settings.exchange_interval.min(MAX_PULL)
}

/// The drains persisted in the state directory, if there is one.
fn load_drains(settings: &ClusterSettings) -> anyhow::Result<DrainSet> {
    let Some(dir) = settings.state_dir.as_ref() else {
        return Ok(DrainSet::default());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("creating state directory {}: {e}", dir.display()))?;
    let path = dir.join("drains.json");
    Ok(match DrainSet::load(&path) {
        Ok(d) => d,
        Err(e) => {
            let aside = path.with_extension(format!("corrupt-{}", now_ms()));
            let _ = std::fs::rename(&path, &aside);
            error!(error = %e, moved_to = %aside.display(), "drain file unreadable; starting without it");
            DrainSet::default()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_asks_the_next_answering_peer_for_relays() {
        let peer = |failures| PeerStatus {
            consecutive_failures: failures,
            ..PeerStatus::new("http://p")
        };
        let peers = [peer(0), peer(3), peer(0)];
        let relays: Vec<_> = (0..4).map(|r| relay_peer(&peers, r)).collect();
        assert_eq!(relays, [Some(0), Some(2), Some(0), Some(2)]);
        let failing = [peer(1), peer(1)];
        assert_eq!(relay_peer(&failing, 3), Some(1));
        assert_eq!(relay_peer(&[], 3), None);
    }

    #[test]
    fn a_large_cluster_pulls_and_follows_about_log2_of_its_peers() {
        // (peers, fanout)
        let cases = [
            (0, 0),
            (2, 2),
            (FULL_MESH_PEERS, FULL_MESH_PEERS),
            (FULL_MESH_PEERS + 1, 4),
            (29, 5),
            (99, 7),
            (999, 10),
        ];
        for (peers, want) in cases {
            assert_eq!(fanout(peers), want, "{peers} peers");
        }
    }

    #[test]
    fn every_peer_is_pulled_in_turn_and_followed_in_one_lane() {
        let order: Vec<usize> = vec![4, 0, 6, 2, 1, 5, 3];
        let k = 3;
        // Each round pulls k different peers, and every peer is pulled within 7/3 rounds,
        // rounded up.
        for start in 0..10 {
            let mut seen = std::collections::HashSet::new();
            for round in start..start + 3 {
                let peers = round_peers(&order, k, round);
                let distinct: std::collections::HashSet<_> = peers.iter().collect();
                assert_eq!(distinct.len(), k, "round {round}: {peers:?}");
                seen.extend(peers);
            }
            assert_eq!(seen.len(), order.len(), "from round {start}");
        }
        assert_eq!(round_peers(&[], 3, 5), Vec::<usize>::new());
        assert_eq!(round_peers(&[2, 0], 3, 5), [2, 0]);

        let lanes = follow_lanes(&order, k);
        assert_eq!(lanes, [vec![4, 2, 3], vec![0, 1], vec![6, 5]]);
        let small = follow_lanes(&[1, 0, 2], 3);
        assert_eq!(small, [vec![1], vec![0], vec![2]], "a lane per peer");
        assert!(follow_lanes(&[], 0).is_empty());
    }

    #[test]
    fn a_failed_peer_is_asked_again_sooner_at_first() {
        let ms = Duration::from_millis;
        // (failures, interval, pause)
        let cases = [
            (1, ms(1000), ms(125)),
            (2, ms(1000), ms(250)),
            (3, ms(1000), ms(500)),
            (4, ms(1000), ms(1000)),
            (40, ms(1000), ms(1000)),
            (u32::MAX, ms(250), ms(250)),
            (1, ms(8), ms(1)),
        ];
        for (failures, interval, pause) in cases {
            assert_eq!(
                retry_after(failures, interval),
                pause,
                "{failures} {interval:?}"
            );
        }
    }
}
