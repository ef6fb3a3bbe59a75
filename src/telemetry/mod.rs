//! What the node records about itself for the operator: metrics (every name and label) and
//! the last events. Leaves of the data flow: every wing writes to them, they read no wing.

pub mod events;
pub mod metrics;
