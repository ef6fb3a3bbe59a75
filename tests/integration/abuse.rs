//! Abuse resistance (issue 8): response rate limiting over UDP, and the limits of DNS over TCP
//! (connections per client and in total, slow-loris, idle timeout, queries per connection,
//! pipelining in order). Limits are set low through flags so each test takes seconds.

use std::net::SocketAddr;
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

    // Limited: about the burst plus the rate for the flood's duration got full answers.
    let most = BURST + RATE * (r.elapsed.as_secs_f64() + 0.5);
    assert!(
        r.answered as f64 >= BURST && r.answered as f64 <= most,
        "{} full answers to {} queries in {:?}; expected {BURST} to {most}",
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

#[test]
fn tcp_connections_beyond_the_per_client_or_global_limit_are_closed_at_once() {
    let server = TestServer::start_with(
        ZONE,
        &[
            "--tcp-max-connections",
            "3",
            "--tcp-max-connections-per-client",
            "2",
        ],
    );
    let q = || query("status.api.example.com", RecordType::A);
    let mut a1 = tcp_from("127.0.0.1", server.addr);
    let mut a2 = tcp_from("127.0.0.1", server.addr);
    assert!(answers_on(&mut a1, &q()) && answers_on(&mut a2, &q()));
    // A third from the same address: closed without an answer.
    let mut a3 = tcp_from("127.0.0.1", server.addr);
    assert!(
        !answers_on(&mut a3, &q()),
        "third connection from one client"
    );
    // Another client still gets in, up to the global limit of three ...
    let mut b1 = tcp_from("127.0.0.2", server.addr);
    assert!(answers_on(&mut b1, &q()), "another client");
    // ... and no further.
    let mut c1 = tcp_from("127.0.0.3", server.addr);
    assert!(!answers_on(&mut c1, &q()), "a fourth connection in all");
    // Those admitted are still served.
    assert!(answers_on(&mut a1, &q()) && answers_on(&mut a2, &q()) && answers_on(&mut b1, &q()));
    let m = scrape(&server);
    assert_eq!(
        m.value(
            "steerdns_tcp_connections_refused_total",
            &[("limit", "per_client")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "steerdns_tcp_connections_refused_total",
            &[("limit", "global")]
        ),
        1.0
    );
    assert_eq!(m.value("steerdns_tcp_connections_open", &[]), 3.0);

    // A closed connection gives its place back.
    drop(a1);
    let (_, took) = wait_for(Duration::from_secs(5), || {
        let mut again = tcp_from("127.0.0.1", server.addr);
        answers_on(&mut again, &q()).then_some(())
    })
    .expect("a new connection once one closed");
    eprintln!("place given back within {took:?}");
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
        use std::io::Write;
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
