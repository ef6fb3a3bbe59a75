//! Manual failover: drains that take a DC (for one service or all) out of the answers, with a
//! reason and an optional expiry. Drains are state like health: last writer wins (by issue time,
//! node id breaking ties), undrains are kept as tombstones so an old drain cannot come back from a
//! peer, and the set is persisted atomically in the state directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One operator decision about a DC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub dc: String,
    /// A service name (`www.api.example.com`), or none for every service in the DC.
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub reason: String,
    /// False for an undrain: the tombstone that ends an earlier drain.
    pub active: bool,
    /// Unix milliseconds after which the drain lifts by itself.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// Unix milliseconds when it was issued; the newest decision wins.
    pub issued_ms: u64,
    /// The node it was issued on; breaks ties between equal times.
    pub issued_by: String,
}

impl Drain {
    /// The key decisions about the same thing share.
    pub fn key(&self) -> String {
        match &self.service {
            Some(s) => format!("{}/{}", self.dc, s),
            None => self.dc.clone(),
        }
    }

    /// Whether it takes the DC out at `now_ms`.
    pub fn in_force(&self, now_ms: u64) -> bool {
        self.active && self.expires_ms.is_none_or(|e| now_ms < e)
    }

    fn newer_than(&self, other: &Drain) -> bool {
        (self.issued_ms, &self.issued_by) > (other.issued_ms, &other.issued_by)
    }
}

/// Every drain decision a node knows, one per key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainSet {
    pub entries: BTreeMap<String, Drain>,
}

/// Why the drain set could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid drain file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl DrainSet {
    /// Applies a decision if it is newer than what is known for its key; true if it changed
    /// anything.
    pub fn apply(&mut self, d: Drain) -> bool {
        let key = d.key();
        match self.entries.get(&key) {
            Some(have) if !d.newer_than(have) => false,
            _ => {
                self.entries.insert(key, d);
                true
            }
        }
    }

    /// Applies every decision of `other`; true if anything changed.
    pub fn merge(&mut self, other: &DrainSet) -> bool {
        let mut changed = false;
        for d in other.entries.values() {
            changed |= self.apply(d.clone());
        }
        changed
    }

    /// The drains in force at `now_ms`.
    pub fn in_force(&self, now_ms: u64) -> impl Iterator<Item = &Drain> {
        self.entries.values().filter(move |d| d.in_force(now_ms))
    }

    /// Whether `dc` is drained for `service` at `now_ms` (by a drain of the service or of the
    /// whole DC).
    pub fn drains(&self, dc: &str, service: &str, now_ms: u64) -> bool {
        self.in_force(now_ms)
            .any(|d| d.dc == dc && d.service.as_deref().is_none_or(|s| s == service))
    }

    /// Reads the persisted set; a missing file is an empty set.
    pub fn load(path: &Path) -> Result<DrainSet, DrainError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DrainSet::default()),
            Err(source) => {
                return Err(DrainError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| DrainError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes the set atomically: a temporary file, fsync, rename, fsync of the directory.
    pub fn save(&self, path: &Path) -> Result<(), DrainError> {
        let err = |source| DrainError::Write {
            path: path.display().to_string(),
            source,
        };
        let body = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        crate::files::write_atomically(path, &body).map_err(err)?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            // Make the rename itself durable; failure here is not worth failing the drain for.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(dc: &str, active: bool, issued_ms: u64, by: &str) -> Drain {
        Drain {
            dc: dc.into(),
            service: None,
            reason: "maintenance".into(),
            active,
            expires_ms: None,
            issued_ms,
            issued_by: by.into(),
        }
    }

    #[test]
    fn last_writer_wins_and_node_id_breaks_ties() {
        let mut s = DrainSet::default();
        assert!(s.apply(d("fra", true, 100, "a")));
        assert!(!s.apply(d("fra", false, 50, "b")), "older undrain loses");
        assert!(s.drains("fra", "www", 200));
        assert!(
            s.apply(d("fra", false, 100, "b")),
            "same time, higher node id wins"
        );
        assert!(!s.drains("fra", "www", 200));
        assert!(
            !s.apply(d("fra", true, 100, "a")),
            "replay of the old drain changes nothing"
        );
    }

    #[test]
    fn expiry_and_service_scope() {
        let mut s = DrainSet::default();
        let mut x = d("iad", true, 10, "a");
        x.service = Some("www.api.example.com".into());
        x.expires_ms = Some(1_000);
        s.apply(x);
        assert!(s.drains("iad", "www.api.example.com", 999));
        assert!(!s.drains("iad", "other.api.example.com", 999));
        assert!(!s.drains("iad", "www.api.example.com", 1_000));
        assert!(!s.drains("fra", "www.api.example.com", 10));
    }

    #[test]
    fn merge_is_order_independent() {
        let a = [
            d("fra", true, 1, "a"),
            d("fra", false, 2, "b"),
            d("sin", true, 3, "c"),
        ];
        let mut s1 = DrainSet::default();
        let mut s2 = DrainSet::default();
        for x in &a {
            s1.apply(x.clone());
        }
        for x in a.iter().rev() {
            s2.apply(x.clone());
        }
        assert_eq!(s1, s2);
        let mut s3 = DrainSet::default();
        assert!(s3.merge(&s1));
        assert!(!s3.merge(&s1));
    }

    #[test]
    fn persisted_set_round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drains.json");
        assert_eq!(DrainSet::load(&path).unwrap(), DrainSet::default());
        let mut s = DrainSet::default();
        s.apply(d("fra", true, 1, "a"));
        s.save(&path).unwrap();
        assert_eq!(DrainSet::load(&path).unwrap(), s);
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            DrainSet::load(&path),
            Err(DrainError::Parse { .. })
        ));
    }
}
