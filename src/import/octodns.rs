//! octoDNS YAML zones → static records and services (a `Draft`, see `import`).
//!
//! Static records (`type` with `value` or `values`) go through `import::assemble` like a master
//! file's. A `dynamic` A or AAAA record becomes a service with `policy: geo`:
//! - each pool is a data center, its values the endpoints; the record's own `values`, which
//!   octoDNS serves when a rule's pools are all down, are one more DC, `values`, at the end of
//!   every list;
//! - each rule's `geos` become geo keys (`EU`, `NA-US`, `NA-US-CA`: the same codes), sending
//!   clients to the rule's pool, then its `fallback` chain, then `values`; the catch-all rule
//!   becomes `default`. octoDNS requires a more specific geo to come before a broader one, so
//!   its first-match order and steerdns's most-specific match agree;
//! - `octodns.healthcheck` (host, path, port, protocol; octoDNS's defaults: HTTPS, port 443,
//!   `/_dns`, the record's name as host) becomes the service's check.
//!
//! What has no equivalent is listed: per-value weights and `status`, subnet rules, provider-
//! specific settings, dynamic records of other types, record types steerdns does not serve.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};

use super::{
    Assembly, At, CheckYaml, DatacenterYaml, Draft, HttpCheckYaml, ImportError, Imported, Options,
    Problem, ServiceYaml, SourceRecord, TcpCheckYaml, Warning, record_key, subject,
};
use crate::zone::{Name, RData};

/// octoDNS's TTL for a record that sets none (YamlProvider `default_ttl`).
const DEFAULT_TTL: u32 = 3600;

/// The DC that holds a dynamic record's own `values` (renamed if a pool is called that).
const VALUES_DC: &str = "values";

/// Continent → an approximate centre, to place a pool that only a continent rule names.
const CONTINENT_CENTRES: [(&str, [f64; 2]); 7] = [
    ("AF", [1.5, 17.3]),
    ("AN", [-82.9, 135.0]),
    ("AS", [34.0, 100.6]),
    ("EU", [54.5, 15.3]),
    ("NA", [48.2, -100.2]),
    ("OC", [-22.7, 140.0]),
    ("SA", [-8.8, -55.5]),
];

/// Reads the octoDNS zone file at `path`. Without `zone`, the apex is the file name without
/// `.yaml` (octoDNS's YamlProvider names files after their zone: `example.com.yaml`).
pub fn load(path: &Path, zone: Option<&str>, options: &Options) -> Result<Imported, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        file: file.clone(),
        source,
    })?;
    let zone = match zone {
        Some(z) => z.to_string(),
        None => {
            let stem = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.trim_end_matches(".yaml").trim_end_matches(".yml"))
                .unwrap_or_default();
            stem.trim_end_matches('.').to_string()
        }
    };
    from_str(&text, &file, &zone, options)
}

/// Converts octoDNS YAML text; `file` names it in messages.
pub fn from_str(
    text: &str,
    file: &str,
    zone: &str,
    options: &Options,
) -> Result<Imported, ImportError> {
    draft(text, file, zone, options)?.finish()
}

fn problem(at: At, message: impl Into<String>) -> Problem {
    Problem {
        at,
        message: message.into(),
    }
}

/// One record as octoDNS writes it, with its name and where it is.
struct Raw<'a> {
    name: Name,
    /// The key as written (`''` for the apex), for messages.
    key: String,
    rtype: String,
    data: &'a Mapping,
    at: At,
}

impl Raw<'_> {
    fn subject(&self) -> String {
        subject(&self.name, &self.rtype)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    fn ttl(&self) -> Result<u32, Problem> {
        match self.get("ttl") {
            None => Ok(DEFAULT_TTL),
            Some(v) => v
                .as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| {
                    problem(
                        self.at.clone(),
                        format!(
                            "{}: ttl {} is not a number of seconds",
                            self.subject(),
                            show(v)
                        ),
                    )
                }),
        }
    }

    /// `values`, or `value` as a list of one.
    fn values(&self) -> Vec<&Value> {
        match (self.get("values"), self.get("value")) {
            (Some(Value::Sequence(v)), _) => v.iter().collect(),
            (Some(v), _) | (None, Some(v)) => vec![v],
            (None, None) => Vec::new(),
        }
    }
}

/// A value for a message: YAML on one line.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().replace('\n', " "))
            .unwrap_or_default(),
    }
}

/// A scalar as text (octoDNS values are strings, but YAML may read `10` as a number).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The octoDNS file as a `Draft`, before it is written out and checked.
pub fn draft(text: &str, file: &str, zone: &str, options: &Options) -> Result<Draft, ImportError> {
    let whole = At::new(file, None);
    let apex = match Name::parse(zone) {
        Ok(apex) if !apex.is_root() => apex,
        Ok(_) => {
            return Err(ImportError::Source(vec![problem(
                whole,
                "--zone: the root zone cannot be served",
            )]));
        }
        Err(e) => {
            return Err(ImportError::Source(vec![problem(
                whole,
                format!("zone {zone:?}: {e} (give the apex with --zone)"),
            )]));
        }
    };
    let root: Mapping = serde_yaml::from_str(text).map_err(|e| {
        ImportError::Source(vec![problem(
            At::new(file, e.location().map(|l| l.line())),
            format!("not an octoDNS zone (a mapping of names to records): {e}"),
        )])
    })?;

    let mut problems: Vec<Problem> = Vec::new();
    let mut warnings: Vec<Warning> = Vec::new();

    // Every record, in file order.
    let mut raws: Vec<Raw<'_>> = Vec::new();
    for (key, value) in &root {
        let Some(key) = text_key(key) else {
            problems.push(problem(
                whole.clone(),
                format!("record name {} is not a string", show(key)),
            ));
            continue;
        };
        let at = At::new(file, key_line(text, &key));
        let full = if key.is_empty() {
            Ok(apex.clone())
        } else {
            Name::parse(&format!("{key}.{}", apex.as_str()))
        };
        let name = match full {
            Ok(n) => n,
            Err(e) => {
                problems.push(problem(at, format!("record name {key:?}: {e}")));
                continue;
            }
        };
        let records: Vec<&Value> = match value {
            Value::Sequence(list) => list.iter().collect(),
            one => vec![one],
        };
        for r in records {
            let Value::Mapping(data) = r else {
                problems.push(problem(
                    at.clone(),
                    format!("{name}: a record is a mapping with `type`, not {}", show(r)),
                ));
                continue;
            };
            let Some(rtype) = data.get("type").and_then(scalar) else {
                problems.push(problem(
                    at.clone(),
                    format!("{name}: a record without `type`"),
                ));
                continue;
            };
            raws.push(Raw {
                name: name.clone(),
                key: key.clone(),
                rtype: rtype.to_ascii_uppercase(),
                data,
                at: at.clone(),
            });
        }
    }

    // What octoDNS itself says about a record: ignored, provider filters, provider settings.
    raws.retain(|r| keep(r, &mut warnings));

    // Dynamic A/AAAA records become services; the static A/AAAA at their names join them.
    let mut services: IndexMap<Name, Service> = IndexMap::new();
    for r in &raws {
        if r.get("dynamic").is_none() {
            continue;
        }
        if !matches!(r.rtype.as_str(), "A" | "AAAA") {
            warnings.push(Warning {
                subject: r.subject(),
                at: r.at.clone(),
                message: "dynamic records of this type have no steerdns equivalent (services \
                          answer A and AAAA); its static value is served to everyone"
                    .to_string(),
            });
            continue;
        }
        match dynamic(r, &apex, &mut warnings) {
            Ok(d) => match services.get_mut(&r.name) {
                Some(s) => s.merge(d, &mut warnings),
                None => {
                    services.insert(r.name.clone(), Service::new(d));
                }
            },
            Err(p) => problems.push(p),
        }
    }

    let mut records: Vec<SourceRecord> = Vec::new();
    for r in &raws {
        if let Some(s) = services.get_mut(&r.name)
            && matches!(r.rtype.as_str(), "A" | "AAAA")
        {
            if r.get("dynamic").is_none() {
                // A static family beside a dynamic one: served from the `values` DC.
                match addresses(r) {
                    Ok(ips) => {
                        warnings.push(Warning {
                            subject: r.subject(),
                            at: r.at.clone(),
                            message: format!(
                                "served by the service of the dynamic {} record, from its DC \
                                 `values`, health checked with it",
                                if r.rtype == "A" { "AAAA" } else { "A" }
                            ),
                        });
                        s.extra_values.extend(ips);
                    }
                    Err(p) => problems.push(p),
                }
            }
            continue;
        }
        match statics(r, &mut warnings) {
            Ok(mut rs) => records.append(&mut rs),
            Err(p) => problems.push(p),
        }
    }

    if !problems.is_empty() {
        return Err(ImportError::Source(problems));
    }
    let mut draft = super::assemble(
        Assembly {
            apex: &apex,
            from: format!("octodns {file}"),
            file: file.to_string(),
            preferred_ttl: None,
            options,
            options_at: At::new("--nameserver", None),
        },
        records,
        warnings,
        Vec::new(),
    )?;
    add_services(&mut draft, &apex, services);
    Ok(draft)
}

/// A top-level key as text (`''` is the apex; YAML may read `1` as a number).
fn text_key(key: &Value) -> Option<String> {
    match key {
        Value::Null => Some(String::new()),
        other => scalar(other),
    }
}

/// The line of a top-level key, for messages (serde_yaml's values carry no positions).
fn key_line(text: &str, key: &str) -> Option<usize> {
    let forms: Vec<String> = if key.is_empty() {
        vec!["'':".into(), "\"\":".into(), "? ''".into(), "? \"\"".into()]
    } else {
        vec![
            format!("{key}:"),
            format!("'{key}':"),
            format!("\"{key}\":"),
            format!("? {key}"),
        ]
    };
    text.lines()
        .position(|l| forms.iter().any(|f| l.starts_with(f.as_str())))
        .map(|i| i + 1)
}

/// Whether to import a record, after listing what octoDNS-level settings are dropped.
fn keep(r: &Raw<'_>, warnings: &mut Vec<Warning>) -> bool {
    let mut warn = |message: String| {
        warnings.push(Warning {
            subject: r.subject(),
            at: r.at.clone(),
            message,
        })
    };
    for key in r.data.keys() {
        let known = matches!(
            key.as_str(),
            Some("type" | "ttl" | "value" | "values" | "dynamic" | "octodns")
        );
        if !known {
            warn(format!(
                "key {} has no steerdns equivalent; ignored",
                show(key)
            ));
        }
    }
    let Some(Value::Mapping(octodns)) = r.get("octodns") else {
        return true;
    };
    if octodns.get("ignored").and_then(Value::as_bool) == Some(true) {
        warn("octodns.ignored: left out, as octoDNS leaves it alone".to_string());
        return false;
    }
    for (key, _) in octodns {
        match key.as_str() {
            Some("healthcheck") if r.get("dynamic").is_some() => {}
            Some("healthcheck") => {
                warn("octodns.healthcheck applies to dynamic records only; ignored".to_string())
            }
            Some("ignored" | "lenient") => {}
            Some(filter @ ("excluded" | "included")) => warn(format!(
                "octodns.{filter} (which providers get it) has no meaning here; imported"
            )),
            _ => warn(format!(
                "provider-specific settings octodns.{} are not imported",
                scalar(key).unwrap_or_default()
            )),
        }
    }
    true
}

/// The addresses of an A or AAAA record's `value(s)`.
fn addresses(r: &Raw<'_>) -> Result<Vec<IpAddr>, Problem> {
    r.values().into_iter().map(|v| address(r, v)).collect()
}

fn address(r: &Raw<'_>, v: &Value) -> Result<IpAddr, Problem> {
    let ip = scalar(v).and_then(|t| t.parse::<IpAddr>().ok());
    match (r.rtype.as_str(), ip) {
        ("A", Some(ip @ IpAddr::V4(_))) | ("AAAA", Some(ip @ IpAddr::V6(_))) => Ok(ip),
        (rtype, _) => Err(problem(
            r.at.clone(),
            format!(
                "{}: {} is not an {} address",
                r.subject(),
                show(v),
                if rtype == "A" { "IPv4" } else { "IPv6" }
            ),
        )),
    }
}

/// A name in a value (octoDNS writes them absolute, with the dot).
fn value_name(r: &Raw<'_>, v: Option<&Value>, field: &str) -> Result<Name, Problem> {
    let t = v.and_then(scalar).ok_or_else(|| {
        problem(
            r.at.clone(),
            format!("{}: {field} is missing or not a name", r.subject()),
        )
    })?;
    Name::parse(&t).map_err(|e| problem(r.at.clone(), format!("{}: {field}: {e}", r.subject())))
}

fn value_number<T: TryFrom<u64>>(
    r: &Raw<'_>,
    map: &Mapping,
    fields: &[&str],
    default: Option<T>,
) -> Result<T, Problem> {
    let v = fields.iter().find_map(|f| map.get(*f));
    match (v, default) {
        (None, Some(d)) => Ok(d),
        (v, _) => v
            .and_then(|v| v.as_u64().or_else(|| scalar(v)?.parse().ok()))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| {
                problem(
                    r.at.clone(),
                    format!("{}: {} is missing or out of range", r.subject(), fields[0]),
                )
            }),
    }
}

/// A TXT value as octoDNS writes it → its text: `\;` is `;` (octoDNS requires the escape), and
/// a value already cut into quoted chunks (`"abc" "def"`) is joined.
fn txt_text(value: &str) -> String {
    let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\" \"", ""),
        None => value.to_string(),
    };
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The static records of one octoDNS record.
fn statics(r: &Raw<'_>, warnings: &mut Vec<Warning>) -> Result<Vec<SourceRecord>, Problem> {
    let ttl = r.ttl()?;
    let values = r.values();
    if values.is_empty() {
        return Err(problem(
            r.at.clone(),
            format!("{}: no `value` or `values`", r.subject()),
        ));
    }
    let map = |v: &Value| -> Result<Mapping, Problem> {
        match v {
            Value::Mapping(m) => Ok(m.clone()),
            other => Err(problem(
                r.at.clone(),
                format!("{}: {} is not a mapping", r.subject(), show(other)),
            )),
        }
    };
    let mut data = Vec::with_capacity(values.len());
    for v in values {
        let d = match r.rtype.as_str() {
            "A" | "AAAA" => RData::from(address(r, v)?),
            "CNAME" => RData::Cname(value_name(r, Some(v), "value")?),
            "NS" => RData::Ns(value_name(r, Some(v), "value")?),
            "TXT" => {
                let t = scalar(v).ok_or_else(|| {
                    problem(
                        r.at.clone(),
                        format!("{}: {} is not text", r.subject(), show(v)),
                    )
                })?;
                RData::Txt(super::served_txt_strings(&txt_text(&t)))
            }
            "MX" => {
                let m = map(v)?;
                RData::Mx {
                    preference: value_number(r, &m, &["preference", "priority"], None)?,
                    exchange: value_name(
                        r,
                        m.get("exchange").or_else(|| m.get("value")),
                        "exchange",
                    )?,
                }
            }
            "SRV" => {
                let m = map(v)?;
                RData::Srv {
                    priority: value_number(r, &m, &["priority"], None)?,
                    weight: value_number(r, &m, &["weight"], None)?,
                    port: value_number(r, &m, &["port"], None)?,
                    target: value_name(r, m.get("target"), "target")?,
                }
            }
            "CAA" => {
                let m = map(v)?;
                let flags: u8 = value_number(r, &m, &["flags"], Some(0))?;
                let tag = m.get("tag").and_then(scalar);
                let value = m.get("value").and_then(scalar);
                let (Some(tag), Some(value)) = (tag, value) else {
                    return Err(problem(
                        r.at.clone(),
                        format!("{}: a value needs `tag` and `value`", r.subject()),
                    ));
                };
                if flags & 0x7f != 0 {
                    warnings.push(Warning {
                        subject: r.subject(),
                        at: r.at.clone(),
                        message: format!(
                            "flags {flags}: steerdns keeps only the critical flag (128); value \
                             {value:?} left out"
                        ),
                    });
                    continue;
                }
                RData::Caa {
                    critical: flags & 0x80 != 0,
                    tag,
                    value,
                }
            }
            other => {
                let why = match other {
                    "SPF" => "type SPF is obsolete (RFC 7208): publish the text as TXT".to_string(),
                    "ALIAS" => "ALIAS (a CNAME at the apex, resolved by the provider) has no \
                                steerdns equivalent"
                        .to_string(),
                    _ => format!("steerdns serves no {other} records"),
                };
                warnings.push(Warning {
                    subject: r.subject(),
                    at: r.at.clone(),
                    message: format!("{why}; left out"),
                });
                return Ok(Vec::new());
            }
        };
        data.push(SourceRecord {
            owner: r.name.clone(),
            ttl,
            data: d,
            at: r.at.clone(),
        });
    }
    Ok(data)
}

/// A dynamic record, read.
struct Dynamic {
    rtype: String,
    key: String,
    at: At,
    ttl: u32,
    /// The record's own values: served when a rule's pools are all down.
    values: Vec<IpAddr>,
    /// Pool → its usable values, in file order.
    pools: IndexMap<String, Vec<IpAddr>>,
    /// Pool → the pool it falls back to.
    fallbacks: HashMap<String, String>,
    /// Geo code → pool, in rule order; `None` for the catch-all rule.
    rules: Vec<(Option<String>, String)>,
    check: Option<CheckYaml>,
}

/// Reads a dynamic A/AAAA record, listing what steerdns cannot express.
fn dynamic(r: &Raw<'_>, apex: &Name, warnings: &mut Vec<Warning>) -> Result<Dynamic, Problem> {
    let at = &r.at;
    let bad = |message: String| problem(at.clone(), format!("{}: {message}", r.subject()));
    let mut warn = |message: String| {
        warnings.push(Warning {
            subject: r.subject(),
            at: at.clone(),
            message,
        })
    };
    let ttl = r.ttl()?;
    let values = addresses(r)?;
    let Some(Value::Mapping(dynamic)) = r.get("dynamic") else {
        return Err(bad("`dynamic` is not a mapping".to_string()));
    };
    for key in dynamic.keys() {
        if !matches!(key.as_str(), Some("pools" | "rules")) {
            warn(format!(
                "dynamic.{} has no steerdns equivalent; ignored",
                show(key)
            ));
        }
    }
    let Some(Value::Mapping(pools_raw)) = dynamic.get("pools") else {
        return Err(bad("dynamic.pools is missing or not a mapping".to_string()));
    };
    let Some(Value::Sequence(rules_raw)) = dynamic.get("rules") else {
        return Err(bad("dynamic.rules is missing or not a list".to_string()));
    };

    let mut pools: IndexMap<String, Vec<IpAddr>> = IndexMap::new();
    let mut fallbacks: HashMap<String, String> = HashMap::new();
    for (id, pool) in pools_raw {
        let id = scalar(id).ok_or_else(|| bad(format!("pool name {} is not text", show(id))))?;
        let Value::Mapping(pool) = pool else {
            return Err(bad(format!("pool {id:?} is not a mapping")));
        };
        if let Some(fb) = pool.get("fallback").and_then(scalar) {
            if !pools_raw.contains_key(fb.as_str()) && fb != "default" {
                return Err(bad(format!(
                    "pool {id:?} falls back to {fb:?}, which is not a pool"
                )));
            }
            if fb != "default" {
                fallbacks.insert(id.clone(), fb);
            }
        }
        let Some(Value::Sequence(list)) = pool.get("values") else {
            return Err(bad(format!("pool {id:?} has no `values` list")));
        };
        let mut ips = Vec::new();
        let mut weights = Vec::new();
        for v in list {
            let (value, weight, status) = match v {
                Value::Mapping(m) => (
                    m.get("value"),
                    m.get("weight").and_then(Value::as_u64).unwrap_or(1),
                    m.get("status")
                        .and_then(scalar)
                        .unwrap_or_else(|| "obey".into()),
                ),
                // A bare value, as some hand-written files have it.
                other => (Some(other), 1, "obey".into()),
            };
            let Some(value) = value else {
                return Err(bad(format!("a value of pool {id:?} has no `value`")));
            };
            let ip = address(r, value)?;
            match status.as_str() {
                "down" => {
                    warn(format!(
                        "pool {id}: {ip} has `status: down`: left out (steerdns has no status \
                         per address; `steerdns drain` takes out a whole DC)"
                    ));
                    continue;
                }
                "up" => warn(format!(
                    "pool {id}: {ip} has `status: up` (served unchecked in octoDNS): steerdns \
                     probes it like the others"
                )),
                _ => {}
            }
            weights.push(weight);
            ips.push(ip);
        }
        if weights.iter().any(|w| *w != weights[0]) {
            let shown: Vec<String> = ips
                .iter()
                .zip(&weights)
                .map(|(ip, w)| format!("{ip} {w}"))
                .collect();
            warn(format!(
                "pool {id}: weights ({}) are not kept: steerdns rotates a DC's endpoints evenly",
                shown.join(", ")
            ));
        }
        pools.insert(id, ips);
    }

    let mut rules: Vec<(Option<String>, String)> = Vec::new();
    let mut seen_catch_all = false;
    for (i, rule) in rules_raw.iter().enumerate() {
        let n = i + 1;
        let Value::Mapping(rule) = rule else {
            return Err(bad(format!("rule {n} is not a mapping")));
        };
        let Some(pool) = rule.get("pool").and_then(scalar) else {
            return Err(bad(format!("rule {n} has no `pool`")));
        };
        if !pools.contains_key(&pool) {
            return Err(bad(format!(
                "rule {n} sends clients to {pool:?}, which is not a pool"
            )));
        }
        let geos: Vec<String> = match rule.get("geos") {
            Some(Value::Sequence(g)) => g.iter().filter_map(scalar).collect(),
            _ => Vec::new(),
        };
        let subnets = rule.get("subnets").is_some();
        if seen_catch_all {
            warn(format!(
                "rule {n} (pool {pool}) comes after the catch-all rule, so it never matches \
                 (octoDNS rejects this too); left out"
            ));
            continue;
        }
        if subnets {
            warn(format!(
                "rule {n} (pool {pool}): subnet rules have no steerdns equivalent; {}",
                if geos.is_empty() {
                    "the rule is left out"
                } else {
                    "only its geos are kept"
                }
            ));
            if geos.is_empty() {
                continue;
            }
        }
        if geos.is_empty() {
            seen_catch_all = true;
            rules.push((None, pool));
            continue;
        }
        for geo in geos {
            if let Err(why) = geo_code(&geo) {
                warn(format!("rule {n}: geo {geo:?} {why}; left out"));
                continue;
            }
            // octoDNS: a geo may appear once, and never after a broader one.
            let earlier = rules.iter().find_map(|(g, _)| {
                g.as_ref()
                    .filter(|g| geo == **g || geo.starts_with(&format!("{g}-")))
            });
            if let Some(e) = earlier {
                warn(format!(
                    "rule {n}: geo {geo} is already covered by {e} in an earlier rule (octoDNS \
                     rejects this too); left out"
                ));
                continue;
            }
            rules.push((Some(geo), pool.clone()));
        }
    }
    if !seen_catch_all {
        warn(
            "no catch-all rule (octoDNS requires one): clients no rule matches get the \
              record's values"
                .to_string(),
        );
    }

    // Pools no rule and no fallback reaches (octoDNS rejects those).
    let reached: Vec<&String> = rules
        .iter()
        .map(|(_, p)| p)
        .chain(fallbacks.values())
        .collect();
    let unused: Vec<String> = pools
        .keys()
        .filter(|p| !reached.contains(p))
        .cloned()
        .collect();
    for p in unused {
        warn(format!("pool {p} is used by no rule or fallback; left out"));
        pools.shift_remove(&p);
    }
    for (id, ips) in &pools {
        if ips.is_empty() {
            warn(format!(
                "pool {id} has no value left to serve: rules that name it go to its fallback"
            ));
        }
    }

    let check = healthcheck(r, apex, &mut warn);
    Ok(Dynamic {
        rtype: r.rtype.clone(),
        key: r.key.clone(),
        at: at.clone(),
        ttl,
        values,
        pools,
        fallbacks,
        rules,
        check,
    })
}

/// Whether a geo code has the shape steerdns reads: `EU`, `NA-US`, `NA-US-CA`.
fn geo_code(code: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = code.split('-').collect();
    let upper = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    if !CONTINENT_CENTRES.iter().any(|(c, _)| *c == parts[0]) {
        return Err("does not start with a continent code (AF AN AS EU NA OC SA)");
    }
    match parts.as_slice() {
        [_] => Ok(()),
        [_, country] if country.len() == 2 && upper(country, 2) => Ok(()),
        [_, country, sub] if country.len() == 2 && upper(country, 2) && upper(sub, 3) => Ok(()),
        _ => Err("is not a code like EU, NA-US or NA-US-CA"),
    }
}

/// The record's health check, with octoDNS's defaults (HTTPS, port 443, `/_dns`, the record's
/// name as host).
fn healthcheck(r: &Raw<'_>, apex: &Name, warn: &mut impl FnMut(String)) -> Option<CheckYaml> {
    let hc = match r.get("octodns").and_then(|o| o.get("healthcheck")) {
        Some(Value::Mapping(m)) => m.clone(),
        _ => Mapping::new(),
    };
    for key in hc.keys() {
        if !matches!(key.as_str(), Some("host" | "path" | "port" | "protocol")) {
            warn(format!(
                "octodns.healthcheck.{} has no steerdns equivalent; ignored",
                scalar(key).unwrap_or_default()
            ));
        }
    }
    let protocol = hc
        .get("protocol")
        .and_then(scalar)
        .unwrap_or_else(|| "HTTPS".into());
    let port = match hc.get("port") {
        None => 443,
        Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(p) if p > 0 => p,
            _ => {
                warn(format!(
                    "octodns.healthcheck.port {} is not a port; the service is left unchecked",
                    show(v)
                ));
                return None;
            }
        },
    };
    let host = hc.get("host").and_then(scalar).unwrap_or_else(|| {
        if r.key.is_empty() {
            apex.as_str().to_string()
        } else {
            r.name.as_str().to_string()
        }
    });
    let mut path = hc
        .get("path")
        .and_then(scalar)
        .unwrap_or_else(|| "/_dns".into());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let http = HttpCheckYaml {
        port,
        path,
        host: Some(host),
    };
    match protocol.as_str() {
        "HTTP" => Some(CheckYaml {
            http: Some(http),
            ..CheckYaml::default()
        }),
        "HTTPS" => Some(CheckYaml {
            https: Some(http),
            ..CheckYaml::default()
        }),
        "TCP" => Some(CheckYaml {
            tcp: Some(TcpCheckYaml { port }),
            ..CheckYaml::default()
        }),
        other => {
            warn(format!(
                "octodns.healthcheck.protocol {other}: steerdns probes HTTP, HTTPS and TCP only; \
                 the service is left unchecked (always up)"
            ));
            None
        }
    }
}

/// One service: its A record's dynamic part (or AAAA's), the other family's merged in.
struct Service {
    main: Dynamic,
    /// The other family's pools, merged by pool name.
    other: Option<Dynamic>,
    /// A static other family, served from the `values` DC.
    extra_values: Vec<IpAddr>,
}

impl Service {
    fn new(d: Dynamic) -> Service {
        Service {
            main: d,
            other: None,
            extra_values: Vec::new(),
        }
    }

    /// Takes in the other family's dynamic record. steerdns has one policy per name: the
    /// first record's rules, fallbacks and check are kept, and differences listed.
    fn merge(&mut self, d: Dynamic, warnings: &mut Vec<Warning>) {
        let mut warn = |message: String| {
            warnings.push(Warning {
                subject: format!("{} {}", d.key_or_apex(), d.rtype),
                at: d.at.clone(),
                message,
            })
        };
        if d.rtype == self.main.rtype {
            warn("a second dynamic record of the same type; left out".to_string());
            return;
        }
        let main = &self.main.rtype;
        if d.rules != self.main.rules || d.fallbacks != self.main.fallbacks {
            warn(format!(
                "its rules or fallbacks differ from the {main} record's: steerdns has one policy \
                 per name, the {main} record's is used"
            ));
        }
        if d.check != self.main.check {
            warn(format!(
                "its health check differs from the {main} record's: steerdns has one check per \
                 service, the {main} record's is used"
            ));
        }
        if d.ttl != self.main.ttl {
            warn(format!(
                "TTL {} served as {}, the {main} record's (one TTL per service)",
                d.ttl, self.main.ttl
            ));
        }
        for p in d.pools.keys() {
            if !self.main.pools.contains_key(p) {
                warn(format!(
                    "pool {p} is not a pool of the {main} record: no rule reaches it; left out"
                ));
            }
        }
        self.other = Some(d);
    }
}

impl Dynamic {
    fn key_or_apex(&self) -> &str {
        if self.key.is_empty() { "''" } else { &self.key }
    }
}

/// Adds the services, their data centers and checks to the draft.
fn add_services(draft: &mut Draft, apex: &Name, services: IndexMap<Name, Service>) {
    // Where each DC name was first placed, for the header.
    let mut placed: IndexMap<String, Option<String>> = IndexMap::new();
    for (name, s) in services {
        let d = &s.main;
        let key = record_key(apex, &name);
        let values_dc = unique_dc(VALUES_DC, |n| d.pools.contains_key(n));

        // Endpoints per DC: the pools in file order, then the record's values.
        let mut endpoints: IndexMap<String, Vec<String>> = IndexMap::new();
        let mut add = |dc: &str, ips: &[IpAddr]| {
            let list = endpoints.entry(dc.to_string()).or_default();
            for ip in ips {
                let t = ip.to_string();
                if !list.contains(&t) {
                    list.push(t);
                }
            }
        };
        for (pool, ips) in &d.pools {
            add(&dc_name(pool), ips);
            if let Some(o) = s.other.as_ref().and_then(|o| o.pools.get(pool)) {
                add(&dc_name(pool), o);
            }
        }
        add(&values_dc, &d.values);
        if let Some(o) = &s.other {
            add(&values_dc, &o.values);
        }
        add(&values_dc, &s.extra_values);
        endpoints.retain(|_, ips| !ips.is_empty());

        // Each rule's list: its pool, the fallback chain, then the record's values.
        let chain = |pool: &str| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            let mut cur = Some(pool.to_string());
            while let Some(p) = cur {
                let dc = dc_name(&p);
                if out.contains(&dc) {
                    break; // a loop, which octoDNS rejects
                }
                out.push(dc);
                cur = d.fallbacks.get(&p).cloned();
            }
            out.push(values_dc.clone());
            out.retain(|dc| endpoints.contains_key(dc));
            out
        };
        let mut geo: IndexMap<String, Vec<String>> = IndexMap::new();
        let mut default = vec![values_dc.clone()];
        for (code, pool) in &d.rules {
            match code {
                Some(code) => {
                    geo.insert(code.clone(), chain(pool));
                    placed.entry(dc_name(pool)).or_insert(Some(code.clone()));
                }
                None => default = chain(pool),
            }
        }
        default.retain(|dc| endpoints.contains_key(dc));
        geo.insert("default".to_string(), default);
        geo.retain(|_, dcs| !dcs.is_empty());
        for dc in endpoints.keys() {
            placed.entry(dc.clone()).or_insert(None);
        }

        let check = d.check.clone().map(|c| {
            match draft
                .yaml
                .checks
                .iter()
                .find(|(_, existing)| **existing == c)
            {
                Some((name, _)) => name.clone(),
                None => {
                    let base = if key == "@" {
                        "apex".to_string()
                    } else {
                        check_name(&key)
                    };
                    let name = unique_dc(&base, |n| draft.yaml.checks.contains_key(n));
                    draft.yaml.checks.insert(name.clone(), c);
                    name
                }
            }
        });
        let answers = endpoints.values().map(Vec::len).max().unwrap_or(1).max(1);
        let service = ServiceYaml {
            ttl: d.ttl,
            answers,
            policy: "geo".to_string(),
            geo: Some(geo),
            check,
            endpoints,
        };
        draft
            .origins
            .entry(key.clone())
            .or_insert_with(|| d.at.clone());
        draft.yaml.records.entry(key).or_default().service = Some(service);
    }

    let mut guessed = Vec::new();
    let mut unplaced = Vec::new();
    for (dc, code) in placed {
        let location = code.as_deref().and_then(centre);
        match (&code, location) {
            (Some(code), Some(_)) => guessed.push(format!("{dc} from {code}")),
            _ => unplaced.push(dc.clone()),
        }
        draft.yaml.datacenters.insert(
            dc,
            DatacenterYaml {
                location: location.unwrap_or([0.0, 0.0]),
            },
        );
    }
    if !guessed.is_empty() || !unplaced.is_empty() {
        let mut note = "Data center locations are guessed (octoDNS pools have none)".to_string();
        if !guessed.is_empty() {
            note.push_str(&format!(": {}", guessed.join(", ")));
        }
        if !unplaced.is_empty() {
            note.push_str(&format!(
                "; {} at [0, 0], no rule of their own",
                unplaced.join(", ")
            ));
        }
        note.push_str(
            ". They only order the DCs after a rule's own list (and `nearest`): set them by hand.",
        );
        draft.notes.push(note);
    }
}

/// A pool name as a DC name (letters, digits, '-' and '_').
fn dc_name(pool: &str) -> String {
    let s: String = pool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "pool".to_string() } else { s }
}

/// A check named after its record key.
fn check_name(key: &str) -> String {
    dc_name(key)
}

/// `base`, or `base-2`, `base-3`, ... whichever is not taken.
fn unique_dc(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken(n))
        .unwrap_or_else(|| base.to_string())
}

/// A place for a geo code: the continent's centre, or the country's (a subdivision takes its
/// country's).
fn centre(code: &str) -> Option<[f64; 2]> {
    let mut parts = code.split('-');
    let continent = parts.next()?;
    if let Some(country) = parts.next()
        && let Some((_, Some((lat, lon)))) = crate::geo::country_info(country)
    {
        return Some([lat, lon]);
    }
    CONTINENT_CENTRES
        .iter()
        .find(|(c, _)| *c == continent)
        .map(|(_, l)| *l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(yaml: &str) -> Draft {
        match draft(yaml, "example.com.yaml", "example.com", &Options::default()) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        }
    }

    fn warnings(d: &Draft) -> Vec<String> {
        d.warnings.iter().map(Warning::to_string).collect()
    }

    const NS: &str = "'':\n  - type: NS\n    values: [ns1.example.net., ns2.example.net.]\n";

    #[test]
    fn static_records_of_every_type() {
        let yaml = format!(
            "{NS}  - type: MX\n    values:\n      - {{ exchange: mail.example.com., preference: 10 }}\n      - {{ value: mx2.example.net., priority: 20 }}\n  - type: TXT\n    values: ['v=spf1 -all', 'k=rsa\\; p=abc']\n  - type: CAA\n    value: {{ flags: 0, tag: issue, value: letsencrypt.org }}\nwww:\n  type: CNAME\n  value: example.com.\n_sip._tcp:\n  ttl: 600\n  type: SRV\n  value: {{ priority: 10, weight: 5, port: 5060, target: sip.example.com. }}\nsip:\n  - {{ type: A, values: [192.0.2.1, 192.0.2.2] }}\n  - {{ type: AAAA, value: '2001:db8::1' }}\nsub:\n  type: NS\n  values: [ns.example.org.]\n"
        );
        let d = import(&yaml);
        assert_eq!(warnings(&d), Vec::<String>::new());
        let r = &d.yaml.records;
        assert_eq!(d.yaml.ttl, 3600);
        assert_eq!(
            d.yaml.nameservers.keys().collect::<Vec<_>>(),
            ["ns1.example.net.", "ns2.example.net."]
        );
        assert_eq!(r["@"].mx, ["10 mail.example.com.", "20 mx2.example.net."]);
        assert_eq!(r["@"].txt, ["v=spf1 -all", "k=rsa; p=abc"]);
        assert_eq!(r["@"].caa, ["0 issue \"letsencrypt.org\""]);
        assert_eq!(r["www"].cname.as_deref(), Some("example.com."));
        assert_eq!(r["_sip._tcp"].srv, ["10 5 5060 sip.example.com."]);
        assert_eq!(r["_sip._tcp"].ttl, Some(600));
        assert_eq!(r["sip"].a, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(r["sip"].aaaa, ["2001:db8::1"]);
        assert_eq!(r["sub"].ns, ["ns.example.org."]);
    }

    #[test]
    fn txt_values_unescape_and_join_chunks() {
        assert_eq!(txt_text("v=DKIM1\\; k=rsa"), "v=DKIM1; k=rsa");
        assert_eq!(txt_text("\"abc\" \"def\""), "abcdef");
        assert_eq!(txt_text("plain"), "plain");
    }

    const DYNAMIC: &str = "
www:
  type: A
  ttl: 60
  values: [192.0.2.100]
  dynamic:
    pools:
      eu: { fallback: na, values: [{ value: 192.0.2.1 }, { value: 192.0.2.2 }] }
      na: { values: [{ value: 192.0.2.10 }] }
      ap: { fallback: eu, values: [{ value: 192.0.2.20 }] }
      ca: { fallback: na, values: [{ value: 192.0.2.30 }] }
    rules:
      - { geos: [NA-US-CA], pool: ca }
      - { geos: [EU, AF], pool: eu }
      - { geos: [AS, OC], pool: ap }
      - pool: na
  octodns:
    healthcheck: { host: www.example.com, path: /health, port: 8080, protocol: HTTP }
";

    #[test]
    fn a_dynamic_record_becomes_a_geo_service() {
        let d = import(&format!("{NS}{DYNAMIC}"));
        assert_eq!(warnings(&d), Vec::<String>::new());
        let s = d.yaml.records["www"].service.as_ref().unwrap();
        assert_eq!((s.ttl, s.answers, s.policy.as_str()), (60, 2, "geo"));
        let geo: Vec<(String, Vec<String>)> = s.geo.clone().unwrap().into_iter().collect();
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            geo,
            [
                ("NA-US-CA".to_string(), l(&["ca", "na", "values"])),
                ("EU".to_string(), l(&["eu", "na", "values"])),
                ("AF".to_string(), l(&["eu", "na", "values"])),
                ("AS".to_string(), l(&["ap", "eu", "na", "values"])),
                ("OC".to_string(), l(&["ap", "eu", "na", "values"])),
                ("default".to_string(), l(&["na", "values"])),
            ]
        );
        let endpoints: Vec<(String, Vec<String>)> = s.endpoints.clone().into_iter().collect();
        assert_eq!(
            endpoints,
            [
                ("eu".to_string(), l(&["192.0.2.1", "192.0.2.2"])),
                ("na".to_string(), l(&["192.0.2.10"])),
                ("ap".to_string(), l(&["192.0.2.20"])),
                ("ca".to_string(), l(&["192.0.2.30"])),
                ("values".to_string(), l(&["192.0.2.100"])),
            ]
        );
        assert_eq!(s.check.as_deref(), Some("www"));
        assert_eq!(
            d.yaml.checks["www"],
            CheckYaml {
                http: Some(HttpCheckYaml {
                    port: 8080,
                    path: "/health".into(),
                    host: Some("www.example.com".into())
                }),
                ..CheckYaml::default()
            }
        );
        // Located from the first geo of each pool's rule; na and values have none.
        let loc = |dc: &str| d.yaml.datacenters[dc].location;
        assert_eq!(loc("eu"), [54.5, 15.3]);
        assert_eq!(loc("na"), [0.0, 0.0]);
        let us = crate::geo::country_info("US").unwrap().1.unwrap();
        assert_eq!(loc("ca"), [us.0, us.1]);
        assert_eq!(
            d.notes,
            [
                "Data center locations are guessed (octoDNS pools have none): ca from NA-US-CA, \
              eu from EU, ap from AS; na, values at [0, 0], no rule of their own. They only \
              order the DCs after a rule's own list (and `nearest`): set them by hand."
            ]
        );
        // And steerdns loads it.
        d.finish().unwrap();
    }

    #[test]
    fn the_healthcheck_defaults_are_octodns_s() {
        let yaml = format!(
            "{NS}www:\n  type: A\n  value: 192.0.2.100\n  dynamic:\n    pools: {{ a: {{ values: [{{ value: 192.0.2.1 }}] }} }}\n    rules: [{{ pool: a }}]\n"
        );
        let d = import(&yaml);
        assert_eq!(
            d.yaml.checks["www"],
            CheckYaml {
                https: Some(HttpCheckYaml {
                    port: 443,
                    path: "/_dns".into(),
                    host: Some("www.example.com".into())
                }),
                ..CheckYaml::default()
            }
        );
    }

    #[test]
    fn what_octodns_has_and_steerdns_has_not_is_listed() {
        let yaml = format!(
            "{NS}www:
  type: A
  value: 192.0.2.100
  dynamic:
    pools:
      a:
        values:
          - {{ value: 192.0.2.1, weight: 1 }}
          - {{ value: 192.0.2.2, weight: 3 }}
          - {{ value: 192.0.2.3, status: down }}
      b: {{ values: [{{ value: 192.0.2.4, status: up }}] }}
      c: {{ values: [{{ value: 192.0.2.5 }}] }}
      unused: {{ values: [{{ value: 192.0.2.6 }}] }}
    rules:
      - {{ subnets: [10.0.0.0/8], pool: c }}
      - {{ subnets: [10.1.0.0/16], geos: [EU], pool: b }}
      - {{ geos: [eu], pool: a }}
      - {{ pool: a }}
  octodns:
    healthcheck: {{ protocol: ICMP }}
    route53: {{ healthcheck: {{ measure_latency: false }} }}
ptr:
  type: PTR
  value: host.example.com.
'*':
  type: A
  value: 192.0.2.9
gone:
  type: A
  value: 192.0.2.8
  octodns: {{ ignored: true }}
alias:
  type: CNAME
  value: www.example.com.
  dynamic: {{ pools: {{}}, rules: [] }}
"
        );
        let d = import(&yaml);
        assert_eq!(
            warnings(&d),
            [
                "example.com.yaml:4: www.example.com. A: provider-specific settings octodns.route53 are not imported",
                "example.com.yaml:4: www.example.com. A: pool a: 192.0.2.3 has `status: down`: left out (steerdns has no status per address; `steerdns drain` takes out a whole DC)",
                "example.com.yaml:4: www.example.com. A: pool a: weights (192.0.2.1 1, 192.0.2.2 3) are not kept: steerdns rotates a DC's endpoints evenly",
                "example.com.yaml:4: www.example.com. A: pool b: 192.0.2.4 has `status: up` (served unchecked in octoDNS): steerdns probes it like the others",
                "example.com.yaml:4: www.example.com. A: rule 1 (pool c): subnet rules have no steerdns equivalent; the rule is left out",
                "example.com.yaml:4: www.example.com. A: rule 2 (pool b): subnet rules have no steerdns equivalent; only its geos are kept",
                "example.com.yaml:4: www.example.com. A: rule 3: geo \"eu\" does not start with a continent code (AF AN AS EU NA OC SA); left out",
                "example.com.yaml:4: www.example.com. A: pool c is used by no rule or fallback; left out",
                "example.com.yaml:4: www.example.com. A: pool unused is used by no rule or fallback; left out",
                "example.com.yaml:4: www.example.com. A: octodns.healthcheck.protocol ICMP: steerdns probes HTTP, HTTPS and TCP only; the service is left unchecked (always up)",
                "example.com.yaml:25: ptr.example.com. PTR: steerdns serves no PTR records; left out",
                "example.com.yaml:28: *.example.com. A: wildcard: steerdns does no wildcard synthesis (it would answer only the literal name `*`); left out",
                "example.com.yaml:31: gone.example.com. A: octodns.ignored: left out, as octoDNS leaves it alone",
                "example.com.yaml:35: alias.example.com. CNAME: dynamic records of this type have no steerdns equivalent (services answer A and AAAA); its static value is served to everyone",
            ]
        );
        let s = d.yaml.records["www"].service.as_ref().unwrap();
        assert_eq!(s.check, None);
        assert_eq!(
            s.geo.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["EU", "default"]
        );
        assert_eq!(s.endpoints["a"], ["192.0.2.1", "192.0.2.2"]);
        d.finish().unwrap();
    }

    #[test]
    fn a_and_aaaa_dynamic_records_share_one_service() {
        let yaml = format!(
            "{NS}www:
  - type: A
    value: 192.0.2.100
    dynamic:
      pools: {{ eu: {{ values: [{{ value: 192.0.2.1 }}] }} }}
      rules: [{{ geos: [EU], pool: eu }}, {{ pool: eu }}]
  - type: AAAA
    value: '2001:db8::100'
    dynamic:
      pools: {{ eu: {{ values: [{{ value: '2001:db8::1' }}] }} }}
      rules: [{{ geos: [EU], pool: eu }}, {{ pool: eu }}]
"
        );
        let d = import(&yaml);
        assert_eq!(warnings(&d), Vec::<String>::new());
        let s = d.yaml.records["www"].service.as_ref().unwrap();
        assert_eq!(s.endpoints["eu"], ["192.0.2.1", "2001:db8::1"]);
        assert_eq!(s.endpoints["values"], ["192.0.2.100", "2001:db8::100"]);
        d.finish().unwrap();
    }

    #[test]
    fn without_apex_ns_the_name_servers_come_from_the_flag() {
        let yaml = "www: { type: A, value: 192.0.2.1 }\n";
        let e = draft(yaml, "z.yaml", "example.com", &Options::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "z.yaml: no NS records at the apex example.com.: steerdns needs the zone's name servers (give them with --nameserver)"
        );
        let options = Options {
            nameservers: vec!["ns1.example.net".into()],
        };
        let d = draft(yaml, "z.yaml", "example.com", &options).unwrap();
        assert_eq!(
            d.yaml.nameservers.keys().collect::<Vec<_>>(),
            ["ns1.example.net."]
        );
    }

    #[test]
    fn bad_values_name_the_file_and_line() {
        let yaml = format!("{NS}www:\n  type: A\n  value: 300.1.1.1\n");
        let e = draft(&yaml, "z.yaml", "example.com", &Options::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "z.yaml:4: www.example.com. A: \"300.1.1.1\" is not an IPv4 address"
        );
        let e = draft("www: [\n", "z.yaml", "example.com", &Options::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("z.yaml:2: not an octoDNS zone"), "{e}");
    }
}
