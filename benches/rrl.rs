//! Cost of response rate limiting per UDP response: the bucket key (SipHash of network, name
//! and type) and the decision (shard lock, table lookup, refill). Run: `cargo bench --bench rrl`.
//! `benches/rrl_flood.sh` measures the effect end to end under dnsperf.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use steerdns::rrl::{DEFAULT_MAX_ENTRIES, Kind, Limiter, Limits, MIN_COST_BYTES};
use tokio::time::Instant;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rrl");
    let limits = Limits::default();
    let kind = Kind::Answer {
        qname: b"www.api.example.com",
        qtype: 1,
        subnet: None,
    };

    // One resolver network asking one name: one hot bucket.
    let limiter = Limiter::new(DEFAULT_MAX_ENTRIES);
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    g.bench_function("key + decide, one bucket", |b| {
        b.iter(|| {
            let key = limiter.key(black_box(client), black_box(&kind));
            black_box(limiter.decide(key, &limits, MIN_COST_BYTES, Instant::now()))
        })
    });

    // A spoofed flood from ever new networks: every response a new bucket, the table full and
    // evicting its oldest entry each time.
    let limiter = Limiter::new(DEFAULT_MAX_ENTRIES);
    let mut n: u32 = 0;
    g.bench_function("key + decide, new network each time (table full)", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let client = IpAddr::V4(Ipv4Addr::from(n << 8));
            let key = limiter.key(client, black_box(&kind));
            black_box(limiter.decide(key, &limits, MIN_COST_BYTES, Instant::now()))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
