//! Response rate limiting (RRL), in the manner of BIND and Knot, aimed at amplification rather
//! than at resolvers: a UDP response is counted against a token bucket keyed by the client's
//! network and the kind of response, so a flood of identical responses toward one network (the
//! victim of a spoofed-source reflection attack) is cut down to a trickle, while every other
//! network, and every other kind of response, is untouched. A dropped response is sometimes
//! "slipped" instead: sent truncated (TC=1, no records), so a real client behind the limited
//! network retries over TCP, which cannot be spoofed.
//!
//! Two things keep a busy resolver's real traffic out of the limit (issue 12):
//! - **Tailored answers are different responses.** An answer chosen for an EDNS Client Subnet
//!   (scope > 0) is keyed by that client network too, so a resolver asking for one name on
//!   behalf of thousands of client subnets spends thousands of buckets, not one. This is only
//!   done for *small* answers (at most [`SMALL_FACTOR`] times the query's size), so a spoofer
//!   who varies the subnet to get a fresh bucket each time gets back at most twice its bytes.
//! - **Buckets count bytes of amplification, not responses.** A response costs what it adds to
//!   the query (its size less the query's), at least [`MIN_COST_BYTES`]; a bucket refills at
//!   `responses_per_second` × [`UNIT_BYTES`] bytes a second. So `responses_per_second` is the
//!   rate of responses 512 bytes larger than their question, and small answers get up to 8 times
//!   as many. A flood still meets the limit: past it, bytes out are the slips (no larger than
//!   the queries) every `slip`th time, so a flood of N bytes gets back at most N / slip bytes
//!   plus `responses_per_second` × 512 bytes a second.
//!
//! Plain synchronous logic over plain data: the caller says what the response is (from the
//! answer it built), its size and the query's, and what time it is (`tokio::time::Instant`,
//! injected so tests drive the clock), and gets `Decision`s back. `dns/limit.rs` applies them.
//!
//! Memory is bounded: the table holds at most `max_entries` buckets and evicts the least
//! recently used one, so an attacker spoofing many networks recycles entries instead of
//! growing the table. A bucket is full again after `burst / rate` seconds of quiet, so
//! evicting an idle one loses nothing.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;

use rustc_hash::FxHashMap;
use tokio::time::Instant;

/// Large identical responses per second one client network gets by default (small ones count
/// for less, see [`UNIT_BYTES`]). Generous on purpose: Knot's default is 20 and BIND's
/// documentation suggests 5 to 15, but a GSLB answers with short TTLs, so busy resolver farms
/// (many caches behind one /24) ask for the same name more often than they would of an ordinary
/// zone. A reflection flood is still cut to 51,200 bytes a second beyond its own size per
/// victim network and name.
pub const DEFAULT_RESPONSES_PER_SECOND: u32 = 100;
/// What one "response" of `responses_per_second` stands for: this many bytes beyond the
/// query's size (the classic DNS UDP limit).
pub const UNIT_BYTES: u64 = 512;
/// The least a response costs, however close its size to the query's: 1/8 of a unit, so a
/// bucket never lets more than 8 × `responses_per_second` responses through.
pub const MIN_COST_BYTES: u64 = 64;
/// A tailored answer is keyed by its client subnet only while it is at most this many times
/// the query's size: the most a spoofer can amplify by varying the subnet.
pub const SMALL_FACTOR: usize = 2;
/// Every 2nd dropped response is sent truncated (BIND's and Knot's usual value): half the
/// amplification gone, and a real client still gets through over TCP on its second try.
pub const DEFAULT_SLIP: u32 = 2;
/// Buckets kept at most (BIND's max-table-size default). About 64 bytes each: 6.4 MB.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// The largest rate a zone may set; beyond it RRL would do nothing useful.
pub const MAX_RESPONSES_PER_SECOND: u32 = 1_000_000;
/// The largest slip (BIND allows 0 to 10).
pub const MAX_SLIP: u32 = 10;

/// Buckets are sharded by key so UDP threads rarely wait on each other.
const SHARDS: usize = 16;
/// Tokens are thousandths of a byte: rates are whole units per second and time is counted in
/// milliseconds, so refilling is exact integer arithmetic.
const MILLI: u64 = 1000;

/// What a response of `response_len` bytes to a query of `query_len` bytes costs, in bytes:
/// what it adds to the query, at least [`MIN_COST_BYTES`].
pub fn cost(query_len: usize, response_len: usize) -> u64 {
    (response_len.saturating_sub(query_len) as u64).max(MIN_COST_BYTES)
}

/// Whether a response is small enough to be keyed by the client subnet it was tailored to.
pub fn is_small(query_len: usize, response_len: usize) -> bool {
    response_len <= query_len.saturating_mul(SMALL_FACTOR)
}

/// The limits of one zone (or the defaults, for responses outside every zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub enabled: bool,
    /// Identical responses per second per client network, once the burst is spent, counted in
    /// units of [`UNIT_BYTES`] beyond the query's size.
    pub responses_per_second: u32,
    /// How many such responses a quiet network may get at once: the bucket's size.
    pub burst: u32,
    /// Every `slip`th dropped response is sent truncated instead; 0 never, 1 always.
    pub slip: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            enabled: true,
            responses_per_second: DEFAULT_RESPONSES_PER_SECOND,
            burst: DEFAULT_RESPONSES_PER_SECOND,
            slip: DEFAULT_SLIP,
        }
    }
}

/// Node-wide RRL settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Off: every response is sent, whatever the zones say.
    pub enabled: bool,
    /// The table's bound.
    pub max_entries: usize,
    /// Clients never limited (BIND's `exempt-clients`, Knot's whitelist): the operator's own
    /// resolvers, say.
    pub exempt: Vec<ipnet::IpNet>,
}

impl Default for NodeSettings {
    fn default() -> NodeSettings {
        NodeSettings {
            enabled: true,
            max_entries: DEFAULT_MAX_ENTRIES,
            exempt: Vec::new(),
        }
    }
}

impl NodeSettings {
    /// Whether responses to `client` are never limited. IPv4-mapped IPv6 counts as IPv4.
    pub fn is_exempt(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.exempt.iter().any(|net| net.contains(&client))
    }
}

/// What a response is, as far as "identical" goes. Names are lower-case, so 0x20 case
/// randomisation does not split one bucket into many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// Records, or NODATA: identical when the question's name and type are, and, for a small
    /// answer tailored to an EDNS Client Subnet, its client network (see [`network`]).
    Answer {
        qname: &'a [u8],
        qtype: u16,
        subnet: Option<[u8; 8]>,
    },
    /// NXDOMAIN: counted per zone, so a flood of random names under one zone shares a bucket.
    NxDomain { zone: &'a [u8] },
    /// A referral to a delegated sub-zone: counted per zone, like NXDOMAIN.
    Referral { zone: &'a [u8] },
    /// REFUSED, SERVFAIL, FORMERR, NOTIMP, ...: one bucket per network for all of them.
    Error,
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    Drop,
    /// Send it truncated (TC=1, question and OPT only).
    Slip,
}

/// The client network a response is counted against: the /24 of an IPv4 address, the /56 of an
/// IPv6 one (what one site typically gets), so a victim cannot be spared by rotating addresses
/// and a spoofing attacker gains nothing from the low bits. IPv4-mapped IPv6 counts as IPv4.
pub fn network(ip: IpAddr) -> [u8; 8] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], o[2], 0, 0, 0, 0]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [6, o[0], o[1], o[2], o[3], o[4], o[5], o[6]]
        }
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// Thousandths of a byte.
    tokens: u64,
    /// When `tokens` was last brought up to date, in ms since the limiter's epoch.
    updated_ms: u64,
    /// Responses dropped or slipped so far, for the slip cadence.
    limited: u32,
}

impl Bucket {
    fn full(limits: &Limits, now_ms: u64) -> Bucket {
        Bucket {
            tokens: capacity(limits),
            updated_ms: now_ms,
            limited: 0,
        }
    }

    /// Refills for the time since the last update, then spends `cost_bytes` if it can.
    fn take(&mut self, limits: &Limits, cost_bytes: u64, now_ms: u64) -> Decision {
        let elapsed_ms = now_ms.saturating_sub(self.updated_ms);
        // `responses_per_second` × UNIT_BYTES bytes a second is that many thousandths of a
        // byte per millisecond.
        let refill = elapsed_ms
            .saturating_mul(u64::from(limits.responses_per_second))
            .saturating_mul(UNIT_BYTES);
        self.tokens = self.tokens.saturating_add(refill).min(capacity(limits));
        self.updated_ms = self.updated_ms.max(now_ms);
        let cost = cost_bytes.saturating_mul(MILLI);
        if self.tokens >= cost {
            self.tokens -= cost;
            return Decision::Send;
        }
        self.limited = self.limited.wrapping_add(1);
        if limits.slip > 0 && self.limited.is_multiple_of(limits.slip) {
            Decision::Slip
        } else {
            Decision::Drop
        }
    }
}

fn capacity(limits: &Limits) -> u64 {
    u64::from(limits.burst.max(1)) * UNIT_BYTES * MILLI
}

/// The rate limiter: a bounded table of buckets, shared by the UDP threads.
pub struct Limiter {
    shards: Box<[Mutex<Table>]>,
    /// Keyed (SipHash with a random key): nobody outside can aim two keys at one bucket.
    hasher: std::hash::RandomState,
    epoch: Instant,
}

impl Limiter {
    /// A limiter holding at most `max_entries` buckets (at least one).
    pub fn new(max_entries: usize) -> Limiter {
        let max_entries = max_entries.max(1);
        // Small tables (tests) are one shard, so the bound is exact; large ones are split
        // evenly, which keeps the total within `max_entries`.
        let shards = if max_entries >= 64 * SHARDS {
            SHARDS
        } else {
            1
        };
        Limiter {
            shards: (0..shards)
                .map(|_| Mutex::new(Table::new(max_entries / shards)))
                .collect(),
            hasher: std::hash::RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// The bucket key of a response of `kind` to `client`.
    pub fn key(&self, client: IpAddr, kind: &Kind) -> u64 {
        let mut h = self.hasher.build_hasher();
        network(client).hash(&mut h);
        match kind {
            Kind::Answer {
                qname,
                qtype,
                subnet,
            } => {
                h.write_u8(0);
                h.write(qname);
                h.write_u16(*qtype);
                if let Some(subnet) = subnet {
                    subnet.hash(&mut h);
                }
            }
            Kind::NxDomain { zone } => {
                h.write_u8(1);
                h.write(zone);
            }
            Kind::Referral { zone } => {
                h.write_u8(2);
                h.write(zone);
            }
            Kind::Error => h.write_u8(3),
        }
        h.finish()
    }

    /// Counts one response costing `cost_bytes` (see [`cost`]) under `key` at `now` and says
    /// what to do with it.
    pub fn decide(&self, key: u64, limits: &Limits, cost_bytes: u64, now: Instant) -> Decision {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let shard = &self.shards[(key >> 32) as usize % self.shards.len()];
        let mut table = shard.lock().unwrap_or_else(|e| e.into_inner());
        table
            .bucket(key, || Bucket::full(limits, now_ms))
            .take(limits, cost_bytes, now_ms)
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Buckets by key in least-recently-used order: a slab of nodes linked front (newest) to back
/// (oldest), so finding, touching and evicting are all O(1) and the slab never outgrows
/// `capacity`.
struct Table {
    map: FxHashMap<u64, u32>,
    nodes: Vec<Entry>,
    newest: u32,
    oldest: u32,
    capacity: usize,
}

struct Entry {
    key: u64,
    bucket: Bucket,
    newer: u32,
    older: u32,
}

const NIL: u32 = u32::MAX;

impl Table {
    fn new(capacity: usize) -> Table {
        Table {
            map: FxHashMap::default(),
            nodes: Vec::new(),
            newest: NIL,
            oldest: NIL,
            // Slab indexes are u32, NIL excluded.
            capacity: capacity.clamp(1, NIL as usize - 1),
        }
    }

    /// The bucket for `key`, now the newest; a fresh one (evicting the oldest when the table
    /// is full) if there was none.
    fn bucket(&mut self, key: u64, fresh: impl FnOnce() -> Bucket) -> &mut Bucket {
        if let Some(&i) = self.map.get(&key) {
            self.unlink(i);
            self.push_newest(i);
            return &mut self.nodes[i as usize].bucket;
        }
        let entry = Entry {
            key,
            bucket: fresh(),
            newer: NIL,
            older: NIL,
        };
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(entry);
            (self.nodes.len() - 1) as u32
        } else {
            let i = self.oldest;
            self.unlink(i);
            self.map.remove(&self.nodes[i as usize].key);
            self.nodes[i as usize] = entry;
            i
        };
        self.map.insert(key, i);
        self.push_newest(i);
        &mut self.nodes[i as usize].bucket
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let e = &self.nodes[i as usize];
            (e.newer, e.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.nodes[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.nodes[o as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        {
            let e = &mut self.nodes[i as usize];
            e.newer = NIL;
            e.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = i,
            n => self.nodes[n as usize].newer = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use Decision::{Drop, Send, Slip};

    fn limits(rate: u32, burst: u32, slip: u32) -> Limits {
        Limits {
            enabled: true,
            responses_per_second: rate,
            burst,
            slip,
        }
    }

    /// Each row: limits, then (ms since start, responses asked for at that instant, what they
    /// get in order). One bucket throughout.
    #[test]
    fn bucket_arithmetic() {
        type Step = (u64, &'static [Decision]);
        let table: &[(&str, Limits, &[Step])] = &[
            (
                "a fresh bucket holds the burst, then refills at the rate",
                limits(10, 3, 0),
                &[
                    (0, &[Send, Send, Send, Drop, Drop]),
                    // 10/s: one response every 100 ms.
                    (99, &[Drop]),
                    (100, &[Send, Drop]),
                    (300, &[Send, Send, Drop]),
                ],
            ),
            (
                "refill stops at the burst however long the quiet",
                limits(10, 3, 0),
                &[
                    (0, &[Send, Send, Send, Drop]),
                    (60_000, &[Send, Send, Send, Drop]),
                ],
            ),
            (
                "fractions of a response carry over",
                limits(3, 2, 0),
                &[
                    (0, &[Send, Send, Drop]),
                    // 3/s: a response every 333.3 ms.
                    (200, &[Drop]),
                    (333, &[Drop]),
                    // 334 ms: 1.002 responses; the 0.002 left over counts toward the next.
                    (334, &[Send, Drop]),
                    (667, &[Send, Drop]),
                ],
            ),
            (
                "a burst of one is a strict rate",
                limits(1, 1, 0),
                &[(0, &[Send, Drop]), (999, &[Drop]), (1000, &[Send, Drop])],
            ),
            (
                "time going backwards refills nothing",
                limits(10, 1, 0),
                &[
                    (500, &[Send, Drop]),
                    (100, &[Drop]),
                    (599, &[Drop]),
                    (600, &[Send]),
                ],
            ),
        ];
        for (what, limits, steps) in table {
            let l = Limiter::new(16);
            let t0 = Instant::now();
            let key = l.key(
                "192.0.2.1".parse().unwrap(),
                &Kind::Answer {
                    qname: b"www.example.com",
                    qtype: 1,
                    subnet: None,
                },
            );
            for (ms, want) in *steps {
                let got: Vec<Decision> = want
                    .iter()
                    .map(|_| l.decide(key, limits, UNIT_BYTES, t0 + Duration::from_millis(*ms)))
                    .collect();
                assert_eq!(&got, want, "{what}: at {ms} ms");
            }
        }
    }

    #[test]
    fn slip_cadence() {
        // (slip, what the 8 responses after the burst of one get)
        let table: &[(u32, [Decision; 8])] = &[
            (0, [Drop; 8]),
            (1, [Slip; 8]),
            (2, [Drop, Slip, Drop, Slip, Drop, Slip, Drop, Slip]),
            (3, [Drop, Drop, Slip, Drop, Drop, Slip, Drop, Drop]),
        ];
        for (slip, want) in table {
            let l = Limiter::new(16);
            let now = Instant::now();
            let lim = limits(1, 1, *slip);
            let key = l.key("192.0.2.1".parse().unwrap(), &Kind::Error);
            assert_eq!(l.decide(key, &lim, UNIT_BYTES, now), Send);
            let got: Vec<Decision> = (0..8)
                .map(|_| l.decide(key, &lim, UNIT_BYTES, now))
                .collect();
            assert_eq!(got, want, "slip {slip}");
        }
    }

    #[test]
    fn keys_separate_networks_and_kinds_but_not_hosts_or_case() {
        let l = Limiter::new(16);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = |name: &'static [u8], qtype| Kind::Answer {
            qname: name,
            qtype,
            subnet: None,
        };
        let base = l.key(ip("192.0.2.1"), &a(b"www.example.com", 1));
        // Same /24, same question: one bucket.
        assert_eq!(base, l.key(ip("192.0.2.200"), &a(b"www.example.com", 1)));
        assert_eq!(
            base,
            l.key(ip("::ffff:192.0.2.9"), &a(b"www.example.com", 1))
        );
        // Another network, another name, another type, another kind: other buckets.
        for other in [
            l.key(ip("192.0.3.1"), &a(b"www.example.com", 1)),
            l.key(ip("192.0.2.1"), &a(b"ftp.example.com", 1)),
            l.key(ip("192.0.2.1"), &a(b"www.example.com", 28)),
            l.key(
                ip("192.0.2.1"),
                &Kind::NxDomain {
                    zone: b"example.com",
                },
            ),
            l.key(ip("192.0.2.1"), &Kind::Error),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            l.key(
                ip("192.0.2.1"),
                &Kind::NxDomain {
                    zone: b"example.com"
                }
            ),
            l.key(
                ip("192.0.2.1"),
                &Kind::Referral {
                    zone: b"example.com"
                }
            )
        );
        // IPv6: one /56.
        let v6 = l.key(ip("2001:db8:0:ff::1"), &Kind::Error);
        assert_eq!(v6, l.key(ip("2001:db8:0:1:abcd::2"), &Kind::Error));
        assert_ne!(v6, l.key(ip("2001:db8:0:100::1"), &Kind::Error));
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_used() {
        let l = Limiter::new(4);
        let lim = limits(1, 1, 0);
        let now = Instant::now();
        let key = |n: u8| l.key(IpAddr::from([10, n, 0, 1]), &Kind::Error);
        // Networks 0 and 1 spend their bucket.
        for n in [0, 1] {
            assert_eq!(l.decide(key(n), &lim, UNIT_BYTES, now), Send);
            assert_eq!(l.decide(key(n), &lim, UNIT_BYTES, now), Drop);
        }
        // A spoofed flood from 200 other networks: the table stays at 4, and network 1, still
        // being flooded, keeps its (empty) bucket because it stays recently used.
        for n in 2..202 {
            assert_eq!(l.decide(key(n), &lim, UNIT_BYTES, now), Send, "network {n}");
            assert_eq!(
                l.decide(key(1), &lim, UNIT_BYTES, now),
                Drop,
                "network 1 after {n}"
            );
            assert!(l.len() <= 4, "{} buckets", l.len());
        }
        assert_eq!(l.len(), 4);
        // Network 0 went quiet and was evicted: it starts over with a full bucket.
        assert_eq!(l.decide(key(0), &lim, UNIT_BYTES, now), Send);
    }

    #[test]
    fn a_large_table_is_sharded_within_its_bound() {
        let l = Limiter::new(DEFAULT_MAX_ENTRIES);
        assert_eq!(l.shards.len(), SHARDS);
        let lim = Limits::default();
        let now = Instant::now();
        for n in 0..(2 * DEFAULT_MAX_ENTRIES as u32) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from((10u32 << 24) | (n << 8)));
            l.decide(l.key(ip, &Kind::Error), &lim, UNIT_BYTES, now);
        }
        assert!(l.len() <= DEFAULT_MAX_ENTRIES, "{}", l.len());
        assert!(l.len() > DEFAULT_MAX_ENTRIES * 9 / 10, "{}", l.len());
    }

    #[test]
    fn a_response_costs_what_it_adds_to_the_query_and_at_least_an_eighth_of_a_unit() {
        // (query bytes, response bytes, cost, small)
        let table = [
            (59, 91, 64, true),      // a service answer with ECS: 32 bytes added, the floor
            (40, 40, 64, true),      // REFUSED: nothing added, still counted
            (50, 30, 64, true),      // smaller than the query (a slip)
            (50, 100, 64, true),     // exactly twice the query: still small
            (50, 101, 64, false),    // one byte more: keyed without the subnet
            (50, 1062, 1012, false), // a large TXT
            (0, 512, 512, false),
        ];
        for (query, response, want_cost, want_small) in table {
            assert_eq!(cost(query, response), want_cost, "{query} -> {response}");
            assert_eq!(
                is_small(query, response),
                want_small,
                "{query} -> {response}"
            );
        }
    }

    #[test]
    fn small_answers_get_eight_times_the_rate_and_large_ones_pay_by_size() {
        let lim = limits(10, 10, 0);
        let now = Instant::now();
        let sent = |cost_bytes: u64| {
            let l = Limiter::new(16);
            let key = l.key("192.0.2.1".parse().unwrap(), &Kind::Error);
            (0..1000)
                .filter(|_| l.decide(key, &lim, cost_bytes, now) == Send)
                .count()
        };
        // A burst of 10 units of 512 bytes: 80 answers at the 64-byte floor, 10 of 512, 5 of
        // 1,000 (the 6th would need 6,000 of the 5,120 bytes).
        assert_eq!(sent(cost(50, 60)), 80);
        assert_eq!(sent(UNIT_BYTES), 10);
        assert_eq!(sent(cost(50, 1050)), 5);
        // And a refill of one second brings the same again.
        let l = Limiter::new(16);
        // The limiter counts time from its creation: read the clock after it.
        let now = Instant::now();
        let key = l.key("192.0.2.1".parse().unwrap(), &Kind::Error);
        let count = |at: Instant| {
            (0..1000)
                .filter(|_| l.decide(key, &lim, 64, at) == Send)
                .count()
        };
        assert_eq!(count(now), 80);
        assert_eq!(count(now + Duration::from_secs(1)), 80);
    }

    #[test]
    fn tailored_answers_are_keyed_by_their_client_subnet() {
        let l = Limiter::new(16);
        let resolver: IpAddr = "192.0.2.1".parse().unwrap();
        let answer = |subnet: Option<&str>| {
            l.key(
                resolver,
                &Kind::Answer {
                    qname: b"www.api.example.com",
                    qtype: 1,
                    subnet: subnet.map(|s| network(s.parse().unwrap())),
                },
            )
        };
        let (a, b) = (answer(Some("81.2.69.0")), answer(Some("8.8.8.0")));
        assert_ne!(a, b);
        assert_ne!(a, answer(None));
        // The same /24 asked again is the same response.
        assert_eq!(a, answer(Some("81.2.69.0")));
        // One resolver, 2,000 client subnets, 5 queries each at one instant: with limits of one
        // unit a second, every answer goes out (each subnet's bucket holds 8 small answers).
        let lim = limits(1, 1, 2);
        let now = Instant::now();
        let mut limited = 0;
        for round in 0..5 {
            for n in 0..2000u32 {
                let subnet = IpAddr::from(std::net::Ipv4Addr::from((10 << 24) | (n << 8)));
                let key = l.key(
                    resolver,
                    &Kind::Answer {
                        qname: b"www.api.example.com",
                        qtype: 1,
                        subnet: Some(network(subnet)),
                    },
                );
                if l.decide(key, &lim, cost(59, 91), now) != Send {
                    limited += 1;
                }
            }
            assert_eq!(limited, 0, "round {round}");
        }
    }

    #[test]
    fn exempt_networks_are_matched_by_prefix_and_mapped_addresses_count_as_ipv4() {
        let settings = NodeSettings {
            exempt: vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ..NodeSettings::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(settings.is_exempt(ip("192.0.2.77")));
        assert!(settings.is_exempt(ip("::ffff:192.0.2.1")));
        assert!(settings.is_exempt(ip("2001:db8:ffff::1")));
        assert!(!settings.is_exempt(ip("192.0.3.1")));
        assert!(!settings.is_exempt(ip("2001:db9::1")));
        assert!(!NodeSettings::default().is_exempt(ip("127.0.0.1")));
    }
}
