//! DNSSEC online signing (issue 15): what a signed zone adds to an answer. The answer code
//! chooses records as always; for a query with DO=1 in a zone with a `dnssec:` block, `Signer`
//! adds an RRSIG to each authoritative RRset (cached per RRset content, `sign`), turns NXDOMAIN
//! and NODATA into compact denial (`denial`), and at the apex answers DNSKEY, CDS and CDNSKEY
//! (those three also without DO). Pure over the zone and the records, with the wall clock and
//! the signature cache as its only state; the DNS frontend maps what it returns to the wire.

pub mod denial;
pub mod sign;

use std::sync::Arc;

use crate::telemetry::metrics::Metrics;
use crate::zone::{Name, RData, RecordType, Rr, Zone};

pub use sign::WireRr;
use sign::{Outcome, SigCache};

/// What kind of answer the answer code gave, as far as signing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records for the name (possibly through CNAMEs).
    Answer,
    NoData,
    NxDomain,
    /// A referral to a delegated child: NS (unsigned) and the proof that no DS exists.
    Referral,
    /// REFUSED, SERVFAIL: nothing to add.
    Other,
}

/// What signing makes of an answer: records to add to each section, and how the header changes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Secured {
    /// The answer's own sections are replaced by these (DNSKEY, CDS, CDNSKEY at the apex: the
    /// answer code knows no such types and said NODATA).
    pub replace: bool,
    /// NXDOMAIN becomes NOERROR (RFC 9824: the name is denied by its NSEC's NXNAME bit).
    pub nxdomain_to_noerror: bool,
    pub answers: Vec<WireRr>,
    pub authority: Vec<WireRr>,
    pub additional: Vec<WireRr>,
    /// The key tag that signed, when something was signed.
    pub signed_by: Option<u16>,
    /// The Unix second from which the signature cache makes a signature anew for one of these
    /// RRSIGs (the earliest `made + REFRESH_AFTER_S`): a copy of the answer kept beyond it
    /// (a prepared answer) would hand out a signature the node no longer would.
    pub fresh_until_s: Option<u64>,
    /// A signature could not be made: the answer lacks an RRSIG and must not be kept.
    pub failed: bool,
}

impl Secured {
    /// Every record added, for size estimates.
    pub fn records(&self) -> impl Iterator<Item = &WireRr> {
        self.answers
            .iter()
            .chain(&self.authority)
            .chain(&self.additional)
    }
}

/// DNSKEY, CDS or CDNSKEY: types answered at a signed zone's apex whatever the DO bit.
pub fn is_key_type(qtype: u16) -> bool {
    matches!(qtype, denial::DNSKEY | denial::CDS | denial::CDNSKEY)
}

/// Signs answers of signed zones; one per node, shared by every query thread.
pub struct Signer {
    cache: SigCache,
    metrics: Arc<Metrics>,
}

/// The question as signing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub name: &'a Name,
    pub qtype: u16,
    pub dnssec_ok: bool,
}

/// The answer code's sections.
#[derive(Debug, Clone, Copy)]
pub struct Sections<'a> {
    pub kind: Kind,
    pub answers: &'a [Rr],
    pub authority: &'a [Rr],
    pub additional: &'a [Rr],
}

impl Signer {
    pub fn new(metrics: Arc<Metrics>) -> Signer {
        Signer {
            cache: SigCache::default(),
            metrics,
        }
    }

    /// What to add to the answer `sections` to `q` in `zone`; `None` when nothing changes (an
    /// unsigned zone, or DO=0 for anything but the apex's keys). `now_s` is Unix seconds.
    pub fn secure(
        &self,
        zone: &Zone,
        q: Question<'_>,
        sections: Sections<'_>,
        now_s: u64,
    ) -> Option<Secured> {
        let keys = zone.dnssec.as_ref()?;
        let key_query = *q.name == zone.apex
            && is_key_type(q.qtype)
            && matches!(sections.kind, Kind::NoData | Kind::Answer);
        if !q.dnssec_ok && !key_query {
            return None;
        }
        let mut out = Secured::default();
        let fresh_until = std::cell::Cell::new(None::<u64>);
        let failed = std::cell::Cell::new(false);
        let sign = |set: &[WireRr], to: &mut Vec<WireRr>| match self.rrsig(zone, set, now_s) {
            Some((sig, made_at_s)) => {
                to.push(sig);
                let until = made_at_s.saturating_add(sign::REFRESH_AFTER_S);
                fresh_until.set(Some(fresh_until.get().map_or(until, |t| t.min(until))));
            }
            None => failed.set(true),
        };
        let finish = |mut out: Secured| {
            out.fresh_until_s = fresh_until.get();
            out.failed = failed.get();
            Some(out)
        };
        if key_query {
            out.replace = true;
            let ttl = keys.dnskey_ttl;
            let set: Vec<WireRr> = keys
                .keys()
                .map(|k| WireRr {
                    name: zone.apex.clone(),
                    rtype: q.qtype,
                    ttl,
                    rdata: match q.qtype {
                        denial::CDS => k.ds_rdata().into(),
                        _ => k.dnskey_rdata().into(),
                    },
                })
                .collect();
            if q.dnssec_ok {
                sign(&set, &mut out.answers);
                out.signed_by = Some(keys.signing.tag);
            }
            out.answers.extend(set);
            return finish(out);
        }
        out.signed_by = Some(keys.signing.tag);
        match sections.kind {
            Kind::Answer => {
                for set in rrsets(sections.answers) {
                    sign(&set, &mut out.answers);
                }
                for set in rrsets(sections.authority) {
                    sign(&set, &mut out.authority);
                }
                // Glue below a delegation is not ours to sign; addresses of the zone's own
                // name servers are.
                for set in rrsets(sections.additional) {
                    if zone.delegation_for(&set[0].name).is_none() {
                        sign(&set, &mut out.additional);
                    }
                }
            }
            Kind::NoData | Kind::NxDomain => {
                // CNAMEs on the way to the name denied.
                for set in rrsets(sections.answers) {
                    sign(&set, &mut out.answers);
                }
                for set in rrsets(sections.authority) {
                    sign(&set, &mut out.authority);
                }
                let denied = sections
                    .answers
                    .iter()
                    .rev()
                    .find_map(|rr| match &rr.data {
                        RData::Cname(target) => Some(target),
                        _ => None,
                    })
                    .unwrap_or(q.name);
                let exists = sections.kind == Kind::NoData;
                let mut types = denial::denial_types(zone, denied, q.qtype, exists);
                let nsec = [WireRr {
                    name: denied.clone(),
                    rtype: denial::NSEC,
                    ttl: zone.negative_ttl(),
                    rdata: denial::nsec_rdata(denied, &mut types).into(),
                }];
                sign(&nsec, &mut out.authority);
                out.authority.extend(nsec);
                out.nxdomain_to_noerror = sections.kind == Kind::NxDomain;
            }
            Kind::Referral => {
                // No DS at the cut (steerdns holds none): its NSEC says so, and the resolver
                // treats the child as unsigned (RFC 4035 section 3.1.4).
                let Some(cut) = sections
                    .authority
                    .iter()
                    .find(|rr| rr.data.record_type() == RecordType::Ns)
                    .map(|rr| rr.name.clone())
                else {
                    return finish(out);
                };
                let mut types = denial::denial_types(zone, &cut, denial::DS, true);
                let nsec = [WireRr {
                    name: cut.clone(),
                    rtype: denial::NSEC,
                    ttl: zone.negative_ttl(),
                    rdata: denial::nsec_rdata(&cut, &mut types).into(),
                }];
                sign(&nsec, &mut out.authority);
                out.authority.extend(nsec);
            }
            Kind::Other => {
                out.signed_by = None;
            }
        }
        finish(out)
    }

    /// The RRSIG over one RRset (records with the same owner and type), from the cache when
    /// the same content was signed lately, and the Unix second it was made.
    fn rrsig(&self, zone: &Zone, set: &[WireRr], now_s: u64) -> Option<(WireRr, u64)> {
        let keys = zone.dnssec.as_ref()?;
        let first = set.first()?;
        let mut rdatas: Vec<&[u8]> = set.iter().map(|r| &*r.rdata).collect();
        let (rrsig, made_at_s, outcome) = self.cache.sign(
            &keys.signing,
            &first.name,
            first.rtype,
            first.ttl,
            &mut rdatas,
            now_s,
        );
        match outcome {
            Outcome::Hit => self.metrics.record_signature_cache_hit(),
            Outcome::Made(took) => self.metrics.record_signature_made(took),
            Outcome::Failed => {
                tracing::error!(zone = %zone.apex, key_tag = keys.signing.tag, "signing failed");
            }
        }
        let rrsig = WireRr {
            name: first.name.clone(),
            rtype: sign::RRSIG,
            ttl: first.ttl,
            rdata: rrsig?,
        };
        Some((rrsig, made_at_s))
    }

    /// Signatures held in the cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// Model records grouped into RRsets (same owner and type), each in wire terms.
fn rrsets(records: &[Rr]) -> Vec<Vec<WireRr>> {
    let mut sets: Vec<Vec<WireRr>> = Vec::new();
    for rr in records {
        let rtype = rr.data.record_type().code();
        let wire = WireRr {
            name: rr.name.clone(),
            rtype,
            ttl: rr.ttl,
            rdata: sign::rdata_wire(&rr.data).into(),
        };
        match sets
            .iter_mut()
            .find(|s| s[0].name == rr.name && s[0].rtype == rtype)
        {
            Some(set) => set.push(wire),
            None => sets.push(vec![wire]),
        }
    }
    sets
}

/// One line for `explain` and the status: whether the zone is signed, and with which key.
pub fn describe(zone: &Zone) -> String {
    match &zone.dnssec {
        None => "unsigned".to_string(),
        Some(d) => {
            let mut s = format!(
                "signed with key {} ({}, {}) when the query sets DO",
                d.signing.tag,
                d.signing.algorithm.mnemonic(),
                d.signing.file
            );
            for k in &d.published {
                s.push_str(&format!("; key {} published, not signing", k.tag));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::file::parse_zone;
    use crate::zone::key::{Algorithm, generate};

    fn zone(dir: &std::path::Path) -> Zone {
        let apex = Name::parse("api.example.com").unwrap();
        let (text, _) = generate(&apex, Algorithm::EcdsaP256Sha256).unwrap();
        std::fs::write(dir.join("k.private"), text).unwrap();
        let yaml = "
zone: api.example.com
soa: { primary: ns1, minimum: 60, ttl: 3600 }
nameservers: { ns1: [192.0.2.53] }
dnssec: { key: k.private }
datacenters: { fra: { location: [50.1, 8.7] } }
records:
  www: { service: { endpoints: { fra: [203.0.113.10] } } }
  a.b: { TXT: hello }
  sub: { NS: [ns.sub.api.example.com] }
  ns.sub: { A: 192.0.2.99 }
";
        parse_zone(yaml, &dir.join("z.yaml").display().to_string()).unwrap()
    }

    fn q(name: &Name, qtype: u16) -> Question<'_> {
        Question {
            name,
            qtype,
            dnssec_ok: true,
        }
    }

    #[test]
    fn nxdomain_becomes_a_signed_nsec_with_nxname() {
        let dir = tempfile::tempdir().unwrap();
        let z = zone(dir.path());
        let signer = Signer::new(Arc::new(Metrics::new()));
        let name = Name::parse("nope.api.example.com").unwrap();
        let soa = [z.soa_rr()];
        let s = signer
            .secure(
                &z,
                q(&name, 1),
                Sections {
                    kind: Kind::NxDomain,
                    answers: &[],
                    authority: &soa,
                    additional: &[],
                },
                1_800_000_000,
            )
            .unwrap();
        assert!(s.nxdomain_to_noerror);
        let types: Vec<u16> = s.authority.iter().map(|r| r.rtype).collect();
        assert_eq!(types, [46, 46, 47], "RRSIG(SOA), RRSIG(NSEC), NSEC");
        let nsec = &s.authority[2];
        assert_eq!(nsec.name, name);
        assert_eq!(nsec.ttl, 60);
        // The same denial again: both signatures from the cache.
        let again = signer
            .secure(
                &z,
                q(&name, 1),
                Sections {
                    kind: Kind::NxDomain,
                    answers: &[],
                    authority: &soa,
                    additional: &[],
                },
                1_800_000_005,
            )
            .unwrap();
        assert_eq!(again, s);
        assert_eq!(signer.cached(), 2);
        // Kept answers must go when the signatures would be made anew.
        assert_eq!(s.fresh_until_s, Some(1_800_000_000 + sign::REFRESH_AFTER_S));
        assert!(!s.failed);
    }

    #[test]
    fn nodata_lists_the_types_present_without_the_one_asked() {
        let dir = tempfile::tempdir().unwrap();
        let z = zone(dir.path());
        let apex_types = denial::denial_types(&z, &z.apex, RecordType::Mx.code(), true);
        for t in [2, 6, 46, 47, 48, 59, 60] {
            assert!(apex_types.contains(&t), "{t} at the apex: {apex_types:?}");
        }
        let www = Name::parse("www.api.example.com").unwrap();
        assert_eq!(denial::denial_types(&z, &www, 16, true), [46, 47, 1]);
        assert_eq!(denial::denial_types(&z, &www, 1, true), [46, 47]);
        // An empty non-terminal: nothing but the NSEC and its signature.
        let ent = Name::parse("b.api.example.com").unwrap();
        assert_eq!(denial::denial_types(&z, &ent, 1, true), [46, 47]);
        // The delegation: NS, and no DS.
        let cut = Name::parse("sub.api.example.com").unwrap();
        assert_eq!(denial::denial_types(&z, &cut, 43, true), [46, 47, 2]);
    }

    #[test]
    fn dnskey_is_answered_without_do_and_signed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let z = zone(dir.path());
        let signer = Signer::new(Arc::new(Metrics::new()));
        let nodata = Sections {
            kind: Kind::NoData,
            answers: &[],
            authority: &[],
            additional: &[],
        };
        let mut plain = q(&z.apex, denial::DNSKEY);
        plain.dnssec_ok = false;
        let s = signer.secure(&z, plain, nodata, 1_800_000_000).unwrap();
        assert!(s.replace);
        assert_eq!(s.answers.len(), 1);
        assert_eq!(s.answers[0].rtype, denial::DNSKEY);
        let s = signer
            .secure(&z, q(&z.apex, denial::CDS), nodata, 1_800_000_000)
            .unwrap();
        assert_eq!(
            s.answers.iter().map(|r| r.rtype).collect::<Vec<_>>(),
            [46, 59]
        );
        // Not for a name below the apex, and nothing at all without DO otherwise.
        let www = Name::parse("www.api.example.com").unwrap();
        let mut plain = q(&www, 1);
        plain.dnssec_ok = false;
        assert!(signer.secure(&z, plain, nodata, 1_800_000_000).is_none());
    }
}
