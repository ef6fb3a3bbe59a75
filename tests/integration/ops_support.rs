//! Helpers for the operations tests (`ops`): a `steerdns serve` child with its own environment,
//! node config and log format; HTTP backends that can be stopped; the admin API through
//! `support`'s HTTP client; a Prometheus text parser; running the CLI and outside tools with a
//! deadline.
//!
//! Kept apart from `support.rs` so that test modules added in other branches merge cleanly.
//! Like `support`, everything blocks with a timeout: a hung server fails the test.

#![allow(dead_code)] // Not every test uses every helper.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;

use crate::support::{
    HttpResponse, QueryBuilder, START_TIMEOUT, checked_zone_two_dcs, http_request, manifest_path,
    run_command, signal, spawn_serve, start_backends,
};

/// The tests that load both cores (queries under load, Chromium) take turns, so one does not
/// starve the other into a spurious timeout.
static HEAVY: Mutex<()> = Mutex::new(());

/// Holds the "heavy test" turn until dropped.
pub fn heavy_turn() -> MutexGuard<'static, ()> {
    // A test that panicked while holding it leaves nothing to repair.
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `done` every 25 ms until it holds, failing the test with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------------
// The node

/// A `steerdns serve` child on loopback, started by `NodeBuilder`. Killed when dropped.
pub struct Node {
    /// DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    child: Child,
    stderr_path: PathBuf,
    dir: tempfile::TempDir,
}

/// What a node is started with: `Node::builder(zone).env(..).config(..).start()`.
pub struct NodeBuilder {
    zone: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    config: Option<String>,
    /// A state directory in the node's temp dir (drains are refused without one).
    state_dir: bool,
}

impl Node {
    /// A node serving one zone (YAML text) with the MaxMind test GeoIP database.
    pub fn builder(zone: &str) -> NodeBuilder {
        NodeBuilder {
            zone: zone.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            config: None,
            state_dir: true,
        }
    }

    /// `http://ADDR` of the admin listener, as the CLI takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn zone_dir(&self) -> PathBuf {
        self.dir.path().join("zones")
    }

    /// Replaces the zone file in one step (write aside, then rename), so that neither the
    /// file watcher nor a reload ever reads half a file.
    pub fn write_zone(&self, yaml: &str) {
        let tmp = self.dir.path().join("zone.yaml.new");
        std::fs::write(&tmp, yaml).expect("writing the new zone file");
        std::fs::rename(&tmp, self.zone_dir().join("zone.yaml")).expect("renaming the zone file");
    }

    /// Sends a signal (e.g. "HUP") to the node.
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// What the node has logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().expect("polling the child").is_none()
    }

    /// GET on the admin listener without credentials.
    pub fn get(&self, path: &str) -> HttpResponse {
        http(self.admin, "GET", path, &[], None)
    }

    /// The parsed `/metrics` (read without credentials).
    pub fn metrics(&self) -> Metrics {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics: {r:?}");
        Metrics::parse(&r.text())
    }

    /// The `/api/v1/state` document (read without credentials).
    pub fn state(&self) -> serde_json::Value {
        let r = self.get("/api/v1/state");
        assert_eq!(r.status, 200, "GET /api/v1/state: {r:?}");
        r.json()
    }

    /// The effective status (`up`, `down`, `drained`) of a service's DC in the state API.
    pub fn dc_status(&self, service: &str, dc: &str) -> String {
        let state = self.state();
        let svc = state["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == service)
            .unwrap_or_else(|| panic!("no service {service} in the state: {state:#}"));
        let d = svc["dcs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["name"] == dc)
            .unwrap_or_else(|| panic!("no DC {dc} for {service} in the state: {state:#}"));
        d["effective"].as_str().unwrap_or_default().to_string()
    }

    /// Waits until `/ready` answers 200 (the first probe round is done).
    pub fn wait_ready(&self) {
        wait_until(Duration::from_secs(10), "GET /ready to answer 200", || {
            self.get("/ready").status == 200
        });
    }
}

impl NodeBuilder {
    /// An extra `serve` argument.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// An environment variable for the child (it inherits none of the `STEERDNS_*` ones, nor
    /// `RUST_LOG`, from the test).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// No state directory, as `serve` without `--state-dir`.
    pub fn without_state_dir(mut self) -> Self {
        self.state_dir = false;
        self
    }

    /// A node config file (YAML), passed with `--config`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_string());
        self
    }

    pub fn start(self) -> Node {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let zones = dir.path().join("zones");
        std::fs::create_dir(&zones).expect("creating the zone dir");
        std::fs::write(zones.join("zone.yaml"), &self.zone).expect("writing the zone file");
        let ready = dir.path().join("ready.json");
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_steerdns"));
        for key in ["STEERDNS_ADMIN_TOKEN", "STEERDNS_SECRET", "RUST_LOG"] {
            cmd.env_remove(key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("serve");
        if let Some(config) = &self.config {
            let path = dir.path().join("node.yaml");
            std::fs::write(&path, config).expect("writing the node config");
            cmd.arg("--config").arg(path);
        }
        cmd.arg("--zones")
            .arg(&zones)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--geoip")
            .arg(manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb"))
            .arg("--ready-file")
            .arg(&ready);
        if self.state_dir {
            cmd.arg("--state-dir").arg(dir.path().join("state"));
        }
        cmd.args(&self.args);
        let (child, dns, admin) = spawn_serve(cmd, &ready, &stderr_path, START_TIMEOUT, "steerdns");
        Node {
            dns,
            admin,
            child,
            stderr_path,
            dir,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A data center's HTTP backend (`support::Backend`): healthy until the test stops it, then
/// its port refuses connections.
pub use crate::support::Backend;

/// `n` healthy backends on one port, each on its own loopback address, as a zone's check names
/// one port for every endpoint (see `support::start_backends`).
pub fn backends(n: usize) -> Vec<Backend> {
    start_backends(n, None)
}

/// A zone `api.example.com` with service `www`: DCs fra and iad (in that order, so a client the
/// GeoIP database does not know, like 127.0.0.1, gets fra), one endpoint each, probed by a fast
/// HTTP check on `port` (down after 2 failed probes 200 ms apart).
pub fn checked_zone(fra: IpAddr, iad: IpAddr, port: u16) -> String {
    checked_zone_two_dcs(
        [("fra", fra), ("iad", iad)],
        &format!(
            "{{ http: {{ port: {port}, path: /healthz, expect: [200] }}, interval: 200ms, \
             timeout: 150ms, fall: 2, rise: 1 }}"
        ),
        "ttl: 30",
    )
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`), failing the test on any
/// error (see `support::http_request`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    http_request(addr, method, path, headers, body.unwrap_or("").as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A POST with a JSON body, with `Authorization: Bearer TOKEN` when a token is given.
pub fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    http(addr, "POST", path, &headers, Some(body))
}

/// A GET with `Authorization: Bearer TOKEN` when a token is given.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(addr, "GET", path, &headers, None)
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape, parsed.
#[derive(Debug)]
pub struct Metrics(pub Vec<Sample>);

impl Metrics {
    /// Parses the text exposition format (and OpenMetrics' `# EOF`); fails the test on a line
    /// it cannot read, so a malformed scrape is caught too.
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_sample(line).unwrap_or_else(|| panic!("bad metrics line {line:?}")));
        }
        Metrics(samples)
    }

    /// Every sample of a metric.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.0.iter().filter(|s| s.name == name).collect()
    }

    /// The sample with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The sample with exactly these labels, or 0 when the series does not exist (yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The sum of a metric's samples whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name)
            .into_iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key, value);
            rest = &rest[end + 1..];
        }
    }
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

// ---------------------------------------------------------------------------------------------
// DNS

/// The EDNS Client Subnet option data (RFC 7871) for an IPv4 network.
pub fn ecs_v4(addr: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let mut data = vec![0, 1, prefix, 0];
    data.extend_from_slice(&addr.octets()[..usize::from(prefix).div_ceil(8)]);
    data
}

/// The addresses of the A and AAAA records of the answer section, in order.
pub use crate::support::addresses_in_order as addresses;

/// Sends a query over UDP and waits up to `timeout` for the reply with its ID; `Err` says what
/// went wrong instead of failing the test, for the load generator to count.
pub fn try_query_udp(
    socket: &std::net::UdpSocket,
    q: &QueryBuilder,
    timeout: Duration,
) -> Result<Message, String> {
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    socket.send(&q.wire()).map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .map_err(|e| format!("no reply within {timeout:?}: {e}"))?;
        let msg = Message::from_vec(&buf[..n]).map_err(|e| format!("unparsable reply: {e}"))?;
        // A late reply to an earlier query that timed out is not this one's.
        if msg.metadata.id == q.get_id() {
            return Ok(msg);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

/// The outcome of a command run to completion (`support::Run`, under the name the operations
/// tests use).
pub type Output = crate::support::Run;

/// Runs `program ARGS` in `cwd`, failing the test if it runs longer than `timeout` (it is
/// killed then). `env` is added to the environment; the `STEERDNS_*` variables are not
/// inherited.
pub fn run_with_timeout(
    program: &Path,
    args: &[&OsStr],
    cwd: &Path,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Output {
    let mut cmd = Command::new(program);
    cmd.env_remove("STEERDNS_ADMIN_TOKEN")
        .env_remove("STEERDNS_SECRET")
        .envs(env.iter().copied())
        .args(args)
        .current_dir(cwd);
    run_command(cmd, &format!("{} {args:?}", program.display()), timeout)
}

/// Runs the `steerdns` CLI from the crate root.
pub fn cli(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_with_timeout(
        Path::new(env!("CARGO_BIN_EXE_steerdns")),
        &args,
        &manifest_path(""),
        &[],
        Duration::from_secs(15),
    )
}
