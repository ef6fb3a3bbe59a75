//! The operator's drain and undrain requests turned into decisions: which DC and service a
//! request names, and whether draining would leave a service with no healthy DC (refused unless
//! forced). Pure: the zones, the current health and the clock are handed in.

use serde::Deserialize;

use crate::health::drain::Drain;
use crate::health::merge::EffectiveHealth;
use crate::zone::ZoneSet;

/// A drain request from the admin API or CLI.
#[derive(Debug, Clone, Deserialize)]
pub struct DrainRequest {
    pub dc: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Seconds until the drain lifts by itself.
    #[serde(default)]
    pub for_seconds: Option<u64>,
    /// Drain even if it leaves a service with no healthy DC.
    #[serde(default)]
    pub force: bool,
}

/// Why a drain or undrain was not applied.
#[derive(Debug, thiserror::Error)]
pub enum DrainRefused {
    #[error("unknown data center {0:?}")]
    UnknownDc(String),
    #[error("service {service:?} has no endpoints in data center {dc:?}")]
    UnknownService { dc: String, service: String },
    #[error("draining {dc} would leave no healthy data center for: {}; use force to drain anyway", services.join(", "))]
    LastHealthy { dc: String, services: Vec<String> },
    #[error("the drain could not be persisted, so it was not applied: {0}")]
    NotPersisted(String),
    /// Issue 18: a drain this node could not keep across a restart is refused rather than
    /// kept in memory without a word.
    #[error(
        "this node keeps no state directory, so a drain would be forgotten when it restarts: \
         start it with --state-dir DIR (or state_dir: in the node file)"
    )]
    NoStateDir,
}

/// The drain `req` asks of `node` at `now_ms`, or why it is refused.
pub fn plan_drain(
    req: DrainRequest,
    zones: &ZoneSet,
    health: &EffectiveHealth,
    node: &str,
    now_ms: u64,
) -> Result<Drain, DrainRefused> {
    let service = req.service.as_deref().map(normalise_service);
    if !zones
        .zones
        .iter()
        .any(|z| z.datacenters.iter().any(|d| *d.name == *req.dc))
    {
        return Err(DrainRefused::UnknownDc(req.dc));
    }
    // Services this drain would leave with nothing healthy.
    let mut affected = 0;
    let mut stranded = Vec::new();
    for (zone, svc) in zones.services() {
        let name = svc.name.as_str();
        if service.as_deref().is_some_and(|s| s != name) {
            continue;
        }
        let has_dc = svc
            .dcs
            .iter()
            .any(|d| *zone.datacenters[d.dc].name == *req.dc);
        if !has_dc {
            continue;
        }
        affected += 1;
        let healthy_elsewhere = svc.dcs.iter().any(|d| {
            let dc_name = &zone.datacenters[d.dc].name;
            **dc_name != *req.dc
                && !health.is_drained(dc_name, name)
                && d.endpoints
                    .iter()
                    .any(|ip| health.is_up(*ip, svc.check.as_deref()))
        });
        if !healthy_elsewhere {
            stranded.push(name.to_string());
        }
    }
    if let (Some(s), 0) = (&service, affected) {
        return Err(DrainRefused::UnknownService {
            dc: req.dc,
            service: s.clone(),
        });
    }
    if !stranded.is_empty() && !req.force {
        stranded.sort();
        return Err(DrainRefused::LastHealthy {
            dc: req.dc,
            services: stranded,
        });
    }
    Ok(Drain {
        dc: req.dc,
        service,
        reason: req.reason.unwrap_or_default(),
        active: true,
        expires_ms: req.for_seconds.map(|s| now_ms + s * 1000),
        issued_ms: now_ms,
        issued_by: node.to_string(),
    })
}

/// The undrain of `dc` (for `service`, or for the whole DC) issued by `node` at `now_ms`: the
/// tombstone that ends an earlier drain of the same key.
pub fn plan_undrain(dc: &str, service: Option<&str>, node: &str, now_ms: u64) -> Drain {
    Drain {
        dc: dc.to_string(),
        service: service.map(normalise_service),
        reason: String::new(),
        active: false,
        expires_ms: None,
        issued_ms: now_ms,
        issued_by: node.to_string(),
    }
}

/// `www.api.example.com.` and `WWW.api.example.com` name the same service.
fn normalise_service(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::health::drain::DrainSet;
    use crate::health::merge::{EndpointKey, Merged, Verdict};

    const ZONE: &str = r#"
zone: example.com
soa: { primary: ns1, contact: hostmaster@example.com }
nameservers: { ns1: [192.0.2.53] }
datacenters:
  dc1: { location: [50.11, 8.68] }
  dc2: { location: [38.95, -77.45] }
  dc3: { location: [1.35, 103.82] }
checks:
  web: { http: { port: 80, path: /health } }
records:
  www:
    service:
      policy: failover
      check: web
      endpoints: { dc1: [192.0.2.1], dc2: [192.0.2.2] }
"#;

    fn zones() -> ZoneSet {
        let zone = crate::zone::file::parse_zone(ZONE, "test").expect("the test zone is valid");
        ZoneSet {
            zones: vec![Arc::new(zone)],
        }
    }

    /// The health of the zones' endpoints, with those in `down` down.
    fn health(zones: &ZoneSet, down: &[&str]) -> EffectiveHealth {
        let targets = zones.probe_targets();
        let endpoints: BTreeMap<EndpointKey, Verdict> = targets
            .iter()
            .map(|(addr, check)| {
                let up = !down.contains(&addr.to_string().as_str());
                let verdict = Verdict {
                    up,
                    down_votes: usize::from(!up),
                    counted_votes: 1,
                    ballots: Default::default(),
                    restored_ms: 0,
                };
                (EndpointKey::new(*addr, check), verdict)
            })
            .collect();
        let merged = Merged {
            endpoints: Arc::new(endpoints),
            isolated: Vec::new(),
            voters: Vec::new(),
        };
        EffectiveHealth::new(true, targets, merged, DrainSet::default(), 0)
    }

    fn req(dc: &str, service: Option<&str>, force: bool) -> DrainRequest {
        DrainRequest {
            dc: dc.into(),
            service: service.map(str::to_string),
            reason: Some("maintenance".into()),
            for_seconds: Some(60),
            force,
        }
    }

    #[test]
    fn a_drain_names_a_known_dc_and_service() {
        let zones = zones();
        let h = health(&zones, &[]);
        let d = plan_drain(
            req("dc1", Some("WWW.example.com."), false),
            &zones,
            &h,
            "a",
            1_000,
        )
        .expect("dc2 stays healthy");
        assert_eq!(
            d,
            Drain {
                dc: "dc1".into(),
                service: Some("www.example.com".into()),
                reason: "maintenance".into(),
                active: true,
                expires_ms: Some(61_000),
                issued_ms: 1_000,
                issued_by: "a".into(),
            }
        );
        assert!(matches!(
            plan_drain(req("dc9", None, false), &zones, &h, "a", 0),
            Err(DrainRefused::UnknownDc(dc)) if dc == "dc9"
        ));
        // dc3 exists, but www has no endpoints there.
        assert!(matches!(
            plan_drain(
                req("dc3", Some("www.example.com"), false),
                &zones,
                &h,
                "a",
                0
            ),
            Err(DrainRefused::UnknownService { .. })
        ));
    }

    #[test]
    fn draining_the_last_healthy_dc_needs_force() {
        let zones = zones();
        let h = health(&zones, &["192.0.2.2"]);
        let refused = plan_drain(req("dc1", None, false), &zones, &h, "a", 0);
        assert!(
            matches!(&refused, Err(DrainRefused::LastHealthy { dc, services })
                if dc == "dc1" && services == &["www.example.com"]),
            "{refused:?}"
        );
        assert!(plan_drain(req("dc1", None, true), &zones, &h, "a", 0).is_ok());
        // Draining the dead DC strands nothing.
        assert!(plan_drain(req("dc2", None, false), &zones, &h, "a", 0).is_ok());
    }

    #[test]
    fn an_undrain_is_a_tombstone_for_the_same_key() {
        let u = plan_undrain("dc1", Some("www.example.com."), "b", 5);
        assert!(!u.active);
        assert_eq!(u.key(), "dc1/www.example.com");
    }
}
