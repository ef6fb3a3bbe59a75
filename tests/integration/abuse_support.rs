//! Helpers for the abuse-resistance tests (`abuse`, `resolver_traffic`): a paced UDP flood from
//! a chosen loopback source that counts what comes back and the bytes each way, a single query
//! from a chosen source that reports a missing reply instead of failing, TCP connections from a
//! chosen source, and waiting for the server to close a connection.
//!
//! Kept apart from `support.rs` so that test modules added in other branches merge cleanly.

#![allow(dead_code)] // Not every test uses every helper.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

use crate::ops_support::{Metrics, get};
use crate::support::{QueryBuilder, TestServer, bound_udp, parse};

/// The loopback address floods come from (network 127.0.0.0/24)...
pub const FLOOD_SOURCE: &str = "127.0.0.1";
/// ... and a client in another /24, which RRL must leave alone.
pub const OTHER_NETWORK: &str = "127.1.2.3";

/// What came back from a flood.
#[derive(Debug, Default, Clone)]
pub struct FloodReport {
    pub sent: usize,
    /// Whole responses: TC clear, with answer records or NXDOMAIN.
    pub answered: usize,
    /// Responses with TC set and no answer records: RRL slips.
    pub slipped: usize,
    /// Anything else (should be nothing).
    pub other: usize,
    /// From the first query sent to the last.
    pub elapsed: Duration,
    /// The first slipped reply, whole.
    pub first_slip: Option<Vec<u8>>,
    /// The size of every query sent, added up...
    pub bytes_sent: usize,
    /// ... and of every reply received: what a reflection attack would aim at its victim.
    pub bytes_received: usize,
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
    let wire = q.wire();
    let queries: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let mut w = wire.clone();
            w[..2].copy_from_slice(&(i as u16).to_be_bytes());
            w
        })
        .collect();
    flood_each(source, server, &queries, over)
}

/// Sends each of `queries` (in wire format, IDs as given) once from `source` to `server`, evenly
/// spread over `over`, and counts the replies as `flood` does.
pub fn flood_each(
    source: &str,
    server: SocketAddr,
    queries: &[Vec<u8>],
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
                report.bytes_received += n;
                if n < 12 {
                    report.other += 1;
                    continue;
                }
                let tc = reply[2] & 0x02 != 0;
                let nxdomain = reply[3] & 0x0f == 3;
                let answers = u16::from_be_bytes([reply[6], reply[7]]);
                match (tc, answers) {
                    (false, a) if a > 0 || nxdomain => report.answered += 1,
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
    let count = queries.len();
    let start = Instant::now();
    for (i, wire) in queries.iter().enumerate() {
        let due = start + over.mul_f64(i as f64 / count as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket.send(wire).expect("sending a datagram");
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::SeqCst);
    let mut report = receiver.join().expect("the receiver thread");
    report.sent = count;
    report.bytes_sent = queries.iter().map(Vec::len).sum();
    report.elapsed = elapsed;
    report
}

/// One query over UDP from `source`: the reply (its ID checked), or why there was none within a
/// second. For probes running beside a flood, where a missing reply is a finding, not a panic.
pub fn ask_from(source: &str, server: SocketAddr, q: &QueryBuilder) -> Result<Message, String> {
    let socket = UdpSocket::bind((source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket.send(&q.wire()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| format!("no reply: {e}"))?;
    let reply = parse(&buf[..n]);
    if reply.metadata.id != q.get_id() {
        return Err(format!("reply ID {} for {}", reply.metadata.id, q.get_id()));
    }
    Ok(reply)
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
