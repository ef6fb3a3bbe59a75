//! What a node shows about itself: the JSON state (per service, DC and endpoint: each node's
//! vote, its age, the effective status, drains) and the HTML status page built from it.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::cluster::Cluster;
use crate::dns::answer::{Health as _, ramp_share};
use crate::health::merge::EndpointKey;
use crate::state::Snapshots;
use crate::zone::Policy;

mod pictures;

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
                let votes: Vec<_> = verdict
                    .map(|v| health.merged.votes(v).collect())
                    .unwrap_or_default();
                let local = votes.iter().find(|v| *v.node == **me).map(|v| v.up);
                endpoints.push(json!({
                    "address": ip.to_string(),
                    "effective": if up { "up" } else { "down" },
                    "local": local.map(|u| if u { "up" } else { "down" }),
                    "down_votes": verdict.map(|v| v.down_votes),
                    "counted_votes": verdict.map(|v| v.counted_votes),
                    "votes": votes,
                }));
            }
            // A DC in its recovery ramp: since when (the merged view's time) and its share now.
            let ramp = svc
                .ramp
                .filter(|_| up_count > 0 && !drained)
                .and_then(|ramp| {
                    let started = health.dc_restored_ms(svc, dc, &sdc.endpoints);
                    let ramp_ms = ramp.as_millis() as u64;
                    let share =
                        ramp_share(now.saturating_sub(started), ramp_ms).filter(|_| started > 0)?;
                    Some(json!({
                        "started_ms": started,
                        "ends_ms": started + ramp_ms,
                        "share": (share * 1000.0).round() / 1000.0,
                    }))
                });
            dcs.push(json!({
                "name": dc,
                "drained": drained,
                "effective": if drained { "drained" } else if up_count == 0 { "down" } else { "up" },
                "ramp": ramp,
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
            "ramp_seconds": svc.ramp.map(|r| r.as_secs_f64()),
            "latency": latency_orders(&health.steering, &svc.name, now),
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
        // Issue 18: where drains are kept; null when this node keeps none and refuses them.
        "drains_file": cluster.drains_file().map(|f| f.display().to_string()),
        "services": services,
        "events": snapshots.events.recent(),
    })
}

/// The latency policy's order per region for a service, with each DC's RTT and its age.
fn latency_orders(
    steering: &crate::health::merge::Steering,
    service: &crate::zone::Name,
    now: u64,
) -> Value {
    let Some(orders) = steering.services.get(service) else {
        return Value::Null;
    };
    orders
        .iter()
        .map(|o| {
            json!({
                "region": &*o.region,
                "dcs": o.dcs.iter().map(|d| json!({
                    "dc": &*d.name,
                    "rtt_ms": (d.rtt_ms * 1000.0).round() / 1000.0,
                    "age_ms": now.saturating_sub(d.heard_ms),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn policy_name(p: &Policy) -> &'static str {
    match p {
        Policy::Nearest => "nearest",
        Policy::Latency => "latency",
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

/// A representative client per continent, for "what would a client there get".
const CONTINENT_CLIENTS: [(&str, &str, (f64, f64)); 6] = [
    ("AF", "ZA", (-26.2, 28.0)),
    ("AS", "JP", (35.7, 139.7)),
    ("EU", "DE", (50.1, 8.7)),
    ("NA", "US", (39.0, -95.0)),
    ("OC", "AU", (-33.9, 151.2)),
    ("SA", "BR", (-23.5, -46.6)),
];

/// Where a continent's representative client is sent for one service.
pub struct ContinentAnswer {
    pub continent: &'static str,
    /// The client's location (latitude, longitude).
    pub from: (f64, f64),
    /// The DC chosen, if any.
    pub dc: Option<String>,
    /// Every endpoint is down: the answer follows `when_all_down`.
    pub all_down: bool,
}

impl ContinentAnswer {
    /// As the answers table shows it.
    fn label(&self) -> String {
        let dc = self.dc.as_deref().unwrap_or("—");
        if self.all_down {
            format!("{dc} (all down)")
        } else {
            dc.to_string()
        }
    }
}

/// The DC each service answers with for a client in each continent, by the live health.
pub fn answers_by_continent(snapshots: &Snapshots) -> Vec<(String, Vec<ContinentAnswer>)> {
    use crate::dns::answer::{Client, select};
    use crate::geo::{Location, StaticLocator};
    use crate::zone::RecordType;
    // Documentation-only addresses (RFC 2544 benchmark range), never sent anywhere: each stands
    // for one continent in a fixed table.
    let locator = StaticLocator {
        entries: CONTINENT_CLIENTS
            .iter()
            .enumerate()
            .map(|(i, (cont, country, coords))| {
                let net: ipnet::IpNet =
                    format!("198.18.{i}.0/24").parse().expect("a valid network");
                (
                    net,
                    Location {
                        continent: Some(cont.to_string()),
                        country: Some(country.to_string()),
                        subdivision: None,
                        coordinates: Some(*coords),
                    },
                )
            })
            .collect(),
    };
    let zones = snapshots.zones.load();
    let health = snapshots.health.load();
    let mut out = Vec::new();
    for (zone, svc) in zones.services() {
        let mut row = Vec::new();
        for (i, (cont, _, coords)) in CONTINENT_CLIENTS.iter().enumerate() {
            let client = Client {
                addr: format!("198.18.{i}.1").parse().expect("a valid address"),
                ecs_prefix: None,
                locator: &locator,
                health: &**health,
                rotation: 0,
            };
            let sel = select(zone, svc, RecordType::A, &client);
            let sel = if sel.addresses.is_empty() {
                select(zone, svc, RecordType::Aaaa, &client)
            } else {
                sel
            };
            row.push(ContinentAnswer {
                continent: cont,
                from: *coords,
                dc: sel
                    .chosen_dc()
                    .and_then(|d| svc.dcs.get(d))
                    .and_then(|d| zone.datacenters.get(d.dc))
                    .map(|d| d.name.to_string()),
                all_down: sel.all_down,
            });
        }
        out.push((svc.name.as_str().to_string(), row));
    }
    out
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
.drained{{background:#f3e0a0}} .stale{{color:#999}} .none{{color:#999}} h2{{margin-top:1.2em}} small{{color:#666}}
</style></head><body><h1>steerdns — node {id} ({region})</h1><p>ready: {ready}</p>"#,
        id = esc(node["id"].as_str().unwrap_or("")),
        region = esc(node["region"].as_str().unwrap_or("")),
        ready = node["ready"],
    );
    if let Some(iso) = st["isolated"].as_array().filter(|a| !a.is_empty()) {
        let _ = write!(
            h,
            "<p class=down id=isolated>isolation guard: ignoring the votes of {}</p>",
            esc(&iso
                .iter()
                .map(|v| v.as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }

    let answers = answers_by_continent(snapshots);
    h.push_str("<h2>The last hour</h2>");
    h.push_str(&pictures::timeline_svg(
        &snapshots.timeline.samples(),
        snapshots.timeline.period(),
    ));
    h.push_str("<h2>Where clients are sent now</h2>");
    h.push_str(&pictures::map_svg(&snapshots.zones.load(), &st, &answers));

    // DCs × regions: each node's view of each DC (up when it sees an endpoint up).
    let nodes: Vec<(String, String)> = st["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or("").to_string(),
                n["region"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    h.push_str("<h2>Data centers by region</h2><table id=matrix><tr><th>service</th><th>DC</th>");
    for (n, r) in &nodes {
        let _ = write!(h, "<th>{} <small>{}</small></th>", esc(r), esc(n));
    }
    h.push_str("<th>effective</th></tr>");
    for svc in st["services"].as_array().into_iter().flatten() {
        for dc in svc["dcs"].as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td>",
                esc(svc["name"].as_str().unwrap_or("")),
                esc(dc["name"].as_str().unwrap_or(""))
            );
            for (n, _) in &nodes {
                let mut seen = None;
                for ep in dc["endpoints"].as_array().into_iter().flatten() {
                    for v in ep["votes"].as_array().into_iter().flatten() {
                        if v["node"].as_str() == Some(n.as_str()) {
                            let up = v["up"].as_bool() == Some(true);
                            let fresh = v["fresh"].as_bool() == Some(true);
                            let cur = seen.get_or_insert((false, fresh));
                            cur.0 |= up;
                        }
                    }
                }
                match seen {
                    Some((up, fresh)) => {
                        let class = if up { "up" } else { "down" };
                        let stale = if fresh { "" } else { " stale" };
                        let _ = write!(
                            h,
                            "<td class=\"{class}{stale}\">{class}{}</td>",
                            if fresh { "" } else { " (stale)" }
                        );
                    }
                    None => h.push_str("<td class=none>no check</td>"),
                }
            }
            let eff = dc["effective"].as_str().unwrap_or("");
            let ramp = match dc["ramp"]["share"].as_f64() {
                Some(share) => format!(
                    " data-ramp=\"{share}\">{eff}, ramping: {:.0}% of its clients",
                    share * 100.0
                ),
                None => format!(">{eff}"),
            };
            let _ = write!(
                h,
                "<td class=\"{eff}\" data-dc=\"{}\"{ramp}</td></tr>",
                esc(dc["name"].as_str().unwrap_or(""))
            );
        }
    }
    h.push_str("</table>");

    h.push_str("<h2>Answers by continent</h2><table id=answers><tr><th>service</th>");
    for (cont, _, _) in CONTINENT_CLIENTS {
        let _ = write!(h, "<th>{cont}</th>");
    }
    h.push_str("</tr>");
    for (svc, row) in &answers {
        let _ = write!(h, "<tr><td>{}</td>", esc(svc));
        for a in row {
            let _ = write!(h, "<td>{}</td>", esc(&a.label()));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");

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
                        "<span class=\"{class}{stale}\">{}: {} {:.1}s</span> ",
                        esc(v["node"].as_str().unwrap_or("")),
                        class,
                        v["age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
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
    h.push_str("<h2>Drains</h2>");
    let _ = match st["drains_file"].as_str() {
        Some(file) => write!(h, "<p id=drains-kept>Kept in {}.</p>", esc(file)),
        None => write!(
            h,
            "<p id=drains-kept class=down>Not kept: this node has no state directory \
             (--state-dir), so it refuses drains issued here.</p>"
        ),
    };
    h.push_str("<table id=drains><tr><th>DC</th><th>service</th><th>reason</th><th>expires</th><th>by</th></tr>");
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
    h.push_str("</table><h2>Nodes</h2><table id=nodes><tr><th>node</th><th>region</th><th>report age</th><th>ready</th></tr>");
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
    h.push_str("</table><h2>Recent events</h2><table id=events><tr><th>time (UTC)</th><th>kind</th><th>event</th></tr>");
    for e in snapshots.events.recent() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            clock(e.at_ms),
            e.kind,
            esc(&e.message)
        );
    }
    h.push_str("</table><p><small>IP Geolocation by <a href=\"https://db-ip.com\">DB-IP</a></small></p></body></html>");
    h
}

/// HH:MM:SS of a Unix-millisecond time, UTC.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}
