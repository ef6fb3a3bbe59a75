//! Issue 17, zone import: `steerdns import bind` and `steerdns import octodns` run as commands,
//! their output served by `steerdns serve` and asked for name by name against the source; what
//! an import lists as left out, `--strict`, and bad input named by file and line.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

/// The master file with every record type steerdns serves (its comments say what is in it).
const BIND_FIXTURE: &str = "tests/fixtures/import/example.com.zone";

/// Runs `steerdns ARGS` in `cwd`.
fn steerdns(cwd: &Path, args: &[&str]) -> Run {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_steerdns(cwd, &args)
}

/// Everything the server returns for `name`/`rtype` in any section, sorted: the answer, or for
/// a name in a delegated sub-zone the referral's NS set and glue.
fn served(server: &TestServer, name: &str, rtype: RecordType) -> Vec<String> {
    let reply = query_udp(server.addr, &query(name, rtype));
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{name} {rtype}"
    );
    let owner = format!("{name}.");
    let mut all: Vec<String> = reply
        .answers
        .iter()
        .chain(&reply.authorities)
        .chain(&reply.additionals)
        .filter(|r| r.name.to_ascii() == owner && r.record_type() == rtype)
        .map(show)
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The test GeoIP database (tests/fixtures/geoip/README.md has its networks): quick to open.
fn test_geoip() -> String {
    manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb")
        .display()
        .to_string()
}

#[test]
fn a_bind_zone_imported_and_served_answers_every_name_as_the_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("zone dir");
    let out = zones.join("example.com.yaml");
    let out_arg = out.display().to_string();
    let run = steerdns(
        &manifest_path(""),
        &[
            "import",
            "bind",
            BIND_FIXTURE,
            "--zone",
            "example.com",
            "-o",
            &out_arg,
        ],
    );
    assert_eq!(run.code(), Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(run.stdout, "", "the YAML goes to the -o file");
    // What cannot be served is listed, each with its line, in source order.
    let listed = [
        "tests/fixtures/import/example.com.zone:31: dkim._domainkey.example.com. TXT: 2 character string(s) served as 1 (split at 255 octets); clients that join them read the same text",
        "tests/fixtures/import/example.com.zone:41: ptr.example.com. PTR: steerdns serves no PTR records; left out",
        "tests/fixtures/import/example.com.zone:42: ssh.example.com. SSHFP: steerdns serves no SSHFP records; left out",
        "tests/fixtures/import/example.com.zone:43: *.dev.example.com. A: wildcard: steerdns does no wildcard synthesis (it would answer only the literal name `*`); left out",
    ];
    let mut expected_stderr: String = listed.iter().map(|w| format!("warning: {w}\n")).collect();
    expected_stderr.push_str(
        "imported zone example.com.: 12 names, 0 service(s), 4 warning(s) (also listed at the top of the file)\n",
    );
    assert_eq!(run.stderr, expected_stderr);
    let yaml = std::fs::read_to_string(&out).expect("reading the imported zone");
    let header: String = listed.iter().map(|w| format!("#   {w}\n")).collect();
    assert!(
        yaml.starts_with(&format!(
            "# Imported with `steerdns import bind {BIND_FIXTURE}`.\n\
             # Left out or served differently (4):\n{header}\n"
        )),
        "{yaml}"
    );
    let check = steerdns(&manifest_path(""), &["check", &zones.display().to_string()]);
    assert_eq!(check.code(), Some(0), "{}", check.stderr);

    let server = TestServer::start_dir_with(&zones, &["--geoip", &test_geoip()]);
    let long = format!("{}01234", "0123456789".repeat(25));
    let long_record = format!("long.example.com. 3600 TXT {long:?} \"the rest\"");
    // The source, record by record: (name, type, what the server must hold). TTLs are the
    // source's; the DKIM key's two strings come back as one (listed above).
    let cases: &[(&str, RecordType, &[&str])] = &[
        (
            "example.com",
            RecordType::SOA,
            &[
                "example.com. 3600 SOA ns1.example.com. hostmaster.example.com. 2026120101 7200 3600 1209600 300",
            ],
        ),
        (
            "example.com",
            RecordType::NS,
            &[
                "example.com. 3600 NS ns1.example.com.",
                "example.com. 3600 NS ns2.example.net.",
            ],
        ),
        (
            "example.com",
            RecordType::A,
            &["example.com. 3600 A 192.0.2.1"],
        ),
        (
            "example.com",
            RecordType::AAAA,
            &["example.com. 3600 AAAA 2001:db8::1"],
        ),
        (
            "example.com",
            RecordType::MX,
            &[
                "example.com. 3600 MX 10 mail.example.com.",
                "example.com. 3600 MX 20 mx.example.net.",
            ],
        ),
        (
            "example.com",
            RecordType::TXT,
            &["example.com. 3600 TXT \"v=spf1 mx -all\""],
        ),
        (
            "example.com",
            RecordType::CAA,
            &[
                "example.com. 3600 CAA 0 issue \"letsencrypt.org\"",
                "example.com. 3600 CAA 128 iodef \"mailto:security@example.com\"",
            ],
        ),
        (
            "ns1.example.com",
            RecordType::A,
            &["ns1.example.com. 3600 A 192.0.2.53"],
        ),
        (
            "ns1.example.com",
            RecordType::AAAA,
            &["ns1.example.com. 3600 AAAA 2001:db8::53"],
        ),
        (
            "mail.example.com",
            RecordType::A,
            &["mail.example.com. 300 A 192.0.2.25"],
        ),
        (
            "www.example.com",
            RecordType::CNAME,
            &["www.example.com. 3600 CNAME example.com."],
        ),
        (
            "docs.example.com",
            RecordType::CNAME,
            &["docs.example.com. 3600 CNAME www.example.net."],
        ),
        (
            "_sip._tcp.example.com",
            RecordType::SRV,
            &["_sip._tcp.example.com. 600 SRV 10 60 5060 sip.example.com."],
        ),
        (
            "sip.example.com",
            RecordType::A,
            &["sip.example.com. 3600 A 192.0.2.60"],
        ),
        (
            "sip.example.com",
            RecordType::AAAA,
            &["sip.example.com. 3600 AAAA 2001:db8::60"],
        ),
        (
            "quoted.example.com",
            RecordType::TXT,
            &["quoted.example.com. 3600 TXT \"a;b \\\"c\\\" \\\\ A\""],
        ),
        (
            "dkim._domainkey.example.com",
            RecordType::TXT,
            &[
                "dkim._domainkey.example.com. 3600 TXT \"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC\"",
            ],
        ),
        ("long.example.com", RecordType::TXT, &[&long_record]),
        // The delegation: a referral with the NS set and its glue.
        (
            "legacy.example.com",
            RecordType::NS,
            &[
                "legacy.example.com. 3600 NS ns.example.org.",
                "legacy.example.com. 3600 NS ns1.legacy.example.com.",
            ],
        ),
        (
            "ns1.legacy.example.com",
            RecordType::A,
            &["ns1.legacy.example.com. 3600 A 192.0.2.77"],
        ),
    ];
    for (name, rtype, want) in cases {
        assert_eq!(served(&server, name, *rtype), *want, "{name} {rtype}");
    }
    // What was listed is not served.
    for (name, rtype) in [
        ("ptr.example.com", RecordType::PTR),
        ("ssh.example.com", RecordType::SSHFP),
        ("x.dev.example.com", RecordType::A),
    ] {
        let reply = query_udp(server.addr, &query(name, rtype));
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name} {rtype}"
        );
    }
}

#[test]
fn strict_refuses_an_import_that_leaves_something_out_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.yaml");
    let out_arg = out.display().to_string();
    let run = steerdns(
        &manifest_path(""),
        &[
            "import",
            "bind",
            BIND_FIXTURE,
            "--zone",
            "example.com",
            "-o",
            &out_arg,
            "--strict",
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.ends_with(
            "steerdns: --strict: 4 record(s) left out or served differently (listed above); nothing written\n"
        ),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing written under --strict");

    // Without -o the YAML goes to standard output; a clean source passes --strict.
    std::fs::write(
        dir.path().join("clean.zone"),
        "$TTL 300\n@ NS ns.example.net.\nwww A 192.0.2.1\n",
    )
    .expect("writing the zone");
    let run = steerdns(
        dir.path(),
        &[
            "import",
            "bind",
            "clean.zone",
            "--zone",
            "example.com",
            "--strict",
        ],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "# Imported with `steerdns import bind clean.zone`.\n# Nothing was left out.\n\n\
         zone: example.com\nttl: 300\nnameservers:\n  ns.example.net.: []\nrecords:\n  www:\n    A: 192.0.2.1\n"
    );
}

#[test]
fn bad_input_is_refused_naming_the_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.yaml");
    let out_arg = out.display().to_string();
    let cases: &[(&str, &str, &str)] = &[
        (
            "bad.zone",
            "$TTL 3600\n@ NS ns.example.net.\nwww A 192.0.2.1\nmail MX 10\n",
            "steerdns: bad.zone:4: mail.example.com. MX: MX takes PREFERENCE EXCHANGE, but 1 word(s) follow\n",
        ),
        (
            "outside.zone",
            "$TTL 3600\n@ NS ns.example.net.\nwww.example.org. A 192.0.2.1\n",
            "steerdns: outside.zone:3: www.example.org. A is outside the zone example.com.\n",
        ),
        (
            "paren.zone",
            "$TTL 3600\n@ NS ns.example.net.\n@ SOA ns.example.net. hostmaster ( 1 2\n 3 4\n",
            "steerdns: paren.zone:3: '(' is not closed\n",
        ),
        (
            "address.yaml",
            "'':\n  type: NS\n  value: ns.example.net.\nwww:\n  type: AAAA\n  value: 192.0.2.1\n",
            "steerdns: address.yaml:4: www.example.com. AAAA: \"192.0.2.1\" is not an IPv6 address\n",
        ),
    ];
    for (file, text, error) in cases {
        std::fs::write(dir.path().join(file), text).expect("writing the source");
        let kind = if file.ends_with(".yaml") {
            "octodns"
        } else {
            "bind"
        };
        let run = steerdns(
            dir.path(),
            &[
                "import",
                kind,
                file,
                "--zone",
                "example.com",
                "-o",
                &out_arg,
            ],
        );
        assert_eq!(run.code(), Some(1), "{file}: {}", run.stderr);
        assert_eq!(run.stderr, *error, "{file}");
        assert!(!out.exists(), "{file}: nothing written");
    }
}

/// An octoDNS zone whose `www` is dynamic: four pools on loopback backends, rules for
/// California, Europe, Asia and Oceania, and a catch-all; `eu` and `ca` fall back to `na`, `ap`
/// to `eu`, `na` (implicitly) to the record's own values. `{..}` are filled in by the test.
const OCTODNS: &str = "
'':
  - type: NS
    values: [ns1.example.net., ns2.example.net.]
  - type: TXT
    value: v=spf1 -all
  - type: MX
    value: { exchange: mail.example.com., preference: 10 }
mail:
  type: A
  value: 192.0.2.25
www:
  type: A
  ttl: 60
  values: [{values}]
  dynamic:
    pools:
      ca: { fallback: na, values: [{ value: {ca} }] }
      eu: { fallback: na, values: [{ value: {eu1} }, { value: {eu2} }] }
      ap: { fallback: eu, values: [{ value: {ap} }] }
      na: { values: [{ value: {na} }] }
    rules:
      - { geos: [NA-US-CA], pool: ca }
      - { geos: [EU], pool: eu }
      - { geos: [AS, OC], pool: ap }
      - pool: na
  octodns:
    healthcheck: { host: www.example.com, path: /_dns, port: {port}, protocol: HTTP }
";

#[test]
fn an_octodns_dynamic_record_serves_each_rules_pool_and_falls_back_down_the_chain() {
    // Six healthy backends, one port: ca, eu (two), ap, na, and the record's own value.
    let backends = start_backends(6, None);
    let ip = |i: usize| backends[i].ip().to_string();
    let (ca, eu1, eu2, ap, na, values) = (ip(0), ip(1), ip(2), ip(3), ip(4), ip(5));
    let source = OCTODNS
        .replace("{values}", &values)
        .replace("{ca}", &ca)
        .replace("{eu1}", &eu1)
        .replace("{eu2}", &eu2)
        .replace("{ap}", &ap)
        .replace("{na}", &na)
        .replace("{port}", &backends[0].port().to_string());
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("example.com.yaml"), &source).expect("writing the source");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("zone dir");
    // The apex comes from the file name, as octoDNS names its zone files.
    let run = steerdns(
        dir.path(),
        &[
            "import",
            "octodns",
            "example.com.yaml",
            "-o",
            "zones/example.com.yaml",
        ],
    );
    assert_eq!(run.code(), Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(
        run.stderr,
        "imported zone example.com.: 3 names, 1 service(s), 0 warning(s)\n"
    );

    let server = TestServer::start_dir_with(&zones, &["--geoip", &test_geoip()]);
    // The static records.
    assert_eq!(
        served(&server, "example.com", RecordType::NS),
        [
            "example.com. 3600 NS ns1.example.net.",
            "example.com. 3600 NS ns2.example.net."
        ]
    );
    assert_eq!(
        served(&server, "example.com", RecordType::MX),
        ["example.com. 3600 MX 10 mail.example.com."]
    );
    assert_eq!(
        served(&server, "example.com", RecordType::TXT),
        ["example.com. 3600 TXT \"v=spf1 -all\""]
    );
    assert_eq!(
        served(&server, "mail.example.com", RecordType::A),
        ["mail.example.com. 3600 A 192.0.2.25"]
    );

    // Client networks of the test GeoIP database, and where octoDNS's rules send them.
    let london = "81.2.69.142/32"; // EU-GB-ENG
    let san_diego = "214.78.120.0/24"; // NA-US-CA
    let milton = "216.160.83.56/29"; // NA-US-WA: no rule of its own, the catch-all
    let changchun = "175.16.199.0/24"; // AS-CN
    let nowhere = "10.1.2.0/24"; // not in the database: the catch-all
    let ask = |net: &str| -> Vec<String> {
        let reply = query_udp(
            server.addr,
            &query("www.example.com", RecordType::A).ecs(net),
        );
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "{net}");
        addresses(&reply)
    };
    let sorted_pair = |a: &str, b: &str| {
        let mut v = vec![a.to_string(), b.to_string()];
        v.sort();
        v
    };
    let all_up = [
        (london, sorted_pair(&eu1, &eu2)),
        (san_diego, vec![ca.clone()]),
        (milton, vec![na.clone()]),
        (changchun, vec![ap.clone()]),
        (nowhere, vec![na.clone()]),
    ];
    for (net, want) in &all_up {
        assert_eq!(ask(net), *want, "{net}, everything up");
    }

    // Waits until every network in `want` gets its addresses, or fails naming what was served.
    let settle = |what: &str, want: &[(&str, Vec<String>)]| {
        let got = wait_for(Duration::from_secs(15), || {
            want.iter()
                .all(|(net, addrs)| ask(net) == *addrs)
                .then_some(())
        });
        if got.is_none() {
            let now: Vec<(String, Vec<String>)> =
                want.iter().map(|(n, _)| (n.to_string(), ask(n))).collect();
            panic!("{what}: served {now:?}, want {want:?}");
        }
    };

    // eu down: Europe falls back to na; Asia (ap) is untouched.
    backends[1].set(Mode::Closed);
    backends[2].set(Mode::Closed);
    settle(
        "eu down",
        &[
            (london, vec![na.clone()]),
            (changchun, vec![ap.clone()]),
            (san_diego, vec![ca.clone()]),
        ],
    );
    // ap down too: Asia goes ap → eu (down) → na.
    backends[3].set(Mode::Closed);
    settle(
        "eu and ap down",
        &[(changchun, vec![na.clone()]), (london, vec![na.clone()])],
    );
    // na down as well: every chain ends at the record's own values; California still has ca.
    backends[4].set(Mode::Closed);
    settle(
        "eu, ap and na down",
        &[
            (london, vec![values.clone()]),
            (changchun, vec![values.clone()]),
            (milton, vec![values.clone()]),
            (nowhere, vec![values.clone()]),
            (san_diego, vec![ca.clone()]),
        ],
    );
    // eu back: Europe and Asia (ap's fallback) return to it.
    backends[1].set(Mode::Healthy);
    backends[2].set(Mode::Healthy);
    settle(
        "eu back",
        &[
            (london, sorted_pair(&eu1, &eu2)),
            (changchun, sorted_pair(&eu1, &eu2)),
            (milton, vec![values.clone()]),
        ],
    );
}
