//! EDNS(0): the OPT record in responses, the advertised payload size, BADVERS and unknown options.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

fn status_a() -> QueryBuilder {
    query("status.api.example.com", RecordType::A)
}

#[test]
fn a_query_with_an_opt_record_gets_one_back() {
    let server = TestServer::start(ZONE);
    for q in [status_a().edns(1232), status_a().edns(4096)] {
        let reply = query_udp(server.addr, &q);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        let edns = reply.edns.as_ref().expect("OPT in the response");
        assert_eq!(edns.version(), 0);
        assert_eq!(edns.rcode_high(), 0);
        assert_eq!(reply.answers.len(), 2);
    }
}

#[test]
fn a_query_without_an_opt_record_gets_none() {
    let server = TestServer::start(ZONE);
    let bytes = exchange_udp(server.addr, &status_a().wire());
    assert_eq!(count(&bytes, Section::Additional), 0);
    let reply = parse(&bytes);
    assert!(reply.edns.is_none());
    assert_eq!(reply.answers.len(), 2);
}

#[test]
fn the_advertised_payload_is_the_clients_capped_at_1232_and_at_least_512() {
    let server = TestServer::start(ZONE);
    for (asked, advertised) in [
        (4096, 1232),
        (65_535, 1232),
        (1232, 1232),
        (1000, 1000),
        (512, 512),
        // RFC 6891 section 6.2.3: values below 512 are treated as 512.
        (100, 512),
        (0, 512),
    ] {
        for transport in ["udp", "tcp"] {
            let q = status_a().edns(asked);
            let reply = match transport {
                "udp" => query_udp(server.addr, &q),
                _ => query_tcp(server.addr, &[q]).remove(0),
            };
            let edns = reply
                .edns
                .as_ref()
                .unwrap_or_else(|| panic!("asked {asked} over {transport}: no OPT"));
            assert_eq!(
                edns.max_payload(),
                advertised,
                "asked {asked} over {transport}"
            );
        }
    }
}

#[test]
fn edns_version_1_gets_badvers_with_an_opt_record() {
    let server = TestServer::start(ZONE);
    let q = status_a().edns(1232).edns_version(1);
    let bytes = exchange_udp(server.addr, &q.wire());
    // BADVERS is 16: 0 in the header's four bits, 1 in the OPT's extended-rcode byte.
    assert_eq!(bytes[3] & 0x0f, 0, "header rcode bits");
    let reply = parse(&bytes);
    assert_eq!(reply.metadata.id, q.get_id());
    let edns = reply.edns.as_ref().expect("OPT in a BADVERS response");
    assert_eq!(edns.rcode_high(), 1, "extended rcode");
    assert_eq!(u16::from(reply.metadata.response_code), 16, "BADVERS");
    assert_eq!(edns.version(), 0, "we answer with the version we speak");
    assert!(reply.answers.is_empty());
}

#[test]
fn unknown_edns_options_are_ignored() {
    let server = TestServer::start(ZONE);
    // 65001 is in the private-use range; 65535 is reserved.
    let q = status_a()
        .edns(1232)
        .edns_option(65_001, b"hello")
        .edns_option(65_535, &[]);
    let reply = query_udp(server.addr, &q);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        sorted(&reply.answers),
        [
            "status.api.example.com. 300 A 192.0.2.10",
            "status.api.example.com. 300 A 192.0.2.11",
        ]
    );
    let edns = reply.edns.as_ref().expect("OPT in the response");
    assert!(
        edns.options().options.is_empty(),
        "unknown options are not echoed: {:?}",
        edns.options()
    );
}

/// Issue 12: RFC 3225 section 3, the DO bit of a query is copied into the response, though the
/// server does not sign: over UDP and TCP, with and without ECS, on the lean path and on the
/// full one (a question name with a compression pointer, and a name outside every zone).
#[test]
fn the_do_bit_is_copied_into_every_response_to_a_query_that_set_it() {
    let server = TestServer::start(ZONE);
    let cases = [
        ("static", status_a().edns(1232)),
        ("static with ECS", status_a().edns(1232).ecs("81.2.69.0/24")),
        (
            "NXDOMAIN",
            query("nope.api.example.com", RecordType::A).edns(1232),
        ),
        (
            "REFUSED (outside the zones)",
            query("www.example.org", RecordType::A).edns(1232),
        ),
        (
            "REFUSED (class CH, full path)",
            status_a().edns(1232).class(hickory_proto::rr::DNSClass::CH),
        ),
    ];
    for (what, q) in cases {
        for dnssec_ok in [false, true] {
            let q = if dnssec_ok {
                q.clone().dnssec_ok()
            } else {
                q.clone()
            };
            let udp = query_udp(server.addr, &q);
            let tcp = query_tcp(server.addr, std::slice::from_ref(&q))
                .pop()
                .expect("a TCP reply");
            for (transport, reply) in [("UDP", udp), ("TCP", tcp)] {
                let edns = reply
                    .edns
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what} over {transport}: no OPT"));
                assert_eq!(
                    edns.flags().dnssec_ok,
                    dnssec_ok,
                    "{what} over {transport}, DO={dnssec_ok}"
                );
            }
        }
    }
}
