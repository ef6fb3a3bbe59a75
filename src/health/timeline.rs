//! The last hour of each service's data centers, for the status page's timeline: a ring buffer
//! of samples, one per period (10 s by default, 360 of them): each DC's effective state, each
//! region's view of it (from that region's votes), and how many answers sent clients there
//! since the sample before. Plain sync data; `app` runs the timer that takes the samples.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::health::merge::{EffectiveHealth, EndpointKey};
use crate::zone::ZoneSet;

/// Samples kept: an hour of 10-second samples.
pub const CAPACITY: usize = 360;
/// Services sampled (the first ones of the zone set): the timeline is a picture for people,
/// and a node with thousands of services would hold megabytes of it.
pub const MAX_SERVICES: usize = 16;
/// The default sampling period.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// What a DC is at one moment, as a whole or as one region sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DcState {
    Up,
    Down,
    Drained,
    /// No fresh vote from that region (a region's view only).
    Unknown,
}

impl DcState {
    pub fn as_str(self) -> &'static str {
        match self {
            DcState::Up => "up",
            DcState::Down => "down",
            DcState::Drained => "drained",
            DcState::Unknown => "unknown",
        }
    }
}

/// One DC of one service at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DcSample {
    pub dc: Arc<str>,
    /// By the merged verdicts and the drains in force: what the answers use.
    pub state: DcState,
    /// Each region's view: up when one of its nodes has a fresh up vote for an endpoint.
    pub regions: BTreeMap<String, DcState>,
    /// Answers that sent clients to this DC since the previous sample.
    pub answers: u64,
}

/// One service at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceSample {
    pub zone: Arc<str>,
    pub service: Arc<str>,
    pub dcs: Vec<DcSample>,
}

/// Everything sampled at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub services: Vec<ServiceSample>,
}

/// A counter of answers per zone, service and DC: `Metrics::service_answers_total`.
type AnswerCounter<'a> = &'a dyn Fn(&Arc<str>, &Arc<str>, &Arc<str>) -> u64;

type CounterKey = (Arc<str>, Arc<str>, Arc<str>);

/// The ring buffer, shared by the sampler and the readers.
#[derive(Default)]
pub struct Timeline {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Zero until set: then `DEFAULT_PERIOD`.
    period: Duration,
    samples: VecDeque<Arc<Sample>>,
    /// The answer counters at the last sample, to count the answers since.
    totals: HashMap<CounterKey, u64>,
}

impl Timeline {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves whole samples: nothing to repair.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How often samples are taken (set by the sampler when it starts).
    pub fn period(&self) -> Duration {
        match self.inner().period {
            Duration::ZERO => DEFAULT_PERIOD,
            p => p,
        }
    }

    pub fn set_period(&self, period: Duration) {
        self.inner().period = period;
    }

    /// Takes a sample of `zones` and `health` at `at_ms`, counting answers with `answers`;
    /// the oldest sample goes once `CAPACITY` are held.
    pub fn record(
        &self,
        zones: &ZoneSet,
        health: &EffectiveHealth,
        answers: AnswerCounter<'_>,
        at_ms: u64,
    ) {
        let mut inner = self.inner();
        let (sample, totals) = sample(zones, health, answers, &inner.totals, at_ms);
        inner.totals = totals;
        if inner.samples.len() >= CAPACITY {
            inner.samples.pop_front();
        }
        inner.samples.push_back(Arc::new(sample));
    }

    /// The samples held, oldest first.
    pub fn samples(&self) -> Vec<Arc<Sample>> {
        self.inner().samples.iter().cloned().collect()
    }
}

/// A sample of the first `MAX_SERVICES` services, and the answer counters it read (the next
/// sample's `previous`). A counter that went backwards (a new registry) counts from zero.
pub fn sample(
    zones: &ZoneSet,
    health: &EffectiveHealth,
    answers: AnswerCounter<'_>,
    previous: &HashMap<CounterKey, u64>,
    at_ms: u64,
) -> (Sample, HashMap<CounterKey, u64>) {
    let mut totals = HashMap::new();
    let mut services = Vec::new();
    for (zone, svc) in zones.services().take(MAX_SERVICES) {
        let zone_name = zone.apex.arc().clone();
        let service = svc.name.arc().clone();
        let mut dcs = Vec::new();
        for sdc in &svc.dcs {
            let Some(dc) = zone.datacenters.get(sdc.dc) else {
                continue;
            };
            let dc = dc.name.clone();
            let drained = health.is_drained(&dc, svc.name.as_str());
            let mut any_up = false;
            let mut regions: BTreeMap<String, DcState> = BTreeMap::new();
            for ip in &sdc.endpoints {
                any_up |= health.is_up(*ip, svc.check.as_deref());
                let verdict = svc
                    .check
                    .as_ref()
                    .and_then(|c| health.merged.endpoints.get(&EndpointKey::new(*ip, c)));
                for vote in verdict.into_iter().flat_map(|v| health.merged.votes(v)) {
                    let seen = regions
                        .entry(vote.region.to_string())
                        .or_insert(DcState::Unknown);
                    if vote.fresh && !vote.ignored {
                        if vote.up {
                            *seen = DcState::Up;
                        } else if *seen == DcState::Unknown {
                            *seen = DcState::Down;
                        }
                    }
                }
            }
            let state = match (drained, any_up) {
                (true, _) => DcState::Drained,
                (false, true) => DcState::Up,
                (false, false) => DcState::Down,
            };
            if drained {
                // A drain holds everywhere: no region sends clients there.
                regions.values_mut().for_each(|s| *s = DcState::Drained);
            }
            let key = (zone_name.clone(), service.clone(), dc.clone());
            let total = answers(&key.0, &key.1, &key.2);
            let before = previous.get(&key).copied().unwrap_or(0);
            let since = if total >= before {
                total - before
            } else {
                total
            };
            totals.insert(key, total);
            dcs.push(DcSample {
                dc,
                state,
                regions,
                answers: since,
            });
        }
        services.push(ServiceSample {
            zone: zone_name,
            service,
            dcs,
        });
    }
    (Sample { at_ms, services }, totals)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::zone;

    const ZONE: &str = "
zone: a.example
soa: { primary: ns1, contact: hostmaster.a.example }
nameservers: { ns1: [192.0.2.53] }
datacenters:
  fra: { location: [50.1, 8.7] }
  iad: { location: [38.9, -77.0] }
records:
  www:
    service:
      endpoints: { fra: [192.0.2.1], iad: [192.0.2.2] }
";

    /// Two DCs with locations and one service over them; the status pictures' tests use it too.
    pub(crate) fn zones() -> ZoneSet {
        ZoneSet {
            zones: vec![Arc::new(
                zone::file::parse_zone(ZONE, "t.yaml").expect("a valid zone"),
            )],
        }
    }

    #[test]
    fn samples_count_the_answers_since_the_one_before_and_the_ring_keeps_an_hour() {
        let zones = zones();
        let health = EffectiveHealth::default();
        let timeline = Timeline::default();
        let counts = std::cell::Cell::new((5u64, 0u64));
        let answers = |_: &Arc<str>, _: &Arc<str>, dc: &Arc<str>| -> u64 {
            let (fra, iad) = counts.get();
            if &**dc == "fra" { fra } else { iad }
        };
        timeline.record(&zones, &health, &answers, 1_000);
        counts.set((7, 4));
        timeline.record(&zones, &health, &answers, 11_000);
        let s = timeline.samples();
        assert_eq!(s.len(), 2);
        let dcs = |i: usize| -> Vec<(String, DcState, u64)> {
            s[i].services[0]
                .dcs
                .iter()
                .map(|d| (d.dc.to_string(), d.state, d.answers))
                .collect()
        };
        assert_eq!(
            dcs(0),
            [
                ("fra".into(), DcState::Up, 5),
                ("iad".into(), DcState::Up, 0)
            ]
        );
        assert_eq!(
            dcs(1),
            [
                ("fra".into(), DcState::Up, 2),
                ("iad".into(), DcState::Up, 4)
            ]
        );
        for i in 0..CAPACITY + 5 {
            timeline.record(&zones, &health, &answers, 20_000 + i as u64);
        }
        let s = timeline.samples();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s[0].at_ms, 20_005, "the oldest samples went first");
    }

    #[test]
    fn a_drained_dc_is_drained_as_a_whole() {
        let zones = zones();
        let mut drains = crate::health::drain::DrainSet::default();
        drains.apply(crate::health::drain::Drain {
            dc: "fra".into(),
            service: None,
            reason: String::new(),
            active: true,
            expires_ms: None,
            issued_ms: 1,
            issued_by: "n1".into(),
        });
        let health = EffectiveHealth::new(true, [], Default::default(), drains, 2);
        let (s, _) = sample(&zones, &health, &|_, _, _| 0, &HashMap::new(), 3);
        let states: Vec<DcState> = s.services[0].dcs.iter().map(|d| d.state).collect();
        assert_eq!(states, [DcState::Drained, DcState::Up]);
    }
}
