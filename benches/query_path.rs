//! The query path without the network, for regressions in review: selection for a service,
//! `answer()` for a service and a static name, and `Handler::respond` (parse, answer, encode) for
//! the common queries. Run: `cargo bench --bench query_path`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name as HName, RecordType as HType};
use steerdns::dns::Handler;
use steerdns::dns::answer::{self, AllUp, Client, QType};
use steerdns::geo::GeoDb;
use steerdns::state::Snapshots;
use steerdns::telemetry::metrics::Metrics;
use steerdns::zone::{Name, RecordType, ZoneSet};

fn query(name: &str, t: HType, ecs: Option<&str>) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        HName::from_ascii(name).expect("a valid name"),
        t,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(net) = ecs {
        let net: ipnet::IpNet = net.parse().expect("a valid network");
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::from(net)));
    }
    m.edns = Some(e);
    m.to_vec().expect("encodes")
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let zones: ZoneSet =
        steerdns::zone::file::load_dir(&root.join("zones")).expect("the example zone loads");
    let geo = GeoDb::open(&[
        root.join("geoip/dbip-city-lite-coarse-ipv4.mmdb"),
        root.join("geoip/dbip-country.mmdb"),
    ])
    .expect("the shipped GeoIP databases open");
    let www = Name::parse("www.api.example.com").expect("valid");
    let status = Name::parse("status.api.example.com").expect("valid");

    let mut g = c.benchmark_group("answer");
    let client = Client {
        addr: "81.2.69.1".parse().expect("valid"),
        ecs_prefix: Some(24),
        locator: &geo,
        health: &AllUp,
        rotation: 0,
    };
    let zone = zones.find(&www).expect("in the zone").clone();
    let service = zone.nodes[&www].service.clone().expect("a service");
    g.bench_function("select nearest (3 DCs, cached location)", |b| {
        b.iter(|| {
            black_box(answer::select(
                &zone,
                &service,
                RecordType::A,
                black_box(&client),
            ))
        })
    });
    g.bench_function("answer service A", |b| {
        b.iter(|| {
            black_box(answer::answer(
                &zones,
                &www,
                QType::Known(RecordType::A),
                &client,
            ))
        })
    });
    g.bench_function("answer static A", |b| {
        b.iter(|| {
            black_box(answer::answer(
                &zones,
                &status,
                QType::Known(RecordType::A),
                &client,
            ))
        })
    });
    g.finish();

    let snapshots = Arc::new(Snapshots::new(zones, Some(geo), Arc::new(Metrics::new())));
    let handler = Handler::new(snapshots);
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("valid");
    let mut out = Vec::with_capacity(1232);
    let mut name = String::new();
    let mut g = c.benchmark_group("respond");
    for (label, msg) in [
        (
            "service A with ECS",
            query("www.api.example.com.", HType::A, Some("81.2.69.0/24")),
        ),
        (
            "service AAAA without ECS",
            query("www.api.example.com.", HType::AAAA, None),
        ),
        ("static A", query("status.api.example.com.", HType::A, None)),
        ("NXDOMAIN", query("nope.api.example.com.", HType::A, None)),
        (
            "refused (other zone)",
            query("www.example.org.", HType::A, None),
        ),
    ] {
        // As the UDP loop does: one view of the snapshots kept across queries.
        let mut view = handler.view();
        g.bench_function(label, |b| {
            b.iter(|| {
                black_box(handler.respond_with(
                    &mut view,
                    black_box(&msg),
                    src,
                    false,
                    &mut out,
                    &mut name,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
