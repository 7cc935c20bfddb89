//! When a job fires: a cron expression evaluated in an IANA time zone, or a fixed interval.
//!
//! The zone is applied every time a fire time is computed, never frozen into a UTC offset,
//! so a `0 3 * * *` job in Europe/Berlin fires at 03:00 local time in winter and in summer.
//!
//! Daylight-saving rules (the same as Vixie cron):
//! - a wall-clock time that does not exist (spring forward) fires at the first instant after
//!   the gap (02:30 on the day clocks jump from 02:00 to 03:00 fires at 03:00);
//! - a wall-clock time that exists twice (fall back) fires once, at its first occurrence.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;

/// A validated schedule. Cheap to clone.
#[derive(Clone)]
pub enum Schedule {
    Cron(CronSchedule),
    /// Fixed interval, aligned to multiples of the interval since the Unix epoch so every
    /// replica (and every restart) agrees on the tick times.
    Every(Duration),
}

#[derive(Clone)]
pub struct CronSchedule {
    expr: String,
    /// Shared: the parsed pattern is large and jobs are cloned on every reload.
    cron: std::sync::Arc<croner::Cron>,
}

impl CronSchedule {
    /// Parses a cron expression with 5 fields (minute precision) or 6 (leading seconds).
    pub fn parse(expr: &str) -> Result<Self, String> {
        let fields = expr.split_whitespace().count();
        let is_alias = expr.trim_start().starts_with('@');
        if !is_alias && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron expression `{expr}`: expected 5 fields (minute hour day-of-month \
                 month day-of-week) or 6 (with leading seconds), found {fields}"
            ));
        }
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("invalid cron expression `{expr}`: {e}"))?;
        Ok(CronSchedule {
            expr: expr.to_string(),
            cron: std::sync::Arc::new(cron),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `after`, evaluated in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz);
        let cand = self.cron.find_next_occurrence(&local, false).ok()?;
        let cand_utc = cand.with_timezone(&Utc);
        if cand_utc > after {
            return Some(cand_utc);
        }
        // `after` lies in the second pass through a repeated (fall-back) hour, and croner
        // mapped the next wall-clock match to its *first* occurrence, which is in the past.
        // The same wall-clock time's second occurrence is the answer.
        match tz.from_local_datetime(&cand.naive_local()) {
            LocalResult::Ambiguous(_, later) if later.with_timezone(&Utc) > after => {
                Some(later.with_timezone(&Utc))
            }
            _ => None,
        }
    }
}

impl Schedule {
    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(c) => c.next_after(after, tz),
            Schedule::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok().filter(|s| *s > 0)?;
                let ms = after.timestamp_millis();
                let next = (ms.div_euclid(step) + 1).checked_mul(step)?;
                DateTime::from_timestamp_millis(next)
            }
        }
    }

    /// The newest fire time in `(from, until]`, if any: the tick a `missed = "run_once"` job
    /// catches up on.
    pub fn last_between(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok().filter(|s| *s > 0)?;
                let last = until.timestamp_millis().div_euclid(step) * step;
                let last = DateTime::from_timestamp_millis(last)?;
                (last > from).then_some(last)
            }
            Schedule::Cron(_) => {
                let mut t = from;
                let mut found = None;
                // Bounded: a per-second schedule over a long outage must not hang start-up.
                for _ in 0..1_000_000 {
                    match self.next_after(t, tz) {
                        Some(n) if n <= until => {
                            found = Some(n);
                            t = n;
                        }
                        _ => break,
                    }
                }
                found
            }
        }
    }

    /// Seconds between two runs, for the `job_interval_seconds` staleness gauge. For cron,
    /// the gap between the next two fire times after `now`.
    pub fn nominal_interval(&self, now: DateTime<Utc>, tz: Tz) -> Option<Duration> {
        match self {
            Schedule::Every(d) => Some(*d),
            Schedule::Cron(_) => {
                let a = self.next_after(now, tz)?;
                let b = self.next_after(a, tz)?;
                (b - a).to_std().ok()
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(c) => f.write_str(&c.expr),
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Cron(a), Schedule::Cron(b)) => a.expr == b.expr,
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(expr: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::Cron(CronSchedule::parse(expr).unwrap());
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t, tz).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn daily_local_time_survives_dst() {
        // 03:00 Berlin is 02:00 UTC in winter and 01:00 UTC in summer.
        assert_eq!(
            fires("0 3 * * *", Berlin, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T02:00:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T01:00:00+00:00"
            ]
        );
    }

    #[test]
    fn spring_forward_gap_fires_after_the_gap() {
        // 02:30 does not exist in Berlin on 2026-03-29: fires at 03:00 CEST = 01:00 UTC.
        assert_eq!(
            fires("30 2 * * *", Berlin, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00",
                "2026-03-31T00:30:00+00:00"
            ]
        );
    }

    #[test]
    fn fall_back_repeated_time_fires_once() {
        // 02:30 exists twice on 2026-10-25 (00:30 UTC in CEST, 01:30 UTC in CET): once.
        assert_eq!(
            fires("30 2 * * *", Berlin, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
        // Starting inside the second pass of the repeated hour never goes backwards.
        let s = Schedule::Cron(CronSchedule::parse("*/20 * * * *").unwrap());
        let n = s.next_after(utc("2026-10-25T01:05:00Z"), Berlin).unwrap();
        assert_eq!(n, utc("2026-10-25T01:20:00Z"));
    }

    #[test]
    fn six_fields_and_field_count_errors() {
        assert!(CronSchedule::parse("*/10 * * * * *").is_ok());
        let e = CronSchedule::parse("* * * *").err().unwrap();
        assert!(e.contains("found 4"), "{e}");
        assert!(CronSchedule::parse("61 * * * *").is_err());
    }

    #[test]
    fn every_aligns_to_epoch() {
        let s = Schedule::Every(Duration::from_secs(900));
        assert_eq!(
            s.next_after(utc("2026-01-01T10:07:00Z"), Berlin),
            Some(utc("2026-01-01T10:15:00Z"))
        );
        assert_eq!(
            s.last_between(
                utc("2026-01-01T09:00:00Z"),
                utc("2026-01-01T10:07:00Z"),
                Berlin
            ),
            Some(utc("2026-01-01T10:00:00Z"))
        );
    }

    #[test]
    fn last_between_cron() {
        let s = Schedule::Cron(CronSchedule::parse("0 * * * *").unwrap());
        let tz = chrono_tz::UTC;
        assert_eq!(
            s.last_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T05:30:00Z"), tz),
            Some(utc("2026-01-01T05:00:00Z"))
        );
        assert_eq!(
            s.last_between(utc("2026-01-01T05:00:00Z"), utc("2026-01-01T05:30:00Z"), tz),
            None
        );
    }
}
