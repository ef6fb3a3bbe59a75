//! Cost of placing a client: the GeoIP tree walk and decode against the per-network cache.
//! Run: `cargo bench --bench geo`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use steerdns::geo::{GeoDb, Locator};

/// A fixed pseudo-random set of client addresses spread over the IPv4 space.
fn clients(n: usize) -> Vec<IpAddr> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            IpAddr::V4(Ipv4Addr::from(x))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let db = GeoDb::open(&[
        root.join("geoip/dbip-city-lite-coarse-ipv4.mmdb"),
        root.join("geoip/dbip-country.mmdb"),
    ])
    .expect("the shipped GeoIP databases open");
    // 10,000 client networks, as a busy authoritative server sees from resolvers.
    let ips = clients(10_000);
    for ip in &ips {
        db.locate(*ip);
    }
    let mut g = c.benchmark_group("locate");
    let mut i = 0;
    g.bench_function("uncached (tree walk + decode)", |b| {
        b.iter(|| {
            i = (i + 1) % ips.len();
            black_box(db.locate_uncached(black_box(ips[i])))
        })
    });
    g.bench_function("cached (warm, 10k networks)", |b| {
        b.iter(|| {
            i = (i + 1) % ips.len();
            black_box(db.locate(black_box(ips[i])))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
