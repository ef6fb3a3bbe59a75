//! Health probing, the I/O side of health: `probe_once` runs one HTTP(S) or TCP check against
//! one address, and `HealthMonitor` runs one prober task per target, feeds the results into the
//! `health` state machine and publishes a new `HealthView` whenever a status changes.
//!
//! The query path never waits on any of this: it reads the latest view from an `ArcSwap`
//! (lock-free, like the zone set in `state`), which probers replace whole.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Once};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::health::{HealthStats, HealthTable, HealthView, ProbeResult, ProbeTarget, Reconciled};
use crate::zone::check::{CheckKind, HttpCheck, HttpMethod};

/// Why a probe failed (the message ends up in `ProbeResult::error` and the logs).
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("cannot open a socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot bind the source address {addr}: {source}")]
    Bind {
        addr: IpAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("cannot build the HTTP client: {}", chain(.0))]
    Client(reqwest::Error),
    #[error("{}", chain(.0))]
    Request(reqwest::Error),
    #[error("status {got}, expected {expected}")]
    Status { got: u16, expected: String },
    #[error("reading the body: {}", chain(.0))]
    Body(reqwest::Error),
    #[error("body does not contain {needle:?} in its first {limit} bytes")]
    BodyMismatch { needle: String, limit: usize },
}

/// An error and its causes on one line: reqwest's own message ("error sending request") hides
/// the useful part (connection refused, invalid certificate) in its sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = cause.source();
    }
    out
}

/// Which HTTP client a probe needs. reqwest fixes the TLS verification, the source address and
/// the host → address override per client, so clients are shared per distinct combination:
/// every check on every endpoint without a `host` shares one client per (verify_tls, source).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    verify_tls: bool,
    source: Option<IpAddr>,
    /// Connect to this address whenever the URL names this host, so Host and SNI carry the
    /// check's `host` while the probe goes to the endpoint.
    resolve: Option<(String, SocketAddr)>,
}

/// A cache of HTTP clients, so a probe does not rebuild TLS settings and reload root
/// certificates each time. Cheap to clone; clones share the cache.
#[derive(Debug, Clone, Default)]
pub struct HttpClients {
    clients: Arc<Mutex<HashMap<ClientKey, reqwest::Client>>>,
}

impl HttpClients {
    fn get(&self, key: &ClientKey) -> Result<reqwest::Client, ProbeError> {
        if let Some(c) = lock(&self.clients).get(key) {
            // reqwest::Client is an Arc inside: cloning shares it.
            return Ok(c.clone());
        }
        let client = build_client(key).map_err(ProbeError::Client)?;
        lock(&self.clients).insert(key.clone(), client.clone());
        Ok(client)
    }

    /// Drops the clients no current target needs (their overrides name old endpoints).
    fn retain(&self, keep: impl Fn(&ClientKey) -> bool) {
        lock(&self.clients).retain(|k, _| keep(k));
    }
}

fn build_client(key: &ClientKey) -> Result<reqwest::Client, reqwest::Error> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // reqwest is built without a default crypto provider (its default, aws-lc-rs, is a heavy
        // C build); install ring. An Err means another provider is installed already, which
        // serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut builder = reqwest::Client::builder()
        // Straight to the endpoint: an environment proxy would probe the proxy instead.
        .no_proxy()
        // A redirect is an answer to judge, not something to follow to another host.
        .redirect(reqwest::redirect::Policy::none())
        // A fresh connection per probe, as HAProxy does: a kept-alive connection would hide a
        // listener that stopped accepting or a certificate that changed.
        .pool_max_idle_per_host(0)
        .user_agent(concat!("steerdns-health/", env!("CARGO_PKG_VERSION")))
        .tls_danger_accept_invalid_certs(!key.verify_tls)
        .local_address(key.source);
    if let Some((host, addr)) = &key.resolve {
        builder = builder.resolve(host, *addr);
    }
    builder.build()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held cannot leave these maps half-updated in a way that
    // matters (each update is one insert/remove or one state-machine step), so keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The source address to bind for probing `addr`: only one of the same family can be used.
fn source_for(source: Option<IpAddr>, addr: IpAddr) -> Option<IpAddr> {
    source.filter(|s| s.is_ipv4() == addr.is_ipv4())
}

/// The process-wide client cache behind `probe_once`.
static CLIENTS: LazyLock<HttpClients> = LazyLock::new(HttpClients::default);

/// Runs `target`'s check once against its address, bounded by the check's timeout. `source`
/// binds the local address of the connection (ignored for targets of the other IP family), so
/// a node can probe from the address its region is known by.
pub async fn probe_once(target: &ProbeTarget, source: Option<IpAddr>) -> ProbeResult {
    probe_with(&CLIENTS, target, source).await
}

/// `probe_once` with a given client cache.
pub async fn probe_with(
    clients: &HttpClients,
    target: &ProbeTarget,
    source: Option<IpAddr>,
) -> ProbeResult {
    let started = Instant::now();
    let check = &target.check;
    let source = source_for(source, target.addr);
    // Each check says when its round trip ended (connected; first byte of the response).
    let run = async {
        match &check.kind {
            CheckKind::Tcp { port } => tcp(SocketAddr::new(target.addr, *port), source).await,
            CheckKind::Http(h) => http(clients, target.addr, h, source).await,
        }
    };
    match tokio::time::timeout(check.timeout, run).await {
        Ok(Ok(at)) => ProbeResult::success(at.saturating_duration_since(started)),
        Ok(Err(e)) => ProbeResult::failure(started.elapsed(), e.to_string()),
        Err(_) => ProbeResult::timeout(check.timeout),
    }
}

/// Connects; returns when the connection was made.
async fn tcp(remote: SocketAddr, source: Option<IpAddr>) -> Result<Instant, ProbeError> {
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ProbeError::Socket)?;
    if let Some(addr) = source {
        socket
            .bind(SocketAddr::new(addr, 0))
            .map_err(|source| ProbeError::Bind { addr, source })?;
    }
    // Accepted is all a TCP check asks; dropping the stream closes it cleanly.
    socket.connect(remote).await.map_err(ProbeError::Connect)?;
    Ok(Instant::now())
}

/// Asks; returns when the response's head (its first byte, as near as reqwest tells) came.
async fn http(
    clients: &HttpClients,
    addr: IpAddr,
    check: &HttpCheck,
    source: Option<IpAddr>,
) -> Result<Instant, ProbeError> {
    let remote = SocketAddr::new(addr, check.port);
    // With a host name, the URL carries the name (so reqwest sends it as Host and SNI) and the
    // client's override sends the connection to the endpoint; either way no DNS lookup happens,
    // so probing does not depend on DNS. Validation rejects an address as
    // `host`; should one come through anyway, it only goes into the Host header.
    let named = check
        .host
        .as_deref()
        .filter(|h| h.parse::<IpAddr>().is_err());
    let url_host = match (named, addr) {
        (Some(name), _) => name.to_string(),
        (None, IpAddr::V4(v4)) => v4.to_string(),
        (None, IpAddr::V6(v6)) => format!("[{v6}]"),
    };
    let scheme = if check.tls { "https" } else { "http" };
    let url = format!("{scheme}://{url_host}:{}{}", check.port, check.path);
    let key = ClientKey {
        // Plain HTTP never verifies anything; sharing one client for it either way.
        verify_tls: check.verify_tls || !check.tls,
        source,
        resolve: named.map(|name| (name.to_string(), remote)),
    };
    let client = clients.get(&key)?;
    let method = match check.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Head => reqwest::Method::HEAD,
    };
    let mut request = client.request(method, &url);
    if let (None, Some(host)) = (named, &check.host) {
        request = request.header(reqwest::header::HOST, host);
    }
    let mut response = request.send().await.map_err(ProbeError::Request)?;
    let first_byte = Instant::now();
    let status = response.status().as_u16();
    if !check.status_ok(status) {
        let expected = if check.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            format!("{:?}", check.expect_status)
        };
        return Err(ProbeError::Status {
            got: status,
            expected,
        });
    }
    let Some(needle) = &check.body_contains else {
        return Ok(first_byte);
    };
    let limit = check.max_body_bytes;
    let mut body: Vec<u8> = Vec::new();
    while body.len() < limit {
        match response.chunk().await.map_err(ProbeError::Body)? {
            Some(chunk) => {
                let take = chunk.len().min(limit - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            None => break,
        }
    }
    if body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        Ok(first_byte)
    } else {
        Err(ProbeError::BodyMismatch {
            needle: needle.clone(),
            limit,
        })
    }
}

/// This node's own health view as the probers publish it: read with `load()`, never locked
/// (an `ArcSwap`), and followed with `subscribe()`, a watch channel that wakes the cluster on
/// every change, so the merged view is rebuilt at once rather than on a poll.
pub struct LocalHealth {
    view: ArcSwap<HealthView>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl LocalHealth {
    fn new() -> LocalHealth {
        LocalHealth {
            view: ArcSwap::from_pointee(HealthView::default()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<HealthView>> {
        self.view.load()
    }

    pub fn load_full(&self) -> Arc<HealthView> {
        self.view.load_full()
    }

    /// Publishes `view` and wakes the subscribers.
    fn store(&self, view: Arc<HealthView>) {
        self.view.store(view);
        self.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that wakes on every later `store`.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// For tests and simulations (`cluster::sim`, the exchange benchmark), hidden from the docs.
impl LocalHealth {
    /// A view no monitor drives: tests publish into it what a node's probers would conclude.
    #[doc(hidden)]
    pub fn detached() -> SharedHealthView {
        Arc::new(LocalHealth::new())
    }

    /// Publishes `view` as the probers would, waking the subscribers.
    #[doc(hidden)]
    pub fn publish(&self, view: HealthView) {
        self.store(Arc::new(view));
    }
}

/// The local health view, shared by the monitor, its probers and the cluster.
pub type SharedHealthView = Arc<LocalHealth>;

/// Runs one prober per probe target and keeps the published `HealthView` current.
///
/// Start-up: every target starts optimistically Up, so until the first probe round is done the
/// node answers as if everything were up. The view's `ready` turns true once every target of the
/// first `set_targets` has a first result; each prober starts within one interval and every
/// probe is bounded by its timeout, so that takes at most `interval + timeout`. It never turns
/// back to false.
///
/// Dropping the monitor stops its probers; `shutdown` also waits for them.
pub struct HealthMonitor {
    shared: Arc<Shared>,
    probers: HashMap<ProbeTarget, RunningProber>,
    shutdown: CancellationToken,
}

struct RunningProber {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What probers share with the monitor.
struct Shared {
    source: Option<IpAddr>,
    clients: HttpClients,
    probe: Probe,
    table: Mutex<HealthTable>,
    view: SharedHealthView,
}

/// How a prober runs one probe.
enum Probe {
    /// `probe_with` over the network.
    Network,
    /// A stand-in with the same contract (a result within the check's timeout), so that tests
    /// can run the probers' schedule under a paused clock, which real sockets do not go with:
    /// the clock would jump to the next timer while a connection is still on its way.
    #[cfg(test)]
    Fake(FakeProbe),
}

#[cfg(test)]
type FakeProbe = Arc<
    dyn Fn(&ProbeTarget) -> std::pin::Pin<Box<dyn Future<Output = ProbeResult> + Send>>
        + Send
        + Sync,
>;

impl HealthMonitor {
    /// A monitor with no targets yet, probing from `source` when given. Returns the view the
    /// query path reads; it is not ready until the first `set_targets` round completes.
    pub fn new(source: Option<IpAddr>) -> (HealthMonitor, SharedHealthView) {
        HealthMonitor::with_probe(source, Probe::Network)
    }

    fn with_probe(source: Option<IpAddr>, probe: Probe) -> (HealthMonitor, SharedHealthView) {
        let view: SharedHealthView = Arc::new(LocalHealth::new());
        let shared = Arc::new(Shared {
            source,
            clients: HttpClients::default(),
            probe,
            table: Mutex::new(HealthTable::new()),
            view: view.clone(),
        });
        let monitor = HealthMonitor {
            shared,
            probers: HashMap::new(),
            shutdown: CancellationToken::new(),
        };
        (monitor, view)
    }

    /// The published view (the same one `new` returned).
    pub fn view(&self) -> SharedHealthView {
        self.shared.view.clone()
    }

    /// Makes `targets` the probed set, as after loading or reloading zones: probers of unchanged
    /// targets keep running with their state, new targets get a prober, removed ones stop.
    /// Must be called within a tokio runtime.
    pub fn set_targets(&mut self, targets: HashSet<ProbeTarget>) -> Reconciled {
        let reconciled = {
            let mut table = lock(&self.shared.table);
            let reconciled = table.set_targets(&targets, Instant::now());
            self.shared.view.store(Arc::new(table.publish_view()));
            reconciled
        };
        for t in &reconciled.removed {
            if let Some(p) = self.probers.remove(t) {
                p.stop.cancel();
            }
        }
        // The same random keys for every target of this monitor, but different in every
        // process: nodes and targets spread their probes over the interval.
        let jitter = RandomState::new();
        for t in &reconciled.added {
            let interval = t.check.interval;
            let fraction = jitter.hash_one(t) as f64 / u64::MAX as f64;
            let prober = Prober {
                target: t.clone(),
                shared: self.shared.clone(),
                first_delay: interval.mul_f64(fraction),
            };
            let stop = self.shutdown.child_token();
            let task = tokio::spawn(prober.run(stop.clone()));
            self.probers.insert(t.clone(), RunningProber { stop, task });
        }
        let resolves: HashSet<(String, SocketAddr)> = targets
            .iter()
            .filter_map(|t| match &t.check.kind {
                CheckKind::Http(HttpCheck {
                    host: Some(host),
                    port,
                    ..
                }) => Some((host.clone(), SocketAddr::new(t.addr, *port))),
                _ => None,
            })
            .collect();
        self.shared
            .clients
            .retain(|k| k.resolve.as_ref().is_none_or(|r| resolves.contains(r)));
        info!(
            added = reconciled.added.len(),
            removed = reconciled.removed.len(),
            probing = self.probers.len(),
            "health targets updated"
        );
        reconciled
    }

    /// Whether the first probe round is done.
    pub fn is_ready(&self) -> bool {
        lock(&self.shared.table).is_ready()
    }

    /// Counters and fresh observations (last RTT and error included, which the published view
    /// only refreshes on status changes).
    pub fn stats(&self) -> HealthStats {
        lock(&self.shared.table).stats()
    }

    /// Stops every prober and waits up to `grace` for them to finish. Returns whether they did.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        self.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = self.probers.drain().map(|(_, p)| p.task).collect();
        let all = async {
            for task in tasks {
                if let Err(e) = task.await {
                    warn!(error = %e, "prober task failed");
                }
            }
        };
        tokio::time::timeout(grace, all).await.is_ok()
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Probes one target for as long as it is wanted: every `interval`, or every `fast_interval`
/// while the health state says the endpoint is in transition (`EndpointState::next_probe_in`).
struct Prober {
    target: ProbeTarget,
    shared: Arc<Shared>,
    /// Delay before the first probe, within the interval, so that probes spread out.
    first_delay: Duration,
}

impl Prober {
    async fn run(self, shutdown: CancellationToken) {
        // When the next probe starts. Each delay counts from the previous start as scheduled,
        // not from when its timer fired, so a settled endpoint is probed exactly every interval
        // with no drift (as a tokio interval would).
        let mut next = Instant::now() + self.first_delay;
        debug!(target = %self.target, first_in = ?self.first_delay, "prober started");
        let check = self.target.check.clone();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            let started = Instant::now();
            let mut probe = std::pin::pin!(self.shared.probe(&self.target));
            // A probe of a settled Up endpoint still running after half its timeout is likely
            // to fail: a second, confirming probe starts then, beside it, so that `fall` is
            // reached half a timeout sooner (a hung backend). A healthy backend answers well
            // within that, so its probe load does not change; at most two are ever in flight.
            let early = lock(&self.shared.table).confirms_early(&self.target);
            let suspect_at = started + check.timeout / 2;
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = &mut probe => Some(r),
                _ = tokio::time::sleep_until(suspect_at), if early => None,
            };
            let (result, scheduled_from) = match first {
                Some(result) => (result, next),
                None => {
                    let confirming = tokio::spawn({
                        let (shared, target) = (self.shared.clone(), self.target.clone());
                        async move { shared.probe(&target).await }
                    });
                    let abort = confirming.abort_handle();
                    let first = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => { abort.abort(); break }
                        r = &mut probe => r,
                    };
                    self.shared.record(&self.target, &first);
                    let second = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => { abort.abort(); break }
                        r = confirming => r,
                    };
                    match second {
                        Ok(result) => (result, suspect_at),
                        // It cannot panic; an aborted task only happens on shutdown.
                        Err(_) => break,
                    }
                }
            };
            if shutdown.is_cancelled() {
                // Removed while probing: the table may already hold a new state for an equal
                // target, which this result must not touch.
                break;
            }
            let delay = self.shared.record(&self.target, &result);
            // A probe that outlasted the delay (a timeout longer than the fast interval) is
            // followed at once; missed starts are not made up for.
            next = (scheduled_from + delay).max(Instant::now());
        }
        debug!(target = %self.target, "prober stopped");
    }
}

impl Shared {
    async fn probe(&self, target: &ProbeTarget) -> ProbeResult {
        match &self.probe {
            Probe::Network => probe_with(&self.clients, target, self.source).await,
            #[cfg(test)]
            Probe::Fake(fake) => fake(target).await,
        }
    }

    /// Feeds `result` in and publishes what changed; returns how long after this probe's start
    /// the next one should start.
    fn record(&self, target: &ProbeTarget, result: &ProbeResult) -> Duration {
        let mut table = lock(&self.table);
        let recorded = table.record(target, result, Instant::now());
        if let Some(t) = recorded.transition {
            info!(
                endpoint = %target.addr,
                check = %target.check,
                from = ?t.from,
                to = ?t.to,
                rtt = ?result.rtt,
                error = ?result.error,
                "health changed"
            );
        }
        if recorded.became_ready {
            info!("first probe round done: health is ready");
        }
        // A round-trip time that moved is news too: the latency policy steers by it.
        if recorded.transition.is_some() || recorded.became_ready || recorded.rtt_moved {
            // Stored under the lock, so two probers cannot publish out of order.
            self.view.store(Arc::new(table.publish_view()));
        }
        recorded.next_probe_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Status;
    use crate::zone::check::Check;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// How a `FakeBackend` treats the next request.
    #[derive(Debug, Clone)]
    enum Mode {
        Respond {
            status: u16,
            body: String,
        },
        /// Accept, read the request, never answer.
        Hang,
        /// Stop listening: connections are refused.
        Closed,
    }

    fn healthy() -> Mode {
        Mode::Respond {
            status: 200,
            body: "ok".to_string(),
        }
    }

    fn respond(status: u16, body: &str) -> Mode {
        Mode::Respond {
            status,
            body: body.to_string(),
        }
    }

    /// What a backend saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        peer: SocketAddr,
        request_line: String,
        host: Option<String>,
        sni: Option<String>,
    }

    /// A tiny HTTP/1.1 (or HTTPS) server on a loopback address that tests switch between modes.
    struct FakeBackend {
        addr: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
        mode: Arc<Mutex<Mode>>,
        seen: Arc<Mutex<Vec<Seen>>>,
        accept: Mutex<Option<JoinHandle<()>>>,
    }

    impl FakeBackend {
        async fn start(ip: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeBackend {
            let listener = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0))
                .await
                .unwrap();
            let backend = FakeBackend {
                addr: listener.local_addr().unwrap(),
                tls,
                mode: Arc::new(Mutex::new(healthy())),
                seen: Arc::default(),
                accept: Mutex::new(None),
            };
            backend.serve(listener);
            backend
        }

        fn serve(&self, listener: TcpListener) {
            let (tls, mode, seen) = (self.tls.clone(), self.mode.clone(), self.seen.clone());
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, peer)) = listener.accept().await else {
                        return;
                    };
                    let (tls, mode, seen) = (tls.clone(), mode.clone(), seen.clone());
                    tokio::spawn(async move {
                        match tls {
                            None => handle(stream, peer, None, mode, seen).await,
                            Some(acceptor) => {
                                let Ok(stream) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let sni = stream.get_ref().1.server_name().map(str::to_string);
                                handle(stream, peer, sni, mode, seen).await
                            }
                        }
                    });
                }
            });
            *self.accept.lock().unwrap() = Some(task);
        }

        async fn set(&self, mode: Mode) {
            let closed = matches!(*self.mode.lock().unwrap(), Mode::Closed);
            match (&mode, closed) {
                (Mode::Closed, false) => {
                    let task = self.accept.lock().unwrap().take();
                    if let Some(task) = task {
                        task.abort();
                        // Wait until the listener is really dropped.
                        let _ = task.await;
                    }
                }
                (Mode::Closed, true) | (_, false) => {}
                (_, true) => self.serve(TcpListener::bind(self.addr).await.unwrap()),
            }
            *self.mode.lock().unwrap() = mode;
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        mut stream: S,
        peer: SocketAddr,
        sni: Option<String>,
        mode: Arc<Mutex<Mode>>,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let request_line = text.lines().next().unwrap_or("").to_string();
        let host = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
        });
        seen.lock().unwrap().push(Seen {
            peer,
            request_line: request_line.clone(),
            host,
            sni,
        });
        let mode = mode.lock().unwrap().clone();
        match mode {
            Mode::Respond { status, body } => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let mut out = head.into_bytes();
                if !request_line.starts_with("HEAD ") {
                    out.extend_from_slice(body.as_bytes());
                }
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
            }
            Mode::Hang => std::future::pending::<()>().await,
            Mode::Closed => {}
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn http_target(backend: &FakeBackend, http: HttpCheck, timeout: Duration) -> ProbeTarget {
        ProbeTarget::new(
            backend.addr.ip(),
            Arc::new(Check {
                timeout,
                interval: timeout * 2,
                ..Check::new(CheckKind::Http(HttpCheck {
                    port: backend.addr.port(),
                    ..http
                }))
            }),
        )
    }

    #[tokio::test]
    async fn http_probe_follows_the_backend() {
        let backend = FakeBackend::start("127.0.0.1", None).await;
        let target = http_target(
            &backend,
            HttpCheck {
                body_contains: Some("ok".to_string()),
                ..HttpCheck::new(false, 0, "/healthz")
            },
            ms(300),
        );
        #[rustfmt::skip]
        let table: &[(Mode, bool, &str)] = &[
            (healthy(), true, ""),
            (respond(500, "ok"), false, "status 500, expected 2xx"),
            (respond(301, "ok"), false, "status 301"),
            (respond(200, "nope"), false, "body does not contain \"ok\""),
            (Mode::Hang, false, "timed out after 300ms"),
            (Mode::Closed, false, "Connection refused"),
            (healthy(), true, ""),
        ];
        for (mode, ok, error) in table {
            backend.set(mode.clone()).await;
            let r = probe_once(&target, None).await;
            assert_eq!(r.ok, *ok, "{mode:?}: {r:?}");
            let got = r.error.clone().unwrap_or_default();
            assert!(
                got.contains(error),
                "{mode:?}: error {got:?} lacks {error:?}"
            );
            assert_eq!(r.timed_out, matches!(mode, Mode::Hang), "{mode:?}");
            assert!(r.rtt <= ms(300) + ms(50), "{mode:?}: rtt {:?}", r.rtt);
        }
        let seen = backend.seen();
        assert_eq!(seen[0].request_line, "GET /healthz HTTP/1.1");
        assert_eq!(seen[0].host.as_deref(), Some(&*backend.addr.to_string()));
    }

    #[tokio::test]
    async fn http_probe_sends_host_method_and_matches_status_and_body_limits() {
        let backend = FakeBackend::start("127.0.0.1", None).await;
        let probe = |http: HttpCheck| {
            let target = http_target(&backend, http, ms(500));
            async move { probe_once(&target, None).await }
        };
        let base = HttpCheck::new(false, 0, "/x?y=1");

        let named = HttpCheck {
            host: Some("api.example.com".to_string()),
            method: HttpMethod::Head,
            ..base.clone()
        };
        assert!(probe(named).await.ok);
        let seen = backend.seen().pop().unwrap();
        assert_eq!(seen.request_line, "HEAD /x?y=1 HTTP/1.1");
        let want_host = format!("api.example.com:{}", backend.addr.port());
        assert_eq!(seen.host, Some(want_host), "Host names the check's host");
        assert_eq!(
            seen.peer.ip(),
            backend.addr.ip(),
            "but the probe went to the endpoint"
        );

        backend.set(respond(503, "")).await;
        let expect_503 = HttpCheck {
            expect_status: vec![503],
            ..base.clone()
        };
        assert!(probe(expect_503.clone()).await.ok, "503 expected");
        backend.set(healthy()).await;
        let r = probe(expect_503).await;
        assert_eq!(r.error.as_deref(), Some("status 200, expected [503]"));

        // The needle lies past the body limit: not found.
        backend
            .set(respond(200, &format!("{}ok", "x".repeat(100))))
            .await;
        let capped = |max_body_bytes| HttpCheck {
            body_contains: Some("ok".to_string()),
            max_body_bytes,
            ..base.clone()
        };
        assert!(probe(capped(102)).await.ok);
        let r = probe(capped(101)).await;
        assert!(!r.ok, "{r:?}");
        assert!(r.error.unwrap().contains("in its first 101 bytes"));
    }

    #[tokio::test]
    async fn tcp_probe_connects_or_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = ProbeTarget::new(
            addr.ip(),
            Arc::new(Check {
                timeout: ms(300),
                ..Check::new(CheckKind::Tcp { port: addr.port() })
            }),
        );
        let r = probe_once(&target, None).await;
        assert!(r.ok, "{r:?}");
        drop(listener);
        let r = probe_once(&target, None).await;
        assert!(!r.ok && !r.timed_out, "{r:?}");
        assert!(r.error.unwrap().contains("Connection refused"));
    }

    #[tokio::test]
    async fn probes_leave_from_the_source_address() {
        let backend = FakeBackend::start("127.0.0.1", None).await;
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let http = http_target(&backend, HttpCheck::new(false, 0, "/"), ms(500));
        let r = probe_once(&http, Some(source)).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(backend.seen()[0].peer.ip(), source);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = ProbeTarget::new(
            addr.ip(),
            Arc::new(Check::new(CheckKind::Tcp { port: addr.port() })),
        );
        let (r, accepted) = tokio::join!(probe_once(&tcp, Some(source)), listener.accept());
        assert!(r.ok, "{r:?}");
        assert_eq!(accepted.unwrap().1.ip(), source);

        // A source of the other family is not used (it could not be).
        let v6: IpAddr = "::1".parse().unwrap();
        assert!(probe_once(&http, Some(v6)).await.ok);
    }

    fn self_signed_acceptor(name: &str) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let cert = key.cert.der().clone();
        let private =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    #[tokio::test]
    async fn https_probe_with_a_self_signed_certificate() {
        let backend =
            FakeBackend::start("127.0.0.2", Some(self_signed_acceptor("api.example.com"))).await;
        let check = |verify_tls| HttpCheck {
            host: Some("api.example.com".to_string()),
            verify_tls,
            body_contains: Some("ok".to_string()),
            ..HttpCheck::new(true, 0, "/healthz")
        };
        let r = probe_once(&http_target(&backend, check(false), ms(2000)), None).await;
        assert!(
            r.ok,
            "verify_tls false accepts a self-signed certificate: {r:?}"
        );
        let seen = backend.seen().pop().unwrap();
        assert_eq!(
            seen.sni.as_deref(),
            Some("api.example.com"),
            "SNI from host"
        );
        assert_eq!(
            seen.peer.ip().to_string(),
            "127.0.0.1",
            "from the default source"
        );

        let r = probe_once(&http_target(&backend, check(true), ms(2000)), None).await;
        assert!(!r.ok, "verify_tls true rejects it: {r:?}");
        let error = r.error.unwrap().to_lowercase();
        assert!(error.contains("certificate"), "{error}");

        backend.set(respond(500, "ok")).await;
        let r = probe_once(&http_target(&backend, check(false), ms(2000)), None).await;
        assert!(!r.ok && r.error.unwrap().contains("status 500"));
    }

    /// Polls `view` until `addr` has `want` status, returning how long that took.
    async fn wait_for(
        view: &SharedHealthView,
        target: &ProbeTarget,
        want: Status,
        limit: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if view.load().status(target.addr, &target.check) == Some(want) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{target} not {want:?} within {limit:?}"
            );
            tokio::time::sleep(ms(10)).await;
        }
    }

    fn fast_check(http: HttpCheck) -> Check {
        Check {
            interval: ms(100),
            timeout: ms(80),
            fall: 3,
            rise: 2,
            ..Check::new(CheckKind::Http(http))
        }
    }

    #[tokio::test]
    async fn monitor_takes_a_failed_backend_out_and_brings_it_back() {
        let backend = FakeBackend::start("127.0.0.4", None).await;
        let check = fast_check(HttpCheck::new(false, backend.addr.port(), "/"));
        let target = ProbeTarget::new(backend.addr.ip(), Arc::new(check.clone()));
        let (mut monitor, view) = HealthMonitor::new(None);
        assert!(!view.load().ready);
        monitor.set_targets(HashSet::from([target.clone()]));
        assert!(
            view.load().is_up(target.addr, Some(&check)),
            "optimistic at start"
        );

        // Ready within one interval (the jittered start) plus a timeout.
        let start = Instant::now();
        while !view.load().ready {
            assert!(start.elapsed() < ms(100 + 80 + 500), "not ready in time");
            tokio::time::sleep(ms(10)).await;
        }
        assert!(monitor.is_ready());
        assert!(monitor.stats().endpoints[0].observation.confirmed);

        // interval × fall + timeout + 1 s
        let bound = ms(100 * 3 + 80 + 1000);
        for (mode, want) in [
            (respond(500, ""), Status::Down),
            (healthy(), Status::Up),
            (Mode::Hang, Status::Down),
            (healthy(), Status::Up),
            (Mode::Closed, Status::Down),
            (healthy(), Status::Up),
        ] {
            backend.set(mode.clone()).await;
            let took = wait_for(&view, &target, want, bound).await;
            // Hysteresis: it never flips before `fall` (or `rise`) probes could have run.
            let threshold = if want == Status::Down { 3 } else { 2 };
            // Less one interval: a probe already in flight when the mode changed may count as
            // the first of the new kind (and a little slack for timers on a loaded machine).
            assert!(
                took + ms(100) >= ms(100 * (threshold - 1)),
                "{mode:?}: flipped after {took:?}"
            );
        }
        let stats = monitor.stats();
        assert_eq!(stats.endpoints[0].transitions, 6);
        assert!(stats.probes.ok > 0 && stats.probes.failed > 0 && stats.probes.timed_out > 0);
        let o = view
            .load()
            .observation(target.addr, &check)
            .cloned()
            .unwrap();
        assert_eq!(o.status, Status::Up);
        assert!(monitor.shutdown(ms(1000)).await, "probers stop on shutdown");
    }

    #[tokio::test]
    async fn set_targets_keeps_running_probers_and_their_state() {
        let down = FakeBackend::start("127.0.0.5", None).await;
        down.set(Mode::Closed).await;
        let gone = FakeBackend::start("127.0.0.6", None).await;
        let fresh = FakeBackend::start("127.0.0.7", None).await;
        let target = |b: &FakeBackend| {
            ProbeTarget::new(
                b.addr.ip(),
                Arc::new(fast_check(HttpCheck::new(false, b.addr.port(), "/"))),
            )
        };
        let (mut monitor, view) = HealthMonitor::new(None);
        monitor.set_targets(HashSet::from([target(&down), target(&gone)]));
        wait_for(&view, &target(&down), Status::Down, ms(2000)).await;
        let probes_before = monitor.stats().probes.failed;

        // A reload: equal targets built anew, one dropped, one added.
        let r = monitor.set_targets(HashSet::from([target(&down), target(&fresh)]));
        assert_eq!(
            (r.added, r.removed),
            (vec![target(&fresh)], vec![target(&gone)])
        );
        let v = view.load();
        assert_eq!(
            v.status(down.addr.ip(), &target(&down).check),
            Some(Status::Down),
            "the unchanged target is still down right after the reload"
        );
        assert_eq!(v.status(gone.addr.ip(), &target(&gone).check), None);
        assert_eq!(
            v.status(fresh.addr.ip(), &target(&fresh).check),
            Some(Status::Up)
        );

        // The removed prober stops probing.
        tokio::time::sleep(ms(150)).await;
        let gone_probes = gone.seen().len();
        tokio::time::sleep(ms(400)).await;
        assert_eq!(
            gone.seen().len(),
            gone_probes,
            "removed target still probed"
        );
        assert!(fresh.seen().len() >= 3, "new target probed");
        let stats = monitor.stats();
        assert_eq!(stats.endpoints.len(), 2);
        assert!(
            stats.probes.failed > probes_before,
            "the kept prober kept running"
        );
        let kept = stats
            .endpoints
            .iter()
            .find(|e| e.observation.target == target(&down))
            .unwrap();
        assert_eq!(kept.transitions, 1, "its history survived the reload");

        // Recovery of the kept target still works.
        down.set(healthy()).await;
        wait_for(&view, &target(&down), Status::Up, ms(2000)).await;
    }

    // The schedule under a paused clock (issue 13: confirm quickly). The probes are stand-ins
    // (`Probe::Fake`): a paused clock and real sockets do not mix.

    /// How the stand-in backend answers a probe.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fake {
        /// A success after 2 ms (so that a schedule counted from the end of a probe shows).
        Up,
        /// A failure at once, as a refused connection.
        Refused,
        /// No answer: a timeout after the check's timeout.
        Hung,
        /// A success after 500 ms: slow, past half the timeout, but healthy.
        Slow,
    }

    /// A backend of stand-in probes that logs when each probe started and how it was answered.
    #[derive(Clone)]
    struct FakeProbes {
        mode: Arc<Mutex<Fake>>,
        starts: Arc<Mutex<Vec<(Instant, Fake)>>>,
    }

    impl FakeProbes {
        /// A monitor whose probers probe this backend, and its view.
        fn monitor() -> (FakeProbes, HealthMonitor, SharedHealthView) {
            let fake = FakeProbes {
                mode: Arc::new(Mutex::new(Fake::Up)),
                starts: Arc::default(),
            };
            let f = fake.clone();
            let probe: FakeProbe = Arc::new(move |target: &ProbeTarget| {
                let (f, timeout) = (f.clone(), target.check.timeout);
                Box::pin(async move { f.probe(timeout).await })
            });
            let (monitor, view) = HealthMonitor::with_probe(None, Probe::Fake(probe));
            (fake, monitor, view)
        }

        async fn probe(&self, timeout: Duration) -> ProbeResult {
            let mode = *self.mode.lock().unwrap();
            self.starts.lock().unwrap().push((Instant::now(), mode));
            match mode {
                Fake::Up => {
                    tokio::time::sleep(ms(2)).await;
                    ProbeResult::success(ms(2))
                }
                Fake::Refused => ProbeResult::failure(Duration::ZERO, "connection refused"),
                Fake::Hung => {
                    tokio::time::sleep(timeout).await;
                    ProbeResult::timeout(timeout)
                }
                Fake::Slow => {
                    tokio::time::sleep(ms(500)).await;
                    ProbeResult::success(ms(500))
                }
            }
        }

        fn set(&self, mode: Fake) {
            *self.mode.lock().unwrap() = mode;
        }

        fn starts(&self) -> Vec<(Instant, Fake)> {
            self.starts.lock().unwrap().clone()
        }

        /// When the first probe answered as `mode` started.
        fn first(&self, mode: Fake) -> Option<Instant> {
            self.starts()
                .into_iter()
                .find_map(|(at, m)| (m == mode).then_some(at))
        }

        /// The time between the starts of the probes that started at or after `from`.
        fn gaps_from(&self, from: Instant) -> Vec<Duration> {
            let starts: Vec<Instant> = self
                .starts()
                .into_iter()
                .map(|(at, _)| at)
                .filter(|at| *at >= from)
                .collect();
            starts.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    /// The check of the issue: interval 1 s, fast_interval 200 ms, timeout 800 ms, fall 2,
    /// rise 2 (on an address the stand-ins never connect to).
    fn issue_13_target() -> ProbeTarget {
        ProbeTarget::new(
            "192.0.2.13".parse().unwrap(),
            Arc::new(Check {
                interval: ms(1000),
                fast_interval: ms(200),
                timeout: ms(800),
                fall: 2,
                rise: 2,
                ..Check::new(CheckKind::Tcp { port: 80 })
            }),
        )
    }

    /// Lets the paused clock run, a millisecond at a time, until `done` or for at most `limit`.
    async fn run_until(limit: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "not done within {limit:?}");
            tokio::time::sleep(ms(1)).await;
        }
    }

    /// The status of `target` in `view`, and since when.
    fn status_since(view: &SharedHealthView, target: &ProbeTarget) -> (Status, Instant) {
        let o = view.load().observation(target.addr, &target.check).cloned();
        let o = o.expect("the target is in the view");
        (o.status, o.since)
    }

    /// Starts a monitor of `target` and runs the clock until its first probe round is done.
    async fn started(target: &ProbeTarget) -> (FakeProbes, HealthMonitor, SharedHealthView) {
        let (fake, mut monitor, view) = FakeProbes::monitor();
        monitor.set_targets(HashSet::from([target.clone()]));
        run_until(target.check.interval + ms(10), || view.load().ready).await;
        (fake, monitor, view)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_backend_is_confirmed_down_one_fast_interval_after_its_first_failure() {
        let target = issue_13_target();
        let (fake, monitor, view) = started(&target).await;
        tokio::time::sleep(ms(2300)).await;

        let broke = Instant::now();
        fake.set(Fake::Refused);
        run_until(ms(3000), || status_since(&view, &target).0 == Status::Down).await;
        let first_failure = fake.first(Fake::Refused).expect("a refused probe");
        let (_, down_at) = status_since(&view, &target);
        // fall 2: the second failure, one fast interval after the first (not one interval).
        assert_eq!(down_at - first_failure, ms(200));
        assert!(
            down_at - broke <= ms(1000 + 200),
            "down {:?} after the backend broke",
            down_at - broke
        );
        assert_eq!(fake.gaps_from(first_failure), [ms(200)]);

        // Steadily dead: back to one probe per interval.
        tokio::time::sleep(ms(5100)).await;
        assert_eq!(
            fake.gaps_from(first_failure),
            [ms(200), ms(1000), ms(1000), ms(1000), ms(1000), ms(1000)]
        );

        // Recovery is confirmed the same way: `rise` 2, one fast interval apart.
        fake.set(Fake::Up);
        run_until(ms(3000), || status_since(&view, &target).0 == Status::Up).await;
        let last_failure = fake
            .starts()
            .into_iter()
            .rev()
            .find_map(|(at, m)| (m == Fake::Refused).then_some(at))
            .expect("refused probes");
        let (_, up_at) = status_since(&view, &target);
        // The second success is recorded when it ends, 2 ms after its start.
        assert_eq!(up_at - last_failure, ms(1000 + 200 + 2));
        tokio::time::sleep(ms(3000)).await;
        assert_eq!(
            fake.gaps_from(last_failure),
            [ms(1000), ms(200), ms(1000), ms(1000), ms(1000)]
        );
        assert_eq!(monitor.stats().endpoints[0].transitions, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_backend_is_confirmed_by_a_second_probe_started_at_half_the_timeout() {
        // The first hung probe is still running at half its timeout (400 ms): a confirming
        // probe starts beside it, so the second timeout comes 400 ms after the first rather than
        // 800 ms (issue 13: a hung DC withdrawn within 2 s on a majority of three nodes).
        let target = issue_13_target();
        let (fake, _monitor, view) = started(&target).await;
        tokio::time::sleep(ms(1700)).await;
        fake.set(Fake::Hung);
        run_until(ms(4000), || status_since(&view, &target).0 == Status::Down).await;
        let first_failure = fake.first(Fake::Hung).expect("a hung probe");
        let (_, down_at) = status_since(&view, &target);
        assert_eq!(
            down_at - first_failure,
            ms(400 + 800),
            "the confirming probe's timeout"
        );
        assert_eq!(fake.gaps_from(first_failure), [ms(400)]);
        // Down and settled: one probe at a time, every interval from the confirming one.
        tokio::time::sleep(ms(3000)).await;
        assert_eq!(
            fake.gaps_from(first_failure),
            [ms(400), ms(1000), ms(1000), ms(1000)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_healthy_backend_costs_one_confirming_probe_and_stays_up() {
        let target = issue_13_target();
        let (fake, monitor, view) = started(&target).await;
        tokio::time::sleep(ms(1500)).await;
        fake.set(Fake::Slow);
        run_until(ms(1100), || fake.first(Fake::Slow).is_some()).await;
        let slow = fake.first(Fake::Slow).expect("a slow probe");
        tokio::time::sleep(ms(600)).await;
        fake.set(Fake::Up);
        tokio::time::sleep(ms(3000)).await;
        assert_eq!(status_since(&view, &target).0, Status::Up);
        assert_eq!(monitor.stats().endpoints[0].transitions, 0, "no flap");
        // The slow probe, a confirming one 400 ms in, then the interval from that one.
        assert_eq!(
            fake.gaps_from(slow),
            [ms(400), ms(1000), ms(1000), ms(1000)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_failed_probe_never_takes_a_backend_down_and_the_interval_comes_back() {
        let target = issue_13_target();
        let (fake, monitor, view) = started(&target).await;
        tokio::time::sleep(ms(1500)).await;

        fake.set(Fake::Refused);
        run_until(ms(1100), || fake.first(Fake::Refused).is_some()).await;
        fake.set(Fake::Up);
        let failed = fake.first(Fake::Refused).expect("one refused probe");
        tokio::time::sleep(ms(4500)).await;

        assert_eq!(status_since(&view, &target).0, Status::Up);
        let stats = monitor.stats();
        assert_eq!(stats.endpoints[0].transitions, 0, "no flap");
        assert_eq!(stats.probes.failed, 1);
        // Re-checked once, fast; then the interval again.
        assert_eq!(
            fake.gaps_from(failed),
            [ms(200), ms(1000), ms(1000), ms(1000), ms(1000)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steadily_healthy_backend_is_probed_exactly_once_per_interval() {
        let target = issue_13_target();
        let (fake, monitor, _view) = started(&target).await;
        let first = fake.starts()[0].0;
        tokio::time::sleep(ms(10_000)).await;
        assert_eq!(fake.gaps_from(first), [ms(1000); 10]);
        assert!(fake.starts().iter().all(|(_, m)| *m == Fake::Up));
        assert_eq!(monitor.stats().probes.ok, 11);
    }
}
