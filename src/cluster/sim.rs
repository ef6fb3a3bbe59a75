//! A simulated cluster for the exchange's traffic test and scale benchmark (hidden from the
//! docs): `nodes` real `Cluster`s on a `MemoryTransport`, every node a peer of every other, one
//! zone of `endpoints` endpoints spread over `dcs` DCs (one service per address row, one
//! endpoint per DC), each node's probers replaced by a view the simulation publishes. Only the
//! probing is simulated: reports, digests, heartbeats, long-polls, signatures and merges are
//! the real code.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::memory::MemoryTransport;
use super::{Cluster, ClusterSettings};
use crate::health::merge::{MergeSettings, Quorum};
use crate::health::probe::SharedHealthView;
use crate::health::{HealthView, Observation, ProbeTarget, Status};
use crate::state::Snapshots;
use crate::zone::ZoneSet;
use crate::zone::check::Check;

/// The shape of a simulated cluster.
#[derive(Debug, Clone, Copy)]
pub struct SimSettings {
    pub nodes: usize,
    pub endpoints: usize,
    pub dcs: usize,
    pub exchange_interval: Duration,
    pub stale_after: Duration,
}

struct SimNode {
    cluster: Arc<Cluster>,
    snapshots: Arc<Snapshots>,
    local: SharedHealthView,
}

/// A running simulated cluster.
pub struct Sim {
    pub transport: Arc<MemoryTransport>,
    settings: SimSettings,
    nodes: Vec<SimNode>,
    /// Every endpoint, with its DC's index.
    endpoints: Vec<(IpAddr, Arc<Check>, usize)>,
    /// What every node's probers say of each DC, and since when.
    dcs: std::sync::Mutex<Vec<(Status, Instant)>>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

const SECRET: &[u8] = b"simulated-cluster-secret";

/// The endpoint of service `s` in DC `d`: 10.D.S/256.S%256.
fn address(d: usize, s: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, d as u8, (s / 256) as u8, (s % 256) as u8))
}

fn zone(dcs: usize, services: usize) -> String {
    let mut z = String::from(
        "zone: sim.test\nsoa: { primary: ns1, contact: hostmaster@sim.test }\n\
         nameservers: { ns1: [192.0.2.53] }\ndatacenters:\n",
    );
    for d in 0..dcs {
        let _ = writeln!(z, "  dc{d}: {{ location: [{}, {}] }}", d % 80, d % 170);
    }
    z.push_str("checks:\n  web:\n    http: { port: 80, path: /health }\nrecords:\n");
    for s in 0..services {
        let _ = writeln!(
            z,
            "  svc{s}:\n    service:\n      check: web\n      endpoints:"
        );
        for d in 0..dcs {
            let _ = writeln!(z, "        dc{d}: [{}]", address(d, s));
        }
    }
    z
}

impl Sim {
    /// Starts the nodes, every endpoint up; call within a Tokio runtime.
    pub fn start(settings: SimSettings) -> Sim {
        let services = settings.endpoints.div_ceil(settings.dcs.max(1));
        let zone = crate::zone::file::parse_zone(&zone(settings.dcs, services), "sim")
            .unwrap_or_else(|e| panic!("the simulated zone: {e:?}"));
        let zones = ZoneSet {
            zones: vec![Arc::new(zone)],
        };
        let check = zones
            .probe_targets()
            .into_iter()
            .next()
            .map(|(_, c)| c)
            .expect("the zone has endpoints");
        let endpoints = (0..services)
            .flat_map(|s| (0..settings.dcs).map(move |d| (d, s)))
            .map(|(d, s)| (address(d, s), check.clone(), d))
            .collect();
        let ids: Vec<String> = (0..settings.nodes).map(|i| format!("node-{i}")).collect();
        let mut sim = Sim {
            transport: MemoryTransport::new(),
            settings,
            nodes: Vec::new(),
            endpoints,
            dcs: std::sync::Mutex::new(vec![(Status::Up, Instant::now()); settings.dcs]),
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        };
        for (i, id) in ids.iter().enumerate() {
            let cluster_settings = ClusterSettings {
                node: id.clone(),
                region: format!("region-{}", i % settings.dcs.max(1)),
                peers: ids.iter().filter(|p| *p != id).cloned().collect(),
                peer_ca: None,
                secret: Some(SECRET.to_vec()),
                exchange_interval: settings.exchange_interval,
                merge: MergeSettings {
                    stale_after_ms: settings.stale_after.as_millis() as u64,
                    quorum: Quorum::Majority,
                    settle_ms: 0,
                },
                state_dir: None,
            };
            let (cluster, snapshots, local) = sim
                .transport
                .add_node(cluster_settings, zones.clone())
                .expect("a cluster without a state directory");
            let node = SimNode {
                cluster,
                snapshots,
                local,
            };
            sim.publish(&node);
            sim.nodes.push(node);
        }
        for node in &sim.nodes {
            let run = node.cluster.clone().run(sim.shutdown.clone());
            sim.tasks.push(tokio::spawn(run));
        }
        sim
    }

    fn view(&self) -> HealthView {
        let dcs = self.dcs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        HealthView::new(
            true,
            self.endpoints.iter().map(|(addr, check, d)| Observation {
                target: ProbeTarget::new(*addr, check.clone()),
                status: dcs[*d].0,
                confirmed: true,
                since: dcs[*d].1,
                last_rtt: Some(Duration::from_millis(12)),
                smoothed_rtt: Some(Duration::from_millis(12)),
                recovered: false,
                last_error: None,
            }),
        )
    }

    fn publish(&self, node: &SimNode) {
        node.local.publish(self.view());
    }

    /// Every node's probers find `dc` up or down from now on (a DC failure, or its repair).
    pub fn set_dc(&self, dc: usize, status: Status) {
        {
            let mut dcs = self.dcs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(d) = dcs.get_mut(dc) {
                *d = (status, Instant::now());
            }
        }
        for node in &self.nodes {
            self.publish(node);
        }
    }

    /// Whether every node counts every node's fresh vote on every endpoint, and sees the
    /// endpoints of the DCs in `down` down and the others up.
    pub fn agreed(&self, down: &[usize]) -> bool {
        self.disagreement(down).is_none()
    }

    /// The first node that does not see what `agreed` asks, and what it sees.
    pub fn disagreement(&self, down: &[usize]) -> Option<String> {
        let n = self.nodes.len();
        let down: HashSet<IpAddr> = self
            .endpoints
            .iter()
            .filter(|(_, _, d)| down.contains(d))
            .map(|(a, _, _)| *a)
            .collect();
        self.nodes.iter().find_map(|node| {
            let health = node.snapshots.health.load();
            let endpoints = &health.merged.endpoints;
            if endpoints.len() != self.endpoints.len() {
                return Some(format!(
                    "{} has verdicts on {} endpoints",
                    node.cluster.settings.node,
                    endpoints.len()
                ));
            }
            endpoints.iter().find_map(|(key, v)| {
                let want_down = down.contains(&key.addr);
                let ok = v.counted_votes == n
                    && v.down_votes == if want_down { n } else { 0 }
                    && v.up != want_down;
                (!ok).then(|| {
                    let votes: Vec<_> = health.merged.votes(v).collect();
                    let stale = votes.iter().filter(|v| !v.fresh).count();
                    let settling = votes.iter().filter(|v| v.settling).count();
                    let ignored = votes.iter().filter(|v| v.ignored).count();
                    format!(
                        "{} counts {}/{} down on {} (up: {}; of {} votes {stale} stale, \
                         {settling} settling, {ignored} ignored)",
                        node.cluster.settings.node,
                        v.down_votes,
                        v.counted_votes,
                        key.addr,
                        v.up,
                        votes.len()
                    )
                })
            })
        })
    }

    /// Waits until `agreed(down)`, `within` at most; how long it took, or none.
    pub async fn until_agreed(&self, down: &[usize], within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.agreed(down) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// What one full-state pull from a node brings (its answer without a digest's help, and the
    /// request's headers aside): what every pull would carry without deltas.
    pub fn full_state_bytes(&self) -> usize {
        self.nodes
            .first()
            .map_or(0, |n| n.cluster.full_state_bytes())
    }

    /// Pulls that failed in a row, summed over every node's peers: what a cluster too busy to
    /// answer within a pull's timeout shows.
    pub fn failing_pulls(&self) -> u64 {
        self.nodes
            .iter()
            .flat_map(|n| n.cluster.peers())
            .map(|p| p.consecutive_failures)
            .sum()
    }

    /// How long ago each node's latest successful pull was, the longest of them (ms), and
    /// which node that is: a node whose pulls stall shows here.
    pub fn longest_since_pull(&self) -> (u64, String) {
        let now = crate::clock::now_ms();
        self.nodes
            .iter()
            .map(|n| {
                let last = n
                    .cluster
                    .peers()
                    .iter()
                    .filter_map(|p| p.last_ok_ms)
                    .max()
                    .unwrap_or(0);
                (now.saturating_sub(last), n.cluster.settings.node.clone())
            })
            .max()
            .unwrap_or_default()
    }

    pub fn settings(&self) -> SimSettings {
        self.settings
    }

    /// Stops every node and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: "Steady-state exchange traffic with 30 simulated nodes and 1,000 endpoints is at
    /// most 1% of what a full-state pull every second would send." Every message counts, the
    /// long-polls' too. The nodes pull every 3 s rather than every second only because 870
    /// signed pulls a second, with 30 heartbeats each, in an unoptimised test build take most of
    /// a core (merging costs little since the tally); a steady exchange costs heartbeats whatever
    /// the interval, and without the digests this fails at any interval up to 100 s (every pull
    /// would be a full one). The start (every node takes in 29 reports of 1,000 votes, JSON
    /// decoded by unoptimised serde) took 66 s in a debug build on a 2-core VM loaded by other
    /// builds (112 s before the incremental merge, against a deadline of 120 s then): the
    /// deadline leaves room for a loaded machine, since what is tested is bytes, not speed.
    /// The reports are older than `stale_after` by the end: the heartbeats alone keep them
    /// voting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steady_state_exchange_traffic_is_at_most_a_percent_of_full_state_pulls() {
        let settings = SimSettings {
            nodes: 30,
            endpoints: 1_000,
            dcs: 10,
            exchange_interval: Duration::from_secs(3),
            stale_after: Duration::from_secs(9),
        };
        let sim = Sim::start(settings);
        let took = sim.until_agreed(&[], Duration::from_secs(300)).await;
        assert!(took.is_some(), "{:?}", sim.disagreement(&[]));
        eprintln!("agreed after {took:?}");
        // The start's long-polls, answered as reports arrived, settle.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let before = sim.transport.bytes();
        let start = Instant::now();
        tokio::time::sleep(2 * settings.exchange_interval).await;
        let sent = sim.transport.bytes() - before;
        let elapsed = start.elapsed();

        // A full-state pull every second, by every node from every other.
        let n = settings.nodes as f64;
        let full = sim.full_state_bytes() as f64 * n * (n - 1.0) * elapsed.as_secs_f64();
        eprintln!(
            "{sent} bytes in {elapsed:?}; full-state pulls every second: {full:.0} bytes ({:.3}%)",
            sent as f64 / full * 100.0
        );
        assert!(
            sent as f64 <= full / 100.0,
            "{sent} bytes exchanged, more than 1% of {full:.0}"
        );
        assert!(sim.agreed(&[]), "the reports went stale");
        sim.stop().await;
    }

    /// A DC failure reaches every node through the deltas: each node's changed report, and
    /// only the changed ones, go out; a peer that already holds a report is not sent it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dc_failure_reaches_every_node_through_the_deltas() {
        let sim = Sim::start(SimSettings {
            nodes: 5,
            endpoints: 100,
            dcs: 10,
            exchange_interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(5),
        });
        let took = sim.until_agreed(&[], Duration::from_secs(20)).await;
        assert!(took.is_some(), "{:?}", sim.disagreement(&[]));
        sim.set_dc(0, Status::Down);
        let took = sim.until_agreed(&[0], Duration::from_secs(2)).await;
        assert!(took.is_some(), "{:?}", sim.disagreement(&[0]));
        sim.set_dc(0, Status::Up);
        let took = sim.until_agreed(&[], Duration::from_secs(2)).await;
        assert!(took.is_some(), "{:?}", sim.disagreement(&[]));
        sim.stop().await;
    }
}
