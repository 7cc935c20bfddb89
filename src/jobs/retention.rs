//! Snapshot retention with the semantics of `restic forget`.
//!
//! Snapshots are walked newest first. `keep_last = N` keeps the N newest. Each bucket rule
//! (`keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`) keeps the
//! newest snapshot of each of the last N periods *that have snapshots* (periods without a
//! snapshot do not use up the count). Rules are independent: a snapshot kept by any rule is
//! kept, and the plan says which rules kept it so the ledger can explain every deletion and
//! every survivor.
//!
//! Periods are taken in the job's time zone (a "day" is a local calendar day, weeks are ISO
//! weeks). Like restic, periods are wall-clock based: in the hour that repeats when clocks
//! fall back, two UTC hours share one local hour bucket.
//!
//! A policy with no rule at all keeps everything: an empty retention block must never mean
//! "delete every snapshot" (restic refuses the same way).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

/// The keep rules. `None` and `Some(0)` both mean the rule is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
        .iter()
        .all(|r| r.unwrap_or(0) == 0)
    }
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    pub id: String,
    pub created_at: DateTime<Utc>,
}

/// Why a snapshot is kept: the rule and the period it represents (e.g. `keep_daily`,
/// `2026-03-29`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepReason {
    pub rule: &'static str,
    pub period: String,
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.rule, self.period)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Newest first, each with every rule that kept it (never empty).
    pub keep: Vec<(SnapshotRef, Vec<KeepReason>)>,
    /// Newest first.
    pub remove: Vec<SnapshotRef>,
}

impl RetentionPlan {
    /// A human reason for removing a snapshot, for the ledger.
    pub fn removal_reason(policy: &RetentionPolicy) -> String {
        let mut rules = Vec::new();
        for (name, v) in [
            ("keep_last", policy.keep_last),
            ("keep_hourly", policy.keep_hourly),
            ("keep_daily", policy.keep_daily),
            ("keep_weekly", policy.keep_weekly),
            ("keep_monthly", policy.keep_monthly),
            ("keep_yearly", policy.keep_yearly),
        ] {
            if let Some(n) = v.filter(|n| *n > 0) {
                rules.push(format!("{name} = {n}"));
            }
        }
        format!("not kept by any retention rule ({})", rules.join(", "))
    }
}

type BucketFn = fn(&DateTime<Tz>) -> String;

fn hour(t: &DateTime<Tz>) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}h",
        t.year(),
        t.month(),
        t.day(),
        t.hour()
    )
}
fn day(t: &DateTime<Tz>) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}
fn week(t: &DateTime<Tz>) -> String {
    let w = t.iso_week();
    format!("{:04}-W{:02}", w.year(), w.week())
}
fn month(t: &DateTime<Tz>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}
fn year(t: &DateTime<Tz>) -> String {
    format!("{:04}", t.year())
}

/// Decides which snapshots to keep and which to remove.
pub fn plan(policy: &RetentionPolicy, tz: Tz, snapshots: &[SnapshotRef]) -> RetentionPlan {
    let mut sorted: Vec<SnapshotRef> = snapshots.to_vec();
    // Newest first; ties broken by id so the plan is deterministic.
    sorted.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));

    if policy.is_empty() {
        return RetentionPlan {
            keep: sorted
                .into_iter()
                .map(|s| {
                    (
                        s,
                        vec![KeepReason {
                            rule: "no_policy",
                            period: "no retention rule configured: keep all".to_string(),
                        }],
                    )
                })
                .collect(),
            remove: Vec::new(),
        };
    }

    let bucket_rules: [(&'static str, Option<u32>, BucketFn); 5] = [
        ("keep_hourly", policy.keep_hourly, hour),
        ("keep_daily", policy.keep_daily, day),
        ("keep_weekly", policy.keep_weekly, week),
        ("keep_monthly", policy.keep_monthly, month),
        ("keep_yearly", policy.keep_yearly, year),
    ];
    let mut remaining: HashMap<&'static str, u32> = bucket_rules
        .iter()
        .map(|(n, v, _)| (*n, v.unwrap_or(0)))
        .collect();
    let mut last_bucket: HashMap<&'static str, String> = HashMap::new();
    let mut last_left = policy.keep_last.unwrap_or(0);

    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for s in sorted {
        let local = s.created_at.with_timezone(&tz);
        let mut reasons = Vec::new();
        if last_left > 0 {
            last_left -= 1;
            reasons.push(KeepReason {
                rule: "keep_last",
                period: format!("{} newest", policy.keep_last.unwrap_or(0)),
            });
        }
        for (rule, _, bucket) in &bucket_rules {
            let left = remaining.get_mut(rule).expect("every rule has a counter");
            if *left == 0 {
                continue;
            }
            let b = bucket(&local);
            // Newest first: the first snapshot seen in a period is that period's newest.
            if last_bucket.get(rule) != Some(&b) {
                *left -= 1;
                last_bucket.insert(rule, b.clone());
                reasons.push(KeepReason { rule, period: b });
            }
        }
        if reasons.is_empty() {
            remove.push(s);
        } else {
            keep.push((s, reasons));
        }
    }
    RetentionPlan { keep, remove }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn snap(id: &str, rfc3339: &str) -> SnapshotRef {
        SnapshotRef {
            id: id.to_string(),
            created_at: DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .with_timezone(&Utc),
        }
    }
    fn ids(v: &[SnapshotRef]) -> Vec<&str> {
        v.iter().map(|s| s.id.as_str()).collect()
    }
    fn kept(p: &RetentionPlan) -> Vec<&str> {
        p.keep.iter().map(|(s, _)| s.id.as_str()).collect()
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let s = vec![
            snap("a", "2026-01-01T00:00:00Z"),
            snap("b", "2026-01-02T00:00:00Z"),
        ];
        let p = plan(&RetentionPolicy::default(), chrono_tz::UTC, &s);
        assert!(p.remove.is_empty());
        assert_eq!(kept(&p), vec!["b", "a"]);
        let zero = RetentionPolicy {
            keep_daily: Some(0),
            ..Default::default()
        };
        assert!(plan(&zero, chrono_tz::UTC, &s).remove.is_empty());
    }

    #[test]
    fn keep_last_keeps_newest_n_regardless_of_input_order() {
        let s = vec![
            snap("2", "2026-01-02T00:00:00Z"),
            snap("4", "2026-01-04T00:00:00Z"),
            snap("1", "2026-01-01T00:00:00Z"),
            snap("3", "2026-01-03T00:00:00Z"),
        ];
        let p = plan(
            &RetentionPolicy {
                keep_last: Some(2),
                ..Default::default()
            },
            chrono_tz::UTC,
            &s,
        );
        assert_eq!(kept(&p), vec!["4", "3"]);
        assert_eq!(ids(&p.remove), vec!["2", "1"]);
        assert_eq!(p.keep[0].1[0].rule, "keep_last");
    }

    #[test]
    fn keep_daily_keeps_newest_per_day_and_skips_empty_days() {
        // Three on Jan 5, none on Jan 4, two on Jan 3, one on Jan 1.
        let s = vec![
            snap("5c", "2026-01-05T20:00:00Z"),
            snap("5b", "2026-01-05T12:00:00Z"),
            snap("5a", "2026-01-05T01:00:00Z"),
            snap("3b", "2026-01-03T18:00:00Z"),
            snap("3a", "2026-01-03T06:00:00Z"),
            snap("1a", "2026-01-01T06:00:00Z"),
        ];
        let p = plan(
            &RetentionPolicy {
                keep_daily: Some(3),
                ..Default::default()
            },
            chrono_tz::UTC,
            &s,
        );
        // Empty Jan 4 and Jan 2 do not use up the count: 3 days WITH snapshots.
        assert_eq!(kept(&p), vec!["5c", "3b", "1a"]);
        assert_eq!(ids(&p.remove), vec!["5b", "5a", "3a"]);
        assert_eq!(
            p.keep[1].1,
            vec![KeepReason {
                rule: "keep_daily",
                period: "2026-01-03".into()
            }]
        );
    }

    #[test]
    fn rules_are_independent_and_reasons_accumulate() {
        // Daily snapshots at noon UTC for 40 days from 2026-01-01.
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let s: Vec<_> = (0..40)
            .map(|i| SnapshotRef {
                id: format!("d{i:02}"),
                created_at: start + chrono::Duration::days(i),
            })
            .collect();
        let pol = RetentionPolicy {
            keep_last: Some(1),
            keep_daily: Some(3),
            keep_weekly: Some(2),
            keep_monthly: Some(2),
            ..Default::default()
        };
        let p = plan(&pol, chrono_tz::UTC, &s);
        // Newest is d39 = 2026-02-09 (Mon, ISO week 7).
        let reasons_of = |id: &str| -> Vec<String> {
            p.keep
                .iter()
                .find(|(s, _)| s.id == id)
                .map(|(_, r)| r.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default()
        };
        assert_eq!(
            reasons_of("d39"),
            vec![
                "keep_last (1 newest)",
                "keep_daily (2026-02-09)",
                "keep_weekly (2026-W07)",
                "keep_monthly (2026-02)"
            ]
        );
        assert_eq!(
            reasons_of("d38"),
            vec!["keep_daily (2026-02-08)", "keep_weekly (2026-W06)"]
        );
        assert_eq!(reasons_of("d37"), vec!["keep_daily (2026-02-07)"]);
        // Newest of January is Jan 31 = d30.
        assert_eq!(reasons_of("d30"), vec!["keep_monthly (2026-01)"]);
        assert_eq!(kept(&p), vec!["d39", "d38", "d37", "d30"]);
        assert_eq!(p.remove.len(), 36);
        assert!(RetentionPlan::removal_reason(&pol).contains("keep_daily = 3"));
    }

    #[test]
    fn days_are_local_days_in_the_job_zone() {
        // 23:30 UTC on Jan 5 is already Jan 6 in Berlin (CET, +1).
        let s = vec![
            snap("late", "2026-01-05T23:30:00Z"),
            snap("evening", "2026-01-05T22:30:00Z"),
        ];
        let pol = RetentionPolicy {
            keep_daily: Some(2),
            ..Default::default()
        };
        let utc = plan(&pol, chrono_tz::UTC, &s);
        assert_eq!(kept(&utc), vec!["late"]);
        let berlin = plan(&pol, chrono_tz::Europe::Berlin, &s);
        assert_eq!(kept(&berlin), vec!["late", "evening"]);
        assert_eq!(berlin.keep[0].1[0].period, "2026-01-06");
    }

    #[test]
    fn hourly_across_fall_back_merges_the_repeated_hour_like_restic() {
        // Berlin 2026-10-25: 02:00-03:00 local happens twice (00:xx UTC CEST, 01:xx UTC CET).
        let s = vec![
            snap("second", "2026-10-25T01:10:00Z"),
            snap("first", "2026-10-25T00:10:00Z"),
            snap("before", "2026-10-24T23:10:00Z"),
        ];
        let p = plan(
            &RetentionPolicy {
                keep_hourly: Some(10),
                ..Default::default()
            },
            chrono_tz::Europe::Berlin,
            &s,
        );
        assert_eq!(kept(&p), vec!["second", "before"]);
        assert_eq!(ids(&p.remove), vec!["first"]);
        assert_eq!(p.keep[0].1[0].period, "2026-10-25 02h");
    }

    #[test]
    fn iso_weeks_span_years() {
        // 2026-01-01 is a Thursday in ISO week 2026-W01; 2025-12-29 (Mon) is in it too.
        let s = vec![
            snap("thu", "2026-01-01T10:00:00Z"),
            snap("mon", "2025-12-29T10:00:00Z"),
            snap("sun", "2025-12-28T10:00:00Z"),
        ];
        let p = plan(
            &RetentionPolicy {
                keep_weekly: Some(5),
                ..Default::default()
            },
            chrono_tz::UTC,
            &s,
        );
        assert_eq!(kept(&p), vec!["thu", "sun"]);
        assert_eq!(p.keep[0].1[0].period, "2026-W01");
        assert_eq!(p.keep[1].1[0].period, "2025-W52");
    }

    #[test]
    fn equal_timestamps_are_deterministic() {
        let s = vec![
            snap("a", "2026-01-01T00:00:00Z"),
            snap("b", "2026-01-01T00:00:00Z"),
        ];
        let pol = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let mut r = s.clone();
        r.reverse();
        assert_eq!(
            plan(&pol, chrono_tz::UTC, &s),
            plan(&pol, chrono_tz::UTC, &r)
        );
    }
}
