//! `steerdns check` and `steerdns serve` on broken and shipped zones. The broken zones live in
//! `tests/fixtures/invalid/`, each named after the error it triggers.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

/// Each fixture and the line `check` must print for it, after the directory. A line ending in
/// `...` only has to start with the text before it (for messages that list what serde expects).
const INVALID: &[(&str, &str)] = &[
    (
        "unknown_field.yaml",
        "unknown_field.yaml:8: zone api.example.com, record www, unknown field `tll`, expected one of `ttl`...",
    ),
    (
        "bad_address.yaml",
        "bad_address.yaml:8: zone api.example.com, record www, field A: \"300.1.1.1\" is not an IPv4 or IPv6 address",
    ),
    (
        "name_outside_zone.yaml",
        "name_outside_zone.yaml:8: zone api.example.com, record www.example.org., field name: www.example.org. is outside the zone api.example.com.",
    ),
    (
        "cname_beside_other_data.yaml",
        "cname_beside_other_data.yaml:8: zone api.example.com, record docs, field CNAME: a CNAME cannot stand beside other data at the same name (RFC 1034 section 3.6.2)",
    ),
    (
        "undefined_datacenter.yaml",
        "undefined_datacenter.yaml:8: zone api.example.com, record www, field service.endpoints.mars: data center \"mars\" is not defined under `datacenters`",
    ),
    (
        "duplicate_name.yaml",
        "duplicate_name.yaml:9: zone api.example.com, record www.api.example.com., field name: duplicate name: www.api.example.com. is already defined by www",
    ),
    (
        "missing_nameservers.yaml",
        "missing_nameservers.yaml: zone api.example.com, field nameservers: missing: every zone needs at least one name server",
    ),
    (
        "ttl_out_of_range.yaml",
        "ttl_out_of_range.yaml:8: zone api.example.com, record www, field ttl: TTL 3000000000 is out of range (0 to 2147483647, RFC 2181)",
    ),
    (
        "ramp_out_of_range.yaml",
        "ramp_out_of_range.yaml:8: zone api.example.com, record www, field service.ramp: \"48h\" is out of range (1s to 24h, or off)",
    ),
    (
        "latency_without_regions.yaml",
        "latency_without_regions.yaml:8: zone api.example.com, record www, field service.policy: policy latency needs `regions` at the top of the zone file: every node region (the `region:` of the node config) with its location, `regions: { eu: { location: [50.1, 8.7] } }`",
    ),
    (
        "yaml_syntax.yaml",
        "yaml_syntax.yaml:9:9: did not find expected ',' or '}'...",
    ),
];

fn fixture(file: &str) -> PathBuf {
    manifest_path("tests/fixtures/invalid").join(file)
}

/// A temp dir holding only a copy of the fixture, so `check` sees that one file.
fn dir_with(file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    std::fs::copy(fixture(file), dir.path().join(file))
        .unwrap_or_else(|e| panic!("copying fixture {file}: {e}"));
    dir
}

fn check(dir: &Path) -> Run {
    run_steerdns(dir, &[OsStr::new("check"), dir.as_os_str()])
}

/// Whether `stderr` has the line `{dir}/{expected}` (see `INVALID` for the `...` form).
fn has_line(stderr: &str, dir: &Path, expected: &str) -> bool {
    let want = format!("{}/{}", dir.display(), expected);
    stderr.lines().any(|line| match want.strip_suffix("...") {
        Some(prefix) => line.starts_with(prefix),
        None => line == want,
    })
}

#[test]
fn check_reports_each_kind_of_invalid_zone() {
    for (file, expected) in INVALID {
        let dir = dir_with(file);
        let run = check(dir.path());
        assert_eq!(run.status.code(), Some(1), "{file}: exit code; {run:?}");
        assert!(
            has_line(&run.stderr, dir.path(), expected),
            "{file}: expected the line\n  {expected}\nin stderr:\n{}",
            run.stderr
        );
        assert_eq!(
            run.stderr.lines().last(),
            Some("1 error(s)"),
            "{file}: one error"
        );
    }
}

#[test]
fn every_invalid_fixture_is_checked() {
    let mut on_disk: Vec<String> = std::fs::read_dir(manifest_path("tests/fixtures/invalid"))
        .expect("reading the fixture dir")
        .map(|e| e.expect("a dir entry").file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut covered: Vec<String> = INVALID.iter().map(|(f, _)| f.to_string()).collect();
    covered.push("many_errors.yaml".to_string());
    covered.sort();
    assert_eq!(on_disk, covered);
}

#[test]
fn check_lists_every_error_of_a_file_at_once() {
    let dir = dir_with("many_errors.yaml");
    let run = check(dir.path());
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    for expected in [
        "many_errors.yaml:8: zone api.example.com, record www, field A: \"300.1.1.1\" is not an IPv4 or IPv6 address",
        "many_errors.yaml:9: zone api.example.com, record status, field ttl: TTL 3000000000 is out of range (0 to 2147483647, RFC 2181)",
        "many_errors.yaml:10: zone api.example.com, record api, field service.endpoints.mars: data center \"mars\" is not defined under `datacenters`",
    ] {
        assert!(
            has_line(&run.stderr, dir.path(), expected),
            "expected the line\n  {expected}\nin stderr:\n{}",
            run.stderr
        );
    }
    assert_eq!(run.stderr.lines().last(), Some("3 error(s)"));
}

#[test]
fn check_accepts_the_shipped_zones() {
    let run = run_steerdns(
        &manifest_path(""),
        &[OsStr::new("check"), OsStr::new("zones")],
    );
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("ok: zone api.example.com. (zones/example.yaml,")),
        "stdout:\n{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "stderr:\n{}", run.stderr);
}

#[test]
fn serve_refuses_to_start_on_a_broken_zone() {
    let dir = dir_with("bad_address.yaml");
    let ready = dir.path().join("ready.json");
    let geoip = manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb");
    let run = run_steerdns(
        dir.path(),
        &[
            OsStr::new("serve"),
            OsStr::new("--geoip"),
            geoip.as_os_str(),
            OsStr::new("--zones"),
            dir.path().as_os_str(),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--ready-file"),
            ready.as_os_str(),
        ],
    );
    assert!(!run.status.success(), "{run:?}");
    let expected = INVALID
        .iter()
        .find(|(f, _)| *f == "bad_address.yaml")
        .map(|(_, line)| *line)
        .unwrap();
    let want = format!("{}/{}", dir.path().display(), expected);
    assert!(
        run.stderr.contains(&want),
        "expected\n  {want}\nin stderr:\n{}",
        run.stderr
    );
    assert!(
        !ready.exists(),
        "a server that did not start wrote its ready file"
    );
}

#[test]
fn the_shipped_zones_are_served() {
    let server = TestServer::start_dir(&manifest_path("zones"));
    let reply = query_udp(server.addr, &query("www.api.example.com", RecordType::A));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    // fra is the first DC; `answers: 2`.
    assert_eq!(
        sorted(&reply.answers),
        [
            "www.api.example.com. 30 A 203.0.113.10",
            "www.api.example.com. 30 A 203.0.113.11",
        ]
    );
    let docs = query_tcp(
        server.addr,
        &[query("docs.api.example.com", RecordType::AAAA)],
    )
    .remove(0);
    assert_eq!(
        records(&docs.answers),
        [
            "docs.api.example.com. 300 CNAME www.api.example.com.",
            "www.api.example.com. 30 AAAA 2001:db8:10::1",
        ]
    );
}

/// Issue 18: a zone without `soa:` loads and serves the documented SOA: the first name server
/// as primary, hostmaster at the zone as contact, serial 1, refresh 7200, retry 3600, expire
/// 1209600, minimum 60, TTL the zone's.
#[test]
fn a_zone_without_an_soa_block_serves_the_documented_one() {
    let zone = "zone: api.example.com\nttl: 120\nnameservers: { ns1: [192.0.2.53], ns2: [192.0.2.54] }\nrecords:\n  www: { A: 192.0.2.1 }\n";
    let server = TestServer::start(zone);
    let reply = query_udp(server.addr, &query("api.example.com", RecordType::SOA));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        records(&reply.answers),
        [
            "api.example.com. 120 SOA ns1.api.example.com. hostmaster.api.example.com. 1 7200 3600 1209600 60"
        ]
    );
    // And NXDOMAIN carries it for negative caching.
    let reply = query_udp(server.addr, &query("nope.api.example.com", RecordType::A));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(reply.authorities.len(), 1);
}

/// Issue 18: `serve` (and `check`) started outside a checkout with no paths given says, once,
/// where it looked and which flag sets the path; given the paths, it serves from anywhere.
#[test]
fn serve_from_another_directory_names_where_it_looked_and_the_flag() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let os = |s: &str| std::ffi::OsString::from(s);
    let ports = [
        os("--listen"),
        os("127.0.0.1:0"),
        os("--admin"),
        os("127.0.0.1:0"),
    ];
    let run_in = |args: &[std::ffi::OsString]| {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_steerdns(dir.path(), &args)
    };
    let mut serve = vec![os("serve")];
    serve.extend(ports.iter().cloned());
    for (args, want) in [
        (
            serve.clone(),
            "steerdns: no zone directory given, and none at ./zones or /etc/steerdns/zones: give one with --zones DIR (or zones: in the node file)",
        ),
        (
            vec![os("check")],
            "steerdns: no zone directory given, and none at ./zones or /etc/steerdns/zones: give one with --zones DIR (or zones: in the node file)",
        ),
        (
            [
                serve.clone(),
                vec![os("--zones"), manifest_path("zones").into_os_string()],
            ]
            .concat(),
            "steerdns: no GeoIP database given, and none at ./geoip/dbip-city-lite-coarse-ipv4.mmdb or /usr/share/steerdns/geoip/dbip-city-lite-coarse-ipv4.mmdb: give one with --geoip FILE (or geoip: in the node file)",
        ),
        (
            [
                serve.clone(),
                vec![
                    os("--zones"),
                    os("/nonexistent/zones"),
                    os("--geoip"),
                    manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb").into_os_string(),
                ],
            ]
            .concat(),
            "steerdns: loading zones (the directory is set with --zones DIR or zones: in the node file): /nonexistent/zones: cannot read zone directory: No such file or directory (os error 2)",
        ),
        (
            [
                serve.clone(),
                vec![
                    os("--zones"),
                    manifest_path("zones").into_os_string(),
                    os("--geoip"),
                    os("/nonexistent.mmdb"),
                ],
            ]
            .concat(),
            "steerdns: loading GeoIP data (set with --geoip FILE or geoip: in the node file): GeoIP database /nonexistent.mmdb: cannot read it: No such file or directory (os error 2)",
        ),
    ] {
        let run = run_in(&args);
        assert_eq!(run.code(), Some(1), "{args:?}: {run:?}");
        assert_eq!(
            run.stderr.trim_end().lines().last(),
            Some(want),
            "{args:?}: {run:?}"
        );
    }
    // Given both paths, it serves from here.
    let ready = dir.path().join("ready.json");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_steerdns"));
    cmd.current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--zones",
        ])
        .arg(manifest_path("zones"))
        .arg("--geoip")
        .arg(manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb"))
        .arg("--ready-file")
        .arg(&ready);
    let (mut child, dns, _) = spawn_serve(
        cmd,
        &ready,
        &dir.path().join("log"),
        std::time::Duration::from_secs(20),
        "serve with paths from a temp dir",
    );
    let reply = query_udp(dns, &query("api.example.com", RecordType::SOA));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let _ = child.kill();
    let _ = child.wait();
}
