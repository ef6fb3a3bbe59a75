//! Response rate limiting at the UDP socket: turns what the handler says a response is
//! (`Facts`, taken from the answer it built) into an `rrl::Kind`, asks `rrl::Limiter` whether
//! to send it, drop it or slip it, and rewrites a slipped one as TC=1 with the question and
//! OPT record only.

use super::wire::skip_name;
use std::net::IpAddr;

use tokio::time::Instant;

use super::{Facts, Shape};
use crate::rrl::{self, Decision, Kind, Limiter, Limits, NodeSettings};
use crate::telemetry::metrics::Metrics;

const TYPE_OPT: u16 = 41;

/// RRL for the UDP threads of every listener: one limiter for all of them; the limits come
/// from the zone the question falls in (built-in defaults outside every zone).
pub struct UdpRrl {
    limiter: Limiter,
    settings: NodeSettings,
}

impl UdpRrl {
    pub fn new(settings: NodeSettings) -> UdpRrl {
        UdpRrl {
            limiter: Limiter::new(settings.max_entries),
            settings,
        }
    }

    /// Whether to send `response`, the handler's answer to a query of `query_len` bytes from
    /// `client`, described by `facts`; `qname` is the question name as the handler spelled it
    /// (lower case). A slipped response is rewritten in place.
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &self,
        client: IpAddr,
        facts: &Facts,
        qname: &str,
        query_len: usize,
        response: &mut Vec<u8>,
        metrics: &Metrics,
        now: Instant,
    ) -> bool {
        let limits = facts.zone.map_or_else(Limits::default, |z| z.limits);
        if !limits.enabled || self.settings.is_exempt(client) {
            return true;
        }
        let kind = kind(facts, qname, query_len, response.len());
        let key = self.limiter.key(client, &kind);
        let cost = rrl::cost(query_len, response.len());
        match self.limiter.decide(key, &limits, cost, now) {
            Decision::Send => true,
            Decision::Drop => {
                metrics.record_rrl(Decision::Drop);
                false
            }
            Decision::Slip => {
                if truncate(response) {
                    metrics.record_rrl(Decision::Slip);
                    true
                } else {
                    metrics.record_rrl(Decision::Drop);
                    false
                }
            }
        }
    }
}

/// What counts as "the same response" for RRL. Answers are per name and type, and, when small
/// and tailored to a client subnet, per subnet; NXDOMAIN and referrals per zone (so random
/// names share a bucket); errors, and anything without a zone, one bucket per network.
fn kind<'a>(facts: &Facts, qname: &'a str, query_len: usize, response_len: usize) -> Kind<'a> {
    let apex = |z: &super::ZoneFacts| {
        let name = qname.as_bytes();
        &name[name.len().saturating_sub(z.apex_len)..]
    };
    match (facts.shape, &facts.zone) {
        (Shape::Answer, Some(_)) => Kind::Answer {
            qname: qname.as_bytes(),
            qtype: facts.qtype,
            subnet: facts
                .subnet
                .filter(|_| rrl::is_small(query_len, response_len))
                .map(rrl::network),
        },
        (Shape::NxDomain, Some(z)) => Kind::NxDomain { zone: apex(z) },
        (Shape::Referral, Some(z)) => Kind::Referral { zone: apex(z) },
        _ => Kind::Error,
    }
}

/// Rewrites a response as a slip: the header with TC=1, the question, and the OPT record if
/// there is one (RFC 6891 section 7: it survives truncation); no other records. False, with
/// `msg` unchanged, when the response cannot be walked.
pub fn truncate(msg: &mut Vec<u8>) -> bool {
    if msg.len() < 12 {
        return false;
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([msg[i], msg[i + 1]]));
    let (qd, records) = (count(4), count(6) + count(8) + count(10));
    let mut at = 12;
    for _ in 0..qd {
        let Some(end) = skip_name(msg, at) else {
            return false;
        };
        at = end + 4;
    }
    let question_end = at;
    if question_end > msg.len() {
        return false;
    }
    let mut opt = None;
    for _ in 0..records {
        let Some(fixed) = skip_name(msg, at) else {
            return false;
        };
        let Some(f) = msg.get(fixed..fixed + 10) else {
            return false;
        };
        let rtype = u16::from_be_bytes([f[0], f[1]]);
        let end = fixed + 10 + usize::from(u16::from_be_bytes([f[8], f[9]]));
        if end > msg.len() {
            return false;
        }
        if rtype == TYPE_OPT {
            opt = Some(at..end);
        }
        at = end;
    }
    let opt_bytes = opt.map(|r| msg[r].to_vec());
    msg.truncate(question_end);
    msg[2] |= 0x02; // TC
    msg[6..10].fill(0);
    let arcount = u16::from(opt_bytes.is_some());
    msg[10..12].copy_from_slice(&arcount.to_be_bytes());
    if let Some(o) = opt_bytes {
        msg.extend_from_slice(&o);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    fn response(name: &str, rcode: ResponseCode, aa: bool, answers: usize) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.metadata.authoritative = aa;
        let n = Name::from_ascii(name).unwrap();
        m.add_query(Query::query(n.clone(), RecordType::A));
        for i in 0..answers {
            m.add_answer(Record::from_rdata(
                n.clone(),
                30,
                RData::A(A::new(192, 0, 2, i as u8)),
            ));
        }
        m.add_authority(Record::from_rdata(
            Name::from_ascii("example.com.").unwrap(),
            60,
            RData::SOA(SOA::new(
                Name::from_ascii("ns1.example.com.").unwrap(),
                Name::from_ascii("h.example.com.").unwrap(),
                1,
                2,
                3,
                4,
                5,
            )),
        ));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.edns = Some(e);
        m.to_vec().unwrap()
    }

    #[test]
    fn kinds_come_from_the_answer_the_handler_built() {
        let zone = Some(super::super::ZoneFacts {
            limits: Limits::default(),
            apex_len: "api.example.com".len(),
        });
        let facts = |shape, subnet: Option<&str>| Facts {
            shape,
            qtype: 1,
            zone,
            subnet: subnet.map(|s| s.parse().unwrap()),
        };
        let q = "www.api.example.com";
        let text = |k: Kind| format!("{k:?}");
        // A small tailored answer is keyed by its client subnet; a large one is not.
        assert_eq!(
            text(kind(&facts(Shape::Answer, Some("81.2.69.0")), q, 59, 91)),
            text(Kind::Answer {
                qname: q.as_bytes(),
                qtype: 1,
                subnet: Some(rrl::network("81.2.69.0".parse().unwrap())),
            })
        );
        assert_eq!(
            text(kind(&facts(Shape::Answer, Some("81.2.69.0")), q, 59, 200)),
            text(Kind::Answer {
                qname: q.as_bytes(),
                qtype: 1,
                subnet: None,
            })
        );
        // NXDOMAIN and referrals are counted per zone: the apex ends the question name.
        assert_eq!(
            text(kind(
                &facts(Shape::NxDomain, None),
                "nope.api.example.com",
                40,
                100
            )),
            text(Kind::NxDomain {
                zone: b"api.example.com"
            })
        );
        assert_eq!(
            text(kind(
                &facts(Shape::Referral, None),
                "a.sub.api.example.com",
                40,
                100
            )),
            text(Kind::Referral {
                zone: b"api.example.com"
            })
        );
        assert_eq!(text(kind(&facts(Shape::Error, None), q, 40, 40)), "Error");
        // Nothing in a zone (REFUSED) is an error, whatever its shape.
        let outside = Facts {
            zone: None,
            ..facts(Shape::Answer, None)
        };
        assert_eq!(text(kind(&outside, "www.other.org", 40, 40)), "Error");
    }

    #[test]
    fn a_slip_keeps_the_header_question_and_opt_only() {
        let mut bytes = response("www.api.example.com.", ResponseCode::NoError, true, 3);
        assert!(truncate(&mut bytes));
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation && m.metadata.authoritative);
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.queries.len(), 1);
        assert!(m.answers.is_empty() && m.authorities.is_empty());
        assert_eq!(m.edns.unwrap().max_payload(), 1232);
        // Without EDNS there is no OPT to keep.
        let mut plain = Message::new(8, MessageType::Response, OpCode::Query);
        plain.add_query(Query::query(
            Name::from_ascii("a.example.com.").unwrap(),
            RecordType::A,
        ));
        let mut bytes = plain.to_vec().unwrap();
        assert!(truncate(&mut bytes));
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation && m.edns.is_none());
        // Garbage is refused, not mangled.
        let mut junk = vec![0, 1, 0x80, 0, 0, 1, 0, 5, 0, 0, 0, 0, 3, b'a'];
        let before = junk.clone();
        assert!(!truncate(&mut junk));
        assert_eq!(junk, before);
    }
}
