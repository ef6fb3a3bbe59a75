//! The operator's HTTP interface, on its own listener (loopback by default), and the peers'
//! exchange endpoint. The only module that uses the HTTP framework (axum). With `tls` set the
//! listener speaks HTTPS only (see `crate::tls`); the routes and their auth are the same.
//!
//! | method | path | what | auth |
//! |---|---|---|---|
//! | GET | `/` | status page (HTML, refreshes itself) | read |
//! | GET | `/live` | 200 while the process responds | none |
//! | GET | `/ready` | 200 once zones are loaded and the first probe round is done (never flips back), else 503 | none |
//! | GET | `/metrics` | Prometheus text format | read |
//! | GET | `/api/v1/state` | services, DCs, endpoints: local status, each node's vote and age, effective status, drains, peers | read |
//! | GET | `/api/v1/timeline` | the status page's timeline: a sample per period (10 s) of each DC's state per region and the answers sent to it, the last hour | read |
//! | GET | `/api/v1/explain?name=&client=&subnet=&type=` | why a client gets its answer | read |
//! | POST | `/api/v1/reload` | reload zones, GeoIP data and the TLS certificate (if any) | change |
//! | POST | `/api/v1/drain` | JSON `{dc, service?, reason?, for_seconds?, force?}` | change |
//! | POST | `/api/v1/undrain` | JSON `{dc, service?}` | change |
//! | GET | `/api/v1/peer/exchange` | this node's reports and drains, for peers | peer HMAC |
//!
//! "change": `Authorization: Bearer TOKEN` with the admin token; without a configured token,
//! changes are accepted from loopback clients only. "read": open, unless `protect_reads` is set,
//! then like "change". Tokens are compared in constant time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dns::answer::{self, Client, QType};

use crate::cluster::{self, Cluster, DrainRequest, RequestHeaders, ServeError};
use crate::state::Snapshots;
use crate::telemetry::metrics::StateObservation;
use crate::zone::{Name, RecordType};

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// What the admin API can ask the rest of the node to do.
pub trait Control: Send + Sync {
    /// Reloads zones, GeoIP data and the TLS certificate (if any); the text says what happened.
    fn reload(&self) -> Result<String, String>;
    /// Puts this node's probe counters into the metrics.
    fn observe_probes(&self, metrics: &crate::telemetry::metrics::Metrics);
}

/// Everything the handlers share.
pub struct AdminState {
    pub snapshots: Arc<Snapshots>,
    pub cluster: Arc<Cluster>,
    pub control: Arc<dyn Control>,
    pub token: Option<String>,
    pub protect_reads: bool,
    /// Latched: once ready, always ready.
    pub ready: AtomicBool,
    pub status_page: fn(&AdminState) -> String,
}

type Shared = Arc<AdminState>;

/// The routes.
pub fn router(state: Shared) -> Router {
    use axum::middleware::from_fn_with_state;
    let reads = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/api/v1/state", get(state_json))
        .route("/api/v1/timeline", get(timeline_json))
        .route("/api/v1/explain", get(explain))
        .route_layer(from_fn_with_state(state.clone(), require_read));
    let changes = Router::new()
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/drain", post(drain))
        .route("/api/v1/undrain", post(undrain))
        .route_layer(from_fn_with_state(state.clone(), require_change));
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route(cluster::EXCHANGE_PATH, get(exchange))
        .merge(reads)
        .merge(changes)
        // Every request body here is a small JSON object: refuse anything larger (413).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Reads pass when reads are open, or with the token.
async fn require_read(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorised_read(&state, request.headers(), peer.ip()) {
        return unauthorised();
    }
    next.run(request).await
}

/// Changes pass with the token (or from loopback when no token is configured).
async fn require_change(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorised_change(&state, request.headers(), peer.ip()) {
        return unauthorised();
    }
    next.run(request).await
}

/// Serves the admin API on `listener` until `shutdown`: HTTPS when given a TLS acceptor, else
/// plain HTTP. Either way the handlers see the client's address (`ConnectInfo<SocketAddr>`), and
/// shutdown lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Shared,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = state.snapshots.metrics.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let signal = async move { shutdown.cancelled().await };
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        }
        Some(acceptor) => {
            use axum::serve::ListenerExt;
            let listener = TlsListener(crate::tls::Incoming::new(listener, acceptor, metrics))
                // A no-op: axum provides `ConnectInfo<SocketAddr>` for any listener wrapped in
                // `tap_io` whose address is a `SocketAddr`, and for no other foreign listener.
                .tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        }
    }
}

/// The admin listener over TLS: connections come out of `tls::Incoming` with the handshake
/// done (failed handshakes never reach axum).
struct TlsListener(crate::tls::Incoming);

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.next().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Constant-time equality, so a token cannot be guessed byte by byte from response times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorised_change(state: &AdminState, headers: &HeaderMap, peer: IpAddr) -> bool {
    match &state.token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes())),
        None => peer.to_canonical().is_loopback(),
    }
}

fn authorised_read(state: &AdminState, headers: &HeaderMap, peer: IpAddr) -> bool {
    !state.protect_reads || authorised_change(state, headers, peer)
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(json!({ "error": "a valid bearer token is required" })),
    )
        .into_response()
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": reason.to_string() })),
    )
        .into_response()
}

async fn ready(State(state): State<Shared>) -> Response {
    let now = state.snapshots.health.load().ready;
    if now {
        state.ready.store(true, Ordering::Relaxed);
    }
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "waiting_for": "the first probe round" })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    let m = &state.snapshots.metrics;
    m.observe_state(&observe_state(&state.snapshots, &state.cluster));
    state.control.observe_probes(m);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

async fn status_page(State(state): State<Shared>) -> Response {
    Html((state.status_page)(&state)).into_response()
}

async fn state_json(State(state): State<Shared>) -> Response {
    axum::Json(crate::ops::status::state(&state.snapshots, &state.cluster)).into_response()
}

async fn timeline_json(State(state): State<Shared>) -> Response {
    let timeline = &state.snapshots.timeline;
    axum::Json(json!({
        "period_ms": timeline.period().as_millis() as u64,
        "samples": timeline.samples(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ExplainParams {
    name: String,
    #[serde(default)]
    client: Option<IpAddr>,
    #[serde(default)]
    subnet: Option<ipnet::IpNet>,
    #[serde(default, rename = "type")]
    qtype: Option<String>,
}

async fn explain(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Query<ExplainParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(p) = match params {
        Ok(p) => p,
        Err(e) => return bad_request(e.body_text()),
    };
    let qname = match Name::parse(&p.name) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    let qtype = match p.qtype.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("A") => QType::Known(RecordType::A),
        Some("AAAA") => QType::Known(RecordType::Aaaa),
        Some(other) => return bad_request(format!("type {other} is not A or AAAA")),
    };
    let (addr, ecs_prefix) = match p.subnet {
        Some(net) if net.prefix_len() > 0 => (net.network(), Some(net.prefix_len())),
        _ => (p.client.unwrap_or(peer.ip()), None),
    };
    let zones = state.snapshots.zones.load();
    let geo = state.snapshots.geo.load();
    let health = state.snapshots.health.load();
    let locator = crate::geo::locator(geo.as_deref());
    let client = Client {
        addr,
        ecs_prefix,
        locator,
        health: &**health,
        rotation: 0,
    };
    let ex = answer::explain(&zones, &qname, qtype, &client);
    // DNSSEC (issue 15): signed or not, and the key tag (never the key).
    let zone = zones.find(&qname);
    let dnssec = zone.map(|z| crate::dnssec::describe(z));
    let key_tag = zone.and_then(|z| z.dnssec.as_ref()).map(|d| d.signing.tag);
    let text = match &dnssec {
        Some(d) => format!("{ex}\ndnssec:    {d}"),
        None => ex.to_string(),
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if wants_json {
        axum::Json(json!({
            "name": qname.to_string(),
            "rcode": format!("{:?}", ex.answer.rcode),
            "scope": ex.answer.scope,
            "dc": ex.answer.service_dc.as_ref().map(|(_, dc)| dc),
            "answers": ex.answer.answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(),
            "signed": key_tag.is_some(),
            "key_tag": key_tag,
            "text": text,
        }))
        .into_response()
    } else {
        text.into_response()
    }
}

async fn reload(State(state): State<Shared>) -> Response {
    // A reload parses files and may take a second on a big zone: keep it off the runtime.
    let control = state.control.clone();
    let result = tokio::task::spawn_blocking(move || control.reload())
        .await
        .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
    match result {
        Ok(msg) => axum::Json(json!({ "ok": true, "message": msg })).into_response(),
        Err(msg) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({ "ok": false, "error": msg })),
        )
            .into_response(),
    }
}

/// A change's JSON body, or 400 with the reason.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(bad_request(format!("bad JSON: {e}"))))
}

/// The answer to a drain or undrain: the decision, or 409 with why it was refused.
fn decision(
    state: &AdminState,
    key: &str,
    result: Result<crate::health::drain::Drain, cluster::DrainRefused>,
) -> Response {
    match result {
        Ok(d) => axum::Json(json!({ "ok": true, key: d })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "{key} refused");
            state
                .snapshots
                .events
                .push("drain", format!("{key} refused: {e}"));
            (
                StatusCode::CONFLICT,
                axum::Json(json!({ "ok": false, "error": e.to_string() })),
            )
                .into_response()
        }
    }
}

async fn drain(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    match json_body::<DrainRequest>(&body) {
        Ok(req) => decision(&state, "drain", state.cluster.drain(req)),
        Err(response) => *response,
    }
}

#[derive(Deserialize)]
struct UndrainRequest {
    dc: String,
    #[serde(default)]
    service: Option<String>,
}

async fn undrain(State(state): State<Shared>, body: axum::body::Bytes) -> Response {
    match json_body::<UndrainRequest>(&body) {
        Ok(req) => decision(
            &state,
            "undrain",
            state.cluster.undrain(&req.dc, req.service.as_deref()),
        ),
        Err(response) => *response,
    }
}

async fn exchange(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let request = RequestHeaders::read(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    match state.cluster.serve_exchange(&request).await {
        Ok(served) => (
            [
                (
                    header::CONTENT_TYPE.as_str(),
                    "application/json".to_string(),
                ),
                (cluster::auth::H_SIGNATURE, served.signature),
            ],
            served.body,
        )
            .into_response(),
        Err(ServeError::Refused(e)) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e @ ServeError::Encode(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

/// The node's state for the metrics' gauges, read from the snapshots and the cluster.
fn observe_state(
    snapshots: &crate::state::Snapshots,
    cluster: &crate::cluster::Cluster,
) -> StateObservation {
    use crate::dns::answer::{Health as _, ramp_share};
    use crate::telemetry::metrics::StateObservation;
    use crate::telemetry::metrics::{
        DcLabels, DrainLabels, EndpointLabels, PeerLabels, RttLabels, VoteLabels,
    };
    let zones = snapshots.zones.load();
    let health = snapshots.health.load();
    let mut out = StateObservation::default();
    let now = crate::clock::now_ms();
    for (zone, svc) in zones.services() {
        for sdc in &svc.dcs {
            let dc = &zone.datacenters[sdc.dc].name;
            let mut any = false;
            for ip in &sdc.endpoints {
                let up = health.is_up(*ip, svc.check.as_deref());
                any |= up;
                let labels = EndpointLabels {
                    service: svc.name.arc().clone(),
                    dc: dc.clone(),
                    endpoint: ip.to_string(),
                };
                out.endpoints.push((labels, up));
            }
            let drained = health.is_drained(dc, svc.name.as_str());
            let labels = DcLabels {
                service: svc.name.arc().clone(),
                dc: dc.clone(),
            };
            if let Some(ramp) = svc.ramp {
                let started = health.dc_restored_ms(svc, dc, &sdc.endpoints);
                let share = match ramp_share(now.saturating_sub(started), ramp.as_millis() as u64) {
                    Some(share) if started > 0 && any && !drained => share,
                    _ if any && !drained => 1.0,
                    _ => 0.0,
                };
                out.ramps.push((labels.clone(), share));
            }
            out.dcs.push((labels, any && !drained, drained));
        }
        for order in health
            .steering
            .services
            .get(&svc.name)
            .into_iter()
            .flatten()
        {
            for d in &order.dcs {
                let labels = RttLabels {
                    service: svc.name.arc().clone(),
                    region: order.region.clone(),
                    dc: d.name.clone(),
                };
                let age = now.saturating_sub(d.heard_ms) as f64 / 1000.0;
                out.rtts.push((labels, d.rtt_ms / 1000.0, age));
            }
        }
    }
    for (key, verdict) in health.merged.endpoints.iter() {
        for v in health.merged.votes(verdict) {
            let labels = VoteLabels {
                endpoint: key.addr.to_string(),
                check: key.check.to_string(),
                node: v.node.to_string(),
                region: v.region.to_string(),
            };
            out.votes.push((labels, v.up, v.age_ms as f64 / 1000.0));
        }
    }
    for p in cluster.peers() {
        let age = p
            .last_ok_ms
            .map(|ok| now.saturating_sub(ok) as f64 / 1000.0);
        let labels = PeerLabels {
            peer: p.url.clone(),
        };
        out.peers.push((labels, age, p.consecutive_failures));
    }
    for d in health.drains.in_force(now) {
        let labels = DrainLabels {
            dc: d.dc.clone(),
            service: d.service.clone().unwrap_or_else(|| "*".to_string()),
        };
        let seconds = |ms: u64| ms as f64 / 1000.0;
        out.drains
            .push((labels, seconds(d.issued_ms), d.expires_ms.map(seconds)));
    }
    out.isolated = health.merged.isolated.contains(&cluster.settings.node);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
