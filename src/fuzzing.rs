//! The properties the fuzz targets check, one `check_*` function per target. They live here so
//! that the libFuzzer targets in `fuzz/` and the stable regression test
//! `tests/fuzz_regressions.rs` (which replays the seed corpora and every crash input ever found)
//! run exactly the same code. Each function panics, with the input in the message, when a
//! property fails; an input the code under test rejects is not a failure.
//!
//! Not part of the server: hidden from the docs and used by nothing in `src/` but itself.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType as HRecordType;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

use crate::cluster::Exchange;
use crate::dns::answer::{self, AllUp, Client, QType};
use crate::dns::{Handler, MAX_UDP_PAYLOAD, wire};
use crate::geo::{self, GeoDb, NoLocation};
use crate::health::drain::{Drain, DrainSet};
use crate::health::merge::{
    self, EffectiveHealth, EndpointKey, MergeSettings, Merged, Quorum, Verdict,
};
use crate::state::Snapshots;
use crate::telemetry::metrics::Metrics;
use crate::zone::file::{self, MAX_TTL, ZoneErrors};
use crate::zone::key::{self, Algorithm, ZoneKey};
use crate::zone::{Dnssec, Name, Policy, RData, RecordType, Zone, ZoneSet};

/// The zones the DNS targets answer from: one of everything the zone format supports (every
/// policy, CNAME chains in and out of the zone, a delegation with glue, wildcard-looking names, a
/// service whose endpoints are all down, RRsets too big for 512 and 1232 bytes), and a second
/// zone beside it.
pub const FIXTURE_ZONES: [&str; 2] = [
    include_str!("../tests/fixtures/zones/api.example.com.yaml"),
    include_str!("../tests/fixtures/zones/example.net.yaml"),
];

/// The fixed server the DNS targets query: `FIXTURE_ZONES`, a GeoIP database, and a health view
/// where the `down` and `gone` services have every endpoint down and `drained` has `fra`
/// drained. Build it once per process: it is immutable, and building takes milliseconds.
pub struct DnsFixture {
    handler: Handler,
    metrics: Arc<Metrics>,
    /// The signing key of `api.example.com` in the signed fixture (`DnsFixture::signed`).
    key: Option<Arc<ZoneKey>>,
}

impl DnsFixture {
    /// `geoip` is the bytes of a MaxMind database (the fuzz target and the regression test use
    /// `tests/fixtures/geoip/GeoIP2-City-Test.mmdb`).
    pub fn new(geoip: Vec<u8>) -> DnsFixture {
        DnsFixture::build(geoip, None)
    }

    /// The same fixture with `api.example.com` signed (issue 15) by a key made now with
    /// `algorithm`: DO=1 queries get RRSIGs and compact denial, and `check_paths_agree` also
    /// checks every RRSIG of the answers against the key.
    pub fn signed(geoip: Vec<u8>, algorithm: Algorithm) -> DnsFixture {
        let apex = Name::parse("api.example.com").expect("a literal name");
        let (text, _) = key::generate(&apex, algorithm).expect("a key is made");
        let key = ZoneKey::parse(&text, "fixture.private").expect("a key just made parses");
        DnsFixture::build(geoip, Some(Arc::new(key)))
    }

    fn build(geoip: Vec<u8>, key: Option<Arc<ZoneKey>>) -> DnsFixture {
        let zones = ZoneSet {
            zones: FIXTURE_ZONES
                .iter()
                .enumerate()
                .map(|(i, yaml)| {
                    let zone = file::parse_zone(yaml, &format!("fixture-{i}.yaml"));
                    // The fixture is a constant this module's tests load.
                    let mut zone = zone.expect("the fixture zones are valid");
                    if let Some(key) = key.as_ref().filter(|k| k.zone == zone.apex) {
                        zone.dnssec = Some(Arc::new(Dnssec {
                            signing: key.clone(),
                            published: Vec::new(),
                            dnskey_ttl: 3600,
                        }));
                    }
                    Arc::new(zone)
                })
                .collect(),
        };
        let geo = GeoDb::from_bytes("fixture.mmdb", geoip).expect("the fixture GeoIP database");
        let down: Vec<IpAddr> = ["203.0.113.99", "198.51.100.99", "192.0.2.99"]
            .iter()
            .map(|a| a.parse().expect("a literal address"))
            .collect();
        let targets = zones.probe_targets();
        let mut merged = Merged::default();
        for (addr, check) in &targets {
            Arc::make_mut(&mut merged.endpoints).insert(
                EndpointKey::new(*addr, check),
                Verdict {
                    up: !down.contains(addr),
                    down_votes: usize::from(down.contains(addr)),
                    counted_votes: 1,
                    ballots: Default::default(),
                    restored_ms: 0,
                },
            );
        }
        let mut drains = DrainSet::default();
        drains.apply(Drain {
            dc: "fra".into(),
            service: Some("drained.api.example.com".into()),
            reason: "fuzzing".into(),
            active: true,
            expires_ms: None,
            issued_ms: 1,
            issued_by: "fuzz".into(),
        });
        let health = EffectiveHealth::new(true, targets, merged, drains, 2);
        let metrics = Arc::new(Metrics::new());
        let snapshots = Snapshots::new(zones, Some(geo), metrics.clone());
        snapshots.store_health(Arc::new(health));
        DnsFixture {
            handler: Handler::new(Arc::new(snapshots)),
            metrics,
            key,
        }
    }

    /// The fixture node's metrics (the prepared answers' hits and misses among them).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers `msg` as the server would; `None` when it sends nothing.
    pub fn respond(&self, msg: &[u8], src: SocketAddr, tcp: bool) -> Option<Vec<u8>> {
        let (mut out, mut name) = (Vec::new(), String::new());
        self.handler
            .respond(msg, src, tcp, &mut out, &mut name)
            .map(|_| out)
    }
}

/// Target `dns_request`: the first byte picks the transport (bit 0: TCP) and the client's
/// address family (bit 1: IPv6), the rest is the message. Whatever arrives, the server does not
/// panic, answers nothing that is not a query, and any response it sends passes
/// `check_response`.
pub fn check_dns_request(fixture: &DnsFixture, data: &[u8]) {
    let Some((&mode, msg)) = data.split_first() else {
        return;
    };
    let tcp = mode & 1 != 0;
    // Addresses the fixture database locates (GB and a Swedish IPv6 network).
    let src: SocketAddr = if mode & 2 != 0 {
        (Ipv6Addr::new(0x2001, 0x218, 0, 0, 0, 0, 0, 1), 5353).into()
    } else {
        (Ipv4Addr::new(81, 2, 69, 160), 5353).into()
    };
    let response = fixture.respond(msg, src, tcp);
    check_response(msg, tcp, response.as_deref());
    check_paths_agree(fixture, msg, src, tcp);
}

/// Issue 14's differential check: a query the lean codec reads gets the same response from
/// every path: the lean path preparing the answer (a miss), the lean path copying it (a hit),
/// the lean path without prepared answers, and hickory's full parser and encoder. Responses are
/// compared decoded (header bits, rcode, question, every record of every section with names in
/// lower case, EDNS payload, DO and options), not byte for byte: the encoders compress names
/// differently. For the signed fixture (issue 15) that includes the RRSIGs and NSECs of DO=1
/// answers (the paths share one signature cache, so equal answers carry equal signatures), and
/// every RRSIG of the response must verify with the zone's key over its RRset as received.
pub fn check_paths_agree(fixture: &DnsFixture, msg: &[u8], src: SocketAddr, tcp: bool) {
    let _ = check_paths_agree_with(fixture, None, msg, src, tcp);
}

/// `check_paths_agree`, and also the answer from `shared`, a view whose prepared answers were
/// filled by earlier queries (other names, types and clients): what one UDP thread serves.
/// Returns how many RRSIGs were verified (0 for the unsigned fixture).
pub fn check_paths_agree_with(
    fixture: &DnsFixture,
    shared: Option<&mut crate::dns::View<'_>>,
    msg: &[u8],
    src: SocketAddr,
    tcp: bool,
) -> usize {
    let mut scratch = String::new();
    if !matches!(wire::parse(msg, &mut scratch), wire::Parsed::Lean(_)) {
        return 0;
    }
    let handler = &fixture.handler;
    let answer = |view: &mut crate::dns::View<'_>| {
        handler.set_rotation(7);
        let (mut out, mut name) = (Vec::new(), String::new());
        handler
            .respond_with(view, msg, src, tcp, &mut out, &mut name)
            .map(|_| out)
    };
    let mut prepared = handler.view();
    let miss = answer(&mut prepared);
    let hit = answer(&mut prepared);
    let fresh = answer(&mut handler.view_unprepared());
    let shared = shared.map(answer);
    handler.set_rotation(7);
    let (mut out, mut name) = (Vec::new(), String::new());
    let full = handler
        .respond_full(msg, src, tcp, &mut out, &mut name)
        .map(|_| out);
    let reference = decoded(full.as_deref());
    let paths = [
        ("prepared (miss)", Some(miss)),
        ("prepared (hit)", Some(hit)),
        ("lean", Some(fresh)),
        ("prepared (shared)", shared),
    ];
    for (path, response) in paths.into_iter().filter_map(|(p, r)| Some((p, r?))) {
        let got = decoded(response.as_deref());
        assert!(
            got == reference,
            "the {path} path and the full path differ for {msg:02x?} ({} from {src}):\n\
             {path}: {got:#?}\nfull: {reference:#?}",
            if tcp { "TCP" } else { "UDP" },
        );
    }
    match (&fixture.key, &full) {
        (Some(key), Some(full)) => check_signatures(full, key, crate::clock::now_ms() / 1000)
            .unwrap_or_else(|why| {
                panic!("a signature does not verify for {msg:02x?} from {src}: {why}")
            }),
        _ => 0,
    }
}

/// Every RRSIG in `response` (a wire message) made by `key`, valid at `now_s` and verifying over
/// the RRset it covers in its section, as a validator reads it (RFC 4034 sections 3.1.8.1 and
/// 6): the RRSIG's fields, then each record of the set in canonical form (owner lower case,
/// the RRSIG's original TTL, RDATA without compression), sorted by RDATA. Returns how many
/// RRSIGs were checked.
pub fn check_signatures(response: &[u8], key: &ZoneKey, now_s: u64) -> Result<usize, String> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let msg = Message::from_vec(response).map_err(|e| format!("unparsable: {e}"))?;
    let canonical_owner = |r: &hickory_proto::rr::Record| -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        let mut e = BinEncoder::new(&mut buf);
        e.set_canonical_form(true);
        r.name
            .to_lowercase()
            .emit(&mut e)
            .map_err(|e| e.to_string())?;
        Ok(buf)
    };
    let canonical_rdata = |r: &hickory_proto::rr::Record| -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        let mut e = BinEncoder::new(&mut buf);
        e.set_canonical_form(true);
        r.data.emit(&mut e).map_err(|e| e.to_string())?;
        Ok(buf)
    };
    let mut checked = 0;
    for section in [&msg.answers, &msg.authorities, &msg.additionals] {
        for sig in section
            .iter()
            .filter(|r| r.record_type() == HRecordType::RRSIG)
        {
            let rdata = canonical_rdata(sig)?;
            let at = |i: usize| rdata.get(i).copied().unwrap_or(0);
            let u16_at = |i: usize| u16::from_be_bytes([at(i), at(i + 1)]);
            let u32_at = |i: usize| u32::from_be_bytes([at(i), at(i + 1), at(i + 2), at(i + 3)]);
            let covered = u16_at(0);
            let (expiration, inception) = (u64::from(u32_at(8)), u64::from(u32_at(12)));
            if at(2) != key.algorithm.number() || u16_at(16) != key.tag {
                return Err(format!("RRSIG of {} by another key", sig.name));
            }
            // Serial-number time; the fixture's clock is in this century, not near a wrap.
            if !(inception <= now_s && now_s < expiration) {
                return Err(format!(
                    "RRSIG of {} valid {inception}..{expiration}, not at {now_s}",
                    sig.name
                ));
            }
            let signer_end = wire::skip_name(&rdata, 18)
                .ok_or_else(|| format!("RRSIG of {} without a signer name", sig.name))?;
            let original_ttl = u32_at(4);
            let mut set: Vec<Vec<u8>> = section
                .iter()
                .filter(|r| {
                    u16::from(r.record_type()) == covered
                        && r.name.to_lowercase() == sig.name.to_lowercase()
                })
                .map(canonical_rdata)
                .collect::<Result<_, _>>()?;
            if set.is_empty() {
                return Err(format!(
                    "RRSIG of {} covers type {covered}, not in its section",
                    sig.name
                ));
            }
            set.sort();
            set.dedup();
            let owner = canonical_owner(sig)?;
            let mut data = rdata[..signer_end].to_vec();
            for rd in &set {
                data.extend_from_slice(&owner);
                data.extend_from_slice(&covered.to_be_bytes());
                data.extend_from_slice(&1u16.to_be_bytes());
                data.extend_from_slice(&original_ttl.to_be_bytes());
                data.extend_from_slice(&(rd.len() as u16).to_be_bytes());
                data.extend_from_slice(rd);
            }
            if !key.verify(&data, &rdata[signer_end..]) {
                return Err(format!(
                    "the RRSIG of {} type {covered} does not verify over {} records",
                    sig.name,
                    set.len()
                ));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// A response as the differential check compares it.
fn decoded(response: Option<&[u8]>) -> Option<Vec<String>> {
    let bytes = response?;
    let Ok(msg) = Message::from_vec(bytes) else {
        return Some(vec![format!("unparsable: {bytes:02x?}")]);
    };
    let m = &msg.metadata;
    let mut out = vec![format!(
        "id {} qr {:?} opcode {:?} aa {} tc {} rd {} ra {} ad {} cd {} rcode {:?}",
        m.id,
        m.message_type,
        m.op_code,
        m.authoritative,
        m.truncation,
        m.recursion_desired,
        m.recursion_available,
        m.authentic_data,
        m.checking_disabled,
        m.response_code,
    )];
    for q in &msg.queries {
        out.push(format!("question {}", q).to_ascii_lowercase());
    }
    for (section, records) in [
        ("answer", &msg.answers),
        ("authority", &msg.authorities),
        ("additional", &msg.additionals),
    ] {
        for r in records {
            out.push(format!("{section} {r}").to_ascii_lowercase());
        }
    }
    if let Some(e) = &msg.edns {
        out.push(format!(
            "edns payload {} do {} version {} options {:?}",
            e.max_payload(),
            e.flags().dnssec_ok,
            e.version(),
            e.options()
        ));
    }
    Some(out)
}

/// What any response to `query` must satisfy:
/// - a message shorter than a header, or with QR set, gets no response (no reflection);
/// - a response parses, has QR set and the query's ID;
/// - when the query parses with one question and the response is not FORMERR, the response's
///   question is the query's (name compared case-insensitively, type, class);
/// - the response carries an OPT record only if the query did;
/// - over UDP it fits the client's payload size: 512 bytes without EDNS, the advertised size
///   (at least 512, at most `MAX_UDP_PAYLOAD`) with it.
///
/// Returns the parsed response.
pub fn check_response(query: &[u8], tcp: bool, response: Option<&[u8]>) -> Option<Message> {
    let ctx = || {
        format!(
            "query {} ({}), response {}",
            hex::encode(query),
            if tcp { "TCP" } else { "UDP" },
            response.map_or_else(|| "none".to_string(), hex::encode),
        )
    };
    let not_a_query = query.len() < 12 || query[2] & 0x80 != 0;
    let response = response?;
    assert!(
        !not_a_query,
        "answered a message that is not a query: {}",
        ctx()
    );
    let msg = match Message::from_vec(response) {
        Ok(m) => m,
        Err(e) => panic!("the response does not parse ({e}): {}", ctx()),
    };
    assert_eq!(
        msg.metadata.message_type,
        MessageType::Response,
        "QR clear in the response: {}",
        ctx()
    );
    assert_eq!(
        msg.metadata.id,
        u16::from_be_bytes([query[0], query[1]]),
        "the response's ID is not the query's: {}",
        ctx()
    );
    let parsed = Message::from_vec(query).ok();
    let opcode = (query[2] >> 3) & 0x0f;
    if opcode != 0 {
        // Issue 12: an opcode we do not implement gets NOTIMP, with the ID and opcode copied
        // and nothing else of the query's header (no RD or CD), and no question.
        let m = &msg.metadata;
        assert!(
            m.response_code == ResponseCode::NotImp
                && u8::from(m.op_code) == opcode
                && !m.recursion_desired
                && !m.checking_disabled
                && !m.authoritative
                && msg.queries.is_empty(),
            "an opcode {opcode} query is not answered NOTIMP with the header alone: {}",
            ctx()
        );
    }
    if let (Some(q), Some(r)) = (parsed.as_ref().and_then(|q| q.edns.as_ref()), &msg.edns) {
        assert_eq!(
            r.flags().dnssec_ok,
            q.flags().dnssec_ok,
            "the DO bit is not the query's (RFC 3225 section 3): {}",
            ctx()
        );
    }
    if let Some(q) = &parsed
        && q.queries.len() == 1
        && opcode == 0
        && msg.metadata.response_code != ResponseCode::FormErr
    {
        let (asked, got) = (&q.queries[0], msg.queries.first());
        let same = got.is_some_and(|got| {
            msg.queries.len() == 1
                && got
                    .name()
                    .to_ascii()
                    .eq_ignore_ascii_case(&asked.name().to_ascii())
                && got.query_type() == asked.query_type()
                && got.query_class() == asked.query_class()
        });
        assert!(
            same,
            "the response's question {:?} is not the query's {asked:?}: {}",
            msg.queries,
            ctx()
        );
    }
    // The query's EDNS payload size, when it has an OPT record: hickory's parser refuses some
    // queries the lean one reads (a malformed ECS option, answered FORMERR with OPT); those
    // neither reads get a bare header.
    let query_payload = match &parsed {
        Some(q) => q.edns.as_ref().map(|e| e.max_payload()),
        None => match wire::parse(query, &mut String::new()) {
            wire::Parsed::Lean(q) | wire::Parsed::BadEcs(q) => q.edns.map(|e| e.payload),
            _ => None,
        },
    };
    if msg.edns.is_some() {
        assert!(
            query_payload.is_some(),
            "OPT in the response to a query without one: {}",
            ctx()
        );
    }
    if !tcp {
        let limit = query_payload.map_or(512, |p| usize::from(p.clamp(512, MAX_UDP_PAYLOAD)));
        assert!(
            response.len() <= limit,
            "a {}-byte UDP response exceeds the client's {limit}: {}",
            response.len(),
            ctx()
        );
    }
    Some(msg)
}

/// Target `ecs_option`: `data` is the body of an EDNS Client Subnet option (RFC 7871 section 6).
/// An accepted option has a known family, a source prefix no longer than the address, exactly
/// ceil(source / 8) address bytes and no address bit set beyond the prefix. Wrapped into a query
/// (answered through the lean path, and through hickory's full path by a question name the lean
/// parser leaves to it), both paths agree with the option parser: FORMERR exactly when it rejects
/// the option, and otherwise the option echoed with the same family, source prefix and address.
pub fn check_ecs_option(fixture: &DnsFixture, data: &[u8]) {
    let ecs = wire::parse_ecs(data);
    if let Some(e) = ecs {
        let (family, bits) = match e.addr {
            IpAddr::V4(_) => (1, 32),
            IpAddr::V6(_) => (2, 128),
        };
        assert_eq!(
            u16::from_be_bytes([data[0], data[1]]),
            family,
            "family: {}",
            hex::encode(data)
        );
        assert!(e.source <= bits, "source too long: {}", hex::encode(data));
        assert_eq!(data[2], e.source, "source: {}", hex::encode(data));
        assert_eq!(
            data.len(),
            4 + usize::from(e.source).div_ceil(8),
            "address length: {}",
            hex::encode(data)
        );
        assert_eq!(
            geo::mask(e.addr, e.source),
            e.addr,
            "bits beyond the prefix: {}",
            hex::encode(data)
        );
    }
    // An option body must fit the OPT record of a UDP query.
    if data.len() > 1024 {
        return;
    }
    // The lean path reads `www.api.example.com`; `w w` (an octet it does not take) goes the
    // full way.
    for labels in [
        &[&b"www"[..], b"api", b"example", b"com"],
        &[b"w w", b"api", b"example", b"com"],
    ] {
        let query = ecs_query(labels, 1, data);
        if labels[0] == b"www" {
            let mut name = String::new();
            match (wire::parse(&query, &mut name), ecs) {
                (wire::Parsed::Lean(q), Some(e)) => assert_eq!(
                    q.edns.and_then(|x| x.ecs),
                    Some(e),
                    "lean parse of {}",
                    hex::encode(&query)
                ),
                (wire::Parsed::BadEcs(_), None) => {}
                (other, _) => panic!(
                    "lean parse of {} gave {other:?}, the option parser {ecs:?}",
                    hex::encode(&query)
                ),
            }
        }
        let src: SocketAddr = (Ipv4Addr::new(192, 0, 2, 1), 5353).into();
        let response = fixture.respond(&query, src, false);
        let Some(msg) = check_response(&query, false, response.as_deref()) else {
            panic!("no response to {}", hex::encode(&query));
        };
        let formerr = msg.metadata.response_code == ResponseCode::FormErr;
        let path = if labels[0] == b"www" { "lean" } else { "full" };
        match ecs {
            None => assert!(
                formerr,
                "the {path} path accepted ECS option {} the parser rejects: {msg:?}",
                hex::encode(data)
            ),
            Some(e) => {
                assert!(
                    !formerr,
                    "the {path} path rejected ECS option {} the parser accepts",
                    hex::encode(data)
                );
                let echo = msg
                    .edns
                    .as_ref()
                    .and_then(|x| match x.option(EdnsCode::Subnet) {
                        Some(EdnsOption::Subnet(cs)) => Some((cs.addr(), cs.source_prefix())),
                        _ => None,
                    });
                assert_eq!(
                    echo,
                    Some((e.addr, e.source)),
                    "the {path} path's ECS echo for {}",
                    hex::encode(data)
                );
            }
        }
    }
}

/// A query for `qtype` at the name made of `labels`, with EDNS (payload 1232) carrying one ECS
/// option with body `ecs`.
pub fn ecs_query(labels: &[&[u8]], qtype: u16, ecs: &[u8]) -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for l in labels {
        q.push(l.len() as u8);
        q.extend_from_slice(l);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    q.extend_from_slice(&(4 + ecs.len() as u16).to_be_bytes());
    q.extend_from_slice(&[0, 8]);
    q.extend_from_slice(&(ecs.len() as u16).to_be_bytes());
    q.extend_from_slice(ecs);
    q
}

/// Target `zone_yaml`: any text either loads into a zone whose invariants hold (see
/// `check_zone`) or is refused with at least one error naming the file.
pub fn check_zone_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match file::parse_zone(&text, "fuzz.yaml") {
        Ok(zone) => check_zone(&zone),
        Err(ZoneErrors(errors)) => {
            assert!(!errors.is_empty(), "refused without a reason: {text:?}");
            assert!(
                errors.iter().all(|e| e.file == "fuzz.yaml"),
                "an error without the file: {errors:?}"
            );
        }
    }
}

/// What a validated zone guarantees the query path (see `model`): names canonical and inside
/// the zone, TTLs in range, one RRset per type, CNAMEs alone, services with endpoints in defined
/// data centers and policies that index only their own DCs, delegations and empty non-terminals
/// consistent with the nodes. And it can be served: every name answers every type, and the
/// answer encodes into a message that parses.
pub fn check_zone(zone: &Zone) {
    let canonical = |n: &Name| {
        assert_eq!(
            Name::parse(n.as_str()).as_ref(),
            Ok(n),
            "not canonical: {n}"
        );
        assert!(n.wire_len() <= 255, "name too long: {n}");
    };
    assert!(!zone.apex.is_root(), "a root zone");
    canonical(&zone.apex);
    canonical(&zone.soa.mname);
    canonical(&zone.soa.rname);
    for ttl in [zone.default_ttl, zone.soa_ttl, zone.soa.minimum] {
        assert!(ttl <= MAX_TTL, "TTL {ttl}");
    }
    for dc in &zone.datacenters {
        assert!(!dc.name.is_empty(), "a data center without a name");
        assert!((-90.0..=90.0).contains(&dc.latitude), "{dc:?}");
        assert!((-180.0..=180.0).contains(&dc.longitude), "{dc:?}");
    }
    let apex_ns = zone
        .nodes
        .get(&zone.apex)
        .and_then(|n| n.rrset(RecordType::Ns));
    assert!(
        apex_ns.is_some_and(|s| !s.data.is_empty()),
        "no NS at the apex"
    );
    for (name, node) in &zone.nodes {
        canonical(name);
        assert!(name.is_subdomain_of(&zone.apex), "{name} outside the zone");
        for (i, set) in node.rrsets.iter().enumerate() {
            assert!(
                node.rrsets[..i].iter().all(|s| s.rtype != set.rtype),
                "{name}: two {} sets",
                set.rtype
            );
            assert!(!set.data.is_empty(), "{name}: empty {} set", set.rtype);
            assert!(set.ttl <= MAX_TTL, "{name}: TTL {}", set.ttl);
            for d in &set.data {
                assert_eq!(
                    d.record_type(),
                    set.rtype,
                    "{name}: {d:?} in a {} set",
                    set.rtype
                );
                match d {
                    RData::Cname(n) | RData::Ns(n) => canonical(n),
                    RData::Mx { exchange: n, .. } | RData::Srv { target: n, .. } => canonical(n),
                    _ => {}
                }
            }
        }
        if node.rrset(RecordType::Cname).is_some() {
            assert!(
                node.rrsets.len() == 1 && node.service.is_none(),
                "{name}: CNAME beside other data"
            );
            assert!(*name != zone.apex, "CNAME at the apex");
        }
        if let Some(s) = &node.service {
            assert_eq!(&s.name, name, "service name");
            assert!(
                node.rrset(RecordType::A).is_none() && node.rrset(RecordType::Aaaa).is_none(),
                "{name}: static addresses beside a service"
            );
            assert!(s.answers >= 1, "{name}: answers 0");
            assert!(s.ttl <= MAX_TTL && s.degraded_ttl <= s.ttl, "{name}: TTLs");
            assert!(!s.dcs.is_empty(), "{name}: a service without DCs");
            for (i, dc) in s.dcs.iter().enumerate() {
                assert!(dc.dc < zone.datacenters.len(), "{name}: DC index {}", dc.dc);
                assert!(
                    s.dcs[..i].iter().all(|o| o.dc != dc.dc),
                    "{name}: a DC twice"
                );
                assert!(!dc.endpoints.is_empty(), "{name}: a DC without endpoints");
                for (j, ip) in dc.endpoints.iter().enumerate() {
                    assert!(!dc.endpoints[..j].contains(ip), "{name}: {ip} twice");
                }
            }
            match &s.policy {
                Policy::Nearest | Policy::Failover => {}
                Policy::Latency => {
                    assert!(!zone.regions.is_empty(), "{name}: latency without regions");
                }
                Policy::Weighted(w) => {
                    assert_eq!(w.len(), s.dcs.len(), "{name}: weights");
                    assert!(w.iter().any(|w| *w > 0), "{name}: all weights 0");
                }
                Policy::Geo { rules, default } => {
                    for target in rules.iter().map(|r| &r.target).chain([default]) {
                        if let crate::zone::GeoTarget::Dcs(list) = target {
                            assert!(!list.is_empty(), "{name}: an empty geo target");
                            assert!(
                                list.iter().all(|i| *i < s.dcs.len()),
                                "{name}: geo target {list:?} out of range"
                            );
                        }
                    }
                }
            }
        }
    }
    for d in &zone.delegations {
        assert!(*d != zone.apex, "the apex as a delegation");
        assert!(
            zone.nodes
                .get(d)
                .and_then(|n| n.rrset(RecordType::Ns))
                .is_some(),
            "delegation {d} without NS"
        );
    }
    for e in &zone.empty_non_terminals {
        assert!(!zone.nodes.contains_key(e), "{e} is both a node and empty");
        assert!(
            e.is_subdomain_of(&zone.apex) && *e != zone.apex,
            "empty non-terminal {e} outside the zone"
        );
    }
    check_zone_serves(zone);
}

/// Answers every type at (up to 64 of) the zone's names, and one name below it, and checks that
/// each answer encodes into a message that parses, with the question as asked.
fn check_zone_serves(zone: &Zone) {
    let zones = ZoneSet {
        zones: vec![Arc::new(zone.clone())],
    };
    let client = Client {
        addr: IpAddr::V4(Ipv4Addr::new(81, 2, 69, 160)),
        ecs_prefix: None,
        locator: &NoLocation,
        health: &AllUp,
        rotation: 0,
    };
    let below = Name::parse(&format!("nonexistent.{}", zone.apex.as_str())).ok();
    let names = zone.nodes.keys().take(64).chain(below.as_ref());
    let types = [
        RecordType::A,
        RecordType::Ns,
        RecordType::Cname,
        RecordType::Soa,
        RecordType::Mx,
        RecordType::Txt,
        RecordType::Aaaa,
        RecordType::Srv,
        RecordType::Caa,
    ];
    let mut out = Vec::new();
    for name in names {
        let mut question = Vec::with_capacity(name.wire_len() + 4);
        for label in name.as_str().split('.') {
            question.push(label.len() as u8);
            question.extend_from_slice(label.as_bytes());
        }
        question.push(0);
        let qtypes = types.iter().map(|t| QType::Known(*t)).chain([QType::Any]);
        for qtype in qtypes {
            let code = match qtype {
                QType::Known(t) => t.code(),
                _ => 255,
            };
            let ans = answer::answer(&zones, name, qtype, &client);
            let mut q = question.clone();
            q.extend_from_slice(&code.to_be_bytes());
            q.extend_from_slice(&[0, 1]);
            let header = wire::Header {
                id: 7,
                rd: false,
                cd: false,
                aa: ans.authoritative,
                rcode: 0,
            };
            let sections = [&ans.answers[..], &ans.authority[..], &ans.additional[..]];
            wire::encode(&mut out, &header, &q, name, sections, None, 65535);
            let msg = match Message::from_vec(&out) {
                Ok(m) => m,
                Err(e) => panic!(
                    "the answer for {name} {code} does not encode ({e}): {ans:?}, {}",
                    hex::encode(&out)
                ),
            };
            assert_eq!(msg.queries.len(), 1);
            assert_eq!(msg.queries[0].query_type(), HRecordType::from(code));
        }
    }
}

/// Target `peer_message`: any bytes either fail to decode as an `Exchange` or feed the merge
/// and the drain set without a panic, and with their invariants: the newest report per node is
/// kept and accepting any report again changes nothing; every verdict counts no more votes
/// than were cast; a drain set holds each decision under its own key, and merging the same set
/// twice changes nothing the second time.
pub fn check_peer_message(data: &[u8]) {
    let Ok(msg) = serde_json::from_slice::<Exchange>(data) else {
        return;
    };
    let mut reports = HashMap::new();
    for r in &msg.reports {
        merge::accept(&mut reports, r.clone());
    }
    for r in &msg.reports {
        assert!(
            !merge::accept(&mut reports, r.clone()),
            "a report accepted twice: {r:?}"
        );
        assert!(
            reports[&r.node].version >= r.version,
            "an older report kept"
        );
    }
    let newest = msg
        .reports
        .iter()
        .map(|r| r.generated_ms)
        .max()
        .unwrap_or(0);
    for now_ms in [0, newest, newest.saturating_add(10_000), u64::MAX] {
        for quorum in [Quorum::Majority, Quorum::Any, Quorum::All, Quorum::Count(2)] {
            let settings = MergeSettings {
                stale_after_ms: 5_000,
                quorum,
                settle_ms: 3_000,
            };
            let merged = merge::merge(&reports, now_ms, settings);
            for (key, v) in merged.endpoints.iter() {
                assert!(
                    v.down_votes <= v.counted_votes && v.counted_votes <= v.ballots.len(),
                    "{key:?}: {v:?}"
                );
                assert!(v.up || v.down_votes > 0, "{key:?} down without a down vote");
            }
            let health = EffectiveHealth::new(true, [], merged, msg.drains.clone(), now_ms);
            for d in msg.drains.entries.values() {
                let _ = health.is_drained(&d.dc, d.service.as_deref().unwrap_or(""));
            }
        }
    }
    let mut drains = DrainSet::default();
    drains.merge(&msg.drains);
    for (key, d) in &drains.entries {
        assert_eq!(*key, d.key(), "a drain under another key");
    }
    assert!(
        !drains.merge(&msg.drains),
        "merging the same drains twice changed something"
    );
    let mut again = drains.clone();
    assert!(
        !again.merge(&drains),
        "merging a set into itself changed something"
    );
    for now_ms in [0, u64::MAX] {
        for d in msg.drains.entries.values() {
            let _ = drains.drains(&d.dc, d.service.as_deref().unwrap_or(""), now_ms);
        }
        let _ = drains.in_force(now_ms).count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> DnsFixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/geoip/GeoIP2-City-Test.mmdb"
        );
        DnsFixture::new(std::fs::read(path).unwrap())
    }

    #[test]
    fn the_fixture_zones_load_and_hold_the_invariants() {
        for (i, yaml) in FIXTURE_ZONES.iter().enumerate() {
            let zone = file::parse_zone(yaml, &format!("fixture-{i}.yaml")).unwrap();
            check_zone(&zone);
        }
    }

    fn panics_with<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe, needle: &str) {
        let err = std::panic::catch_unwind(f).err().expect("no panic");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} does not say {needle:?}");
    }

    #[test]
    fn the_checks_fail_on_a_broken_response() {
        let fx = fixture();
        let q = ecs_query(
            &[b"www", b"api", b"example", b"com"],
            1,
            &[0, 1, 24, 0, 81, 2, 69],
        );
        let mut r = fx
            .respond(&q, "192.0.2.1:53".parse().unwrap(), false)
            .unwrap();
        check_response(&q, false, Some(&r));
        r[1] ^= 1;
        panics_with(
            || check_response(&q, false, Some(&r)),
            "ID is not the query's",
        );
        // A plain query (no EDNS) and a 600-byte response to it.
        let mut plain = q[..12 + 25].to_vec();
        plain[11] = 0;
        let mut big = fx
            .respond(&plain, "192.0.2.1:53".parse().unwrap(), false)
            .unwrap();
        check_response(&plain, false, Some(&big));
        big.resize(600, 0);
        panics_with(
            || check_response(&plain, false, Some(&big)),
            "600-byte UDP response exceeds the client's 512",
        );
    }

    /// A query's EDNS part: payload size, DO bit, ECS option data.
    type EdnsForm<'a> = Option<(u16, bool, Option<&'a [u8]>)>;

    /// A raw query: `name` as spelled (labels split on dots), `qtype`, and the EDNS part:
    /// `None` for none, else the payload size, the DO bit and the ECS option's data.
    fn query(name: &str, qtype: u16, edns: EdnsForm<'_>, rd: bool) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, u8::from(rd), 0x10, 0, 1, 0, 0, 0, 0, 0];
        q.push(u8::from(edns.is_some()));
        for l in name.split('.').filter(|l| !l.is_empty()) {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some((payload, dnssec_ok, ecs)) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&payload.to_be_bytes());
            q.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
            match ecs {
                None => q.extend_from_slice(&[0, 0]),
                Some(data) => {
                    q.extend_from_slice(&(4 + data.len() as u16).to_be_bytes());
                    q.extend_from_slice(&[0, 8]);
                    q.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    q.extend_from_slice(data);
                }
            }
        }
        q
    }

    /// Issue 14: every answer shape of the fixture (every record type, NXDOMAIN, NODATA, empty
    /// non-terminals, referrals and DS at the cut, CNAME chains, REFUSED outside the zones,
    /// every service state and policy), each in several forms (no EDNS; EDNS at 512, 1232 and
    /// 4096 bytes; DO; ECS for IPv4 /24 and /32, IPv6 /56, and source /0; the name in mixed
    /// case; UDP and TCP, truncation included), answered the same by the prepared (miss and
    /// hit), lean and full paths.
    fn signed_fixture(algorithm: Algorithm) -> DnsFixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/geoip/GeoIP2-City-Test.mmdb"
        );
        DnsFixture::signed(std::fs::read(path).unwrap(), algorithm)
    }

    #[test]
    fn every_answer_shape_is_the_same_on_every_path() {
        assert_eq!(every_answer_shape(&fixture()), 0);
    }

    /// Issue 15: the same with `api.example.com` signed, so every DO=1 form gets the signed
    /// answer (RRSIGs, compact denial, DNSKEY/CDS/CDNSKEY at the apex) from the prepared path
    /// (miss, hit, a shared view that also holds the DO=0 answers), the lean path without
    /// prepared answers, and the full path; each response's RRSIGs verify with the key.
    #[test]
    fn every_signed_answer_shape_is_the_same_on_every_path_and_verifies() {
        for algorithm in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let verified = every_answer_shape(&signed_fixture(algorithm));
            assert!(
                verified > 1_000,
                "{verified} RRSIGs verified ({algorithm:?})"
            );
        }
    }

    #[test]
    fn the_signature_check_fails_on_a_tampered_or_foreign_signature() {
        let fx = signed_fixture(Algorithm::EcdsaP256Sha256);
        let key = fx.key.clone().unwrap();
        let now = crate::clock::now_ms() / 1000;
        let q = query(
            "www.api.example.com",
            1,
            Some((1232, true, Some(&[0, 1, 24, 0, 81, 2, 69]))),
            true,
        );
        let r = fx
            .respond(&q, "192.0.2.1:53".parse().unwrap(), false)
            .unwrap();
        assert_eq!(check_signatures(&r, &key, now), Ok(1));
        // Flip the last byte of the signature where the RRSIG's RDATA sits in the message.
        let msg = Message::from_vec(&r).unwrap();
        let rrsig = msg
            .answers
            .iter()
            .find(|r| r.record_type() == HRecordType::RRSIG)
            .unwrap();
        let hickory_proto::rr::RData::Unknown { rdata, .. } = &rrsig.data else {
            panic!("RRSIG read as {:?}", rrsig.data);
        };
        let sig = rdata.anything.to_vec();
        let at = r
            .windows(sig.len())
            .position(|w| w == &sig[..])
            .expect("the RRSIG's RDATA is in the message");
        let mut tampered = r.clone();
        tampered[at + sig.len() - 1] ^= 1;
        let err = check_signatures(&tampered, &key, now).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        // Another key of the same zone and algorithm: not the signer.
        let other = signed_fixture(Algorithm::EcdsaP256Sha256).key.unwrap();
        assert!(check_signatures(&r, &other, now).is_err());
        // Outside the validity window.
        let err = check_signatures(&r, &key, now + 8 * 86_400).unwrap_err();
        assert!(err.contains("valid"), "{err}");
    }

    /// Runs every answer shape of the fixture through `check_paths_agree_with`; returns the
    /// RRSIGs verified.
    fn every_answer_shape(fx: &DnsFixture) -> usize {
        let mut verified = 0;
        let mut shared = fx.handler.view();
        let names = [
            "api.example.com",
            "www",
            "rules",
            "fixed",
            "split",
            "down",
            "gone",
            "drained",
            "many",
            "long",
            "chain",
            "outside",
            "other",
            "a.b.c",
            "b.c",
            "c",
            "sub",
            "x.sub",
            "ns.sub",
            "ns1",
            "_https._tcp",
            "nope",
            "x.nope",
            "anything.wild",
        ];
        let qtypes = [1u16, 2, 5, 6, 15, 16, 28, 33, 43, 65, 99, 255, 257];
        let gb: &[u8] = &[0, 1, 24, 0, 81, 2, 69];
        let se32: &[u8] = &[0, 1, 32, 0, 89, 160, 20, 112];
        let v6: &[u8] = &[0, 2, 56, 0, 0x20, 0x01, 0x02, 0x18, 0, 0, 0];
        let zero: &[u8] = &[0, 1, 0, 0];
        let forms: [(EdnsForm<'_>, bool, bool); 8] = [
            (None, false, false),
            (Some((512, false, None)), false, false),
            (Some((1232, false, Some(gb))), false, false),
            (Some((4096, true, Some(v6))), true, false),
            (Some((1232, true, Some(se32))), false, true),
            (Some((512, false, Some(zero))), true, false),
            (Some((1232, false, Some(gb))), true, true),
            (None, true, true),
        ];
        let mut checked = 0;
        for (n, name) in names.iter().enumerate() {
            let fqdn = if name.ends_with("example.com") {
                name.to_string()
            } else {
                format!("{name}.api.example.com")
            };
            for (t, &qtype) in qtypes.iter().enumerate() {
                for (f, &(edns, tcp, mixed)) in forms.iter().enumerate() {
                    // Every form for the service names; a rotating pair of forms elsewhere.
                    if !matches!(*name, "www" | "rules" | "fixed" | "split" | "many")
                        && (n + t + f) % 4 != 0
                    {
                        continue;
                    }
                    let spelled = if mixed {
                        fqdn.to_ascii_uppercase()
                    } else {
                        fqdn.clone()
                    };
                    let q = query(&spelled, qtype, edns, f % 2 == 0);
                    for src in ["81.2.69.160:5353", "[2001:218::1]:5353", "127.0.0.1:5353"] {
                        let src = src.parse().unwrap();
                        verified += check_paths_agree_with(fx, Some(&mut shared), &q, src, tcp);
                        checked += 1;
                    }
                }
            }
        }
        // Outside every zone, and the second zone.
        for name in ["www.example.org", "www.example.net", "example.net"] {
            for qtype in [1u16, 16, 28] {
                let q = query(name, qtype, Some((1232, false, Some(gb))), true);
                check_paths_agree(fx, &q, "81.2.69.160:5353".parse().unwrap(), false);
                checked += 1;
            }
        }
        assert!(checked > 2_000, "{checked} queries checked");
        verified
    }

    /// Networks of different sizes at one place share a prepared answer (`Scope::OfClass`),
    /// and each is echoed with its own scope: the second network's answer, a hit on the first's,
    /// is the same on every path, scope included. Both networks are found in the shipped GeoIP
    /// database, which has many places with networks of several sizes.
    #[test]
    fn networks_of_one_place_share_an_answer_and_keep_their_own_scope() {
        use crate::geo::{GeoDb, Locator};
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/geoip/dbip-city-lite-coarse-ipv4.mmdb"
        ))
        .unwrap();
        let db = GeoDb::from_bytes("shipped", bytes.clone()).unwrap();
        let mut first: HashMap<crate::dns::answer::Place, (std::net::Ipv4Addr, u8)> =
            HashMap::new();
        let mut pair = None;
        'scan: for a in 1u8..=223 {
            for b in 0u8..=255 {
                let ip = std::net::Ipv4Addr::new(a, b, 20, 1);
                let Some(l) = db.locate(ip.into()) else {
                    continue;
                };
                let scope = l.prefix.min(24);
                let place = crate::dns::answer::Place(l.location);
                match first.get(&place) {
                    Some(&(other, s)) if s != scope => {
                        pair = Some([(other, s), (ip, scope)]);
                        break 'scan;
                    }
                    Some(_) => {}
                    None => {
                        first.insert(place, (ip, scope));
                    }
                }
            }
        }
        let pair = pair.expect("two networks of one place with different prefixes");
        let fx = DnsFixture::new(bytes);
        let mut shared = fx.handler.view();
        for (ip, scope) in pair {
            let o = ip.octets();
            let ecs = [0, 1, 24, 0, o[0], o[1], o[2]];
            let q = query(
                "www.api.example.com",
                1,
                Some((1232, false, Some(&ecs))),
                true,
            );
            check_paths_agree_with(
                &fx,
                Some(&mut shared),
                &q,
                "127.0.0.1:5353".parse().unwrap(),
                false,
            );
            let r = fx.respond(&q, "127.0.0.1:5353".parse().unwrap(), false);
            let echoed = format!("{:?}", decoded(r.as_deref()));
            assert!(
                echoed.contains(&format!("scope_prefix: {scope}")),
                "{ip}: scope {scope} not echoed in {echoed}"
            );
        }
        // The shared view: a miss for the first network, a hit for the second (the other
        // hits are `check_paths_agree_with`'s own second queries, one per network).
        let text = fx.metrics().render();
        assert!(
            text.contains("steerdns_prepared_answers_total{result=\"hit\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn every_service_state_of_the_fixture_answers() {
        let fx = fixture();
        for name in [
            "www", "rules", "fixed", "split", "down", "gone", "drained", "many",
        ] {
            for tcp in [false, true] {
                let labels = [name.as_bytes(), b"api", b"example", b"com"];
                // AAAA for `many`: 70 of them exceed 1232 bytes.
                let qtype = if name == "many" { 28 } else { 1 };
                let q = ecs_query(&labels, qtype, &[0, 1, 0, 0]);
                let r = fx.respond(&q, "81.2.69.160:53".parse().unwrap(), tcp);
                let msg = check_response(&q, tcp, r.as_deref()).unwrap();
                let rcode = msg.metadata.response_code;
                match name {
                    "down" => assert_eq!(rcode, ResponseCode::ServFail),
                    "gone" => assert!(rcode == ResponseCode::NoError && msg.answers.is_empty()),
                    // fra is nearer the client, but drained.
                    "drained" => assert_eq!(
                        msg.answers
                            .iter()
                            .map(|r| r.data.to_string())
                            .collect::<Vec<_>>(),
                        ["192.0.2.30"]
                    ),
                    "many" if !tcp => assert!(msg.metadata.truncation),
                    _ => assert_eq!(rcode, ResponseCode::NoError, "{name}"),
                }
            }
        }
    }
}
