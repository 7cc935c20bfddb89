//! Calendar windows across daylight-saving changes, as the suspend job evaluates them.
//!
//! The window grammar and type live in [`crate::config::Window`] (parsed with the policy);
//! these tests pin the behaviour `suspend_computes` relies on: windows start on the listed
//! days, cross midnight, and follow the wall clock of their zone across DST changes.

#[cfg(test)]
mod tests {
    use crate::config::Window;
    use chrono::{DateTime, TimeZone, Utc};
    use chrono_tz::Europe::Berlin;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }
    fn w(s: &str) -> Window {
        Window::parse(s, Berlin).unwrap_or_else(|e| panic!("{s}: {e}"))
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
}
