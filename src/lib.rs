//! steerdns: a multi-region, DNS-based global failover service.
//!
//! The tree follows the data flow: each wing (a folder, or a file for the small ones) imports
//! only the wings before it in this list, never one after it (`tests/layout.rs` checks that the
//! imports between wings and between files have no cycle).
//!
//! - leaves everyone may use: `clock` (wall-clock time in Unix milliseconds, the one source),
//!   `files` (atomic writes), `rrl` (response rate limiting: token buckets per client network,
//!   pure), `telemetry/` (`metrics`: every metric name and label; `events`: the last 100 health
//!   changes, drains, reloads and peer events), `tls` (HTTPS on the admin/peer listener and the
//!   CA roots for peers), `geo` (IP address → location from MaxMind-format databases, cached per
//!   network);
//! - `zone/`: what the operator wrote, validated: the model (`mod`: zones, records, services,
//!   DCs), `name` (domain names), `check` (health check definitions), `file` (zone YAML →
//!   `ZoneSet`, every error with file, record and field), `key` (DNSSEC key files: generate,
//!   read, check, sign);
//! - `import/`: another tool's zone → zone YAML, once and offline: `bind` (RFC 1035 master
//!   files), `octodns` (octoDNS YAML, dynamic records as services), `mod` (what both share: the
//!   static records → `Draft`, written and loaded back through `zone::file` before it is handed
//!   out), what it cannot express listed as warnings;
//! - `health/`: what the probes and the regions say: rise/fall per target and the local
//!   `HealthView` (`mod`), `probe` (HTTP(S)/TCP checks, one task per target), `merge` (every
//!   node's votes → effective status: quorum, staleness, isolation, restore times), `tally` (the
//!   same merge kept up to date, judging again only what changed), `latency` (every region's
//!   RTTs → the latency policy's DC orders, with hysteresis), `drain` (manual failover, last
//!   writer wins, persisted), `timeline` (the last hour of each service's DCs);
//! - `state`: the live snapshots the query path reads without locks, and their change channel;
//! - `dnssec/`: online signing for signed zones: `mod` (what a DO=1 answer gains: RRSIGs, the
//!   apex's DNSKEY/CDS/CDNSKEY), `sign` (canonical RRsets, RRSIGs, the signature cache keyed by
//!   RRset content), `denial` (compact denial, RFC 9824: one NSEC per negative answer);
//! - `cluster/`: the exchange between nodes: `auth` (signing, replay window, long-poll terms),
//!   `book` (reports, drains, peers), `policy` (drain requests → decisions), `news` (logs and
//!   events), `transport` (the `Transport` trait, over HTTP), `memory` (an in-process network
//!   with faults, for tests), `sim` (hidden: many simulated nodes), `mod` (the `Cluster` handle
//!   and its tasks);
//! - `dns/`: the query path: `answer` (choose the records: pure, synchronous), `mod` (the
//!   handler: decode, answer, encode, RRL), `wire` (the lean codec), `udp` (batched UDP), `tcp`
//!   and `connections` (TCP with its limits), `limit` (RRL on the UDP path);
//! - `ops/`: the operator's side: `admin` (the HTTP API and the peers' exchange endpoint, the
//!   only axum user), `status` (the state document and the status page, its SVG pictures in
//!   `status/pictures`);
//! - the edge: `config` (node settings from a file and flags), `demo` (three regions on
//!   loopback), `app` (wiring, signals, reloads, task lifecycle), and `main` (the CLI);
//! - `fuzzing` (behind the `fuzzing` feature, hidden): the properties the fuzz targets and their
//!   regression test check.
//!
//! Data flow:
//! ```text
//! BIND / octoDNS zone --import--> zones/*.yaml (once, offline; checked with zone::file)
//! zones/*.yaml --zone_file--> ZoneSet ----------------------swap-----------+
//! geoip/*.mmdb --geo--------> GeoDb ------------------------swap-----------+--> state::Snapshots
//! probe --> HealthView -------------------+                                |        |
//! peers --transport--> Exchange --absorb--+--cluster::book--merge-->       |        |
//! admin --policy--> drains ---------------+     EffectiveHealth ---swap----+        |
//! peers' pulls <--serve_exchange (auth, hold)-- book                                v
//! DNS request --dns--> (name, type, client) --answer()--> Answer --dns--> response
//!                                                   (DO=1, signed zone) --dnssec--^
//! ```

pub mod app;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dns;
pub mod dnssec;
pub mod files;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod geo;
pub mod health;
pub mod import;
pub mod ops;
pub mod rrl;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod zone;
