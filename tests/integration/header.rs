//! The header and question of a response: flags, ID, 0x20 case echo, opcodes, FORMERR, REFUSED.

use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::support::*;

#[test]
fn aa_is_set_ra_is_clear_and_rd_and_id_are_copied() {
    let server = TestServer::start(ZONE);
    for (id, rd) in [(0xbeef, true), (0x0102, false), (0, true), (0xffff, false)] {
        let q = query("status.api.example.com", RecordType::A).id(id).rd(rd);
        for (transport, reply) in [
            ("udp", query_udp(server.addr, &q)),
            (
                "tcp",
                query_tcp(server.addr, std::slice::from_ref(&q)).remove(0),
            ),
        ] {
            let m = reply.metadata;
            let ctx = format!("{transport} id={id:#x} rd={rd}");
            assert_eq!(m.id, id, "{ctx}: ID");
            assert!(m.authoritative, "{ctx}: AA");
            assert!(!m.recursion_available, "{ctx}: RA");
            assert_eq!(m.recursion_desired, rd, "{ctx}: RD");
            assert!(!m.truncation, "{ctx}: TC");
            assert_eq!(m.response_code, ResponseCode::NoError, "{ctx}: rcode");
            assert_eq!(m.op_code, OpCode::Query, "{ctx}: opcode");
            assert_eq!(reply.answers.len(), 2, "{ctx}: answers");
        }
    }
}

#[test]
fn the_question_is_echoed_with_the_clients_letter_case() {
    let server = TestServer::start(ZONE);
    let q = query("wWw.ApI.example.com", RecordType::A);
    let sent = q.wire();
    let reply_bytes = exchange_udp(server.addr, &sent);

    // The question section (after the 12-byte header) comes back byte for byte.
    let question_len = sent.len() - 12;
    assert_eq!(count(&reply_bytes, Section::Question), 1);
    assert_eq!(
        reply_bytes[12..12 + question_len],
        sent[12..],
        "question section bytes"
    );
    let reply = parse(&reply_bytes);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(reply.queries[0].name().to_ascii(), "wWw.ApI.example.com.");
    assert_eq!(reply.queries[0].query_type(), RecordType::A);

    // Answers owned by the question name use the client's spelling too.
    assert_eq!(
        records(&reply.answers),
        [
            "wWw.ApI.example.com. 30 A 203.0.113.10",
            "wWw.ApI.example.com. 30 A 203.0.113.11",
        ]
    );
}

#[test]
fn names_outside_the_served_zones_are_refused() {
    let server = TestServer::start(ZONE);
    for name in [
        "www.example.org",
        "example.com",
        "com",
        ".",
        "notapi.example.com",
    ] {
        let reply = query_udp(server.addr, &query(name, RecordType::A));
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(!reply.metadata.recursion_available, "{name}: RA");
        assert!(reply.answers.is_empty(), "{name}: answers");
        assert!(reply.authorities.is_empty(), "{name}: authority");
    }
}

#[test]
fn classes_other_than_in_are_refused() {
    let server = TestServer::start(ZONE);
    for (name, class) in [
        ("version.bind", DNSClass::CH),
        ("status.api.example.com", DNSClass::CH),
        ("status.api.example.com", DNSClass::ANY),
    ] {
        let q = query(name, RecordType::TXT).class(class);
        let reply = query_udp(server.addr, &q);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name} {class}"
        );
        assert!(reply.answers.is_empty(), "{name} {class}: answers");
    }
}

#[test]
fn opcodes_other_than_query_get_notimp() {
    let server = TestServer::start(ZONE);
    for op in [OpCode::Status, OpCode::Notify, OpCode::Unknown(3)] {
        let q = query("status.api.example.com", RecordType::A).op_code(op);
        let reply = query_udp(server.addr, &q);
        assert_eq!(reply.metadata.response_code, ResponseCode::NotImp, "{op}");
        assert_eq!(reply.metadata.op_code, op, "{op}: opcode echoed");
        assert!(reply.answers.is_empty(), "{op}: answers");
    }
}

/// Issue 12: for an opcode the server does not implement, the response copies only the ID and
/// the opcode from the request header (RFC 8906 section 3.1.4, ISC's compliance test): QR set,
/// NOTIMP, no RD, CD or AA, and no question, whether the rest of the message parses or not,
/// over UDP and TCP.
#[test]
fn an_unimplemented_opcode_gets_notimp_with_only_the_id_and_opcode_copied() {
    let server = TestServer::start(ZONE);
    // RD and CD set in every request.
    let rd_cd = |mut bytes: Vec<u8>| {
        bytes[2] |= 0x01;
        bytes[3] |= 0x10;
        bytes
    };
    let with_question = |op: OpCode| {
        rd_cd(
            query("status.api.example.com", RecordType::A)
                .id(0x5151)
                .op_code(op)
                .wire(),
        )
    };
    // dig +opcode=15 +header-only: a header and nothing else.
    let header_only = |op: u8| {
        let mut h = header(0x5151, 0);
        h[2] = (op << 3) | 0x01;
        rd_cd(h)
    };
    // A body that does not parse as a query: one question announced, three bytes of junk.
    let junk = |op: u8| {
        let mut h = header(0x5151, 1);
        h[2] = (op << 3) | 0x01;
        h.extend_from_slice(&[0xff, 0xff, 0xff]);
        rd_cd(h)
    };
    let cases: Vec<(String, Vec<u8>, u8)> = vec![
        (
            "NOTIFY with a question".into(),
            with_question(OpCode::Notify),
            4,
        ),
        (
            "UPDATE with a question".into(),
            with_question(OpCode::Update),
            5,
        ),
        ("opcode 15, header only".into(), header_only(15), 15),
        ("opcode 3, header only".into(), header_only(3), 3),
        ("opcode 15, junk body".into(), junk(15), 15),
    ];
    for (what, bytes, opcode) in cases {
        let udp = exchange_udp(server.addr, &bytes);
        let tcp = exchange_tcp(server.addr, std::slice::from_ref(&bytes))
            .pop()
            .unwrap_or_else(|| panic!("{what}: no TCP reply"));
        for (transport, reply) in [("UDP", udp), ("TCP", tcp)] {
            let what = format!("{what} over {transport}");
            // The whole header, bit by bit: ID, then QR | opcode, then rcode 4 (NOTIMP) and
            // nothing else; every count zero.
            assert_eq!(reply.len(), 12, "{what}: header only, got {reply:02x?}");
            assert_eq!(&reply[..2], &[0x51, 0x51], "{what}: ID");
            assert_eq!(
                reply[2],
                0x80 | (opcode << 3),
                "{what}: QR, opcode, no AA/TC/RD"
            );
            assert_eq!(reply[3], 4, "{what}: no RA/AD/CD, NOTIMP");
            assert_eq!(&reply[4..], &[0; 8], "{what}: counts");
        }
    }
}

/// A header with the given ID and QDCOUNT, flags RD only, other counts zero.
fn header(id: u16, qdcount: u16) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend_from_slice(&[0x01, 0x00]);
    h.extend_from_slice(&qdcount.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    h
}

/// Sends raw bytes over UDP and checks the reply is FORMERR with the same ID and no answers.
fn assert_formerr(server: &TestServer, bytes: &[u8], what: &str) {
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let reply = parse(&exchange_udp(server.addr, bytes));
    assert_eq!(reply.metadata.id, id, "{what}: ID");
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::FormErr,
        "{what}: rcode"
    );
    assert!(reply.answers.is_empty(), "{what}: answers");
}

#[test]
fn no_question_is_formerr() {
    let server = TestServer::start(ZONE);
    assert_formerr(&server, &header(0x1234, 0), "QDCOUNT 0");
}

#[test]
fn two_questions_are_formerr() {
    let server = TestServer::start(ZONE);
    let one = query("status.api.example.com", RecordType::A)
        .id(0x2345)
        .wire();
    let mut two = one.clone();
    two.extend_from_slice(&one[12..]);
    set_count(&mut two, Section::Question, 2);
    assert_formerr(&server, &two, "QDCOUNT 2");
}

#[test]
fn an_unparsable_question_is_formerr() {
    let server = TestServer::start(ZONE);
    // The label says 6 octets but the message ends after 3.
    let mut cut_label = header(0x3456, 1);
    cut_label.extend_from_slice(&[6, b's', b't', b'a']);
    assert_formerr(&server, &cut_label, "truncated label");

    // A complete name without QTYPE and QCLASS.
    let mut no_type = header(0x4567, 1);
    no_type.extend_from_slice(b"\x06status\x03api\x07example\x03com\x00");
    assert_formerr(&server, &no_type, "missing QTYPE");

    // The name is a compression pointer to itself.
    let mut pointer_loop = header(0x5678, 1);
    pointer_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_formerr(&server, &pointer_loop, "pointer loop");
}
