//! Faults under load (issue 8): while a steady stream of queries runs against node a, one fault
//! after another: zone reloads every second (valid, broken, valid), the GeoIP database swapped,
//! a backend flapping, the peer restarting, the state directory unwritable while a drain is
//! issued (the drain is refused and nothing changes), the GeoIP file deleted. Not one query may
//! fail or get a wrong answer, and every fault must show in the metrics and the events.
//!
//! The service routes by distance, and the load asks on behalf of clients in several places
//! (ECS), so every answer has one right DC at each stage: a client must keep getting it, or,
//! across a change, its old DC until the first answer from the new one and the new one only
//! from then on.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

use crate::regions_support::*;
use crate::support::*;

/// The clients the load asks for: a name for messages, and the network sent in ECS (none: the
/// resolver's own address, 127.0.0.1, which no database knows). Places are those of the MaxMind
/// test databases (tests/fixtures/geoip/README.md).
const CLIENTS: [(&str, Option<&str>); 5] = [
    ("the resolver itself", None),
    ("London", Some("81.2.69.142/32")),
    ("Milton, US", Some("216.160.83.56/32")),
    ("Changchun", Some("175.16.199.0/24")),
    ("Japan", Some("2001:218::/32")),
];

/// Where each of `CLIENTS` must be answered from (dc1 Frankfurt, dc2 Ashburn, dc3 Singapore;
/// a client no database places gets the zone's order, dc1 first). With the City test database
/// and every DC up: each to its nearest.
const CITY: [&str; 5] = ["dc1", "dc1", "dc2", "dc3", "dc3"];
/// With the Country test database, which places countries at their centres and does not know
/// Changchun at all.
const COUNTRY: [&str; 5] = ["dc1", "dc1", "dc2", "dc1", "dc3"];
/// The same with dc1 down: those it served go to their next-nearest DC (London, 5,900 km from
/// Ashburn, 10,800 from Singapore), or next in the zone's order.
const COUNTRY_DC1_DOWN: [&str; 5] = ["dc2", "dc2", "dc2", "dc2", "dc3"];

/// What the load checks each answer against, changed by the test as it moves from stage to
/// stage.
struct Stage {
    name: &'static str,
    /// The DC each client must get in this stage ...
    want: [&'static str; 5],
    /// ... and the one it got in the stage before, allowed until its first answer from `want`.
    before: [Option<&'static str>; 5],
    /// Right answers per client in this stage.
    answered: [u64; 5],
    /// Every wrong or missing answer so far, in any stage.
    failures: Vec<String>,
}

/// Queries `www` at about 70 per second, going round `CLIENTS`, and checks each answer against
/// the current stage until stopped.
struct Load {
    stage: Arc<Mutex<Stage>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    /// Every finished stage with its right answers per client.
    done: Vec<(&'static str, [u64; 5])>,
}

impl Load {
    fn start(dns: SocketAddr, block: Block, name: &'static str, want: [&'static str; 5]) -> Load {
        let stage = Arc::new(Mutex::new(Stage {
            name,
            want,
            before: [None; 5],
            answered: [0; 5],
            failures: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stage, stop) = (stage.clone(), stop.clone());
            std::thread::spawn(move || run_load(dns, block, &stage, &stop))
        };
        Load {
            stage,
            stop,
            thread,
            done: Vec::new(),
        }
    }

    /// Starts the next stage, before its fault happens: from now on each client must get `want`
    /// once it has seen the change. The stage before must have settled; it ends once every
    /// client has been answered in it.
    fn next(&mut self, name: &'static str, want: [&'static str; 5]) {
        self.wait_all_answered();
        let mut stage = lock(&self.stage);
        assert!(
            stage.before.iter().all(Option::is_none),
            "stage {:?} had not settled: {:?} still expected to leave {:?}",
            stage.name,
            stage.want,
            stage.before
        );
        self.done.push((stage.name, stage.answered));
        let old = stage.want;
        stage.name = name;
        stage.want = want;
        stage.before = std::array::from_fn(|i| (old[i] != want[i]).then_some(old[i]));
        stage.answered = [0; 5];
    }

    /// Waits until every client has had a right answer in this stage (the load goes round them
    /// all about 14 times a second).
    fn wait_all_answered(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        wait_until(deadline, "every client is answered in this stage", || {
            let stage = lock(&self.stage);
            if stage.answered.iter().all(|n| *n > 0) {
                Ok(())
            } else {
                Err(format!(
                    "stage {:?}: right answers per client {:?}; {:#?}",
                    stage.name, stage.answered, stage.failures
                ))
            }
        });
    }

    /// Waits until every client whose DC changes in this stage has been answered from the new
    /// one.
    fn wait_settled(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        wait_until(deadline, "every client gets its new DC", || {
            let stage = lock(&self.stage);
            if stage.before.iter().all(Option::is_none) {
                Ok(())
            } else {
                Err(format!(
                    "stage {:?}: want {:?}, still {:?}; {:#?}",
                    stage.name, stage.want, stage.before, stage.failures
                ))
            }
        });
    }

    /// Stops the load; returns every finished stage's right answers per client, and every
    /// wrong or missing answer.
    fn finish(mut self) -> (Vec<(&'static str, [u64; 5])>, Vec<String>) {
        self.wait_all_answered();
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the load thread");
        let mut stage = lock(&self.stage);
        self.done.push((stage.name, stage.answered));
        let failures = std::mem::take(&mut stage.failures);
        drop(stage);
        (self.done, failures)
    }
}

/// The stage, also after a panic elsewhere (the test fails then anyway).
fn lock(stage: &Mutex<Stage>) -> MutexGuard<'_, Stage> {
    stage.lock().unwrap_or_else(|e| e.into_inner())
}

/// The load's loop.
fn run_load(dns: SocketAddr, block: Block, stage: &Mutex<Stage>, stop: &AtomicBool) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a timeout");
    let mut id: u16 = 0;
    for (i, (client, ecs)) in CLIENTS.iter().enumerate().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        id = id.wrapping_add(1);
        let got = answer_for(&sock, dns, block, id, *ecs);
        let mut stage = lock(stage);
        if got == stage.want[i] {
            stage.before[i] = None;
            stage.answered[i] += 1;
        } else if stage.before[i] == Some(got.as_str()) {
            // Not yet changed for this client: still right.
            stage.answered[i] += 1;
        } else {
            let failure = format!(
                "stage {:?}: {client} got {got}, want {}{}",
                stage.name,
                stage.want[i],
                stage.before[i]
                    .map(|b| format!(" (or {b} until then)"))
                    .unwrap_or_default()
            );
            stage.failures.push(failure);
        }
        drop(stage);
        // About 70 queries a second: under the default RRL rate of 100 identical answers per
        // second, which this single client would otherwise (rightly) run into.
        std::thread::sleep(Duration::from_millis(12));
    }
}

/// One query for `www`, with ECS for `ecs` if given: the DC its single address is in ("dc2"),
/// or what came instead.
fn answer_for(
    sock: &UdpSocket,
    dns: SocketAddr,
    block: Block,
    id: u16,
    ecs: Option<&str>,
) -> String {
    let mut q = query(SERVICE, RecordType::A).id(id);
    if let Some(net) = ecs {
        q = q.ecs(net);
    }
    if let Err(e) = sock.send_to(&q.wire(), dns) {
        return format!("nothing sent: {e}");
    }
    let mut buf = [0u8; 1500];
    loop {
        let m = match sock.recv_from(&mut buf) {
            Ok((n, _)) => match hickory_proto::op::Message::from_vec(&buf[..n]) {
                Ok(m) => m,
                Err(e) => return format!("an unreadable reply: {e}"),
            },
            Err(e) => return format!("no reply: {e}"),
        };
        // A late answer to an earlier query: keep waiting for ours.
        if m.metadata.id != id {
            continue;
        }
        if m.metadata.response_code != ResponseCode::NoError {
            return format!("{:?}", m.metadata.response_code);
        }
        return match m.answers.as_slice() {
            [one] => block.dc_of(one),
            more => format!("{} records", more.len()),
        };
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
    // By distance, so that the GeoIP swap and a DC going down move some clients and not others.
    let zone = fast_zone().replace("policy: failover", "policy: nearest");
    let mut c = TestCluster::start(2, &zone, opts);
    c.wait_converged(&[0, 1]);
    let a = c.node(0).admin;
    let dns = c.node(0).dns;
    let block = c.block;
    let settles = Duration::from_secs(5);

    // 1. Zone reloads every second: valid (TTL changed), broken, valid again.
    let mut load = Load::start(dns, block, "zone reloads", CITY);
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
    load.next("GeoIP swapped", COUNTRY);
    let next = tmp.path().join("next.mmdb");
    std::fs::copy(
        manifest_path("tests/fixtures/geoip/GeoLite2-Country-Test.mmdb"),
        &next,
    )
    .expect("copying the new database");
    std::fs::rename(&next, &geo).expect("swapping the database");
    assert_eq!(reload(a), 200);
    load.wait_settled(settles);
    std::thread::sleep(Duration::from_millis(500));

    // 3. A backend flaps: dc1 down, then up.
    load.next("dc1 down", COUNTRY_DC1_DOWN);
    c.dc("dc1").down();
    load.wait_settled(settles);
    load.next("dc1 back", COUNTRY);
    c.dc("dc1").up();
    load.wait_settled(settles);

    // 4. The peer restarts.
    load.next("peer restart", COUNTRY);
    c.kill(1);
    std::thread::sleep(Duration::from_millis(600));
    c.restart(1);

    // 5. The state directory cannot be written while a drain is issued: refused, not applied.
    load.next("drain refused", COUNTRY);
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
    load.next("GeoIP file deleted", COUNTRY);
    std::fs::remove_file(&geo).expect("deleting the database");
    assert_eq!(reload(a), 422, "the missing database is reported");
    std::thread::sleep(Duration::from_millis(500));

    let (stages, failures) = load.finish();
    for (stage, answered) in &stages {
        eprintln!("{stage}: right answers per client {answered:?}");
    }
    assert!(
        failures.is_empty(),
        "{} queries failed or were wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let ok: u64 = stages.iter().flat_map(|(_, a)| a).sum();
    assert!(ok > 200, "too little load to mean anything: {ok} answers");

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
