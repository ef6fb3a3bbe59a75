//! Every metric name and label in one place (Prometheus, via prometheus-client). Other modules
//! call the typed `record_*` methods; only `admin` renders the registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

// Label values on the query path are shared strings or static text, so counting a query
// allocates nothing.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The zone apex, or `-` for names outside every zone.
    pub zone: Arc<str>,
    pub qtype: &'static str,
    pub rcode: &'static str,
    /// `yes` when the query carried an EDNS Client Subnet option.
    pub ecs: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub zone: Arc<str>,
    pub record: Arc<str>,
    /// The data center the answer came from.
    pub dc: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatabaseLabels {
    pub database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The node's state at a scrape, as label sets and values: what `Metrics::observe_state` sets.
#[derive(Debug, Default)]
pub struct StateObservation {
    /// Each endpoint of each service's DCs, up or not.
    pub endpoints: Vec<(EndpointLabels, bool)>,
    /// Each DC of each service: up (some endpoint up, and not drained), and drained.
    pub dcs: Vec<(DcLabels, bool, bool)>,
    /// Each node's vote on each endpoint: up or not, and its age in seconds.
    pub votes: Vec<(VoteLabels, bool, f64)>,
    /// Each peer: seconds since its last good exchange (if any) and its failures in a row.
    pub peers: Vec<(PeerLabels, Option<f64>, u64)>,
    /// Each drain in force: when it was issued and, if it has one, when it lifts by itself
    /// (Unix seconds).
    pub drains: Vec<(DrainLabels, f64, Option<f64>)>,
    /// Each DC of each service with a recovery ramp: the share of its clients it gets (1 when
    /// not ramping).
    pub ramps: Vec<(DcLabels, f64)>,
    /// The latency policy's RTT matrix: per service, node region and DC, the smoothed RTT and
    /// its age, in seconds.
    pub rtts: Vec<(RttLabels, f64, f64)>,
    /// Whether this node counts itself isolated.
    pub isolated: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub service: Arc<str>,
    pub dc: Arc<str>,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DcLabels {
    pub service: Arc<str>,
    pub dc: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DrainLabels {
    pub dc: String,
    /// The service drained, or `*` for a drain of every service in the DC.
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RttLabels {
    pub service: Arc<str>,
    /// The node region that measured.
    pub region: Arc<str>,
    pub dc: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VoteLabels {
    pub endpoint: String,
    pub check: String,
    pub node: String,
    pub region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// Which TCP limit: `global` or `per_client`.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// Which TCP timeout: `idle` (between messages), `read` (a message in progress) or `write`.
    pub timeout: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub result: &'static str,
}

/// What the thread-local counter cache is keyed by: the registry, the metric, and each label
/// value's address and length. Label values are shared strings (`Arc<str>`) or static text, so
/// equal addresses mean equal values as long as the string is alive, and the cache entry keeps
/// it alive (`Held`): no address in a key can be reused by another string. Hashing a few
/// integers instead of the label text keeps counting a query to a handful of instructions.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct CounterKey {
    registry: u64,
    metric: u8,
    labels: [(usize, usize); 4],
}

fn text_key(s: &str) -> (usize, usize) {
    (s.as_ptr() as usize, s.len())
}

/// The label set a cached counter was made for, held so its strings outlive the cache entry.
#[allow(dead_code)] // held, never read
enum Held {
    Query(QueryLabels),
    Service(ServiceLabels),
}

type CounterCache = rustc_hash::FxHashMap<CounterKey, (Counter, Held)>;

thread_local! {
    static COUNTERS: std::cell::RefCell<CounterCache> =
        std::cell::RefCell::new(CounterCache::default());
}

/// The counter for `key` from this thread's cache, fetched with `get` (which also gives the
/// label set to hold) the first time. The cache starts over past 4096 entries, so label sets
/// from old zones cannot pile up.
fn cached_counter(key: CounterKey, get: impl FnOnce() -> (Counter, Held)) -> Counter {
    COUNTERS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((found, _)) = c.get(&key) {
            return found.clone();
        }
        if c.len() >= 4096 {
            c.clear();
        }
        let entry = get();
        let counter = entry.0.clone();
        c.insert(key, entry);
        counter
    })
}

/// The counters a prepared answer increments, each fetched the first time it is used and then
/// kept with the answer (a hit increments them without a look-up). A family never drops a label
/// set, so a kept counter stays the one the scrape reads.
#[derive(Debug, Default)]
pub struct AnswerCounters {
    /// `dns_queries_total` without and with ECS.
    queries: [std::cell::OnceCell<Counter>; 2],
    /// `dns_service_answers_total`, for a service answer.
    service: std::cell::OnceCell<Counter>,
}

/// The zone label of queries outside every zone.
pub static NO_ZONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

/// Upper bounds of the latency histogram's finite buckets: 1 µs doubling to about 131 ms.
const LATENCY_BUCKETS: usize = 18;

/// The query latency histogram (`dns_query_duration_seconds`), with the buckets prometheus-client's
/// `Histogram::new(exponential_buckets(1e-6, 2.0, 18))` had, kept as relaxed atomics.
/// prometheus-client's histogram takes a lock and searches its buckets for every observation
/// (about 100 instructions, a fifteenth of a prepared answer); here the bucket is an index
/// computed from the duration, and a UDP batch whose queries finished together is one
/// observation of `n`. The count is the buckets' sum, so a scrape never sees them disagree.
#[derive(Debug, Clone, Default)]
struct QueryLatency(Arc<LatencyCells>);

#[derive(Debug, Default)]
struct LatencyCells {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl QueryLatency {
    fn observe(&self, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.buckets[latency_bucket(ns)].fetch_add(n, Ordering::Relaxed);
        self.0
            .sum_ns
            .fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }
}

/// The bucket of a duration: the smallest k with 1 µs × 2^k at least `ns`, or +Inf.
fn latency_bucket(ns: u64) -> usize {
    let micros = ns.div_ceil(1000).max(1);
    (micros.next_power_of_two().trailing_zeros() as usize).min(LATENCY_BUCKETS)
}

impl EncodeMetric for QueryLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let upper = if k < LATENCY_BUCKETS {
                    1e-6 * f64::from(1u32 << k)
                } else {
                    f64::INFINITY
                };
                (upper, c.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|&(_, c)| c).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The node's metrics.
pub struct Metrics {
    /// Tells this registry's cached counters from another's (tests run several per process).
    id: u64,
    pub registry: Registry,
    queries: Family<QueryLabels, Counter>,
    service_answers: Family<ServiceLabels, Counter>,
    all_down: Family<ServiceLabels, Counter>,
    query_duration: QueryLatency,
    zone_reloads: Family<ResultLabels, Counter>,
    zone_last_reload_ok: Gauge,
    zone_last_reload_time: Gauge<f64, AtomicU64>,
    geoip_loads: Family<ResultLabels, Counter>,
    geoip_last_load_ok: Gauge,
    geoip_build_time: Family<DatabaseLabels, Gauge>,
    peer_exchanges: Family<ResultLabels, Counter>,
    peer_auth_refused: Family<ReasonLabels, Counter>,
    // Gauges set from the current state at each scrape.
    endpoint_up: Family<EndpointLabels, Gauge>,
    dc_up: Family<DcLabels, Gauge>,
    dc_drained: Family<DcLabels, Gauge>,
    drain_issued: Family<DrainLabels, Gauge<f64, AtomicU64>>,
    drain_expires: Family<DrainLabels, Gauge<f64, AtomicU64>>,
    votes: Family<VoteLabels, Gauge>,
    vote_age: Family<VoteLabels, Gauge<f64, AtomicU64>>,
    dc_ramp_share: Family<DcLabels, Gauge<f64, AtomicU64>>,
    latency_rtt: Family<RttLabels, Gauge<f64, AtomicU64>>,
    latency_rtt_age: Family<RttLabels, Gauge<f64, AtomicU64>>,
    peer_age: Family<PeerLabels, Gauge<f64, AtomicU64>>,
    peer_failures: Family<PeerLabels, Gauge>,
    drains_active: Gauge,
    prepared_hits: Counter,
    prepared_misses: Counter,
    isolated: Gauge,
    probes: Family<ProbeLabels, Gauge>,
    probe_latency_sum: Gauge<f64, AtomicU64>,
    // Abuse resistance (issue 8).
    rrl_dropped: Counter,
    rrl_slipped: Counter,
    tcp_open: Gauge,
    tcp_refused: Family<LimitLabels, Counter>,
    tcp_evicted: Family<LimitLabels, Counter>,
    tcp_timed_out: Family<TimeoutLabels, Counter>,
    tcp_query_limit: Counter,
    // TLS on the admin/peer listener.
    admin_tls_failures: Family<ReasonLabels, Counter>,
    tls_cert_reloads: Family<ResultLabels, Counter>,
    // DNSSEC online signing (issue 15).
    dnssec_signatures: Counter,
    dnssec_cache_hits: Counter,
    dnssec_signing_time: Counter<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("steerdns");
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "dns_queries",
            "DNS queries answered, by zone, query type, response code and ECS presence",
            queries.clone(),
        );
        let service_answers = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "dns_service_answers",
            "Service answers by zone, record and the data center chosen",
            service_answers.clone(),
        );
        let all_down = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "dns_service_all_down",
            "Service queries answered while no endpoint was up (when_all_down applied)",
            all_down.clone(),
        );
        // 1 µs to about 130 ms.
        let query_duration = QueryLatency::default();
        registry.register_with_unit(
            "dns_query_duration",
            "Time from a request's receipt to its response ready to send (a UDP batch's queries are timed together)",
            Unit::Seconds,
            query_duration.clone(),
        );
        let zone_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "zone_reloads",
            "Zone reloads by result",
            zone_reloads.clone(),
        );
        let zone_last_reload_ok = Gauge::default();
        registry.register(
            "zone_last_reload_success",
            "1 if the last zone load or reload succeeded, else 0",
            zone_last_reload_ok.clone(),
        );
        let zone_last_reload_time = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "zone_last_reload_timestamp",
            "Unix time of the last zone load or reload attempt",
            Unit::Seconds,
            zone_last_reload_time.clone(),
        );
        let geoip_loads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "geoip_loads",
            "GeoIP database loads by result",
            geoip_loads.clone(),
        );
        let geoip_last_load_ok = Gauge::default();
        registry.register(
            "geoip_last_load_success",
            "1 if the last GeoIP load or reload succeeded, else 0 (the databases loaded before stay in use)",
            geoip_last_load_ok.clone(),
        );
        let geoip_build_time = Family::<DatabaseLabels, Gauge>::default();
        registry.register_with_unit(
            "geoip_build_timestamp",
            "Build time of each loaded GeoIP database (Unix time)",
            Unit::Seconds,
            geoip_build_time.clone(),
        );
        let peer_exchanges = Family::<ResultLabels, Counter>::default();
        registry.register(
            "peer_exchanges",
            "Pulls from peers by result",
            peer_exchanges.clone(),
        );
        let peer_auth_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "peer_auth_refused",
            "Peer messages refused: missing, expired, replayed or badly signed",
            peer_auth_refused.clone(),
        );
        let endpoint_up = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "endpoint_up",
            "Effective status per endpoint (1 up, 0 down)",
            endpoint_up.clone(),
        );
        let dc_up = Family::<DcLabels, Gauge>::default();
        registry.register(
            "dc_up",
            "Effective status per service DC (1 when an endpoint is up and it is not drained)",
            dc_up.clone(),
        );
        let dc_drained = Family::<DcLabels, Gauge>::default();
        registry.register(
            "dc_drained",
            "1 when a drain of the service or of its whole DC is in force, else 0",
            dc_drained.clone(),
        );
        let drain_issued = Family::<DrainLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "drain_issued_timestamp",
            "Unix time each drain in force was issued (service * for every service in the DC)",
            Unit::Seconds,
            drain_issued.clone(),
        );
        let drain_expires = Family::<DrainLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "drain_expires_timestamp",
            "Unix time a drain in force lifts by itself; only drains issued with an expiry (drain --for)",
            Unit::Seconds,
            drain_expires.clone(),
        );
        let votes = Family::<VoteLabels, Gauge>::default();
        registry.register(
            "vote_up",
            "Each node's vote per endpoint (1 up, 0 down)",
            votes.clone(),
        );
        let dc_ramp_share = Family::<DcLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "dc_ramp_share",
            "Share of its clients a service DC gets (below 1 during its recovery ramp)",
            dc_ramp_share.clone(),
        );
        let latency_rtt = Family::<RttLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "latency_rtt",
            "Smoothed probe RTT per latency service, node region and DC",
            Unit::Seconds,
            latency_rtt.clone(),
        );
        let latency_rtt_age = Family::<RttLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "latency_rtt_age",
            "Age of that RTT: since the measuring node was last heard from",
            Unit::Seconds,
            latency_rtt_age.clone(),
        );
        let vote_age = Family::<VoteLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "vote_age",
            "Age of each node's vote",
            Unit::Seconds,
            vote_age.clone(),
        );
        let peer_age = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "peer_last_exchange_age",
            "Time since the last successful pull from each peer",
            Unit::Seconds,
            peer_age.clone(),
        );
        let peer_failures = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_consecutive_failures",
            "Failed pulls from each peer since the last success",
            peer_failures.clone(),
        );
        let drains_active = Gauge::default();
        registry.register("drains_active", "Drains in force", drains_active.clone());
        let prepared = Family::<ResultLabels, Counter>::default();
        registry.register(
            "prepared_answers",
            "UDP queries of the lean path answered from a prepared answer (hit) or prepared for \
             it (miss); the hit rate is hit / (hit + miss)",
            prepared.clone(),
        );
        let prepared_hits = prepared
            .get_or_create(&ResultLabels { result: "hit" })
            .clone();
        let prepared_misses = prepared
            .get_or_create(&ResultLabels { result: "miss" })
            .clone();
        let isolated = Gauge::default();
        registry.register(
            "isolated",
            "1 when the isolation guard ignores this node's votes",
            isolated.clone(),
        );
        let probes = Family::<ProbeLabels, Gauge>::default();
        registry.register(
            "probes",
            "Health probes run by this node, by result (ok, failed, timed_out)",
            probes.clone(),
        );
        let probe_latency_sum = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "probe_latency_sum",
            "Sum of probe round-trip times",
            Unit::Seconds,
            probe_latency_sum.clone(),
        );
        let dnssec_signatures = Counter::default();
        registry.register(
            "dnssec_signatures_made",
            "RRSIGs made (an RRset content not in the signature cache, or due for refresh)",
            dnssec_signatures.clone(),
        );
        let dnssec_cache_hits = Counter::default();
        registry.register(
            "dnssec_signature_cache_hits",
            "RRSIGs served from the signature cache",
            dnssec_cache_hits.clone(),
        );
        let dnssec_signing_time = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "dnssec_signing_time",
            "Time spent making RRSIGs (divide by dnssec_signatures_made_total for the cost of one)",
            Unit::Seconds,
            dnssec_signing_time.clone(),
        );
        let rrl_dropped = Counter::default();
        registry.register(
            "rrl_dropped",
            "UDP responses not sent by response rate limiting",
            rrl_dropped.clone(),
        );
        let rrl_slipped = Counter::default();
        registry.register(
            "rrl_slipped",
            "UDP responses rate limited but sent truncated (TC=1) so the client retries over TCP",
            rrl_slipped.clone(),
        );
        let tcp_open = Gauge::default();
        registry.register(
            "tcp_connections_open",
            "DNS TCP connections open now",
            tcp_open.clone(),
        );
        let tcp_refused = Family::<LimitLabels, Counter>::default();
        registry.register(
            "tcp_connections_refused",
            "DNS TCP connections closed at once because a connection limit was reached and every connection it counts was busy",
            tcp_refused.clone(),
        );
        let tcp_evicted = Family::<LimitLabels, Counter>::default();
        registry.register(
            "tcp_connections_evicted",
            "Idle DNS TCP connections closed to make room for a new one because a connection limit was reached",
            tcp_evicted.clone(),
        );
        let tcp_timed_out = Family::<TimeoutLabels, Counter>::default();
        registry.register(
            "tcp_connections_timed_out",
            "DNS TCP connections closed by a timeout",
            tcp_timed_out.clone(),
        );
        let tcp_query_limit = Counter::default();
        registry.register(
            "tcp_connections_query_limit",
            "DNS TCP connections closed after their maximum number of queries",
            tcp_query_limit.clone(),
        );
        let admin_tls_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admin_tls_handshake_failures",
            "Connections to the admin/peer listener closed because the TLS handshake failed (error) or took too long (timeout)",
            admin_tls_failures.clone(),
        );
        let tls_cert_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_certificate_reloads",
            "Reloads of the admin/peer listener's TLS certificate by result (error: the previous one stays)",
            tls_cert_reloads.clone(),
        );
        // Every series whose label values are known in advance starts at 0, so that the first
        // error shows as an increase (an alert on `increase(..{result="error"}[..])` would miss a
        // series that first appears at 1) and dashboards show 0 rather than no data.
        for result in ["ok", "error"] {
            for family in [
                &zone_reloads,
                &geoip_loads,
                &peer_exchanges,
                &tls_cert_reloads,
            ] {
                let _ = family.get_or_create(&ResultLabels { result });
            }
        }
        for reason in ["missing", "expired", "replayed", "bad_signature"] {
            let _ = peer_auth_refused.get_or_create(&ReasonLabels { reason });
        }
        for reason in ["error", "timeout"] {
            let _ = admin_tls_failures.get_or_create(&ReasonLabels { reason });
        }
        for limit in ["global", "per_client"] {
            let _ = tcp_refused.get_or_create(&LimitLabels { limit });
            let _ = tcp_evicted.get_or_create(&LimitLabels { limit });
        }
        for timeout in ["idle", "read", "write"] {
            let _ = tcp_timed_out.get_or_create(&TimeoutLabels { timeout });
        }
        Metrics {
            dnssec_signatures,
            dnssec_cache_hits,
            dnssec_signing_time,
            id: NEXT_METRICS_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rrl_dropped,
            rrl_slipped,
            tcp_open,
            tcp_refused,
            tcp_evicted,
            tcp_timed_out,
            tcp_query_limit,
            admin_tls_failures,
            tls_cert_reloads,
            peer_exchanges,
            peer_auth_refused,
            endpoint_up,
            dc_up,
            dc_drained,
            drain_issued,
            drain_expires,
            votes,
            vote_age,
            dc_ramp_share,
            latency_rtt,
            latency_rtt_age,
            peer_age,
            peer_failures,
            drains_active,
            prepared_hits,
            prepared_misses,
            isolated,
            probes,
            probe_latency_sum,
            registry,
            queries,
            service_answers,
            all_down,
            query_duration,
            zone_reloads,
            zone_last_reload_ok,
            zone_last_reload_time,
            geoip_loads,
            geoip_last_load_ok,
            geoip_build_time,
        }
    }

    /// Counts one query. The counter for a label set is looked up in the shared family once per
    /// thread and then kept in a thread-local map (hashing a few short strings, no lock).
    /// `zone` is the zone apex (`NO_ZONE` outside every zone); the other labels are static text.
    pub fn record_query(
        &self,
        zone: &Arc<str>,
        qtype: &'static str,
        rcode: &'static str,
        ecs: bool,
    ) {
        self.query_counter(zone, qtype, rcode, ecs).inc();
    }

    /// Counts `n` answered queries in the latency histogram, each of which took `took` from
    /// its receipt to its response ready to send (a UDP batch's queries finish together: one
    /// clock reading and one call for all of them).
    pub fn observe_queries(&self, took: Duration, n: u64) {
        self.query_duration.observe(took, n);
    }

    /// Counts a query answered with a prepared answer (see `record_query`; `service` as
    /// `record_service_answer`'s arguments, for a service answer), through the counters kept in
    /// `counters`.
    #[allow(clippy::too_many_arguments)]
    pub fn record_prepared_query(
        &self,
        counters: &AnswerCounters,
        zone: &Arc<str>,
        qtype: &'static str,
        rcode: &'static str,
        ecs: bool,
        service: Option<(&Arc<str>, &Arc<str>)>,
        all_down: bool,
    ) {
        counters.queries[usize::from(ecs)]
            .get_or_init(|| self.query_counter(zone, qtype, rcode, ecs))
            .inc();
        if let Some((record, dc)) = service {
            counters
                .service
                .get_or_init(|| self.service_counter(zone, record, dc))
                .inc();
            if all_down {
                self.count_all_down(zone, record, dc);
            }
        }
    }

    /// Counts an answer given while every endpoint of the service was down (rare: no cache).
    fn count_all_down(&self, zone: &Arc<str>, record: &Arc<str>, dc: &Arc<str>) {
        self.all_down
            .get_or_create(&ServiceLabels {
                zone: zone.clone(),
                record: record.clone(),
                dc: dc.clone(),
            })
            .inc();
    }

    fn query_counter(
        &self,
        zone: &Arc<str>,
        qtype: &'static str,
        rcode: &'static str,
        ecs: bool,
    ) -> Counter {
        let ecs = if ecs { "yes" } else { "no" };
        let key = CounterKey {
            registry: self.id,
            metric: 0,
            labels: [
                text_key(zone),
                text_key(qtype),
                text_key(rcode),
                text_key(ecs),
            ],
        };
        cached_counter(key, || {
            let labels = QueryLabels {
                zone: zone.clone(),
                qtype,
                rcode,
                ecs,
            };
            (
                self.queries.get_or_create(&labels).clone(),
                Held::Query(labels),
            )
        })
    }

    fn service_counter(&self, zone: &Arc<str>, record: &Arc<str>, dc: &Arc<str>) -> Counter {
        let key = CounterKey {
            registry: self.id,
            metric: 1,
            labels: [text_key(zone), text_key(record), text_key(dc), (0, 0)],
        };
        cached_counter(key, || {
            let labels = ServiceLabels {
                zone: zone.clone(),
                record: record.clone(),
                dc: dc.clone(),
            };
            (
                self.service_answers.get_or_create(&labels).clone(),
                Held::Service(labels),
            )
        })
    }

    /// Counts a service answer from the DC `dc` (and one by `when_all_down` when `all_down`).
    pub fn record_service_answer(
        &self,
        zone: &Arc<str>,
        record: &Arc<str>,
        dc: &Arc<str>,
        all_down: bool,
    ) {
        self.service_counter(zone, record, dc).inc();
        if all_down {
            self.count_all_down(zone, record, dc);
        }
    }

    /// How many answers sent clients of `record` (in `zone`) to `dc` so far.
    pub fn service_answers_total(&self, zone: &Arc<str>, record: &Arc<str>, dc: &Arc<str>) -> u64 {
        let labels = ServiceLabels {
            zone: zone.clone(),
            record: record.clone(),
            dc: dc.clone(),
        };
        // `get` rather than `get_or_create`: reading adds no zero series to the scrape.
        self.service_answers.get(&labels).map_or(0, |c| c.get())
    }

    /// Counts a lean-path query answered from a prepared answer (`hit`) or prepared for it.
    pub fn record_prepared(&self, hit: bool) {
        if hit {
            self.prepared_hits.inc();
        } else {
            self.prepared_misses.inc();
        }
    }

    /// Counts a response RRL did not send as it was.
    pub fn record_rrl(&self, decision: crate::rrl::Decision) {
        match decision {
            crate::rrl::Decision::Send => {}
            crate::rrl::Decision::Drop => {
                self.rrl_dropped.inc();
            }
            crate::rrl::Decision::Slip => {
                self.rrl_slipped.inc();
            }
        }
    }

    /// One RRSIG made, taking `took`.
    pub fn record_signature_made(&self, took: std::time::Duration) {
        self.dnssec_signatures.inc();
        self.dnssec_signing_time.inc_by(took.as_secs_f64());
    }

    /// One RRSIG served from the cache.
    pub fn record_signature_cache_hit(&self) {
        self.dnssec_cache_hits.inc();
    }

    /// A DNS TCP connection was accepted (`+1`) or closed (`-1`).
    pub fn tcp_connections_changed(&self, delta: i64) {
        self.tcp_open.inc_by(delta);
    }

    pub fn record_tcp_refused(&self, limit: &'static str) {
        self.tcp_refused.get_or_create(&LimitLabels { limit }).inc();
    }

    /// An idle connection was closed to make room under `limit`.
    pub fn record_tcp_evicted(&self, limit: &'static str) {
        self.tcp_evicted.get_or_create(&LimitLabels { limit }).inc();
    }

    pub fn record_tcp_timeout(&self, timeout: &'static str) {
        self.tcp_timed_out
            .get_or_create(&TimeoutLabels { timeout })
            .inc();
    }

    pub fn record_tcp_query_limit(&self) {
        self.tcp_query_limit.inc();
    }

    pub fn record_zone_load(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.zone_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        self.zone_last_reload_ok.set(i64::from(ok));
        self.zone_last_reload_time.set(unix_now());
    }

    pub fn record_geoip_load(&self, ok: bool, databases: &[(String, u64)]) {
        let result = if ok { "ok" } else { "error" };
        self.geoip_loads
            .get_or_create(&ResultLabels { result })
            .inc();
        self.geoip_last_load_ok.set(i64::from(ok));
        if ok {
            self.geoip_build_time.clear();
            for (database, epoch) in databases {
                self.geoip_build_time
                    .get_or_create(&DatabaseLabels {
                        database: database.clone(),
                    })
                    .set(i64::try_from(*epoch).unwrap_or(i64::MAX));
            }
        }
    }

    /// A connection to the admin/peer listener closed in its TLS handshake: `error` or `timeout`.
    pub fn record_admin_tls_failure(&self, reason: &'static str) {
        self.admin_tls_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn record_tls_cert_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_cert_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn record_peer_exchange(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.peer_exchanges
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn record_auth_refused(&self, reason: &'static str) {
        self.peer_auth_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Probe counters of this node's probers.
    pub fn set_probe_counts(&self, ok: u64, failed: u64, timed_out: u64, latency_sum_s: f64) {
        for (result, n) in [("ok", ok), ("failed", failed), ("timed_out", timed_out)] {
            self.probes
                .get_or_create(&ProbeLabels { result })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.probe_latency_sum.set(latency_sum_s);
    }

    /// Sets the state gauges from what the scrape observed (`ops::admin` gathers it from the
    /// snapshots and the cluster, so this module reads no wing).
    pub fn observe_state(&self, state: &StateObservation) {
        self.endpoint_up.clear();
        self.dc_up.clear();
        self.dc_drained.clear();
        for (labels, up) in &state.endpoints {
            self.endpoint_up.get_or_create(labels).set(i64::from(*up));
        }
        for (labels, up, drained) in &state.dcs {
            self.dc_up.get_or_create(labels).set(i64::from(*up));
            self.dc_drained
                .get_or_create(labels)
                .set(i64::from(*drained));
        }
        self.votes.clear();
        self.vote_age.clear();
        for (labels, up, age_s) in &state.votes {
            self.votes.get_or_create(labels).set(i64::from(*up));
            self.vote_age.get_or_create(labels).set(*age_s);
        }
        self.dc_ramp_share.clear();
        for (labels, share) in &state.ramps {
            self.dc_ramp_share.get_or_create(labels).set(*share);
        }
        self.latency_rtt.clear();
        self.latency_rtt_age.clear();
        for (labels, rtt_s, age_s) in &state.rtts {
            self.latency_rtt.get_or_create(labels).set(*rtt_s);
            self.latency_rtt_age.get_or_create(labels).set(*age_s);
        }
        self.peer_age.clear();
        self.peer_failures.clear();
        for (labels, age_s, failures) in &state.peers {
            if let Some(age) = age_s {
                self.peer_age.get_or_create(labels).set(*age);
            }
            self.peer_failures
                .get_or_create(labels)
                .set(i64::try_from(*failures).unwrap_or(i64::MAX));
        }
        self.drain_issued.clear();
        self.drain_expires.clear();
        for (labels, issued_s, expires_s) in &state.drains {
            self.drain_issued.get_or_create(labels).set(*issued_s);
            if let Some(expires) = expires_s {
                self.drain_expires.get_or_create(labels).set(*expires);
            }
        }
        self.drains_active
            .set(i64::try_from(state.drains.len()).unwrap_or(i64::MAX));
        self.isolated.set(i64::from(state.isolated));
    }

    /// The label value for a query type: its mnemonic for the common ones, else `OTHER` (so an
    /// attacker cannot grow the label set with random type numbers).
    pub fn qtype_label(code: u16) -> &'static str {
        match code {
            1 => "A",
            2 => "NS",
            5 => "CNAME",
            6 => "SOA",
            12 => "PTR",
            15 => "MX",
            16 => "TXT",
            28 => "AAAA",
            33 => "SRV",
            35 => "NAPTR",
            43 => "DS",
            48 => "DNSKEY",
            64 => "SVCB",
            65 => "HTTPS",
            99 => "SPF",
            251 => "IXFR",
            252 => "AXFR",
            255 => "ANY",
            257 => "CAA",
            _ => "OTHER",
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn unix_now() -> f64 {
    crate::clock::now_ms() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `prefix` in the text exposition.
    fn sample(text: &str, prefix: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn the_latency_histogram_renders_as_prometheus_clients_histogram_did() {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        // The reference: the histogram this one replaced, with the same buckets.
        let reference = Histogram::new(exponential_buckets(1e-6, 2.0, 18));
        let ours = QueryLatency::default();
        // Bucket edges (exactly 1 µs × 2^k belongs to bucket k), values between them, zero,
        // beyond the last finite bucket, and batches of several.
        let mut durations = vec![(0u64, 1u64), (1, 1), (999, 2), (1_000, 1), (1_001, 3)];
        for k in 0..20u32 {
            let edge = 1_000u64 << k;
            durations.extend([(edge, 1), (edge + 1, 2), (edge - 1, 1)]);
        }
        durations.push((10_000_000_000, 4));
        for &(ns, n) in &durations {
            ours.observe(Duration::from_nanos(ns), n);
            for _ in 0..n {
                reference.observe(ns as f64 / 1e9);
            }
        }
        fn render(metric: impl prometheus_client::registry::Metric) -> String {
            let mut registry = Registry::default();
            registry.register_with_unit("d", "d", Unit::Seconds, metric);
            let mut out = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
            out
        }
        let ours_text = render(ours.clone());
        let reference_text = render(reference);
        // The sums differ in the last digits (nanoseconds added as integers, not as floats).
        let buckets = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with("d_seconds_sum"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(buckets(&ours_text), buckets(&reference_text), "{ours_text}");
        let total: u64 = durations.iter().map(|&(_, n)| n).sum();
        let inf = format!("d_seconds_bucket{{le=\"+Inf\"}} {total}");
        assert!(ours_text.contains(&inf), "{ours_text}");
        let sum_of = |t: &str| -> f64 {
            t.lines()
                .find_map(|l| l.strip_prefix("d_seconds_sum "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let (a, b) = (sum_of(&ours_text), sum_of(&reference_text));
        assert!((a - b).abs() < 1e-9 * b.max(1.0), "{a} vs {b}");
    }

    #[test]
    fn cached_counters_follow_the_label_text_not_the_string_instance() {
        let m = Metrics::new();
        // Two instances of the same zone text (as after a reload) count on one series.
        let (zone1, zone2): (Arc<str>, Arc<str>) = (Arc::from("a.example"), Arc::from("a.example"));
        let other: Arc<str> = Arc::from("b.example");
        for _ in 0..3 {
            m.record_query(&zone1, "A", "NOERROR", true);
        }
        drop(zone1);
        m.record_query(&zone2, "A", "NOERROR", true);
        m.record_query(&other, "A", "NOERROR", true);
        m.record_query(&zone2, "A", "NOERROR", false);
        m.record_query(&NO_ZONE, "-", "FORMERR", false);
        let (www, dc1, dc2): (Arc<str>, Arc<str>, Arc<str>) = (
            Arc::from("www.a.example"),
            Arc::from("dc1"),
            Arc::from("dc2"),
        );
        m.record_service_answer(&zone2, &www, &dc1, false);
        m.record_service_answer(&zone2, &www, &dc1, false);
        m.record_service_answer(&zone2, &www, &dc2, true);
        let text = m.render();
        let q = |zone: &str, rcode: &str, ecs: &str| {
            sample(
                &text,
                &format!(
                    "steerdns_dns_queries_total{{zone=\"{zone}\",qtype=\"A\",rcode=\"{rcode}\",ecs=\"{ecs}\"}}"
                ),
            )
        };
        assert_eq!(q("a.example", "NOERROR", "yes"), Some(4), "{text}");
        assert_eq!(q("a.example", "NOERROR", "no"), Some(1));
        assert_eq!(q("b.example", "NOERROR", "yes"), Some(1));
        let s = |dc: &str| {
            sample(
                &text,
                &format!(
                    "steerdns_dns_service_answers_total{{zone=\"a.example\",record=\"www.a.example\",dc=\"{dc}\"}}"
                ),
            )
        };
        assert_eq!((s("dc1"), s("dc2")), (Some(2), Some(1)), "{text}");
    }

    #[test]
    fn series_with_known_labels_start_at_zero_and_geoip_failures_are_remembered() {
        let m = Metrics::new();
        let text = m.render();
        for line in [
            "steerdns_zone_reloads_total{result=\"error\"} 0",
            "steerdns_geoip_loads_total{result=\"error\"} 0",
            "steerdns_peer_exchanges_total{result=\"error\"} 0",
            "steerdns_tls_certificate_reloads_total{result=\"error\"} 0",
            "steerdns_peer_auth_refused_total{reason=\"bad_signature\"} 0",
            "steerdns_tcp_connections_refused_total{limit=\"per_client\"} 0",
            "steerdns_tcp_connections_timed_out_total{timeout=\"write\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        m.record_geoip_load(true, &[]);
        assert_eq!(
            sample(&m.render(), "steerdns_geoip_last_load_success "),
            Some(1)
        );
        m.record_geoip_load(false, &[]);
        let text = m.render();
        assert_eq!(sample(&text, "steerdns_geoip_last_load_success "), Some(0));
        assert_eq!(
            sample(&text, "steerdns_geoip_loads_total{result=\"error\"}"),
            Some(1)
        );
    }
}
