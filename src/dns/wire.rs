//! The lean wire codec for the common query: one question, class IN, opcode QUERY, at most an
//! OPT record (version 0) with an optional Client Subnet option. It parses without allocating
//! (bar the lower-case name) and writes the response straight into a buffer. Anything else is
//! `Parsed::Fallback` and goes through hickory's full parser and encoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{Name, RData, RecordType, Rr};

/// EDNS Client Subnet as received (RFC 7871).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    pub addr: IpAddr,
    pub source: u8,
}

/// The EDNS part of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The client's UDP payload size.
    pub payload: u16,
    pub ecs: Option<Ecs>,
}

/// A query the lean path can answer.
#[derive(Debug)]
pub struct Query<'a> {
    pub id: u16,
    /// The RD and CD bits, copied into the response.
    pub rd: bool,
    pub cd: bool,
    /// The question section as received (name in the client's case, type, class).
    pub question: &'a [u8],
    pub qtype: u16,
    pub edns: Option<Edns>,
}

/// What the lean parser made of a message.
#[derive(Debug)]
pub enum Parsed<'a> {
    Lean(Query<'a>),
    /// A query with a malformed ECS option: FORMERR (RFC 7871 section 7.1.2).
    BadEcs(Query<'a>),
    /// Valid or not, something the full parser should handle.
    Fallback,
    /// Not a query (QR set, or shorter than a header): never answered, against reflection.
    Drop,
}

const TYPE_OPT: u16 = 41;
const OPT_ECS: u16 = 8;

/// Parses `msg`; on `Lean` the lower-case question name (labels joined by dots) is in `name`.
pub fn parse<'a>(msg: &'a [u8], name: &mut String) -> Parsed<'a> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return Parsed::Drop;
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let opcode = (msg[2] >> 3) & 0x0f;
    let count = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if opcode != 0 || qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return Parsed::Fallback;
    }
    // QNAME: plain labels only (a compression pointer in a question is legal but rare).
    name.clear();
    let mut i = 12;
    loop {
        let Some(&len) = msg.get(i) else {
            return Parsed::Fallback;
        };
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 || i + len as usize > msg.len() || i - 12 > 255 {
            return Parsed::Fallback;
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in &msg[i..i + len as usize] {
            match b.to_ascii_lowercase() {
                c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*') => name.push(char::from(c)),
                // Other octets take the full path, which spells them so they match nothing.
                _ => return Parsed::Fallback,
            }
        }
        i += len as usize;
    }
    if i - 12 > 255 || i + 4 > msg.len() {
        return Parsed::Fallback;
    }
    let qtype = u16::from_be_bytes([msg[i], msg[i + 1]]);
    let qclass = u16::from_be_bytes([msg[i + 2], msg[i + 3]]);
    // Class IN only; zone transfers and meta types go the full way.
    if qclass != 1 || matches!(qtype, 251 | 252 | 0) {
        return Parsed::Fallback;
    }
    let question = &msg[12..i + 4];
    i += 4;
    let mut query = Query {
        id,
        rd: msg[2] & 0x01 != 0,
        cd: msg[3] & 0x10 != 0,
        question,
        qtype,
        edns: None,
    };
    if ar == 0 {
        return if i == msg.len() {
            Parsed::Lean(query)
        } else {
            Parsed::Fallback
        };
    }
    // The OPT record: root owner, type 41, class = payload, TTL = ext-rcode/version/flags.
    if msg.len() < i + 11 || msg[i] != 0 || u16::from_be_bytes([msg[i + 1], msg[i + 2]]) != TYPE_OPT
    {
        return Parsed::Fallback;
    }
    let payload = u16::from_be_bytes([msg[i + 3], msg[i + 4]]);
    let version = msg[i + 6];
    if version != 0 {
        return Parsed::Fallback;
    }
    let rdlen = u16::from_be_bytes([msg[i + 9], msg[i + 10]]) as usize;
    i += 11;
    if i + rdlen != msg.len() {
        return Parsed::Fallback;
    }
    let mut edns = Edns { payload, ecs: None };
    let mut bad_ecs = false;
    let end = i + rdlen;
    while i < end {
        if i + 4 > end {
            return Parsed::Fallback;
        }
        let code = u16::from_be_bytes([msg[i], msg[i + 1]]);
        let len = u16::from_be_bytes([msg[i + 2], msg[i + 3]]) as usize;
        i += 4;
        if i + len > end {
            return Parsed::Fallback;
        }
        if code == OPT_ECS {
            if edns.ecs.is_some() || bad_ecs {
                return Parsed::Fallback;
            }
            match parse_ecs(&msg[i..i + len]) {
                Some(ecs) => edns.ecs = Some(ecs),
                None => bad_ecs = true,
            }
        }
        i += len;
    }
    query.edns = Some(edns);
    if bad_ecs {
        Parsed::BadEcs(query)
    } else {
        Parsed::Lean(query)
    }
}

/// An ECS option body, or `None` when malformed: unknown family, a source prefix longer than the
/// address, an address length that does not match the prefix, or bits set beyond the prefix.
pub(crate) fn parse_ecs(b: &[u8]) -> Option<Ecs> {
    if b.len() < 4 {
        return None;
    }
    let family = u16::from_be_bytes([b[0], b[1]]);
    let source = b[2];
    let addr = &b[4..];
    let bits = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source > bits || addr.len() != (source as usize).div_ceil(8) {
        return None;
    }
    let mut full = [0u8; 16];
    full[..addr.len()].copy_from_slice(addr);
    let ip = if family == 1 {
        IpAddr::V4(Ipv4Addr::new(full[0], full[1], full[2], full[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(full))
    };
    (crate::geo::mask(ip, source) == ip).then_some(Ecs { addr: ip, source })
}

/// The response header fields the encoder needs.
pub struct Header {
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    pub aa: bool,
    pub rcode: u8,
}

/// The OPT record we send back: our payload size and, when the query had one, the ECS echo.
#[derive(Clone, Copy)]
pub struct OptOut {
    pub payload: u16,
    pub ecs: Option<(Ecs, u8)>,
}

/// Writes a response into `out` (cleared first). Names equal to `qname` point at the question
/// (so they keep the client's spelling); other names are compressed against names already
/// written. When the result would exceed `limit`, writes header, question and OPT with TC set
/// instead (RFC 6891 section 7: the OPT record survives truncation).
#[allow(clippy::too_many_arguments)]
pub fn encode(
    out: &mut Vec<u8>,
    h: &Header,
    question: &[u8],
    qname: &Name,
    sections: [&[Rr]; 3],
    opt: Option<OptOut>,
    limit: usize,
) {
    let mut e = Encoder::new(out, question);
    e.header(
        h,
        false,
        [
            sections[0].len(),
            sections[1].len(),
            sections[2].len() + usize::from(opt.is_some()),
        ],
    );
    e.out.extend_from_slice(question);
    for section in sections {
        for rr in section {
            e.record(rr, qname);
        }
    }
    if let Some(o) = opt {
        e.opt(o);
    }
    if e.out.len() > limit {
        out.clear();
        let mut e = Encoder::new(out, question);
        e.header(h, true, [0, 0, usize::from(opt.is_some())]);
        e.out.extend_from_slice(question);
        if let Some(o) = opt {
            e.opt(o);
        }
    }
}

/// Writes an error response (FORMERR, REFUSED, ...) with the question and the OPT record.
pub fn encode_error(out: &mut Vec<u8>, q: &Query, rcode: u8, opt: Option<OptOut>) {
    let h = Header {
        id: q.id,
        rd: q.rd,
        cd: q.cd,
        aa: false,
        rcode,
    };
    encode(
        out,
        &h,
        q.question,
        &Name::from_lower(""),
        [&[], &[], &[]],
        opt,
        usize::MAX,
    );
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    question: &'a [u8],
    /// Names written so far, as (lower-case dotted suffix, offset), for compression; built on
    /// the first name that is not the question's (most answers never need it).
    names: Option<Vec<(String, u16)>>,
}

impl<'a> Encoder<'a> {
    fn new(out: &'a mut Vec<u8>, question: &'a [u8]) -> Encoder<'a> {
        out.clear();
        Encoder {
            out,
            question,
            names: None,
        }
    }

    /// The question name's suffixes, when the client spelled it in lower case (a pointer would
    /// otherwise change the case of other names).
    fn question_suffixes(question: &[u8]) -> Vec<(String, u16)> {
        let mut names = Vec::new();
        let mut off = 0usize;
        let mut labels: Vec<(usize, &[u8])> = Vec::new();
        while let Some(&len) = question.get(off) {
            if len == 0 || off + 1 + len as usize > question.len() {
                break;
            }
            labels.push((off, &question[off + 1..off + 1 + len as usize]));
            off += 1 + len as usize;
        }
        if labels
            .iter()
            .all(|(_, l)| !l.iter().any(u8::is_ascii_uppercase))
        {
            for (k, (pos, _)) in labels.iter().enumerate() {
                let suffix: Vec<&str> = labels[k..]
                    .iter()
                    .map(|(_, l)| std::str::from_utf8(l).unwrap_or("\u{0}"))
                    .collect();
                names.push((suffix.join("."), (12 + pos) as u16));
            }
        }
        names
    }

    fn header(&mut self, h: &Header, tc: bool, [an, ns, ar]: [usize; 3]) {
        let o = &mut self.out;
        o.extend_from_slice(&h.id.to_be_bytes());
        // QR=1, opcode 0, AA, TC, RD; RA=0, Z=0, AD=0, CD, RCODE.
        o.push(0x80 | (u8::from(h.aa) << 2) | (u8::from(tc) << 1) | u8::from(h.rd));
        o.push((u8::from(h.cd) << 4) | (h.rcode & 0x0f));
        for n in [1, an, ns, ar] {
            o.extend_from_slice(&(n.min(u16::MAX as usize) as u16).to_be_bytes());
        }
    }

    /// Writes a name, compressed when allowed.
    fn name(&mut self, name: &str, compress: bool) {
        if name.is_empty() {
            self.out.push(0);
            return;
        }
        let question = self.question;
        let names = self
            .names
            .get_or_insert_with(|| Encoder::question_suffixes(question));
        let mut rest = name;
        loop {
            if compress && let Some((_, off)) = names.iter().find(|(n, _)| n == rest) {
                let ptr = 0xc000 | *off;
                self.out.extend_from_slice(&ptr.to_be_bytes());
                return;
            }
            let here = self.out.len();
            if here < 0x3fff {
                names.push((rest.to_string(), here as u16));
            }
            let (label, tail) = rest.split_once('.').unwrap_or((rest, ""));
            self.out.push(label.len() as u8);
            self.out.extend_from_slice(label.as_bytes());
            if tail.is_empty() {
                self.out.push(0);
                return;
            }
            rest = tail;
        }
    }

    fn record(&mut self, rr: &Rr, qname: &Name) {
        if &rr.name == qname {
            self.out.extend_from_slice(&0xc00cu16.to_be_bytes());
        } else {
            self.name(rr.name.as_str(), true);
        }
        let rtype: RecordType = rr.data.record_type();
        self.out.extend_from_slice(&rtype.code().to_be_bytes());
        self.out.extend_from_slice(&1u16.to_be_bytes());
        self.out.extend_from_slice(&rr.ttl.to_be_bytes());
        let len_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        match &rr.data {
            RData::A(ip) => self.out.extend_from_slice(&ip.octets()),
            RData::Aaaa(ip) => self.out.extend_from_slice(&ip.octets()),
            RData::Cname(n) | RData::Ns(n) => self.name(n.as_str(), true),
            RData::Mx {
                preference,
                exchange,
            } => {
                self.out.extend_from_slice(&preference.to_be_bytes());
                self.name(exchange.as_str(), true);
            }
            RData::Txt(strings) => {
                for s in strings {
                    let b = &s.as_bytes()[..s.len().min(255)];
                    self.out.push(b.len() as u8);
                    self.out.extend_from_slice(b);
                }
            }
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for v in [priority, weight, port] {
                    self.out.extend_from_slice(&v.to_be_bytes());
                }
                // RFC 2782: the SRV target is not compressed.
                self.name(target.as_str(), false);
            }
            RData::Caa {
                critical,
                tag,
                value,
            } => {
                self.out.push(if *critical { 0x80 } else { 0 });
                self.out.push(tag.len().min(255) as u8);
                self.out.extend_from_slice(tag.as_bytes());
                self.out.extend_from_slice(value.as_bytes());
            }
            RData::Soa(s) => {
                self.name(s.mname.as_str(), true);
                self.name(s.rname.as_str(), true);
                for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                    self.out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        let rdlen = (self.out.len() - len_at - 2) as u16;
        self.out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    }

    fn opt(&mut self, o: OptOut) {
        self.out.push(0);
        self.out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        self.out.extend_from_slice(&o.payload.to_be_bytes());
        // Extended RCODE 0, version 0, flags 0 (DO clear: no DNSSEC here).
        self.out.extend_from_slice(&[0, 0, 0, 0]);
        match o.ecs {
            None => self.out.extend_from_slice(&[0, 0]),
            Some((ecs, scope)) => {
                let (family, octets): (u16, Vec<u8>) = match ecs.addr {
                    IpAddr::V4(v4) => (1, v4.octets().to_vec()),
                    IpAddr::V6(v6) => (2, v6.octets().to_vec()),
                };
                let n = (ecs.source as usize).div_ceil(8);
                let optlen = 4 + n;
                self.out
                    .extend_from_slice(&((4 + optlen) as u16).to_be_bytes());
                self.out.extend_from_slice(&OPT_ECS.to_be_bytes());
                self.out.extend_from_slice(&(optlen as u16).to_be_bytes());
                self.out.extend_from_slice(&family.to_be_bytes());
                self.out.push(ecs.source);
                self.out.push(scope);
                self.out.extend_from_slice(&octets[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name as HName, RecordType as HType};

    fn query(name: &str, t: HType, edns: Option<(u16, Option<ClientSubnet>)>) -> Vec<u8> {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(HQuery::query(HName::from_ascii(name).unwrap(), t));
        if let Some((payload, ecs)) = edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(payload);
            if let Some(cs) = ecs {
                e.options_mut().insert(EdnsOption::Subnet(cs));
            }
            m.edns = Some(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn a_plain_query_parses_lean() {
        let q = query("WwW.Example.COM.", HType::AAAA, None);
        let mut name = String::new();
        let Parsed::Lean(p) = parse(&q, &mut name) else {
            panic!("not lean")
        };
        assert_eq!(name, "www.example.com");
        assert_eq!((p.id, p.rd, p.qtype), (4242, true, 28));
        assert!(p.edns.is_none());
    }

    #[test]
    fn ecs_is_read_and_checked() {
        let mut name = String::new();
        let ok = query(
            "a.b.",
            HType::A,
            Some((
                4096,
                Some(ClientSubnet::new("81.2.69.0".parse().unwrap(), 24, 0)),
            )),
        );
        let Parsed::Lean(p) = parse(&ok, &mut name) else {
            panic!()
        };
        assert_eq!(
            p.edns,
            Some(Edns {
                payload: 4096,
                ecs: Some(Ecs {
                    addr: "81.2.69.0".parse().unwrap(),
                    source: 24
                })
            })
        );
        // Bits beyond the prefix: hickory writes the address bytes as given.
        let bad = query(
            "a.b.",
            HType::A,
            Some((
                4096,
                Some(ClientSubnet::new("81.2.69.1".parse().unwrap(), 32, 0)),
            )),
        );
        assert!(matches!(parse(&bad, &mut name), Parsed::Lean(_)));
        let bad = query(
            "a.b.",
            HType::A,
            Some((
                4096,
                Some(ClientSubnet::new("81.2.79.0".parse().unwrap(), 20, 0)),
            )),
        );
        assert!(matches!(parse(&bad, &mut name), Parsed::BadEcs(_)));
        assert!(parse_ecs(&[0, 3, 8, 0, 10]).is_none(), "unknown family");
        assert!(
            parse_ecs(&[0, 1, 33, 0, 1, 2, 3, 4, 5]).is_none(),
            "prefix longer than IPv4"
        );
        assert!(
            parse_ecs(&[0, 1, 24, 0, 1, 2, 3, 4]).is_none(),
            "address longer than the prefix"
        );
        assert_eq!(parse_ecs(&[0, 1, 0, 0]).map(|e| e.source), Some(0));
    }

    #[test]
    fn odd_messages_fall_back_or_drop() {
        let mut name = String::new();
        assert!(matches!(parse(&[0; 5], &mut name), Parsed::Drop));
        let mut resp = query("a.", HType::A, None);
        resp[2] |= 0x80;
        assert!(matches!(parse(&resp, &mut name), Parsed::Drop));
        let mut two = query("a.", HType::A, None);
        two[5] = 2;
        assert!(matches!(parse(&two, &mut name), Parsed::Fallback));
        let mut notify = query("a.", HType::A, None);
        notify[2] |= 4 << 3;
        assert!(matches!(parse(&notify, &mut name), Parsed::Fallback));
        assert!(matches!(
            parse(&query("a.", HType::AXFR, None), &mut name),
            Parsed::Fallback
        ));
        let v1 = {
            let mut q = query("a.", HType::A, Some((1232, None)));
            let n = q.len();
            q[n - 5] = 1; // EDNS version byte
            q
        };
        assert!(matches!(parse(&v1, &mut name), Parsed::Fallback));
        // Trailing garbage after the question.
        let mut trail = query("a.", HType::A, None);
        trail.push(0);
        assert!(matches!(parse(&trail, &mut name), Parsed::Fallback));
    }

    #[test]
    fn responses_decode_and_truncate_keeping_opt() {
        let q = query(
            "www.example.com.",
            HType::A,
            Some((
                1232,
                Some(ClientSubnet::new("81.2.69.0".parse().unwrap(), 24, 0)),
            )),
        );
        let mut name = String::new();
        let Parsed::Lean(p) = parse(&q, &mut name) else {
            panic!()
        };
        let qname = Name::from_lower(&name);
        let rr = |data| Rr {
            name: qname.clone(),
            ttl: 30,
            data,
        };
        let answers = vec![
            rr(RData::A("192.0.2.1".parse().unwrap())),
            rr(RData::A("192.0.2.2".parse().unwrap())),
        ];
        let soa = Rr {
            name: Name::parse("example.com").unwrap(),
            ttl: 60,
            data: RData::Ns(Name::parse("ns1.example.com").unwrap()),
        };
        let h = Header {
            id: p.id,
            rd: p.rd,
            cd: p.cd,
            aa: true,
            rcode: 0,
        };
        let opt = OptOut {
            payload: 1232,
            ecs: Some((p.edns.unwrap().ecs.unwrap(), 24)),
        };
        let mut out = Vec::new();
        encode(
            &mut out,
            &h,
            p.question,
            &qname,
            [&answers, std::slice::from_ref(&soa), &[]],
            Some(opt),
            1232,
        );
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.authorities.len(), 1);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired && !m.metadata.truncation);
        let e = m.edns.unwrap();
        assert_eq!(e.max_payload(), 1232);
        let Some(EdnsOption::Subnet(cs)) =
            e.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
        else {
            panic!()
        };
        assert_eq!(
            (cs.addr().to_string(), cs.source_prefix(), cs.scope_prefix()),
            ("81.2.69.0".into(), 24, 24)
        );
        // Compression: "example.com" in the authority points into the question.
        assert!(out.len() < 12 + 17 + 4 + 2 * 16 + 40 + 23);

        encode(
            &mut out,
            &h,
            p.question,
            &qname,
            [&answers, &[soa], &[]],
            Some(opt),
            60,
        );
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert!(m.edns.is_some(), "the OPT record survives truncation");
    }
}
