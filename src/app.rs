//! Wiring: load zones, bind the DNS frontend, run until shutdown; reload zones on SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Settings;
use crate::dns::{self, Bound};
use crate::geo::GeoDb;
use crate::state::Snapshots;
use crate::zone_file;

/// A running node.
pub struct Node {
    pub dns: Bound,
    pub snapshots: Arc<Snapshots>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    settings: Settings,
}

impl Node {
    /// Loads the zones and starts serving. Fails, naming the cause, on a broken zone or a port
    /// that cannot be bound.
    pub async fn start(settings: Settings) -> anyhow::Result<Node> {
        let zones = zone_file::load_dir(&settings.zones)
            .with_context(|| format!("loading zones from {}", settings.zones.display()))?;
        let geo = GeoDb::open(&settings.geoip)?;
        for db in geo.describe() {
            info!(path = %db.path, kind = %db.database_type, built = db.build_epoch, "GeoIP database loaded");
        }
        let snapshots = Arc::new(Snapshots::new(zones, Some(geo)));
        let (udp, tcp) = dns::bind(settings.listen)
            .await
            .with_context(|| format!("binding DNS on {}", settings.listen))?;
        let bound = Bound {
            udp: udp.local_addr()?,
            tcp: tcp.local_addr()?,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dns::serve(snapshots.clone(), udp, tcp, shutdown.clone()));
        info!(udp = %bound.udp, tcp = %bound.tcp, zones = %settings.zones.display(), "serving DNS");
        if let Some(path) = &settings.ready_file {
            let body = serde_json::json!({ "dns": bound.udp.to_string() }).to_string();
            write_atomically(path, body.as_bytes())
                .with_context(|| format!("writing ready file {}", path.display()))?;
        }
        Ok(Node {
            dns: bound,
            snapshots,
            shutdown,
            task,
            settings,
        })
    }

    /// Re-reads the zone directory. A broken zone keeps the previous set serving.
    pub fn reload_zones(&self) -> Result<(), zone_file::ZoneErrors> {
        reload(&self.settings, &self.snapshots)
    }

    /// Runs until SIGINT/SIGTERM (or the DNS server fails), reloading zones on SIGHUP.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut task = self.task;
        let mut geo_stamp = file_stamps(&self.settings.geoip);
        let mut watch = tokio::time::interval(GEOIP_WATCH_INTERVAL);
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _ = reload(&self.settings, &self.snapshots);
                    let _ = reload_geo(&self.settings, &self.snapshots);
                    geo_stamp = file_stamps(&self.settings.geoip);
                }
                _ = watch.tick() => {
                    let stamp = file_stamps(&self.settings.geoip);
                    if stamp != geo_stamp {
                        geo_stamp = stamp;
                        let _ = reload_geo(&self.settings, &self.snapshots);
                    }
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                result = &mut task => {
                    return result.context("DNS task panicked")?;
                }
            }
        }
        info!("shutting down");
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(result) => result.context("DNS task panicked")?,
            Err(_) => {
                error!("DNS server did not stop within 5 s");
                Ok(())
            }
        }
    }
}

fn reload(settings: &Settings, snapshots: &Snapshots) -> Result<(), zone_file::ZoneErrors> {
    match zone_file::load_dir(&settings.zones) {
        Ok(zones) => {
            info!(zones = zones.zones.len(), "zones reloaded");
            snapshots.zones.store(Arc::new(zones));
            Ok(())
        }
        Err(errors) => {
            for e in &errors.0 {
                error!(error = %e, "zone reload failed; keeping the previous zones");
            }
            Err(errors)
        }
    }
}

/// How often the GeoIP files are checked for changes.
const GEOIP_WATCH_INTERVAL: Duration = Duration::from_secs(2);

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

/// Re-opens the GeoIP databases. A missing or corrupt file keeps the loaded ones in use.
pub fn reload_geo(settings: &Settings, snapshots: &Snapshots) -> Result<(), crate::geo::GeoError> {
    match GeoDb::open(&settings.geoip) {
        Ok(db) => {
            for d in db.describe() {
                info!(path = %d.path, kind = %d.database_type, built = d.build_epoch, "GeoIP database reloaded");
            }
            snapshots.geo.store(Some(Arc::new(db)));
            Ok(())
        }
        Err(error) => {
            error!(%error, "GeoIP reload failed; keeping the loaded database");
            Err(error)
        }
    }
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
