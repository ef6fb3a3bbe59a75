//! For the end-to-end benchmarks: start the release binary on loopback and read what it uses.

// Each bench includes this file and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `steerdns serve` on 127.0.0.1 ports of its own choosing; killed when dropped.
pub struct BenchNode {
    pub child: Child,
    pub dns: SocketAddr,
    pub admin: String,
    /// From spawning to the ready file.
    pub started_in: Duration,
}

impl BenchNode {
    /// Serves `zones` with the shipped city database, quiet logs, and `extra` flags; returns
    /// once the node has written its ready file (at most a minute).
    pub fn start(dir: &Path, zones: &Path, extra: &[&str]) -> BenchNode {
        let ready = dir.join("ready.json");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_steerdns"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .arg("--zones")
            .arg(zones)
            .arg("--geoip")
            .arg(root.join("geoip/dbip-city-lite-coarse-ipv4.mmdb"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting steerdns");
        let json = loop {
            if let Ok(t) = std::fs::read_to_string(&ready) {
                break t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "steerdns did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let v: serde_json::Value = serde_json::from_str(&json).expect("ready JSON");
        BenchNode {
            child,
            dns: v["dns"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("a DNS address"),
            admin: v["admin"].as_str().expect("an admin address").to_string(),
            started_in: started.elapsed(),
        }
    }

    /// Resident memory, threads and open file descriptors right now.
    pub fn usage(&self) -> Usage {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        Usage {
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0),
        }
    }
}

impl Drop for BenchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a node uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: usize,
}
