//! Response rate limiting at the UDP socket: reads what an encoded response is (rcode, question,
//! zone), asks `rrl::Limiter` whether to send it, drop it or slip it, and rewrites a slipped one
//! as TC=1 with the question and OPT record only. Working on the encoded bytes keeps this
//! independent of how the response was built (lean path or hickory's).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;

use crate::model::ZoneSet;
use crate::rrl::{Decision, Kind, Limiter, Limits};
use crate::state::Snapshots;

const RCODE_NOERROR: u8 = 0;
const RCODE_NXDOMAIN: u8 = 3;
const TYPE_OPT: u16 = 41;

/// RRL for the UDP threads: one limiter for all of them; the limits come from the zone the
/// question falls in (built-in defaults outside every zone).
pub struct UdpRrl {
    limiter: Limiter,
    snapshots: Arc<Snapshots>,
}

impl UdpRrl {
    pub fn new(snapshots: Arc<Snapshots>, max_entries: usize) -> UdpRrl {
        UdpRrl {
            limiter: Limiter::new(max_entries),
            snapshots,
        }
    }

    /// Whether to send `response` (a complete response to `client`) now; a slipped one is
    /// rewritten in place. `qname` is scratch space.
    pub fn admit(
        &self,
        client: IpAddr,
        response: &mut Vec<u8>,
        qname: &mut String,
        now: Instant,
    ) -> bool {
        let zones = self.snapshots.zones.load();
        let Some((limits, kind)) = classify(response, &zones, qname) else {
            return true;
        };
        if !limits.enabled {
            return true;
        }
        let key = self.limiter.key(client, &kind);
        let metrics = &self.snapshots.metrics;
        match self.limiter.decide(key, &limits, now) {
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

/// The limits that apply to a response and its kind; `None` for something that is not a
/// response we limit (too short to be one).
fn classify<'a>(
    msg: &[u8],
    zones: &'a ZoneSet,
    qname: &'a mut String,
) -> Option<(Limits, Kind<'a>)> {
    if msg.len() < 12 {
        return None;
    }
    let aa = msg[2] & 0x04 != 0;
    let rcode = msg[3] & 0x0f;
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (qdcount, ancount) = (count(4), count(6));
    let qtype = if qdcount == 1 {
        read_name(msg, 12, qname).and_then(|end| {
            msg.get(end..end + 2)
                .map(|t| u16::from_be_bytes([t[0], t[1]]))
        })
    } else {
        None
    };
    let Some(qtype) = qtype else {
        // No usable question (FORMERR for a message without one, say): an error.
        return Some((Limits::default(), Kind::Error));
    };
    let zone = find_zone(zones, qname);
    let limits = zone.map_or_else(Limits::default, |z| z.rrl);
    let kind = match (rcode, zone) {
        (RCODE_NOERROR, Some(_)) if ancount > 0 || aa => Kind::Answer {
            qname: qname.as_bytes(),
            qtype,
        },
        (RCODE_NOERROR, Some(z)) => Kind::Referral {
            zone: z.apex.as_str().as_bytes(),
        },
        (RCODE_NXDOMAIN, Some(z)) => Kind::NxDomain {
            zone: z.apex.as_str().as_bytes(),
        },
        _ => Kind::Error,
    };
    Some((limits, kind))
}

/// The zone `name` (lower-case, dotted) falls in: the one with the longest matching apex.
fn find_zone<'a>(zones: &'a ZoneSet, name: &str) -> Option<&'a crate::model::Zone> {
    zones
        .zones
        .iter()
        .filter(|z| {
            let apex = z.apex.as_str();
            name == apex
                || (name.len() > apex.len()
                    && name.ends_with(apex)
                    && name.as_bytes()[name.len() - apex.len() - 1] == b'.')
        })
        .max_by_key(|z| z.apex.as_str().len())
        .map(|z| &**z)
}

/// Reads the name at `at` into `out` as the model spells names (lower case, dots between
/// labels, `\DDD` for an octet no zone name holds); returns where the name ends in `msg`.
/// Follows compression pointers, at most a few, always backwards.
fn read_name(msg: &[u8], mut at: usize, out: &mut String) -> Option<usize> {
    use std::fmt::Write;
    out.clear();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(end.unwrap_or(at + 1)),
            l if l & 0xc0 == 0xc0 => {
                let target = usize::from(u16::from_be_bytes([l & 0x3f, *msg.get(at + 1)?]));
                jumps += 1;
                if target >= at || jumps > 16 {
                    return None;
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            l if l > 63 => return None,
            l => {
                let label = msg.get(at + 1..at + 1 + usize::from(l))?;
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    match b.to_ascii_lowercase() {
                        c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*') => {
                            out.push(char::from(c))
                        }
                        _ => {
                            // Writing to a String cannot fail.
                            let _ = write!(out, "\\{b:03}");
                        }
                    }
                }
                at += 1 + usize::from(l);
            }
        }
    }
}

/// Where the name at `at` ends.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l if l > 63 => return None,
            l => at += 1 + usize::from(l),
        }
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

    fn zones() -> ZoneSet {
        let zone = |apex: &str, rrl: &str| {
            crate::zone_file::parse_zone(
                &format!(
                    "zone: {apex}\nsoa: {{ primary: ns1, contact: h.example.com }}\n\
                     nameservers: {{ ns1: [192.0.2.53] }}\n{rrl}"
                ),
                "t.yaml",
            )
            .unwrap()
        };
        ZoneSet {
            zones: vec![
                Arc::new(zone("example.com", "")),
                Arc::new(zone(
                    "api.example.com",
                    "rrl: { responses_per_second: 5, slip: 1 }\n",
                )),
            ],
        }
    }

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
    fn responses_are_classified_by_rcode_question_and_zone() {
        let zones = zones();
        let mut name = String::new();
        let mut kind = |bytes: Vec<u8>| {
            let (limits, kind) = classify(&bytes, &zones, &mut name).unwrap();
            (limits.responses_per_second, format!("{kind:?}"))
        };
        let text = |s: &str| format!("{:?}", s.as_bytes());
        assert_eq!(
            kind(response(
                "WWW.Api.Example.com.",
                ResponseCode::NoError,
                true,
                2
            )),
            (
                5,
                format!(
                    "Answer {{ qname: {}, qtype: 1 }}",
                    text("www.api.example.com")
                )
            )
        );
        // NODATA counts as an answer; a referral (AA clear, no answers) per zone.
        assert!(
            kind(response("x.example.com.", ResponseCode::NoError, true, 0))
                .1
                .starts_with("Answer")
        );
        assert_eq!(
            kind(response(
                "a.sub.example.com.",
                ResponseCode::NoError,
                false,
                0
            )),
            (100, format!("Referral {{ zone: {} }}", text("example.com")))
        );
        assert_eq!(
            kind(response(
                "nope.api.example.com.",
                ResponseCode::NXDomain,
                true,
                0
            )),
            (
                5,
                format!("NxDomain {{ zone: {} }}", text("api.example.com"))
            )
        );
        assert_eq!(
            kind(response("www.other.org.", ResponseCode::Refused, false, 0)),
            (100, "Error".to_string())
        );
        assert_eq!(
            kind(response(
                "www.api.example.com.",
                ResponseCode::ServFail,
                false,
                0
            )),
            (5, "Error".to_string())
        );
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

    #[test]
    fn names_are_read_through_pointers_and_escaped() {
        let mut out = String::new();
        // "A.b" at 12, then a pointer to it at 17.
        let mut msg = vec![0; 12];
        msg.extend_from_slice(&[1, b'A', 1, b'b', 0, 0xc0, 12, 1, b'.', 0]);
        assert_eq!(read_name(&msg, 12, &mut out), Some(17));
        assert_eq!(out, "a.b");
        assert_eq!(read_name(&msg, 17, &mut out), Some(19));
        assert_eq!(out, "a.b");
        assert_eq!(read_name(&msg, 19, &mut out), Some(22));
        assert_eq!(out, "\\046");
        // A pointer forward (or to itself) is refused: no loops.
        let msg = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0, 12];
        assert_eq!(read_name(&msg, 12, &mut out), None);
    }
}
