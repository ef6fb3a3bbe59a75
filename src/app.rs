//! Wiring: load zones and GeoIP data (and the admin listener's TLS certificate, if any), start
//! the probers and the DNS frontend, reload on SIGHUP and on GeoIP file changes, shut down
//! cleanly.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cluster::{Cluster, ClusterSettings};
use crate::config::Settings;
use crate::dns::{self, Bound};
use crate::geo::GeoDb;
use crate::health::ProbeTarget;
use crate::health::merge::MergeSettings;
use crate::health::probe::HealthMonitor;
use crate::ops::admin::{self, AdminState, Control};
use crate::state::Snapshots;
use crate::telemetry::metrics::Metrics;
use crate::tls::ServerCert;
use crate::zone;
use crate::zone::ZoneSet;

/// How often the GeoIP and zone files are checked for changes.
const GEOIP_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long shutdown waits for tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The parts of a node that reloads and the admin API act on.
struct Core {
    settings: Settings,
    snapshots: Arc<Snapshots>,
    monitor: Mutex<Option<HealthMonitor>>,
    loader: ZoneLoader,
    /// The admin/peer listener's certificate, when it speaks HTTPS.
    tls: Option<Arc<ServerCert>>,
}

/// Parses zone directories on one dedicated thread. glibc's allocator keeps memory per thread
/// arena: parsing every reload on the same thread lets each one reuse what the last freed,
/// instead of leaving a zone set's worth of memory in a new arena per runtime thread.
struct ZoneLoader {
    jobs: Mutex<std::sync::mpsc::Sender<(PathBuf, std::sync::mpsc::Sender<LoadResult>)>>,
}

type LoadResult = Result<ZoneSet, zone::file::ZoneErrors>;

impl ZoneLoader {
    fn start() -> std::io::Result<ZoneLoader> {
        let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, std::sync::mpsc::Sender<LoadResult>)>();
        std::thread::Builder::new()
            .name("zone-loader".into())
            .spawn(move || {
                for (dir, reply) in rx {
                    let _ = reply.send(zone::file::load_dir(&dir));
                    release_freed_memory();
                }
            })?;
        Ok(ZoneLoader {
            jobs: Mutex::new(tx),
        })
    }

    /// Loads `dir` on the loader thread (blocking the caller until done).
    fn load(&self, dir: &Path) -> LoadResult {
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((dir.to_path_buf(), tx));
        match sent.ok().and_then(|()| rx.recv().ok()) {
            Some(result) => result,
            // The loader thread is gone (it cannot panic on bad input, but be safe): load here.
            None => zone::file::load_dir(dir),
        }
    }
}

impl Core {
    /// Re-reads the zone directory and swaps it in; probing follows the new zones (unchanged
    /// endpoints keep their health). A broken zone keeps the previous set serving.
    fn reload_zones(&self) -> Result<usize, zone::file::ZoneErrors> {
        let metrics = &self.snapshots.metrics;
        match self.loader.load(&self.settings.zones) {
            Ok(zones) => {
                let targets = probe_targets(&zones);
                let count = zones.zones.len();
                let old = self.snapshots.swap_zones(Arc::new(zones));
                free_when_unused(old);
                release_freed_memory();
                if let Some(m) = self
                    .monitor
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                {
                    let r = m.set_targets(targets);
                    info!(
                        zones = count,
                        probes_added = r.added.len(),
                        probes_removed = r.removed.len(),
                        "zones reloaded"
                    );
                }
                metrics.record_zone_load(true);
                self.snapshots
                    .events
                    .push("reload", format!("zones reloaded ({count} zone(s))"));
                Ok(count)
            }
            Err(errors) => {
                for e in &errors.0 {
                    error!(error = %e, "zone reload failed; keeping the previous zones");
                }
                metrics.record_zone_load(false);
                self.snapshots.events.push(
                    "reload",
                    format!(
                        "zone reload FAILED, previous zones kept: {}",
                        errors.0.first().map(|e| e.to_string()).unwrap_or_default()
                    ),
                );
                Err(errors)
            }
        }
    }

    /// Re-opens the GeoIP databases. A missing or corrupt file keeps the loaded ones in use.
    fn reload_geo(&self) -> Result<(), crate::geo::GeoError> {
        match GeoDb::open(&self.settings.geoip) {
            Ok(db) => {
                log_geo(&db, &self.snapshots.metrics, "GeoIP database reloaded");
                self.snapshots
                    .events
                    .push("geoip", "GeoIP database reloaded");
                self.snapshots.geo.store(Some(Arc::new(db)));
                Ok(())
            }
            Err(error) => {
                error!(%error, "GeoIP reload failed; keeping the loaded database");
                self.snapshots.metrics.record_geoip_load(false, &[]);
                self.snapshots.events.push(
                    "geoip",
                    format!("GeoIP reload FAILED, loaded database kept: {error}"),
                );
                Err(error)
            }
        }
    }

    /// Re-reads the TLS certificate and key, if the admin listener has them. Files that do not
    /// load (missing, unreadable, a key that does not match) keep the certificate in use.
    fn reload_tls(&self) -> Result<(), String> {
        let Some(cert) = &self.tls else {
            return Ok(());
        };
        let metrics = &self.snapshots.metrics;
        match cert.reload() {
            Ok(()) => {
                info!(cert = %cert.files().cert.display(), "TLS certificate reloaded");
                metrics.record_tls_cert_reload(true);
                self.snapshots
                    .events
                    .push("tls", "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                let e = format!("{e:#}");
                error!(error = %e, "TLS certificate reload failed; keeping the certificate in use");
                metrics.record_tls_cert_reload(false);
                self.snapshots.events.push(
                    "tls",
                    format!("TLS certificate reload FAILED, certificate in use kept: {e}"),
                );
                Err(e)
            }
        }
    }
}

impl Control for Core {
    fn reload(&self) -> Result<String, String> {
        // First, and whatever the zones say: a renewed certificate does not wait for a fixed zone.
        let tls = self.reload_tls();
        let zones = self.reload_zones().map_err(|e| e.to_string())?;
        self.reload_geo()
            .map_err(|e| format!("zones reloaded, but GeoIP: {e}"))?;
        match (tls, &self.tls) {
            (Err(e), _) => Err(format!(
                "zones and GeoIP data reloaded, but the TLS certificate: {e}"
            )),
            (Ok(()), Some(_)) => Ok(format!(
                "reloaded {zones} zone(s), the GeoIP data and the TLS certificate"
            )),
            (Ok(()), None) => Ok(format!("reloaded {zones} zone(s) and the GeoIP data")),
        }
    }

    fn observe_probes(&self, metrics: &Metrics) {
        let monitor = self.monitor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = monitor.as_ref() {
            let p = m.stats().probes;
            metrics.set_probe_counts(p.ok, p.failed, p.timed_out, p.latency.sum.as_secs_f64());
        }
    }
}

/// A running node.
pub struct Node {
    /// One per listen address, in the order given.
    pub dns: Vec<Bound>,
    pub admin: SocketAddr,
    pub snapshots: Arc<Snapshots>,
    core: Arc<Core>,
    shutdown: CancellationToken,
    dns_task: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Node {
    /// Loads the zones and GeoIP data, starts probing, the exchange with peers, the admin API and
    /// DNS. Fails, naming the cause, on a broken zone, a missing GeoIP file or a busy port.
    pub async fn start(settings: Settings) -> anyhow::Result<Node> {
        // reqwest is built without a default TLS provider; ring serves probes and peers.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // First: a bad certificate or key is a configuration error to report before the
        // seconds that loading zones and GeoIP data can take.
        let tls = settings.tls.clone().map(ServerCert::load).transpose()?;
        let tls_acceptor = tls.as_ref().map(|c| c.acceptor()).transpose()?;
        let metrics = Arc::new(Metrics::new());
        let loader = ZoneLoader::start().context("starting the zone loader thread")?;
        let zones = loader.load(&settings.zones).context(
            "loading zones (the directory is set with --zones DIR or zones: in the node file)",
        )?;
        metrics.record_zone_load(true);
        let geo = GeoDb::open(&settings.geoip)
            .context("loading GeoIP data (set with --geoip FILE or geoip: in the node file)")?;
        log_geo(&geo, &metrics, "GeoIP database loaded");

        let (mut monitor, local_health) = HealthMonitor::new(settings.probe_source);
        monitor.set_targets(probe_targets(&zones));
        let snapshots = Arc::new(Snapshots::new(zones, Some(geo), metrics));
        let cluster = Cluster::new(
            ClusterSettings {
                node: settings.node.clone(),
                region: settings.region.clone(),
                peers: settings.peers.clone(),
                peer_ca: settings.peer_ca.clone(),
                secret: settings.secret.clone(),
                exchange_interval: settings.exchange_interval,
                merge: MergeSettings {
                    stale_after_ms: settings.stale_after.as_millis() as u64,
                    quorum: settings.quorum,
                    // Set from the zones' checks at each merge.
                    settle_ms: 0,
                },
                state_dir: settings.state_dir.clone(),
            },
            local_health,
            snapshots.clone(),
        )?;
        let core = Arc::new(Core {
            settings: settings.clone(),
            snapshots: snapshots.clone(),
            monitor: Mutex::new(Some(monitor)),
            loader,
            tls,
        });

        let admin_listener = tokio::net::TcpListener::bind(settings.admin)
            .await
            .with_context(|| format!("binding the admin listener on {}", settings.admin))?;
        let admin_addr = admin_listener.local_addr()?;
        // Every address is bound before any is served: one that fails stops the start.
        anyhow::ensure!(!settings.listen.is_empty(), "no DNS listen address");
        let mut listeners = Vec::with_capacity(settings.listen.len());
        let mut bound = Vec::with_capacity(settings.listen.len());
        for &addr in &settings.listen {
            let sockets = dns::bind(addr)
                .await
                .with_context(|| format!("binding DNS on {addr}"))?;
            bound.push(
                sockets
                    .bound()
                    .with_context(|| format!("the DNS sockets bound on {addr}"))?,
            );
            listeners.push(sockets);
        }

        let shutdown = CancellationToken::new();
        let admin_state = Arc::new(AdminState {
            snapshots: snapshots.clone(),
            cluster: cluster.clone(),
            control: core.clone(),
            token: settings.admin_token.clone(),
            protect_reads: settings.protect_reads,
            ready: AtomicBool::new(false),
            status_page: |s| crate::ops::status::page(&s.snapshots, &s.cluster),
        });
        let mut tasks = Vec::new();
        let admin_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                admin::serve(admin_listener, tls_acceptor, admin_state, admin_shutdown).await
            {
                error!(error = %e, "admin listener stopped");
            }
        }));
        tasks.push(tokio::spawn(cluster.clone().run(shutdown.clone())));
        tasks.push(tokio::spawn(
            TimelineSampler {
                snapshots: snapshots.clone(),
                period: settings.timeline_period,
            }
            .run(shutdown.clone()),
        ));
        tasks.push(tokio::spawn(watch_services(
            snapshots.clone(),
            shutdown.clone(),
        )));
        let dns_task = tokio::spawn(dns::serve(
            snapshots.clone(),
            listeners,
            settings.dns,
            shutdown.clone(),
        ));
        let dns_addrs: Vec<String> = bound.iter().map(|b| b.udp.to_string()).collect();
        info!(
            node = %settings.node, region = %settings.region, dns = %dns_addrs.join(" "),
            admin = %admin_addr, admin_tls = settings.tls.is_some(), peers = settings.peers.len(),
            zones = %settings.zones.display(),
            "serving"
        );
        if let Some(path) = &settings.ready_file {
            // `dns` is the first listener's address (UDP and TCP share its port), as before
            // several were possible; `dns_all` has every listener.
            let body = serde_json::json!({
                "dns": dns_addrs.first(),
                "dns_all": bound
                    .iter()
                    .map(|b| serde_json::json!({
                        "udp": b.udp.to_string(),
                        "tcp": b.tcp.to_string(),
                    }))
                    .collect::<Vec<_>>(),
                "admin": admin_addr.to_string(),
            })
            .to_string();
            crate::files::write_atomically(path, body.as_bytes())
                .with_context(|| format!("writing ready file {}", path.display()))?;
        }
        Ok(Node {
            dns: bound,
            admin: admin_addr,
            snapshots,
            core,
            shutdown,
            dns_task,
            tasks,
        })
    }

    /// Reloads zones; see `Core::reload_zones`.
    pub fn reload_zones(&self) -> Result<usize, zone::file::ZoneErrors> {
        self.core.reload_zones()
    }

    /// Runs until SIGINT/SIGTERM (or the DNS server fails); SIGHUP reloads zones, GeoIP data and
    /// the TLS certificate, and a changed GeoIP file is reloaded by itself.
    pub async fn run_until_signalled(mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let geoip = self.core.settings.geoip.clone();
        let mut geo_stamp = file_stamps(&geoip);
        let zone_dir = self.core.settings.zones.clone();
        let mut zone_stamp = dir_stamps(&zone_dir);
        let mut watch = tokio::time::interval(GEOIP_WATCH_INTERVAL);
        let outcome = loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading zones, GeoIP data and the TLS certificate");
                    let core = self.core.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = core.reload_tls();
                        let _ = core.reload_zones();
                        let _ = core.reload_geo();
                    })
                    .await;
                    geo_stamp = file_stamps(&geoip);
                    zone_stamp = dir_stamps(&zone_dir);
                }
                _ = watch.tick() => {
                    let stamp = file_stamps(&geoip);
                    if stamp != geo_stamp {
                        geo_stamp = stamp;
                        let _ = self.core.reload_geo();
                    }
                    let stamp = dir_stamps(&zone_dir);
                    if stamp != zone_stamp {
                        zone_stamp = stamp;
                        info!("zone files changed: reloading");
                        let core = self.core.clone();
                        let _ = tokio::task::spawn_blocking(move || core.reload_zones()).await;
                    }
                }
                _ = term.recv() => break Ok(()),
                _ = tokio::signal::ctrl_c() => break Ok(()),
                result = &mut self.dns_task => {
                    break result.context("DNS task panicked").and_then(|r| r.context("serving DNS"));
                }
            }
        };
        self.stop().await;
        outcome
    }

    /// Cancels every task and waits for them, within a grace period.
    pub async fn stop(&mut self) {
        info!("shutting down");
        self.shutdown.cancel();
        let monitor = self
            .core
            .monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(m) = monitor
            && !m.shutdown(SHUTDOWN_GRACE).await
        {
            warn!("probers did not stop within the grace period");
        }
        for t in self.tasks.drain(..) {
            if tokio::time::timeout(SHUTDOWN_GRACE, t).await.is_err() {
                warn!("a task did not stop within the grace period");
            }
        }
        if !self.dns_task.is_finished()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut self.dns_task)
                .await
                .is_err()
        {
            warn!("DNS server did not stop within the grace period");
        }
    }
}

/// Fixes glibc's mmap threshold at 128 KiB. By default glibc raises the threshold each time a
/// large block is freed (up to 32 MiB), after which the big tables a zone load builds (node
/// maps, the zone text, parser scratch) come from the heap instead of their own mappings, and
/// each reload leaves them as holes the trim cannot return. Measured on 10,000 services x 10 DCs
/// (38 MiB after load): 90 MiB after reloads by default, 62 MiB with the threshold fixed.
/// Call once at start, before the runtime's threads exist.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD takes a byte count.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Drops a replaced zone set once nobody else holds it, waiting a moment for queries in flight
/// and readers to let go, so that the memory trim that follows finds it freed. (Whoever drops
/// the last reference frees it in any case; this only makes the trim effective.)
fn free_when_unused(mut old: Arc<ZoneSet>) {
    for _ in 0..100 {
        match Arc::try_unwrap(old) {
            Ok(set) => {
                drop(set);
                return;
            }
            Err(still_shared) => {
                old = still_shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Hands memory freed by a dropped zone set (and the parser's scratch) back to the system.
/// glibc keeps freed memory in per-thread arenas, and reloads run on whichever runtime thread is
/// free, so without this each reload can leave a whole zone set's worth of RSS behind.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the probers probe for a zone set.
pub fn probe_targets(zones: &ZoneSet) -> HashSet<ProbeTarget> {
    zones
        .probe_targets()
        .into_iter()
        .map(|(ip, check)| ProbeTarget::new(ip, check))
        .collect()
}

fn log_geo(db: &GeoDb, metrics: &Metrics, message: &'static str) {
    let dbs: Vec<(String, u64)> = db
        .describe()
        .into_iter()
        .map(|d| {
            info!(path = %d.path, kind = %d.database_type, built = d.build_epoch, "{message}");
            (d.path, d.build_epoch)
        })
        .collect();
    metrics.record_geoip_load(true, &dbs);
}

/// Takes a timeline sample every `period`: the status page's pictures of the last hour. A timer
/// is right here, as what it samples is time (answers sent per period, states over time).
struct TimelineSampler {
    snapshots: Arc<Snapshots>,
    period: Duration,
}

impl TimelineSampler {
    async fn run(self, shutdown: CancellationToken) {
        let s = &self.snapshots;
        s.timeline.set_period(self.period);
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let zones = s.zones.load();
            let health = s.health.load();
            let answers = |zone: &Arc<str>, record: &Arc<str>, dc: &Arc<str>| {
                s.metrics.service_answers_total(zone, record, dc)
            };
            s.timeline
                .record(&zones, &health, &answers, crate::clock::now_ms());
        }
    }
}

/// Logs when a service loses its last endpoint, and when it gets one back: the query path answers
/// by `when_all_down` in between, and counts each such answer.
async fn watch_services(snapshots: Arc<Snapshots>, shutdown: CancellationToken) {
    let mut all_down: HashSet<String> = HashSet::new();
    // The zone generation last looked at, and what the health said of every endpoint then.
    let mut last: Option<(u64, Vec<bool>)> = None;
    // Woken by every swap of the zones or the health: no polling, no missed change.
    let mut changes = snapshots.changes();
    loop {
        let generation = changes.borrow_and_update().zones;
        let health = snapshots.health.load_full();
        let zones = snapshots.zones.load_full();
        // Health is republished on every merge, so compare what it says, not which snapshot it
        // is.
        let state: Vec<bool> = zones
            .services()
            .flat_map(|(_, s)| {
                s.dcs.iter().flat_map(|d| {
                    d.endpoints
                        .iter()
                        .map(|ip| health.is_up(*ip, s.check.as_deref()))
                })
            })
            .collect();
        let unchanged = last
            .as_ref()
            .is_some_and(|(g, st)| *g == generation && *st == state);
        if !unchanged {
            last = Some((generation, state));
            all_down = report_all_down(&zones, &health, all_down);
        }
        // Let go of the snapshots before waiting: a reload waits for the replaced zone set to
        // be freed before it trims memory.
        drop((zones, health));
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Logs the services that lost their last endpoint since `all_down` was taken, and those that
/// got one back; returns the services with every endpoint down now.
fn report_all_down(
    zones: &ZoneSet,
    health: &crate::health::merge::EffectiveHealth,
    all_down: HashSet<String>,
) -> HashSet<String> {
    let mut now_down = HashSet::new();
    for (_, service) in zones.services() {
        let up = service.dcs.iter().any(|dc| {
            dc.endpoints
                .iter()
                .any(|ip| health.is_up(*ip, service.check.as_deref()))
        });
        if !up {
            now_down.insert(service.name.to_string());
        }
    }
    for name in now_down.difference(&all_down) {
        let service = zones
            .services()
            .find(|(_, s)| s.name.to_string() == *name)
            .map(|(_, s)| format!("{:?}", s.when_all_down))
            .unwrap_or_default();
        warn!(service = %name, when_all_down = %service, "every endpoint of the service is down");
    }
    for name in all_down.difference(&now_down) {
        info!(service = %name, "the service has an endpoint up again");
    }
    now_down
}

/// Modification time and size of each file, to notice a replaced database.
fn file_stamps(paths: &[std::path::PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Names, modification times and sizes of the zone files in a directory.
fn dir_stamps(
    dir: &std::path::Path,
) -> Vec<(std::path::PathBuf, Option<(std::time::SystemTime, u64)>)> {
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
    paths.sort();
    let stamps = file_stamps(&paths);
    paths.into_iter().zip(stamps).collect()
}
