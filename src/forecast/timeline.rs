//! What a forecast found, as data (`--output json`) and as the human timeline: per day, what
//! each job did, then the summary. Pure: built by `simulate`, rendered here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// Who did something that is not a job of the policy: Neon itself (a branch's `expires_at`
/// or a snapshot's expiry came due).
pub const NEON: &str = "neon";

/// One thing that happened to the account during the forecast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// The job's name, or [`NEON`].
    pub job: String,
    /// The ledger's action (`delete_branch`, `create_snapshot`, `suspend_endpoint`, ...), or
    /// for Neon `branch_expired` / `snapshot_expired`.
    pub action: String,
    /// `succeeded`, `failed`, or `planned` (a dry-run job); for a run that did not succeed
    /// (action `run`), its status.
    pub outcome: String,
    pub resource_kind: String,
    /// The resource's name where it has one (branch, snapshot), else its id.
    pub resource: String,
    pub project: Option<String>,
    pub reason: String,
}

/// Runs per job.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct JobRuns {
    pub job: String,
    pub kind: String,
    pub runs: usize,
    /// Runs that did not end `succeeded` (failed, partial, interrupted).
    pub not_succeeded: usize,
    pub dry_run: bool,
}

/// Snapshots of one branch at the end of the forecast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BranchSnapshots {
    pub project: String,
    pub branch: String,
    pub snapshots: usize,
    /// Of them, made by the policy during the forecast.
    pub made_by_policy: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Summary {
    pub runs: Vec<JobRuns>,
    /// Deleted by a job (`delete_branch` succeeded).
    pub branches_deleted: usize,
    /// `expires_at` set by a job (`set_branch_expiry` succeeded).
    pub branch_expiries_set: usize,
    /// Deleted by Neon when their `expires_at` came (whoever set it).
    pub branches_expired: usize,
    pub snapshots_created: usize,
    pub snapshots_deleted: usize,
    /// Deleted by Neon when their expiry came.
    pub snapshots_expired: usize,
    pub snapshots_at_end: Vec<BranchSnapshots>,
    pub suspends: usize,
    pub resumes: usize,
    /// Hours computes stayed suspended after a job suspended them, counted only until their
    /// own autosuspend would have suspended them anyway.
    pub compute_hours_suspended: f64,
    /// The same in compute-unit hours (each compute's billed size).
    pub compute_unit_hours_suspended: f64,
    /// `compute_unit_seconds` price of the policy's `[jobs.prices]`, when it has one.
    pub price_per_compute_unit_second: Option<f64>,
    pub estimated_cost_saved: Option<f64>,
    pub actions_failed: usize,
    /// Actions of dry-run jobs (recorded, not done).
    pub actions_planned: usize,
    /// Branches added by `--new-branches-per-day`.
    pub branches_added: usize,
}

/// A whole forecast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Forecast {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub policy: String,
    pub fixture: String,
    /// Zone of the timeline's days.
    pub timezone: String,
    /// What the forecast assumes (printed above the timeline).
    pub notes: Vec<String>,
    pub events: Vec<Event>,
    pub summary: Summary,
}

impl Summary {
    /// The counts that follow from the events (the rest is filled in by `simulate`).
    pub fn count(&mut self, events: &[Event]) {
        for e in events {
            match (e.job.as_str(), e.action.as_str(), e.outcome.as_str()) {
                // A run's own outcome (counted per job in `runs`).
                (_, "run", _) => {}
                (_, _, "failed") => self.actions_failed += 1,
                (_, _, "planned") => self.actions_planned += 1,
                (NEON, "branch_expired", _) => self.branches_expired += 1,
                (NEON, "snapshot_expired", _) => self.snapshots_expired += 1,
                (_, "delete_branch", _) => self.branches_deleted += 1,
                (_, "set_branch_expiry", _) => self.branch_expiries_set += 1,
                (_, "create_snapshot", _) => self.snapshots_created += 1,
                (_, "delete_snapshot", _) => self.snapshots_deleted += 1,
                (_, "suspend_endpoint", _) => self.suspends += 1,
                (_, "start_endpoint", _) => self.resumes += 1,
                _ => {}
            }
        }
    }
}

/// Identical events of one day (a compute suspended at every tick of a night), shown once.
#[derive(Debug, Clone, PartialEq)]
pub struct DayLine<'a> {
    pub first: &'a Event,
    pub last_at: DateTime<Utc>,
    pub count: usize,
}

/// One day of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Day<'a> {
    pub date: NaiveDate,
    /// Days since the forecast's first day (that day is 0).
    pub number: i64,
    pub lines: Vec<DayLine<'a>>,
}

/// What makes two events of a day the same line: date, job, action, outcome, resource,
/// project.
type LineKey<'a> = (
    NaiveDate,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
);

/// Groups events by local day in `tz`, every day of the period listed (empty ones too),
/// repeated identical events of a day folded into one line.
pub fn days<'a>(f: &'a Forecast, tz: Tz) -> Vec<Day<'a>> {
    let first = f.from.with_timezone(&tz).date_naive();
    let last_instant = if f.until > f.from {
        f.until - chrono::TimeDelta::milliseconds(1)
    } else {
        f.from
    };
    let last = last_instant.with_timezone(&tz).date_naive();
    let mut out: Vec<Day<'a>> = Vec::new();
    let mut d = first;
    while d <= last {
        out.push(Day {
            date: d,
            number: (d - first).num_days(),
            lines: Vec::new(),
        });
        match d.succ_opt() {
            Some(n) => d = n,
            None => break,
        }
    }
    let mut index: BTreeMap<LineKey<'a>, usize> = BTreeMap::new();
    for e in &f.events {
        let date = e.at.with_timezone(&tz).date_naive();
        let Some(day) = out.iter_mut().find(|x| x.date == date) else {
            continue;
        };
        let key = (
            date,
            e.job.as_str(),
            e.action.as_str(),
            e.outcome.as_str(),
            e.resource.as_str(),
            e.project.as_deref(),
        );
        match index.get(&key) {
            Some(&i) => {
                let line = &mut day.lines[i];
                line.count += 1;
                line.last_at = e.at;
            }
            None => {
                index.insert(key, day.lines.len());
                day.lines.push(DayLine {
                    first: e,
                    last_at: e.at,
                    count: 1,
                });
            }
        }
    }
    out
}

/// The human timeline and summary.
pub fn render_text(f: &Forecast, tz: Tz) -> String {
    let mut s = String::new();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string();
    let _ = writeln!(
        s,
        "forecast of {} over {}\n  from {} until {} (days in {})",
        f.policy,
        f.fixture,
        local(f.from),
        local(f.until),
        f.timezone
    );
    for n in &f.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    let _ = writeln!(s);
    for day in days(f, tz) {
        let _ = writeln!(
            s,
            "{} {} (day {})",
            day.date,
            day.date.format("%a"),
            day.number
        );
        if day.lines.is_empty() {
            let _ = writeln!(s, "  -");
        }
        for l in &day.lines {
            let e = l.first;
            let when = e.at.with_timezone(&tz).format("%H:%M").to_string();
            let place = e
                .project
                .as_deref()
                .map(|p| format!(" in {p}"))
                .unwrap_or_default();
            let outcome = match e.outcome.as_str() {
                "succeeded" => String::new(),
                o => format!(" [{o}]"),
            };
            let repeat = if l.count > 1 {
                format!(
                    " (x{}, until {})",
                    l.count,
                    l.last_at.with_timezone(&tz).format("%H:%M")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {when}  {:<22} {:<18} {}{place}{outcome}{repeat}: {}",
                e.job, e.action, e.resource, e.reason
            );
        }
    }
    let m = &f.summary;
    let _ = writeln!(s, "\nsummary");
    for r in &m.runs {
        let _ = writeln!(
            s,
            "  {:<24} {:<20} {:>6} runs{}{}",
            r.job,
            r.kind,
            r.runs,
            if r.not_succeeded > 0 {
                format!(", {} not succeeded", r.not_succeeded)
            } else {
                String::new()
            },
            if r.dry_run { " [dry run]" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "  branches deleted        {} by the policy, {} by Neon when their expires_at came \
         ({} expiries set by the policy)",
        m.branches_deleted, m.branches_expired, m.branch_expiries_set
    );
    let _ = writeln!(
        s,
        "  snapshots               {} created, {} deleted by retention, {} expired",
        m.snapshots_created, m.snapshots_deleted, m.snapshots_expired
    );
    if m.snapshots_at_end.is_empty() {
        let _ = writeln!(s, "  snapshots at the end    none");
    } else {
        let _ = writeln!(
            s,
            "  snapshots at the end    (per branch; made by the policy)"
        );
        for b in &m.snapshots_at_end {
            let _ = writeln!(
                s,
                "    {:<40} {:>4}  ({} by the policy)",
                format!("{}/{}", b.project, b.branch),
                b.snapshots,
                b.made_by_policy
            );
        }
    }
    let _ = writeln!(
        s,
        "  computes                {} suspends, {} resumes; {:.1} compute hours suspended \
         ({:.2} CU-hours)",
        m.suspends, m.resumes, m.compute_hours_suspended, m.compute_unit_hours_suspended
    );
    match (m.estimated_cost_saved, m.price_per_compute_unit_second) {
        (Some(c), Some(p)) => {
            let _ = writeln!(
                s,
                "  estimated cost saved    {c:.2} (at {p} per compute-unit second, the \
                 policy's [jobs.prices])"
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "  estimated cost saved    not estimated: the policy has no \
                 compute_unit_seconds price ([jobs.prices] of a collect_consumption job)"
            );
        }
    }
    if m.branches_added > 0 {
        let _ = writeln!(
            s,
            "  branches added          {} (--new-branches-per-day)",
            m.branches_added
        );
    }
    if m.actions_failed > 0 || m.actions_planned > 0 {
        let _ = writeln!(
            s,
            "  other                   {} actions failed, {} planned by dry-run jobs",
            m.actions_failed, m.actions_planned
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn ev(t: &str, job: &str, action: &str, resource: &str) -> Event {
        Event {
            at: at(t),
            job: job.into(),
            action: action.into(),
            outcome: "succeeded".into(),
            resource_kind: "endpoint".into(),
            resource: resource.into(),
            project: Some("dev-app".into()),
            reason: "in window".into(),
        }
    }

    fn forecast(events: Vec<Event>) -> Forecast {
        Forecast {
            from: at("2026-03-27T12:00:00Z"),
            until: at("2026-03-30T12:00:00Z"),
            policy: "p.toml".into(),
            fixture: "f.json".into(),
            timezone: "Europe/Berlin".into(),
            notes: vec![],
            events,
            summary: Summary::default(),
        }
    }

    #[test]
    fn days_are_local_numbered_from_zero_and_fold_repeats() {
        let f = forecast(vec![
            // 23:30 UTC on Friday is Saturday 00:30 in Berlin (CET, +1).
            ev("2026-03-27T23:30:00Z", "s", "suspend_endpoint", "ep-1"),
            ev("2026-03-27T23:40:00Z", "s", "suspend_endpoint", "ep-1"),
            ev("2026-03-28T01:00:00Z", "s", "suspend_endpoint", "ep-2"),
            ev("2026-03-29T22:10:00Z", "e", "delete_branch", "preview/x"),
        ]);
        let d = days(&f, chrono_tz::Europe::Berlin);
        let dates: Vec<String> = d.iter().map(|x| x.date.to_string()).collect();
        assert_eq!(
            dates,
            ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30"]
        );
        assert!(d[0].lines.is_empty());
        assert_eq!(d[1].number, 1);
        assert_eq!(d[1].lines.len(), 2);
        assert_eq!(d[1].lines[0].count, 2);
        assert_eq!(d[1].lines[0].last_at, at("2026-03-27T23:40:00Z"));
        // 22:10 UTC on Sunday 29 March is Monday 00:10 in Berlin (CEST, +2, after the change).
        assert_eq!(d[3].lines.len(), 1);
        assert_eq!(d[3].lines[0].first.resource, "preview/x");
        let text = render_text(&f, chrono_tz::Europe::Berlin);
        assert!(text.contains("2026-03-28 Sat (day 1)"), "{text}");
        assert!(text.contains("(x2, until 00:40)"), "{text}");
    }

    #[test]
    fn summary_counts_by_action_and_outcome() {
        let mut failed = ev("2026-03-28T01:00:00Z", "e", "delete_branch", "b");
        failed.outcome = "failed".into();
        let events = vec![
            ev("2026-03-28T01:00:00Z", "e", "delete_branch", "a"),
            failed,
            ev("2026-03-28T01:00:00Z", NEON, "branch_expired", "c"),
            ev("2026-03-28T01:00:00Z", "s", "suspend_endpoint", "ep"),
            ev("2026-03-28T01:00:00Z", "s", "start_endpoint", "ep"),
        ];
        let mut s = Summary::default();
        s.count(&events);
        assert_eq!(
            (
                s.branches_deleted,
                s.actions_failed,
                s.branches_expired,
                s.suspends,
                s.resumes
            ),
            (1, 1, 1, 1, 1)
        );
    }
}
