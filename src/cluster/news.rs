//! What the cluster tells the operator: the log lines and the events (status page, state API)
//! of changed verdicts, the isolation guard, drains issued or learnt, and peers lost, regained or
//! refused. Their wording lives here, so the code that decides never formats text.

use tracing::{debug, info, warn};

use super::auth::AuthError;
use super::book::VerdictChange;
use crate::health::drain::Drain;
use crate::telemetry::events::EventLog;

fn scope(d: &Drain) -> &str {
    d.service.as_deref().unwrap_or("all services")
}

pub fn verdict_changed(events: &EventLog, c: &VerdictChange) {
    info!(
        endpoint = %c.key.addr, check = %c.key.check, up = c.up,
        down_votes = c.down_votes, counted_votes = c.counted_votes,
        "effective health changed"
    );
    events.push(
        "health",
        format!(
            "{} ({}) is {}: {} of {} votes down",
            c.key.addr,
            c.key.check,
            if c.up { "up" } else { "DOWN" },
            c.down_votes,
            c.counted_votes
        ),
    );
}

/// The isolation guard now ignores `isolated` (maybe nobody).
pub fn isolation_changed(events: &EventLog, me: &str, isolated: &[String]) {
    if isolated.iter().any(|n| n == me) {
        warn!(node = %me, "this node sees every endpoint down while its peers see them up: it is probably cut off, and its votes are ignored");
    }
    if !isolated.is_empty() {
        warn!(isolated = ?isolated, "isolation guard: ignoring the votes of nodes that see everything down");
    }
    events.push(
        "isolation",
        if isolated.is_empty() {
            "isolation guard: no node isolated".to_string()
        } else {
            format!(
                "isolation guard: ignoring the votes of {}",
                isolated.join(", ")
            )
        },
    );
}

pub fn drained(events: &EventLog, d: &Drain, forced: bool) {
    info!(dc = %d.dc, service = ?d.service, reason = %d.reason, expires_ms = ?d.expires_ms, forced, "drained");
    events.push(
        "drain",
        format!(
            "drained {} ({}) on {}: {}",
            d.dc,
            scope(d),
            d.issued_by,
            d.reason
        ),
    );
}

pub fn undrained(events: &EventLog, d: &Drain) {
    info!(dc = %d.dc, service = ?d.service, "undrained");
    events.push(
        "drain",
        format!("undrained {} ({}) on {}", d.dc, scope(d), d.issued_by),
    );
}

pub fn drain_learnt(events: &EventLog, d: &Drain, from: &str) {
    info!(dc = %d.dc, service = ?d.service, active = d.active, by = %d.issued_by, from = %from, "drain learnt from a peer");
    events.push(
        "drain",
        format!(
            "{} {} ({}) by {}, learnt from {}",
            if d.active { "drain of" } else { "undrain of" },
            d.dc,
            scope(d),
            d.issued_by,
            from
        ),
    );
}

pub fn peer_reachable(events: &EventLog, url: &str, node: &str) {
    info!(peer = %url, node = %node, "peer reachable");
    events.push("peer", format!("peer {url} ({node}) reachable"));
}

/// A failed exchange: an event for the first in a row, a debug line for the rest.
pub fn peer_failed(events: &EventLog, url: &str, error: &str, first: bool) {
    if first {
        warn!(peer = %url, error = %error, "peer lost");
        events.push("peer", format!("peer {url} lost: {error}"));
    } else {
        debug!(peer = %url, error = %error, "peer still unreachable");
    }
}

pub fn request_refused(node: Option<&str>, reason: AuthError) {
    warn!(peer = node.unwrap_or("?"), reason = %reason, "peer request refused");
}
