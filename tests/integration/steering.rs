//! Steering beyond distance (issue 16), on three real nodes on loopback: the recovery ramp (a
//! returning DC gets a growing share of its client networks, in step on every node, and loses
//! them at once when it fails again) and the `latency` policy (the DC fastest from the client's
//! region, measured by the probers, with hysteresis and a fallback to `nearest`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::regions_support::*;
use crate::support::*;

/// The regions zone with a 60 s recovery ramp on its failover service (dc1 > dc2 > dc3), a
/// TTL of 30 s (so the ramp's, 6 s, shows), and no rate limit (a test sweep asks 1,000 networks from one address).
fn ramp_zone() -> String {
    fast_zone()
        .replace(
            "      policy: failover\n",
            "      policy: failover\n      ramp: 60s\n",
        )
        .replace("      ttl: 5\n", "      ttl: 30\n")
        .replace("records:\n", "rrl: { enabled: false }\nrecords:\n")
}

const RAMP_MS: u64 = 60_000;

/// The ramp's curve as the README documents it: 10% at once, then linear to 100% at the end.
fn curve(elapsed_ms: u64) -> f64 {
    0.1 + 0.9 * (elapsed_ms.min(RAMP_MS) as f64 / RAMP_MS as f64)
}

/// 1,000 distinct client /24 networks.
fn networks() -> Vec<String> {
    (0..1_000u32)
        .map(|i| {
            let base = std::net::Ipv4Addr::from(0x0b00_0000 + (i << 8));
            format!("{base}/24")
        })
        .collect()
}

/// One node's answer for `SERVICE` to a resolver sending `net` in ECS: the DC, the TTL, the
/// ECS scope.
fn ask(block: Block, dns: SocketAddr, net: &str) -> (String, u32, u8) {
    let reply = query_udp(dns, &query(SERVICE, RecordType::A).ecs(net));
    let first = reply
        .answers
        .first()
        .unwrap_or_else(|| panic!("no answer for {net} from {dns}"));
    let scope = reply_ecs(&reply).map_or(255, |(_, _, scope, _)| scope);
    (block.dc_of(first), first.ttl, scope)
}

/// The ramp of `dc` in a state document: (started_ms, share), when it ramps.
fn ramp_of(state: &serde_json::Value, dc: &str) -> Option<(u64, f64)> {
    let r = &dc_state(state, dc)["ramp"];
    Some((r["started_ms"].as_u64()?, r["share"].as_f64()?))
}

#[test]
fn a_returning_dc_ramps_in_step_on_every_node_and_a_failure_withdraws_it_at_once() {
    let cluster = TestCluster::start(3, &ramp_zone(), ClusterOpts::default());
    cluster.wait_converged(&[0, 1, 2]);
    let nets = networks();
    let all = [0, 1, 2];

    // dc1 fails: everyone goes to dc2, with no ramp anywhere (nothing came back).
    cluster.dc("dc1").down();
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_until(deadline, "every node answers dc2", || {
        cluster.all_answer(&all, "dc2")
    });
    for i in all {
        assert_eq!(ramp_of(&cluster.node(i).state(), "dc2"), None);
    }

    // dc1 comes back: its ramp starts at the merged view's restore time, the same on every node
    // once each holds the votes that restored it. (A node that restores dc1 before another
    // node's up vote reaches it counts the votes it holds: for the exchange's few hundred
    // milliseconds its start can differ, then it is the one every node derives. The shares
    // below are read well after that.)
    let back_ms = steerdns::clock::now_ms();
    cluster.dc("dc1").up();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut starts = Vec::new();
    wait_until(
        deadline,
        "every node ramps dc1 from the same moment",
        || {
            starts = all
                .iter()
                .map(|i| ramp_of(&cluster.node(*i).state(), "dc1").map(|r| r.0))
                .collect::<Vec<_>>();
            match starts[0] {
                Some(first) if starts.iter().all(|s| *s == Some(first)) => Ok(()),
                _ => Err(format!("ramp starts {starts:?}")),
            }
        },
    );
    let started = starts[0].expect("checked above");
    assert!(
        started >= back_ms && started <= back_ms + 3_000,
        "the ramp starts when the merged view restored dc1: {started} ms, dc1 back at {back_ms} ms"
    );

    // `steerdns explain --admin` shows the ramp, from the node's live view.
    let run = cluster
        .node(0)
        .cli(&["explain", "www.gslb.test", "--subnet", "11.0.7.0/24"]);
    println!("{}", run.stdout);
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("  1. dc1      listed 1; 1/1 endpoints up; ramping, "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(" of 60 s (since Unix ms "),
        "{}",
        run.stdout
    );

    // Three checkpoints: on every node, the share of the 1,000 networks answered with dc1
    // follows the curve within 5 points; a network once moved stays moved.
    let mut moved: HashMap<(usize, &str), bool> = HashMap::new();
    for at in [10_000, 30_000, 50_000] {
        let due = started + at;
        let now = steerdns::clock::now_ms();
        if due > now {
            std::thread::sleep(Duration::from_millis(due - now));
        }
        for i in all {
            let node = cluster.node(i);
            let from = steerdns::clock::now_ms();
            let mut dc1 = 0;
            for net in &nets {
                let (dc, ttl, scope) = ask(cluster.block, node.dns, net);
                let was = moved.entry((i, net.as_str())).or_default();
                match dc.as_str() {
                    "dc1" => {
                        dc1 += 1;
                        *was = true;
                    }
                    "dc2" => assert!(!*was, "node {}: {net} moved back to dc2", node.id),
                    other => panic!("node {}: {net} got {other}", node.id),
                }
                assert_eq!(ttl, 6, "node {}: a tenth of the ramp", node.id);
                assert_eq!(
                    scope, 24,
                    "node {}: {net}: the answer hangs on the /24",
                    node.id
                );
            }
            let to = steerdns::clock::now_ms();
            let share = f64::from(dc1) / nets.len() as f64;
            let want = curve((from + to) / 2 - started);
            println!(
                "node {} at {:.1} s: {share:.3} of the networks on dc1, the curve says {want:.3}",
                node.id,
                ((from + to) / 2 - started) as f64 / 1000.0
            );
            assert!(
                (share - want).abs() <= 0.05,
                "node {} at {} ms into the ramp: {share} of the networks on dc1, the curve says \
                 {want}",
                node.id,
                (from + to) / 2 - started
            );
        }
    }

    // dc1 fails during the ramp: it leaves every network at once, not along a curve.
    let failed = Instant::now();
    cluster.dc("dc1").down();
    let deadline = Instant::now() + Duration::from_secs(5);
    wait_until(deadline, "every node answers dc2 for every network", || {
        for i in all {
            let node = cluster.node(i);
            for net in &nets {
                let (dc, _, _) = ask(cluster.block, node.dns, net);
                if dc != "dc2" {
                    return Err(format!("node {}: {net} still on {dc}", node.id));
                }
            }
        }
        Ok(())
    });
    println!(
        "dc1 left every network on every node {:?} after it failed",
        failed.elapsed()
    );
    for i in all {
        assert_eq!(ramp_of(&cluster.node(i).state(), "dc1"), None);
    }
}

/// A regions zone with the `latency` policy: regions a (London), b (Seattle), c (Tokyo); DCs
/// dc1 (Frankfurt), dc2 (Ashburn), dc3 (Singapore); probes every 500 ms, timeout 400 ms (the
/// slowest path here is 200 ms).
fn latency_zone() -> String {
    regions_zone("500ms", "400ms", 2, 2)
        .replace("      policy: failover\n", "      policy: latency\n")
        .replace(
            "datacenters:\n",
            "regions:\n  region-a: { location: [51.5, -0.1] }\n  region-b: { location: [47.6, -122.3] }\n  region-c: { location: [35.7, 139.7] }\nrrl: { enabled: false }\ndatacenters:\n",
        )
}

/// A London client (GeoIP2-City-Test: 81.2.69.160/27): nearest region a, nearest DC dc1.
const LONDON: &str = "81.2.69.160/27";
/// A client in Milton, WA (216.160.83.56/29): nearest region b, nearest DC dc2.
const SEATTLE: &str = "216.160.83.56/29";

#[test]
fn latency_picks_the_dc_fastest_from_the_clients_region_holds_on_noise_and_falls_back_when_stale() {
    let mut cluster = TestCluster::start(3, &latency_zone(), ClusterOpts::default());
    let (a, b) = (cluster.node(0).ip, cluster.node(1).ip);
    let ms = Duration::from_millis;
    // Region a is 30 ms from dc2 and 120 ms from dc1 (though nearer dc1); region b the other way.
    cluster.dc("dc1").delay(a, ms(120), 0.0);
    cluster.dc("dc2").delay(a, ms(30), 0.0);
    cluster.dc("dc3").delay(a, ms(200), 0.0);
    cluster.dc("dc1").delay(b, ms(30), 0.0);
    cluster.dc("dc2").delay(b, ms(120), 0.0);
    cluster.dc("dc3").delay(b, ms(200), 0.0);
    let all = [0, 1, 2];
    let block = cluster.block;
    let answers = |cluster: &TestCluster, nodes: &[usize], net: &str, want: &str| {
        for i in nodes {
            let node = cluster.node(*i);
            let (dc, _, scope) = ask(block, node.dns, net);
            if dc != want {
                return Err(format!("node {} answers {net} with {dc}", node.id));
            }
            // ECS scope as for nearest: the GeoIP network's prefix (/27, /29), at most /24.
            if scope != 24 {
                return Err(format!("node {}: scope /{scope} for {net}", node.id));
            }
        }
        Ok(())
    };

    // 1. Each region's measurement decides, not the distance.
    let deadline = Instant::now() + Duration::from_secs(20);
    wait_until(deadline, "London goes to dc2 everywhere", || {
        answers(&cluster, &all, LONDON, "dc2").map_err(|e| {
            let st = cluster.node(0).state();
            format!(
                "{e}; node a's latency orders: {}",
                st["services"][0]["latency"]
            )
        })
    });
    wait_until(deadline, "Seattle goes to dc1 everywhere", || {
        answers(&cluster, &all, SEATTLE, "dc1")
    });
    // The RTT matrix in the metrics: region a measures dc2 at 30 ms and more (the delay, plus
    // a debug build's own time), and dc1 at 120 ms (less up to 20%: a smoothed RTT is
    // republished once it moves by more than that).
    let rtt = |dc: &str| {
        metric(
            &cluster.node(2).metrics(),
            &format!(
                "steerdns_latency_rtt_seconds{{service=\"www.gslb.test\",region=\"region-a\",dc=\"{dc}\"}}"
            ),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_until(deadline, "region a's RTTs in the metrics", || {
        let (dc1, dc2) = (rtt("dc1"), rtt("dc2"));
        if dc1 >= 0.096 && (0.024..dc1 / 2.0).contains(&dc2) {
            Ok(())
        } else {
            Err(format!("dc1 {dc1} s, dc2 {dc2} s"))
        }
    });
    let r = cluster
        .node(1)
        .request(
            "GET",
            &format!("/api/v1/explain?name=www.gslb.test&subnet={LONDON}"),
        )
        .expect("explain");
    let text = r.text();
    println!("{text}");
    assert!(
        text.contains("latency, as measured from region region-a"),
        "{text}"
    );
    assert!(
        text.contains("  1. dc2      rtt "),
        "dc2 first, by its RTT: {text}"
    );
    assert!(
        text.contains("  2. dc1      rtt 1"),
        "dc1 next, at 100+ ms: {text}"
    );

    // 2. Noise: dc1 now as fast as dc2 from region a, both with 10% jitter: each is faster at
    // times, never by the margin for the hold, so London stays on dc2 (for longer than the hold).
    cluster.dc("dc1").delay(a, ms(30), 0.1);
    cluster.dc("dc2").delay(a, ms(30), 0.1);
    holds_for(
        Duration::from_secs(8),
        "London on dc2 through the jitter",
        || answers(&cluster, &all, LONDON, "dc2"),
    );

    // 3. A real change: dc1 at 5 ms from region a takes the lead, but only after the hold.
    cluster.dc("dc1").delay(a, ms(5), 0.0);
    cluster.dc("dc2").delay(a, ms(30), 0.0);
    let changed = Instant::now();
    holds_for(
        Duration::from_secs(3),
        "London on dc2 during the hold",
        || answers(&cluster, &[1], LONDON, "dc2"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_until(deadline, "London goes to dc1 after the hold", || {
        answers(&cluster, &all, LONDON, "dc1")
    });
    println!(
        "dc1 took the lead {:?} after it became faster",
        changed.elapsed()
    );

    // 4. Stale: region a's only node stops; its measurements go stale and London falls back
    // to nearest (dc1) while region b still steers Seattle to dc1 (its nearest is dc2). First
    // make region a prefer dc2 again, so that the fallback shows.
    cluster.dc("dc1").delay(a, ms(120), 0.0);
    let deadline = Instant::now() + Duration::from_secs(15);
    wait_until(deadline, "London back on dc2", || {
        answers(&cluster, &all, LONDON, "dc2")
    });
    cluster.kill(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_until(deadline, "London falls back to nearest, dc1", || {
        answers(&cluster, &[1, 2], LONDON, "dc1")
    });
    answers(&cluster, &[1, 2], SEATTLE, "dc1").expect("region b still measures");
    let r = cluster
        .node(1)
        .request(
            "GET",
            &format!("/api/v1/explain?name=www.gslb.test&subnet={LONDON}"),
        )
        .expect("explain");
    let text = r.text();
    println!("{text}");
    assert!(text.contains("has no fresh measurement"), "{text}");
}
