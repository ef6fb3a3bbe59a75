//! The merge kept up to date, for a node that merges many times a second: every node's votes are
//! held by index (node, endpoint), and each merge judges again only the endpoints whose votes
//! changed, whose voters went stale, fresh or isolated, or whose lone down vote finished settling;
//! every other endpoint keeps its verdict. The outcome is `merge::merge_alive`'s on the same
//! reports (the property test below holds it to that), at a cost that follows what changed rather
//! than nodes × endpoints.
//!
//! What a verdict depends on, and what re-judges it when that moves:
//! - a node's votes: `take` compares a newer report with the votes held and marks the endpoints
//!   whose vote came, went, flipped, or (down) changed its start;
//! - a node's freshness (`stale_after` past the newer of its report and its heartbeat): checked
//!   for every node on every merge (one comparison each), and a node that turned marks all its
//!   endpoints;
//! - a node's isolation (every vote down while another fresh node sees one of those endpoints up):
//!   each node's up votes are counted, and only a fresh node with none is looked at, through each
//!   endpoint's count of fresh up votes;
//! - a lone down vote's settling (`settle_ms` after it began): a deadline per settling vote, in a
//!   heap, marks its endpoint when it passes;
//! - the settings, or a clock that went back: everything is judged again.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::merge::{
    Ballot, EndpointKey, MergeSettings, Merged, Report, Verdict, Voter, restored_from,
};

/// What a vote says that a merge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cast {
    up: bool,
    since_ms: u64,
    /// Up after having been down (`Vote::recovered`): counts towards the restore time.
    recovered: bool,
}

#[derive(Debug)]
struct NodeSlot {
    name: Arc<str>,
    region: Arc<str>,
    /// The version of the report last taken in (none before the first).
    version: Option<u64>,
    generated_ms: u64,
    /// As of the last merge.
    alive_ms: u64,
    fresh: bool,
    isolated: bool,
    /// (endpoint, vote), by endpoint index.
    votes: Vec<(u32, Cast)>,
    /// How many of `votes` say up.
    ups: usize,
}

#[derive(Debug)]
struct EndpointSlot {
    key: EndpointKey,
    /// (node, vote), in node id order (the order of the ballots).
    votes: Vec<(u32, Cast)>,
    /// Fresh nodes that vote up: the isolation guard's "another node sees it up".
    fresh_up: u32,
    dirty: bool,
    /// Up or down as last judged (kept after its last vote went: a verdict that comes back is
    /// a change only if it differs).
    last_up: Option<bool>,
}

/// An endpoint whose effective status changed with a merge (or that is down when first seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub key: EndpointKey,
    pub up: bool,
    pub down_votes: usize,
    pub counted_votes: usize,
}

/// The outcome of `Tally::merge`.
#[derive(Debug)]
pub struct Tallied {
    pub merged: Merged,
    pub changes: Vec<VerdictChange>,
    /// The isolated nodes, when that list changed.
    pub isolation: Option<Vec<String>>,
    /// Whether any endpoint was judged again (or everything was: a first merge, new settings,
    /// a clock that went back): when none was, `merged.endpoints` equals the last merge's (only
    /// the voters' ages moved).
    pub judged: bool,
}

/// Every node's votes, held for merging again and again (see the module doc).
#[derive(Debug, Default)]
pub struct Tally {
    /// The settings and time of the last merge.
    last: Option<(MergeSettings, u64)>,
    nodes: Vec<NodeSlot>,
    node_ids: FxHashMap<Arc<str>, u32>,
    /// Check text → index into `check_texts`.
    checks: FxHashMap<Arc<str>, u32>,
    check_texts: Vec<Arc<str>>,
    endpoint_ids: FxHashMap<(IpAddr, u32), u32>,
    endpoints: Vec<EndpointSlot>,
    dirty: Vec<u32>,
    /// (when a settling vote counts, its endpoint), soonest first.
    settles: BinaryHeap<Reverse<(u64, u32)>>,
    /// Shared with the merges handed out: copied when a verdict changes while they hold it.
    verdicts: Arc<BTreeMap<EndpointKey, Verdict>>,
    isolated: Vec<String>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally::default()
    }

    /// Takes in `report` if it is newer than the one of its node taken in last (the caller keeps
    /// the newest per node, see `merge::accept`). Endpoint entries with an unparsable address are
    /// skipped; an address written twice (in two spellings) votes once.
    pub fn take(&mut self, report: &Report) {
        let n = self.node_index(report);
        let slot = &self.nodes[n as usize];
        if slot.version.is_some_and(|v| v >= report.version) {
            return;
        }
        let mut votes: Vec<(u32, Cast)> = Vec::with_capacity(slot.votes.len());
        for (check, by_addr) in &report.votes {
            let c = match self.checks.get(check.as_str()) {
                Some(c) => *c,
                None => {
                    let c = self.check_texts.len() as u32;
                    let text: Arc<str> = check.as_str().into();
                    self.checks.insert(text.clone(), c);
                    self.check_texts.push(text);
                    c
                }
            };
            for (addr, vote) in by_addr {
                let Ok(addr) = addr.parse::<IpAddr>() else {
                    continue;
                };
                let e = match self.endpoint_ids.get(&(addr, c)) {
                    Some(e) => *e,
                    None => {
                        let e = self.endpoints.len() as u32;
                        let check = &self.check_texts[c as usize];
                        self.endpoints.push(EndpointSlot {
                            key: EndpointKey {
                                addr,
                                check: check.clone(),
                            },
                            votes: Vec::new(),
                            fresh_up: 0,
                            dirty: false,
                            last_up: None,
                        });
                        self.endpoint_ids.insert((addr, c), e);
                        e
                    }
                };
                votes.push((
                    e,
                    Cast {
                        up: vote.up,
                        since_ms: vote.since_ms,
                        recovered: vote.recovered,
                    },
                ));
            }
        }
        votes.sort_by_key(|(e, _)| *e);
        votes.dedup_by_key(|(e, _)| *e);

        let slot = &mut self.nodes[n as usize];
        let old = std::mem::take(&mut slot.votes);
        slot.version = Some(report.version);
        slot.generated_ms = report.generated_ms;
        slot.ups = votes.iter().filter(|(_, v)| v.up).count();
        let fresh = slot.fresh;
        if *slot.region != *report.region {
            slot.region = report.region.as_str().into();
        }
        let name = slot.name.clone();
        // Walk old and new votes together, both by endpoint.
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < votes.len() {
            let (e, before, after) = match (old.get(i), votes.get(j)) {
                (Some(&(eo, o)), Some(&(en, v))) if eo == en => {
                    i += 1;
                    j += 1;
                    (eo, Some(o), Some(v))
                }
                (Some(&(eo, o)), Some(&(en, _))) if eo < en => {
                    i += 1;
                    (eo, Some(o), None)
                }
                (Some(&(eo, o)), None) => {
                    i += 1;
                    (eo, Some(o), None)
                }
                (_, Some(&(en, v))) => {
                    j += 1;
                    (en, None, Some(v))
                }
                (None, None) => break,
            };
            if before == after {
                continue;
            }
            let slot = &mut self.endpoints[e as usize];
            let was_up = fresh && before.is_some_and(|v| v.up);
            let is_up = fresh && after.is_some_and(|v| v.up);
            slot.fresh_up = (slot.fresh_up + u32::from(is_up)).saturating_sub(u32::from(was_up));
            let place = slot
                .votes
                .binary_search_by(|(m, _)| self.nodes[*m as usize].name.cmp(&name));
            match (place, after) {
                (Ok(k), Some(v)) => slot.votes[k].1 = v,
                (Ok(k), None) => {
                    slot.votes.remove(k);
                }
                (Err(k), Some(v)) => slot.votes.insert(k, (n, v)),
                (Err(_), None) => {}
            }
            // Only a flip, a vote that came or went, a down vote's start, or a recovered up
            // vote's start (the restore time) counts: an up-all-along vote's start is read by
            // nothing.
            let matters = match (before, after) {
                (Some(b), Some(a)) => b.up != a.up || !a.up || a.recovered || b.recovered,
                _ => true,
            };
            if matters {
                mark(&mut self.endpoints, &mut self.dirty, e);
            }
        }
        self.nodes[n as usize].votes = votes;
    }

    /// The index of the report's node, a new one if it is the first report of it.
    fn node_index(&mut self, report: &Report) -> u32 {
        if let Some(n) = self.node_ids.get(report.node.as_str()) {
            return *n;
        }
        let n = self.nodes.len() as u32;
        let name: Arc<str> = report.node.as_str().into();
        self.nodes.push(NodeSlot {
            name: name.clone(),
            region: report.region.as_str().into(),
            version: None,
            generated_ms: report.generated_ms,
            alive_ms: report.generated_ms,
            fresh: false,
            isolated: false,
            votes: Vec::new(),
            ups: 0,
        });
        self.node_ids.insert(name, n);
        n
    }

    /// Merges: judges again what changed since the last merge (see the module doc) and returns
    /// the verdicts, with the endpoints whose verdict changed.
    pub fn merge(
        &mut self,
        heartbeats: &HashMap<String, u64>,
        now_ms: u64,
        settings: MergeSettings,
    ) -> Tallied {
        // New settings, or a clock that went back (settling and freshness are read against it):
        // judge everything again.
        let everything = self
            .last
            .is_none_or(|(s, then)| s != settings || now_ms < then);
        if everything {
            for e in 0..self.endpoints.len() as u32 {
                mark(&mut self.endpoints, &mut self.dirty, e);
            }
        }
        self.last = Some((settings, now_ms));

        // Freshness, node by node.
        for n in 0..self.nodes.len() {
            let node = &mut self.nodes[n];
            node.alive_ms = heartbeats
                .get(&*node.name)
                .map_or(node.generated_ms, |b| node.generated_ms.max(*b));
            let fresh = now_ms.saturating_sub(node.alive_ms) <= settings.stale_after_ms;
            if fresh == node.fresh {
                continue;
            }
            node.fresh = fresh;
            for &(e, v) in &node.votes {
                let slot = &mut self.endpoints[e as usize];
                if v.up {
                    if fresh {
                        slot.fresh_up += 1;
                    } else {
                        slot.fresh_up = slot.fresh_up.saturating_sub(1);
                    }
                }
                mark(&mut self.endpoints, &mut self.dirty, e);
            }
        }

        // Isolation: a fresh node with two votes or more, none up, one on an endpoint another
        // fresh node sees up (its own votes add nothing to `fresh_up`: none is up).
        for n in 0..self.nodes.len() {
            let node = &self.nodes[n];
            let isolated = node.fresh
                && node.votes.len() >= 2
                && node.ups == 0
                && node
                    .votes
                    .iter()
                    .any(|(e, _)| self.endpoints[*e as usize].fresh_up > 0);
            if isolated == node.isolated {
                continue;
            }
            self.nodes[n].isolated = isolated;
            for &(e, _) in &self.nodes[n].votes {
                mark(&mut self.endpoints, &mut self.dirty, e);
            }
        }

        // Lone down votes that have settled.
        while let Some(&Reverse((at, e))) = self.settles.peek() {
            if at > now_ms {
                break;
            }
            self.settles.pop();
            mark(&mut self.endpoints, &mut self.dirty, e);
        }

        let mut changes = Vec::new();
        let judged = everything || !self.dirty.is_empty();
        for e in std::mem::take(&mut self.dirty) {
            if let Some(change) = self.judge(e, now_ms, settings) {
                changes.push(change);
            }
        }
        changes.sort_by(|a, b| a.key.cmp(&b.key));

        let mut isolated: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.isolated)
            .map(|n| n.name.to_string())
            .collect();
        isolated.sort();
        let isolation = (isolated != self.isolated).then(|| {
            self.isolated = isolated.clone();
            isolated
        });
        let voters = self
            .nodes
            .iter()
            .map(|n| Voter {
                node: n.name.clone(),
                region: n.region.clone(),
                age_ms: now_ms.saturating_sub(n.alive_ms),
                fresh: n.fresh,
                ignored: n.isolated,
            })
            .collect();
        Tallied {
            merged: Merged {
                endpoints: self.verdicts.clone(),
                isolated: self.isolated.clone(),
                voters,
            },
            changes,
            isolation,
            judged,
        }
    }

    /// Judges one endpoint from its votes; the change, if its verdict changed.
    fn judge(&mut self, e: u32, now_ms: u64, settings: MergeSettings) -> Option<VerdictChange> {
        let slot = &mut self.endpoints[e as usize];
        slot.dirty = false;
        if slot.votes.is_empty() {
            if self.verdicts.contains_key(&slot.key) {
                Arc::make_mut(&mut self.verdicts).remove(&slot.key);
            }
            return None;
        }
        let nodes = &self.nodes;
        let counts = |n: u32, v: &Cast| {
            let node = &nodes[n as usize];
            node.fresh && !node.isolated && !v.up
        };
        // Fresh, not isolated, down: "another node sees it down" when it is not the voter's own.
        let down_seen = slot.votes.iter().filter(|(n, v)| counts(*n, v)).count();
        let mut ballots = Vec::with_capacity(slot.votes.len());
        let mut back = Vec::new();
        let (mut down, mut counted) = (0, 0);
        for (n, v) in &slot.votes {
            let node = &nodes[*n as usize];
            // A down vote's node adds nothing to `fresh_up`, so any of it is another's.
            let settling = !v.up
                && now_ms.saturating_sub(v.since_ms) < settings.settle_ms
                && slot.fresh_up > 0
                && down_seen <= usize::from(counts(*n, v));
            if settling {
                self.settles
                    .push(Reverse((v.since_ms.saturating_add(settings.settle_ms), e)));
            }
            if node.fresh && !node.isolated && !settling {
                counted += 1;
                down += usize::from(!v.up);
                if v.up && v.recovered {
                    back.push(v.since_ms);
                }
            }
            ballots.push(Ballot {
                node: *n,
                up: v.up,
                settling,
            });
        }
        let up = !settings.quorum.reached(down, counted);
        let before = slot.last_up.replace(up);
        let restored_ms = if up && !back.is_empty() {
            restored_from(&back, down, counted, settings.quorum)
        } else {
            0
        };
        let verdict = Verdict {
            up,
            down_votes: down,
            counted_votes: counted,
            ballots: ballots.into(),
            restored_ms,
        };
        let verdicts = Arc::make_mut(&mut self.verdicts);
        match verdicts.get_mut(&slot.key) {
            Some(v) => *v = verdict,
            None => {
                verdicts.insert(slot.key.clone(), verdict);
            }
        }
        let changed = match before {
            Some(b) => b != up,
            None => !up,
        };
        changed.then(|| VerdictChange {
            key: slot.key.clone(),
            up,
            down_votes: down,
            counted_votes: counted,
        })
    }
}

/// Marks endpoint `e` to be judged at the next merge.
fn mark(endpoints: &mut [EndpointSlot], dirty: &mut Vec<u32>, e: u32) {
    if let Some(slot) = endpoints.get_mut(e as usize)
        && !slot.dirty
    {
        slot.dirty = true;
        dirty.push(e);
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::health::merge::{CastVote, Quorum, Vote, accept, merge_alive};

    type Seen = (
        BTreeMap<EndpointKey, ((bool, usize, usize, u64), Vec<CastVote>)>,
        Vec<String>,
    );

    /// What a merge says, read out whole: verdicts with their votes, and the isolated nodes.
    fn seen(m: &Merged) -> Seen {
        let endpoints = m
            .endpoints
            .iter()
            .map(|(k, v)| {
                let votes = m.votes(v).collect();
                let verdict = (v.up, v.down_votes, v.counted_votes, v.restored_ms);
                (k.clone(), (verdict, votes))
            })
            .collect();
        (endpoints, m.isolated.clone())
    }

    fn key(addr: &str, check: &str) -> EndpointKey {
        EndpointKey {
            addr: addr.parse().unwrap(),
            check: check.into(),
        }
    }

    /// The incremental merge against the full one (`merge_alive`, the specification) on random
    /// histories: nodes publish reports (some endpoints up, some down, some left out, votes that
    /// began recently enough to settle), beat, go quiet long enough to go stale, the clock
    /// moves (now and then back), the settings change. After every step both must say the same,
    /// vote for vote, and the changes the tally reports must be those the verdicts show.
    #[test]
    fn the_tally_merges_as_the_full_merge_does() {
        let checks = ["http://x:80/#1", "tcp:81#2"];
        let addrs = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "::1", "192.0.2.9"];
        let names = ["e", "b", "d", "a", "c", "f"];
        for seed in 0..300u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let nodes = rng.random_range(1..=names.len());
            let quorums = [Quorum::Majority, Quorum::Any, Quorum::All, Quorum::Count(2)];
            let mut settings = MergeSettings {
                stale_after_ms: 5_000,
                quorum: quorums[rng.random_range(0..quorums.len())],
                settle_ms: [0, 300, 2_000][rng.random_range(0..3)],
            };
            let mut now: u64 = 100_000;
            let mut version = 0;
            let mut reports: HashMap<String, Report> = HashMap::new();
            let mut heartbeats: HashMap<String, u64> = HashMap::new();
            let mut tally = Tally::new();
            let mut last: HashMap<EndpointKey, bool> = HashMap::new();
            let mut previous: Option<BTreeMap<EndpointKey, (bool, u64)>> = None;
            for step in 0..80 {
                match rng.random_range(0..10) {
                    0..=3 => {
                        let node = names[rng.random_range(0..nodes)];
                        version += 1;
                        let mut r = Report::new(node, &format!("r-{node}"), version, now);
                        // Mostly one picture for all, so that verdicts and isolation vary.
                        let all_down = rng.random_bool(0.2);
                        for check in checks {
                            for addr in addrs {
                                if rng.random_bool(0.2) {
                                    continue;
                                }
                                let up = !all_down && rng.random_bool(0.6);
                                let since_ms = now - rng.random_range(0..3_000);
                                let vote = Vote {
                                    up,
                                    since_ms,
                                    rtt_ms: None,
                                    error: None,
                                    recovered: up && rng.random_bool(0.4),
                                };
                                r.insert(&key(addr, check), vote);
                            }
                        }
                        if accept(&mut reports, r)
                            && let Some(r) = reports.get(node)
                        {
                            tally.take(r);
                        }
                    }
                    4 | 5 => {
                        let node = names[rng.random_range(0..nodes)];
                        heartbeats.insert(node.to_string(), now);
                    }
                    6 => settings.settle_ms = [0, 300, 2_000][rng.random_range(0..3)],
                    7 if rng.random_bool(0.2) => now -= rng.random_range(0..500),
                    _ => now += rng.random_range(0..3_000),
                }
                let want = merge_alive(&reports, &heartbeats, now, settings);
                let got = tally.merge(&heartbeats, now, settings);
                assert_eq!(
                    seen(&got.merged),
                    seen(&want),
                    "seed {seed}, step {step}, now {now}"
                );
                // A merge that judged nothing again says what the one before said: the cluster
                // then keeps the lookup the answers read (`merge::Lookup`).
                let outcome: BTreeMap<EndpointKey, (bool, u64)> = want
                    .endpoints
                    .iter()
                    .map(|(k, v)| (k.clone(), (v.up, v.restored_ms)))
                    .collect();
                if !got.judged {
                    assert_eq!(
                        previous.as_ref(),
                        Some(&outcome),
                        "seed {seed}, step {step}"
                    );
                }
                previous = Some(outcome);
                let mut changes = Vec::new();
                for (k, v) in want.endpoints.iter() {
                    let before = last.insert(k.clone(), v.up);
                    if before.is_some_and(|b| b != v.up) || (before.is_none() && !v.up) {
                        changes.push(VerdictChange {
                            key: k.clone(),
                            up: v.up,
                            down_votes: v.down_votes,
                            counted_votes: v.counted_votes,
                        });
                    }
                }
                assert_eq!(got.changes, changes, "seed {seed}, step {step}");
            }
        }
    }

    /// A vote that settles, or a report that goes stale, with nothing else happening: the next
    /// merge after the deadline sees it (nothing is judged again but what the deadline names).
    #[test]
    fn deadlines_flip_verdicts_with_nothing_else_moving() {
        let settings = MergeSettings {
            stale_after_ms: 5_000,
            quorum: Quorum::Any,
            settle_ms: 500,
        };
        let vote = |up, since_ms| Vote {
            up,
            since_ms,
            rtt_ms: None,
            error: None,
            recovered: false,
        };
        let mut tally = Tally::new();
        let mut a = Report::new("a", "r", 1, 10_000);
        a.insert(&key("10.0.0.1", "c"), vote(false, 9_900));
        a.insert(&key("10.0.0.2", "c"), vote(true, 0));
        let mut b = Report::new("b", "r", 1, 8_000);
        b.insert(&key("10.0.0.1", "c"), vote(true, 0));
        b.insert(&key("10.0.0.2", "c"), vote(true, 0));
        tally.take(&a);
        tally.take(&b);
        let none = HashMap::new();
        let up = |t: &Tallied| t.merged.endpoints[&key("10.0.0.1", "c")].up;
        // a's lone down vote settles until 10,400.
        assert!(up(&tally.merge(&none, 10_000, settings)));
        assert!(up(&tally.merge(&none, 10_399, settings)));
        let t = tally.merge(&none, 10_400, settings);
        assert!(!up(&t) && t.changes.len() == 1, "{:?}", t.changes);
        // b goes stale after 13,000; a's vote then no longer has another against it.
        assert!(!up(&tally.merge(&none, 13_000, settings)));
        let t = tally.merge(&none, 13_001, settings);
        let v = &t.merged.endpoints[&key("10.0.0.1", "c")];
        assert_eq!((v.down_votes, v.counted_votes), (1, 1));
        // a goes stale too at 15,001: no vote counts, the endpoint is up again.
        let t = tally.merge(&none, 15_001, settings);
        assert!(up(&t) && t.changes.len() == 1);
    }
}
