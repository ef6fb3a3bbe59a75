//! How fast a failed backend leaves the DNS answers, and how fast it returns (issue 4): a real
//! `steerdns serve` (release build) and real HTTP backends on loopback, one per DC, with the
//! check at its default timing (interval 1 s, fast_interval 200 ms, timeout 800 ms, rise 2) and
//! `fall` 2, then 3.
//!
//! For each setting and failure (connection refused; backend accepting but never answering),
//! five runs measure the seconds from the backend failing to the DNS answer changing, and from
//! its recovery to the answer returning, polling DNS every 100 ms. Prints median and maximum.
//!
//! Run: `cargo bench --bench failover` (about two minutes after the build). Only loopback addresses are used.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

#[path = "../tests/integration/support.rs"]
mod support;

use support::{
    Backend, Mode, TestServer, addresses, checked_zone_two_dcs, query, query_udp, start_backends,
};

/// How often DNS is asked, as the issue asks.
const POLL: Duration = Duration::from_millis(100);
const RUNS: usize = 5;
/// Give up on one measurement after this long (a regression, not a result).
const GIVE_UP: Duration = Duration::from_secs(30);

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and should not take minutes.
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover: a benchmark; run it with `cargo bench --bench failover`");
        return;
    }
    let mut rows = Vec::new();
    for fall in [2, 3] {
        let backends = start_backends(2, None);
        let (a, b) = (&backends[0], &backends[1]);
        let zone = zone(fall, a, b);
        let server = TestServer::start(&zone);
        server.wait_for_log("health is ready", 1, Duration::from_secs(10));
        for (mode, label) in [(Mode::Closed, "refused"), (Mode::Hang, "hung")] {
            let mut down = Vec::new();
            let mut up = Vec::new();
            for run in 0..RUNS {
                // Start each run at another phase of the probe schedule.
                std::thread::sleep(Duration::from_millis(300 + 170 * run as u64));
                let t0 = Instant::now();
                a.set(mode.clone());
                wait_answer(&server, b);
                down.push(t0.elapsed());
                // Recover at another phase too: right after the change would always be just
                // after a probe.
                std::thread::sleep(Duration::from_millis(250 + 190 * run as u64));
                let t1 = Instant::now();
                a.set(Mode::Healthy);
                wait_answer(&server, a);
                up.push(t1.elapsed());
                eprintln!(
                    "fall {fall}, {label}, run {}: out after {:.2} s, back after {:.2} s",
                    run + 1,
                    secs(down[run]),
                    secs(up[run])
                );
            }
            rows.push((fall, label, down, up));
        }
    }

    println!();
    println!(
        "steerdns failover on loopback: check interval 1 s, fast_interval 200 ms, timeout 800 ms, \
         rise 2; \
         DNS polled every {} ms; {RUNS} runs each",
        POLL.as_millis()
    );
    println!();
    println!(
        "| fall | backend failure | failure -> answer changes (median / max) | recovery -> answer returns (median / max) |"
    );
    println!("|---|---|---|---|");
    for (fall, label, down, up) in rows {
        println!(
            "| {fall} | {label} | {:.2} s / {:.2} s | {:.2} s / {:.2} s |",
            secs(median(&down)),
            secs(max(&down)),
            secs(median(&up)),
            secs(max(&up)),
        );
    }
}

fn zone(fall: u32, a: &Backend, b: &Backend) -> String {
    checked_zone_two_dcs(
        [("a", a.ip()), ("b", b.ip())],
        &format!(
            "{{ http: {{ port: {}, path: /health }}, interval: 1s, timeout: 800ms, fall: {fall}, \
             rise: 2 }}",
            a.port()
        ),
        "policy: failover",
    )
}

/// Polls every `POLL` until `www` answers with `backend`'s address alone.
fn wait_answer(server: &TestServer, backend: &Backend) {
    let want = vec![backend.ip().to_string()];
    let start = Instant::now();
    let q = query("www.api.example.com", RecordType::A);
    loop {
        if addresses(&query_udp(server.addr, &q)) == want {
            return;
        }
        assert!(
            start.elapsed() < GIVE_UP,
            "www does not answer {want:?} after {GIVE_UP:?}"
        );
        std::thread::sleep(POLL);
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn max(v: &[Duration]) -> Duration {
    v.iter().copied().max().unwrap_or_default()
}
