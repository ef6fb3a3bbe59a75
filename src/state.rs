//! The live snapshots the query path reads without locks. Everything that changes state builds a
//! new value aside and swaps it in whole.

use arc_swap::{ArcSwap, ArcSwapOption};

use std::sync::Arc;

use crate::events::EventLog;
use crate::geo::GeoDb;
use crate::merge::EffectiveHealth;
use crate::metrics::Metrics;
use crate::model::ZoneSet;

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
}

impl Snapshots {
    pub fn new(zones: ZoneSet, geo: Option<GeoDb>, metrics: Arc<Metrics>) -> Snapshots {
        Snapshots {
            zones: ArcSwap::from_pointee(zones),
            geo: ArcSwapOption::from_pointee(geo),
            health: ArcSwap::from_pointee(EffectiveHealth::default()),
            metrics,
            events: EventLog::default(),
        }
    }
}
