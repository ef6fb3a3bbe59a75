//! Operating a node (issue 6): hot reload under load, the admin API with and without its token,
//! metric values after known traffic, the status page in headless Chromium, the compose file,
//! the CLI against a running node, and JSON logs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::ops_support::*;
use crate::support::{manifest_path, query, query_udp, udp_socket};

const WWW: &str = "www.api.example.com";
/// The admin token of the nodes that have one.
const TOKEN: &str = "t0ken-for-the-ops-tests";

/// A zone with one static name, `www`, whose address the reload tests change.
fn static_zone(www: &str) -> String {
    format!(
        r#"
zone: api.example.com
soa: {{ primary: ns1, contact: hostmaster@example.com }}
nameservers: {{ ns1: [192.0.2.53] }}
records:
  www: {{ A: {www} }}
"#
    )
}

/// Two mistakes, so the reload error must list more than the first.
const BROKEN_ZONE: &str = r#"
zone: api.example.com
soa: { primary: ns1, contact: hostmaster@example.com }
nameservers: { ns1: [192.0.2.53] }
datacenters:
  fra: { location: [50.11, 8.68] }
records:
  www: { A: 192.0.2.300 }
  api:
    service:
      endpoints:
        mars: [192.0.2.2]
"#;

/// The one address a client on 127.0.0.1 (unknown to the GeoIP database) gets for `www`.
fn answer_of(node: &Node) -> String {
    let reply = query_udp(node.dns, &query(WWW, RecordType::A));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    match addresses(&reply).as_slice() {
        [one] => one.clone(),
        other => panic!("expected one address for {WWW}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Reload under load

/// What one load thread saw.
#[derive(Default, Debug)]
struct LoadReport {
    sent: usize,
    old: usize,
    new: usize,
    failures: Vec<String>,
}

/// Queries `www` over UDP until `stop`, one query in flight, each waiting for its reply. Every
/// reply must be NOERROR with exactly the old or the new address; once `new_only` is set
/// (before the query is sent), only the new one.
fn load(
    node: std::net::SocketAddr,
    old: String,
    new: String,
    new_only: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket");
    socket.connect(node).expect("connecting the UDP socket");
    let mut report = LoadReport::default();
    while !stop.load(Ordering::Relaxed) {
        let must_be_new = new_only.load(Ordering::SeqCst);
        let q = query(WWW, RecordType::A);
        report.sent += 1;
        let outcome = match try_query_udp(&socket, &q, Duration::from_secs(2)) {
            Err(e) => Err(e),
            Ok(reply) if reply.metadata.response_code != ResponseCode::NoError => {
                Err(format!("rcode {}", reply.metadata.response_code))
            }
            Ok(reply) => match addresses(&reply).as_slice() {
                [a] if *a == new => Ok(true),
                [a] if *a == old && !must_be_new => Ok(false),
                other => Err(format!("answer {other:?} (new only: {must_be_new})")),
            },
        };
        match outcome {
            Ok(true) => report.new += 1,
            Ok(false) => report.old += 1,
            Err(e) => report.failures.push(e),
        }
        // About a thousand queries a second per thread: a steady load that leaves the other
        // tests some CPU.
        std::thread::sleep(Duration::from_micros(700));
    }
    report
}

/// Waits until the node has handled a SIGHUP: the handler reloads the GeoIP data after the
/// zones, whatever their outcome, and nothing else reloads GeoIP data here.
fn hup_and_wait(node: &Node) {
    let before = node
        .metrics()
        .value("steerdns_geoip_loads_total", &[("result", "ok")]);
    node.signal("HUP");
    wait_until(Duration::from_secs(10), "the SIGHUP reload", || {
        node.metrics()
            .value("steerdns_geoip_loads_total", &[("result", "ok")])
            > before
    });
}

#[test]
fn reload_under_load_drops_nothing_and_reports_a_broken_file() {
    const OLD: &str = "192.0.2.1";
    const NEW: &str = "192.0.2.2";
    let _turn = heavy_turn();
    // Three thousand identical queries a second from one address: rate limiting would (rightly)
    // drop most of them.
    let node = Node::builder(&static_zone(OLD))
        .arg("--rrl")
        .arg("off")
        .start();
    let m = node.metrics();
    assert_eq!(m.get("steerdns_zone_last_reload_success", &[]), Some(1.0));
    assert_eq!(
        m.value("steerdns_zone_reloads_total", &[("result", "ok")]),
        1.0
    );

    let started = Instant::now();
    let new_only = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (new_only, stop, dns) = (new_only.clone(), stop.clone(), node.dns);
            std::thread::spawn(move || load(dns, OLD.into(), NEW.into(), new_only, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // A broken file: the API call fails, listing every problem; the old zone keeps serving.
    node.write_zone(BROKEN_ZONE);
    let r = post(node.admin, "/api/v1/reload", None, "");
    assert_eq!(r.status, 422, "reload of a broken zone: {r:?}");
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    for problem in [
        r#"field A: "192.0.2.300" is not an IPv4 or IPv6 address"#,
        r#"data center "mars" is not defined"#,
    ] {
        assert!(
            error.contains(problem),
            "{problem:?} not in the reload error:\n{error}"
        );
    }
    let m = node.metrics();
    assert_eq!(m.get("steerdns_zone_last_reload_success", &[]), Some(0.0));
    let errors = m.value("steerdns_zone_reloads_total", &[("result", "error")]);
    assert!(errors >= 1.0, "reload errors: {errors}");
    let unix_now = steerdns::clock::now_ms() as f64 / 1000.0;
    let attempted = m.value("steerdns_zone_last_reload_timestamp_seconds", &[]);
    assert!(
        (unix_now - attempted).abs() < 5.0,
        "last reload at {attempted}, now {unix_now}"
    );

    // SIGHUP with the broken file: another failed reload, still the old zone.
    hup_and_wait(&node);
    let m = node.metrics();
    assert!(m.value("steerdns_zone_reloads_total", &[("result", "error")]) >= errors + 1.0);
    assert_eq!(m.get("steerdns_zone_last_reload_success", &[]), Some(0.0));
    std::thread::sleep(Duration::from_millis(500));

    // The fixed file, with a new answer.
    node.write_zone(&static_zone(NEW));
    let r = post(node.admin, "/api/v1/reload", None, "");
    assert_eq!(r.status, 200, "reload of the fixed zone: {r:?}");
    assert_eq!(r.json()["ok"], true, "{r:?}");
    new_only.store(true, Ordering::SeqCst);
    let m = node.metrics();
    assert_eq!(m.get("steerdns_zone_last_reload_success", &[]), Some(1.0));
    assert!(m.value("steerdns_zone_reloads_total", &[("result", "ok")]) >= 2.0);
    std::thread::sleep(Duration::from_millis(500));
    hup_and_wait(&node);
    assert_eq!(
        node.metrics().get("steerdns_zone_last_reload_success", &[]),
        Some(1.0)
    );

    std::thread::sleep(Duration::from_secs(4).saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let reports: Vec<LoadReport> = threads
        .into_iter()
        .map(|t| t.join().expect("a load thread panicked"))
        .collect();
    let sent: usize = reports.iter().map(|r| r.sent).sum();
    let failures: Vec<&String> = reports.iter().flat_map(|r| &r.failures).collect();
    assert!(
        failures.is_empty(),
        "{} of {sent} queries failed, first ones: {:?}\nstderr:\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        node.stderr()
    );
    let (old, new): (usize, usize) = reports
        .iter()
        .fold((0, 0), |(o, n), r| (o + r.old, n + r.new));
    assert!(sent >= 1000, "only {sent} queries were sent: no real load");
    assert!(old > 0 && new > 0, "old answers {old}, new answers {new}");
    println!("{sent} queries: {old} old answers, {new} new ones, no failure");
    assert_eq!(answer_of(&node), NEW);
}

#[test]
fn a_reload_keeps_a_down_dc_out_of_the_answers() {
    let mut b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let iad = b[1].ip().to_string();
    // A load from one address, which rate limiting would (rightly) cut down.
    let node = Node::builder(&zone).arg("--rrl").arg("off").start();
    node.wait_ready();
    b[0].stop();
    wait_until(Duration::from_secs(10), "fra down", || {
        node.dc_status(WWW, "fra") == "down"
    });
    let _turn = heavy_turn();
    let stop = Arc::new(AtomicBool::new(false));
    let new_only = Arc::new(AtomicBool::new(true));
    let (dns, s) = (node.dns, stop.clone());
    let (old, new) = (iad.clone(), iad.clone());
    let thread = std::thread::spawn(move || load(dns, old, new, new_only, s));
    // fra must stay out of the answers throughout: after a reload that keeps the checks (one
    // more name), then after one that edits the check (which makes new probe targets).
    let more = format!("{zone}  status: {{ TXT: reloaded }}\n");
    let edited = more.replace("interval: 200ms", "interval: 300ms");
    for (zone, what) in [(&more, "same checks"), (&edited, "edited check")] {
        node.write_zone(zone);
        let r = post(node.admin, "/api/v1/reload", None, "");
        assert_eq!(r.status, 200, "{what}: {r:?}");
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(node.dc_status(WWW, "fra"), "down", "{what}");
    }
    hup_and_wait(&node);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let report = thread.join().expect("the load thread panicked");
    assert!(
        report.failures.is_empty(),
        "{} of {} answers were not iad, first ones: {:?}",
        report.failures.len(),
        report.sent,
        &report.failures[..report.failures.len().min(10)]
    );
    assert!(report.sent >= 500, "only {} queries", report.sent);
    let txt = query_udp(node.dns, &query("status.api.example.com", RecordType::TXT));
    assert_eq!(txt.answers.len(), 1, "the new zone is not served");
}

// ---------------------------------------------------------------------------------------------
// 2. The admin API and its token

/// The read endpoints: status page, metrics, state, explain.
const READS: [&str; 4] = [
    "/",
    "/metrics",
    "/api/v1/state",
    "/api/v1/explain?name=www.api.example.com&subnet=216.160.83.56/29",
];

fn drains(node: &Node) -> Vec<serde_json::Value> {
    node.state()["drains"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn admin_endpoints_with_and_without_the_token() {
    let mut b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let (fra, iad) = (b[0].ip().to_string(), b[1].ip().to_string());
    let node = Node::builder(&zone)
        .env("STEERDNS_ADMIN_TOKEN", TOKEN)
        .start();

    let live = node.get("/live");
    assert_eq!(
        (live.status, live.text().as_str()),
        (200, "ok\n"),
        "{live:?}"
    );
    node.wait_ready();
    assert_eq!(node.get("/ready").json()["ready"], true);
    wait_until(Duration::from_secs(10), "fra and iad up", || {
        node.dc_status(WWW, "fra") == "up" && node.dc_status(WWW, "iad") == "up"
    });

    // Reads are open without protect_reads, whatever the Authorization header says.
    for path in READS {
        for token in [None, Some("wrong"), Some(TOKEN)] {
            let r = get(node.admin, path, token);
            assert_eq!(r.status, 200, "GET {path} with token {token:?}: {r:?}");
        }
    }
    // Explain, as text and as JSON: Milton, WA goes to iad.
    let path = READS[3];
    let text = get(node.admin, path, None);
    assert!(
        text.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{text:?}"
    );
    let body = text.text();
    assert!(body.contains("iad") && body.contains(&iad), "{body}");
    let json = http(
        node.admin,
        "GET",
        path,
        &[("Accept", "application/json")],
        None,
    )
    .json();
    assert_eq!(json["dc"], "iad", "{json:#}");
    // Record data as the zone file would write it: type, then value.
    assert_eq!(
        json["answers"],
        serde_json::json!([format!("A {iad}")]),
        "{json:#}"
    );
    assert_eq!(json["rcode"], "NoError", "{json:#}");
    assert_eq!(json["name"], "www.api.example.com.", "{json:#}");
    for bad in [
        "/api/v1/explain",
        "/api/v1/explain?name=www.api.example.com&subnet=not-a-net",
        "/api/v1/explain?name=www.api.example.com&type=MX",
    ] {
        let r = node.get(bad);
        assert_eq!(r.status, 400, "GET {bad}: {r:?}");
        assert!(
            !r.json()["error"].as_str().unwrap_or_default().is_empty(),
            "{r:?}"
        );
    }

    // Changes without the token, with a wrong one, or with the token in another scheme: 401,
    // and nothing happens.
    let reloads = |node: &Node| {
        node.metrics()
            .value("steerdns_zone_reloads_total", &[("result", "ok")])
    };
    let reloads_before = reloads(&node);
    let drain_fra = r#"{"dc": "fra", "reason": "maintenance"}"#;
    let changes = [
        ("/api/v1/reload", ""),
        ("/api/v1/drain", drain_fra),
        ("/api/v1/undrain", r#"{"dc": "fra"}"#),
    ];
    let basic = format!("Basic {TOKEN}");
    let almost = format!("Bearer {TOKEN}x");
    for (path, body) in changes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some(basic.as_str()),
            Some(almost.as_str()),
        ] {
            let mut headers = vec![("Content-Type", "application/json")];
            headers.extend(auth.map(|a| ("Authorization", a)));
            let r = http(node.admin, "POST", path, &headers, Some(body));
            assert_eq!(r.status, 401, "POST {path} with {auth:?}: {r:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{r:?}");
        }
    }
    assert_eq!(reloads(&node), reloads_before, "a refused reload ran");
    assert!(drains(&node).is_empty(), "a refused drain was applied");
    assert_eq!(answer_of(&node), fra);

    // With the token.
    let r = post(node.admin, "/api/v1/reload", Some(TOKEN), "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(reloads(&node), reloads_before + 1.0);
    for (body, what) in [
        (r#"{"dc": "fra", "reason": "#, "truncated JSON"),
        (r#"{"reason": "no dc"}"#, "a missing dc"),
        (r#"{"dc": 7}"#, "a dc that is not a string"),
        ("", "an empty body"),
    ] {
        for path in ["/api/v1/drain", "/api/v1/undrain"] {
            let r = post(node.admin, path, Some(TOKEN), body);
            assert_eq!(r.status, 400, "POST {path} with {what}: {r:?}");
            let error = r.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(
                error.starts_with("bad JSON: "),
                "POST {path} with {what}: {error}"
            );
        }
    }
    assert!(drains(&node).is_empty(), "a bad request changed the drains");
    let r = post(
        node.admin,
        "/api/v1/drain",
        Some(TOKEN),
        r#"{"dc": "mars"}"#,
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.text().contains("mars"), "{r:?}");

    let r = post(node.admin, "/api/v1/drain", Some(TOKEN), drain_fra);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["drain"]["dc"], "fra", "{r:?}");
    assert_eq!(node.dc_status(WWW, "fra"), "drained");
    assert_eq!(answer_of(&node), iad);
    let d = drains(&node);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["reason"], "maintenance");

    // The last healthy DC is not drained without force.
    let r = post(node.admin, "/api/v1/drain", Some(TOKEN), r#"{"dc": "iad"}"#);
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("would leave no healthy data center for: www.api.example.com"),
        "{r:?}"
    );
    assert_eq!(node.dc_status(WWW, "iad"), "up");

    let r = post(
        node.admin,
        "/api/v1/undrain",
        Some(TOKEN),
        r#"{"dc": "fra"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(node.dc_status(WWW, "fra"), "up");
    assert_eq!(answer_of(&node), fra);

    // Ready never flips back, even with every backend gone.
    for backend in &mut b {
        backend.stop();
    }
    wait_until(Duration::from_secs(10), "fra and iad down", || {
        node.dc_status(WWW, "fra") == "down" && node.dc_status(WWW, "iad") == "down"
    });
    assert_eq!(node.get("/ready").status, 200);
    assert_eq!(node.get("/live").status, 200);
}

#[test]
fn protect_reads_puts_reads_behind_the_token() {
    let node = Node::builder(&static_zone("192.0.2.1"))
        .env("STEERDNS_ADMIN_TOKEN", TOKEN)
        .config("protect_reads: true\n")
        .start();
    // Liveness and readiness stay open for orchestrators.
    assert_eq!(node.get("/live").status, 200);
    node.wait_ready();
    for path in READS {
        for token in [None, Some("wrong")] {
            let r = get(node.admin, path, token);
            assert_eq!(r.status, 401, "GET {path} with token {token:?}: {r:?}");
        }
        let r = get(node.admin, path, Some(TOKEN));
        assert_eq!(r.status, 200, "GET {path} with the token: {r:?}");
    }
    assert_eq!(post(node.admin, "/api/v1/reload", None, "").status, 401);
    assert_eq!(
        post(node.admin, "/api/v1/reload", Some(TOKEN), "").status,
        200
    );
}

#[test]
fn without_a_token_loopback_clients_may_change_things() {
    let b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let node = Node::builder(&zone).start();
    node.wait_ready();
    wait_until(Duration::from_secs(10), "fra and iad up", || {
        node.dc_status(WWW, "fra") == "up" && node.dc_status(WWW, "iad") == "up"
    });
    assert_eq!(post(node.admin, "/api/v1/reload", None, "").status, 200);
    let r = post(node.admin, "/api/v1/drain", None, r#"{"dc": "fra"}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(node.dc_status(WWW, "fra"), "drained");
    let r = post(node.admin, "/api/v1/undrain", None, r#"{"dc": "fra"}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(node.dc_status(WWW, "fra"), "up");
    // A token sent anyway is ignored rather than refused.
    let r = post(node.admin, "/api/v1/reload", Some("anything"), "");
    assert_eq!(r.status, 200, "{r:?}");
}

/// Issue 18: a drain is never kept in memory without a word. A node without a state directory
/// refuses a drain (and an undrain) with the flag to set, changes nothing, and says in its state
/// and on its status page that drains are not kept; with one, both say where they are kept, and
/// the drain is written there.
#[test]
fn a_node_without_a_state_directory_refuses_drains_and_says_so() {
    let b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let node = Node::builder(&zone).without_state_dir().start();
    node.wait_ready();
    wait_until(Duration::from_secs(10), "fra and iad up", || {
        node.dc_status(WWW, "fra") == "up" && node.dc_status(WWW, "iad") == "up"
    });
    let want = "this node keeps no state directory, so a drain would be forgotten when it \
                restarts: start it with --state-dir DIR (or state_dir: in the node file)";
    for (path, body) in [
        ("/api/v1/drain", r#"{"dc": "fra", "reason": "maintenance"}"#),
        ("/api/v1/undrain", r#"{"dc": "fra"}"#),
    ] {
        let r = post(node.admin, path, None, body);
        assert_eq!(r.status, 409, "{path}: {r:?}");
        assert_eq!(r.json()["error"], want, "{path}: {r:?}");
    }
    assert_eq!(
        node.dc_status(WWW, "fra"),
        "up",
        "a refused drain was applied"
    );
    assert!(drains(&node).is_empty());
    assert_eq!(node.state()["drains_file"], serde_json::Value::Null);
    let page = node.get("/").text();
    assert!(
        page.contains("Not kept: this node has no state directory"),
        "the status page does not say drains are not kept"
    );

    // With a state directory: kept, shown, and still there after a restart.
    let node = Node::builder(&zone).start();
    node.wait_ready();
    let file = node.state()["drains_file"]
        .as_str()
        .expect("the drains file in the state")
        .to_string();
    assert!(file.ends_with("/state/drains.json"), "{file}");
    assert!(node.get("/").text().contains(&format!("Kept in {file}.")));
    let r = post(
        node.admin,
        "/api/v1/drain",
        None,
        r#"{"dc": "fra", "force": true}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let kept = std::fs::read_to_string(&file).expect("the drains file was written");
    assert!(kept.contains("\"fra\""), "{kept}");
}

#[test]
fn the_admin_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("writing the token file");
    let node = Node::builder(&static_zone("192.0.2.1"))
        .arg("--admin-token-file")
        .arg(file.to_str().expect("a UTF-8 path"))
        .start();
    assert_eq!(post(node.admin, "/api/v1/reload", None, "").status, 401);
    assert_eq!(
        post(node.admin, "/api/v1/reload", Some(TOKEN), "").status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Metric values after known traffic

/// `www` with two DCs and no check (always up): a client at 216.160.83.56 (Milton, WA in the
/// test database) gets iad; one the database does not know (127.0.0.1) gets fra, listed first.
const METRICS_ZONE: &str = r#"
zone: api.example.com
soa: { primary: ns1, contact: hostmaster@example.com }
nameservers: { ns1: [192.0.2.53] }
datacenters:
  fra: { location: [50.11, 8.68] }
  iad: { location: [38.95, -77.45] }
records:
  www:
    service:
      endpoints:
        fra: [203.0.113.10, "2001:db8:10::1"]
        iad: [198.51.100.20, "2001:db8:20::1"]
"#;

#[test]
fn metrics_count_exactly_the_queries_sent() {
    let node = Node::builder(METRICS_ZONE).start();
    let before = node.metrics();
    assert!(
        before.series("steerdns_dns_queries_total").is_empty(),
        "queries counted before any was sent: {:?}",
        before.series("steerdns_dns_queries_total")
    );

    let ecs = ecs_v4(Ipv4Addr::new(216, 160, 83, 56), 29);
    for _ in 0..7 {
        let r = query_udp(node.dns, &query(WWW, RecordType::A).edns_option(8, &ecs));
        assert_eq!(addresses(&r), ["198.51.100.20"], "A with ECS");
    }
    for _ in 0..3 {
        let r = query_udp(node.dns, &query(WWW, RecordType::AAAA));
        assert_eq!(addresses(&r), ["2001:db8:10::1"], "AAAA without ECS");
    }
    for _ in 0..2 {
        let r = query_udp(node.dns, &query("nope.api.example.com", RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    let r = query_udp(node.dns, &query("www.example.org", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // A header alone: QDCOUNT 0.
    let socket = udp_socket(node.dns);
    socket
        .send(&[0x12, 0x34, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .expect("sending");
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a FORMERR reply");
    assert_eq!(
        buf[3] & 0x0f,
        1,
        "rcode of the QDCOUNT 0 reply: {:02x?}",
        &buf[..n]
    );

    let m = node.metrics();
    let mut queries: Vec<String> = m
        .series("steerdns_dns_queries_total")
        .iter()
        .map(|s| {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            format!(
                "zone={} qtype={} rcode={} ecs={} {}",
                l("zone"),
                l("qtype"),
                l("rcode"),
                l("ecs"),
                s.value
            )
        })
        .collect();
    queries.sort();
    assert_eq!(
        queries,
        [
            "zone=- qtype=- rcode=FORMERR ecs=no 1",
            "zone=- qtype=A rcode=REFUSED ecs=no 1",
            "zone=api.example.com qtype=A rcode=NOERROR ecs=yes 7",
            "zone=api.example.com qtype=A rcode=NXDOMAIN ecs=no 2",
            "zone=api.example.com qtype=AAAA rcode=NOERROR ecs=no 3",
        ]
    );
    // The response-code counters add up to what was sent, and to the latency histogram's count.
    let mut by_rcode = std::collections::BTreeMap::<String, f64>::new();
    for s in m.series("steerdns_dns_queries_total") {
        *by_rcode.entry(s.labels["rcode"].clone()).or_default() += s.value;
    }
    assert_eq!(by_rcode.values().sum::<f64>(), 14.0, "{by_rcode:?}");
    assert_eq!(
        m.get("steerdns_dns_query_duration_seconds_count", &[]),
        Some(14.0)
    );

    let mut answers: Vec<String> = m
        .series("steerdns_dns_service_answers_total")
        .iter()
        .map(|s| {
            let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            format!(
                "zone={} record={} dc={} {}",
                l("zone"),
                l("record"),
                l("dc"),
                s.value
            )
        })
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        [
            "zone=api.example.com record=www.api.example.com dc=fra 3",
            "zone=api.example.com record=www.api.example.com dc=iad 7",
        ]
    );
    assert!(m.series("steerdns_dns_service_all_down_total").is_empty());
    // Both DCs are up, and no check means no probes.
    for dc in ["fra", "iad"] {
        assert_eq!(
            m.get("steerdns_dc_up", &[("service", WWW), ("dc", dc)]),
            Some(1.0),
            "dc_up for {dc}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. The status page in headless Chromium

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium with a fresh profile; `extra` says what to do with `url`.
fn chromium(url: &str, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("a temp dir");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-proxy-server",
        profile_arg.as_str(),
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_with_timeout(
        Path::new(CHROMIUM),
        &args,
        profile.path(),
        &[],
        Duration::from_secs(60),
    )
}

/// The HTML of `<table id="ID">` in a serialized DOM.
fn table<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} in the DOM:\n{dom}"));
    let len = dom[start..].find("</table>").expect("a closed table");
    &dom[start..start + len]
}

/// The class of the matrix cell that carries `data-dc="DC"`.
fn dc_cell_class(matrix: &str, dc: &str) -> Option<String> {
    let marker = format!("data-dc=\"{dc}\"");
    matrix
        .split("<td")
        .skip(1)
        .map(|cell| &cell[..cell.find('>').unwrap_or(cell.len())])
        .find(|tag| tag.contains(&marker))
        .and_then(|tag| {
            let at = tag.find("class=\"")? + "class=\"".len();
            Some(tag[at..at + tag[at..].find('"')?].to_string())
        })
}

/// Fails at once, with the command to run, where Chromium is not installed.
fn require_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test needs headless Chromium (`apt-get install chromium`; \
         scripts/test.sh installs it)"
    );
}

#[test]
fn the_status_page_in_chromium_shows_a_failed_dc() {
    require_chromium();
    let mut b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let fra = b[0].ip().to_string();
    let node = Node::builder(&zone).start();
    node.wait_ready();
    wait_until(Duration::from_secs(10), "fra up", || {
        node.dc_status(WWW, "fra") == "up"
    });
    b[0].stop();
    wait_until(Duration::from_secs(10), "fra down", || {
        node.dc_status(WWW, "fra") == "down"
    });

    let _turn = heavy_turn();
    let url = format!("http://{}/", node.admin);
    let run = chromium(&url, &["--dump-dom"]);
    assert!(run.status.success(), "chromium --dump-dom: {run:?}");
    let dom = &run.stdout;
    let matrix = table(dom, "matrix");
    assert_eq!(
        dc_cell_class(matrix, "fra").as_deref(),
        Some("down"),
        "fra in the matrix:\n{matrix}"
    );
    assert_eq!(
        dc_cell_class(matrix, "iad").as_deref(),
        Some("up"),
        "iad in the matrix:\n{matrix}"
    );
    let events = table(dom, "events");
    assert!(
        events
            .split("<tr>")
            .any(|row| row.contains("<td>health</td>")
                && row.contains(&format!("{fra} ("))
                && row.contains("is DOWN")),
        "no health event for {fra} going down:\n{events}"
    );
    // With fra down, clients on every continent (Europe included) get iad.
    let answers = table(dom, "answers");
    let row: Vec<&str> = answers
        .split("<tr>")
        .find(|r| r.starts_with(&format!("<td>{WWW}</td>")))
        .unwrap_or_else(|| panic!("no row for {WWW}:\n{answers}"))
        .split("<td>")
        .skip(2)
        .map(|cell| cell.split("</td>").next().unwrap_or_default())
        .collect();
    assert_eq!(row, ["iad"; 6], "answers by continent:\n{answers}");

    let artifacts = manifest_path("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("creating tests/artifacts");
    let png = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    let run = chromium(&url, &[shot.as_str(), "--window-size=1200,1400"]);
    assert!(run.status.success(), "chromium --screenshot: {run:?}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    assert!(
        bytes.len() > 20_000,
        "{} is only {} bytes: an empty page?",
        png.display(),
        bytes.len()
    );
}

/// The attributes of every `<TAG class="CLASS" ...>` in a serialized DOM (SVG marks).
fn marks(dom: &str, tag: &str, class: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} class=\"{class}\"");
    dom.match_indices(&open)
        .map(|(at, _)| {
            let rest = &dom[at + open.len()..];
            let attrs = &rest[..rest.find('>').unwrap_or(rest.len())];
            attrs
                .split("\" ")
                .filter_map(|kv| {
                    let (k, v) = kv.trim().split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect()
        })
        .collect()
}

fn attr_ms(mark: &BTreeMap<String, String>, key: &str) -> u64 {
    mark.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {mark:?}"))
}

fn now_ms() -> u64 {
    steerdns::clock::now_ms()
}

/// Issue 18: the status page's timeline (1-second samples here) shows a drain and a failure of
/// fra when they happened, fra's share of the answers going to zero each time, and the map
/// marks fra failed.
#[test]
fn the_status_page_timeline_in_chromium_shows_a_drain_and_a_failure() {
    require_chromium();
    let mut b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let node = Node::builder(&zone)
        .arg("--timeline-period")
        .arg("1s")
        .arg("--rrl")
        .arg("off")
        .start();
    node.wait_ready();
    wait_until(Duration::from_secs(10), "fra up", || {
        node.dc_status(WWW, "fra") == "up"
    });
    // A steady trickle of queries from 127.0.0.1 (unknown to GeoIP: fra while it is up).
    let stop = Arc::new(AtomicBool::new(false));
    let querier = {
        let (stop, dns) = (stop.clone(), node.dns);
        std::thread::spawn(move || {
            // Replies are read but not needed (the node counts what it answers): a slow or lost
            // one must not stop the trickle.
            let socket = udp_socket(dns);
            let wire = query(WWW, RecordType::A).wire();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let _ = socket.send(&wire);
                let _ = socket.recv(&mut buf);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let phase = Duration::from_millis(4000);
    std::thread::sleep(phase);
    let drained_at = now_ms();
    let r = post(
        node.admin,
        "/api/v1/drain",
        None,
        r#"{"dc":"fra","reason":"test"}"#,
    );
    assert_eq!(r.status, 200, "drain: {r:?}");
    std::thread::sleep(phase);
    let undrained_at = now_ms();
    let r = post(node.admin, "/api/v1/undrain", None, r#"{"dc":"fra"}"#);
    assert_eq!(r.status, 200, "undrain: {r:?}");
    std::thread::sleep(phase);
    let failed_at = now_ms();
    b[0].stop();
    wait_until(Duration::from_secs(10), "fra down", || {
        node.dc_status(WWW, "fra") == "down"
    });
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let _ = querier.join();

    // The samples the page draws, as the API serves them.
    let timeline = node.get("/api/v1/timeline").json();
    assert_eq!(timeline["period_ms"], 1000, "{timeline:#}");
    let samples = timeline["samples"].as_array().map_or(0, Vec::len);
    assert!(samples >= 15, "{samples} samples in {timeline:#}");

    let _turn = heavy_turn();
    let url = format!("http://{}/", node.admin);
    let run = chromium(&url, &["--dump-dom"]);
    assert!(run.status.success(), "chromium --dump-dom: {run:?}");
    let dom = &run.stdout;

    // fra's effective row: up, drained, up, down, each starting when it happened (a sample
    // is taken every second; the failure takes two probes 200 ms apart to be seen).
    let runs: Vec<BTreeMap<String, String>> = marks(dom, "rect", "state")
        .into_iter()
        .filter(|m| m["data-dc"] == "fra" && m["data-view"] == "effective")
        .collect();
    let states: Vec<&str> = runs.iter().map(|m| m["data-state"].as_str()).collect();
    assert_eq!(
        states,
        ["up", "drained", "up", "down"],
        "fra's runs: {runs:#?}"
    );
    let starts = |i: usize, at: u64, within: u64, what: &str| {
        let first = attr_ms(&runs[i], "data-first-ms");
        assert!(
            first >= at && first <= at + within,
            "{what} at {at}, but the timeline starts it at {first} ({} ms later)",
            first as i64 - at as i64
        );
    };
    starts(1, drained_at, 2_000, "fra drained");
    starts(2, undrained_at, 2_000, "fra undrained");
    starts(3, failed_at, 3_000, "fra failed");
    // The node's own region saw fra fail too.
    assert!(
        marks(dom, "rect", "state")
            .iter()
            .any(|m| m["data-dc"] == "fra"
                && m["data-view"] == "default"
                && m["data-state"] == "down"
                && attr_ms(m, "data-first-ms") >= failed_at),
        "no region row shows fra down"
    );

    // fra's share of the answers: all of them while up, none while drained or down.
    let shares: Vec<(u64, f64)> = marks(dom, "rect", "share")
        .into_iter()
        .filter(|m| m["data-dc"] == "fra")
        .map(|m| {
            let share = m["data-share"].parse().expect("a share");
            (attr_ms(&m, "data-at-ms"), share)
        })
        .collect();
    let in_phase = |from: u64, to: u64| -> Vec<f64> {
        shares
            .iter()
            .filter(|(at, _)| *at > from && *at < to)
            .map(|(_, s)| *s)
            .collect()
    };
    // Samples whose second began after the change took effect.
    let settle = 2_000;
    for (what, from, to, want) in [
        ("before the drain", 0, drained_at, 1.0),
        ("drained", drained_at + settle, undrained_at, 0.0),
        ("undrained", undrained_at + settle, failed_at, 1.0),
        ("failed", failed_at + 3_000, u64::MAX, 0.0),
    ] {
        let got = in_phase(from, to);
        assert!(
            !got.is_empty() && got.iter().all(|s| *s == want),
            "fra's share {what}: want {want} in every sample, got {got:?} (all: {shares:?})"
        );
    }

    // The map marks fra failed, and every continent is sent to iad.
    let dcs = marks(dom, "circle", "dc");
    let fra = dcs.iter().find(|m| m["data-dc"] == "fra");
    assert_eq!(
        fra.map(|m| m["data-state"].as_str()),
        Some("down"),
        "fra on the map: {dcs:?}"
    );
    let lines = marks(dom, "line", "sent");
    assert_eq!(lines.len(), 6, "a line per continent: {lines:?}");
    assert!(lines.iter().all(|m| m["data-dc"] == "iad"), "{lines:?}");
    // The tables stay below the pictures.
    let (map_at, matrix_at) = (
        dom.find("<svg id=\"map\""),
        dom.find("<table id=\"matrix\">"),
    );
    assert!(
        map_at.is_some() && map_at < matrix_at,
        "the map comes before the tables"
    );

    let artifacts = manifest_path("tests/artifacts");
    std::fs::create_dir_all(&artifacts).expect("creating tests/artifacts");
    let png = artifacts.join("status-page-timeline.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    let run = chromium(&url, &[shot.as_str(), "--window-size=1100,1500"]);
    assert!(run.status.success(), "chromium --screenshot: {run:?}");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "{} is not a PNG of a page ({} bytes)",
        png.display(),
        bytes.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The compose file

fn docker_compose(args: &[&str]) -> Output {
    let program = Path::new("/usr/bin/docker-compose");
    assert!(
        program.exists(),
        "{} is missing: this test needs Debian's docker-compose (`apt-get install docker-compose`; \
         .ci/run installs it)",
        program.display()
    );
    let mut all = vec!["-f", "docker-compose.yml"];
    all.extend_from_slice(args);
    let all: Vec<&OsStr> = all.iter().map(OsStr::new).collect();
    run_with_timeout(
        program,
        &all,
        &manifest_path(""),
        &[],
        Duration::from_secs(60),
    )
}

#[test]
fn the_compose_file_is_valid_and_its_node_configs_parse() {
    let run = docker_compose(&["config", "-q"]);
    assert!(run.status.success(), "docker-compose config -q: {run:?}");
    let run = docker_compose(&["config", "--services"]);
    assert!(
        run.status.success(),
        "docker-compose config --services: {run:?}"
    );
    let mut services: Vec<&str> = run.stdout.lines().map(str::trim).collect();
    services.sort();
    assert_eq!(
        services,
        [
            "backend-fra",
            "backend-iad",
            "backend-sin",
            "client",
            "node-ap",
            "node-eu",
            "node-us",
        ]
    );

    // Each node's config (copied to /opt/steerdns/demo by the Dockerfile) parses, names the
    // other two nodes' addresses as peers, and points at files the image has.
    let run = docker_compose(&["config"]);
    assert!(run.status.success(), "docker-compose config: {run:?}");
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&run.stdout).expect("docker-compose config prints YAML");
    let ip_of = |service: &str| {
        compose["services"][service]["networks"]["demo"]["ipv4_address"]
            .as_str()
            .unwrap_or_else(|| panic!("no ipv4_address for {service}"))
            .to_string()
    };
    let in_image = |path: &Path| -> std::path::PathBuf {
        let rel = path
            .strip_prefix("/opt/steerdns")
            .unwrap_or_else(|_| panic!("{} is not under /opt/steerdns", path.display()));
        match rel.strip_prefix("demo") {
            Ok(demo) => manifest_path("demo/docker").join(demo),
            Err(_) => manifest_path("").join(rel),
        }
    };
    let nodes = ["node-eu", "node-us", "node-ap"];
    for node in nodes {
        let command: Vec<&str> = compose["services"][node]["command"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{node} has no command"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let config = command
            .windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| w[1])
            .unwrap_or_else(|| panic!("{node}: no --config in {command:?}"));
        let path = in_image(Path::new(config));
        let file = steerdns::config::NodeFile::load(&path)
            .unwrap_or_else(|e| panic!("{node}: {}: {e:#}", path.display()));
        let mut peers = file.peers.clone();
        peers.sort();
        let mut expected: Vec<String> = nodes
            .iter()
            .filter(|n| **n != node)
            .map(|n| format!("http://{}:8053", ip_of(n)))
            .collect();
        expected.sort();
        assert_eq!(peers, expected, "{node}: peers");
        let zones = in_image(file.zones.as_deref().expect("a zones directory"));
        assert!(
            zones.is_dir(),
            "{node}: {} is not a directory",
            zones.display()
        );
        for db in file.geoip.iter().flatten() {
            assert!(
                in_image(db).is_file(),
                "{node}: {} is missing",
                db.display()
            );
        }
        let env = &compose["services"][node]["environment"];
        for key in ["STEERDNS_SECRET", "STEERDNS_ADMIN_TOKEN"] {
            assert!(env[key].as_str().is_some(), "{node}: no {key} in {env:?}");
        }
    }
    let run = cli(&["check", "demo/docker/zones"]);
    assert_eq!(
        run.code(),
        Some(0),
        "steerdns check demo/docker/zones: {run:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The CLI against a running node

#[test]
fn the_cli_against_a_running_node() {
    let b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let (fra, iad) = (b[0].ip().to_string(), b[1].ip().to_string());
    let node = Node::builder(&zone).start();
    node.wait_ready();
    wait_until(Duration::from_secs(10), "fra and iad up", || {
        node.dc_status(WWW, "fra") == "up" && node.dc_status(WWW, "iad") == "up"
    });
    let url = node.url();
    let admin = ["--admin", url.as_str()];
    let with_admin = |args: &[&str]| -> Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&admin);
        cli(&all)
    };

    let run = with_admin(&["status"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let row = |dc: &str, ip: &str| {
        run.stdout.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 4 && cols[..4] == [WWW, dc, ip, "up"]
        })
    };
    assert!(
        row("fra", &fra) && row("iad", &iad),
        "status table:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("SERVICE") && run.stdout.contains("ENDPOINT"),
        "{}",
        run.stdout
    );
    let run = with_admin(&["status", "--json"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", run.stdout));
    assert_eq!(json["services"][0]["name"], WWW, "{json:#}");

    // Drain fra: a client on 127.0.0.1 moves from fra to iad.
    assert_eq!(answer_of(&node), fra);
    let run = with_admin(&["drain", "fra", "--reason", "maintenance window"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert_eq!(answer_of(&node), iad);
    let run = with_admin(&["status"]);
    assert!(
        run.stdout
            .contains("drain: fra (all services) by node-1: maintenance window"),
        "{}",
        run.stdout
    );
    // Draining the last healthy DC is refused.
    let run = with_admin(&["drain", "iad"]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("would leave no healthy data center for: www.api.example.com"),
        "{run:?}"
    );
    assert_eq!(answer_of(&node), iad);
    let run = with_admin(&["undrain", "fra"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert_eq!(answer_of(&node), fra);

    let run = with_admin(&["reload"]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(run.stdout.contains("reloaded 1 zone(s)"), "{run:?}");
    node.write_zone(BROKEN_ZONE);
    let run = with_admin(&["reload"]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("\"mars\" is not defined"), "{run:?}");
    assert_eq!(answer_of(&node), fra, "the broken zone was swapped in");

    // Against a closed port: unreachable, exit 3.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
        l.local_addr().expect("an address")
    };
    let closed_url = format!("http://{closed}");
    for args in [
        vec!["status", "--admin", &closed_url],
        vec!["reload", "--admin", &closed_url],
        vec!["drain", "fra", "--admin", &closed_url],
    ] {
        let run = cli(&args);
        assert_eq!(run.code(), Some(3), "{args:?}: {run:?}");
        assert!(run.stderr.contains("cannot reach the node"), "{run:?}");
    }
    // Usage errors: exit 2.
    for args in [vec!["drain"], vec!["status", "--bogus"], vec!["frobnicate"]] {
        assert_eq!(cli(&args).code(), Some(2), "{args:?}");
    }
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        None,
        Some("serve"),
        Some("check"),
        Some("explain"),
        Some("status"),
        Some("drain"),
        Some("undrain"),
        Some("reload"),
        Some("demo"),
    ] {
        let args: Vec<&str> = sub.into_iter().chain(["--help"]).collect();
        let run = cli(&args);
        assert_eq!(run.code(), Some(0), "{args:?}: {run:?}");
        assert!(
            run.stdout.contains("Usage: steerdns"),
            "{args:?}: {}",
            run.stdout
        );
    }
}

#[test]
fn a_cli_change_needs_the_nodes_token() {
    let node = Node::builder(&static_zone("192.0.2.1"))
        .env("STEERDNS_ADMIN_TOKEN", TOKEN)
        .start();
    let url = node.url();
    let run = cli(&["reload", "--admin", &url]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("401"), "{run:?}");
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("writing the token file");
    let file = file.to_str().expect("a UTF-8 path");
    let run = cli(&["reload", "--admin", &url, "--token-file", file]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    let run = run_with_timeout(
        Path::new(env!("CARGO_BIN_EXE_steerdns")),
        &[
            OsStr::new("reload"),
            OsStr::new("--admin"),
            OsStr::new(&url),
        ],
        &manifest_path(""),
        &[("STEERDNS_ADMIN_TOKEN", TOKEN)],
        Duration::from_secs(15),
    );
    assert_eq!(
        run.code(),
        Some(0),
        "with the token in the environment: {run:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. JSON logs

#[test]
fn json_logs_have_one_object_per_line_and_a_health_change() {
    let mut b = backends(2);
    let zone = checked_zone(b[0].ip(), b[1].ip(), b[0].addr.port());
    let fra = b[0].ip().to_string();
    let node = Node::builder(&zone).arg("--log-format").arg("json").start();
    node.wait_ready();
    b[0].stop();
    let is_fra_down = |v: &serde_json::Value| {
        v["fields"]["message"] == "health changed"
            && v["fields"]["endpoint"] == fra.as_str()
            && v["fields"]["to"] == "Down"
    };
    wait_until(
        Duration::from_secs(10),
        "a health change in the log",
        || {
            node.stderr()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|v| is_fra_down(&v))
        },
    );
    let log = node.stderr();
    let mut found = None;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "log line is not an object: {line}");
        for key in ["timestamp", "level", "fields"] {
            assert!(v.get(key).is_some(), "no {key} in {line}");
        }
        if is_fra_down(&v) {
            found = Some(v);
        }
    }
    let v = found.expect("the health change line");
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["from"], "Up", "{v}");
    assert!(
        v["fields"]["check"]
            .as_str()
            .is_some_and(|c| c.starts_with("http://")),
        "{v}"
    );
    assert!(v["fields"]["error"].as_str().is_some(), "{v}");
}
