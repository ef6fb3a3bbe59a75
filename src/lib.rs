//! steerdns: a multi-region, DNS-based global failover service.
//!
//! Each module has one job:
//! - `model`: validated domain types (zones, records, services, data centers);
//! - `zone_file`: zone YAML → validated `ZoneSet`, every error with file, record and field;
//! - `config`: node settings from a node config file and flags (secrets from files/environment);
//! - `geo`: IP address → location from MaxMind-format databases, cached per network;
//! - `check`: health check definitions (HTTP, HTTPS, TCP; timing, thresholds) and their YAML form;
//! - `health`: probe results → per-endpoint rise/fall status and when to probe next, readiness,
//!   the local `HealthView`;
//! - `probe`: run HTTP(S)/TCP checks, one prober task per target, and publish the `HealthView`;
//! - `merge`: every node's votes → effective status per endpoint (quorum, staleness, isolation);
//! - `drain`: manual failover decisions, last writer wins, persisted atomically;
//! - `cluster/`: the exchange between nodes and the merged view it publishes: `auth` (signing,
//!   replay window, nonces, long-poll terms), `book` (reports, drains, peers: plain sync
//!   bookkeeping), `policy` (drain requests → decisions), `news` (its logs and events),
//!   `transport` (the `Transport` trait, over HTTP), `memory` (an in-process network with
//!   faults, for tests), `sim` (hidden: many simulated nodes on it, for the traffic test and the
//!   scale bench), `mod` (the `Cluster` handle and its tasks);
//! - `answer`: choose the records for a query (pure, synchronous);
//! - `state`: the live snapshots the query path reads without locks;
//! - `dns`: speak DNS on every listen address: the lean codec, batched UDP and our TCP server
//!   with its limits (hickory for the rest);
//! - `rrl`: response rate limiting: token buckets per client network and response (pure);
//! - `admin`: the operator's HTTP API and the peers' exchange endpoint, which hands each request
//!   to `Cluster::serve_exchange` (the only axum user);
//! - `tls`: optional HTTPS on the admin/peer listener (certificate reloads, handshakes) and the
//!   CA roots of outgoing HTTPS to peers;
//! - `timeline`: the last hour of each service's DCs (state per region, answers sent), sampled
//!   into a ring buffer for the status page's pictures (plain sync data);
//! - `status`: the state document and the HTML status page (its SVG timeline and map in
//!   `status/pictures`, the tables below);
//! - `metrics`: every metric name and label;
//! - `events`: the last 100 health changes, drains, reloads and peer events;
//! - `clock`: wall-clock time in Unix milliseconds, as nodes stamp and compare it (a leaf);
//! - `demo`: the three-region demo on loopback;
//! - `app`: wiring, signals, reloads, task lifecycle;
//! - `fuzzing` (hidden): the properties the fuzz targets and their regression test check.
//!
//! Data flow:
//! ```text
//! zones/*.yaml --zone_file--> ZoneSet ----------------------swap-----------+
//! geoip/*.mmdb --geo--------> GeoDb ------------------------swap-----------+--> state::Snapshots
//! probe --> HealthView -------------------+                                |        |
//! peers --transport--> Exchange --absorb--+--cluster::book--merge-->       |        |
//! admin --policy--> drains ---------------+     EffectiveHealth ---swap----+        |
//! peers' pulls <--serve_exchange (auth, hold)-- book                                v
//! DNS request --dns--> (name, type, client) --answer()--> Answer --dns--> response
//! ```

pub mod admin;
pub mod answer;
pub mod app;
pub mod check;
pub mod clock;
pub mod cluster;
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
pub mod probe;
pub mod rrl;
pub mod state;
pub mod status;
pub mod timeline;
pub mod tls;
pub mod zone_file;
