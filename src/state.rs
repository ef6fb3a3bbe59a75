//! The live snapshots the query path reads without locks. Everything that changes state builds a
//! new value aside and swaps it in whole, through `swap_zones` and `store_health`, which also
//! tell the tasks that follow them (`changes`): those wait on a watch channel, so they hear of
//! every change at once and never poll or compare pointers (an address can be reused after a
//! free).

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use std::sync::Arc;

use crate::geo::GeoDb;
use crate::health::merge::EffectiveHealth;
use crate::health::timeline::Timeline;
use crate::telemetry::events::EventLog;
use crate::telemetry::metrics::Metrics;
use crate::zone::ZoneSet;

/// What a node serves right now.
pub struct Snapshots {
    pub zones: ArcSwap<ZoneSet>,
    /// The GeoIP database; without one every client is unlocated.
    pub geo: ArcSwapOption<GeoDb>,
    /// The health the answers use: every node's votes merged, drains applied.
    pub health: ArcSwap<EffectiveHealth>,
    pub metrics: Arc<Metrics>,
    /// Recent health changes, drains, reloads and peer events.
    pub events: EventLog,
    /// The last hour of each service's DCs, sampled by `app`.
    pub timeline: Timeline,
    /// How many times the zones and the health have been replaced.
    changes: watch::Sender<Changes>,
}

/// Generations of what a node serves: each swap adds one to its count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub zones: u64,
    pub health: u64,
}

impl Snapshots {
    pub fn new(zones: ZoneSet, geo: Option<GeoDb>, metrics: Arc<Metrics>) -> Snapshots {
        Snapshots {
            zones: ArcSwap::from_pointee(zones),
            geo: ArcSwapOption::from_pointee(geo),
            health: ArcSwap::from_pointee(EffectiveHealth::default()),
            metrics,
            events: EventLog::default(),
            timeline: Timeline::default(),
            changes: watch::Sender::new(Changes::default()),
        }
    }

    /// Makes `zones` the zone set served, and returns the one it replaces.
    pub fn swap_zones(&self, zones: Arc<ZoneSet>) -> Arc<ZoneSet> {
        let old = self.zones.swap(zones);
        self.changes.send_modify(|c| c.zones += 1);
        old
    }

    /// Makes `health` the health the answers use.
    pub fn store_health(&self, health: Arc<EffectiveHealth>) {
        self.health.store(health);
        self.changes.send_modify(|c| c.health += 1);
    }

    /// A receiver that wakes on every later `swap_zones` and `store_health`.
    pub fn changes(&self) -> watch::Receiver<Changes> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_swap_wakes_the_watchers_and_says_what_changed() {
        let s = Snapshots::new(ZoneSet::default(), None, Arc::new(Metrics::new()));
        let mut rx = s.changes();
        assert!(!rx.has_changed().unwrap());
        s.swap_zones(Arc::new(ZoneSet::default()));
        rx.changed().await.unwrap();
        assert_eq!(
            *rx.borrow_and_update(),
            Changes {
                zones: 1,
                health: 0
            }
        );
        s.store_health(Arc::new(EffectiveHealth::default()));
        s.store_health(Arc::new(EffectiveHealth::default()));
        rx.changed().await.unwrap();
        assert_eq!(
            *rx.borrow_and_update(),
            Changes {
                zones: 1,
                health: 2
            }
        );
        assert!(!rx.has_changed().unwrap());
    }
}
