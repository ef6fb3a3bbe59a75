//! Issue 13, sub-second failover on every node: three real nodes on loopback with the issue's
//! settings (check interval 1 s, fast_interval 200 ms, timeout 800 ms, fall 2, rise 2; exchange
//! 1 s, majority), a failover service over dc1, dc2, dc3, and every node's DNS asked every 10 ms.
//!
//! | the issue asks | bound | test |
//! |---|---|---|
//! | a refused backend is withdrawn on all nodes | ≤ 1.0 s, median of 15 (the issue: of 5) | `a_refused_backend_leaves_every_node_within_a_second` |
//! | a backend answering 500 | ≤ 1.0 s, median of 15 (the issue: of 5) | `a_backend_answering_500_leaves_every_node_within_a_second` |
//! | a hung backend | ≤ 2.0 s, median of 15 (the issue: of 5) | `a_hung_backend_leaves_every_node_within_two_seconds` |
//! | restored after each | ≤ fast_interval × rise + 1 s = 1.4 s, every run | the same three |
//! | one failed probe in a row never withdraws | never, on any node | `a_single_failed_probe_withdraws_nothing` |
//! | a drain is in effect on all three nodes | ≤ 0.3 s, median of 15 (the issue: of 5) | `a_drain_is_in_effect_on_every_node_within_300_ms` |
//!
//! Every run has a cluster of its own, five at once on their own loopback blocks: the nodes'
//! probe timers start at random points of the interval, so separate clusters sample where those
//! timers fall as separate deployments would, where five runs on one cluster would sample one
//! arrangement five times. Each run also breaks dc1 at a random point of the interval. The
//! scenarios take turns (`ONE_AT_A_TIME`) so that their fifteen nodes do not load this 2-core
//! machine for each other. The measurements and the settings are shared with
//! `cargo bench --bench convergence` (`regions_support`, "Failover timing").
//!
//! The bounds are the issue's, with no slack, and the runs are random by design: a refused or
//! failing DC leaves every node when the second of three nodes has confirmed it (its first probe
//! after the break, at a uniform point of the interval, plus one fast_interval), plus a few
//! milliseconds. That is 0.7 s in the median, but about one run in six passes 1.0 s (measured
//! here: 5 of 30), so the median of five runs would pass it in about one test run in 30 with
//! nothing wrong; hence the median of 15 (`RUNS`). A failure that shows runs of 1.0–1.2 s is
//! that tail; a median well beyond is a regression.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::regions_support::*;

/// The issue asks for the median of 5 runs. Each run's time is random by design (see the
/// module documentation): one in six runs of a refused or 500 backend passes 1.0 s, so the
/// median of 5 would pass it in about one test run in 30 with nothing wrong. The median of 15
/// estimates the same median with a third of the spread (about one in 700), and holds it to the
/// same bound. Run in batches of `AT_ONCE` clusters.
const RUNS: usize = 15;
const AT_ONCE: usize = 5;

/// The bounds.
const REFUSED_WITHDRAWAL: Duration = Duration::from_millis(1000);
const STATUS_500_WITHDRAWAL: Duration = Duration::from_millis(1000);
const HUNG_WITHDRAWAL: Duration = Duration::from_millis(2000);
/// `fast_interval × rise + 1 s`, for every run.
const RESTORATION: Duration = TIMING_FAST_INTERVAL
    .saturating_mul(TIMING_RISE)
    .saturating_add(Duration::from_secs(1));
const DRAIN: Duration = Duration::from_millis(300);

/// How long the no-flap test watches after each single failed probe.
const WATCH: Duration = Duration::from_secs(3);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    // A scenario that failed still let go of the machine.
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `RUNS` clusters, `AT_ONCE` at a time, each on its own block, and runs `measure` on each once they
/// have converged; the results in start order.
fn on_separate_clusters<T: Send>(measure: impl Fn(&TestCluster) -> T + Sync) -> Vec<T> {
    let mut results = Vec::with_capacity(RUNS);
    while results.len() < RUNS {
        let batch = AT_ONCE.min(RUNS - results.len());
        results.extend(std::thread::scope(|s| {
            let runs: Vec<_> = (0..batch)
                .map(|_| {
                    s.spawn(|| {
                        let c = TestCluster::start(3, &timing_zone(), timing_opts());
                        c.wait_converged(&[0, 1, 2]);
                        measure(&c)
                    })
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect::<Vec<T>>()
        }));
    }
    results
}

/// Five runs of `failure`: the median withdrawal within `withdrawal`, every restoration within
/// `RESTORATION`.
fn withdrawn_and_restored_in_time(failure: Failure, withdrawal: Duration) {
    let _turn = one_at_a_time();
    let times = on_separate_clusters(|c| c.time_failover(failure));
    let withdrawn: Vec<Duration> = times.iter().map(|t| t.withdrawn).collect();
    let restored: Vec<Duration> = times.iter().map(|t| t.restored).collect();
    let rows = [
        timing_row(
            &format!("{} -> withdrawn on all 3 nodes", failure.label()),
            &withdrawn,
        ),
        timing_row(
            &format!("{} repaired -> restored on all 3", failure.label()),
            &restored,
        ),
    ];
    eprintln!("{TIMING_SETTINGS}\n{}\n{}", rows[0], rows[1]);
    assert!(
        median(&withdrawn) <= withdrawal,
        "a {} dc1 is withdrawn on every node in {:?} median, over the issue's {withdrawal:?}:\n{}",
        failure.label(),
        median(&withdrawn),
        rows[0]
    );
    assert!(
        longest(&restored) <= RESTORATION,
        "a repaired ({}) dc1 is restored on every node after {:?} at worst, over fast_interval \
         × rise + 1 s = {RESTORATION:?}:\n{}",
        failure.label(),
        longest(&restored),
        rows[1]
    );
}

#[test]
fn a_refused_backend_leaves_every_node_within_a_second() {
    withdrawn_and_restored_in_time(Failure::Refused, REFUSED_WITHDRAWAL);
}

#[test]
fn a_backend_answering_500_leaves_every_node_within_a_second() {
    withdrawn_and_restored_in_time(Failure::Status500, STATUS_500_WITHDRAWAL);
}

/// A hung backend: each node's first probe after the hang is confirmed by a second one started
/// at half its timeout (400 ms), so a node is sure 1.2 s after its first hung probe starts; the
/// second node of three (the majority) starts that about half an interval after the hang.
#[test]
fn a_hung_backend_leaves_every_node_within_two_seconds() {
    withdrawn_and_restored_in_time(Failure::Hung, HUNG_WITHDRAWAL);
}

#[test]
fn a_drain_is_in_effect_on_every_node_within_300_ms() {
    let _turn = one_at_a_time();
    let times = on_separate_clusters(|c| c.time_drain());
    let in_effect: Vec<Duration> = times.iter().map(|t| t.in_effect).collect();
    let row = timing_row("drain issued -> in effect on all 3 nodes", &in_effect);
    eprintln!("{TIMING_SETTINGS}\n{row}");
    assert!(
        median(&in_effect) <= DRAIN,
        "a drain is in effect on every node in {:?} median, over the issue's {DRAIN:?}:\n{row}",
        median(&in_effect)
    );
}

/// dc1 fails exactly one probe of every node (a 500, then, once settled again, a probe that
/// times out) and is healthy before and after: no node may withdraw it, not even for one poll.
#[test]
fn a_single_failed_probe_withdraws_nothing() {
    let _turn = one_at_a_time();
    let c = TestCluster::start(3, &timing_zone(), timing_opts());
    c.wait_converged(&[0, 1, 2]);
    let sources: Vec<_> = c.nodes.iter().map(|n| n.ip).collect();
    for fault in [Fault::Status500, Fault::Hang] {
        wait_until(
            Instant::now() + Duration::from_secs(10),
            "dc1 is settled up everywhere",
            || c.settled("dc1", true),
        );
        let failed_before: Vec<f64> = c.nodes.iter().map(failed_probes).collect();

        c.dc("dc1").fail_next_probe(&sources, fault);
        let start = Instant::now();
        let mut polls = 0;
        while start.elapsed() < WATCH {
            if let Err(e) = c.all_answer_address("dc1") {
                panic!(
                    "one failed probe ({fault:?}) withdrew dc1 {:?} after it was set up, at poll \
                     {polls}: {e}",
                    start.elapsed()
                );
            }
            polls += 1;
            std::thread::sleep(TIMING_POLL);
        }
        eprintln!("{fault:?}: dc1 answered by every node at each of {polls} polls over {WATCH:?}");

        // The failure did happen, once per node: the test saw what it claims to.
        assert_eq!(
            c.dc("dc1").failures_pending(),
            0,
            "a node did not probe dc1 within {WATCH:?}"
        );
        for (n, before) in c.nodes.iter().zip(failed_before) {
            assert_eq!(
                failed_probes(n) - before,
                1.0,
                "node {} counts one failed probe ({fault:?})",
                n.id
            );
        }
        c.settled("dc1", true).unwrap();
    }
}

/// The probes a node counts as failed or timed out, over every endpoint.
fn failed_probes(node: &RegionNode) -> f64 {
    let m = node.metrics();
    metric(&m, "steerdns_probes{result=\"failed\"}")
        + metric(&m, "steerdns_probes{result=\"timed_out\"}")
}
