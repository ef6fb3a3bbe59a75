//! The status page's pictures, drawn on the server as inline SVG (no scripts, no external
//! assets): the timeline of the last hour (each DC's state, each region's view, the share of
//! answers per DC) and a map of the DCs with the lines that show where each continent's clients
//! are sent now. Every mark carries `data-*` attributes saying what it shows, so tests (and
//! people) can read the picture from the DOM.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::health::timeline::{CAPACITY, DcSample, DcState, Sample, ServiceSample};
use crate::zone::ZoneSet;

use super::{ContinentAnswer, clock, esc};

const WIDTH: f64 = 1000.0;
const LABEL_WIDTH: f64 = 150.0;
const PLOT_WIDTH: f64 = WIDTH - LABEL_WIDTH - 10.0;
const STATE_ROW: f64 = 16.0;
const REGION_ROW: f64 = 9.0;
const SHARE_HEIGHT: f64 = 60.0;

/// Colours of the DCs in the share chart and on the map's lines, in the zone's order.
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f",
];

fn state_colour(state: &str) -> &'static str {
    match state {
        "up" => "#5cb85c",
        "down" => "#d9443f",
        "drained" => "#f0ad1e",
        "partial" => "#f07f1e",
        _ => "#cfcfcf",
    }
}

/// A service sample's DC named `dc`.
fn dc_in<'a>(o: &'a ServiceSample, dc: &str) -> Option<&'a DcSample> {
    o.dcs.iter().find(|d| &*d.dc == dc)
}

/// One row of the timeline: a DC's state (or a region's view of it) per sample.
struct Row<'a> {
    service: &'a str,
    dc: &'a str,
    /// `effective`, or the region's name.
    view: String,
    states: Vec<(u64, DcState)>,
}

/// The timeline of every sampled service: per DC a row of its effective state and a thin row
/// per region, then the share of answers each DC got per sample. Sample `i` is drawn over the
/// period that ends at it (the answers it counts were sent then).
pub fn timeline_svg(samples: &[Arc<Sample>], period: Duration) -> String {
    let mut h = String::new();
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        h.push_str(
            "<p id=timeline-empty>No samples yet: the first comes one period after the start.</p>",
        );
        return h;
    };
    let period_ms = period.as_millis().max(1) as u64;
    let end = last.at_ms;
    let start = first
        .at_ms
        .saturating_sub(period_ms)
        .max(end.saturating_sub(period_ms * CAPACITY as u64));
    let span = end.saturating_sub(start).max(1) as f64;
    let x = |t: u64| LABEL_WIDTH + (t.saturating_sub(start) as f64 / span) * PLOT_WIDTH;

    // Services in the order of the newest sample; a service that went away keeps its history
    // until it leaves the window, but is not drawn.
    for svc in &last.services {
        let history: Vec<(u64, &ServiceSample)> = samples
            .iter()
            .filter_map(|s| {
                s.services
                    .iter()
                    .find(|o| o.zone == svc.zone && o.service == svc.service)
                    .map(|o| (s.at_ms, o))
            })
            .collect();
        let mut rows: Vec<Row> = Vec::new();
        for dc in &svc.dcs {
            rows.push(Row {
                service: &svc.service,
                dc: &dc.dc,
                view: "effective".into(),
                states: history
                    .iter()
                    .filter_map(|(at, o)| dc_in(o, &dc.dc).map(|d| (*at, d.state)))
                    .collect(),
            });
            for region in dc.regions.keys() {
                rows.push(Row {
                    service: &svc.service,
                    dc: &dc.dc,
                    view: region.clone(),
                    states: history
                        .iter()
                        .filter_map(|(at, o)| {
                            dc_in(o, &dc.dc).map(|d| {
                                (
                                    *at,
                                    d.regions.get(region).copied().unwrap_or(DcState::Unknown),
                                )
                            })
                        })
                        .collect(),
                });
            }
        }
        let rows_height: f64 = rows
            .iter()
            .map(|r| {
                if r.view == "effective" {
                    STATE_ROW + 4.0
                } else {
                    REGION_ROW + 2.0
                }
            })
            .sum();
        let height = 22.0 + rows_height + 8.0 + SHARE_HEIGHT + 38.0;
        let _ = write!(
            h,
            r##"<svg class="timeline" data-service="{svc}" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="system-ui,sans-serif">
<text x="0" y="13" font-weight="bold">{svc}</text><text x="{LABEL_WIDTH}" y="13" fill="#666">state by the merged votes and drains; thin rows: each region's view; below: share of answers per DC</text>"##,
            svc = esc(&svc.service),
        );
        let mut y = 22.0;
        for row in &rows {
            let effective = row.view == "effective";
            let rh = if effective { STATE_ROW } else { REGION_ROW };
            let label = if effective {
                esc(row.dc)
            } else {
                format!("  {}", esc(&row.view))
            };
            let _ = write!(
                h,
                r#"<text x="{lx}" y="{ty}" text-anchor="end" fill="{fill}" font-size="{fs}">{label}</text>"#,
                lx = LABEL_WIDTH - 6.0,
                ty = y + rh - 3.0,
                fill = if effective { "#222" } else { "#777" },
                fs = if effective { 12 } else { 9 },
            );
            // Runs of equal states, one rectangle each.
            let mut i = 0;
            while i < row.states.len() {
                let (first_at, state) = row.states[i];
                let mut j = i;
                while j + 1 < row.states.len() && row.states[j + 1].1 == state {
                    j += 1;
                }
                let last_at = row.states[j].0;
                let x0 = x(first_at.saturating_sub(period_ms));
                let x1 = x(last_at);
                let _ = write!(
                    h,
                    r#"<rect class="state" data-service="{svc}" data-dc="{dc}" data-view="{view}" data-state="{st}" data-first-ms="{first_at}" data-last-ms="{last_at}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{rh}" fill="{fill}"><title>{dc} {view}: {st} {from}–{to}</title></rect>"#,
                    svc = esc(row.service),
                    dc = esc(row.dc),
                    view = esc(&row.view),
                    st = state.as_str(),
                    w = (x1 - x0).max(1.0),
                    fill = state_colour(state.as_str()),
                    from = clock(first_at.saturating_sub(period_ms)),
                    to = clock(last_at),
                );
                i = j + 1;
            }
            y += rh + if effective { 4.0 } else { 2.0 };
        }

        // The share of answers: a stacked bar per sample, DCs in the zone's order.
        y += 8.0;
        let _ = write!(
            h,
            r##"<text x="{lx}" y="{ty}" text-anchor="end" fill="#222">answers</text><rect x="{LABEL_WIDTH}" y="{y}" width="{PLOT_WIDTH}" height="{SHARE_HEIGHT}" fill="#f4f4f4"/>"##,
            lx = LABEL_WIDTH - 6.0,
            ty = y + SHARE_HEIGHT / 2.0,
        );
        for (at, o) in &history {
            let total: u64 = o.dcs.iter().map(|d| d.answers).sum();
            if total == 0 {
                continue;
            }
            let x0 = x(at.saturating_sub(period_ms));
            let w = (x(*at) - x0).max(1.0);
            let mut top = y;
            for d in &o.dcs {
                let colour = svc
                    .dcs
                    .iter()
                    .position(|n| n.dc == d.dc)
                    .map_or("#999", |i| PALETTE[i % PALETTE.len()]);
                let share = d.answers as f64 / total as f64;
                let hgt = share * SHARE_HEIGHT;
                let _ = write!(
                    h,
                    r#"<rect class="share" data-service="{svc}" data-dc="{dc}" data-at-ms="{at}" data-answers="{n}" data-share="{share:.3}" x="{x0:.1}" y="{top:.1}" width="{w:.1}" height="{hgt:.1}" fill="{colour}"><title>{dc}: {n} of {total} answers by {t}</title></rect>"#,
                    svc = esc(&svc.service),
                    dc = esc(&d.dc),
                    n = d.answers,
                    t = clock(*at),
                );
                top += hgt;
            }
        }
        y += SHARE_HEIGHT;
        // The time axis and the legend.
        let _ = write!(
            h,
            r##"<text x="{LABEL_WIDTH}" y="{ty}" fill="#666">{a}</text><text x="{mx}" y="{ty}" fill="#666" text-anchor="middle">{m}</text><text x="{ex}" y="{ty}" fill="#666" text-anchor="end">{b} UTC</text>"##,
            ty = y + 13.0,
            a = clock(start),
            mx = LABEL_WIDTH + PLOT_WIDTH / 2.0,
            m = clock(start + (end - start) / 2),
            ex = LABEL_WIDTH + PLOT_WIDTH,
            b = clock(end),
        );
        // The legend, on a line of its own below the axis.
        y += 16.0;
        let mut lx = LABEL_WIDTH;
        for (i, dc) in svc.dcs.iter().enumerate() {
            let _ = write!(
                h,
                r##"<rect x="{lx}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{ty}" fill="#444">{dc}</text>"##,
                ry = y + 4.0,
                c = PALETTE[i % PALETTE.len()],
                tx = lx + 13.0,
                ty = y + 13.0,
                dc = esc(&dc.dc),
            );
            lx += 20.0 + 7.0 * dc.dc.len() as f64;
        }
        for st in ["up", "down", "drained", "unknown"] {
            let _ = write!(
                h,
                r##"<rect x="{lx}" y="{ry}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{ty}" fill="#444">{st}</text>"##,
                ry = y + 4.0,
                c = state_colour(st),
                tx = lx + 13.0,
                ty = y + 13.0,
            );
            lx += 70.0;
        }
        h.push_str("</svg>");
    }
    h
}

/// Map coordinates (equirectangular, 2 px per degree) of a latitude and longitude.
fn project(lat: f64, lon: f64) -> (f64, f64) {
    (
        (lon.clamp(-180.0, 180.0) + 180.0) * 2.0,
        (90.0 - lat.clamp(-90.0, 90.0)) * 2.0,
    )
}

/// Very rough continent outlines (latitude, longitude), so the DCs have somewhere to stand.
const LAND: [&[(f64, f64)]; 6] = [
    // North America
    &[
        (70.0, -165.0),
        (72.0, -120.0),
        (75.0, -80.0),
        (60.0, -62.0),
        (47.0, -53.0),
        (30.0, -80.0),
        (25.0, -80.0),
        (30.0, -95.0),
        (18.0, -95.0),
        (8.0, -78.0),
        (15.0, -92.0),
        (20.0, -105.0),
        (32.0, -117.0),
        (40.0, -124.0),
        (50.0, -128.0),
        (60.0, -145.0),
        (58.0, -160.0),
    ],
    // South America
    &[
        (12.0, -72.0),
        (8.0, -60.0),
        (-5.0, -35.0),
        (-23.0, -42.0),
        (-35.0, -57.0),
        (-55.0, -68.0),
        (-45.0, -75.0),
        (-18.0, -71.0),
        (-5.0, -81.0),
        (2.0, -79.0),
    ],
    // Europe and Asia
    &[
        (36.0, -9.0),
        (44.0, -9.0),
        (48.0, -5.0),
        (54.0, 8.0),
        (58.0, 5.0),
        (71.0, 25.0),
        (70.0, 60.0),
        (77.0, 105.0),
        (70.0, 160.0),
        (65.0, 180.0),
        (60.0, 165.0),
        (50.0, 140.0),
        (40.0, 130.0),
        (35.0, 120.0),
        (22.0, 108.0),
        (10.0, 105.0),
        (1.0, 104.0),
        (15.0, 98.0),
        (22.0, 90.0),
        (8.0, 78.0),
        (24.0, 68.0),
        (25.0, 57.0),
        (12.0, 44.0),
        (32.0, 34.0),
        (36.0, 28.0),
        (38.0, 15.0),
        (44.0, 8.0),
    ],
    // Africa
    &[
        (35.0, -6.0),
        (37.0, 10.0),
        (32.0, 32.0),
        (12.0, 44.0),
        (11.0, 51.0),
        (-2.0, 41.0),
        (-26.0, 33.0),
        (-35.0, 20.0),
        (-17.0, 12.0),
        (-5.0, 12.0),
        (5.0, 8.0),
        (5.0, -5.0),
        (10.0, -15.0),
        (21.0, -17.0),
        (28.0, -13.0),
    ],
    // Australia
    &[
        (-11.0, 131.0),
        (-12.0, 142.0),
        (-25.0, 153.0),
        (-38.0, 146.0),
        (-35.0, 137.0),
        (-32.0, 115.0),
        (-22.0, 114.0),
        (-14.0, 127.0),
    ],
    // Japan
    &[(31.0, 130.0), (35.0, 140.0), (41.0, 141.0), (34.0, 133.0)],
];

/// The map: every DC of the zones where its zone puts it, coloured by its state (`partial`
/// when services disagree), and a line from each continent's representative client to the DC
/// each service sends it to now. The state document `st` gives the DCs' states.
pub fn map_svg(zones: &ZoneSet, st: &Value, answers: &[(String, Vec<ContinentAnswer>)]) -> String {
    // DC → the states its services are in.
    let mut states: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for svc in st["services"].as_array().into_iter().flatten() {
        for dc in svc["dcs"].as_array().into_iter().flatten() {
            if let (Some(name), Some(state)) = (dc["name"].as_str(), dc["effective"].as_str()) {
                states.entry(name).or_default().push(state);
            }
        }
    }
    // DC name → location, the first zone that places it wins; and its colour index.
    let mut places: Vec<(String, f64, f64)> = Vec::new();
    for zone in &zones.zones {
        for dc in &zone.datacenters {
            if !places.iter().any(|(n, _, _)| **n == *dc.name) {
                places.push((dc.name.to_string(), dc.latitude, dc.longitude));
            }
        }
    }
    let mut h = String::new();
    h.push_str(
        r##"<svg id="map" width="720" height="360" viewBox="0 0 720 360" xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="system-ui,sans-serif"><rect width="720" height="360" fill="#e8f1f8"/>"##,
    );
    for lon in (-150..=150).step_by(30) {
        let (x, _) = project(0.0, f64::from(lon));
        let _ = write!(
            h,
            r##"<line x1="{x}" y1="0" x2="{x}" y2="360" stroke="#d5e3ee"/>"##
        );
    }
    for lat in (-60..=60).step_by(30) {
        let (_, y) = project(f64::from(lat), 0.0);
        let _ = write!(
            h,
            r##"<line x1="0" y1="{y}" x2="720" y2="{y}" stroke="#d5e3ee"/>"##
        );
    }
    for outline in LAND {
        let points: Vec<String> = outline
            .iter()
            .map(|(lat, lon)| {
                let (x, y) = project(*lat, *lon);
                format!("{x:.0},{y:.0}")
            })
            .collect();
        let _ = write!(
            h,
            r##"<polygon points="{}" fill="#dcdcd4" stroke="#c8c8be"/>"##,
            points.join(" ")
        );
    }
    // Lines first, so the DCs sit on top of them.
    for (service, row) in answers {
        for a in row {
            let Some(dc) = &a.dc else { continue };
            let Some((_, lat, lon)) = places.iter().find(|(n, _, _)| n == dc) else {
                continue;
            };
            let colour = places
                .iter()
                .position(|(n, _, _)| n == dc)
                .map_or("#999", |i| PALETTE[i % PALETTE.len()]);
            let (x1, y1) = project(a.from.0, a.from.1);
            let (x2, y2) = project(*lat, *lon);
            let _ = write!(
                h,
                r#"<line class="sent" data-service="{svc}" data-continent="{c}" data-dc="{d}" data-all-down="{ad}" x1="{x1:.0}" y1="{y1:.0}" x2="{x2:.0}" y2="{y2:.0}" stroke="{colour}" stroke-width="2" stroke-opacity="0.8"{dash}><title>{svc}: clients in {c} get {d}</title></line>"#,
                svc = esc(service),
                c = a.continent,
                d = esc(dc),
                ad = a.all_down,
                dash = if a.all_down {
                    r#" stroke-dasharray="4 3""#
                } else {
                    ""
                },
            );
        }
    }
    if let Some((_, row)) = answers.first() {
        for a in row {
            let (x, y) = project(a.from.0, a.from.1);
            let _ = write!(
                h,
                r##"<circle cx="{x:.0}" cy="{y:.0}" r="3" fill="#555"/><text x="{tx:.0}" y="{ty:.0}" fill="#555">{c}</text>"##,
                tx = x + 5.0,
                ty = y + 12.0,
                c = a.continent,
            );
        }
    }
    for (name, lat, lon) in &places {
        let seen = states.get(name.as_str()).cloned().unwrap_or_default();
        let state = match seen.first() {
            None => "unknown",
            Some(s) if seen.iter().all(|o| o == s) => s,
            Some(_) => "partial",
        };
        let (x, y) = project(*lat, *lon);
        let _ = write!(
            h,
            r##"<circle class="dc" data-dc="{n}" data-state="{state}" cx="{x:.0}" cy="{y:.0}" r="7" fill="{c}" stroke="#333" stroke-width="1.5"><title>{n}: {state}</title></circle><text x="{tx:.0}" y="{ty:.0}" font-weight="bold" fill="#222">{n} <tspan font-weight="normal" fill="#555">{state}</tspan></text>"##,
            n = esc(name),
            c = state_colour(state),
            tx = x + 9.0,
            ty = y - 6.0,
        );
    }
    h.push_str(
        r##"<text x="6" y="352" fill="#555">DCs by state (up, down, drained, partial: services disagree); lines: where each continent's clients are sent now (dashed: all down). Nodes are not drawn: node files have no location.</text></svg>"##,
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::timeline::{DcSample, ServiceSample};
    use serde_json::json;

    fn sample(at_ms: u64, fra: (DcState, u64), iad: (DcState, u64)) -> Arc<Sample> {
        let dc = |name: &str, (state, answers): (DcState, u64)| DcSample {
            dc: name.into(),
            state,
            regions: [("eu".to_string(), state)].into(),
            answers,
        };
        Arc::new(Sample {
            at_ms,
            services: vec![ServiceSample {
                zone: "a.example".into(),
                service: "www.a.example".into(),
                dcs: vec![dc("fra", fra), dc("iad", iad)],
            }],
        })
    }

    #[test]
    fn the_timeline_draws_a_run_per_state_and_a_share_per_sample() {
        use DcState::*;
        let samples = [
            sample(10_000, (Up, 3), (Up, 1)),
            sample(20_000, (Down, 0), (Up, 5)),
            sample(30_000, (Down, 0), (Up, 0)),
        ];
        let svg = timeline_svg(&samples, Duration::from_secs(10));
        assert!(svg.contains(
            r#"data-dc="fra" data-view="effective" data-state="up" data-first-ms="10000" data-last-ms="10000""#
        ), "{svg}");
        assert!(svg.contains(
            r#"data-dc="fra" data-view="effective" data-state="down" data-first-ms="20000" data-last-ms="30000""#
        ), "{svg}");
        assert!(svg.contains(r#"data-dc="fra" data-view="eu" data-state="down""#));
        assert!(
            svg.contains(r#"data-dc="fra" data-at-ms="10000" data-answers="3" data-share="0.750""#)
        );
        assert!(
            svg.contains(r#"data-dc="fra" data-at-ms="20000" data-answers="0" data-share="0.000""#)
        );
        // A sample without answers has no share to draw.
        assert!(!svg.contains(r#"data-at-ms="30000""#), "{svg}");
        assert!(timeline_svg(&[], Duration::from_secs(10)).contains("No samples yet"));
    }

    #[test]
    fn the_map_colours_dcs_by_state_and_draws_where_clients_go() {
        let zones = crate::health::timeline::tests::zones();
        let st = json!({ "services": [
            { "dcs": [{ "name": "fra", "effective": "down" }, { "name": "iad", "effective": "up" }] },
            { "dcs": [{ "name": "iad", "effective": "drained" }] },
        ]});
        let answers = vec![(
            "www.a.example".to_string(),
            vec![ContinentAnswer {
                continent: "EU",
                from: (50.1, 8.7),
                dc: Some("iad".into()),
                all_down: false,
            }],
        )];
        let svg = map_svg(&zones, &st, &answers);
        assert!(svg.contains(r#"data-dc="fra" data-state="down""#), "{svg}");
        assert!(
            svg.contains(r#"data-dc="iad" data-state="partial""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"data-continent="EU" data-dc="iad""#),
            "{svg}"
        );
        // Equirectangular, 2 px a degree: iad at (-77.0 + 180) * 2, (90 - 38.9) * 2.
        assert!(svg.contains(r#"cx="206" cy="102""#), "{svg}");
    }
}
