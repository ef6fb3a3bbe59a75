//! An EDNS Client Subnet option body → the option parser, and wrapped into a query through both
//! DNS paths (`fuzzing::check_ecs_option`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use steerdns::fuzzing::{DnsFixture, check_ecs_option};

static FIXTURE: OnceLock<DnsFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(|| {
        DnsFixture::new(include_bytes!("../../tests/fixtures/geoip/GeoIP2-City-Test.mmdb").to_vec())
    });
    check_ecs_option(fixture, data);
});
