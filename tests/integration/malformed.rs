//! Garbage on the wire crashes nothing: 1,000 malformed datagrams and a few bad TCP frames, then
//! a normal query is still answered. The RNG has a fixed seed, so a failure reproduces.

use std::collections::HashSet;
use std::time::Duration;

use hickory_proto::op::{MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

const SEED: u64 = 2026;
const DATAGRAMS: usize = 1_000;

/// A 12-byte header: random ID, QR clear (the server drops QR=1), opcode QUERY, RD set.
fn header(rng: &mut StdRng, qdcount: u16) -> Vec<u8> {
    let mut h = rng.random::<u16>().to_be_bytes().to_vec();
    h.extend_from_slice(&[0x01, 0x00]);
    h.extend_from_slice(&qdcount.to_be_bytes());
    h.extend_from_slice(&[0; 6]);
    h
}

const QUESTION: &[u8] = b"\x06status\x03api\x07example\x03com\x00\x00\x01\x00\x01";

/// One malformed datagram; `i` picks the kind so every kind is sent many times.
fn malformed(rng: &mut StdRng, i: usize) -> Vec<u8> {
    match i % 8 {
        // Random bytes of random length.
        0 => {
            let mut b = vec![0; rng.random_range(0..600)];
            rng.fill(&mut b[..]);
            b
        }
        // A truncated header.
        1 => {
            let mut b = vec![0; rng.random_range(0..12)];
            rng.fill(&mut b[..]);
            b
        }
        // The question name is a compression pointer to itself.
        2 => {
            let mut b = header(rng, 1);
            b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            b
        }
        // A two-pointer loop, or a label followed by a pointer back to its start.
        3 => {
            let mut b = header(rng, 1);
            if rng.random() {
                b.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
            } else {
                b.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
            }
            b
        }
        // QDCOUNT 0, sometimes with a question after all.
        4 => {
            let mut b = header(rng, 0);
            if rng.random() {
                b.extend_from_slice(QUESTION);
            }
            b
        }
        // QDCOUNT 2 (with two, one or no questions present).
        5 => {
            let mut b = header(rng, 2);
            for _ in 0..rng.random_range(0..=2) {
                b.extend_from_slice(QUESTION);
            }
            b
        }
        // Labels too long: a length byte over 63, or a name over 255 octets.
        6 => {
            let mut b = header(rng, 1);
            if rng.random() {
                let len = rng.random_range(64..=255u8);
                b.push(len);
                b.extend(std::iter::repeat_n(b'x', len as usize % 64));
                b.push(0);
            } else {
                for _ in 0..5 {
                    b.push(63);
                    b.extend_from_slice(&[b'x'; 63]);
                }
                b.push(0);
            }
            b.extend_from_slice(&[0, 1, 0, 1]);
            b
        }
        // A valid query with a few bytes after the header flipped, or cut short.
        _ => {
            let mut b = header(rng, 1);
            b.extend_from_slice(QUESTION);
            if rng.random() {
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(12..b.len());
                    b[at] = rng.random();
                }
            } else {
                b.truncate(rng.random_range(12..b.len()));
            }
            b
        }
    }
}

/// The server still answers a normal query correctly over UDP and TCP.
fn assert_still_answers(server: &mut TestServer) {
    let q = query("status.api.example.com", RecordType::A);
    let udp = query_udp(server.addr, &q);
    assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        sorted(&udp.answers),
        [
            "status.api.example.com. 300 A 192.0.2.10",
            "status.api.example.com. 300 A 192.0.2.11",
        ]
    );
    let tcp = query_tcp(server.addr, &[q]).remove(0);
    assert_eq!(sorted(&tcp.answers), sorted(&udp.answers));
    assert!(
        server.is_alive(),
        "the server exited; stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn a_thousand_malformed_datagrams_crash_nothing() {
    let mut server = TestServer::start(ZONE);
    let mut rng = StdRng::seed_from_u64(SEED);
    let socket = udp_socket(server.addr);
    let mut ids = HashSet::new();
    let mut buf = vec![0; 65_535];
    let mut replies = 0;
    // Whatever comes back must be a well-formed response to something we sent.
    let mut check_reply = |bytes: &[u8], ids: &HashSet<u16>| {
        let reply = parse(bytes);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert!(
            ids.contains(&reply.metadata.id),
            "reply to an ID never sent: {}",
            reply.metadata.id
        );
        replies += 1;
    };

    socket
        .set_nonblocking(true)
        .expect("making the socket non-blocking");
    for i in 0..DATAGRAMS {
        let datagram = malformed(&mut rng, i);
        if datagram.len() >= 2 {
            ids.insert(u16::from_be_bytes([datagram[0], datagram[1]]));
        }
        socket.send(&datagram).expect("sending a datagram");
        // Drain as we go, so replies do not overflow our own receive buffer.
        while let Ok(n) = socket.recv(&mut buf) {
            check_reply(&buf[..n], &ids);
        }
    }
    socket
        .set_nonblocking(false)
        .expect("making the socket blocking");
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("setting a read timeout");
    while let Ok(n) = socket.recv(&mut buf) {
        check_reply(&buf[..n], &ids);
    }
    // At least the header-only QDCOUNT 0 queries get FORMERR, so the check above is not idle.
    assert!(
        (1..=DATAGRAMS).contains(&replies),
        "{replies} replies to {DATAGRAMS} datagrams"
    );
    eprintln!("{replies} replies to {DATAGRAMS} malformed datagrams");

    assert_still_answers(&mut server);
}

#[test]
fn garbage_tcp_frames_crash_nothing() {
    let mut server = TestServer::start(ZONE);
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut random = vec![0; 300];
    rng.fill(&mut random[..]);
    let mut pointer_loop = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pointer_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let frames: [&[u8]; 6] = [
        b"hello",      // shorter than a header
        &[],           // an empty frame
        &[0xab, 0xcd], // two bytes
        &random,       // noise
        &pointer_loop, // a compression loop
        &[0; 12],      // a header of zeros: QDCOUNT 0
    ];
    for frame in frames {
        let mut stream = tcp_connect(server.addr);
        write_frame(&mut stream, frame);
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("setting a read timeout");
        // A reply, if any, must parse.
        if let Ok(reply) = read_frame(&mut stream) {
            parse(&reply);
        }
    }
    // A length prefix that promises more than ever comes, then a hang-up.
    {
        use std::io::Write;
        let mut stream = tcp_connect(server.addr);
        stream
            .write_all(&[0xff, 0xff, 1, 2, 3])
            .expect("writing a partial frame");
    }
    assert_still_answers(&mut server);
}
