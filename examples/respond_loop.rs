//! Runs `Handler::respond_with` in a loop, as the UDP loop calls it, on one kind of query, for
//! instruction counts that do not depend on machine load:
//! `valgrind --tool=callgrind --toggle-collect='*Handler::respond_with*' target/release/examples/respond_loop geo 20000`
//! and divide the total by the count. Kinds: geo (service A with ECS), static, nxdomain.
//! `PREPARED=0` answers without prepared answers (every query routed, answered and encoded).
//!
//! Signed answers (issue 15): `SIGNED=1` signs the zone with a key made at start (ECDSA P-256;
//! `SIGNED=ed25519` for Ed25519) and sets DO=1 on the query. `NETWORKS=N` sends the geo query's
//! ECS from N /24 networks spread over the IPv4 space in turn (default 1: 81.2.69.0/24), and
//! `WARM=P` first answers every network P times (a prepared answer is kept per place and
//! rotation step, so one pass does not see every step), so the count covers warm answers only
//! when the warm-up's own instructions are taken off: run it with a count of 0 too and divide
//! the difference by the count (`bench/instructions-signed.sh` does that). It prints the
//! prepared answers' hits and misses of the counted queries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use steerdns::dns::Handler;
use steerdns::geo::GeoDb;
use steerdns::state::Snapshots;
use steerdns::telemetry::metrics::Metrics;
use steerdns::zone::key::{self, Algorithm};

/// `n` client /24 networks spread over the IPv4 space (as `benches/dnssec.rs` picks them); the
/// first is 81.2.69.0/24, the one network the single-network runs use.
fn networks(n: usize) -> Vec<String> {
    std::iter::once("81.2.69.0/24".to_string())
        .chain((1..n).map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761);
            let a = 1 + (x >> 24) % 222;
            format!("{a}.{}.{}.0/24", (x >> 16) & 0xff, (x >> 8) & 0xff)
        }))
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "geo".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let signed = match env("SIGNED").as_str() {
        "" | "0" => None,
        "ed25519" => Some(Algorithm::Ed25519),
        _ => Some(Algorithm::EcdsaP256Sha256),
    };
    let nets = networks(env("NETWORKS").parse().unwrap_or(1).max(1));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The example zone, signed in a temporary directory when asked.
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut text =
        std::fs::read_to_string(root.join("zones/example.yaml")).expect("the example zone");
    if let Some(alg) = signed {
        let apex = steerdns::zone::Name::parse("api.example.com").expect("valid");
        let (key_text, _) = key::generate(&apex, alg).expect("a key");
        std::fs::write(dir.path().join("zone.private"), key_text).expect("write the key");
        text.push_str("\ndnssec: { key: zone.private }\n");
    }
    std::fs::write(dir.path().join("example.yaml"), text).expect("write the zone");
    let zones = steerdns::zone::file::load_dir(dir.path()).expect("the example zone loads");
    let geo =
        GeoDb::open(&[root.join("geoip/dbip-city-lite-coarse-ipv4.mmdb")]).expect("GeoIP opens");
    let metrics = Arc::new(Metrics::new());
    let handler = Handler::new(Arc::new(Snapshots::new(zones, Some(geo), metrics.clone())));
    let (name, rtype, geo_query) = match kind.as_str() {
        "static" => ("status.api.example.com.", RecordType::A, false),
        "nxdomain" => ("nope.api.example.com.", RecordType::A, false),
        _ => ("www.api.example.com.", RecordType::A, true),
    };
    let message = |ecs: Option<&str>| {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).expect("valid"), rtype));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(signed.is_some());
        if let Some(net) = ecs {
            let net: ipnet::IpNet = net.parse().expect("valid");
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::from(net)));
        }
        m.edns = Some(e);
        m.to_vec().expect("encodes")
    };
    let msgs: Vec<Vec<u8>> = if geo_query {
        nets.iter().map(|n| message(Some(n))).collect()
    } else {
        vec![message(None)]
    };
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("valid");
    let (mut out, mut scratch) = (Vec::new(), String::new());
    let mut bytes = 0;
    // As the UDP loop does: one view of the snapshots per thread.
    let mut view = if env("PREPARED") == "0" {
        handler.view_unprepared()
    } else {
        handler.view()
    };
    let warm_passes: usize = env("WARM").parse().unwrap_or(0);
    for _ in 0..warm_passes {
        for msg in &msgs {
            handler.respond_with(&mut view, msg, src, false, &mut out, &mut scratch);
        }
    }
    let prepared = || {
        let text = metrics.render();
        let value = |result: &str| -> u64 {
            let name = format!("steerdns_prepared_answers_total{{result=\"{result}\"}}");
            text.lines()
                .find(|l| l.starts_with(&name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (value("hit"), value("miss"))
    };
    let (hits_before, misses_before) = prepared();
    for msg in msgs.iter().cycle().take(count) {
        handler.respond_with(&mut view, msg, src, false, &mut out, &mut scratch);
        bytes += out.len();
    }
    let (hits, misses) = prepared();
    println!(
        "{kind}: {count} responses, {bytes} bytes ({} networks, {}); prepared answers: {} hits, {} misses",
        msgs.len(),
        signed.map_or("unsigned, DO=0", |a| a.mnemonic()),
        hits - hits_before,
        misses - misses_before,
    );
}
