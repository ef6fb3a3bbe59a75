//! Helpers for the multi-region tests (`regions`, `failover_timing`): a block of loopback
//! addresses per test, clusters of real nodes, HTTP backends that can refuse chosen sources,
//! hang, or fail one probe per node, fake peers, polling with deadlines, and the failover timing
//! runs that the `convergence` bench shares.

#![allow(dead_code)] // Not every test module uses every helper.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Regions (issue 5): several nodes as regions on loopback, HTTP backends per data center, the
// admin API over plain HTTP, and polling with deadlines.
//
// Every cluster gets a 127.K.0.0/16 block of its own, so tests running in parallel never share
// an address. Within a block:
//
// | address | what |
// |---|---|
// | 127.K.i.1 (i = 1, 2, ...) | node i: DNS on a kernel-chosen port, admin/peer API on `ADMIN_PORT`, probes leave from here |
// | 127.K.(100+d).1 (d = 1, 2, 3) | the backend of data center `dc<d>`, all on one port (the check has one port) |
// | 127.K.(200+j).1 | fake peers a test runs itself, on `ADMIN_PORT` |

/// The admin/peer port of every node: fixed, so that peers can be configured before a node
/// starts (addresses differ per node and per test, so nothing collides).
pub const ADMIN_PORT: u16 = 18053;
/// The service every regions zone serves.
pub const SERVICE: &str = "www.gslb.test";
/// The data centers of a regions zone, in failover order.
pub const DCS: [&str; 3] = ["dc1", "dc2", "dc3"];
/// The secret every node shares unless a test says otherwise.
pub const CLUSTER_SECRET: &str = "regions-test-secret";

static NEXT_BLOCK: AtomicU8 = AtomicU8::new(100);

/// A 127.K.0.0/16 block of loopback addresses one test has to itself.
#[derive(Debug, Clone, Copy)]
pub struct Block(pub u8);

impl Block {
    /// The next unused block. A block whose admin ports are taken (say, by the same tests
    /// running from another checkout) is skipped.
    pub fn take() -> Block {
        loop {
            let k = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
            assert!(k < 255, "out of 127.K.0.0/16 blocks");
            let block = Block(k);
            let free = (1..=8).all(|i| TcpListener::bind(block.admin(i)).is_ok());
            if free {
                return block;
            }
        }
    }

    /// Node `i`'s address (i from 1).
    pub fn node_ip(self, i: usize) -> IpAddr {
        IpAddr::from([127, self.0, i as u8, 1])
    }

    /// Node `i`'s admin/peer address.
    pub fn admin(self, i: usize) -> SocketAddr {
        SocketAddr::new(self.node_ip(i), ADMIN_PORT)
    }

    /// The backend address of data center `d` (d from 1: dc1 is 127.K.101.1).
    pub fn backend_ip(self, d: usize) -> IpAddr {
        IpAddr::from([127, self.0, 100 + d as u8, 1])
    }

    /// A record of an answer for `SERVICE` as the data center it names ("dc2" for the A record
    /// 127.K.102.1); anything else as it reads.
    pub fn dc_of(self, r: &hickory_proto::rr::Record) -> String {
        match &r.data {
            RData::A(a) => match a.0.octets() {
                [127, k, d, 1] if k == self.0 && (101..=103).contains(&d) => {
                    format!("dc{}", d - 100)
                }
                _ => a.0.to_string(),
            },
            _ => show(r),
        }
    }

    /// The address of fake peer `j` (j from 1).
    pub fn fake_peer(self, j: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::from([127, self.0, 200 + j as u8, 1]), ADMIN_PORT)
    }
}

/// A regions zone: service `www.gslb.test`, failover over dc1, dc2, dc3 (one endpoint each, the
/// DC's backend), with an HTTP check of the given timing. `{k}` and `{port}` are filled in by
/// `TestCluster::start`.
pub fn regions_zone(interval: &str, timeout: &str, fall: u32, rise: u32) -> String {
    format!(
        r#"
zone: gslb.test
soa: {{ primary: ns1, contact: hostmaster@gslb.test }}
nameservers: {{ ns1: [192.0.2.53] }}
datacenters:
  dc1: {{ location: [50.11, 8.68] }}
  dc2: {{ location: [38.95, -77.45] }}
  dc3: {{ location: [1.35, 103.82] }}
checks:
  web:
    http: {{ port: {{port}}, path: /health }}
    interval: {interval}
    timeout: {timeout}
    fall: {fall}
    rise: {rise}
records:
  www:
    service:
      ttl: 5
      policy: failover
      check: web
      endpoints:
        dc1: [127.{{k}}.101.1]
        dc2: [127.{{k}}.102.1]
        dc3: [127.{{k}}.103.1]
"#
    )
}

/// The zone the regions tests use: checks every 200 ms, 150 ms timeout, fall 2, rise 2.
pub fn fast_zone() -> String {
    regions_zone("200ms", "150ms", 2, 2)
}

// ---- A tiny HTTP/1.1 server -----------------------------------------------------------------

/// A request as a `HttpStub` handler sees it.
#[derive(Debug, Clone)]
pub struct StubRequest {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl StubRequest {
    /// A header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response a `HttpStub` handler gives.
#[derive(Debug, Clone)]
pub struct StubResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl StubResponse {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> StubResponse {
        StubResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// Answers a request; `None` closes the connection without a response.
pub type StubHandler = dyn Fn(&StubRequest) -> Option<StubResponse> + Send + Sync;

struct StubShared {
    requests: AtomicUsize,
    handler: Box<StubHandler>,
}

/// An HTTP/1.1 server on one address, one thread per connection, `Connection: close` always
/// (so every probe is a new connection and sees the current mode). Its port can be closed and
/// reopened (it is a `support::Listener`). Stopped when dropped.
pub struct HttpStub {
    pub addr: SocketAddr,
    shared: Arc<StubShared>,
    listener: Listener,
}

impl HttpStub {
    /// Listens on `addr` (port 0 picks one).
    pub fn start(
        addr: SocketAddr,
        handler: impl Fn(&StubRequest) -> Option<StubResponse> + Send + Sync + 'static,
    ) -> std::io::Result<HttpStub> {
        let shared = Arc::new(StubShared {
            requests: AtomicUsize::new(0),
            handler: Box::new(handler),
        });
        let s = shared.clone();
        let listener = Listener::start(TcpListener::bind(addr)?, move |stream, peer| {
            serve_connection(stream, peer, &s)
        });
        Ok(HttpStub {
            addr: listener.addr,
            shared,
            listener,
        })
    }

    /// Opens or closes the port, returning once done.
    pub fn set_listening(&self, on: bool) {
        self.listener.set_listening(on);
    }

    /// Requests handled so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: &StubShared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let request = StubRequest {
        peer,
        method: first.next().unwrap_or("").to_string(),
        path: first.next().unwrap_or("").to_string(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let Some(resp) = (shared.handler)(&request) else {
        return; // Dropping the stream closes the connection without an answer.
    };
    let mut out = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        resp.status,
        resp.body.len()
    );
    for (n, v) in &resp.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&resp.body);
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Let the client read the response before the socket goes.
    let _ = stream.read(&mut chunk);
}

// ---- Data center backends -------------------------------------------------------------------

/// How a broken backend treats a probe that reaches it (a closed port is `Backend::down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers `500`.
    Status500,
    /// Reads the request and never answers: the probe times out.
    Hang,
}

/// How long a backend holds a hung connection at most (longer than any check's timeout here).
const HOLD_LIMIT: Duration = Duration::from_secs(10);
/// How long a connection of a single hung probe (`Backend::fail_next_probe`) is held.
const HOLD_ONCE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct BackendState {
    /// How every probe fails while the backend is broken (`None`: healthy).
    fault: Option<Fault>,
    refused: HashSet<IpAddr>,
    /// The next probe from each of these sources fails this way, once.
    fail_next: HashMap<IpAddr, Fault>,
    /// Per source: how long to wait before answering, and a jitter (a fraction of it, drawn
    /// uniformly either way per request), the path's RTT as that source sees it.
    delays: HashMap<IpAddr, (Duration, f64)>,
    /// Draws for the jitter.
    rng: u64,
}

/// The health endpoint of one data center: 200 when up, 500 when failing, a closed port when
/// down, silence when hung; it can fail just the next probe of chosen regions; and it can refuse
/// one region's probes (it closes connections from those source addresses without answering),
/// which breaks that region's path alone.
pub struct Backend {
    pub name: String,
    stub: HttpStub,
    state: Arc<Mutex<BackendState>>,
}

impl Backend {
    pub fn start(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let state = Arc::new(Mutex::new(BackendState::default()));
        let s = state.clone();
        let stub = HttpStub::start(addr, move |req| {
            let lock = || s.lock().unwrap_or_else(|e| e.into_inner());
            let (fault, once) = {
                let mut st = lock();
                if st.refused.contains(&req.peer.ip()) {
                    return None;
                }
                if let Some(&(delay, jitter)) = st.delays.get(&req.peer.ip()) {
                    st.rng = st.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = st.rng;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
                    let wait = delay.mul_f64(1.0 + jitter * (2.0 * u - 1.0));
                    drop(st);
                    std::thread::sleep(wait);
                    st = lock();
                }
                match st.fail_next.remove(&req.peer.ip()) {
                    Some(f) => (Some(f), true),
                    None => (st.fault, false),
                }
            };
            match fault {
                None => Some(StubResponse::new(200, "ok\n")),
                Some(Fault::Status500) => Some(StubResponse::new(500, "failing\n")),
                Some(Fault::Hang) => {
                    // Silent until the test mends the backend (or, for a single hung probe, for
                    // longer than the probe waits); then the connection closes unanswered.
                    let held = Instant::now();
                    let limit = if once { HOLD_ONCE } else { HOLD_LIMIT };
                    while held.elapsed() < limit && (once || lock().fault == Some(Fault::Hang)) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    None
                }
            }
        })?;
        Ok(Backend {
            name: name.to_string(),
            stub,
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.stub.addr
    }

    fn state(&self) -> MutexGuard<'_, BackendState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Healthy: port open, 200 (hung connections let go unanswered).
    pub fn up(&self) {
        self.state().fault = None;
        self.stub.set_listening(true);
    }

    /// Dead: the port is closed (connections are refused).
    pub fn down(&self) {
        self.state().fault = None;
        self.stub.set_listening(false);
    }

    /// Failing: answers 500.
    pub fn fail(&self) {
        self.state().fault = Some(Fault::Status500);
        self.stub.set_listening(true);
    }

    /// Hung: accepts connections and reads the requests, never answers.
    pub fn hang(&self) {
        self.state().fault = Some(Fault::Hang);
        self.stub.set_listening(true);
    }

    /// The next probe from each of `sources` (nodes' probe source addresses) fails with
    /// `fault`, and only that one: the probes after it find the backend as it was.
    pub fn fail_next_probe(&self, sources: &[IpAddr], fault: Fault) {
        let mut st = self.state();
        for s in sources {
            st.fail_next.insert(*s, fault);
        }
    }

    /// How many of the sources given to `fail_next_probe` have not sent their probe yet.
    pub fn failures_pending(&self) -> usize {
        self.state().fail_next.len()
    }

    /// Answers `source`'s requests (a node's probes) after `delay`, give or take `jitter` (a
    /// fraction of it): the round trip from that node's region.
    pub fn delay(&self, source: IpAddr, delay: Duration, jitter: f64) {
        self.state().delays.insert(source, (delay, jitter));
    }

    /// Breaks the path from `source` (a node's probe source address).
    pub fn refuse(&self, source: IpAddr) {
        self.state().refused.insert(source);
    }

    /// Mends the path from `source`.
    pub fn accept(&self, source: IpAddr) {
        self.state().refused.remove(&source);
    }

    /// Health requests answered or refused so far.
    pub fn requests(&self) -> usize {
        self.stub.requests()
    }
}

// ---- The admin API, through `support`'s HTTP client -----------------------------------------

/// GET of a JSON document, failing the test on any error.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = http_request(addr, "GET", path, &[], b"")
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    assert_eq!(r.status, 200, "GET http://{addr}{path}: {}", r.text());
    r.json()
}

/// POST of a JSON document; returns the status and the JSON answer.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = http_request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("POST http://{addr}{path}: {e}"));
    (r.status, r.json())
}

/// The value of one sample (`name{labels}`, exactly as rendered) in Prometheus text; 0 if absent.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| {
            v.split_whitespace()
                .next()
                .unwrap_or("")
                .parse()
                .unwrap_or_else(|e| panic!("metric {sample} value {v:?}: {e}"))
        })
        .unwrap_or(0.0)
}

// ---- Waiting with deadlines -----------------------------------------------------------------

/// Polls `check` every 20 ms until it returns `Ok`; fails the test with the last `Err` once
/// `deadline` has passed. Returns when it first held.
pub fn wait_until(
    deadline: Instant,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> Instant {
    loop {
        let last = match check() {
            Ok(()) => return Instant::now(),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out waiting until {what}; last seen: {last}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `wait_until` for an observed value to equal `want`.
pub fn wait_eq<T: PartialEq + std::fmt::Debug>(
    deadline: Instant,
    what: &str,
    mut observe: impl FnMut() -> T,
    want: T,
) -> Instant {
    wait_until(deadline, what, || equal(observe(), &want))
}

/// Checks `check` every 50 ms for `period`; fails the test the first time it does not hold.
pub fn holds_for(period: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + period;
    let mut rounds = 0;
    while Instant::now() < end || rounds < 2 {
        if let Err(e) = check() {
            panic!("{what} stopped holding after {rounds} checks: {e}");
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `holds_for` an observed value staying equal to `want`.
pub fn stays_eq<T: PartialEq + std::fmt::Debug>(
    period: Duration,
    what: &str,
    mut observe: impl FnMut() -> T,
    want: T,
) {
    holds_for(period, what, || equal(observe(), &want));
}

/// `Ok` when `got` equals `want`; else what was seen, for `wait_eq` and `stays_eq` to report.
fn equal<T: PartialEq + std::fmt::Debug>(got: T, want: &T) -> Result<(), String> {
    if got == *want {
        Ok(())
    } else {
        Err(format!("{got:?} (want {want:?})"))
    }
}

// ---- Nodes and clusters ---------------------------------------------------------------------

/// A peer of a cluster node.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// Another node of the cluster, by index.
    Node(usize),
    /// A fake peer the test runs itself at `Block::fake_peer(j)`.
    Fake(usize),
}

/// How one node differs from the others.
#[derive(Debug, Clone, Default)]
pub struct NodeOpts {
    /// Its peers, instead of every other node.
    pub peers: Option<Vec<Peer>>,
    /// Its own secret, instead of the cluster's.
    pub secret: Option<String>,
    /// With `ClusterOpts::tls`: its own `--peer-ca` file, instead of the cluster's CA.
    pub peer_ca: Option<PathBuf>,
}

/// Settings of a cluster: the exchange timing, the quorum, and per-node differences (by index).
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub exchange_interval: Duration,
    pub stale_after: Duration,
    pub quorum: String,
    pub nodes: std::collections::BTreeMap<usize, NodeOpts>,
    /// The GeoIP database, instead of the MaxMind test fixture (for tests that swap it).
    pub geoip: Option<PathBuf>,
    /// HTTPS on every node's admin/peer listener, with a certificate for its address from one
    /// cluster CA, which every node trusts for its `https://` peers (`--peer-ca`).
    pub tls: bool,
}

impl Default for ClusterOpts {
    /// Fast: exchange every 250 ms, reports stale after 1.5 s, majority quorum.
    fn default() -> Self {
        ClusterOpts {
            exchange_interval: Duration::from_millis(250),
            stale_after: Duration::from_millis(1500),
            quorum: "majority".into(),
            nodes: Default::default(),
            geoip: None,
            tls: false,
        }
    }
}

impl ClusterOpts {
    pub fn quorum(mut self, quorum: &str) -> Self {
        self.quorum = quorum.into();
        self
    }

    /// Node `i` pulls from `peers` only.
    pub fn peers(mut self, i: usize, peers: &[Peer]) -> Self {
        self.nodes.entry(i).or_default().peers = Some(peers.to_vec());
        self
    }

    /// Node `i` signs with `secret` instead of the cluster's.
    pub fn secret(mut self, i: usize, secret: &str) -> Self {
        self.nodes.entry(i).or_default().secret = Some(secret.into());
        self
    }

    /// Every node speaks HTTPS and pulls its peers over `https://` (see `ClusterOpts::tls`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Node `i` trusts the CA(s) in `pem_file` for its peers instead of the cluster's CA.
    pub fn peer_ca(mut self, i: usize, pem_file: &Path) -> Self {
        self.nodes.entry(i).or_default().peer_ca = Some(pem_file.to_path_buf());
        self
    }
}

/// How the tests reach a TLS node's admin API: a client trusting the cluster CA, and the CA file
/// for the CLI's `--ca-file`.
#[derive(Clone)]
pub struct AdminTls {
    pub client: Arc<rustls::ClientConfig>,
    pub ca_file: PathBuf,
}

/// One `steerdns serve` of a cluster. Killed when dropped; can be killed and restarted with the
/// same arguments (and so the same state directory).
pub struct RegionNode {
    /// Node id: "a", "b", "c", ... by index.
    pub id: String,
    pub ip: IpAddr,
    pub admin: SocketAddr,
    /// The DNS address of the current run.
    pub dns: SocketAddr,
    pub state_dir: PathBuf,
    block: Block,
    /// Every argument but the peers.
    args: Vec<std::ffi::OsString>,
    peers: Vec<String>,
    ready: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Set when the node speaks HTTPS.
    pub tls: Option<AdminTls>,
}

impl RegionNode {
    /// Starts the process (again) with its peers, or `peers` instead, and waits for its ready
    /// file.
    fn spawn(&mut self, peers: Option<&[String]>) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let peers = peers.unwrap_or(&self.peers);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_steerdns"));
        cmd.args(&self.args)
            .args(peers.iter().flat_map(|p| ["--peer", p.as_str()]))
            // Plain text logs: they are read by people when a test fails.
            .env("NO_COLOR", "1");
        let what = format!("node {}", self.id);
        let (child, dns, _) = spawn_serve(cmd, &self.ready, &self.log, START_TIMEOUT, &what);
        self.child = Some(child);
        self.dns = dns;
    }

    /// Kills the process (SIGKILL: no clean shutdown, as in a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything the node logged, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// A request to the node's admin API, over HTTPS when it has TLS.
    pub fn request(&self, method: &str, path: &str) -> std::io::Result<HttpResponse> {
        match &self.tls {
            Some(tls) => https_request(self.admin, &tls.client, method, path, &[], b""),
            None => http_request(self.admin, method, path, &[], b""),
        }
    }

    /// GET /api/v1/state.
    pub fn state(&self) -> serde_json::Value {
        let path = "/api/v1/state";
        let r = self
            .request("GET", path)
            .unwrap_or_else(|e| panic!("GET {}://{}{path}: {e}", self.scheme(), self.admin));
        assert_eq!(r.status, 200, "GET {}{path}: {}", self.admin, r.text());
        r.json()
    }

    /// GET /metrics.
    pub fn metrics(&self) -> String {
        let r = self
            .request("GET", "/metrics")
            .unwrap_or_else(|e| panic!("metrics of node {}: {e}", self.id));
        assert_eq!(r.status, 200, "metrics of node {}: {}", self.id, r.text());
        r.text()
    }

    /// The addresses of this node's answer for `SERVICE` (type A), sorted; none for an answer
    /// without records or an error.
    pub fn addresses(&self) -> Vec<String> {
        addresses(&query_udp(self.dns, &query(SERVICE, RecordType::A)))
    }

    /// This node's answer for `SERVICE` (type A), as the data centers it names: "dc1", or
    /// "dc1+dc2" when it names several; else the response code ("SERVFAIL") or "NODATA".
    pub fn answer(&self) -> String {
        let reply = query_udp(self.dns, &query(SERVICE, RecordType::A));
        if reply.metadata.response_code != hickory_proto::op::ResponseCode::NoError {
            return format!("{:?}", reply.metadata.response_code).to_uppercase();
        }
        let mut dcs: Vec<String> = reply.answers.iter().map(|r| self.block.dc_of(r)).collect();
        dcs.sort();
        dcs.dedup();
        if dcs.is_empty() {
            "NODATA".into()
        } else {
            dcs.join("+")
        }
    }

    /// `steerdns ARGS --admin <this node>`: the admin CLI against this node (with `--ca-file`
    /// when it has TLS).
    pub fn cli(&self, args: &[&str]) -> Run {
        let admin = format!("{}://{}", self.scheme(), self.admin);
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.extend([
            std::ffi::OsStr::new("--admin"),
            std::ffi::OsStr::new(&admin),
        ]);
        if let Some(tls) = &self.tls {
            all.extend([std::ffi::OsStr::new("--ca-file"), tls.ca_file.as_os_str()]);
        }
        run_steerdns(Path::new(env!("CARGO_MANIFEST_DIR")), &all)
    }
}

impl Drop for RegionNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The part of a state document about one DC of `SERVICE`.
pub fn dc_state<'a>(state: &'a serde_json::Value, dc: &str) -> &'a serde_json::Value {
    state["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == SERVICE)
        .flat_map(|s| s["dcs"].as_array().into_iter().flatten())
        .find(|d| d["name"] == dc)
        .unwrap_or_else(|| panic!("no DC {dc} of {SERVICE} in the state: {state}"))
}

/// The (only) endpoint of a DC of `SERVICE` in a state document.
pub fn endpoint_state<'a>(state: &'a serde_json::Value, dc: &str) -> &'a serde_json::Value {
    &dc_state(state, dc)["endpoints"][0]
}

/// Node `voter`'s vote on the endpoint of `dc`, as a state document shows it.
pub fn vote<'a>(
    state: &'a serde_json::Value,
    dc: &str,
    voter: &str,
) -> Option<&'a serde_json::Value> {
    endpoint_state(state, dc)["votes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["node"] == voter)
}

/// The ids of the nodes whose reports a state document lists.
pub fn report_ids(state: &serde_json::Value) -> Vec<String> {
    state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node"].as_str().map(str::to_string))
        .collect()
}

/// Several `steerdns serve` processes as regions of one cluster on a loopback block of their
/// own, with a backend per data center. Everything stops when it is dropped.
pub struct TestCluster {
    pub block: Block,
    pub nodes: Vec<RegionNode>,
    /// The backends of dc1, dc2, dc3.
    pub backends: Vec<Backend>,
    pub opts: ClusterOpts,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts backends for dc1..dc3 (all up), then `n` nodes serving `zone` (a template: `{k}`
    /// becomes the block's K, `{port}` the backends' port; see `regions_zone`). Node i (from 0)
    /// has id "a", "b", ..., probes from 127.K.(i+1).1, and pulls from every other node unless
    /// `opts` says otherwise (over `https://` with `opts.tls`). Returns once every node has
    /// written its ready file.
    pub fn start(n: usize, zone: &str, opts: ClusterOpts) -> TestCluster {
        let block = Block::take();
        let backends = start_backends(block);
        let port = backends[0].addr().port();
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let zones = dir.path().join("zones");
        std::fs::create_dir(&zones).expect("creating the zone dir");
        let zone = zone
            .replace("{k}", &block.0.to_string())
            .replace("{port}", &port.to_string());
        std::fs::write(zones.join("gslb.yaml"), zone).expect("writing the zone");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, CLUSTER_SECRET).expect("writing the secret");
        let geoip = opts
            .geoip
            .clone()
            .unwrap_or_else(|| manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb"));
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let ca = opts.tls.then(|| TestCa::new("steerdns test cluster CA"));
        let admin_tls = ca.as_ref().map(|ca| AdminTls {
            client: ca.client_config(),
            ca_file: ca.write_pem(&dir.path().join("cluster-ca.pem")),
        });
        let scheme = if opts.tls { "https" } else { "http" };

        let mut nodes = Vec::new();
        for i in 0..n {
            let id = ((b'a' + i as u8) as char).to_string();
            let ip = block.node_ip(i + 1);
            let home = dir.path().join(&id);
            std::fs::create_dir(&home).expect("creating the node dir");
            let node_opts = opts.nodes.get(&i).cloned().unwrap_or_default();
            let secret_file = match &node_opts.secret {
                Some(s) => {
                    let p = home.join("secret");
                    std::fs::write(&p, s).expect("writing the node's secret");
                    p
                }
                None => secret.clone(),
            };
            let peers = node_opts
                .peers
                .unwrap_or_else(|| (0..n).filter(|j| *j != i).map(Peer::Node).collect())
                .into_iter()
                .map(|p| match p {
                    Peer::Node(j) => format!("{scheme}://{}", block.admin(j + 1)),
                    Peer::Fake(j) => format!("{scheme}://{}", block.fake_peer(j)),
                })
                .collect();
            let mut args: Vec<std::ffi::OsString> = Vec::new();
            let mut arg = |a: &dyn AsRef<std::ffi::OsStr>| args.push(a.as_ref().to_owned());
            arg(&"serve");
            arg(&"--node");
            arg(&id);
            arg(&"--region");
            arg(&format!("region-{id}"));
            arg(&"--listen");
            arg(&SocketAddr::new(ip, 0).to_string());
            arg(&"--admin");
            arg(&block.admin(i + 1).to_string());
            arg(&"--probe-source");
            arg(&ip.to_string());
            arg(&"--zones");
            arg(&zones);
            arg(&"--geoip");
            arg(&geoip);
            arg(&"--state-dir");
            arg(&home.join("state"));
            arg(&"--secret-file");
            arg(&secret_file);
            arg(&"--exchange-interval");
            arg(&ms(opts.exchange_interval));
            arg(&"--stale-after");
            arg(&ms(opts.stale_after));
            arg(&"--quorum");
            arg(&opts.quorum);
            arg(&"--ready-file");
            arg(&home.join("ready.json"));
            if let (Some(ca), Some(admin_tls)) = (&ca, &admin_tls) {
                let (cert, key, _) = ca.write_leaf(&home, "tls", &[&ip.to_string()]);
                arg(&"--tls-cert");
                arg(&cert);
                arg(&"--tls-key");
                arg(&key);
                arg(&"--peer-ca");
                arg(node_opts.peer_ca.as_ref().unwrap_or(&admin_tls.ca_file));
            }
            nodes.push(RegionNode {
                id,
                ip,
                admin: block.admin(i + 1),
                dns: SocketAddr::new(ip, 0),
                state_dir: home.join("state"),
                block,
                args,
                peers,
                ready: home.join("ready.json"),
                log: home.join("stderr.log"),
                child: None,
                tls: admin_tls.clone(),
            });
        }
        let mut cluster = TestCluster {
            block,
            nodes,
            backends,
            opts,
            dir,
        };
        for i in 0..n {
            cluster.nodes[i].spawn(None);
        }
        cluster
    }

    /// The backend of a data center ("dc1").
    pub fn dc(&self, name: &str) -> &Backend {
        self.backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no data center {name}"))
    }

    pub fn node(&self, i: usize) -> &RegionNode {
        &self.nodes[i]
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts a killed node again with the same arguments.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn(None);
    }

    /// Starts a killed node again with no peers at all: what it knows, it knows from its state
    /// directory.
    pub fn restart_alone(&mut self, i: usize) {
        self.nodes[i].spawn(Some(&[]));
    }

    /// Ok if each of `nodes` answers `want`, else what they answer.
    pub fn all_answer(&self, nodes: &[usize], want: &str) -> Result<(), String> {
        let got: Vec<String> = nodes.iter().map(|i| self.nodes[*i].answer()).collect();
        if got.iter().all(|g| g == want) {
            Ok(())
        } else {
            Err(nodes
                .iter()
                .zip(&got)
                .map(|(i, g)| format!("{}={g}", self.nodes[*i].id))
                .collect::<Vec<_>>()
                .join(" "))
        }
    }

    /// Ok once each of `nodes` is ready and holds a fresh vote from each of them on every DC.
    pub fn converged(&self, nodes: &[usize]) -> Result<(), String> {
        for i in nodes {
            let st = self.nodes[*i].state();
            if st["node"]["ready"] != true {
                return Err(format!("{} not ready", self.nodes[*i].id));
            }
            for dc in DCS {
                for j in nodes {
                    let voter = &self.nodes[*j].id;
                    match vote(&st, dc, voter) {
                        Some(v) if v["fresh"] == true => {}
                        other => {
                            return Err(format!(
                                "{} holds no fresh vote of {voter} on {dc}: {other:?}",
                                self.nodes[*i].id
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until `nodes` have converged (see `converged`) and all answer dc1.
    pub fn wait_converged(&self, nodes: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        wait_until(deadline, "the nodes converge", || self.converged(nodes));
        wait_until(deadline, "every node answers dc1", || {
            self.all_answer(nodes, "dc1")
        });
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        if std::thread::panicking() {
            // What the nodes said is the first thing to read when a regions test fails.
            for n in &self.nodes {
                let log = n.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("---- node {} log (last {} lines) ----", n.id, tail.len());
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Backends for dc1..dc3 on one port (retrying with another if it is taken on one address).
fn start_backends(block: Block) -> Vec<Backend> {
    for _ in 0..20 {
        let first = Backend::start("dc1", SocketAddr::new(block.backend_ip(1), 0))
            .expect("starting the dc1 backend");
        let port = first.addr().port();
        let mut all = vec![first];
        for d in 2..=3 {
            match Backend::start(
                &format!("dc{d}"),
                SocketAddr::new(block.backend_ip(d), port),
            ) {
                Ok(b) => all.push(b),
                Err(_) => break,
            }
        }
        if all.len() == 3 {
            return all;
        }
    }
    panic!("no port free on all three backend addresses");
}

// ---- Failover timing (issue 13) -------------------------------------------------------------
//
// Three nodes with the settings of issue 13 (the defaults but for fall 2 and a 5 s stale_after):
// how long a broken DC takes to leave the answers of every node and to come back, and a drain to
// take effect everywhere. Shared by the `failover_timing` tests and the `convergence` bench.

/// The check's interval in a timing run, and its exchange interval: the period of every timer a
/// failure can fall between.
pub const TIMING_INTERVAL: Duration = Duration::from_secs(1);
/// The check's fast_interval (its default, interval / 5) and rise.
pub const TIMING_FAST_INTERVAL: Duration = Duration::from_millis(200);
pub const TIMING_RISE: u32 = 2;
/// How often a timing run asks every node's DNS.
pub const TIMING_POLL: Duration = Duration::from_millis(10);
/// Give up on one measurement after this long (a regression, not a result).
const TIMING_GIVE_UP: Duration = Duration::from_secs(15);
/// The settings of a timing run, as the bench and the tests print them.
pub const TIMING_SETTINGS: &str = "3 nodes on loopback; check interval 1 s, fast_interval 200 ms, \
    timeout 800 ms, fall 2, rise 2; exchange 1 s, stale after 5 s, quorum majority; failover \
    dc1 > dc2 > dc3; DNS of every node polled every 10 ms";

/// The zone of a timing run: interval 1 s (fast_interval 200 ms by default), timeout 800 ms,
/// fall 2, rise 2.
pub fn timing_zone() -> String {
    regions_zone("1s", "800ms", 2, 2)
}

/// The cluster of a timing run: exchange every 1 s, stale after 5 s, majority quorum.
pub fn timing_opts() -> ClusterOpts {
    ClusterOpts {
        exchange_interval: TIMING_INTERVAL,
        stale_after: Duration::from_secs(5),
        quorum: "majority".into(),
        ..ClusterOpts::default()
    }
}

/// How a DC's backend breaks in a timing run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Its port closes: connections are refused.
    Refused,
    /// It answers `500`.
    Status500,
    /// It accepts and never answers: every probe waits for its timeout.
    Hung,
}

impl Failure {
    pub const ALL: [Failure; 3] = [Failure::Refused, Failure::Status500, Failure::Hung];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Status500 => "HTTP 500",
            Failure::Hung => "hung",
        }
    }

    fn apply(self, backend: &Backend) {
        match self {
            Failure::Refused => backend.down(),
            Failure::Status500 => backend.fail(),
            Failure::Hung => backend.hang(),
        }
    }
}

/// One failure of dc1 measured on every node: from the break until every node answers dc2 alone,
/// and from the repair until every node answers dc1 alone again.
#[derive(Debug, Clone, Copy)]
pub struct FailoverTimes {
    pub withdrawn: Duration,
    pub restored: Duration,
}

/// One drain of dc1, issued on the first node: until every node answers dc2 alone, and from the
/// undrain until every node answers dc1 alone again.
#[derive(Debug, Clone, Copy)]
pub struct DrainTimes {
    pub in_effect: Duration,
    pub lifted: Duration,
}

impl TestCluster {
    /// Ok if every node answers `SERVICE` with `dc`'s address and nothing else, else what each
    /// answers.
    pub fn all_answer_address(&self, dc: &str) -> Result<(), String> {
        let d = DCS
            .iter()
            .position(|x| *x == dc)
            .unwrap_or_else(|| panic!("no data center {dc}"));
        let want = vec![self.block.backend_ip(d + 1).to_string()];
        let got: Vec<Vec<String>> = self.nodes.iter().map(|n| n.addresses()).collect();
        if got.iter().all(|g| *g == want) {
            return Ok(());
        }
        Err(self
            .nodes
            .iter()
            .zip(&got)
            .map(|(n, g)| format!("{}={g:?}", n.id))
            .collect::<Vec<_>>()
            .join(" ")
            + &format!(" (want {want:?}, {dc}'s address alone)"))
    }

    /// Ok once every node votes `dc`'s endpoint up (or down) itself and counts a fresh vote of
    /// every node, all the same way: nothing about `dc` is in transition anywhere.
    pub fn settled(&self, dc: &str, up: bool) -> Result<(), String> {
        let (local, down_votes) = if up {
            ("up", 0)
        } else {
            ("down", self.nodes.len())
        };
        for n in &self.nodes {
            let st = n.state();
            let ep = endpoint_state(&st, dc);
            if ep["local"] != local
                || ep["down_votes"] != down_votes
                || ep["counted_votes"] != self.nodes.len()
            {
                return Err(format!("{}: {dc} {ep}", n.id));
            }
        }
        Ok(())
    }

    /// From `start` until every node answers `dc`'s address alone, asking every `TIMING_POLL`.
    pub fn time_until_all_answer(&self, start: Instant, dc: &str, what: &str) -> Duration {
        loop {
            let last = match self.all_answer_address(dc) {
                Ok(()) => return start.elapsed(),
                Err(e) => e,
            };
            assert!(
                start.elapsed() < TIMING_GIVE_UP,
                "{what}: not after {TIMING_GIVE_UP:?}; last seen {last}"
            );
            std::thread::sleep(TIMING_POLL);
        }
    }

    /// Breaks dc1's backend as `failure` says and repairs it, timing both on every node. Each
    /// starts with dc1 settled everywhere and at a random point of the interval, so that where
    /// the probe and exchange timers happen to be differs from run to run.
    pub fn time_failover(&self, failure: Failure) -> FailoverTimes {
        let dc1 = self.dc("dc1");
        let deadline = Instant::now() + TIMING_GIVE_UP;
        wait_until(deadline, "dc1 is settled up everywhere", || {
            self.settled("dc1", true)
        });
        if let Err(e) = self.all_answer_address("dc1") {
            panic!("before dc1 breaks ({}): {e}", failure.label());
        }
        random_phase();
        let broke = Instant::now();
        failure.apply(dc1);
        let withdrawn = self.time_until_all_answer(
            broke,
            "dc2",
            &format!("dc1 ({}) is withdrawn on every node", failure.label()),
        );

        let deadline = Instant::now() + TIMING_GIVE_UP;
        wait_until(deadline, "dc1 is settled down everywhere", || {
            self.settled("dc1", false)
        });
        if let Err(e) = self.all_answer_address("dc2") {
            panic!(
                "dc1 ({}) came back while still broken: {e}",
                failure.label()
            );
        }
        random_phase();
        let repaired = Instant::now();
        dc1.up();
        let restored = self.time_until_all_answer(
            repaired,
            "dc1",
            &format!("dc1 ({}) is restored on every node", failure.label()),
        );
        FailoverTimes {
            withdrawn,
            restored,
        }
    }

    /// Drains dc1 on the first node and undrains it, timing both on every node (each at a
    /// random point of the interval).
    pub fn time_drain(&self) -> DrainTimes {
        let admin = self.node(0).admin;
        let deadline = Instant::now() + TIMING_GIVE_UP;
        wait_until(deadline, "dc1 is settled up everywhere", || {
            self.settled("dc1", true)
        });
        if let Err(e) = self.all_answer_address("dc1") {
            panic!("before the drain: {e}");
        }
        random_phase();
        let issued = Instant::now();
        let (status, body) = post_json(
            admin,
            "/api/v1/drain",
            &serde_json::json!({ "dc": "dc1", "reason": "timing" }),
        );
        assert_eq!(status, 200, "drain: {body}");
        let in_effect =
            self.time_until_all_answer(issued, "dc2", "the drain is in effect everywhere");

        random_phase();
        let issued = Instant::now();
        let (status, body) = post_json(
            admin,
            "/api/v1/undrain",
            &serde_json::json!({ "dc": "dc1" }),
        );
        assert_eq!(status, 200, "undrain: {body}");
        let lifted = self.time_until_all_answer(issued, "dc1", "the drain is lifted everywhere");
        DrainTimes { in_effect, lifted }
    }
}

/// Sleeps a random part of `TIMING_INTERVAL`. Each wait before a measurement ends right after
/// some node's probe or exchange; starting at once would lock every run to the same phase of the
/// nodes' timers and measure one case five times.
fn random_phase() {
    std::thread::sleep(TIMING_INTERVAL.mul_f64(rand::random::<f64>()));
}

/// The median of a few measurements (the upper one of an even count).
pub fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The longest of a few measurements.
pub fn longest(times: &[Duration]) -> Duration {
    times.iter().copied().max().unwrap_or_default()
}

/// One row of timings: `what  median X s  max Y s  runs (s): a, b, c`.
pub fn timing_row(what: &str, times: &[Duration]) -> String {
    let runs: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    format!(
        "{what:<46} median {:>5.2} s   max {:>5.2} s   runs (s): {}",
        median(times).as_secs_f64(),
        longest(times).as_secs_f64(),
        runs.join(", ")
    )
}
