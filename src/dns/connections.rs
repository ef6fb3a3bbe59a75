//! The table of open DNS TCP connections: how many there are in all and per client, which of
//! them are idle, and which one to close to make room for a new connection. RFC 7766 section
//! 6.2.3: a server under pressure should close idle connections rather than refuse new ones, so
//! a full table closes its longest-idle connection (the client's own, for the per-client limit)
//! and refuses only when every connection concerned is busy with a message. Plain synchronous
//! code; `tcp.rs` keeps the table in a mutex and does the I/O.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::TcpLimits;

/// The limit that made room for a connection, or refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Global,
    PerClient,
}

impl Limit {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::Global => "global",
            Limit::PerClient => "per_client",
        }
    }
}

/// One open connection, shared by the table and the connection's task. The task says when it is
/// idle through an atomic of its own, not through the table's lock: that happens twice per
/// message, while the table is only read when it is full.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    client: IpAddr,
    /// The table's epoch, to turn `idle_since` into a number.
    epoch: Instant,
    /// Nanoseconds from `epoch` to when the connection began waiting for the first byte of its
    /// next message, plus one; 0 while it is busy (receiving a message, answering, writing).
    idle_since: AtomicU64,
    /// Cancelled when the table closes the connection to make room.
    evicted: CancellationToken,
}

impl Tracked {
    /// The connection waits, since `since`, for its next message with nothing left to write.
    pub fn set_idle(&self, since: Instant) {
        let nanos = since.saturating_duration_since(self.epoch).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.idle_since.store(stamp, Ordering::Relaxed);
    }

    /// The first byte of a message has arrived.
    pub fn set_busy(&self) {
        self.idle_since.store(0, Ordering::Relaxed);
    }

    /// Since when the connection has been idle, as a number that orders like the time; `None`
    /// while it is busy.
    fn idle_stamp(&self) -> Option<u64> {
        match self.idle_since.load(Ordering::Relaxed) {
            0 => None,
            stamp => Some(stamp),
        }
    }

    /// Cancelled once the table has closed this connection to make room for another.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

/// What became of a new connection.
#[derive(Debug)]
pub enum Admission {
    /// In, after closing `evicted` (and which limit was full) if there was no room.
    Admitted {
        conn: Arc<Tracked>,
        evicted: Option<(Arc<Tracked>, Limit)>,
    },
    /// Not in: the limit is full and none of the connections it counts is idle.
    Refused(Limit),
}

/// Connections open now.
#[derive(Debug)]
pub struct ConnectionTable {
    epoch: Instant,
    next_id: u64,
    open: FxHashMap<u64, Arc<Tracked>>,
    per_client: FxHashMap<IpAddr, usize>,
}

impl Default for ConnectionTable {
    fn default() -> ConnectionTable {
        ConnectionTable {
            epoch: Instant::now(),
            next_id: 0,
            open: FxHashMap::default(),
            per_client: FxHashMap::default(),
        }
    }
}

impl ConnectionTable {
    /// Takes in a connection from `ip` under `limits`, closing the longest-idle connection of
    /// a full limit: the client's own for `max_connections_per_client`, anyone's for
    /// `max_connections`. A connection that is closed leaves the table at once (its task ends
    /// moments later), so the count stays within the limits.
    pub fn admit(&mut self, ip: IpAddr, limits: &TcpLimits) -> Admission {
        let client = client_key(ip);
        let mut evicted = None;
        if let Some(cap) = limits.max_connections_per_client
            && self.per_client.get(&client).copied().unwrap_or(0) >= cap
        {
            match self.longest_idle(Some(client)) {
                Some(victim) => evicted = Some((self.evict(victim), Limit::PerClient)),
                None => return Admission::Refused(Limit::PerClient),
            }
        }
        // Room made for the client is room in the total too.
        if self.open.len() >= limits.max_connections {
            match self.longest_idle(None) {
                Some(victim) => evicted = Some((self.evict(victim), Limit::Global)),
                None => return Admission::Refused(Limit::Global),
            }
        }
        let conn = Arc::new(Tracked {
            id: self.next_id,
            client,
            epoch: self.epoch,
            idle_since: AtomicU64::new(0),
            evicted: CancellationToken::new(),
        });
        self.next_id += 1;
        self.open.insert(conn.id, conn.clone());
        *self.per_client.entry(client).or_insert(0) += 1;
        Admission::Admitted { conn, evicted }
    }

    /// Forgets a connection that has ended (nothing to do if it was evicted).
    pub fn release(&mut self, conn: &Tracked) {
        if self.open.remove(&conn.id).is_some() {
            self.uncount(conn.client);
        }
    }

    /// Connections in the table.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }

    /// The id of the connection idle the longest, among `client`'s or everyone's; the older
    /// connection on a tie.
    fn longest_idle(&self, client: Option<IpAddr>) -> Option<u64> {
        self.open
            .values()
            .filter(|c| client.is_none_or(|ip| c.client == ip))
            .filter_map(|c| Some((c.idle_stamp()?, c.id)))
            .min()
            .map(|(_, id)| id)
    }

    /// Takes a connection out of the table and tells its task to close it.
    fn evict(&mut self, id: u64) -> Arc<Tracked> {
        let victim = self
            .open
            .remove(&id)
            .expect("the victim was just found in the table");
        self.uncount(victim.client);
        victim.evicted.cancel();
        victim
    }

    fn uncount(&mut self, client: IpAddr) {
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

/// What counts as one client: an IPv4 address, or the /64 of an IPv6 one (one host commonly
/// holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn clients_are_addresses_or_ipv6_64s() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::"));
    }

    fn limits(total: usize, per_client: Option<usize>) -> TcpLimits {
        TcpLimits {
            max_connections: total,
            max_connections_per_client: per_client,
            ..TcpLimits::default()
        }
    }

    /// Admits a connection from `ip`, which must get in without closing another.
    fn take(table: &mut ConnectionTable, ip: &str, limits: &TcpLimits) -> Arc<Tracked> {
        match table.admit(ip.parse().unwrap(), limits) {
            Admission::Admitted {
                conn,
                evicted: None,
            } => conn,
            other => panic!("{ip}: {other:?}"),
        }
    }

    /// Admits a connection from `ip` into a full table: the id of the connection closed for it
    /// and the limit that was full, or the limit that refused it.
    fn outcome(
        table: &mut ConnectionTable,
        ip: &str,
        limits: &TcpLimits,
    ) -> Result<(u64, Limit), Limit> {
        match table.admit(ip.parse().unwrap(), limits) {
            Admission::Admitted {
                evicted: Some((victim, limit)),
                ..
            } => {
                assert!(victim.evicted().is_cancelled());
                Ok((victim.id, limit))
            }
            Admission::Admitted { evicted: None, .. } => panic!("{ip}: admitted with room"),
            Admission::Refused(limit) => Err(limit),
        }
    }

    #[test]
    fn a_full_table_closes_the_longest_idle_connection() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Ids are 0, 1, 2, ... in order of admission.
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &str,
            Option<usize>,
            &[(&str, Option<u64>)],
            &str,
            Result<(u64, Limit), Limit>,
        )] = &[
            (
                "global: the longest idle, not the oldest connection",
                None,
                &[
                    ("192.0.2.1", Some(5)),
                    ("192.0.2.2", Some(3)),
                    ("192.0.2.3", Some(4)),
                ],
                "192.0.2.9",
                Ok((1, Limit::Global)),
            ),
            (
                "global: busy connections are passed over",
                None,
                &[
                    ("192.0.2.1", None),
                    ("192.0.2.2", Some(7)),
                    ("192.0.2.3", None),
                ],
                "192.0.2.9",
                Ok((1, Limit::Global)),
            ),
            (
                "global: a tie goes to the older connection",
                None,
                &[
                    ("192.0.2.1", None),
                    ("192.0.2.2", Some(2)),
                    ("192.0.2.3", Some(2)),
                ],
                "192.0.2.2",
                Ok((1, Limit::Global)),
            ),
            (
                "global: all busy",
                None,
                &[
                    ("192.0.2.1", None),
                    ("192.0.2.2", None),
                    ("192.0.2.3", None),
                ],
                "192.0.2.9",
                Err(Limit::Global),
            ),
            (
                "per client: the client's own longest idle, though another's is older",
                Some(2),
                &[
                    ("192.0.2.1", Some(1)),
                    ("192.0.2.2", Some(3)),
                    ("192.0.2.2", Some(2)),
                ],
                "192.0.2.2",
                Ok((2, Limit::PerClient)),
            ),
            (
                "per client: the client's own are all busy, another's idle does not help",
                Some(2),
                &[
                    ("192.0.2.1", Some(1)),
                    ("192.0.2.2", None),
                    ("192.0.2.2", None),
                ],
                "192.0.2.2",
                Err(Limit::PerClient),
            ),
            (
                "per client: an IPv6 /64 is one client",
                Some(2),
                &[
                    ("2001:db8::1", Some(4)),
                    ("2001:db8::2", Some(6)),
                    ("192.0.2.1", Some(1)),
                ],
                "2001:db8::3",
                Ok((0, Limit::PerClient)),
            ),
        ];
        for (what, per_client, conns, newcomer, expected) in cases {
            let limits = limits(3, *per_client);
            let mut table = ConnectionTable::default();
            let tracked: Vec<_> = conns
                .iter()
                .map(|(ip, idle)| {
                    let c = take(&mut table, ip, &limits);
                    if let Some(s) = idle {
                        c.set_idle(at(*s));
                    }
                    c
                })
                .collect();
            assert_eq!(&outcome(&mut table, newcomer, &limits), expected, "{what}");
            match expected {
                Ok(_) => assert_eq!(table.len(), 3, "{what}"),
                Err(_) => assert!(
                    tracked.iter().all(|c| !c.evicted().is_cancelled()),
                    "{what}"
                ),
            }
        }
    }

    #[test]
    fn an_evicted_or_ended_connection_gives_its_place_back_once() {
        let limits = limits(3, Some(2));
        let mut table = ConnectionTable::default();
        let a1 = take(&mut table, "192.0.2.1", &limits);
        let a2 = take(&mut table, "192.0.2.1", &limits);
        let b1 = take(&mut table, "192.0.2.2", &limits);
        a1.set_idle(Instant::now());
        // a1 makes room for a third from the same client; the total stays three.
        assert_eq!(
            outcome(&mut table, "192.0.2.1", &limits),
            Ok((0, Limit::PerClient))
        );
        assert_eq!(table.len(), 3);
        // a1's task ends later: nothing more is given back.
        table.release(&a1);
        assert_eq!(table.len(), 3);
        assert_eq!(
            outcome(&mut table, "192.0.2.1", &limits),
            Err(Limit::PerClient)
        );
        // b1 ends: room for another client, none for 192.0.2.1 (still two, both busy).
        table.release(&b1);
        take(&mut table, "192.0.2.3", &limits);
        assert_eq!(
            outcome(&mut table, "192.0.2.4", &limits),
            Err(Limit::Global)
        );
        // An idle connection becomes busy again: no longer a candidate.
        a2.set_idle(Instant::now());
        a2.set_busy();
        assert_eq!(
            outcome(&mut table, "192.0.2.4", &limits),
            Err(Limit::Global)
        );
        table.release(&a2);
        assert_eq!(
            table
                .per_client
                .get(&client_key("192.0.2.1".parse().unwrap())),
            Some(&1)
        );
    }

    #[test]
    fn without_a_per_client_cap_one_client_may_fill_the_table() {
        let limits = limits(50, None);
        let mut table = ConnectionTable::default();
        for _ in 0..50 {
            take(&mut table, "192.0.2.1", &limits);
        }
        assert_eq!(
            outcome(&mut table, "192.0.2.1", &limits),
            Err(Limit::Global)
        );
    }
}
