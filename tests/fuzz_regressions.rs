//! Issue 8 (fuzzing): replays every fuzz input the repository keeps through the checks the fuzz
//! targets run (`steerdns::fuzzing`), on the stable toolchain and without a fuzzer: the seed
//! corpora in `fuzz/corpus/<target>/` and every crash input found so far in
//! `tests/fuzz_regressions/<target>/`. `fuzz/run.sh` puts a new crash input there, so it fails
//! here until the bug is fixed, and stays as the bug's regression test afterwards.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use steerdns::fuzzing::{
    DnsFixture, check_dns_request, check_ecs_option, check_peer_message, check_zone_yaml,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files in `dir` (none if it does not exist), READMEs left out.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("listing a fuzz input directory").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

/// The seeds of `target`.
fn seeds(target: &str) -> Vec<PathBuf> {
    let seeds = files(&root().join("fuzz/corpus").join(target));
    assert!(
        seeds.len() >= 3,
        "fuzz/corpus/{target} has {} seeds: the path or the corpus is wrong",
        seeds.len()
    );
    seeds
}

/// The seeds and the crash inputs of `target`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut all = seeds(target);
    all.extend(files(&root().join("tests/fuzz_regressions").join(target)));
    all
}

/// Runs `check` on every input of `target`, and fails naming every input that fails it.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let failed: Vec<String> = inputs(target)
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("reading a fuzz input");
            catch_unwind(AssertUnwindSafe(|| check(&data)))
                .is_err()
                .then(|| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: these inputs fail: {failed:#?}"
    );
}

fn fixture() -> DnsFixture {
    let geoip = std::fs::read(root().join("tests/fixtures/geoip/GeoIP2-City-Test.mmdb"))
        .expect("reading the test GeoIP database");
    DnsFixture::new(geoip)
}

#[test]
fn dns_request() {
    let fixture = fixture();
    replay("dns_request", |data| check_dns_request(&fixture, data));
}

/// Issue 15: the same inputs to the fixture with `api.example.com` signed, where DO=1 answers
/// carry RRSIGs and denial: every path must agree and every RRSIG verify.
#[test]
fn dns_request_to_a_signed_zone() {
    let geoip = std::fs::read(root().join("tests/fixtures/geoip/GeoIP2-City-Test.mmdb"))
        .expect("reading the test GeoIP database");
    let fixture = DnsFixture::signed(geoip, steerdns::zone::key::Algorithm::EcdsaP256Sha256);
    replay("dns_request", |data| check_dns_request(&fixture, data));
}

#[test]
fn zone_yaml() {
    replay("zone_yaml", check_zone_yaml);
}

#[test]
fn peer_message() {
    replay("peer_message", check_peer_message);
}

#[test]
fn ecs_option() {
    let fixture = fixture();
    replay("ecs_option", |data| check_ecs_option(&fixture, data));
}

/// The seeds reach what they are named for, so the fuzzer starts from deep inside each parser:
/// the DNS queries are answered (but the two that are no query), the shipped and fixture zones
/// load and the invalid ones do not, the exchange messages decode.
#[test]
fn seeds_reach_what_they_are_named_for() {
    let fixture = fixture();
    let src = "81.2.69.160:5353".parse().unwrap();
    for path in seeds("dns_request") {
        let data = std::fs::read(&path).unwrap();
        let answered = fixture.respond(&data[1..], src, data[0] & 1 != 0).is_some();
        let name = path.file_name().unwrap().to_str().unwrap();
        let expected = !matches!(name, "response_not_answered" | "short");
        assert_eq!(answered, expected, "{name}");
    }
    for path in seeds("zone_yaml") {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let loads = steerdns::zone::file::parse_zone(&text, name).is_ok();
        assert_eq!(loads, !name.starts_with("invalid_"), "{name}");
    }
    for path in seeds("peer_message") {
        let data = std::fs::read(&path).unwrap();
        let decoded = serde_json::from_slice::<steerdns::cluster::Exchange>(&data);
        assert!(decoded.is_ok(), "{}: {decoded:?}", path.display());
    }
}
