//! How fast a three-region cluster converges with the settings of issue 13: checks every 1 s
//! (fast_interval 200 ms by default), timeout 800 ms, fall 2, rise 2; exchange every 1 s,
//! reports stale after 5 s, majority quorum. For each way dc1's backend can break (connection
//! refused, HTTP 500, hung) it measures
//!
//! - the break → dc1 withdrawn from the answers of *every* node (dc2's address alone), and
//! - the repair → dc1 restored on every node (dc1's address alone),
//!
//! and for a drain of dc1 issued on one node, the time until it is in effect on every node and,
//! after the undrain, lifted on every node. Every node's DNS is asked every 10 ms. Each of the
//! five runs has a fresh cluster (the nodes' probe timers start at random points of the
//! interval, as in separate deployments), and each measurement starts at a random point of the
//! interval. Prints the median and the maximum of every row.
//!
//! `cargo bench --bench convergence` (release build of the real binary, on loopback; about a
//! minute and a half). Under `cargo test --benches` it does nothing. The measurements are the
//! ones the `failover_timing` integration tests assert (`regions_support`, "Failover timing").

use std::time::Duration;

#[path = "../tests/integration/support.rs"]
mod support;

#[path = "../tests/integration/regions_support.rs"]
mod regions_support;

use regions_support::*;

const RUNS: usize = 5;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("convergence: skipped (run it with `cargo bench --bench convergence`)");
        return;
    }
    let mut failovers: Vec<Vec<FailoverTimes>> = vec![Vec::new(); Failure::ALL.len()];
    let mut drains = Vec::new();
    for run in 0..RUNS {
        let c = TestCluster::start(3, &timing_zone(), timing_opts());
        c.wait_converged(&[0, 1, 2]);
        for (i, failure) in Failure::ALL.into_iter().enumerate() {
            let t = c.time_failover(failure);
            eprintln!(
                "run {}: {}: withdrawn {:.2} s, restored {:.2} s",
                run + 1,
                failure.label(),
                t.withdrawn.as_secs_f64(),
                t.restored.as_secs_f64()
            );
            failovers[i].push(t);
        }
        let d = c.time_drain();
        eprintln!(
            "run {}: drain in effect {:.2} s, lifted {:.2} s",
            run + 1,
            d.in_effect.as_secs_f64(),
            d.lifted.as_secs_f64()
        );
        drains.push(d);
    }

    println!();
    println!("{TIMING_SETTINGS}; {RUNS} runs, a fresh cluster each");
    for (failure, times) in Failure::ALL.into_iter().zip(&failovers) {
        let withdrawn: Vec<Duration> = times.iter().map(|t| t.withdrawn).collect();
        let restored: Vec<Duration> = times.iter().map(|t| t.restored).collect();
        println!(
            "{}",
            timing_row(
                &format!("{} -> withdrawn on all 3 nodes", failure.label()),
                &withdrawn
            )
        );
        println!(
            "{}",
            timing_row(
                &format!("{} repaired -> restored on all 3", failure.label()),
                &restored
            )
        );
    }
    let in_effect: Vec<Duration> = drains.iter().map(|d| d.in_effect).collect();
    let lifted: Vec<Duration> = drains.iter().map(|d| d.lifted).collect();
    println!(
        "{}",
        timing_row("drain issued -> in effect on all 3 nodes", &in_effect)
    );
    println!(
        "{}",
        timing_row("undrain issued -> lifted on all 3 nodes", &lifted)
    );
}
