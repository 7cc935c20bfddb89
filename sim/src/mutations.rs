//! The log of every mutating request the emulator received, so tests can assert exactly what a
//! job changed (and what it did not).
//!
//! The log is a ring buffer: a long-running `neon-sim serve` (the demo, a benchmark) receives
//! mutations for as long as it runs, and an unbounded log would grow until the process runs
//! out of memory. It keeps the newest [`DEFAULT_MUTATION_LOG_LIMIT`] entries by default
//! (configurable) and counts the ones it dropped, so a test that sees fewer entries than
//! expected can tell "never received" from "evicted".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Entries kept by default.
pub const DEFAULT_MUTATION_LOG_LIMIT: usize = 10_000;

/// One mutating request (any method other than GET/HEAD/OPTIONS) and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mutation {
    pub method: String,
    /// The request path, e.g. `/api/v2/projects/p-1/branches/br-1`.
    pub path: String,
    /// The matched route template without the `/api/v2` prefix, e.g.
    /// `/projects/{project_id}/branches/{branch_id}`; `None` when no route matched.
    pub route: Option<String>,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    /// The request body parsed as JSON; `None` when empty or not JSON.
    pub body: Option<serde_json::Value>,
    /// The HTTP status the emulator answered.
    pub status: u16,
    /// When it was received, on the emulator's clock.
    pub at: DateTime<Utc>,
}

struct Ring {
    entries: VecDeque<Mutation>,
    limit: usize,
    /// Entries evicted (oldest first) since the log was created or last cleared.
    dropped: u64,
}

/// A shared mutation log keeping the newest `limit` entries.
#[derive(Clone)]
pub struct MutationLog(Arc<Mutex<Ring>>);

impl Default for MutationLog {
    fn default() -> Self {
        MutationLog::with_limit(DEFAULT_MUTATION_LOG_LIMIT)
    }
}

impl MutationLog {
    /// A log keeping at most `limit` entries (0 keeps none and only counts).
    pub fn with_limit(limit: usize) -> MutationLog {
        MutationLog(Arc::new(Mutex::new(Ring {
            // Grows on demand: a huge limit must not allocate up front.
            entries: VecDeque::new(),
            limit,
            dropped: 0,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Plain data; a poisoned lock still holds a usable log.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, m: Mutation) {
        let mut ring = self.lock();
        if ring.limit == 0 {
            ring.dropped += 1;
            return;
        }
        while ring.entries.len() >= ring.limit {
            ring.entries.pop_front();
            ring.dropped += 1;
        }
        ring.entries.push_back(m);
    }

    /// The entries kept, oldest first.
    pub fn snapshot(&self) -> Vec<Mutation> {
        self.lock().entries.iter().cloned().collect()
    }

    /// How many entries were evicted since the log was created or last cleared.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// The most entries kept.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Empties the log and resets the dropped counter.
    pub fn clear(&self) {
        let mut ring = self.lock();
        ring.entries.clear();
        ring.dropped = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(i: u16) -> Mutation {
        Mutation {
            method: "POST".into(),
            path: format!("/api/v2/x/{i}"),
            route: None,
            query: None,
            body: None,
            status: i,
            at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn keeps_the_newest_entries_and_counts_the_dropped() {
        let log = MutationLog::with_limit(3);
        for i in 0..5 {
            log.push(m(i));
        }
        let kept: Vec<u16> = log.snapshot().iter().map(|x| x.status).collect();
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!(log.dropped(), 2);
        log.clear();
        assert!(log.snapshot().is_empty());
        assert_eq!(log.dropped(), 0);
        log.push(m(9));
        assert_eq!(log.snapshot().len(), 1);

        let none = MutationLog::with_limit(0);
        none.push(m(1));
        assert!(none.snapshot().is_empty());
        assert_eq!(none.dropped(), 1);
        assert_eq!(MutationLog::default().limit(), DEFAULT_MUTATION_LOG_LIMIT);
    }
}
