//! Issue 3 against the real server: clients placed by EDNS Client Subnet or by their own address,
//! the ECS option echoed with its scope, FORMERR for malformed ECS, the routing policies, GeoIP
//! databases swapped while serving, and the shipped zone with the shipped databases.
//!
//! Unless a test says otherwise the server uses `tests/fixtures/geoip/GeoIP2-City-Test.mmdb`;
//! `tests/fixtures/geoip/README.md` has its network → location table.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::*;

/// Four DCs on three continents; `sea` has no IPv6 endpoint. `iad` is listed first, so it is
/// where clients no database knows go.
const GEO_ZONE: &str = r#"
zone: api.example.com
ttl: 300
soa: { primary: ns1, contact: hostmaster@example.com, minimum: 60 }
nameservers: { ns1: [192.0.2.53] }
datacenters:
  iad: { location: [38.95, -77.45] }   # Ashburn
  fra: { location: [50.11, 8.68] }     # Frankfurt
  sea: { location: [47.61, -122.33] }  # Seattle
  sin: { location: [1.35, 103.82] }    # Singapore
records:
  www:
    service:
      answers: 1
      endpoints:
        iad: [198.51.100.20, "2001:db8:20::1"]
        fra: [203.0.113.10, "2001:db8:10::1"]
        sea: [198.51.100.30]
        sin: [192.0.2.30, "2001:db8:30::1"]
  rules:
    service:
      policy: geo
      answers: 1
      geo:
        EU: [sin]
        NA-US: [sea]
        NA-US-WA: [iad]
        AS-JP: [iad]
        default: [fra]
      endpoints:
        iad: [198.51.100.20, "2001:db8:20::1"]
        fra: [203.0.113.10, "2001:db8:10::1"]
        sea: [198.51.100.30]
        sin: [192.0.2.30, "2001:db8:30::1"]
  fixed:
    service:
      policy: failover
      answers: 1
      endpoints:
        sin: [192.0.2.30, "2001:db8:30::1"]
        fra: [203.0.113.10, "2001:db8:10::1"]
        iad: [198.51.100.20, "2001:db8:20::1"]
  split:
    service:
      policy: weighted
      answers: 1
      weights: { iad: 1, fra: 1, sin: 0 }
      endpoints:
        iad: [198.51.100.20, "2001:db8:20::1"]
        fra: [203.0.113.10, "2001:db8:10::1"]
        sin: [192.0.2.30, "2001:db8:30::1"]
  status: { A: 192.0.2.10 }
"#;

/// The DC an address of `GEO_ZONE` belongs to.
fn dc_of(addr: &str) -> &'static str {
    match addr {
        "198.51.100.20" | "2001:db8:20::1" => "iad",
        "203.0.113.10" | "2001:db8:10::1" => "fra",
        "198.51.100.30" => "sea",
        "192.0.2.30" | "2001:db8:30::1" => "sin",
        other => panic!("{other} is no endpoint of GEO_ZONE"),
    }
}

/// The DC of a one-address service answer.
fn dc(reply: &Message) -> &'static str {
    let addrs = addresses(reply);
    assert_eq!(
        addrs.len(),
        1,
        "expected one address: {:?}",
        records(&reply.answers)
    );
    dc_of(&addrs[0])
}

/// Asks `name`/`rtype` with ECS for `net`; checks NOERROR and returns the DC and the reply.
fn ask_ecs(
    server: &TestServer,
    name: &str,
    rtype: RecordType,
    net: &str,
) -> (&'static str, Message) {
    let reply = query_udp(server.addr, &query(name, rtype).ecs(net));
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{name} {rtype} for {net}"
    );
    (dc(&reply), reply)
}

/// Checks the echoed ECS option: same family, source prefix and address as sent, this scope.
fn assert_ecs_echo(reply: &Message, net: &str, scope: u8) {
    let (addr, prefix) = net.split_once('/').unwrap();
    let addr: IpAddr = addr.parse().unwrap();
    let family = if addr.is_ipv4() { 1 } else { 2 };
    let echo = reply_ecs(reply).unwrap_or_else(|| panic!("{net}: no ECS option in the reply"));
    assert_eq!(
        echo,
        (family, prefix.parse().unwrap(), scope, addr),
        "{net}: (family, source, scope, address) echoed"
    );
}

#[test]
fn ecs_clients_get_the_nearest_dc_and_the_scope_of_the_network_that_decided() {
    let server = TestServer::start(GEO_ZONE);
    // (client subnet, query type, DC, scope): scope is the prefix of the GeoIP network that
    // placed the client, capped at /24 for IPv4 and /56 for IPv6.
    let cases: &[(&str, RecordType, &str, u8)] = &[
        // Europe
        ("81.2.69.142/32", RecordType::A, "fra", 24), // London, network /31
        ("2.2.3.0/24", RecordType::A, "fra", 24),     // Boxford, network /24
        ("89.160.20.128/25", RecordType::A, "fra", 24), // Linköping, network /25
        ("2a02:d180::/29", RecordType::AAAA, "fra", 29), // Germany
        ("2a02:d180::/29", RecordType::A, "fra", 29),
        ("2a02:d500::/29", RecordType::A, "fra", 29), // coordinates, no country
        // North America
        ("216.160.83.56/29", RecordType::A, "sea", 24), // Milton WA, network /29
        ("216.160.83.56/32", RecordType::A, "sea", 24),
        ("149.101.100.0/28", RecordType::A, "iad", 24), // Kansas: closer to Ashburn
        ("214.78.120.0/22", RecordType::A, "sea", 22),  // San Diego, network /22
        ("2001:480:10::/48", RecordType::A, "sea", 48), // San Diego
        // Asia
        ("175.16.199.0/24", RecordType::A, "sin", 24), // Changchun
        ("202.196.224.0/20", RecordType::A, "sin", 20), // Philippines, network /20
        ("67.43.156.0/24", RecordType::A, "sin", 24),  // Bhutan
        ("2001:218::/32", RecordType::A, "sin", 32),   // Japan
        ("2001:218:1234::/48", RecordType::AAAA, "sin", 32),
    ];
    for &(net, rtype, want_dc, scope) in cases {
        let (got, reply) = ask_ecs(&server, "www.api.example.com", rtype, net);
        assert_eq!(got, want_dc, "{rtype} for {net}");
        assert_eq!(reply.answers[0].record_type(), rtype, "{net}: answer type");
        assert_ecs_echo(&reply, net, scope);
    }
}

#[test]
fn a_static_record_gets_scope_zero() {
    let server = TestServer::start(GEO_ZONE);
    for net in ["175.16.199.0/24", "81.2.69.142/32", "2001:218::/32"] {
        let reply = query_udp(
            server.addr,
            &query("status.api.example.com", RecordType::A).ecs(net),
        );
        assert_eq!(
            records(&reply.answers),
            ["status.api.example.com. 300 A 192.0.2.10"]
        );
        assert_ecs_echo(&reply, net, 0);
    }
}

#[test]
fn source_prefix_zero_answers_for_the_resolver_with_scope_zero() {
    let server = TestServer::start(GEO_ZONE);
    // The resolver is 127.0.0.1, which no database knows: the first DC listed.
    for net in ["0.0.0.0/0", "::/0"] {
        let (got, reply) = ask_ecs(&server, "www.api.example.com", RecordType::A, net);
        assert_eq!(got, "iad", "{net}");
        assert_ecs_echo(&reply, net, 0);
    }
}

#[test]
fn a_client_the_database_does_not_know_gets_the_default() {
    let server = TestServer::start(GEO_ZONE);
    // `nearest` sends unknown clients to the first DC listed; geo rules to `default`. The scope
    // is the cap: the answer holds for the client's whole /24 (/56).
    let cases: &[(&str, &str, &str, u8)] = &[
        ("www", "10.1.2.0/24", "iad", 24),
        ("www", "81.2.69.0/24", "iad", 24), // 81.2.69.0 itself is not in the test DB
        ("www", "214.1.1.0/24", "iad", 24), // a record with no location at all
        ("www", "2001:db8::/48", "iad", 56),
        ("rules", "10.1.2.0/24", "fra", 24),
    ];
    for &(name, net, want_dc, scope) in cases {
        let (got, reply) = ask_ecs(
            &server,
            &format!("{name}.api.example.com"),
            RecordType::A,
            net,
        );
        assert_eq!(got, want_dc, "{name} for {net}");
        assert_ecs_echo(&reply, net, scope);
    }
}

#[test]
fn aaaa_skips_a_dc_without_ipv6_endpoints() {
    let server = TestServer::start(GEO_ZONE);
    // Milton WA is nearest to sea, which has only an IPv4 endpoint: AAAA goes to the next DC.
    let net = "216.160.83.56/29";
    let (a, reply) = ask_ecs(&server, "www.api.example.com", RecordType::A, net);
    assert_eq!(
        (a, addresses(&reply)),
        ("sea", vec!["198.51.100.30".to_string()])
    );
    let (aaaa, reply) = ask_ecs(&server, "www.api.example.com", RecordType::AAAA, net);
    assert_eq!(
        (aaaa, addresses(&reply)),
        ("iad", vec!["2001:db8:20::1".to_string()])
    );
    assert_ecs_echo(&reply, net, 24);
}

#[test]
fn malformed_ecs_gets_formerr() {
    let server = TestServer::start(GEO_ZONE);
    let cases: &[(&str, Vec<u8>)] = &[
        (
            "IPv4 source prefix 33",
            ecs_raw(1, 33, 0, &[81, 2, 69, 142, 0]),
        ),
        ("IPv6 source prefix 129", ecs_raw(2, 129, 0, &[0x20; 17])),
        // 0x45 = 0100 0101: the low four bits lie past /20.
        (
            "IPv4 bits past the prefix",
            ecs_raw(1, 20, 0, &[81, 2, 0x45]),
        ),
        // 0xd187: the low three bits lie past /29.
        (
            "IPv6 bits past the prefix",
            ecs_raw(2, 29, 0, &[0x2a, 0x02, 0xd1, 0x87]),
        ),
        ("unknown family 3", ecs_raw(3, 24, 0, &[81, 2, 69])),
        ("family 0", ecs_raw(0, 24, 0, &[81, 2, 69])),
        ("too few address bytes", ecs_raw(1, 24, 0, &[81, 2])),
        // RFC 7871 section 6: ADDRESS is exactly ceil(SOURCE PREFIX-LENGTH / 8) octets.
        // Regression (issue 3): hickory ignores extra bytes, so this was answered (src/dns/mod.rs).
        (
            "too many address bytes",
            ecs_raw(1, 24, 0, &[175, 16, 199, 0]),
        ),
        ("an address with prefix 0", ecs_raw(1, 0, 0, &[0])),
        ("no prefix bytes at all", vec![0, 1]),
    ];
    for (what, payload) in cases {
        let q = query("www.api.example.com", RecordType::A).edns_option(ECS, payload);
        let reply = query_udp(server.addr, &q);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::FormErr,
            "{what}: {payload:02x?}"
        );
        assert!(reply.answers.is_empty(), "{what}");
    }
    // The same query, well formed, is answered.
    let (got, _) = ask_ecs(
        &server,
        "www.api.example.com",
        RecordType::A,
        "81.2.64.0/20",
    );
    assert_eq!(got, "iad", "81.2.64.0 is not in the test DB");
}

/// A database that places loopback clients: the server sees test sockets bound to these
/// addresses as resolvers in Singapore and Germany.
fn loopback_db() -> Vec<u8> {
    geoip_db(&[
        GeoRow {
            network: "127.0.0.2/32",
            continent: "AS",
            country: "SG",
            latitude: 1.29,
            longitude: 103.85,
        },
        GeoRow {
            network: "127.0.0.3/32",
            continent: "EU",
            country: "DE",
            latitude: 51.5,
            longitude: 10.5,
        },
    ])
}

#[test]
fn without_ecs_the_source_address_decides() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("loopback.mmdb");
    std::fs::write(&db, loopback_db()).unwrap();
    let server = TestServer::start_with(GEO_ZONE, &["--geoip", db.to_str().unwrap()]);
    let www = || query("www.api.example.com", RecordType::A);
    for (source, want_dc) in [
        ("127.0.0.1", "iad"),
        ("127.0.0.2", "sin"),
        ("127.0.0.3", "fra"),
    ] {
        let source: IpAddr = source.parse().unwrap();
        // No EDNS at all.
        let reply = query_udp_from(source, server.addr, &www());
        assert_eq!(dc(&reply), want_dc, "from {source}");
        assert!(reply.edns.is_none());
        // EDNS without ECS: no ECS option comes back.
        let reply = query_udp_from(source, server.addr, &www().edns(1232));
        assert_eq!(dc(&reply), want_dc, "from {source} with EDNS");
        assert_eq!(reply_ecs(&reply), None);
        // ECS with source prefix 0: still the resolver's address, scope 0.
        let reply = query_udp_from(source, server.addr, &www().ecs("0.0.0.0/0"));
        assert_eq!(dc(&reply), want_dc, "from {source} with ECS 0.0.0.0/0");
        assert_ecs_echo(&reply, "0.0.0.0/0", 0);
    }
    // ECS, when given, beats the source address.
    let reply = query_udp_from(
        "127.0.0.2".parse().unwrap(),
        server.addr,
        &www().ecs("127.0.0.3/32"),
    );
    assert_eq!(dc(&reply), "fra");
    assert_ecs_echo(&reply, "127.0.0.3/32", 24); // the /32 network, capped
}

#[test]
fn geo_rules_most_specific_match_wins() {
    let server = TestServer::start(GEO_ZONE);
    // Every expected DC differs from what `nearest` would pick, so the rules are what decides.
    let cases: &[(&str, &str, u8)] = &[
        ("81.2.69.142/32", "sin", 24),   // GB: EU
        ("2.3.3.0/24", "sin", 24),       // continent EU only
        ("2a02:d180::/29", "sin", 29),   // DE: EU
        ("149.101.100.0/28", "sea", 24), // US, no subdivision: NA-US
        ("216.160.83.56/29", "iad", 24), // US-WA: NA-US-WA beats NA-US
        ("2001:218::/32", "iad", 32),    // JP: AS-JP
        ("175.16.199.0/24", "fra", 24),  // CN: no rule, default
        ("10.1.2.0/24", "fra", 24),      // unknown: default
    ];
    for &(net, want_dc, scope) in cases {
        let (got, reply) = ask_ecs(&server, "rules.api.example.com", RecordType::A, net);
        assert_eq!(got, want_dc, "{net}");
        assert_ecs_echo(&reply, net, scope);
    }
}

#[test]
fn failover_ignores_the_location_and_answers_with_scope_zero() {
    let server = TestServer::start(GEO_ZONE);
    for net in [
        "81.2.69.142/32",
        "216.160.83.56/29",
        "2001:218::/32",
        "10.1.2.0/24",
    ] {
        let (got, reply) = ask_ecs(&server, "fixed.api.example.com", RecordType::A, net);
        assert_eq!(got, "sin", "{net}");
        assert_ecs_echo(&reply, net, 0);
    }
    let reply = query_udp(
        server.addr,
        &query("fixed.api.example.com", RecordType::AAAA),
    );
    assert_eq!(addresses(&reply), ["2001:db8:30::1"]);
}

#[test]
fn weighted_is_stable_per_client_network() {
    // About 180 identical questions in a row from one resolver: rate limiting would (rightly)
    // cut them short.
    let server = TestServer::start_with(GEO_ZONE, &["--rrl", "off"]);
    let mut seen = std::collections::BTreeMap::new();
    for k in 0..32 {
        let net = format!("175.16.{k}.0/24");
        let (first, reply) = ask_ecs(&server, "split.api.example.com", RecordType::A, &net);
        assert_ecs_echo(&reply, &net, 24);
        // Every client of the /24, and the same client again, gets the same DC.
        for host in [1, 77, 200, 77] {
            let one = format!("175.16.{k}.{host}/32");
            let (got, reply) = ask_ecs(&server, "split.api.example.com", RecordType::A, &one);
            assert_eq!(got, first, "{one} vs {net}");
            assert_ecs_echo(&reply, &one, 24);
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    for k in 0..8 {
        let net = format!("2001:db8:0:{k}00::/56");
        let (first, reply) = ask_ecs(&server, "split.api.example.com", RecordType::A, &net);
        assert_ecs_echo(&reply, &net, 56);
        let inside = format!("2001:db8:0:{k}42::/64");
        let (got, _) = ask_ecs(&server, "split.api.example.com", RecordType::A, &inside);
        assert_eq!(got, first, "{inside} vs {net}");
    }
    // Weights 1:1 split 32 networks; weight 0 (sin) only serves when nothing else is up.
    assert_eq!(seen.get("sin"), None, "{seen:?}");
    assert!(
        seen.get("iad").is_some_and(|n| *n >= 6) && seen.get("fra").is_some_and(|n| *n >= 6),
        "both weighted DCs get a share: {seen:?}"
    );
}

/// The client the swap test watches, and where each database puts it.
const SWAP_CLIENT: &str = "175.16.199.0/24";

#[test]
fn database_swap_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    let fixture =
        |name: &str| std::fs::read(manifest_path(&format!("tests/fixtures/geoip/{name}"))).unwrap();
    std::fs::write(&db, fixture("GeoIP2-City-Test.mmdb")).unwrap();
    let mut server = TestServer::start_with(GEO_ZONE, &["--geoip", db.to_str().unwrap()]);
    let www =
        |server: &TestServer| ask_ecs(server, "www.api.example.com", RecordType::A, SWAP_CLIENT).0;
    assert_eq!(www(&server), "sin", "Changchun in the MaxMind test DB");
    let changes_to = |server: &TestServer, want: &str, limit: Duration| {
        wait_for(limit, || (www(server) == want).then_some(()))
            .unwrap_or_else(|| {
                panic!(
                    "answer still not {want} after {limit:?}; stderr:\n{}",
                    server.stderr()
                )
            })
            .1
    };

    // 1. A database that moves the client to Germany, swapped in with SIGHUP.
    let moved = geoip_db(&[GeoRow {
        network: "175.16.199.0/24",
        continent: "EU",
        country: "DE",
        latitude: 51.5,
        longitude: 10.5,
    }]);
    replace_file(&db, &moved);
    server.signal("HUP");
    changes_to(&server, "fra", Duration::from_secs(3));
    assert_ecs_echo(
        &query_udp(
            server.addr,
            &query("www.api.example.com", RecordType::A).ecs(SWAP_CLIENT),
        ),
        SWAP_CLIENT,
        24,
    );

    // 2. Without a signal: the file watcher (every 2 s) notices a new file. GeoLite2-Country-Test
    //    does not know the client, so it falls back to the first DC.
    replace_file(&db, &fixture("GeoLite2-Country-Test.mmdb"));
    changes_to(&server, "iad", Duration::from_secs(5));
    // ... while it knows London (country centroid of GB: nearest fra).
    let london = |server: &TestServer| {
        ask_ecs(
            server,
            "www.api.example.com",
            RecordType::A,
            "81.2.69.142/32",
        )
        .0
    };
    assert_eq!(london(&server), "fra");

    // 3. Broken files and a missing file keep the loaded database; the server keeps serving.
    let failures = |s: &TestServer| s.stderr().matches("GeoIP reload failed").count();
    let mut failed = failures(&server);
    for (what, bytes) in [
        (
            "cannot be opened",
            Some(fixture("GeoIP2-City-Test-Invalid-Node-Count.mmdb")),
        ),
        (
            "fails verification",
            Some(fixture("MaxMind-DB-test-broken-search-tree-24.mmdb")),
        ),
        (
            "random bytes",
            Some((0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect()),
        ),
        ("deleted", None),
    ] {
        match bytes {
            Some(b) => replace_file(&db, &b),
            None => std::fs::remove_file(&db).unwrap(),
        }
        server.signal("HUP");
        server.wait_for_log("GeoIP reload failed", failed + 1, Duration::from_secs(3));
        failed = failures(&server);
        for _ in 0..5 {
            assert_eq!(www(&server), "iad", "after a database that {what}");
            assert_eq!(london(&server), "fra", "after a database that {what}");
        }
        assert!(server.is_alive(), "after a database that {what}");
    }

    // 4. A good file again is picked up.
    replace_file(&db, &moved);
    server.signal("HUP");
    changes_to(&server, "fra", Duration::from_secs(3));
}

/// The README's example: `zones/` with the shipped DB-IP databases puts three real networks on
/// three continents in three DCs.
#[test]
fn shipped_zone_sends_three_continents_to_three_dcs() {
    let server = TestServer::start_dir(&manifest_path("zones"));
    for (net, want) in [
        ("81.2.69.0/24", vec!["203.0.113.10", "203.0.113.11"]), // London -> fra
        ("8.8.8.0/24", vec!["198.51.100.20"]),                  // California -> iad
        ("1.1.1.0/24", vec!["192.0.2.30"]),                     // Sydney -> sin
    ] {
        let reply = query_udp(
            server.addr,
            &query("www.api.example.com", RecordType::A).ecs(net),
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&reply), want, "{net}");
        assert_ecs_echo(&reply, net, 24);
    }
}

#[test]
fn explain_names_the_chosen_dc_and_the_location() {
    let run = run_steerdns(
        &manifest_path(""),
        &["explain", "www.api.example.com", "--subnet", "1.1.1.0/24"].map(std::ffi::OsStr::new),
    );
    assert!(run.status.success(), "{run:?}");
    let out = &run.stdout;
    assert!(out.contains("country AU"), "location:\n{out}");
    assert!(out.contains("network /24"), "network:\n{out}");
    let chosen: Vec<&str> = out.lines().filter(|l| l.ends_with("<- answers")).collect();
    assert_eq!(chosen.len(), 1, "{out}");
    assert!(chosen[0].contains("sin"), "chosen DC:\n{out}");
    assert!(
        out.contains("answer:    www.api.example.com. 30 A 192.0.2.30"),
        "{out}"
    );
    assert!(out.contains("ECS scope: /24"), "{out}");
}
