//! Integration tests: the real `steerdns` binary on loopback, queried with hand-built DNS
//! messages over UDP and TCP (issue 2). One binary, so it is built and linked once.
//!
//! - `header`: flags, ID, question echo, opcodes, FORMERR and REFUSED;
//! - `answers`: record data, services, CNAMEs, negative answers, referrals, ANY;
//! - `edns`: OPT handling, payload sizes, BADVERS, unknown options;
//! - `transport`: truncation, TCP framing and pipelining, zone transfers;
//! - `malformed`: garbage over UDP and TCP crashes nothing;
//! - `zone_check`: `steerdns check` and `serve` on broken and shipped zones;
//! - `regions`: three nodes as regions sharing health, drains and authentication (issue 5).

mod answers;
mod edns;
mod header;
mod malformed;
mod regions;
mod support;
mod transport;
mod zone_check;
