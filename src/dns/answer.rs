//! Choosing the records for a query: a pure, synchronous function of the zone set, the query and
//! the client. Authoritative semantics (NXDOMAIN, NODATA, CNAME chasing, referrals, minimal ANY)
//! and the routing policies (nearest, latency, geo rules, failover, weighted) and the recovery
//! ramp live here; the DNS frontend only translates to and from the wire.

use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::geo::{self, Located, Locator};
use crate::health::merge::DcRtt;
use crate::zone::{
    GeoKey, GeoTarget, Name, Node, Policy, RData, RecordType, Rr, RrSet, Service, WhenAllDown,
    Zone, ZoneSet,
};

/// The longest ECS scope we return: resolvers cache per /24 (IPv4) and /56 (IPv6) at most
/// (RFC 7871 section 11.1 recommends those source prefixes), so a longer scope only fragments
/// their caches.
pub const MAX_SCOPE_V4: u8 = 24;
pub const MAX_SCOPE_V6: u8 = 56;

/// Endpoint health as the answer code sees it. The health module provides the real one.
pub trait Health: Send + Sync {
    /// Whether `ip` of the service's DC named `dc` may be served (up and not drained).
    fn endpoint_up(&self, service: &Service, dc: &str, ip: IpAddr) -> bool;

    /// Unix milliseconds when the service's DC `dc` (with these endpoints) came back: the
    /// merged view restored its health, or a drain on it was lifted. 0 when it was never out.
    /// Asked only for services with a recovery ramp.
    fn dc_restored_ms(&self, _service: &Service, _dc: &str, _endpoints: &[IpAddr]) -> u64 {
        0
    }

    /// Unix milliseconds now, for ramps and the age of measurements (asked only by them).
    fn now_ms(&self) -> u64 {
        0
    }

    /// The DCs of `service` in the order of the RTT `region` measured (see
    /// `health::latency`); none when it has no fresh measurement.
    fn latency_order(&self, _service: &Name, _region: &str) -> Option<&[DcRtt]> {
        None
    }
}

impl Health for crate::health::HealthView {
    fn endpoint_up(&self, service: &Service, _dc: &str, ip: IpAddr) -> bool {
        self.is_up(ip, service.check.as_deref())
    }
}

impl Health for crate::health::merge::EffectiveHealth {
    fn endpoint_up(&self, service: &Service, dc: &str, ip: IpAddr) -> bool {
        !self.is_drained(dc, service.name.as_str()) && self.is_up(ip, service.check.as_deref())
    }

    /// The earliest restore among the DC's endpoints that are up, when none of them was up all
    /// along (a DC that kept one endpoint never left), or the latest lift of a drain on it.
    fn dc_restored_ms(&self, service: &Service, dc: &str, endpoints: &[IpAddr]) -> u64 {
        let mut health_at = 0;
        if let Some(check) = service.check.as_deref() {
            for ip in endpoints {
                if !self.is_up(*ip, Some(check)) {
                    continue;
                }
                match self.restored_ms(*ip, check) {
                    0 => {
                        health_at = 0;
                        break;
                    }
                    at if health_at == 0 => health_at = at,
                    at => health_at = health_at.min(at),
                }
            }
        }
        health_at.max(self.lifted_ms(dc, service.name.as_str()))
    }

    fn now_ms(&self) -> u64 {
        crate::clock::now_ms()
    }

    fn latency_order(&self, service: &Name, region: &str) -> Option<&[DcRtt]> {
        self.steering.order(service, region)
    }
}

/// Every endpoint up (before health checks exist, and in tests).
pub struct AllUp;

impl Health for AllUp {
    fn endpoint_up(&self, _: &Service, _: &str, _: IpAddr) -> bool {
        true
    }
}

/// Who is asking, and the means to place them.
pub struct Client<'a> {
    /// The address that decides: the ECS address when the resolver sent one, else its own.
    pub addr: IpAddr,
    /// The ECS source prefix, when the query carried ECS with a non-zero one.
    pub ecs_prefix: Option<u8>,
    pub locator: &'a dyn Locator,
    pub health: &'a dyn Health,
    /// Varies per query to rotate among a DC's endpoints.
    pub rotation: usize,
}

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
    /// A service with nothing up, answered by its `when_all_down` policy.
    AllDown,
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
    /// How many leading bits of the client address the answer depended on (the ECS scope).
    pub scope: u8,
    /// For service answers: the service (its name, shared with the zone) and the DC the
    /// answer came from.
    pub service_dc: Option<(Name, Arc<str>)>,
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
            scope: 0,
            service_dc: None,
        }
    }

    pub fn refused() -> Answer {
        Answer::new(Outcome::Refused, Rcode::Refused, false)
    }
}

/// The DS record type (RFC 4034).
const DS: u16 = 43;

/// How many CNAMEs are followed inside the zone before giving up.
const MAX_CNAME_CHAIN: usize = 8;

/// Where a question leads in the zone set, before any record is copied: the zone, the CNAMEs
/// on the way, and the node (or the lack of one) at the end. `answer` builds the records from it;
/// the prepared-answer cache (`dns::prepared`) reads from it what else the answer depends on
/// (`client_class`), so both walk the zone the same way.
pub enum Route<'z> {
    Refused,
    /// The name lies in a delegated sub-zone cut at `cut`.
    Referral {
        zone: &'z Zone,
        cut: Name,
    },
    /// The DS record of a delegation belongs to the parent side (RFC 4035 section 3.1.4.1): at
    /// the cut itself it is answered here, authoritatively (NODATA: no DNSSEC data).
    DsAtCut {
        zone: &'z Zone,
    },
    InZone {
        zone: &'z Zone,
        /// The CNAME RRsets followed, with their owners.
        cnames: Few<(Name, &'z RrSet)>,
        end: End<'z>,
    },
}

impl<'z> Route<'z> {
    /// The zone the question fell in.
    pub fn zone(&self) -> Option<&'z Zone> {
        match self {
            Route::Refused => None,
            Route::Referral { zone, .. } | Route::DsAtCut { zone } | Route::InZone { zone, .. } => {
                Some(zone)
            }
        }
    }
}

/// Where a walk through a zone ended.
pub enum End<'z> {
    /// A node without a CNAME: its records (or its service) answer, owned by the name (the
    /// name asked when a wildcard synthesizes it, RFC 4592).
    Node(Name, &'z Node),
    /// An empty non-terminal.
    NoData,
    NxDomain,
    /// A CNAME not followed further (asked for, out of the zone, delegated, or a loop).
    Stop,
}

/// Walks `qname` through the zone it falls in.
pub fn route<'z>(zones: &'z ZoneSet, qname: &Name, qtype: QType) -> Route<'z> {
    let Some(zone) = zones.find(qname) else {
        return Route::Refused;
    };
    if let Some(cut) = zone.delegation_for(qname) {
        if &cut == qname && qtype == QType::Other(DS) {
            return Route::DsAtCut { zone };
        }
        return Route::Referral { zone, cut };
    }
    let mut cnames = Few::new();
    let mut name: &Name = qname;
    for _ in 0..=MAX_CNAME_CHAIN {
        // A name below a wildcard that has no node of its own is answered from the wildcard's,
        // with the name asked as the owner (RFC 4592).
        let Some((node, _)) = zone.lookup(name) else {
            let end = if zone.empty_non_terminals.contains(name) {
                End::NoData
            } else {
                End::NxDomain
            };
            return Route::InZone { zone, cnames, end };
        };
        let Some(cname) = node.rrset(RecordType::Cname) else {
            let end = End::Node(name.clone(), node);
            return Route::InZone { zone, cnames, end };
        };
        cnames.push((name.clone(), cname));
        let target = match cname.data.first() {
            Some(RData::Cname(target)) if qtype != QType::Known(RecordType::Cname) => target,
            _ => break,
        };
        // Follow the chain only inside this zone and outside its delegations.
        if !target.is_subdomain_of(&zone.apex) || zone.delegation_for(target).is_some() {
            break;
        }
        name = target;
    }
    // A CNAME asked for, one leading out, or a loop / an over-long chain: what we have is all
    // we give.
    Route::InZone {
        zone,
        cnames,
        end: End::Stop,
    }
}

/// Answers `qtype` at `qname` from `zones` for `client`.
pub fn answer(zones: &ZoneSet, qname: &Name, qtype: QType, client: &Client) -> Answer {
    answer_route(route(zones, qname, qtype), qtype, client)
}

/// Builds the answer a route leads to.
pub fn answer_route(route: Route<'_>, qtype: QType, client: &Client) -> Answer {
    let (zone, cnames, end) = match route {
        Route::Refused => return Answer::refused(),
        Route::Referral { zone, cut } => return referral(zone, &cut),
        Route::DsAtCut { zone } => {
            let out = Answer::new(Outcome::NoData, Rcode::NoError, true);
            return negative(zone, out, Outcome::NoData, Rcode::NoError);
        }
        Route::InZone { zone, cnames, end } => (zone, cnames, end),
    };
    let mut out = Answer::new(Outcome::Answer, Rcode::NoError, true);
    for (owner, set) in &cnames {
        push_set(&mut out.answers, owner, set.ttl, &set.data);
    }
    let (name, node) = match end {
        End::Stop => return out,
        End::NoData => return negative(zone, out, Outcome::NoData, Rcode::NoError),
        End::NxDomain => return negative(zone, out, Outcome::NxDomain, Rcode::NxDomain),
        End::Node(name, node) => (name, node),
    };
    match qtype {
        QType::Any => {
            // RFC 8482: one RRset is enough, so the server is no amplifier.
            if let Some(service) = &node.service {
                let sel = select(zone, service, RecordType::A, client);
                if let Some(ip) = sel.addresses.first() {
                    out.answers.push(service_rr(&name, *ip, sel.ttl));
                    out.scope = sel.scope;
                }
            }
            if let (true, Some(set)) = (out.answers.is_empty(), node.rrsets.first()) {
                push_set(&mut out.answers, &name, set.ttl, &set.data[..1]);
            }
        }
        QType::Known(rtype @ (RecordType::A | RecordType::Aaaa)) if node.service.is_some() => {
            if let Some(service) = &node.service {
                let sel = select(zone, service, rtype, client);
                if sel.all_down {
                    // Whatever the policy, so that fail-open answers (the default) are counted
                    // as answers by `when_all_down` too.
                    out.outcome = Outcome::AllDown;
                }
                if sel.all_down && service.when_all_down == WhenAllDown::ServFail {
                    out.rcode = Rcode::ServFail;
                    out.answers.clear();
                    return out;
                }
                out.scope = sel.scope;
                out.service_dc = sel.chosen_dc().map(|i| {
                    (
                        service.name.clone(),
                        zone.datacenters[service.dcs[i].dc].name.clone(),
                    )
                });
                out.answers.extend(
                    sel.addresses
                        .iter()
                        .map(|ip| service_rr(&name, *ip, sel.ttl)),
                );
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
    out
}

/// What of the client an answer depends on, besides the question and the snapshots: answers
/// are the same for every client of one class, so they can be prepared once per class.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientClass {
    /// Nothing: static data, negative answers, referrals.
    Anyone,
    /// A service answer: the part of the client its policy reads, and the rotation step among
    /// a DC's endpoints.
    Service { by: ClassBy, step: u16 },
    /// An answer that changes with time, not only with the snapshots: a DC of the service is
    /// in its recovery ramp, whose share grows by the second. Built afresh for every query
    /// (a ramp lasts minutes; a prepared answer would serve a stale share).
    Unprepared,
}

impl ClientClass {
    /// A number that equal classes share, for the prepared answers' key: the cache hashes it
    /// with the question in one write, where hashing the enum field by field took a dozen
    /// hasher calls. A place counts by its coordinates (as `Place`'s `Hash`).
    pub fn fingerprint(&self) -> u64 {
        match self {
            ClientClass::Anyone => 0,
            ClientClass::Unprepared => 1,
            ClientClass::Service { by, step } => {
                let by = match by {
                    ClassBy::Nothing => 2,
                    ClassBy::Place(None) => 3,
                    ClassBy::Place(Some(place)) => match place.0.coordinates {
                        Some((x, y)) => x.to_bits() ^ y.to_bits().rotate_left(32),
                        None => 4,
                    },
                    ClassBy::Network(IpAddr::V4(a)) => u64::from(u32::from(*a)),
                    ClassBy::Network(IpAddr::V6(a)) => {
                        let bits = u128::from(*a);
                        (bits as u64) ^ ((bits >> 64) as u64)
                    }
                };
                by.rotate_left(16) ^ u64::from(*step)
            }
        }
    }
}

/// The part of the client a service's policy reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClassBy {
    /// `failover`: nothing.
    Nothing,
    /// `nearest`, `latency` and `geo`: the place the database gives (every field the
    /// policies read); `None` when unlocated. The ECS scope (the database network's prefix,
    /// capped) is not part of the class: the answer is the same for every network of a place,
    /// and `service_class` gives each its scope beside the class.
    Place(Option<Place>),
    /// `weighted`: the client network the score is computed from.
    Network(IpAddr),
}

/// A location compared by value (coordinates by their bits).
#[derive(Debug, Clone)]
pub struct Place(pub Arc<geo::Location>);

impl PartialEq for Place {
    fn eq(&self, other: &Place) -> bool {
        let (a, b) = (&*self.0, &*other.0);
        Arc::ptr_eq(&self.0, &other.0)
            || (a.continent == b.continent
                && a.country == b.country
                && a.subdivision == b.subdivision
                && a.coordinates.map(|(x, y)| (x.to_bits(), y.to_bits()))
                    == b.coordinates.map(|(x, y)| (x.to_bits(), y.to_bits())))
    }
}

impl Eq for Place {}

impl std::hash::Hash for Place {
    /// The coordinates alone (a part of what `eq` compares, so equal places hash alike): they
    /// tell places apart nearly always, and hashing two numbers is much cheaper than the names.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let l = &*self.0;
        l.coordinates
            .map(|(x, y)| (x.to_bits(), y.to_bits()))
            .hash(h);
    }
}

/// The class of `client` for the answer `route` leads to.
pub fn client_class(route: &Route<'_>, qtype: QType, client: &Client) -> (ClientClass, u8) {
    match route_service(route, qtype) {
        Some((zone, service)) => service_class(zone, service, client),
        None => (ClientClass::Anyone, 0),
    }
}

/// The service a route answers from, with its zone: a service's A, AAAA or ANY question.
pub fn route_service<'z>(route: &Route<'z>, qtype: QType) -> Option<(&'z Zone, &'z Arc<Service>)> {
    match route {
        Route::InZone {
            zone,
            end: End::Node(_, node),
            ..
        } => match (&node.service, qtype) {
            (
                Some(service),
                QType::Any | QType::Known(RecordType::A) | QType::Known(RecordType::Aaaa),
            ) => Some((zone, service)),
            _ => None,
        },
        _ => None,
    }
}

/// The class of `client` for an answer of `service` (see `client_class`), and the ECS scope
/// `select` gives the client with it (for `nearest`, `latency` and `geo`: its place's).
pub fn service_class(zone: &Zone, service: &Service, client: &Client) -> (ClientClass, u8) {
    if let Some(ramp) = service.ramp
        && ramping(zone, service, ramp, client.health)
    {
        return (ClientClass::Unprepared, 0);
    }
    let cap = if client.addr.to_canonical().is_ipv4() {
        MAX_SCOPE_V4
    } else {
        MAX_SCOPE_V6
    };
    let (by, scope) = match &service.policy {
        Policy::Failover => (ClassBy::Nothing, 0),
        Policy::Weighted(_) => (
            ClassBy::Network(geo::mask(client.addr.to_canonical(), cap)),
            cap,
        ),
        // `latency` reads the place too: the node region nearest it, and the orders in the
        // health snapshot.
        Policy::Nearest | Policy::Latency | Policy::Geo { .. } => {
            match client.locator.locate(client.addr) {
                Some(l) => (ClassBy::Place(Some(Place(l.location))), l.prefix.min(cap)),
                None => (ClassBy::Place(None), cap),
            }
        }
    };
    let class = ClientClass::Service {
        by,
        step: rotation_step(service, client.rotation),
    };
    (class, scope)
}

/// Whether a DC of `service` is in its recovery ramp now (as `select` finds it: restored, some
/// endpoint up, less than `ramp` ago).
fn ramping(zone: &Zone, service: &Service, ramp: std::time::Duration, health: &dyn Health) -> bool {
    let mut now_ms = None;
    service.dcs.iter().any(|d| {
        let dc = zone.datacenters[d.dc].name.as_ref();
        let started = health.dc_restored_ms(service, dc, &d.endpoints);
        started != 0 && {
            let now = *now_ms.get_or_insert_with(|| health.now_ms());
            now.saturating_sub(started) < ramp.as_millis() as u64
        }
    })
}

/// The rotation step that gives the same answer as `rotation`: `select` starts a DC's list at
/// `rotation % n` for n up endpoints of the family, so a step modulo a multiple of every n up
/// to the largest DC's size is the same start. Prepared answers are built with the step, so the
/// answer for a class is the one `select` gives for it.
pub fn rotation_step(service: &Service, rotation: usize) -> u16 {
    let largest = service
        .dcs
        .iter()
        .map(|d| d.endpoints.len())
        .max()
        .unwrap_or(1);
    // lcm(1..=n) for small n (60 covers every DC of up to 6 endpoints); beyond that, the
    // largest size keeps the starts spread (each step still a start `select` gives).
    let period = match largest {
        0 | 1 => 1,
        2 => 2,
        3 => 6,
        4 => 12,
        5 | 6 => 60,
        n => n,
    };
    (rotation % period) as u16
}

/// A service address record at `owner` (the service's name, or a name its wildcard
/// synthesizes) with the selection's TTL.
fn service_rr(owner: &Name, ip: IpAddr, ttl: u32) -> Rr {
    Rr {
        name: owner.clone(),
        ttl,
        data: RData::from(ip),
    }
}

/// Why a DC stands where it does in a client's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Great-circle distance from the client, in km.
    Distance(f64),
    /// Listed by the geo rule with this label, at this position.
    Rule(Arc<str>, usize),
    /// Not listed by the matching rule: after the listed ones, by distance (km) when known.
    AfterRule(Arc<str>, Option<f64>),
    /// Position in the zone file's list (failover, or nearest for an unlocated client).
    Priority(usize),
    /// Weighted choice: the weight and this client network's score (highest first).
    Weight(u32, f64),
    /// The smoothed RTT the client's region measured (ms), and the measurement's age (ms).
    Latency { rtt_ms: f64, age_ms: u64 },
}

/// A DC in its recovery ramp, for one client network.
#[derive(Debug, Clone, PartialEq)]
pub struct Ramp {
    /// Unix milliseconds when the DC came back (the merged view's time, the same on every node).
    pub started_ms: u64,
    /// The share of its clients it gets now (see `ramp_share`).
    pub share: f64,
    /// Where this client network falls in [0, 1): it gets the DC while this is below `share`.
    pub position: f64,
}

impl Ramp {
    /// Whether this client network is sent to the DC yet.
    pub fn admitted(&self) -> bool {
        self.position < self.share
    }
}

/// Where the `latency` policy looked for a client: the node region nearest it, and whether that
/// region had a fresh measurement (else the DCs are by distance, as for `nearest`).
#[derive(Debug, Clone, PartialEq)]
pub struct Steered {
    pub region: Arc<str>,
    pub measured: bool,
}

/// The share of a returning DC's clients that it gets `elapsed_ms` into a ramp of `ramp_ms`:
/// `RAMP_START` at once, then linearly up to all of them at the end (None once it is over).
pub fn ramp_share(elapsed_ms: u64, ramp_ms: u64) -> Option<f64> {
    (elapsed_ms < ramp_ms)
        .then(|| RAMP_START + (1.0 - RAMP_START) * (elapsed_ms as f64 / ramp_ms.max(1) as f64))
}

/// The share of its clients a returning DC gets at the start of its ramp: enough to see at
/// once whether it copes, small enough not to flood cold caches.
pub const RAMP_START: f64 = 0.1;

/// The TTL of a service's answers while a DC of it ramps: a tenth of the ramp (at least 1 s),
/// so a resolver asks again ten times over the ramp and each client network moves within a
/// tenth of the ramp of its turn.
pub fn ramp_ttl(ramp: std::time::Duration) -> u32 {
    u32::try_from(ramp.as_secs() / 10)
        .unwrap_or(u32::MAX)
        .max(1)
}

/// A client network's stable place in a DC's ramp, in [0, 1): a hash of the network (the ECS
/// scope's /24 or /56), the service and the DC, so each DC ramps its own random slice of
/// networks and a network, once in, stays in as the share grows.
pub fn ramp_position(net: IpAddr, service: &str, dc: &str) -> f64 {
    let h = network_hash(net, &[service.as_bytes(), b"/", dc.as_bytes()]);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One DC in a client's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Index into `Service::dcs`.
    pub dc: usize,
    pub reason: Reason,
    /// Endpoints of the asked family, and how many of them are up.
    pub endpoints: usize,
    pub up: usize,
    /// The DC is in its recovery ramp (services with `ramp:` only).
    pub ramp: Option<Ramp>,
}

/// A few items kept inline: services have a handful of DCs and answers, so a selection
/// allocates nothing on the query path (more than four spill to the heap, as a Vec would).
pub type Few<T> = SmallVec<[T; 4]>;

/// The whole decision for one service query: what `answer` uses and `explain` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub located: Option<Located>,
    pub candidates: Few<Candidate>,
    pub addresses: Few<IpAddr>,
    /// Indexes into `candidates` of the DCs the addresses came from, in order.
    pub used: Few<usize>,
    pub scope: u8,
    /// No endpoint of the family is up: the `when_all_down` policy applied.
    pub all_down: bool,
    /// Some DC of the service has an endpoint down.
    pub degraded: bool,
    /// The TTL of the answer's records: `degraded_ttl` while degraded, at most `ramp_ttl`
    /// while a DC ramps.
    pub ttl: u32,
    /// For the `latency` policy: the region that decided.
    pub steered: Option<Steered>,
}

impl Selection {
    /// The DC (index into `Service::dcs`) of the first address.
    pub fn chosen_dc(&self) -> Option<usize> {
        self.used.first().map(|&c| self.candidates[c].dc)
    }
}

/// Orders the service's DCs for the client, drops what is down, and picks the addresses.
pub fn select(zone: &Zone, service: &Service, rtype: RecordType, client: &Client) -> Selection {
    let want_v4 = rtype == RecordType::A;
    let cap = if client.addr.to_canonical().is_ipv4() {
        MAX_SCOPE_V4
    } else {
        MAX_SCOPE_V6
    };
    let needs_location = matches!(
        service.policy,
        Policy::Nearest | Policy::Latency | Policy::Geo { .. }
    );
    let located = if needs_location {
        client.locator.locate(client.addr)
    } else {
        None
    };

    let mut steered = None;
    let order: Few<(usize, Reason)> = match &service.policy {
        Policy::Failover => (0..service.dcs.len())
            .map(|i| (i, Reason::Priority(i)))
            .collect(),
        Policy::Nearest => by_distance(zone, service, located.as_ref()),
        Policy::Latency => {
            let (order, s) = by_latency(zone, service, located.as_ref(), client.health);
            steered = s;
            order
        }
        Policy::Geo { rules, default } => {
            let loc = located.as_ref().map(|l| &*l.location);
            let rule = loc.and_then(|loc| {
                rules
                    .iter()
                    .filter(|r| geo_matches(&r.key, loc))
                    .max_by_key(|r| r.key.specificity())
            });
            let (label, target) = match rule {
                Some(r) => (&r.label, &r.target),
                None => (&*DEFAULT_RULE, default),
            };
            let nearest = by_distance(zone, service, located.as_ref());
            match target {
                GeoTarget::Nearest => nearest,
                GeoTarget::Dcs(listed) => {
                    let mut out: Few<(usize, Reason)> = listed
                        .iter()
                        .enumerate()
                        .map(|(pos, &dc)| (dc, Reason::Rule(label.clone(), pos)))
                        .collect();
                    for (dc, reason) in nearest {
                        if !listed.contains(&dc) {
                            let km = match reason {
                                Reason::Distance(km) => Some(km),
                                _ => None,
                            };
                            out.push((dc, Reason::AfterRule(label.clone(), km)));
                        }
                    }
                    out
                }
            }
        }
        Policy::Weighted(weights) => {
            let net = geo::mask(client.addr.to_canonical(), cap);
            let mut scored: Few<(usize, Reason, f64)> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    let name = &zone.datacenters[service.dcs[i].dc].name;
                    let score = weighted_score(net, name, w);
                    (i, Reason::Weight(w, score), score)
                })
                .collect();
            scored.sort_by(|a, b| b.2.total_cmp(&a.2));
            scored.into_iter().map(|(i, r, _)| (i, r)).collect()
        }
    };

    let mut candidates = Few::with_capacity(order.len());
    let mut degraded = false;
    let net = geo::mask(client.addr.to_canonical(), cap);
    let mut now_ms = None;
    for (dc, reason) in order {
        let eps = service.dcs[dc]
            .endpoints
            .iter()
            .filter(|ip| ip.is_ipv4() == want_v4);
        let dc_name = zone.datacenters[service.dcs[dc].dc].name.as_ref();
        let (mut endpoints, mut up) = (0, 0);
        for ip in eps {
            endpoints += 1;
            if client.health.endpoint_up(service, dc_name, *ip) {
                up += 1;
            }
        }
        degraded |= up < endpoints;
        let ramp = service.ramp.filter(|_| up > 0).and_then(|ramp| {
            let started_ms =
                client
                    .health
                    .dc_restored_ms(service, dc_name, &service.dcs[dc].endpoints);
            if started_ms == 0 {
                return None;
            }
            let now = *now_ms.get_or_insert_with(|| client.health.now_ms());
            let share = ramp_share(now.saturating_sub(started_ms), ramp.as_millis() as u64)?;
            Some(Ramp {
                started_ms,
                share,
                position: ramp_position(net, service.name.as_str(), dc_name),
            })
        });
        candidates.push(Candidate {
            dc,
            reason,
            endpoints,
            up,
            ramp,
        });
    }

    // Only DCs with endpoints of the asked family count: a service without any is NODATA for
    // that family, not "all down".
    let all_down = candidates.iter().any(|c| c.endpoints > 0)
        && candidates.iter().all(|c| c.endpoints == 0 || c.up == 0);
    let mut addresses = Few::new();
    let mut used = Few::new();
    // Whether the answer hung on a ramp's hash of the client network.
    let mut hashed = false;
    for (ci, cand) in candidates.iter().enumerate() {
        if cand.endpoints == 0 || (!all_down && cand.up == 0) {
            // A DC with nothing of the asked family, or nothing up, is skipped.
            continue;
        }
        if let Some(ramp) = &cand.ramp {
            hashed = true;
            // Not this network's turn yet: it keeps the next DC, if one is up.
            let next_up = candidates[ci + 1..]
                .iter()
                .any(|c| c.endpoints > 0 && c.up > 0);
            if !ramp.admitted() && next_up {
                continue;
            }
        }
        let dc_name = zone.datacenters[service.dcs[cand.dc].dc].name.as_ref();
        let eps: Few<IpAddr> = service.dcs[cand.dc]
            .endpoints
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == want_v4)
            .filter(|ip| all_down || client.health.endpoint_up(service, dc_name, *ip))
            .collect();
        let start = client.rotation % eps.len();
        let room = service.answers - addresses.len();
        addresses.extend(
            eps.iter()
                .copied()
                .cycle()
                .skip(start)
                .take(eps.len().min(room)),
        );
        used.push(ci);
        if !service.fill || addresses.len() >= service.answers {
            break;
        }
    }
    if all_down && service.when_all_down != WhenAllDown::ServeAll {
        addresses.clear();
        used.clear();
    }

    let scope = match (&service.policy, &located) {
        // The ramp's hash reads the client network at the cap's granularity.
        _ if hashed => cap,
        (Policy::Failover, _) => 0,
        (Policy::Weighted(_), _) => cap,
        (_, Some(l)) => l.prefix.min(cap),
        (_, None) => cap,
    };
    let mut ttl = if degraded {
        service.degraded_ttl
    } else {
        service.ttl
    };
    if let (Some(ramp), true) = (service.ramp, candidates.iter().any(|c| c.ramp.is_some())) {
        ttl = ttl.min(ramp_ttl(ramp));
    }
    Selection {
        located,
        candidates,
        addresses,
        used,
        scope,
        all_down,
        degraded,
        ttl,
        steered,
    }
}

/// The `latency` order: the node region nearest the client (by the zone's `regions`), its
/// measured DCs in steering order, then the others by distance; by distance alone (as
/// `nearest`) when the client is not placed or its region has no fresh measurement.
fn by_latency(
    zone: &Zone,
    service: &Service,
    located: Option<&Located>,
    health: &dyn Health,
) -> (Few<(usize, Reason)>, Option<Steered>) {
    let nearest = by_distance(zone, service, located);
    let here = located.and_then(|l| geo::coordinates(&l.location));
    let region = here.and_then(|here| {
        zone.regions.iter().min_by(|a, b| {
            distance_km(here, (a.latitude, a.longitude))
                .total_cmp(&distance_km(here, (b.latitude, b.longitude)))
        })
    });
    let Some(region) = region else {
        return (nearest, None);
    };
    let Some(measured) = health.latency_order(&service.name, &region.name) else {
        let steered = Steered {
            region: region.name.clone(),
            measured: false,
        };
        return (nearest, Some(steered));
    };
    let now = health.now_ms();
    // By name: the order may have been made for the zones before a reload.
    let index = |name: &str| {
        service
            .dcs
            .iter()
            .position(|d| &*zone.datacenters[d.dc].name == name)
    };
    let mut out: Few<(usize, Reason)> = measured
        .iter()
        .filter_map(|d| {
            let reason = Reason::Latency {
                rtt_ms: d.rtt_ms,
                age_ms: now.saturating_sub(d.heard_ms),
            };
            Some((index(&d.name)?, reason))
        })
        .collect();
    for (dc, reason) in nearest {
        if !out.iter().any(|(i, _)| *i == dc) {
            out.push((dc, reason));
        }
    }
    let steered = Steered {
        region: region.name.clone(),
        measured: true,
    };
    (out, Some(steered))
}

/// The label of a service's `default` geo rule, in explanations.
static DEFAULT_RULE: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("default"));

type DistanceOrders = rustc_hash::FxHashMap<(u64, u64, u64), std::rc::Rc<[(usize, f64)]>>;

thread_local! {
    /// DC orders by distance per (service, client coordinates): clients come from a limited set
    /// of locations, so the trigonometry runs once per location and service, not per query.
    static DISTANCE_ORDERS: std::cell::RefCell<DistanceOrders> =
        std::cell::RefCell::new(DistanceOrders::default());
}

/// DCs by great-circle distance from the client; an unlocated client gets the zone file's order.
fn by_distance(zone: &Zone, service: &Service, located: Option<&Located>) -> Few<(usize, Reason)> {
    let here = located.and_then(|l| geo::coordinates(&l.location));
    let Some((lat, lon)) = here else {
        return (0..service.dcs.len())
            .map(|i| (i, Reason::Priority(i)))
            .collect();
    };
    let key = (service.id, lat.to_bits(), lon.to_bits());
    let order = DISTANCE_ORDERS.with(|cache| {
        if let Some(o) = cache.borrow().get(&key) {
            return o.clone();
        }
        let o: std::rc::Rc<[(usize, f64)]> = distance_order(zone, service, (lat, lon)).into();
        let mut cache = cache.borrow_mut();
        // Bounded: many locations, or the services of many reloads, start it over.
        if cache.len() >= 65_536 {
            cache.clear();
        }
        cache.insert(key, o.clone());
        o
    });
    order
        .iter()
        .map(|&(i, km)| (i, Reason::Distance(km)))
        .collect()
}

/// The service's DCs with their distance from `(lat, lon)`, nearest first.
fn distance_order(zone: &Zone, service: &Service, (lat, lon): (f64, f64)) -> Vec<(usize, f64)> {
    let mut v: Vec<(usize, f64)> = service
        .dcs
        .iter()
        .enumerate()
        .map(|(i, sdc)| {
            let dc = &zone.datacenters[sdc.dc];
            (i, distance_km((lat, lon), (dc.latitude, dc.longitude)))
        })
        .collect();
    // A stable sort: equal distances keep the zone file's order.
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    v
}

fn geo_matches(key: &GeoKey, loc: &geo::Location) -> bool {
    match key {
        GeoKey::Continent(c) => loc.continent.as_deref() == Some(c.as_str()),
        GeoKey::Country(c) => loc.country.as_deref() == Some(c.as_str()),
        GeoKey::Subdivision { country, code } => {
            loc.country.as_deref() == Some(country.as_str())
                && loc.subdivision.as_deref() == Some(code.as_str())
        }
    }
}

/// Great-circle distance by the haversine formula, Earth radius 6371 km.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Weighted rendezvous hashing: each (client network, DC) pair gets a stable pseudo-random
/// score; the highest wins. A DC's share is proportional to its weight, and when a DC leaves
/// only its own clients move.
fn weighted_score(net: IpAddr, dc: &str, weight: u32) -> f64 {
    if weight == 0 {
        return f64::NEG_INFINITY;
    }
    let h = network_hash(net, &[dc.as_bytes()]);
    // u in (0, 1]; score = -w / ln(u) ranks proportionally to weight.
    let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln().min(-f64::MIN_POSITIVE)
}

/// A stable, well-spread 64-bit hash of a client network and some salt (FNV-1a, then the
/// splitmix64 finaliser): the same on every node, every run and every build, which a seeded
/// std hasher is not.
fn network_hash(net: IpAddr, salt: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let (v4, v6);
    let bytes: &[u8] = match net {
        IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            &v6
        }
    };
    for b in bytes.iter().chain(salt.iter().flat_map(|s| s.iter())) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64 finaliser, for well-spread bits.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h
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

/// Why a query gets the answer it gets: what `steerdns explain` prints.
pub struct Explanation {
    pub qname: Name,
    pub qtype: QType,
    pub client: IpAddr,
    pub ecs_prefix: Option<u8>,
    pub answer: Answer,
    /// For service names: the zone, the service and the full selection.
    pub selection: Option<(std::sync::Arc<Zone>, std::sync::Arc<Service>, Selection)>,
}

/// Answers the query and keeps the selection that led to it.
pub fn explain(zones: &ZoneSet, qname: &Name, qtype: QType, client: &Client) -> Explanation {
    let answer = answer(zones, qname, qtype, client);
    let selection = zones.find(qname).and_then(|zone| {
        let service = zone.lookup(qname)?.0.service.clone()?;
        let rtype = match qtype {
            QType::Known(RecordType::Aaaa) => RecordType::Aaaa,
            _ => RecordType::A,
        };
        let sel = select(zone, &service, rtype, client);
        Some((zone.clone(), service, sel))
    });
    Explanation {
        qname: qname.clone(),
        qtype,
        client: client.addr,
        ecs_prefix: client.ecs_prefix,
        answer,
        selection,
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let qtype = match self.qtype {
            QType::Known(t) => t.to_string(),
            QType::Any => "ANY".to_string(),
            QType::Other(n) => format!("TYPE{n}"),
        };
        match self.ecs_prefix {
            Some(p) => writeln!(
                f,
                "query:     {} {qtype} for client subnet {}/{p}",
                self.qname, self.client
            )?,
            None => writeln!(f, "query:     {} {qtype} from {}", self.qname, self.client)?,
        }
        if let Some((zone, service, sel)) = &self.selection {
            match &sel.located {
                Some(l) => {
                    let loc = &l.location;
                    let coords = geo::coordinates(loc)
                        .map(|(a, b)| format!("{a:.2}, {b:.2}"))
                        .unwrap_or_else(|| "no coordinates".into());
                    writeln!(
                        f,
                        "location:  continent {}, country {}, subdivision {}, at {coords} (network /{}, from {})",
                        loc.continent.as_deref().unwrap_or("-"),
                        loc.country.as_deref().unwrap_or("-"),
                        loc.subdivision.as_deref().unwrap_or("-"),
                        l.prefix,
                        l.source
                    )?;
                }
                None if matches!(service.policy, Policy::Failover | Policy::Weighted(_)) => {
                    writeln!(f, "location:  not needed by this policy")?
                }
                None => writeln!(
                    f,
                    "location:  unknown (no GeoIP database knows the address)"
                )?,
            }
            let policy = match (&service.policy, &sel.steered) {
                (Policy::Latency, Some(s)) if s.measured => format!(
                    "latency, as measured from region {} (the node region nearest the client)",
                    s.region
                ),
                (Policy::Latency, Some(s)) => format!(
                    "latency; region {} (nearest the client) has no fresh measurement: by \
                     distance, as nearest",
                    s.region
                ),
                (Policy::Latency, None) => {
                    "latency; the client is not placed: by zone order, as nearest".to_string()
                }
                (Policy::Nearest, _) => "nearest".to_string(),
                (Policy::Failover, _) => "failover".to_string(),
                (Policy::Weighted(_), _) => "weighted".to_string(),
                (Policy::Geo { .. }, _) => "geo rules".to_string(),
            };
            writeln!(
                f,
                "policy:    {policy}, up to {} address(es){}",
                service.answers,
                if service.fill {
                    ", filled from the next DC"
                } else {
                    ""
                }
            )?;
            writeln!(f, "candidates:")?;
            for (i, c) in sel.candidates.iter().enumerate() {
                let name = &zone.datacenters[service.dcs[c.dc].dc].name;
                let why = match &c.reason {
                    Reason::Distance(km) => format!("{km:.0} km away"),
                    Reason::Rule(label, pos) => format!("rule {label}, position {}", pos + 1),
                    Reason::AfterRule(label, Some(km)) => {
                        format!("not in rule {label}; {km:.0} km away")
                    }
                    Reason::AfterRule(label, None) => format!("not in rule {label}"),
                    Reason::Priority(p) => format!("listed {}", p + 1),
                    Reason::Weight(w, score) => format!("weight {w}, score {score:.3}"),
                    Reason::Latency { rtt_ms, age_ms } => format!(
                        "rtt {rtt_ms:.1} ms (measured {:.1} s ago)",
                        *age_ms as f64 / 1000.0
                    ),
                };
                let mut state = if c.endpoints == 0 {
                    "no endpoint of this family: skipped".to_string()
                } else {
                    format!("{}/{} endpoints up", c.up, c.endpoints)
                };
                if let (Some(r), Some(ramp)) = (&c.ramp, service.ramp) {
                    // The curve run backwards: how far into the ramp this share is.
                    let into = (r.share - RAMP_START) / (1.0 - RAMP_START) * ramp.as_secs_f64();
                    state.push_str(&format!(
                        "; ramping, {into:.1} s of {:.0} s (since Unix ms {}): {:.0}% of its \
                         clients; this network at {:.0}%: {}",
                        ramp.as_secs_f64(),
                        r.started_ms,
                        r.share * 100.0,
                        r.position * 100.0,
                        if r.admitted() { "moved" } else { "not yet" }
                    ));
                }
                let mark = if sel.used.contains(&i) {
                    "  <- answers"
                } else {
                    ""
                };
                writeln!(f, "  {}. {name:<8} {why}; {state}{mark}", i + 1)?;
            }
            if sel.all_down {
                writeln!(
                    f,
                    "all down:  nothing is up; when_all_down = {:?}",
                    service.when_all_down
                )?;
            }
        }
        writeln!(
            f,
            "rcode:     {:?} ({:?})",
            self.answer.rcode, self.answer.outcome
        )?;
        if self.answer.answers.is_empty() {
            writeln!(f, "answer:    (none)")?;
        }
        for rr in &self.answer.answers {
            writeln!(f, "answer:    {} {} {}", rr.name, rr.ttl, rr.data)?;
        }
        write!(f, "ECS scope: /{}", self.answer.scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::file::parse_zone;
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

    fn client(addr: &str) -> Client<'static> {
        Client {
            addr: addr.parse().unwrap(),
            ecs_prefix: None,
            locator: &geo::NoLocation,
            health: &AllUp,
            rotation: 0,
        }
    }

    #[test]
    fn wildcards_answer_for_names_below_their_closest_encloser() {
        let text = "
zone: api.example.com
nameservers: { ns1: [192.0.2.53] }
datacenters: { fra: { location: [50.1, 8.7] } }
records:
  \"*\": { service: { endpoints: { fra: [203.0.113.10] } } }
  \"*.static\": { TXT: wild, MX: \"10 mx.example.net.\" }
  static: { A: 192.0.2.1 }
  exact.static: { TXT: exact }
  a.b: { TXT: deep }
  sub: { NS: [ns.other.net.] }
";
        let zones = ZoneSet {
            zones: vec![Arc::new(parse_zone(text, "w.yaml").unwrap())],
        };
        let ask = |name: &str, t: RecordType| {
            answer(
                &zones,
                &Name::parse(name).unwrap(),
                QType::Known(t),
                &client("192.0.2.1"),
            )
        };
        // A service through the wildcard, owned by the name asked (RFC 4592 section 3.3.1).
        let a = ask("tenant1.api.example.com", RecordType::A);
        assert_eq!(a.outcome, Outcome::Answer);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].name.as_str(), "tenant1.api.example.com");
        // More labels below a missing name: the closest encloser is the apex, so `*` matches.
        let deep = ask("x.y.api.example.com", RecordType::A);
        assert_eq!(deep.answers[0].name.as_str(), "x.y.api.example.com");
        // Static data through `*.static`, and NODATA for a type the wildcard lacks.
        let txt = ask("t.static.api.example.com", RecordType::Txt);
        assert_eq!(txt.answers[0].data, RData::Txt(vec!["wild".into()]));
        assert_eq!(txt.answers[0].name.as_str(), "t.static.api.example.com");
        assert_eq!(
            ask("t.static.api.example.com", RecordType::Aaaa).outcome,
            Outcome::NoData
        );
        // A name that exists is not synthesized, nor is anything below it (its own closest
        // encloser), nor an empty non-terminal, nor a name below a delegation.
        assert_eq!(
            ask("exact.static.api.example.com", RecordType::Txt).answers[0].data,
            RData::Txt(vec!["exact".into()])
        );
        assert_eq!(
            ask("static.api.example.com", RecordType::Txt).outcome,
            Outcome::NoData
        );
        assert_eq!(
            ask("x.exact.static.api.example.com", RecordType::Txt).outcome,
            Outcome::NxDomain
        );
        assert_eq!(
            ask("b.api.example.com", RecordType::A).outcome,
            Outcome::NoData
        );
        assert_eq!(
            ask("x.b.api.example.com", RecordType::A).outcome,
            Outcome::NxDomain
        );
        assert_eq!(
            ask("x.sub.api.example.com", RecordType::A).outcome,
            Outcome::Referral
        );
    }

    fn q(name: &str, t: RecordType) -> Answer {
        answer(
            &zones(),
            &Name::parse(name).unwrap(),
            QType::Known(t),
            &client("192.0.2.1"),
        )
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
    fn ds_at_a_delegation_is_answered_by_the_parent() {
        let zs = zones();
        let at_cut = answer(
            &zs,
            &Name::parse("sub.api.example.com").unwrap(),
            QType::Other(43),
            &client("192.0.2.1"),
        );
        assert_eq!(
            (at_cut.outcome, at_cut.authoritative),
            (Outcome::NoData, true)
        );
        assert_eq!(at_cut.authority[0].data.record_type(), RecordType::Soa);
        let below = answer(
            &zs,
            &Name::parse("x.sub.api.example.com").unwrap(),
            QType::Other(43),
            &client("192.0.2.1"),
        );
        assert_eq!(below.outcome, Outcome::Referral);
    }

    #[test]
    fn any_is_minimal() {
        let a = answer(
            &zones(),
            &Name::parse("www.api.example.com").unwrap(),
            QType::Any,
            &client("192.0.2.1"),
        );
        assert_eq!(a.answers.len(), 1);
    }

    #[test]
    fn apex_ns_answers_carry_in_zone_glue_only() {
        let a = q("api.example.com", RecordType::Ns);
        assert_eq!(a.additional.len(), 1);
    }
}

#[cfg(test)]
mod selection_tests {
    use super::*;
    use crate::geo::{Location, StaticLocator};
    use crate::zone::file::parse_zone;

    #[test]
    fn equal_client_classes_share_a_fingerprint_and_near_ones_do_not() {
        let place = |coords| ClientClass::Service {
            by: ClassBy::Place(Some(Place(Arc::new(loc("EU", "DE", "BE", coords))))),
            step: 0,
        };
        let berlin = place(Some((52.52, 13.40)));
        // Another copy of the same place (another Arc, as another network of it gives).
        let again = place(Some((52.52, 13.40)));
        assert_eq!(berlin, again);
        assert_eq!(berlin.fingerprint(), again.fingerprint());
        let mut seen = std::collections::HashSet::new();
        for class in [
            ClientClass::Anyone,
            ClientClass::Unprepared,
            berlin.clone(),
            place(Some((13.40, 52.52))),
            place(Some((52.52, 13.41))),
            place(None),
            ClientClass::Service {
                by: ClassBy::Place(None),
                step: 0,
            },
            ClientClass::Service {
                by: ClassBy::Nothing,
                step: 0,
            },
            ClientClass::Service {
                by: ClassBy::Nothing,
                step: 1,
            },
            ClientClass::Service {
                by: ClassBy::Network("192.0.2.0".parse().unwrap()),
                step: 0,
            },
            ClientClass::Service {
                by: ClassBy::Network("192.0.2.0".parse().unwrap()),
                step: 1,
            },
            ClientClass::Service {
                by: ClassBy::Network("2001:db8::".parse().unwrap()),
                step: 0,
            },
        ] {
            assert!(
                seen.insert(class.fingerprint()),
                "{class:?} shares a fingerprint"
            );
        }
    }

    fn loc(continent: &str, country: &str, sub: &str, coords: Option<(f64, f64)>) -> Location {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Location {
            continent: s(continent),
            country: s(country),
            subdivision: s(sub),
            coordinates: coords,
        }
    }

    /// Network → location table the tests rely on.
    fn locator() -> StaticLocator {
        let e = |net: &str, l: Location| (net.parse().unwrap(), l);
        StaticLocator {
            entries: vec![
                e("81.2.69.0/24", loc("EU", "GB", "ENG", Some((51.5, -0.1)))),
                e("8.8.8.0/24", loc("NA", "US", "CA", Some((37.4, -122.1)))),
                e("13.107.0.0/16", loc("NA", "US", "NY", Some((40.7, -74.0)))),
                e("1.1.1.0/24", loc("OC", "AU", "", Some((-33.9, 151.2)))),
                e("202.12.27.0/24", loc("AS", "JP", "", Some((35.7, 139.7)))),
                e("2a02:d180::/29", loc("EU", "DE", "", Some((51.5, 10.5)))),
                e("2001:218::/32", loc("AS", "JP", "", None)),
                e("2.3.3.0/24", loc("EU", "", "", None)),
                // Equidistant from fra2 and fra: the zone file's order breaks the tie.
                e("100.64.0.0/24", loc("EU", "DE", "", Some((50.11, 8.68)))),
            ],
        }
    }

    fn zone(service: &str) -> Zone {
        let text = format!(
            "
zone: api.example.com
soa: {{ primary: ns1, contact: hostmaster.example.com }}
nameservers: {{ ns1: [192.0.2.53] }}
datacenters:
  fra: {{ location: [50.11, 8.68] }}
  iad: {{ location: [38.95, -77.45] }}
  sin: {{ location: [1.35, 103.82] }}
  sjc: {{ location: [37.34, -121.89] }}
  fra2: {{ location: [50.11, 8.68] }}
records:
  www:
    service:
{service}
"
        );
        parse_zone(&text, "t.yaml").unwrap()
    }

    const ENDPOINTS: &str = "      endpoints:
        fra: [10.0.1.1, 10.0.1.2, \"2001:db8:1::1\"]
        iad: [10.0.2.1]
        sin: [10.0.3.1, \"2001:db8:3::1\"]
        sjc: [10.0.4.1]
        fra2: [10.0.5.1]";

    struct Down(Vec<IpAddr>);
    impl Health for Down {
        fn endpoint_up(&self, _: &Service, _: &str, ip: IpAddr) -> bool {
            !self.0.contains(&ip)
        }
    }

    fn run(
        zone: &Zone,
        addr: &str,
        rtype: RecordType,
        health: &dyn Health,
        rotation: usize,
    ) -> Selection {
        let service = zone.nodes[&Name::parse("www.api.example.com").unwrap()]
            .service
            .clone()
            .unwrap();
        let loc = locator();
        let client = Client {
            addr: addr.parse().unwrap(),
            ecs_prefix: None,
            locator: &loc,
            health,
            rotation,
        };
        select(zone, &service, rtype, &client)
    }

    fn dc_order(zone: &Zone, sel: &Selection) -> Vec<String> {
        let service = zone.nodes[&Name::parse("www.api.example.com").unwrap()]
            .service
            .clone()
            .unwrap();
        sel.candidates
            .iter()
            .map(|c| zone.datacenters[service.dcs[c.dc].dc].name.to_string())
            .collect()
    }

    fn chosen(zone: &Zone, sel: &Selection) -> String {
        dc_order(zone, sel)[sel.used[0]].clone()
    }

    #[test]
    fn nearest_orders_by_distance() {
        let z = zone(&format!("      answers: 1\n{ENDPOINTS}"));
        let cases: &[(&str, RecordType, &str, u8)] = &[
            ("81.2.69.7", RecordType::A, "fra", 24),
            ("13.107.1.1", RecordType::A, "iad", 16),
            ("8.8.8.8", RecordType::A, "sjc", 24),
            ("1.1.1.1", RecordType::A, "sin", 24),
            ("202.12.27.33", RecordType::A, "sin", 24),
            // IPv6 client in Germany; AAAA answer from fra, scope capped at /56 (network is /29).
            ("2a02:d180::1", RecordType::Aaaa, "fra", 29),
            // Japan without coordinates: the country centroid places it; sin is nearest.
            ("2001:218::1", RecordType::Aaaa, "sin", 32),
            // Unlocated, and continent-only without coordinates: the zone file's order.
            ("192.0.2.1", RecordType::A, "fra", 24),
            ("2.3.3.3", RecordType::A, "fra", 24),
            // A tie between fra and fra2 goes to the one listed first.
            ("100.64.0.1", RecordType::A, "fra", 24),
        ];
        for (addr, rtype, dc, scope) in cases {
            let sel = run(&z, addr, *rtype, &AllUp, 0);
            assert_eq!(chosen(&z, &sel), *dc, "{addr}");
            assert_eq!(sel.scope, *scope, "{addr}");
        }
        let sel = run(&z, "81.2.69.7", RecordType::A, &AllUp, 0);
        assert_eq!(dc_order(&z, &sel), ["fra", "fra2", "iad", "sjc", "sin"]);
    }

    #[test]
    fn dcs_without_the_family_are_skipped() {
        let z = zone(&format!("      answers: 1\n{ENDPOINTS}"));
        // Australia's nearest is sin, which has IPv6; iad has none, so an AAAA from New York
        // skips iad and sjc and gets the nearest DC that has one.
        let sel = run(&z, "13.107.1.1", RecordType::Aaaa, &AllUp, 0);
        assert_eq!(chosen(&z, &sel), "fra");
        assert_eq!(
            sel.addresses.as_slice(),
            ["2001:db8:1::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn geo_rules_most_specific_wins() {
        let z = zone(&format!(
            "      answers: 1
      geo:
        EU: [iad, fra]
        NA-US: iad
        NA-US-CA: [sjc]
        AS: [sin]
        default: [fra]
{ENDPOINTS}"
        ));
        let cases: &[(&str, &str, &str)] = &[
            ("81.2.69.7", "iad", "EU"),
            ("13.107.1.1", "iad", "NA-US"),
            ("8.8.8.8", "sjc", "NA-US-CA"),
            ("202.12.27.33", "sin", "AS"),
            ("1.1.1.1", "fra", "default"),
            ("192.0.2.1", "fra", "default"),
        ];
        for (addr, dc, rule) in cases {
            let sel = run(&z, addr, RecordType::A, &AllUp, 0);
            assert_eq!(chosen(&z, &sel), *dc, "{addr}");
            assert!(
                matches!(&sel.candidates[0].reason, Reason::Rule(l, 0) if &**l == *rule),
                "{addr}: {:?}",
                sel.candidates[0].reason
            );
        }
        // After the rule's list, the rest follow by distance.
        let sel = run(&z, "81.2.69.7", RecordType::A, &AllUp, 0);
        assert_eq!(dc_order(&z, &sel), ["iad", "fra", "fra2", "sjc", "sin"]);
        // When the rule's DCs are down, the nearest remaining one answers.
        let down = Down(vec![
            "10.0.2.1".parse().unwrap(),
            "10.0.1.1".parse().unwrap(),
            "10.0.1.2".parse().unwrap(),
        ]);
        let sel = run(&z, "81.2.69.7", RecordType::A, &down, 0);
        assert_eq!(chosen(&z, &sel), "fra2");
    }

    #[test]
    fn geo_default_may_be_nearest() {
        let z = zone(&format!(
            "      answers: 1\n      geo: {{ AS: [fra], default: nearest }}\n{ENDPOINTS}"
        ));
        assert_eq!(
            chosen(&z, &run(&z, "1.1.1.1", RecordType::A, &AllUp, 0)),
            "sin"
        );
        assert_eq!(
            chosen(&z, &run(&z, "202.12.27.33", RecordType::A, &AllUp, 0)),
            "fra"
        );
    }

    #[test]
    fn failover_ignores_location_and_has_scope_zero() {
        let z = zone(&format!(
            "      answers: 1\n      policy: failover\n{ENDPOINTS}"
        ));
        for addr in ["81.2.69.7", "1.1.1.1", "8.8.8.8"] {
            let sel = run(&z, addr, RecordType::A, &AllUp, 0);
            assert_eq!(chosen(&z, &sel), "fra");
            assert_eq!(sel.scope, 0);
            assert!(
                sel.located.is_none(),
                "failover must not need a GeoIP lookup"
            );
        }
        let down = Down(vec![
            "10.0.1.1".parse().unwrap(),
            "10.0.1.2".parse().unwrap(),
        ]);
        assert_eq!(
            chosen(&z, &run(&z, "1.1.1.1", RecordType::A, &down, 0)),
            "iad"
        );
    }

    #[test]
    fn weighted_splits_by_weight_and_is_stable_per_network() {
        let z = zone(&format!(
            "      answers: 1\n      weights: {{ fra: 3, iad: 1, sin: 0, sjc: 0, fra2: 0 }}\n{ENDPOINTS}"
        ));
        let mut counts = std::collections::HashMap::new();
        let n = 20_000u32;
        for i in 0..n {
            let addr = std::net::Ipv4Addr::from(0x0b00_0000 + (i << 8) + 7).to_string();
            let sel = run(&z, &addr, RecordType::A, &AllUp, 0);
            assert_eq!(sel.scope, 24);
            let dc = chosen(&z, &sel);
            // Another address in the same /24 gets the same DC.
            let same_net = std::net::Ipv4Addr::from(0x0b00_0000 + (i << 8) + 200).to_string();
            assert_eq!(
                chosen(&z, &run(&z, &same_net, RecordType::A, &AllUp, 0)),
                dc
            );
            *counts.entry(dc).or_insert(0u32) += 1;
        }
        let share = |dc: &str| f64::from(*counts.get(dc).unwrap_or(&0)) / f64::from(n);
        assert!((share("fra") - 0.75).abs() < 0.02, "fra {}", share("fra"));
        assert!((share("iad") - 0.25).abs() < 0.02, "iad {}", share("iad"));
        assert_eq!(share("sin"), 0.0);

        // When fra is down only its clients move; iad's stay.
        let down = Down(vec![
            "10.0.1.1".parse().unwrap(),
            "10.0.1.2".parse().unwrap(),
        ]);
        for i in 0..2_000u32 {
            let addr = std::net::Ipv4Addr::from(0x0b00_0000 + (i << 8) + 7).to_string();
            let before = chosen(&z, &run(&z, &addr, RecordType::A, &AllUp, 0));
            let after = chosen(&z, &run(&z, &addr, RecordType::A, &down, 0));
            if before == "iad" {
                assert_eq!(after, "iad");
            }
            assert_ne!(after, "fra");
        }
    }

    #[test]
    fn answers_rotate_and_fill() {
        let z = zone(&format!("      answers: 2\n{ENDPOINTS}"));
        let ips = |sel: &Selection| {
            sel.addresses
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ips(&run(&z, "81.2.69.7", RecordType::A, &AllUp, 0)),
            ["10.0.1.1", "10.0.1.2"]
        );
        assert_eq!(
            ips(&run(&z, "81.2.69.7", RecordType::A, &AllUp, 1)),
            ["10.0.1.2", "10.0.1.1"]
        );
        // iad has one endpoint: without fill the answer has one address.
        assert_eq!(
            ips(&run(&z, "13.107.1.1", RecordType::A, &AllUp, 0)),
            ["10.0.2.1"]
        );
        let z = zone(&format!("      answers: 2\n      fill: true\n{ENDPOINTS}"));
        assert_eq!(
            ips(&run(&z, "13.107.1.1", RecordType::A, &AllUp, 0)),
            ["10.0.2.1", "10.0.4.1"]
        );
        // A down endpoint is left out of its DC's answer.
        let down = Down(vec!["10.0.1.1".parse().unwrap()]);
        let sel = run(&z, "81.2.69.7", RecordType::A, &down, 0);
        assert_eq!(ips(&sel), ["10.0.1.2", "10.0.5.1"]);
        assert!(sel.degraded);
    }

    #[test]
    fn when_all_down_policies() {
        let all: Vec<IpAddr> = [
            "10.0.1.1", "10.0.1.2", "10.0.2.1", "10.0.3.1", "10.0.4.1", "10.0.5.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let down = Down(all);
        let z = zone(&format!("      answers: 1\n{ENDPOINTS}"));
        let sel = run(&z, "1.1.1.1", RecordType::A, &down, 0);
        assert!(sel.all_down);
        // serve_all fails open: the nearest DC as if everything were up.
        assert_eq!(
            sel.addresses.as_slice(),
            ["10.0.3.1".parse::<IpAddr>().unwrap()]
        );
        let z = zone(&format!(
            "      answers: 1\n      when_all_down: nodata\n{ENDPOINTS}"
        ));
        assert!(
            run(&z, "1.1.1.1", RecordType::A, &down, 0)
                .addresses
                .is_empty()
        );
    }

    /// Health for ramp tests: DCs restored at given times, a settable clock, some endpoints down.
    struct Ramping {
        restored: Vec<(&'static str, u64)>,
        now: std::sync::atomic::AtomicU64,
        down: Vec<IpAddr>,
    }

    impl Health for Ramping {
        fn endpoint_up(&self, _: &Service, _: &str, ip: IpAddr) -> bool {
            !self.down.contains(&ip)
        }
        fn dc_restored_ms(&self, _: &Service, dc: &str, _: &[IpAddr]) -> u64 {
            self.restored
                .iter()
                .find(|(d, _)| *d == dc)
                .map_or(0, |(_, at)| *at)
        }
        fn now_ms(&self) -> u64 {
            self.now.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    #[test]
    fn the_ramp_curve_and_ttl() {
        // (elapsed, ramp, share)
        let cases: &[(u64, u64, Option<f64>)] = &[
            (0, 60_000, Some(0.1)),
            (15_000, 60_000, Some(0.325)),
            (30_000, 60_000, Some(0.55)),
            (45_000, 60_000, Some(0.775)),
            (59_999, 60_000, Some(0.1 + 0.9 * 59_999.0 / 60_000.0)),
            (60_000, 60_000, None),
            (3_600_000, 300_000, None),
        ];
        for (elapsed, ramp, want) in cases {
            let got = ramp_share(*elapsed, *ramp);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{elapsed}: {g} != {w}"),
                (g, w) => assert_eq!(g, *w, "{elapsed}"),
            }
        }
        let s = std::time::Duration::from_secs;
        assert_eq!(ramp_ttl(s(60)), 6);
        assert_eq!(ramp_ttl(s(300)), 30);
        assert_eq!(ramp_ttl(s(5)), 1, "at least a second");
    }

    #[test]
    fn ramp_positions_are_stable_and_spread() {
        // The same on every node, run and build: a literal, not a second computation.
        let p =
            |net: &str, dc: &str| ramp_position(net.parse().unwrap(), "www.api.example.com", dc);
        assert_eq!(p("192.0.2.0", "fra"), RAMP_POSITION_192_0_2_0_FRA);
        assert_ne!(
            p("192.0.2.0", "fra"),
            p("192.0.2.0", "iad"),
            "each DC its own slice"
        );
        assert_ne!(p("192.0.2.0", "fra"), p("192.0.3.0", "fra"));
        // Uniform enough that a share of the networks is that share of them: 10,000 /24s.
        let below: usize = (0..10_000u32)
            .filter(|i| {
                let net = std::net::Ipv4Addr::from(0x0b00_0000 + (i << 8));
                ramp_position(net.into(), "www.api.example.com", "fra") < 0.3
            })
            .count();
        assert!(
            (2_850..=3_150).contains(&below),
            "{below} of 10,000 below 0.3"
        );
    }

    const RAMP_POSITION_192_0_2_0_FRA: f64 = 0.718_588_332_904_989_8;

    #[test]
    fn a_returning_dc_gets_its_share_of_networks_and_keeps_them() {
        let z = zone(&format!(
            "      answers: 1\n      policy: failover\n      ramp: 60s\n{ENDPOINTS}"
        ));
        let health = Ramping {
            restored: vec![("fra", 1_000_000)],
            now: 0.into(),
            down: Vec::new(),
        };
        // 1,000 client networks, each asked from an address inside its /24.
        let clients: Vec<String> = (0..1_000u32)
            .map(|i| std::net::Ipv4Addr::from(0x0b00_0000 + (i << 8) + 7).to_string())
            .collect();
        let mut moved: Vec<bool> = vec![false; clients.len()];
        for elapsed in [0, 10_000, 20_000, 30_000, 40_000, 50_000, 59_000] {
            health
                .now
                .store(1_000_000 + elapsed, std::sync::atomic::Ordering::Relaxed);
            let want = ramp_share(elapsed, 60_000).unwrap();
            let mut to_fra = 0;
            for (i, addr) in clients.iter().enumerate() {
                let sel = run(&z, addr, RecordType::A, &health, 0);
                let fra = chosen(&z, &sel) == "fra";
                // The others keep the next DC.
                assert!(fra || chosen(&z, &sel) == "iad", "{addr}");
                assert!(fra || !moved[i], "{addr} moved back at {elapsed} ms");
                moved[i] |= fra;
                to_fra += usize::from(fra);
                assert_eq!(sel.scope, 24, "the answer hangs on the /24");
                assert_eq!(sel.ttl, 6, "a tenth of the ramp");
            }
            let share = to_fra as f64 / 1_000.0;
            assert!(
                (share - want).abs() <= 0.03,
                "at {elapsed} ms: {share} of the networks, the curve says {want}"
            );
        }
        // Over: everyone, with the failover policy's scope and the service's TTL.
        health
            .now
            .store(1_060_000, std::sync::atomic::Ordering::Relaxed);
        let sel = run(&z, &clients[0], RecordType::A, &health, 0);
        assert_eq!(
            (chosen(&z, &sel).as_str(), sel.scope, sel.ttl),
            ("fra", 0, 30)
        );
        assert!(
            clients
                .iter()
                .all(|c| chosen(&z, &run(&z, c, RecordType::A, &health, 0)) == "fra")
        );
    }

    #[test]
    fn a_ramping_dc_serves_everyone_when_nothing_after_it_is_up() {
        let z = zone(&format!(
            "      answers: 1\n      policy: failover\n      ramp: 60s\n{ENDPOINTS}"
        ));
        let down = ["10.0.2.1", "10.0.3.1", "10.0.4.1", "10.0.5.1"];
        let health = Ramping {
            restored: vec![("fra", 1_000_000)],
            now: 1_000_000.into(),
            down: down.iter().map(|a| a.parse().unwrap()).collect(),
        };
        for i in 0..100u32 {
            let addr = std::net::Ipv4Addr::from(0x0b00_0000 + (i << 8)).to_string();
            assert_eq!(
                chosen(&z, &run(&z, &addr, RecordType::A, &health, 0)),
                "fra"
            );
        }
    }

    /// Health with a latency steering table.
    struct Steered(crate::health::merge::Steering);

    impl Health for Steered {
        fn endpoint_up(&self, _: &Service, _: &str, _: IpAddr) -> bool {
            true
        }
        fn now_ms(&self) -> u64 {
            10_000
        }
        fn latency_order(&self, service: &Name, region: &str) -> Option<&[DcRtt]> {
            self.0.order(service, region)
        }
    }

    #[test]
    fn latency_orders_by_the_client_regions_rtt_or_falls_back_to_distance() {
        use crate::health::merge::{RegionOrder, Steering};
        // `zone()` places no regions: this zone does.
        let yaml = format!(
            "
zone: api.example.com
soa: {{ primary: ns1, contact: hostmaster.example.com }}
nameservers: {{ ns1: [192.0.2.53] }}
regions:
  eu: {{ location: [51.5, -0.1] }}
  us: {{ location: [37.4, -122.1] }}
datacenters:
  fra: {{ location: [50.11, 8.68] }}
  iad: {{ location: [38.95, -77.45] }}
  sin: {{ location: [1.35, 103.82] }}
  sjc: {{ location: [37.34, -121.89] }}
  fra2: {{ location: [50.11, 8.68] }}
records:
  www:
    service:
      answers: 1
      policy: latency
{ENDPOINTS}
"
        );
        let z = parse_zone(&yaml, "t.yaml").unwrap();
        let dc = |name: &str, i: usize, rtt_ms: f64| DcRtt {
            dc: i,
            name: Arc::from(name),
            rtt_ms,
            heard_ms: 9_500,
        };
        let mut steering = Steering::default();
        steering.services.insert(
            Name::parse("www.api.example.com").unwrap(),
            vec![RegionOrder {
                region: Arc::from("eu"),
                dcs: vec![dc("iad", 1, 20.0), dc("fra", 0, 80.0)],
            }],
        );
        let health = Steered(steering);
        // London: region eu measured iad fastest, though fra is nearer; the rest by distance.
        let sel = run(&z, "81.2.69.7", RecordType::A, &health, 0);
        assert_eq!(dc_order(&z, &sel), ["iad", "fra", "fra2", "sjc", "sin"]);
        assert_eq!(
            sel.candidates[0].reason,
            Reason::Latency {
                rtt_ms: 20.0,
                age_ms: 500
            }
        );
        let nearest = run(&z, "81.2.69.7", RecordType::A, &AllUp, 0);
        assert_eq!(sel.scope, nearest.scope, "ECS scope as for nearest");
        // California: region us has no measurement: nearest.
        let sel = run(&z, "8.8.8.8", RecordType::A, &health, 0);
        assert_eq!(chosen(&z, &sel), "sjc");
        assert_eq!(
            sel.steered,
            Some(super::Steered {
                region: Arc::from("us"),
                measured: false
            })
        );
        // Unplaced: the zone's order, as nearest.
        let sel = run(&z, "192.0.2.1", RecordType::A, &health, 0);
        assert_eq!(
            (chosen(&z, &sel).as_str(), sel.steered.clone()),
            ("fra", None)
        );
    }
}
