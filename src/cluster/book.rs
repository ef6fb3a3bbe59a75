//! What a node holds of the cluster, as plain data: every node's newest report (its own rebuilt
//! from its probers), every node's heartbeat, the drain decisions, the verdicts it last published
//! (so changes can be told), and what it knows of each peer. Synchronous and free of I/O: the
//! cluster's tasks lock a `Book`, call in, and act on what comes back (log, persist, wake
//! followers, publish).
//!
//! Deltas (scuttlebutt-style, as quickwit's chitchat): a report's version moves only when what it
//! says changes (readiness, an up/down verdict), and liveness travels apart, as a heartbeat per
//! node (a few bytes, sent in full every time). A request carries a `Digest` of the versions the
//! asker holds, and the answer holds only the reports newer than those, the drains only if the
//! asker's differ. In a steady state an exchange is then N heartbeats, whatever the endpoints.

use std::collections::{BTreeMap, HashMap, HashSet};
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
}

/// What an asker holds, sent with its request: the version of each node's report, and a hash of
/// its drain set. The answer leaves out what the asker has already.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    pub versions: BTreeMap<String, u64>,
    pub drains: u64,
}

impl Digest {
    /// The header value: `drains=HEX;v=NODE:VERSION,...`, node ids percent-encoded.
    pub fn to_header(&self) -> String {
        let mut out = format!("drains={:x};v=", self.drains);
        for (i, (node, version)) in self.versions.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for b in node.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out.push(':');
            out.push_str(&version.to_string());
        }
        out
    }

    /// Reads a header value; `None` when malformed (the asker then gets everything).
    pub fn parse(text: &str) -> Option<Digest> {
        let (drains, versions) = text.split_once(';')?;
        let drains = u64::from_str_radix(drains.strip_prefix("drains=")?, 16).ok()?;
        let versions = versions.strip_prefix("v=")?;
        let mut digest = Digest {
            versions: BTreeMap::new(),
            drains,
        };
        for item in versions.split(',').filter(|i| !i.is_empty()) {
            let (node, version) = item.rsplit_once(':')?;
            digest
                .versions
                .insert(percent_decode(node)?, version.parse().ok()?);
        }
        Some(digest)
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
            steerer: Steerer::default(),
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
        // Served to older peers under the heartbeat's time (see `message`): keep past it.
        self.own_version = self.own_version.max(now_ms);
        let beat = self.heartbeats.entry(self.node.clone()).or_default();
        *beat = (*beat).max(now_ms);
        if news {
            self.tally.take(&own);
        }
        self.reports.insert(own.node.clone(), own);
        let tallied = self.tally.merge(&self.heartbeats, now_ms, settings);
        self.merges += 1;
        Refreshed {
            version: self.merges,
            news,
            merged: tallied.merged,
            changes: tallied.changes,
            isolation: tallied.isolation,
            drains: self.drains.clone(),
        }
    }

    /// Takes in what a peer holds: newer reports and heartbeats of other nodes, newer drain
    /// decisions.
    pub fn absorb(&mut self, msg: Exchange) -> Absorbed {
        let mut out = Absorbed::default();
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
            if merge::accept(&mut self.reports, r)
                && let Some(r) = self.reports.get(&node)
            {
                self.tally.take(r);
                out.changed = true;
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
    /// `first_hand` (a long-poll's answer) leaves out the reports of other nodes: a change
    /// reaches every node first hand, from its own node's long-poll, and relayed reports wait
    /// for the periodic pull, whose digest by then says what the asker has. Otherwise a change
    /// everyone sees at once (a DC failure) would be sent to each node by every peer, each
    /// waking with a digest older than the reports it gained meanwhile.
    pub fn message(&self, generation: u64, digest: Option<&Digest>, first_hand: bool) -> Exchange {
        let heartbeats: BTreeMap<String, u64> = self
            .heartbeats
            .iter()
            .map(|(n, b)| (n.clone(), *b))
            .collect();
        let (reports, drains) = match digest {
            Some(d) => {
                let reports = self
                    .reports
                    .values()
                    .filter(|r| !first_hand || r.node == self.node)
                    .filter(|r| d.versions.get(&r.node).is_none_or(|v| r.version > *v))
                    .cloned();
                let drains = if d.drains == drains_hash(&self.drains) {
                    DrainSet::default()
                } else {
                    self.drains.clone()
                };
                (reports.collect::<Vec<_>>(), drains)
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
        Exchange {
            from: self.node.clone(),
            reports,
            drains,
            generation,
            heartbeats,
        }
    }

    /// What this node holds, for its requests.
    pub fn digest(&self) -> Digest {
        Digest {
            versions: self
                .reports
                .values()
                .map(|r| (r.node.clone(), r.version))
                .collect(),
            drains: drains_hash(&self.drains),
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
        b.absorb(a.message(1, Some(&b.digest()), false));

        // First contact (an empty digest): everything, a's own report too.
        let first = b.message(1, Some(&Digest::default()), false);
        assert_eq!(first.reports.len(), 2);
        assert_eq!(first.drains.entries.len(), 1);
        a.absorb(first);
        // Then, with nothing new: heartbeats only.
        b.refresh(&up, 2_000, now, SETTINGS);
        let steady = b.message(2, Some(&a.digest()), false);
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
        let news = b.message(3, Some(&a.digest()), true);
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
        let held = b.message(3, Some(&stale), true);
        assert_eq!(
            held.reports
                .iter()
                .map(|r| r.node.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(b.message(3, Some(&stale), false).reports.len(), 2);
        assert!(a.absorb(news).changed);

        // An older node sends no digest: every report, versioned and stamped with its heartbeat.
        b.refresh(
            &view(now, &[("192.0.2.1", Status::Down)]),
            4_000,
            now,
            SETTINGS,
        );
        let old = b.message(4, None, false);
        let own = old.reports.iter().find(|r| r.node == "b").expect("b's");
        assert_eq!((own.version, own.generated_ms), (4_000, 4_000));
        let relayed = old.reports.iter().find(|r| r.node == "a").expect("a's");
        assert_eq!((relayed.version, relayed.generated_ms), (1_000, 1_000));
        // And b's next version is past what it served so.
        b.refresh(&up, 4_000, now, SETTINGS);
        assert!(b.reports.get("b").is_some_and(|r| r.version > 4_000));
    }

    #[test]
    fn a_digest_reads_back_what_it_wrote() {
        let digest = Digest {
            versions: BTreeMap::from([
                ("eu-1".to_string(), 17),
                ("odd:node,id%;".to_string(), u64::MAX),
                ("ünï".to_string(), 0),
            ]),
            drains: 0xdead_beef,
        };
        let text = digest.to_header();
        assert!(text.is_ascii() && !text.contains(' '), "{text}");
        assert_eq!(Digest::parse(&text), Some(digest));
        assert_eq!(Digest::parse("drains=0;v="), Some(Digest::default()));
        for bad in [
            "",
            "drains=0",
            "drains=x;v=",
            "drains=0;v=a",
            "drains=0;v=a:x",
            "drains=0;v=%zz:1",
            "drains=0;v=%F:1",
        ] {
            assert_eq!(Digest::parse(bad), None, "{bad:?}");
        }
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

        let got = a.absorb(b.message(7, None, false));
        assert!(got.changed && got.news);
        assert_eq!(got.learnt, [drain("dc1", 900, "b")]);
        assert_eq!(got.drains.as_ref().map(|d| d.entries.len()), Some(1));
        let again = a.absorb(b.message(7, None, false));
        assert!(!again.changed && !again.news && again.learnt.is_empty());

        // b relays a's own report back: a keeps its own.
        let relayed = b.absorb(a.message(1, None, false));
        assert!(relayed.changed);
        let mut echo = b.message(8, None, false);
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
