//! The `steerdns` command line: `serve` and `check`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use steerdns::app::Node;
use steerdns::config::{NodeFile, Settings};
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
    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Check { dir } => check(&dir),
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

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => NodeFile::load(path)?,
        None => NodeFile::default(),
    };
    let settings = Settings::resolve(file, args.listen, args.zones, args.ready_file);
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
