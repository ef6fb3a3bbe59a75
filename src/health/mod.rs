//! Endpoint health as plain, synchronous data: the rise/fall state machine of one probe target,
//! the table of every target with readiness and counters, and the immutable `HealthView` the
//! query path reads. Probing itself (I/O, timers) lives in `probe`, which feeds results in here.

pub mod drain;
pub mod latency;
pub mod merge;
pub mod probe;
pub mod tally;
pub mod timeline;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::zone::check::Check;

/// What one prober probes: one address with one check. Services that share an address and an
/// identical check share a target, and so share its probes and its health. Equal and hashed by
/// value, so a reloaded zone that repeats a target maps onto the running one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeTarget {
    pub addr: IpAddr,
    pub check: Arc<Check>,
}

impl ProbeTarget {
    pub fn new(addr: IpAddr, check: Arc<Check>) -> ProbeTarget {
        ProbeTarget { addr, check }
    }
}

/// `192.0.2.1 https://api.example.com:443/healthz`
impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.addr, self.check)
    }
}

/// How much of each new round-trip time goes into the smoothed one (EWMA weight): about the
/// last five probes count, so one slow probe moves it by a third of its excess, and a lasting
/// change shows within a few intervals.
pub const RTT_SMOOTHING: f64 = 0.3;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    /// A failure: from the start of the probe to its verdict. A success: the round trip the
    /// latency policy steers by, from the start to the TCP connection (TCP checks) or to the
    /// response's first byte, its status line (HTTP checks); a body check's read comes after.
    pub rtt: Duration,
    /// Why the probe failed; `None` when it passed.
    pub error: Option<String>,
    /// The probe was cut off by the check's timeout (a failure, counted apart in metrics).
    pub timed_out: bool,
}

impl ProbeResult {
    pub fn success(rtt: Duration) -> ProbeResult {
        ProbeResult {
            ok: true,
            rtt,
            error: None,
            timed_out: false,
        }
    }

    pub fn failure(rtt: Duration, error: impl Into<String>) -> ProbeResult {
        ProbeResult {
            ok: false,
            rtt,
            error: Some(error.into()),
            timed_out: false,
        }
    }

    pub fn timeout(after: Duration) -> ProbeResult {
        ProbeResult {
            ok: false,
            rtt: after,
            error: Some(format!("timed out after {after:?}")),
            timed_out: true,
        }
    }
}

/// Whether an endpoint should be in answers, as one node's probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Up,
    Down,
}

/// A change of status, returned by `EndpointState::record` when one happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
    pub at: Instant,
}

/// The rise/fall state machine of one probe target.
///
/// It starts Up but unconfirmed: until its first probe result the node answers as if the
/// endpoint were healthy, rather than taking everything out at start-up (PowerDNS's "everything
/// is down on the first query"). The first result confirms the state without any special rule:
/// a failing first probe starts the count towards `fall` like any later failure, so an endpoint
/// that is dead at start-up leaves the answers after `fall` probes, not after one.
///
/// While Up, `fall` consecutive failures take it Down; while Down, `rise` consecutive successes
/// bring it Up. A result of the other kind resets the count, so a pattern that never reaches a
/// threshold in a row never changes the status (hysteresis against flapping).
///
/// In between, the endpoint is *in transition*, and `next_probe_in` asks for the next probe after
/// the check's `fast_interval` rather than its `interval`, so the doubt is settled quickly either
/// way (HAProxy's `fastinter`). A settled endpoint, up or down, is probed every `interval`.
#[derive(Debug, Clone)]
pub struct EndpointState {
    fall: u32,
    rise: u32,
    status: Status,
    confirmed: bool,
    since: Instant,
    /// Consecutive results that argue against the current status: failures while Up,
    /// successes while Down.
    streak: u32,
    last_rtt: Option<Duration>,
    /// The successful probes' round-trip times, smoothed (EWMA, `RTT_SMOOTHING`).
    smoothed_rtt: Option<Duration>,
    /// `smoothed_rtt` when a view was last published (see `rtt_moved`).
    published_rtt: Option<Duration>,
    last_error: Option<String>,
    /// Probes recorded, failures included.
    pub probes_total: u64,
    /// Probes that failed, timeouts included.
    pub probes_failed: u64,
    /// Status changes so far.
    pub transitions: u64,
}

impl EndpointState {
    /// A new state, optimistically Up since `now`. `fall` and `rise` below 1 are treated as 1.
    pub fn new(fall: u32, rise: u32, now: Instant) -> EndpointState {
        EndpointState {
            fall: fall.max(1),
            rise: rise.max(1),
            status: Status::Up,
            confirmed: false,
            since: now,
            streak: 0,
            last_rtt: None,
            smoothed_rtt: None,
            published_rtt: None,
            last_error: None,
            probes_total: 0,
            probes_failed: 0,
            transitions: 0,
        }
    }

    /// A new state with the thresholds of `check`.
    pub fn for_check(check: &Check, now: Instant) -> EndpointState {
        EndpointState::new(check.fall, check.rise, now)
    }

    /// Whether the latest results argue against the status without having reached `fall` (or
    /// `rise`) in a row yet: the endpoint is being confirmed down (or up).
    pub fn in_transition(&self) -> bool {
        self.streak > 0
    }

    /// How long after the start of the probe just recorded the next probe of `check` should
    /// start: `fast_interval` while in transition, else `interval`.
    ///
    /// Start-up is not a case of its own: the first probe comes at a jittered point within one
    /// interval (spreading probes matters more than the first result), and the state then starts
    /// Up with no doubt, so a first failure is a transition like any other and a first success
    /// keeps the interval.
    pub fn next_probe_in(&self, check: &Check) -> Duration {
        if self.in_transition() {
            // `Check`'s fields are public: a hand-built one could hold a longer fast interval,
            // and doubt must never slow probing down.
            check.fast_interval.min(check.interval)
        } else {
            check.interval
        }
    }

    /// Whether a probe that is slow to answer should be confirmed by a second one started
    /// before it ends: while the endpoint is settled Up and `fall` needs more than one failure.
    /// A hung backend then reaches `fall` half a timeout after its first probe times out rather
    /// than a whole one; a healthy backend is never slow, so its probe load does not change.
    pub fn confirms_early(&self) -> bool {
        self.status == Status::Up && self.fall > 1 && !self.in_transition()
    }

    /// Feeds one probe result in; returns the transition when the status changed.
    pub fn record(&mut self, result: &ProbeResult, now: Instant) -> Option<Transition> {
        self.confirmed = true;
        self.probes_total += 1;
        if result.ok {
            self.last_rtt = Some(result.rtt);
            self.smoothed_rtt = Some(match self.smoothed_rtt {
                None => result.rtt,
                Some(s) => s.mul_f64(1.0 - RTT_SMOOTHING) + result.rtt.mul_f64(RTT_SMOOTHING),
            });
            self.last_error = None;
        } else {
            self.probes_failed += 1;
            self.last_error = Some(
                result
                    .error
                    .clone()
                    .unwrap_or_else(|| "probe failed".to_string()),
            );
        }
        let (against, threshold, next) = match self.status {
            Status::Up => (!result.ok, self.fall, Status::Down),
            Status::Down => (result.ok, self.rise, Status::Up),
        };
        if !against {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < threshold {
            return None;
        }
        let transition = Transition {
            from: self.status,
            to: next,
            at: now,
        };
        self.status = next;
        self.since = now;
        self.streak = 0;
        self.transitions += 1;
        Some(transition)
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// When the current status began (creation time for the initial, unconfirmed Up).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// False until the first probe result: the status is then only the optimistic default.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Round-trip time of the latest successful probe.
    pub fn last_rtt(&self) -> Option<Duration> {
        self.last_rtt
    }

    /// The successful probes' round-trip times, smoothed; `None` before the first success.
    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.smoothed_rtt
    }

    /// Whether the smoothed RTT moved far enough from the one last published that a view must
    /// be published for it (the view is otherwise published on status changes only): by the
    /// threshold reports are republished with, `latency::REPUBLISH_MOVE`.
    pub fn rtt_moved(&self) -> bool {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match (self.published_rtt, self.smoothed_rtt) {
            (None, None) => false,
            (Some(a), Some(b)) => {
                let moved = (ms(a) - ms(b)).abs();
                moved > latency::REPUBLISH_FLOOR_MS && moved > ms(a) * latency::REPUBLISH_MOVE
            }
            _ => true,
        }
    }

    /// Why the latest probe failed; `None` when it passed (or none ran yet).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// What this state says about `target`, as a value to publish.
    pub fn observation(&self, target: &ProbeTarget) -> Observation {
        Observation {
            target: target.clone(),
            status: self.status,
            confirmed: self.confirmed,
            since: self.since,
            last_rtt: self.last_rtt,
            smoothed_rtt: self.smoothed_rtt,
            recovered: self.status == Status::Up && self.transitions > 0,
            last_error: self.last_error.clone(),
        }
    }
}

/// What one node concluded about one probe target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub target: ProbeTarget,
    pub status: Status,
    /// False while the status is only the optimistic start-up default (no probe result yet).
    pub confirmed: bool,
    pub since: Instant,
    /// Round-trip time of the latest successful probe.
    pub last_rtt: Option<Duration>,
    /// The successful probes' round-trip times, smoothed (what the latency policy uses).
    pub smoothed_rtt: Option<Duration>,
    /// Up after having been down: `since` is when it came back (the recovery ramp's start as
    /// this node saw it). False for an endpoint up since its prober started.
    pub recovered: bool,
    /// Why the latest probe failed, if it did.
    pub last_error: Option<String>,
}

/// An immutable snapshot of endpoint health, swapped whole when a status changes. The query
/// path asks it `is_up(addr, check)`; anything it has not heard of counts as up.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    /// True once the first probe round finished; never goes back to false.
    pub ready: bool,
    /// Indexed by address so that a lookup needs no allocation: there are rarely more than one
    /// or two checks per address.
    by_addr: HashMap<IpAddr, Vec<Observation>>,
}

impl HealthView {
    /// A view of the given observations.
    pub fn new(ready: bool, observations: impl IntoIterator<Item = Observation>) -> HealthView {
        let mut by_addr: HashMap<IpAddr, Vec<Observation>> = HashMap::new();
        for o in observations {
            by_addr.entry(o.target.addr).or_default().push(o);
        }
        HealthView { ready, by_addr }
    }

    /// Whether `addr` should be in answers for a service that uses `check`. A service without a
    /// check (`None`) is never taken out by health, and a target nobody probes yet counts as up:
    /// both fail open, like Route 53 and gdnsd.
    pub fn is_up(&self, addr: IpAddr, check: Option<&Check>) -> bool {
        match check {
            None => true,
            Some(check) => self.status(addr, check) != Some(Status::Down),
        }
    }

    /// The status of a probed target, `None` when it is not probed.
    pub fn status(&self, addr: IpAddr, check: &Check) -> Option<Status> {
        self.observation(addr, check).map(|o| o.status)
    }

    /// The observation of a probed target.
    pub fn observation(&self, addr: IpAddr, check: &Check) -> Option<&Observation> {
        self.by_addr
            .get(&addr)?
            .iter()
            // Usually the very same Arc the zone holds; compare by value only when not.
            .find(|o| std::ptr::eq(&*o.target.check, check) || *o.target.check == *check)
    }

    /// Every observation, in no particular order.
    pub fn observations(&self) -> impl Iterator<Item = &Observation> {
        self.by_addr.values().flatten()
    }

    /// How many targets the view knows.
    pub fn len(&self) -> usize {
        self.by_addr.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Upper bounds of the probe latency buckets; a last, unbounded bucket catches the rest.
pub const LATENCY_BUCKETS: [Duration; 10] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];

/// Probe latency as a histogram (non-cumulative counts per `LATENCY_BUCKETS` bound, then the
/// overflow) with sum and count, ready to export as Prometheus buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum: Duration,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn observe(&mut self, d: Duration) {
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| d <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += d;
        self.count += 1;
    }
}

/// Probes by result, and their latency, over every target since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    pub ok: u64,
    /// Failed for a reason other than the timeout.
    pub failed: u64,
    pub timed_out: u64,
    /// Latency of every probe, whatever its result.
    pub latency: LatencyHistogram,
}

/// Counters of one target, kept across zone reloads while the target stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStats {
    pub observation: Observation,
    pub probes_total: u64,
    pub probes_failed: u64,
    pub transitions: u64,
}

/// Everything the metrics exporter needs, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStats {
    pub ready: bool,
    pub probes: ProbeCounters,
    pub endpoints: Vec<EndpointStats>,
}

/// The targets a `set_targets` call started and stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub added: Vec<ProbeTarget>,
    pub removed: Vec<ProbeTarget>,
}

/// What recording one result changed, and when to probe next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub transition: Option<Transition>,
    /// This result completed the first probe round.
    pub became_ready: bool,
    /// The smoothed RTT moved enough to publish (`EndpointState::rtt_moved`).
    pub rtt_moved: bool,
    /// From the start of the probe just recorded to the start of the next
    /// (`EndpointState::next_probe_in`).
    pub next_probe_in: Duration,
}

/// The state of every probe target, plus readiness and counters. The prober tasks share one
/// table (behind a mutex, never held across an await) and publish `view()` when `record` reports
/// a change.
#[derive(Debug, Default)]
pub struct HealthTable {
    endpoints: HashMap<ProbeTarget, EndpointState>,
    /// Targets of the first `set_targets` that have not reported yet.
    awaiting_first: HashSet<ProbeTarget>,
    targets_set: bool,
    ready: bool,
    counters: ProbeCounters,
}

impl HealthTable {
    pub fn new() -> HealthTable {
        HealthTable::default()
    }

    /// Makes `targets` the probed set: unchanged targets keep their state (this is how a zone
    /// reload keeps health), new ones start optimistically Up, removed ones are forgotten.
    ///
    /// Except: a new target replacing a removed one of the same address that was Down starts
    /// Down (confirmed, needing `rise` successes). Editing a check (its timeout, say) makes a new
    /// target; starting it Up would put an endpoint known to be dead back into the answers
    /// until its new check fails `fall` times.
    ///
    /// Readiness waits for the targets of the first call only: a target added by a later reload
    /// must not make a serving node unready again.
    pub fn set_targets(&mut self, targets: &HashSet<ProbeTarget>, now: Instant) -> Reconciled {
        let removed: Vec<ProbeTarget> = self
            .endpoints
            .keys()
            .filter(|t| !targets.contains(*t))
            .cloned()
            .collect();
        let mut down_since: HashMap<IpAddr, Instant> = HashMap::new();
        for t in &removed {
            if let Some(old) = self.endpoints.remove(t)
                && old.confirmed
                && old.status == Status::Down
            {
                down_since.insert(t.addr, old.since);
            }
            // A removed target will never report; it must not hold readiness back.
            self.awaiting_first.remove(t);
        }
        let mut added = Vec::new();
        for t in targets {
            if !self.endpoints.contains_key(t) {
                let mut state = EndpointState::for_check(&t.check, now);
                if let Some(since) = down_since.get(&t.addr) {
                    state.status = Status::Down;
                    state.confirmed = true;
                    state.since = *since;
                }
                self.endpoints.insert(t.clone(), state);
                added.push(t.clone());
            }
        }
        if !self.targets_set {
            self.targets_set = true;
            self.awaiting_first = targets.clone();
        }
        if !self.ready && self.awaiting_first.is_empty() {
            self.ready = true;
        }
        Reconciled { added, removed }
    }

    /// Whether a slow probe of `target` should be confirmed early (see
    /// `EndpointState::confirms_early`); false for a target not in the table.
    pub fn confirms_early(&self, target: &ProbeTarget) -> bool {
        self.endpoints
            .get(target)
            .is_some_and(EndpointState::confirms_early)
    }

    /// Feeds one probe result of `target` in. A result for a target no longer in the table (a
    /// probe that finished while its target was being removed) is ignored.
    pub fn record(&mut self, target: &ProbeTarget, result: &ProbeResult, now: Instant) -> Recorded {
        let Some(state) = self.endpoints.get_mut(target) else {
            return Recorded {
                transition: None,
                became_ready: false,
                rtt_moved: false,
                next_probe_in: target.check.interval,
            };
        };
        let transition = state.record(result, now);
        let next_probe_in = state.next_probe_in(&target.check);
        let rtt_moved = state.rtt_moved();
        match (result.ok, result.timed_out) {
            (true, _) => self.counters.ok += 1,
            (false, true) => self.counters.timed_out += 1,
            (false, false) => self.counters.failed += 1,
        }
        self.counters.latency.observe(result.rtt);
        let mut became_ready = false;
        if !self.ready && self.awaiting_first.remove(target) && self.awaiting_first.is_empty() {
            self.ready = true;
            became_ready = true;
        }
        Recorded {
            transition,
            became_ready,
            rtt_moved,
            next_probe_in,
        }
    }

    /// True once every target of the first `set_targets` reported (or was removed).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The state of one target.
    pub fn state(&self, target: &ProbeTarget) -> Option<&EndpointState> {
        self.endpoints.get(target)
    }

    /// A snapshot to publish, noting the smoothed RTTs it carries (see `rtt_moved`).
    pub fn publish_view(&mut self) -> HealthView {
        for s in self.endpoints.values_mut() {
            s.published_rtt = s.smoothed_rtt;
        }
        self.view()
    }

    /// A snapshot.
    pub fn view(&self) -> HealthView {
        HealthView::new(
            self.ready,
            self.endpoints.iter().map(|(t, s)| s.observation(t)),
        )
    }

    /// Counters and the latest observation of every target.
    pub fn stats(&self) -> HealthStats {
        HealthStats {
            ready: self.ready,
            probes: self.counters.clone(),
            endpoints: self
                .endpoints
                .iter()
                .map(|(t, s)| EndpointStats {
                    observation: s.observation(t),
                    probes_total: s.probes_total,
                    probes_failed: s.probes_failed,
                    transitions: s.transitions,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::check::CheckKind;
    use Status::{Down, Up};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `S` success, `F` failure, `T` timeout.
    fn result(c: char) -> ProbeResult {
        match c {
            'S' => ProbeResult::success(ms(3)),
            'F' => ProbeResult::failure(ms(1), "connection refused"),
            'T' => ProbeResult::timeout(ms(800)),
            _ => panic!("unknown result {c:?}"),
        }
    }

    /// The status after each result, `U` or `D`.
    fn run(fall: u32, rise: u32, results: &str) -> String {
        let mut state = EndpointState::new(fall, rise, Instant::now());
        results
            .chars()
            .map(|c| {
                state.record(&result(c), Instant::now());
                match state.status() {
                    Up => 'U',
                    Down => 'D',
                }
            })
            .collect()
    }

    #[test]
    fn rise_and_fall_thresholds() {
        #[rustfmt::skip]
        let table: &[(u32, u32, &str, &str, &str)] = &[
            // fall, rise, results, statuses, why
            (3, 2, "FFF", "UUD", "fall consecutive failures take it down"),
            (3, 2, "FFFSS", "UUDDU", "rise consecutive successes bring it back"),
            (3, 2, "FFSFFF", "UUUUUD", "a success resets the failure count"),
            (3, 2, "FFFSFSS", "UUDDDDU", "a failure resets the success count"),
            (3, 2, "TTT", "UUD", "timeouts are failures"),
            (3, 2, "FTF", "UUD", "timeouts and failures count together"),
            (1, 1, "FSF", "DUD", "fall 1 / rise 1 follow every probe"),
            (2, 3, "FFSSS", "UDDDU", "thresholds are independent"),
            (3, 2, "SSSS", "UUUU", "healthy stays up"),
        ];
        for (fall, rise, results, want, why) in table {
            assert_eq!(&run(*fall, *rise, results), want, "{why}: {results}");
        }
    }

    #[test]
    fn flapping_under_the_thresholds_never_changes_the_status() {
        #[rustfmt::skip]
        let table: &[(u32, u32, &str, &str)] = &[
            (2, 2, "FSFSFSFSFS", "UUUUUUUUUU"),
            (3, 2, "FFSFFSFFSFFS", "UUUUUUUUUUUU"),
            (3, 2, "TTSTTSTTS", "UUUUUUUUU"),
            // Once down, successes that never come `rise` in a row keep it down.
            (1, 2, "FSFSFSF", "DDDDDDD"),
            (1, 3, "FSSFSSFSSF", "DDDDDDDDDD"),
        ];
        for (fall, rise, results, want) in table {
            assert_eq!(&run(*fall, *rise, results), want, "{results}");
        }
    }

    /// The delay before the next probe after each result: `I` the interval, `f` the fast one.
    fn delays(fall: u32, rise: u32, results: &str) -> String {
        let check = Check {
            interval: ms(1000),
            fast_interval: ms(200),
            fall,
            rise,
            ..Check::new(CheckKind::Tcp { port: 80 })
        };
        let mut state = EndpointState::for_check(&check, Instant::now());
        results
            .chars()
            .map(|c| {
                state.record(&result(c), Instant::now());
                match state.next_probe_in(&check) {
                    d if d == ms(1000) => 'I',
                    d if d == ms(200) => 'f',
                    d => panic!("{results}: unexpected delay {d:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn fast_interval_while_in_transition_interval_once_settled() {
        #[rustfmt::skip]
        let table: &[(u32, u32, &str, &str, &str)] = &[
            // fall, rise, results, delays, why
            (3, 2, "SSSS", "IIII", "a healthy endpoint keeps the interval"),
            (3, 2, "FFFFFF", "ffIIII", "fast until the 3rd failure confirms it down, then steadily dead"),
            (3, 2, "FSSS", "fIII", "one failure is re-checked fast; the success settles it up"),
            (3, 2, "FFSFFF", "ffIffI", "a success clears the doubt, and the count starts over"),
            (3, 2, "TTT", "ffI", "timeouts are failures"),
            (3, 2, "FFFSS", "ffIfI", "a down endpoint's first success is re-checked fast"),
            (3, 2, "FFFSFS", "ffIfIf", "a failure settles a recovering endpoint down again"),
            (2, 3, "FFSSSS", "fIffII", "rise 3: two fast probes after the first success"),
            (1, 1, "FSFS", "IIII", "fall 1 / rise 1: every result settles, nothing to confirm"),
        ];
        for (fall, rise, results, want, why) in table {
            assert_eq!(&delays(*fall, *rise, results), want, "{why}: {results}");
        }
    }

    #[test]
    fn next_probe_in_before_any_result_and_with_a_longer_fast_interval() {
        let check = Check::new(CheckKind::Tcp { port: 80 });
        let state = EndpointState::for_check(&check, Instant::now());
        assert!(!state.in_transition());
        assert_eq!(state.next_probe_in(&check), check.interval, "unconfirmed");

        // Validation forbids it, but a hand-built check is not validated.
        let slow = Check {
            fast_interval: check.interval * 2,
            ..check
        };
        let mut state = EndpointState::for_check(&slow, Instant::now());
        state.record(&result('F'), Instant::now());
        assert!(state.in_transition());
        assert_eq!(state.next_probe_in(&slow), slow.interval);
    }

    #[tokio::test(start_paused = true)]
    async fn starts_up_unconfirmed_and_a_failing_first_probe_is_an_ordinary_failure() {
        let t0 = Instant::now();
        let mut s = EndpointState::new(3, 2, t0);
        assert_eq!((s.status(), s.is_confirmed(), s.since()), (Up, false, t0));

        tokio::time::advance(ms(1000)).await;
        assert_eq!(s.record(&result('F'), Instant::now()), None);
        assert!(s.is_confirmed());
        assert_eq!(
            s.status(),
            Up,
            "one failure at start-up does not take it out"
        );
        assert_eq!(s.last_error(), Some("connection refused"));
        assert_eq!(s.since(), t0);
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_carry_their_time_and_reset_since() {
        let t0 = Instant::now();
        let mut s = EndpointState::new(2, 2, t0);
        let mut transitions = Vec::new();
        for c in "SFFFSS".chars() {
            tokio::time::advance(ms(1000)).await;
            if let Some(t) = s.record(&result(c), Instant::now()) {
                transitions.push((t.from, t.to, t.at - t0));
            }
        }
        assert_eq!(
            transitions,
            [(Up, Down, ms(3000)), (Down, Up, ms(6000))],
            "down at the 2nd failure (t=3s), up at the 2nd success (t=6s)"
        );
        assert_eq!(s.since() - t0, ms(6000));
        assert_eq!((s.probes_total, s.probes_failed, s.transitions), (6, 3, 2));
        assert_eq!(s.last_rtt(), Some(ms(3)));
        assert_eq!(s.last_error(), None, "the latest probe passed");
    }

    fn target(addr: &str, port: u16) -> ProbeTarget {
        ProbeTarget::new(
            addr.parse().unwrap(),
            Arc::new(Check {
                fall: 2,
                rise: 2,
                ..Check::new(CheckKind::Tcp { port })
            }),
        )
    }

    fn set(targets: &[&ProbeTarget]) -> HashSet<ProbeTarget> {
        targets.iter().map(|t| (*t).clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_waits_for_the_first_round_and_never_goes_back() {
        let (a, b, c) = (
            target("192.0.2.1", 80),
            target("192.0.2.2", 80),
            target("192.0.2.3", 80),
        );
        let mut table = HealthTable::new();
        assert!(!table.view().ready, "nothing loaded yet");
        table.set_targets(&set(&[&a, &b]), Instant::now());
        assert!(!table.is_ready());

        let r = table.record(&a, &result('F'), Instant::now());
        assert!(!r.became_ready && !table.is_ready(), "b has not reported");
        let r = table.record(&b, &result('S'), Instant::now());
        assert!(r.became_ready && table.is_ready());
        assert!(table.view().ready);

        // A reload that adds a target does not make the node unready.
        table.set_targets(&set(&[&a, &b, &c]), Instant::now());
        assert!(table.is_ready());
        let r = table.record(&c, &result('F'), Instant::now());
        assert!(!r.became_ready && table.is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_with_nothing_to_probe_or_a_removed_straggler() {
        let mut empty = HealthTable::new();
        empty.set_targets(&HashSet::new(), Instant::now());
        assert!(empty.is_ready(), "nothing to probe: ready at once");

        let (a, b) = (target("192.0.2.1", 80), target("192.0.2.2", 80));
        let mut table = HealthTable::new();
        table.set_targets(&set(&[&a, &b]), Instant::now());
        table.record(&a, &result('S'), Instant::now());
        assert!(!table.is_ready());
        table.set_targets(&set(&[&a]), Instant::now());
        assert!(table.is_ready(), "b was removed before it reported");
    }

    #[tokio::test(start_paused = true)]
    async fn set_targets_keeps_the_state_of_unchanged_targets() {
        let (a, b, c) = (
            target("192.0.2.1", 80),
            target("192.0.2.2", 80),
            target("192.0.2.3", 80),
        );
        let mut table = HealthTable::new();
        let r = table.set_targets(&set(&[&a, &b]), Instant::now());
        assert_eq!(r.added.len(), 2);
        for _ in 0..2 {
            table.record(&a, &result('F'), Instant::now());
        }
        assert_eq!(table.state(&a).unwrap().status(), Down);

        // The "reload" builds new, equal targets: they must map onto the running state.
        let (a2, b2) = (target("192.0.2.1", 80), target("192.0.2.2", 80));
        let r = table.set_targets(&set(&[&a2, &c]), Instant::now());
        assert_eq!(
            r,
            Reconciled {
                added: vec![c.clone()],
                removed: vec![b2]
            }
        );
        assert_eq!(table.state(&a).unwrap().status(), Down, "a kept its state");
        assert_eq!(table.state(&a).unwrap().probes_total, 2, "and its counters");
        assert!(!table.state(&c).unwrap().is_confirmed(), "c starts fresh");
        assert!(table.state(&b).is_none());
        assert_eq!(
            table.record(&b, &result('S'), Instant::now()),
            Recorded {
                transition: None,
                became_ready: false,
                rtt_moved: false,
                next_probe_in: b.check.interval,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_change_is_a_new_target() {
        let a = target("192.0.2.1", 80);
        let a_other_port = target("192.0.2.1", 8080);
        let mut table = HealthTable::new();
        table.set_targets(&set(&[&a]), Instant::now());
        let r = table.set_targets(&set(&[&a_other_port]), Instant::now());
        assert_eq!((r.added, r.removed), (vec![a_other_port], vec![a]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_check_keeps_a_down_endpoint_down() {
        let (a, b) = (target("192.0.2.1", 80), target("192.0.2.2", 80));
        let mut table = HealthTable::new();
        table.set_targets(&set(&[&a, &b]), Instant::now());
        for _ in 0..2 {
            table.record(&a, &result('F'), Instant::now());
            table.record(&b, &result('S'), Instant::now());
        }
        let down_since = table.state(&a).unwrap().since();
        tokio::time::advance(Duration::from_secs(5)).await;

        // The same addresses under an edited check (another port here).
        let (a2, b2) = (target("192.0.2.1", 8080), target("192.0.2.2", 8080));
        let r = table.set_targets(&set(&[&a2, &b2]), Instant::now());
        assert_eq!(r.added.len(), 2);
        let a_state = table.state(&a2).unwrap();
        assert_eq!(a_state.status(), Down, "a stays down under its new check");
        assert!(a_state.is_confirmed());
        assert_eq!(a_state.since(), down_since);
        let b_state = table.state(&b2).unwrap();
        assert_eq!(b_state.status(), Up);
        assert!(
            !b_state.is_confirmed(),
            "an up endpoint starts as any new target"
        );

        // Back up after `rise` (2) successes of the new check, the second one asked for at the
        // fast interval: the carried-over Down is a settled status like any other.
        let r = table.record(&a2, &result('S'), Instant::now());
        assert_eq!(table.state(&a2).unwrap().status(), Down);
        assert_eq!(r.next_probe_in, a2.check.fast_interval);
        let r = table.record(&a2, &result('S'), Instant::now());
        assert_eq!(table.state(&a2).unwrap().status(), Up);
        assert_eq!(r.next_probe_in, a2.check.interval);
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_answers_is_up() {
        let down = target("192.0.2.1", 80);
        let up = target("192.0.2.2", 80);
        let mut table = HealthTable::new();
        table.set_targets(&set(&[&down, &up]), Instant::now());
        for _ in 0..2 {
            table.record(&down, &result('F'), Instant::now());
            table.record(&up, &result('S'), Instant::now());
        }
        let view = table.view();
        let check = |t: &ProbeTarget| Some(&*t.check).cloned();
        #[rustfmt::skip]
        let cases: &[(&str, Option<Check>, bool, &str)] = &[
            ("192.0.2.1", check(&down), false, "probed down"),
            ("192.0.2.2", check(&up), true, "probed up"),
            ("192.0.2.9", check(&up), true, "unknown address fails open"),
            ("192.0.2.1", check(&target("192.0.2.1", 443)), true, "same address, other check: unknown"),
            ("192.0.2.1", None, true, "a service without a check is never taken out"),
        ];
        for (addr, check, want, why) in cases {
            assert_eq!(
                view.is_up(addr.parse().unwrap(), check.as_ref()),
                *want,
                "{why}"
            );
        }
        assert_eq!(view.len(), 2);
        let o = view.observation(down.addr, &down.check).unwrap();
        assert_eq!((o.status, o.confirmed), (Down, true));
        assert_eq!(o.last_error.as_deref(), Some("connection refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn counters_split_probes_by_result_and_bucket_latency() {
        let a = target("192.0.2.1", 80);
        let mut table = HealthTable::new();
        table.set_targets(&set(&[&a]), Instant::now());
        for c in "SSFTT".chars() {
            table.record(&a, &result(c), Instant::now());
        }
        let stats = table.stats();
        assert_eq!(
            (stats.probes.ok, stats.probes.failed, stats.probes.timed_out),
            (2, 1, 2)
        );
        let l = &stats.probes.latency;
        assert_eq!(l.count, 5);
        assert_eq!(l.sum, ms(3 + 3 + 1 + 800 + 800));
        assert_eq!(l.counts[0], 1, "1 ms → first bucket");
        assert_eq!(l.counts[2], 2, "3 ms → ≤ 5 ms bucket");
        assert_eq!(l.counts[9], 2, "800 ms → ≤ 1 s bucket");
        assert_eq!(stats.endpoints.len(), 1);
        let e = &stats.endpoints[0];
        assert_eq!((e.probes_total, e.probes_failed, e.transitions), (5, 3, 1));
    }
}
