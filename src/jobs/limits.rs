//! `max_actions`: the guard that stops a bad selector from wiping an account.
//!
//! Semantics follow Cloud Custodian's `max-resources`: the whole plan is checked *before*
//! anything is done, and if it exceeds the limit the run acts on nothing and fails loudly.
//! Acting on the first N and stopping would leave the account half-changed by a policy that
//! is evidently wrong, which is worse than not acting.

use std::fmt;
use std::str::FromStr;

/// The configured limits. Both may be set; the run must respect both.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// At most this many actions per run.
    pub max_actions: Option<u64>,
    /// At most this percentage (0-100) of the resources the selectors matched.
    pub max_actions_percent: Option<f64>,
}

/// One `max_actions` value as written in a policy: `25` or `"10%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxActions {
    Absolute(u64),
    Percent(f64),
}

impl FromStr for MaxActions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| {
                format!(
                    "max_actions {s:?}: expected a number of actions or a percentage like \"10%\""
                )
            })?;
            if !(0.0..=100.0).contains(&v) || v.is_nan() {
                return Err(format!(
                    "max_actions {s:?}: a percentage must be between 0% and 100%"
                ));
            }
            Ok(MaxActions::Percent(v))
        } else {
            s.parse::<u64>().map(MaxActions::Absolute).map_err(|_| {
                format!(
                    "max_actions {s:?}: expected a number of actions or a percentage like \"10%\""
                )
            })
        }
    }
}

impl Limits {
    pub fn with(mut self, m: MaxActions) -> Self {
        match m {
            MaxActions::Absolute(n) => self.max_actions = Some(n),
            MaxActions::Percent(p) => self.max_actions_percent = Some(p),
        }
        self
    }

    /// The largest number of actions allowed when the selectors matched `matched` resources.
    pub fn allowed(&self, matched: usize) -> Option<u64> {
        let abs = self.max_actions;
        // floor: 10% of 15 resources allows 1 action, not 2.
        let pct = self
            .max_actions_percent
            .map(|p| ((p / 100.0) * matched as f64 + 1e-9).floor() as u64);
        match (abs, pct) {
            (Some(a), Some(p)) => Some(a.min(p)),
            (a, p) => a.or(p),
        }
    }

    /// Checks a plan of `planned` actions over `matched` resources. Call before acting.
    pub fn check(&self, planned: usize, matched: usize) -> Result<(), LimitExceeded> {
        match self.allowed(matched) {
            Some(allowed) if planned as u64 > allowed => Err(LimitExceeded {
                planned,
                matched,
                allowed,
                limits: *self,
            }),
            _ => Ok(()),
        }
    }
}

/// The plan exceeds `max_actions`: nothing was done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct LimitExceeded {
    pub planned: usize,
    pub matched: usize,
    pub allowed: u64,
    pub limits: Limits,
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut which = Vec::new();
        if let Some(a) = self.limits.max_actions {
            which.push(format!("max_actions = {a}"));
        }
        if let Some(p) = self.limits.max_actions_percent {
            which.push(format!("max_actions = {p}% of {} matched", self.matched));
        }
        write!(
            f,
            "refusing to act: the plan has {} actions but at most {} are allowed ({}); \
             nothing was done. Check the selectors, or raise the limit if this is intended",
            self.planned,
            self.allowed,
            which.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_and_percent() {
        assert_eq!("25".parse::<MaxActions>(), Ok(MaxActions::Absolute(25)));
        assert_eq!("10%".parse::<MaxActions>(), Ok(MaxActions::Percent(10.0)));
        assert_eq!(" 2.5 %".parse::<MaxActions>(), Ok(MaxActions::Percent(2.5)));
        assert!("150%"
            .parse::<MaxActions>()
            .unwrap_err()
            .contains("between 0% and 100%"));
        assert!("-1"
            .parse::<MaxActions>()
            .unwrap_err()
            .contains("max_actions \"-1\""));
        assert!("lots".parse::<MaxActions>().is_err());
    }

    #[test]
    fn no_limit_allows_anything() {
        assert_eq!(Limits::default().check(10_000, 10_000), Ok(()));
    }

    #[test]
    fn absolute_limit() {
        let l = Limits::default().with(MaxActions::Absolute(3));
        assert!(l.check(3, 100).is_ok());
        let e = l.check(4, 100).unwrap_err();
        assert_eq!(e.allowed, 3);
        let msg = e.to_string();
        assert!(
            msg.contains("4 actions") && msg.contains("max_actions = 3"),
            "{msg}"
        );
        assert!(msg.contains("nothing was done"), "{msg}");
    }

    #[test]
    fn percent_limit_of_matched_floors() {
        let l = Limits::default().with(MaxActions::Percent(10.0));
        assert_eq!(l.allowed(15), Some(1));
        assert!(l.check(1, 15).is_ok());
        assert!(l.check(2, 15).is_err());
        assert_eq!(l.allowed(100), Some(10));
        // 30% of 10 must allow 3 despite floating point.
        assert_eq!(
            Limits::default()
                .with(MaxActions::Percent(30.0))
                .allowed(10),
            Some(3)
        );
        // Nothing matched, nothing planned: fine.
        assert!(l.check(0, 0).is_ok());
        let msg = l.check(5, 20).unwrap_err().to_string();
        assert!(msg.contains("10% of 20 matched"), "{msg}");
    }

    #[test]
    fn both_limits_the_stricter_wins() {
        let l = Limits::default()
            .with(MaxActions::Absolute(5))
            .with(MaxActions::Percent(50.0));
        assert_eq!(l.allowed(4), Some(2));
        assert_eq!(l.allowed(100), Some(5));
        assert!(l.check(3, 4).is_err());
        assert!(l.check(6, 100).is_err());
        assert!(l.check(5, 100).is_ok());
    }
}
