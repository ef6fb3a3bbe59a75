//! The lean wire codec for the common query: one question, class IN, opcode QUERY, at most an
//! OPT record (version 0) with an optional Client Subnet option. It parses without allocating
//! (bar the lower-case name) and writes the response straight into a buffer. Anything else is
//! `Parsed::Fallback` and goes through hickory's full parser and encoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dnssec::WireRr;
use crate::zone::{Name, RData, RecordType, Rr};

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
    /// The DO bit (RFC 3225): copied into the response, signed or not.
    pub dnssec_ok: bool,
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

/// Each octet of a question name as the lean path spells it (lower case), or 0 for an octet it
/// leaves to the full path: letters, digits, `-`, `_` and `*` only.
static NAME_OCTET: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = (b as u8).to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_' || c == b'*' {
            t[b] = c;
        }
        b += 1;
    }
    t
};

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
    // QNAME: plain labels only (a compression pointer in a question is legal but rare). A first
    // walk over the length octets finds the name's end; then the octets between the first length
    // and the root go through `NAME_OCTET` into `name` in one pass, the inner length octets
    // become dots, and an octet the table refuses (0) sends the query the full way.
    let mut i = 12;
    loop {
        let Some(&len) = msg.get(i) else {
            return Parsed::Fallback;
        };
        if len == 0 {
            break;
        }
        if len > 63 {
            return Parsed::Fallback;
        }
        i += 1 + usize::from(len);
        // A name is at most 255 octets on the wire, its root included.
        if i - 12 >= 255 {
            return Parsed::Fallback;
        }
    }
    name.clear();
    if i > 12 {
        // SAFETY: every octet written is a `NAME_OCTET` entry or a dot, all of them ASCII
        // (letters, digits, `-`, `_`, `*`, `.`, or 0), so `name` stays UTF-8 whatever the
        // message holds.
        let text = unsafe { name.as_mut_vec() };
        text.extend(msg[13..i].iter().map(|&b| NAME_OCTET[usize::from(b)]));
        let mut dot = 12 + 1 + usize::from(msg[12]);
        while dot < i {
            text[dot - 13] = b'.';
            dot += 1 + usize::from(msg[dot]);
        }
        // A fold rather than `contains` (memchr): names are short, and this compiles to a few
        // vector instructions without a call.
        if text.iter().fold(false, |refused, &c| refused | (c == 0)) {
            // Other octets take the full path, which spells them so they match nothing.
            name.clear();
            return Parsed::Fallback;
        }
    }
    i += 1;
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
    // The TTL field: extended RCODE, version, then the flags, DO first.
    let dnssec_ok = msg[i + 7] & 0x80 != 0;
    if version != 0 {
        return Parsed::Fallback;
    }
    let rdlen = u16::from_be_bytes([msg[i + 9], msg[i + 10]]) as usize;
    i += 11;
    if i + rdlen != msg.len() {
        return Parsed::Fallback;
    }
    let mut edns = Edns {
        payload,
        dnssec_ok,
        ecs: None,
    };
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
    /// The query's DO bit, copied (RFC 3225 section 3).
    pub dnssec_ok: bool,
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
    let [an, ns, ar] = sections;
    encode_sections(
        out,
        h,
        question,
        qname,
        [(an, &[]), (ns, &[]), (ar, &[])],
        opt,
        limit,
    );
}

/// `encode` with each section's model records followed by records in wire terms (what the
/// DNSSEC signer adds: RRSIG, NSEC, DNSKEY, CDS, CDNSKEY, whose RDATA holds no compressible
/// names and is written as it is).
#[allow(clippy::too_many_arguments)]
pub fn encode_sections(
    out: &mut Vec<u8>,
    h: &Header,
    question: &[u8],
    qname: &Name,
    sections: [(&[Rr], &[WireRr]); 3],
    opt: Option<OptOut>,
    limit: usize,
) {
    let count = |(model, wire): (&[Rr], &[WireRr])| model.len() + wire.len();
    let mut e = Encoder::new(out);
    e.header(
        h,
        false,
        [
            count(sections[0]),
            count(sections[1]),
            count(sections[2]) + usize::from(opt.is_some()),
        ],
    );
    e.question(question);
    for (model, wire) in sections {
        for rr in model {
            e.record(rr, qname);
        }
        for rr in wire {
            e.wire_record(rr, qname);
        }
    }
    if let Some(o) = opt {
        write_opt(e.out, o);
    }
    if e.out.len() > limit {
        out.clear();
        let mut e = Encoder::new(out);
        e.header(h, true, [0, 0, usize::from(opt.is_some())]);
        e.out.extend_from_slice(question);
        if let Some(o) = opt {
            write_opt(e.out, o);
        }
    }
}

/// Where the name that starts at `at` in `msg` ends: after its root label or its first
/// compression pointer (not followed). `None` when it runs past the message or a length byte is
/// neither a label (at most 63) nor a pointer. The one name skipper of the DNS path: response
/// rate limiting walks responses with it, the full path queries.
pub fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        match *msg.get(at)? {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return (at + 2 <= msg.len()).then_some(at + 2),
            l if l > 63 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

/// Appends the OPT record `o` (as `encode` writes it) to `out`.
pub fn write_opt(out: &mut Vec<u8>, o: OptOut) {
    // Built on the stack and appended at once: the record is at most 11 + 8 + 16 octets.
    let mut rr = [0u8; 11 + 8 + 16];
    // Owner: the root (0); TYPE OPT; CLASS: the payload size.
    rr[1..3].copy_from_slice(&TYPE_OPT.to_be_bytes());
    rr[3..5].copy_from_slice(&o.payload.to_be_bytes());
    // TTL: extended RCODE 0, version 0, flags: DO as the query had it.
    rr[7] = if o.dnssec_ok { 0x80 } else { 0 };
    let len = match o.ecs {
        // RDLENGTH 0.
        None => 11,
        Some((ecs, scope)) => {
            let (family, octets): (u16, [u8; 16]) = match ecs.addr {
                IpAddr::V4(v4) => {
                    let mut octets = [0u8; 16];
                    octets[..4].copy_from_slice(&v4.octets());
                    (1, octets)
                }
                IpAddr::V6(v6) => (2, v6.octets()),
            };
            let n = ecs_address_len(ecs);
            let optlen = 4 + n;
            rr[9..11].copy_from_slice(&((4 + optlen) as u16).to_be_bytes());
            rr[11..13].copy_from_slice(&OPT_ECS.to_be_bytes());
            rr[13..15].copy_from_slice(&(optlen as u16).to_be_bytes());
            rr[15..17].copy_from_slice(&family.to_be_bytes());
            rr[17] = ecs.source;
            rr[18] = scope;
            rr[19..19 + n].copy_from_slice(&octets[..n]);
            19 + n
        }
    };
    out.extend_from_slice(&rr[..len]);
}

/// The length of the OPT record `o` in bytes (as `write_opt` writes it).
pub fn opt_len(o: OptOut) -> usize {
    let ecs = o.ecs.map_or(0, |(ecs, _)| 4 + 4 + ecs_address_len(ecs));
    11 + ecs
}

/// The address octets an ECS option carries: the source prefix's, rounded up to whole octets.
/// The parser accepted only prefixes within the address; min() keeps this total.
fn ecs_address_len(ecs: Ecs) -> usize {
    usize::from(ecs.source).div_ceil(8).min(16)
}

/// The question section for `name` (lower-case, dotted; empty for the root) and `qtype`,
/// class IN.
pub fn question(name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 6);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
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

/// How many label positions the compression table keeps; names past it are written in full.
const MAX_LABELS: usize = 64;

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    /// Where a label starts in `out`, for every label written so far (the question's first):
    /// each is a suffix a later name may point at. Matching compares bytes exactly, so a label
    /// the client spelled in upper case is never pointed at from one of our (lower-case) names.
    labels: [u16; MAX_LABELS],
    len: usize,
}

impl<'a> Encoder<'a> {
    fn new(out: &'a mut Vec<u8>) -> Encoder<'a> {
        out.clear();
        Encoder {
            out,
            labels: [0; MAX_LABELS],
            len: 0,
        }
    }

    /// Writes the question and records its labels for compression.
    fn question(&mut self, question: &[u8]) {
        let base = self.out.len();
        self.out.extend_from_slice(question);
        let mut off = 0usize;
        while let Some(&len) = question.get(off) {
            if len == 0 || len & 0xc0 != 0 || off + 1 + len as usize > question.len() {
                break;
            }
            self.remember(base + off);
            off += 1 + len as usize;
        }
    }

    fn remember(&mut self, at: usize) {
        if self.len < MAX_LABELS && at < 0x3fff {
            self.labels[self.len] = at as u16;
            self.len += 1;
        }
    }

    /// A remembered position where `label` followed by `tail` is written. The first label is
    /// compared in place, so most candidates are rejected by their length byte.
    fn find(&self, label: &str, tail: &str) -> Option<u16> {
        let label = label.as_bytes();
        self.labels[..self.len].iter().copied().find(|&at| {
            let at = usize::from(at);
            self.out.get(at) == Some(&(label.len() as u8))
                && self.out.get(at + 1..at + 1 + label.len()) == Some(label)
                && if tail.is_empty() {
                    self.out.get(at + 1 + label.len()) == Some(&0)
                } else {
                    self.spells(at + 1 + label.len(), tail)
                }
        })
    }

    /// Whether the name written at `at` (labels, ending in a zero or a pointer) spells `name`
    /// (lower-case, dotted, not empty).
    fn spells(&self, mut at: usize, name: &str) -> bool {
        let out = &self.out[..];
        let mut rest = Some(name.as_bytes());
        // Pointers only go backwards in what we write, but bound the walk all the same.
        for _ in 0..128 {
            let Some(&len) = out.get(at) else {
                return false;
            };
            if len & 0xc0 == 0xc0 {
                let Some(&low) = out.get(at + 1) else {
                    return false;
                };
                at = (usize::from(len & 0x3f) << 8) | usize::from(low);
                continue;
            }
            let Some(r) = rest else {
                return len == 0;
            };
            if len == 0 {
                return false;
            }
            let (label, tail) = match r.iter().position(|&b| b == b'.') {
                Some(i) => (&r[..i], Some(&r[i + 1..])),
                None => (r, None),
            };
            if out.get(at + 1..at + 1 + len as usize) != Some(label) {
                return false;
            }
            rest = tail;
            at += 1 + len as usize;
        }
        false
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
        let mut rest = name;
        while !rest.is_empty() {
            let (label, tail) = rest.split_once('.').unwrap_or((rest, ""));
            if compress && let Some(at) = self.find(label, tail) {
                self.out.extend_from_slice(&(0xc000 | at).to_be_bytes());
                return;
            }
            let here = self.out.len();
            self.remember(here);
            self.out.push(label.len() as u8);
            self.out.extend_from_slice(label.as_bytes());
            rest = tail;
        }
        self.out.push(0);
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

    /// A record in wire terms: the owner as `record` writes it, the RDATA as it is.
    fn wire_record(&mut self, rr: &WireRr, qname: &Name) {
        if &rr.name == qname {
            self.out.extend_from_slice(&0xc00cu16.to_be_bytes());
        } else {
            self.name(rr.name.as_str(), true);
        }
        self.out.extend_from_slice(&rr.rtype.to_be_bytes());
        self.out.extend_from_slice(&1u16.to_be_bytes());
        self.out.extend_from_slice(&rr.ttl.to_be_bytes());
        // RDATA of the signer's types is far below 64 KiB (a signature, a key, a type bitmap).
        let rdata = &rr.rdata[..rr.rdata.len().min(usize::from(u16::MAX))];
        self.out
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.out.extend_from_slice(rdata);
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

    /// Issue 12: RFC 3225 section 3, the DO bit is copied into the response whether or not we
    /// sign; an OPT record with no options (the common case) must parse too.
    #[test]
    fn the_do_bit_is_read_and_written_back() {
        for dnssec_ok in [false, true] {
            let mut m = Message::new(7, MessageType::Query, OpCode::Query);
            m.add_query(HQuery::query(
                HName::from_ascii("a.example.com.").unwrap(),
                HType::A,
            ));
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
            m.edns = Some(e);
            let q = m.to_vec().unwrap();
            let mut name = String::new();
            let Parsed::Lean(p) = parse(&q, &mut name) else {
                panic!("not lean")
            };
            let edns = p.edns.unwrap();
            assert_eq!(edns.dnssec_ok, dnssec_ok);
            let h = Header {
                id: p.id,
                rd: p.rd,
                cd: p.cd,
                aa: true,
                rcode: 0,
            };
            let opt = OptOut {
                payload: 1232,
                dnssec_ok: edns.dnssec_ok,
                ecs: None,
            };
            let mut out = Vec::new();
            let qname = Name::from_lower(&name);
            encode(
                &mut out,
                &h,
                p.question,
                &qname,
                [&[], &[], &[]],
                Some(opt),
                512,
            );
            let r = Message::from_vec(&out).unwrap();
            assert_eq!(r.edns.unwrap().flags().dnssec_ok, dnssec_ok);
        }
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
                dnssec_ok: false,
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
            dnssec_ok: false,
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

    #[test]
    fn every_octet_of_a_question_name_is_read_as_the_table_says() {
        // Each octet value in each position of a three-label name: the lean parser keeps the
        // name (lower-cased as the table says) exactly when the table has the octet.
        for b in 0..=255u8 {
            for at in 0..7 {
                let mut labels: Vec<Vec<u8>> = vec![b"aB".to_vec(), b"c-d".to_vec(), b"E".to_vec()];
                let flat: Vec<(usize, usize)> = labels
                    .iter()
                    .enumerate()
                    .flat_map(|(l, label)| (0..label.len()).map(move |o| (l, o)))
                    .collect();
                let (l, o) = flat[at % flat.len()];
                labels[l][o] = b;
                let mut msg = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
                for label in &labels {
                    msg.push(label.len() as u8);
                    msg.extend_from_slice(label);
                }
                msg.extend_from_slice(&[0, 0, 1, 0, 1]);
                let mut name = String::from("left over");
                let parsed = parse(&msg, &mut name);
                let spelled: Option<Vec<String>> = labels
                    .iter()
                    .map(|label| {
                        label
                            .iter()
                            .map(|&c| match NAME_OCTET[usize::from(c)] {
                                0 => None,
                                c => Some(char::from(c)),
                            })
                            .collect::<Option<String>>()
                    })
                    .collect();
                match spelled {
                    Some(labels) => {
                        assert!(matches!(parsed, Parsed::Lean(_)), "octet {b} at {at}");
                        assert_eq!(name, labels.join("."), "octet {b} at {at}");
                    }
                    None => assert!(matches!(parsed, Parsed::Fallback), "octet {b} at {at}"),
                }
            }
        }
    }

    #[test]
    fn compressed_names_decode_to_what_was_written_and_keep_our_case() {
        // The client spelled "Example" in upper case: our lower-case names may point at "com"
        // but never at "Example.com".
        let q = query("www.Example.com.", HType::A, None);
        let mut name = String::new();
        let Parsed::Lean(p) = parse(&q, &mut name) else {
            panic!()
        };
        let qname = Name::from_lower(&name);
        let n = |s: &str| Name::parse(s).unwrap();
        let rr = |owner: &str, data| Rr {
            name: n(owner),
            ttl: 60,
            data,
        };
        let records = vec![
            rr("example.com", RData::Ns(n("ns1.example.com"))),
            rr("example.com", RData::Ns(n("ns2.example.com"))),
            rr("example.com", RData::Ns(n("ns.other.org"))),
            rr(
                "example.com",
                RData::Mx {
                    preference: 10,
                    exchange: n("mail.other.org"),
                },
            ),
            rr(
                "example.com",
                RData::Soa(crate::zone::Soa {
                    mname: n("ns1.example.com"),
                    rname: n("hostmaster.example.com"),
                    serial: 1,
                    refresh: 2,
                    retry: 3,
                    expire: 4,
                    minimum: 5,
                }),
            ),
        ];
        let h = Header {
            id: p.id,
            rd: false,
            cd: false,
            aa: true,
            rcode: 0,
        };
        let mut out = Vec::new();
        encode(
            &mut out,
            &h,
            p.question,
            &qname,
            [&records, &[], &[]],
            None,
            4096,
        );
        let m = Message::from_vec(&out).unwrap();
        let text: Vec<String> = m.answers.iter().map(|r| r.to_string()).collect();
        assert_eq!(m.queries[0].name().to_string(), "www.Example.com.");
        for (got, want) in text.iter().zip([
            "example.com. 60 IN NS ns1.example.com.",
            "example.com. 60 IN NS ns2.example.com.",
            "example.com. 60 IN NS ns.other.org.",
            "example.com. 60 IN MX 10 mail.other.org.",
            "example.com. 60 IN SOA ns1.example.com. hostmaster.example.com. 1 2 3 4 5",
        ]) {
            assert_eq!(got, want);
        }
        assert_eq!(text.len(), 5);
        // Written out in full the names take 165 octets; compressed, "example.com" is written
        // once and "other.org" once.
        let full = 12 + 21 + 5 * 23 + 17 + 17 + 14 + 2 + 16 + 2 + 17 + 24 + 20;
        assert!(
            out.len() < full - 100,
            "{} octets, not compressed",
            out.len()
        );
    }
}
