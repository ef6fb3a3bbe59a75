//! The last things that happened on a node (health changes, drains, reloads, peers lost and
//! regained), for the status page and the state API.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many events are kept.
pub const EVENT_CAPACITY: usize = 100;

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `health`, `drain`, `reload`, `peer`, `isolation` or `geoip`.
    pub kind: &'static str,
    pub message: String,
}

/// A bounded log of recent events, newest last.
#[derive(Default)]
pub struct EventLog {
    events: Mutex<VecDeque<Event>>,
}

impl EventLog {
    pub fn push(&self, kind: &'static str, message: impl Into<String>) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == EVENT_CAPACITY {
            events.pop_front();
        }
        events.push_back(Event {
            at_ms: crate::clock::now_ms(),
            kind,
            message: message.into(),
        });
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_hundred_newest_first() {
        let log = EventLog::default();
        for i in 0..150 {
            log.push("health", format!("e{i}"));
        }
        let r = log.recent();
        assert_eq!(r.len(), EVENT_CAPACITY);
        assert_eq!(r[0].message, "e149");
        assert_eq!(r[99].message, "e50");
    }
}
