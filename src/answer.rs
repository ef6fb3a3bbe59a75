//! Choosing the records for a query: a pure, synchronous function of the zone set and the query.
//! Authoritative semantics (NXDOMAIN, NODATA, CNAME chasing, referrals, minimal ANY) live here;
//! the DNS frontend only translates to and from the wire.

use crate::model::{Name, RData, RecordType, Rr, Service, Zone, ZoneSet};

/// The type a query asks for, as far as answer selection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    Known(RecordType),
    /// ANY (255): answered minimally, RFC 8482.
    Any,
    /// A type steerdns holds no data for (answered NODATA where the name exists).
    Other(u16),
}

/// The response code an answer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    NxDomain,
    Refused,
    ServFail,
}

/// What kind of answer this is, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Records for the name and type.
    Answer,
    /// The name exists, the type does not (NOERROR, empty answer, SOA in authority).
    NoData,
    NxDomain,
    /// The name lies in a delegated sub-zone: NS in authority, glue in additional, AA clear.
    Referral,
    /// Not a name we are authoritative for.
    Refused,
}

/// Everything the DNS frontend needs to write the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub outcome: Outcome,
    pub rcode: Rcode,
    pub authoritative: bool,
    pub answers: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
}

impl Answer {
    fn new(outcome: Outcome, rcode: Rcode, authoritative: bool) -> Answer {
        Answer {
            outcome,
            rcode,
            authoritative,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }

    pub fn refused() -> Answer {
        Answer::new(Outcome::Refused, Rcode::Refused, false)
    }
}

/// How many CNAMEs are followed inside the zone before giving up.
const MAX_CNAME_CHAIN: usize = 8;

/// Answers `qtype` at `qname` from `zones`.
pub fn answer(zones: &ZoneSet, qname: &Name, qtype: QType) -> Answer {
    let Some(zone) = zones.find(qname) else {
        return Answer::refused();
    };
    if let Some(cut) = zone.delegation_for(qname) {
        return referral(zone, &cut);
    }

    let mut out = Answer::new(Outcome::Answer, Rcode::NoError, true);
    let mut name = qname.clone();
    for _ in 0..=MAX_CNAME_CHAIN {
        let Some(node) = zone.nodes.get(&name) else {
            if zone.empty_non_terminals.contains(&name) {
                return negative(zone, out, Outcome::NoData, Rcode::NoError);
            }
            return negative(zone, out, Outcome::NxDomain, Rcode::NxDomain);
        };

        if let Some(cname) = node.rrset(RecordType::Cname) {
            push_set(&mut out.answers, &name, cname.ttl, &cname.data);
            if qtype == QType::Known(RecordType::Cname) {
                return out;
            }
            let Some(RData::Cname(target)) = cname.data.first() else {
                return out;
            };
            // Follow the chain only inside this zone and outside its delegations.
            if !target.is_subdomain_of(&zone.apex) || zone.delegation_for(target).is_some() {
                return out;
            }
            name = target.clone();
            continue;
        }

        match qtype {
            QType::Any => {
                // RFC 8482: one RRset is enough, so the server is no amplifier.
                if let Some(service) = &node.service {
                    out.answers.extend(
                        service_records(zone, service, RecordType::A)
                            .into_iter()
                            .take(1),
                    );
                }
                if let (true, Some(set)) = (out.answers.is_empty(), node.rrsets.first()) {
                    push_set(&mut out.answers, &name, set.ttl, &set.data[..1]);
                }
            }
            QType::Known(rtype @ (RecordType::A | RecordType::Aaaa)) if node.service.is_some() => {
                if let Some(service) = &node.service {
                    out.answers.extend(service_records(zone, service, rtype));
                }
            }
            QType::Known(rtype) => {
                if let Some(set) = node.rrset(rtype) {
                    push_set(&mut out.answers, &name, set.ttl, &set.data);
                    if rtype == RecordType::Ns {
                        add_glue(zone, &set.data, &mut out.additional);
                    }
                } else if rtype == RecordType::Soa && name == zone.apex {
                    out.answers.push(zone.soa_rr());
                }
            }
            QType::Other(_) => {}
        }
        if out
            .answers
            .iter()
            .all(|rr| rr.data.record_type() == RecordType::Cname)
        {
            return negative(zone, out, Outcome::NoData, Rcode::NoError);
        }
        return out;
    }
    // A CNAME loop or an over-long chain: what we have is all we give.
    out
}

/// A service's A or AAAA records. Until geo steering lands: the first DC that has endpoints of
/// the family, at most `answers` of them.
fn service_records(zone: &Zone, service: &Service, rtype: RecordType) -> Vec<Rr> {
    let _ = zone;
    let want_v4 = rtype == RecordType::A;
    service
        .dcs
        .iter()
        .map(|dc| {
            dc.endpoints
                .iter()
                .filter(|ip| ip.is_ipv4() == want_v4)
                .take(service.answers)
                .map(|ip| Rr {
                    name: service.name.clone(),
                    ttl: service.ttl,
                    data: RData::from(*ip),
                })
                .collect::<Vec<_>>()
        })
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

fn push_set(out: &mut Vec<Rr>, name: &Name, ttl: u32, data: &[RData]) {
    out.extend(data.iter().map(|d| Rr {
        name: name.clone(),
        ttl,
        data: d.clone(),
    }));
}

/// NXDOMAIN or NODATA: keep any CNAMEs already found, add the SOA for negative caching.
fn negative(zone: &Zone, mut out: Answer, outcome: Outcome, rcode: Rcode) -> Answer {
    // A CNAME chain that ends in nothing keeps the chain in the answer (RFC 6604).
    out.outcome = outcome;
    out.rcode = rcode;
    let mut soa = zone.soa_rr();
    soa.ttl = zone.negative_ttl();
    out.authority.push(soa);
    out
}

fn referral(zone: &Zone, cut: &Name) -> Answer {
    let mut out = Answer::new(Outcome::Referral, Rcode::NoError, false);
    if let Some(ns) = zone.nodes.get(cut).and_then(|n| n.rrset(RecordType::Ns)) {
        push_set(&mut out.authority, cut, ns.ttl, &ns.data);
        add_glue(zone, &ns.data, &mut out.additional);
    }
    out
}

/// A and AAAA records for name servers whose names lie inside the zone.
fn add_glue(zone: &Zone, ns: &[RData], additional: &mut Vec<Rr>) {
    for data in ns {
        let RData::Ns(target) = data else { continue };
        if !target.is_subdomain_of(&zone.apex) {
            continue;
        }
        if let Some(node) = zone.nodes.get(target) {
            for rtype in [RecordType::A, RecordType::Aaaa] {
                if let Some(set) = node.rrset(rtype) {
                    push_set(additional, target, set.ttl, &set.data);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone_file::parse_zone;
    use std::sync::Arc;

    fn zones() -> ZoneSet {
        let text = "
zone: api.example.com
soa: { primary: ns1, contact: hostmaster.example.com, minimum: 60, ttl: 3600 }
nameservers: { ns1: [192.0.2.53], ns.other.net.: [] }
datacenters:
  fra: { location: [50.1, 8.7] }
  iad: { location: [38.9, -77.4] }
records:
  www:
    service:
      endpoints: { fra: [203.0.113.10, \"2001:db8::10\"], iad: [198.51.100.20] }
  v6only:
    service:
      endpoints: { iad: [\"2001:db8::20\"] }
  alias: { CNAME: www }
  chain: { CNAME: alias }
  dangling: { CNAME: nothere }
  outside: { CNAME: cdn.example.net. }
  a.b: { TXT: hello }
  sub: { NS: [ns.sub.api.example.com] }
  ns.sub: { A: 192.0.2.99 }
";
        ZoneSet {
            zones: vec![Arc::new(parse_zone(text, "t.yaml").unwrap())],
        }
    }

    fn q(name: &str, t: RecordType) -> Answer {
        answer(&zones(), &Name::parse(name).unwrap(), QType::Known(t))
    }

    #[test]
    fn table_of_outcomes() {
        use RecordType::*;
        let cases: &[(&str, RecordType, Outcome, Rcode, usize)] = &[
            ("www.api.example.com", A, Outcome::Answer, Rcode::NoError, 1),
            (
                "www.api.example.com",
                Aaaa,
                Outcome::Answer,
                Rcode::NoError,
                1,
            ),
            (
                "www.api.example.com",
                Txt,
                Outcome::NoData,
                Rcode::NoError,
                0,
            ),
            (
                "v6only.api.example.com",
                A,
                Outcome::NoData,
                Rcode::NoError,
                0,
            ),
            (
                "nope.api.example.com",
                A,
                Outcome::NxDomain,
                Rcode::NxDomain,
                0,
            ),
            ("b.api.example.com", A, Outcome::NoData, Rcode::NoError, 0),
            (
                "alias.api.example.com",
                A,
                Outcome::Answer,
                Rcode::NoError,
                2,
            ),
            (
                "chain.api.example.com",
                A,
                Outcome::Answer,
                Rcode::NoError,
                3,
            ),
            (
                "chain.api.example.com",
                Cname,
                Outcome::Answer,
                Rcode::NoError,
                1,
            ),
            (
                "dangling.api.example.com",
                A,
                Outcome::NxDomain,
                Rcode::NxDomain,
                1,
            ),
            (
                "outside.api.example.com",
                A,
                Outcome::Answer,
                Rcode::NoError,
                1,
            ),
            ("api.example.com", Soa, Outcome::Answer, Rcode::NoError, 1),
            ("api.example.com", Ns, Outcome::Answer, Rcode::NoError, 2),
            (
                "x.sub.api.example.com",
                A,
                Outcome::Referral,
                Rcode::NoError,
                0,
            ),
            ("example.com", A, Outcome::Refused, Rcode::Refused, 0),
        ];
        for (name, t, outcome, rcode, n) in cases {
            let a = q(name, *t);
            assert_eq!(
                (a.outcome, a.rcode, a.answers.len()),
                (*outcome, *rcode, *n),
                "{name} {t}"
            );
        }
    }

    #[test]
    fn negative_answers_carry_the_soa_with_the_negative_ttl() {
        let a = q("nope.api.example.com", RecordType::A);
        assert_eq!(a.authority.len(), 1);
        assert_eq!(a.authority[0].data.record_type(), RecordType::Soa);
        assert_eq!(a.authority[0].ttl, 60);
    }

    #[test]
    fn referrals_carry_ns_and_glue_without_aa() {
        let a = q("x.sub.api.example.com", RecordType::A);
        assert!(!a.authoritative);
        assert_eq!(a.authority.len(), 1);
        assert_eq!(a.additional.len(), 1);
        assert_eq!(
            a.additional[0].data,
            RData::A("192.0.2.99".parse().unwrap())
        );
    }

    #[test]
    fn any_is_minimal() {
        let a = answer(
            &zones(),
            &Name::parse("www.api.example.com").unwrap(),
            QType::Any,
        );
        assert_eq!(a.answers.len(), 1);
    }

    #[test]
    fn apex_ns_answers_carry_in_zone_glue_only() {
        let a = q("api.example.com", RecordType::Ns);
        assert_eq!(a.additional.len(), 1);
    }
}
