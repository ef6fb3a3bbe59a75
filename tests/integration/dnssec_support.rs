//! Helpers for the DNSSEC tests (issue 15): keys made with the real `steerdns dnssec keygen`,
//! signed zone directories, and the two validators: BIND's `delv` (one question, a trust
//! anchor file, no cache) and Unbound (a resolver with a cache and ECS, forwarding the zone to
//! the node under test). Both stay on loopback: delv asks the server it is given, and Unbound
//! stubs the zone to the node and forwards everything else to 127.0.0.1 port 9 (discard), so
//! no query leaves the machine. And a relay that tampers with signatures on their way.

#![allow(dead_code)] // Not every test uses every helper.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};

use crate::support::*;

/// How long one delv run may take.
const DELV_TIMEOUT: Duration = Duration::from_secs(20);

/// A key made by `steerdns dnssec keygen`: its file and its DS in presentation format.
#[derive(Debug, Clone)]
pub struct Key {
    pub path: PathBuf,
    pub ds: String,
    pub tag: u16,
}

/// Runs `steerdns dnssec keygen ZONE --dir DIR --algorithm ALG` in `cwd`.
pub fn keygen(cwd: &Path, zone: &str, dir: &str, algorithm: &str) -> Key {
    let run = run_steerdns(
        cwd,
        &[
            "dnssec".as_ref(),
            "keygen".as_ref(),
            zone.as_ref(),
            "--dir".as_ref(),
            dir.as_ref(),
            "--algorithm".as_ref(),
            algorithm.as_ref(),
        ],
    );
    assert_eq!(run.code(), Some(0), "keygen: {}", run.stderr);
    let mut lines = run.stdout.lines();
    let path = cwd.join(lines.next().expect("keygen prints the key file"));
    let ds = lines.next().expect("keygen prints the DS").to_string();
    let tag = ds
        .split_whitespace()
        .nth(3)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no key tag in {ds:?}"));
    Key { path, ds, tag }
}

/// A directory with `keys/` and `zones/zone.yaml`: `yaml` with a `dnssec:` block naming
/// `key` (and `publish`), relative to the zone file.
pub struct SignedZone {
    pub dir: tempfile::TempDir,
}

impl SignedZone {
    pub fn new() -> SignedZone {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(dir.path().join("zones")).expect("the zone dir");
        SignedZone { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn zones(&self) -> PathBuf {
        self.dir.path().join("zones")
    }

    /// A new key for api.example.com in `keys/`.
    pub fn keygen(&self, algorithm: &str) -> Key {
        keygen(self.path(), "api.example.com", "keys", algorithm)
    }

    /// Writes the zone file: `yaml` plus `dnssec: { key, publish, dnskey_ttl }`.
    pub fn write(&self, yaml: &str, key: &Key, publish: &[&Key], dnskey_ttl: Option<u32>) {
        let rel = |k: &Key| format!("\"../keys/{}\"", file_name(&k.path));
        let publish: Vec<String> = publish.iter().map(|k| rel(k)).collect();
        let ttl = dnskey_ttl.map_or(String::new(), |t| format!(", dnskey_ttl: {t}"));
        let text = format!(
            "{yaml}\ndnssec: {{ key: {}, publish: [{}]{ttl} }}\n",
            rel(key),
            publish.join(", ")
        );
        replace_file(&self.zones().join("zone.yaml"), text.as_bytes());
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// A delv trust anchor file holding these DS records (`api.example.com. IN DS tag alg type hex`).
pub fn anchor_file(dir: &Path, name: &str, ds: &[&str]) -> PathBuf {
    let mut text = String::from("trust-anchors {\n");
    for d in ds {
        let f: Vec<&str> = d.split_whitespace().collect();
        assert_eq!(f.len(), 7, "a DS line: {d:?}");
        text.push_str(&format!(
            "  \"{}\" static-ds {} {} {} \"{}\";\n",
            f[0], f[3], f[4], f[5], f[6]
        ));
    }
    text.push_str("};\n");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing the anchor file");
    path
}

/// What delv said about one question.
#[derive(Debug)]
pub struct Delv {
    pub out: String,
}

impl Delv {
    /// "fully validated" (a positive answer, or a negative one proven by its NSEC).
    pub fn validated(&self) -> bool {
        self.out.contains("; fully validated")
            || self.out.contains("negative response, fully validated")
    }

    /// A negative answer, validated.
    pub fn validated_negative(&self) -> bool {
        self.out.contains("; negative response, fully validated")
    }

    /// Validation failed (a broken chain of trust, a bad signature).
    pub fn failed(&self) -> bool {
        !self.validated()
            && (self.out.contains("resolution failed") || self.out.contains("no valid"))
    }
}

/// `delv @server -p PORT -a ANCHOR +root=api.example.com NAME TYPE`: asks only `server`
/// (over loopback), validating up to the anchor.
pub fn delv(server: SocketAddr, anchor: &Path, name: &str, qtype: &str) -> Delv {
    let mut cmd = Command::new("delv");
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg("-a")
        .arg(anchor)
        .arg("+root=api.example.com")
        .args(["+nomtrace", "+novtrace"])
        .arg(name)
        .arg(qtype);
    let run = run_command(cmd, &format!("delv {name} {qtype}"), DELV_TIMEOUT);
    Delv {
        out: format!("{}{}", run.stdout, run.stderr),
    }
}

/// An Unbound resolver on loopback: validating with the given DS records as trust anchors,
/// ECS on (it sends the client's subnet to the node and caches per subnet), the zone stubbed to
/// `node`, everything else forwarded to the discard port on loopback. Killed when dropped.
pub struct Unbound {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Unbound {
    pub fn start(node: SocketAddr, anchors: &[&str]) -> Unbound {
        for _ in 0..10 {
            // A port free for UDP now; Unbound binds UDP and TCP on it.
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free port")
                .port();
            let dir = tempfile::tempdir().expect("a temp dir");
            let anchors: String = anchors
                .iter()
                .map(|a| format!("    trust-anchor: \"{a}\"\n"))
                .collect();
            let conf = format!(
                r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    access-control: 127.0.0.0/8 allow
    outgoing-interface: 127.0.0.1
    do-not-query-localhost: no
    module-config: "subnetcache validator iterator"
    send-client-subnet: 127.0.0.1
    client-subnet-always-forward: yes
    max-client-subnet-ipv4: 24
    trust-anchor-signaling: no
    target-fetch-policy: "0 0 0 0 0"
    qname-minimisation: no
    prefetch: no
    prefetch-key: no
{anchors}stub-zone:
    name: "api.example.com"
    stub-addr: {}@{}
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@9
"#,
                node.ip(),
                node.port(),
                dir = dir.path().display(),
            );
            let conf_path = dir.path().join("unbound.conf");
            std::fs::write(&conf_path, conf).expect("writing unbound.conf");
            let log = std::fs::File::create(dir.path().join("unbound.log")).expect("a log file");
            let mut child = Command::new("unbound")
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("the log file"))
                .stderr(log)
                .spawn()
                .expect("starting unbound (install the unbound package)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait().expect("polling unbound") {
                    // Most likely the port was taken in between: try another.
                    let log = std::fs::read_to_string(dir.path().join("unbound.log"));
                    eprintln!("unbound exited ({status}): {log:?}");
                    break;
                }
                if ask(addr, &query("api.example.com", RecordType::SOA)).is_some() {
                    return Unbound { addr, child, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("unbound did not start");
    }

    /// Asks Unbound (RD set, DO set).
    pub fn query(&self, q: QueryBuilder) -> Message {
        let q = q.dnssec_ok();
        ask(self.addr, &q).unwrap_or_else(|| panic!("no answer from unbound; log:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One UDP exchange with a short timeout; `None` when nothing (or garbage) comes back.
fn ask(addr: SocketAddr, q: &QueryBuilder) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    socket.send_to(&q.wire(), addr).ok()?;
    let mut buf = vec![0; 65_535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

/// The RDATA of the RRSIGs in a section of a reply (hickory without DNSSEC support reads
/// them as unknown records).
pub fn rrsigs(records: &[hickory_proto::rr::Record]) -> Vec<Vec<u8>> {
    records
        .iter()
        .filter(|r| r.record_type() == RecordType::RRSIG)
        .map(|r| match &r.data {
            RData::Unknown { rdata, .. } => rdata.anything.to_vec(),
            other => panic!("an RRSIG read as {other:?}"),
        })
        .collect()
}

/// A UDP relay on loopback between a validator and the node that changes each answer on the
/// way with `tamper` (given the reply's bytes). Stops when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub fn start(node: SocketAddr, tamper: fn(&mut Vec<u8>)) -> Relay {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding the relay");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a timeout");
        let addr = socket.local_addr().expect("its address");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0; 65_535];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, client)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let upstream = udp_socket(node);
                if upstream.send(&buf[..n]).is_err() {
                    continue;
                }
                let mut reply = vec![0; 65_535];
                let Ok(m) = upstream.recv(&mut reply) else {
                    continue;
                };
                reply.truncate(m);
                tamper(&mut reply);
                let _ = socket.send_to(&reply, client);
            }
        });
        Relay {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Flips a bit in the signature of every RRSIG over an A RRset (the DNSKEY set's stays good,
/// so the chain of trust holds and only the answer's signature is wrong).
pub fn break_a_signatures(reply: &mut Vec<u8>) {
    let Ok(mut msg) = Message::from_vec(reply) else {
        return;
    };
    for r in msg.answers.iter_mut() {
        if let RData::Unknown { code, rdata } = &mut r.data
            && *code == RecordType::RRSIG
            && rdata.anything.get(..2) == Some(&[0, 1])
        {
            let mut bytes = rdata.anything.to_vec();
            if let Some(last) = bytes.last_mut() {
                *last ^= 1;
            }
            *rdata = hickory_proto::rr::rdata::NULL::with(bytes);
        }
    }
    if let Ok(bytes) = msg.to_vec() {
        *reply = bytes;
    }
}

/// Changes the address of every A record (a forged answer keeping its genuine signature).
pub fn forge_addresses(reply: &mut Vec<u8>) {
    let Ok(mut msg) = Message::from_vec(reply) else {
        return;
    };
    for r in msg.answers.iter_mut() {
        if let RData::A(a) = &mut r.data {
            a.0 = std::net::Ipv4Addr::new(192, 0, 2, 66);
        }
    }
    if let Ok(bytes) = msg.to_vec() {
        *reply = bytes;
    }
}
