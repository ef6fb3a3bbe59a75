//! What online signing costs (issue 15), without the network: `Handler::respond` for service
//! queries with ECS from many client networks to the shipped zone, unsigned (DO=0) and signed
//! (DO=1: prepared answers that carry their RRSIGs), first cold (every answer shape signed once)
//! then warm (prepared answers, signatures from the cache), for ECDSA P-256 and Ed25519; and the
//! signature cache's hit rate and the cost of one signature, from the node's own metrics.
//! Run: `cargo bench --bench dnssec`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name as HName, RecordType as HType};
use steerdns::dns::Handler;
use steerdns::geo::GeoDb;
use steerdns::state::Snapshots;
use steerdns::telemetry::metrics::Metrics;
use steerdns::zone::Name;
use steerdns::zone::key::{self, Algorithm};

/// Client networks: this many /24s spread over the IPv4 space.
const NETWORKS: usize = 4000;
/// Passes over all networks in the warm runs.
const WARM_PASSES: usize = 5;

fn query(name: &str, t: HType, ecs: &str, dnssec_ok: bool) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        HName::from_ascii(name).expect("a valid name"),
        t,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_dnssec_ok(dnssec_ok);
    let net: ipnet::IpNet = ecs.parse().expect("a valid network");
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::from(net)));
    m.edns = Some(e);
    m.to_vec().expect("encodes")
}

fn networks() -> Vec<String> {
    (0..NETWORKS)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761);
            let a = 1 + (x >> 24) % 222;
            format!("{a}.{}.{}.0/24", (x >> 16) & 0xff, (x >> 8) & 0xff)
        })
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Nanoseconds per query over `queries`, answered `passes` times.
fn run(handler: &Handler, queries: &[Vec<u8>], passes: usize) -> f64 {
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("valid");
    let mut out = Vec::with_capacity(1232);
    let mut name = String::new();
    let mut view = handler.view();
    let started = Instant::now();
    for _ in 0..passes {
        for q in queries {
            let facts = handler.respond_with(&mut view, q, src, false, &mut out, &mut name);
            assert!(facts.is_some());
        }
    }
    started.elapsed().as_nanos() as f64 / (queries.len() * passes) as f64
}

/// The zone set and GeoIP data of a bench directory.
fn handler_parts(dir: &tempfile::TempDir) -> (steerdns::zone::ZoneSet, GeoDb) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let zones = steerdns::zone::file::load_dir(dir.path()).expect("the zone loads");
    let geo = GeoDb::open(&[
        root.join("geoip/dbip-city-lite-coarse-ipv4.mmdb"),
        root.join("geoip/dbip-country.mmdb"),
    ])
    .expect("GeoIP");
    (zones, geo)
}

/// ns per `Signer::secure` call on service answers for `nets`, after one warming pass.
fn secure_only((zones, geo): &(steerdns::zone::ZoneSet, GeoDb), nets: &[String]) -> f64 {
    use steerdns::dns::answer::{self, AllUp, Client, QType};
    use steerdns::dnssec::{Kind, Question, Sections, Signer};
    let signer = Signer::new(Arc::new(Metrics::new()));
    let www = Name::parse("www.api.example.com").expect("valid");
    let zone = zones.find(&www).expect("the zone").clone();
    let answers: Vec<answer::Answer> = nets
        .iter()
        .map(|n| {
            let net: ipnet::IpNet = n.parse().expect("a network");
            let client = Client {
                addr: net.network(),
                ecs_prefix: Some(24),
                locator: geo,
                health: &AllUp,
                rotation: 0,
            };
            answer::answer(
                zones,
                &www,
                QType::Known(steerdns::zone::RecordType::A),
                &client,
            )
        })
        .collect();
    let q = Question {
        name: &www,
        qtype: 1,
        dnssec_ok: true,
    };
    let mut total = std::time::Duration::ZERO;
    for pass in 0..=WARM_PASSES {
        let started = Instant::now();
        for a in &answers {
            let s = signer.secure(
                &zone,
                q,
                Sections {
                    kind: Kind::Answer,
                    answers: &a.answers,
                    authority: &a.authority,
                    additional: &a.additional,
                },
                1_800_000_000,
            );
            std::hint::black_box(s);
        }
        if pass > 0 {
            total += started.elapsed();
        }
    }
    total.as_nanos() as f64 / (answers.len() * WARM_PASSES) as f64
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let example =
        std::fs::read_to_string(root.join("zones/example.yaml")).expect("the example zone");
    let geo_paths = [
        root.join("geoip/dbip-city-lite-coarse-ipv4.mmdb"),
        root.join("geoip/dbip-country.mmdb"),
    ];
    let nets = networks();
    println!(
        "service A queries for www.api.example.com, ECS from {NETWORKS} /24 networks; ns per query (one thread)"
    );
    for alg in [
        None,
        Some(Algorithm::EcdsaP256Sha256),
        Some(Algorithm::Ed25519),
    ] {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut text = example.clone();
        if let Some(alg) = alg {
            let apex = Name::parse("api.example.com").expect("valid");
            let (key_text, _) = key::generate(&apex, alg).expect("a key");
            std::fs::write(dir.path().join("zone.private"), key_text).expect("write");
            text.push_str("\ndnssec: { key: zone.private }\n");
        }
        std::fs::write(dir.path().join("zone.yaml"), text).expect("write");
        let zones = steerdns::zone::file::load_dir(dir.path()).expect("the zone loads");
        let geo = GeoDb::open(&geo_paths).expect("the shipped GeoIP databases open");
        let metrics = Arc::new(Metrics::new());
        let handler = Handler::new(Arc::new(Snapshots::new(zones, Some(geo), metrics.clone())));
        let label = alg.map_or("unsigned zone", |a| a.mnemonic());
        let plain: Vec<Vec<u8>> = nets
            .iter()
            .map(|n| query("www.api.example.com.", HType::A, n, false))
            .collect();
        let with_do: Vec<Vec<u8>> = nets
            .iter()
            .map(|n| query("www.api.example.com.", HType::A, n, true))
            .collect();
        // Warm the GeoIP and distance caches first, so they do not count against signing.
        run(&handler, &plain, 1);
        let do0 = run(&handler, &plain, WARM_PASSES);
        let cold = run(&handler, &with_do, 1);
        let made_cold = metric(&metrics.render(), "steerdns_dnssec_signatures_made_total");
        let warm = run(&handler, &with_do, WARM_PASSES);
        let m = metrics.render();
        let made = metric(&m, "steerdns_dnssec_signatures_made_total");
        let hits = metric(&m, "steerdns_dnssec_signature_cache_hits_total");
        let signing = metric(&m, "steerdns_dnssec_signing_time_seconds_total");
        // The signing step alone (what `Signer::secure` adds to an answer), warm.
        let secure_ns = alg.map_or(0.0, |_| secure_only(&handler_parts(&dir), &nets));
        println!("{label:>16}: secure() alone {secure_ns:.0} ns/answer (warm)");
        println!(
            "{label:>16}: DO=0 {do0:>7.0} | DO=1 cold {cold:>7.0}, warm {warm:>7.0} ({:.2}x DO=0) | signatures made {made:.0} ({made_cold:.0} in the cold pass), {:.1} us each | cache hit rate {:.2}%",
            warm / do0,
            if made > 0.0 {
                signing / made * 1e6
            } else {
                0.0
            },
            if made + hits > 0.0 {
                100.0 * hits / (made + hits)
            } else {
                0.0
            },
        );
    }
}
