//! Soak: a bounded run (5 minutes by default; `SOAK_SECONDS=N` to change) of the release binary
//! at a moderate query rate, with churn: a backend flapping every few seconds (health changes),
//! the zone rewritten and reloaded every 10 s, a drain and undrain every 30 s. Every 10 s it
//! samples the server's RSS, threads and open file descriptors, and at the end prints the first
//! and last samples and how many queries failed. Run: `cargo bench --bench soak`.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/node.rs"]
mod node;
use node::BenchNode;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

fn zone(port: u16, ttl: u32) -> String {
    format!(
        "zone: soak.test
soa: {{ primary: ns1, contact: hostmaster@soak.test }}
nameservers: {{ ns1: [192.0.2.53] }}
datacenters:
  a: {{ location: [50, 8] }}
  b: {{ location: [38, -77] }}
checks:
  web: {{ http: {{ port: {port}, path: /health }}, interval: 500ms, timeout: 300ms, fall: 2, rise: 2 }}
records:
  www:
    service: {{ ttl: {ttl}, policy: failover, check: web, endpoints: {{ a: [127.0.0.71], b: [127.0.0.72] }} }}
{}",
        (0..200).map(|i| format!("  h{i}: {{ A: 192.0.2.{} }}\n", i % 250)).collect::<String>()
    )
}

/// A backend on `ip` that answers 200, or closes connections while `down` is set.
fn backend(ip: &str, port: u16, down: Arc<AtomicBool>) {
    let listener = TcpListener::bind((ip, port)).expect("binding a backend");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if down.load(Ordering::Relaxed) {
                continue; // dropped: the connection is closed without an answer
            }
            let mut s = stream;
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let probe = TcpListener::bind("127.0.0.71:0").expect("a port");
    let port = probe.local_addr().expect("addr").port();
    drop(probe);
    let down = Arc::new(AtomicBool::new(false));
    backend("127.0.0.71", port, down.clone());
    backend("127.0.0.72", port, Arc::new(AtomicBool::new(false)));

    let dir = tempfile::tempdir().expect("a temp dir");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("zone dir");
    std::fs::write(zones.join("soak.yaml"), zone(port, 30)).expect("zone");
    let state = dir.path().join("state");
    let state = state.to_str().expect("a UTF-8 temp path");
    let node = BenchNode::start(dir.path(), &zones, &["--state-dir", state]);
    let (dns, admin) = (node.dns, node.admin.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("socket");
            sock.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut i: u32 = 0;
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                // Mostly static names (spread, so RRL never limits), every tenth the service
                // (about 60 a second, under the default RRL rate for one answer).
                let name = if i.is_multiple_of(10) {
                    "www.soak.test.".to_string()
                } else {
                    format!("h{}.soak.test.", i % 200)
                };
                let mut m = Message::new(i as u16, MessageType::Query, OpCode::Query);
                m.add_query(Query::query(
                    Name::from_ascii(&name).expect("name"),
                    RecordType::A,
                ));
                let good = sock.send_to(&m.to_vec().expect("encode"), dns).is_ok()
                    && matches!(sock.recv_from(&mut buf), Ok((n, _)) if Message::from_vec(&buf[..n])
                        .is_ok_and(|r| r.metadata.response_code == ResponseCode::NoError && r.answers.len() == 1));
                if good {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    bad.fetch_add(1, Ordering::Relaxed)
                };
                std::thread::sleep(Duration::from_micros(1500));
            }
        })
    };

    let curl = |path: &str, body: &str| {
        let _ = Command::new("curl")
            .args([
                "-s",
                "-X",
                "POST",
                "-d",
                body,
                &format!("http://{admin}{path}"),
            ])
            .output();
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut tick = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        tick += 1;
        if tick.is_multiple_of(4) {
            down.store(!down.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if tick.is_multiple_of(10) {
            let ttl = if tick.is_multiple_of(20) { 30 } else { 31 };
            std::fs::write(zones.join("soak.yaml"), zone(port, ttl)).expect("rewrite");
            curl("/api/v1/reload", "");
            let u = node.usage();
            let s = (u.rss_kib, u.threads, u.fds);
            println!(
                "t={:>4}s rss={:>6} KiB threads={:>3} fds={:>3} queries ok={} bad={}",
                tick,
                s.0,
                s.1,
                s.2,
                ok.load(Ordering::Relaxed),
                bad.load(Ordering::Relaxed)
            );
            samples.push(s);
        }
        if tick.is_multiple_of(30) {
            curl(
                "/api/v1/drain",
                r#"{"dc":"b","reason":"soak","force":true}"#,
            );
        }
        if tick % 30 == 15 {
            curl("/api/v1/undrain", r#"{"dc":"b"}"#);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let (first, last) = (
        samples.first().copied().unwrap_or_default(),
        samples.last().copied().unwrap_or_default(),
    );
    println!(
        "soak {seconds}s: RSS {} -> {} KiB, threads {} -> {}, fds {} -> {}; queries ok {}, failed {}",
        first.0,
        last.0,
        first.1,
        last.1,
        first.2,
        last.2,
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed)
    );
}
