//! `snapshot_branches`: naming, ownership and idempotency of the snapshots a policy makes.
//!
//! Names are rendered from the job's template and the *tick* the run is for (not the wall
//! clock), so a re-run of the same tick after a crash renders the same name and finds the
//! snapshot it made before instead of making a second one.
//!
//! Retention only ever touches snapshots this policy made: a snapshot is ours when its
//! source branch is the branch we snapshot and its name matches the template with
//! `{branch}`/`{job}` filled in and `{date}`/`{time}` as their digit patterns. Snapshots
//! made by hand or by another policy never match.

use chrono::{DateTime, TimeZone};
use regex::Regex;

/// Renders a snapshot name. Placeholders: `{branch}`, `{job}`, `{date}` (YYYY-MM-DD),
/// `{time}` (HHMMSS), the latter two in the zone of `at`.
pub fn render_name<Z: TimeZone>(template: &str, branch: &str, job: &str, at: &DateTime<Z>) -> String
where
    Z::Offset: std::fmt::Display,
{
    template
        .replace("{branch}", branch)
        .replace("{job}", job)
        .replace("{date}", &at.format("%Y-%m-%d").to_string())
        .replace("{time}", &at.format("%H%M%S").to_string())
}

/// A matcher for the names this policy gives to snapshots of one branch.
pub fn ownership_matcher(template: &str, branch: &str, job: &str) -> Regex {
    let mut pattern = String::from("^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        let after = &rest[open..];
        let (piece, len) = if after.starts_with("{branch}") {
            (regex::escape(branch), "{branch}".len())
        } else if after.starts_with("{job}") {
            (regex::escape(job), "{job}".len())
        } else if after.starts_with("{date}") {
            (r"\d{4}-\d{2}-\d{2}".to_string(), "{date}".len())
        } else if after.starts_with("{time}") {
            (r"\d{6}".to_string(), "{time}".len())
        } else {
            (regex::escape("{"), 1)
        };
        pattern.push_str(&piece);
        rest = &after[len..];
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    Regex::new(&pattern).expect("the pattern is built from escaped literals and fixed classes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn renders_in_the_tick_zone() {
        let tick = Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap();
        let local = tick.with_timezone(&chrono_tz::Europe::Berlin);
        assert_eq!(
            render_name("{branch}-snap-{date}-{time}", "main", "nightly", &local),
            "main-snap-2026-03-29-033000"
        );
        assert_eq!(
            render_name("{job}/{branch}@{date}", "dev", "nightly", &tick),
            "nightly/dev@2026-03-29"
        );
    }

    #[test]
    fn ownership_matches_only_our_names() {
        let m = ownership_matcher("{branch}-snap-{date}-{time}", "main", "nightly");
        assert!(m.is_match("main-snap-2026-03-29-033000"));
        assert!(!m.is_match("main-snap-2026-03-29-0330"));
        assert!(!m.is_match("xmain-snap-2026-03-29-033000"));
        assert!(!m.is_match("main-snap-2026-03-29-033000-manual"));
        assert!(!m.is_match("dev-snap-2026-03-29-033000"));
        // Regex metacharacters in the branch or template are literals.
        let m = ownership_matcher("({job}) {branch}.{date}", "feat.x+", "j");
        assert!(m.is_match("(j) feat.x+.2026-01-01"));
        assert!(!m.is_match("(j) featax+.2026-01-01"));
        // A rendered name is always owned.
        let tick = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for t in ["{branch}-{date}-{time}", "snap-{job}-{branch}", "{date}"] {
            let name = render_name(t, "br", "job", &tick);
            assert!(
                ownership_matcher(t, "br", "job").is_match(&name),
                "{t} -> {name}"
            );
        }
    }
}
