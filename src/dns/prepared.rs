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
//! its address reused while entries built from it live; a new snapshot clears the cache.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::dns::Facts;
use crate::dns::answer::ClientClass;
use crate::dns::wire;
use crate::geo::GeoDb;
use crate::health::merge::EffectiveHealth;
use crate::zone::ZoneSet;

/// Bytes of prepared responses one thread keeps at most.
pub const CAPACITY_BYTES: u64 = 4 << 20;
/// What an entry costs beyond its bytes (key, name, metric labels, table slot), for the bound.
pub const ENTRY_OVERHEAD: u64 = 160;

/// A response ready to be copied.
pub struct Entry {
    /// Header (ID 0, RD/CD clear), the question in lower case, and every record; no OPT.
    bytes: Box<[u8]>,
    /// Length of the question section in `bytes` (from offset 12).
    question_len: usize,
    /// The ECS scope to echo.
    pub scope: u8,
    /// What rate limiting and metrics need (the subnet is the query's own, added per query).
    pub facts: Facts,
    /// The query counter's labels and the service answer's, resolved when prepared.
    pub zone: Option<Arc<str>>,
    pub rcode: &'static str,
    pub service_dc: Option<(Arc<str>, Arc<str>)>,
    pub all_down: bool,
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
        scope: u8,
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

/// The cache key: the question (lower-case name, type), whether the answer is the signed one
/// (DO=1 to a signed zone: other bytes than DO=0's), and the client class.
#[derive(PartialEq, Eq)]
struct Key {
    qname: Box<str>,
    qtype: u16,
    signed: bool,
    class: ClientClass,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        KeyRef {
            qname: &self.qname,
            qtype: self.qtype,
            signed: self.signed,
            class: &self.class,
        }
        .hash(h)
    }
}

/// A key to look up with, borrowing the name (no allocation on a hit).
struct KeyRef<'a> {
    qname: &'a str,
    qtype: u16,
    signed: bool,
    class: &'a ClientClass,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.qname.hash(h);
        self.qtype.hash(h);
        self.signed.hash(h);
        self.class.hash(h);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.qtype == key.qtype
            && self.signed == key.signed
            && self.qname == &*key.qname
            && self.class == &key.class
    }
}

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<Key, Entry> for ByBytes {
    fn weight(&self, _: &Key, entry: &Entry) -> u64 {
        entry.weight()
    }
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
        Arc::ptr_eq(&self.zones, zones)
            && Arc::ptr_eq(&self.health, health)
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
    cache: quick_cache::unsync::Cache<Key, Entry, ByBytes, foldhash::fast::RandomState>,
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
        self.generation = Some(Generation {
            zones: zones.clone(),
            health: health.clone(),
            geo: geo.clone(),
        });
    }

    /// The entry for the question, the signed or the unsigned answer, and the client class;
    /// `None` also when a signed entry is past its `fresh_until_s` (`now_s` reads the wall
    /// clock, only for signed entries).
    pub fn get(
        &self,
        qname: &str,
        qtype: u16,
        signed: bool,
        class: &ClientClass,
        now_s: impl FnOnce() -> u64,
    ) -> Option<&Entry> {
        let entry = self.cache.get(&KeyRef {
            qname,
            qtype,
            signed,
            class,
        })?;
        match entry.fresh_until_s {
            Some(until) if now_s() >= until => None,
            _ => Some(entry),
        }
    }

    /// Keeps `entry` (replacing a stale one for the same key).
    pub fn insert(
        &mut self,
        qname: &str,
        qtype: u16,
        signed: bool,
        class: ClientClass,
        entry: Entry,
    ) {
        let key = Key {
            qname: qname.into(),
            qtype,
            signed,
            class,
        };
        self.cache.insert(key, entry);
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
            0,
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
        p.insert("www.a", 1, false, class.clone(), entry(None));
        assert!(
            p.get("www.a", 1, true, &class, || 0).is_none(),
            "DO=1 is its own key"
        );
        p.insert("www.a", 1, true, class.clone(), entry(Some(1_000)));
        // The unsigned entry never looks at the clock.
        let unsigned = p.get("www.a", 1, false, &class, || panic!("clock read"));
        assert!(unsigned.is_some_and(|e| e.fresh_until_s.is_none()));
        assert!(p.get("www.a", 1, true, &class, || 999).is_some());
        // From the signer's refresh point on, the signed entry is not served.
        assert!(p.get("www.a", 1, true, &class, || 1_000).is_none());
        // Prepared again (fresh signatures), it replaces the stale one.
        p.insert("www.a", 1, true, class.clone(), entry(Some(2_000)));
        assert!(p.get("www.a", 1, true, &class, || 1_000).is_some());
    }
}
