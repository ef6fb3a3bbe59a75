//! Latency steering's data, pure: the round-trip times every region's probers measured to every
//! endpoint (the RTT matrix, from the merged reports), and per service and region the DCs in
//! order of that RTT, with hysteresis so that answers do not flap on noise.
//!
//! Hysteresis: each (region, service) has a leader DC. Another DC takes the lead only when its
//! RTT is below the leader's by `SWITCH_MARGIN` on every refresh for `SWITCH_HOLD`; a leader
//! without a fresh measurement (its endpoints down from that region, or the region's nodes
//! stale) loses the lead at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::health::merge::{DcRtt, EndpointKey, RegionOrder, Report, Steering};
use crate::zone::{Name, Policy, ZoneSet};

/// How much faster a challenger must be than the leader: 20% of the leader's RTT. Probe RTTs
/// on one path wander by a few percent; a 10% jitter on both DCs, smoothed, stays well inside.
pub const SWITCH_MARGIN: f64 = 0.2;
/// How long a challenger must stay that much faster before it leads: several probes' worth, so
/// that one slow spell of the leader does not move every client of a region.
pub const SWITCH_HOLD_MS: u64 = 5_000;

/// How far a smoothed RTT must move from the one last published before a node publishes a new
/// report version for it: 10% of it, and at least `REPUBLISH_FLOOR_MS`. The steady exchange
/// then costs nothing for RTT noise (a report's version otherwise moves only when a verdict
/// changes). Half the switching margin: a published RTT is at most 10% off the current one,
/// so two DCs equally fast can never look `SWITCH_MARGIN` apart by the lag of publishing alone
/// (0.9 / 1.1 > 0.8), and a move that could change a steering decision is published.
pub const REPUBLISH_MOVE: f64 = 0.1;
/// Sub-millisecond RTTs (a LAN, loopback) wander by more than 10% without meaning anything.
pub const REPUBLISH_FLOOR_MS: f64 = 1.0;

/// Whether `now`'s RTTs moved from `published`'s enough to publish (see `REPUBLISH_MOVE`). The
/// reports say the same verdicts (`Report::same_verdicts`), so their votes pair up in order.
pub fn rtt_moved(published: &Report, now: &Report) -> bool {
    published
        .votes
        .values()
        .zip(now.votes.values())
        .flat_map(|(a, b)| a.values().zip(b.values()))
        .any(|(a, b)| moved(a.rtt_ms, b.rtt_ms))
}

/// Whether an RTT moved from the `published` one enough to publish (see `REPUBLISH_MOVE`).
fn moved(published: Option<f64>, now: Option<f64>) -> bool {
    match (published, now) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            let moved = (a - b).abs();
            moved > REPUBLISH_FLOOR_MS && moved > a * REPUBLISH_MOVE
        }
        _ => true,
    }
}

/// Gives each vote of `now` that `published` holds too the RTT published there, unless it
/// moved enough to publish (`REPUBLISH_MOVE`): a report whose version moves for a verdict then
/// carries the RTTs its peers hold for every other vote, and the delta that sends it is the
/// votes that changed, not every vote whose RTT wandered a little since (`book::ReportDelta`).
pub fn keep_published_rtts(published: &Report, now: &mut Report) {
    for (check, by_addr) in &mut now.votes {
        let Some(old) = published.votes.get(check) else {
            continue;
        };
        for (addr, vote) in by_addr.iter_mut() {
            if let Some(o) = old.get(addr)
                && !moved(o.rtt_ms, vote.rtt_ms)
            {
                vote.rtt_ms = o.rtt_ms;
            }
        }
    }
}

/// One region's view of one endpoint: the smoothed RTT, averaged over the region's fresh nodes
/// that see it up, and when the newest of them was last heard from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub rtt_ms: f64,
    /// Unix milliseconds of the latest heartbeat (or report) of a node that measured it.
    pub heard_ms: u64,
}

/// Region → endpoint → measurement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RttMatrix {
    pub regions: BTreeMap<String, HashMap<EndpointKey, Measurement>>,
}

/// The RTT matrix of the fresh reports: a node's RTTs count while its report votes (see
/// `merge::merge_alive`), and only for endpoints it sees up.
pub fn matrix(
    reports: &HashMap<String, Report>,
    heartbeats: &HashMap<String, u64>,
    now_ms: u64,
    stale_after_ms: u64,
) -> RttMatrix {
    // (sum, count, newest) per region and endpoint.
    let mut sums: BTreeMap<String, HashMap<EndpointKey, (f64, u32, u64)>> = BTreeMap::new();
    for r in reports.values() {
        let alive = heartbeats
            .get(&r.node)
            .map_or(r.generated_ms, |b| r.generated_ms.max(*b));
        if now_ms.saturating_sub(alive) > stale_after_ms {
            continue;
        }
        let region = sums.entry(r.region.clone()).or_default();
        for (key, vote) in r.iter() {
            let Some(rtt) = vote
                .rtt_ms
                .filter(|v| vote.up && v.is_finite() && *v >= 0.0)
            else {
                continue;
            };
            let e = region.entry(key).or_insert((0.0, 0, 0));
            e.0 += rtt;
            e.1 += 1;
            e.2 = e.2.max(alive);
        }
    }
    RttMatrix {
        regions: sums
            .into_iter()
            .map(|(region, by_key)| {
                let m = by_key
                    .into_iter()
                    .map(|(k, (sum, n, heard))| {
                        (
                            k,
                            Measurement {
                                rtt_ms: sum / f64::from(n),
                                heard_ms: heard,
                            },
                        )
                    })
                    .collect();
                (region, m)
            })
            .collect(),
    }
}

/// A (region, service)'s leader, and since when some other DC has been faster than it by the
/// margin without a break (whichever: two near-equal challengers take turns being the best).
#[derive(Debug, Clone, PartialEq)]
struct Lead {
    leader: Arc<str>,
    beaten_since: Option<u64>,
}

/// The hysteresis state across refreshes, keyed by region and service name (so a zone reload
/// keeps it).
#[derive(Debug, Default)]
pub struct Steerer {
    leads: HashMap<(String, Name), Lead>,
}

impl Steerer {
    /// The steering order of every `latency` service of `zones` for every region measured,
    /// moving leaders as the hysteresis allows at `now_ms`.
    pub fn steer(&mut self, zones: &ZoneSet, matrix: &RttMatrix, now_ms: u64) -> Steering {
        let mut out = Steering::default();
        let mut seen: Vec<(String, Name)> = Vec::new();
        for (zone, service) in zones.services() {
            if service.policy != Policy::Latency {
                continue;
            }
            let Some(check) = &service.check else {
                continue;
            };
            let check_id: std::sync::Arc<str> = crate::health::merge::check_id(check).into();
            let mut orders = Vec::new();
            for (region, measured) in &matrix.regions {
                let mut dcs: Vec<DcRtt> = Vec::new();
                for (i, sdc) in service.dcs.iter().enumerate() {
                    let (mut sum, mut n, mut heard) = (0.0, 0u32, 0u64);
                    for addr in &sdc.endpoints {
                        let key = EndpointKey {
                            addr: *addr,
                            check: check_id.clone(),
                        };
                        if let Some(m) = measured.get(&key) {
                            sum += m.rtt_ms;
                            n += 1;
                            heard = heard.max(m.heard_ms);
                        }
                    }
                    if n > 0 {
                        dcs.push(DcRtt {
                            dc: i,
                            name: zone.datacenters[sdc.dc].name.clone(),
                            rtt_ms: sum / f64::from(n),
                            heard_ms: heard,
                        });
                    }
                }
                if dcs.is_empty() {
                    continue;
                }
                // A stable sort: equal RTTs keep the zone file's order.
                dcs.sort_by(|a, b| a.rtt_ms.total_cmp(&b.rtt_ms));
                let key = (region.clone(), service.name.clone());
                let lead = self.leads.remove(&key);
                let lead = next_lead(lead, &dcs, now_ms);
                if let Some(pos) = dcs.iter().position(|d| d.name == lead.leader) {
                    let leader = dcs.remove(pos);
                    dcs.insert(0, leader);
                }
                self.leads.insert(key.clone(), lead);
                seen.push(key);
                orders.push(RegionOrder {
                    region: Arc::from(region.as_str()),
                    dcs,
                });
            }
            if !orders.is_empty() {
                out.services.insert(service.name.clone(), orders);
            }
        }
        // Forget what is no longer measured: it starts from the best when it comes back.
        self.leads.retain(|k, _| seen.contains(k));
        out
    }
}

/// The hysteresis rule (see the module doc). `by_rtt` is not empty and sorted by RTT.
fn next_lead(lead: Option<Lead>, by_rtt: &[DcRtt], now_ms: u64) -> Lead {
    let best = &by_rtt[0];
    let fresh_start = || Lead {
        leader: best.name.clone(),
        beaten_since: None,
    };
    let Some(mut lead) = lead else {
        return fresh_start();
    };
    let Some(leader) = by_rtt.iter().find(|d| d.name == lead.leader) else {
        return fresh_start();
    };
    if best.name == leader.name || best.rtt_ms >= leader.rtt_ms * (1.0 - SWITCH_MARGIN) {
        lead.beaten_since = None;
        return lead;
    }
    match lead.beaten_since {
        // The lead goes to the best of the moment.
        Some(since) if now_ms.saturating_sub(since) >= SWITCH_HOLD_MS => fresh_start(),
        Some(_) => lead,
        None => Lead {
            beaten_since: Some(now_ms),
            ..lead
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dc(name: &str, rtt_ms: f64) -> DcRtt {
        DcRtt {
            dc: 0,
            name: Arc::from(name),
            rtt_ms,
            heard_ms: 0,
        }
    }

    fn sorted(mut v: Vec<DcRtt>) -> Vec<DcRtt> {
        v.sort_by(|a, b| a.rtt_ms.total_cmp(&b.rtt_ms));
        v
    }

    /// Feeds a series of (time, [(dc, rtt)]) and returns the leader after each.
    fn leaders(series: &[(u64, &[(&str, f64)])]) -> Vec<String> {
        let mut lead = None;
        series
            .iter()
            .map(|(t, rtts)| {
                let by = sorted(rtts.iter().map(|(n, r)| dc(n, *r)).collect());
                let l = next_lead(lead.take(), &by, *t);
                let name = l.leader.to_string();
                lead = Some(l);
                name
            })
            .collect()
    }

    #[test]
    fn hysteresis_table() {
        // (what, series, leaders wanted)
        type Case<'a> = (&'a str, Vec<(u64, &'a [(&'a str, f64)])>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "the first measurement picks the best at once",
                vec![(0, &[("a", 50.0), ("b", 20.0)])],
                vec!["b"],
            ),
            (
                // b leads; a is 10% faster at times (noise): never better by 20%, never leads.
                "noise inside the margin never moves the lead",
                vec![
                    (0, &[("a", 22.0), ("b", 20.0)]),
                    (1_000, &[("a", 19.0), ("b", 21.0)]),
                    (2_000, &[("a", 18.5), ("b", 21.5)]),
                    (9_000, &[("a", 18.0), ("b", 22.0)]),
                ],
                vec!["b", "b", "b", "b"],
            ),
            (
                "better by the margin, but not for the hold, keeps the leader",
                vec![
                    (0, &[("a", 50.0), ("b", 20.0)]),
                    (1_000, &[("a", 10.0), ("b", 20.0)]),
                    (5_999, &[("a", 10.0), ("b", 20.0)]),
                    // A spell back inside the margin restarts the hold.
                    (6_500, &[("a", 17.0), ("b", 20.0)]),
                    (7_000, &[("a", 10.0), ("b", 20.0)]),
                    (11_999, &[("a", 10.0), ("b", 20.0)]),
                    (12_000, &[("a", 10.0), ("b", 20.0)]),
                ],
                vec!["b", "b", "b", "b", "b", "b", "a"],
            ),
            (
                // b and c take turns being the best, both far better than a: a loses the lead
                // after the hold, to the best of that moment.
                "near-equal challengers taking turns still end a slow leader's lead",
                vec![
                    (0, &[("a", 10.0), ("b", 20.0), ("c", 21.0)]),
                    (1_000, &[("a", 100.0), ("b", 20.0), ("c", 21.0)]),
                    (3_000, &[("a", 100.0), ("b", 22.0), ("c", 21.0)]),
                    (5_000, &[("a", 100.0), ("b", 20.0), ("c", 21.0)]),
                    (6_000, &[("a", 100.0), ("b", 22.0), ("c", 21.0)]),
                ],
                vec!["a", "a", "a", "a", "c"],
            ),
            (
                "a leader without a measurement loses the lead at once",
                vec![
                    (0, &[("a", 50.0), ("b", 20.0)]),
                    (1_000, &[("a", 50.0)]),
                    (2_000, &[("a", 50.0), ("b", 20.0)]),
                ],
                vec!["b", "a", "a"],
            ),
        ];
        for (what, series, want) in cases {
            assert_eq!(leaders(&series), want, "{what}");
        }
    }

    #[test]
    fn the_matrix_averages_a_regions_fresh_nodes_and_skips_down_votes() {
        use crate::health::merge::Vote;
        let key = EndpointKey {
            addr: "10.0.0.1".parse().unwrap(),
            check: "c".into(),
        };
        let vote = |up, rtt| Vote {
            up,
            since_ms: 0,
            rtt_ms: Some(rtt),
            error: None,
            recovered: false,
        };
        let mut reports = HashMap::new();
        for (node, region, at, up, rtt) in [
            ("a1", "eu", 10_000, true, 10.0),
            ("a2", "eu", 10_000, true, 20.0),
            ("a3", "eu", 1_000, true, 90.0),  // stale
            ("b1", "us", 10_000, false, 5.0), // down: no measurement
        ] {
            let mut r = Report::new(node, region, at, at);
            r.insert(&key, vote(up, rtt));
            reports.insert(node.to_string(), r);
        }
        let m = matrix(&reports, &HashMap::new(), 10_500, 5_000);
        assert_eq!(
            m.regions["eu"][&key],
            Measurement {
                rtt_ms: 15.0,
                heard_ms: 10_000
            }
        );
        assert!(m.regions["us"].is_empty());
    }
}
