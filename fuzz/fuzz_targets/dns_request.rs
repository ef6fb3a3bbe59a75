//! A raw request → `Handler::respond` on the fixture zones, over UDP or TCP (the first byte
//! picks): no panic, and any response parses and matches the query (`fuzzing::check_response`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steerdns::fuzzing::{DnsFixture, check_dns_request};

static FIXTURE: OnceLock<DnsFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(|| {
        DnsFixture::new(include_bytes!("../../tests/fixtures/geoip/GeoIP2-City-Test.mmdb").to_vec())
    });
    check_dns_request(fixture, data);
});
