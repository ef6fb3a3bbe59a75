//! How fast a three-region cluster converges, with default-like settings (issue 5's closing
//! note): checks every 1 s (fast_interval 200 ms by default), timeout 800 ms, fall 2, rise 2;
//! exchange every 1 s, reports stale after 5 s, majority quorum. Over five runs it measures
//!
//! - a DC's backend dying → that DC withdrawn from the answers of *every* node, and
//! - a drain issued on one node → in effect on every node,
//!
//! polling each node's DNS answer every 50 ms, and prints the median and the maximum.
//!
//! `cargo bench --bench convergence` (release build of the real binary, on loopback; about a
//! minute). Under `cargo test --benches` it does nothing.

use std::time::{Duration, Instant};

use serde_json::json;

#[path = "../tests/integration/support.rs"]
mod support;

#[path = "../tests/integration/regions_support.rs"]
mod regions_support;

use regions_support::*;

const RUNS: usize = 5;
const POLL: Duration = Duration::from_millis(50);
const ALL: [usize; 3] = [0, 1, 2];
const EXCHANGE: Duration = Duration::from_secs(1);
const STALE: Duration = Duration::from_secs(5);

/// Polls every 50 ms until `done`; the time from `start` to the first poll that saw it.
fn time_until(start: Instant, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let deadline = start + Duration::from_secs(30);
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(POLL);
    }
}

/// Sleeps a random part of the exchange interval.
fn random_phase() {
    std::thread::sleep(EXCHANGE.mul_f64(rand::random::<f64>()));
}

fn summary(what: &str, mut times: Vec<Duration>) {
    let runs: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    times.sort();
    println!(
        "{what:<44} median {:>5.2} s   max {:>5.2} s   runs (s): {}",
        times[times.len() / 2].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
        runs.join(", ")
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("convergence: skipped (run it with `cargo bench --bench convergence`)");
        return;
    }
    let opts = ClusterOpts {
        exchange_interval: EXCHANGE,
        stale_after: STALE,
        quorum: "majority".into(),
        ..ClusterOpts::default()
    };
    let c = TestCluster::start(3, &regions_zone("1s", "800ms", 2, 2), opts);
    c.wait_converged(&ALL);
    println!(
        "3 nodes on loopback; check interval 1s, fast_interval 200ms, timeout 800ms, fall 2, rise 2; \
         exchange 1s, stale after 5s, quorum majority; failover service; polling every {} ms; \
         {RUNS} runs",
        POLL.as_millis()
    );

    let mut failure = Vec::new();
    let mut drain = Vec::new();
    for _ in 0..RUNS {
        // Each wait above ends right after some node's exchange tick; starting at once would
        // lock every run to the same phase of the nodes' timers (and measure one case five
        // times), so start at a random point of the interval.
        random_phase();
        let died = Instant::now();
        c.dc("dc1").down();
        failure.push(time_until(died, "dc1 is withdrawn everywhere", || {
            c.all_answer(&ALL, "dc2").is_ok()
        }));
        c.dc("dc1").up();
        time_until(Instant::now(), "dc1 is back everywhere", || {
            c.all_answer(&ALL, "dc1").is_ok()
        });

        random_phase();
        let issued = Instant::now();
        let (status, body) = post_json(
            c.node(0).admin,
            "/api/v1/drain",
            &json!({ "dc": "dc1", "reason": "benchmark" }),
        );
        assert_eq!(status, 200, "drain: {body}");
        drain.push(time_until(
            issued,
            "the drain is in effect everywhere",
            || c.all_answer(&ALL, "dc2").is_ok(),
        ));
        let (status, body) = post_json(c.node(0).admin, "/api/v1/undrain", &json!({ "dc": "dc1" }));
        assert_eq!(status, 200, "undrain: {body}");
        time_until(
            Instant::now(),
            "the undrain is in effect everywhere",
            || c.all_answer(&ALL, "dc1").is_ok(),
        );
    }
    summary("DC backend dies -> withdrawn on all 3 nodes", failure);
    summary("drain issued -> in effect on all 3 nodes", drain);
}
