//! Faults under load (issue 8): while a steady stream of queries runs against node a, one fault
//! after another: zone reloads every second (valid, broken, valid), the GeoIP database swapped,
//! a backend flapping, the peer restarting, the state directory unwritable while a drain is
//! issued (the drain is refused and nothing changes), the GeoIP file deleted. Not one query may
//! fail or get a wrong answer, and every fault must show in the metrics and the events.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

use crate::regions_support::*;
use crate::support::*;

/// Queries `www` at about 70 per second until stopped; counts answers that are NOERROR with
/// exactly one address of a DC, and everything else (timeouts included).
fn load(dns: SocketAddr, k: u8, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>, bad: Arc<AtomicU64>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a timeout");
    let mut id: u16 = 0;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        id = id.wrapping_add(1);
        let q = query(SERVICE, RecordType::A).id(id);
        let good = sock.send_to(&q.wire(), dns).is_ok()
            && loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => match hickory_proto::op::Message::from_vec(&buf[..n]) {
                        // A late answer to an earlier query: keep waiting for ours.
                        Ok(m) if m.metadata.id != id => continue,
                        Ok(m) => {
                            break m.metadata.response_code == ResponseCode::NoError
                                && m.answers.len() == 1
                                && matches!(&m.answers[0].data, RData::A(a)
                                    if matches!(a.0.octets(), [127, kk, d, 1] if kk == k && (101..=103).contains(&d)));
                        }
                        Err(_) => break false,
                    },
                    Err(_) => break false,
                }
            };
        if good {
            ok.fetch_add(1, Ordering::Relaxed);
        } else {
            bad.fetch_add(1, Ordering::Relaxed);
        }
        // About 70 queries a second: under the default RRL rate of 100 identical answers per
        // second, which this single client would otherwise (rightly) run into.
        std::thread::sleep(Duration::from_millis(12));
    }
}

fn reload(admin: SocketAddr) -> u16 {
    post_json(admin, "/api/v1/reload", &json!({})).0
}

#[test]
fn faults_under_load_lose_no_answer() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let geo = tmp.path().join("geo.mmdb");
    std::fs::copy(
        manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb"),
        &geo,
    )
    .expect("copying the GeoIP fixture");
    let opts = ClusterOpts {
        geoip: Some(geo.clone()),
        ..ClusterOpts::default()
    };
    let mut c = TestCluster::start(2, &fast_zone(), opts);
    c.wait_converged(&[0, 1]);
    let a = c.node(0).admin;
    let dns = c.node(0).dns;
    let k = c.block.0;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loader = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        std::thread::spawn(move || load(dns, k, stop, ok, bad))
    };

    // 1. Zone reloads every second: valid (TTL changed), broken, valid again.
    let zone_file = c.dir().join("zones/gslb.yaml");
    let original = std::fs::read_to_string(&zone_file).expect("the zone");
    std::fs::write(&zone_file, original.replace("ttl: 5", "ttl: 7")).expect("rewrite");
    assert_eq!(reload(a), 200);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&zone_file, "zone: gslb.test\nrecords: [not, a, map]\n").expect("break");
    assert_eq!(reload(a), 422, "a broken zone is reported");
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&zone_file, &original).expect("restore");
    assert_eq!(reload(a), 200);
    std::thread::sleep(Duration::from_secs(1));

    // 2. The GeoIP database swapped for another one (atomically, as geoipupdate does).
    let next = tmp.path().join("next.mmdb");
    std::fs::copy(
        manifest_path("tests/fixtures/geoip/GeoLite2-Country-Test.mmdb"),
        &next,
    )
    .expect("copying the new database");
    std::fs::rename(&next, &geo).expect("swapping the database");
    assert_eq!(reload(a), 200);
    std::thread::sleep(Duration::from_millis(500));

    // 3. A backend flaps: dc1 down, then up.
    c.dc("dc1").down();
    let soon = || Instant::now() + Duration::from_secs(5);
    wait_eq(
        soon(),
        "dc1 withdrawn on a",
        || c.node(0).answer(),
        "dc2".to_string(),
    );
    c.dc("dc1").up();
    wait_eq(
        soon(),
        "dc1 back on a",
        || c.node(0).answer(),
        "dc1".to_string(),
    );

    // 4. The peer restarts.
    c.kill(1);
    std::thread::sleep(Duration::from_millis(600));
    c.restart(1);

    // 5. The state directory cannot be written while a drain is issued: refused, not applied.
    let blocker = c.node(0).state_dir.join("drains.tmp");
    std::fs::create_dir_all(&blocker).expect("blocking the drain file's temporary name");
    let (status, body) = post_json(
        a,
        "/api/v1/drain",
        &json!({ "dc": "dc2", "reason": "test" }),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("could not be persisted"),
        "{body}"
    );
    std::fs::remove_dir(&blocker).expect("unblocking");
    let state = c.node(0).state();
    assert!(
        state["drains"].as_array().is_some_and(|d| d.is_empty()),
        "a refused drain left a trace: {}",
        state["drains"]
    );

    // 6. The GeoIP file deleted: the loaded database keeps serving.
    std::fs::remove_file(&geo).expect("deleting the database");
    assert_eq!(reload(a), 422, "the missing database is reported");
    std::thread::sleep(Duration::from_millis(500));

    stop.store(true, Ordering::Relaxed);
    loader.join().expect("the load thread");
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    assert!(ok > 200, "too little load to mean anything: {ok} answers");
    assert_eq!(bad, 0, "{bad} of {} queries failed or were wrong", ok + bad);

    // Every fault is visible.
    let m = c.node(0).metrics();
    assert!(
        metric(&m, "steerdns_zone_reloads_total{result=\"error\"}") >= 2.0,
        "zone errors"
    );
    assert!(
        metric(&m, "steerdns_geoip_loads_total{result=\"ok\"}") >= 2.0,
        "GeoIP swap"
    );
    assert!(
        metric(&m, "steerdns_geoip_loads_total{result=\"error\"}") >= 1.0,
        "GeoIP missing"
    );
    let events = c.node(0).state()["events"].to_string();
    for needle in [
        "zone reload FAILED",
        "GeoIP reload FAILED",
        "is DOWN",
        "lost",
        "reachable",
    ] {
        assert!(
            events.contains(needle),
            "no event with {needle:?}: {events}"
        );
    }
    let log = c.node(0).log();
    assert!(log.contains("drain"), "the refused drain is not in the log");
}

#[test]
fn oversized_or_malformed_admin_bodies_change_nothing() {
    let server = TestServer::start_with(DEMO_ZONE_FOR_LIMITS, &[]);
    let big = vec![b'{'; 100 * 1024];
    let r = http_request(
        server.admin,
        "POST",
        "/api/v1/drain",
        &[("content-type", "application/json")],
        &big,
    )
    .expect("the admin API answers");
    assert_eq!(r.status, 413, "a 100 KiB body is refused");
    let (status, body) = post_json(server.admin, "/api/v1/drain", &json!({ "dc": 7 }));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("bad JSON"),
        "{body}"
    );
    let state = get_json(server.admin, "/api/v1/state");
    assert!(
        state["drains"].as_array().is_some_and(|d| d.is_empty()),
        "{}",
        state["drains"]
    );
}

const DEMO_ZONE_FOR_LIMITS: &str = "
zone: limits.test
soa: { primary: ns1, contact: hostmaster@limits.test }
nameservers: { ns1: [192.0.2.53] }
datacenters: { fra: { location: [50, 8] } }
records:
  www: { service: { endpoints: { fra: [192.0.2.1] } } }
";
