//! Several DNS listen addresses (issue 12): IPv4 and IPv6 loopback side by side, from repeated
//! `--listen` flags or a list in the node config, each answering over UDP and TCP; an address
//! that cannot be bound stops the start with that address named.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::RecordType;

use crate::support::*;

/// Checks that `server` listens on 127.0.0.1 then ::1, each on one port for UDP and TCP, and
/// answers there over both.
fn assert_answers_on_ipv4_and_ipv6(server: &TestServer) {
    let listeners = server.dns_listeners();
    let ips: Vec<IpAddr> = listeners.iter().map(|l| l.udp.ip()).collect();
    assert_eq!(
        ips,
        [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        ],
        "{listeners:?}"
    );
    // The ready file's `dns` stays the first listener's address.
    assert_eq!(server.addr, listeners[0].udp);
    for l in &listeners {
        assert_eq!(l.udp, l.tcp, "UDP and TCP share the address and port");
        assert_ne!(l.udp.port(), 0);
        let udp = query_udp(l.udp, &query("status.api.example.com", RecordType::A));
        assert_eq!(
            sorted(&udp.answers),
            [
                "status.api.example.com. 300 A 192.0.2.10",
                "status.api.example.com. 300 A 192.0.2.11",
            ],
            "UDP on {}",
            l.udp
        );
        let tcp = query_tcp(
            l.tcp,
            &[
                query("status.api.example.com", RecordType::AAAA),
                query("api.example.com", RecordType::TXT),
            ],
        );
        assert_eq!(
            records(&tcp[0].answers),
            ["status.api.example.com. 300 AAAA 2001:db8::10"],
            "TCP on {}",
            l.tcp
        );
        assert_eq!(
            records(&tcp[1].answers),
            ["api.example.com. 300 TXT \"v=spf1 -all\""],
            "TCP on {}",
            l.tcp
        );
    }
}

#[test]
fn repeated_listen_flags_serve_udp_and_tcp_on_ipv4_and_ipv6() {
    let server = TestServer::start_with(ZONE, &["--listen", "127.0.0.1:0", "--listen", "[::1]:0"]);
    assert_answers_on_ipv4_and_ipv6(&server);
}

#[test]
fn a_listen_list_in_the_node_config_is_served_on_every_address() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, "listen: [127.0.0.1:0, \"[::1]:0\"]\n").expect("writing");
    let config = config.to_str().expect("a UTF-8 path");
    let server = TestServer::start_with(ZONE, &["--config", config]);
    assert_answers_on_ipv4_and_ipv6(&server);
}

/// `steerdns serve` with `args` (and `node.yaml` holding `config`, if any), which must fail.
fn serve_fails(args: &[&str], config: Option<&str>) -> Run {
    let dir = tempfile::tempdir().expect("a temp dir");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("creating the zone dir");
    std::fs::write(zones.join("zone.yaml"), ZONE).expect("writing the zone");
    let geoip = manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb");
    let ready = dir.path().join("ready.json");
    let node = dir.path().join("node.yaml");
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("serve"),
        OsStr::new("--zones"),
        zones.as_os_str(),
        OsStr::new("--geoip"),
        geoip.as_os_str(),
        OsStr::new("--admin"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--ready-file"),
        ready.as_os_str(),
    ];
    if let Some(yaml) = config {
        std::fs::write(&node, yaml).expect("writing the node config");
        all.extend([OsStr::new("--config"), node.as_os_str()]);
    }
    all.extend(args.iter().map(OsStr::new));
    let run = run_steerdns(dir.path(), &all);
    assert_eq!(run.code(), Some(1), "{args:?} {config:?}: {run:?}");
    assert!(
        !ready.exists(),
        "{args:?} {config:?}: a server that did not start wrote its ready file"
    );
    run
}

#[test]
fn a_listen_address_that_cannot_be_bound_stops_the_start_naming_it() {
    // A port in use: held by this test over TCP on ::1.
    let taken = std::net::TcpListener::bind("[::1]:0").expect("binding [::1]:0");
    let taken = taken.local_addr().expect("its address").to_string();
    // 198.51.100.1 (TEST-NET-2) is not an address of this host.
    for (args, config, bad) in [
        (
            vec!["--listen", "127.0.0.1:0", "--listen", "198.51.100.1:5300"],
            None,
            "198.51.100.1:5300".to_string(),
        ),
        (
            vec!["--listen", "127.0.0.1:0", "--listen", &taken],
            None,
            taken.clone(),
        ),
        (
            vec![],
            Some("listen: [\"[::1]:0\", 198.51.100.1:5300]\n"),
            "198.51.100.1:5300".to_string(),
        ),
    ] {
        let run = serve_fails(&args, config);
        assert!(
            run.stderr.contains(&format!("binding DNS on {bad}: ")),
            "{args:?} {config:?}: stderr does not name {bad}:\n{}",
            run.stderr
        );
    }
}
