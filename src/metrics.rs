//! Every metric name and label in one place (Prometheus, via prometheus-client). Other modules
//! call the typed `record_*` methods; only `admin` renders the registry.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The zone apex, or `-` for names outside every zone.
    pub zone: String,
    pub qtype: String,
    pub rcode: String,
    /// `yes` when the query carried an EDNS Client Subnet option.
    pub ecs: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub zone: String,
    pub record: String,
    /// The data center the answer came from (`-` when none).
    pub dc: String,
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

/// The node's metrics.
pub struct Metrics {
    pub registry: Registry,
    queries: Family<QueryLabels, Counter>,
    service_answers: Family<ServiceLabels, Counter>,
    all_down: Family<ServiceLabels, Counter>,
    query_duration: Histogram,
    zone_reloads: Family<ResultLabels, Counter>,
    zone_last_reload_ok: Gauge,
    zone_last_reload_time: Gauge<f64, AtomicU64>,
    geoip_loads: Family<ResultLabels, Counter>,
    geoip_build_time: Family<DatabaseLabels, Gauge>,
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
        let query_duration = Histogram::new(exponential_buckets(1e-6, 2.0, 18));
        registry.register_with_unit(
            "dns_query_duration",
            "Time from a parsed request to the response handed to the socket",
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
        let geoip_build_time = Family::<DatabaseLabels, Gauge>::default();
        registry.register_with_unit(
            "geoip_build_timestamp",
            "Build time of each loaded GeoIP database (Unix time)",
            Unit::Seconds,
            geoip_build_time.clone(),
        );
        Metrics {
            registry,
            queries,
            service_answers,
            all_down,
            query_duration,
            zone_reloads,
            zone_last_reload_ok,
            zone_last_reload_time,
            geoip_loads,
            geoip_build_time,
        }
    }

    pub fn record_query(&self, labels: &QueryLabels, seconds: f64) {
        self.queries.get_or_create(labels).inc();
        self.query_duration.observe(seconds);
    }

    pub fn record_service_answer(&self, labels: &ServiceLabels, all_down: bool) {
        self.service_answers.get_or_create(labels).inc();
        if all_down {
            self.all_down.get_or_create(labels).inc();
        }
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

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
