//! IP address → location, from MaxMind-format databases (the only user of `maxminddb`).
//!
//! Reads GeoIP2/GeoLite2 City and Country layouts and the flat ip-location-db / DB-IP Lite layout
//! (`{country_code}` only), taking continent and coordinates for the latter from the country
//! table shipped in `geoip/country-centroids.csv`. Several databases may be stacked: the first one
//! that knows an address answers (e.g. an IPv4 city database, then an IPv4+IPv6 country one).
//! Lookups are cached per client network and per thread, so a repeated client costs a hash
//! lookup with no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use serde::Deserialize;

/// Where a client is, as far as the database knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Location {
    /// Continent code: AF AN AS EU NA OC SA.
    pub continent: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    pub country: Option<String>,
    /// ISO 3166-2 subdivision code without the country (`CA` for California).
    pub subdivision: Option<String>,
    /// Latitude and longitude in degrees.
    pub coordinates: Option<(f64, f64)>,
}

impl Location {
    pub fn is_empty(&self) -> bool {
        self.continent.is_none() && self.country.is_none() && self.coordinates.is_none()
    }
}

/// A lookup result: the location and the network it was found in.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub location: Arc<Location>,
    /// The matched network's prefix length, in the family of the address looked up.
    pub prefix: u8,
    /// Which database answered (its file name), for explanations.
    pub source: Arc<str>,
}

/// Something that can place an address. `GeoDb` in production; a fixed table in tests.
pub trait Locator: Send + Sync {
    /// `None` when no database knows the address.
    fn locate(&self, ip: IpAddr) -> Option<Located>;
}

/// A locator that knows nothing: every client is unlocated.
pub struct NoLocation;

impl Locator for NoLocation {
    fn locate(&self, _ip: IpAddr) -> Option<Located> {
        None
    }
}

/// The locator the query path uses: the loaded database, or, without one, one that places nobody.
pub fn locator(db: Option<&GeoDb>) -> &dyn Locator {
    match db {
        Some(db) => db,
        None => &NoLocation,
    }
}

/// Why a database could not be used. The cause is part of the message and not also a
/// `source`, so a report of the whole chain says it once.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("GeoIP database {}: cannot read it: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("GeoIP database {}: cannot open: {error}", path.display())]
    Open {
        path: PathBuf,
        error: maxminddb::MaxMindDbError,
    },
    #[error("GeoIP database {}: failed verification: {error}", path.display())]
    Verify {
        path: PathBuf,
        error: maxminddb::MaxMindDbError,
    },
    #[error("no GeoIP database given")]
    NoDatabase,
}

/// Country code → (continent, latitude, longitude), from the table shipped in the repo
/// (sources and licences in `geoip/README.md`).
type CountryTable = HashMap<String, (String, Option<(f64, f64)>)>;

static COUNTRIES: LazyLock<CountryTable> = LazyLock::new(|| {
    let mut m = HashMap::new();
    for line in include_str!("../geoip/country-centroids.csv")
        .lines()
        .skip(1)
    {
        let cols: Vec<&str> = line.split(',').collect();
        // iso2,name,continent,latitude,longitude,coord_source; names contain no commas.
        if cols.len() < 5 {
            continue;
        }
        let coords = match (cols[3].parse::<f64>(), cols[4].parse::<f64>()) {
            (Ok(lat), Ok(lon)) => Some((lat, lon)),
            _ => None,
        };
        m.insert(cols[0].to_string(), (cols[2].to_string(), coords));
    }
    m
});

/// The continent and centroid of a country, from the shipped table.
pub fn country_info(iso2: &str) -> Option<(&'static str, Option<(f64, f64)>)> {
    COUNTRIES
        .get(iso2)
        .map(|(continent, coords)| (continent.as_str(), *coords))
}

/// The coordinates used for distance: the database's own, else the country's centroid.
pub fn coordinates(loc: &Location) -> Option<(f64, f64)> {
    loc.coordinates.or_else(|| {
        loc.country
            .as_deref()
            .and_then(country_info)
            .and_then(|(_, c)| c)
    })
}

/// One opened database file.
struct Source {
    name: Arc<str>,
    reader: maxminddb::Reader<Backing>,
}

/// Fields of the GeoIP2 City/Country layouts we use.
#[derive(Deserialize)]
struct GeoIp2Record<'a> {
    #[serde(borrow, default)]
    continent: Option<CodeField<'a>>,
    #[serde(borrow, default)]
    country: Option<IsoField<'a>>,
    #[serde(borrow, default)]
    subdivisions: Option<Vec<IsoField<'a>>>,
    #[serde(default)]
    location: Option<LatLon>,
    /// The flat ip-location-db layout.
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct CodeField<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct IsoField<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct LatLon {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

impl GeoIp2Record<'_> {
    fn into_location(self) -> Location {
        let country = self
            .country
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .filter(|c| !c.is_empty() && *c != "ZZ")
            .map(str::to_ascii_uppercase);
        let continent = self
            .continent
            .and_then(|c| c.code)
            .map(str::to_string)
            .or_else(|| {
                country
                    .as_deref()
                    .and_then(country_info)
                    .map(|(c, _)| c.to_string())
            });
        let coordinates = self.location.and_then(|l| match (l.latitude, l.longitude) {
            (Some(lat), Some(lon)) if lat.is_finite() && lon.is_finite() => Some((lat, lon)),
            _ => None,
        });
        let subdivision = self
            .subdivisions
            .and_then(|s| s.into_iter().next())
            .and_then(|s| s.iso_code)
            .map(str::to_ascii_uppercase);
        Location {
            continent,
            country,
            subdivision,
            coordinates,
        }
    }
}

/// How many networks each thread's cache holds before it starts over: 7/8 of 65,536, the most
/// a table of 65,536 slots holds before it grows (hashbrown's load factor), so each thread's
/// table stays at 65,536 slots of 57 bytes, about 3.6 MiB. The query path runs on one UDP thread
/// per core and the runtime's threads for TCP.
const CACHE_CAPACITY: usize = 57_344;
/// The cache key masks an address to this many bits: /24 for IPv4 and /48 for IPv6 cover what
/// databases usually distinguish; a more specific network is looked up every time.
const CACHE_V4_BITS: u8 = 24;
const CACHE_V6_BITS: u8 = 48;

/// Opened GeoIP databases. Immutable: a reload builds a new one, with a new `id`.
pub struct GeoDb {
    sources: Vec<Source>,
    /// Which database each thread's cache (`PLACES`) holds answers of.
    id: u64,
    /// Decoded locations by (source, record offset), shared between networks.
    interned: Mutex<HashMap<(usize, usize), Arc<Location>>>,
}

/// What `GeoDb::describe` reports about one database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DatabaseInfo {
    pub path: String,
    pub database_type: String,
    pub build_epoch: u64,
    pub ip_version: u16,
}

impl GeoDb {
    /// Opens and verifies each database, in order of preference.
    pub fn open(paths: &[PathBuf]) -> Result<GeoDb, GeoError> {
        if paths.is_empty() {
            return Err(GeoError::NoDatabase);
        }
        let mut sources = Vec::new();
        for path in paths {
            sources.push(open_source(path)?);
        }
        Ok(GeoDb::from_sources(sources))
    }

    /// A database from bytes (tests build their own).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<GeoDb, GeoError> {
        let reader = maxminddb::Reader::from_source(Backing::Heap(bytes)).map_err(|error| {
            GeoError::Open {
                path: PathBuf::from(name),
                error,
            }
        })?;
        Ok(GeoDb::from_sources(vec![Source {
            name: Arc::from(name),
            reader,
        }]))
    }

    fn from_sources(sources: Vec<Source>) -> GeoDb {
        static IDS: AtomicU64 = AtomicU64::new(1);
        GeoDb {
            sources,
            id: IDS.fetch_add(1, Ordering::Relaxed),
            interned: Mutex::new(HashMap::new()),
        }
    }

    pub fn describe(&self) -> Vec<DatabaseInfo> {
        self.sources
            .iter()
            .map(|s| {
                let m = s.reader.metadata();
                DatabaseInfo {
                    path: s.name.to_string(),
                    database_type: m.database_type.clone(),
                    build_epoch: m.build_epoch,
                    ip_version: m.ip_version,
                }
            })
            .collect()
    }

    /// Looks `ip` up without the cache (the tree walk and decode).
    pub fn locate_uncached(&self, ip: IpAddr) -> Option<Located> {
        self.lookup(ip, full_bits(ip)).0
    }

    /// The lookup, and whether its result holds for every address in `ip`'s `/key_bits` network
    /// (so the cache may serve it to the whole network).
    fn lookup(&self, ip: IpAddr, key_bits: u8) -> (Option<Located>, bool) {
        let ip = ip.to_canonical();
        let mut uniform = true;
        for (i, source) in self.sources.iter().enumerate() {
            let Ok(result) = source.reader.lookup(ip) else {
                continue;
            };
            let prefix = match result.network() {
                Ok(net) if net.is_ipv4() == ip.is_ipv4() => net.prefix(),
                _ => full_bits(ip),
            };
            uniform &= prefix <= key_bits;
            let Some(offset) = result.offset() else {
                continue;
            };
            let Some(location) = self.decode(i, offset, &result) else {
                continue;
            };
            if location.is_empty() {
                continue;
            }
            let found = Located {
                location,
                prefix,
                source: source.name.clone(),
            };
            return (Some(found), uniform);
        }
        (None, uniform)
    }

    fn decode(
        &self,
        source: usize,
        offset: usize,
        result: &maxminddb::LookupResult<'_, Backing>,
    ) -> Option<Arc<Location>> {
        let mut interned = self.interned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loc) = interned.get(&(source, offset)) {
            return Some(loc.clone());
        }
        let record: GeoIp2Record = result.decode().ok().flatten()?;
        let loc = Arc::new(record.into_location());
        if interned.len() > 1 << 20 {
            interned.clear();
        }
        interned.insert((source, offset), loc.clone());
        Some(loc)
    }
}

/// Each thread's answers per client network, of the database `db` (a `GeoDb::id`). Per thread,
/// so a hit takes no lock and writes no line another core reads: the query path's threads each
/// look a network up once. Keyed per thread (clients choose the keys, so the hash must not be
/// predictable) by foldhash, several times faster than SipHash.
#[derive(Default)]
struct Places {
    db: u64,
    map: HashMap<IpAddr, Option<Located>, foldhash::fast::RandomState>,
}

thread_local! {
    static PLACES: RefCell<Places> = RefCell::new(Places::default());
}

impl Locator for GeoDb {
    fn locate(&self, ip: IpAddr) -> Option<Located> {
        let ip = ip.to_canonical();
        let (key, key_bits) = match ip {
            IpAddr::V4(v4) => (IpAddr::V4(mask_v4(v4, CACHE_V4_BITS)), CACHE_V4_BITS),
            IpAddr::V6(v6) => (IpAddr::V6(mask_v6(v6, CACHE_V6_BITS)), CACHE_V6_BITS),
        };
        PLACES.with(|places| {
            // Never borrowed twice (a lookup does not locate), but a query must not panic.
            let Ok(mut places) = places.try_borrow_mut() else {
                return self.lookup(ip, key_bits).0;
            };
            if places.db != self.id {
                // Another database was loaded: drop the old one's answers.
                places.map.clear();
                places.db = self.id;
            }
            if let Some(hit) = places.map.get(&key) {
                return hit.clone();
            }
            let (found, uniform) = self.lookup(ip, key_bits);
            // Cache only when the whole key network shares the answer.
            if uniform {
                if places.map.len() >= CACHE_CAPACITY {
                    places.map.clear();
                }
                places.map.insert(key, found.clone());
            }
            found
        })
    }
}

/// The bytes a reader looks into: a private memory-mapped copy in production (only the pages
/// lookups touch count towards the process's memory), plain memory in tests.
pub enum Backing {
    Heap(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        match self {
            Backing::Heap(v) => v,
            Backing::Mapped(m) => m,
        }
    }
}

/// Copies `bytes` into an anonymous memory file: nobody else can truncate or rewrite it, so
/// replacing or editing the database file in place can never fault a running node (as a mapping
/// of the file itself could).
fn memory_file(bytes: &[u8]) -> Option<std::fs::File> {
    use std::io::Write;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"steerdns-geoip".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor we own; File takes over closing it.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.write_all(bytes).ok()?;
    Some(file)
}

fn map(file: &std::fs::File) -> Option<Backing> {
    // SAFETY: the memory file is private to this process and never written after it was filled,
    // so the mapping cannot change or shrink under the reader.
    unsafe { memmap2::Mmap::map(file) }
        .ok()
        .map(Backing::Mapped)
}

fn open_source(path: &Path) -> Result<Source, GeoError> {
    let open_err = |error| GeoError::Open {
        path: path.to_path_buf(),
        error,
    };
    let bytes = std::fs::read(path).map_err(|error| GeoError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    // Serve from a private mapping, so only the pages lookups touch count towards the process's
    // memory; without memfd, from the heap.
    let file = memory_file(&bytes);
    let backing = || match file.as_ref().and_then(map) {
        Some(m) => m,
        None => Backing::Heap(bytes.clone()),
    };
    // verify() reads every page: do it through a mapping that is dropped afterwards.
    let checked = maxminddb::Reader::from_source(backing()).map_err(open_err)?;
    if let Err(error) = checked.verify() {
        // The ip-location-db files have an empty metadata description, which verify() rejects
        // although their data is sound (see geoip/README.md); anything else is fatal.
        if !error.to_string().contains("description") {
            return Err(GeoError::Verify {
                path: path.to_path_buf(),
                error,
            });
        }
    }
    drop(checked);
    let reader = maxminddb::Reader::from_source(backing()).map_err(open_err)?;
    Ok(Source {
        name: Arc::from(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
        ),
        reader,
    })
}

fn full_bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

pub fn mask_v4(ip: Ipv4Addr, bits: u8) -> Ipv4Addr {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits.min(32)))
    };
    Ipv4Addr::from(u32::from(ip) & mask)
}

pub fn mask_v6(ip: Ipv6Addr, bits: u8) -> Ipv6Addr {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits.min(128)))
    };
    Ipv6Addr::from(u128::from(ip) & mask)
}

/// `ip` with every bit past `bits` cleared.
pub fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(mask_v4(v4, bits)),
        IpAddr::V6(v6) => IpAddr::V6(mask_v6(v6, bits)),
    }
}

/// A fixed network → location table, for tests and examples.
#[derive(Default)]
pub struct StaticLocator {
    pub entries: Vec<(ipnet::IpNet, Location)>,
}

impl Locator for StaticLocator {
    fn locate(&self, ip: IpAddr) -> Option<Located> {
        let ip = ip.to_canonical();
        self.entries
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(net, loc)| Located {
                location: Arc::new(loc.clone()),
                prefix: net.prefix_len(),
                source: Arc::from("static"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geoip")
            .join(name)
    }

    #[test]
    fn maxmind_city_test_db_gives_country_continent_and_coordinates() {
        let db = GeoDb::open(&[fixture("GeoIP2-City-Test.mmdb")]).unwrap();
        let l = db.locate("81.2.69.142".parse().unwrap()).unwrap();
        assert_eq!(l.location.country.as_deref(), Some("GB"));
        assert_eq!(l.location.continent.as_deref(), Some("EU"));
        assert_eq!(l.prefix, 31);
        assert!(l.location.coordinates.is_some());
        // IPv4-mapped IPv6 is looked up canonically.
        let m = db.locate("::ffff:81.2.69.142".parse().unwrap()).unwrap();
        assert_eq!(m.location, l.location);
        let v6 = db.locate("2001:218::1".parse().unwrap()).unwrap();
        assert_eq!(v6.location.country.as_deref(), Some("JP"));
        assert_eq!(v6.prefix, 32);
        assert!(db.locate("10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn subdivisions_are_read() {
        let db = GeoDb::open(&[fixture("GeoIP2-City-Test.mmdb")]).unwrap();
        let l = db.locate("216.160.83.56".parse().unwrap()).unwrap();
        assert_eq!(l.location.country.as_deref(), Some("US"));
        assert_eq!(l.location.subdivision.as_deref(), Some("WA"));
    }

    #[test]
    fn shipped_flat_country_db_gets_continent_from_the_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/dbip-country.mmdb");
        let db = GeoDb::open(&[path]).unwrap();
        let l = db.locate("1.1.1.1".parse().unwrap()).unwrap();
        assert_eq!(l.location.country.as_deref(), Some("AU"));
        assert_eq!(l.location.continent.as_deref(), Some("OC"));
        assert_eq!(l.prefix, 24);
        assert!(coordinates(&l.location).is_some());
    }

    #[test]
    fn stacked_databases_fall_through() {
        let db = GeoDb::open(&[
            fixture("GeoIP2-City-Test.mmdb"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/dbip-country.mmdb"),
        ])
        .unwrap();
        let gb = db.locate("81.2.69.142".parse().unwrap()).unwrap();
        assert_eq!(&*gb.source, "GeoIP2-City-Test.mmdb");
        let au = db.locate("1.1.1.1".parse().unwrap()).unwrap();
        assert_eq!(&*au.source, "dbip-country.mmdb");
    }

    #[test]
    fn a_thread_never_answers_from_another_databases_cache() {
        // A reload builds a new database; the thread's cache must not answer for it from the
        // old one's entries, nor the other way round.
        let country =
            GeoDb::open(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/dbip-country.mmdb")])
                .unwrap();
        let city = GeoDb::open(&[fixture("GeoIP2-City-Test.mmdb")]).unwrap();
        let ip: IpAddr = "1.1.1.1".parse().unwrap();
        for _ in 0..2 {
            let au = country.locate(ip).unwrap();
            assert_eq!(au.location.country.as_deref(), Some("AU"));
            assert_eq!(city.locate(ip), None);
            // The city database knows 81.2.69.0/24 and the country one answers it too: each
            // from its own data.
            let gb = city.locate("81.2.69.160".parse().unwrap()).unwrap();
            assert_eq!(&*gb.source, "GeoIP2-City-Test.mmdb");
            let other = country.locate("81.2.69.160".parse().unwrap()).unwrap();
            assert_eq!(&*other.source, "dbip-country.mmdb");
        }
    }

    #[test]
    fn broken_databases_are_rejected() {
        assert!(matches!(
            GeoDb::open(&[fixture("GeoIP2-City-Test-Invalid-Node-Count.mmdb")]),
            Err(GeoError::Open { .. })
        ));
        assert!(matches!(
            GeoDb::open(&[fixture("MaxMind-DB-test-broken-search-tree-24.mmdb")]),
            Err(GeoError::Verify { .. })
        ));
        // Issue 18: the cause once, in the message; nothing repeats it as a source.
        let missing = GeoDb::open(&[fixture("nope.mmdb")]).err().unwrap();
        assert!(std::error::Error::source(&missing).is_none());
        let text = format!("{:#}", anyhow::Error::from(missing));
        assert!(
            text.contains("nope.mmdb: cannot read it: No such file or directory"),
            "{text}"
        );
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    #[test]
    fn cache_gives_the_same_answers_as_the_tree() {
        let db = GeoDb::open(&[fixture("GeoIP2-City-Test.mmdb")]).unwrap();
        for ip in [
            "81.2.69.142",
            "81.2.69.143",
            "81.2.69.160",
            "89.160.20.128",
            "2.3.3.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            for _ in 0..2 {
                assert_eq!(db.locate(ip), db.locate_uncached(ip), "{ip}");
            }
        }
    }

    #[test]
    fn masks() {
        assert_eq!(
            mask_v4("10.1.2.3".parse().unwrap(), 24),
            "10.1.2.0".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(
            mask_v4("10.1.2.3".parse().unwrap(), 0),
            Ipv4Addr::UNSPECIFIED
        );
        assert_eq!(
            mask_v6("2001:db8::1".parse().unwrap(), 32),
            "2001:db8::".parse::<Ipv6Addr>().unwrap()
        );
    }
}
