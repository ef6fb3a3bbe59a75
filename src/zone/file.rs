//! Zone YAML → validated `ZoneSet`. Parsing is two steps: raw serde structs that reject unknown
//! fields, then `validate` into model types. Every problem found is reported, each with its file,
//! line where known, record and field.
//!
//! Names: `@` is the apex. A record's own name (a key under `records`) is relative to the apex
//! (`www`, `_sip._tcp`) unless it ends with a dot or with the apex itself. A name in a value (a
//! CNAME or MX target, a name server, the SOA) is absolute when it contains a dot
//! (`cdn.example.net`, trailing dot optional) and relative when it is a single label (`ns1` →
//! `ns1.api.example.com`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::rrl;
use crate::zone::check::{Check, RawCheck};
use crate::zone::key::ZoneKey;
use crate::zone::{
    Datacenter, Dnssec, GeoKey, GeoRule, GeoTarget, Name, Node, Policy, RData, RecordType, Region,
    RrSet, Service, ServiceDc, Soa, WhenAllDown, Zone, ZoneSet,
};

/// The largest TTL RFC 2181 section 8 allows.
pub const MAX_TTL: u32 = 2_147_483_647;
/// Default TTL of static records when the zone sets none.
pub const DEFAULT_TTL: u32 = 300;
/// Default TTL of service answers: short, so failover reaches resolvers quickly.
pub const DEFAULT_SERVICE_TTL: u32 = 30;
/// The shortest and longest recovery ramp (`ramp:`): a ramp under a second would end before
/// resolvers asked again, and one over a day is a drain, not a ramp.
pub const MIN_RAMP: Duration = Duration::from_secs(1);
pub const MAX_RAMP: Duration = Duration::from_secs(24 * 3600);
/// Default number of addresses in one service answer.
pub const DEFAULT_SERVICE_ANSWERS: usize = 8;

/// One problem in a zone file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub zone: Option<String>,
    pub record: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(zone) = &self.zone {
            write!(f, "zone {zone}, ")?;
        }
        if let Some(record) = &self.record {
            write!(f, "record {record}, ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field {field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a set of zone files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ZoneErrors(pub Vec<ZoneError>);

impl fmt::Display for ZoneErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A zone file as written. `R` is how records are held: typed (`IndexMap<String, RawRecord>`,
/// compact, tried first) or as YAML values (`serde_yaml::Mapping`, so that every broken record
/// can be reported on its own when the typed parse fails).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone<R> {
    zone: String,
    ttl: Option<u32>,
    soa: Option<RawSoa>,
    nameservers: Option<IndexMap<String, Vec<String>>>,
    #[serde(default)]
    datacenters: IndexMap<String, RawDatacenter>,
    /// Node region → `{ location: [latitude, longitude] }`, for the `latency` policy.
    #[serde(default)]
    regions: IndexMap<String, RawDatacenter>,
    /// The recovery ramp of every service that sets none (`5m`, or `off`).
    ramp: Option<String>,
    #[serde(default)]
    checks: IndexMap<String, RawCheck>,
    #[serde(default)]
    records: R,
    rrl: Option<RawRrl>,
    dnssec: Option<RawDnssec>,
}

/// Signing (see `zone::key`): `dnssec: { key: FILE, publish: [FILE...], dnskey_ttl: 3600 }`.
/// Paths are relative to the zone file's directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnssec {
    key: String,
    #[serde(default)]
    publish: Vec<String>,
    dnskey_ttl: Option<u32>,
}

/// Default TTL of the DNSKEY, CDS and CDNSKEY sets.
pub const DEFAULT_DNSKEY_TTL: u32 = 3600;

/// Response rate limiting for the zone's UDP responses (see `rrl`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRrl {
    enabled: Option<bool>,
    responses_per_second: Option<u32>,
    burst: Option<u32>,
    slip: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSoa {
    /// Default: the first of `nameservers`.
    primary: Option<String>,
    /// Default: hostmaster at the zone.
    contact: Option<String>,
    serial: Option<u32>,
    refresh: Option<u32>,
    retry: Option<u32>,
    expire: Option<u32>,
    minimum: Option<u32>,
    ttl: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatacenter {
    /// Latitude and longitude in degrees.
    location: [f64; 2],
}

/// One value or a list of them (`TXT: "x"` or `TXT: ["x", "y"]`).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    ttl: Option<u32>,
    #[serde(rename = "A")]
    a: Option<OneOrMany>,
    #[serde(rename = "AAAA")]
    aaaa: Option<OneOrMany>,
    #[serde(rename = "CNAME")]
    cname: Option<String>,
    #[serde(rename = "TXT")]
    txt: Option<OneOrMany>,
    #[serde(rename = "MX")]
    mx: Option<OneOrMany>,
    #[serde(rename = "SRV")]
    srv: Option<OneOrMany>,
    #[serde(rename = "CAA")]
    caa: Option<OneOrMany>,
    #[serde(rename = "NS")]
    ns: Option<OneOrMany>,
    service: Option<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    ttl: Option<u32>,
    answers: Option<usize>,
    fill: Option<bool>,
    policy: Option<String>,
    geo: Option<IndexMap<String, RawGeoTarget>>,
    weights: Option<IndexMap<String, u32>>,
    when_all_down: Option<String>,
    check: Option<String>,
    degraded_ttl: Option<u32>,
    /// Recovery ramp (`5m`, or `off`); default: the zone's `ramp`, else off.
    ramp: Option<String>,
    endpoints: IndexMap<String, Vec<String>>,
}

/// A geo rule's target: `nearest`, or DC names in order.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawGeoTarget {
    Word(String),
    Dcs(Vec<String>),
}

/// Continent codes as MaxMind uses them.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// Loads every `*.yaml` / `*.yml` file in `dir` (sorted by name), one zone per file.
pub fn load_dir(dir: &Path) -> Result<ZoneSet, ZoneErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ZoneErrors(vec![file_error(
            dir.display().to_string(),
            format!("cannot read zone directory: {e}"),
        )])
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(ZoneErrors(vec![file_error(
            dir.display().to_string(),
            "no zone files (*.yaml) in the directory".to_string(),
        )]));
    }
    let mut errors = Vec::new();
    let mut zones: Vec<Arc<Zone>> = Vec::new();
    for path in paths {
        let source = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_zone(&text, &source) {
                Ok(zone) => {
                    if let Some(other) = zones.iter().find(|z| z.apex == zone.apex) {
                        errors.push(ZoneError {
                            zone: Some(zone.apex.as_str().to_string()),
                            ..file_error(
                                source,
                                format!("zone is also defined in {}", other.source),
                            )
                        });
                    } else {
                        zones.push(Arc::new(zone));
                    }
                }
                Err(ZoneErrors(mut e)) => errors.append(&mut e),
            },
            Err(e) => errors.push(file_error(source, format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(ZoneSet { zones })
    } else {
        Err(ZoneErrors(errors))
    }
}

fn file_error(file: String, message: String) -> ZoneError {
    ZoneError {
        file,
        line: None,
        column: None,
        zone: None,
        record: None,
        field: None,
        message,
    }
}

impl<R> RawZone<R> {
    /// The zone without its records, and the records.
    fn split(self) -> (RawZone<()>, R) {
        let RawZone {
            zone,
            ttl,
            soa,
            nameservers,
            datacenters,
            regions,
            ramp,
            checks,
            records,
            rrl,
            dnssec,
        } = self;
        let header = RawZone {
            zone,
            ttl,
            soa,
            nameservers,
            datacenters,
            regions,
            ramp,
            checks,
            records: (),
            rrl,
            dnssec,
        };
        (header, records)
    }
}

/// Parses and validates one zone from YAML text. `source` names the file in messages.
pub fn parse_zone(text: &str, source: &str) -> Result<Zone, ZoneErrors> {
    // The typed parse builds only what the model needs (the YAML value tree of a 100,000-name
    // zone costs several times its size); it fails on any broken record, and then the value
    // parse finds them all.
    if let Ok(raw) = serde_yaml::from_str::<RawZone<IndexMap<String, RawRecord>>>(text) {
        let (header, records) = raw.split();
        let records = records.into_iter().map(|(k, r)| (Some(k), Ok(r)));
        return Validator::new(text, source).validate(header, records);
    }
    let raw: RawZone<serde_yaml::Mapping> = serde_yaml::from_str(text).map_err(|e| {
        let loc = e.location();
        ZoneErrors(vec![ZoneError {
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            ..file_error(source.to_string(), e.to_string())
        }])
    })?;
    let (header, records) = raw.split();
    let records = records.into_iter().map(|(key, value)| match key.as_str() {
        Some(k) => (
            Some(k.to_string()),
            serde_yaml::from_value::<RawRecord>(value).map_err(|e| e.to_string()),
        ),
        None => (None, Err(format!("record name {key:?} is not a string"))),
    });
    Validator::new(text, source).validate(header, records)
}

/// What a zone defines before its records: data centers and named checks.
struct Defs<'a> {
    datacenters: &'a [Datacenter],
    checks: &'a HashMap<String, Arc<Check>>,
    /// The zone's recovery ramp, for services that set none.
    ramp: Option<Duration>,
    /// Whether the zone places node regions (the `latency` policy needs them).
    regions: bool,
}

/// Collects errors while turning a `RawZone` into a `Zone`.
struct Validator<'a> {
    text: &'a str,
    source: &'a str,
    zone: Option<String>,
    errors: Vec<ZoneError>,
}

impl<'a> Validator<'a> {
    fn new(text: &'a str, source: &'a str) -> Self {
        Validator {
            text,
            source,
            zone: None,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, record: Option<&str>, field: Option<&str>, message: impl Into<String>) {
        let line = record
            .and_then(|r| key_line(self.text, r))
            .or_else(|| field.and_then(|f| key_line(self.text, f.split('.').next().unwrap_or(f))));
        self.errors.push(ZoneError {
            file: self.source.to_string(),
            line,
            column: None,
            zone: self.zone.clone(),
            record: record.map(str::to_string),
            field: field.map(str::to_string),
            message: message.into(),
        });
    }

    fn ttl(&mut self, record: Option<&str>, field: &str, ttl: u32) -> u32 {
        if ttl > MAX_TTL {
            self.error(
                record,
                Some(field),
                format!("TTL {ttl} is out of range (0 to {MAX_TTL}, RFC 2181)"),
            );
        }
        ttl
    }

    /// Resolves a name in a value (see the module doc for the rule).
    fn name(&mut self, apex: &Name, record: Option<&str>, field: &str, text: &str) -> Option<Name> {
        self.resolve(apex, record, field, text, text.contains('.'))
    }

    /// Resolves a record's own name (see the module doc for the rule).
    fn owner(&mut self, apex: &Name, record: &str) -> Option<Name> {
        let lower = record.to_ascii_lowercase();
        let absolute = lower.ends_with('.')
            || lower == apex.as_str()
            || lower.ends_with(&format!(".{}", apex.as_str()));
        self.resolve(apex, Some(record), "name", record, absolute)
    }

    fn resolve(
        &mut self,
        apex: &Name,
        record: Option<&str>,
        field: &str,
        text: &str,
        absolute: bool,
    ) -> Option<Name> {
        if text == "@" {
            return Some(apex.clone());
        }
        let full = if absolute || apex.is_root() {
            text.to_string()
        } else {
            format!("{text}.{}", apex.as_str())
        };
        match Name::parse(&full) {
            Ok(n) => Some(n),
            Err(e) => {
                self.error(record, Some(field), e.to_string());
                None
            }
        }
    }

    fn address(&mut self, record: Option<&str>, field: &str, text: &str) -> Option<IpAddr> {
        match text.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.error(
                    record,
                    Some(field),
                    format!("{text:?} is not an IPv4 or IPv6 address"),
                );
                None
            }
        }
    }

    fn validate(
        mut self,
        raw: RawZone<()>,
        records: impl Iterator<Item = (Option<String>, Result<RawRecord, String>)>,
    ) -> Result<Zone, ZoneErrors> {
        let apex = match Name::parse(&raw.zone) {
            Ok(apex) if !apex.is_root() => apex,
            Ok(_) => {
                self.error(None, Some("zone"), "the root zone cannot be served");
                return Err(ZoneErrors(self.errors));
            }
            Err(e) => {
                self.error(None, Some("zone"), e.to_string());
                return Err(ZoneErrors(self.errors));
            }
        };
        self.zone = Some(apex.as_str().to_string());
        let default_ttl = self.ttl(None, "ttl", raw.ttl.unwrap_or(DEFAULT_TTL));

        // Every field of `soa:` has a default, so the block may be left out (issue 18).
        let first_ns = raw
            .nameservers
            .as_ref()
            .and_then(|ns| ns.keys().next().cloned());
        let soa = self.soa(&apex, raw.soa.unwrap_or_default(), first_ns, default_ttl);

        let datacenters = self.datacenters(&raw.datacenters);
        let regions: Vec<Region> = self
            .datacenters_at("regions", &raw.regions)
            .into_iter()
            .map(|d| Region {
                name: d.name,
                latitude: d.latitude,
                longitude: d.longitude,
            })
            .collect();
        let zone_ramp = self.ramp(None, "ramp", raw.ramp.as_deref());
        let rrl = self.rrl(raw.rrl);
        let dnssec = raw.dnssec.and_then(|d| self.dnssec(&apex, d));
        let mut checks: HashMap<String, Arc<Check>> = HashMap::new();
        for (name, raw_check) in raw.checks {
            match raw_check.validate() {
                Ok(c) => {
                    checks.insert(name, Arc::new(c));
                }
                Err(errors) => {
                    for (field, message) in errors {
                        self.error(None, Some(&format!("checks.{name}.{field}")), message);
                    }
                }
            }
        }
        let mut nodes: FxHashMap<Name, Node> = FxHashMap::default();
        let mut spelled: HashMap<Name, String> = HashMap::new();

        // Apex NS set and glue from `nameservers`.
        match raw.nameservers {
            Some(ns) if !ns.is_empty() => {
                let mut targets = Vec::new();
                for (ns_name, glue) in ns {
                    let field = format!("nameservers.{ns_name}");
                    let Some(target) = self.name(&apex, None, &field, &ns_name) else {
                        continue;
                    };
                    let in_zone = target.is_subdomain_of(&apex);
                    if in_zone && glue.is_empty() {
                        self.error(
                            None,
                            Some(&field),
                            format!("{target} is inside the zone, so it needs glue addresses"),
                        );
                    }
                    if !in_zone && !glue.is_empty() {
                        self.error(
                            None,
                            Some(&field),
                            format!(
                                "{target} is outside the zone: glue addresses are not served for it"
                            ),
                        );
                    }
                    let addrs: Vec<IpAddr> = glue
                        .iter()
                        .filter_map(|a| self.address(None, &field, a))
                        .collect();
                    if in_zone && !addrs.is_empty() {
                        let node = nodes.entry(target.clone()).or_default();
                        add_addresses(node, &addrs, default_ttl);
                        spelled.insert(target.clone(), field.clone());
                    }
                    targets.push(RData::Ns(target));
                }
                nodes.entry(apex.clone()).or_default().rrsets.push(RrSet {
                    rtype: RecordType::Ns,
                    ttl: default_ttl,
                    data: targets,
                });
            }
            _ => self.error(
                None,
                Some("nameservers"),
                "missing: every zone needs at least one name server",
            ),
        }

        for (key, record) in records {
            let Some(key) = key else {
                if let Err(e) = record {
                    self.error(None, Some("records"), e);
                }
                continue;
            };
            let record: RawRecord = match record {
                Ok(r) => r,
                Err(e) => {
                    self.error(Some(&key), None, e);
                    continue;
                }
            };
            let Some(owner) = self.owner(&apex, &key) else {
                continue;
            };
            if !owner.is_subdomain_of(&apex) {
                self.error(
                    Some(&key),
                    Some("name"),
                    format!("{owner} is outside the zone {apex}"),
                );
                continue;
            }
            if let Some(first) = spelled.get(&owner) {
                self.error(
                    Some(&key),
                    Some("name"),
                    format!("duplicate name: {owner} is already defined by {first}"),
                );
                continue;
            }
            spelled.insert(owner.clone(), key.clone());
            let defs = Defs {
                datacenters: &datacenters,
                checks: &checks,
                ramp: zone_ramp,
                regions: !regions.is_empty(),
            };
            let node = self.record(&apex, &key, &owner, record, default_ttl, &defs);
            if owner == apex {
                if node.rrset(RecordType::Ns).is_some() {
                    self.error(
                        Some(&key),
                        Some("NS"),
                        "the apex NS set comes from `nameservers`",
                    );
                }
                if node.rrset(RecordType::Cname).is_some() {
                    self.error(Some(&key), Some("CNAME"), "the zone apex cannot be a CNAME");
                }
                let apex_node = nodes.entry(apex.clone()).or_default();
                apex_node.rrsets.extend(node.rrsets);
                apex_node.service = node.service;
            } else {
                nodes.insert(owner, node);
            }
        }

        let delegations: rustc_hash::FxHashSet<Name> = nodes
            .iter()
            .filter(|(name, node)| **name != apex && node.rrset(RecordType::Ns).is_some())
            .map(|(name, _)| name.clone())
            .collect();
        self.check_delegations(&apex, &nodes, &delegations, &spelled);

        let mut empty_non_terminals = rustc_hash::FxHashSet::default();
        for name in nodes.keys() {
            let mut cur = name.parent();
            while let Some(p) = cur {
                if !p.is_subdomain_of(&apex) || nodes.contains_key(&p) {
                    break;
                }
                cur = p.parent();
                empty_non_terminals.insert(p);
            }
        }

        match soa {
            Some((soa, soa_ttl)) if self.errors.is_empty() => Ok(Zone {
                apex,
                source: self.source.to_string(),
                default_ttl,
                soa,
                soa_ttl,
                nodes,
                empty_non_terminals,
                delegations,
                datacenters,
                regions,
                rrl,
                dnssec,
            }),
            _ => Err(ZoneErrors(self.errors)),
        }
    }

    /// The zone's keys, read from their files (relative to the zone file's directory).
    fn dnssec(&mut self, apex: &Name, raw: RawDnssec) -> Option<Arc<Dnssec>> {
        let dir = Path::new(self.source)
            .parent()
            .unwrap_or_else(|| Path::new(""));
        let mut load = |field: &str, file: &str| match ZoneKey::load(&dir.join(file), apex) {
            Ok(k) => Some(Arc::new(k)),
            Err(e) => {
                self.error(None, Some(field), e.to_string());
                None
            }
        };
        let signing = load("dnssec.key", &raw.key);
        let published: Vec<_> = raw
            .publish
            .iter()
            .filter_map(|f| load("dnssec.publish", f))
            .collect();
        let signing = signing?;
        if published.len() != raw.publish.len() {
            return None;
        }
        let mut tags: Vec<u16> = std::iter::once(&signing)
            .chain(&published)
            .map(|k| k.tag)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        if tags.len() != 1 + published.len() {
            self.error(
                None,
                Some("dnssec.publish"),
                "two keys with the same key tag (the same key twice, or a tag collision: generate another)",
            );
            return None;
        }
        let dnskey_ttl = raw.dnskey_ttl.unwrap_or(DEFAULT_DNSKEY_TTL);
        let dnskey_ttl = self.ttl(None, "dnssec.dnskey_ttl", dnskey_ttl);
        Some(Arc::new(Dnssec {
            signing,
            published,
            dnskey_ttl,
        }))
    }

    /// A recovery ramp: `off`, or a duration from `MIN_RAMP` to `MAX_RAMP`.
    fn ramp(&mut self, record: Option<&str>, field: &str, text: Option<&str>) -> Option<Duration> {
        let text = text?;
        if text == "off" {
            return None;
        }
        match crate::zone::check::parse_duration(text) {
            Ok(d) if (MIN_RAMP..=MAX_RAMP).contains(&d) => Some(d),
            Ok(_) => {
                self.error(
                    record,
                    Some(field),
                    format!("{text:?} is out of range (1s to 24h, or off)"),
                );
                None
            }
            Err(e) => {
                self.error(record, Some(field), e.to_string());
                None
            }
        }
    }

    /// The zone's rate limits: the defaults, with what the zone sets.
    fn rrl(&mut self, raw: Option<RawRrl>) -> rrl::Limits {
        let defaults = rrl::Limits::default();
        let Some(raw) = raw else {
            return defaults;
        };
        let mut limit =
            |field: &str, value: Option<u32>, min: u32, max: u32, default: u32| match value {
                Some(v) if v < min || v > max => {
                    self.error(
                        None,
                        Some(&format!("rrl.{field}")),
                        format!("{v} is out of range ({min} to {max})"),
                    );
                    default
                }
                Some(v) => v,
                None => default,
            };
        let rate = limit(
            "responses_per_second",
            raw.responses_per_second,
            1,
            rrl::MAX_RESPONSES_PER_SECOND,
            defaults.responses_per_second,
        );
        rrl::Limits {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            responses_per_second: rate,
            // One second's worth unless set.
            burst: limit("burst", raw.burst, 1, rrl::MAX_RESPONSES_PER_SECOND, rate),
            slip: limit("slip", raw.slip, 0, rrl::MAX_SLIP, defaults.slip),
        }
    }

    /// The SOA from `soa:`, each field defaulted: the primary is the first name server, the
    /// contact hostmaster at the zone.
    fn soa(
        &mut self,
        apex: &Name,
        raw: RawSoa,
        first_ns: Option<String>,
        default_ttl: u32,
    ) -> Option<(Soa, u32)> {
        // Without name servers the zone is refused already, for that reason.
        let primary = raw.primary.or(first_ns)?;
        let mname = self.name(apex, None, "soa.primary", &primary);
        // The contact may be written as a mail address.
        let contact = raw
            .contact
            .unwrap_or_else(|| format!("hostmaster.{}", apex.as_str()))
            .replacen('@', ".", 1);
        let rname = self.name(apex, None, "soa.contact", &contact);
        let ttl = self.ttl(None, "soa.ttl", raw.ttl.unwrap_or(default_ttl));
        let minimum = self.ttl(None, "soa.minimum", raw.minimum.unwrap_or(60));
        Some((
            Soa {
                mname: mname?,
                rname: rname?,
                serial: raw.serial.unwrap_or(1),
                refresh: raw.refresh.unwrap_or(7200),
                retry: raw.retry.unwrap_or(3600),
                expire: raw.expire.unwrap_or(1_209_600),
                minimum,
            },
            ttl,
        ))
    }

    fn datacenters(&mut self, raw: &IndexMap<String, RawDatacenter>) -> Vec<Datacenter> {
        self.datacenters_at("datacenters", raw)
    }

    /// Named places with a location, under `section` (`datacenters`, `regions`).
    fn datacenters_at(
        &mut self,
        section: &str,
        raw: &IndexMap<String, RawDatacenter>,
    ) -> Vec<Datacenter> {
        let mut out = Vec::new();
        for (name, dc) in raw {
            let field = format!("{section}.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.error(
                    None,
                    Some(&field),
                    "names use letters, digits, '-' and '_' only",
                );
            }
            let [lat, lon] = dc.location;
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                self.error(
                    None,
                    Some(&format!("{field}.location")),
                    format!("[{lat}, {lon}] is not a [latitude, longitude] in degrees"),
                );
            }
            out.push(Datacenter {
                name: Arc::from(name.as_str()),
                latitude: lat,
                longitude: lon,
            });
        }
        out
    }

    fn record(
        &mut self,
        apex: &Name,
        key: &str,
        owner: &Name,
        raw: RawRecord,
        default_ttl: u32,
        defs: &Defs,
    ) -> Node {
        let rec = Some(key);
        let ttl = self.ttl(rec, "ttl", raw.ttl.unwrap_or(default_ttl));
        let mut node = Node::default();
        let mut push = |rtype: RecordType, data: Vec<RData>| {
            if !data.is_empty() {
                node.rrsets.push(RrSet { rtype, ttl, data });
            }
        };
        if let Some(v) = raw.a {
            let data = v
                .into_vec()
                .iter()
                .filter_map(|a| match self.address(rec, "A", a) {
                    Some(IpAddr::V4(v4)) => Some(RData::A(v4)),
                    Some(IpAddr::V6(_)) => {
                        self.error(rec, Some("A"), format!("{a} is IPv6: put it under AAAA"));
                        None
                    }
                    None => None,
                })
                .collect();
            push(RecordType::A, data);
        }
        if let Some(v) = raw.aaaa {
            let data = v
                .into_vec()
                .iter()
                .filter_map(|a| match self.address(rec, "AAAA", a) {
                    Some(IpAddr::V6(v6)) => Some(RData::Aaaa(v6)),
                    Some(IpAddr::V4(_)) => {
                        self.error(rec, Some("AAAA"), format!("{a} is IPv4: put it under A"));
                        None
                    }
                    None => None,
                })
                .collect();
            push(RecordType::Aaaa, data);
        }
        if let Some(t) = raw.cname.and_then(|t| self.name(apex, rec, "CNAME", &t)) {
            if &t == owner {
                self.error(rec, Some("CNAME"), "a CNAME cannot point at itself");
            }
            push(RecordType::Cname, vec![RData::Cname(t)]);
        }
        if let Some(v) = raw.txt {
            let mut data = Vec::new();
            for t in v.into_vec() {
                data.push(RData::Txt(split_txt(&t)));
            }
            push(RecordType::Txt, data);
        }
        if let Some(v) = raw.mx {
            let data = v
                .into_vec()
                .iter()
                .filter_map(|m| self.mx(apex, rec, m))
                .collect();
            push(RecordType::Mx, data);
        }
        if let Some(v) = raw.srv {
            let data = v
                .into_vec()
                .iter()
                .filter_map(|s| self.srv(apex, rec, s))
                .collect();
            push(RecordType::Srv, data);
        }
        if let Some(v) = raw.caa {
            let data = v
                .into_vec()
                .iter()
                .filter_map(|c| self.caa(rec, c))
                .collect();
            push(RecordType::Caa, data);
        }
        if let Some(v) = raw.ns {
            let data = v
                .into_vec()
                .iter()
                .filter_map(|n| self.name(apex, rec, "NS", n).map(RData::Ns))
                .collect();
            push(RecordType::Ns, data);
        }
        if node.rrset(RecordType::Cname).is_some()
            && (node.rrsets.len() > 1 || raw.service.is_some())
        {
            self.error(
                rec,
                Some("CNAME"),
                "a CNAME cannot stand beside other data at the same name (RFC 1034 section 3.6.2)",
            );
        }
        if let Some(s) = raw.service {
            if node.rrset(RecordType::A).is_some() || node.rrset(RecordType::Aaaa).is_some() {
                self.error(
                    rec,
                    Some("service"),
                    "a service computes the A and AAAA answers: remove the static A/AAAA records",
                );
            }
            node.service = self.service(rec, owner, s, defs).map(Arc::new);
        }
        node
    }

    fn service(
        &mut self,
        rec: Option<&str>,
        owner: &Name,
        raw: RawService,
        defs: &Defs,
    ) -> Option<Service> {
        let (datacenters, checks) = (defs.datacenters, defs.checks);
        let ramp = match raw.ramp.as_deref() {
            None => defs.ramp,
            Some(text) => self.ramp(rec, "service.ramp", Some(text)),
        };
        let check = match raw.check.as_deref() {
            None => None,
            Some(name) => match checks.get(name) {
                Some(c) => Some(c.clone()),
                None => {
                    self.error(
                        rec,
                        Some("service.check"),
                        format!("check {name:?} is not defined under `checks`"),
                    );
                    return None;
                }
            },
        };
        let ttl = self.ttl(rec, "service.ttl", raw.ttl.unwrap_or(DEFAULT_SERVICE_TTL));
        let answers = raw.answers.unwrap_or(DEFAULT_SERVICE_ANSWERS);
        if answers == 0 {
            self.error(rec, Some("service.answers"), "must be at least 1");
        }
        if raw.endpoints.is_empty() {
            self.error(
                rec,
                Some("service.endpoints"),
                "a service needs endpoints in at least one data center",
            );
        }
        let mut dcs = Vec::with_capacity(raw.endpoints.len());
        let mut ok = true;
        for (dc_name, addrs) in &raw.endpoints {
            let field = format!("service.endpoints.{dc_name}");
            let Some(dc) = datacenters.iter().position(|d| *d.name == **dc_name) else {
                self.error(
                    rec,
                    Some(&field),
                    format!("data center {dc_name:?} is not defined under `datacenters`"),
                );
                ok = false;
                continue;
            };
            if addrs.is_empty() {
                self.error(rec, Some(&field), "no endpoint addresses");
                ok = false;
            }
            // Sized exactly: a zone holds one of these per (service, DC), and a pushed-to Vec
            // keeps room for four addresses where most DCs have one or two.
            let mut endpoints = Vec::with_capacity(addrs.len());
            for a in addrs {
                match self.address(rec, &field, a) {
                    Some(ip) if endpoints.contains(&ip) => {
                        self.error(rec, Some(&field), format!("endpoint {ip} is listed twice"));
                        ok = false;
                    }
                    Some(ip) => endpoints.push(ip),
                    None => ok = false,
                }
            }
            dcs.push(ServiceDc { dc, endpoints });
        }
        let dc_names: Vec<&str> = raw.endpoints.keys().map(String::as_str).collect();
        let policy = self.policy(rec, &raw, &dc_names);
        if policy == Some(Policy::Latency) && !defs.regions {
            self.error(
                rec,
                Some("service.policy"),
                "policy latency needs `regions` at the top of the zone file: every node region \
                 (the `region:` of the node config) with its location, \
                 `regions: { eu: { location: [50.1, 8.7] } }`",
            );
        }
        let when_all_down = match raw.when_all_down.as_deref() {
            None | Some("serve_all") => WhenAllDown::ServeAll,
            Some("nodata") => WhenAllDown::NoData,
            Some("servfail") => WhenAllDown::ServFail,
            Some(other) => {
                self.error(
                    rec,
                    Some("service.when_all_down"),
                    format!("{other:?} is not one of serve_all, nodata, servfail"),
                );
                WhenAllDown::ServeAll
            }
        };
        match (ok && answers > 0, policy) {
            (true, Some(policy)) => Some(Service {
                id: crate::zone::next_service_id(),
                name: owner.clone(),
                ttl,
                degraded_ttl: match (raw.degraded_ttl, &check) {
                    (Some(t), _) => t.min(ttl),
                    (None, Some(c)) => degraded_ttl(ttl, c),
                    (None, None) => ttl,
                },
                check,
                answers,
                fill: raw.fill.unwrap_or(false),
                policy,
                when_all_down,
                dcs,
                ramp,
            }),
            _ => None,
        }
    }

    /// The routing policy; `None` after reporting errors.
    fn policy(&mut self, rec: Option<&str>, raw: &RawService, dcs: &[&str]) -> Option<Policy> {
        let name = raw.policy.as_deref().unwrap_or(if raw.geo.is_some() {
            "geo"
        } else if raw.weights.is_some() {
            "weighted"
        } else {
            "nearest"
        });
        if raw.geo.is_some() && name != "geo" {
            self.error(
                rec,
                Some("service.geo"),
                format!("geo rules need `policy: geo`, not {name}"),
            );
            return None;
        }
        if raw.weights.is_some() && name != "weighted" {
            self.error(
                rec,
                Some("service.weights"),
                format!("weights need `policy: weighted`, not {name}"),
            );
            return None;
        }
        let index = |v: &mut Self, field: &str, dc: &str| -> Option<usize> {
            let i = dcs.iter().position(|d| *d == dc);
            if i.is_none() {
                v.error(
                    rec,
                    Some(field),
                    format!("data center {dc:?} has no endpoints in this service"),
                );
            }
            i
        };
        match name {
            "nearest" => Some(Policy::Nearest),
            "latency" => Some(Policy::Latency),
            "failover" => Some(Policy::Failover),
            "weighted" => {
                let mut weights = vec![1u32; dcs.len()];
                let mut ok = true;
                for (dc, w) in raw.weights.iter().flatten() {
                    match index(self, "service.weights", dc) {
                        Some(i) => weights[i] = *w,
                        None => ok = false,
                    }
                }
                if weights.iter().all(|w| *w == 0) {
                    self.error(
                        rec,
                        Some("service.weights"),
                        "at least one weight must be above 0",
                    );
                    ok = false;
                }
                ok.then_some(Policy::Weighted(weights))
            }
            "geo" => {
                let mut rules = Vec::new();
                let mut default = GeoTarget::Nearest;
                let mut ok = true;
                for (label, target) in raw.geo.iter().flatten() {
                    let field = format!("service.geo.{label}");
                    let target = match target {
                        RawGeoTarget::Word(w) if w == "nearest" => GeoTarget::Nearest,
                        RawGeoTarget::Word(dc) => match index(self, &field, dc) {
                            Some(i) => GeoTarget::Dcs(vec![i]),
                            None => {
                                ok = false;
                                continue;
                            }
                        },
                        RawGeoTarget::Dcs(list) => {
                            let idx: Vec<Option<usize>> =
                                list.iter().map(|dc| index(self, &field, dc)).collect();
                            if idx.iter().any(Option::is_none) || idx.is_empty() {
                                if idx.is_empty() {
                                    self.error(
                                        rec,
                                        Some(&field),
                                        "an empty list sends clients nowhere",
                                    );
                                }
                                ok = false;
                                continue;
                            }
                            GeoTarget::Dcs(idx.into_iter().flatten().collect())
                        }
                    };
                    if label == "default" {
                        default = target;
                        continue;
                    }
                    match parse_geo_key(label) {
                        Ok(key) => rules.push(GeoRule {
                            label: Arc::from(label.as_str()),
                            key,
                            target,
                        }),
                        Err(msg) => {
                            self.error(rec, Some(&field), msg);
                            ok = false;
                        }
                    }
                }
                ok.then_some(Policy::Geo { rules, default })
            }
            other => {
                self.error(
                    rec,
                    Some("service.policy"),
                    format!("{other:?} is not one of nearest, latency, failover, weighted, geo"),
                );
                None
            }
        }
    }

    fn mx(&mut self, apex: &Name, rec: Option<&str>, text: &str) -> Option<RData> {
        let mut parts = text.split_whitespace();
        match (
            parts.next().map(str::parse::<u16>),
            parts.next(),
            parts.next(),
        ) {
            (Some(Ok(preference)), Some(host), None) => {
                let exchange = self.name(apex, rec, "MX", host)?;
                Some(RData::Mx {
                    preference,
                    exchange,
                })
            }
            _ => {
                self.error(
                    rec,
                    Some("MX"),
                    format!(
                        "{text:?} is not \"PREFERENCE EXCHANGE\" (e.g. \"10 mail.example.com.\")"
                    ),
                );
                None
            }
        }
    }

    fn srv(&mut self, apex: &Name, rec: Option<&str>, text: &str) -> Option<RData> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let nums: Vec<Option<u16>> = parts.iter().take(3).map(|p| p.parse().ok()).collect();
        match (parts.len(), nums.as_slice()) {
            (4, [Some(priority), Some(weight), Some(port)]) => {
                let target = self.name(apex, rec, "SRV", parts[3])?;
                Some(RData::Srv {
                    priority: *priority,
                    weight: *weight,
                    port: *port,
                    target,
                })
            }
            _ => {
                self.error(
                    rec,
                    Some("SRV"),
                    format!(
                        "{text:?} is not \"PRIORITY WEIGHT PORT TARGET\" (e.g. \"10 5 443 www\")"
                    ),
                );
                None
            }
        }
    }

    fn caa(&mut self, rec: Option<&str>, text: &str) -> Option<RData> {
        let mut parts = text.splitn(3, char::is_whitespace);
        let flags = parts.next().and_then(|f| f.parse::<u8>().ok());
        let tag = parts.next();
        let value = parts.next().map(|v| v.trim().trim_matches('"'));
        match (flags, tag, value) {
            // RFC 8659 section 4.1: the tag is 1 to 15 ASCII letters and digits (parsers such
            // as hickory's reject a longer one, so the whole answer would be unreadable).
            (Some(flags), Some(tag), Some(value))
                if (1..=15).contains(&tag.len())
                    && tag.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                Some(RData::Caa {
                    critical: flags & 0x80 != 0,
                    tag: tag.to_ascii_lowercase(),
                    value: value.to_string(),
                })
            }
            _ => {
                self.error(
                    rec,
                    Some("CAA"),
                    format!(
                        "{text:?} is not \"FLAGS TAG VALUE\" with a tag of 1 to 15 letters and digits (e.g. '0 issue \"letsencrypt.org\"')"
                    ),
                );
                None
            }
        }
    }

    fn check_delegations(
        &mut self,
        apex: &Name,
        nodes: &FxHashMap<Name, Node>,
        delegations: &rustc_hash::FxHashSet<Name>,
        spelled: &HashMap<Name, String>,
    ) {
        for (name, node) in nodes {
            // Find a delegation strictly above this name.
            let mut cur = name.parent();
            while let Some(p) = cur {
                if &p == apex || !p.is_subdomain_of(apex) {
                    break;
                }
                if delegations.contains(&p) {
                    let only_glue = node.service.is_none()
                        && node
                            .rrsets
                            .iter()
                            .all(|s| matches!(s.rtype, RecordType::A | RecordType::Aaaa));
                    if !only_glue {
                        let key = spelled.get(name).map(String::as_str);
                        self.error(
                            key,
                            Some("name"),
                            format!("{name} lies below the delegation {p}: only glue (A/AAAA) may be given there"),
                        );
                    }
                    break;
                }
                cur = p.parent();
            }
            if delegations.contains(name)
                && (node.service.is_some()
                    || node.rrsets.iter().any(|s| {
                        !matches!(s.rtype, RecordType::Ns | RecordType::A | RecordType::Aaaa)
                    }))
            {
                let key = spelled.get(name).map(String::as_str);
                self.error(
                    key,
                    Some("NS"),
                    format!("{name} is a delegation: it may carry only NS (and glue) records"),
                );
            }
        }
    }
}

/// The TTL of a degraded service's answers: no longer than it takes to notice a recovery
/// (`interval × rise`), so resolvers come back quickly, but at least `MIN_DEGRADED_TTL` so that a
/// degraded service does not turn every resolver into a query storm; never above the normal TTL.
pub fn degraded_ttl(ttl: u32, check: &Check) -> u32 {
    let recovery = (check.interval * check.rise).as_secs_f64().ceil() as u32;
    recovery.max(MIN_DEGRADED_TTL).min(ttl)
}

/// The shortest TTL a degraded service answers with (seconds).
pub const MIN_DEGRADED_TTL: u32 = 5;

/// `EU`, `NA-US` or `NA-US-CA` (octoDNS-style geo codes).
fn parse_geo_key(label: &str) -> Result<GeoKey, String> {
    let parts: Vec<&str> = label.split('-').collect();
    let continent = parts[0];
    if !CONTINENTS.contains(&continent) {
        return Err(format!(
            "{label:?}: {continent:?} is not a continent code ({}), and keys look like EU, NA-US or NA-US-CA",
            CONTINENTS.join(" ")
        ));
    }
    let upper_alnum = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    match parts.as_slice() {
        [c] => Ok(GeoKey::Continent(c.to_string())),
        [_, country] if country.len() == 2 && upper_alnum(country, 2) => {
            Ok(GeoKey::Country(country.to_string()))
        }
        [_, country, sub]
            if country.len() == 2 && upper_alnum(country, 2) && upper_alnum(sub, 3) =>
        {
            Ok(GeoKey::Subdivision {
                country: country.to_string(),
                code: sub.to_string(),
            })
        }
        _ => Err(format!(
            "{label:?} is not a geo code like EU, NA-US or NA-US-CA (upper case)"
        )),
    }
}

fn add_addresses(node: &mut Node, addrs: &[IpAddr], ttl: u32) {
    for ip in addrs {
        let rtype = match ip {
            IpAddr::V4(_) => RecordType::A,
            IpAddr::V6(_) => RecordType::Aaaa,
        };
        match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) => set.data.push(RData::from(*ip)),
            None => node.rrsets.push(RrSet {
                rtype,
                ttl,
                data: vec![RData::from(*ip)],
            }),
        }
    }
}

/// A TXT value longer than 255 octets is split into several character strings, as zone-file
/// tools do; the record still reads as one string to clients that join them.
pub fn split_txt(text: &str) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if cur.len() + c.len_utf8() > 255 {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// The first line (1-based) where `key` appears as a mapping key, for messages.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let candidates = [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ];
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            candidates.iter().any(|c| t.starts_with(c.as_str()))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
zone: api.example.com
soa: { primary: ns1, contact: hostmaster@example.com }
nameservers: { ns1: [192.0.2.53] }
";

    #[test]
    fn ramps_default_from_the_zone_and_are_checked() {
        let zone = |top: &str, service: &str| {
            format!(
                "{MINIMAL}{top}\ndatacenters: {{ fra: {{ location: [50.1, 8.7] }} }}\nrecords:\n  \
                 www: {{ service: {{ {service} endpoints: {{ fra: [192.0.2.1] }} }} }}\n"
            )
        };
        let ramp = |top: &str, service: &str| -> Result<Option<Duration>, Vec<String>> {
            match parse_zone(&zone(top, service), "t.yaml") {
                Ok(z) => Ok(z.nodes[&Name::parse("www.api.example.com").unwrap()]
                    .service
                    .as_ref()
                    .unwrap()
                    .ramp),
                Err(e) => Err(e.0.iter().map(|e| format!("{e}")).collect()),
            }
        };
        let min = |m: u64| Ok(Some(Duration::from_secs(60 * m)));
        assert_eq!(ramp("", ""), Ok(None), "off by default");
        assert_eq!(ramp("ramp: 5m", ""), min(5), "the zone's");
        assert_eq!(ramp("ramp: 5m", "ramp: 2m,"), min(2), "the service's wins");
        assert_eq!(
            ramp("ramp: 5m", "ramp: off,"),
            Ok(None),
            "off for one service"
        );
        assert_eq!(ramp("", "ramp: 1s,"), Ok(Some(Duration::from_secs(1))));
        assert_eq!(ramp("", "ramp: 24h,"), min(24 * 60));
        let err = |top: &str, service: &str| ramp(top, service).unwrap_err().join("\n");
        assert!(
            err("", "ramp: 500ms,")
                .ends_with("field service.ramp: \"500ms\" is out of range (1s to 24h, or off)"),
            "{}",
            err("", "ramp: 500ms,")
        );
        assert!(err("ramp: 25h", "").contains("field ramp: \"25h\" is out of range"));
        assert!(err("", "ramp: soon,").contains("field service.ramp: \"soon\" is not a duration"));
    }

    #[test]
    fn the_latency_policy_needs_the_regions_placed() {
        let zone = |regions: &str| {
            format!(
                "{MINIMAL}{regions}\ndatacenters: {{ fra: {{ location: [50.1, 8.7] }} }}\nrecords:\n  \
                 www: {{ service: {{ policy: latency, endpoints: {{ fra: [192.0.2.1] }} }} }}\n"
            )
        };
        let z = parse_zone(
            &zone("regions: { eu: { location: [51.5, -0.1] } }"),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(&*z.regions[0].name, "eu");
        assert_eq!(
            (z.regions[0].latitude, z.regions[0].longitude),
            (51.5, -0.1)
        );
        let e = parse_zone(&zone(""), "t.yaml").unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].field.as_deref(), Some("service.policy"));
        assert!(e.0[0].message.contains("needs `regions`"), "{}", e.0[0]);
        let e = parse_zone(&zone("regions: { eu: { location: [95, 0] } }"), "t.yaml").unwrap_err();
        assert_eq!(e.0[0].field.as_deref(), Some("regions.eu.location"));
    }

    #[test]
    fn a_minimal_zone_parses() {
        let z = parse_zone(MINIMAL, "t.yaml").unwrap();
        assert_eq!(z.apex.as_str(), "api.example.com");
        assert_eq!(z.soa.rname.as_str(), "hostmaster.example.com");
        assert_eq!(z.soa.mname.as_str(), "ns1.api.example.com");
        let ns1 = &z.nodes[&Name::parse("ns1.api.example.com").unwrap()];
        assert_eq!(ns1.rrset(RecordType::A).unwrap().data.len(), 1);
    }

    /// Issue 18: every field of `soa:` has a default, so the block may be left out.
    #[test]
    fn soa_fields_default_to_the_first_name_server_and_hostmaster_at_the_zone() {
        let table = [
            (
                "nameservers: { ns1: [192.0.2.53], ns2: [192.0.2.54] }\n",
                "ns1.api.example.com",
                "hostmaster.api.example.com",
            ),
            (
                "nameservers: { ns.example.net: [] }\nsoa: { contact: ops@example.net }\n",
                "ns.example.net",
                "ops.example.net",
            ),
            (
                "nameservers: { ns1: [192.0.2.53] }\nsoa: { primary: ns.example.org, serial: 7 }\n",
                "ns.example.org",
                "hostmaster.api.example.com",
            ),
        ];
        for (yaml, mname, rname) in table {
            let z = parse_zone(
                &format!("zone: api.example.com\nttl: 120\n{yaml}"),
                "t.yaml",
            )
            .unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(z.soa.mname.as_str(), mname, "{yaml}");
            assert_eq!(z.soa.rname.as_str(), rname, "{yaml}");
            let serial = if yaml.contains("serial") { 7 } else { 1 };
            assert_eq!(
                (
                    z.soa.serial,
                    z.soa.refresh,
                    z.soa.retry,
                    z.soa.expire,
                    z.soa.minimum
                ),
                (serial, 7200, 3600, 1_209_600, 60),
                "{yaml}"
            );
            assert_eq!(z.soa_ttl, 120, "{yaml}: the zone's TTL");
        }
        // Without name servers there is nothing to take the primary from: one error, theirs.
        let e = parse_zone("zone: api.example.com\n", "t.yaml").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.to_string().contains("field nameservers"), "{e}");
    }

    #[test]
    fn caa_tags_are_one_to_fifteen_letters_and_digits() {
        let zone = |tag: &str| {
            format!("{MINIMAL}records:\n  \"@\": {{ CAA: '0 {tag} \"ca.example\"' }}\n")
        };
        assert!(parse_zone(&zone("issue"), "t.yaml").is_ok());
        assert!(parse_zone(&zone(&"a".repeat(15)), "t.yaml").is_ok());
        for bad in ["a".repeat(16), "is-sue".to_string()] {
            let e = parse_zone(&zone(&bad), "t.yaml").unwrap_err();
            assert!(e.to_string().contains("1 to 15 letters and digits"), "{e}");
        }
    }

    #[test]
    fn empty_non_terminals_are_found() {
        let text = format!("{MINIMAL}records:\n  a.b.c: {{ A: 192.0.2.1 }}\n");
        let z = parse_zone(&text, "t.yaml").unwrap();
        assert!(
            z.empty_non_terminals
                .contains(&Name::parse("b.c.api.example.com").unwrap())
        );
        assert!(
            z.empty_non_terminals
                .contains(&Name::parse("c.api.example.com").unwrap())
        );
        assert!(!z.empty_non_terminals.contains(&z.apex));
    }

    #[test]
    fn long_txt_is_split_into_strings() {
        let parts = split_txt(&"x".repeat(600));
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
    }

    #[test]
    fn errors_carry_file_line_record_and_field() {
        let text = format!("{MINIMAL}records:\n  www: {{ A: [300.1.1.1] }}\n");
        let e = parse_zone(&text, "t.yaml").unwrap_err();
        assert_eq!(e.0.len(), 1);
        let msg = e.0[0].to_string();
        assert_eq!(
            msg,
            "t.yaml:6: zone api.example.com, record www, field A: \"300.1.1.1\" is not an IPv4 or IPv6 address"
        );
    }

    #[test]
    fn rrl_settings_default_parse_and_are_checked() {
        let z = parse_zone(MINIMAL, "t.yaml").unwrap();
        assert_eq!(z.rrl, rrl::Limits::default());
        let text = format!("{MINIMAL}rrl: {{ responses_per_second: 50, slip: 0 }}\n");
        let z = parse_zone(&text, "t.yaml").unwrap();
        assert_eq!(
            z.rrl,
            rrl::Limits {
                enabled: true,
                responses_per_second: 50,
                burst: 50,
                slip: 0
            }
        );
        let text = format!("{MINIMAL}rrl: {{ enabled: false, burst: 7 }}\n");
        let z = parse_zone(&text, "t.yaml").unwrap();
        assert!(!z.rrl.enabled);
        assert_eq!((z.rrl.responses_per_second, z.rrl.burst), (100, 7));

        let text = format!("{MINIMAL}rrl: {{ responses_per_second: 0, slip: 11 }}\n");
        let e = parse_zone(&text, "t.yaml").unwrap_err().to_string();
        assert!(
            e.contains("field rrl.responses_per_second: 0 is out of range (1 to 1000000)"),
            "{e}"
        );
        assert!(
            e.contains("field rrl.slip: 11 is out of range (0 to 10)"),
            "{e}"
        );
        let text = format!("{MINIMAL}rrl: {{ rate: 5 }}\n");
        let e = parse_zone(&text, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("unknown field `rate`"), "{e}");
    }
}
