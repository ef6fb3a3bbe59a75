//! Bytes → the peer exchange message decoder, and what decodes → the report merge and the drain
//! set (`fuzzing::check_peer_message`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| steerdns::fuzzing::check_peer_message(data));
