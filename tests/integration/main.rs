//! Integration tests: the real `steerdns` binary on loopback, queried with hand-built DNS
//! messages over UDP and TCP (issues 2 to 6). One binary, so it is built and linked once.
//!
//! - `header`: flags, ID, question echo, opcodes, FORMERR and REFUSED;
//! - `answers`: record data, services, CNAMEs, negative answers, referrals, ANY;
//! - `edns`: OPT handling, payload sizes, BADVERS, unknown options;
//! - `transport`: truncation, TCP framing and pipelining, zone transfers;
//! - `malformed`: garbage over UDP and TCP crashes nothing;
//! - `zone_check`: `steerdns check` and `serve` on broken and shipped zones;
//! - `geo`: ECS and the resolver's address place the client, routing policies, GeoIP swaps (issue 3);
//! - `health`: real HTTP(S)/TCP backends on loopback taken out and brought back (issue 4).
//! - `ops`: reload under load, the admin API and its token, metric values, the status page in
//!   Chromium, the compose file, the CLI against a node, JSON logs (issue 6; helpers in
//!   `ops_support`).
//! - `faults`: faults one after another under a steady load, no query lost (issue 8);
//! - `regions`: three nodes as regions sharing health, drains and authentication (issue 5).
//! - `failover_timing`: three nodes with default-like timing: how fast a refused, failing or
//!   hung DC leaves every node's answers and comes back, a drain takes effect, and that one
//!   failed probe withdraws nothing (issue 13; helpers in `regions_support`).
//! - `abuse`: response rate limiting and the TCP limits (issue 8; helpers in `abuse_support`).
//! - `listen`: several DNS listen addresses, IPv4 and IPv6, and one that cannot be bound
//!   (issue 12);
//! - `resolver_traffic`: resolvers asking for thousands of ECS client networks get whole
//!   answers, reflection floods get fewer bytes than they send, RRL exemptions (issue 12;
//!   helpers in `support` and `abuse_support`).
//! - `import`: `steerdns import bind` and `import octodns` run, served and asked name by name
//!   against the source, the octoDNS pools' fallbacks through real backends; `--strict` and
//!   bad input (issue 17);
//! - `dnssec`: online signing validated by delv and Unbound on loopback: answers, compact
//!   denial, ECS, tampering, health changes, reloads, bad keys, a key rollover (issue 15;
//!   helpers in `dnssec_support`).
//! - `monitoring`: the alert rules pass promtool and their unit tests, the Grafana dashboard's
//!   queries parse, and every metric and label both use is in a running node's `/metrics`
//!   (issue 17);
//! - `packaging`: what the Debian package's unit relies on: READY=1 to systemd once DNS
//!   answers, and the shipped node file (issue 17; the package itself: packaging/test-deb.sh);
//! - `steering`: the recovery ramp and the `latency` policy on three nodes (issue 16; helpers
//!   in `regions_support`).
//! - `tls`: HTTPS on the admin/peer listener, peers over https://, the CLI's `--ca-file`,
//!   certificate reloads and bad TLS settings (issue 8; helpers in `support` and
//!   `regions_support`).

mod abuse;
mod abuse_support;
mod answers;
mod dnssec;
mod dnssec_support;
mod edns;
mod failover_timing;
mod faults;
mod geo;
mod header;
mod health;
mod import;
mod listen;
mod malformed;
mod monitoring;
mod ops;
mod ops_support;
mod packaging;
mod regions;
mod regions_support;
mod resolver_traffic;
mod steering;
mod support;
mod tls;
mod transport;
mod zone_check;
