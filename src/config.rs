//! Node settings: where to listen, which zones and GeoIP database to serve. Read from an optional
//! YAML node config file; command-line flags override what the file says.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the DNS frontend listens when nothing else is said.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:5300";

/// A node config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// DNS listen address (UDP and TCP).
    pub listen: Option<SocketAddr>,
    /// Directory of zone YAML files.
    pub zones: Option<PathBuf>,
    /// GeoIP databases (MaxMind format), in order of preference.
    pub geoip: Option<Vec<PathBuf>>,
    /// Local address health probes are sent from.
    pub probe_source: Option<std::net::IpAddr>,
}

impl NodeFile {
    pub fn parse(text: &str) -> Result<NodeFile, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    pub fn load(path: &Path) -> anyhow::Result<NodeFile> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading node config {}", path.display()))?;
        NodeFile::parse(&text).with_context(|| format!("parsing node config {}", path.display()))
    }
}

/// The shipped databases: DB-IP City Lite (coarse, IPv4) for coordinates, then DB-IP Country
/// Lite for IPv6 and anything the first does not know.
pub const DEFAULT_GEOIP: [&str; 2] = [
    "geoip/dbip-city-lite-coarse-ipv4.mmdb",
    "geoip/dbip-country.mmdb",
];

/// Settings given on the command line; each overrides the node config file.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub listen: Option<SocketAddr>,
    pub zones: Option<PathBuf>,
    pub geoip: Vec<PathBuf>,
    pub probe_source: Option<std::net::IpAddr>,
    pub ready_file: Option<PathBuf>,
}

/// Effective settings of a node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub zones: PathBuf,
    /// GeoIP databases, first match wins.
    pub geoip: Vec<PathBuf>,
    /// Local address health probes are sent from (so a node's vantage point is its own).
    pub probe_source: Option<std::net::IpAddr>,
    /// Where to write the bound addresses once listening (for scripts and tests).
    pub ready_file: Option<PathBuf>,
}

impl Settings {
    /// Defaults, then the file, then explicit flags.
    pub fn resolve(file: NodeFile, flags: Flags) -> Settings {
        let Flags {
            listen,
            zones,
            geoip,
            probe_source,
            ready_file,
        } = flags;
        Settings {
            listen: listen.or(file.listen).unwrap_or_else(|| {
                DEFAULT_DNS_LISTEN
                    .parse()
                    .expect("DEFAULT_DNS_LISTEN is a valid socket address")
            }),
            zones: zones
                .or(file.zones)
                .unwrap_or_else(|| PathBuf::from("zones")),
            geoip: match (geoip, file.geoip) {
                (flags, _) if !flags.is_empty() => flags,
                (_, Some(file)) => file,
                _ => DEFAULT_GEOIP.iter().map(PathBuf::from).collect(),
            },
            probe_source: probe_source.or(file.probe_source),
            ready_file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = NodeFile::parse("listen: 127.0.0.2:53\nzones: /etc/steerdns/zones\n").unwrap();
        let flags = Flags {
            listen: Some("127.0.0.3:5353".parse().unwrap()),
            ..Flags::default()
        };
        let s = Settings::resolve(file, flags);
        assert_eq!(s.listen, "127.0.0.3:5353".parse().unwrap());
        assert_eq!(s.zones, PathBuf::from("/etc/steerdns/zones"));
        assert_eq!(s.geoip.len(), 2);
        let d = Settings::resolve(NodeFile::default(), Flags::default());
        assert_eq!(d.listen.port(), 5300);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(NodeFile::parse("lisen: 127.0.0.1:53\n").is_err());
    }
}
