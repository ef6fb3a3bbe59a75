//! The DNS frontend: the only module that speaks hickory-server. It turns a request into a
//! `(name, type)` question, calls `answer::answer` once, and writes the response, taking care of
//! what the protocol demands around it (EDNS, truncation, opcodes, FORMERR).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, SOA, SRV, TXT};
use hickory_server::proto::rr::{self, DNSClass, Record, RecordType as HRecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::answer::{self, Client, QType, Rcode};
use crate::geo::{self, Locator, NoLocation};
use crate::model::{Name, RData, RecordType, Rr};
use crate::state::Snapshots;

/// The UDP payload size we advertise and never exceed: the DNS Flag Day 2020 value, which avoids
/// IP fragmentation on virtually every path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// How long an idle TCP connection is kept open between queries.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket receive buffer: enough to ride out bursts (the kernel default drops packets under load).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// The request handler registered with hickory's `Server`.
pub struct Handler {
    snapshots: Arc<Snapshots>,
    rotation: AtomicUsize,
}

impl Handler {
    pub fn new(snapshots: Arc<Snapshots>) -> Handler {
        Handler {
            snapshots,
            rotation: AtomicUsize::new(0),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let mut resp_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            e
        });
        let ecs = match request
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
        {
            Some(EdnsOption::Subnet(cs)) => Some(*cs),
            _ => None,
        };
        let ecs_ok = ecs
            .as_ref()
            .is_none_or(|cs| ecs_is_valid(cs, ecs_option_len(request.as_slice())));

        let error = if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            // RFC 6891 section 6.1.3: we speak EDNS version 0 only.
            Some(ResponseCode::BADVERS)
        } else if request.queries.len() != 1 || !ecs_ok {
            // RFC 7871 sections 6 and 7.1.2: a malformed ECS option (prefix longer than the
            // address, too few or too many address bytes, address bits set beyond the prefix)
            // gets FORMERR.
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        if let Some(code) = error {
            meta.response_code = code;
            let builder = MessageResponseBuilder::new(&request.queries, resp_edns.as_ref());
            let msg = builder.build_no_records(meta);
            return send(&mut response, msg, meta).await;
        }

        let query = &request.queries.queries()[0];
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, HRecordType::AXFR | HRecordType::IXFR)
        {
            meta.response_code = ResponseCode::Refused;
            let builder = MessageResponseBuilder::new(&request.queries, resp_edns.as_ref());
            let msg = builder.build_no_records(meta);
            return send(&mut response, msg, meta).await;
        }

        let qname = model_name(query.name());
        let zones = self.snapshots.zones.load();
        let geo = self.snapshots.geo.load();
        let locator: &dyn Locator = match geo.as_deref() {
            Some(db) => db,
            None => &NoLocation,
        };
        // ECS with a zero source prefix carries no client information (RFC 7871 section 7.1.2):
        // answer for the resolver's own address.
        let (addr, ecs_prefix) = match &ecs {
            Some(cs) if cs.source_prefix() > 0 => (cs.addr(), Some(cs.source_prefix())),
            _ => (request.src().ip().to_canonical(), None),
        };
        let health = self.snapshots.health.load();
        let client = Client {
            addr,
            ecs_prefix,
            locator,
            health: &**health,
            rotation: self.rotation.fetch_add(1, Ordering::Relaxed),
        };
        let ans = answer::answer(&zones, &qname, to_qtype(qtype), &client);
        if let (Some(cs), Some(e)) = (&ecs, resp_edns.as_mut()) {
            // Echo family, source prefix and address; the scope says how much of the address
            // the answer depended on (0 for answers that do not depend on it).
            let scope = if cs.source_prefix() == 0 {
                0
            } else {
                ans.scope
            };
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                cs.addr(),
                cs.source_prefix(),
                scope,
            )));
        }
        let builder = MessageResponseBuilder::new(&request.queries, resp_edns.as_ref());

        meta.authoritative = ans.authoritative;
        meta.response_code = match ans.rcode {
            Rcode::NoError => ResponseCode::NoError,
            Rcode::NxDomain => ResponseCode::NXDomain,
            Rcode::Refused => ResponseCode::Refused,
            Rcode::ServFail => ResponseCode::ServFail,
        };

        // Owner names equal to the question keep the client's spelling (0x20 case).
        let original = query.original().name();
        let to_record = |rr: &Rr| to_record(rr, &qname, original);
        let answers: Vec<Record> = ans.answers.iter().map(to_record).collect();
        let authority: Vec<Record> = ans.authority.iter().map(to_record).collect();
        let additional: Vec<Record> = ans.additional.iter().map(to_record).collect();

        if request.protocol() == hickory_server::net::xfer::Protocol::Udp {
            let limit = resp_edns.as_ref().map_or(512, |e| e.max_payload()) as usize;
            let bound = 12
                + query.original().name().len()
                + 6
                + resp_edns.as_ref().map_or(0, |_| 11)
                + ans
                    .answers
                    .iter()
                    .chain(&ans.authority)
                    .chain(&ans.additional)
                    .map(Rr::wire_len)
                    .sum::<usize>();
            // Only when the uncompressed size could exceed the limit is it worth a trial encoding.
            let sections = [&answers[..], &authority[..], &additional[..]];
            if bound > limit && !fits(&request.queries, resp_edns.as_ref(), meta, sections, limit) {
                // RFC 6891 section 7: a truncated response still carries the OPT record, so send
                // header, question and OPT only; the client retries over TCP.
                meta.truncation = true;
                let msg = builder.build_no_records(meta);
                return send(&mut response, msg, meta).await;
            }
        }

        let msg = builder.build(meta, &answers, &authority, [], &additional);
        send(&mut response, msg, meta).await
    }
}

/// Whether the full response fits in `limit` bytes once compressed.
fn fits(
    queries: &Queries,
    edns: Option<&Edns>,
    meta: Metadata,
    [answers, authority, additional]: [&[Record]; 3],
    limit: usize,
) -> bool {
    let mut buf = Vec::with_capacity(limit);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit as u16);
    let trial =
        MessageResponseBuilder::new(queries, edns).build(meta, answers, authority, [], additional);
    match trial.destructive_emit(&mut encoder) {
        Ok(info) => !info.truncation,
        Err(_) => false,
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    meta: Metadata,
) -> ResponseInfo {
    match response.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "sending a response failed");
            ResponseInfo::from(Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// RFC 7871 section 6: the source prefix fits the family, the address has exactly
/// ceil(prefix / 8) bytes (`option_len` is the option's length as sent, when known) and no
/// address bit is set beyond the prefix.
fn ecs_is_valid(cs: &ClientSubnet, option_len: Option<usize>) -> bool {
    let bits = if cs.addr().is_ipv4() { 32 } else { 128 };
    let expected_len = 4 + usize::from(cs.source_prefix()).div_ceil(8);
    cs.source_prefix() <= bits
        && option_len.is_none_or(|len| len == expected_len)
        && geo::mask(cs.addr(), cs.source_prefix()) == cs.addr()
}

/// The length of the first ECS option in a wire-format query. hickory's parsed option cannot
/// tell: it reads the ceil(prefix / 8) address bytes it needs and ignores any beyond them.
fn ecs_option_len(msg: &[u8]) -> Option<usize> {
    let u16_at = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *msg.get(at)?,
            *msg.get(at + 1)?,
        ])))
    };
    // Skips a name (labels, ending in a root label or a compression pointer).
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *msg.get(at)?;
            match len {
                0 => return Some(at + 1),
                l if l & 0xc0 == 0xc0 => return Some(at + 2),
                l => at += 1 + usize::from(l),
            }
        }
    };
    let mut at = 12;
    for _ in 0..u16_at(4)? {
        at = skip_name(at)? + 4;
    }
    let records = u16_at(6)? + u16_at(8)? + u16_at(10)?;
    for _ in 0..records {
        at = skip_name(at)?;
        let (rtype, rdlen) = (u16_at(at)?, u16_at(at + 8)?);
        let rdata = at + 10;
        if rtype == 41 {
            let mut opt = rdata;
            while opt + 4 <= rdata + rdlen {
                let (code, len) = (u16_at(opt)?, u16_at(opt + 2)?);
                if code == 8 {
                    return Some(len);
                }
                opt += 4 + len;
            }
        }
        at = rdata + rdlen;
    }
    None
}

fn to_qtype(t: HRecordType) -> QType {
    match t {
        HRecordType::A => QType::Known(RecordType::A),
        HRecordType::AAAA => QType::Known(RecordType::Aaaa),
        HRecordType::NS => QType::Known(RecordType::Ns),
        HRecordType::CNAME => QType::Known(RecordType::Cname),
        HRecordType::SOA => QType::Known(RecordType::Soa),
        HRecordType::MX => QType::Known(RecordType::Mx),
        HRecordType::TXT => QType::Known(RecordType::Txt),
        HRecordType::SRV => QType::Known(RecordType::Srv),
        HRecordType::CAA => QType::Known(RecordType::Caa),
        HRecordType::ANY => QType::Any,
        other => QType::Other(u16::from(other)),
    }
}

/// The question name as the model spells names: lower-case labels joined by dots. Labels are
/// read as octets, not through hickory's `Display`, which turns `xn--` labels into Unicode and
/// writes a dot inside a label as `\.`, which the model's suffix and parent logic reads as a
/// label boundary. An octet no zone name can hold is written `\DDD`, so such a label matches
/// no record and never splits into two.
fn model_name(name: &rr::LowerName) -> Name {
    use std::fmt::Write;
    let mut text = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        for &b in label {
            match b.to_ascii_lowercase() {
                c @ (b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'*') => text.push(char::from(c)),
                _ => {
                    // Writing to a String cannot fail.
                    let _ = write!(text, "\\{b:03}");
                }
            }
        }
    }
    Name::from_lower(&text)
}

fn to_name(name: &Name) -> rr::Name {
    // Model names are validated at load time, so this only fails on a bug; the root stands in.
    rr::Name::from_ascii(name.to_string()).unwrap_or_else(|_| rr::Name::root())
}

fn to_record(rr: &Rr, qname: &Name, original: &rr::Name) -> Record {
    let owner = if &rr.name == qname {
        original.clone()
    } else {
        to_name(&rr.name)
    };
    let data = match &rr.data {
        RData::A(v4) => rr::RData::A(A(*v4)),
        RData::Aaaa(v6) => rr::RData::AAAA(AAAA(*v6)),
        RData::Cname(n) => rr::RData::CNAME(CNAME(to_name(n))),
        RData::Ns(n) => rr::RData::NS(NS(to_name(n))),
        RData::Mx {
            preference,
            exchange,
        } => rr::RData::MX(MX::new(*preference, to_name(exchange))),
        RData::Txt(strings) => rr::RData::TXT(TXT::new(strings.clone())),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => rr::RData::SRV(SRV::new(*priority, *weight, *port, to_name(target))),
        RData::Caa {
            critical,
            tag,
            value,
        } => {
            // Written as raw RDATA (RFC 8659 section 4.1) so any tag and value pass unchanged.
            let mut bytes = Vec::with_capacity(2 + tag.len() + value.len());
            bytes.push(if *critical { 0x80 } else { 0 });
            bytes.push(tag.len() as u8);
            bytes.extend_from_slice(tag.as_bytes());
            bytes.extend_from_slice(value.as_bytes());
            rr::RData::Unknown {
                code: HRecordType::CAA,
                rdata: NULL::with(bytes),
            }
        }
        RData::Soa(soa) => rr::RData::SOA(SOA::new(
            to_name(&soa.mname),
            to_name(&soa.rname),
            soa.serial,
            soa.refresh as i32,
            soa.retry as i32,
            soa.expire as i32,
            soa.minimum,
        )),
    };
    Record::from_rdata(owner, rr.ttl, data)
}

/// The bound addresses of a running DNS frontend.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// Binds UDP and TCP on `addr`. With port 0 both get the same, kernel-chosen port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last_err = None;
    for _ in 0..20 {
        let udp = udp_socket(addr)?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Serves DNS on the given sockets until `shutdown` is cancelled.
pub async fn serve(
    snapshots: Arc<Snapshots>,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut server = Server::new(Handler::new(snapshots));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, 65_535);
    tokio::select! {
        result = server.block_until_done() => {
            result.map_err(|e| anyhow::anyhow!("DNS server stopped: {e}"))
        }
        _ = shutdown.cancelled() => {
            server.shutdown_gracefully().await.map_err(|e| anyhow::anyhow!("DNS shutdown: {e}"))
        }
    }
}
