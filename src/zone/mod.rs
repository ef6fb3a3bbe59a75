//! Validated domain types: the zone set the query path reads. Values of these types can only be
//! built by `file` after validation, so the query path never re-checks them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::zone::check::Check;
pub use crate::zone::name::{Name, NameError};

pub mod check;
pub mod file;
pub mod key;
pub mod name;

/// The record types steerdns knows, with their IANA numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    A,
    Ns,
    Cname,
    Soa,
    Mx,
    Txt,
    Aaaa,
    Srv,
    Caa,
}

impl RecordType {
    pub fn code(self) -> u16 {
        match self {
            RecordType::A => 1,
            RecordType::Ns => 2,
            RecordType::Cname => 5,
            RecordType::Soa => 6,
            RecordType::Mx => 15,
            RecordType::Txt => 16,
            RecordType::Aaaa => 28,
            RecordType::Srv => 33,
            RecordType::Caa => 257,
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RecordType::A => "A",
            RecordType::Ns => "NS",
            RecordType::Cname => "CNAME",
            RecordType::Soa => "SOA",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Aaaa => "AAAA",
            RecordType::Srv => "SRV",
            RecordType::Caa => "CAA",
        };
        f.write_str(s)
    }
}

/// The SOA fields of a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    pub mname: Name,
    pub rname: Name,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

/// Record data, in steerdns's own terms (the DNS frontend maps these to the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(Name),
    Ns(Name),
    Mx {
        preference: u16,
        exchange: Name,
    },
    /// Character strings, each at most 255 octets.
    Txt(Vec<String>),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    Caa {
        critical: bool,
        tag: String,
        value: String,
    },
    Soa(Soa),
}

impl RData {
    pub fn record_type(&self) -> RecordType {
        match self {
            RData::A(_) => RecordType::A,
            RData::Aaaa(_) => RecordType::Aaaa,
            RData::Cname(_) => RecordType::Cname,
            RData::Ns(_) => RecordType::Ns,
            RData::Mx { .. } => RecordType::Mx,
            RData::Txt(_) => RecordType::Txt,
            RData::Srv { .. } => RecordType::Srv,
            RData::Caa { .. } => RecordType::Caa,
            RData::Soa(_) => RecordType::Soa,
        }
    }

    /// Uncompressed wire length of the RDATA: an upper bound on what it costs in a message.
    pub fn wire_len(&self) -> usize {
        match self {
            RData::A(_) => 4,
            RData::Aaaa(_) => 16,
            RData::Cname(n) | RData::Ns(n) => n.wire_len(),
            RData::Mx { exchange, .. } => 2 + exchange.wire_len(),
            RData::Txt(strings) => strings.iter().map(|s| 1 + s.len()).sum::<usize>().max(1),
            RData::Srv { target, .. } => 6 + target.wire_len(),
            RData::Caa { tag, value, .. } => 2 + tag.len() + value.len(),
            RData::Soa(soa) => soa.mname.wire_len() + soa.rname.wire_len() + 20,
        }
    }
}

/// Presentation format, as in a zone file.
impl fmt::Display for RData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RData::A(ip) => write!(f, "A {ip}"),
            RData::Aaaa(ip) => write!(f, "AAAA {ip}"),
            RData::Cname(n) => write!(f, "CNAME {n}"),
            RData::Ns(n) => write!(f, "NS {n}"),
            RData::Mx {
                preference,
                exchange,
            } => write!(f, "MX {preference} {exchange}"),
            RData::Txt(strings) => {
                f.write_str("TXT")?;
                for s in strings {
                    write!(f, " {s:?}")?;
                }
                Ok(())
            }
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "SRV {priority} {weight} {port} {target}"),
            RData::Caa {
                critical,
                tag,
                value,
            } => write!(f, "CAA {} {tag} {value:?}", if *critical { 128 } else { 0 }),
            RData::Soa(s) => write!(
                f,
                "SOA {} {} {} {} {} {} {}",
                s.mname, s.rname, s.serial, s.refresh, s.retry, s.expire, s.minimum
            ),
        }
    }
}

impl From<IpAddr> for RData {
    fn from(ip: IpAddr) -> RData {
        match ip {
            IpAddr::V4(v4) => RData::A(v4),
            IpAddr::V6(v6) => RData::Aaaa(v6),
        }
    }
}

/// One resource record as the answer code hands it to the DNS frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: Name,
    pub ttl: u32,
    pub data: RData,
}

impl Rr {
    /// Uncompressed wire length: owner, type, class, TTL, RDLENGTH and RDATA.
    pub fn wire_len(&self) -> usize {
        self.name.wire_len() + 10 + self.data.wire_len()
    }
}

/// All records of one type at one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    pub rtype: RecordType,
    pub ttl: u32,
    pub data: Vec<RData>,
}

/// Where the nodes of one region (node config `region:`) probe from, for the `latency` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: Arc<str>,
    pub latitude: f64,
    pub longitude: f64,
}

/// A site with a location that hosts endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Datacenter {
    /// Shared, so answers and metrics can name it without copying.
    pub name: Arc<str>,
    pub latitude: f64,
    pub longitude: f64,
}

/// One DC's part in a service: its endpoint addresses, in the order the zone file lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDc {
    /// Index into `Zone::datacenters`.
    pub dc: usize,
    pub endpoints: Vec<IpAddr>,
}

/// How a service orders its DCs for a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// By great-circle distance from the client.
    Nearest,
    /// The order the zone file lists the DCs in, wherever the client is.
    Failover,
    /// Split by weight, stable per client network. One weight per `Service::dcs` entry.
    Weighted(Vec<u32>),
    /// By the round-trip time the probers of the node region nearest the client measured to
    /// each DC (`Zone::regions` places the regions), with hysteresis; by distance while that
    /// region has no fresh measurement.
    Latency,
    /// Ordered DC lists per continent, country or subdivision; the most specific match wins.
    Geo {
        rules: Vec<GeoRule>,
        /// For clients no rule matches (and unlocated ones).
        default: GeoTarget,
    },
}

/// Where a geo rule applies, octoDNS-style: `EU`, `NA-US`, `NA-US-CA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeoKey {
    Continent(String),
    Country(String),
    Subdivision { country: String, code: String },
}

impl GeoKey {
    /// How specific the key is: the most specific matching rule wins.
    pub fn specificity(&self) -> u8 {
        match self {
            GeoKey::Continent(_) => 1,
            GeoKey::Country(_) => 2,
            GeoKey::Subdivision { .. } => 3,
        }
    }
}

/// What a geo rule sends clients to.
#[derive(Debug, Clone, PartialEq)]
pub enum GeoTarget {
    /// These DCs first, in this order (indexes into `Service::dcs`); the rest follow by distance.
    Dcs(Vec<usize>),
    /// All DCs by distance.
    Nearest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GeoRule {
    /// The key as written (`NA-US-CA`), for explanations.
    pub label: Arc<str>,
    pub key: GeoKey,
    pub target: GeoTarget,
}

/// What to answer when no endpoint of a service is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenAllDown {
    /// Fail open: answer as if everything were up (Route 53 and gdnsd do the same).
    #[default]
    ServeAll,
    NoData,
    ServFail,
}

/// A name whose A/AAAA answer is computed from data centers and their endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Unique per service built (each load gets new ones), for caches of derived data.
    pub id: u64,
    pub name: Name,
    pub ttl: u32,
    /// How many addresses one answer carries at most.
    pub answers: usize,
    /// Fill an answer from the next DC when the chosen one has fewer than `answers` addresses.
    pub fill: bool,
    pub policy: Policy,
    pub when_all_down: WhenAllDown,
    /// The health check its endpoints are probed with; none means always up.
    pub check: Option<Arc<Check>>,
    /// TTL while degraded (an endpoint down): short, so resolvers return quickly on recovery.
    pub degraded_ttl: u32,
    /// The DCs in the order the zone file lists them.
    pub dcs: Vec<ServiceDc>,
    /// Recovery ramp: how long a DC that came back (health restored, or undrained) takes to
    /// get all its clients back; none sends them all at once.
    pub ramp: Option<std::time::Duration>,
}

/// What lives at one name of a zone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    /// Static RRsets, at most one per type. A CNAME node holds only the CNAME set.
    pub rrsets: Vec<RrSet>,
    /// A computed A/AAAA answer, when the name is a service.
    pub service: Option<Arc<Service>>,
}

impl Node {
    pub fn rrset(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
}

/// One authoritative zone, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub apex: Name,
    /// The file the zone came from, for messages.
    pub source: String,
    pub default_ttl: u32,
    pub soa: Soa,
    /// TTL of the SOA record itself.
    pub soa_ttl: u32,
    pub nodes: FxHashMap<Name, Node>,
    /// Names that exist only because something lies below them (empty non-terminals).
    pub empty_non_terminals: FxHashSet<Name>,
    /// Names below the apex that carry NS records: delegation points.
    pub delegations: FxHashSet<Name>,
    pub datacenters: Vec<Datacenter>,
    /// The node regions and where they are (for the `latency` policy), as the zone lists them.
    pub regions: Vec<Region>,
    /// Response rate limits for the zone's UDP responses.
    pub rrl: crate::rrl::Limits,
    /// DNSSEC: the keys when the zone is signed (its `dnssec:` block).
    pub dnssec: Option<Arc<Dnssec>>,
}

/// A signed zone's keys, loaded and checked with the zone.
#[derive(Debug, PartialEq)]
pub struct Dnssec {
    /// The key that signs everything (a CSK).
    pub signing: Arc<crate::zone::key::ZoneKey>,
    /// Keys published in the DNSKEY set without signing: the next key before a rollover's
    /// switch, the previous one after it.
    pub published: Vec<Arc<crate::zone::key::ZoneKey>>,
    /// TTL of the DNSKEY, CDS and CDNSKEY sets.
    pub dnskey_ttl: u32,
}

impl Dnssec {
    /// Every key in the DNSKEY set: the signing key first.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<crate::zone::key::ZoneKey>> {
        std::iter::once(&self.signing).chain(&self.published)
    }
}

impl Zone {
    /// The SOA record as it goes into answers and negative responses.
    pub fn soa_rr(&self) -> Rr {
        Rr {
            name: self.apex.clone(),
            ttl: self.soa_ttl,
            data: RData::Soa(self.soa.clone()),
        }
    }

    /// The TTL of a negative answer (RFC 2308 section 5): the lesser of the SOA's TTL and MINIMUM.
    pub fn negative_ttl(&self) -> u32 {
        self.soa_ttl.min(self.soa.minimum)
    }

    /// The node that answers for `name`: its own, or else the wildcard `*.<closest encloser>`
    /// that synthesizes it (RFC 4592 section 3.3.1), with whether it is synthesized. `None`
    /// when the name does not exist (NXDOMAIN) or is an empty non-terminal (NODATA).
    pub fn lookup(&self, name: &Name) -> Option<(&Node, bool)> {
        if let Some(node) = self.nodes.get(name) {
            return Some((node, false));
        }
        if self.empty_non_terminals.contains(name) || !name.is_subdomain_of(&self.apex) {
            return None;
        }
        // The closest encloser: the nearest ancestor that exists (a node, an empty
        // non-terminal, or the apex). A wildcard matches only directly below it. Walked as
        // slices of the name's text, and the wildcard's name written into a reused buffer: this
        // runs for every query of a name that does not exist.
        let apex = self.apex.as_str();
        let mut ancestor = name.as_str();
        loop {
            if ancestor.is_empty() {
                return None;
            }
            ancestor = ancestor.split_once('.').map_or("", |(_, parent)| parent);
            if ancestor.len() <= apex.len()
                || self.nodes.contains_key(ancestor)
                || self.empty_non_terminals.contains(ancestor)
            {
                break;
            }
        }
        thread_local! {
            static WILDCARD: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        WILDCARD
            .with(|w| {
                let mut w = w.borrow_mut();
                w.clear();
                w.push('*');
                if !ancestor.is_empty() {
                    w.push('.');
                    w.push_str(ancestor);
                }
                self.nodes.get(w.as_str())
            })
            .map(|node| (node, true))
    }

    /// The delegation point at or above `name`, if `name` lies in a delegated sub-zone. Walks
    /// the name's suffixes as slices of its text (this runs for every query).
    pub fn delegation_for(&self, name: &Name) -> Option<Name> {
        if self.delegations.is_empty() {
            return None;
        }
        let apex = self.apex.as_str();
        let mut rest = name.as_str();
        while rest.len() > apex.len() {
            if self.delegations.contains(rest) {
                return Some(Name::from_lower(rest));
            }
            rest = rest.split_once('.')?.1;
        }
        None
    }
}

/// Every zone a node serves. Immutable once built; replaced whole on reload.
#[derive(Debug, Clone, Default)]
pub struct ZoneSet {
    pub zones: Vec<Arc<Zone>>,
}

static NEXT_SERVICE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh `Service::id`.
pub fn next_service_id() -> u64 {
    NEXT_SERVICE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl ZoneSet {
    /// Every (address, check) pair some service probes.
    pub fn probe_targets(&self) -> std::collections::HashSet<(IpAddr, Arc<Check>)> {
        let mut out = std::collections::HashSet::new();
        for zone in &self.zones {
            for node in zone.nodes.values() {
                let Some(service) = &node.service else {
                    continue;
                };
                let Some(check) = &service.check else {
                    continue;
                };
                for dc in &service.dcs {
                    for ip in &dc.endpoints {
                        out.insert((*ip, check.clone()));
                    }
                }
            }
        }
        out
    }

    /// Every service of every zone.
    pub fn services(&self) -> impl Iterator<Item = (&Arc<Zone>, &Arc<Service>)> {
        self.zones.iter().flat_map(|z| {
            z.nodes
                .values()
                .filter_map(move |n| n.service.as_ref().map(|s| (z, s)))
        })
    }

    /// The zone with the longest apex that contains `name`, if any.
    pub fn find(&self, name: &Name) -> Option<&Arc<Zone>> {
        self.find_str(name.as_str())
    }

    /// `find` for a lower-case name as text (the query path's, before it builds a `Name`).
    pub fn find_str(&self, name: &str) -> Option<&Arc<Zone>> {
        self.zones
            .iter()
            .filter(|z| name::is_subdomain(name, z.apex.as_str()))
            .max_by_key(|z| z.apex.as_str().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_case_and_drop_the_dot() {
        let n = Name::parse("WWW.Api.Example.COM.").unwrap();
        assert_eq!(n.as_str(), "www.api.example.com");
        assert_eq!(n.to_string(), "www.api.example.com.");
        assert_eq!(n.wire_len(), 21);
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(matches!(Name::parse("a..b"), Err(NameError::EmptyLabel(_))));
        assert!(matches!(
            Name::parse(&"x".repeat(64)),
            Err(NameError::LabelTooLong(_))
        ));
        assert!(matches!(
            Name::parse("a b"),
            Err(NameError::BadChar(_, ' '))
        ));
    }

    #[test]
    fn subdomains_respect_label_boundaries() {
        let apex = Name::parse("example.com").unwrap();
        assert!(
            Name::parse("www.example.com")
                .unwrap()
                .is_subdomain_of(&apex)
        );
        assert!(apex.is_subdomain_of(&apex));
        assert!(
            !Name::parse("badexample.com")
                .unwrap()
                .is_subdomain_of(&apex)
        );
        assert!(!Name::parse("com").unwrap().is_subdomain_of(&apex));
    }

    #[test]
    fn parent_walks_up_to_the_root() {
        let n = Name::parse("a.b").unwrap();
        let p = n.parent().unwrap();
        assert_eq!(p.as_str(), "b");
        assert!(p.parent().unwrap().is_root());
        assert!(p.parent().unwrap().parent().is_none());
    }
}
