//! Regions share health (issue 5): three real nodes as three regions on loopback, each with its
//! own addresses, HTTP backends for three data centers, queried over DNS. The service is
//! `failover` over dc1, dc2, dc3, so every client gets the first DC that is up and not drained,
//! and an answer names exactly one DC.
//!
//! | scenario of the issue | test |
//! |---|---|
//! | 1. a DC's backend dies, then recovers | `a_dead_backend_is_withdrawn_everywhere_and_comes_back` |
//! | 2. one region's path to one DC breaks | `one_regions_broken_path_withdraws_nothing` |
//! | 3. one node cut off from every backend | `a_node_cut_off_from_everything_is_isolated_and_withdraws_nothing` |
//! | 4. a node is killed, then restarted | `a_killed_nodes_votes_age_out_and_it_rejoins_when_restarted` |
//! | 5. the link between two nodes is cut | `a_cut_link_is_bridged_by_the_third_node` |
//! | 6. drains | `a_drain_reaches_every_node_and_survives_a_restart`, `an_expiring_drain_lifts_and_the_last_healthy_dc_is_protected` |
//! | 7. wrong secret, replays | `a_peer_with_the_wrong_secret_changes_nothing`, `a_replayed_request_is_refused`, `a_replayed_response_is_refused` |
//!
//! Timings (see `support::fast_zone` and `ClusterOpts::default`): checks every 200 ms with fall 2
//! and rise 2, exchange every 250 ms, reports stale after 1.5 s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::regions_support::*;
use crate::support::{HttpResponse, http_request};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const ALL: [usize; 3] = [A, B, C];

const INTERVAL: Duration = Duration::from_millis(200);
const FALL: u32 = 2;
const RISE: u32 = 2;
const EXCHANGE: Duration = Duration::from_millis(250);
const STALE: Duration = Duration::from_millis(1500);
const SECOND: Duration = Duration::from_secs(1);

/// The bound for a dead backend to leave the answers of every node:
/// `interval × fall + exchange interval + 1 s`.
const WITHDRAWAL: Duration = INTERVAL
    .saturating_mul(FALL)
    .saturating_add(EXCHANGE)
    .saturating_add(SECOND);
/// And for a recovered one to come back: `interval × rise + exchange interval + 1 s`.
const RECOVERY: Duration = INTERVAL
    .saturating_mul(RISE)
    .saturating_add(EXCHANGE)
    .saturating_add(SECOND);
/// For a drain issued on one node to reach the others: one exchange interval plus a second.
const DRAIN_REACH: Duration = EXCHANGE.saturating_add(SECOND);

fn cluster(opts: ClusterOpts) -> TestCluster {
    let c = TestCluster::start(3, &fast_zone(), opts);
    c.wait_converged(&ALL);
    c
}

/// Ok if node `i`'s state satisfies `check`, else what it shows about the endpoints.
fn state_of(
    c: &TestCluster,
    i: usize,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Result<(), String> {
    let st = c.node(i).state();
    if check(&st) {
        Ok(())
    } else {
        Err(format!(
            "state of {}: isolated {}, drains {}, {}",
            c.node(i).id,
            st["isolated"],
            st["drains"],
            DCS.map(|dc| format!("{dc}: {}", dc_state(&st, dc)))
                .join("; ")
        ))
    }
}

fn vote_is(st: &serde_json::Value, dc: &str, voter: &str, up: bool) -> bool {
    vote(st, dc, voter).is_some_and(|v| v["up"] == up && v["fresh"] == true)
}

#[test]
fn a_dead_backend_is_withdrawn_everywhere_and_comes_back() {
    let c = cluster(ClusterOpts::default());

    let died = Instant::now();
    c.dc("dc1").down();
    let gone = wait_until(died + WITHDRAWAL, "every node withdraws dc1", || {
        c.all_answer(&ALL, "dc2")
    });
    eprintln!(
        "dc1 withdrawn on every node {:?} after it died",
        gone - died
    );
    // A majority withdrew it; the third vote follows with the next exchange.
    wait_until(
        Instant::now() + DRAIN_REACH,
        "every node holds three down votes",
        || {
            for i in ALL {
                state_of(&c, i, |st| {
                    let ep = endpoint_state(st, "dc1");
                    ep["effective"] == "down" && ep["local"] == "down" && ep["down_votes"] == 3
                })?;
            }
            Ok(())
        },
    );

    let recovered = Instant::now();
    c.dc("dc1").up();
    let back = wait_until(recovered + RECOVERY, "every node brings dc1 back", || {
        c.all_answer(&ALL, "dc1")
    });
    eprintln!(
        "dc1 back on every node {:?} after it recovered",
        back - recovered
    );

    // A backend that answers 500 is as dead as one that refuses connections.
    let failed = Instant::now();
    c.dc("dc1").fail();
    wait_until(
        failed + WITHDRAWAL,
        "every node withdraws dc1 (HTTP 500)",
        || c.all_answer(&ALL, "dc2"),
    );
}

#[test]
fn one_regions_broken_path_withdraws_nothing() {
    let c = cluster(ClusterOpts::default());
    let a = c.node(A);

    c.dc("dc1").refuse(a.ip);
    // Wait until a's down vote has reached every node, so the quorum is really being asked.
    wait_until(
        Instant::now() + WITHDRAWAL,
        "every node holds a's down vote on dc1",
        || {
            for i in ALL {
                state_of(&c, i, |st| vote_is(st, "dc1", "a", false))?;
            }
            Ok(())
        },
    );
    holds_for(
        Duration::from_secs(3),
        "every node keeps answering dc1",
        || c.all_answer(&ALL, "dc1"),
    );

    // a shows its own vote down, the others' up, and the effective status up.
    let st = a.state();
    let ep = endpoint_state(&st, "dc1");
    assert_eq!(ep["local"], "down", "{ep}");
    assert_eq!(ep["effective"], "up", "{ep}");
    assert_eq!(
        (ep["down_votes"].as_u64(), ep["counted_votes"].as_u64()),
        (Some(1), Some(3))
    );
    assert!(vote_is(&st, "dc1", "a", false), "{ep}");
    assert!(
        vote_is(&st, "dc1", "b", true) && vote_is(&st, "dc1", "c", true),
        "{ep}"
    );
    assert_eq!(
        st["isolated"],
        json!([]),
        "one broken path is not isolation"
    );
    assert!(
        a.log().contains("health changed"),
        "a logs its local change"
    );

    // Mended, a votes up again.
    c.dc("dc1").accept(a.ip);
    wait_until(Instant::now() + RECOVERY, "a votes dc1 up again", || {
        state_of(&c, A, |st| vote_is(st, "dc1", "a", true))
    });
}

#[test]
fn a_node_cut_off_from_everything_is_isolated_and_withdraws_nothing() {
    // With quorum `any`, one down vote takes an endpoint out: without the isolation guard, a's
    // votes would withdraw every DC everywhere.
    let c = cluster(ClusterOpts::default().quorum("any"));
    let a = c.node(A);

    for b in &c.backends {
        b.refuse(a.ip);
    }
    let cut = Instant::now();
    // From the cut until a is known to be isolated everywhere, nobody withdraws anything.
    wait_until(
        cut + WITHDRAWAL + SECOND,
        "every node holds a's down votes and sees a isolated",
        || {
            c.all_answer(&ALL, "dc1").unwrap_or_else(|e| {
                panic!("a DC was withdrawn {:?} after the cut: {e}", cut.elapsed())
            });
            for i in ALL {
                state_of(&c, i, |st| {
                    st["isolated"] == json!(["a"])
                        && DCS.iter().all(|dc| vote_is(st, dc, "a", false))
                })?;
            }
            Ok(())
        },
    );
    holds_for(
        Duration::from_secs(2),
        "every node keeps answering dc1",
        || c.all_answer(&ALL, "dc1"),
    );

    // a says so, and nobody else is affected: b and c vote up, nothing is down anywhere.
    let st = a.state();
    assert_eq!(st["isolated"], json!(["a"]));
    for dc in DCS {
        let ep = endpoint_state(&st, dc);
        assert_eq!(
            (&ep["local"], &ep["effective"]),
            (&json!("down"), &json!("up")),
            "{ep}"
        );
        let own = vote(&st, dc, "a").unwrap();
        assert_eq!(own["ignored"], true, "{own}");
    }
    for i in [B, C] {
        state_of(&c, i, |st| {
            DCS.iter().all(|dc| {
                let ep = endpoint_state(st, dc);
                ep["local"] == "up" && ep["effective"] == "up" && ep["down_votes"] == 0
            })
        })
        .unwrap();
    }
    assert!(
        a.log().contains("it is probably cut off"),
        "a logs that it looks cut off"
    );
    assert!(metric(&a.metrics(), "steerdns_isolated") == 1.0);

    // Reconnected, a leaves the isolated list.
    for b in &c.backends {
        b.accept(a.ip);
    }
    wait_until(
        Instant::now() + RECOVERY + SECOND,
        "a is no longer isolated",
        || {
            state_of(&c, A, |st| {
                st["isolated"] == json!([]) && DCS.iter().all(|dc| vote_is(st, dc, "a", true))
            })
        },
    );
}

#[test]
fn a_killed_nodes_votes_age_out_and_it_rejoins_when_restarted() {
    let mut c = cluster(ClusterOpts::default());
    // b's and c's paths to dc1 break: two down votes of three withdraw it (majority).
    c.dc("dc1").refuse(c.node(B).ip);
    c.dc("dc1").refuse(c.node(C).ip);
    wait_until(
        Instant::now() + WITHDRAWAL,
        "every node withdraws dc1",
        || c.all_answer(&ALL, "dc2"),
    );

    // c dies. Its down vote stays counted until it is stale_after old; then one down vote of
    // two is no majority and dc1 comes back on a and b. They answer all along.
    let killed = Instant::now();
    c.kill(C);
    let back = wait_until(
        killed + STALE + EXCHANGE + SECOND,
        "a and b stop counting c's vote and answer dc1 again",
        || c.all_answer(&[A, B], "dc1"),
    );
    let after = back - killed;
    eprintln!("c's vote stopped counting {after:?} after c died");
    assert!(
        after >= STALE - 2 * EXCHANGE,
        "c's vote stopped counting {after:?} after it died, before stale_after ({STALE:?})"
    );
    for i in [A, B] {
        state_of(&c, i, |st| {
            let ep = endpoint_state(st, "dc1");
            vote(st, "dc1", "c").is_some_and(|v| v["fresh"] == false && v["up"] == false)
                && ep["counted_votes"] == 2
                && ep["down_votes"] == 1
        })
        .unwrap();
    }

    // c comes back: its vote is fresh again everywhere, and all three agree once more.
    c.restart(C);
    wait_until(
        Instant::now() + Duration::from_secs(5),
        "c rejoins: its vote is fresh on every node and they all answer dc2",
        || {
            for i in ALL {
                state_of(&c, i, |st| {
                    vote_is(st, "dc1", "c", false) && vote_is(st, "dc2", "c", true)
                })?;
            }
            c.all_answer(&ALL, "dc2")
        },
    );
    c.dc("dc1").accept(c.node(B).ip);
    c.dc("dc1").accept(c.node(C).ip);
    wait_until(
        Instant::now() + RECOVERY,
        "every node answers dc1 again",
        || c.all_answer(&ALL, "dc1"),
    );
}

#[test]
fn a_cut_link_is_bridged_by_the_third_node() {
    // a and b never talk to each other; both talk to c. With quorum `any`, b's down vote alone
    // withdraws a DC, so a answering without dc1 proves b's view reached it through c.
    let opts = ClusterOpts::default()
        .quorum("any")
        .peers(A, &[Peer::Node(C)])
        .peers(B, &[Peer::Node(C)]);
    let c = cluster(opts);

    for (me, other) in [(A, "b"), (B, "a")] {
        let st = c.node(me).state();
        let peers: Vec<&str> = st["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["node"].as_str())
            .collect();
        assert_eq!(peers, ["c"], "{} pulls from c alone", c.node(me).id);
        assert!(
            DCS.iter().all(|dc| vote_is(&st, dc, other, true)),
            "{} holds {other}'s fresh votes: {st}",
            c.node(me).id
        );
    }

    let broke = Instant::now();
    c.dc("dc1").refuse(c.node(B).ip);
    // One exchange more than usual: b's report travels two hops.
    let gone = wait_until(
        broke + WITHDRAWAL + EXCHANGE,
        "a withdraws dc1 on b's word",
        || c.all_answer(&[A], "dc2"),
    );
    eprintln!("b's down vote reached a through c in {:?}", gone - broke);
    state_of(&c, A, |st| {
        vote_is(st, "dc1", "b", false) && endpoint_state(st, "dc1")["local"] == "up"
    })
    .unwrap();
    // And the other way round: a's view reaches b.
    c.dc("dc2").refuse(c.node(A).ip);
    wait_until(
        Instant::now() + WITHDRAWAL + EXCHANGE,
        "b withdraws dc2 on a's word",
        || c.all_answer(&[B], "dc3"),
    );
}

#[test]
fn a_drain_reaches_every_node_and_survives_a_restart() {
    let mut c = cluster(ClusterOpts::default());

    let run = c.node(A).cli(&["drain", "dc1", "--reason", "maintenance"]);
    let issued = Instant::now();
    assert!(run.status.success(), "drain: {run:?}");
    assert!(run.stdout.contains("\"dc\":\"dc1\""), "{run:?}");
    assert_eq!(c.node(A).answer(), "dc2", "a drains at once");
    let reached = wait_until(issued + DRAIN_REACH, "b and c stop answering dc1", || {
        c.all_answer(&[B, C], "dc2")
    });
    eprintln!("the drain reached b and c in {:?}", reached - issued);
    state_of(&c, B, |st| {
        st["drains"].as_array().unwrap().iter().any(|d| {
            d["dc"] == "dc1"
                && d["in_force"] == true
                && d["issued_by"] == "a"
                && d["reason"] == "maintenance"
        }) && dc_state(st, "dc1")["effective"] == "drained"
    })
    .unwrap();

    // b persisted it; restarted without any peer, it can only know it from its state directory.
    let file = c.node(B).state_dir.join("drains.json");
    let persisted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("b's drains.json")).unwrap();
    assert_eq!(persisted["entries"]["dc1"]["active"], true, "{persisted}");
    c.kill(B);
    c.restart_alone(B);
    assert_eq!(
        c.node(B).answer(),
        "dc2",
        "the drain holds on b right after a restart"
    );
    let st = c.node(B).state();
    assert_eq!(st["peers"], json!([]), "b has no peers to learn it from");
    assert_eq!(dc_state(&st, "dc1")["drained"], true);
    // And restarted as it was, it holds too.
    c.kill(B);
    c.restart(B);
    assert_eq!(
        c.node(B).answer(),
        "dc2",
        "the drain holds on b after a restart"
    );

    let run = c.node(A).cli(&["undrain", "dc1"]);
    let lifted = Instant::now();
    assert!(run.status.success(), "undrain: {run:?}");
    wait_until(lifted + DRAIN_REACH, "every node answers dc1 again", || {
        c.all_answer(&ALL, "dc1")
    });
    let persisted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(persisted["entries"]["dc1"]["active"], false, "{persisted}");
    // The undrain survives a restart as well: the old drain does not come back.
    c.kill(B);
    c.restart(B);
    assert_eq!(c.node(B).answer(), "dc1");
    stays_eq(
        EXCHANGE * 4,
        "b answers dc1",
        || c.node(B).answer(),
        "dc1".to_string(),
    );
}

#[test]
fn an_expiring_drain_lifts_and_the_last_healthy_dc_is_protected() {
    let c = cluster(ClusterOpts::default());
    let a = c.node(A);

    // A drain for 2 s: everywhere, then gone by itself.
    let before = Instant::now();
    let run = a.cli(&["drain", "dc1", "--for", "2s"]);
    assert!(run.status.success(), "drain --for 2s: {run:?}");
    wait_until(
        Instant::now() + DRAIN_REACH,
        "every node drains dc1",
        || c.all_answer(&ALL, "dc2"),
    );
    let lifted = wait_until(
        before + 2 * SECOND + EXCHANGE + SECOND,
        "the drain lifts by itself everywhere",
        || c.all_answer(&ALL, "dc1"),
    );
    let after = lifted - before;
    eprintln!("the 2 s drain lifted on every node {after:?} after it was issued");
    assert!(
        after >= Duration::from_millis(1900),
        "lifted early, after {after:?}"
    );

    // dc2 and dc3 die: dc1 is the last healthy DC, and draining it is refused, naming the
    // service it would leave with nothing.
    c.dc("dc2").down();
    c.dc("dc3").down();
    wait_until(
        Instant::now() + WITHDRAWAL,
        "a sees dc2 and dc3 down",
        || {
            state_of(&c, A, |st| {
                dc_state(st, "dc2")["effective"] == "down"
                    && dc_state(st, "dc3")["effective"] == "down"
            })
        },
    );
    let (status, body) = post_json(a.admin, "/api/v1/drain", &json!({ "dc": "dc1" }));
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(SERVICE),
        "the refusal names the service: {error}"
    );
    let run = a.cli(&["drain", "dc1"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains("409") && run.stderr.contains(SERVICE),
        "{run:?}"
    );
    assert_eq!(
        dc_state(&a.state(), "dc1")["drained"],
        false,
        "nothing was drained"
    );

    // --force drains it anyway; with dc3 back, every node answers dc3 rather than dc1.
    let run = a.cli(&["drain", "dc1", "--force", "--reason", "forced"]);
    assert!(run.status.success(), "drain --force: {run:?}");
    c.dc("dc3").up();
    wait_until(
        Instant::now() + RECOVERY + DRAIN_REACH,
        "every node answers dc3",
        || c.all_answer(&ALL, "dc3"),
    );
    for i in ALL {
        state_of(&c, i, |st| dc_state(st, "dc1")["drained"] == true).unwrap();
    }
}

// ---- Authentication -------------------------------------------------------------------------

/// Hex HMAC-SHA256 of the parts joined by newlines, computed here independently of the server.
fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&parts.join(&b"\n"[..]));
    hex::encode(mac.finalize().into_bytes())
}

fn unix_ms() -> u64 {
    steerdns::clock::now_ms()
}

/// The headers of an exchange request from `node`, signed with `secret`.
fn signed_request(secret: &str, node: &str, time_ms: u64, nonce: &str) -> Vec<(String, String)> {
    let time = time_ms.to_string();
    let signature = hmac_hex(
        secret,
        &[
            b"request",
            node.as_bytes(),
            time.as_bytes(),
            nonce.as_bytes(),
        ],
    );
    vec![
        ("x-steerdns-node".into(), node.into()),
        ("x-steerdns-time".into(), time),
        ("x-steerdns-nonce".into(), nonce.into()),
        ("x-steerdns-signature".into(), signature),
    ]
}

fn pull(admin: std::net::SocketAddr, headers: &[(String, String)]) -> HttpResponse {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    http_request(admin, "GET", "/api/v1/peer/exchange", &h, b"").expect("pulling a node")
}

fn refused(node: &RegionNode, reason: &str) -> f64 {
    metric(
        &node.metrics(),
        &format!("steerdns_peer_auth_refused_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn a_peer_with_the_wrong_secret_changes_nothing() {
    // d signs with another secret. a pulls from d and d from a. Anything of d's that got into
    // a would show: d votes dc1 down (its path is broken) and drains dc2, and with quorum `any`
    // a would answer dc3.
    let opts = ClusterOpts::default()
        .quorum("any")
        .secret(D, "not-the-cluster-secret")
        .peers(A, &[Peer::Node(B), Peer::Node(C), Peer::Node(D)])
        .peers(B, &[Peer::Node(A), Peer::Node(C)])
        .peers(C, &[Peer::Node(A), Peer::Node(B)])
        .peers(D, &[Peer::Node(A)]);
    let c = TestCluster::start(4, &fast_zone(), opts);
    c.dc("dc1").refuse(c.node(D).ip);
    c.wait_converged(&ALL);
    let before = refused(c.node(A), "bad_signature");

    wait_until(Instant::now() + WITHDRAWAL, "d votes dc1 down", || {
        state_of(&c, D, |st| vote_is(st, "dc1", "d", false))
    });
    let run = c
        .node(D)
        .cli(&["drain", "dc2", "--reason", "from the wrong cluster"]);
    assert!(run.status.success(), "drain on d: {run:?}");
    assert_eq!(c.node(D).answer(), "dc3", "d itself acts on its view");

    holds_for(EXCHANGE * 8, "a is untouched by d", || {
        c.all_answer(&ALL, "dc1")?;
        state_of(&c, A, |st| {
            !report_ids(st).contains(&"d".to_string())
                && st["drains"] == json!([])
                && vote(st, "dc1", "d").is_none()
        })
    });
    let after = refused(c.node(A), "bad_signature");
    assert!(
        after >= before + 3.0,
        "a counts d's refused requests: {before} -> {after}"
    );
    let st = c.node(A).state();
    let to_d = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["url"]
                .as_str()
                .unwrap()
                .contains(&c.node(D).ip.to_string())
        })
        .unwrap()
        .clone();
    assert!(
        to_d["node"].is_null() && to_d["last_error"].is_string(),
        "{to_d}"
    );
    assert!(c.node(A).log().contains("peer request refused"));
}

#[test]
fn a_replayed_request_is_refused() {
    let c = TestCluster::start(1, &fast_zone(), ClusterOpts::default());
    let a = c.node(A);
    let nonce = format!("replay-{}", unix_ms());
    let headers = signed_request(CLUSTER_SECRET, "tester", unix_ms(), &nonce);

    let first = pull(a.admin, &headers);
    assert_eq!(
        first.status,
        200,
        "a correctly signed request: {}",
        first.text()
    );
    // The response is signed for our nonce and this body.
    let expected = hmac_hex(
        CLUSTER_SECRET,
        &[b"response", nonce.as_bytes(), &first.body],
    );
    assert_eq!(
        first.header("x-steerdns-signature"),
        Some(expected.as_str())
    );
    assert_eq!(first.json()["from"], "a");

    let replayed_before = refused(a, "replayed");
    let again = pull(a.admin, &headers);
    assert_eq!(
        again.status,
        401,
        "the same request again: {}",
        again.text()
    );
    assert!(again.header("x-steerdns-signature").is_none());
    assert_eq!(refused(a, "replayed"), replayed_before + 1.0);

    // Neither an old request with a fresh nonce nor a tampered one passes.
    let old = signed_request(CLUSTER_SECRET, "tester", unix_ms() - 60_000, "old-nonce");
    assert_eq!(pull(a.admin, &old).status, 401);
    let mut tampered = signed_request(CLUSTER_SECRET, "tester", unix_ms(), "tampered-nonce");
    tampered[0].1 = "someone-else".into();
    assert_eq!(pull(a.admin, &tampered).status, 401);
    assert_eq!(refused(a, "expired"), 1.0);
    assert!(refused(a, "bad_signature") >= 1.0);
}

/// What the fake peer answers a's pulls with.
enum FakeAnswer {
    /// A captured response, with the signature it carried (made for another nonce).
    Replay { body: Vec<u8>, signature: String },
    /// The same body, signed for the nonce of the request at hand (the control).
    Resign { body: Vec<u8> },
}

#[test]
fn a_replayed_response_is_refused() {
    // a pulls from a fake peer only; b is a real node of the cluster that nobody pulls from.
    let opts = ClusterOpts::default()
        .peers(A, &[Peer::Fake(1)])
        .peers(B, &[]);
    let c = TestCluster::start(2, &fast_zone(), opts);
    c.wait_converged(&[A]);
    c.wait_converged(&[B]);

    // A legitimate exchange with b, which has drained dc1: captured, signed for our nonce.
    let run = c.node(B).cli(&["drain", "dc1", "--reason", "captured"]);
    assert!(run.status.success(), "drain on b: {run:?}");
    let nonce = format!("capture-{}", unix_ms());
    let captured = pull(
        c.node(B).admin,
        &signed_request(CLUSTER_SECRET, "a", unix_ms(), &nonce),
    );
    assert_eq!(captured.status, 200, "{}", captured.text());
    assert!(
        captured.text().contains("\"captured\""),
        "it carries the drain"
    );
    let signature = captured.header("x-steerdns-signature").unwrap().to_string();
    assert_eq!(
        signature,
        hmac_hex(
            CLUSTER_SECRET,
            &[b"response", nonce.as_bytes(), &captured.body]
        )
    );

    let answer = Arc::new(Mutex::new(FakeAnswer::Replay {
        body: captured.body.clone(),
        signature,
    }));
    let serving = answer.clone();
    let fake = HttpStub::start(c.block.fake_peer(1), move |req| {
        let nonce = req
            .header("x-steerdns-nonce")
            .unwrap_or_default()
            .to_string();
        let (body, signature) = match &*serving.lock().unwrap() {
            FakeAnswer::Replay { body, signature } => (body.clone(), signature.clone()),
            FakeAnswer::Resign { body } => (
                body.clone(),
                hmac_hex(CLUSTER_SECRET, &[b"response", nonce.as_bytes(), body]),
            ),
        };
        let mut resp = StubResponse::new(200, body);
        resp.headers = vec![
            ("content-type".into(), "application/json".into()),
            ("x-steerdns-signature".into(), signature),
        ];
        Some(resp)
    })
    .expect("starting the fake peer");

    let before = refused(c.node(A), "bad_signature");
    let pulls = fake.requests();
    wait_until(
        Instant::now() + 5 * SECOND,
        "a pulls the replay four times",
        || {
            if fake.requests() >= pulls + 4 {
                Ok(())
            } else {
                Err(format!("{} pulls", fake.requests() - pulls))
            }
        },
    );
    // Nothing of it got in: no drain, no report from b, dc1 still answered.
    assert_eq!(c.node(A).answer(), "dc1");
    state_of(&c, A, |st| {
        st["drains"] == json!([]) && !report_ids(st).contains(&"b".to_string())
    })
    .unwrap();
    let after = refused(c.node(A), "bad_signature");
    assert!(
        after >= before + 3.0,
        "a counts the refused responses: {before} -> {after}"
    );

    // The control: the same body signed for a's own nonce is taken in, so the replay was
    // refused for its signature alone.
    *answer.lock().unwrap() = FakeAnswer::Resign {
        body: captured.body,
    };
    wait_until(
        Instant::now() + DRAIN_REACH,
        "a takes the re-signed message in",
        || c.all_answer(&[A], "dc2"),
    );
    state_of(&c, A, |st| report_ids(st).contains(&"b".to_string())).unwrap();
}
