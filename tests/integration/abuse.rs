//! Abuse resistance (issue 8): response rate limiting over UDP, and the limits of DNS over TCP
//! (connections per client and in total, the longest-idle connection closed to make room
//! (issue 12), slow-loris, idle timeout, queries per connection, pipelining in order). Limits
//! are set low through flags so each test takes seconds.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::abuse_support::*;
use crate::ops_support::heavy_turn;
use crate::support::*;

/// `ZONE` with response rate limiting set as given (the inside of `rrl: { ... }`).
fn rrl_zone(settings: &str) -> String {
    format!("{ZONE}rrl: {{ {settings} }}\n")
}

/// The query every flood repeats: two A records in the answer.
fn status_query() -> QueryBuilder {
    query("status.api.example.com", RecordType::A).edns(1232)
}

/// One query from `source`: `Ok` with the reply's (TC, answer count), or why there was none.
fn try_query_from(source: &str, server: SocketAddr) -> Result<(bool, usize), String> {
    ask_from(source, server, &status_query()).map(|r| (r.metadata.truncation, r.answers.len()))
}

// ---------------------------------------------------------------------------------------------
// Response rate limiting

#[test]
fn rrl_limits_a_flood_from_one_network_slips_every_second_drop_and_spares_other_networks() {
    const RATE: f64 = 50.0;
    const BURST: f64 = 50.0;
    let _turn = heavy_turn();
    let server = TestServer::start(&rrl_zone("responses_per_second: 50, slip: 2"));
    let addr = server.addr;
    // A resolver in another /24 asks for the same name throughout the flood.
    let other = repeat(Duration::from_millis(20), move || {
        try_query_from(OTHER_NETWORK, addr)
    });
    let r = flood(
        FLOOD_SOURCE,
        addr,
        &status_query(),
        2000,
        Duration::from_secs(1),
    );
    let others = other.finish();
    eprintln!("flood: {r:?}");

    // Limited: about the burst plus the rate for the flood's duration got full answers, in
    // bytes beyond the query's size (512 a unit, at least 64 an answer: issue 12).
    let query_len = status_query().wire().len();
    let reply_len = exchange_udp(addr, &status_query().wire()).len();
    let cost = reply_len.saturating_sub(query_len).max(64) as f64;
    let per_unit = 512.0 / cost;
    let least = BURST * per_unit;
    let most = (BURST + RATE * (r.elapsed.as_secs_f64() + 0.5)) * per_unit;
    assert!(
        r.answered as f64 >= least && r.answered as f64 <= most,
        "{} full answers to {} queries in {:?}; expected {least} to {most} \
         ({query_len}-byte queries, {reply_len}-byte answers)",
        r.answered,
        r.sent,
        r.elapsed
    );
    assert_eq!(r.other, 0, "replies neither answered nor slipped");
    // Slip 2: every second limited response goes out truncated, the rest are dropped.
    let limited = r.sent - r.answered;
    assert!(
        (2 * r.slipped).abs_diff(limited) <= limited / 50 + 2,
        "{} slipped of {limited} limited",
        r.slipped
    );
    // A slipped reply is TC=1 with the question and the OPT record, and no records.
    let slip = parse(r.first_slip.as_deref().expect("a slipped reply"));
    assert!(slip.metadata.truncation);
    assert_eq!(slip.metadata.response_code, ResponseCode::NoError);
    assert_eq!(slip.queries.len(), 1);
    assert_eq!(slip.queries[0].name().to_ascii(), "status.api.example.com.");
    assert!(slip.answers.is_empty() && slip.authorities.is_empty());
    assert_eq!(slip.edns.as_ref().map(|e| e.max_payload()), Some(1232));

    // The other network was answered in full every time.
    assert!(
        others.len() >= 20,
        "only {} queries from the other network",
        others.len()
    );
    for (i, outcome) in others.iter().enumerate() {
        assert_eq!(outcome, &Ok((false, 2)), "query {i} from {OTHER_NETWORK}");
    }

    // The counters agree with what the client saw.
    let m = scrape(&server);
    let dropped = m.value("steerdns_rrl_dropped_total", &[]);
    let slipped = m.value("steerdns_rrl_slipped_total", &[]);
    // (A reply lost on the way back would make the client's count the smaller.)
    assert!(
        slipped as usize >= r.slipped && slipped as usize - r.slipped <= r.slipped / 100 + 1,
        "slipped counter {slipped}, client saw {}",
        r.slipped
    );
    assert!(
        ((dropped + slipped) as usize).abs_diff(limited) <= limited / 100 + 2,
        "dropped {dropped} + slipped {slipped}, client saw {limited} limited"
    );
}

#[test]
fn rrl_off_on_the_node_or_in_the_zone_passes_a_flood_in_full() {
    let _turn = heavy_turn();
    for (what, zone, args) in [
        (
            "--rrl off",
            rrl_zone("responses_per_second: 50, slip: 2"),
            &["--rrl", "off"][..],
        ),
        (
            "enabled: false in the zone",
            rrl_zone("enabled: false, responses_per_second: 50"),
            &[][..],
        ),
    ] {
        let server = TestServer::start_with(&zone, args);
        let r = flood(
            FLOOD_SOURCE,
            server.addr,
            &status_query(),
            2000,
            Duration::from_secs(1),
        );
        eprintln!("{what}: {r:?}");
        assert_eq!(r.answered, r.sent, "{what}: {r:?}");
        assert_eq!(r.slipped + r.other, 0, "{what}: {r:?}");
        let m = scrape(&server);
        assert_eq!(m.value("steerdns_rrl_dropped_total", &[]), 0.0, "{what}");
        assert_eq!(m.value("steerdns_rrl_slipped_total", &[]), 0.0, "{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// TCP limits

/// `status_query()`'s answer, whole.
const STATUS_A: [&str; 2] = [
    "status.api.example.com. 300 A 192.0.2.10",
    "status.api.example.com. 300 A 192.0.2.11",
];

/// Asks `status_query()` on `stream` and checks the whole answer; `what` names the connection.
fn assert_answered(stream: &mut TcpStream, what: &str) {
    let q = status_query();
    write_frame(stream, &q.wire());
    let reply = parse(&read_frame(stream).unwrap_or_else(|e| panic!("{what}: no answer: {e}")));
    assert_eq!(reply.metadata.id, q.get_id(), "{what}: reply ID");
    assert_eq!(sorted(&reply.answers), STATUS_A, "{what}");
}

/// Long enough between two steps for the server to have marked a connection idle after its
/// answer, so "idle the longest" follows the order of the test's steps.
const STEP: Duration = Duration::from_millis(100);

/// Waits until the server counts `open` TCP connections.
fn wait_open(server: &TestServer, open: f64) {
    wait_for(Duration::from_secs(5), || {
        (scrape(server).value("steerdns_tcp_connections_open", &[]) == open).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} connections open, not {open}",
            scrape(server).value("steerdns_tcp_connections_open", &[])
        )
    });
}

/// The TCP connection counters: (evicted, refused) under `limit`.
fn evicted_refused(server: &TestServer, limit: &str) -> (f64, f64) {
    let m = scrape(server);
    (
        m.value(
            "steerdns_tcp_connections_evicted_total",
            &[("limit", limit)],
        ),
        m.value(
            "steerdns_tcp_connections_refused_total",
            &[("limit", limit)],
        ),
    )
}

/// Issue 12: a resolver farm behind one address opens many connections at once. With the
/// default settings (no per-client cap) every one of them is answered.
#[test]
fn two_hundred_tcp_connections_from_one_address_are_all_answered_by_default() {
    let _turn = heavy_turn();
    let server = TestServer::start(ZONE);
    let mut conns: Vec<TcpStream> = (0..200).map(|_| tcp_connect(server.addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        write_frame(c, &status_query().id(i as u16).wire());
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let reply =
            parse(&read_frame(c).unwrap_or_else(|e| panic!("connection {i}: no answer: {e}")));
        assert_eq!(reply.metadata.id, i as u16, "connection {i}: reply ID");
        assert_eq!(sorted(&reply.answers), STATUS_A, "connection {i}");
    }
    wait_open(&server, 200.0);
    for limit in ["global", "per_client"] {
        assert_eq!(evicted_refused(&server, limit), (0.0, 0.0), "{limit}");
    }
}

/// Issue 12: twenty idle connections from one address (the old per-client cap) do not keep
/// that address from opening another, and none of them is closed for it.
#[test]
fn a_new_connection_after_twenty_idle_ones_from_one_address_is_answered_by_default() {
    let server = TestServer::start(ZONE);
    let mut idle: Vec<TcpStream> = (0..20).map(|_| tcp_connect(server.addr)).collect();
    wait_open(&server, 20.0);
    let mut new = tcp_connect(server.addr);
    assert_answered(&mut new, "the 21st connection");
    for (i, c) in idle.iter_mut().enumerate() {
        assert_answered(c, &format!("idle connection {i}"));
    }
    wait_open(&server, 21.0);
    for limit in ["global", "per_client"] {
        assert_eq!(evicted_refused(&server, limit), (0.0, 0.0), "{limit}");
    }
}

/// RFC 7766 section 6.2.3: a client at its cap that opens another connection loses its own
/// longest-idle one, not another client's (idle longer still) nor its younger ones.
#[test]
fn a_full_per_client_limit_closes_that_clients_longest_idle_connection() {
    let server = TestServer::start_with(ZONE, &["--tcp-max-connections-per-client", "5"]);
    let mut other = tcp_from("127.0.0.2", server.addr);
    assert_answered(&mut other, "127.0.0.2");
    let mut mine: Vec<TcpStream> = (0..5)
        .map(|i| {
            std::thread::sleep(STEP);
            let mut c = tcp_from("127.0.0.1", server.addr);
            assert_answered(&mut c, &format!("127.0.0.1 #{i}"));
            c
        })
        .collect();
    // #0 asks again, so #1 is now this client's longest idle.
    std::thread::sleep(STEP);
    assert_answered(&mut mine[0], "127.0.0.1 #0 again");
    std::thread::sleep(STEP);

    let mut new = tcp_from("127.0.0.1", server.addr);
    assert_answered(&mut new, "127.0.0.1, a sixth connection");
    assert!(
        matches!(
            wait_closed(&mut mine[1], Duration::from_secs(2)),
            Wait::Closed(_)
        ),
        "the longest-idle connection (#1) is still open"
    );
    for i in [0, 2, 3, 4] {
        assert_answered(&mut mine[i], &format!("127.0.0.1 #{i} after the eviction"));
    }
    assert_answered(&mut other, "127.0.0.2 after the eviction");
    wait_open(&server, 6.0);
    assert_eq!(evicted_refused(&server, "per_client"), (1.0, 0.0));
    assert_eq!(evicted_refused(&server, "global"), (0.0, 0.0));
}

/// RFC 7766 section 6.2.3: when the global table is full, the connection idle the longest,
/// whoever holds it, makes room; a connection in the middle of a message is never chosen,
/// however old.
#[test]
fn a_full_global_limit_closes_the_longest_idle_connection_of_anyone() {
    let server = TestServer::start_with(
        ZONE,
        &["--tcp-max-connections", "8", "--tcp-read-timeout", "10s"],
    );
    // The oldest connection is busy: one byte of a length prefix sent.
    let mut busy = tcp_from("127.0.0.1", server.addr);
    let q = status_query();
    let mut frame = (q.wire().len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q.wire());
    busy.write_all(&frame[..1]).expect("writing one byte");
    let mut idle: Vec<(String, TcpStream)> = (2..=8)
        .map(|n| {
            std::thread::sleep(STEP);
            let source = format!("127.0.0.{n}");
            let mut c = tcp_from(&source, server.addr);
            assert_answered(&mut c, &source);
            (source, c)
        })
        .collect();
    // 127.0.0.2 asks again, so 127.0.0.3 is now the longest idle.
    std::thread::sleep(STEP);
    assert_answered(&mut idle[0].1, "127.0.0.2 again");
    std::thread::sleep(STEP);
    wait_open(&server, 8.0);

    let mut new = tcp_from("127.0.0.9", server.addr);
    assert_answered(&mut new, "127.0.0.9, a ninth connection");
    assert!(
        matches!(
            wait_closed(&mut idle[1].1, Duration::from_secs(2)),
            Wait::Closed(_)
        ),
        "the longest-idle connection (127.0.0.3) is still open"
    );
    for (source, c) in idle.iter_mut().filter(|(s, _)| s != "127.0.0.3") {
        assert_answered(c, &format!("{source} after the eviction"));
    }
    // The busy connection was left alone: the rest of its query gets the answer.
    busy.write_all(&frame[1..]).expect("writing the rest");
    let reply = parse(&read_frame(&mut busy).expect("an answer on the busy connection"));
    assert_eq!(reply.metadata.id, q.get_id());
    assert_eq!(sorted(&reply.answers), STATUS_A);
    wait_open(&server, 8.0);
    assert_eq!(evicted_refused(&server, "global"), (1.0, 0.0));
}

/// When every connection a full limit counts is in the middle of a message, there is nobody to
/// close: the new connection is refused as before, and the busy ones are still cut off by the
/// read timeout (slow-loris), after which a new connection gets in.
#[test]
fn a_full_limit_of_busy_connections_refuses_a_new_one_until_the_read_timeout_cuts_them() {
    for (limit, flag) in [
        ("per_client", "--tcp-max-connections-per-client"),
        ("global", "--tcp-max-connections"),
    ] {
        let server = TestServer::start_with(
            ZONE,
            &[
                flag,
                "3",
                "--tcp-read-timeout",
                "2s",
                "--tcp-idle-timeout",
                "10s",
            ],
        );
        let started = std::time::Instant::now();
        let mut busy: Vec<TcpStream> = (0..3)
            .map(|_| {
                let mut c = tcp_from("127.0.0.1", server.addr);
                c.write_all(&[0]).expect("writing one byte");
                c
            })
            .collect();
        // Time for the server to read each first byte (and so count the connection busy).
        std::thread::sleep(Duration::from_millis(500));
        let mut refused = tcp_from("127.0.0.1", server.addr);
        assert!(
            !answers_on(&mut refused, &status_query()),
            "{limit}: a fourth connection was answered"
        );
        assert_eq!(evicted_refused(&server, limit), (0.0, 1.0), "{limit}");
        for (i, c) in busy.iter_mut().enumerate() {
            let Wait::Closed(_) = wait_closed(c, Duration::from_secs(4)) else {
                panic!("{limit}: busy connection {i} not cut off");
            };
            let after = started.elapsed();
            assert!(
                after >= Duration::from_millis(1500) && after < Duration::from_millis(3500),
                "{limit}: busy connection {i} cut off {after:?} after its first byte"
            );
        }
        let m = scrape(&server);
        assert_eq!(
            m.value(
                "steerdns_tcp_connections_timed_out_total",
                &[("timeout", "read")]
            ),
            3.0,
            "{limit}"
        );
        // Their places are given back.
        let mut later = tcp_from("127.0.0.1", server.addr);
        assert_answered(&mut later, &format!("{limit}: a connection after the cut"));
    }
}

#[test]
fn a_slow_loris_client_is_cut_off_after_the_read_timeout_while_others_are_served() {
    let server = TestServer::start_with(
        ZONE,
        &["--tcp-read-timeout", "2s", "--tcp-idle-timeout", "5s"],
    );
    let addr = server.addr;
    // Another client queries on its own connection throughout.
    let normal = repeat(Duration::from_millis(200), move || {
        let mut s = tcp_connect(addr);
        answers_on(&mut s, &query("status.api.example.com", RecordType::A))
    });
    // The slow client sends its query one byte a second.
    let wire = query("www.api.example.com", RecordType::A).wire();
    let mut frame = (wire.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&wire);
    let mut slow = tcp_connect(addr);
    let started = std::time::Instant::now();
    let mut sent = 0;
    let closed = loop {
        if sent == frame.len() {
            panic!("the whole query went through in {:?}", started.elapsed());
        }
        if slow.write_all(&frame[sent..sent + 1]).is_err() {
            break started.elapsed();
        }
        sent += 1;
        match wait_closed(&mut slow, Duration::from_secs(1)) {
            Wait::Open => {}
            Wait::Closed(_) => break started.elapsed(),
            Wait::Data(n) => panic!("{n} bytes of reply to a partial query"),
        }
    };
    let normal = normal.finish();
    eprintln!("slow-loris cut off after {closed:?}, {sent} bytes sent");
    // The read timeout (2 s from the first byte) cut it, not the idle timeout (5 s).
    assert!(
        closed >= Duration::from_millis(1500) && closed < Duration::from_millis(4500),
        "closed after {closed:?}"
    );
    assert!(normal.len() >= 5, "{} normal queries", normal.len());
    assert!(normal.iter().all(|ok| *ok), "normal client: {normal:?}");
    let m = scrape(&server);
    assert_eq!(
        m.value(
            "steerdns_tcp_connections_timed_out_total",
            &[("timeout", "read")]
        ),
        1.0
    );
}

#[test]
fn an_idle_tcp_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(ZONE, &["--tcp-idle-timeout", "1s"]);
    let mut s = tcp_connect(server.addr);
    assert!(answers_on(
        &mut s,
        &query("status.api.example.com", RecordType::A)
    ));
    let Wait::Closed(after) = wait_closed(&mut s, Duration::from_secs(4)) else {
        panic!("the idle connection was not closed");
    };
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_millis(2500),
        "closed {after:?} after the answer"
    );
    // A connection that never says anything goes the same way.
    let mut silent = tcp_connect(server.addr);
    assert!(matches!(
        wait_closed(&mut silent, Duration::from_secs(4)),
        Wait::Closed(_)
    ));
    let m = scrape(&server);
    assert_eq!(
        m.value(
            "steerdns_tcp_connections_timed_out_total",
            &[("timeout", "idle")]
        ),
        2.0
    );
}

#[test]
fn a_tcp_connection_is_closed_after_its_query_limit() {
    let server = TestServer::start_with(ZONE, &["--tcp-max-queries", "3"]);
    let q = |id| query("status.api.example.com", RecordType::A).id(id);
    // One after another: three answers, then the end of the stream.
    let mut s = tcp_connect(server.addr);
    for id in 1..=3 {
        assert!(answers_on(&mut s, &q(id)), "query {id}");
    }
    assert!(matches!(
        wait_closed(&mut s, Duration::from_secs(2)),
        Wait::Closed(_)
    ));
    // Pipelined: five written at once, three answered in order, then the end.
    let mut s = tcp_connect(server.addr);
    for id in 11..=15 {
        write_frame(&mut s, &q(id).wire());
    }
    for id in 11..=13 {
        let reply = parse(&read_frame(&mut s).expect("a reply"));
        assert_eq!(reply.metadata.id, id);
    }
    assert!(matches!(
        wait_closed(&mut s, Duration::from_secs(2)),
        Wait::Closed(_)
    ));
    // Counted once the server has closed its end (it waits a moment for ours).
    drop(s);
    wait_for(Duration::from_secs(3), || {
        let n = scrape(&server).value("steerdns_tcp_connections_query_limit_total", &[]);
        (n == 2.0).then_some(())
    })
    .expect("two connections counted as closed for their query limit");
}

#[test]
fn pipelined_tcp_queries_are_answered_in_order() {
    let server = TestServer::start(ZONE);
    let names = [
        ("status.api.example.com", RecordType::A, 2),
        ("status.api.example.com", RecordType::AAAA, 1),
        ("www.api.example.com", RecordType::A, 2),
        ("nope.api.example.com", RecordType::A, 0),
        ("api.example.com", RecordType::TXT, 1),
    ];
    let queries: Vec<QueryBuilder> = (0..40)
        .map(|i| {
            let (name, rtype, _) = names[i % names.len()];
            query(name, rtype).id(1000 + i as u16)
        })
        .collect();
    // Every query goes out before the first reply is read, in one write.
    let mut s = tcp_connect(server.addr);
    let mut all = Vec::new();
    for q in &queries {
        let wire = q.wire();
        all.extend_from_slice(&(wire.len() as u16).to_be_bytes());
        all.extend_from_slice(&wire);
    }
    std::io::Write::write_all(&mut s, &all).expect("writing the queries");
    for (i, q) in queries.iter().enumerate() {
        let reply = parse(&read_frame(&mut s).expect("a reply"));
        assert_eq!(reply.metadata.id, q.get_id(), "reply {i} out of order");
        assert_eq!(reply.answers.len(), names[i % names.len()].2, "reply {i}");
    }
}
