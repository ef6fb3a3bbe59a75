//! What a node shows about itself: the JSON state (per service, DC and endpoint: each node's
//! vote, its age, the effective status, drains) and the HTML status page built from it.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::merge::EndpointKey;
use crate::model::Policy;
use crate::peers::{Cluster, now_ms};
use crate::state::Snapshots;

/// The state API's document.
pub fn state(snapshots: &Snapshots, cluster: &Cluster) -> Value {
    let zones = snapshots.zones.load();
    let health = snapshots.health.load();
    let now = now_ms();
    let me = &cluster.settings.node;
    let mut services = Vec::new();
    for (zone, svc) in zones.services() {
        let mut dcs = Vec::new();
        for sdc in &svc.dcs {
            let dc = &zone.datacenters[sdc.dc].name;
            let drained = health.is_drained(dc, svc.name.as_str());
            let mut endpoints = Vec::new();
            let mut up_count = 0;
            for ip in &sdc.endpoints {
                let up = health.is_up(*ip, svc.check.as_deref());
                if up {
                    up_count += 1;
                }
                let verdict = svc
                    .check
                    .as_ref()
                    .and_then(|c| health.merged.endpoints.get(&EndpointKey::new(*ip, c)));
                let votes = verdict.map(|v| v.votes.clone()).unwrap_or_default();
                let local = votes.iter().find(|v| &v.node == me).map(|v| v.up);
                endpoints.push(json!({
                    "address": ip.to_string(),
                    "effective": if up { "up" } else { "down" },
                    "local": local.map(|u| if u { "up" } else { "down" }),
                    "down_votes": verdict.map(|v| v.down_votes),
                    "counted_votes": verdict.map(|v| v.counted_votes),
                    "votes": votes,
                }));
            }
            dcs.push(json!({
                "name": dc,
                "drained": drained,
                "effective": if drained { "drained" } else if up_count == 0 { "down" } else { "up" },
                "endpoints": endpoints,
            }));
        }
        services.push(json!({
            "zone": zone.apex.as_str(),
            "name": svc.name.as_str(),
            "policy": policy_name(&svc.policy),
            "check": svc.check.as_ref().map(|c| c.to_string()),
            "ttl": svc.ttl,
            "degraded_ttl": svc.degraded_ttl,
            "when_all_down": format!("{:?}", svc.when_all_down),
            "dcs": dcs,
        }));
    }
    let drains: Vec<Value> = health
        .drains
        .entries
        .values()
        .map(|d| {
            json!({
                "dc": d.dc,
                "service": d.service,
                "reason": d.reason,
                "active": d.active,
                "in_force": d.in_force(now),
                "expires_ms": d.expires_ms,
                "issued_ms": d.issued_ms,
                "issued_by": d.issued_by,
            })
        })
        .collect();
    let reports: Vec<Value> = cluster
        .reports()
        .iter()
        .map(|r| {
            json!({
                "node": r.node,
                "region": r.region,
                "version": r.version,
                "age_ms": now.saturating_sub(r.generated_ms),
                "ready": r.ready,
            })
        })
        .collect();
    json!({
        "node": { "id": me, "region": cluster.settings.region, "ready": health.ready },
        "now_ms": now,
        "isolated": health.merged.isolated,
        "nodes": reports,
        "peers": cluster.peers(),
        "drains": drains,
        "services": services,
    })
}

fn policy_name(p: &Policy) -> &'static str {
    match p {
        Policy::Nearest => "nearest",
        Policy::Failover => "failover",
        Policy::Weighted(_) => "weighted",
        Policy::Geo { .. } => "geo",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page: server-rendered, no external assets, refreshing itself every 2 seconds.
pub fn page(snapshots: &Snapshots, cluster: &Cluster) -> String {
    let st = state(snapshots, cluster);
    let mut h = String::new();
    let node = &st["node"];
    let _ = write!(
        h,
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>steerdns {id}</title><style>
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}} table{{border-collapse:collapse;margin:.5em 0 1.5em}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}} .up{{background:#c8f0c8}} .down{{background:#f6c0c0}}
.drained{{background:#f3e0a0}} .stale{{color:#999}} h2{{margin-top:1.2em}}
</style></head><body><h1>steerdns — node {id} ({region})</h1><p>ready: {ready}</p>"#,
        id = esc(node["id"].as_str().unwrap_or("")),
        region = esc(node["region"].as_str().unwrap_or("")),
        ready = node["ready"],
    );
    if let Some(iso) = st["isolated"].as_array().filter(|a| !a.is_empty()) {
        let _ = write!(
            h,
            "<p class=down>isolation guard: ignoring votes of {}</p>",
            esc(&iso
                .iter()
                .map(|v| v.as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    for svc in st["services"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<h2>{} <small>({}, check {})</small></h2><table><tr><th>DC</th><th>endpoint</th><th>effective</th><th>votes (node: status, age)</th></tr>",
            esc(svc["name"].as_str().unwrap_or("")),
            esc(svc["policy"].as_str().unwrap_or("")),
            esc(svc["check"].as_str().unwrap_or("none")),
        );
        for dc in svc["dcs"].as_array().into_iter().flatten() {
            let dc_state = dc["effective"].as_str().unwrap_or("");
            for ep in dc["endpoints"].as_array().into_iter().flatten() {
                let eff = if dc_state == "drained" {
                    "drained"
                } else {
                    ep["effective"].as_str().unwrap_or("")
                };
                let mut votes = String::new();
                for v in ep["votes"].as_array().into_iter().flatten() {
                    let class = if v["up"].as_bool() == Some(true) {
                        "up"
                    } else {
                        "down"
                    };
                    let stale = if v["fresh"].as_bool() == Some(true) {
                        ""
                    } else {
                        " stale"
                    };
                    let _ = write!(
                        votes,
                        "<span class=\"{class}{stale}\">{}: {} {}s</span> ",
                        esc(v["node"].as_str().unwrap_or("")),
                        class,
                        v["age_ms"].as_u64().unwrap_or(0) / 1000
                    );
                }
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td class=\"{eff}\">{eff}</td><td>{votes}</td></tr>",
                    esc(dc["name"].as_str().unwrap_or("")),
                    esc(ep["address"].as_str().unwrap_or("")),
                );
            }
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Drains</h2><table><tr><th>DC</th><th>service</th><th>reason</th><th>expires</th><th>by</th></tr>");
    for d in st["drains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["in_force"].as_bool() == Some(true))
    {
        let _ = write!(
            h,
            "<tr class=drained><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(d["dc"].as_str().unwrap_or("")),
            esc(d["service"].as_str().unwrap_or("all")),
            esc(d["reason"].as_str().unwrap_or("")),
            d["expires_ms"]
                .as_u64()
                .map(|e| format!("in {} s", e.saturating_sub(now_ms()) / 1000))
                .unwrap_or_else(|| "never".into()),
            esc(d["issued_by"].as_str().unwrap_or("")),
        );
    }
    h.push_str("</table><h2>Nodes</h2><table><tr><th>node</th><th>region</th><th>report age</th><th>ready</th></tr>");
    for n in st["nodes"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td></tr>",
            esc(n["node"].as_str().unwrap_or("")),
            esc(n["region"].as_str().unwrap_or("")),
            n["age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            n["ready"],
        );
    }
    h.push_str("</table><p><small>IP Geolocation by <a href=\"https://db-ip.com\">DB-IP</a></small></p></body></html>");
    h
}
