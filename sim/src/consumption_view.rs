//! The facts consumption is computed from, gathered once per request: each branch's lifetime,
//! size and compute activity, each project's snapshots and history retention.
//!
//! Why: the values are derived hour by hour, branch by branch; asking [`State`] for each of
//! them scans every activity record, compute and deleted branch of the whole account every
//! time (seconds for a 100-project hourly call). A [`View`] is built under one short lock in
//! one pass over the model, indexed by branch, and then read without the lock. Its methods
//! return exactly what the same-named [`State`] methods return (a test checks that).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::state::{
    EndpointState, State, TRANSFER_BYTES_PER_ACTIVE_SECOND, WRITTEN_BYTES_PER_ACTIVE_SECOND,
};

/// An active interval of a compute and its billed compute units.
#[derive(Debug, Clone, Copy)]
struct Piece {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cu: f64,
}

#[derive(Debug, Clone)]
pub struct BranchFacts {
    pub project_id: String,
    pub is_root: bool,
    pub created_at: DateTime<Utc>,
    /// `None` while the branch is alive.
    pub deleted_at: Option<DateTime<Utc>>,
    pub logical_size: i64,
    pieces: Vec<Piece>,
}

fn clip(now: DateTime<Utc>, p: &Piece, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let start = p.from.max(from);
    let end = p.to.min(to).min(now);
    (end - start).num_seconds().max(0)
}

impl BranchFacts {
    /// Whether the branch existed at some point of `[h, e)`.
    pub fn alive_in(&self, h: DateTime<Utc>, e: DateTime<Utc>) -> bool {
        self.created_at < e && self.deleted_at.is_none_or(|d| d > h)
    }

    /// Seconds of compute activity in `[from, to)`, as of `now`.
    pub fn active_seconds(
        &self,
        now: DateTime<Utc>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.pieces.iter().map(|p| clip(now, p, from, to)).sum()
    }

    /// CU-seconds in `[from, to)` (each interval rounded, as the model does).
    pub fn cu_seconds(&self, now: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        self.pieces
            .iter()
            .map(|p| (clip(now, p, from, to) as f64 * p.cu).round() as i64)
            .sum()
    }

    /// Bytes written in `[from, to)`: the initial size of a root created then, plus activity.
    pub fn written_bytes(&self, now: DateTime<Utc>, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let initial = if self.is_root && self.created_at >= from && self.created_at < to {
            self.logical_size
        } else {
            0
        };
        initial + self.active_seconds(now, from, to) * WRITTEN_BYTES_PER_ACTIVE_SECOND
    }

    /// Byte-hours of storage held in `[from, to)`.
    pub fn storage_byte_hours(
        &self,
        now: DateTime<Utc>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        let start = self.created_at.max(from);
        let end = self
            .deleted_at
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .min(to)
            .min(now);
        let secs = (end - start).num_seconds().max(0);
        ((self.logical_size as i128 * secs as i128) / 3600) as i64
    }
}

/// What consumption needs of some projects, at one instant.
#[derive(Debug, Clone)]
pub struct View {
    now: DateTime<Utc>,
    branches: HashMap<String, BranchFacts>,
    /// Branch ids per project (live and deleted), sorted.
    by_project: HashMap<String, Vec<String>>,
    /// Activity per project (also of computes whose branch is gone from the model).
    project_pieces: HashMap<String, Vec<Piece>>,
    retention_hours: HashMap<String, i64>,
    /// `(created_at, full_size)` of each live snapshot, per project.
    snapshots: HashMap<String, Vec<(DateTime<Utc>, i64)>>,
}

impl View {
    /// Gathers the facts of `project_ids` from the model (one pass over it).
    pub fn of(state: &State, project_ids: &[String]) -> View {
        let now = state.now();
        let wanted: std::collections::HashSet<&str> =
            project_ids.iter().map(String::as_str).collect();
        let mut branches: HashMap<String, BranchFacts> = HashMap::new();
        let facts = |b: &crate::state::Branch, deleted_at| BranchFacts {
            project_id: b.project_id.clone(),
            is_root: b.parent_id.is_none(),
            created_at: b.created_at,
            deleted_at,
            logical_size: b.logical_size,
            pieces: Vec::new(),
        };
        for b in state.branches.values() {
            if wanted.contains(b.project_id.as_str()) {
                branches.insert(b.id.clone(), facts(b, None));
            }
        }
        // The first deleted record of an id is the one `State` reads.
        for d in &state.deleted_branches {
            if wanted.contains(d.branch.project_id.as_str()) && !branches.contains_key(&d.branch.id)
            {
                branches.insert(d.branch.id.clone(), facts(&d.branch, Some(d.deleted_at)));
            }
        }
        let mut project_pieces: HashMap<String, Vec<Piece>> = HashMap::new();
        let mut add = |project: &str, branch: &str, piece: Piece| {
            if !wanted.contains(project) {
                return;
            }
            project_pieces
                .entry(project.to_string())
                .or_default()
                .push(piece);
            if let Some(b) = branches.get_mut(branch) {
                b.pieces.push(piece);
            }
        };
        for r in &state.activity_log {
            add(
                &r.project_id,
                &r.branch_id,
                Piece {
                    from: r.from,
                    to: r.to,
                    cu: r.cu,
                },
            );
        }
        for e in state.endpoints.values() {
            if e.current_state == EndpointState::Active {
                add(
                    &e.project_id,
                    &e.branch_id,
                    Piece {
                        from: e.started_at.unwrap_or(e.created_at),
                        to: now,
                        cu: e.billed_cu(),
                    },
                );
            }
        }
        let mut by_project: HashMap<String, Vec<String>> = HashMap::new();
        for (id, b) in &branches {
            by_project
                .entry(b.project_id.clone())
                .or_default()
                .push(id.clone());
        }
        for ids in by_project.values_mut() {
            ids.sort();
        }
        let retention_hours = project_ids
            .iter()
            .filter_map(|p| {
                state
                    .projects
                    .get(p)
                    .map(|x| (p.clone(), i64::from(x.history_retention_seconds) / 3600))
            })
            .collect();
        let mut snapshots: HashMap<String, Vec<(DateTime<Utc>, i64)>> = HashMap::new();
        for s in state.snapshots.values() {
            if wanted.contains(s.project_id.as_str()) {
                snapshots
                    .entry(s.project_id.clone())
                    .or_default()
                    .push((s.created_at, s.full_size));
            }
        }
        for v in snapshots.values_mut() {
            v.sort();
        }
        View {
            now,
            branches,
            by_project,
            project_pieces,
            retention_hours,
            snapshots,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn branch(&self, branch_id: &str) -> Option<&BranchFacts> {
        self.branches.get(branch_id)
    }

    /// History retention of a project in hours (24 when unknown, as before).
    pub fn retention_hours(&self, project_id: &str) -> i64 {
        self.retention_hours.get(project_id).copied().unwrap_or(24)
    }

    /// `(created_at, full_size)` of the project's snapshots, oldest first.
    pub fn snapshots_by_time(&self, project_id: &str) -> &[(DateTime<Utc>, i64)] {
        self.snapshots
            .get(project_id)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Sum of the sizes of the project's snapshots created before `before`.
    pub fn snapshot_bytes(&self, project_id: &str, before: DateTime<Utc>) -> i64 {
        self.snapshots
            .get(project_id)
            .map(|v| {
                v.iter()
                    .filter(|(at, _)| *at < before)
                    .map(|(_, s)| s)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// As [`State::project_active_seconds`].
    pub fn project_active_seconds(
        &self,
        project_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.project_pieces
            .get(project_id)
            .map(|ps| ps.iter().map(|p| clip(self.now, p, from, to)).sum())
            .unwrap_or(0)
    }

    /// As [`State::branch_active_seconds`].
    pub fn branch_active_seconds(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.branches
            .get(branch_id)
            .map(|b| b.active_seconds(self.now, from, to))
            .unwrap_or(0)
    }

    /// As [`State::branch_compute_seconds`].
    pub fn branch_compute_seconds(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.branches
            .get(branch_id)
            .map(|b| b.cu_seconds(self.now, from, to))
            .unwrap_or(0)
    }

    /// As [`State::branch_written_bytes`].
    pub fn branch_written_bytes(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.branches
            .get(branch_id)
            .map(|b| b.written_bytes(self.now, from, to))
            .unwrap_or(0)
    }

    /// As [`State::branch_transfer_bytes`].
    pub fn branch_transfer_bytes(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.branch_active_seconds(branch_id, from, to) * TRANSFER_BYTES_PER_ACTIVE_SECOND
    }

    /// As [`State::branch_storage_byte_hours`].
    pub fn branch_storage_byte_hours(
        &self,
        branch_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> i64 {
        self.branches
            .get(branch_id)
            .map(|b| b.storage_byte_hours(self.now, from, to))
            .unwrap_or(0)
    }

    /// As [`State::project_branch_ids_between`].
    pub fn project_branch_ids_between(
        &self,
        project_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<String> {
        self.by_project
            .get(project_id)
            .map(|ids| {
                ids.iter()
                    .filter(|id| {
                        let b = &self.branches[id.as_str()];
                        b.created_at < to && b.deleted_at.is_none_or(|d| d > from)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a (possibly empty) branch existed at some point of `[h, e)`.
    pub fn alive_in(&self, branch_id: &str, h: DateTime<Utc>, e: DateTime<Utc>) -> bool {
        self.branches
            .get(branch_id)
            .is_some_and(|b| b.alive_in(h, e))
    }

    /// Whether the branch had compute activity in `[from, to)`.
    pub fn active_between(&self, branch_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.branch_active_seconds(branch_id, from, to) > 0
    }
}

/// One hour after `h`.
pub fn next_hour(h: DateTime<Utc>) -> DateTime<Utc> {
    h + TimeDelta::hours(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seed::{self, SeedParams};
    use crate::Clock;

    /// The view answers exactly what the model answers, hour by hour, for every branch of a
    /// seeded account with activity, deleted branches and snapshots.
    #[test]
    fn the_view_agrees_with_the_model() {
        let start = chrono::TimeZone::with_ymd_and_hms(&Utc, 2025, 6, 2, 12, 0, 0).unwrap();
        let mut s = State::new(Clock::virtual_at(start), 7, std::time::Duration::ZERO);
        seed::generate(
            &mut s,
            &SeedParams {
                orgs: 1,
                projects: 6,
                lifecycle_cases: true,
            },
        );
        s.clock
            .advance(std::time::Duration::from_secs(5 * 3600 + 17));
        s.settle();
        let ids: Vec<String> = s.projects.keys().cloned().collect();
        let v = View::of(&s, &ids);
        let from = s.now() - TimeDelta::hours(48);
        let mut checked = 0;
        let mut active = 0;
        for p in &ids {
            assert_eq!(
                v.project_branch_ids_between(p, from, s.now()),
                s.project_branch_ids_between(p, from, s.now())
            );
            assert_eq!(
                v.project_active_seconds(p, from, s.now()),
                s.project_active_seconds(p, from, s.now())
            );
            for b in s.project_branch_ids_between(p, from, s.now()) {
                let mut h = from;
                while h < s.now() {
                    let e = next_hour(h);
                    assert_eq!(
                        v.branch_active_seconds(&b, h, e),
                        s.branch_active_seconds(&b, h, e)
                    );
                    assert_eq!(
                        v.branch_compute_seconds(&b, h, e),
                        s.branch_compute_seconds(&b, h, e)
                    );
                    assert_eq!(
                        v.branch_written_bytes(&b, h, e),
                        s.branch_written_bytes(&b, h, e)
                    );
                    assert_eq!(
                        v.branch_transfer_bytes(&b, h, e),
                        s.branch_transfer_bytes(&b, h, e)
                    );
                    assert_eq!(
                        v.branch_storage_byte_hours(&b, h, e),
                        s.branch_storage_byte_hours(&b, h, e)
                    );
                    active += i32::from(s.branch_active_seconds(&b, h, e) > 0);
                    checked += 1;
                    h = e;
                }
            }
        }
        assert!(checked > 100, "{checked} branch-hours checked");
        assert!(active > 0, "some branch-hours had compute activity");
    }
}
