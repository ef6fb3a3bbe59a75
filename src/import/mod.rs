//! Zone import: another tool's zone → the zone YAML steerdns reads.
//!
//! - `bind`: an RFC 1035 master file (the static part of a zone);
//! - `octodns`: an octoDNS YAML zone, `dynamic` records becoming services;
//! - `assemble` (here): static records in steerdns's own terms (`zone::RData`) → a `Draft`,
//!   shared by both: apex name servers and glue, delegations, one TTL per name;
//! - `Draft::finish` (here): the YAML text, loaded back through `zone::file::parse_zone` before
//!   it is handed out, so an import either yields a zone steerdns serves or fails naming the
//!   source file and line.
//!
//! What steerdns cannot express is never dropped in silence: each case is a `Warning` (the
//! source file and line, the name, why), which the command prints and writes as a comment at
//! the top of the YAML.

pub mod bind;
pub mod octodns;

use std::collections::HashMap;
use std::fmt;

use indexmap::IndexMap;
use serde::Serialize;

use crate::zone::file as zone_file;
use crate::zone::{Name, RData, RecordType, Soa, Zone};

/// Where something was read: a file and, where known, a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: String,
    pub line: Option<usize>,
}

impl At {
    pub fn new(file: &str, line: Option<usize>) -> At {
        At {
            file: file.to_string(),
            line,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// Something in the source that the imported zone leaves out or serves differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub at: At,
    /// The record it is about: `www.example.com. PTR`.
    pub subject: String,
    /// Why, and what happens instead.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.at, self.subject, self.message)
    }
}

/// One problem that stops an import, with where it is in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: At,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why an import failed. Nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: cannot read")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The source is malformed, or holds what no zone may (a name outside it, a CNAME beside
    /// other data): every such problem, in source order.
    #[error("{}", list(.0))]
    Source(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What both importers take besides the source.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Name servers for the apex NS set, replacing the source's (which octoDNS zones often
    /// leave to the provider). An in-zone one needs its A/AAAA records in the source.
    pub nameservers: Vec<String>,
}

/// A finished import: the YAML, what it left out or changed, and the zone as steerdns loads it.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub warnings: Vec<Warning>,
    pub zone: Zone,
}

/// One static record from the source, in steerdns's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub owner: Name,
    pub ttl: u32,
    pub data: RData,
    pub at: At,
}

impl SourceRecord {
    fn subject(&self) -> String {
        subject(&self.owner, &self.data.record_type().to_string())
    }
}

/// `www.example.com. TXT`: how warnings and problems name a record.
pub fn subject(owner: &Name, rtype: &str) -> String {
    format!("{owner} {rtype}")
}

// ---------------------------------------------------------------------------------------------
// The zone YAML, as written. Field order is the order in the file.

#[derive(Debug, Serialize)]
pub struct ZoneYaml {
    pub zone: String,
    pub ttl: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soa: Option<SoaYaml>,
    pub nameservers: IndexMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub datacenters: IndexMap<String, DatacenterYaml>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub checks: IndexMap<String, CheckYaml>,
    pub records: IndexMap<String, RecordYaml>,
}

#[derive(Debug, Serialize)]
pub struct SoaYaml {
    pub primary: String,
    pub contact: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
    pub ttl: u32,
}

#[derive(Debug, Serialize)]
pub struct DatacenterYaml {
    pub location: [f64; 2],
}

/// A health check in the zone's `checks:` (see `check::RawCheck`): one of the three kinds.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CheckYaml {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheckYaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https: Option<HttpCheckYaml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheckYaml>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpCheckYaml {
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpCheckYaml {
    pub port: u16,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct RecordYaml {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    #[serde(
        rename = "A",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many"
    )]
    pub a: Vec<String>,
    #[serde(
        rename = "AAAA",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many"
    )]
    pub aaaa: Vec<String>,
    #[serde(rename = "CNAME", skip_serializing_if = "Option::is_none")]
    pub cname: Option<String>,
    #[serde(
        rename = "TXT",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many"
    )]
    pub txt: Vec<String>,
    #[serde(
        rename = "MX",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many"
    )]
    pub mx: Vec<String>,
    #[serde(
        rename = "SRV",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many"
    )]
    pub srv: Vec<String>,
    #[serde(
        rename = "CAA",
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "one_or_many"
    )]
    pub caa: Vec<String>,
    #[serde(rename = "NS", skip_serializing_if = "Vec::is_empty")]
    pub ns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceYaml>,
}

#[derive(Debug, Serialize)]
pub struct ServiceYaml {
    pub ttl: u32,
    pub answers: usize,
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<IndexMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    pub endpoints: IndexMap<String, Vec<String>>,
}

/// One value as a scalar, several as a list (`TXT: "x"`, `A: [192.0.2.1, 192.0.2.2]`).
fn one_or_many<S: serde::Serializer>(values: &[String], s: S) -> Result<S::Ok, S::Error> {
    match values {
        [one] => s.serialize_str(one),
        many => many.serialize(s),
    }
}

// ---------------------------------------------------------------------------------------------

/// An imported zone before it is written out: the YAML document, where each record key came
/// from (so that the loader's complaints can name the source line), the warnings, and notes
/// for the header.
#[derive(Debug)]
pub struct Draft {
    pub yaml: ZoneYaml,
    /// Record key (or `nameservers.NAME`) → where the source defined it.
    pub origins: HashMap<String, At>,
    pub warnings: Vec<Warning>,
    /// Lines for the header that explain a choice rather than a loss (DC locations guessed).
    pub notes: Vec<String>,
    /// What the zone was imported from, for the header: `bind zone.db`.
    pub from: String,
    /// The source file, for problems without a line.
    pub file: String,
}

impl Draft {
    /// Writes the YAML and loads it back the way `steerdns serve` would; a zone the loader
    /// refuses fails the import with the loader's messages, placed at the source lines.
    pub fn finish(self) -> Result<Imported, ImportError> {
        let body = serde_yaml::to_string(&self.yaml).map_err(|e| {
            ImportError::Source(vec![Problem {
                at: At::new(&self.file, None),
                message: format!("cannot write the zone YAML: {e}"),
            }])
        })?;
        let yaml = format!("{}{body}", self.header());
        match zone_file::parse_zone(&yaml, "(imported zone)") {
            Ok(zone) => Ok(Imported {
                yaml,
                warnings: self.warnings,
                zone,
            }),
            Err(errors) => {
                let problems = errors
                    .0
                    .into_iter()
                    .map(|e| {
                        let key = e.record.clone().or_else(|| {
                            e.field
                                .as_deref()
                                .filter(|f| f.starts_with("nameservers."))
                                .map(str::to_string)
                        });
                        let at = key
                            .and_then(|k| self.origins.get(&k).cloned())
                            .unwrap_or_else(|| At::new(&self.file, None));
                        let what = match (&e.record, &e.field) {
                            (Some(r), Some(f)) => format!("record {r}, {f}: "),
                            (Some(r), None) => format!("record {r}: "),
                            (None, Some(f)) => format!("{f}: "),
                            (None, None) => String::new(),
                        };
                        Problem {
                            at,
                            message: format!(
                                "steerdns cannot load the result: {what}{}",
                                e.message
                            ),
                        }
                    })
                    .collect();
                Err(ImportError::Source(problems))
            }
        }
    }

    /// The comment block at the top of the file: where it came from, what was left out.
    fn header(&self) -> String {
        let mut out = format!(
            "# Imported with `steerdns import {}`.\n",
            one_line(&self.from)
        );
        for note in &self.notes {
            for line in wrap(&one_line(note), 96) {
                out.push_str(&format!("# {line}\n"));
            }
        }
        if self.warnings.is_empty() {
            out.push_str("# Nothing was left out.\n");
        } else {
            out.push_str(&format!(
                "# Left out or served differently ({}):\n",
                self.warnings.len()
            ));
            for w in &self.warnings {
                out.push_str(&format!("#   {}\n", one_line(&w.to_string())));
            }
        }
        out.push('\n');
        out
    }
}

/// Words in lines of at most `width` characters (a longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Text for a one-line comment: line breaks would end the comment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// How a name is written as a key under `records`: relative to the apex (`www`, `@`), or in
/// full with a dot where the relative form would read as absolute (it ends with the apex).
pub fn record_key(apex: &Name, name: &Name) -> String {
    if name == apex {
        return "@".to_string();
    }
    let suffix = format!(".{}", apex.as_str());
    match name.as_str().strip_suffix(&suffix) {
        Some(rel) if rel != apex.as_str() && !rel.ends_with(&suffix) => rel.to_string(),
        _ => name.to_string(),
    }
}

/// A name in a value, always absolute (with the dot), as the zone format reads it.
fn absolute(name: &Name) -> String {
    name.to_string()
}

/// The character strings steerdns serves for a TXT value (`zone::file`'s split: runs of at most
/// 255 octets, cut at character boundaries).
pub(crate) fn served_txt_strings(text: &str) -> Vec<String> {
    crate::zone::file::split_txt(text)
}

/// The default TTL of the zone when nothing better is known.
const FALLBACK_TTL: u32 = zone_file::DEFAULT_TTL;

/// What `assemble` needs besides the records.
pub struct Assembly<'a> {
    pub apex: &'a Name,
    /// `bind zone.db`, for the header.
    pub from: String,
    /// The source file, for problems of the whole zone.
    pub file: String,
    /// The TTL to prefer for the zone when it has no apex NS set (BIND's first `$TTL`).
    pub preferred_ttl: Option<u32>,
    pub options: &'a Options,
    /// Where `--nameserver` problems are reported.
    pub options_at: At,
}

/// Static records → the zone YAML's `ttl`, `soa`, `nameservers` and `records`, with warnings
/// for what the format cannot hold:
/// - the apex NS set becomes `nameservers`, with the A/AAAA records of in-zone name servers as
///   glue (such a name can hold nothing else, and its addresses take the zone's TTL);
/// - below a delegation only glue (A/AAAA) is kept: the rest is occluded, no server answers it;
/// - wildcard names are left out: steerdns does no wildcard synthesis;
/// - one TTL per name: where a name's types differ, the lowest;
/// - TXT strings are joined and split again at 255 octets, as steerdns serves them.
///
/// Problems that no zone may have (a name outside the zone, a CNAME beside other data, a
/// second SOA) fail the import.
pub fn assemble(
    a: Assembly<'_>,
    records: Vec<SourceRecord>,
    mut warnings: Vec<Warning>,
    mut problems: Vec<Problem>,
) -> Result<Draft, ImportError> {
    let apex = a.apex;
    let mut origins: HashMap<String, At> = HashMap::new();

    // Out-of-zone names, duplicates, and grouping by name in order of first appearance.
    let mut by_name: IndexMap<Name, Vec<SourceRecord>> = IndexMap::new();
    for r in records {
        if !r.owner.is_subdomain_of(apex) {
            problems.push(Problem {
                at: r.at.clone(),
                message: format!("{} is outside the zone {apex}", r.subject()),
            });
            continue;
        }
        let set = by_name.entry(r.owner.clone()).or_default();
        // RFC 2181 section 5: an RRset holds each record once.
        if !set.iter().any(|s| s.data == r.data) {
            set.push(r);
        }
    }

    // The SOA.
    let mut soa: Option<(Soa, u32, At)> = None;
    for set in by_name.values_mut() {
        for r in set.extract_if(.., |r| matches!(r.data, RData::Soa(_))) {
            let RData::Soa(s) = r.data else {
                continue; // extract_if matched only SOA records
            };
            if r.owner != *apex {
                problems.push(Problem {
                    at: r.at,
                    message: format!("{}: the SOA belongs at the apex {apex}", r.owner),
                });
            } else if let Some((_, _, first)) = &soa {
                problems.push(Problem {
                    at: r.at,
                    message: format!("a second SOA (the first is at {first})"),
                });
            } else {
                soa = Some((s, r.ttl, r.at));
            }
        }
    }

    // Wildcards.
    for (name, set) in by_name.iter_mut() {
        if name.as_str().starts_with("*.") || name.as_str() == "*" {
            for r in set.drain(..) {
                warnings.push(Warning {
                    subject: r.subject(),
                    at: r.at,
                    message: "wildcard: steerdns does no wildcard synthesis (it would answer \
                              only the literal name `*`); left out"
                        .to_string(),
                });
            }
        }
    }

    // Apex name servers, from the source or from --nameserver.
    let apex_ns: Vec<SourceRecord> = match by_name.get_mut(apex) {
        Some(set) => set
            .extract_if(.., |r| matches!(r.data, RData::Ns(_)))
            .collect(),
        None => Vec::new(),
    };
    let mut ns_hosts: Vec<(Name, At)> = Vec::new();
    if a.options.nameservers.is_empty() {
        for r in &apex_ns {
            if let RData::Ns(host) = &r.data {
                ns_hosts.push((host.clone(), r.at.clone()));
            }
        }
    } else {
        for text in &a.options.nameservers {
            let full = if text.contains('.') {
                text.clone()
            } else {
                format!("{text}.{}", apex.as_str())
            };
            match Name::parse(&full) {
                Ok(n) => ns_hosts.push((n, a.options_at.clone())),
                Err(e) => problems.push(Problem {
                    at: a.options_at.clone(),
                    message: format!("--nameserver {text}: {e}"),
                }),
            }
        }
    }

    let zone_ttl = apex_ns
        .iter()
        .map(|r| r.ttl)
        .min()
        .or(a.preferred_ttl)
        .or_else(|| most_common_ttl(&by_name))
        .unwrap_or(FALLBACK_TTL);
    for r in &apex_ns {
        if r.ttl != zone_ttl {
            warnings.push(Warning {
                subject: r.subject(),
                at: r.at.clone(),
                message: format!(
                    "TTL {} served as {zone_ttl}: the apex NS set takes the zone's TTL",
                    r.ttl
                ),
            });
        }
    }
    if !a.options.nameservers.is_empty() && !apex_ns.is_empty() {
        let replaced: Vec<String> = apex_ns
            .iter()
            .map(|r| match &r.data {
                RData::Ns(n) => n.to_string(),
                _ => String::new(),
            })
            .collect();
        warnings.push(Warning {
            subject: subject(apex, "NS"),
            at: apex_ns[0].at.clone(),
            message: format!(
                "replaced by --nameserver: {} (the source's)",
                replaced.join(", ")
            ),
        });
    }

    let mut nameservers: IndexMap<String, Vec<String>> = IndexMap::new();
    for (host, at) in &ns_hosts {
        let key = absolute(host);
        let mut glue = Vec::new();
        if host == apex {
            problems.push(Problem {
                at: at.clone(),
                message: format!(
                    "name server {host} is the apex itself: steerdns takes a name server's \
                     glue from `nameservers`, which cannot share the apex's name"
                ),
            });
        } else if host.is_subdomain_of(apex) {
            // Its addresses become glue; `nameservers` defines the name, so nothing else may
            // stand there.
            for r in by_name
                .get_mut(host)
                .map(std::mem::take)
                .unwrap_or_default()
            {
                match &r.data {
                    RData::A(_) | RData::Aaaa(_) => {
                        if r.ttl != zone_ttl {
                            warnings.push(Warning {
                                subject: r.subject(),
                                at: r.at.clone(),
                                message: format!(
                                    "TTL {} served as {zone_ttl}: a name server's addresses \
                                     (glue) take the zone's TTL",
                                    r.ttl
                                ),
                            });
                        }
                        glue.push(address_text(&r.data));
                    }
                    _ => warnings.push(Warning {
                        subject: r.subject(),
                        at: r.at.clone(),
                        message: format!(
                            "{host} is a name server of the zone: steerdns serves only its \
                             addresses (glue) there; left out"
                        ),
                    }),
                }
            }
            if glue.is_empty() {
                problems.push(Problem {
                    at: at.clone(),
                    message: format!(
                        "name server {host} is inside the zone but has no A or AAAA record \
                         (glue)"
                    ),
                });
            }
        }
        origins.insert(format!("nameservers.{key}"), at.clone());
        nameservers.insert(key, glue);
    }
    if nameservers.is_empty() {
        problems.push(Problem {
            at: At::new(&a.file, None),
            message: format!(
                "no NS records at the apex {apex}: steerdns needs the zone's name servers \
                 (give them with --nameserver)"
            ),
        });
    }

    // Delegations: below them only glue is served.
    let delegations: Vec<Name> = by_name
        .iter()
        .filter(|(name, set)| *name != apex && set.iter().any(|r| matches!(r.data, RData::Ns(_))))
        .map(|(name, _)| name.clone())
        .collect();
    for (name, set) in by_name.iter_mut() {
        // The highest delegation at or above the name: everything below it is the child's.
        let Some(cut) = delegations
            .iter()
            .filter(|d| name.is_subdomain_of(d))
            .min_by_key(|d| d.as_str().len())
            .cloned()
        else {
            continue;
        };
        let at_cut = *name == cut;
        let kept = |data: &RData| match data {
            RData::A(_) | RData::Aaaa(_) => true,
            RData::Ns(_) => at_cut,
            _ => false,
        };
        for r in set.extract_if(.., |r| !kept(&r.data)) {
            let message = if at_cut {
                format!(
                    "{cut} is a delegation: steerdns serves only its NS records and glue there; \
                     left out"
                )
            } else {
                format!(
                    "below the delegation {cut}: the child zone's servers answer for it, so \
                     only glue (A/AAAA) is kept; left out"
                )
            };
            warnings.push(Warning {
                subject: r.subject(),
                at: r.at,
                message,
            });
        }
    }

    // The records, one key per name.
    let mut out: IndexMap<String, RecordYaml> = IndexMap::new();
    for (name, set) in by_name {
        if set.is_empty() {
            continue;
        }
        let key = record_key(apex, &name);
        let cnames: Vec<&SourceRecord> = set
            .iter()
            .filter(|r| matches!(r.data, RData::Cname(_)))
            .collect();
        if let Some(c) = cnames.first() {
            if cnames.len() > 1 {
                problems.push(Problem {
                    at: cnames[1].at.clone(),
                    message: format!("{}: a name holds at most one CNAME", c.subject()),
                });
            } else if set.len() > 1 {
                let other = set.iter().find(|r| !matches!(r.data, RData::Cname(_)));
                problems.push(Problem {
                    at: c.at.clone(),
                    message: format!(
                        "{}: a CNAME cannot stand beside other data ({} at {}; RFC 1034 \
                         section 3.6.2)",
                        c.subject(),
                        other
                            .map(|o| o.data.record_type().to_string())
                            .unwrap_or_default(),
                        other.map(|o| o.at.to_string()).unwrap_or_default(),
                    ),
                });
            } else if name == *apex {
                problems.push(Problem {
                    at: c.at.clone(),
                    message: format!("{}: the zone apex cannot be a CNAME", c.subject()),
                });
            }
        }

        let ttl = set.iter().map(|r| r.ttl).min().unwrap_or(zone_ttl);
        if set.iter().any(|r| r.ttl != ttl) {
            let mut ttls: Vec<String> = Vec::new();
            for r in &set {
                let t = format!("{} {}", r.data.record_type(), r.ttl);
                if !ttls.contains(&t) {
                    ttls.push(t);
                }
            }
            warnings.push(Warning {
                subject: name.to_string(),
                at: set[0].at.clone(),
                message: format!(
                    "TTLs differ ({}): all served with {ttl}, the lowest (steerdns has one TTL \
                     per name)",
                    ttls.join(", ")
                ),
            });
        }
        let mut rec = RecordYaml {
            ttl: (ttl != zone_ttl).then_some(ttl),
            ..RecordYaml::default()
        };
        for r in &set {
            match &r.data {
                RData::A(_) => rec.a.push(address_text(&r.data)),
                RData::Aaaa(_) => rec.aaaa.push(address_text(&r.data)),
                RData::Cname(t) => rec.cname = Some(absolute(t)),
                RData::Ns(t) => rec.ns.push(absolute(t)),
                RData::Mx {
                    preference,
                    exchange,
                } => rec.mx.push(format!("{preference} {}", absolute(exchange))),
                RData::Srv {
                    priority,
                    weight,
                    port,
                    target,
                } => rec
                    .srv
                    .push(format!("{priority} {weight} {port} {}", absolute(target))),
                RData::Txt(strings) => {
                    let joined = strings.concat();
                    let served = served_txt_strings(&joined);
                    if served != *strings {
                        warnings.push(Warning {
                            subject: r.subject(),
                            at: r.at.clone(),
                            message: format!(
                                "{} character string(s) served as {} (split at 255 octets); \
                                 clients that join them read the same text",
                                strings.len(),
                                served.len()
                            ),
                        });
                    }
                    rec.txt.push(joined);
                }
                RData::Caa {
                    critical,
                    tag,
                    value,
                } => {
                    let ok_tag = (1..=15).contains(&tag.len())
                        && tag.chars().all(|c| c.is_ascii_alphanumeric());
                    let ok_value =
                        value.trim() == value && !value.starts_with('"') && !value.ends_with('"');
                    if !ok_tag || !ok_value {
                        warnings.push(Warning {
                            subject: r.subject(),
                            at: r.at.clone(),
                            message: if ok_tag {
                                format!(
                                    "value {value:?} starts or ends with a space or a quote, \
                                     which the zone format cannot hold; left out"
                                )
                            } else {
                                format!(
                                    "tag {tag:?} is not 1 to 15 letters and digits (RFC 8659); \
                                     left out"
                                )
                            },
                        });
                        continue;
                    }
                    let flags = if *critical { 128 } else { 0 };
                    rec.caa.push(format!("{flags} {tag} \"{value}\""));
                }
                RData::Soa(_) => {} // taken out above
            }
        }
        if rec.a.is_empty()
            && rec.aaaa.is_empty()
            && rec.cname.is_none()
            && rec.txt.is_empty()
            && rec.mx.is_empty()
            && rec.srv.is_empty()
            && rec.caa.is_empty()
            && rec.ns.is_empty()
        {
            continue;
        }
        origins.insert(key.clone(), set[0].at.clone());
        out.insert(key, rec);
    }

    if !problems.is_empty() {
        return Err(ImportError::Source(problems));
    }
    // In the order of the source, whichever step found them.
    warnings.sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
    let soa = soa.map(|(s, ttl, _)| SoaYaml {
        primary: absolute(&s.mname),
        contact: absolute(&s.rname),
        serial: s.serial,
        refresh: s.refresh,
        retry: s.retry,
        expire: s.expire,
        minimum: s.minimum,
        ttl,
    });
    Ok(Draft {
        yaml: ZoneYaml {
            zone: apex.as_str().to_string(),
            ttl: zone_ttl,
            soa,
            nameservers,
            datacenters: IndexMap::new(),
            checks: IndexMap::new(),
            records: out,
        },
        origins,
        warnings,
        notes: Vec::new(),
        from: a.from,
        file: a.file,
    })
}

fn address_text(data: &RData) -> String {
    match data {
        RData::A(ip) => ip.to_string(),
        RData::Aaaa(ip) => ip.to_string(),
        other => other.to_string(),
    }
}

/// The TTL most records carry (ties: the lowest), for a zone with no better default.
fn most_common_ttl(by_name: &IndexMap<Name, Vec<SourceRecord>>) -> Option<u32> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for r in by_name.values().flatten() {
        *counts.entry(r.ttl).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|(t1, c1), (t2, c2)| c1.cmp(c2).then(t2.cmp(t1)))
        .map(|(t, _)| t)
}

/// The record types steerdns serves from static data, by their zone-file names.
pub fn supported_type(text: &str) -> Option<RecordType> {
    Some(match text {
        "A" => RecordType::A,
        "AAAA" => RecordType::Aaaa,
        "CNAME" => RecordType::Cname,
        "TXT" => RecordType::Txt,
        "MX" => RecordType::Mx,
        "SRV" => RecordType::Srv,
        "CAA" => RecordType::Caa,
        "NS" => RecordType::Ns,
        "SOA" => RecordType::Soa,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn record_keys_are_relative_unless_that_would_read_as_absolute() {
        let apex = name("example.com");
        let table = [
            ("example.com", "@"),
            ("www.example.com", "www"),
            ("_sip._tcp.example.com", "_sip._tcp"),
            ("a.b.example.com", "a.b"),
            // Relative `example.com` under example.com would be read as the apex itself.
            ("example.com.example.com", "example.com.example.com."),
            ("x.example.com.example.com", "x.example.com.example.com."),
        ];
        for (full, key) in table {
            assert_eq!(record_key(&apex, &name(full)), key, "{full}");
        }
    }

    #[test]
    fn txt_strings_are_served_in_runs_of_255_octets() {
        assert_eq!(served_txt_strings(""), [""]);
        let long = "x".repeat(300);
        assert_eq!(served_txt_strings(&long), ["x".repeat(255), "x".repeat(45)]);
        // A two-octet character is not cut in half.
        let text = format!("{}é", "x".repeat(254));
        assert_eq!(
            served_txt_strings(&text),
            ["x".repeat(254), "é".to_string()]
        );
    }
}
