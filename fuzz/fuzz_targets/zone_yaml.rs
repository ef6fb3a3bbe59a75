//! Arbitrary text → the zone loader: no panic, and a zone that loads holds the model's
//! invariants and can be served (`fuzzing::check_zone_yaml`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| steerdns::fuzzing::check_zone_yaml(data));
