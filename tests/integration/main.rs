//! Integration tests: the real `steerdns` binary on loopback, queried with hand-built DNS
//! messages over UDP and TCP (issue 2). One binary, so it is built and linked once.
//!
//! - `header`: flags, ID, question echo, opcodes, FORMERR and REFUSED;
//! - `answers`: record data, services, CNAMEs, negative answers, referrals, ANY;
//! - `edns`: OPT handling, payload sizes, BADVERS, unknown options;
//! - `transport`: truncation, TCP framing and pipelining, zone transfers;
//! - `malformed`: garbage over UDP and TCP crashes nothing;
//! - `zone_check`: `steerdns check` and `serve` on broken and shipped zones;
//! - `ops`: reload under load, the admin API and its token, metric values, the status page in
//!   Chromium, the compose file, the CLI against a node, JSON logs (issue 6; helpers in
//!   `ops_support`).

mod answers;
mod edns;
mod header;
mod malformed;
mod ops;
mod ops_support;
mod support;
mod transport;
mod zone_check;
