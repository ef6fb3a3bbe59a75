//! A resolver farm (issue 12): public resolvers asking from a few loopback addresses on behalf
//! of thousands of client networks (EDNS Client Subnet), at a fixed rate, the way a large public
//! or ISP resolver asks a GSLB. The release binary serves the shipped `zones/` with the shipped
//! GeoIP databases, once with response rate limiting at its defaults and once with `--rrl off`,
//! each on a fresh process; the bench prints per resolver address what came back (whole,
//! truncated, dropped, other or wrong) and the server's CPU time per query, in markdown.
//!
//! Each address has its own UDP socket bound to it and sends, in a fixed order that it goes
//! round: `www.api.example.com A` with ECS for one of its own client networks (80%; a whole reply
//! holds only the addresses of that network's nearest DC), a static name (10%: `status` A and
//! AAAA, the apex's TXT and MX, the SRV record) and a name that does not exist (10%), all with
//! ECS, as such resolvers send it on every query. The client networks are real /24s spread over
//! the shipped city database (`support::shipped_networks`), each where the nearest DC is clear.
//!
//! Run: `cargo bench --bench resolver_farm` (about 30 s after the build). Settings (environment):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `FARM_SOURCES` | the resolvers' addresses (127.0.0.0/8 only, at most 16) | `127.0.0.21 127.0.0.22 127.0.0.23 127.0.0.24` |
//! | `FARM_RATE` | queries a second from each address (all addresses: at most 50,000) | 1000 |
//! | `FARM_SECONDS` | how long each run sends (1 to 120) | 10 |
//! | `FARM_NETWORKS` | client networks per address (1 to 50,000) | 2000 |
//! | `FARM_TIMEOUT_MS` | a reply later than this counts as dropped (100 to 5,000) | 1000 |
//!
//! A Rust load rather than dnsperf: each reply is checked against the DC its client network
//! must get, outcomes are counted per source address, and the load is the one the
//! `resolver_traffic` integration tests use (`support::resolver_load`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::RecordType;

#[path = "common/node.rs"]
mod node;
#[path = "../tests/integration/support.rs"]
mod support;

use node::BenchNode;
use support::{
    EcsClient, ExampleDc, Expect, LoadQuery, LoadReport, example_dcs, http_request, query,
    resolver_load, shipped_networks, spread_over_dcs,
};

/// Settings from the environment, checked against the bounds above.
struct Settings {
    sources: Vec<IpAddr>,
    rate: f64,
    duration: Duration,
    networks: usize,
    timeout: Duration,
}

fn settings() -> Settings {
    fn number(name: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
        let n = std::env::var(name)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")))
            .unwrap_or(default);
        assert!(range.contains(&n), "{name}={n} is outside {range:?}");
        n
    }
    let sources: Vec<IpAddr> = std::env::var("FARM_SOURCES")
        .unwrap_or_else(|_| "127.0.0.21 127.0.0.22 127.0.0.23 127.0.0.24".into())
        .split_whitespace()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|e| panic!("FARM_SOURCES: {s:?}: {e}"))
        })
        .collect();
    assert!(
        (1..=16).contains(&sources.len()),
        "FARM_SOURCES: 1 to 16 addresses"
    );
    assert!(
        sources
            .iter()
            .all(|s| matches!(s, IpAddr::V4(v4) if v4.is_loopback())),
        "FARM_SOURCES: loopback addresses (127.0.0.0/8) only"
    );
    let rate = number("FARM_RATE", 1000, 1..=50_000);
    assert!(
        rate * sources.len() as u64 <= 50_000,
        "FARM_RATE × addresses is more than 50,000 queries a second"
    );
    Settings {
        rate: rate as f64,
        duration: Duration::from_secs(number("FARM_SECONDS", 10, 1..=120)),
        networks: number("FARM_NETWORKS", 2000, 1..=50_000) as usize,
        timeout: Duration::from_millis(number("FARM_TIMEOUT_MS", 1000, 100..=5000)),
        sources,
    }
}

/// One address's queries: for each of its networks `www` with ECS, and after every eight of
/// those a static name and a name that does not exist.
fn farm_queries(clients: &[EcsClient], dcs: &[ExampleDc]) -> Vec<LoadQuery> {
    let statics = [
        ("status.api.example.com", RecordType::A),
        ("status.api.example.com", RecordType::AAAA),
        ("api.example.com", RecordType::TXT),
        ("api.example.com", RecordType::MX),
        ("_https._tcp.api.example.com", RecordType::SRV),
    ];
    let mut queries = Vec::with_capacity(clients.len() * 10 / 8 + 2);
    for (i, c) in clients.iter().enumerate() {
        queries.push(LoadQuery::new(
            &query("www.api.example.com", RecordType::A).ecs(&c.network),
            Expect::Addresses(dcs[c.dc].v4.clone()),
        ));
        if i % 8 == 7 {
            let (name, rtype) = statics[(i / 8) % statics.len()];
            queries.push(LoadQuery::new(
                &query(name, rtype).ecs(&c.network),
                Expect::Records(1),
            ));
            let missing = format!("nx-{:012x}.api.example.com", rand::random::<u64>() >> 16);
            queries.push(LoadQuery::new(
                &query(&missing, RecordType::A).ecs(&c.network),
                Expect::NxDomain,
            ));
        }
    }
    queries
}

/// A process's CPU time so far: (user + system, user), from `/proc/PID/stat`. The sum is the
/// process's exact run time (in clock ticks); the kernel divides it into user and system in
/// proportion to timer-tick samples (with `CONFIG_TICK_CPU_ACCOUNTING`), which for a server busy
/// a few percent of the time is a rough estimate: see bench/README.md.
fn cpu_time(pid: u32) -> (Duration, Duration) {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold spaces: the state is
    // field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> u64 { fields[i - 3].parse().expect("a number of clock ticks") };
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let time = |t: u64| Duration::from_secs_f64(t as f64 / per_second);
    (time(ticks(14) + ticks(15)), time(ticks(14)))
}

/// A counter's value on the node's /metrics (0 if absent).
fn counter(admin: SocketAddr, name: &str) -> f64 {
    let r = http_request(admin, "GET", "/metrics", &[], b"").expect("GET /metrics");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One run: what each address got, the server's CPU time (total, user) and RRL counters
/// (dropped, slipped).
struct Run {
    label: &'static str,
    reports: Vec<LoadReport>,
    cpu: (Duration, Duration),
    rrl: (f64, f64),
}

fn run(
    label: &'static str,
    extra: &[&str],
    s: &Settings,
    load: &[(IpAddr, Vec<LoadQuery>)],
) -> Run {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("a temp dir");
    let country = root.join("geoip/dbip-country.mmdb").display().to_string();
    // The city database (BenchNode's) then the country one: serve's default stack.
    let mut args = vec!["--geoip", country.as_str()];
    args.extend_from_slice(extra);
    let node = BenchNode::start(dir.path(), &root.join("zones"), &args);
    let admin: SocketAddr = node.admin.parse().expect("the admin address");
    let pid = node.child.id();
    eprintln!("{label}: started in {:?}, sending", node.started_in);
    let before = cpu_time(pid);
    let reports = resolver_load(node.dns, load, s.rate, s.duration, s.timeout);
    let after = cpu_time(pid);
    Run {
        label,
        reports,
        cpu: (after.0 - before.0, after.1 - before.1),
        rrl: (
            counter(admin, "steerdns_rrl_dropped_total"),
            counter(admin, "steerdns_rrl_slipped_total"),
        ),
    }
}

fn percent(n: usize, of: usize) -> String {
    format!("{:.1}%", 100.0 * n as f64 / of.max(1) as f64)
}

/// One row of the outcome table: an address's counts, or all addresses' added up.
#[derive(Default)]
struct Totals {
    sent: usize,
    whole: usize,
    truncated: usize,
    dropped: usize,
    other: usize,
    by_kind: [(usize, usize); 3],
}

impl Totals {
    fn of(p: &LoadReport) -> Totals {
        let mut t = Totals::default();
        t.add(p);
        t
    }

    fn add(&mut self, p: &LoadReport) {
        self.sent += p.sent;
        self.whole += p.whole;
        self.truncated += p.truncated;
        self.dropped += p.dropped;
        self.other += p.wrong + p.stray;
        for (all, one) in self.by_kind.iter_mut().zip(p.by_kind) {
            all.0 += one.0;
            all.1 += one.1;
        }
    }

    fn row(&self, label: &str, resolver: &str) {
        let kinds: Vec<String> = self.by_kind.iter().map(|k| percent(k.1, k.0)).collect();
        println!(
            "| {label} | {resolver} | {} | {} ({}) | {} | {} | {} | {} |",
            self.sent,
            self.whole,
            percent(self.whole, self.sent),
            self.truncated,
            self.dropped,
            self.other,
            kinds.join(" / ")
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and should not run loads.
    if !std::env::args().any(|a| a == "--bench") {
        println!("resolver_farm: a benchmark; run it with `cargo bench --bench resolver_farm`");
        return;
    }
    let s = settings();
    let dcs = example_dcs();
    let clients = shipped_networks(s.sources.len() * s.networks, 12, &dcs);
    let load: Vec<(IpAddr, Vec<LoadQuery>)> = s
        .sources
        .iter()
        .zip(clients.chunks(s.networks))
        .map(|(source, mine)| (*source, farm_queries(mine, &dcs)))
        .collect();
    let runs = [
        run("on (defaults)", &[], &s, &load),
        run("off", &["--rrl", "off"], &s, &load),
    ];

    let version = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!();
    println!(
        "steerdns {version}, release build on loopback: {} resolver addresses × {} queries/s for \
         {} s; {} client networks ({}); 80% www A with ECS, 10% static, 10% NXDOMAIN; reply \
         timeout {} ms",
        s.sources.len(),
        s.rate,
        s.duration.as_secs(),
        clients.len(),
        spread_over_dcs(&clients, &dcs),
        s.timeout.as_millis()
    );
    println!();
    println!(
        "| RRL | resolver | sent | whole | truncated (TC=1) | dropped | other/wrong | whole: www / static / NXDOMAIN |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        let mut all = Totals::default();
        for p in &r.reports {
            all.add(p);
            Totals::of(p).row(r.label, &p.source.to_string());
        }
        all.row(r.label, "**all**");
    }
    println!();
    println!(
        "| RRL | queries | server CPU per query (user + system) | user only (tick-sampled) | RRL dropped / slipped (server) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &runs {
        let sent: usize = r.reports.iter().map(|p| p.sent).sum();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / sent.max(1) as f64;
        println!(
            "| {} | {sent} | {:.2} µs | {:.2} µs | {} / {} |",
            r.label,
            per(r.cpu.0),
            per(r.cpu.1),
            r.rrl.0,
            r.rrl.1
        );
    }
    for r in &runs {
        for p in r.reports.iter().filter(|p| !p.examples.is_empty()) {
            println!();
            println!("{} {}: {:?}", r.label, p.source, p.examples);
        }
    }
}
