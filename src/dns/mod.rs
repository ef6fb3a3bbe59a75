//! The DNS frontend: the only module that speaks hickory-server. It turns a request into a
//! `(name, type)` question, calls `answer::answer` once, and writes the response, taking care of
//! what the protocol demands around it (EDNS, truncation, opcodes, FORMERR).
//!
//! Two paths share `answer`: the common query (one question, class IN, opcode QUERY, EDNS 0 with
//! or without ECS) is parsed and written by the lean codec in `dns/wire.rs`, received and sent
//! in batches by `dns/udp.rs`; everything else goes through hickory-server's parser and
//! response builder (`Handler` as a `RequestHandler`). TCP is served by `dns/tcp.rs` (with
//! connection limits and timeouts; `dns/connections.rs` decides which connection makes room for
//! a new one), and UDP responses pass response rate limiting (`dns/limit.rs`) on their way out.
//! A node may listen on several addresses: each gets its own sockets, and all of them share one
//! handler, one rate limiter and one TCP connection table.

pub mod answer;
mod connections;
mod limit;
pub mod prepared;
mod tcp;
mod udp;
// Visible to the crate for `fuzzing`, which checks the parser on its own.
pub(crate) mod wire;

pub use tcp::TcpLimits;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, SOA, SRV, TXT};
use hickory_server::proto::rr::{self, DNSClass, Record, RecordType as HRecordType};
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dns::answer::{Client, ClientClass, QType, Rcode};
use crate::dns::prepared::Found;
use crate::dnssec;
use crate::geo;
use crate::state::Snapshots;
use crate::telemetry::metrics::{Metrics, NO_ZONE};
use crate::zone::{Name, RData, RecordType, Rr, Zone};

/// What a response is, taken from the answer the handler built (never read back from the
/// encoded bytes): what response rate limiting decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub shape: Shape,
    pub qtype: u16,
    /// The zone the question fell in, if any.
    pub zone: Option<ZoneFacts>,
    /// The client subnet (EDNS Client Subnet address) the answer was tailored to, when its
    /// scope is not 0.
    pub subnet: Option<IpAddr>,
}

/// What response rate limiting needs of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneFacts {
    pub limits: crate::rrl::Limits,
    /// The apex's length in bytes: the apex ends the question name.
    pub apex_len: usize,
}

/// A response's kind, as far as rate limiting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Records, NODATA, or a service's all-down answer.
    Answer,
    NxDomain,
    Referral,
    /// REFUSED, SERVFAIL, FORMERR, NOTIMP, BADVERS.
    Error,
}

impl Facts {
    fn error(qtype: Option<u16>) -> Facts {
        Facts {
            shape: Shape::Error,
            qtype: qtype.unwrap_or(0),
            zone: None,
            subnet: None,
        }
    }

    fn of(
        ans: &answer::Answer,
        zone: Option<&Zone>,
        qtype: u16,
        ecs_addr: Option<IpAddr>,
    ) -> Facts {
        let shape = match (ans.rcode, ans.outcome) {
            (Rcode::NoError, answer::Outcome::Referral) => Shape::Referral,
            (Rcode::NoError, _) => Shape::Answer,
            (Rcode::NxDomain, _) => Shape::NxDomain,
            (Rcode::Refused | Rcode::ServFail, _) => Shape::Error,
        };
        Facts {
            shape,
            qtype,
            zone: zone.map(|z| ZoneFacts {
                limits: z.rrl,
                apex_len: z.apex.as_str().len(),
            }),
            subnet: ecs_addr.filter(|_| ans.scope > 0),
        }
    }
}

/// The UDP payload size we advertise and never exceed: the DNS Flag Day 2020 value, which avoids
/// IP fragmentation on virtually every path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Socket receive buffer: enough to ride out bursts (the kernel default drops packets under load).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Answers DNS messages: the lean path for common queries, hickory's for the rest.
pub struct Handler {
    snapshots: Arc<Snapshots>,
    rotation: AtomicUsize,
    /// Signs answers of signed zones (issue 15), on both paths.
    signer: dnssec::Signer,
}

impl Handler {
    /// Sets the rotation counter (for `fuzzing`, which answers one query several ways).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn set_rotation(&self, rotation: usize) {
        self.rotation.store(rotation, Ordering::Relaxed);
    }

    pub fn new(snapshots: Arc<Snapshots>) -> Handler {
        Handler {
            signer: dnssec::Signer::new(snapshots.metrics.clone()),
            snapshots,
            rotation: AtomicUsize::new(0),
        }
    }

    /// Answers one raw message into `out`; `None` when nothing is to be sent, else what the
    /// response is. `name` is scratch space for the question name, and holds it (lower case)
    /// afterwards.
    pub fn respond(
        &self,
        msg: &[u8],
        src: SocketAddr,
        tcp: bool,
        out: &mut Vec<u8>,
        name: &mut String,
    ) -> Option<Facts> {
        let started = std::time::Instant::now();
        let mut view = self.view_unprepared();
        let facts = self.respond_with(&mut view, msg, src, tcp, out, name)?;
        self.snapshots.metrics.observe_queries(started.elapsed(), 1);
        Some(facts)
    }

    /// The snapshots as one thread sees them, kept between queries (checking that a cached
    /// snapshot is still current is one atomic load, where loading it from the shared
    /// `ArcSwap` each time costs three for every query), with the thread's prepared answers
    /// (`dns::prepared`, bounded by `prepared::CAPACITY_BYTES`).
    pub fn view(&self) -> View<'_> {
        View {
            prepared: Some(prepared::Prepared::default()),
            ..self.view_unprepared()
        }
    }

    /// A view that keeps no prepared answers: for one query (TCP), and to measure without them.
    pub fn view_unprepared(&self) -> View<'_> {
        View {
            zones: arc_swap::Cache::new(&self.snapshots.zones),
            geo: arc_swap::Cache::new(&self.snapshots.geo),
            health: arc_swap::Cache::new(&self.snapshots.health),
            prepared: None,
        }
    }

    /// `respond` for a thread that keeps a `View`. Every answered query (`Some`) is counted in
    /// the query counters; its latency is the caller's to observe
    /// (`Metrics::observe_queries`: the UDP loop times a whole batch with one clock reading).
    pub fn respond_with(
        &self,
        view: &mut View<'_>,
        msg: &[u8],
        src: SocketAddr,
        tcp: bool,
        out: &mut Vec<u8>,
        name: &mut String,
    ) -> Option<Facts> {
        match wire::parse(msg, name) {
            wire::Parsed::Drop => None,
            wire::Parsed::Fallback => self.respond_full(msg, src, tcp, out, name),
            wire::Parsed::BadEcs(q) => {
                self.record_error(
                    ResponseCode::FormErr,
                    Some(HRecordType::from(q.qtype)),
                    true,
                );
                // A malformed ECS option is not echoed.
                let opt = q.edns.map(|e| reply_opt(e, None));
                wire::encode_error(out, &q, 1, opt);
                Some(Facts::error(Some(q.qtype)))
            }
            wire::Parsed::Lean(q) => self.respond_lean(view, &q, src, tcp, out, name),
        }
    }

    /// The lean path: the prepared answer for the question and the client's class if there is
    /// one (most queries end there, without a walk through the zone); else route the question,
    /// answer it, and prepare the answer for the next query of its class.
    #[allow(clippy::too_many_arguments)]
    fn respond_lean(
        &self,
        view: &mut View<'_>,
        q: &wire::Query<'_>,
        src: SocketAddr,
        tcp: bool,
        out: &mut Vec<u8>,
        name: &str,
    ) -> Option<Facts> {
        let zones = view.zones.load();
        let geo = view.geo.load();
        let health = view.health.load();
        let locator = geo::locator(geo.as_deref());
        let ecs = q.edns.and_then(|e| e.ecs);
        // ECS with a zero source prefix carries no client information (RFC 7871
        // section 7.1.2): answer for the resolver's own address.
        let (addr, ecs_prefix) = match ecs {
            Some(e) if e.source > 0 => (e.addr, Some(e.source)),
            _ => (src.ip().to_canonical(), None),
        };
        let mut client = Client {
            addr,
            ecs_prefix,
            locator,
            health: &**health,
            rotation: self.rotation.fetch_add(1, Ordering::Relaxed),
        };
        let opt = |scope: u8| q.edns.map(|e| reply_opt(e, Some(scope)));
        let limit = match (tcp, opt(0)) {
            (true, _) => usize::from(u16::MAX),
            (false, Some(o)) => usize::from(o.payload),
            (false, None) => 512,
        };
        let ecs_addr = ecs.filter(|e| e.source > 0).map(|e| e.addr);
        let facts = |entry: &prepared::Entry, scope: u8| Facts {
            subnet: ecs_addr.filter(|_| scope > 0),
            ..entry.facts
        };
        let metrics = &self.snapshots.metrics;
        let now_s = || crate::clock::now_ms() / 1000;
        // DNSSEC (issue 15): DO=1 to a signed zone gets the signed answer, prepared like any
        // other under a key of its own. (DNSKEY, CDS and CDNSKEY at a signed apex are answered
        // also for DO=0: `Signer::secure` decides, whatever the key.)
        let dnssec_ok = q.edns.is_some_and(|e| e.dnssec_ok);
        // Prepared answers first: most queries end here, without a walk through the zone. The
        // question as the cache knows it serves a miss's insert below too.
        let mut prepared_question = None;
        if let Some(prepared) = view.prepared.as_mut() {
            prepared.use_snapshots(zones, health, geo);
            let signed = dnssec_ok
                && prepared.signing()
                && zones.find_str(name).is_some_and(|z| z.dnssec.is_some());
            let question = prepared.question(name, q.qtype, signed);
            prepared_question = Some(question);
            let hit = match prepared.find(question, now_s) {
                Found::Answer(entry) => Some((entry, 0)),
                // `Unprepared` (a ramp) is never kept: a miss.
                Found::Service(zone, service) => {
                    let (class, scope) = answer::service_class(zone, service, &client);
                    prepared.get(question, &class, now_s).map(|e| (e, scope))
                }
                Found::Nothing => None,
            };
            if let Some((entry, class_scope)) = hit {
                let scope = entry.scope.of(class_scope);
                entry.write(out, q, opt(scope), limit);
                metrics.record_prepared(true);
                self.record_entry(entry, q.qtype, ecs.is_some());
                return Some(facts(entry, scope));
            }
        }
        let qname = Name::from_lower(name);
        let qtype = to_qtype(HRecordType::from(q.qtype));
        let route = answer::route(zones, &qname, qtype);
        let (class, class_scope) = answer::client_class(&route, qtype, &client);
        if let ClientClass::Service { step, .. } = class {
            // The answer for the class is the one for its rotation step (`rotation_step`).
            client.rotation = usize::from(step);
        }
        // The service the question leads to, kept so the next query finds it without a walk.
        let service = answer::route_service(&route, qtype).and_then(|(zone, service)| {
            let zone = zones.zones.iter().find(|z| std::ptr::eq(&***z, zone))?;
            Some((zone.clone(), service.clone()))
        });
        let zone = route.zone();
        let ans = answer::answer_route(route, qtype, &client);
        let secured = zone.and_then(|z| {
            let question = dnssec::Question {
                name: &qname,
                qtype: q.qtype,
                dnssec_ok,
            };
            self.signer
                .secure(z, question, dnssec_sections(&ans), now_s())
        });
        let mut entry = prepare(&ans, zone, &qname, name, q.qtype, secured.as_ref());
        if matches!(class, ClientClass::Service { .. }) && ans.scope == class_scope {
            // Every network of the place gets this answer, each with its own scope.
            entry.scope = prepared::Scope::OfClass;
        }
        entry.write(out, q, opt(ans.scope), limit);
        self.record_entry(&entry, q.qtype, ecs.is_some());
        let facts = facts(&entry, ans.scope);
        // An answer that lacks a signature it should carry is sent (as the full path would)
        // but not kept.
        let keep = !secured.as_ref().is_some_and(|s| s.failed);
        if let (Some(prepared), Some(question)) = (view.prepared.as_mut(), prepared_question) {
            if let Some((zone, service)) = service {
                prepared.insert_service(question, zone, service);
            }
            if class != ClientClass::Unprepared && keep {
                metrics.record_prepared(false);
                prepared.insert(question, class, entry);
            }
        }
        Some(facts)
    }

    /// The full path: hickory parses the message and builds the response. (Visible to the crate
    /// for `fuzzing`, which compares the paths.)
    pub(crate) fn respond_full(
        &self,
        msg: &[u8],
        src: SocketAddr,
        tcp: bool,
        out: &mut Vec<u8>,
        name: &mut String,
    ) -> Option<Facts> {
        use hickory_server::net::xfer::Protocol;
        let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
        let request = match Request::from_bytes(msg.to_vec(), src, protocol) {
            Ok(r) => r,
            Err(_) => {
                // The header alone. A query (opcode 0) that does not parse gets FORMERR with
                // RD and CD echoed, as hickory's server does; any other opcode gets NOTIMP with
                // only the ID and opcode copied, as a parsed one does (`handle_full`): what
                // follows its header is not ours to judge.
                let opcode = msg[2] & 0x78;
                let code = if opcode == 0 {
                    ResponseCode::FormErr
                } else {
                    ResponseCode::NotImp
                };
                out.clear();
                out.extend_from_slice(&msg[..2]);
                if opcode == 0 {
                    out.push(0x80 | (msg[2] & 0x01));
                    out.push((msg[3] & 0x10) | 1);
                } else {
                    out.push(0x80 | opcode);
                    out.push(4);
                }
                out.extend_from_slice(&[0; 8]);
                self.record_error(code, None, false);
                return Some(Facts::error(None));
            }
        };
        if request.metadata.message_type == hickory_server::proto::op::MessageType::Response {
            return None;
        }
        let capture = Capture {
            out: Arc::new(Mutex::new(None)),
            udp: !tcp,
        };
        let mut facts = Facts::error(None);
        // Nothing in the handler waits: the capture's send completes at once, so one poll runs
        // it to the end.
        let done = {
            let fut = self.handle_full(&request, capture.clone(), &mut facts, name);
            let mut fut = std::pin::pin!(fut);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            fut.as_mut().poll(&mut cx).is_ready()
        };
        if !done {
            tracing::error!("the full DNS path did not complete in one poll; dropping the query");
            return None;
        }
        match capture.out.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(bytes) => {
                *out = bytes;
                Some(facts)
            }
            None => None,
        }
    }
}

/// Snapshots cached by one thread (see `Handler::view`). A cached snapshot stays alive until the
/// thread next looks: call `refresh` when idle so a replaced zone set is let go.
pub struct View<'a> {
    zones: arc_swap::Cache<&'a arc_swap::ArcSwap<crate::zone::ZoneSet>, Arc<crate::zone::ZoneSet>>,
    geo: arc_swap::Cache<&'a arc_swap::ArcSwapOption<geo::GeoDb>, Option<Arc<geo::GeoDb>>>,
    health: arc_swap::Cache<
        &'a arc_swap::ArcSwap<crate::health::merge::EffectiveHealth>,
        Arc<crate::health::merge::EffectiveHealth>,
    >,
    /// This thread's prepared answers (`None` for a view made for one query).
    prepared: Option<prepared::Prepared>,
}

impl View<'_> {
    /// Brings every cached snapshot up to date, letting go of replaced ones.
    pub fn refresh(&mut self) {
        self.zones.load();
        self.geo.load();
        self.health.load();
    }
}

/// A response handler that keeps the encoded response instead of sending it.
#[derive(Clone)]
struct Capture {
    out: Arc<Mutex<Option<Vec<u8>>>>,
    udp: bool,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let id = response.metadata().id;
        let limit = match (self.udp, response.edns()) {
            (false, _) => u16::MAX,
            (true, Some(e)) => e.max_payload(),
            (true, None) => 512,
        };
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(limit);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                tracing::error!(%error, "encoding a response failed; answering SERVFAIL");
                let mut metadata = Metadata::new(
                    id,
                    hickory_server::proto::op::MessageType::Response,
                    OpCode::Query,
                );
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                buf.clear();
                let mut encoder = BinEncoder::new(&mut buf);
                header
                    .emit(&mut encoder)
                    .map_err(|e| hickory_server::net::NetError::from(e.to_string()))?;
                ResponseInfo::from(header)
            }
        };
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(buf);
        Ok(info)
    }
}

/// The OPT record answering the query's EDNS `e`: our payload size (the client's, within 512 and
/// `MAX_UDP_PAYLOAD`), its DO bit, and its ECS option echoed with `scope` (0 when the source
/// prefix was 0); `None` echoes no ECS.
fn reply_opt(e: wire::Edns, scope: Option<u8>) -> wire::OptOut {
    wire::OptOut {
        payload: e.payload.clamp(512, MAX_UDP_PAYLOAD),
        dnssec_ok: e.dnssec_ok,
        ecs: scope.and_then(|scope| e.ecs.map(|c| (c, if c.source == 0 { 0 } else { scope }))),
    }
}

/// The response to `ans` as a prepared entry: encoded without OPT and without a size limit, for
/// the lower-case question `name`/`qtype` (`prepared::Entry::write` patches in the client's),
/// with what DNSSEC signing made of it (`secured`) when the zone is signed.
fn prepare(
    ans: &answer::Answer,
    zone: Option<&Zone>,
    qname: &Name,
    name: &str,
    qtype: u16,
    secured: Option<&dnssec::Secured>,
) -> prepared::Entry {
    let question = wire::question(name, qtype);
    let header = wire::Header {
        id: 0,
        rd: false,
        cd: false,
        aa: ans.authoritative,
        rcode: match ans.rcode {
            _ if secured.is_some_and(|s| s.replace || s.nxdomain_to_noerror) => 0,
            Rcode::NoError => 0,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::Refused => 5,
        },
    };
    // The signer's records follow the answer's in each section, as on the full path; its
    // DNSKEY, CDS and CDNSKEY answers replace the answer's (a NODATA).
    let none: &[Rr] = &[];
    let (model, added): ([&[Rr]; 3], [&[dnssec::WireRr]; 3]) = match secured {
        None => (
            [&ans.answers, &ans.authority, &ans.additional],
            [&[], &[], &[]],
        ),
        Some(s) => (
            if s.replace {
                [none, none, none]
            } else {
                [&ans.answers, &ans.authority, &ans.additional]
            },
            [&s.answers, &s.authority, &s.additional],
        ),
    };
    let mut bytes = Vec::with_capacity(512);
    wire::encode_sections(
        &mut bytes,
        &header,
        &question,
        qname,
        [
            (model[0], added[0]),
            (model[1], added[1]),
            (model[2], added[2]),
        ],
        None,
        usize::MAX,
    );
    let mut entry = prepared::Entry::new(
        &bytes,
        question.len(),
        prepared::Scope::Fixed(ans.scope),
        Facts::of(ans, zone, qtype, None),
        zone.map(|z| z.apex.arc().clone()),
        rcode_label(ans.rcode),
        ans.service_dc
            .as_ref()
            .map(|(service, dc)| (service.arc().clone(), dc.clone())),
        ans.outcome == answer::Outcome::AllDown,
    );
    entry.fresh_until_s = secured.and_then(|s| s.fresh_until_s);
    entry
}

/// The answer code's sections as DNSSEC signing sees them.
fn dnssec_sections(ans: &answer::Answer) -> dnssec::Sections<'_> {
    dnssec::Sections {
        kind: match ans.outcome {
            answer::Outcome::Answer => dnssec::Kind::Answer,
            answer::Outcome::NoData => dnssec::Kind::NoData,
            answer::Outcome::NxDomain => dnssec::Kind::NxDomain,
            answer::Outcome::Referral => dnssec::Kind::Referral,
            answer::Outcome::Refused | answer::Outcome::AllDown => dnssec::Kind::Other,
        },
        answers: &ans.answers,
        authority: &ans.authority,
        additional: &ans.additional,
    }
}

fn rcode_label(rcode: Rcode) -> &'static str {
    match rcode {
        Rcode::NoError => "NOERROR",
        Rcode::NxDomain => "NXDOMAIN",
        Rcode::Refused => "REFUSED",
        Rcode::ServFail => "SERVFAIL",
    }
}

impl Handler {
    /// Counts the query and its outcome.
    /// Counts a query answered from a prepared entry (or one just prepared).
    fn record_entry(&self, entry: &prepared::Entry, qtype: u16, ecs: bool) {
        let zone = entry.zone.as_ref();
        self.snapshots.metrics.record_prepared_query(
            &entry.counters,
            zone.unwrap_or(&NO_ZONE),
            Metrics::qtype_label(qtype),
            entry.rcode,
            ecs,
            zone.and(entry.service_dc.as_ref()).map(|(s, d)| (s, d)),
            entry.all_down,
        );
    }

    fn record(
        &self,
        zone: Option<&Arc<Zone>>,
        qtype: HRecordType,
        ans: &answer::Answer,
        ecs: bool,
    ) {
        let zone = zone.map(|z| z.apex.arc());
        let m = &self.snapshots.metrics;
        m.record_query(
            zone.unwrap_or(&NO_ZONE),
            Metrics::qtype_label(u16::from(qtype)),
            rcode_label(ans.rcode),
            ecs,
        );
        if let (Some(zone), Some((service, dc))) = (zone, ans.service_dc.as_ref()) {
            m.record_service_answer(
                zone,
                service.arc(),
                dc,
                ans.outcome == answer::Outcome::AllDown,
            );
        }
    }

    /// Counts a query answered before `answer` (FORMERR, NOTIMP, BADVERS, REFUSED for class or
    /// transfer).
    fn record_error(&self, code: ResponseCode, qtype: Option<HRecordType>, ecs: bool) {
        self.snapshots.metrics.record_query(
            &NO_ZONE,
            qtype.map_or("-", |t| Metrics::qtype_label(u16::from(t))),
            match code {
                ResponseCode::FormErr => "FORMERR",
                ResponseCode::NotImp => "NOTIMP",
                ResponseCode::Refused => "REFUSED",
                ResponseCode::BADVERS => "BADVERS",
                _ => "OTHER",
            },
            ecs,
        );
    }
}

impl Handler {
    /// The full path's answer to a parsed request, sent through `response`; `facts` and `name`
    /// say what the response is (for rate limiting), as `respond` does.
    async fn handle_full<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
        facts: &mut Facts,
        name: &mut String,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        let mut resp_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            // RFC 3225 section 3: the DO bit is copied into the response.
            e.set_dnssec_ok(req.flags().dnssec_ok);
            e
        });
        name.clear();
        let first_qtype = request.queries.queries().first().map(|q| q.query_type());
        *facts = Facts::error(first_qtype.map(u16::from));
        if request.metadata.op_code != OpCode::Query {
            // An opcode we do not implement (RFC 1035 section 4.1.1, RFC 8906 section 3.1.4):
            // NOTIMP, copying only the ID and the opcode. What follows the header is the
            // opcode's to define, so no question is echoed, and RD and CD, which belong to
            // queries, are not copied.
            self.record_error(ResponseCode::NotImp, first_qtype, false);
            let mut meta = Metadata::new(
                request.metadata.id,
                hickory_server::proto::op::MessageType::Response,
                request.metadata.op_code,
            );
            meta.response_code = ResponseCode::NotImp;
            let none = no_questions();
            let msg = MessageResponseBuilder::new(&none, resp_edns.as_ref()).build_no_records(meta);
            return send(&mut response, msg, meta).await;
        }
        if question_points_into_header(request.as_slice()) {
            self.record_error(ResponseCode::FormErr, None, false);
            meta.response_code = ResponseCode::FormErr;
            let none = no_questions();
            let msg = MessageResponseBuilder::new(&none, resp_edns.as_ref()).build_no_records(meta);
            return send(&mut response, msg, meta).await;
        }
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

        let error = if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
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
            self.record_error(code, first_qtype, ecs.is_some());
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
            self.record_error(ResponseCode::Refused, Some(qtype), ecs.is_some());
            meta.response_code = ResponseCode::Refused;
            let builder = MessageResponseBuilder::new(&request.queries, resp_edns.as_ref());
            let msg = builder.build_no_records(meta);
            return send(&mut response, msg, meta).await;
        }

        let qname = model_name(query.name());
        name.push_str(qname.as_str());
        let zones = self.snapshots.zones.load();
        let geo = self.snapshots.geo.load();
        let locator = geo::locator(geo.as_deref());
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
        let zone = zones.find(&qname);
        self.record(zone, qtype, &ans, ecs.is_some());
        let ecs_addr = ecs
            .as_ref()
            .filter(|cs| cs.source_prefix() > 0)
            .map(|cs| cs.addr());
        *facts = Facts::of(&ans, zone.map(|z| &**z), u16::from(qtype), ecs_addr);
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
        let mut answers: Vec<Record> = ans.answers.iter().map(to_record).collect();
        let mut authority: Vec<Record> = ans.authority.iter().map(to_record).collect();
        let mut additional: Vec<Record> = ans.additional.iter().map(to_record).collect();

        // --- DNSSEC (issue 15, src/dnssec): RRSIGs and compact denial for a signed zone ---
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let secured = zone.and_then(|z| {
            let q = dnssec::Question {
                name: &qname,
                qtype: u16::from(qtype),
                dnssec_ok,
            };
            self.signer
                .secure(z, q, dnssec_sections(&ans), crate::clock::now_ms() / 1000)
        });
        let mut extra_len = 0;
        if let Some(sec) = &secured {
            if sec.replace {
                answers.clear();
                authority.clear();
                additional.clear();
                meta.response_code = ResponseCode::NoError;
            }
            if sec.nxdomain_to_noerror {
                meta.response_code = ResponseCode::NoError;
            }
            let to_record = |rr: &dnssec::WireRr| wire_record(rr, &qname, original);
            answers.extend(sec.answers.iter().map(to_record));
            authority.extend(sec.authority.iter().map(to_record));
            additional.extend(sec.additional.iter().map(to_record));
            extra_len = sec
                .records()
                .map(|r| r.name.wire_len() + 10 + r.rdata.len())
                .sum::<usize>();
        }
        // --- end DNSSEC ---

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
                    .sum::<usize>()
                + extra_len;
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

/// An empty question section, for responses that echo none.
fn no_questions() -> Queries {
    // Reading zero questions reads nothing, so it cannot fail.
    Queries::read(&mut BinDecoder::new(&[]), 0).expect("no questions")
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
    let skip_name = |at: usize| wire::skip_name(msg, at);
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

/// Whether a question name in `msg` (a message hickory has parsed) leads through a compression
/// pointer into the header. hickory echoes the question section byte for byte, so such a
/// pointer would read the response's header, which differs from the query's: the response would
/// carry another question than the one asked, or one that does not parse (found by fuzzing,
/// `tests/fuzz_regressions/dns_request/crash-6950…`). Pointers into the question section itself
/// are fine: it sits at the same offset in both messages.
fn question_points_into_header(msg: &[u8]) -> bool {
    let Some(&[hi, lo]) = msg.get(4..6) else {
        return false;
    };
    let mut at = 12;
    for _ in 0..u16::from_be_bytes([hi, lo]) {
        // hickory accepted the name, so its pointers all lead backwards and the walk ends; the
        // bound only makes that plain.
        let (mut p, mut end) = (at, None);
        for _ in 0..256 {
            let Some(&len) = msg.get(p) else {
                return false;
            };
            if len & 0xc0 == 0xc0 {
                let Some(&low) = msg.get(p + 1) else {
                    return false;
                };
                end.get_or_insert(p + 2);
                p = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                if p < 12 {
                    return true;
                }
            } else if len == 0 {
                end.get_or_insert(p + 1);
                break;
            } else {
                p += 1 + usize::from(len);
            }
        }
        match end {
            Some(end) => at = end + 4,
            None => return false,
        }
    }
    false
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

/// A record the DNSSEC signer made (RRSIG, NSEC, DNSKEY, CDS, CDNSKEY), its RDATA as is.
fn wire_record(rr: &dnssec::WireRr, qname: &Name, original: &rr::Name) -> Record {
    let owner = if &rr.name == qname {
        original.clone()
    } else {
        to_name(&rr.name)
    };
    let data = rr::RData::Unknown {
        code: HRecordType::from(rr.rtype),
        rdata: NULL::with(rr.rdata.to_vec()),
    };
    Record::from_rdata(owner, rr.ttl, data)
}

/// The bound addresses of one DNS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

/// The bound sockets of one listen address, not yet serving.
pub struct Sockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
}

impl Sockets {
    /// The addresses the kernel gave (the port chosen for port 0).
    pub fn bound(&self) -> std::io::Result<Bound> {
        Ok(Bound {
            udp: self.udp[0].local_addr()?,
            tcp: self.tcp.local_addr()?,
        })
    }
}

/// Binds UDP and TCP on `addr`: one UDP socket per core (SO_REUSEPORT) for a fixed port, one for
/// port 0, where both protocols get the same kernel-chosen port. IPv6 sockets are IPv6 only, so
/// that `[::]:53` and `0.0.0.0:53` can be bound side by side.
pub async fn bind(addr: SocketAddr) -> std::io::Result<Sockets> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = if addr.port() == 0 { 1 } else { cores };
    let mut last_err = None;
    for _ in 0..20 {
        let first = udp_socket(addr, count > 1)?;
        // Kept whole rather than rebuilt from IP and port: an IPv6 scope id stays.
        let mut chosen = addr;
        chosen.set_port(first.local_addr()?.port());
        let tcp = match tcp_listener(chosen) {
            Ok(tcp) => tcp,
            Err(e) if addr.port() == 0 => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut udp = vec![first];
        for _ in 1..count {
            udp.push(udp_socket(chosen, true)?);
        }
        return Ok(Sockets { udp, tcp });
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free port for UDP and TCP")))
}

fn udp_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A listening TCP socket, set up as tokio's `TcpListener::bind` does (SO_REUSEADDR, a backlog
/// of 1024), but IPv6 only for an IPv6 address.
fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// How the DNS frontend defends itself.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tcp: TcpLimits,
    pub rrl: crate::rrl::NodeSettings,
}

/// Serves DNS on every listener's sockets until `shutdown` is cancelled: UDP on one thread per
/// socket (rate limited unless `options.rrl` is off), TCP on tasks under `options.tcp`. The
/// listeners share one rate limiter and one set of TCP limits.
pub async fn serve(
    snapshots: Arc<Snapshots>,
    listeners: Vec<Sockets>,
    options: Options,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handler = Arc::new(Handler::new(snapshots.clone()));
    let rrl = options
        .rrl
        .enabled
        .then(|| Arc::new(limit::UdpRrl::new(options.rrl.clone())));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut tcp = Vec::with_capacity(listeners.len());
    for (l, sockets) in listeners.into_iter().enumerate() {
        for (i, socket) in sockets.udp.into_iter().enumerate() {
            let (handler, rrl, stop) = (handler.clone(), rrl.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{l}-{i}"))
                    .spawn(move || udp::run(socket, handler, rrl, stop))?,
            );
        }
        tcp.push(sockets.tcp);
    }
    tcp::serve(tcp, handler, options.tcp, shutdown).await;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ipv4_and_ipv6_wildcards_bind_the_same_port() {
        // Without IPV6_V6ONLY, `[::]` takes the IPv4 port as well and the second bind fails.
        let v6 = bind("[::]:0".parse().unwrap()).await.unwrap();
        let port = v6.bound().unwrap().udp.port();
        let v4 = bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .unwrap_or_else(|e| panic!("0.0.0.0:{port} next to [::]:{port}: {e}"));
        assert_eq!(
            v4.bound().unwrap(),
            Bound {
                udp: SocketAddr::from(([0, 0, 0, 0], port)),
                tcp: SocketAddr::from(([0, 0, 0, 0], port)),
            }
        );
        assert_eq!(
            v6.bound().unwrap().tcp,
            format!("[::]:{port}").parse().unwrap()
        );
    }

    /// A header with `qdcount` questions, then `rest`.
    fn message(qdcount: u8, rest: &[u8]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0, 0, qdcount, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(rest);
        m
    }

    #[test]
    fn a_question_pointing_into_the_header_is_found() {
        // `a.` then a second question `b` + pointer to `a.` at offset 12: fine.
        let ok = message(2, b"\x01a\x00\x00\x01\x00\x01\x01b\xc0\x0c\x00\x01\x00\x01");
        assert!(!question_points_into_header(&ok));
        // `x` + pointer to offset 2 (the flags): found.
        let direct = message(1, b"\x01x\xc0\x02\x00\x01\x00\x01");
        assert!(question_points_into_header(&direct));
        // The second question points into the first, at label bytes that read as a pointer to
        // offset 4: found through the chain.
        let chained = message(
            2,
            b"\x02\xc0\x04\x00\x00\x01\x00\x01\xc0\x0d\x00\x01\x00\x01",
        );
        assert!(question_points_into_header(&chained));
        assert!(!question_points_into_header(&message(
            1,
            b"\x01a\x00\x00\x01\x00\x01"
        )));
    }
}
