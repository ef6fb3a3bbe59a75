//! Prepared answers: the encoded response for a question and a client class, kept per UDP
//! thread and reused until the zones, the health view or the GeoIP data change.
//!
//! A response's bytes depend on the snapshots, the question name and type, and the part of the
//! client the answer reads (`answer::ClientClass`: nothing for static names and negative
//! answers; the place, scope and rotation step for a service). Everything else in a response is
//! patched per query: the ID, the RD and CD bits, the question as the client spelled it (same
//! length, so nothing after it moves), and the OPT record (payload size, DO, the ECS echo with
//! the client's own address). Names in the prepared records may point into the question: after
//! the patch they read in the client's letter case, which DNS compares without case (RFC 4343),
//! as BIND and Knot also compress against the question.
//!
//! Signed answers (DO=1 to a signed zone, issue 15) are prepared with their RRSIGs and, for
//! NXDOMAIN and NODATA, the compact-denial NSEC and its RRSIG, under a key of their own. Such
//! an entry carries the time the signature cache would make one of its signatures anew, and is
//! not served from then on: it is prepared again, with the fresh signature. So a prepared
//! signature never outlives the signer's refresh point (a served signature has at least six
//! days left), and a health change, a reload or a key switch clears the cache as for any answer.
//!
//! Bounded by bytes, not entries: `CAPACITY_BYTES` per thread (entries weigh their length plus
//! `ENTRY_OVERHEAD`), with quick_cache's S3-FIFO-like eviction, which keeps entries that are
//! asked again over a scan of one-off names (a random-subdomain flood does not wash out the hot
//! set). The cache holds the snapshots it was filled from, so a snapshot cannot be freed and
//! its address reused while entries built from it live; new zones or GeoIP data clear the cache,
//! and so does a health view that changes what answers read (`EffectiveHealth::answers`; the
//! views a node publishes at every merge that change nothing an answer reads keep it).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use crate::dns::Facts;
use crate::dns::answer::ClientClass;
use crate::dns::wire;
use crate::geo::GeoDb;
use crate::health::merge::EffectiveHealth;
use crate::telemetry::metrics::AnswerCounters;
use crate::zone::{Service, Zone, ZoneSet};

/// Bytes of prepared responses one thread keeps at most.
pub const CAPACITY_BYTES: u64 = 4 << 20;
/// What an entry costs beyond its bytes (key, name, metric labels, table slot), for the bound.
pub const ENTRY_OVERHEAD: u64 = 160;

/// The ECS scope of a prepared answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The same for every client of the class (0 for static data and `failover`).
    Fixed(u8),
    /// The scope of the client's own place (`answer::service_class`): places are shared by
    /// networks of every size in the GeoIP data, and the answer is the same for all of them,
    /// but each network is echoed with its own prefix.
    OfClass,
}

impl Scope {
    /// The scope for a client whose class has `class_scope`.
    pub fn of(self, class_scope: u8) -> u8 {
        match self {
            Scope::Fixed(s) => s,
            Scope::OfClass => class_scope,
        }
    }
}

/// A response ready to be copied.
pub struct Entry {
    /// Header (ID 0, RD/CD clear), the question in lower case, and every record; no OPT.
    bytes: Box<[u8]>,
    /// Length of the question section in `bytes` (from offset 12).
    question_len: usize,
    /// The ECS scope to echo.
    pub scope: Scope,
    /// What rate limiting and metrics need (the subnet is the query's own, added per query).
    pub facts: Facts,
    /// The query counter's labels and the service answer's, resolved when prepared.
    pub zone: Option<Arc<str>>,
    pub rcode: &'static str,
    pub service_dc: Option<(Arc<str>, Arc<str>)>,
    pub all_down: bool,
    /// The counters the answer increments, kept after their first use.
    pub counters: AnswerCounters,
    /// For a signed answer: the Unix second from which it is stale (`Secured::fresh_until_s`,
    /// when the signature cache would make one of its RRSIGs anew). `get` skips it from then.
    pub fresh_until_s: Option<u64>,
}

impl Entry {
    /// Keeps `response` (encoded by `wire::encode` without OPT and without a size limit, for a
    /// question of `question_len` bytes) with what the query path reports about it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        response: &[u8],
        question_len: usize,
        scope: Scope,
        facts: Facts,
        zone: Option<Arc<str>>,
        rcode: &'static str,
        service_dc: Option<(Arc<str>, Arc<str>)>,
        all_down: bool,
    ) -> Entry {
        Entry {
            bytes: response.into(),
            question_len,
            scope,
            facts,
            zone,
            rcode,
            service_dc,
            all_down,
            counters: AnswerCounters::default(),
            fresh_until_s: None,
        }
    }

    /// Writes the response to query `q` into `out`: the prepared bytes patched for `q`, the
    /// OPT record `opt`, truncated (TC=1, header, question and OPT only) when over `limit`.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        q: &wire::Query<'_>,
        opt: Option<wire::OptOut>,
        limit: usize,
    ) {
        out.clear();
        let opt_len = opt.map_or(0, wire::opt_len);
        let end = 12 + self.question_len;
        if q.question.len() != self.question_len || self.bytes.len() < end {
            // Cannot happen for a question of the same name and type; answer TC rather than
            // garble (the client retries over TCP, which does not use this cache).
            out.extend_from_slice(&self.bytes[..12.min(self.bytes.len())]);
            out.extend_from_slice(q.question);
            truncate(out, q, opt);
            return;
        }
        if self.bytes.len() + opt_len > limit {
            out.extend_from_slice(&self.bytes[..12]);
            out.extend_from_slice(q.question);
            truncate(out, q, opt);
            return;
        }
        out.extend_from_slice(&self.bytes);
        out[12..end].copy_from_slice(q.question);
        patch_header(out, q);
        if let Some(o) = opt {
            let ar = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
            out[10..12].copy_from_slice(&ar.to_be_bytes());
            wire::write_opt(out, o);
        }
    }

    fn weight(&self) -> u64 {
        self.bytes.len() as u64 + ENTRY_OVERHEAD
    }

    /// Whether the entry may be served: an unsigned one always, a signed one before its
    /// `fresh_until_s`.
    fn fresh(&self, now_s: impl FnOnce() -> u64) -> bool {
        self.fresh_until_s.is_none_or(|until| now_s() < until)
    }
}

/// ID, RD and CD from the query.
fn patch_header(out: &mut [u8], q: &wire::Query<'_>) {
    out[0..2].copy_from_slice(&q.id.to_be_bytes());
    out[2] = (out[2] & !0x01) | u8::from(q.rd);
    out[3] = (out[3] & !0x10) | (u8::from(q.cd) << 4);
}

/// Turns header + question in `out` into the truncated response: TC set, no records, the OPT.
fn truncate(out: &mut Vec<u8>, q: &wire::Query<'_>, opt: Option<wire::OptOut>) {
    if out.len() < 12 {
        out.resize(12, 0);
    }
    patch_header(out, q);
    out[2] |= 0x02;
    out[6..10].fill(0);
    out[10..12].copy_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    if let Some(o) = opt {
        wire::write_opt(out, o);
    }
}

/// A question as the cache looks it up: the lower-case name with its hash (taken once per
/// query, though a service's answer takes two look-ups), the type, and whether the answer is
/// the signed one (DO=1 to a signed zone: other bytes than DO=0's).
#[derive(Clone, Copy)]
pub struct Question<'a> {
    name: &'a str,
    name_hash: u64,
    qtype: u16,
    signed: bool,
}

/// The cache key: the question and the client class.
#[derive(PartialEq, Eq)]
struct Key {
    qname: Box<str>,
    name_hash: u64,
    qtype: u16,
    signed: bool,
    class: ClientClass,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        KeyRef {
            question: Question {
                name: &self.qname,
                name_hash: self.name_hash,
                qtype: self.qtype,
                signed: self.signed,
            },
            class: &self.class,
        }
        .hash(h)
    }
}

/// A key to look up with, borrowing the name (no allocation on a hit).
struct KeyRef<'a> {
    question: Question<'a>,
    class: &'a ClientClass,
}

impl Hash for KeyRef<'_> {
    /// One write: the name's hash (seeded, taken once per query) with the type, the signed flag
    /// and the class's fingerprint folded in; the cache's hasher mixes the sum. Equal keys give
    /// equal numbers, and a collision costs a probe, not a wrong answer (`equivalent` compares
    /// the whole key).
    fn hash<H: Hasher>(&self, h: &mut H) {
        let q = &self.question;
        let kind = (u64::from(q.qtype) << 1 | u64::from(q.signed)).rotate_left(48);
        let class = self.class.fingerprint().wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h.write_u64(q.name_hash ^ kind ^ class);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        let q = &self.question;
        q.qtype == key.qtype
            && q.signed == key.signed
            && q.name == &*key.qname
            && self.class == &key.class
    }
}

/// What the cache keeps under a key.
enum Slot {
    Answer(Entry),
    /// Under a question's key with `ClientClass::Anyone`: the question leads to this service
    /// (`answer::route`), so its answers are kept per client class (`answer::service_class`),
    /// and a query needs no walk through the zone to know which.
    Service(Arc<Zone>, Arc<Service>),
}

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<Key, Slot> for ByBytes {
    fn weight(&self, _: &Key, slot: &Slot) -> u64 {
        match slot {
            Slot::Answer(entry) => entry.weight(),
            Slot::Service(..) => ENTRY_OVERHEAD,
        }
    }
}

/// What a question's first look-up (`Prepared::find`) finds.
pub enum Found<'a> {
    /// The answer for every client.
    Answer(&'a Entry),
    /// A service's name: its answers are per client class.
    Service(&'a Arc<Zone>, &'a Arc<Service>),
    Nothing,
}

/// The snapshots prepared answers were built from.
struct Generation {
    zones: Arc<ZoneSet>,
    health: Arc<EffectiveHealth>,
    geo: Option<Arc<GeoDb>>,
}

impl Generation {
    fn is(
        &self,
        zones: &Arc<ZoneSet>,
        health: &Arc<EffectiveHealth>,
        geo: &Option<Arc<GeoDb>>,
    ) -> bool {
        // Health by what answers read of it (`EffectiveHealth::answers`): most new health views
        // change nothing an answer reads.
        Arc::ptr_eq(&self.zones, zones)
            && self.health.answers == health.answers
            && match (&self.geo, geo) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

/// One thread's prepared answers.
pub struct Prepared {
    generation: Option<Generation>,
    cache: quick_cache::unsync::Cache<Key, Slot, ByBytes, foldhash::fast::RandomState>,
    /// Hashes question names (seeded per process, as the cache's own hasher).
    names: foldhash::fast::RandomState,
    /// Whether a zone of the generation signs: then a query with DO=1 may need signatures,
    /// which prepared answers do not carry.
    signing: bool,
}

impl Default for Prepared {
    fn default() -> Prepared {
        Prepared::with_capacity(CAPACITY_BYTES)
    }
}

impl Prepared {
    pub fn with_capacity(bytes: u64) -> Prepared {
        // quick_cache sizes its table from the expected count: ~300 bytes an entry.
        let items = usize::try_from(bytes / 300).unwrap_or(1).max(16);
        Prepared {
            generation: None,
            signing: false,
            names: foldhash::fast::RandomState::default(),
            cache: quick_cache::unsync::Cache::with(
                items,
                bytes,
                ByBytes,
                foldhash::fast::RandomState::default(),
                Default::default(),
            ),
        }
    }

    /// Forgets every entry unless they were built from these snapshots (then keeps them).
    pub fn use_snapshots(
        &mut self,
        zones: &Arc<ZoneSet>,
        health: &Arc<EffectiveHealth>,
        geo: &Option<Arc<GeoDb>>,
    ) {
        if self
            .generation
            .as_ref()
            .is_some_and(|g| g.is(zones, health, geo))
        {
            return;
        }
        self.cache.clear();
        self.signing = zones.zones.iter().any(|z| z.dnssec.is_some());
        self.generation = Some(Generation {
            zones: zones.clone(),
            health: health.clone(),
            geo: geo.clone(),
        });
    }

    /// Whether a zone of the current generation signs its answers.
    pub fn signing(&self) -> bool {
        self.signing
    }

    /// `name` (lower case) and `qtype` as the cache looks them up; `signed` for the signed
    /// answer.
    pub fn question<'a>(&self, name: &'a str, qtype: u16, signed: bool) -> Question<'a> {
        Question {
            name,
            name_hash: self.names.hash_one(name),
            qtype,
            signed,
        }
    }

    /// The first look-up for a question: its answer when it is the same for every client, or
    /// the service it leads to. A signed answer past its `fresh_until_s` is not found (`now_s`
    /// reads the wall clock, only for signed entries).
    pub fn find(&self, q: Question<'_>, now_s: impl FnOnce() -> u64) -> Found<'_> {
        match self.slot(q, &ClientClass::Anyone) {
            Some(Slot::Answer(entry)) if entry.fresh(now_s) => Found::Answer(entry),
            Some(Slot::Service(zone, service)) => Found::Service(zone, service),
            _ => Found::Nothing,
        }
    }

    /// The answer for the question and the client class (see `find` for signed answers).
    pub fn get(
        &self,
        q: Question<'_>,
        class: &ClientClass,
        now_s: impl FnOnce() -> u64,
    ) -> Option<&Entry> {
        match self.slot(q, class)? {
            Slot::Answer(entry) if entry.fresh(now_s) => Some(entry),
            _ => None,
        }
    }

    fn slot(&self, question: Question<'_>, class: &ClientClass) -> Option<&Slot> {
        self.cache.get(&KeyRef { question, class })
    }

    /// Keeps `entry` (replacing a stale one for the same key).
    pub fn insert(&mut self, q: Question<'_>, class: ClientClass, entry: Entry) {
        self.put(q, class, Slot::Answer(entry));
    }

    /// Notes that the question leads to `service` of `zone` (see `Slot::Service`).
    pub fn insert_service(&mut self, q: Question<'_>, zone: Arc<Zone>, service: Arc<Service>) {
        self.put(q, ClientClass::Anyone, Slot::Service(zone, service));
    }

    fn put(&mut self, q: Question<'_>, class: ClientClass, slot: Slot) {
        let key = Key {
            qname: q.name.into(),
            name_hash: q.name_hash,
            qtype: q.qtype,
            signed: q.signed,
            class,
        };
        self.cache.insert(key, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Shape;

    fn entry(fresh_until_s: Option<u64>) -> Entry {
        let mut e = Entry::new(
            &[0; 20],
            8,
            Scope::Fixed(0),
            Facts {
                shape: Shape::Answer,
                qtype: 1,
                zone: None,
                subnet: None,
            },
            None,
            "NOERROR",
            None,
            false,
        );
        e.fresh_until_s = fresh_until_s;
        e
    }

    #[test]
    fn signed_and_unsigned_answers_are_kept_apart_and_signed_ones_go_stale() {
        let mut p = Prepared::with_capacity(1 << 16);
        let class = ClientClass::Anyone;
        let (unsigned, signed) = (p.question("www.a", 1, false), p.question("www.a", 1, true));
        p.insert(unsigned, class.clone(), entry(None));
        assert!(p.get(signed, &class, || 0).is_none(), "DO=1 is its own key");
        p.insert(signed, class.clone(), entry(Some(1_000)));
        // The unsigned entry never looks at the clock.
        let found = p.get(unsigned, &class, || panic!("clock read"));
        assert!(found.is_some_and(|e| e.fresh_until_s.is_none()));
        assert!(p.get(signed, &class, || 999).is_some());
        assert!(matches!(p.find(signed, || 999), Found::Answer(_)));
        // From the signer's refresh point on, the signed entry is not served.
        assert!(p.get(signed, &class, || 1_000).is_none());
        assert!(matches!(p.find(signed, || 1_000), Found::Nothing));
        // Prepared again (fresh signatures), it replaces the stale one.
        p.insert(signed, class.clone(), entry(Some(2_000)));
        assert!(p.get(signed, &class, || 1_000).is_some());
    }
}
