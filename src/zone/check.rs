//! Health check definitions: what to probe on an endpoint and how often (plain data, no I/O),
//! and the raw zone-YAML form `file` deserializes and validates into them.
//!
//! The defaults aim at fast failover with some hysteresis: after its first failed probe an
//! endpoint is re-probed every `fast_interval` until `fall` failures in a row confirm it down (or
//! a success clears it), so a refusing endpoint leaves the answers within `interval + (fall − 1) ×
//! fast_interval` = 1.4 s, a hung one within `interval + fall × timeout` = 3.4 s; it comes back
//! after `rise` = 2 good probes, the second `fast_interval` after the first. For comparison:
//!
//! | | interval | timeout | down after | up after | time to withdraw |
//! |---|---|---|---|---|---|
//! | steerdns | 1 s (200 ms to confirm) | 800 ms | `fall` 3 failures in a row | `rise` 2 successes in a row | ≈ 1.4 s refused, ≈ 3.4 s hung |
//! | Route 53 | 30 s (10 s "fast") | 4 s connect, 2 s response | failure threshold 3 | 3 successes | ≈ 90 s |
//! | gdnsd | 10 s | | `down_thresh` 10 failures (reset by `ok_thresh` 10 successes in a row) | `up_thresh` 20 successes | ≥ 100 s |

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::zone::name::Name;

/// Time between two probes of one endpoint. Route 53 probes every 30 s (10 s as a paid
/// option), gdnsd every 10 s; 1 s lets a dead endpoint leave the answers within seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest default `fast_interval`: below it, an endpoint in trouble would get ten probes a
/// second or more from every node, for a gain of a few tens of milliseconds.
pub const MIN_DEFAULT_FAST_INTERVAL: Duration = Duration::from_millis(100);
/// How long one probe may take before it counts as a failure. Below the interval so that at most
/// one probe per endpoint is ever in flight.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(800);
/// Consecutive failures that take an Up endpoint Down. Route 53's failure threshold is 3 too;
/// gdnsd's `down_thresh` is 10 (failures, reset only by `ok_thresh` 10 successes in a row).
/// Above 1 so that one lost packet does not move traffic.
pub const DEFAULT_FALL: u32 = 3;
/// Consecutive successes that bring a Down endpoint back Up. Route 53 uses its failure threshold
/// (3) here too, gdnsd's `up_thresh` is 20; 2 keeps recovery quick while still needing proof of it.
pub const DEFAULT_RISE: u32 = 2;
/// How much of a response body is read to look for `body_contains`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// The `fast_interval` of a check that does not set one: a fifth of `interval` (200 ms at the
/// default 1 s), at least `MIN_DEFAULT_FAST_INTERVAL`, never more than `interval`.
///
/// On by default, unlike HAProxy's `fastinter` (which falls back to `inter`) and with nothing
/// like it in Route 53: it costs a healthy or a steadily dead backend nothing (both are probed
/// every `interval`, exactly as without it), and a transition takes the same `fall` (or `rise`)
/// probes, only sooner; a lone failed probe costs one extra probe. What it buys is the point of
/// this server: with `fall` 3 a refusing endpoint is out 1.4 s after it fails instead of 3 s.
/// A fifth keeps `fall` 3 confirmations (two fast probes) well inside one interval. To get
/// HAProxy's default, set `fast_interval` to the interval.
pub fn default_fast_interval(interval: Duration) -> Duration {
    (interval / 5).max(MIN_DEFAULT_FAST_INTERVAL).min(interval)
}

/// One health check, validated: every field holds a usable value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Check {
    pub kind: CheckKind,
    /// Time between the starts of two probes of one endpoint whose status is settled.
    pub interval: Duration,
    /// Time between the starts of two probes while the endpoint is in transition: its latest
    /// probes disagree with its status but have not yet reached `fall` (or `rise`). Never longer
    /// than `interval`; see `default_fast_interval`. A probe that takes longer is followed at
    /// once by the next; the only overlap is the confirming probe of a settled Up endpoint whose
    /// probe is still running at half its timeout (see `EndpointState::confirms_early`).
    pub fast_interval: Duration,
    /// Bound on one probe, connection and body included. Always shorter than `interval`.
    pub timeout: Duration,
    /// Consecutive failures that mark an Up endpoint Down (at least 1).
    pub fall: u32,
    /// Consecutive successes that mark a Down endpoint Up (at least 1).
    pub rise: u32,
}

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// An HTTP or HTTPS request whose response must match.
    Http(HttpCheck),
    /// A TCP connection that must be accepted.
    Tcp { port: u16 },
}

/// An HTTP(S) request to the endpoint's address and what its response must look like.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// HTTPS when true.
    pub tls: bool,
    pub port: u16,
    pub method: HttpMethod,
    /// Starts with '/'; may carry a query string.
    pub path: String,
    /// Sent as the Host header and the TLS SNI name, whatever address is probed; `None` sends the
    /// endpoint's address (and no SNI, as TLS has none for addresses).
    pub host: Option<String>,
    /// Status codes that count as healthy; empty means any 2xx.
    pub expect_status: Vec<u16>,
    /// Text the first `max_body_bytes` of the body must contain.
    pub body_contains: Option<String>,
    pub max_body_bytes: usize,
    /// Whether the server's certificate must be valid for `host`. Off only for test backends
    /// with self-signed certificates.
    pub verify_tls: bool,
}

/// The request method of an HTTP check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    Get,
    Head,
}

impl Check {
    /// A check of the given kind with the default timing.
    pub fn new(kind: CheckKind) -> Check {
        Check {
            kind,
            interval: DEFAULT_INTERVAL,
            fast_interval: default_fast_interval(DEFAULT_INTERVAL),
            timeout: DEFAULT_TIMEOUT,
            fall: DEFAULT_FALL,
            rise: DEFAULT_RISE,
        }
    }

    /// The port the check connects to.
    pub fn port(&self) -> u16 {
        match &self.kind {
            CheckKind::Http(h) => h.port,
            CheckKind::Tcp { port } => *port,
        }
    }
}

impl HttpCheck {
    /// A GET of `path` with the defaults: any 2xx, no body match, certificates verified.
    pub fn new(tls: bool, port: u16, path: impl Into<String>) -> HttpCheck {
        HttpCheck {
            tls,
            port,
            method: HttpMethod::Get,
            path: path.into(),
            host: None,
            expect_status: Vec::new(),
            body_contains: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            verify_tls: true,
        }
    }

    /// Whether a response status counts as healthy.
    pub fn status_ok(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..=299).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }
}

/// Short form for logs: `https://api.example.com:443/healthz`, `HEAD http://:80/`, `tcp:5432`.
impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CheckKind::Tcp { port } => write!(f, "tcp:{port}"),
            CheckKind::Http(h) => {
                if h.method == HttpMethod::Head {
                    f.write_str("HEAD ")?;
                }
                let scheme = if h.tls { "https" } else { "http" };
                // Without a Host header the endpoint's own address is probed.
                let host = h.host.as_deref().unwrap_or("*");
                write!(f, "{scheme}://{host}:{}{}", h.port, h.path)
            }
        }
    }
}

/// A check as written in a zone file, under `checks: { NAME: ... }`. Exactly one of `http`,
/// `https` and `tcp`; the rest falls back to the defaults above.
///
/// ```yaml
/// api: { https: { port: 443, path: /healthz, host: api.example.com, expect: [200], body: "ok" },
///        interval: 1s, fast_interval: 200ms, timeout: 800ms, fall: 3, rise: 2 }
/// db: { tcp: { port: 5432 } }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    http: Option<RawHttp>,
    https: Option<RawHttp>,
    tcp: Option<RawTcp>,
    interval: Option<String>,
    fast_interval: Option<String>,
    timeout: Option<String>,
    fall: Option<u32>,
    rise: Option<u32>,
}

/// The body of an `http:` or `https:` check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    port: Option<u16>,
    /// `GET` (default) or `HEAD`.
    method: Option<String>,
    /// Defaults to `/`.
    path: Option<String>,
    host: Option<String>,
    expect: Option<Vec<u16>>,
    body: Option<String>,
    max_body_bytes: Option<usize>,
    verify_tls: Option<bool>,
}

/// The body of a `tcp:` check.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    port: Option<u16>,
}

/// Problems found in a raw check: each is (field, message), the field relative to the check
/// (`https.path`, `timeout`), for `file` to prefix with the check's name.
pub type CheckErrors = Vec<(String, String)>;

impl RawCheck {
    /// Validates into a `Check`, reporting every problem rather than the first.
    pub fn validate(self) -> Result<Check, CheckErrors> {
        let mut errors: CheckErrors = Vec::new();
        let mut err = |field: &str, message: String| errors.push((field.to_string(), message));

        let interval = duration_field(
            self.interval.as_deref(),
            DEFAULT_INTERVAL,
            "interval",
            &mut err,
        );
        let timeout = duration_field(
            self.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            "timeout",
            &mut err,
        );
        if let (Some(interval), Some(timeout)) = (interval, timeout) {
            if interval.is_zero() {
                err("interval", "must be longer than 0".to_string());
            }
            if timeout.is_zero() {
                err("timeout", "must be longer than 0".to_string());
            } else if timeout >= interval {
                // A probe that could outlast the interval would let probes of one endpoint pile up.
                err(
                    "timeout",
                    format!(
                        "{} must be shorter than the interval ({})",
                        show(timeout),
                        show(interval)
                    ),
                );
            }
        }
        let fast_interval = match self.fast_interval.as_deref() {
            // The default follows the interval, and is valid whenever the interval is.
            None => interval.map(default_fast_interval),
            Some(text) => duration_field(Some(text), Duration::ZERO, "fast_interval", &mut err),
        };
        if self.fast_interval.is_some()
            && let Some(fast) = fast_interval
        {
            if fast.is_zero() {
                err("fast_interval", "must be longer than 0".to_string());
            } else if let Some(interval) = interval
                && fast > interval
            {
                // Slower probes while in doubt than while settled would be backwards.
                err(
                    "fast_interval",
                    format!(
                        "{} must not be longer than the interval ({})",
                        show(fast),
                        show(interval)
                    ),
                );
            }
        }
        let fall = self.fall.unwrap_or(DEFAULT_FALL);
        if fall == 0 {
            err("fall", "must be at least 1".to_string());
        }
        let rise = self.rise.unwrap_or(DEFAULT_RISE);
        if rise == 0 {
            err("rise", "must be at least 1".to_string());
        }

        let kind = match (self.http, self.https, self.tcp) {
            (Some(h), None, None) => http_kind(h, false, "http", &mut err),
            (None, Some(h), None) => http_kind(h, true, "https", &mut err),
            (None, None, Some(t)) => match t.port {
                Some(0) => {
                    err("tcp.port", "must be 1 to 65535".to_string());
                    None
                }
                Some(port) => Some(CheckKind::Tcp { port }),
                None => {
                    err("tcp.port", "missing: which port to connect to".to_string());
                    None
                }
            },
            (None, None, None) => {
                err(
                    "kind",
                    "missing: give one of `http`, `https` or `tcp`".to_string(),
                );
                None
            }
            _ => {
                err(
                    "kind",
                    "give only one of `http`, `https` or `tcp`".to_string(),
                );
                None
            }
        };

        match (kind, interval, fast_interval, timeout) {
            (Some(kind), Some(interval), Some(fast_interval), Some(timeout))
                if errors.is_empty() =>
            {
                Ok(Check {
                    kind,
                    interval,
                    fast_interval,
                    timeout,
                    fall,
                    rise,
                })
            }
            _ => Err(errors),
        }
    }
}

fn duration_field(
    text: Option<&str>,
    default: Duration,
    field: &str,
    err: &mut impl FnMut(&str, String),
) -> Option<Duration> {
    match text {
        None => Some(default),
        Some(t) => match parse_duration(t) {
            Ok(d) => Some(d),
            Err(e) => {
                err(field, e.to_string());
                None
            }
        },
    }
}

fn http_kind(
    raw: RawHttp,
    tls: bool,
    key: &str,
    err: &mut impl FnMut(&str, String),
) -> Option<CheckKind> {
    let mut ok = true;
    let mut fail = |field: &str, message: String| {
        ok = false;
        err(&format!("{key}.{field}"), message);
    };
    let port = match raw.port {
        Some(0) => {
            fail("port", "must be 1 to 65535".to_string());
            0
        }
        Some(p) => p,
        None => {
            let usual = if tls { 443 } else { 80 };
            fail(
                "port",
                format!("missing: which port to connect to (usually {usual})"),
            );
            0
        }
    };
    let method = match raw.method.as_deref() {
        None => HttpMethod::Get,
        Some(m) if m.eq_ignore_ascii_case("GET") => HttpMethod::Get,
        Some(m) if m.eq_ignore_ascii_case("HEAD") => HttpMethod::Head,
        Some(m) => {
            fail("method", format!("{m:?} is not GET or HEAD"));
            HttpMethod::Get
        }
    };
    let path = raw.path.unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') {
        fail("path", format!("{path:?} must start with '/'"));
    } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        fail("path", format!("{path:?} must not contain spaces"));
    }
    if let Some(host) = &raw.host {
        // An address as host would make the HTTP client connect there instead of to the
        // endpoint, which is never what is meant.
        if host.parse::<IpAddr>().is_ok() {
            fail(
                "host",
                format!(
                    "{host:?} is an address: give the DNS name to send as Host and SNI, or leave it out"
                ),
            );
        } else if host.is_empty() || host.ends_with('.') || Name::parse(host).is_err() {
            fail("host", format!("{host:?} is not a DNS name"));
        }
    }
    let expect_status = raw.expect.unwrap_or_default();
    for code in &expect_status {
        if !(100..=599).contains(code) {
            fail(
                "expect",
                format!("{code} is not an HTTP status code (100 to 599)"),
            );
        }
    }
    if raw.body.is_some() && method == HttpMethod::Head {
        fail(
            "body",
            "a HEAD response has no body to match: use GET".to_string(),
        );
    }
    if raw.body.as_deref() == Some("") {
        fail("body", "must not be empty".to_string());
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        fail("max_body_bytes", "must be at least 1".to_string());
    }
    if let Some(body) = &raw.body
        && body.len() > max_body_bytes
    {
        fail(
            "body",
            format!("is longer than max_body_bytes ({max_body_bytes}), so it could never match"),
        );
    }
    if !tls && raw.verify_tls.is_some() {
        fail("verify_tls", "applies to https checks only".to_string());
    }
    ok.then(|| {
        CheckKind::Http(HttpCheck {
            tls,
            port,
            method,
            path,
            host: raw.host,
            expect_status,
            body_contains: raw.body,
            max_body_bytes,
            verify_tls: raw.verify_tls.unwrap_or(true),
        })
    })
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration like 800ms, 1s, 1.5s, 2m or 1h")]
    Malformed(String),
    #[error("{0:?} needs a unit: ms, s, m or h")]
    NoUnit(String),
    #[error("{0:?} is longer than a week")]
    TooLong(String),
}

/// Parses a duration such as `1s`, `800ms`, `1.5s`, `2m` or `1h`. A unit is required, so that
/// `interval: 5` cannot be misread as seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || DurationError::Malformed(text.to_string());
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err(DurationError::NoUnit(text.to_string())),
        _ => return Err(bad()),
    };
    // A week is far beyond any sensible check timing, and keeps the float exact enough.
    let secs = value * unit_secs;
    if secs > 7.0 * 86_400.0 {
        return Err(DurationError::TooLong(text.to_string()));
    }
    let d = Duration::from_secs_f64(secs);
    // Round to whole milliseconds: "0.1s" should be exactly 100 ms, not 99.999…
    Ok(Duration::from_millis(
        (d.as_secs_f64() * 1000.0).round() as u64
    ))
}

/// A duration in the units people write: 800ms, 1s, 1.5s.
fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawCheck {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn errors(yaml: &str) -> CheckErrors {
        raw(yaml).validate().unwrap_err()
    }

    #[test]
    fn durations_parse() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("1s", ms(1000)),
            ("800ms", ms(800)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1.5s", ms(1500)),
            ("0.1s", ms(100)),
            (" 250ms ", ms(250)),
            ("0s", ms(0)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in [
            "", "5", "s", "1x", "-1s", "1.s", ".5s", "1 2s", "1e3ms", "1d", "200h",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should not parse");
        }
        assert!(
            parse_duration("5")
                .unwrap_err()
                .to_string()
                .contains("needs a unit")
        );
    }

    #[test]
    fn the_documented_examples_are_accepted() {
        let yaml = r#"
api: { https: { port: 443, path: /healthz, host: api.example.com, expect: [200], body: "ok", verify_tls: false }, interval: 1s, fast_interval: 200ms, timeout: 800ms, fall: 3, rise: 2 }
db: { tcp: { port: 5432 } }
"#;
        let checks: indexmap::IndexMap<String, RawCheck> = serde_yaml::from_str(yaml).unwrap();
        let mut checks = checks
            .into_iter()
            .map(|(name, raw)| (name, raw.validate().unwrap()));
        let (name, api) = checks.next().unwrap();
        assert_eq!(name, "api");
        assert_eq!(
            api,
            Check {
                kind: CheckKind::Http(HttpCheck {
                    tls: true,
                    port: 443,
                    method: HttpMethod::Get,
                    path: "/healthz".to_string(),
                    host: Some("api.example.com".to_string()),
                    expect_status: vec![200],
                    body_contains: Some("ok".to_string()),
                    max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                    verify_tls: false,
                }),
                interval: Duration::from_secs(1),
                fast_interval: Duration::from_millis(200),
                timeout: Duration::from_millis(800),
                fall: 3,
                rise: 2,
            }
        );
        assert_eq!(api.to_string(), "https://api.example.com:443/healthz");
        let (_, db) = checks.next().unwrap();
        assert_eq!(db, Check::new(CheckKind::Tcp { port: 5432 }));
        assert_eq!(db.to_string(), "tcp:5432");
    }

    #[test]
    fn http_defaults() {
        let c = raw("{ http: { port: 8080 } }").validate().unwrap();
        let CheckKind::Http(h) = &c.kind else {
            panic!("not http: {c:?}")
        };
        assert_eq!(h, &HttpCheck::new(false, 8080, "/"));
        assert_eq!(
            (c.interval, c.fast_interval, c.timeout, c.fall, c.rise),
            (
                DEFAULT_INTERVAL,
                Duration::from_millis(200),
                DEFAULT_TIMEOUT,
                3,
                2
            )
        );
        let head = raw("{ http: { port: 80, method: head } }")
            .validate()
            .unwrap();
        assert!(matches!(&head.kind, CheckKind::Http(h) if h.method == HttpMethod::Head));
    }

    #[test]
    fn fast_interval_defaults_to_a_fifth_of_the_interval_within_bounds() {
        let ms = Duration::from_millis;
        #[rustfmt::skip]
        let table: &[(&str, Duration, &str)] = &[
            // check, fast_interval, why
            ("{ tcp: { port: 1 } }", ms(200), "a fifth of the default 1 s"),
            ("{ tcp: { port: 1 }, interval: 10s, timeout: 2s }", ms(2000), "a fifth of 10 s"),
            ("{ tcp: { port: 1 }, interval: 300ms, timeout: 100ms }", ms(100), "not under 100 ms"),
            ("{ tcp: { port: 1 }, interval: 50ms, timeout: 20ms }", ms(50), "never above the interval"),
            ("{ tcp: { port: 1 }, fast_interval: 350ms }", ms(350), "as given"),
            ("{ tcp: { port: 1 }, fast_interval: 1s }", ms(1000), "equal to the interval: off"),
            ("{ tcp: { port: 1 }, interval: 2s, fast_interval: 1500ms }", ms(1500), "as given"),
        ];
        for (yaml, want, why) in table {
            let c = raw(yaml).validate().unwrap();
            assert_eq!(c.fast_interval, *want, "{why}: {yaml}");
        }
    }

    #[test]
    fn status_expectations() {
        let mut h = HttpCheck::new(false, 80, "/");
        assert!(h.status_ok(200) && h.status_ok(204) && h.status_ok(299));
        assert!(!h.status_ok(301) && !h.status_ok(500) && !h.status_ok(199));
        h.expect_status = vec![200, 301];
        assert!(h.status_ok(301) && !h.status_ok(204));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let got = errors(
            "{ https: { path: healthz, expect: [700], method: POST }, interval: 1s, timeout: 2s, fast_interval: 2s, fall: 0, rise: 0 }",
        );
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "timeout",
                "fast_interval",
                "fall",
                "rise",
                "https.port",
                "https.method",
                "https.path",
                "https.expect"
            ],
            "{got:?}"
        );
        assert_eq!(got[0].1, "2s must be shorter than the interval (1s)");
    }

    #[test]
    fn invalid_checks_name_the_problem() {
        let table: &[(&str, &str, &str)] = &[
            ("{ interval: 1s }", "kind", "missing"),
            (
                "{ http: { port: 80 }, tcp: { port: 80 } }",
                "kind",
                "only one",
            ),
            ("{ tcp: {} }", "tcp.port", "missing"),
            ("{ tcp: { port: 0 } }", "tcp.port", "1 to 65535"),
            (
                "{ tcp: { port: 1 }, interval: soon }",
                "interval",
                "not a duration",
            ),
            (
                "{ tcp: { port: 1 }, timeout: 1s }",
                "timeout",
                "shorter than the interval",
            ),
            (
                "{ tcp: { port: 1 }, interval: 0s, timeout: 0s }",
                "interval",
                "longer than 0",
            ),
            (
                "{ tcp: { port: 1 }, fast_interval: 0ms }",
                "fast_interval",
                "longer than 0",
            ),
            (
                "{ tcp: { port: 1 }, fast_interval: 1500ms }",
                "fast_interval",
                "1.5s must not be longer than the interval (1s)",
            ),
            (
                "{ tcp: { port: 1 }, interval: 2s, timeout: 1s, fast_interval: 3s }",
                "fast_interval",
                "3s must not be longer than the interval (2s)",
            ),
            (
                "{ tcp: { port: 1 }, fast_interval: 200 }",
                "fast_interval",
                "needs a unit",
            ),
            (
                "{ http: { port: 80, host: 192.0.2.1 } }",
                "http.host",
                "is an address",
            ),
            (
                "{ http: { port: 80, host: 'a b' } }",
                "http.host",
                "not a DNS name",
            ),
            (
                "{ http: { port: 80, method: HEAD, body: ok } }",
                "http.body",
                "HEAD",
            ),
            ("{ http: { port: 80, body: '' } }", "http.body", "empty"),
            (
                "{ http: { port: 80, body: long, max_body_bytes: 2 } }",
                "http.body",
                "never match",
            ),
            (
                "{ http: { port: 80, max_body_bytes: 0 } }",
                "http.max_body_bytes",
                "at least 1",
            ),
            (
                "{ http: { port: 80, verify_tls: false } }",
                "http.verify_tls",
                "https checks only",
            ),
            (
                "{ http: { port: 80, path: '/a b' } }",
                "http.path",
                "spaces",
            ),
        ];
        for (yaml, field, message) in table {
            let got = errors(yaml);
            assert!(
                got.iter().any(|(f, m)| f == field && m.contains(message)),
                "{yaml}: want {field}: …{message}…, got {got:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_yaml::from_str::<RawCheck>("{ tcp: { port: 1 }, every: 1s }").is_err());
        assert!(serde_yaml::from_str::<RawCheck>("{ http: { port: 1, tls: true } }").is_err());
    }
}
