//! What a node holds of the cluster, as plain data: every node's newest report (its own rebuilt
//! from its probers), every node's heartbeat, the drain decisions, the verdicts it last published
//! (so changes can be told), and what it knows of each peer. Synchronous and free of I/O: the
//! cluster's tasks lock a `Book`, call in, and act on what comes back (log, persist, wake
//! followers, publish).
//!
//! Deltas (scuttlebutt-style, as quickwit's chitchat): a report's version moves only when what it
//! says changes (readiness, an up/down verdict), and liveness travels apart, as a heartbeat per
//! node. A request carries a `Digest` of the versions and heartbeats the asker holds, and the
//! answer holds only the reports and heartbeats newer than those (a report the asker holds an
//! older version of as the votes that changed, `ReportDelta`), the drains only if the asker's
//! differ; the one who answers takes the digest's newer heartbeats. In a steady state an
//! exchange is then the heartbeats that moved, whatever the endpoints.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::health::drain::{Drain, DrainSet};
use crate::health::latency::{self, Steerer};
use crate::health::merge::{self, CheckIds, MergeSettings, Merged, Report, Steering, Vote};
use crate::health::tally::Tally;
pub use crate::health::tally::VerdictChange;
use crate::health::{HealthView, Status};
use crate::zone::ZoneSet;
use crate::zone::check::Check;

/// What one node hands another: the wire message of the exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    pub from: String,
    pub reports: Vec<Report>,
    pub drains: DrainSet,
    /// The sender's generation when it built this message: it moves when a verdict or a drain
    /// it holds changes, and a follower long-polls for the next one. 0 from a node that does
    /// not hold long-polls.
    #[serde(default)]
    pub generation: u64,
    /// Node → Unix milliseconds of its latest refresh, as the sender knows them: what keeps a
    /// report that says the same for long fresh. Absent from older nodes, whose report versions
    /// move every refresh instead.
    #[serde(default)]
    pub heartbeats: BTreeMap<String, u64>,
    /// Reports the asker holds an older version of, as the votes that changed since
    /// (`ReportDelta`); `reports` has the rest whole. Absent from older nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<ReportDelta>,
}

/// A node's report as the votes that changed between the version the asker holds (`base`) and
/// `version`: what a changed report costs instead of all its votes (a DC failure changes a
/// tenth of a thousand votes, and each node's report went out whole to every peer). It applies
/// to any held version from `base` up to before `version` (the votes that changed in between
/// are in it too, with their values now), to nothing else: an asker holding something else
/// keeps what it has, and its next digest asks again, for the whole report if need be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportDelta {
    pub node: String,
    pub base: u64,
    pub version: u64,
    pub generated_ms: u64,
    pub ready: bool,
    /// Check → address → the vote now, or none where the endpoint went.
    pub votes: BTreeMap<String, BTreeMap<String, Option<Vote>>>,
}

/// Which reports an answer may hold (those newer than the asker holds, of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every node's: a pull's answer.
    All,
    /// The answering node's own: a long-poll's answer in a small cluster, where every node
    /// follows every other and hears every change first hand.
    Own,
    /// Its own, and those it took in from their own nodes when they can go as deltas: a
    /// long-poll's answer in a large cluster, where a node follows a few peers only. A push then goes two hops (a node's
    /// followers, and theirs), reaching some fanout² nodes at once, and the periodic pulls
    /// bring it to the rest; relaying it further would send each node the same report from
    /// every peer it follows, all of them learning it at about the same time.
    Near,
}

/// The most whole reports an answer to a digest holds (deltas and heartbeats are not counted):
/// about 600 KB with a thousand endpoints. An asker that lacks more (at its start, in a large
/// cluster) gets the rest from its next pulls, whose digests say what it has by then; an
/// answer with all of them took longer than a pull may, under load, and the pull that timed out
/// brought nothing, so the next asked for all of them again.
pub const MAX_WHOLE_REPORTS: usize = 8;

/// How many changes of each node's report a book remembers to build deltas from: a peer that
/// holds an older version gets the whole report.
const CHANGES_KEPT: usize = 16;

/// The votes (check, address) that differ between two versions of a report.
#[derive(Debug, Clone)]
struct Change {
    from: u64,
    to: u64,
    keys: Vec<(String, String)>,
}

/// The votes that came, went, flipped, or whose start or round-trip time moved between `old`
/// and `new` (errors aside: they ride along with a whole report). A report's own node keeps the
/// starts and round-trip times it published while its votes say the same (`Report::keep_since`,
/// `keep_published`), so between two versions these are what changed: a verdict, or a
/// round-trip time the latency policy reads.
fn changed_votes(old: &Report, new: &Report) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let empty = BTreeMap::new();
    let checks: std::collections::BTreeSet<&String> =
        old.votes.keys().chain(new.votes.keys()).collect();
    for check in checks {
        let a = old.votes.get(check).unwrap_or(&empty);
        let b = new.votes.get(check).unwrap_or(&empty);
        for (addr, vote) in a {
            let moved = |v: &Vote| {
                v.up != vote.up
                    || v.recovered != vote.recovered
                    || v.since_ms != vote.since_ms
                    || v.rtt_ms != vote.rtt_ms
            };
            if b.get(addr).is_none_or(moved) {
                keys.push((check.clone(), addr.clone()));
            }
        }
        for addr in b.keys() {
            if !a.contains_key(addr) {
                keys.push((check.clone(), addr.clone()));
            }
        }
    }
    keys
}

/// What an asker holds, sent with its request: the version of each node's report, the newest
/// heartbeat of each node, and a hash of its drain set. The answer leaves out what the asker
/// has already, and the one who answers takes in the newer heartbeats (a digest is signed like
/// the rest of the request): liveness spreads both ways with every exchange, push-pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    pub versions: BTreeMap<String, u64>,
    pub beats: BTreeMap<String, u64>,
    pub drains: u64,
    /// The asker takes per-vote deltas (`ReportDelta`): its digest came in this format, which
    /// older nodes, who would drop the deltas unread, do not send.
    pub deltas: bool,
}

impl Digest {
    /// The header value: `drains=HEX;t=BASE;v=NODE:VERSION_AGO:BEAT_AGO,...`, node ids
    /// percent-encoded, each version and heartbeat as how far (hexadecimal, empty for none) it
    /// lies below BASE, the greatest of them: heartbeats are seconds old, so a hundred nodes'
    /// take a few bytes each rather than thirteen digits.
    pub fn to_header(&self) -> String {
        let nodes: std::collections::BTreeSet<&String> =
            self.versions.keys().chain(self.beats.keys()).collect();
        let entries: Vec<(&str, Option<u64>, Option<u64>)> = nodes
            .into_iter()
            .map(|n| {
                (
                    n.as_str(),
                    self.versions.get(n).copied(),
                    self.beats.get(n).copied(),
                )
            })
            .collect();
        write_header(self.drains, &entries)
    }

    /// Reads a header value, this format or the older `drains=HEX;v=NODE:VERSION,...` (no
    /// heartbeats, no deltas); `None` when malformed (the asker then gets everything).
    pub fn parse(text: &str) -> Option<Digest> {
        let (drains, rest) = text.split_once(';')?;
        let drains = u64::from_str_radix(drains.strip_prefix("drains=")?, 16).ok()?;
        let mut digest = Digest {
            drains,
            ..Digest::default()
        };
        if let Some(rest) = rest.strip_prefix("t=") {
            let (base, versions) = rest.split_once(';')?;
            let base: u64 = base.parse().ok()?;
            let below = |ago: &str| -> Option<Option<u64>> {
                if ago.is_empty() {
                    return Some(None);
                }
                base.checked_sub(u64::from_str_radix(ago, 16).ok()?)
                    .map(Some)
            };
            digest.deltas = true;
            // Collected, then built at once: a header lists its nodes in order, and a map
            // built from sorted entries compares each id once rather than searching for it.
            let (mut held, mut beats) = (Vec::new(), Vec::new());
            for item in versions
                .strip_prefix("v=")?
                .split(',')
                .filter(|i| !i.is_empty())
            {
                let mut parts = item.split(':');
                let (node, version, beat) = (parts.next()?, parts.next()?, parts.next()?);
                if parts.next().is_some() {
                    return None;
                }
                let node = percent_decode(node)?;
                if let Some(v) = below(version)? {
                    held.push((node.clone(), v));
                }
                if let Some(b) = below(beat)? {
                    beats.push((node, b));
                }
            }
            digest.versions = held.into_iter().collect();
            digest.beats = beats.into_iter().collect();
            return Some(digest);
        }
        for item in rest
            .strip_prefix("v=")?
            .split(',')
            .filter(|i| !i.is_empty())
        {
            let (node, version) = item.rsplit_once(':')?;
            digest
                .versions
                .insert(percent_decode(node)?, version.parse().ok()?);
        }
        Some(digest)
    }
}

/// A digest's header (see `Digest::to_header`) from its entries, (node, version, heartbeat) in
/// node id order.
fn write_header(drains: u64, entries: &[(&str, Option<u64>, Option<u64>)]) -> String {
    use std::fmt::Write as _;
    let base = entries
        .iter()
        .flat_map(|(_, v, b)| [*v, *b])
        .flatten()
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(24 + entries.len() * 16);
    let _ = write!(out, "drains={drains:x};t={base};v=");
    for (i, (node, version, beat)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for b in node.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        for value in [version, beat] {
            out.push(':');
            if let Some(v) = value {
                let _ = write!(out, "{:x}", base - v);
            }
        }
    }
    out
}

/// A digest's versions and heartbeats by node, hashed: what answering a request looks up once
/// per node held (see `Digest::held`).
pub struct Held<'a>(rustc_hash::FxHashMap<&'a str, (Option<u64>, Option<u64>)>);

impl Held<'_> {
    /// The version of `node`'s report the asker holds.
    pub fn version(&self, node: &str) -> Option<u64> {
        self.0.get(node).and_then(|(v, _)| *v)
    }

    /// The newest heartbeat of `node` the asker holds.
    pub fn beat(&self, node: &str) -> Option<u64> {
        self.0.get(node).and_then(|(_, b)| *b)
    }
}

impl Digest {
    /// Its versions and heartbeats by node, for lookups.
    pub fn held(&self) -> Held<'_> {
        let mut held: rustc_hash::FxHashMap<&str, (Option<u64>, Option<u64>)> =
            rustc_hash::FxHashMap::default();
        held.reserve(self.versions.len().max(self.beats.len()));
        for (node, v) in &self.versions {
            held.entry(node.as_str()).or_default().0 = Some(*v);
        }
        for (node, b) in &self.beats {
            held.entry(node.as_str()).or_default().1 = Some(*b);
        }
        Held(held)
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// A hash of a drain set, for the digest: equal sets hash alike on every node (its entries are
/// ordered), and a changed one almost surely differs.
pub fn drains_hash(drains: &DrainSet) -> u64 {
    use sha2::Digest as _;
    // A BTreeMap of plain data: serialising it cannot fail.
    let bytes = serde_json::to_vec(drains).unwrap_or_default();
    let hash = sha2::Sha256::digest(&bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// A node's reports and drains.
#[derive(Debug)]
pub struct Book {
    node: String,
    region: String,
    reports: HashMap<String, Report>,
    /// Node → Unix milliseconds of its latest refresh known here (this node's own included).
    heartbeats: HashMap<String, u64>,
    drains: DrainSet,
    /// The greatest version this node's report has had or may have been served under (see
    /// `message`): the next version is past it.
    own_version: u64,
    /// Refreshes so far: orders their merges.
    merges: u64,
    /// Every report's votes, merged again only where something changed; it also remembers the
    /// verdicts last merged, to tell changes.
    tally: Tally,
    /// Check ids for this node's own report.
    check_ids: CheckIds,
    /// The latency policy's hysteresis.
    steerer: Steerer,
    /// Node → the last changes of its report held here, oldest first, each from the version
    /// held before: what deltas are built from.
    changes: HashMap<String, VecDeque<Change>>,
    /// The nodes whose report held here came from that node itself (see `Reach::Near`).
    direct: HashSet<String>,
    /// Every node id held (reports, heartbeats, this node's), sorted, and the numbers of
    /// reports and heartbeats it was listed for (`digest_header`).
    ids: (Vec<String>, Option<(usize, usize)>),
}

/// What a refresh found.
#[derive(Debug)]
pub struct Refreshed {
    /// Counts the refreshes: it orders their merges.
    pub version: u64,
    /// This node's own verdicts changed: its followers must hear of it.
    pub news: bool,
    pub merged: Merged,
    pub changes: Vec<VerdictChange>,
    /// The nodes the isolation guard ignores, when that list changed.
    pub isolation: Option<Vec<String>>,
    /// Whether the merge judged any endpoint again (`Tally::merge`): when not, `merged` has the
    /// verdicts of the refresh before.
    pub judged: bool,
    pub drains: DrainSet,
}

/// What taking in a peer's message did.
#[derive(Debug, Default)]
pub struct Absorbed {
    /// A newer report or drain was taken in (the merged view needs rebuilding; newer
    /// heartbeats alone wait for the next periodic merge).
    pub changed: bool,
    /// A drain changed: what this node's own followers must hear of. Other nodes' reports are
    /// not: they reach the followers first hand, or with their next pull (see `message`).
    pub news: bool,
    /// Another node's newer report was taken in from that node itself: what a node that
    /// relays pushes (a large cluster's, see `Cluster::relays_pushes`) tells its followers.
    pub relayed: bool,
    /// Drain decisions learnt from the message; when any, the set to persist.
    pub learnt: Vec<Drain>,
    pub drains: Option<DrainSet>,
}

impl Book {
    pub fn new(node: &str, region: &str, drains: DrainSet) -> Book {
        Book {
            node: node.to_string(),
            region: region.to_string(),
            reports: HashMap::new(),
            heartbeats: HashMap::new(),
            drains,
            own_version: 0,
            merges: 0,
            tally: Tally::new(),
            check_ids: CheckIds::default(),
            changes: HashMap::new(),
            direct: HashSet::new(),
            ids: (Vec::new(), None),
            steerer: Steerer::default(),
        }
    }

    /// Remembers that `node`'s report went from version `from` to `to`, changing the votes
    /// `keys`; `from` none (a first report) forgets the older changes.
    fn note_change(&mut self, node: &str, from: Option<u64>, to: u64, keys: Vec<(String, String)>) {
        let log = self.changes.entry(node.to_string()).or_default();
        let Some(from) = from else {
            log.clear();
            return;
        };
        if log.len() == CHANGES_KEPT {
            log.pop_front();
        }
        log.push_back(Change { from, to, keys });
    }

    /// `report` as the votes that changed since version `held`, when the changes remembered
    /// reach back to it unbroken and it is worth it (fewer than half the votes); else none
    /// (send it whole).
    fn delta(&self, report: &Report, held: u64) -> Option<ReportDelta> {
        let log = self.changes.get(&report.node)?;
        let start = log.iter().position(|c| c.from == held)?;
        let mut to = held;
        let mut keys = std::collections::BTreeSet::new();
        for c in log.iter().skip(start) {
            if c.from != to {
                return None;
            }
            to = c.to;
            keys.extend(c.keys.iter());
        }
        let votes: usize = report.votes.values().map(BTreeMap::len).sum();
        if to != report.version || keys.len() * 2 > votes {
            return None;
        }
        let mut delta = ReportDelta {
            node: report.node.clone(),
            base: held,
            version: report.version,
            generated_ms: report.generated_ms,
            ready: report.ready,
            votes: BTreeMap::new(),
        };
        for (check, addr) in keys {
            let vote = report.votes.get(check).and_then(|v| v.get(addr)).cloned();
            delta
                .votes
                .entry(check.clone())
                .or_default()
                .insert(addr.clone(), vote);
        }
        Some(delta)
    }

    /// Applies a delta to the report held of its node, if it applies (see `ReportDelta`);
    /// true if it did.
    fn apply(&mut self, delta: ReportDelta) -> bool {
        // In place: a copy of a thousand votes for each of a hundred nodes' deltas was most
        // of what a DC failure cost.
        let Some(held) = self.reports.get_mut(&delta.node) else {
            return false;
        };
        if held.version < delta.base || held.version >= delta.version {
            return false;
        }
        let from = held.version;
        let mut keys = Vec::new();
        for (check, by_addr) in delta.votes {
            for (addr, vote) in by_addr {
                keys.push((check.clone(), addr.clone()));
                match vote {
                    Some(vote) => {
                        held.votes
                            .entry(check.clone())
                            .or_default()
                            .insert(addr, vote);
                    }
                    None => {
                        if let Some(votes) = held.votes.get_mut(&check) {
                            votes.remove(&addr);
                            if votes.is_empty() {
                                held.votes.remove(&check);
                            }
                        }
                    }
                }
            }
        }
        held.version = delta.version;
        held.generated_ms = delta.generated_ms;
        held.ready = delta.ready;
        self.tally.take(held);
        self.note_change(&delta.node, Some(from), delta.version, keys);
        true
    }

    /// Notes whether `node`'s newer report, just taken in, came from `node` itself.
    fn took(&mut self, node: &str, sender: &str, out: &mut Absorbed) {
        if node == sender {
            self.direct.insert(node.to_string());
            out.relayed = true;
        } else {
            self.direct.remove(node);
        }
    }

    /// Takes in the newer heartbeats of an asker's digest (push-pull: the asker learns the
    /// newer ones of this node from the answer), each only where the asker holds the same
    /// version of that node's report as this node: a heartbeat keeps a report fresh, and must
    /// not keep one fresh that its node has replaced (a node whose answers do not get out but
    /// whose requests do would otherwise keep its old votes counted).
    pub fn absorb_beats(&mut self, digest: &Digest) {
        let held = digest.held();
        for (node, beat) in &digest.beats {
            let same = held
                .version(node)
                .is_some_and(|v| self.reports.get(node).is_some_and(|r| r.version == v));
            if !same || *node == self.node {
                continue;
            }
            // No copy of the node's id for one already known (every one, past the start).
            match self.heartbeats.get_mut(node) {
                Some(held) => *held = (*held).max(*beat),
                None => {
                    self.heartbeats.insert(node.clone(), *beat);
                }
            }
        }
    }

    /// The latency policy's orders for `zones` from the reports held, moving leaders as the
    /// hysteresis allows (see `health::latency`). Call once per refresh.
    pub fn steer(&mut self, zones: &ZoneSet, now_ms: u64, stale_after_ms: u64) -> Steering {
        let any = zones
            .services()
            .any(|(_, s)| s.policy == crate::zone::Policy::Latency);
        if !any {
            return Steering::default();
        }
        let matrix = latency::matrix(&self.reports, &self.heartbeats, now_ms, stale_after_ms);
        self.steerer.steer(zones, &matrix, now_ms)
    }

    /// Rebuilds this node's report from `view` (its probers' confirmed observations), beats its
    /// heartbeat, merges every report, and says what changed since the last refresh.
    ///
    /// The report gets a new version only when what it says changed, or a smoothed round-trip
    /// time moved by more than `latency::REPUBLISH_MOVE` (10%); otherwise it keeps its version, and the
    /// RTTs and `since` times it was published with (errors ride along when it is next sent).
    /// A new version, too, keeps the published RTT of every vote whose RTT did not move that
    /// much (`latency::keep_published_rtts`): its delta is then the votes that changed.
    pub fn refresh(
        &mut self,
        view: &HealthView,
        now_ms: u64,
        now: Instant,
        settings: MergeSettings,
    ) -> Refreshed {
        let mut own = own_report(
            &self.node,
            &self.region,
            view,
            now_ms,
            now,
            &mut self.check_ids,
        );
        if let Some(old) = self.reports.get(&self.node) {
            own.keep_since(old);
            latency::keep_published_rtts(old, &mut own);
        }
        let kept = self
            .reports
            .get(&self.node)
            .filter(|old| old.same_verdicts(&own) && !latency::rtt_moved(old, &own))
            .map(|old| {
                own.keep_published(old);
                (old.version, old.generated_ms)
            });
        let news = kept.is_none();
        (own.version, own.generated_ms) = kept.unwrap_or_else(|| {
            // Strictly increasing even when the clock stands still or steps back.
            self.own_version = (self.own_version + 1).max(now_ms);
            (self.own_version, now_ms)
        });
        if news {
            self.tally.take(&own);
            let old = self.reports.get(&self.node);
            let from = old.map(|o| o.version);
            let keys = old.map(|o| changed_votes(o, &own)).unwrap_or_default();
            self.note_change(&self.node.clone(), from, own.version, keys);
        }
        // A report kept replaces the one held under the same version, RTTs and starts: only
        // its errors differ, and they ride along when it is next sent.
        self.reports.insert(own.node.clone(), own);
        self.merge(news, now_ms, settings)
    }

    /// A refresh from the same probers' view as the last one (`refresh`), which would rebuild
    /// the same report and keep it: beats the heartbeat and merges, without reading a vote of
    /// this node's. What a steady node does every exchange interval; `refresh` with a view
    /// that has not changed costs a report of every endpoint. Before the first `refresh`, a
    /// refresh of an empty view.
    pub fn refresh_same(
        &mut self,
        now_ms: u64,
        now: Instant,
        settings: MergeSettings,
    ) -> Refreshed {
        if !self.reports.contains_key(&self.node) {
            return self.refresh(&HealthView::default(), now_ms, now, settings);
        }
        self.merge(false, now_ms, settings)
    }

    /// Beats this node's heartbeat and merges every report (see `refresh`).
    fn merge(&mut self, news: bool, now_ms: u64, settings: MergeSettings) -> Refreshed {
        // Served to older peers under the heartbeat's time (see `message`): keep past it.
        self.own_version = self.own_version.max(now_ms);
        let beat = self.heartbeats.entry(self.node.clone()).or_default();
        *beat = (*beat).max(now_ms);
        let tallied = self.tally.merge(&self.heartbeats, now_ms, settings);
        self.merges += 1;
        Refreshed {
            version: self.merges,
            news,
            merged: tallied.merged,
            changes: tallied.changes,
            isolation: tallied.isolation,
            judged: tallied.judged,
            drains: self.drains.clone(),
        }
    }

    /// Takes in what a peer holds: newer reports and heartbeats of other nodes, newer drain
    /// decisions.
    pub fn absorb(&mut self, msg: Exchange) -> Absorbed {
        let mut out = Absorbed::default();
        let sender = msg.from.clone();
        for (node, beat) in msg.heartbeats {
            if node != self.node {
                let held = self.heartbeats.entry(node).or_default();
                *held = (*held).max(beat);
            }
        }
        for r in msg.reports {
            // Nobody else speaks for this node.
            if r.node == self.node {
                continue;
            }
            let node = r.node.clone();
            let older = self
                .reports
                .get(&node)
                .filter(|held| held.version < r.version)
                .map(|held| (held.version, changed_votes(held, &r)));
            let version = r.version;
            if merge::accept(&mut self.reports, r)
                && let Some(r) = self.reports.get(&node)
            {
                self.tally.take(r);
                out.changed = true;
                self.took(&node, &sender, &mut out);
                match older {
                    Some((from, keys)) => self.note_change(&node, Some(from), version, keys),
                    None => self.note_change(&node, None, version, Vec::new()),
                }
            }
        }
        for d in msg.deltas {
            let node = d.node.clone();
            if node != self.node && self.apply(d) {
                out.changed = true;
                self.took(&node, &sender, &mut out);
            }
        }
        let before = self.drains.clone();
        if self.drains.merge(&msg.drains) {
            out.changed = true;
            out.news = true;
            out.learnt = self
                .drains
                .entries
                .iter()
                .filter(|(key, d)| before.entries.get(*key) != Some(*d))
                .map(|(_, d)| d.clone())
                .collect();
            out.drains = Some(self.drains.clone());
        }
        out
    }

    /// The message this node serves, stamped with `generation`, for an asker that holds
    /// `digest`: the reports newer than it holds, the drains if its differ, every heartbeat.
    ///
    /// An asker that sent no digest is an older node, which judges freshness by a report's
    /// generation time and keeps a report only when its version moves: it gets every report,
    /// this node's own stamped with its heartbeat as version and generation time (such a version
    /// can come back relayed; this node's next versions are past it). Only the own report: a
    /// relayed one may be older than its node's heartbeat, and stamped so it would pass for
    /// newer than what its node says now. An older node that cannot reach a newer one directly
    /// therefore sees its report go stale while the two versions run side by side.
    ///
    /// `Reach::Own` (a long-poll's answer) leaves out the reports of other nodes: a change
    /// reaches every node first hand, from its own node's long-poll, and relayed reports wait
    /// for the periodic pull, whose digest by then says what the asker has. Otherwise a change
    /// everyone sees at once (a DC failure) would be sent to each node by every peer, each
    /// waking with a digest older than the reports it gained meanwhile.
    pub fn message(&self, generation: u64, digest: Option<&Digest>, reach: Reach) -> Exchange {
        // One index of the digest for the hundreds of lookups below: a BTreeMap of node ids
        // compared byte by byte took most of a large cluster's steady CPU.
        let held = digest.map(Digest::held);
        let heartbeats: BTreeMap<String, u64> = self
            .heartbeats
            .iter()
            .filter(|(n, b)| {
                held.as_ref()
                    .is_none_or(|h| h.beat(n).is_none_or(|held| **b > held))
            })
            .map(|(n, b)| (n.clone(), *b))
            .collect();
        let mut deltas = Vec::new();
        let (reports, drains) = match digest.zip(held.as_ref()) {
            Some((d, h)) => {
                let mut reports = Vec::new();
                let newer = self
                    .reports
                    .values()
                    .filter(|r| match reach {
                        Reach::All => true,
                        Reach::Own => r.node == self.node,
                        Reach::Near => r.node == self.node || self.direct.contains(&r.node),
                    })
                    .filter(|r| h.version(&r.node).is_none_or(|v| r.version > v));
                for r in newer {
                    let delta = h
                        .version(&r.node)
                        .filter(|_| d.deltas)
                        .and_then(|held| self.delta(r, held));
                    match delta {
                        Some(delta) => deltas.push(delta),
                        // A relayed report that would go whole waits for the asker's pulls:
                        // at a large cluster's start every node takes in many reports first
                        // hand, each woke its followers, and each of them took in the same
                        // whole reports (75 KB apiece) from every peer it follows.
                        None if reach == Reach::Near && r.node != self.node => {}
                        None => reports.push(r.clone()),
                    }
                }
                if reports.len() > MAX_WHOLE_REPORTS {
                    // Which ones: from a place that moves with the generation, so that the
                    // peers an asker pulls at about the same time send it different ones.
                    reports.sort_by(|a, b| a.node.cmp(&b.node));
                    let start = (generation as usize) % reports.len();
                    reports.rotate_left(start);
                    reports.truncate(MAX_WHOLE_REPORTS);
                }
                let drains = if d.drains == drains_hash(&self.drains) {
                    DrainSet::default()
                } else {
                    self.drains.clone()
                };
                (reports, drains)
            }
            None => {
                let reports = self.reports.values().map(|r| {
                    let mut r = r.clone();
                    if r.node == self.node
                        && let Some(&beat) = heartbeats.get(&r.node)
                    {
                        r.version = r.version.max(beat);
                        r.generated_ms = r.generated_ms.max(beat);
                    }
                    r
                });
                (reports.collect(), self.drains.clone())
            }
        };
        let mut reports = reports;
        reports.sort_by(|a, b| a.node.cmp(&b.node));
        deltas.sort_by(|a, b| a.node.cmp(&b.node));
        Exchange {
            from: self.node.clone(),
            reports,
            drains,
            generation,
            heartbeats,
            deltas,
        }
    }

    /// What this node holds, for its requests.
    /// `digest().to_header()` with this node's heartbeat at `beat` at least (as sent, see
    /// `Cluster::pull`), written straight from what the book holds, in the order of the ids
    /// sorted once: a pull's digest copied every node's id twice into two sorted maps, a fifth
    /// of a large cluster's steady CPU, and sorting the ids at every pull a third after that.
    pub fn digest_header(&mut self, beat: u64) -> String {
        // Node ids are never forgotten: the same counts are the same ids.
        let sizes = (self.reports.len(), self.heartbeats.len());
        if self.ids.1 != Some(sizes) {
            let mut ids: Vec<String> = self
                .reports
                .keys()
                .chain(self.heartbeats.keys())
                .chain([&self.node])
                .cloned()
                .collect();
            ids.sort_unstable();
            ids.dedup();
            self.ids = (ids, Some(sizes));
        }
        let entries: Vec<(&str, Option<u64>, Option<u64>)> = self
            .ids
            .0
            .iter()
            .map(|n| {
                let held = self.heartbeats.get(n).copied();
                let beat = if *n == self.node {
                    Some(held.unwrap_or(0).max(beat))
                } else {
                    held
                };
                (n.as_str(), self.reports.get(n).map(|r| r.version), beat)
            })
            .collect();
        write_header(drains_hash(&self.drains), &entries)
    }

    pub fn digest(&self) -> Digest {
        Digest {
            versions: self
                .reports
                .values()
                .map(|r| (r.node.clone(), r.version))
                .collect(),
            beats: self
                .heartbeats
                .iter()
                .map(|(n, b)| (n.clone(), *b))
                .collect(),
            drains: drains_hash(&self.drains),
            deltas: true,
        }
    }

    /// Every node's report as held here, by node id.
    pub fn reports(&self) -> Vec<Report> {
        let mut r: Vec<Report> = self.reports.values().cloned().collect();
        r.sort_by(|a, b| a.node.cmp(&b.node));
        r
    }

    /// The drain set with `d` applied, to persist before `set_drains` commits it.
    pub fn with_decision(&self, d: Drain) -> DrainSet {
        let mut next = self.drains.clone();
        next.apply(d);
        next
    }

    pub fn set_drains(&mut self, drains: DrainSet) {
        self.drains = drains;
    }
}

/// This node's report: a vote per confirmed observation (the optimistic start-up defaults are
/// no evidence), aged from when each status began.
pub fn own_report(
    node: &str,
    region: &str,
    view: &HealthView,
    now_ms: u64,
    now: Instant,
    check_ids: &mut CheckIds,
) -> Report {
    let mut own = Report::new(node, region, 0, now_ms);
    own.ready = view.ready;
    for obs in view.observations().filter(|o| o.confirmed) {
        let age = now.saturating_duration_since(obs.since).as_millis() as u64;
        own.insert(
            &check_ids.key(obs.target.addr, &obs.target.check),
            Vote {
                up: obs.status == Status::Up,
                since_ms: now_ms.saturating_sub(age),
                rtt_ms: obs.smoothed_rtt.map(|d| d.as_secs_f64() * 1000.0),
                error: obs.last_error.clone(),
                recovered: obs.recovered,
            },
        );
    }
    own
}

/// How long a lone down vote waits before it counts (see `MergeSettings::settle_ms`): a node
/// being cut off has lost every endpoint within one probe, interval plus timeout.
pub fn settle_ms(targets: &HashSet<(IpAddr, Arc<Check>)>) -> u64 {
    targets
        .iter()
        .map(|(_, c)| (c.interval + c.timeout).as_millis() as u64)
        .max()
        .unwrap_or(0)
}

/// What a node knows of one peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeerStatus {
    pub url: String,
    /// The peer's node id, once heard from.
    pub node: Option<String>,
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u64,
}

impl PeerStatus {
    pub fn new(url: &str) -> PeerStatus {
        PeerStatus {
            url: url.trim_end_matches('/').to_string(),
            ..PeerStatus::default()
        }
    }

    /// Records an exchange that worked; true when the peer was failing or never heard from.
    pub fn succeeded(&mut self, node: &str, now_ms: u64) -> bool {
        let regained = self.consecutive_failures > 0 || self.last_ok_ms.is_none();
        self.node = Some(node.to_string());
        self.last_ok_ms = Some(now_ms);
        self.last_error = None;
        self.consecutive_failures = 0;
        regained
    }

    /// Records one that failed; true when it is the first failure in a row.
    pub fn failed(&mut self, error: String) -> bool {
        let lost = self.consecutive_failures == 0;
        self.last_error = Some(error);
        self.consecutive_failures += 1;
        lost
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::merge::{EndpointKey, Quorum};
    use crate::health::{Observation, ProbeTarget};
    use crate::zone::check::{CheckKind, HttpCheck};

    const SETTINGS: MergeSettings = MergeSettings {
        stale_after_ms: 5_000,
        quorum: Quorum::Majority,
        settle_ms: 0,
    };

    fn check() -> Arc<Check> {
        Arc::new(Check::new(CheckKind::Http(HttpCheck::new(false, 80, "/"))))
    }

    fn view(now: Instant, statuses: &[(&str, Status)]) -> HealthView {
        let check = check();
        HealthView::new(
            true,
            statuses.iter().map(|(addr, status)| Observation {
                target: ProbeTarget::new(addr.parse().unwrap(), check.clone()),
                status: *status,
                confirmed: true,
                since: now,
                last_rtt: None,
                smoothed_rtt: None,
                recovered: false,
                last_error: None,
            }),
        )
    }

    fn key(addr: &str) -> EndpointKey {
        EndpointKey::new(addr.parse().unwrap(), &check())
    }

    fn drain(dc: &str, at: u64, by: &str) -> Drain {
        Drain {
            dc: dc.into(),
            service: None,
            reason: String::new(),
            active: true,
            expires_ms: None,
            issued_ms: at,
            issued_by: by.into(),
        }
    }

    #[test]
    fn rtt_noise_is_not_published_and_a_real_move_is() {
        let now = Instant::now();
        let with_rtt = |ms: f64| {
            let check = check();
            HealthView::new(
                true,
                [Observation {
                    target: ProbeTarget::new("192.0.2.1".parse().unwrap(), check),
                    status: Status::Up,
                    confirmed: true,
                    since: now,
                    last_rtt: None,
                    smoothed_rtt: Some(Duration::from_secs_f64(ms / 1000.0)),
                    recovered: false,
                    last_error: None,
                }],
            )
        };
        let rtt =
            |book: &Book| book.reports()[0].votes.values().next().unwrap()["192.0.2.1"].rtt_ms;
        let mut book = Book::new("a", "r", DrainSet::default());
        // (smoothed RTT, whether a new version is published, the RTT the report holds)
        let steps: &[(f64, bool, f64)] = &[
            (50.0, true, 50.0),
            (54.0, false, 50.0), // 8%: noise, the published 50 stays
            (46.0, false, 50.0), // 8%
            (54.9, false, 50.0), // 9.8% of the published value
            (56.0, true, 56.0),  // 12%: published
            (57.0, false, 56.0),
            (0.4, true, 0.4),  // a real move
            (0.9, false, 0.4), // sub-millisecond wander is never published
        ];
        for (i, (ms, news, held)) in steps.iter().enumerate() {
            let r = book.refresh(&with_rtt(*ms), 1_000 + i as u64 * 100, now, SETTINGS);
            assert_eq!(r.news, *news, "step {i}: {ms} ms");
            assert_eq!(rtt(&book), Some(*held), "step {i}: {ms} ms");
        }
    }

    #[test]
    fn a_refresh_says_what_changed_and_when_followers_must_hear() {
        let now = Instant::now();
        let mut book = Book::new("a", "r", DrainSet::default());
        let up = view(now, &[("192.0.2.1", Status::Up), ("192.0.2.2", Status::Up)]);
        let first = book.refresh(&up, 1_000, now, SETTINGS);
        assert!(first.news, "a first report is news");
        assert!(
            first.changes.is_empty(),
            "endpoints first seen up are no change"
        );
        assert_eq!(first.isolation, None);
        let again = book.refresh(&up, 1_100, now, SETTINGS);
        assert!(!again.news, "the same verdicts, only newer, are no news");
        let down = view(
            now,
            &[("192.0.2.1", Status::Down), ("192.0.2.2", Status::Up)],
        );
        let r = book.refresh(&down, 1_200, now, SETTINGS);
        assert!(r.news);
        assert_eq!(
            r.changes,
            [VerdictChange {
                key: key("192.0.2.1"),
                up: false,
                down_votes: 1,
                counted_votes: 1
            }]
        );
        // The own version moves only when what the report says changes, even when the clock
        // does not; the heartbeat moves with every refresh.
        let v = book.reports()[0].version;
        book.refresh(&down, 1_300, now, SETTINGS);
        assert_eq!(book.reports()[0].version, v);
        assert_eq!(book.heartbeats["a"], 1_300);
        let r = book.refresh(&up, 1_200, now, SETTINGS);
        assert!(r.news);
        assert!(book.reports()[0].version > v);
    }

    #[test]
    fn an_asker_gets_only_what_is_newer_than_its_digest() {
        let now = Instant::now();
        let mut a = Book::new("a", "r", DrainSet::default());
        let mut b = Book::new("b", "r", DrainSet::default());
        let up = view(now, &[("192.0.2.1", Status::Up)]);
        a.refresh(&up, 1_000, now, SETTINGS);
        b.refresh(&up, 1_000, now, SETTINGS);
        b.set_drains(b.with_decision(drain("dc1", 900, "b")));
        b.absorb(a.message(1, Some(&b.digest()), Reach::All));

        // First contact (an empty digest): everything, a's own report too.
        let first = b.message(1, Some(&Digest::default()), Reach::All);
        assert_eq!(first.reports.len(), 2);
        assert_eq!(first.drains.entries.len(), 1);
        a.absorb(first);
        // Then, with nothing new: heartbeats only.
        b.refresh(&up, 2_000, now, SETTINGS);
        let steady = b.message(2, Some(&a.digest()), Reach::All);
        assert!(steady.reports.is_empty() && steady.drains.entries.is_empty());
        assert_eq!(steady.heartbeats["b"], 2_000);
        let got = a.absorb(steady);
        assert!(!got.changed, "a heartbeat waits for the periodic merge");
        assert_eq!(a.heartbeats["b"], 2_000);
        // b's verdict changes: its report comes, alone.
        b.refresh(
            &view(now, &[("192.0.2.1", Status::Down)]),
            3_000,
            now,
            SETTINGS,
        );
        let news = b.message(3, Some(&a.digest()), Reach::Own);
        assert_eq!(news.reports.len(), 1);
        // A long-poll's answer is first hand: b's own report, not a's relayed.
        a.refresh(
            &view(now, &[("192.0.2.1", Status::Down)]),
            3_000,
            now,
            SETTINGS,
        );
        let mut stale = a.digest();
        stale.versions.clear();
        let held = b.message(3, Some(&stale), Reach::Own);
        assert_eq!(
            held.reports
                .iter()
                .map(|r| r.node.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(b.message(3, Some(&stale), Reach::All).reports.len(), 2);
        assert!(a.absorb(news).changed);

        // An older node sends no digest: every report, versioned and stamped with its heartbeat.
        b.refresh(
            &view(now, &[("192.0.2.1", Status::Down)]),
            4_000,
            now,
            SETTINGS,
        );
        let old = b.message(4, None, Reach::All);
        let own = old.reports.iter().find(|r| r.node == "b").expect("b's");
        assert_eq!((own.version, own.generated_ms), (4_000, 4_000));
        let relayed = old.reports.iter().find(|r| r.node == "a").expect("a's");
        assert_eq!((relayed.version, relayed.generated_ms), (1_000, 1_000));
        // And b's next version is past what it served so.
        b.refresh(&up, 4_000, now, SETTINGS);
        assert!(b.reports.get("b").is_some_and(|r| r.version > 4_000));
    }

    /// A pull's header is written straight from the book: it must say what the digest would,
    /// with the asker's heartbeat stamped, for every mix of nodes with a report, a heartbeat,
    /// or both, and ids that need escaping.
    #[test]
    fn the_digest_header_is_the_digests() {
        let want = |book: &Book, beat: u64| {
            let mut d = book.digest();
            let own = d.beats.entry(book.node.clone()).or_default();
            *own = (*own).max(beat);
            d.to_header()
        };
        let now = Instant::now();
        let up = view(now, &[("192.0.2.1", Status::Up)]);
        let mut a = Book::new("a", "r", DrainSet::default());
        let mut odd = Book::new("b,odd:%", "r", DrainSet::default());
        odd.refresh(&up, 1_000, now, SETTINGS);
        assert_eq!(a.digest_header(900), want(&a, 900), "an empty book");
        a.absorb(odd.message(1, None, Reach::All));
        a.heartbeats.insert("c".into(), 500);
        a.absorb(Exchange {
            from: "d".into(),
            reports: vec![Report::new("d", "r", 7, 600)],
            drains: DrainSet::default(),
            generation: 0,
            heartbeats: BTreeMap::new(),
            deltas: Vec::new(),
        });
        assert!(
            !a.heartbeats.contains_key("d"),
            "a report without a heartbeat"
        );
        assert_eq!(a.digest_header(2_000), want(&a, 2_000), "no own report yet");
        a.refresh(&up, 3_000, now, SETTINGS);
        assert_eq!(a.digest_header(2_000), want(&a, 2_000), "an own beat newer");
        a.set_drains(a.with_decision(drain("dc1", 900, "a")));
        let text = a.digest_header(4_000);
        assert_eq!(text, want(&a, 4_000));
        let back = Digest::parse(&text).expect("reads back");
        assert_eq!(back.beats["a"], 4_000);
        assert_eq!(back.versions["d"], 7);
    }

    #[test]
    fn a_digest_reads_back_what_it_wrote() {
        let digest = Digest {
            versions: BTreeMap::from([
                ("eu-1".to_string(), 17),
                ("odd:node,id%;".to_string(), u64::MAX),
                ("ünï".to_string(), 0),
            ]),
            beats: BTreeMap::from([
                ("eu-1".to_string(), 1_765_000_000_123),
                ("beat-only".to_string(), 5),
            ]),
            drains: 0xdead_beef,
            deltas: true,
        };
        let text = digest.to_header();
        assert!(text.is_ascii() && !text.contains(' '), "{text}");
        assert_eq!(Digest::parse(&text), Some(digest));
        // Heartbeats a few seconds apart take a few hex digits each, not thirteen.
        let recent = Digest {
            beats: (0..100)
                .map(|i| (format!("node-{i}"), 1_765_000_000_000 + i * 37))
                .collect(),
            deltas: true,
            ..Digest::default()
        };
        let text = recent.to_header();
        // "node-42::a3f," rather than "node-42::1765000001554,".
        assert!(text.len() < 100 * 14, "{} bytes: {text}", text.len());
        assert_eq!(Digest::parse(&text), Some(recent));
        // An older node's digest: versions only, and it takes no deltas.
        assert_eq!(Digest::parse("drains=0;v="), Some(Digest::default()));
        let old = Digest::parse("drains=1f;v=a:17,b%3A:3").expect("an older digest");
        assert_eq!(
            old.versions,
            BTreeMap::from([("a".into(), 17), ("b:".into(), 3)])
        );
        assert!(old.beats.is_empty() && !old.deltas && old.drains == 0x1f);
        for bad in [
            "",
            "drains=0",
            "drains=x;v=",
            "drains=0;v=a",
            "drains=0;v=a:x",
            "drains=0;v=%zz:1",
            "drains=0;v=%F:1",
            "drains=0;t=5",
            "drains=0;t=x;v=",
            "drains=0;t=5;v=a:1",
            "drains=0;t=5;v=a:1:2:3",
            "drains=0;t=5;v=a:6:",
            "drains=0;t=5;v=a:zz:",
            "drains=0;t=5;w=a::",
        ] {
            assert_eq!(Digest::parse(bad), None, "{bad:?}");
        }
    }

    /// Issue 13's per-vote deltas: a changed report goes to a peer that holds an older version
    /// as the votes that changed, and the peer ends with the same verdicts; a peer with a
    /// version the sender has no changes from, or an older node, gets it whole.
    #[test]
    fn a_changed_report_goes_as_its_changed_votes_and_whole_on_a_gap() {
        let now = Instant::now();
        let addrs: Vec<String> = (1..=20).map(|i| format!("192.0.2.{i}")).collect();
        let statuses = |down: &[usize]| -> Vec<(&str, Status)> {
            addrs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let s = if down.contains(&i) {
                        Status::Down
                    } else {
                        Status::Up
                    };
                    (a.as_str(), s)
                })
                .collect()
        };
        let mut a = Book::new("a", "r", DrainSet::default());
        let mut b = Book::new("b", "r", DrainSet::default());
        a.refresh(&view(now, &statuses(&[])), 1_000, now, SETTINGS);
        b.absorb(a.message(1, Some(&b.digest()), Reach::All));
        let held = b.digest();
        assert_eq!(held.versions["a"], a.reports["a"].version);

        // The same clock reading: a vote that says the same keeps its start (the views' starts
        // are "now"), and only the flipped ones change.
        a.refresh(&view(now, &statuses(&[0, 1])), 1_000, now, SETTINGS);
        a.refresh(&view(now, &statuses(&[1, 2])), 1_000, now, SETTINGS);
        let msg = a.message(2, Some(&held), Reach::All);
        assert!(msg.reports.is_empty(), "{:?}", msg.reports);
        let [delta] = &msg.deltas[..] else {
            panic!("one delta: {:?}", msg.deltas)
        };
        let delta = delta.clone();
        let changed: Vec<&String> = delta.votes.values().flat_map(|v| v.keys()).collect();
        assert_eq!(changed, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        assert_eq!(delta.base, held.versions["a"]);
        let bytes = serde_json::to_vec(&msg).expect("encodes").len();
        let whole = serde_json::to_vec(&a.message(2, Some(&Digest::default()), Reach::All))
            .expect("encodes")
            .len();
        assert!(bytes * 2 < whole, "delta {bytes} bytes, whole {whole}");
        let got = b.absorb(msg.clone());
        assert!(got.changed && got.relayed);
        assert_eq!(b.reports["a"].version, a.reports["a"].version);
        assert!(b.reports["a"].same_verdicts(&a.reports["a"]));
        // Again: b holds it already, nothing changes.
        assert!(!b.absorb(msg).changed);
        // b relays it to c, which holds the first version, from its own changes.
        let mut c = Book::new("c", "r", DrainSet::default());
        c.absorb(a.message(1, Some(&Digest::default()), Reach::All));
        c.reports.get_mut("a").expect("a's").version = held.versions["a"];
        c.changes.clear();
        let relayed = b.message(3, Some(&c.digest()), Reach::All);
        assert_eq!((relayed.deltas.len(), relayed.reports.len()), (1, 0));

        // A version the sender has no changes from: whole.
        let mut gap = b.digest();
        gap.versions.insert("a".into(), 1);
        let msg = a.message(4, Some(&gap), Reach::All);
        assert_eq!((msg.reports.len(), msg.deltas.len()), (1, 0));
        // An older node's digest: whole.
        let mut old = held.clone();
        old.deltas = false;
        let msg = a.message(4, Some(&old), Reach::All);
        assert_eq!((msg.reports.len(), msg.deltas.len()), (1, 0));
        // A delta that does not apply to what the asker holds changes nothing.
        let mut stray = delta.clone();
        stray.base = stray.version - 1;
        let mut d = Book::new("d", "r", DrainSet::default());
        d.absorb(a.message(1, Some(&Digest::default()), Reach::All));
        d.reports.get_mut("a").expect("a's").version = 5;
        let before = d.reports["a"].clone();
        let got = d.absorb(Exchange {
            deltas: vec![stray],
            ..a.message(5, Some(&a.digest()), Reach::All)
        });
        assert!(!got.changed);
        assert_eq!(d.reports["a"], before);
    }

    /// Issue 13 in a real cluster: smoothed RTTs wander a little with every probe, and a report
    /// whose version moves for one verdict must not republish every RTT that wandered (which
    /// made the delta every vote, and so the whole report). Only an RTT that moved by
    /// `latency::REPUBLISH_MOVE` goes out with it, and such a move is still published.
    #[test]
    fn a_verdict_change_among_wandering_rtts_goes_out_as_a_delta() {
        let now = Instant::now();
        let check = check();
        let addrs: Vec<String> = (1..=20).map(|i| format!("192.0.2.{i}")).collect();
        // Endpoint i: up unless in `down`, at 50 ms times `wander(i)`.
        let view_of = |down: &[usize], wander: &dyn Fn(usize) -> f64| {
            HealthView::new(
                true,
                addrs.iter().enumerate().map(|(i, a)| Observation {
                    target: ProbeTarget::new(a.parse().unwrap(), check.clone()),
                    status: if down.contains(&i) {
                        Status::Down
                    } else {
                        Status::Up
                    },
                    confirmed: true,
                    since: now,
                    last_rtt: None,
                    smoothed_rtt: Some(Duration::from_secs_f64(50.0 * wander(i) / 1000.0)),
                    recovered: false,
                    last_error: None,
                }),
            )
        };
        let rtt = |book: &Book, node: &str, i: usize| {
            book.reports[node].votes.values().next().unwrap()[&addrs[i]].rtt_ms
        };
        let mut a = Book::new("a", "r", DrainSet::default());
        let mut b = Book::new("b", "r", DrainSet::default());
        a.refresh(&view_of(&[], &|_| 1.0), 1_000, now, SETTINGS);
        b.absorb(a.message(1, Some(&b.digest()), Reach::All));

        // Every RTT wanders by 3 to 8%, and endpoint 0 goes down.
        let wander = |i: usize| if i.is_multiple_of(2) { 1.03 } else { 0.92 };
        // The clocks move together: a vote that says the same keeps its start.
        let later = |ms: u64| now + Duration::from_millis(ms - 1_000);
        a.refresh(&view_of(&[0], &wander), 2_000, later(2_000), SETTINGS);
        let msg = a.message(2, Some(&b.digest()), Reach::All);
        assert!(msg.reports.is_empty(), "went whole: {:?}", msg.reports);
        let [delta] = &msg.deltas[..] else {
            panic!("one delta: {:?}", msg.deltas)
        };
        let changed: Vec<&String> = delta.votes.values().flat_map(|v| v.keys()).collect();
        assert_eq!(changed, ["192.0.2.1"], "only the verdict that changed");
        assert!(b.absorb(msg).changed);
        assert_eq!(rtt(&a, "a", 5), Some(50.0), "the published RTT stays");
        assert_eq!(b.reports["a"], a.reports["a"], "both hold the same report");

        // Endpoint 5's RTT moves by 20% (the others still wander): published, with the move
        // only.
        let moved = |i: usize| if i == 5 { 1.2 } else { wander(i) };
        let r = a.refresh(&view_of(&[0], &moved), 3_000, later(3_000), SETTINGS);
        assert!(r.news, "a real move is published");
        let msg = a.message(3, Some(&b.digest()), Reach::All);
        let [delta] = &msg.deltas[..] else {
            panic!("one delta: {:?} {:?}", msg.deltas, msg.reports)
        };
        let changed: Vec<&String> = delta.votes.values().flat_map(|v| v.keys()).collect();
        assert_eq!(changed, ["192.0.2.6"]);
        b.absorb(msg);
        assert!(rtt(&b, "a", 5).is_some_and(|ms| (ms - 60.0).abs() < 1e-6));
        assert_eq!(rtt(&b, "a", 4), Some(50.0));
        assert_eq!(b.reports["a"], a.reports["a"]);
    }

    /// A delta carries every vote whose verdict, start or published round-trip time moved:
    /// the latency policy steers by the RTTs of other nodes' reports, and every node must hold
    /// the same ones under a version. Errors alone ride along with a whole report.
    #[test]
    fn a_moved_round_trip_time_or_start_is_a_changed_vote() {
        let vote = |up, since_ms, rtt_ms: Option<f64>, error: Option<&str>| Vote {
            up,
            since_ms,
            rtt_ms,
            error: error.map(str::to_string),
            recovered: false,
        };
        let report = |votes: [Vote; 5]| {
            let mut r = Report::new("x", "r", 1, 1);
            for (i, v) in votes.into_iter().enumerate() {
                r.insert(&key(&format!("192.0.2.{}", i + 1)), v);
            }
            r
        };
        let old = report([
            vote(true, 1, Some(10.0), None),
            vote(true, 1, Some(10.0), None),
            vote(true, 1, Some(10.0), None),
            vote(true, 1, Some(10.0), None),
            vote(true, 1, Some(10.0), None),
        ]);
        let new = report([
            vote(false, 1, Some(10.0), None),
            vote(true, 2, Some(10.0), None),
            vote(true, 1, Some(30.0), None),
            vote(true, 1, Some(10.0), Some("slow")),
            vote(true, 1, Some(10.0), None),
        ]);
        let changed: Vec<String> = changed_votes(&old, &new)
            .into_iter()
            .map(|(_, addr)| addr)
            .collect();
        assert_eq!(changed, ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    }

    /// A large cluster's long-poll answer relays the reports its node took in first hand, as
    /// deltas only: whole ones wait for the asker's pulls.
    #[test]
    fn a_push_goes_one_hop_further_as_deltas_only() {
        let now = Instant::now();
        let up = view(now, &[("192.0.2.1", Status::Up), ("192.0.2.2", Status::Up)]);
        let mut x = Book::new("x", "r", DrainSet::default());
        let mut relay = Book::new("relay", "r", DrainSet::default());
        let mut far = Book::new("far", "r", DrainSet::default());
        let mut y = Book::new("y", "r", DrainSet::default());
        x.refresh(&up, 1_000, now, SETTINGS);
        y.refresh(&up, 1_000, now, SETTINGS);
        relay.refresh(&up, 1_000, now, SETTINGS);
        // relay hears x first hand, y through far.
        relay.absorb(x.message(1, Some(&relay.digest()), Reach::All));
        far.absorb(y.message(1, Some(&far.digest()), Reach::All));
        relay.absorb(far.message(1, Some(&relay.digest()), Reach::All));
        let asker = Book::new("asker", "r", DrainSet::default());
        let first = relay.message(2, Some(&asker.digest()), Reach::Near);
        let nodes: Vec<&str> = first.reports.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(nodes, ["relay"], "whole relayed reports wait for the pulls");
        let mut asker = asker;
        asker.absorb(relay.message(2, Some(&asker.digest()), Reach::All));
        // x gains two votes, then changes one of four (a delta needs fewer than half changed).
        let four = |first: Status| {
            view(
                now,
                &[
                    ("192.0.2.1", first),
                    ("192.0.2.2", Status::Up),
                    ("192.0.2.3", Status::Up),
                    ("192.0.2.4", Status::Up),
                ],
            )
        };
        x.refresh(&four(Status::Up), 1_000, now, SETTINGS);
        relay.absorb(x.message(3, Some(&relay.digest()), Reach::All));
        asker.absorb(relay.message(3, Some(&asker.digest()), Reach::All));
        x.refresh(&four(Status::Down), 1_000, now, SETTINGS);
        assert!(
            relay
                .absorb(x.message(4, Some(&relay.digest()), Reach::Own))
                .relayed
        );
        let pushed = relay.message(5, Some(&asker.digest()), Reach::Near);
        assert!(pushed.reports.is_empty(), "{:?}", pushed.reports);
        let nodes: Vec<&str> = pushed.deltas.iter().map(|d| d.node.as_str()).collect();
        assert_eq!(nodes, ["x"], "x's first hand, as a delta");
        assert!(
            relay
                .message(5, Some(&asker.digest()), Reach::Own)
                .deltas
                .is_empty(),
            "a small cluster's push is the responder's own only"
        );
    }

    /// An answer holds `MAX_WHOLE_REPORTS` whole reports at most; the asker's next digest
    /// brings the rest. An older node (no digest) still gets everything at once.
    #[test]
    fn an_answer_holds_a_bounded_number_of_whole_reports() {
        let now = Instant::now();
        let up = view(now, &[("192.0.2.1", Status::Up)]);
        let mut hub = Book::new("hub", "r", DrainSet::default());
        for i in 0..MAX_WHOLE_REPORTS + 4 {
            let mut other = Book::new(&format!("n{i}"), "r", DrainSet::default());
            other.refresh(&up, 1_000, now, SETTINGS);
            hub.absorb(other.message(1, Some(&Digest::default()), Reach::All));
        }
        let mut asker = Book::new("asker", "r", DrainSet::default());
        let first = hub.message(3, Some(&asker.digest()), Reach::All);
        assert_eq!(first.reports.len(), MAX_WHOLE_REPORTS);
        assert_eq!(
            first.heartbeats.len(),
            MAX_WHOLE_REPORTS + 4,
            "heartbeats all"
        );
        asker.absorb(first);
        let rest = hub.message(3, Some(&asker.digest()), Reach::All);
        assert_eq!(rest.reports.len(), 4);
        asker.absorb(rest);
        assert_eq!(asker.reports().len(), MAX_WHOLE_REPORTS + 4);
        assert_eq!(
            hub.message(3, None, Reach::All).reports.len(),
            MAX_WHOLE_REPORTS + 4
        );
    }

    /// Liveness travels only where it is news: an answer holds the heartbeats newer than the
    /// asker's digest says it holds, and the one who answers takes the digest's newer ones.
    #[test]
    fn heartbeats_go_only_where_they_are_newer() {
        let now = Instant::now();
        let up = view(now, &[("192.0.2.1", Status::Up)]);
        let mut a = Book::new("a", "r", DrainSet::default());
        let mut b = Book::new("b", "r", DrainSet::default());
        a.refresh(&up, 1_000, now, SETTINGS);
        b.refresh(&up, 1_000, now, SETTINGS);
        a.absorb(b.message(1, Some(&a.digest()), Reach::All));
        b.absorb(a.message(1, Some(&b.digest()), Reach::All));
        let steady = b.message(2, Some(&a.digest()), Reach::All);
        assert!(steady.heartbeats.is_empty(), "{:?}", steady.heartbeats);
        b.refresh(&up, 2_000, now, SETTINGS);
        let beat = b.message(3, Some(&a.digest()), Reach::All);
        assert_eq!(beat.heartbeats, BTreeMap::from([("b".into(), 2_000)]));
        // Push-pull: b learns a's newer heartbeat from a's digest, not from a's own answer.
        a.refresh(&up, 2_500, now, SETTINGS);
        b.absorb_beats(&a.digest());
        assert_eq!(b.heartbeats["a"], 2_500);
        // Not for a report b does not hold: a's verdicts changed, b has not heard.
        a.refresh(
            &view(now, &[("192.0.2.1", Status::Down)]),
            2_700,
            now,
            SETTINGS,
        );
        b.absorb_beats(&a.digest());
        assert_eq!(b.heartbeats["a"], 2_500);
        // Nobody speaks for b's own.
        let mut lie = a.digest();
        lie.beats.insert("b".into(), 9_999);
        b.absorb_beats(&lie);
        assert_eq!(b.heartbeats["b"], 2_000);
    }

    #[test]
    fn absorbing_keeps_newer_reports_of_others_and_learns_drains() {
        let now = Instant::now();
        let mut a = Book::new("a", "r", DrainSet::default());
        let mut b = Book::new("b", "r", DrainSet::default());
        a.refresh(
            &view(now, &[("192.0.2.1", Status::Up)]),
            1_000,
            now,
            SETTINGS,
        );
        b.refresh(
            &view(now, &[("192.0.2.1", Status::Down)]),
            1_000,
            now,
            SETTINGS,
        );
        b.set_drains(b.with_decision(drain("dc1", 900, "b")));

        let got = a.absorb(b.message(7, None, Reach::All));
        assert!(got.changed && got.news);
        assert_eq!(got.learnt, [drain("dc1", 900, "b")]);
        assert_eq!(got.drains.as_ref().map(|d| d.entries.len()), Some(1));
        let again = a.absorb(b.message(7, None, Reach::All));
        assert!(!again.changed && !again.news && again.learnt.is_empty());

        // b relays a's own report back: a keeps its own.
        let relayed = b.absorb(a.message(1, None, Reach::All));
        assert!(relayed.changed);
        let mut echo = b.message(8, None, Reach::All);
        for r in &mut echo.reports {
            r.version += 1_000;
        }
        let own = a.reports().into_iter().find(|r| r.node == "a");
        a.absorb(echo);
        assert_eq!(a.reports().into_iter().find(|r| r.node == "a"), own);
    }

    #[test]
    fn a_peer_is_lost_and_regained_once() {
        let mut p = PeerStatus::new("http://b:8053/");
        assert_eq!(p.url, "http://b:8053");
        assert!(p.succeeded("b", 1), "first heard of");
        assert!(!p.succeeded("b", 2));
        assert!(p.failed("timed out".into()), "lost");
        assert!(!p.failed("timed out".into()), "still lost");
        assert_eq!(p.consecutive_failures, 2);
        assert!(p.succeeded("b", 3), "regained");
        assert_eq!((p.consecutive_failures, p.last_error), (0, None));
    }

    #[test]
    fn lone_votes_settle_for_the_slowest_probe() {
        let mut slow = (*check()).clone();
        slow.interval = Duration::from_secs(10);
        slow.timeout = Duration::from_secs(2);
        let targets = HashSet::from([
            ("192.0.2.1".parse().unwrap(), check()),
            ("192.0.2.2".parse().unwrap(), Arc::new(slow)),
        ]);
        assert_eq!(settle_ms(&targets), 12_000);
        assert_eq!(settle_ms(&HashSet::new()), 0);
    }
}
