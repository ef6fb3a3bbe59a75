//! The exchange at scale (issue 13): 30 and 100 simulated nodes (`cluster::sim`: real `Cluster`s
//! on the in-memory transport, only the probing simulated), 1,000 endpoints over 10 DCs, every
//! node a peer of every other, exchange every 1 s, reports stale after 5 s, majority quorum.
//! For each size it measures
//!
//! - steady state, over 10 s: bytes exchanged per node per second (requests' signed headers,
//!   digests included; answers' bodies and signatures; long-polls included) and CPU per node
//!   per second (the process's CPU time over the nodes);
//! - a DC failure: every node's probers find dc0's 100 endpoints down at once; the time until
//!   every node counts every node's down vote on every one of them (a minute at most), and
//!   bytes and CPU per node per second from the failure until then, 10 s at least;
//! - the time from start until every node agrees (first contact: full state, once);
//!
//! and prints what a full-state pull from every peer every second would send instead, for the
//! ratio. `cargo bench --bench exchange_scale` (release; EXCHANGE_SCALE_NODES=30 for one size).
//! Under `cargo test --benches` it does nothing.

use std::time::Duration;

use steerdns::cluster::sim::{Sim, SimSettings};
use steerdns::health::Status;
use tokio::time::Instant;

const ENDPOINTS: usize = 1_000;
const DCS: usize = 10;
const WINDOW: Duration = Duration::from_secs(10);

/// CPU time of the whole process (user + system) so far.
fn cpu_seconds() -> f64 {
    // SAFETY: rusage is a plain C struct of integers; all zeros is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given, which lives for the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Bytes and CPU per node per second over a window.
struct Rate {
    bytes: f64,
    cpu_ms: f64,
}

struct Mark {
    bytes: u64,
    cpu: f64,
    at: Instant,
}

fn mark(sim: &Sim) -> Mark {
    Mark {
        bytes: sim.transport.bytes(),
        cpu: cpu_seconds(),
        at: Instant::now(),
    }
}

fn rate(sim: &Sim, from: &Mark, nodes: usize) -> Rate {
    let secs = from.at.elapsed().as_secs_f64() * nodes as f64;
    Rate {
        bytes: (sim.transport.bytes() - from.bytes) as f64 / secs,
        cpu_ms: (cpu_seconds() - from.cpu) * 1e3 / secs,
    }
}

/// `Sim::until_agreed`, saying every 5 s who does not agree yet (and the CPU used so far).
async fn until_agreed(sim: &Sim, down: &[usize], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut said = start;
    while start.elapsed() < within {
        if sim.agreed(down) {
            return Some(start.elapsed());
        }
        if said.elapsed() >= Duration::from_secs(5) {
            said = Instant::now();
            eprintln!(
                "  {:.0?}: {}; CPU {:.1} s; failing pulls {}; longest since a pull {:?}",
                start.elapsed(),
                sim.disagreement(down).unwrap_or_default(),
                cpu_seconds(),
                sim.failing_pulls(),
                sim.longest_since_pull()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

struct Row {
    nodes: usize,
    started: Option<Duration>,
    steady: Rate,
    failure: Rate,
    failed_over: Option<Duration>,
    full: f64,
}

async fn run(nodes: usize) -> Row {
    let settings = SimSettings {
        nodes,
        endpoints: ENDPOINTS,
        dcs: DCS,
        exchange_interval: Duration::from_secs(1),
        stale_after: Duration::from_secs(5),
    };
    let sim = Sim::start(settings);
    let started = until_agreed(&sim, &[], Duration::from_secs(600)).await;
    eprintln!("{nodes} nodes: agreed {started:?} after start");
    // The start's long-polls settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let m = mark(&sim);
    tokio::time::sleep(WINDOW).await;
    let steady = rate(&sim, &m, nodes);
    eprintln!(
        "{nodes} nodes: steady {:.0} B/node/s, {:.1} ms CPU/node/s",
        steady.bytes, steady.cpu_ms
    );

    let m = mark(&sim);
    sim.set_dc(0, Status::Down);
    let failed_over = until_agreed(&sim, &[0], 6 * WINDOW).await;
    tokio::time::sleep(WINDOW.saturating_sub(m.at.elapsed())).await;
    let failure = rate(&sim, &m, nodes);
    eprintln!(
        "{nodes} nodes: dc0 down everywhere after {failed_over:?} ({:?})",
        sim.disagreement(&[0])
    );
    let full = sim.full_state_bytes() as f64 * (nodes - 1) as f64;
    sim.stop().await;
    Row {
        nodes,
        started,
        steady,
        failure,
        failed_over,
        full,
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("exchange_scale: skipped (run it with `cargo bench --bench exchange_scale`)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("EXCHANGE_SCALE_NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![30, 100]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let rows: Vec<Row> = sizes.iter().map(|n| runtime.block_on(run(*n))).collect();

    println!(
        "{ENDPOINTS} endpoints over {DCS} DCs, exchange every 1 s, every node a peer of every other (each pulls and follows `cluster::fanout` of them); per node per second:"
    );
    println!(
        "| nodes | all agree after start | steady bytes | steady CPU | DC failure: all agree | failure bytes | failure CPU | full-state pulls | steady / full |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} KB | {:.1} ms | {} | {:.1} KB | {:.1} ms | {:.1} MB | {:.3}% |",
            r.nodes,
            secs(r.started),
            r.steady.bytes / 1e3,
            r.steady.cpu_ms,
            secs(r.failed_over),
            r.failure.bytes / 1e3,
            r.failure.cpu_ms,
            r.full / 1e6,
            r.steady.bytes / r.full * 100.0
        );
    }
}
