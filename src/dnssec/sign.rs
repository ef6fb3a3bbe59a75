//! RRSIGs: the canonical form of an RRset (RFC 4034 section 6), the RRSIG RDATA over it, and a
//! cache keyed by the RRset's content, so a shape of answer is signed once and its signature
//! reused until it is refreshed.
//!
//! Timing (the README gives the same numbers): a signature's inception is `INCEPTION_SKEW_S`
//! (1 h) before the moment it is made, so validators whose clocks run behind accept it; it
//! expires `VALIDITY_S` (7 days) after that moment; the cache hands it out for
//! `REFRESH_AFTER_S` (1 day) only. So every signature served has at least 6 days left, far
//! more than any TTL a resolver caches it for.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::zone::key::{ZoneKey, push_name_wire};
use crate::zone::{Name, RData};

/// How far in the past a signature's inception is put, for validators with slow clocks.
pub const INCEPTION_SKEW_S: u64 = 3600;
/// How long a signature is valid from the moment it is made.
pub const VALIDITY_S: u64 = 7 * 86_400;
/// How long a cached signature is reused before a fresh one is made.
pub const REFRESH_AFTER_S: u64 = 86_400;

/// Entries per cache shard; a full shard starts over (a flood of new shapes cannot grow it).
const SHARD_ENTRIES: usize = 8192;
const SHARDS: usize = 16;

/// The RRSIG and NSEC type numbers.
pub const RRSIG: u16 = 46;

/// One record in wire terms: the owner as a model name, and uncompressed RDATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRr {
    pub name: Name,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Arc<[u8]>,
}

/// The canonical (uncompressed, lower-case) RDATA of a model record.
pub fn rdata_wire(data: &RData) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.wire_len());
    match data {
        RData::A(ip) => out.extend_from_slice(&ip.octets()),
        RData::Aaaa(ip) => out.extend_from_slice(&ip.octets()),
        RData::Cname(n) | RData::Ns(n) => push_name_wire(&mut out, n.as_str()),
        RData::Mx {
            preference,
            exchange,
        } => {
            out.extend_from_slice(&preference.to_be_bytes());
            push_name_wire(&mut out, exchange.as_str());
        }
        RData::Txt(strings) => {
            for s in strings {
                let b = &s.as_bytes()[..s.len().min(255)];
                out.push(b.len() as u8);
                out.extend_from_slice(b);
            }
        }
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            for v in [priority, weight, port] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            push_name_wire(&mut out, target.as_str());
        }
        RData::Caa {
            critical,
            tag,
            value,
        } => {
            out.push(if *critical { 0x80 } else { 0 });
            out.push(tag.len().min(255) as u8);
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        RData::Soa(s) => {
            push_name_wire(&mut out, s.mname.as_str());
            push_name_wire(&mut out, s.rname.as_str());
            for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    out
}

/// The RRSIG labels field: the owner's labels, not counting the root or a leading `*`.
fn label_count(owner: &Name) -> u8 {
    let s = owner.as_str();
    if s.is_empty() {
        return 0;
    }
    let n = s.split('.').count();
    let wildcard = usize::from(s == "*" || s.starts_with("*."));
    (n - wildcard) as u8
}

/// The RRset in canonical form as it follows the RRSIG fields in the signed data: each record
/// as owner, type, class, TTL, RDLENGTH, RDATA, sorted by RDATA, duplicates dropped.
fn canonical_rrset(owner: &Name, rtype: u16, ttl: u32, rdatas: &mut [&[u8]]) -> Vec<u8> {
    rdatas.sort_unstable();
    let mut owner_wire = Vec::with_capacity(owner.as_str().len() + 2);
    push_name_wire(&mut owner_wire, owner.as_str());
    let mut out = Vec::with_capacity(rdatas.len() * (owner_wire.len() + 10 + 16));
    let mut last: Option<&[u8]> = None;
    for rd in rdatas.iter() {
        if last == Some(*rd) {
            continue;
        }
        last = Some(rd);
        out.extend_from_slice(&owner_wire);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        out.extend_from_slice(rd);
    }
    out
}

/// The RRSIG RDATA up to (not including) the signature.
fn rrsig_fields(
    key: &ZoneKey,
    owner: &Name,
    rtype: u16,
    ttl: u32,
    inception: u32,
    expiration: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + key.zone.as_str().len() + 2 + 64);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.push(key.algorithm.number());
    out.push(label_count(owner));
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&expiration.to_be_bytes());
    out.extend_from_slice(&inception.to_be_bytes());
    out.extend_from_slice(&key.tag.to_be_bytes());
    push_name_wire(&mut out, key.zone.as_str());
    out
}

/// Serial-number time (RFC 4034 section 3.1.5): seconds since 1970 modulo 2^32.
fn serial_time(unix_s: u64) -> u32 {
    (unix_s & 0xffff_ffff) as u32
}

struct Entry {
    rrsig: Arc<[u8]>,
    made_at_s: u64,
}

/// What one `sign` call did, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    /// Signed now, taking this long.
    Made(std::time::Duration),
    /// The key failed to sign (never expected with a loaded key).
    Failed,
}

/// RRSIG RDATAs by (key, canonical RRset), shared by every query thread.
pub struct SigCache {
    shards: Vec<Mutex<FxHashMap<Box<[u8]>, Entry>>>,
}

impl Default for SigCache {
    fn default() -> Self {
        SigCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl SigCache {
    /// The RRSIG RDATA for the RRset `(owner, rtype, ttl, rdatas)` signed with `key`, from the
    /// cache while it is fresh, else made now; with the Unix second it was made (it is handed
    /// out until `made_at_s + REFRESH_AFTER_S`).
    pub fn sign(
        &self,
        key: &ZoneKey,
        owner: &Name,
        rtype: u16,
        ttl: u32,
        rdatas: &mut [&[u8]],
        now_s: u64,
    ) -> (Option<Arc<[u8]>>, u64, Outcome) {
        let rrset = canonical_rrset(owner, rtype, ttl, rdatas);
        // The key is part of the cache key: after a key switch nothing signed by the old key
        // is handed out. Tag, algorithm and the public key's first octets tell keys apart.
        let mut id = Vec::with_capacity(12 + rrset.len());
        id.extend_from_slice(&key.tag.to_be_bytes());
        id.push(key.algorithm.number());
        id.extend_from_slice(&key.public_key[..key.public_key.len().min(8)]);
        id.extend_from_slice(&rrset);
        let shard = &self.shards[shard_of(&id)];
        {
            let map = shard.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = map.get(&id[..])
                && now_s.saturating_sub(e.made_at_s) < REFRESH_AFTER_S
                && e.made_at_s <= now_s
            {
                return (Some(e.rrsig.clone()), e.made_at_s, Outcome::Hit);
            }
        }
        let started = Instant::now();
        let inception = serial_time(now_s.saturating_sub(INCEPTION_SKEW_S));
        let expiration = serial_time(now_s + VALIDITY_S);
        let mut rdata = rrsig_fields(key, owner, rtype, ttl, inception, expiration);
        let mut data = Vec::with_capacity(rdata.len() + rrset.len());
        data.extend_from_slice(&rdata);
        data.extend_from_slice(&rrset);
        let Some(signature) = key.sign(&data) else {
            return (None, now_s, Outcome::Failed);
        };
        rdata.extend_from_slice(&signature);
        let rrsig: Arc<[u8]> = rdata.into();
        let took = started.elapsed();
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SHARD_ENTRIES {
            map.clear();
        }
        map.insert(
            id.into_boxed_slice(),
            Entry {
                rrsig: rrsig.clone(),
                made_at_s: now_s,
            },
        );
        (Some(rrsig), now_s, Outcome::Made(took))
    }

    /// Entries held (for tests and the figures).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn shard_of(id: &[u8]) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(id);
    (h.finish() as usize) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::key::{Algorithm, generate};
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn key() -> ZoneKey {
        let zone = Name::parse("api.example.com").unwrap();
        let (text, _) = generate(&zone, Algorithm::EcdsaP256Sha256).unwrap();
        ZoneKey::parse(&text, "k").unwrap()
    }

    #[test]
    fn labels_skip_a_leading_wildcard() {
        assert_eq!(label_count(&Name::parse("www.api.example.com").unwrap()), 4);
        assert_eq!(label_count(&Name::parse("*.api.example.com").unwrap()), 3);
        assert_eq!(label_count(&Name::from_lower("")), 0);
    }

    #[test]
    fn a_signature_verifies_over_the_sorted_rrset_and_is_cached_by_content() {
        let key = key();
        let cache = SigCache::default();
        let owner = Name::parse("www.api.example.com").unwrap();
        let (a, b) = ([203u8, 0, 113, 11], [203u8, 0, 113, 10]);
        let now = 1_800_000_000;
        let (sig, made_at, out) = cache.sign(&key, &owner, 1, 30, &mut [&a[..], &b[..]], now);
        assert_eq!(made_at, now);
        assert!(matches!(out, Outcome::Made(_)));
        let sig = sig.unwrap();
        // Verify as a validator would: the fields, then the RRset in canonical order.
        let fields = &sig[..sig.len() - 64];
        let mut data = fields.to_vec();
        data.extend_from_slice(&canonical_rrset(&owner, 1, 30, &mut [&b[..], &a[..]]));
        let mut public = vec![4];
        public.extend_from_slice(&key.public_key);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(&data, &sig[sig.len() - 64..])
            .unwrap();
        assert_eq!(
            u32::from_be_bytes(sig[12..16].try_into().unwrap()),
            1_800_000_000 - 3600
        );

        // The same content in another order: the cached signature.
        let (again, made_at, out) =
            cache.sign(&key, &owner, 1, 30, &mut [&b[..], &a[..]], now + 10);
        assert_eq!(out, Outcome::Hit);
        assert_eq!(
            made_at, now,
            "a cached signature keeps the time it was made"
        );
        assert_eq!(again.unwrap(), sig);
        // Other content (one address gone): a new signature.
        let (other, _, out) = cache.sign(&key, &owner, 1, 30, &mut [&a[..]], now + 10);
        assert!(matches!(out, Outcome::Made(_)));
        assert_ne!(other.unwrap(), sig);
        // Another TTL is another RRset too (degraded answers).
        let (_, _, out) = cache.sign(&key, &owner, 1, 5, &mut [&a[..], &b[..]], now + 10);
        assert!(matches!(out, Outcome::Made(_)));
        // Past the refresh time the signature is made again.
        let (fresh, _, out) = cache.sign(
            &key,
            &owner,
            1,
            30,
            &mut [&a[..], &b[..]],
            now + REFRESH_AFTER_S,
        );
        assert!(matches!(out, Outcome::Made(_)));
        assert_ne!(fresh.unwrap(), sig);
    }
}
