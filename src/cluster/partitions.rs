//! Partition scenarios on a `MemoryTransport`: three real `Cluster`s, each with its own
//! snapshots, fed health views the way their probers would publish them, exchanging through
//! the same authentication, long-poll holds and signatures as over HTTP, in one process. The
//! real-process tests (`tests/integration/regions.rs`) stay for the HTTP path and the binary.
//!
//! The zone has one service over dc1, dc2 and dc3, one endpoint each; quorum is majority.
//! Each step asserts every node's effective view (`EffectiveHealth` in its `Snapshots`, what the
//! DNS answers read) of every DC, and where it matters, the votes behind it.
//!
//! | scenario | test |
//! |---|---|
//! | a–b cut: a DC all see down is withdrawn everywhere (c relays), one a alone sees is not | `a_cut_link_is_bridged_by_the_third_node_and_one_vote_withdraws_nothing` |
//! | a's requests to b lost, b's to a fine | `with_one_way_loss_the_views_still_converge` |
//! | c answers only after 10 s | `a_slow_peer_holds_up_neither_the_others_nor_the_answers` |
//! | a drain, pushed; and relayed by c around a cut a–b | `a_drain_is_pushed_to_every_node_and_relayed_around_a_cut_link` |
//! | c signs with another secret | `a_node_with_another_secret_is_refused_both_ways_and_changes_nothing` |
//!
//! Real time, short settings (the wall clock decides staleness, so a paused tokio clock would
//! not age reports): a few seconds per test.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::memory::MemoryTransport;
use super::{Cluster, ClusterSettings, DrainRequest};
use crate::health::merge::{EndpointKey, MergeSettings, Quorum};
use crate::health::probe::SharedHealthView;
use crate::health::{HealthView, Observation, ProbeTarget, Status};
use crate::state::Snapshots;
use crate::zone::ZoneSet;
use crate::zone::check::Check;

const DCS: [&str; 3] = ["dc1", "dc2", "dc3"];
const SERVICE: &str = "www.gslb.test";

const ZONE: &str = r#"
zone: gslb.test
soa: { primary: ns1, contact: hostmaster@gslb.test }
nameservers: { ns1: [192.0.2.53] }
datacenters:
  dc1: { location: [50.11, 8.68] }
  dc2: { location: [38.95, -77.45] }
  dc3: { location: [1.35, 103.82] }
checks:
  web:
    http: { port: 80, path: /health }
    interval: 100ms
    timeout: 50ms
records:
  www:
    service:
      policy: failover
      check: web
      endpoints:
        dc1: [192.0.2.1]
        dc2: [192.0.2.2]
        dc3: [192.0.2.3]
"#;

/// A DC as one node's answers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Up,
    Down,
    Drained,
}
use Seen::{Down, Drained, Up};

const CLUSTER_SECRET: &[u8] = b"partition-test-secret";

/// How fast the nodes exchange.
#[derive(Debug, Clone, Copy)]
struct Timing {
    exchange: Duration,
    stale: Duration,
}

/// Pulls every 150 ms, reports stale after 800 ms.
const FAST: Timing = Timing {
    exchange: Duration::from_millis(150),
    stale: Duration::from_millis(800),
};

struct Node {
    id: &'static str,
    cluster: Arc<Cluster>,
    snapshots: Arc<Snapshots>,
    local: SharedHealthView,
    /// What this node's probers say per DC, and since when.
    probes: Mutex<[(Status, Instant); 3]>,
    /// Where its drains are kept: a node without one refuses drains issued on it.
    _state: tempfile::TempDir,
}

struct Net {
    transport: Arc<MemoryTransport>,
    nodes: Vec<Node>,
    zones: ZoneSet,
    /// The endpoint and check of each DC.
    endpoints: Vec<(IpAddr, Arc<Check>)>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Net {
    /// Nodes `ids`, each a peer of every other, seeing every DC up; running.
    fn start(ids: &[&'static str], timing: Timing) -> Net {
        Net::start_with_secrets(ids, timing, |_| CLUSTER_SECRET)
    }

    /// The same, each node signing with `secret(id)`.
    fn start_with_secrets(
        ids: &[&'static str],
        timing: Timing,
        secret: impl Fn(&str) -> &'static [u8],
    ) -> Net {
        let zone = crate::zone::file::parse_zone(ZONE, "partitions").expect("the test zone");
        let zones = ZoneSet {
            zones: vec![Arc::new(zone)],
        };
        let by_addr: HashMap<IpAddr, Arc<Check>> = zones.probe_targets().into_iter().collect();
        let endpoints = (1..=3)
            .map(|i| {
                let addr: IpAddr = format!("192.0.2.{i}").parse().expect("an address");
                (addr, by_addr[&addr].clone())
            })
            .collect();
        let transport = MemoryTransport::new();
        let shutdown = CancellationToken::new();
        let mut net = Net {
            transport,
            nodes: Vec::new(),
            zones,
            endpoints,
            shutdown,
            tasks: Vec::new(),
        };
        let now = Instant::now();
        for id in ids {
            let state = tempfile::tempdir().expect("a state directory");
            let settings = ClusterSettings {
                node: id.to_string(),
                region: format!("region-{id}"),
                peers: ids
                    .iter()
                    .filter(|p| *p != id)
                    .map(|p| p.to_string())
                    .collect(),
                peer_ca: None,
                secret: Some(secret(id).to_vec()),
                exchange_interval: timing.exchange,
                merge: MergeSettings {
                    stale_after_ms: timing.stale.as_millis() as u64,
                    quorum: Quorum::Majority,
                    settle_ms: 0,
                },
                state_dir: Some(state.path().to_path_buf()),
            };
            let (cluster, snapshots, local) = net
                .transport
                .add_node(settings, net.zones.clone())
                .expect("a cluster with an empty state directory");
            let node = Node {
                id,
                cluster,
                snapshots,
                local,
                probes: Mutex::new([(Status::Up, now); 3]),
                _state: state,
            };
            net.publish(&node);
            net.nodes.push(node);
        }
        for node in &net.nodes {
            let run = node.cluster.clone().run(net.shutdown.clone());
            net.tasks.push(tokio::spawn(run));
        }
        net
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.expect("the cluster task ends cleanly");
        }
    }

    fn node(&self, id: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Publishes what `node`'s probers say, as the monitor would.
    fn publish(&self, node: &Node) {
        let probes = *node.probes.lock().unwrap();
        let observations =
            self.endpoints
                .iter()
                .zip(probes)
                .map(|((addr, check), (status, since))| Observation {
                    target: ProbeTarget::new(*addr, check.clone()),
                    status,
                    confirmed: true,
                    since,
                    last_rtt: None,
                    smoothed_rtt: None,
                    recovered: false,
                    last_error: None,
                });
        node.local.publish(HealthView::new(true, observations));
    }

    /// `id`'s probers find `dc` up or down from now on.
    fn probe(&self, id: &str, dc: &str, status: Status) {
        let node = self.node(id);
        let i = dc_index(dc);
        {
            let mut probes = node.probes.lock().unwrap();
            if probes[i].0 != status {
                probes[i] = (status, Instant::now());
            }
        }
        self.publish(node);
    }

    /// How `id`'s answers see each DC: its `EffectiveHealth`.
    fn seen(&self, id: &str) -> [Seen; 3] {
        let health = self.node(id).snapshots.health.load();
        std::array::from_fn(|i| {
            let (addr, check) = &self.endpoints[i];
            if health.is_drained(DCS[i], SERVICE) {
                Drained
            } else if health.is_up(*addr, Some(check)) {
                Up
            } else {
                Down
            }
        })
    }

    /// (down votes, counted votes) behind `id`'s verdict on `dc`.
    fn votes(&self, id: &str, dc: &str) -> (usize, usize) {
        let (addr, check) = &self.endpoints[dc_index(dc)];
        let health = self.node(id).snapshots.health.load();
        health
            .merged
            .endpoints
            .get(&EndpointKey::new(*addr, check))
            .map_or((0, 0), |v| (v.down_votes, v.counted_votes))
    }

    /// Ok when every node listed sees the DCs as given, else every difference.
    fn expect(&self, want: &[(&str, [Seen; 3])]) -> Result<(), String> {
        let wrong: Vec<String> = want
            .iter()
            .filter_map(|(id, w)| {
                let got = self.seen(id);
                (got != *w).then(|| format!("{id} sees {got:?}, not {w:?}"))
            })
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("; "))
        }
    }

    /// Every node of the net sees `want`.
    fn everywhere(&self, want: [Seen; 3]) -> Result<(), String> {
        let all: Vec<(&str, [Seen; 3])> = self.nodes.iter().map(|n| (n.id, want)).collect();
        self.expect(&all)
    }

    /// Every node holds every node's fresh vote on every DC, each as up as the DCs in `want`.
    fn converged(&self, down: &[&str]) -> Result<(), String> {
        let n = self.nodes.len();
        for node in &self.nodes {
            for dc in DCS {
                let want = if down.contains(&dc) { (n, n) } else { (0, n) };
                let got = self.votes(node.id, dc);
                if got != want {
                    return Err(format!(
                        "{} counts {got:?} (down, counted) votes on {dc}, not {want:?}",
                        node.id
                    ));
                }
            }
        }
        Ok(())
    }
}

fn dc_index(dc: &str) -> usize {
    DCS.iter()
        .position(|d| *d == dc)
        .unwrap_or_else(|| panic!("no DC {dc}"))
}

/// Waits until `check` passes, at most `within`; returns how long it took.
async fn until(within: Duration, what: &str, check: impl Fn() -> Result<(), String>) -> Duration {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return start.elapsed(),
            Err(e) if start.elapsed() >= within => {
                panic!("{what}: not within {within:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Checks that `check` passes all along `period`.
async fn holds(period: Duration, what: &str, check: impl Fn() -> Result<(), String>) {
    let start = Instant::now();
    while start.elapsed() < period {
        if let Err(e) = check() {
            panic!("{what}: broke after {:?}: {e}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const ALL_UP: [Seen; 3] = [Up, Up, Up];
/// Long enough for a report nobody relays to go stale, and a lone vote to settle.
const BEYOND_STALE: Duration = Duration::from_millis(1_200);

#[tokio::test]
async fn a_cut_link_is_bridged_by_the_third_node_and_one_vote_withdraws_nothing() {
    let net = Net::start(&["a", "b", "c"], FAST);
    until(Duration::from_secs(2), "start", || net.converged(&[])).await;

    net.transport.cut("a", "b");
    // Every node sees dc1 down: withdrawn everywhere.
    for id in ["a", "b", "c"] {
        net.probe(id, "dc1", Status::Down);
    }
    let took = until(Duration::from_secs(1), "dc1 withdrawn everywhere", || {
        net.everywhere([Down, Up, Up])
    })
    .await;
    eprintln!("dc1 withdrawn on every node {took:?} after all saw it down");
    // Past the staleness of anything a and b said to each other before the cut, each still
    // counts the other's fresh vote: c relays them.
    tokio::time::sleep(BEYOND_STALE).await;
    net.converged(&["dc1"]).unwrap();
    for (me, other) in [("a", "b"), ("b", "a")] {
        let peer = net
            .node(me)
            .cluster
            .peers()
            .into_iter()
            .find(|p| p.url == other)
            .expect("a peer");
        assert!(
            peer.consecutive_failures > 0 && peer.last_error.is_some(),
            "{me} cannot reach {other}: {peer:?}"
        );
    }

    // Only a sees dc2 down: one vote of three withdraws nothing, anywhere, for as long as it
    // lasts (past settling and staleness).
    net.probe("a", "dc2", Status::Down);
    until(
        Duration::from_secs(1),
        "a's dc2 vote reaches b through c",
        || match net.votes("b", "dc2") {
            (1, 3) => Ok(()),
            v => Err(format!("b counts {v:?} on dc2")),
        },
    )
    .await;
    holds(BEYOND_STALE, "only dc1 is withdrawn", || {
        net.everywhere([Down, Up, Up])
    })
    .await;
    for id in ["a", "b", "c"] {
        assert_eq!(net.votes(id, "dc2"), (1, 3), "{id}");
    }
    net.stop().await;
}

#[tokio::test]
async fn with_one_way_loss_the_views_still_converge() {
    let net = Net::start(&["a", "b", "c"], FAST);
    until(Duration::from_secs(2), "start", || net.converged(&[])).await;

    // a's requests to b are lost; b's to a work.
    net.transport.lose("a", "b");
    net.probe("b", "dc1", Status::Down);
    net.probe("c", "dc1", Status::Down);
    let took = until(Duration::from_secs(1), "dc1 withdrawn everywhere", || {
        net.everywhere([Down, Up, Up])
    })
    .await;
    eprintln!("dc1 withdrawn on every node {took:?} after b and c saw it down");
    // a counts b's vote though it cannot ask b: c relays it, and it stays fresh.
    tokio::time::sleep(BEYOND_STALE).await;
    net.everywhere([Down, Up, Up]).unwrap();
    assert_eq!(net.votes("a", "dc1"), (2, 3));
    let peers = net.node("a").cluster.peers();
    let to_b = peers.iter().find(|p| p.url == "b").expect("a peer");
    assert!(to_b.consecutive_failures > 0, "{to_b:?}");
    let peers = net.node("b").cluster.peers();
    let to_a = peers.iter().find(|p| p.url == "a").expect("a peer");
    assert_eq!(to_a.consecutive_failures, 0, "{to_a:?}");

    // Back up on b only: one vote of three is no majority.
    net.probe("b", "dc1", Status::Up);
    until(Duration::from_secs(1), "dc1 back everywhere", || {
        net.everywhere(ALL_UP)
    })
    .await;
    until(
        Duration::from_secs(1),
        "b's up vote reaches a",
        || match net.votes("a", "dc1") {
            (1, 3) => Ok(()),
            v => Err(format!("a counts {v:?} on dc1")),
        },
    )
    .await;
    net.stop().await;
}

#[tokio::test]
async fn a_slow_peer_holds_up_neither_the_others_nor_the_answers() {
    // Pulls every second: a round that waits for a peer that does not answer takes that long,
    // so an answer path that waited for the round would show it.
    let timing = Timing {
        exchange: Duration::from_secs(1),
        stale: Duration::from_millis(1_500),
    };
    let net = Net::start(&["a", "b", "c"], timing);
    until(Duration::from_secs(2), "start", || net.converged(&[])).await;

    net.transport.slow("c", Duration::from_secs(10));
    // Only a sees dc2 down: withdrawn nowhere. c never gets an answer out, but its requests
    // reach a and b, and their digests say c is alive and holds the report a and b hold of
    // it: c's vote still counts.
    net.probe("a", "dc2", Status::Down);
    holds(Duration::from_millis(1_800), "nothing is withdrawn", || {
        net.everywhere(ALL_UP)
    })
    .await;
    for id in ["a", "b", "c"] {
        assert_eq!(net.votes(id, "dc2"), (1, 3), "{id}");
    }
    // c's own verdict changes (dc3 down, c alone): its new report cannot get out, so its
    // heartbeat no longer vouches for the one a and b hold, which goes stale (as of their
    // next merge after `stale`); c hears them both.
    net.probe("c", "dc3", Status::Down);
    until(
        timing.stale + 2 * timing.exchange,
        "c's report is stale at a and b",
        || match (net.votes("a", "dc2"), net.votes("b", "dc2")) {
            ((1, 2), (1, 2)) => Ok(()),
            v => Err(format!("a and b count {v:?} on dc2")),
        },
    )
    .await;
    assert_eq!(net.votes("c", "dc2"), (1, 3));
    net.everywhere(ALL_UP).unwrap();
    net.probe("a", "dc2", Status::Up);
    net.probe("c", "dc3", Status::Up);

    // a and b see dc1 go down and come back, three times: every node's answers follow
    // within a fraction of the exchange interval each time, c's included.
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        for (status, want) in [(Status::Down, [Down, Up, Up]), (Status::Up, ALL_UP)] {
            net.probe("a", "dc1", status);
            net.probe("b", "dc1", status);
            let took = until(
                Duration::from_millis(300),
                "every node follows a and b",
                || net.everywhere(want),
            )
            .await;
            slowest = slowest.max(took);
        }
    }
    eprintln!("with a peer that answers after 10 s, the answers followed within {slowest:?}");
    net.stop().await;
}

#[tokio::test]
async fn a_drain_is_pushed_to_every_node_and_relayed_around_a_cut_link() {
    // Pulls every 2 s: a drain that arrives within 300 ms was pushed.
    let timing = Timing {
        exchange: Duration::from_secs(2),
        stale: Duration::from_secs(5),
    };
    let net = Net::start(&["a", "b", "c"], timing);
    until(Duration::from_secs(2), "start", || net.converged(&[])).await;
    // The followers' first plain pulls are answered; give their long-polls a moment to be held.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drain = |dc: &str| DrainRequest {
        dc: dc.to_string(),
        service: None,
        reason: Some("maintenance".into()),
        for_seconds: None,
        force: false,
    };
    let a = &net.node("a").cluster;

    a.drain(drain("dc1")).expect("dc2 and dc3 are up");
    assert_eq!(net.seen("a"), [Drained, Up, Up], "a drains at once");
    let took = until(
        Duration::from_millis(300),
        "the drain reaches b and c",
        || net.everywhere([Drained, Up, Up]),
    )
    .await;
    eprintln!("the drain reached b and c in {took:?}");
    a.undrain("dc1", None).expect("an undrain");
    until(
        Duration::from_millis(300),
        "the undrain reaches b and c",
        || net.everywhere(ALL_UP),
    )
    .await;

    // a and b cannot talk: c relays, still at once.
    net.transport.cut("a", "b");
    a.drain(drain("dc2")).expect("dc1 and dc3 are up");
    let took = until(
        Duration::from_millis(300),
        "the drain reaches b through c",
        || net.everywhere([Up, Drained, Up]),
    )
    .await;
    eprintln!("the drain reached b through c in {took:?}");
    let events = net.node("b").snapshots.events.recent();
    assert!(
        events
            .iter()
            .any(|e| e.message == "drain of dc2 (all services) by a, learnt from c"),
        "b learnt it from c: {events:?}"
    );
    net.stop().await;
}

#[tokio::test]
async fn a_node_with_another_secret_is_refused_both_ways_and_changes_nothing() {
    // The in-memory exchange goes through the same authentication as HTTP.
    let net = Net::start_with_secrets(&["a", "b", "c"], FAST, |id| match id {
        "c" => b"not-the-cluster-secret",
        _ => CLUSTER_SECRET,
    });
    until(
        Duration::from_secs(2),
        "a and b hear each other",
        || match (net.votes("a", "dc1"), net.votes("b", "dc1")) {
            ((0, 2), (0, 2)) => Ok(()),
            v => Err(format!("a and b count {v:?} on dc1")),
        },
    )
    .await;
    net.probe("c", "dc1", Status::Down);
    net.node("c")
        .cluster
        .drain(DrainRequest {
            dc: "dc2".into(),
            service: None,
            reason: None,
            for_seconds: None,
            force: false,
        })
        .expect("c drains on its own view");
    assert_eq!(
        net.seen("c"),
        [Down, Drained, Up],
        "c acts on its own view alone"
    );
    holds(BEYOND_STALE, "a and b are untouched by c", || {
        net.expect(&[("a", ALL_UP), ("b", ALL_UP)])?;
        match (net.votes("a", "dc1"), net.votes("b", "dc1")) {
            ((0, 2), (0, 2)) => Ok(()),
            v => Err(format!("a and b count {v:?} on dc1")),
        }
    })
    .await;
    for (me, other) in [("a", "c"), ("c", "a")] {
        let peers = net.node(me).cluster.peers();
        let p = peers.iter().find(|p| p.url == other).expect("a peer");
        assert_eq!(
            (p.node.as_deref(), p.last_error.as_deref()),
            (None, Some("refused by the peer: bad signature")),
            "{me} asking {other}"
        );
    }
    assert!(
        net.node("a")
            .cluster
            .reports()
            .iter()
            .all(|r| r.node != "c"),
        "a holds no report of c's"
    );
    net.stop().await;
}
