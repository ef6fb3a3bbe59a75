//! What the answer, authority and additional sections hold: record data, services, CNAMEs,
//! negative answers, referrals and minimal ANY.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::*;

/// The SOA of `ZONE` as negative answers carry it: TTL min(3600, minimum 60) = 60.
const NEGATIVE_SOA: &str = "api.example.com. 60 SOA ns1.api.example.com. hostmaster.example.com. 2026113001 7200 3600 1209600 60";

fn ask(server: &TestServer, name: &str, rtype: RecordType) -> Message {
    query_udp(server.addr, &query(name, rtype))
}

#[test]
fn static_records_are_answered_with_their_data() {
    let server = TestServer::start(ZONE);
    let cases: &[(&str, RecordType, &[&str])] = &[
        (
            "status.api.example.com",
            RecordType::A,
            &[
                "status.api.example.com. 300 A 192.0.2.10",
                "status.api.example.com. 300 A 192.0.2.11",
            ],
        ),
        (
            "status.api.example.com",
            RecordType::AAAA,
            &["status.api.example.com. 300 AAAA 2001:db8::10"],
        ),
        (
            "status.api.example.com",
            RecordType::TXT,
            &[
                "status.api.example.com. 300 TXT \"hello\"",
                "status.api.example.com. 300 TXT \"world\"",
            ],
        ),
        (
            "api.example.com",
            RecordType::TXT,
            &["api.example.com. 300 TXT \"v=spf1 -all\""],
        ),
        (
            "api.example.com",
            RecordType::MX,
            &["api.example.com. 300 MX 10 mail.example.com."],
        ),
        (
            "_https._tcp.api.example.com",
            RecordType::SRV,
            &["_https._tcp.api.example.com. 300 SRV 10 5 443 www.api.example.com."],
        ),
        (
            "api.example.com",
            RecordType::CAA,
            &["api.example.com. 300 CAA 0 issue \"letsencrypt.org\""],
        ),
        (
            "api.example.com",
            RecordType::NS,
            &[
                "api.example.com. 300 NS ns.other.net.",
                "api.example.com. 300 NS ns1.api.example.com.",
            ],
        ),
        (
            "api.example.com",
            RecordType::SOA,
            &[
                "api.example.com. 3600 SOA ns1.api.example.com. hostmaster.example.com. 2026113001 7200 3600 1209600 60",
            ],
        ),
        (
            "ns1.api.example.com",
            RecordType::A,
            &["ns1.api.example.com. 300 A 192.0.2.53"],
        ),
    ];
    for (name, rtype, want) in cases {
        let reply = ask(&server, name, *rtype);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name} {rtype}"
        );
        assert!(reply.metadata.authoritative, "{name} {rtype}: AA");
        assert_eq!(sorted(&reply.answers), *want, "{name} {rtype}");
    }
}

#[test]
fn apex_ns_answers_carry_glue_for_in_zone_name_servers() {
    let server = TestServer::start(ZONE);
    let reply = ask(&server, "api.example.com", RecordType::NS);
    assert_eq!(
        sorted(&reply.additionals),
        ["ns1.api.example.com. 300 A 192.0.2.53"]
    );
}

#[test]
fn a_txt_value_longer_than_255_octets_goes_out_as_several_strings() {
    let long = "x".repeat(300);
    let server = TestServer::start(&format!("{ZONE}  long: {{ TXT: \"{long}\" }}\n"));
    let reply = ask(&server, "long.api.example.com", RecordType::TXT);
    assert_eq!(
        records(&reply.answers),
        [format!(
            "long.api.example.com. 300 TXT {:?} {:?}",
            "x".repeat(255),
            "x".repeat(45)
        )]
    );
}

#[test]
fn a_service_answers_with_the_endpoints_of_its_first_data_center() {
    let server = TestServer::start(ZONE);
    // fra is listed first; `answers: 2` caps the three IPv4 endpoints at two.
    let a = ask(&server, "www.api.example.com", RecordType::A);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(
        sorted(&a.answers),
        [
            "www.api.example.com. 30 A 203.0.113.10",
            "www.api.example.com. 30 A 203.0.113.11",
        ]
    );
    let aaaa = ask(&server, "www.api.example.com", RecordType::AAAA);
    assert_eq!(
        sorted(&aaaa.answers),
        ["www.api.example.com. 30 AAAA 2001:db8:10::1"]
    );
}

#[test]
fn a_service_name_without_the_asked_type_is_nodata() {
    let server = TestServer::start(ZONE);
    let reply = ask(&server, "www.api.example.com", RecordType::TXT);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert_eq!(records(&reply.authorities), [NEGATIVE_SOA]);
}

#[test]
fn nxdomain_carries_the_soa_with_the_negative_ttl() {
    let server = TestServer::start(ZONE);
    for name in ["nope.api.example.com", "deeper.status.api.example.com"] {
        let reply = ask(&server, name, RecordType::A);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        assert!(reply.metadata.authoritative, "{name}: AA");
        assert!(reply.answers.is_empty(), "{name}: answers");
        assert_eq!(records(&reply.authorities), [NEGATIVE_SOA], "{name}");
    }
}

#[test]
fn the_negative_ttl_is_the_soa_ttl_when_that_is_lower_than_minimum() {
    let server = TestServer::start(
        "
zone: low.example
soa: { primary: ns1, contact: hostmaster@low.example, serial: 5, minimum: 600, ttl: 30 }
nameservers: { ns1: [192.0.2.1] }
",
    );
    let reply = ask(&server, "nope.low.example", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        records(&reply.authorities),
        ["low.example. 30 SOA ns1.low.example. hostmaster.low.example. 5 7200 3600 1209600 600"]
    );
}

#[test]
fn an_existing_name_without_the_type_is_nodata() {
    let server = TestServer::start(ZONE);
    for (name, rtype) in [
        ("status.api.example.com", RecordType::MX),
        ("api.example.com", RecordType::A),
        // A type steerdns holds no data for at all.
        ("status.api.example.com", RecordType::PTR),
    ] {
        let reply = ask(&server, name, rtype);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name} {rtype}"
        );
        assert!(reply.metadata.authoritative, "{name} {rtype}: AA");
        assert!(reply.answers.is_empty(), "{name} {rtype}: answers");
        assert_eq!(
            records(&reply.authorities),
            [NEGATIVE_SOA],
            "{name} {rtype}"
        );
    }
}

#[test]
fn an_empty_non_terminal_is_nodata() {
    let server = TestServer::start(ZONE);
    // Only a.b.api.example.com has data, so b.api.example.com exists but is empty.
    let reply = ask(&server, "b.api.example.com", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty());
    assert_eq!(records(&reply.authorities), [NEGATIVE_SOA]);
    // The name below it answers normally.
    let deep = ask(&server, "a.b.api.example.com", RecordType::TXT);
    assert_eq!(
        records(&deep.answers),
        ["a.b.api.example.com. 300 TXT \"deep\""]
    );
}

#[test]
fn a_cname_is_chased_inside_the_zone() {
    let server = TestServer::start(ZONE);
    let reply = ask(&server, "docs.api.example.com", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(
        records(&reply.answers),
        [
            "docs.api.example.com. 300 CNAME www.api.example.com.",
            "www.api.example.com. 30 A 203.0.113.10",
            "www.api.example.com. 30 A 203.0.113.11",
        ]
    );
    // Two links: chain -> docs -> www.
    let chain = ask(&server, "chain.api.example.com", RecordType::AAAA);
    assert_eq!(
        records(&chain.answers),
        [
            "chain.api.example.com. 300 CNAME docs.api.example.com.",
            "docs.api.example.com. 300 CNAME www.api.example.com.",
            "www.api.example.com. 30 AAAA 2001:db8:10::1",
        ]
    );
}

#[test]
fn a_cname_is_returned_for_any_type_at_its_name() {
    let server = TestServer::start(ZONE);
    // The target has no MX: the CNAME, then NODATA for the target.
    let reply = ask(&server, "docs.api.example.com", RecordType::MX);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        records(&reply.answers),
        ["docs.api.example.com. 300 CNAME www.api.example.com."]
    );
    assert_eq!(records(&reply.authorities), [NEGATIVE_SOA]);
}

#[test]
fn a_cname_query_returns_just_the_cname() {
    let server = TestServer::start(ZONE);
    let reply = ask(&server, "chain.api.example.com", RecordType::CNAME);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        records(&reply.answers),
        ["chain.api.example.com. 300 CNAME docs.api.example.com."]
    );
    assert!(reply.authorities.is_empty());
}

#[test]
fn a_cname_to_another_zone_is_not_chased() {
    let server = TestServer::start(ZONE);
    let reply = ask(&server, "outside.api.example.com", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(
        records(&reply.answers),
        ["outside.api.example.com. 300 CNAME cdn.example.net."]
    );
    assert!(reply.authorities.is_empty());
    assert!(reply.additionals.is_empty());
}

#[test]
fn names_in_a_delegated_sub_zone_get_a_referral_with_glue() {
    let server = TestServer::start(ZONE);
    for (name, rtype) in [
        ("x.sub.api.example.com", RecordType::A),
        ("sub.api.example.com", RecordType::A),
        ("deep.x.sub.api.example.com", RecordType::TXT),
    ] {
        let reply = ask(&server, name, rtype);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(!reply.metadata.authoritative, "{name}: AA must be clear");
        assert!(reply.answers.is_empty(), "{name}: answers");
        assert_eq!(
            sorted(&reply.authorities),
            [
                "sub.api.example.com. 300 NS ns.elsewhere.net.",
                "sub.api.example.com. 300 NS ns.sub.api.example.com.",
            ],
            "{name}: authority"
        );
        assert_eq!(
            sorted(&reply.additionals),
            [
                "ns.sub.api.example.com. 300 A 192.0.2.99",
                "ns.sub.api.example.com. 300 AAAA 2001:db8::99",
            ],
            "{name}: glue"
        );
    }
}

#[test]
fn any_is_answered_minimally() {
    let server = TestServer::start(ZONE);
    // Each name holds several RRsets (the apex: NS, SOA, TXT, MX, CAA); one record comes back.
    for name in [
        "status.api.example.com",
        "api.example.com",
        "www.api.example.com",
    ] {
        for transport in ["udp", "tcp"] {
            let q = query(name, RecordType::ANY);
            let reply = match transport {
                "udp" => query_udp(server.addr, &q),
                _ => query_tcp(server.addr, &[q]).remove(0),
            };
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{name} {transport}"
            );
            assert_eq!(
                reply.answers.len(),
                1,
                "{name} {transport}: {:?}",
                records(&reply.answers)
            );
            assert_eq!(
                reply.answers[0].name.to_ascii(),
                format!("{name}."),
                "{name} {transport}"
            );
        }
    }
}

/// Regression, issue 2: the question name went through hickory's `Display`, which turns
/// punycode into Unicode, so `xn--` names in a zone were NXDOMAIN.
#[test]
fn idn_names_are_answered_as_written_in_the_zone() {
    // `xn--bcher-kva` is the punycode of "bücher": a name a zone may hold and a client may ask.
    let server = TestServer::start(&format!("{ZONE}  xn--bcher-kva: {{ A: 192.0.2.7 }}\n"));
    let reply = ask(&server, "xn--bcher-kva.api.example.com", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        records(&reply.answers),
        ["xn--bcher-kva.api.example.com. 300 A 192.0.2.7"]
    );
}

/// Regression, issue 2: a dot inside a label came through as `\.`, which the model read as a
/// label boundary, so `status\.api.example.com` counted as inside `api.example.com`.
#[test]
fn a_label_holding_a_dot_is_not_split_into_two() {
    let server = TestServer::start(ZONE);
    // One label "status.api" under example.com: outside api.example.com, whatever its text.
    let outside = raw_query(0x0d07, &[b"status.api", b"example", b"com"], RecordType::A);
    let reply = parse(&exchange_udp(server.addr, &outside));
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.answers.is_empty(), "{:?}", records(&reply.answers));

    // One label "a.b" under api.example.com: in the zone, but no such name (a.b.api... is
    // three labels, and b.api... is an empty non-terminal, not this).
    let inside = raw_query(
        0x0d08,
        &[b"a.b", b"api", b"example", b"com"],
        RecordType::TXT,
    );
    let reply = parse(&exchange_udp(server.addr, &inside));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.answers.is_empty(), "{:?}", records(&reply.answers));
    assert_eq!(records(&reply.authorities), [NEGATIVE_SOA]);

    // Other odd bytes in a label: a name that cannot exist in the zone.
    let space = raw_query(
        0x0d09,
        &[b"stat us", b"api", b"example", b"com"],
        RecordType::A,
    );
    let reply = parse(&exchange_udp(server.addr, &space));
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
}
