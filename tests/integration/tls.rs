//! HTTPS on the admin/peer listener (issue 8, control surfaces): a node with `--tls-cert` and
//! `--tls-key` speaks HTTPS only, to clients that trust its CA; peers pull each other over
//! `https://` and verify against `--peer-ca`; the CLI takes `--ca-file`; the certificate is
//! re-read on reload; bad TLS settings stop the start. Certificates come from a CA the test
//! makes (`support::TestCa`).

use std::ffi::OsStr;
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ops_support::{Node, Output, cli};
use crate::regions_support::{
    ClusterOpts, TestCluster, fast_zone, holds_for, metric, report_ids, wait_until,
};
use crate::support::{
    TestCa, ZONE, http_request, https_request, manifest_path, presented_certificate,
};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const ALL: [usize; 3] = [A, B, C];

/// A node serving `ZONE` over HTTPS with a certificate for 127.0.0.1 from `ca`; the certificate
/// and key are `tls.crt` and `tls.key` in `dir`.
fn tls_node(ca: &TestCa, dir: &Path) -> (Node, crate::support::Leaf) {
    let (cert, key, leaf) = ca.write_leaf(dir, "tls", &["127.0.0.1", "localhost"]);
    let node = Node::builder(ZONE)
        .arg("--tls-cert")
        .arg(&cert.display().to_string())
        .arg("--tls-key")
        .arg(&key.display().to_string())
        .start();
    (node, leaf)
}

/// A sample's value from a TLS node's `/metrics`.
fn tls_metric(node: &Node, ca: &TestCa, sample: &str) -> f64 {
    let r = https_request(node.admin, &ca.client_config(), "GET", "/metrics", &[], b"")
        .unwrap_or_else(|e| panic!("GET https://{}/metrics: {e}", node.admin));
    assert_eq!(r.status, 200, "{}", r.text());
    metric(&r.text(), sample)
}

const HANDSHAKE_ERRORS: &str = r#"steerdns_admin_tls_handshake_failures_total{reason="error"}"#;

#[test]
fn the_admin_api_over_https_answers_only_clients_that_trust_its_ca() {
    let ca = TestCa::new("steerdns test CA");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (node, _) = tls_node(&ca, dir.path());
    let trusted = ca.client_config();

    let r = https_request(node.admin, &trusted, "GET", "/api/v1/state", &[], b"")
        .unwrap_or_else(|e| panic!("GET https://{}/api/v1/state: {e}", node.admin));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["services"][0]["name"], "www.api.example.com");

    // A client trusting another CA refuses the node's certificate.
    let stranger = TestCa::new("another CA").client_config();
    match https_request(node.admin, &stranger, "GET", "/api/v1/state", &[], b"") {
        Ok(r) => panic!(
            "a client not trusting the CA got {}: {}",
            r.status,
            r.text()
        ),
        Err(e) => assert!(
            e.to_string().contains("UnknownIssuer"),
            "not a certificate error: {e}"
        ),
    }
    // Plain HTTP on the TLS port gets no answer from the API.
    match http_request(node.admin, "GET", "/api/v1/state", &[], b"") {
        Ok(r) => panic!("plain HTTP got an answer: {} {}", r.status, r.text()),
        Err(e) => eprintln!("plain HTTP to the TLS port: {e}"),
    }
    // A client that connects and says nothing holds up nobody else.
    let silent = TcpStream::connect(node.admin).expect("connecting");
    let started = Instant::now();
    let r = https_request(node.admin, &trusted, "GET", "/live", &[], b"")
        .unwrap_or_else(|e| panic!("GET /live beside a silent client: {e}"));
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(silent);

    // The listener still serves, and counted both failed handshakes.
    wait_until(
        Instant::now() + Duration::from_secs(5),
        "two failed handshakes counted",
        || match tls_metric(&node, &ca, HANDSHAKE_ERRORS) {
            n if n >= 2.0 => Ok(()),
            n => Err(format!("{n}")),
        },
    );

    // Changes from loopback need no token: the auth layer still sees the client's address.
    let r = https_request(node.admin, &trusted, "POST", "/api/v1/reload", &[], b"")
        .expect("POST /api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let msg = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("the TLS certificate"), "{msg}");
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let ca = TestCa::new("steerdns test CA");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (node, _) = tls_node(&ca, dir.path());
    let mut silent = TcpStream::connect(node.admin).expect("connecting");
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("a read timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // The server closes the connection (EOF, or a reset) without ever sending a byte; a read
    // timeout (WouldBlock) would mean it never did.
    let read = silent.read(&mut buf);
    let waited = started.elapsed();
    let closed = match &read {
        Ok(n) => *n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "{read:?} after {waited:?}");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(15)).contains(&waited),
        "closed after {waited:?}, not after the 10 s handshake timeout"
    );
    let timeouts = tls_metric(
        &node,
        &ca,
        r#"steerdns_admin_tls_handshake_failures_total{reason="timeout"}"#,
    );
    assert_eq!(timeouts, 1.0);
}

#[test]
fn the_certificate_is_reread_on_reload_and_a_bad_one_keeps_the_old() {
    let ca = TestCa::new("steerdns test CA");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (node, first) = tls_node(&ca, dir.path());
    let trusted = ca.client_config();
    let presented = || {
        presented_certificate(node.admin, &trusted)
            .unwrap_or_else(|e| panic!("handshake with {}: {e}", node.admin))
    };
    assert_eq!(presented(), first.der);

    // Renewed: POST /api/v1/reload swaps it in, no restart.
    let second = ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.path().join("tls.crt"), &second.cert).expect("writing");
    std::fs::write(dir.path().join("tls.key"), &second.key).expect("writing");
    let r = https_request(node.admin, &trusted, "POST", "/api/v1/reload", &[], b"")
        .expect("POST /api/v1/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(presented(), second.der);

    // A key that does not belong to the certificate: refused, reported, the old one serves on.
    let third = ca.issue(&["127.0.0.1"]);
    std::fs::write(dir.path().join("tls.key"), &third.key).expect("writing");
    let r = https_request(node.admin, &trusted, "POST", "/api/v1/reload", &[], b"")
        .expect("POST /api/v1/reload");
    assert_eq!(r.status, 422, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("TLS certificate") && error.contains("does not match"),
        "{error}"
    );
    assert_eq!(presented(), second.der);
    assert_eq!(
        tls_metric(
            &node,
            &ca,
            r#"steerdns_tls_certificate_reloads_total{result="error"}"#
        ),
        1.0
    );
    let state = https_request(node.admin, &trusted, "GET", "/api/v1/state", &[], b"")
        .expect("GET /api/v1/state")
        .text();
    assert!(
        state.contains("TLS certificate reload FAILED"),
        "no event: {state}"
    );

    // SIGHUP reloads it too, once the pair matches again.
    std::fs::write(dir.path().join("tls.crt"), &third.cert).expect("writing");
    node.signal("HUP");
    wait_until(
        Instant::now() + Duration::from_secs(5),
        "the node presents the third certificate",
        || {
            if presented() == third.der {
                Ok(())
            } else {
                Err("an older one".into())
            }
        },
    );
}

#[test]
fn the_cli_talks_https_with_its_ca_file() {
    let ca = TestCa::new("steerdns test CA");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (node, _) = tls_node(&ca, dir.path());
    let ca_file = ca.write_pem(&dir.path().join("ca.pem"));
    let ca_file = ca_file.display().to_string();
    let url = format!("https://{}", node.admin);

    let run = cli(&["status", "--admin", &url, "--ca-file", &ca_file]);
    assert_eq!(run.code(), Some(0), "{run:?}");
    assert!(
        run.stdout.contains("SERVICE") && run.stdout.contains("www.api.example.com"),
        "{}",
        run.stdout
    );
    let run = cli(&["reload", "--admin", &url, "--ca-file", &ca_file]);
    assert_eq!(run.code(), Some(0), "{run:?}");

    // Without the CA the node's certificate is not trusted: unreachable, and it says why.
    let run = cli(&["status", "--admin", &url]);
    assert_eq!(run.code(), Some(3), "{run:?}");
    assert!(run.stderr.contains("certificate"), "{run:?}");
    // Another CA: the same.
    let other = TestCa::new("another CA").write_pem(&dir.path().join("other.pem"));
    let run = cli(&[
        "status",
        "--admin",
        &url,
        "--ca-file",
        &other.display().to_string(),
    ]);
    assert_eq!(run.code(), Some(3), "{run:?}");
    // A CA file that is not one: a usage failure naming it, exit 1.
    let run = cli(&[
        "status",
        "--admin",
        &url,
        "--ca-file",
        "/nonexistent/ca.pem",
    ]);
    assert_eq!(run.code(), Some(1), "{run:?}");
    assert!(run.stderr.contains("/nonexistent/ca.pem"), "{run:?}");
}

/// `steerdns serve` with `args` (plus a zone, the test GeoIP database and free ports) that is
/// expected to refuse to start.
fn serve_fails(args: &[&OsStr]) -> Output {
    let dir = tempfile::tempdir().expect("a temp dir");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("creating the zone dir");
    std::fs::write(zones.join("zone.yaml"), ZONE).expect("writing the zone");
    let geoip = manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb");
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("serve"),
        OsStr::new("--zones"),
        zones.as_os_str(),
        OsStr::new("--geoip"),
        geoip.as_os_str(),
        OsStr::new("--listen"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--admin"),
        OsStr::new("127.0.0.1:0"),
    ];
    all.extend_from_slice(args);
    let all: Vec<&str> = all
        .iter()
        .map(|a| a.to_str().expect("UTF-8 paths"))
        .collect();
    let run = cli(&all);
    assert_eq!(run.code(), Some(1), "{all:?}: {run:?}");
    run
}

#[test]
fn bad_tls_settings_stop_the_start_naming_the_file() {
    let ca = TestCa::new("steerdns test CA");
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key, _) = ca.write_leaf(dir.path(), "tls", &["127.0.0.1"]);
    let (_, other_key, _) = ca.write_leaf(dir.path(), "other", &["127.0.0.1"]);
    let missing = dir.path().join("missing.key");
    let os = |p: &Path| p.as_os_str().to_owned();
    let flag = |f: &str| OsStr::new(f).to_owned();
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, format!("tls:\n  key_file: {}\n", key.display())).expect("writing");

    for (args, wants) in [
        (
            vec![flag("--tls-cert"), os(&cert)],
            vec!["without its key".to_string(), cert.display().to_string()],
        ),
        (
            vec![flag("--config"), os(&config)],
            vec!["without its certificate".into(), key.display().to_string()],
        ),
        (
            vec![
                flag("--tls-cert"),
                os(&cert),
                flag("--tls-key"),
                os(&missing),
            ],
            vec!["reading TLS key file".into(), missing.display().to_string()],
        ),
        (
            vec![
                flag("--tls-cert"),
                os(&cert),
                flag("--tls-key"),
                os(&other_key),
            ],
            vec!["does not match".into(), other_key.display().to_string()],
        ),
        (
            vec![flag("--tls-cert"), os(&cert), flag("--tls-key"), os(&cert)],
            vec!["no private key".into(), cert.display().to_string()],
        ),
        (
            vec![flag("--peer-ca"), os(&missing)],
            vec!["reading CA file".into(), missing.display().to_string()],
        ),
    ] {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let run = serve_fails(&args);
        for want in &wants {
            assert!(run.stderr.contains(want.as_str()), "{args:?}: {run:?}");
        }
    }
}

#[test]
fn https_peers_share_a_dc_failure() {
    let c = TestCluster::start(3, &fast_zone(), ClusterOpts::default().tls());
    c.wait_converged(&ALL);
    for i in ALL {
        let st = c.node(i).state();
        for p in st["peers"].as_array().into_iter().flatten() {
            assert!(p["url"].as_str().is_some_and(|u| u.starts_with("https://")));
            assert!(p["last_error"].is_null(), "{p}");
        }
    }
    let died = Instant::now();
    c.dc("dc1").down();
    // The regions tests' bound (interval × fall + exchange + 1 s), and a second to spare.
    wait_until(
        died + Duration::from_millis(2650),
        "every node withdraws dc1",
        || c.all_answer(&ALL, "dc2"),
    );
    wait_until(
        Instant::now() + Duration::from_secs(3),
        "every node holds three down votes on dc1",
        || {
            for i in ALL {
                let st = c.node(i).state();
                let ep = crate::regions_support::endpoint_state(&st, "dc1");
                if ep["down_votes"] != 3 {
                    return Err(format!("{}: {ep}", c.node(i).id));
                }
            }
            Ok(())
        },
    );
    // The CLI over HTTPS shows the peers reachable.
    let run = c.node(A).cli(&["status"]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(run.stdout.contains("(b): ok"), "{}", run.stdout);
}

#[test]
fn a_node_that_does_not_trust_its_peers_certificates_takes_none_of_their_reports() {
    let other = tempfile::tempdir().expect("a temp dir");
    let other_ca = TestCa::new("another CA").write_pem(&other.path().join("other-ca.pem"));
    let c = TestCluster::start(
        3,
        &fast_zone(),
        ClusterOpts::default().tls().peer_ca(C, &other_ca),
    );
    // a and b trust the cluster CA, c's certificate among them: they hear from everyone.
    let deadline = Instant::now() + Duration::from_secs(15);
    wait_until(deadline, "a and b converge", || c.converged(&[A, B]));
    wait_until(deadline, "a holds c's report", || {
        let ids = report_ids(&c.node(A).state());
        if ids.contains(&"c".to_string()) {
            Ok(())
        } else {
            Err(format!("{ids:?}"))
        }
    });
    // c refuses both peers' certificates: they are unreachable to it, with the reason.
    wait_until(deadline, "c shows a and b unreachable", || {
        let st = c.node(C).state();
        let peers = st["peers"].as_array().cloned().unwrap_or_default();
        let refused = peers.iter().all(|p| {
            p["consecutive_failures"].as_u64().unwrap_or(0) > 0
                && p["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("certificate"))
        });
        if peers.len() == 2 && refused {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    });
    // ... and it holds no report but its own.
    holds_for(
        Duration::from_secs(1),
        "c holds only its own report",
        || {
            let ids = report_ids(&c.node(C).state());
            if ids == ["c"] {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        },
    );
    let m = c.node(C).metrics();
    assert_eq!(
        metric(&m, r#"steerdns_peer_exchanges_total{result="ok"}"#),
        0.0
    );
    assert!(metric(&m, r#"steerdns_peer_exchanges_total{result="error"}"#) >= 2.0);
    // c's own answers still follow its own probes.
    assert_eq!(c.node(C).answer(), "dc1");
}
