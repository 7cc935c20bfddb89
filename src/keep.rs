//! `neon-steward keep`: exclusions an operator records in the store, honoured by every
//! destructive action of every job (the engine's notice step), shared by the CLI and the
//! admin HTTP API. Parsing is pure here; the store holds the keeps.

use chrono::{DateTime, NaiveDate, Utc};

use crate::store::Keep;

/// A keep as asked for: `<project>/<branch>` (each an id or a name; the branch may contain
/// `/`), an optional end and note.
pub fn parse(
    target: &str,
    until: Option<&str>,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Keep, String> {
    let (project, branch) = parse_target(target)?;
    let until = until.map(|u| parse_until(u, now)).transpose()?;
    let note = note
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    if note.as_ref().is_some_and(|n| n.chars().count() > 500) {
        return Err("--note is longer than 500 characters".into());
    }
    Ok(Keep {
        project,
        branch,
        until,
        note,
        created_at: now,
    })
}

/// `<project>/<branch>`, split at the first `/`.
pub fn parse_target(target: &str) -> Result<(String, String), String> {
    match target.split_once('/') {
        Some((p, b)) if !p.trim().is_empty() && !b.trim().is_empty() => {
            Ok((p.trim().to_string(), b.trim().to_string()))
        }
        _ => Err(format!(
            "`{target}` is not <project>/<branch> (a project id or name, `/`, a branch id or name)"
        )),
    }
}

/// `YYYY-MM-DD` (midnight UTC, the start of that day) or an RFC 3339 time; not in the past.
pub fn parse_until(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| format!("--until `{s}` is not YYYY-MM-DD or an RFC 3339 time"))?
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc())
            .ok_or_else(|| format!("--until `{s}` is not a valid date"))?,
    };
    if t <= now {
        return Err(format!("--until `{s}` is in the past"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn targets_dates_and_notes() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let k = parse("app/preview/pr-7", Some("2026-02-01"), Some(" demo "), now).unwrap();
        assert_eq!(
            (k.project.as_str(), k.branch.as_str()),
            ("app", "preview/pr-7")
        );
        assert_eq!(
            k.until,
            Some(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(k.note.as_deref(), Some("demo"));
        assert!(parse("app", None, None, now)
            .unwrap_err()
            .contains("<project>/<branch>"));
        assert!(parse("/b", None, None, now).is_err());
        assert!(parse("a/b", Some("2025-12-31"), None, now)
            .unwrap_err()
            .contains("past"));
        assert!(parse("a/b", Some("tomorrow"), None, now)
            .unwrap_err()
            .contains("YYYY-MM-DD"));
        assert!(parse("a/b", Some("2026-01-02T10:00:00+02:00"), None, now).is_ok());
    }
}
