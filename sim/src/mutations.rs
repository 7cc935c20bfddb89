//! The log of every mutating request the emulator received, so tests can assert exactly what a
//! job changed (and what it did not).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

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

/// A shared, append-only (until cleared) mutation log.
#[derive(Clone, Default)]
pub struct MutationLog(Arc<Mutex<Vec<Mutation>>>);

impl MutationLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Mutation>> {
        // Plain data; a poisoned lock still holds a usable log.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn push(&self, m: Mutation) {
        self.lock().push(m);
    }
    pub fn snapshot(&self) -> Vec<Mutation> {
        self.lock().clone()
    }
    pub fn clear(&self) {
        self.lock().clear();
    }
}
