//! Wiring: load zones, bind the DNS frontend, run until shutdown; reload zones on SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Settings;
use crate::dns::{self, Bound};
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
        let snapshots = Arc::new(Snapshots::new(zones));
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
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _ = reload(&self.settings, &self.snapshots);
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

/// Write to a temporary file, fsync, then rename over the target, so readers never see half a file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
