//! Helpers for the abuse-resistance tests (`abuse`): a paced UDP flood from a chosen loopback
//! source that counts what comes back, TCP connections from a chosen source, and waiting for
//! the server to close a connection.
//!
//! Kept apart from `support.rs` so that test modules added in other branches merge cleanly.

#![allow(dead_code)] // Not every test uses every helper.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ops_support::{Metrics, get};
use crate::support::{QueryBuilder, TestServer};

/// The loopback address floods come from (network 127.0.0.0/24)...
pub const FLOOD_SOURCE: &str = "127.0.0.1";
/// ... and a client in another /24, which RRL must leave alone.
pub const OTHER_NETWORK: &str = "127.1.2.3";

/// What came back from a flood.
#[derive(Debug, Default, Clone)]
pub struct FloodReport {
    pub sent: usize,
    /// Responses with TC clear and at least one answer record.
    pub answered: usize,
    /// Responses with TC set and no answer records: RRL slips.
    pub slipped: usize,
    /// Anything else (should be nothing).
    pub other: usize,
    /// From the first query sent to the last.
    pub elapsed: Duration,
    /// The first slipped reply, whole.
    pub first_slip: Option<Vec<u8>>,
}

impl FloodReport {
    pub fn received(&self) -> usize {
        self.answered + self.slipped + self.other
    }
}

/// Sends `count` copies of `q` (fresh IDs) from `source` to `server`, evenly spread over
/// `over`, and counts the replies (waiting half a second after the last query for stragglers).
pub fn flood(
    source: &str,
    server: SocketAddr,
    q: &QueryBuilder,
    count: usize,
    over: Duration,
) -> FloodReport {
    let socket = bound_udp(source.parse().expect("an IP address"));
    socket.connect(server).expect("connecting the UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("setting a read timeout");
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let socket = socket.try_clone().expect("cloning the socket");
        let done = done.clone();
        std::thread::spawn(move || {
            let mut report = FloodReport::default();
            let mut buf = [0u8; 2048];
            // Ends at the first half second without a reply once every query is sent.
            loop {
                let was_done = done.load(Ordering::SeqCst);
                let n = match socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if was_done {
                            break;
                        }
                        continue;
                    }
                    Err(e) => panic!("receiving replies: {e}"),
                };
                let reply = &buf[..n];
                if n < 12 {
                    report.other += 1;
                    continue;
                }
                let tc = reply[2] & 0x02 != 0;
                let answers = u16::from_be_bytes([reply[6], reply[7]]);
                match (tc, answers) {
                    (false, a) if a > 0 => report.answered += 1,
                    (true, 0) => {
                        report.slipped += 1;
                        report.first_slip.get_or_insert_with(|| reply.to_vec());
                    }
                    _ => report.other += 1,
                }
            }
            report
        })
    };
    let mut wire = q.wire();
    let start = Instant::now();
    for i in 0..count {
        let due = start + over.mul_f64(i as f64 / count as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        wire[..2].copy_from_slice(&(i as u16).to_be_bytes());
        socket.send(&wire).expect("sending a datagram");
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::SeqCst);
    let mut report = receiver.join().expect("the receiver thread");
    report.sent = count;
    report.elapsed = elapsed;
    report
}

/// A UDP socket on `source` with a receive buffer large enough for a flood's replies.
fn bound_udp(source: IpAddr) -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(source, 0)),
        Type::DGRAM,
        None,
    )
    .unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("binding a UDP socket on {source}: {e}"));
    socket.into()
}

/// Runs `probe` every `every` on another thread until the returned guard is finished.
pub struct Repeat<T> {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<T>>,
}

pub fn repeat<T: Send + 'static>(
    every: Duration,
    mut probe: impl FnMut() -> T + Send + 'static,
) -> Repeat<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut results = Vec::new();
        while !s.load(Ordering::SeqCst) {
            results.push(probe());
            std::thread::sleep(every);
        }
        results
    });
    Repeat { stop, thread }
}

impl<T> Repeat<T> {
    /// Stops and returns every result.
    pub fn finish(self) -> Vec<T> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the probe thread")
    }
}

/// The server's metrics now.
pub fn scrape(server: &TestServer) -> Metrics {
    let r = get(server.admin, "/metrics", None);
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    Metrics::parse(&r.text())
}

/// A TCP connection to `server` from `source`, reads giving up after 2 s.
pub fn tcp_from(source: &str, server: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let source: IpAddr = source.parse().expect("an IP address");
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("binding a TCP socket on {source}: {e}"));
    socket
        .connect(&server.into())
        .unwrap_or_else(|e| panic!("connecting to {server} from {source}: {e}"));
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("setting a read timeout");
    stream
}

/// How a wait for the server to close a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// Closed (end of stream or reset) after this long.
    Closed(Duration),
    /// Still open after the whole wait.
    Open,
    /// The server sent data instead.
    Data(usize),
}

/// Waits up to `limit` for the server to close `stream`, reading nothing else.
pub fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Wait {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(limit))
        .expect("setting a read timeout");
    let mut buf = [0u8; 512];
    let result = match stream.read(&mut buf) {
        Ok(0) => Wait::Closed(start.elapsed()),
        Ok(n) => Wait::Data(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Wait::Open,
        Err(_) => Wait::Closed(start.elapsed()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    result
}

/// Whether the server answers a query on `stream` (false when it closed it).
pub fn answers_on(stream: &mut TcpStream, q: &QueryBuilder) -> bool {
    use std::io::Write;
    let wire = q.wire();
    let mut frame = (wire.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&wire);
    if stream.write_all(&frame).is_err() {
        return false;
    }
    match crate::support::read_frame(stream) {
        Ok(reply) => {
            let m = crate::support::parse(&reply);
            assert_eq!(m.metadata.id, q.get_id(), "reply ID");
            true
        }
        Err(_) => false,
    }
}
