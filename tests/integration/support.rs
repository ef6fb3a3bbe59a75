//! Helpers for the integration tests: start the real `steerdns` binary on loopback, build
//! queries, exchange them over UDP and TCP, and show records in a form tests can compare; run
//! commands with a deadline; talk to the admin API over HTTP(S); serve health checks from
//! backends whose port can close and reopen; make test certificates; drive resolver traffic
//! with ECS for client networks of the shipped GeoIP database and check every reply. The other
//! `*_support` modules and the `failover`, `convergence` and `resolver_farm` benches build on
//! this one.
//!
//! Everything here blocks with a timeout, so a hung or crashed server fails the test instead of
//! hanging it.

#![allow(dead_code)] // Not every test module uses every helper.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// How long any single receive may take before the test fails.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The same with the shipped GeoIP databases, which a debug build takes seconds to verify
/// (about 4 s each on this 2-core machine, twice that when two servers start at once).
const START_TIMEOUT_SHIPPED: Duration = Duration::from_secs(30);
/// How long a one-shot command (`check`, `explain`, a failing `serve`) may run: `explain` with
/// the shipped GeoIP databases verifies them first, which takes seconds in a debug build.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The zone most tests run against: one of everything the zone format supports. Names are
/// relative to `api.example.com`.
pub const ZONE: &str = r#"
zone: api.example.com
ttl: 300
soa:
  primary: ns1
  contact: hostmaster@example.com
  serial: 2026113001
  minimum: 60
  ttl: 3600
nameservers:
  ns1: [192.0.2.53]
  ns.other.net.: []
datacenters:
  fra: { location: [50.11, 8.68] }
  iad: { location: [38.95, -77.45] }
records:
  www:
    service:
      ttl: 30
      answers: 2
      endpoints:
        fra: [203.0.113.10, 203.0.113.11, 203.0.113.12, "2001:db8:10::1"]
        iad: [198.51.100.20, "2001:db8:20::1"]
  "@":
    TXT: "v=spf1 -all"
    MX: "10 mail.example.com."
    CAA: '0 issue "letsencrypt.org"'
  status:
    A: [192.0.2.10, 192.0.2.11]
    AAAA: "2001:db8::10"
    TXT: [hello, world]
  docs: { CNAME: www }
  chain: { CNAME: docs }
  outside: { CNAME: cdn.example.net. }
  _https._tcp: { SRV: "10 5 443 www" }
  a.b: { TXT: deep }
  sub: { NS: [ns.sub.api.example.com, ns.elsewhere.net.] }
  ns.sub: { A: 192.0.2.99, AAAA: "2001:db8::99" }
"#;

/// The path of a file or directory in the crate, independent of the test's working directory.
pub fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A `steerdns serve` child process listening on loopback. Killed when dropped.
pub struct TestServer {
    /// The DNS address (UDP and TCP share the port).
    pub addr: SocketAddr,
    /// The admin/peer HTTP address.
    pub admin: SocketAddr,
    child: Child,
    stderr_path: PathBuf,
    // Kept for its lifetime: the zone file, the ready file and the log live here.
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Serves one zone, given as YAML text, on a kernel-chosen port.
    pub fn start(yaml: &str) -> TestServer {
        TestServer::start_with(yaml, &[])
    }

    /// Serves one zone with extra `serve` flags. Without a `--geoip` flag the server uses the
    /// small MaxMind test database (tests/fixtures/geoip/README.md has its networks); without
    /// `--listen` or `--config`, it listens on 127.0.0.1 port 0.
    pub fn start_with(yaml: &str, args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let zones = dir.path().join("zones");
        std::fs::create_dir(&zones).expect("creating the zone dir");
        std::fs::write(zones.join("zone.yaml"), yaml).expect("writing the zone file");
        TestServer::spawn(&zones, dir, args, false)
    }

    /// Serves an existing zone directory (such as the shipped `zones/`) with the shipped GeoIP
    /// databases.
    pub fn start_dir(zones: &Path) -> TestServer {
        TestServer::start_dir_with(zones, &[])
    }

    /// `start_dir` with extra `serve` flags (a `--geoip` flag replaces the shipped databases).
    pub fn start_dir_with(zones: &Path, args: &[&str]) -> TestServer {
        TestServer::spawn(
            zones,
            tempfile::tempdir().expect("creating a temp dir"),
            args,
            true,
        )
    }

    /// The directory holding the zone file, for tests that rewrite it and reload.
    pub fn zone_dir(&self) -> PathBuf {
        self._dir.path().join("zones")
    }

    /// Every DNS listener, in the order given, as the ready file lists them.
    pub fn dns_listeners(&self) -> Vec<DnsListener> {
        dns_listeners(&self._dir.path().join("ready.json"))
    }

    /// Sends a signal (e.g. "HUP") to the server.
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    fn spawn(
        zones: &Path,
        dir: tempfile::TempDir,
        args: &[&str],
        shipped_geoip: bool,
    ) -> TestServer {
        let test_geoip = if shipped_geoip || args.contains(&"--geoip") {
            vec![]
        } else {
            let db = manifest_path("tests/fixtures/geoip/GeoIP2-City-Test.mmdb");
            vec!["--geoip".to_string(), db.display().to_string()]
        };
        let ready = dir.path().join("ready.json");
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_steerdns"));
        let listen = if args.contains(&"--listen") || args.contains(&"--config") {
            vec![]
        } else {
            vec!["--listen", "127.0.0.1:0"]
        };
        cmd.arg("serve")
            .arg("--zones")
            .arg(zones)
            .args(listen)
            .arg("--ready-file")
            .arg(&ready)
            .args(args)
            .args(test_geoip)
            .args(if args.contains(&"--admin") {
                vec![]
            } else {
                vec!["--admin", "127.0.0.1:0"]
            });
        let limit = if shipped_geoip {
            START_TIMEOUT_SHIPPED
        } else {
            START_TIMEOUT
        };
        let (child, addr, admin) = spawn_serve(cmd, &ready, &stderr_path, limit, "steerdns");
        TestServer {
            addr,
            admin,
            child,
            stderr_path,
            _dir: dir,
        }
    }

    /// Whether the server process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().expect("polling the child").is_none()
    }

    /// What the server has logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd`, a `steerdns serve` with `--ready-file READY`, and waits up to `limit` for it to
/// write that file (a ready file left from an earlier run is removed first). Its stderr is
/// appended to `log` (a file, not a pipe: a pipe nobody reads would block a chatty server).
/// Returns the child and the DNS and admin addresses the ready file names. Fails the test, with
/// the log, if the process exits first or is not ready in time (it is killed then); `what`
/// names it ("steerdns", "node a").
pub fn spawn_serve(
    mut cmd: Command,
    ready: &Path,
    log: &Path,
    limit: Duration,
    what: &str,
) -> (Child, SocketAddr, SocketAddr) {
    let _ = std::fs::remove_file(ready);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening the log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + limit;
    loop {
        // The file is written atomically (rename), so whatever we read is complete.
        if let Ok(text) = std::fs::read_to_string(ready) {
            let json: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("ready file {text:?} is not JSON: {e}"));
            let addr = |key: &str| -> SocketAddr {
                json[key]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("ready file {text:?} has no {key:?} address"))
            };
            return (child, addr("dns"), addr("admin"));
        }
        if let Some(status) = child.try_wait().expect("polling the child") {
            panic!(
                "{what} exited ({status}) before it was ready; stderr:\n{}",
                read_log()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} not ready after {limit:?}; stderr:\n{}", read_log());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One DNS listener of a server: its UDP and TCP addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsListener {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// The DNS listeners a ready file lists under `dns_all`.
pub fn dns_listeners(ready: &Path) -> Vec<DnsListener> {
    let text = std::fs::read_to_string(ready)
        .unwrap_or_else(|e| panic!("reading the ready file {}: {e}", ready.display()));
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("ready file {text:?} is not JSON: {e}"));
    let addr = |v: &serde_json::Value| -> SocketAddr {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("ready file {text:?}: {v} is not an address"))
    };
    json["dns_all"]
        .as_array()
        .unwrap_or_else(|| panic!("ready file {text:?} has no dns_all list"))
        .iter()
        .map(|l| DnsListener {
            udp: addr(&l["udp"]),
            tcp: addr(&l["tcp"]),
        })
        .collect()
}

/// Sends a signal (e.g. "HUP") to a child process.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} failed");
}

/// The outcome of a command run to completion.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (`None` when a signal ended the command).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `steerdns ARGS` in `cwd` and waits for it to exit, failing the test if it runs longer
/// than a few seconds (a `serve` that should have refused to start, for example).
pub fn run_steerdns(cwd: &Path, args: &[&std::ffi::OsStr]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_steerdns"));
    cmd.args(args).current_dir(cwd);
    run_command(cmd, &format!("steerdns {args:?}"), COMMAND_TIMEOUT)
}

/// Runs `cmd` (program, arguments, working directory and environment already set) with no
/// input and waits for it to exit, failing the test if it runs longer than `timeout` (it is
/// killed then). Its output goes to files, not pipes, so a chatty command cannot block on them.
/// `what` names the command in a failure.
pub fn run_command(mut cmd: Command, what: &str, timeout: Duration) -> Run {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("creating stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("creating stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} still running after {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// EDNS settings of a query. The OPT record is written by hand so that any payload size,
/// version and option can be sent, including ones hickory's own encoder would correct.
#[derive(Debug, Clone)]
pub struct EdnsOpts {
    pub payload: u16,
    pub version: u8,
    /// The DO bit (RFC 3225).
    pub dnssec_ok: bool,
    pub options: Vec<(u16, Vec<u8>)>,
}

/// A query under construction: `query("www.api.example.com", RecordType::A).id(7).edns(4096)`.
#[derive(Debug, Clone)]
pub struct QueryBuilder {
    name: String,
    rtype: RecordType,
    class: DNSClass,
    id: u16,
    rd: bool,
    op_code: OpCode,
    edns: Option<EdnsOpts>,
}

/// A standard query for `name` (written as given, letter case included) and `rtype`: random ID,
/// RD set, no EDNS.
pub fn query(name: &str, rtype: RecordType) -> QueryBuilder {
    QueryBuilder {
        name: name.to_string(),
        rtype,
        class: DNSClass::IN,
        id: rand::random(),
        rd: true,
        op_code: OpCode::Query,
        edns: None,
    }
}

impl QueryBuilder {
    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    pub fn class(mut self, class: DNSClass) -> Self {
        self.class = class;
        self
    }

    pub fn rd(mut self, rd: bool) -> Self {
        self.rd = rd;
        self
    }

    pub fn op_code(mut self, op_code: OpCode) -> Self {
        self.op_code = op_code;
        self
    }

    /// Adds an OPT record (EDNS version 0) advertising `payload` bytes.
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns = Some(EdnsOpts {
            payload,
            version: 0,
            dnssec_ok: false,
            options: Vec::new(),
        });
        self
    }

    /// Sets the DO bit (adding an OPT with payload 1232 if there is none yet).
    pub fn dnssec_ok(mut self) -> Self {
        self.edns.get_or_insert_with(default_edns).dnssec_ok = true;
        self
    }

    /// Sets the EDNS version (adding an OPT with payload 1232 if there is none yet).
    pub fn edns_version(mut self, version: u8) -> Self {
        self.edns.get_or_insert_with(default_edns).version = version;
        self
    }

    /// Adds an EDNS option (adding an OPT with payload 1232 if there is none yet).
    pub fn edns_option(mut self, code: u16, data: &[u8]) -> Self {
        self.edns
            .get_or_insert_with(default_edns)
            .options
            .push((code, data.to_vec()));
        self
    }

    pub fn get_id(&self) -> u16 {
        self.id
    }

    /// The query as a message, without its OPT record (see `wire`).
    pub fn message(&self) -> Message {
        let mut msg = Message::new(self.id, MessageType::Query, self.op_code);
        msg.metadata.recursion_desired = self.rd;
        let name = Name::from_ascii(&self.name)
            .unwrap_or_else(|e| panic!("bad query name {:?}: {e}", self.name));
        let mut question = Query::query(name, self.rtype);
        question.set_query_class(self.class);
        msg.add_query(question);
        msg
    }

    /// The query in wire format.
    pub fn wire(&self) -> Vec<u8> {
        let mut bytes = self.message().to_vec().expect("encoding the query");
        if let Some(edns) = &self.edns {
            // Root owner, TYPE 41, CLASS = payload, TTL = ext-rcode 0 | version | flags (DO).
            bytes.push(0);
            bytes.extend_from_slice(&41u16.to_be_bytes());
            bytes.extend_from_slice(&edns.payload.to_be_bytes());
            let flags = if edns.dnssec_ok { 0x80 } else { 0 };
            bytes.extend_from_slice(&[0, edns.version, flags, 0]);
            let rdata: Vec<u8> = edns
                .options
                .iter()
                .flat_map(|(code, data)| {
                    let mut o = code.to_be_bytes().to_vec();
                    o.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    o.extend_from_slice(data);
                    o
                })
                .collect();
            bytes.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&rdata);
            set_count(&mut bytes, Section::Additional, 1);
        }
        bytes
    }
}

fn default_edns() -> EdnsOpts {
    EdnsOpts {
        payload: 1232,
        version: 0,
        dnssec_ok: false,
        options: Vec::new(),
    }
}

/// A header count field.
#[derive(Debug, Clone, Copy)]
pub enum Section {
    Question = 4,
    Answer = 6,
    Authority = 8,
    Additional = 10,
}

/// Overwrites a header count in a wire-format message.
pub fn set_count(bytes: &mut [u8], section: Section, count: u16) {
    let at = section as usize;
    bytes[at..at + 2].copy_from_slice(&count.to_be_bytes());
}

/// Reads a header count from a wire-format message.
pub fn count(bytes: &[u8], section: Section) -> u16 {
    let at = section as usize;
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Parses a response, failing the test with the bytes if it does not parse.
pub fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes)
        .unwrap_or_else(|e| panic!("response does not parse ({e}): {bytes:02x?}"))
}

/// A UDP socket on loopback (IPv4 or IPv6, as `addr`), connected to `addr`, that gives up
/// receiving after `RECV_TIMEOUT`.
pub fn udp_socket(addr: SocketAddr) -> UdpSocket {
    let local = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let socket = UdpSocket::bind(local).expect("binding a UDP socket");
    socket
        .set_read_timeout(Some(RECV_TIMEOUT))
        .expect("setting a read timeout");
    socket.connect(addr).expect("connecting the UDP socket");
    socket
}

/// Sends one datagram and returns the reply's bytes.
pub fn exchange_udp(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = udp_socket(addr);
    socket.send(bytes).expect("sending a datagram");
    let mut buf = vec![0; 65_535];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no UDP reply from {addr} within {RECV_TIMEOUT:?}: {e}"));
    buf.truncate(n);
    buf
}

/// Sends a query over UDP and returns the parsed reply, checking that its ID matches.
pub fn query_udp(addr: SocketAddr, q: &QueryBuilder) -> Message {
    let reply = parse(&exchange_udp(addr, &q.wire()));
    assert_eq!(reply.metadata.id, q.get_id(), "reply ID");
    reply
}

/// A TCP connection to `addr` whose reads give up after `RECV_TIMEOUT`.
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting over TCP");
    stream
        .set_read_timeout(Some(RECV_TIMEOUT))
        .expect("setting a read timeout");
    stream
}

/// Writes one length-prefixed DNS message.
pub fn write_frame(stream: &mut TcpStream, bytes: &[u8]) {
    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).expect("writing a TCP frame");
}

/// Reads one length-prefixed DNS message.
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes every message on one connection, then reads as many replies (pipelining).
pub fn exchange_tcp(addr: SocketAddr, messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut stream = tcp_connect(addr);
    for m in messages {
        write_frame(&mut stream, m);
    }
    (0..messages.len())
        .map(|i| {
            read_frame(&mut stream).unwrap_or_else(|e| {
                panic!("no TCP reply {i} from {addr} within {RECV_TIMEOUT:?}: {e}")
            })
        })
        .collect()
}

/// Sends queries over one TCP connection and returns the parsed replies, in order.
pub fn query_tcp(addr: SocketAddr, queries: &[QueryBuilder]) -> Vec<Message> {
    let wires: Vec<Vec<u8>> = queries.iter().map(QueryBuilder::wire).collect();
    exchange_tcp(addr, &wires)
        .iter()
        .map(|b| parse(b))
        .collect()
}

/// One record as `owner TTL TYPE rdata`, with names exactly as they came off the wire (case
/// included), so tests compare whole records at once.
pub fn show(r: &Record) -> String {
    let data = match &r.data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => n.0.to_ascii(),
        RData::NS(n) => n.0.to_ascii(),
        RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange.to_ascii()),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
            .collect::<Vec<_>>()
            .join(" "),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority,
            srv.weight,
            srv.port,
            srv.target.to_ascii()
        ),
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            soa.mname.to_ascii(),
            soa.rname.to_ascii(),
            soa.serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.minimum
        ),
        RData::CAA(caa) => format!(
            "{} {} {:?}",
            caa.flags(),
            caa.tag,
            String::from_utf8_lossy(&caa.value)
        ),
        other => format!("{other:?}"),
    };
    format!(
        "{} {} {} {}",
        r.name.to_ascii(),
        r.ttl,
        r.record_type(),
        data
    )
}

/// A section shown record by record, in wire order.
pub fn records(section: &[Record]) -> Vec<String> {
    section.iter().map(show).collect()
}

/// A section shown record by record, sorted (for RRsets, whose order carries no meaning).
pub fn sorted(section: &[Record]) -> Vec<String> {
    let mut v = records(section);
    v.sort();
    v
}

/// A query in wire format with the question name given label by label, so a label may hold
/// any byte (a dot, a space) without escaping. RD set, class IN, no EDNS.
pub fn raw_query(id: u16, labels: &[&[u8]], rtype: RecordType) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in labels {
        b.push(label.len() as u8);
        b.extend_from_slice(label);
    }
    b.push(0);
    b.extend_from_slice(&u16::from(rtype).to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b
}

/// Sends a query over UDP from a chosen loopback source address (so the server sees that
/// address as the resolver's) and returns the parsed reply.
pub fn query_udp_from(source: std::net::IpAddr, addr: SocketAddr, q: &QueryBuilder) -> Message {
    let socket = UdpSocket::bind((source, 0))
        .unwrap_or_else(|e| panic!("binding a UDP socket on {source}: {e}"));
    socket
        .set_read_timeout(Some(RECV_TIMEOUT))
        .expect("setting a read timeout");
    socket.connect(addr).expect("connecting the UDP socket");
    socket.send(&q.wire()).expect("sending a datagram");
    let mut buf = vec![0; 65_535];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no UDP reply from {addr} within {RECV_TIMEOUT:?}: {e}"));
    let reply = parse(&buf[..n]);
    assert_eq!(reply.metadata.id, q.get_id(), "reply ID");
    reply
}

// ---------------------------------------------------------------------------------------------
// EDNS Client Subnet (RFC 7871)

/// The EDNS option code of ECS.
pub const ECS: u16 = 8;

/// The payload of an ECS option exactly as given: FAMILY, SOURCE PREFIX-LENGTH, SCOPE
/// PREFIX-LENGTH, ADDRESS bytes. For building malformed options.
pub fn ecs_raw(family: u16, source: u8, scope: u8, address: &[u8]) -> Vec<u8> {
    let mut v = family.to_be_bytes().to_vec();
    v.push(source);
    v.push(scope);
    v.extend_from_slice(address);
    v
}

/// A well-formed ECS payload for `net` ("175.16.199.0/24", "2001:218::/32"): family 1 or 2,
/// source prefix from the network, scope 0, the address truncated to ceil(prefix / 8) bytes.
/// Bits past the prefix are sent as written, so a test can set them on purpose.
pub fn ecs_payload(net: &str) -> Vec<u8> {
    let (addr, prefix) = net
        .split_once('/')
        .unwrap_or_else(|| panic!("{net:?} is not ADDRESS/PREFIX"));
    let addr: std::net::IpAddr = addr.parse().expect("an IP address");
    let prefix: u8 = prefix.parse().expect("a prefix length");
    let (family, bytes) = match addr {
        std::net::IpAddr::V4(v4) => (1, v4.octets().to_vec()),
        std::net::IpAddr::V6(v6) => (2, v6.octets().to_vec()),
    };
    let len = usize::from(prefix).div_ceil(8).min(bytes.len());
    ecs_raw(family, prefix, 0, &bytes[..len])
}

impl QueryBuilder {
    /// Adds an ECS option for `net` (see `ecs_payload`), and an OPT record if there is none.
    pub fn ecs(self, net: &str) -> Self {
        self.edns_option(ECS, &ecs_payload(net))
    }
}

/// The ECS option of a response as (family, source prefix, scope prefix, address), or `None`.
pub fn reply_ecs(reply: &Message) -> Option<(u16, u8, u8, std::net::IpAddr)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match reply.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(cs) => Some((
            if cs.addr().is_ipv4() { 1 } else { 2 },
            cs.source_prefix(),
            cs.scope_prefix(),
            cs.addr(),
        )),
        other => panic!("ECS option that did not parse as one: {other:?}"),
    }
}

/// The addresses of the A/AAAA records in the answer section, sorted.
pub fn addresses(reply: &Message) -> Vec<String> {
    let mut v = addresses_in_order(reply);
    v.sort();
    v
}

/// The addresses of the A/AAAA records in the answer section, in wire order.
pub fn addresses_in_order(reply: &Message) -> Vec<String> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// GeoIP databases built by the tests

/// One network of a test GeoIP database, in the GeoIP2-City record layout.
#[derive(Debug, Clone, Copy)]
pub struct GeoRow {
    pub network: &'static str,
    pub continent: &'static str,
    pub country: &'static str,
    pub latitude: f64,
    pub longitude: f64,
}

/// A GeoIP2-City-layout database (IPv6 tree, IPv4 aliased) holding exactly `rows`, built with
/// `mmdb-writer`. Anything not listed is not found.
pub fn geoip_db(rows: &[GeoRow]) -> Vec<u8> {
    let mut w = mmdb_writer::Writer::builder("steerdns-Test-City")
        .description(&[("en", "steerdns integration test database")])
        .build();
    for row in rows {
        let net: ipnet::IpNet = row
            .network
            .parse()
            .unwrap_or_else(|e| panic!("{:?}: {e}", row.network));
        let record = serde_json::json!({
            "continent": { "code": row.continent },
            "country": { "iso_code": row.country },
            "location": { "latitude": row.latitude, "longitude": row.longitude },
        });
        w.insert(net, &record)
            .unwrap_or_else(|e| panic!("inserting {:?}: {e}", row.network));
    }
    w.to_bytes().expect("writing the test database")
}

/// Writes `bytes` to `path` the way a database update should land: a temporary file in the
/// same directory, then a rename over the old one, so the server never reads half a file.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).expect("writing the new file");
    std::fs::rename(&tmp, path).expect("renaming it into place");
}

// ---------------------------------------------------------------------------------------------
// Waiting for the server to change its mind

/// How often `wait_for` polls.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `probe` every `POLL` until it returns `Some`, for at most `limit`. Returns the value
/// and how long it took, or `None` when time ran out.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

impl TestServer {
    /// Waits until the server's log contains `text` at least `times` times.
    pub fn wait_for_log(&self, text: &str, times: usize, limit: Duration) {
        if wait_for(limit, || {
            (self.stderr().matches(text).count() >= times).then_some(())
        })
        .is_none()
        {
            panic!(
                "{text:?} not logged {times} time(s) within {limit:?}; stderr:\n{}",
                self.stderr()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client for the admin API, over HTTP or HTTPS

/// A response from `http_request`.
#[derive(Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON, failing the test if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

/// Shows the body as text, as people read it in a failed test.
impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.text())
            .finish()
    }
}

/// The value of header `name` in `headers` (names in lower case, as parsed here).
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A TCP connection for one request: 2 s to connect, 5 s for each read.
fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// One HTTP/1.1 request with `Connection: close`, blocking with timeouts.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    http_exchange(connect(addr)?, addr, method, path, headers, body)
}

/// `http_request` over TLS, verifying the server's certificate for its IP address with `tls`
/// (see `TestCa::client_config`). A handshake failure is an error.
pub fn https_request(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let conn = rustls::ClientConnection::new(tls.clone(), addr.ip().into())
        .map_err(std::io::Error::other)?;
    let stream = rustls::StreamOwned::new(conn, connect(addr)?);
    http_exchange(stream, addr, method, path, headers, body)
}

/// The certificate (leaf) a TLS server at `addr` presents now to a client trusting `tls`, in a
/// full handshake (a resumed session would show the certificate of the session it resumes).
pub fn presented_certificate(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::pki_types::CertificateDer<'static>> {
    let mut config = (**tls).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), addr.ip().into())
        .map_err(std::io::Error::other)?;
    let mut tcp = connect(addr)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| std::io::Error::other("no certificate presented"))
}

fn http_exchange(
    mut stream: impl Read + Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closed without close_notify, after its whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e),
    }
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("truncated chunk"))?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(|_| bad("bad chunk size"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).ok_or_else(|| bad("truncated chunk"))?);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Test servers whose port can be closed and reopened

/// A TCP server on one address, on plain threads: an accept loop that hands every connection to
/// a handler on a thread of its own, and whose port the test can close and reopen (the address
/// stays the same). Stops when dropped.
pub struct Listener {
    pub addr: SocketAddr,
    shared: Arc<ListenerShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct ListenerShared {
    /// Whether the port should be open.
    listening: AtomicBool,
    /// Whether it is open (the accept loop's answer to `listening`).
    open: AtomicBool,
    stop: AtomicBool,
}

/// What a `Listener` does with a connection: the stream and the client's address.
type Handler = dyn Fn(TcpStream, SocketAddr) + Send + Sync;

impl Listener {
    /// Accepts on `listener` (open from the start), calling `handle` for every connection.
    pub fn start(
        listener: std::net::TcpListener,
        handle: impl Fn(TcpStream, SocketAddr) + Send + Sync + 'static,
    ) -> Listener {
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(ListenerShared {
            listening: AtomicBool::new(true),
            open: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let handle: Arc<Handler> = Arc::new(handle);
        let thread = std::thread::spawn(move || accept_loop(addr, Some(listener), &s, &handle));
        Listener {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// Opens or closes the port, returning once done (a closed port refuses connections).
    pub fn set_listening(&self, on: bool) {
        self.shared.listening.store(on, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.open.load(Ordering::SeqCst) != on {
            assert!(
                Instant::now() < deadline,
                "the server on {} did not {} its port",
                self.addr,
                if on { "open" } else { "close" }
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops accepting for good; returns once the port refuses connections.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    addr: SocketAddr,
    mut listener: Option<std::net::TcpListener>,
    shared: &ListenerShared,
    handle: &Arc<Handler>,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let want = shared.listening.load(Ordering::SeqCst);
        if !want && listener.is_some() {
            listener = None;
        } else if want && listener.is_none() {
            // std sets SO_REUSEADDR, so the port comes back despite TIME_WAIT connections.
            match std::net::TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).expect("a non-blocking listener");
                    listener = Some(l);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        shared.open.store(listener.is_some(), Ordering::SeqCst);
        match listener.as_ref().map(|l| l.accept()) {
            Some(Ok((stream, peer))) => {
                let handle = handle.clone();
                std::thread::spawn(move || handle(stream, peer));
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    // The listener is dropped here: new connections are refused.
}

// ---------------------------------------------------------------------------------------------
// Health-check backends

/// How a `Backend` treats the health checks it receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `200` with the body `HEALTHY_BODY`.
    Healthy,
    /// This status with the healthy body (so only the status is wrong).
    Status(u16),
    /// `200` with this body instead of the healthy one.
    Body(String),
    /// Accept and read the request, never answer (until the mode changes).
    Hang,
    /// Stop listening: connections are refused.
    Closed,
    /// Request number `n` (counting from 0 since the backend started) gets a `500` when
    /// `n % period < failing`, else the healthy answer.
    Flap { period: u64, failing: u64 },
}

/// The body a healthy backend serves; HTTP checks in the tests expect it with `body:`.
pub const HEALTHY_BODY: &str = "status=up";

/// An HTTP/1.1 (or HTTPS) health endpoint on a loopback address, on plain threads, which the
/// test switches between `Mode`s. Stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<BackendShared>,
    listener: Listener,
}

struct BackendShared {
    mode: Mutex<Mode>,
    requests: AtomicU64,
    /// Set when the backend stops, so that hanging connections let go.
    stop: AtomicBool,
    tls: Option<Arc<rustls::ServerConfig>>,
}

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A loopback address no other backend of this process has used: 127.77.0.1, 127.77.0.2, ...
/// Fresh addresses keep parallel tests apart even though their backends share port numbers.
pub fn fresh_loopback() -> std::net::Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ip = std::net::Ipv4Addr::from(u32::from_be_bytes([127, 77, 0, 0]) + n);
        if !matches!(ip.octets()[3], 0 | 255) {
            return ip;
        }
    }
}

/// `n` healthy backends, each on its own fresh loopback address and all on the same port (a
/// check names one port for every endpoint). `tls` makes them HTTPS.
pub fn start_backends(n: usize, tls: Option<Arc<rustls::ServerConfig>>) -> Vec<Backend> {
    'attempt: for _ in 0..20 {
        let ips: Vec<std::net::Ipv4Addr> = (0..n).map(|_| fresh_loopback()).collect();
        let first = std::net::TcpListener::bind((ips[0], 0)).expect("binding a backend");
        let port = first.local_addr().expect("local address").port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match std::net::TcpListener::bind((*ip, port)) {
                Ok(l) => listeners.push(l),
                // Taken on that address by someone else: start over with another port.
                Err(_) => continue 'attempt,
            }
        }
        return listeners
            .into_iter()
            .map(|l| Backend::serve(l, tls.clone()))
            .collect();
    }
    panic!("no port free on {n} fresh loopback addresses after 20 tries");
}

impl Backend {
    fn serve(listener: std::net::TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Backend {
        let shared = Arc::new(BackendShared {
            mode: Mutex::new(Mode::Healthy),
            requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            tls,
        });
        let s = shared.clone();
        let listener = Listener::start(listener, move |stream, _| handle_connection(stream, &s));
        Backend {
            addr: listener.addr,
            shared,
            listener,
        }
    }

    pub fn ip(&self) -> std::net::IpAddr {
        self.addr.ip()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Switches the mode; returns once the backend acts on it (for `Closed`: the listener is
    /// gone; from `Closed`: it listens again).
    pub fn set(&self, mode: Mode) {
        let open = mode != Mode::Closed;
        *self.shared.mode.lock().unwrap() = mode;
        self.listener.set_listening(open);
    }

    /// Stops the backend for good; returns once its port refuses connections.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.listener.stop();
    }

    /// HTTP requests received so far (TCP connections that sent no request are not counted).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Waits for the next HTTP request and returns when it was seen: a few milliseconds after the
    /// probe that sent it started. Panics after `limit`.
    pub fn next_request(&self, limit: Duration) -> Instant {
        let before = self.requests();
        let start = Instant::now();
        while self.requests() == before {
            assert!(
                start.elapsed() < limit,
                "no request to {} within {limit:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Instant::now()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle_connection(stream: TcpStream, shared: &BackendShared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    match shared.tls.clone() {
        None => serve_request(&mut { stream }, shared),
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            serve_request(&mut tls, shared);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

fn serve_request(stream: &mut (impl Read + Write), shared: &BackendShared) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return, // a TCP check, or a client that gave up
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return;
        }
    }
    let n = shared.requests.fetch_add(1, Ordering::SeqCst);
    let mode = shared.mode.lock().unwrap().clone();
    let (status, body) = match mode {
        Mode::Healthy => (200, HEALTHY_BODY.to_string()),
        Mode::Status(s) => (s, HEALTHY_BODY.to_string()),
        Mode::Body(b) => (200, b),
        Mode::Flap { period, failing } if n % period < failing => (500, HEALTHY_BODY.to_string()),
        Mode::Flap { .. } => (200, HEALTHY_BODY.to_string()),
        Mode::Closed => return,
        Mode::Hang => {
            // Hold the connection without a word until the test moves on.
            let until = Instant::now() + Duration::from_secs(10);
            while *shared.mode.lock().unwrap() == Mode::Hang
                && !shared.stop.load(Ordering::SeqCst)
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

/// A zone `api.example.com` whose service `www` has one endpoint in each of two data centers,
/// the first located in Frankfurt and the second in Ashburn, all probed by the check `web`.
/// `dcs` names the data centers and gives their endpoints, `check` is the check (a YAML flow
/// mapping: `{ http: { port: 8080, path: /health }, interval: 1s }`), and `service` the
/// service's other settings on one line (`ttl: 30`, `policy: failover`).
pub fn checked_zone_two_dcs(
    dcs: [(&str, std::net::IpAddr); 2],
    check: &str,
    service: &str,
) -> String {
    let [(first, first_ip), (second, second_ip)] = dcs;
    format!(
        r#"
zone: api.example.com
soa: {{ primary: ns1, contact: hostmaster@example.com }}
nameservers: {{ ns1: [192.0.2.53] }}
datacenters:
  {first}: {{ location: [50.11, 8.68] }}
  {second}: {{ location: [38.95, -77.45] }}
checks:
  web: {check}
records:
  www:
    service:
      {service}
      check: web
      endpoints:
        {first}: [{first_ip}]
        {second}: [{second_ip}]
"#
    )
}

/// A TLS server configuration with a fresh self-signed certificate for `name`.
pub fn self_signed_tls(name: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::generate_simple_self_signed(vec![name.to_string()])
        .expect("generating a certificate");
    let cert = key.cert.der().clone();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .expect("a certificate and key that match");
    Arc::new(config)
}

/// A certificate authority for the admin/peer TLS tests: issues leaf certificates for names or
/// IP addresses, and gives clients that trust it (rustls, or the CLI and nodes through a PEM file).
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
}

/// A leaf certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses, as rcgen reads them).
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).expect("leaf params");
        let key = rcgen::KeyPair::generate().expect("a leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing the leaf");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Issues a certificate for `names` and writes `STEM.crt` and `STEM.key` in `dir`.
    pub fn write_leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf, Leaf) {
        let leaf = self.issue(names);
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &leaf.cert).expect("writing the certificate");
        std::fs::write(&key, &leaf.key).expect("writing the key");
        (cert, key, leaf)
    }

    /// Writes the CA certificate to `path` (for `--peer-ca`, `--ca-file`).
    pub fn write_pem(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("writing the CA certificate");
        path.to_path_buf()
    }

    /// A rustls client configuration that trusts this CA alone.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("adding the CA root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }
}

// ---------------------------------------------------------------------------------------------
// Resolver traffic (issue 12): client networks for ECS from the shipped GeoIP database, and a
// paced load from several resolver addresses at once with every reply checked. Used by the
// `resolver_traffic` tests and the `resolver_farm` bench.

/// The shipped IPv4 city database, the first of the two `serve` reads by default. It places
/// every network `shipped_networks` picks, so the country database behind it never answers for
/// them.
pub const SHIPPED_CITY_DB: &str = "geoip/dbip-city-lite-coarse-ipv4.mmdb";

/// A UDP socket bound to `source` (port 0), with a receive buffer large enough for a flood's
/// replies.
pub fn bound_udp(source: std::net::IpAddr) -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(source, 0)),
        Type::DGRAM,
        None,
    )
    .expect("creating a UDP socket");
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|e| panic!("binding a UDP socket on {source}: {e}"));
    socket.into()
}

/// A data center of the service `www` in the shipped `zones/example.yaml`.
#[derive(Debug, Clone)]
pub struct ExampleDc {
    pub name: String,
    /// Latitude and longitude, degrees.
    pub location: (f64, f64),
    /// Its IPv4 endpoints: an A answer for a client sent here holds only these.
    pub v4: Arc<[std::net::Ipv4Addr]>,
}

/// The data centers of `www.api.example.com`, read from the shipped zone file (so the tests and
/// the bench follow it if it changes), in the order of its `endpoints`.
pub fn example_dcs() -> Vec<ExampleDc> {
    let path = manifest_path("zones/example.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let zone: serde_yaml::Value = serde_yaml::from_str(&text).expect("the example zone is YAML");
    let endpoints = zone["records"]["www"]["service"]["endpoints"]
        .as_mapping()
        .expect("www.api.example.com has endpoints");
    endpoints
        .iter()
        .map(|(name, addresses)| {
            let name = name.as_str().expect("a DC name").to_string();
            let location = &zone["datacenters"][name.as_str()]["location"];
            let degrees = |i: usize| {
                location[i]
                    .as_f64()
                    .unwrap_or_else(|| panic!("DC {name} has no location"))
            };
            ExampleDc {
                location: (degrees(0), degrees(1)),
                v4: addresses
                    .as_sequence()
                    .expect("a list of addresses")
                    .iter()
                    .filter_map(|a| a.as_str()?.parse().ok())
                    .collect(),
                name,
            }
        })
        .collect()
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let (dlat, dlon) = ((b.0 - a.0).to_radians(), (b.1 - a.1).to_radians());
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// A client network to send in ECS, and the data center (an index into `example_dcs()`) the
/// example zone's `nearest` policy must answer it with.
#[derive(Debug, Clone)]
pub struct EcsClient {
    /// "a.b.c.0/24".
    pub network: String,
    pub dc: usize,
}

/// How many of `clients` each DC gets: "fra 526, iad 935, sin 539".
pub fn spread_over_dcs(clients: &[EcsClient], dcs: &[ExampleDc]) -> String {
    dcs.iter()
        .enumerate()
        .map(|(i, dc)| {
            let n = clients.iter().filter(|c| c.dc == i).count();
            format!("{} {n}", dc.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How much nearer than the next one the nearest DC must be for a network to be picked, so
/// that rounding in a distance formula cannot decide its answer.
const CLEAR_MARGIN_KM: f64 = 100.0;

/// `count` distinct IPv4 /24 networks drawn at random from the whole address space (the same
/// ones for the same `seed`), keeping those the shipped city database places with coordinates,
/// each with the DC of `dcs` nearest to it. So they spread over the database's networks the way
/// the address space does: many in North America and Europe, fewer in Asia. A network about as
/// far from two DCs (within `CLEAR_MARGIN_KM`) is skipped.
pub fn shipped_networks(count: usize, seed: u64, dcs: &[ExampleDc]) -> Vec<EcsClient> {
    let path = manifest_path(SHIPPED_CITY_DB);
    let db = maxminddb::Reader::open_readfile(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut state = seed;
    let mut tried = std::collections::HashSet::new();
    let mut picked = Vec::with_capacity(count);
    while picked.len() < count {
        assert!(
            tried.len() < 20 * count + 1000,
            "only {} of {count} networks placed after {} tries",
            picked.len(),
            tried.len()
        );
        let base = std::net::Ipv4Addr::from(splitmix64(&mut state) as u32 & 0xffff_ff00);
        if !tried.insert(base) {
            continue;
        }
        let Ok(found) = db.lookup(base.into()) else {
            continue;
        };
        let degrees = |key: &str| {
            found
                .decode_path::<f64>(&maxminddb::path!["location", key])
                .ok()
                .flatten()
        };
        let (Some(lat), Some(lon)) = (degrees("latitude"), degrees("longitude")) else {
            continue;
        };
        let mut by_distance: Vec<(f64, usize)> = dcs
            .iter()
            .enumerate()
            .map(|(i, dc)| (distance_km((lat, lon), dc.location), i))
            .collect();
        by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
        if by_distance.len() > 1 && by_distance[1].0 - by_distance[0].0 < CLEAR_MARGIN_KM {
            continue;
        }
        picked.push(EcsClient {
            network: format!("{base}/24"),
            dc: by_distance[0].1,
        });
    }
    picked
}

/// A small, seedable generator (SplitMix64): the same networks on every run and machine.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a reply must hold to count as whole.
#[derive(Debug, Clone)]
pub enum Expect {
    /// NOERROR with A records only, each one of these addresses.
    Addresses(Arc<[std::net::Ipv4Addr]>),
    /// NOERROR with this many answer records.
    Records(u16),
    /// NXDOMAIN.
    NxDomain,
}

/// One query of a load, in wire format (the load sets its ID), and what its reply must hold.
#[derive(Debug, Clone)]
pub struct LoadQuery {
    pub wire: Vec<u8>,
    pub expect: Expect,
}

impl LoadQuery {
    pub fn new(q: &QueryBuilder, expect: Expect) -> LoadQuery {
        LoadQuery {
            wire: q.wire(),
            expect,
        }
    }
}

/// What one resolver address sent and got back in a `resolver_load`. Every query sent ends up
/// in exactly one of whole, truncated, dropped and wrong.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub source: std::net::IpAddr,
    pub sent: usize,
    /// Replies with TC clear that hold what the query expects.
    pub whole: usize,
    /// Replies with TC set (RRL's slips among them).
    pub truncated: usize,
    /// Queries with no reply within the timeout (a late reply counts here too).
    pub dropped: usize,
    /// Queries whose reply holds something else: another DC's addresses, another rcode.
    pub wrong: usize,
    /// Replies that fit no query outstanding: unreadable, an unknown ID, a second reply.
    pub stray: usize,
    pub bytes_sent: usize,
    pub bytes_received: usize,
    /// (sent, whole) per kind of query: A answers, other records, NXDOMAIN (`Expect::kind`).
    pub by_kind: [(usize, usize); 3],
    /// The first few wrong or stray replies, described.
    pub examples: Vec<String>,
}

impl LoadReport {
    /// The share of queries answered whole.
    pub fn whole_share(&self) -> f64 {
        self.whole as f64 / self.sent.max(1) as f64
    }

    /// Keeps the first few descriptions of what went wrong.
    fn note(&mut self, what: String) {
        if self.examples.len() < 5 {
            self.examples.push(what);
        }
    }
}

/// Sends from every source at once, each from its own UDP socket bound to its address, `rate`
/// queries a second for `duration`, going round its list of queries, and checks every reply
/// against what its query expects; a query without a reply within `timeout` is dropped. Returns
/// one report per source, in order, once every query is answered or timed out.
pub fn resolver_load(
    server: SocketAddr,
    sources: &[(std::net::IpAddr, Vec<LoadQuery>)],
    rate: f64,
    duration: Duration,
    timeout: Duration,
) -> Vec<LoadReport> {
    let count = (rate * duration.as_secs_f64()).round() as usize;
    assert!(
        (1..=10_000_000).contains(&count),
        "{count} queries per source is out of bounds"
    );
    assert!(
        sources.iter().all(|(_, q)| !q.is_empty()),
        "a source without queries"
    );
    // Every source starts at the same moment, once every thread is up.
    let start = Instant::now() + Duration::from_millis(100);
    std::thread::scope(|scope| {
        let loads: Vec<_> = sources
            .iter()
            .map(|(source, queries)| {
                scope
                    .spawn(move || load_from(*source, server, queries, count, rate, timeout, start))
            })
            .collect();
        loads
            .into_iter()
            .map(|l| l.join().expect("a load thread"))
            .collect()
    })
}

/// What became of one query of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Whole,
    Truncated,
    Wrong,
    Late,
}

/// One source of `resolver_load`: this thread sends, a second one receives.
fn load_from(
    source: std::net::IpAddr,
    server: SocketAddr,
    queries: &[LoadQuery],
    count: usize,
    rate: f64,
    timeout: Duration,
    start: Instant,
) -> LoadReport {
    let socket = bound_udp(source);
    socket.connect(server).expect("connecting the UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("setting a read timeout");
    // When each query went out (ns after `start`), and how many have: the receiver finds a
    // reply's query by its ID, the latest one sent with that ID.
    let sent_at: Vec<AtomicU64> = (0..count).map(|_| AtomicU64::new(0)).collect();
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let socket = socket.try_clone().expect("cloning the socket");
            receive_load(&socket, queries, &sent_at, &sent, &done, timeout, start)
        });
        let mut bytes_sent = 0;
        let mut wire = Vec::with_capacity(512);
        for (i, at) in sent_at.iter().enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            wire.clear();
            wire.extend_from_slice(&queries[i % queries.len()].wire);
            wire[..2].copy_from_slice(&(i as u16).to_be_bytes());
            at.store(start.elapsed().as_nanos() as u64, Ordering::SeqCst);
            sent.store(i as u64 + 1, Ordering::SeqCst);
            socket.send(&wire).expect("sending a query");
            bytes_sent += wire.len();
        }
        done.store(true, Ordering::SeqCst);
        let mut report = receiver.join().expect("the receiver thread");
        report.source = source;
        report.sent = count;
        report.bytes_sent = bytes_sent;
        report
    })
}

/// The receiving half of `load_from`: reads replies until every query sent has had its
/// `timeout`, and tells what became of each.
fn receive_load(
    socket: &UdpSocket,
    queries: &[LoadQuery],
    sent_at: &[AtomicU64],
    sent: &AtomicU64,
    done: &AtomicBool,
    timeout: Duration,
    start: Instant,
) -> LoadReport {
    let mut outcomes = vec![Outcome::Waiting; sent_at.len()];
    let mut report = LoadReport {
        source: std::net::Ipv4Addr::UNSPECIFIED.into(),
        sent: 0,
        whole: 0,
        truncated: 0,
        dropped: 0,
        wrong: 0,
        stray: 0,
        bytes_sent: 0,
        bytes_received: 0,
        by_kind: [(0, 0); 3],
        examples: Vec::new(),
    };
    let mut buf = [0u8; 4096];
    let mut finished_at = None;
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                report.bytes_received += n;
                let now = start.elapsed();
                let reply = read_reply(&buf[..n]);
                let seq = reply
                    .as_ref()
                    .and_then(|r| query_of(r.id, sent.load(Ordering::SeqCst) as usize));
                let (Some(reply), Some(seq)) = (reply, seq) else {
                    report.stray += 1;
                    report.note(format!("a reply of {n} bytes fits no query"));
                    continue;
                };
                if outcomes[seq] != Outcome::Waiting {
                    report.stray += 1;
                    report.note(format!("a second reply to query {seq}"));
                    continue;
                }
                let waited =
                    now.saturating_sub(Duration::from_nanos(sent_at[seq].load(Ordering::SeqCst)));
                let expect = &queries[seq % queries.len()].expect;
                outcomes[seq] = if waited > timeout {
                    Outcome::Late
                } else if reply.tc {
                    Outcome::Truncated
                } else if expect.holds(&reply) {
                    Outcome::Whole
                } else {
                    report.note(format!("query {seq} expects {expect:?}, got {reply:?}"));
                    Outcome::Wrong
                };
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("receiving replies: {e}"),
        }
        if done.load(Ordering::SeqCst) {
            let finished = *finished_at.get_or_insert_with(Instant::now);
            if finished.elapsed() > timeout {
                break;
            }
        }
    }
    for (seq, outcome) in outcomes.into_iter().enumerate() {
        let kind = &mut report.by_kind[queries[seq % queries.len()].expect.kind()];
        kind.0 += 1;
        kind.1 += usize::from(outcome == Outcome::Whole);
        match outcome {
            Outcome::Whole => report.whole += 1,
            Outcome::Truncated => report.truncated += 1,
            Outcome::Wrong => report.wrong += 1,
            Outcome::Waiting | Outcome::Late => report.dropped += 1,
        }
    }
    report
}

/// The query a reply with ID `id` answers, when `sent` queries have gone out with IDs 0, 1, 2,
/// ... (wrapping): the latest of them with that ID. Replies come within seconds, long before
/// an ID comes round again at the rates used here.
fn query_of(id: u16, sent: usize) -> Option<usize> {
    let last = sent.checked_sub(1)?;
    let back = usize::from((last as u16).wrapping_sub(id));
    last.checked_sub(back)
}

/// The parts of a reply a load checks, read straight from the wire (parsing every reply with
/// hickory would cost the client more than the server spends answering).
#[derive(Debug)]
struct ReplyView {
    id: u16,
    tc: bool,
    rcode: u8,
    answers: u16,
    /// The addresses of the answer's A records.
    a: Vec<std::net::Ipv4Addr>,
    /// Answer records of other types.
    other: u16,
}

impl Expect {
    /// Where `LoadReport::by_kind` counts it: 0 A answers, 1 other records, 2 NXDOMAIN.
    pub fn kind(&self) -> usize {
        match self {
            Expect::Addresses(_) => 0,
            Expect::Records(_) => 1,
            Expect::NxDomain => 2,
        }
    }

    fn holds(&self, reply: &ReplyView) -> bool {
        match self {
            Expect::Addresses(allowed) => {
                reply.rcode == 0
                    && reply.other == 0
                    && !reply.a.is_empty()
                    && reply.a.iter().all(|a| allowed.contains(a))
            }
            Expect::Records(n) => reply.rcode == 0 && reply.answers == *n,
            Expect::NxDomain => reply.rcode == 3,
        }
    }
}

/// Reads a response's header and answer section; `None` if it is not a well-formed response.
fn read_reply(msg: &[u8]) -> Option<ReplyView> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    let field = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let mut reply = ReplyView {
        id: field(0),
        tc: msg[2] & 0x02 != 0,
        rcode: msg[3] & 0x0f,
        answers: field(6),
        a: Vec::new(),
        other: 0,
    };
    let mut at = 12;
    for _ in 0..field(4) {
        at = skip_name(msg, at)? + 4;
    }
    for _ in 0..reply.answers {
        at = skip_name(msg, at)?;
        let fixed = msg.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = msg.get(at + 10..at + 10 + len)?;
        match (rtype, data) {
            (1, &[a, b, c, d]) => reply.a.push(std::net::Ipv4Addr::new(a, b, c, d)),
            _ => reply.other += 1,
        }
        at += 10 + len;
    }
    Some(reply)
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + usize::from(len),
            0xc0 => return (at + 1 < msg.len()).then_some(at + 2),
            _ => return None,
        }
    }
}
