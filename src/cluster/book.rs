//! What a node holds of the cluster, as plain data: every node's newest report (its own rebuilt
//! from its probers), the drain decisions, the verdicts it last published (so changes can be
//! told), and what it knows of each peer. Synchronous and free of I/O: the cluster's tasks lock
//! a `Book`, call in, and act on what comes back (log, persist, wake followers, publish).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::check::Check;
use crate::drain::{Drain, DrainSet};
use crate::health::{HealthView, Status};
use crate::merge::{self, EndpointKey, MergeSettings, Merged, Report, Vote};

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
}

/// A node's reports and drains.
#[derive(Debug)]
pub struct Book {
    node: String,
    region: String,
    reports: HashMap<String, Report>,
    drains: DrainSet,
    own_version: u64,
    /// Effective up/down per endpoint last merged, to tell changes.
    last_verdicts: HashMap<EndpointKey, bool>,
    last_isolated: Vec<String>,
}

/// An endpoint whose effective status changed with a merge (or that is down when first seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub key: EndpointKey,
    pub up: bool,
    pub down_votes: usize,
    pub counted_votes: usize,
}

/// What a refresh found.
#[derive(Debug)]
pub struct Refreshed {
    /// The version of this node's new report: it orders refreshes.
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
    /// Anything newer was taken in (the merged view needs rebuilding).
    pub changed: bool,
    /// A verdict or a drain changed: what this node's own followers must hear of (a newer
    /// report saying the same thing waits for their next pull).
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
            drains,
            own_version: 0,
            last_verdicts: HashMap::new(),
            last_isolated: Vec::new(),
        }
    }

    /// Rebuilds this node's report from `view` (its probers' confirmed observations), merges
    /// every report, and says what changed since the last refresh.
    pub fn refresh(
        &mut self,
        view: &HealthView,
        now_ms: u64,
        now: Instant,
        settings: MergeSettings,
    ) -> Refreshed {
        // Strictly increasing even when the clock stands still or steps back.
        let version = (self.own_version + 1).max(now_ms);
        self.own_version = version;
        let own = own_report(&self.node, &self.region, version, view, now_ms, now);
        let news = self
            .reports
            .get(&own.node)
            .is_none_or(|old| !old.same_verdicts(&own));
        self.reports.insert(own.node.clone(), own);
        let merged = merge::merge(&self.reports, now_ms, settings);

        let mut changes = Vec::new();
        for (key, verdict) in &merged.endpoints {
            let before = self.last_verdicts.insert(key.clone(), verdict.up);
            if before.is_some_and(|b| b != verdict.up) || (before.is_none() && !verdict.up) {
                changes.push(VerdictChange {
                    key: key.clone(),
                    up: verdict.up,
                    down_votes: verdict.down_votes,
                    counted_votes: verdict.counted_votes,
                });
            }
        }
        let isolation = (merged.isolated != self.last_isolated).then(|| {
            self.last_isolated = merged.isolated.clone();
            merged.isolated.clone()
        });
        Refreshed {
            version,
            news,
            merged,
            changes,
            isolation,
            drains: self.drains.clone(),
        }
    }

    /// Takes in what a peer holds: newer reports of other nodes, newer drain decisions.
    pub fn absorb(&mut self, msg: Exchange) -> Absorbed {
        let mut out = Absorbed::default();
        for r in msg.reports {
            // Nobody else speaks for this node.
            if r.node == self.node {
                continue;
            }
            let differs = self
                .reports
                .get(&r.node)
                .is_none_or(|old| !old.same_verdicts(&r));
            if merge::accept(&mut self.reports, r) {
                out.changed = true;
                out.news |= differs;
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

    /// The message this node serves, stamped with `generation`.
    pub fn message(&self, generation: u64) -> Exchange {
        Exchange {
            from: self.node.clone(),
            reports: self.reports(),
            drains: self.drains.clone(),
            generation,
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
    version: u64,
    view: &HealthView,
    now_ms: u64,
    now: Instant,
) -> Report {
    let mut own = Report::new(node, region, version, now_ms);
    own.ready = view.ready;
    for obs in view.observations().filter(|o| o.confirmed) {
        let age = now.saturating_duration_since(obs.since).as_millis() as u64;
        own.insert(
            &EndpointKey::new(obs.target.addr, &obs.target.check),
            Vote {
                up: obs.status == Status::Up,
                since_ms: now_ms.saturating_sub(age),
                rtt_ms: obs.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
                error: obs.last_error.clone(),
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
    use crate::check::{CheckKind, HttpCheck};
    use crate::health::{Observation, ProbeTarget};
    use crate::merge::Quorum;

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
        // The own version moves even when the clock does not.
        let v = book.reports()[0].version;
        book.refresh(&down, 1_200, now, SETTINGS);
        assert_eq!(book.reports()[0].version, v + 1);
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

        let got = a.absorb(b.message(7));
        assert!(got.changed && got.news);
        assert_eq!(got.learnt, [drain("dc1", 900, "b")]);
        assert_eq!(got.drains.as_ref().map(|d| d.entries.len()), Some(1));
        let again = a.absorb(b.message(7));
        assert!(!again.changed && !again.news && again.learnt.is_empty());

        // b relays a's own report back: a keeps its own.
        let relayed = b.absorb(a.message(1));
        assert!(relayed.changed);
        let mut echo = b.message(8);
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
