//! The `steerdns` command line: `serve` (the default), `check`, `explain`, `import`, and the
//! commands that talk to a running node's admin API: `status`, `drain`, `undrain`, `reload`.
//!
//! Exit codes: 0 success; 1 the request failed or was refused (invalid zone, drain refused, an
//! import that failed, or left something out under `--strict`, ...); 2 usage error; 3 the node
//! could not be reached.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use steerdns::app::Node;
use steerdns::config::{ADMIN_TOKEN_ENV, Flags, NodeFile, Settings};
use steerdns::zone;

/// Multi-region DNS-based global failover: an authoritative DNS server that answers with the
/// nearest healthy data center.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log format: text (default) or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS for the zones in a directory (the default command).
    Serve(Box<ServeArgs>),
    /// Validate zone files and print every error; exit 1 if any.
    Check {
        /// Directory of zone YAML files [default: zones/ here, in the source repository, or
        /// /etc/steerdns/zones].
        dir: Option<PathBuf>,
    },
    /// Explain the answer a client gets: its location, the DCs in order and why. Reads the zones
    /// and GeoIP data directly (all endpoints taken as up); with --admin, asks a running node,
    /// which explains with its live health: ramps, measured RTTs (its /api/v1/explain).
    Explain {
        /// The name to ask for, e.g. www.api.example.com.
        name: String,
        /// The resolver's address (decides when there is no subnet).
        #[arg(long, default_value = "127.0.0.1")]
        client: IpAddr,
        /// The EDNS Client Subnet the resolver would send, e.g. 81.2.69.0/24.
        #[arg(long)]
        subnet: Option<ipnet::IpNet>,
        /// Query type: A or AAAA (other types are answered from static records).
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// Directory of zone YAML files [default: as for serve].
        #[arg(long)]
        zones: Option<PathBuf>,
        /// GeoIP database(s) [default: the two shipped in geoip/, as for serve].
        #[arg(long = "geoip", value_name = "PATH")]
        geoip: Vec<PathBuf>,
        /// Ask the node at this admin URL instead (live health); --zones and --geoip are then
        /// the node's.
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// With --admin https://...: the CA certificate(s), PEM, the node's must chain to.
        #[arg(long, value_name = "PATH")]
        ca_file: Option<PathBuf>,
    },
    /// Convert another tool's zone into a steerdns zone file; what cannot be expressed is listed
    /// on standard error and at the top of the file.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Show a node's view: every service, DC and endpoint with each node's vote.
    Status(AdminArgs),
    /// Take a DC out of the answers on every node (manual failover).
    Drain {
        /// The data center.
        dc: String,
        /// Only this service (e.g. www.api.example.com); default: every service in the DC.
        #[arg(long)]
        service: Option<String>,
        /// Why, for the status page and logs.
        #[arg(long)]
        reason: Option<String>,
        /// Lift it by itself after this long (e.g. 30m, 2h).
        #[arg(long = "for")]
        duration: Option<String>,
        /// Drain even if a service is left with no healthy DC.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a drained DC back into the answers.
    Undrain {
        dc: String,
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a node reload its zones, GeoIP data and TLS certificate.
    Reload(AdminArgs),
    /// DNSSEC keys: generate one, print the DS records for the parent.
    #[command(subcommand)]
    Dnssec(DnssecCommand),
    /// Run the three-region demo on loopback (three nodes, three DC backends) until Ctrl-C.
    Demo {
        /// Where the demo's zone, configs, state and logs go.
        #[arg(long, default_value = "demo-run")]
        dir: PathBuf,
    },
    /// A tiny HTTP backend answering 200 to everything (a DC in the demo).
    #[command(hide = true)]
    DemoBackend {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "backend")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// An RFC 1035 master file (BIND, NSD, Knot): the zone's static records.
    Bind {
        /// The zone file.
        file: PathBuf,
        /// The zone's apex, e.g. example.com; names in the file are relative to it until a
        /// $ORIGIN line.
        #[arg(long)]
        zone: String,
        #[command(flatten)]
        args: ImportArgs,
    },
    /// An octoDNS YAML zone: static records, and `dynamic` records as services.
    Octodns {
        /// The zone file (octoDNS's YamlProvider names it after the zone: example.com.yaml).
        file: PathBuf,
        /// The zone's apex [default: the file name without .yaml or .yml].
        #[arg(long)]
        zone: Option<String>,
        #[command(flatten)]
        args: ImportArgs,
    },
}

#[derive(clap::Args)]
struct ImportArgs {
    /// Write the zone YAML to this file [default: standard output].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Fail (exit 1, nothing written) when anything is left out or served differently.
    #[arg(long)]
    strict: bool,
    /// A name server of the zone (repeat for each); replaces the source's apex NS records.
    #[arg(long = "nameserver", value_name = "HOST")]
    nameservers: Vec<String>,
}

#[derive(Subcommand)]
enum DnssecCommand {
    /// Generate a signing key (a CSK) for a zone into the key directory and print its file name
    /// and DS record. Name the file in the zone's `dnssec: { key: ... }` and copy it to every
    /// node of the zone.
    Keygen {
        /// The zone, e.g. api.example.com.
        zone: String,
        /// ecdsap256sha256 (13, the default) or ed25519 (15).
        #[arg(long, default_value = "ecdsap256sha256")]
        algorithm: String,
        /// The key directory.
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
    },
    /// Print the DS records (SHA-256) of a zone's keys, to give the parent, and its DNSKEYs.
    Ds {
        /// The zone, e.g. api.example.com.
        zone: String,
        /// Directory of zone YAML files [default: as for serve].
        #[arg(long)]
        zones: Option<PathBuf>,
        /// Read this key file instead of the zone's `dnssec:` block (e.g. a key about to be
        /// pre-published).
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The node's admin URL (https:// for a node with TLS).
    #[arg(long, default_value = "http://127.0.0.1:8053")]
    admin: String,
    /// CA certificate(s), PEM, that an https:// node's certificate must chain to; only these are
    /// trusted then [default: the system's roots].
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// File holding the admin token [or set STEERDNS_ADMIN_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Node config file (YAML); flags override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// This node's id, unique among its peers [default: node-1].
    #[arg(long)]
    node: Option<String>,
    /// The region this node probes from [default: default].
    #[arg(long)]
    region: Option<String>,
    /// DNS listen address for UDP and TCP; repeat to listen on several (IPv6 as [::1]:53)
    /// [default: 127.0.0.1:5300].
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Admin and peer HTTP listen address [default: 127.0.0.1:8053].
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Certificate chain (PEM, leaf first) for HTTPS on the admin/peer listener; needs
    /// --tls-key. With both, the listener speaks HTTPS only.
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// CA certificate(s), PEM, that https:// peers must chain to; only these are trusted then
    /// [default: the system's roots].
    #[arg(long, value_name = "PATH")]
    peer_ca: Option<PathBuf>,
    /// Directory of zone YAML files [default: zones/ here, in the source repository, or
    /// /etc/steerdns/zones].
    #[arg(long)]
    zones: Option<PathBuf>,
    /// GeoIP database (MaxMind format); repeat to stack several, first match wins
    /// [default: the two shipped in geoip/, found here, in the source repository, or in
    /// /usr/share/steerdns/geoip].
    #[arg(long = "geoip", value_name = "PATH")]
    geoip: Vec<PathBuf>,
    /// Local address to send health probes from.
    #[arg(long)]
    probe_source: Option<IpAddr>,
    /// Directory where drains are persisted.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// A peer's admin URL (repeat for each peer).
    #[arg(long = "peer", value_name = "URL")]
    peers: Vec<String>,
    /// File holding the secret shared by all nodes [or set STEERDNS_SECRET].
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// File holding the admin bearer token [or set STEERDNS_ADMIN_TOKEN].
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// How often each peer is pulled [default: 1s].
    #[arg(long)]
    exchange_interval: Option<String>,
    /// Age after which a node's report stops voting [default: 5s].
    #[arg(long)]
    stale_after: Option<String>,
    /// Down votes that take an endpoint out: majority, any, all, or a number [default: majority].
    #[arg(long)]
    quorum: Option<String>,
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Response rate limiting of UDP responses on this node: on or off [default: on; per-zone
    /// limits are set in the zone files].
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    rrl: Option<bool>,
    /// A client network never rate limited (192.0.2.0/24, 2001:db8::/32, or one address);
    /// repeat for several. Replaces the node file's rrl.exempt.
    #[arg(long, value_name = "NET")]
    rrl_exempt: Vec<String>,
    /// DNS TCP connections open at most [default: 1000].
    #[arg(long, value_name = "N")]
    tcp_max_connections: Option<usize>,
    /// DNS TCP connections open at most from one client address (IPv6: one /64); 0 for no cap
    /// [default: no cap].
    #[arg(long, value_name = "N")]
    tcp_max_connections_per_client: Option<usize>,
    /// Quiet time allowed on a DNS TCP connection between messages [default: 10s].
    #[arg(long, value_name = "DURATION")]
    tcp_idle_timeout: Option<String>,
    /// Time allowed for one DNS TCP message from its first byte to its last [default: 5s].
    #[arg(long, value_name = "DURATION")]
    tcp_read_timeout: Option<String>,
    /// Queries answered on one DNS TCP connection before it is closed [default: 100000].
    #[arg(long, value_name = "N")]
    tcp_max_queries: Option<u32>,
    /// How often the status page's timeline is sampled [default: 10s] (for tests).
    #[arg(long, value_name = "DURATION", hide = true)]
    timeline_period: Option<String>,
}

fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

const EXIT_FAILED: u8 = 1;
const EXIT_UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(Box::default()));
    let result = match command {
        Command::Check { dir } => {
            let dir = match dir {
                Some(dir) => dir,
                None => match steerdns::config::default_zones() {
                    Ok(dir) => dir,
                    Err(e) => {
                        eprintln!("steerdns: {e:#}");
                        return ExitCode::from(1);
                    }
                },
            };
            return check(&dir);
        }
        Command::Explain {
            name,
            client,
            subnet,
            qtype,
            zones,
            geoip,
            admin: None,
            ..
        } => explain(&name, client, subnet, &qtype, zones, geoip).map(|t| println!("{t}")),
        Command::Explain {
            name,
            client,
            subnet,
            qtype,
            admin: Some(admin),
            ca_file,
            ..
        } => {
            let a = AdminArgs {
                admin,
                ca_file,
                token_file: None,
                json: false,
            };
            let mut path = format!("/api/v1/explain?name={name}&client={client}&type={qtype}");
            if let Some(net) = subnet {
                path.push_str(&format!("&subnet={net}"));
            }
            admin_call(&a, "GET", &path, None).map(|v| match v.as_str() {
                Some(text) => println!("{text}"),
                None => println!("{v}"),
            })
        }
        Command::Serve(args) => serve(*args),
        Command::Import { from } => import(from),
        Command::Status(a) => admin_call(&a, "GET", "/api/v1/state", None).map(|v| {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", status_table(&v));
            }
        }),
        Command::Drain {
            dc,
            service,
            reason,
            duration,
            force,
            admin,
        } => (|| {
            let for_seconds = duration
                .map(|d| steerdns::zone::check::parse_duration(&d).map(|d| d.as_secs().max(1)))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            let body = serde_json::json!({
                "dc": dc, "service": service, "reason": reason,
                "for_seconds": for_seconds, "force": force,
            });
            let v = admin_call(&admin, "POST", "/api/v1/drain", Some(body))?;
            println!("drained: {}", v["drain"]);
            Ok(())
        })(),
        Command::Undrain { dc, service, admin } => {
            let body = serde_json::json!({ "dc": dc, "service": service });
            admin_call(&admin, "POST", "/api/v1/undrain", Some(body))
                .map(|v| println!("undrained: {}", v["undrain"]))
        }
        Command::Demo { dir } => steerdns::demo::run(&dir),
        Command::DemoBackend { listen, name } => steerdns::demo::backend(listen, &name),
        Command::Reload(a) => admin_call(&a, "POST", "/api/v1/reload", None)
            .map(|v| println!("{}", v["message"].as_str().unwrap_or("reloaded"))),
        Command::Dnssec(c) => dnssec(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steerdns: {e:#}");
            if e.downcast_ref::<Unreachable>().is_some() {
                ExitCode::from(EXIT_UNREACHABLE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// The node did not answer at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the node at {0}: {1}")]
struct Unreachable(String, String);

fn admin_call(
    a: &AdminArgs,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let token = match &a.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var(ADMIN_TOKEN_ENV).ok(),
    };
    let url = format!("{}{path}", a.admin.trim_end_matches('/'));
    let roots = a
        .ca_file
        .as_deref()
        .map(steerdns::tls::read_ca_file)
        .transpose()?;
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
        if let Some(roots) = roots {
            client = client.tls_certs_only(roots);
        }
        let client = client.build()?;
        let mut req = if method == "POST" {
            client.post(&url)
        } else {
            client.get(&url)
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Unreachable(a.admin.clone(), steerdns::health::probe::chain(&e)))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
        if !status.is_success() {
            let msg = v["error"].as_str().map(str::to_string).unwrap_or(text);
            anyhow::bail!("{status}: {msg}");
        }
        Ok(v)
    })
}

/// The state document as a table.
fn status_table(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let node = &v["node"];
    let _ = writeln!(
        out,
        "node {} ({}), ready: {}",
        node["id"].as_str().unwrap_or("?"),
        node["region"].as_str().unwrap_or("?"),
        node["ready"]
    );
    if let Some(iso) = v["isolated"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(out, "isolated (votes ignored): {iso:?}");
    }
    for p in v["peers"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "peer {} ({}): {}",
            p["url"].as_str().unwrap_or("?"),
            p["node"].as_str().unwrap_or("?"),
            match p["last_error"].as_str() {
                Some(e) => format!("unreachable: {e}"),
                None => "ok".into(),
            }
        );
    }
    let _ = writeln!(
        out,
        "{:<28} {:<8} {:<20} {:<9} VOTES",
        "SERVICE", "DC", "ENDPOINT", "EFFECTIVE"
    );
    for s in v["services"].as_array().into_iter().flatten() {
        for dc in s["dcs"].as_array().into_iter().flatten() {
            for ep in dc["endpoints"].as_array().into_iter().flatten() {
                let votes: Vec<String> = ep["votes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        format!(
                            "{}:{}{}",
                            x["node"].as_str().unwrap_or("?"),
                            if x["up"].as_bool() == Some(true) {
                                "up"
                            } else {
                                "down"
                            },
                            if x["fresh"].as_bool() == Some(true) {
                                ""
                            } else {
                                "(stale)"
                            }
                        )
                    })
                    .collect();
                let eff = if dc["drained"].as_bool() == Some(true) {
                    "drained"
                } else {
                    ep["effective"].as_str().unwrap_or("?")
                };
                let _ = writeln!(
                    out,
                    "{:<28} {:<8} {:<20} {:<9} {}",
                    s["name"].as_str().unwrap_or("?"),
                    dc["name"].as_str().unwrap_or("?"),
                    ep["address"].as_str().unwrap_or("?"),
                    eff,
                    votes.join(" ")
                );
            }
        }
    }
    for d in v["drains"].as_array().into_iter().flatten() {
        if d["in_force"].as_bool() == Some(true) {
            let _ = writeln!(
                out,
                "drain: {} {} by {}: {}",
                d["dc"].as_str().unwrap_or("?"),
                d["service"].as_str().unwrap_or("(all services)"),
                d["issued_by"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or("")
            );
        }
    }
    out
}

/// `steerdns import`: warnings to standard error, the YAML to the output (nothing when the
/// import fails, or warns under `--strict`), a summary line last.
fn import(from: ImportFrom) -> anyhow::Result<()> {
    use steerdns::import::{self, Options};
    let (imported, args) = match from {
        ImportFrom::Bind { file, zone, args } => {
            let options = Options {
                nameservers: args.nameservers.clone(),
            };
            (import::bind::load(&file, &zone, &options)?, args)
        }
        ImportFrom::Octodns { file, zone, args } => {
            let options = Options {
                nameservers: args.nameservers.clone(),
            };
            (
                import::octodns::load(&file, zone.as_deref(), &options)?,
                args,
            )
        }
    };
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    let warned = imported.warnings.len();
    if args.strict && warned > 0 {
        anyhow::bail!(
            "--strict: {warned} record(s) left out or served differently (listed above); nothing \
             written"
        );
    }
    match &args.output {
        Some(path) => steerdns::files::write_atomically(path, imported.yaml.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{}", imported.yaml),
    }
    let services = imported
        .zone
        .nodes
        .values()
        .filter(|n| n.service.is_some())
        .count();
    eprintln!(
        "imported zone {}: {} names, {services} service(s), {warned} warning(s){}",
        imported.zone.apex,
        imported.zone.nodes.len(),
        if warned > 0 {
            " (also listed at the top of the file)"
        } else {
            ""
        }
    );
    Ok(())
}

fn check(dir: &Path) -> ExitCode {
    match zone::file::load_dir(dir) {
        Ok(set) => {
            for z in &set.zones {
                println!(
                    "ok: zone {} ({}, {} names)",
                    z.apex,
                    z.source,
                    z.nodes.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.0.len());
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn explain(
    name: &str,
    client: IpAddr,
    subnet: Option<ipnet::IpNet>,
    qtype: &str,
    zones: Option<PathBuf>,
    geoip: Vec<PathBuf>,
) -> anyhow::Result<String> {
    use steerdns::dns::answer::{self, AllUp, Client, QType};
    use steerdns::zone::{Name, RecordType};
    let zones = match zones {
        Some(dir) => dir,
        None => steerdns::config::default_zones()?,
    };
    let zones = zone::file::load_dir(&zones)
        .with_context(|| format!("loading zones from {}", zones.display()))?;
    let paths = if geoip.is_empty() {
        steerdns::config::default_geoip()?
    } else {
        geoip
    };
    let db = steerdns::geo::GeoDb::open(&paths)?;
    let qname = Name::parse(name).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let qtype = match qtype.to_ascii_uppercase().as_str() {
        "A" => QType::Known(RecordType::A),
        "AAAA" => QType::Known(RecordType::Aaaa),
        "TXT" => QType::Known(RecordType::Txt),
        "MX" => QType::Known(RecordType::Mx),
        "NS" => QType::Known(RecordType::Ns),
        "SOA" => QType::Known(RecordType::Soa),
        "CNAME" => QType::Known(RecordType::Cname),
        "SRV" => QType::Known(RecordType::Srv),
        "CAA" => QType::Known(RecordType::Caa),
        "ANY" => QType::Any,
        other => anyhow::bail!("unsupported query type {other}"),
    };
    let (addr, ecs_prefix) = match subnet {
        Some(net) if net.prefix_len() > 0 => (net.network(), Some(net.prefix_len())),
        _ => (client, None),
    };
    let client = Client {
        addr,
        ecs_prefix,
        locator: &db,
        health: &AllUp,
        rotation: 0,
    };
    let text = answer::explain(&zones, &qname, qtype, &client).to_string();
    // DNSSEC (issue 15): whether a resolver asking with DO=1 gets signatures, and whose.
    match zones.find(&qname) {
        Some(zone) => Ok(format!(
            "{text}\ndnssec:    {}",
            steerdns::dnssec::describe(zone)
        )),
        None => Ok(text),
    }
}

fn dnssec(command: DnssecCommand) -> anyhow::Result<()> {
    use steerdns::zone::Name;
    use steerdns::zone::key::{self, Algorithm, ZoneKey};
    match command {
        DnssecCommand::Keygen {
            zone,
            algorithm,
            dir,
        } => {
            let apex = Name::parse(&zone).map_err(|e| anyhow::anyhow!("{zone}: {e}"))?;
            let alg = Algorithm::parse(&algorithm).ok_or_else(|| {
                anyhow::anyhow!("--algorithm {algorithm}: use ecdsap256sha256 (13) or ed25519 (15)")
            })?;
            let (text, tag) = key::generate(&apex, alg)?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the key directory {}", dir.display()))?;
            let path = dir.join(key::file_name(&apex, alg, tag));
            if path.exists() {
                anyhow::bail!("{} exists already; run keygen again", path.display());
            }
            write_secret(&path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            let key = ZoneKey::load(&path, &apex)?;
            println!("{}", path.display());
            println!("{}", key.ds_text());
            Ok(())
        }
        DnssecCommand::Ds { zone, zones, key } => {
            let apex = Name::parse(&zone).map_err(|e| anyhow::anyhow!("{zone}: {e}"))?;
            let keys: Vec<std::sync::Arc<ZoneKey>> = match key {
                Some(path) => vec![std::sync::Arc::new(ZoneKey::load(&path, &apex)?)],
                None => {
                    let dir = match zones {
                        Some(dir) => dir,
                        None => steerdns::config::default_zones()?,
                    };
                    let set = zone::file::load_dir(&dir)
                        .with_context(|| format!("loading zones from {}", dir.display()))?;
                    let z =
                        set.zones.iter().find(|z| z.apex == apex).ok_or_else(|| {
                            anyhow::anyhow!("no zone {apex} in {}", dir.display())
                        })?;
                    let d = z.dnssec.as_ref().ok_or_else(|| {
                        anyhow::anyhow!("zone {apex} ({}) has no dnssec: block", z.source)
                    })?;
                    d.keys().cloned().collect()
                }
            };
            // Written rather than printed: a closed pipe (`| head -1`) is an error, not a panic.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for k in &keys {
                writeln!(out, "{}", k.ds_text())?;
            }
            for k in &keys {
                writeln!(out, "; {}", k.dnskey_text())?;
            }
            Ok(())
        }
    }
}

/// Writes a new file readable by its owner only.
fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    let flags = Flags {
        node: args.node,
        region: args.region,
        listen: args.listen,
        admin: args.admin,
        zones: args.zones,
        geoip: args.geoip,
        probe_source: args.probe_source,
        state_dir: args.state_dir,
        peers: args.peers,
        secret_file: args.secret_file,
        admin_token_file: args.admin_token_file,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        peer_ca: args.peer_ca,
        exchange_interval: args.exchange_interval,
        stale_after: args.stale_after,
        quorum: args.quorum,
        ready_file: args.ready_file,
        rrl: args.rrl,
        rrl_exempt: args.rrl_exempt,
        tcp_max_connections: args.tcp_max_connections,
        tcp_max_connections_per_client: args.tcp_max_connections_per_client,
        tcp_idle_timeout: args.tcp_idle_timeout,
        tcp_read_timeout: args.tcp_read_timeout,
        tcp_max_queries: args.tcp_max_queries,
        timeline_period: args.timeline_period,
    };
    let settings = Settings::resolve(file, flags)?;
    steerdns::app::tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let node = Node::start(settings).await?;
        notify_systemd(b"READY=1");
        node.run_until_signalled().await
    })
}

/// Tells systemd (a unit with `Type=notify`, as the Debian package's) how the service is doing:
/// `READY=1` once the zones and GeoIP data are loaded and every DNS listener is bound, so that
/// units ordered after this one start when it answers. The sd_notify protocol is one datagram
/// to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@` and an abstract name); without
/// that variable (not started by systemd) this does nothing. A failure is logged, not fatal: the
/// node serves anyway, and systemd reports the start as timed out.
fn notify_systemd(message: &[u8]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(error) = send_datagram(&socket, message) {
        tracing::warn!(%error, socket = ?socket, "could not notify systemd");
    }
}

fn send_datagram(socket: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return Err(std::io::ErrorKind::Unsupported.into()),
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(message, &addr)?;
    Ok(())
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    // hickory logs two INFO lines per query; keep it quiet (see shared notes on its cost).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,hickory_server=warn,hickory_proto=warn,hickory_net=warn")
    });
    // Colours only for a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
