//! DNS over TCP (RFC 7766, RFC 1035 section 4.2.2): our own accept loop, one task per
//! connection, each message handed to `Handler::respond` and answered in order. The limits an
//! Internet-facing server needs, which hickory's TCP server lacks:
//!
//! - at most `max_connections` open, and, when set, `max_connections_per_client` from one client
//!   (an IPv4 address, or an IPv6 /64). A connection beyond either takes the place of the
//!   longest-idle connection that limit counts, which is closed (RFC 7766 section 6.2.3); only
//!   when all of those are busy with a message is the new one closed at once
//!   (`connections::ConnectionTable`);
//! - `idle_timeout` between messages, and `read_timeout` for a message once its first byte has
//!   arrived, counted from that byte: a slow-loris client trickling a byte a second is cut off
//!   however it paces itself. Writing a batch of responses gets `read_timeout` too, so a client
//!   that never reads cannot hold a task either;
//! - `max_queries_per_connection`, then the connection is closed (after the answers are
//!   written).
//!
//! Pipelining: a connection's messages are answered one after another, and the responses to
//! every complete message already received go out in one write. Fairness between clients comes
//! from each connection being its own task, bounded in number by the limits above. Every listen
//! address has its own accept loop; they share one table, so the limits count connections on all
//! of them together.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::Handler;
use super::connections::{Admission, ConnectionTable, Tracked};
use crate::telemetry::metrics::Metrics;

/// Open connections at most, from everyone (a few MB of buffers at most, and far below the
/// open-files limit the server raises itself to).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1000;
/// Open connections at most from one client: none by default, as in BIND, Knot, NSD and
/// PowerDNS. A resolver farm behind one address (or NAT) may need hundreds, and a client that
/// holds many idle connections is no threat to the others: their new connections close its
/// longest-idle ones. What is left to a client that keeps every connection busy is bounded by
/// `read_timeout`.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: Option<usize> = None;
/// Quiet time allowed between messages (RFC 7766 section 6.2.3 suggests seconds, not minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one message, from its first byte to its last (and for writing responses).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages answered on one connection before it is closed. High: a resolver that keeps a busy
/// connection open (RFC 7766 encourages it) must not be cut off every second, and load tools
/// such as dnsperf do not reconnect when a server closes; the cap only bounds one connection's
/// life, the idle and read timeouts bound its cost.
pub const DEFAULT_MAX_QUERIES_PER_CONNECTION: u32 = 100_000;

/// How long a connection closed for its query limit waits for the client to close its side,
/// discarding what it still sends, so the answers already written are not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);
/// The read buffer's starting size; it grows to fit a larger message (65,537 bytes at most).
const READ_BUFFER: usize = 4096;

/// The TCP limits; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// `None`: no cap per client, only `max_connections`.
    pub max_connections_per_client: Option<usize>,
    pub idle_timeout: Duration,
    pub read_timeout: Duration,
    pub max_queries_per_connection: u32,
}

impl Default for TcpLimits {
    fn default() -> TcpLimits {
        TcpLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_queries_per_connection: DEFAULT_MAX_QUERIES_PER_CONNECTION,
        }
    }
}

/// Serves DNS over TCP on every listener until `shutdown` is cancelled, then closes every
/// connection. The limits count the connections of all listeners together.
pub async fn serve(
    listeners: Vec<TcpListener>,
    handler: Arc<Handler>,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    raise_open_files_limit(limits.max_connections as u64 + 1024);
    let table = Arc::new(Mutex::new(ConnectionTable::default()));
    let mut loops = JoinSet::new();
    for listener in listeners {
        loops.spawn(accept(
            listener,
            handler.clone(),
            limits,
            table.clone(),
            shutdown.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
}

/// One listener's accept loop: each connection admitted to `table` gets a task.
async fn accept(
    listener: TcpListener,
    handler: Arc<Handler>,
    limits: TcpLimits,
    table: Arc<Mutex<ConnectionTable>>,
    shutdown: CancellationToken,
) {
    let metrics = handler.snapshots.metrics.clone();
    let mut tasks = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for connections to close
                    // rather than spin.
                    tracing::warn!(%error, "accepting a DNS TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while tasks.try_join_next().is_some() {}
        let admission = table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(peer.ip(), &limits);
        let slot = match admission {
            Admission::Admitted { conn, evicted } => {
                if let Some((_, limit)) = evicted {
                    metrics.record_tcp_evicted(limit.label());
                    tracing::debug!(
                        client = %peer,
                        limit = limit.label(),
                        "closing the longest-idle DNS TCP connection to make room"
                    );
                }
                Slot::new(table.clone(), conn, metrics.clone())
            }
            Admission::Refused(limit) => {
                metrics.record_tcp_refused(limit.label());
                tracing::debug!(client = %peer, limit = limit.label(), "DNS TCP connection refused");
                drop(stream);
                continue;
            }
        };
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut connection = Connection::new(stream, peer, &handler, &slot.conn, limits);
            let closed = connection.run(&shutdown).await;
            let metrics = &handler.snapshots.metrics;
            match closed {
                Closed::IdleTimeout => metrics.record_tcp_timeout("idle"),
                Closed::ReadTimeout => metrics.record_tcp_timeout("read"),
                Closed::WriteTimeout => metrics.record_tcp_timeout("write"),
                Closed::QueryLimit => metrics.record_tcp_query_limit(),
                // Counted when the table chose it.
                Closed::Evicted => {}
                Closed::ByClient | Closed::Error | Closed::Shutdown => {}
            }
            tracing::debug!(client = %peer, reason = ?closed, "DNS TCP connection closed");
            // Counted before the socket closes, so a client that sees the close also sees it
            // in the metrics; the place in the table is given back once it is closed.
            drop(connection);
            drop(slot);
        });
    }
    tasks.shutdown().await;
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    ByClient,
    IdleTimeout,
    ReadTimeout,
    WriteTimeout,
    QueryLimit,
    /// Closed while idle to make room for a new connection.
    Evicted,
    Error,
    Shutdown,
}

/// One connection's place in the table, given back when dropped.
struct Slot {
    table: Arc<Mutex<ConnectionTable>>,
    conn: Arc<Tracked>,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn new(table: Arc<Mutex<ConnectionTable>>, conn: Arc<Tracked>, metrics: Arc<Metrics>) -> Slot {
        metrics.tcp_connections_changed(1);
        Slot {
            table,
            conn,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(&self.conn);
        self.metrics.tcp_connections_changed(-1);
    }
}

/// One connection being served.
struct Connection<'a> {
    stream: TcpStream,
    peer: SocketAddr,
    handler: &'a Handler,
    /// Its entry in the table: told when the connection is idle, cancelled to evict it.
    tracked: &'a Tracked,
    limits: TcpLimits,
    /// Received bytes; `buf[start..end]` is not answered yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// When the first byte of the message now being received arrived.
    message_started: Option<Instant>,
    /// Framed responses not written yet.
    pending: Vec<u8>,
    answered: u32,
}

impl<'a> Connection<'a> {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        handler: &'a Handler,
        tracked: &'a Tracked,
        limits: TcpLimits,
    ) -> Connection<'a> {
        // Responses go out as soon as they are written, not held back by Nagle.
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            peer,
            handler,
            tracked,
            limits,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            message_started: None,
            pending: Vec::new(),
            answered: 0,
        }
    }

    async fn run(&mut self, shutdown: &CancellationToken) -> Closed {
        let mut response = Vec::with_capacity(512);
        let mut name = String::with_capacity(256);
        loop {
            // Answer every complete message received, in order.
            let mut took_any = false;
            while self.answered < self.limits.max_queries_per_connection {
                let Some(len) = self.complete_message() else {
                    break;
                };
                let msg = &self.buf[self.start + 2..self.start + 2 + len];
                if self
                    .handler
                    .respond(msg, self.peer, true, &mut response, &mut name)
                    .is_some()
                    && response.len() <= usize::from(u16::MAX)
                {
                    self.pending
                        .extend_from_slice(&(response.len() as u16).to_be_bytes());
                    self.pending.extend_from_slice(&response);
                }
                self.start += 2 + len;
                self.answered += 1;
                took_any = true;
            }
            if took_any {
                // What is left, if anything, is the start of the next message.
                self.message_started = (self.start < self.end).then(Instant::now);
            }
            if !self.pending.is_empty() {
                match timeout(
                    self.limits.read_timeout,
                    self.stream.write_all(&self.pending),
                )
                .await
                {
                    Ok(Ok(())) => self.pending.clear(),
                    Ok(Err(_)) => return Closed::Error,
                    Err(_) => return Closed::WriteTimeout,
                }
            }
            if self.answered >= self.limits.max_queries_per_connection {
                self.linger().await;
                return Closed::QueryLimit;
            }
            self.make_room();
            let deadline = match self.message_started {
                Some(t) => t + self.limits.read_timeout,
                None => {
                    // Idle: every message is answered and written. The table may close us now
                    // to make room (a message that arrives meanwhile is lost with the
                    // connection, as with any close of an idle connection; RFC 7766 clients
                    // retry).
                    let now = Instant::now();
                    self.tracked.set_idle(now);
                    now + self.limits.idle_timeout
                }
            };
            let read = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Closed::Shutdown,
                _ = self.tracked.evicted().cancelled() => return Closed::Evicted,
                read = timeout_at(deadline, self.stream.read(&mut self.buf[self.end..])) => read,
            };
            match read {
                Err(_) if self.message_started.is_some() => return Closed::ReadTimeout,
                Err(_) => return Closed::IdleTimeout,
                Ok(Ok(0)) => return Closed::ByClient,
                Ok(Ok(n)) => {
                    if self.start == self.end {
                        self.message_started = Some(Instant::now());
                        self.tracked.set_busy();
                    }
                    self.end += n;
                }
                Ok(Err(_)) => return Closed::Error,
            }
        }
    }

    /// The length of the message at `start`, if it has arrived whole.
    fn complete_message(&self) -> Option<usize> {
        let have = &self.buf[self.start..self.end];
        if have.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([have[0], have[1]]));
        (have.len() >= 2 + len).then_some(len)
    }

    /// Makes space after `end` for the rest of the message being received: moves it to the
    /// front of the buffer, and grows the buffer if the message is larger.
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let have = &self.buf[self.start..self.end];
        let needed = if have.len() >= 2 {
            2 + usize::from(u16::from_be_bytes([have[0], have[1]]))
        } else {
            2
        };
        if self.buf.len() - self.start < needed || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() < needed {
            self.buf.resize(needed, 0);
        }
    }

    /// Closes our side and waits, briefly, for the client to close its own, discarding what
    /// it sends meanwhile: closing with unread data would reset the connection, and a reset
    /// can destroy answers the client has not read yet.
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let _ = timeout(LINGER, async {
            let mut sink = [0u8; 1024];
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Raises the soft open-files limit toward `wanted` (the hard limit caps it): the usual default
/// of 1024 is close to the connection limit alone.
fn raise_open_files_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= wanted {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = wanted.min(limit.rlim_max);
        if limit.rlim_cur > before && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            limit.rlim_cur = before;
        }
    }
    if limit.rlim_cur < wanted {
        tracing::warn!(
            open_files = limit.rlim_cur,
            wanted,
            "the open-files limit is below what the TCP connection limit needs"
        );
    }
}
