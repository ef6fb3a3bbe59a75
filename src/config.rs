//! Node settings: identity, listen addresses, zones and GeoIP data, peers and their shared secret,
//! TLS of the admin/peer listener, state directory. Read from an optional YAML node config file;
//! command-line flags override it. Secrets come from files or the environment, never from the
//! zone files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::health::merge::Quorum;
use crate::tls::TlsFiles;
use crate::zone::check::parse_duration;
use crate::{dns, rrl};

/// Where the DNS frontend listens when nothing else is said.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5300";
/// Where the admin/peer HTTP listener binds when nothing else is said.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8053";
/// Environment variables that may hold the secrets.
pub const SECRET_ENV: &str = "STEERDNS_SECRET";
pub const ADMIN_TOKEN_ENV: &str = "STEERDNS_ADMIN_TOKEN";

/// The shipped databases: DB-IP City Lite (coarse, IPv4) for coordinates, then DB-IP Country
/// Lite for IPv6 and anything the first does not know.
pub const DEFAULT_GEOIP: [&str; 2] = [
    "geoip/dbip-city-lite-coarse-ipv4.mmdb",
    "geoip/dbip-country.mmdb",
];

/// Where the zone directory and the GeoIP data are looked for when none is given, in order:
/// the working directory, the steerdns checkout it lies in (a directory up with `Cargo.toml`,
/// `zones/` and `geoip/`, so that `cargo run` works from `src/` too), then where the package
/// installs them.
fn default_places(installed: &str) -> Vec<PathBuf> {
    let mut places = vec![PathBuf::from(".")];
    if let Ok(cwd) = std::env::current_dir()
        && let Some(checkout) = cwd.ancestors().skip(1).find(|d| {
            d.join("Cargo.toml").is_file() && d.join("zones").is_dir() && d.join("geoip").is_dir()
        })
    {
        places.push(checkout.to_path_buf());
    }
    places.push(PathBuf::from(installed));
    places
}

/// The places `rel` was looked for, for an error message.
fn looked_in(places: &[PathBuf], rel: &str) -> String {
    let all: Vec<String> = places
        .iter()
        .map(|p| p.join(rel).display().to_string())
        .collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => all.concat(),
    }
}

/// The zone directory to serve when none is given: `zones/` in the first of the default places
/// (see `default_places`) that has one.
pub fn default_zones() -> anyhow::Result<PathBuf> {
    let places = default_places("/etc/steerdns");
    places
        .iter()
        .map(|p| p.join("zones"))
        .find(|dir| dir.is_dir())
        .with_context(|| {
            format!(
                "no zone directory given, and none at {}: give one with --zones DIR (or zones: in the node file)",
                looked_in(&places, "zones")
            )
        })
}

/// The GeoIP databases to use when none is given: the two shipped ones, from the first of the
/// default places that has them.
pub fn default_geoip() -> anyhow::Result<Vec<PathBuf>> {
    let places = default_places("/usr/share/steerdns");
    places
        .iter()
        .find(|p| p.join(DEFAULT_GEOIP[0]).is_file())
        .map(|p| {
            DEFAULT_GEOIP
                .iter()
                .map(|f| {
                    let path = p.join(f);
                    // `./geoip/x` reads better as `geoip/x`.
                    path.strip_prefix(".").map(Path::to_path_buf).unwrap_or(path)
                })
                .collect()
        })
        .with_context(|| {
            format!(
                "no GeoIP database given, and none at {}: give one with --geoip FILE (or geoip: in the node file)",
                looked_in(&places, DEFAULT_GEOIP[0])
            )
        })
}

/// A node config file, as written. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's id, unique among the peers.
    pub node: Option<String>,
    /// The region the node probes from.
    pub region: Option<String>,
    /// DNS listen address(es), UDP and TCP: one, or a list.
    pub listen: Option<RawListen>,
    /// Admin and peer HTTP listen address.
    pub admin: Option<SocketAddr>,
    /// HTTPS on the admin/peer listener: certificate and key files (PEM). Without it, HTTP.
    pub tls: Option<RawTls>,
    /// Directory of zone YAML files.
    pub zones: Option<PathBuf>,
    /// GeoIP databases (MaxMind format), in order of preference.
    pub geoip: Option<Vec<PathBuf>>,
    /// Local address health probes are sent from.
    pub probe_source: Option<IpAddr>,
    /// Where drains are persisted.
    pub state_dir: Option<PathBuf>,
    /// Base URLs of the other nodes' admin/peer listeners (`http://10.1.0.53:8053`, or
    /// `https://` for peers with `tls`).
    #[serde(default)]
    pub peers: Vec<String>,
    /// CA certificates (PEM) that `https://` peers' certificates must chain to; only these are
    /// trusted then. Without it, the system's roots.
    pub peer_ca_file: Option<PathBuf>,
    /// File holding the secret shared by all nodes (or set STEERDNS_SECRET).
    pub secret_file: Option<PathBuf>,
    /// File holding the admin bearer token (or set STEERDNS_ADMIN_TOKEN).
    pub admin_token_file: Option<PathBuf>,
    /// Whether reads of the admin API need the token too.
    pub protect_reads: Option<bool>,
    /// How often each peer is pulled ("1s").
    pub exchange_interval: Option<String>,
    /// Age after which a node's report stops voting ("5s").
    pub stale_after: Option<String>,
    /// majority (default), any, all, or a number of down votes.
    pub quorum: Option<String>,
    /// Response rate limiting on this node (per-zone limits are in the zone files).
    pub rrl: Option<RawRrl>,
    /// Limits of DNS over TCP.
    pub tcp: Option<RawTcp>,
}

/// `listen:` in the node config file: `127.0.0.1:53`, or `[127.0.0.1:53, "[::1]:53"]` (an IPv6
/// address in brackets must be quoted in YAML). Read as text, so that a bad entry is reported
/// by itself.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "an address and port such as 127.0.0.1:53, or a list of them"
)]
pub enum RawListen {
    One(String),
    Many(Vec<String>),
}

/// `tls:` in the node config file: both files, or no `tls:` at all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// `rrl:` in the node config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRrl {
    /// false switches RRL off on this node, whatever the zones say.
    pub enabled: Option<bool>,
    /// Buckets kept at most (the least recently used is evicted beyond).
    pub max_entries: Option<usize>,
    /// Client networks never limited (`192.0.2.0/24`, `2001:db8::/32`, or one address).
    pub exempt: Option<Vec<String>>,
}

/// `tcp:` in the node config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub max_connections: Option<usize>,
    /// 0: no cap per client (the default).
    pub max_connections_per_client: Option<usize>,
    /// Between messages ("10s").
    pub idle_timeout: Option<String>,
    /// For one message from its first byte, and for writing responses ("5s").
    pub read_timeout: Option<String>,
    pub max_queries_per_connection: Option<u32>,
}

impl NodeFile {
    pub fn parse(text: &str) -> Result<NodeFile, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    pub fn load(path: &Path) -> anyhow::Result<NodeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading node config {}", path.display()))?;
        NodeFile::parse(&text).with_context(|| format!("parsing node config {}", path.display()))
    }
}

/// Settings given on the command line; each overrides the node config file.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub node: Option<String>,
    pub region: Option<String>,
    /// `--listen`, repeated; replaces the file's list when given.
    pub listen: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub zones: Option<PathBuf>,
    pub geoip: Vec<PathBuf>,
    pub probe_source: Option<IpAddr>,
    pub state_dir: Option<PathBuf>,
    pub peers: Vec<String>,
    pub secret_file: Option<PathBuf>,
    pub admin_token_file: Option<PathBuf>,
    /// `--tls-cert`, `--tls-key`, `--peer-ca`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
    pub exchange_interval: Option<String>,
    pub stale_after: Option<String>,
    pub quorum: Option<String>,
    pub ready_file: Option<PathBuf>,
    /// `--rrl on|off`.
    pub rrl: Option<bool>,
    /// `--rrl-exempt NET`, repeated; replaces the file's `rrl.exempt` when given.
    pub rrl_exempt: Vec<String>,
    pub tcp_max_connections: Option<usize>,
    pub tcp_max_connections_per_client: Option<usize>,
    pub tcp_idle_timeout: Option<String>,
    pub tcp_read_timeout: Option<String>,
    pub tcp_max_queries: Option<u32>,
    /// `--timeline-period` (hidden; tests take 1-second samples).
    pub timeline_period: Option<String>,
}

/// Effective settings of a node.
#[derive(Clone)]
pub struct Settings {
    pub node: String,
    pub region: String,
    /// DNS listen addresses (UDP and TCP on each); at least one, no two alike.
    pub listen: Vec<SocketAddr>,
    pub admin: SocketAddr,
    /// When set, the admin/peer listener speaks HTTPS only, with this certificate.
    pub tls: Option<TlsFiles>,
    pub zones: PathBuf,
    /// GeoIP databases, first match wins.
    pub geoip: Vec<PathBuf>,
    /// Local address health probes are sent from (so a node's vantage point is its own).
    pub probe_source: Option<IpAddr>,
    pub state_dir: Option<PathBuf>,
    pub peers: Vec<String>,
    /// The only CAs `https://` peers are trusted by, when set.
    pub peer_ca: Option<PathBuf>,
    /// The shared secret peer messages are signed with.
    pub secret: Option<Vec<u8>>,
    /// The bearer token admin changes need.
    pub admin_token: Option<String>,
    pub protect_reads: bool,
    pub exchange_interval: Duration,
    pub stale_after: Duration,
    pub quorum: Quorum,
    /// Where to write the bound addresses once listening (for scripts and tests).
    pub ready_file: Option<PathBuf>,
    /// RRL and TCP limits of the DNS frontend.
    pub dns: dns::Options,
    /// How often the status page's timeline is sampled.
    pub timeline_period: Duration,
}

impl std::fmt::Debug for Settings {
    // Hand-written so that secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("node", &self.node)
            .field("region", &self.region)
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("tls", &self.tls)
            .field("zones", &self.zones)
            .field("peers", &self.peers)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Defaults, then the file, then explicit flags; secrets from files, then the environment.
    pub fn resolve(file: NodeFile, flags: Flags) -> anyhow::Result<Settings> {
        let dns = dns_options(
            &flags,
            file.rrl.unwrap_or_default(),
            file.tcp.unwrap_or_default(),
        )?;
        let secret = read_secret(flags.secret_file.or(file.secret_file), SECRET_ENV)?;
        let admin_token = read_secret(
            flags.admin_token_file.or(file.admin_token_file),
            ADMIN_TOKEN_ENV,
        )?
        .map(String::from_utf8)
        .transpose()
        .context("the admin token is not UTF-8 text")?;
        let peers: Vec<String> = if flags.peers.is_empty() {
            file.peers
        } else {
            flags.peers
        };
        for p in &peers {
            if !(p.starts_with("http://") || p.starts_with("https://")) {
                bail!("peer {p:?} is not an http:// or https:// URL");
            }
        }
        if !peers.is_empty() && secret.is_none() {
            bail!("peers are configured but no shared secret: set secret_file or {SECRET_ENV}");
        }
        let duration =
            |v: Option<String>, default: Duration, what: &str| -> anyhow::Result<Duration> {
                match v {
                    Some(text) => parse_duration(&text).map_err(|e| anyhow::anyhow!("{what}: {e}")),
                    None => Ok(default),
                }
            };
        let exchange_interval = duration(
            flags.exchange_interval.or(file.exchange_interval),
            Duration::from_secs(1),
            "exchange_interval",
        )?;
        let stale_after = duration(
            flags.stale_after.or(file.stale_after),
            Duration::from_secs(5),
            "stale_after",
        )?;
        let timeline_period = duration(
            flags.timeline_period,
            crate::health::timeline::DEFAULT_PERIOD,
            "timeline_period",
        )?;
        if timeline_period.is_zero() {
            bail!("timeline_period must be longer than zero");
        }
        if stale_after <= exchange_interval {
            bail!(
                "stale_after ({stale_after:?}) must be longer than exchange_interval ({exchange_interval:?})"
            );
        }
        let quorum = match flags.quorum.or(file.quorum) {
            Some(q) => Quorum::parse(&q)?,
            None => Quorum::Majority,
        };
        let listen = listen_addrs(flags.listen, file.listen)?;
        let admin = flags
            .admin
            .or(file.admin)
            .unwrap_or_else(|| default_addr(DEFAULT_ADMIN_LISTEN));
        let tls = tls_files(flags.tls_cert, flags.tls_key, file.tls)?;
        if !admin.ip().is_loopback() && admin_token.is_none() {
            bail!(
                "the admin listener {admin} is not on loopback: set admin_token_file or {ADMIN_TOKEN_ENV} first"
            );
        }
        Ok(Settings {
            node: flags
                .node
                .or(file.node)
                .unwrap_or_else(|| "node-1".to_string()),
            region: flags
                .region
                .or(file.region)
                .unwrap_or_else(|| "default".to_string()),
            listen,
            admin,
            tls,
            zones: match flags.zones.or(file.zones) {
                Some(dir) => dir,
                None => default_zones()?,
            },
            geoip: match (flags.geoip, file.geoip) {
                (flags, _) if !flags.is_empty() => flags,
                (_, Some(file)) => file,
                _ => default_geoip()?,
            },
            probe_source: flags.probe_source.or(file.probe_source),
            state_dir: flags.state_dir.or(file.state_dir),
            peers,
            peer_ca: flags.peer_ca.or(file.peer_ca_file),
            secret,
            admin_token,
            protect_reads: file.protect_reads.unwrap_or(false),
            exchange_interval,
            stale_after,
            quorum,
            ready_file: flags.ready_file,
            dns,
            timeline_period,
        })
    }
}

/// The DNS listen addresses: the flags' if any, else the file's, else the default. Each must
/// parse, and an address given twice is an error (port 0 excepted: each gets its own port).
fn listen_addrs(
    flags: Vec<SocketAddr>,
    file: Option<RawListen>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let addrs = if !flags.is_empty() {
        flags
    } else {
        let texts = match file {
            None => vec![DEFAULT_DNS_LISTEN.to_string()],
            Some(RawListen::One(text)) => vec![text],
            Some(RawListen::Many(texts)) if texts.is_empty() => {
                bail!("listen: the list is empty; give at least one address")
            }
            Some(RawListen::Many(texts)) => texts,
        };
        texts
            .iter()
            .map(|text| {
                text.trim().parse::<SocketAddr>().map_err(|_| {
                    anyhow::anyhow!(
                        "listen: {text:?} is not an address and port (such as 127.0.0.1:53, or \"[::1]:53\" for IPv6)"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    for (i, addr) in addrs.iter().enumerate() {
        if addr.port() != 0 && addrs[..i].contains(addr) {
            bail!("listen: {addr} is given twice");
        }
    }
    Ok(addrs)
}

/// The listener's certificate and key: each from its flag, else from `tls:`; both or neither.
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    file: Option<RawTls>,
) -> anyhow::Result<Option<TlsFiles>> {
    let in_file = file.is_some();
    let file = file.unwrap_or_default();
    match (cert.or(file.cert_file), key.or(file.key_file)) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (Some(cert), None) => bail!(
            "TLS certificate {} given without its key: set tls.key_file or --tls-key too (both or neither)",
            cert.display()
        ),
        (None, Some(key)) => bail!(
            "TLS key {} given without its certificate: set tls.cert_file or --tls-cert too (both or neither)",
            key.display()
        ),
        (None, None) if in_file => {
            bail!("tls: needs cert_file and key_file (or remove the tls block for plain HTTP)")
        }
        (None, None) => Ok(None),
    }
}

/// A network (`192.0.2.0/24`) or a single address (`192.0.2.1`, a /32 or /128), with no bits
/// set beyond the prefix (a typo such as `192.0.2.1/24` would be read as something else).
fn parse_network(text: &str) -> anyhow::Result<ipnet::IpNet> {
    let text = text.trim();
    let net = match text.parse::<ipnet::IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => ipnet::IpNet::from(ip),
            Err(_) => bail!("not a network (192.0.2.0/24) or an address"),
        },
    };
    if net.trunc() != net {
        bail!(
            "has bits set beyond the /{}: did you mean {}?",
            net.prefix_len(),
            net.trunc()
        );
    }
    Ok(net)
}

/// The DNS frontend's limits: defaults, then the file, then flags. Every number at least 1
/// (but `max_connections_per_client`, where 0 lifts the cap), every timeout above zero.
fn dns_options(flags: &Flags, rrl: RawRrl, tcp: RawTcp) -> anyhow::Result<dns::Options> {
    let defaults = dns::Options::default();
    let count = |flag: Option<usize>, file: Option<usize>, default: usize, what: &str| match flag
        .or(file)
    {
        Some(0) => bail!("{what} must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let timeout =
        |flag: &Option<String>, file: Option<String>, default: Duration, what: &str| match flag
            .clone()
            .or(file)
        {
            Some(text) => match parse_duration(&text) {
                Ok(d) if d.is_zero() => bail!("{what} must be longer than zero"),
                Ok(d) => Ok(d),
                Err(e) => bail!("{what}: {e}"),
            },
            None => Ok(default),
        };
    let t = defaults.tcp;
    Ok(dns::Options {
        rrl: rrl::NodeSettings {
            enabled: flags.rrl.or(rrl.enabled).unwrap_or(defaults.rrl.enabled),
            max_entries: count(
                None,
                rrl.max_entries,
                defaults.rrl.max_entries,
                "rrl.max_entries",
            )?,
            exempt: if flags.rrl_exempt.is_empty() {
                rrl.exempt.unwrap_or_default()
            } else {
                flags.rrl_exempt.clone()
            }
            .iter()
            .map(|net| parse_network(net).with_context(|| format!("rrl.exempt: {net:?}")))
            .collect::<anyhow::Result<_>>()?,
        },
        tcp: dns::TcpLimits {
            max_connections: count(
                flags.tcp_max_connections,
                tcp.max_connections,
                t.max_connections,
                "tcp.max_connections",
            )?,
            max_connections_per_client: match flags
                .tcp_max_connections_per_client
                .or(tcp.max_connections_per_client)
            {
                Some(0) => None,
                Some(n) => Some(n),
                None => t.max_connections_per_client,
            },
            idle_timeout: timeout(
                &flags.tcp_idle_timeout,
                tcp.idle_timeout,
                t.idle_timeout,
                "tcp.idle_timeout",
            )?,
            read_timeout: timeout(
                &flags.tcp_read_timeout,
                tcp.read_timeout,
                t.read_timeout,
                "tcp.read_timeout",
            )?,
            max_queries_per_connection: count(
                flags.tcp_max_queries.map(|n| n as usize),
                tcp.max_queries_per_connection.map(|n| n as usize),
                t.max_queries_per_connection as usize,
                "tcp.max_queries_per_connection",
            )?
            .try_into()
            .unwrap_or(u32::MAX),
        },
    })
}

fn default_addr(s: &str) -> SocketAddr {
    s.parse().expect("the default listen addresses are valid")
}

/// A secret from a file (trimmed), else from an environment variable; `None` if neither.
fn read_secret(file: Option<PathBuf>, env: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let value = match file {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading secret file {}", path.display()))?,
        None => match std::env::var(env) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
    };
    let value = value.trim();
    if value.is_empty() {
        bail!("the secret in {env} (or its file) is empty");
    }
    Ok(Some(value.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = NodeFile::parse("listen: 127.0.0.2:53\nzones: /etc/steerdns/zones\n").unwrap();
        let flags = Flags {
            listen: vec!["127.0.0.3:5353".parse().unwrap()],
            ..Flags::default()
        };
        let s = Settings::resolve(file, flags).unwrap();
        assert_eq!(s.listen, ["127.0.0.3:5353".parse().unwrap()]);
        assert_eq!(s.zones, PathBuf::from("/etc/steerdns/zones"));
        assert_eq!(s.geoip.len(), 2);
        let d = Settings::resolve(NodeFile::default(), Flags::default()).unwrap();
        assert_eq!(d.listen, ["127.0.0.1:5300".parse().unwrap()]);
        assert_eq!(d.admin.port(), 8053);
        assert_eq!(d.quorum, Quorum::Majority);
    }

    #[test]
    fn rrl_exempt_networks_come_from_the_file_or_the_flags_and_typos_are_named() {
        let file = || {
            NodeFile::parse("rrl: { exempt: [192.0.2.0/24, \"2001:db8::/32\", 198.51.100.7] }\n")
                .unwrap()
        };
        let s = Settings::resolve(file(), Flags::default()).unwrap();
        let text: Vec<String> = s.dns.rrl.exempt.iter().map(|n| n.to_string()).collect();
        assert_eq!(text, ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"]);
        let flags = Flags {
            rrl_exempt: vec!["10.0.0.0/8".into()],
            ..Flags::default()
        };
        let s = Settings::resolve(file(), flags).unwrap();
        assert_eq!(
            s.dns.rrl.exempt,
            vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]
        );
        for (net, error) in [
            (
                "192.0.2.1/24",
                "has bits set beyond the /24: did you mean 192.0.2.0/24?",
            ),
            ("resolvers", "not a network (192.0.2.0/24) or an address"),
        ] {
            let flags = Flags {
                rrl_exempt: vec![net.into()],
                ..Flags::default()
            };
            let e = Settings::resolve(NodeFile::default(), flags).unwrap_err();
            assert_eq!(format!("{e:#}"), format!("rrl.exempt: {net:?}: {error}"));
        }
    }

    #[test]
    fn dns_limits_come_from_flags_then_the_file_then_defaults() {
        let d = Settings::resolve(NodeFile::default(), Flags::default()).unwrap();
        assert_eq!(d.dns.tcp, dns::TcpLimits::default());
        assert!(d.dns.rrl.enabled);
        let file = NodeFile::parse(
            "rrl: { enabled: false, max_entries: 500 }\n\
             tcp: { max_connections: 50, idle_timeout: 3s, max_queries_per_connection: 9 }\n",
        )
        .unwrap();
        let flags = Flags {
            rrl: Some(true),
            tcp_max_connections: Some(7),
            tcp_read_timeout: Some("800ms".into()),
            ..Flags::default()
        };
        let s = Settings::resolve(file, flags).unwrap();
        assert!(s.dns.rrl.enabled, "the flag wins");
        assert_eq!(s.dns.rrl.max_entries, 500);
        assert_eq!(
            s.dns.tcp,
            dns::TcpLimits {
                max_connections: 7,
                max_connections_per_client: None,
                idle_timeout: Duration::from_secs(3),
                read_timeout: Duration::from_millis(800),
                max_queries_per_connection: 9,
            }
        );
        for (yaml, error) in [
            (
                "tcp: { max_connections: 0 }",
                "tcp.max_connections must be at least 1",
            ),
            (
                "tcp: { idle_timeout: 0s }",
                "tcp.idle_timeout must be longer than zero",
            ),
            (
                "tcp: { read_timeout: soon }",
                "tcp.read_timeout: \"soon\" is not a duration",
            ),
        ] {
            let e = Settings::resolve(NodeFile::parse(yaml).unwrap(), Flags::default())
                .err()
                .unwrap();
            assert!(e.to_string().contains(error), "{yaml}: {e}");
        }
        assert!(NodeFile::parse("tcp: { max_conections: 5 }").is_err());
    }

    #[test]
    fn a_per_client_cap_is_off_by_default_and_zero_lifts_it() {
        let cap = |yaml: &str, flag: Option<usize>| {
            let flags = Flags {
                tcp_max_connections_per_client: flag,
                ..Flags::default()
            };
            Settings::resolve(NodeFile::parse(yaml).unwrap_or_default(), flags)
                .unwrap()
                .dns
                .tcp
                .max_connections_per_client
        };
        assert_eq!(cap("", None), None);
        assert_eq!(cap("tcp: { max_connections_per_client: 5 }", None), Some(5));
        assert_eq!(cap("", Some(7)), Some(7));
        assert_eq!(cap("tcp: { max_connections_per_client: 5 }", Some(0)), None);
    }

    #[test]
    fn listen_takes_one_address_or_a_list_and_the_flags_replace_it() {
        let listen = |yaml: &str, flags: &[&str]| {
            let flags = Flags {
                listen: flags.iter().map(|a| a.parse().unwrap()).collect(),
                ..Flags::default()
            };
            Settings::resolve(NodeFile::parse(yaml).unwrap(), flags)
                .map(|s| s.listen.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(listen("listen: 0.0.0.0:53", &[]).unwrap(), ["0.0.0.0:53"]);
        assert_eq!(
            listen("listen: [0.0.0.0:53, \"[::]:53\"]", &[]).unwrap(),
            ["0.0.0.0:53", "[::]:53"]
        );
        assert_eq!(
            listen("listen:\n  - 127.0.0.1:53\n  - \"[::1]:53\"\n", &[]).unwrap(),
            ["127.0.0.1:53", "[::1]:53"]
        );
        assert_eq!(
            listen("listen: [0.0.0.0:53]", &["127.0.0.1:0", "[::1]:0"]).unwrap(),
            ["127.0.0.1:0", "[::1]:0"]
        );
        // Port 0 twice is two listeners, each with its own port.
        assert_eq!(
            listen("listen: [127.0.0.1:0, 127.0.0.1:0]", &[]).unwrap(),
            ["127.0.0.1:0", "127.0.0.1:0"]
        );
        for (yaml, error) in [
            ("listen: []", "listen: the list is empty"),
            (
                "listen: [127.0.0.1:53, ns1:53]",
                "listen: \"ns1:53\" is not an address and port",
            ),
            ("listen: \"::1:53\"", "listen: \"::1:53\" is not an address"),
            (
                "listen: [127.0.0.1:53, 127.0.0.1:53]",
                "listen: 127.0.0.1:53 is given twice",
            ),
        ] {
            let e = listen(yaml, &[]).err().unwrap();
            assert!(e.to_string().contains(error), "{yaml}: {e}");
        }
        let e = NodeFile::parse("listen: { port: 53 }").err().unwrap();
        assert!(e.to_string().contains("a list of them"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(NodeFile::parse("lisen: 127.0.0.1:53\n").is_err());
    }

    #[test]
    fn peers_need_a_secret_and_public_admin_needs_a_token() {
        let file = NodeFile::parse("peers: [\"http://127.0.0.2:8053\"]\n").unwrap();
        let e = Settings::resolve(file, Flags::default()).err().unwrap();
        assert!(e.to_string().contains("shared secret"), "{e}");
        let file = NodeFile::parse("admin: 0.0.0.0:8053\n").unwrap();
        let e = Settings::resolve(file, Flags::default()).err().unwrap();
        assert!(e.to_string().contains("not on loopback"), "{e}");
    }

    #[test]
    fn tls_needs_both_files_and_flags_override_the_file() {
        let d = Settings::resolve(NodeFile::default(), Flags::default()).unwrap();
        assert_eq!(d.tls, None);
        let file = NodeFile::parse(
            "tls: { cert_file: /etc/steerdns/tls.crt, key_file: /etc/steerdns/tls.key }\n\
             peer_ca_file: /etc/steerdns/ca.pem\n",
        )
        .unwrap();
        let flags = Flags {
            tls_key: Some("/run/key.pem".into()),
            ..Flags::default()
        };
        let s = Settings::resolve(file, flags).unwrap();
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "/etc/steerdns/tls.crt".into(),
                key: "/run/key.pem".into(),
            })
        );
        assert_eq!(s.peer_ca, Some(PathBuf::from("/etc/steerdns/ca.pem")));
        for (yaml, flags, error) in [
            (
                "tls: { cert_file: /c.pem }",
                Flags::default(),
                "given without its key",
            ),
            ("tls: {}", Flags::default(), "needs cert_file and key_file"),
            (
                "",
                Flags {
                    tls_key: Some("/k.pem".into()),
                    ..Flags::default()
                },
                "given without its certificate",
            ),
        ] {
            let e = Settings::resolve(NodeFile::parse(yaml).unwrap_or_default(), flags)
                .err()
                .unwrap();
            assert!(e.to_string().contains(error), "{yaml}: {e}");
        }
        assert!(NodeFile::parse("tls: { cert: /c.pem }").is_err());
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret-value\n").unwrap();
        let file = NodeFile::parse(&format!(
            "peers: [\"http://127.0.0.2:8053\"]\nsecret_file: {}\nquorum: \"2\"\nstale_after: 3s\n",
            path.display()
        ))
        .unwrap();
        let s = Settings::resolve(file, Flags::default()).unwrap();
        assert_eq!(s.secret.as_deref(), Some(&b"s3cret-value"[..]));
        assert_eq!(s.quorum, Quorum::Count(2));
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
