//! steerdns: a multi-region, DNS-based global failover service.
//!
//! Each module has one job:
//! - `model`: validated domain types (zones, records, services, data centers);
//! - `zone_file`: zone YAML → validated `ZoneSet`, every error with file, record and field;
//! - `config`: node settings from a node config file and flags;
//! - `check`: health check definitions (HTTP, HTTPS, TCP; timing, thresholds) and their YAML form;
//! - `health`: probe results → per-endpoint rise/fall status, readiness, the `HealthView` snapshot;
//! - `probe`: run HTTP(S)/TCP checks, one prober task per target, and publish the `HealthView`;
//! - `answer`: choose the records for a query (pure, synchronous);
//! - `state`: the live snapshots the query path reads without locks;
//! - `dns`: speak DNS through hickory-server (the only user of hickory-server);
//! - `app`: wiring, signals, task lifecycle;
//! - `fuzzing` (hidden): the properties the fuzz targets and their regression test check.
//!
//! Data flow:
//! ```text
//! zones/*.yaml --zone_file--> ZoneSet --swap--> state::Snapshots
//!                                                     |
//! DNS request --dns--> (name, type) --answer()--> Answer --dns--> response
//! ```

pub mod admin;
pub mod answer;
pub mod app;
pub mod check;
pub mod config;
pub mod demo;
pub mod dns;
pub mod drain;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod geo;
pub mod health;
pub mod merge;
pub mod metrics;
pub mod model;
pub mod peers;
pub mod probe;
pub mod state;
pub mod status;
pub mod zone_file;
