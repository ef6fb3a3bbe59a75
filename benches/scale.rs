//! Scale: a generated zone of 10,000 services × 10 DCs and 100,000 static names. Measures the
//! zone load time in-process, then starts the release binary on it and measures its RSS, the
//! time of a reload through the admin API, and whether any query fails or is answered wrongly
//! while reloads run under load. Run: `cargo bench --bench scale`.

use std::fmt::Write as _;

#[path = "common/node.rs"]
mod node;
use node::BenchNode;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const SERVICES: usize = 10_000;
const DCS: usize = 10;

/// Static names besides the services: 100,000 unless `SCALE_STATICS` says otherwise (0 measures
/// the services alone).
fn statics() -> usize {
    std::env::var("SCALE_STATICS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

fn zone() -> String {
    let mut z = String::with_capacity(8 << 20);
    z.push_str("zone: big.example\nsoa: { primary: ns1, contact: hostmaster@big.example }\nnameservers: { ns1: [192.0.2.53] }\ndatacenters:\n");
    for d in 0..DCS {
        let _ = writeln!(
            z,
            "  dc{d}: {{ location: [{}, {}] }}",
            -60.0 + 13.0 * d as f64,
            -170.0 + 34.0 * d as f64
        );
    }
    z.push_str("records:\n");
    for s in 0..SERVICES {
        let _ = writeln!(
            z,
            "  svc{s}:\n    service:\n      answers: 2\n      endpoints:"
        );
        for d in 0..DCS {
            let _ = writeln!(z, "        dc{d}: [10.{}.{}.{}]", d, s / 256, s % 256);
        }
    }
    for n in 0..statics() {
        let _ = writeln!(
            z,
            "  host{n}: {{ A: 198.18.{}.{} }}",
            (n / 256) % 256,
            n % 256
        );
    }
    z
}

fn query(addr: SocketAddr, sock: &UdpSocket, name: &str, id: u16) -> Option<Message> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    sock.send_to(&m.to_vec().ok()?, addr).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` builds benches; only `cargo bench` runs them.
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("zone dir");
    let text = zone();
    std::fs::write(zones.join("big.yaml"), &text).expect("writing the zone");
    println!(
        "zone file: {} services x {} DCs, {} static names, {:.1} MB",
        SERVICES,
        DCS,
        statics(),
        text.len() as f64 / 1e6
    );

    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let set = steerdns::zone::file::load_dir(&zones).expect("the generated zone loads");
        best = best.min(t.elapsed());
        assert_eq!(set.services().count(), SERVICES);
    }
    println!(
        "load (parse + validate, in-process, best of 3): {:.0} ms",
        best.as_secs_f64() * 1e3
    );

    let node = BenchNode::start(dir.path(), &zones, &[]);
    println!(
        "start to listening (release binary): {:.0} ms",
        node.started_in.as_secs_f64() * 1e3
    );
    let (dns, admin) = (node.dns, node.admin.clone());

    let sock = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for i in 0..2000u16 {
        let _ = query(
            dns,
            &sock,
            &format!("svc{}.big.example.", usize::from(i) * 5 % SERVICES),
            i,
        );
    }
    println!(
        "RSS after 2,000 queries: {:.1} MiB",
        node.usage().rss_kib as f64 / 1024.0
    );

    // Reloads under load: three client threads query services and statics without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").expect("a socket");
                sock.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let mut i: usize = t * 7919;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // A service has one endpoint per DC (and no fill), a static name one address.
                    let (name, want) = if i.is_multiple_of(2) || statics() == 0 {
                        (format!("svc{}.big.example.", i % SERVICES), 1)
                    } else {
                        (format!("host{}.big.example.", i % statics()), 1)
                    };
                    match query(dns, &sock, &name, i as u16) {
                        Some(m)
                            if m.metadata.response_code == ResponseCode::NoError
                                && m.answers.len() == want =>
                        {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", &format!("http://{admin}/api/v1/reload")])
            .output()
            .expect("curl");
        times.push(t.elapsed());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"),
            "reload failed: {:?}",
            out
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let ms: Vec<String> = times
        .iter()
        .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
        .collect();
    println!("reload through the API (under load): {} ms", ms.join(", "));
    println!(
        "queries during the reloads: {} answered correctly, {} failed or wrong",
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed)
    );
    println!(
        "RSS after the reloads: {:.1} MiB",
        node.usage().rss_kib as f64 / 1024.0
    );
}
