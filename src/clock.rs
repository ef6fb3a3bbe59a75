//! Wall-clock time as nodes stamp and compare it: Unix milliseconds. A leaf module, so that
//! anything that needs the time (events, drains, the state API, metrics, the cluster) can ask
//! without importing the wing that first needed it.

/// Unix time in milliseconds (0 if the clock is before 1970).
#[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
