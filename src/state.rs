//! The live snapshots the query path reads without locks. Everything that changes state builds a
//! new value aside and swaps it in whole.

use arc_swap::ArcSwap;

use crate::model::ZoneSet;

/// What a node serves right now.
pub struct Snapshots {
    pub zones: ArcSwap<ZoneSet>,
}

impl Snapshots {
    pub fn new(zones: ZoneSet) -> Snapshots {
        Snapshots {
            zones: ArcSwap::from_pointee(zones),
        }
    }
}
