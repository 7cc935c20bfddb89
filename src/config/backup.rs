//! `snapshot_branches` with `mode = "backup_schedule"`: the backup schedule a policy asks
//! Neon to keep on each selected root branch, checked against what Neon's schedules can do.
//!
//! Neon's schedules (its backup & restore guide, and `PUT .../backup_schedule`): root
//! branches only; `daily`, `weekly` or `monthly` (the API document also lists `hourly` and
//! `yearly`, which Neon refuses); an hour of the day (UTC); a day of the week or of the
//! month; each snapshot kept `retention_seconds`, from one hour (the document's minimum) to
//! 35 days. What Neon cannot do is refused here, naming `mode = "snapshots"` (the snapshots
//! the daemon makes and prunes itself) as the way to get it.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::neon::{BackupFrequency, BackupSchedule, BackupScheduleItem};

/// What a `snapshot_branches` job manages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SnapshotMode {
    /// The daemon creates snapshots on the job's schedule and prunes them by
    /// `[jobs.retention]`.
    #[default]
    Snapshots,
    /// The daemon sets Neon's own backup schedule on each selected root branch.
    BackupSchedule,
}

/// The frequencies Neon's backup schedules offer (the schema's list; the parser also reads
/// `hourly` and `yearly` to say what to use instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "BackupFrequency")]
pub enum BackupFrequencyName {
    /// Every day at `hour`.
    Daily,
    /// Every week on `day` (1-7) at `hour`.
    Weekly,
    /// Every month on `day` (1-31) at `hour`.
    Monthly,
}

/// Neon's longest retention of a scheduled snapshot, and its default here.
pub const MAX_RETENTION: Duration = Duration::from_secs(35 * 86_400);
/// Neon's shortest (`retention_seconds` minimum 3600 in the API document).
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// One rule as the policy gave it, before its checks.
pub(super) struct RuleInput<'a> {
    pub frequency: &'a str,
    pub hour: Option<u32>,
    pub day: Option<u32>,
    pub retention: Option<Duration>,
}

/// Which field of a rule an error is about (for its position in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RuleField {
    Frequency,
    Hour,
    Day,
    Retention,
}

const INSTEAD: &str = "use `mode = \"snapshots\"` (the daemon makes the snapshots on the job's \
                       schedule and prunes them by `[jobs.retention]`)";

/// Checks one rule and fills in its defaults (hour 0, day 1, retention 35 days), as the
/// item Neon is sent.
pub(super) fn rule(r: &RuleInput<'_>) -> Result<BackupScheduleItem, (RuleField, String)> {
    let frequency = match r.frequency {
        "daily" => BackupFrequency::Daily,
        "weekly" => BackupFrequency::Weekly,
        "monthly" => BackupFrequency::Monthly,
        f @ ("hourly" | "yearly") => {
            return Err((
                RuleField::Frequency,
                format!(
                    "Neon's backup schedules take no `{f}` snapshots (daily, weekly or monthly \
                     only); for {f} snapshots {INSTEAD}"
                ),
            ))
        }
        f => {
            return Err((
                RuleField::Frequency,
                format!("unknown frequency `{f}`; expected daily, weekly or monthly"),
            ))
        }
    };
    let hour = r.hour.unwrap_or(0);
    if hour > 23 {
        return Err((
            RuleField::Hour,
            format!("`hour` must be 0-23 (UTC), got {hour}"),
        ));
    }
    let day = match (&frequency, r.day) {
        (BackupFrequency::Daily, Some(_)) => {
            return Err((
                RuleField::Day,
                "`day` is for weekly (1-7) and monthly (1-31) rules; a daily rule has none".into(),
            ))
        }
        (BackupFrequency::Daily, None) => None,
        (BackupFrequency::Weekly, d) => {
            let d = d.unwrap_or(1);
            if !(1..=7).contains(&d) {
                return Err((
                    RuleField::Day,
                    format!("`day` of a weekly rule must be 1-7, got {d}"),
                ));
            }
            Some(d)
        }
        (_, d) => {
            let d = d.unwrap_or(1);
            if !(1..=31).contains(&d) {
                return Err((
                    RuleField::Day,
                    format!("`day` of a monthly rule must be 1-31, got {d}"),
                ));
            }
            Some(d)
        }
    };
    let retention = r.retention.unwrap_or(MAX_RETENTION);
    if retention > MAX_RETENTION {
        return Err((
            RuleField::Retention,
            format!(
                "`retention` {} is beyond Neon's limit for scheduled snapshots (35 days); to keep \
                 snapshots longer {INSTEAD}",
                humantime::format_duration(retention)
            ),
        ));
    }
    if retention < MIN_RETENTION || retention.subsec_nanos() != 0 {
        return Err((
            RuleField::Retention,
            format!(
                "`retention` must be whole seconds and at least 1h (Neon's minimum), got {}",
                humantime::format_duration(retention)
            ),
        ));
    }
    Ok(BackupScheduleItem {
        frequency,
        hour: Some(i64::from(hour)),
        day: day.map(i64::from),
        month: None,
        retention_seconds: Some(retention.as_secs() as i64),
    })
}

/// The schedule of a list of checked rules; `Err(index)` names the first rule that repeats
/// an earlier one.
pub(super) fn schedule(items: Vec<BackupScheduleItem>) -> Result<BackupSchedule, usize> {
    for (i, it) in items.iter().enumerate() {
        if items[..i].contains(it) {
            return Err(i);
        }
    }
    Ok(BackupSchedule::new(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(frequency: &str) -> RuleInput<'_> {
        RuleInput {
            frequency,
            hour: None,
            day: None,
            retention: None,
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let it = rule(&input("weekly")).unwrap();
        assert_eq!(it.hour, Some(0));
        assert_eq!(it.day, Some(1));
        assert_eq!(it.retention_seconds, Some(35 * 86_400));
        let it = rule(&input("daily")).unwrap();
        assert_eq!(it.day, None);
    }

    #[test]
    fn what_neon_cannot_do_is_refused_naming_the_snapshots_mode() {
        for f in ["hourly", "yearly"] {
            let (field, e) = rule(&input(f)).unwrap_err();
            assert_eq!(field, RuleField::Frequency);
            assert!(e.contains("mode = \"snapshots\""), "{e}");
        }
        let mut r = input("daily");
        r.retention = Some(MAX_RETENTION + Duration::from_secs(1));
        let (field, e) = rule(&r).unwrap_err();
        assert_eq!(field, RuleField::Retention);
        assert!(
            e.contains("35 days") && e.contains("mode = \"snapshots\""),
            "{e}"
        );
        r.retention = Some(MAX_RETENTION);
        assert!(rule(&r).is_ok());
        r.retention = Some(Duration::from_secs(3599));
        assert_eq!(rule(&r).unwrap_err().0, RuleField::Retention);
        let mut r = input("weekly");
        r.day = Some(8);
        assert_eq!(rule(&r).unwrap_err().0, RuleField::Day);
        let mut r = input("daily");
        r.day = Some(1);
        assert_eq!(rule(&r).unwrap_err().0, RuleField::Day);
        let mut r = input("monthly");
        r.hour = Some(24);
        assert_eq!(rule(&r).unwrap_err().0, RuleField::Hour);
        assert_eq!(
            rule(&input("minutely")).unwrap_err().0,
            RuleField::Frequency
        );
    }

    #[test]
    fn a_repeated_rule_is_named() {
        let a = rule(&input("daily")).unwrap();
        let b = rule(&input("weekly")).unwrap();
        assert_eq!(schedule(vec![a.clone(), b.clone(), a.clone()]), Err(2));
        assert_eq!(
            schedule(vec![b.clone(), a.clone()]).unwrap().items().len(),
            2
        );
    }
}
