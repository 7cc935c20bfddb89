//! Calendar windows for `suspend_computes` (kube-downscaler style).
//!
//! Grammar (one window per string, an optional IANA zone at the end overrides the job's
//! `window_timezone`):
//!
//! - `Mon-Fri 20:00-08:00` — starts on each listed day at 20:00 and, because the end is
//!   earlier than the start, ends at 08:00 the next morning (Friday night runs into Saturday
//!   morning; Monday 07:00 belongs to Sunday night and is outside);
//! - `Mon,Wed,Fri 09:00-17:00` — day lists and ranges (ranges may wrap: `Fri-Mon`);
//! - `Sat-Sun` — whole days;
//! - `20:00-08:00` — every day;
//! - `2026-12-24..2026-12-26` — whole dates, both ends inclusive; `2026-12-24` alone is one day.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub rule: WindowRule,
    pub tz: Tz,
    /// The text as written, for logs and the audit reason.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowRule {
    /// `days[0]` is Monday. `times: None` means whole days.
    Weekly {
        days: [bool; 7],
        times: Option<(NaiveTime, NaiveTime)>,
    },
    /// Inclusive date range.
    Dates { from: NaiveDate, to: NaiveDate },
}

impl Window {
    /// Parses one window; `default_tz` applies unless the string names its own zone.
    pub fn parse(s: &str, default_tz: Tz) -> Result<Window, String> {
        let mut tokens: Vec<&str> = s.split_whitespace().collect();
        if tokens.is_empty() {
            return Err("empty window; expected e.g. \"Mon-Fri 20:00-08:00\", \"Sat-Sun\" or \"2026-12-24..2026-12-26\"".into());
        }
        let mut tz = default_tz;
        if tokens.len() > 1 {
            if let Some(last) = tokens.last() {
                if last.contains('/') || *last == "UTC" {
                    tz = Tz::from_str(last)
                        .map_err(|_| format!("unknown time zone `{last}` in window `{s}`; expected an IANA name such as \"Europe/Berlin\""))?;
                    tokens.pop();
                }
            }
        }
        let bad = |why: String| format!("invalid window `{s}`: {why}");
        let rule = match tokens.as_slice() {
            [one] if one.contains("..") || looks_like_date(one) => parse_dates(one).map_err(bad)?,
            [one] if one.contains(':') => WindowRule::Weekly {
                days: [true; 7],
                times: Some(parse_times(one).map_err(bad)?),
            },
            [one] => WindowRule::Weekly {
                days: parse_days(one).map_err(bad)?,
                times: None,
            },
            [days, times] => WindowRule::Weekly {
                days: parse_days(days).map_err(bad)?,
                times: Some(parse_times(times).map_err(bad)?),
            },
            _ => {
                return Err(bad(
                    "expected `DAYS [HH:MM-HH:MM] [ZONE]` or `YYYY-MM-DD..YYYY-MM-DD [ZONE]`"
                        .into(),
                ))
            }
        };
        Ok(Window {
            rule,
            tz,
            source: s.to_string(),
        })
    }

    /// Whether the instant falls inside the window, judged on the window's local clock.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        match &self.rule {
            WindowRule::Dates { from, to } => {
                let d = local.date_naive();
                *from <= d && d <= *to
            }
            WindowRule::Weekly { days, times } => {
                let today = days[local.weekday().num_days_from_monday() as usize];
                let yesterday = days[local.weekday().pred().num_days_from_monday() as usize];
                let t = local.time().with_nanosecond(0).unwrap_or(local.time());
                match times {
                    None => today,
                    Some((start, end)) if start < end => today && *start <= t && t < *end,
                    // Overnight (or 24h when start == end): from `start` on a listed day to
                    // `end` on the following day.
                    Some((start, end)) => (today && t >= *start) || (yesterday && t < *end),
                }
            }
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn looks_like_date(s: &str) -> bool {
    s.len() == 10
        && s.as_bytes().get(4) == Some(&b'-')
        && s[..4].bytes().all(|b| b.is_ascii_digit())
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD)"))
}

fn parse_dates(s: &str) -> Result<WindowRule, String> {
    let (from, to) = match s.split_once("..") {
        Some((a, b)) => (parse_date(a)?, parse_date(b)?),
        None => {
            let d = parse_date(s)?;
            (d, d)
        }
    };
    if to < from {
        return Err(format!("the range ends ({to}) before it starts ({from})"));
    }
    Ok(WindowRule::Dates { from, to })
}

fn parse_time(s: &str) -> Result<NaiveTime, String> {
    if s == "24:00" {
        return Ok(NaiveTime::MIN);
    }
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| format!("`{s}` is not a time (HH:MM)"))
}

fn parse_times(s: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a time range (HH:MM-HH:MM)"))?;
    Ok((parse_time(a)?, parse_time(b)?))
}

fn parse_weekday(s: &str) -> Result<Weekday, String> {
    Weekday::from_str(s)
        .map_err(|_| format!("`{s}` is not a day of the week (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn parse_days(s: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (mut d, end) = (parse_weekday(a)?, parse_weekday(b)?);
                loop {
                    days[d.num_days_from_monday() as usize] = true;
                    if d == end {
                        break;
                    }
                    d = d.succ();
                }
            }
            None => days[parse_weekday(part)?.num_days_from_monday() as usize] = true,
        }
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn overnight_weekdays() {
        let w = Window::parse("Mon-Fri 20:00-08:00", Berlin).unwrap();
        // Friday 2026-01-09 21:00 Berlin = 20:00 UTC: inside.
        assert!(w.contains(at("2026-01-09T20:00:00Z")));
        // Saturday 07:00 Berlin: the tail of Friday night.
        assert!(w.contains(at("2026-01-10T06:00:00Z")));
        // Monday 07:00 Berlin belongs to Sunday night: outside.
        assert!(!w.contains(at("2026-01-12T06:00:00Z")));
        // Wednesday noon: outside.
        assert!(!w.contains(at("2026-01-07T11:00:00Z")));
    }

    #[test]
    fn weekend_dates_and_own_zone() {
        let w = Window::parse("Sat-Sun", Berlin).unwrap();
        // Friday 23:30 UTC is Saturday 00:30 in Berlin.
        assert!(w.contains(at("2026-01-09T23:30:00Z")));
        let d = Window::parse("2026-12-24..2026-12-26 UTC", Berlin).unwrap();
        assert!(d.contains(at("2026-12-26T23:59:00Z")));
        assert!(!d.contains(at("2026-12-27T00:00:00Z")));
        // A window across the DST change keeps local wall-clock times.
        let e = Window::parse("Sun 02:00-04:00", Berlin).unwrap();
        assert!(e.contains(at("2026-03-29T01:30:00Z"))); // 03:30 CEST
        assert!(!e.contains(at("2026-03-29T02:00:00Z"))); // 04:00 CEST
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = Window::parse("Mon-Fry 20:00-08:00", Berlin).unwrap_err();
        assert!(e.contains("`Fry` is not a day"), "{e}");
        let e = Window::parse("Mon 25:00-08:00", Berlin).unwrap_err();
        assert!(e.contains("`25:00` is not a time"), "{e}");
        let e = Window::parse("2026-12-26..2026-12-24", Berlin).unwrap_err();
        assert!(e.contains("ends"), "{e}");
        let e = Window::parse("Mon 20:00-08:00 Mars/Olympus", Berlin).unwrap_err();
        assert!(e.contains("unknown time zone"), "{e}");
    }
}
