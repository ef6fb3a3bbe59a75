//! UDP size limits and truncation, TCP framing and pipelining, zone transfers.

use std::collections::HashMap;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::*;

/// The distinct 100-octet TXT strings of `big.api.example.com` (and the first 8 of them at
/// `medium`).
fn txt_strings(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i:03}-{}", "y".repeat(96)))
        .collect()
}

/// Sizes of the TXT strings at `fill-140` to `fill-170`.
const FILL: std::ops::RangeInclusive<usize> = 140..=170;

/// `ZONE` plus `big` (40 TXT records, about 4.5 kB: over any UDP limit), `medium` (8 TXT
/// records, about 900 bytes: over 512, under 1232) and `fill-L` (20 TXT records of L octets).
///
/// About 7 `fill-L` records fit in 1232 bytes; one more octet per string moves the end of the
/// last whole record by about 7 bytes, so for some L it lands within 11 bytes of the limit and
/// an encoder that cuts the answer section record by record leaves no room for the OPT record.
fn zone_with_large_rrsets() -> String {
    let list = |n| {
        txt_strings(n)
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut zone = format!(
        "{ZONE}  big: {{ TXT: [{}] }}\n  medium: {{ TXT: [{}] }}\n",
        list(40),
        list(8)
    );
    for len in FILL {
        let strings = vec![format!("\"{}\"", "f".repeat(len)); 20].join(", ");
        zone.push_str(&format!("  fill-{len}: {{ TXT: [{strings}] }}\n"));
    }
    zone
}

fn txt_answers(name: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = txt_strings(n)
        .iter()
        .map(|s| format!("{name}. 300 TXT \"{s}\""))
        .collect();
    v.sort();
    v
}

#[test]
fn a_large_rrset_over_udp_without_edns_is_truncated_to_512_bytes() {
    let server = TestServer::start(&zone_with_large_rrsets());
    let q = query("big.api.example.com", RecordType::TXT);
    let bytes = exchange_udp(server.addr, &q.wire());
    assert!(bytes.len() <= 512, "{} bytes", bytes.len());
    let reply = parse(&bytes);
    assert_eq!(reply.metadata.id, q.get_id());
    assert!(reply.metadata.truncation, "TC");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.queries.len(), 1, "the question is kept");
    assert!(reply.edns.is_none(), "no OPT without EDNS");
    assert!(reply.answers.len() < 40);
}

#[test]
fn a_large_rrset_over_udp_with_edns_is_truncated_and_keeps_the_opt_record() {
    let server = TestServer::start(&zone_with_large_rrsets());
    let names = std::iter::once("big.api.example.com".to_string())
        .chain(FILL.map(|len| format!("fill-{len}.api.example.com")));
    for name in names {
        for asked in [1232, 4096] {
            let ctx = format!("{name} asked {asked}");
            let q = query(&name, RecordType::TXT).edns(asked);
            let bytes = exchange_udp(server.addr, &q.wire());
            assert!(bytes.len() <= 1232, "{ctx}: {} bytes", bytes.len());
            let reply = parse(&bytes);
            assert!(reply.metadata.truncation, "{ctx}: TC");
            assert_eq!(reply.queries.len(), 1, "{ctx}: question");
            // RFC 6891 section 7: the OPT record survives truncation.
            let edns = reply
                .edns
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: no OPT in the truncated response"));
            assert_eq!(edns.max_payload(), 1232, "{ctx}");
        }
    }
}

#[test]
fn a_response_that_fits_the_clients_edns_size_is_not_truncated() {
    let server = TestServer::start(&zone_with_large_rrsets());
    let name = "medium.api.example.com";
    // About 900 bytes: too big for 512 ...
    let plain = parse(&exchange_udp(
        server.addr,
        &query(name, RecordType::TXT).wire(),
    ));
    assert!(plain.metadata.truncation, "without EDNS");
    // ... and for a client that says 800 ...
    let small = query_udp(server.addr, &query(name, RecordType::TXT).edns(800));
    assert!(small.metadata.truncation, "EDNS 800");
    // ... but fine for 1232.
    let q = query(name, RecordType::TXT).edns(1232);
    let bytes = exchange_udp(server.addr, &q.wire());
    assert!(
        bytes.len() > 512 && bytes.len() <= 1232,
        "{} bytes",
        bytes.len()
    );
    let reply = parse(&bytes);
    assert!(!reply.metadata.truncation, "EDNS 1232");
    assert_eq!(sorted(&reply.answers), txt_answers(name, 8));
    assert!(reply.edns.is_some());
}

#[test]
fn a_large_rrset_over_tcp_comes_back_complete() {
    let server = TestServer::start(&zone_with_large_rrsets());
    for q in [
        query("big.api.example.com", RecordType::TXT),
        query("big.api.example.com", RecordType::TXT).edns(1232),
    ] {
        let reply = query_tcp(server.addr, std::slice::from_ref(&q)).remove(0);
        assert_eq!(reply.metadata.id, q.get_id());
        assert!(!reply.metadata.truncation, "TC over TCP");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            sorted(&reply.answers),
            txt_answers("big.api.example.com", 40)
        );
    }
}

#[test]
fn tcp_answers_several_pipelined_queries_on_one_connection() {
    let server = TestServer::start(ZONE);
    let queries = [
        query("status.api.example.com", RecordType::A).id(101),
        query("www.api.example.com", RecordType::AAAA).id(102),
        query("nope.api.example.com", RecordType::A).id(103),
    ];
    // All three are written before the first reply is read.
    let replies = query_tcp(server.addr, &queries);
    // RFC 7766 allows replies in any order: match them by ID.
    let by_id: HashMap<u16, _> = replies.iter().map(|r| (r.metadata.id, r)).collect();
    assert_eq!(by_id.len(), 3, "three distinct IDs answered");
    assert_eq!(
        sorted(&by_id[&101].answers),
        [
            "status.api.example.com. 300 A 192.0.2.10",
            "status.api.example.com. 300 A 192.0.2.11",
        ]
    );
    assert_eq!(
        sorted(&by_id[&102].answers),
        ["www.api.example.com. 30 AAAA 2001:db8:10::1"]
    );
    assert_eq!(by_id[&103].metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn tcp_answers_queries_one_after_another_on_one_connection() {
    let server = TestServer::start(ZONE);
    let mut stream = tcp_connect(server.addr);
    for id in 1..=5u16 {
        let q = query("status.api.example.com", RecordType::AAAA).id(id);
        write_frame(&mut stream, &q.wire());
        let reply = parse(&read_frame(&mut stream).expect("a reply on the same connection"));
        assert_eq!(reply.metadata.id, id);
        assert_eq!(
            records(&reply.answers),
            ["status.api.example.com. 300 AAAA 2001:db8::10"]
        );
    }
}

#[test]
fn zone_transfers_are_refused() {
    let server = TestServer::start(ZONE);
    for rtype in [RecordType::AXFR, RecordType::IXFR] {
        let q = query("api.example.com", rtype);
        let tcp = query_tcp(server.addr, std::slice::from_ref(&q)).remove(0);
        assert_eq!(
            tcp.metadata.response_code,
            ResponseCode::Refused,
            "{rtype} over TCP"
        );
        assert!(tcp.answers.is_empty(), "{rtype} over TCP");
        let udp = query_udp(server.addr, &q);
        assert_eq!(
            udp.metadata.response_code,
            ResponseCode::Refused,
            "{rtype} over UDP"
        );
        assert!(udp.answers.is_empty(), "{rtype} over UDP");
    }
}
