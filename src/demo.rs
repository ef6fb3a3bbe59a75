//! The multi-region demo without Docker: three steerdns nodes (three regions) and three small
//! HTTP backends (three DCs) on loopback addresses, as child processes of `steerdns demo`.
//! Also the backend itself (`steerdns demo-backend`), which Docker's demo uses too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The demo's regions: (node, region, DNS/admin address).
pub const NODES: [(&str, &str, &str); 3] = [
    ("eu-1", "eu", "127.0.0.1"),
    ("us-1", "us", "127.0.0.2"),
    ("ap-1", "ap", "127.0.0.3"),
];
/// The demo's data centers: (name, backend address, latitude, longitude).
pub const DCS: [(&str, &str, f64, f64); 3] = [
    ("fra", "127.0.0.11", 50.11, 8.68),
    ("iad", "127.0.0.12", 38.95, -77.45),
    ("sin", "127.0.0.13", 1.35, 103.82),
];
pub const DNS_PORT: u16 = 5300;
pub const ADMIN_PORT: u16 = 8053;
pub const BACKEND_PORT: u16 = 8080;

/// The demo zone for the given backend addresses (loopback here, container addresses in Docker).
pub fn zone_yaml(addresses: [&str; 3]) -> String {
    let mut dcs = String::new();
    let mut endpoints = String::new();
    for ((name, _, lat, lon), addr) in DCS.iter().zip(addresses) {
        dcs.push_str(&format!("  {name}: {{ location: [{lat}, {lon}] }}\n"));
        endpoints.push_str(&format!("        {name}: [{addr}]\n"));
    }
    format!(
        "# The multi-region demo's zone (written by `steerdns demo`).
zone: api.example.com
ttl: 300
soa: {{ primary: ns1, contact: hostmaster@example.com, minimum: 60 }}
nameservers: {{ ns1: [127.0.0.1], ns2: [127.0.0.2], ns3: [127.0.0.3] }}
datacenters:
{dcs}checks:
  web: {{ http: {{ port: {BACKEND_PORT}, path: /healthz, expect: [200] }}, interval: 1s, timeout: 800ms, fall: 2, rise: 2 }}
records:
  www:
    service:
      ttl: 30
      check: web
      endpoints:
{endpoints}  status: {{ TXT: \"steerdns multi-region demo\" }}
"
    )
}

/// Runs the local demo until Ctrl-C; `dir` receives the zone, configs, state and logs.
pub fn run(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the steerdns binary")?;
    let geoip: Vec<PathBuf> = crate::config::DEFAULT_GEOIP
        .iter()
        .map(PathBuf::from)
        .collect();
    for g in &geoip {
        anyhow::ensure!(
            g.exists(),
            "{} not found: run the demo from the repository root",
            g.display()
        );
    }
    std::fs::create_dir_all(dir.join("zones"))?;
    std::fs::write(
        dir.join("zones/demo.yaml"),
        zone_yaml([DCS[0].1, DCS[1].1, DCS[2].1]),
    )?;
    std::fs::write(dir.join("secret"), "demo-secret-change-me\n")?;
    let mut children: Vec<(String, Child)> = Vec::new();
    let log = |name: &str| -> anyhow::Result<std::fs::File> {
        Ok(std::fs::File::create(dir.join(format!("{name}.log")))?)
    };
    for (name, addr, _, _) in DCS {
        let child = Command::new(&exe)
            .args([
                "demo-backend",
                "--listen",
                &format!("{addr}:{BACKEND_PORT}"),
                "--name",
                name,
            ])
            .stdin(Stdio::null())
            .stdout(log(&format!("backend-{name}"))?)
            .stderr(log(&format!("backend-{name}"))?)
            .spawn()?;
        std::fs::write(
            dir.join(format!("backend-{name}.pid")),
            child.id().to_string(),
        )?;
        children.push((format!("backend {name}"), child));
    }
    for (node, region, addr) in NODES {
        let mut cmd = Command::new(&exe);
        cmd.args(["serve", "--node", node, "--region", region])
            .args(["--listen", &format!("{addr}:{DNS_PORT}")])
            .args(["--admin", &format!("{addr}:{ADMIN_PORT}")])
            .arg("--zones")
            .arg(dir.join("zones"))
            .arg("--state-dir")
            .arg(dir.join(format!("state-{node}")))
            .arg("--secret-file")
            .arg(dir.join("secret"))
            .args(["--probe-source", addr]);
        for g in &geoip {
            cmd.arg("--geoip").arg(g);
        }
        for (_, _, other) in NODES.iter().filter(|(n, _, _)| *n != node) {
            cmd.args(["--peer", &format!("http://{other}:{ADMIN_PORT}")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log(node)?)
            .stderr(log(node)?)
            .spawn()?;
        children.push((format!("node {node}"), child));
    }
    println!(
        "steerdns demo: three regions, three data centers, on loopback (files in {dir})

  nodes     eu-1 127.0.0.1, us-1 127.0.0.2, ap-1 127.0.0.3  (DNS port {DNS_PORT}, admin port {ADMIN_PORT})
  backends  fra 127.0.0.11, iad 127.0.0.12, sin 127.0.0.13   (HTTP port {BACKEND_PORT})

Try:
  dig @127.0.0.1 -p {DNS_PORT} www.api.example.com +subnet=81.2.69.0/24 +short   # Europe -> fra (127.0.0.11)
  dig @127.0.0.2 -p {DNS_PORT} www.api.example.com +subnet=8.8.8.0/24 +short     # America -> iad (127.0.0.12)
  dig @127.0.0.3 -p {DNS_PORT} www.api.example.com +subnet=1.1.1.0/24 +short     # Oceania -> sin (127.0.0.13)
  open http://127.0.0.1:{ADMIN_PORT}/  (status page)          steerdns status --admin http://127.0.0.1:{ADMIN_PORT}
  kill $(cat {dir}/backend-fra.pid)   # fail fra: Europe moves to the next DC on every node within ~3 s
  steerdns drain iad --reason maintenance --admin http://127.0.0.2:{ADMIN_PORT}

Ctrl-C stops everything.",
        dir = dir.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    for (name, mut child) in children {
        let _ = child.kill();
        let _ = child.wait();
        println!("stopped {name}");
    }
    Ok(())
}

/// A tiny HTTP/1.1 server that answers 200 "ok NAME" to everything: a DC's backend in the demo.
pub fn backend(listen: std::net::SocketAddr, name: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        eprintln!("demo backend {name} listening on {listen}");
        let body = format!("ok {name}\n");
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                // One request per connection; the prober opens a fresh one each time.
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_demo_zone_is_the_generated_one() {
        let committed = include_str!("../demo/docker/zones/demo.yaml");
        assert_eq!(
            committed,
            zone_yaml(["172.28.0.11", "172.28.0.12", "172.28.0.13"])
        );
    }

    #[test]
    fn the_demo_zone_is_valid() {
        let z = crate::zone::file::parse_zone(
            &zone_yaml(["127.0.0.11", "127.0.0.12", "127.0.0.13"]),
            "demo.yaml",
        )
        .unwrap();
        assert_eq!(z.datacenters.len(), 3);
    }
}
