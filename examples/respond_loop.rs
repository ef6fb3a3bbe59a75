//! Runs `Handler::respond_with` in a loop, as the UDP loop calls it, on one kind of query, for
//! instruction counts that do not depend on machine load:
//! `valgrind --tool=callgrind --toggle-collect='*Handler::respond_with*' target/release/examples/respond_loop geo 20000`
//! and divide the total by the count. Kinds: geo (service A with ECS), static, nxdomain.
//! `PREPARED=0` answers without prepared answers (every query routed, answered and encoded).

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

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "geo".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let zones =
        steerdns::zone::file::load_dir(&root.join("zones")).expect("the example zone loads");
    let geo =
        GeoDb::open(&[root.join("geoip/dbip-city-lite-coarse-ipv4.mmdb")]).expect("GeoIP opens");
    let handler = Handler::new(Arc::new(Snapshots::new(
        zones,
        Some(geo),
        Arc::new(Metrics::new()),
    )));
    let (name, rtype, ecs) = match kind.as_str() {
        "static" => ("status.api.example.com.", RecordType::A, None),
        "nxdomain" => ("nope.api.example.com.", RecordType::A, None),
        _ => ("www.api.example.com.", RecordType::A, Some("81.2.69.0/24")),
    };
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("valid"), rtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(net) = ecs {
        let net: ipnet::IpNet = net.parse().expect("valid");
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::from(net)));
    }
    m.edns = Some(e);
    let msg = m.to_vec().expect("encodes");
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("valid");
    let (mut out, mut scratch) = (Vec::new(), String::new());
    let mut bytes = 0;
    // As the UDP loop does: one view of the snapshots, and the receive time, per batch.
    let mut view = if std::env::var("PREPARED").is_ok_and(|v| v == "0") {
        handler.view_unprepared()
    } else {
        handler.view()
    };
    for _ in 0..count {
        let received = std::time::Instant::now();
        handler.respond_with(
            &mut view,
            &msg,
            src,
            false,
            &mut out,
            &mut scratch,
            received,
        );
        bytes += out.len();
    }
    println!("{kind}: {count} responses, {bytes} bytes");
}
