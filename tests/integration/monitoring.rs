//! The monitoring files (issue 17): `monitoring/alerts.yml` passes `promtool check rules` and
//! its unit tests (`monitoring/alerts_test.yml`), which test every alert firing and not firing;
//! `monitoring/grafana-dashboard.json` is a dashboard over its datasource variable whose queries
//! parse; and every metric and label that the rules and the dashboard use is in the `/metrics` of
//! a running node, after it has done what makes each series appear (answered, probed, pulled
//! from a peer, failed to reach another, been drained).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::ops_support::*;
use crate::support::{manifest_path, query, query_udp};

const ALERTS: &str = "monitoring/alerts.yml";
const ALERT_TESTS: &str = "monitoring/alerts_test.yml";
const DASHBOARD: &str = "monitoring/grafana-dashboard.json";
const PROMTOOL: &str = "/usr/bin/promtool";
const SECRET: &str = "monitoring-test-secret";
const WWW: &str = "www.api.example.com";
const DEAD: &str = "dead.api.example.com";

// ---------------------------------------------------------------------------------------------
// promtool

fn require_promtool() {
    assert!(
        Path::new(PROMTOOL).is_file(),
        "{PROMTOOL} is missing: these tests need promtool (`apt-get install prometheus`; \
         scripts/test.sh installs it, as root, without starting the server)"
    );
}

fn promtool(args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    run_with_timeout(
        Path::new(PROMTOOL),
        &args,
        &manifest_path(""),
        &[],
        Duration::from_secs(60),
    )
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(manifest_path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// Every alerting rule of alerts.yml: (name, expression).
fn alert_rules() -> Vec<(String, String)> {
    let doc = yaml(ALERTS);
    let mut rules = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups: a list") {
        for rule in group["rules"].as_sequence().expect("rules: a list") {
            let name = rule["alert"].as_str().expect("an alerting rule");
            let expr = rule["expr"].as_str().expect("an expr");
            rules.push((name.to_string(), expr.to_string()));
        }
    }
    rules
}

#[test]
fn alert_rules_pass_promtool_and_each_alert_is_tested_firing_and_not() {
    require_promtool();
    let check = promtool(&["check", "rules", ALERTS]);
    assert!(check.status.success(), "promtool check rules: {check:?}");
    let test = promtool(&["test", "rules", ALERT_TESTS]);
    assert!(test.status.success(), "promtool test rules: {test:?}");
    assert!(test.stdout.contains("SUCCESS"), "{test:?}");

    // Each alert has an evaluation where it fires and one where it does not.
    let tests = yaml(ALERT_TESTS);
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests: a list") {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            match case["exp_alerts"].as_sequence() {
                Some(alerts) if !alerts.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let names: BTreeSet<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 11, "{names:?}");
    for name in &names {
        assert!(firing.contains(name), "no test where {name} fires");
        assert!(quiet.contains(name), "no test where {name} stays quiet");
    }
    // And every rule has what on-call needs.
    let doc = yaml(ALERTS);
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"].as_str().unwrap_or("?");
            for key in ["summary", "description", "runbook"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name} has no {key}"
                );
            }
            let runbook = rule["annotations"]["runbook"].as_str().unwrap_or("");
            assert!(
                runbook.contains("steerdns ") || runbook.contains("systemctl"),
                "{name}'s runbook names no command: {runbook}"
            );
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("page" | "warning")
                ),
                "{name}: severity"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every query of the dashboard: (where, PromQL), from the panels' targets and the template
/// variables.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default().to_string();
            out.push((
                format!("panel {:?}", p["title"].as_str().unwrap_or("?")),
                expr,
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// The dashboard's PromQL with Grafana's variables given values, as Prometheus would see it.
fn as_prometheus_sees_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$instance", ".*")
}

#[test]
fn the_dashboard_queries_its_datasource_variable_and_its_queries_parse() {
    require_promtool();
    let d = dashboard();
    assert_eq!(d["uid"], "steerdns");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let datasource = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(
        (&datasource["type"], &datasource["query"]),
        (&"datasource".into(), &"prometheus".into())
    );

    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let id = p["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64(), g["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "panel {id}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        titles.push(p["title"].as_str().expect("a title").to_string());
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {id}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}: {t}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
    // What issue 17 asks the dashboard to show.
    for want in [
        "Queries by response code",
        "Queries by zone",
        "Answers per DC",
        "Health matrix: service DCs",
        "Pulls from peers",
        "Response rate limiting",
        "Query duration histogram",
    ] {
        assert!(titles.iter().any(|t| t == want), "no panel {want:?}");
    }

    // Every query parses: promtool checks them as recording rules (JSON is YAML too).
    let rules: Vec<serde_json::Value> = dashboard_queries(&d)
        .iter()
        .filter(|(place, _)| place.starts_with("panel"))
        .enumerate()
        .map(|(i, (_, e))| {
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": as_prometheus_sees_it(e) })
        })
        .collect();
    let count = rules.len();
    let doc = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, doc.to_string()).expect("writing the rules");
    let check = promtool(&["check", "rules", &file.display().to_string()]);
    assert!(check.status.success(), "promtool check rules: {check:?}");
    assert!(
        check
            .stdout
            .contains(&format!("SUCCESS: {count} rules found")),
        "{check:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metric names and labels in PromQL

/// A PromQL expression's tokens: identifiers (metric, label and function names, keywords),
/// string literals (without quotes) and single punctuation characters.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
}

fn tokens(expr: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut id = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    id.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Ident(id));
        } else if c == '"' || c == '\'' || c == '`' {
            chars.next();
            let mut s = String::new();
            while let Some(c2) = chars.next() {
                match c2 {
                    '\\' => s.extend(chars.next()),
                    q if q == c => break,
                    other => s.push(other),
                }
            }
            out.push(Token::Str(s));
        } else if c.is_ascii_digit() || c == '$' || c == '.' {
            // Numbers, durations (5m) and Grafana variables ($__rate_interval) name nothing.
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '$' | '.' | '_'))
            {
                chars.next();
            }
        } else {
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
            chars.next();
        }
    }
    out
}

/// What an expression uses: the steerdns metrics, and the label names it matches on or groups
/// by, each with the metric it is attached to when it is in that metric's `{...}`.
#[derive(Debug, Default)]
struct Uses {
    metrics: BTreeSet<String>,
    /// (label, the metric of the selector, if any).
    labels: BTreeSet<(String, Option<String>)>,
}

fn uses(expr: &str) -> Uses {
    let t = tokens(expr);
    let mut u = Uses::default();
    let ident = |i: usize| match t.get(i) {
        Some(Token::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Token::Ident(name) if name.starts_with("steerdns_") => {
                u.metrics.insert(name.clone());
                // Its selector: label op "value", ...
                if t.get(i + 1) == Some(&Token::Punct('{')) {
                    i += 2;
                    while i < t.len() && t[i] != Token::Punct('}') {
                        if let (Some(label), Some(Token::Punct('=' | '!'))) =
                            (ident(i), t.get(i + 1))
                        {
                            u.labels.insert((label.to_string(), Some(name.clone())));
                        }
                        i += 1;
                    }
                }
            }
            Token::Ident(kw)
                if matches!(
                    kw.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) && t.get(i + 1) == Some(&Token::Punct('(')) =>
            {
                i += 2;
                while i < t.len() && t[i] != Token::Punct(')') {
                    if let Some(label) = ident(i) {
                        u.labels.insert((label.to_string(), None));
                    }
                    i += 1;
                }
            }
            Token::Ident(f) if f == "label_values" => {
                // label_values(metric, label): a Grafana variable's query.
                if let (Some(metric), Some(label)) = (ident(i + 2), ident(i + 4)) {
                    u.metrics.insert(metric.to_string());
                    u.labels
                        .insert((label.to_string(), Some(metric.to_string())));
                }
                i += 4;
            }
            _ => {}
        }
        i += 1;
    }
    u
}

#[test]
fn promql_uses_are_read_from_selectors_groupings_and_variables() {
    let u = uses(
        r#"sum by (dc, service) (rate(steerdns_a_total{instance=~"$instance", zone!="steerdns_b"}[$__rate_interval])) / on (instance) group_left steerdns_c"#,
    );
    assert_eq!(
        u.metrics,
        BTreeSet::from(["steerdns_a_total".into(), "steerdns_c".into()])
    );
    let a = Some("steerdns_a_total".to_string());
    assert_eq!(
        u.labels,
        BTreeSet::from([
            ("dc".into(), None),
            ("service".into(), None),
            ("instance".into(), None),
            ("instance".into(), a.clone()),
            ("zone".into(), a),
        ])
    );
    let v = uses("label_values(steerdns_isolated, instance)");
    assert_eq!(v.metrics, BTreeSet::from(["steerdns_isolated".into()]));
    assert_eq!(
        v.labels,
        BTreeSet::from([("instance".into(), Some("steerdns_isolated".into()))])
    );
}

// ---------------------------------------------------------------------------------------------
// Against a running node

/// Service `www` in fra (up), iad (down) and sin (up); service `dead` only in iad, so every
/// answer for it is by when_all_down. One fast HTTP check on `port` for all.
fn zone(up_fra: &str, down: &str, up_sin: &str, port: u16) -> String {
    format!(
        r#"
zone: api.example.com
soa: {{ primary: ns1, contact: hostmaster@example.com }}
nameservers: {{ ns1: [192.0.2.53] }}
datacenters:
  fra: {{ location: [50.11, 8.68] }}
  iad: {{ location: [38.95, -77.45] }}
  sin: {{ location: [1.35, 103.82] }}
checks:
  web: {{ http: {{ port: {port}, path: /healthz, expect: [200] }}, interval: 200ms, timeout: 150ms, fall: 2, rise: 1 }}
records:
  www:
    service:
      check: web
      endpoints:
        fra: [{up_fra}]
        iad: [{down}]
        sin: [{up_sin}]
  dead:
    service:
      check: web
      endpoints:
        iad: [{down}]
"#
    )
}

fn unix_now() -> f64 {
    steerdns::clock::now_ms() as f64 / 1000.0
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_node() {
    let mut bs = backends(3);
    bs[1].stop();
    let (fra, iad, sin) = (bs[0].ip().to_string(), bs[1].ip().to_string(), bs[2].ip());
    let zone = zone(&fra, &iad, &sin.to_string(), bs[0].port());
    // A peer that answers, and one whose port is closed (bound, then let go).
    let peer = Node::builder(&zone)
        .env("STEERDNS_SECRET", SECRET)
        .arg("--node")
        .arg("us-1")
        .arg("--region")
        .arg("us")
        .start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let gone = format!("http://{closed}");
    let node = Node::builder(&zone)
        .env("STEERDNS_SECRET", SECRET)
        .arg("--node")
        .arg("eu-1")
        .arg("--region")
        .arg("eu")
        .arg("--peer")
        .arg(&peer.url())
        .arg("--peer")
        .arg(&gone)
        .start();
    node.wait_ready();
    wait_until(Duration::from_secs(20), "iad voted down", || {
        node.dc_status(WWW, "iad") == "down"
    });
    wait_until(Duration::from_secs(20), "a pull from us-1", || {
        node.metrics()
            .get(
                "steerdns_peer_last_exchange_age_seconds",
                &[("peer", &peer.url())],
            )
            .is_some()
    });

    // Answers: www from fra (127.0.0.1 is nowhere, so the first DC), dead by when_all_down
    // (fail-open: its endpoint although down).
    let r = query_udp(node.dns, &query(WWW, RecordType::A));
    assert_eq!(addresses(&r), [fra.as_str()]);
    let r = query_udp(node.dns, &query(DEAD, RecordType::A));
    assert_eq!(addresses(&r), [iad.as_str()]);

    // Drains: all of sin with no end, and iad for www for an hour.
    let before = unix_now();
    let r = post(
        node.admin,
        "/api/v1/drain",
        None,
        r#"{"dc": "sin", "reason": "test"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let body = format!(r#"{{"dc": "iad", "service": "{WWW}", "for_seconds": 3600}}"#);
    let r = post(node.admin, "/api/v1/drain", None, &body);
    assert_eq!(r.status, 200, "{r:?}");
    let after = unix_now();
    wait_until(Duration::from_secs(10), "sin drained", || {
        node.dc_status(WWW, "sin") == "drained"
    });

    let m = node.metrics();
    // The new series have the values the alerts rely on.
    let dc =
        |metric: &str, service: &str, dc: &str| m.get(metric, &[("service", service), ("dc", dc)]);
    assert_eq!(
        [
            dc("steerdns_dc_up", WWW, "fra"),
            dc("steerdns_dc_up", WWW, "iad"),
            dc("steerdns_dc_up", WWW, "sin"),
            dc("steerdns_dc_up", DEAD, "iad"),
        ],
        [Some(1.0), Some(0.0), Some(0.0), Some(0.0)],
        "dc_up"
    );
    assert_eq!(
        [
            dc("steerdns_dc_drained", WWW, "fra"),
            dc("steerdns_dc_drained", WWW, "iad"),
            dc("steerdns_dc_drained", WWW, "sin"),
            dc("steerdns_dc_drained", DEAD, "iad"),
        ],
        [Some(0.0), Some(1.0), Some(1.0), Some(0.0)],
        "dc_drained"
    );
    let issued = |dc: &str, service: &str| {
        m.get(
            "steerdns_drain_issued_timestamp_seconds",
            &[("dc", dc), ("service", service)],
        )
        .unwrap_or_else(|| panic!("no issue time for the drain of {dc}/{service}"))
    };
    let expires = |dc: &str, service: &str| {
        m.get(
            "steerdns_drain_expires_timestamp_seconds",
            &[("dc", dc), ("service", service)],
        )
    };
    for (d, s) in [("sin", "*"), ("iad", WWW)] {
        let t = issued(d, s);
        assert!(
            before - 0.001 <= t && t <= after + 0.001,
            "{d}/{s} issued at {t}, not between {before} and {after}"
        );
    }
    assert_eq!(
        expires("sin", "*"),
        None,
        "a drain with no end has no expiry"
    );
    assert_eq!(expires("iad", WWW), Some(issued("iad", WWW) + 3600.0));
    assert_eq!(m.get("steerdns_drains_active", &[]), Some(2.0));
    assert_eq!(m.get("steerdns_geoip_last_load_success", &[]), Some(1.0));
    assert!(m.value("steerdns_peer_consecutive_failures", &[("peer", &gone)]) >= 1.0);
    assert_eq!(
        m.get(
            "steerdns_dns_service_all_down_total",
            &[("zone", "api.example.com"), ("record", DEAD), ("dc", "iad")]
        ),
        Some(1.0),
        "{:?}",
        m.series("steerdns_dns_service_all_down_total")
    );

    // Every metric and label the rules and the dashboard use, against the scrape.
    let mut labels_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &m.0 {
        let set = labels_of.entry(s.name.as_str()).or_default();
        set.extend(s.labels.keys().map(String::as_str));
        // Prometheus adds these to every series it scrapes.
        set.extend(["instance", "job"]);
    }
    let mut queries: Vec<(String, String)> = alert_rules()
        .into_iter()
        .map(|(name, expr)| (format!("alert {name}"), expr))
        .collect();
    queries.extend(dashboard_queries(&dashboard()));
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        let u = uses(expr);
        for metric in &u.metrics {
            used.insert(metric.clone());
            if !labels_of.contains_key(metric.as_str()) {
                missing.push(format!("{place}: metric {metric}"));
            }
        }
        // A label goes with the metric of its selector, or else with any metric of the
        // expression (grouping).
        for (label, metric) in &u.labels {
            let known = |m: &String| {
                labels_of
                    .get(m.as_str())
                    .is_some_and(|l| l.contains(label.as_str()))
            };
            let ok = match metric {
                Some(m) => known(m),
                None => u.metrics.iter().any(known),
            };
            if !ok {
                missing.push(format!("{place}: label {label} (of {metric:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "used but not in /metrics:\n{}\n\n/metrics has: {:?}",
        missing.join("\n"),
        labels_of.keys().collect::<Vec<_>>()
    );
    // The rules and the dashboard use most of what a node exports; anything new should be
    // looked at for both.
    assert!(
        used.len() >= 30,
        "only {} metrics used: {used:?}",
        used.len()
    );
}
