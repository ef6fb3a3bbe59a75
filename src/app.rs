//! Wiring: load zones and GeoIP data, start the probers and the DNS frontend, reload on SIGHUP
//! and on GeoIP file changes, shut down cleanly.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::dns::{self, Bound};
use crate::geo::GeoDb;
use crate::health::ProbeTarget;
use crate::metrics::Metrics;
use crate::model::ZoneSet;
use crate::probe::HealthMonitor;
use crate::state::Snapshots;
use crate::zone_file;

/// How often the GeoIP files are checked for changes.
const GEOIP_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long shutdown waits for tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running node.
pub struct Node {
    pub dns: Bound,
    pub snapshots: Arc<Snapshots>,
    monitor: Mutex<Option<HealthMonitor>>,
    shutdown: CancellationToken,
    dns_task: JoinHandle<anyhow::Result<()>>,
    settings: Settings,
}

impl Node {
    /// Loads the zones and GeoIP data, starts probing and serving. Fails, naming the cause, on a
    /// broken zone, a missing GeoIP file or a port that cannot be bound.
    pub async fn start(settings: Settings) -> anyhow::Result<Node> {
        let metrics = Arc::new(Metrics::new());
        let zones = zone_file::load_dir(&settings.zones)
            .with_context(|| format!("loading zones from {}", settings.zones.display()))?;
        metrics.record_zone_load(true);
        let geo = GeoDb::open(&settings.geoip)?;
        log_geo(&geo, &metrics, "GeoIP database loaded");

        let (mut monitor, health) = HealthMonitor::new(settings.probe_source);
        monitor.set_targets(probe_targets(&zones));
        let snapshots = Arc::new(Snapshots::new(zones, Some(geo), health, metrics));

        let (udp, tcp) = dns::bind(settings.listen)
            .await
            .with_context(|| format!("binding DNS on {}", settings.listen))?;
        let bound = Bound {
            udp: udp.local_addr()?,
            tcp: tcp.local_addr()?,
        };
        let shutdown = CancellationToken::new();
        let dns_task = tokio::spawn(dns::serve(snapshots.clone(), udp, tcp, shutdown.clone()));
        tokio::spawn(watch_services(snapshots.clone(), shutdown.clone()));
        info!(udp = %bound.udp, tcp = %bound.tcp, zones = %settings.zones.display(), "serving DNS");
        if let Some(path) = &settings.ready_file {
            let body = serde_json::json!({ "dns": bound.udp.to_string() }).to_string();
            write_atomically(path, body.as_bytes())
                .with_context(|| format!("writing ready file {}", path.display()))?;
        }
        Ok(Node {
            dns: bound,
            snapshots,
            monitor: Mutex::new(Some(monitor)),
            shutdown,
            dns_task,
            settings,
        })
    }

    /// Re-reads the zone directory and swaps it in; probing follows the new zones (unchanged
    /// endpoints keep their health). A broken zone keeps the previous set serving.
    pub fn reload_zones(&self) -> Result<(), zone_file::ZoneErrors> {
        let metrics = &self.snapshots.metrics;
        match zone_file::load_dir(&self.settings.zones) {
            Ok(zones) => {
                let targets = probe_targets(&zones);
                let count = zones.zones.len();
                self.snapshots.zones.store(Arc::new(zones));
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
                Ok(())
            }
            Err(errors) => {
                for e in &errors.0 {
                    error!(error = %e, "zone reload failed; keeping the previous zones");
                }
                metrics.record_zone_load(false);
                Err(errors)
            }
        }
    }

    /// Re-opens the GeoIP databases. A missing or corrupt file keeps the loaded ones in use.
    pub fn reload_geo(&self) -> Result<(), crate::geo::GeoError> {
        match GeoDb::open(&self.settings.geoip) {
            Ok(db) => {
                log_geo(&db, &self.snapshots.metrics, "GeoIP database reloaded");
                self.snapshots.geo.store(Some(Arc::new(db)));
                Ok(())
            }
            Err(error) => {
                error!(%error, "GeoIP reload failed; keeping the loaded database");
                self.snapshots.metrics.record_geoip_load(false, &[]);
                Err(error)
            }
        }
    }

    /// Runs until SIGINT/SIGTERM (or the DNS server fails); SIGHUP reloads zones and GeoIP data,
    /// and a changed GeoIP file is reloaded by itself.
    pub async fn run_until_signalled(mut self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut geo_stamp = file_stamps(&self.settings.geoip);
        let mut watch = tokio::time::interval(GEOIP_WATCH_INTERVAL);
        let outcome = loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading zones and GeoIP data");
                    let _ = self.reload_zones();
                    let _ = self.reload_geo();
                    geo_stamp = file_stamps(&self.settings.geoip);
                }
                _ = watch.tick() => {
                    let stamp = file_stamps(&self.settings.geoip);
                    if stamp != geo_stamp {
                        geo_stamp = stamp;
                        let _ = self.reload_geo();
                    }
                }
                _ = term.recv() => break Ok(()),
                _ = tokio::signal::ctrl_c() => break Ok(()),
                result = &mut self.dns_task => {
                    break result.context("DNS task panicked").and_then(|r| r);
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
            .monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(m) = monitor
            && !m.shutdown(SHUTDOWN_GRACE).await
        {
            warn!("probers did not stop within the grace period");
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

/// Logs when a service loses its last endpoint, and when it gets one back: the query path answers
/// by `when_all_down` in between, and counts each such answer.
async fn watch_services(snapshots: Arc<Snapshots>, shutdown: CancellationToken) {
    let mut all_down: HashSet<String> = HashSet::new();
    // The snapshots last looked at, held (not their addresses): a freed snapshot's address can
    // be reused by the next one, which would then pass for "unchanged".
    let mut last: Option<(Arc<crate::health::HealthView>, Arc<ZoneSet>)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let health = snapshots.health.load_full();
        let zones = snapshots.zones.load_full();
        if let Some((h, z)) = &last
            && Arc::ptr_eq(h, &health)
            && Arc::ptr_eq(z, &zones)
        {
            continue;
        }
        last = Some((health.clone(), zones.clone()));
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
        all_down = now_down;
    }
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

/// Write to a temporary file, fsync, then rename over the target, so readers never see half a file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
