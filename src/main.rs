//! The `steerdns` command line: `serve` and `check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use steerdns::app::Node;
use steerdns::config::{Flags, NodeFile, Settings};
use steerdns::zone_file;

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
    Serve(ServeArgs),
    /// Explain the answer a client gets: its location, the DCs in order and why.
    Explain {
        /// The name to ask for, e.g. www.api.example.com.
        name: String,
        /// The resolver's address (decides when there is no subnet).
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
        /// The EDNS Client Subnet the resolver would send, e.g. 81.2.69.0/24.
        #[arg(long)]
        subnet: Option<ipnet::IpNet>,
        /// Query type: A or AAAA (any other type is answered from static records).
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// Directory of zone YAML files.
        #[arg(long, default_value = "zones")]
        zones: PathBuf,
        /// GeoIP database(s) [default: the two shipped in geoip/].
        #[arg(long = "geoip", value_name = "PATH")]
        geoip: Vec<PathBuf>,
    },
    /// Validate zone files and print every error; exit 1 if any.
    Check {
        /// Directory of zone YAML files.
        #[arg(default_value = "zones")]
        dir: PathBuf,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Node config file (YAML); flags override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// DNS listen address for UDP and TCP [default: 127.0.0.1:5300].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of zone YAML files [default: zones].
    #[arg(long)]
    zones: Option<PathBuf>,
    /// GeoIP database (MaxMind format); repeat to stack several, first match wins
    /// [default: the two shipped in geoip/].
    #[arg(long = "geoip", value_name = "PATH")]
    geoip: Vec<PathBuf>,
    /// Local address to send health probes from.
    #[arg(long)]
    probe_source: Option<std::net::IpAddr>,
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Check { dir } => check(&dir),
        Command::Explain {
            name,
            client,
            subnet,
            qtype,
            zones,
            geoip,
        } => match explain(&name, client, subnet, &qtype, &zones, geoip) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("steerdns: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("steerdns: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(dir: &std::path::Path) -> ExitCode {
    match zone_file::load_dir(dir) {
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
            ExitCode::FAILURE
        }
    }
}

fn explain(
    name: &str,
    client: std::net::IpAddr,
    subnet: Option<ipnet::IpNet>,
    qtype: &str,
    zones: &std::path::Path,
    geoip: Vec<PathBuf>,
) -> anyhow::Result<String> {
    use anyhow::Context;
    use steerdns::answer::{self, AllUp, Client, QType};
    use steerdns::model::{Name, RecordType};
    let zones = zone_file::load_dir(zones)
        .with_context(|| format!("loading zones from {}", zones.display()))?;
    let paths = if geoip.is_empty() {
        steerdns::config::DEFAULT_GEOIP
            .iter()
            .map(PathBuf::from)
            .collect()
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
    Ok(answer::explain(&zones, &qname, qtype, &client).to_string())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    let flags = Flags {
        listen: args.listen,
        zones: args.zones,
        geoip: args.geoip,
        probe_source: args.probe_source,
        ready_file: args.ready_file,
    };
    let settings = Settings::resolve(file, flags);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let node = Node::start(settings).await?;
        node.run_until_signalled().await
    })
}

fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    // hickory logs two INFO lines per query; keep it quiet (see shared notes on its cost).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,hickory_server=warn,hickory_proto=warn,hickory_net=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
