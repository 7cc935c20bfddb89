//! Calendar windows in the style of kube-downscaler: `Mon-Fri 20:00-08:00`, `Sat-Sun`,
//! `2026-12-24..2026-12-26`, each optionally followed by an IANA zone
//! (`Mon-Fri 20:00-08:00 Europe/Berlin`); without one the job's zone applies.
//!
//! Grammar (whitespace separated):
//!
//! ```text
//! window := days [time-range] [zone]
//! days   := day-list | date | date ".." date        (dates inclusive, YYYY-MM-DD)
//! day-list := day-item ("," day-item)*              day-item := Day | Day "-" Day (wraps: Fri-Mon)
//! time-range := HH:MM "-" HH:MM                     (end may be 24:00)
//! ```
//!
//! Semantics: a window *starts* on each listed day. `Mon-Fri 20:00-08:00` is Monday 20:00
//! to Tuesday 08:00, ..., Friday 20:00 to Saturday 08:00; early Monday morning is not in it
//! (it belongs to Sunday, which is not listed). Without a time range the listed days are
//! whole days.
//!
//! Evaluation converts the instant to local wall-clock time in the window's zone *at that
//! instant*, so daylight-saving changes need no special case: `20:00` is always 20:00 on
//! the wall clock (a window whose boundary falls in the skipped spring-forward hour starts
//! at the first wall-clock time after it).

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid window {input:?}: {message}")]
pub struct WindowError {
    pub input: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Days {
    /// Bit i set = weekday with `num_days_from_monday() == i`.
    Weekdays(u8),
    /// Inclusive date range.
    Dates(NaiveDate, NaiveDate),
}

impl Days {
    fn contains(&self, d: NaiveDate) -> bool {
        match *self {
            Days::Weekdays(mask) => mask & (1 << d.weekday().num_days_from_monday()) != 0,
            Days::Dates(from, to) => from <= d && d <= to,
        }
    }
}

/// One calendar window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    source: String,
    days: Days,
    /// Seconds since local midnight, `[start, end)`; `None` for whole days.
    range: Option<(u32, u32)>,
    tz: Tz,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    let l = s.to_ascii_lowercase();
    let all = [
        ("mon", "monday", Weekday::Mon),
        ("tue", "tuesday", Weekday::Tue),
        ("wed", "wednesday", Weekday::Wed),
        ("thu", "thursday", Weekday::Thu),
        ("fri", "friday", Weekday::Fri),
        ("sat", "saturday", Weekday::Sat),
        ("sun", "sunday", Weekday::Sun),
    ];
    all.iter()
        .find(|(short, long, _)| l == *short || l == *long)
        .map(|(_, _, d)| *d)
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some((h * 60 + m) * 60)
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

impl Window {
    /// Parses a window; `default_tz` is used when the window names no zone.
    pub fn parse(input: &str, default_tz: Tz) -> Result<Window, WindowError> {
        let err = |message: String| WindowError {
            input: input.to_string(),
            message,
        };
        let mut tokens: Vec<&str> = input.split_whitespace().collect();
        if tokens.is_empty() {
            return Err(err("empty window".into()));
        }
        let mut tz = default_tz;
        if tokens.len() > 1 {
            let last = tokens[tokens.len() - 1];
            if last.contains('/') || last.eq_ignore_ascii_case("utc") || !last.contains(':') {
                tz = last.parse::<Tz>().map_err(|_| {
                    err(format!(
                        "{last:?} is not an IANA time zone (expected e.g. \"Europe/Berlin\")"
                    ))
                })?;
                tokens.pop();
            }
        }
        let days = Self::parse_days(tokens[0]).map_err(err)?;
        let range = match tokens.get(1) {
            None => None,
            Some(r) => {
                let (a, b) = r.split_once('-').ok_or_else(|| {
                    err(format!("{r:?} is not a time range (expected HH:MM-HH:MM)"))
                })?;
                let start = parse_hhmm(a)
                    .filter(|s| *s < 86_400)
                    .ok_or_else(|| err(format!("{a:?} is not a time (expected HH:MM)")))?;
                let end = parse_hhmm(b)
                    .ok_or_else(|| err(format!("{b:?} is not a time (expected HH:MM)")))?;
                if start == end || (start == 0 && end == 86_400) {
                    return Err(err(
                        "start and end are the same time; omit the time range for whole days"
                            .into(),
                    ));
                }
                Some((start, end))
            }
        };
        if tokens.len() > 2 {
            return Err(err(format!(
                "unexpected {:?} (expected: days [HH:MM-HH:MM] [Zone/Name])",
                tokens[2]
            )));
        }
        Ok(Window {
            source: input.split_whitespace().collect::<Vec<_>>().join(" "),
            days,
            range,
            tz,
        })
    }

    fn parse_days(s: &str) -> Result<Days, String> {
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            let (from, to) = match s.split_once("..") {
                Some((a, b)) => (a, b),
                None => (s, s),
            };
            let from = parse_date(from)
                .ok_or_else(|| format!("{from:?} is not a date (expected YYYY-MM-DD)"))?;
            let to = parse_date(to)
                .ok_or_else(|| format!("{to:?} is not a date (expected YYYY-MM-DD)"))?;
            if to < from {
                return Err(format!("date range ends ({to}) before it starts ({from})"));
            }
            return Ok(Days::Dates(from, to));
        }
        let mut mask = 0u8;
        for item in s.split(',') {
            let bad =
                || format!("{item:?} is not a day or day range (expected e.g. Mon-Fri, Sat,Sun)");
            match item.split_once('-') {
                Some((a, b)) => {
                    let a = parse_weekday(a).ok_or_else(bad)?;
                    let b = parse_weekday(b).ok_or_else(bad)?;
                    let mut d = a;
                    loop {
                        mask |= 1 << d.num_days_from_monday();
                        if d == b {
                            break;
                        }
                        d = d.succ();
                    }
                }
                None => {
                    let d = parse_weekday(item).ok_or_else(bad)?;
                    mask |= 1 << d.num_days_from_monday();
                }
            }
        }
        Ok(Days::Weekdays(mask))
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Whether the instant `t` is inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.tz);
        let date = local.date_naive();
        let secs = local.num_seconds_from_midnight();
        match self.range {
            None => self.days.contains(date),
            Some((start, end)) if start < end => {
                self.days.contains(date) && start <= secs && secs < end
            }
            Some((start, end)) => {
                // Crosses midnight: the evening part belongs to today, the morning part
                // to the window that started yesterday.
                (self.days.contains(date) && secs >= start)
                    || (secs < end
                        && date
                            .pred_opt()
                            .is_some_and(|yesterday| self.days.contains(yesterday)))
            }
        }
    }
}

/// Several windows: inside if inside any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowSet(pub Vec<Window>);

impl WindowSet {
    pub fn parse<S: AsRef<str>>(inputs: &[S], default_tz: Tz) -> Result<Self, WindowError> {
        inputs
            .iter()
            .map(|s| Window::parse(s.as_ref(), default_tz))
            .collect::<Result<Vec<_>, _>>()
            .map(WindowSet)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The first window containing `t`, for the reason in the ledger.
    pub fn active_at(&self, t: DateTime<Utc>) -> Option<&Window> {
        self.0.iter().find(|w| w.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::Berlin;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }
    fn w(s: &str) -> Window {
        Window::parse(s, Berlin).unwrap()
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(w("Mon-Fri 20:00-08:00").tz(), Berlin);
        assert_eq!(
            Window::parse("Sat-Sun America/New_York", Berlin)
                .unwrap()
                .tz(),
            chrono_tz::America::New_York
        );
        assert_eq!(w("2026-12-24..2026-12-26 UTC").tz(), chrono_tz::UTC);
        assert_eq!(
            w("mon,wed,FRIDAY 09:00-24:00").to_string(),
            "mon,wed,FRIDAY 09:00-24:00"
        );
        assert_eq!(w("  Sat   Europe/Paris ").to_string(), "Sat Europe/Paris");
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let e = |s: &str| Window::parse(s, Berlin).unwrap_err().to_string();
        assert!(e("").contains("empty window"));
        assert!(e("Mon-Fry").contains("\"Fry\"") || e("Mon-Fry").contains("Mon-Fry"));
        assert!(e("Mon-Fri 25:00-08:00").contains("\"25:00\" is not a time"));
        assert!(e("Mon-Fri 20:00-08:00 Mars/Olympus").contains("not an IANA time zone"));
        assert!(e("Mon 08:00-08:00").contains("same time"));
        assert!(e("2026-12-26..2026-12-24").contains("ends (2026-12-24) before"));
        assert!(e("2026-13-01").contains("not a date"));
        assert!(
            e("Mon 08:00 09:00 UTC").contains("time range")
                || e("Mon 08:00 09:00 UTC").contains("unexpected")
        );
        assert!(e("Mon 08:00-09:00 10:00-11:00 UTC").contains("unexpected"));
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_starts() {
        let win = w("Mon-Fri 20:00-08:00 UTC");
        // 2026-01-05 is a Monday.
        assert!(
            !win.contains(utc(2026, 1, 5, 7, 0)),
            "Monday early morning: Sunday's"
        );
        assert!(!win.contains(utc(2026, 1, 5, 19, 59)));
        assert!(win.contains(utc(2026, 1, 5, 20, 0)));
        assert!(win.contains(utc(2026, 1, 6, 7, 59)));
        assert!(!win.contains(utc(2026, 1, 6, 8, 0)));
        // Friday night runs into Saturday morning, not Saturday night.
        assert!(win.contains(utc(2026, 1, 10, 3, 0)));
        assert!(!win.contains(utc(2026, 1, 10, 21, 0)));
    }

    #[test]
    fn weekend_and_wrapping_day_ranges() {
        let we = w("Sat-Sun UTC");
        assert!(we.contains(utc(2026, 1, 10, 0, 0)));
        assert!(we.contains(utc(2026, 1, 11, 23, 59)));
        assert!(!we.contains(utc(2026, 1, 12, 0, 0)));
        let wrap = w("Fri-Mon UTC");
        assert!(wrap.contains(utc(2026, 1, 12, 12, 0)));
        assert!(!wrap.contains(utc(2026, 1, 13, 12, 0)));
    }

    #[test]
    fn explicit_dates_are_inclusive_local_days() {
        let xmas = w("2026-12-24..2026-12-26");
        // Berlin is UTC+1 in December: the 24th starts at 23:00 UTC on the 23rd.
        assert!(!xmas.contains(utc(2026, 12, 23, 22, 59)));
        assert!(xmas.contains(utc(2026, 12, 23, 23, 0)));
        assert!(xmas.contains(utc(2026, 12, 26, 22, 59)));
        assert!(!xmas.contains(utc(2026, 12, 26, 23, 0)));
        let one = w("2026-12-31 18:00-02:00");
        assert!(one.contains(utc(2026, 12, 31, 17, 0)));
        assert!(one.contains(utc(2027, 1, 1, 0, 30)));
        assert!(!one.contains(utc(2027, 1, 1, 17, 30)));
    }

    #[test]
    fn berlin_spring_forward_2026_03_29() {
        // Clocks go 02:00 CET -> 03:00 CEST at 01:00 UTC on Sunday 2026-03-29.
        let win = w("Mon-Fri 20:00-08:00");
        // Monday 2026-03-30 is CEST (+2): 08:00 local is 06:00 UTC.
        assert!(win.contains(utc(2026, 3, 30, 18, 0)), "Mon 20:00 CEST");
        assert!(!win.contains(utc(2026, 3, 30, 17, 59)));
        assert!(win.contains(utc(2026, 3, 31, 5, 59)), "Tue 07:59 CEST");
        // A fixed CET offset would wrongly say 07:00 local here, still inside.
        assert!(!win.contains(utc(2026, 3, 31, 6, 0)), "Tue 08:00 CEST");
        // Friday before the change is CET (+1).
        assert!(win.contains(utc(2026, 3, 27, 19, 0)), "Fri 20:00 CET");
        assert!(win.contains(utc(2026, 3, 28, 6, 59)), "Sat 07:59 CET");
        assert!(!win.contains(utc(2026, 3, 28, 7, 0)));

        let sunday_night = w("Sun 01:30-03:30");
        assert!(sunday_night.contains(utc(2026, 3, 29, 0, 30)), "01:30 CET");
        // 00:59 UTC is 01:59 CET; 01:00 UTC is 03:00 CEST: both inside.
        assert!(sunday_night.contains(utc(2026, 3, 29, 0, 59)));
        assert!(sunday_night.contains(utc(2026, 3, 29, 1, 0)));
        // 01:30 UTC is 03:30 CEST: out. Only 1h of real time passed inside.
        assert!(!sunday_night.contains(utc(2026, 3, 29, 1, 30)));
    }

    #[test]
    fn berlin_fall_back_2026_10_25() {
        // Clocks go 03:00 CEST -> 02:00 CET at 01:00 UTC on Sunday 2026-10-25.
        let weekend = w("Sat-Sun");
        // Sunday 23:30 CET = 22:30 UTC: inside; 23:00 UTC = Monday 00:00 CET: out.
        assert!(weekend.contains(utc(2026, 10, 25, 22, 30)));
        assert!(!weekend.contains(utc(2026, 10, 25, 23, 0)));
        // Saturday starts at 22:00 UTC Friday (CEST, +2).
        assert!(!weekend.contains(utc(2026, 10, 23, 21, 59)));
        assert!(weekend.contains(utc(2026, 10, 23, 22, 0)));

        let repeated = w("Sun 02:00-03:00");
        // Both passes through 02:xx local are inside: 00:30 UTC (CEST) and 01:30 UTC (CET).
        assert!(repeated.contains(utc(2026, 10, 25, 0, 30)));
        assert!(repeated.contains(utc(2026, 10, 25, 1, 30)));
        assert!(!repeated.contains(utc(2026, 10, 25, 2, 0)), "03:00 CET");

        let nights = w("Mon-Fri 20:00-08:00");
        // Monday 2026-10-26 is CET (+1): 08:00 local is 07:00 UTC.
        assert!(nights.contains(utc(2026, 10, 27, 6, 59)));
        assert!(!nights.contains(utc(2026, 10, 27, 7, 0)));
    }

    #[test]
    fn window_set_reports_the_matching_window() {
        let set = WindowSet::parse(&["Mon-Fri 20:00-08:00 UTC", "Sat-Sun UTC"], Berlin).unwrap();
        assert_eq!(
            set.active_at(utc(2026, 1, 10, 12, 0))
                .map(|w| w.to_string()),
            Some("Sat-Sun UTC".to_string())
        );
        assert!(set.active_at(utc(2026, 1, 7, 12, 0)).is_none());
        assert!(WindowSet::parse(&["Sat", "Nope"], Berlin).is_err());
    }
}
