//! `max_actions`: the guard that stops a bad selector from wiping an account.
//!
//! Semantics follow Cloud Custodian's `max-resources`: the whole plan is checked *before*
//! anything is done, and if it exceeds the limit the run acts on nothing and fails loudly.
//! Acting on the first N and stopping would leave the account half-changed by a policy that
//! is evidently wrong, which is worse than not acting.
//!
//! The two limits measure different things. `max_actions` bounds every action of a run
//! (creates included). `max_actions_percent` bounds the *destructive* actions (deletes,
//! suspends, native expiry) as a share of the resources they could destroy: deleted
//! snapshots of the snapshots the job owns, deleted or expiring branches of the matched
//! branches, suspended endpoints of the matched endpoints. Counting a snapshot job's creates
//! against its matched branches (as an earlier version did) made any percentage below
//! 100% fail every run that also pruned.

use std::fmt;

/// The configured limits. Both may be set; the run must respect both.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// At most this many actions per run.
    pub max_actions: Option<u64>,
    /// Destructive actions: at most this percentage (0-100) of the resources they could
    /// destroy.
    pub max_actions_percent: Option<f64>,
}

impl Limits {
    /// The limits a job's policy sets.
    pub fn of(job: &crate::config::JobConfig) -> Self {
        Limits {
            max_actions: job.limits.max_actions.map(u64::from),
            max_actions_percent: job.limits.max_actions_percent,
        }
    }

    /// The largest number of destructive actions `max_actions_percent` allows when they
    /// could destroy `base` resources.
    pub fn allowed_destructive(&self, base: usize) -> Option<u64> {
        // floor: 10% of 15 resources allows 1 action, not 2.
        self.max_actions_percent
            .map(|p| ((p / 100.0) * base as f64 + 1e-9).floor() as u64)
    }

    /// Checks a plan of `planned` actions, `destructive` of which could destroy some of
    /// `base` resources. Call before acting.
    pub fn check(
        &self,
        planned: usize,
        destructive: usize,
        base: usize,
    ) -> Result<(), LimitExceeded> {
        if let Some(allowed) = self.max_actions {
            if planned as u64 > allowed {
                return Err(LimitExceeded::Total {
                    planned,
                    allowed,
                    limits: *self,
                });
            }
        }
        if let Some(allowed) = self.allowed_destructive(base) {
            if destructive as u64 > allowed {
                return Err(LimitExceeded::Percent {
                    destructive,
                    base,
                    allowed,
                    limits: *self,
                });
            }
        }
        Ok(())
    }
}

/// The plan exceeds a limit: nothing was done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitExceeded {
    /// More actions than `max_actions`.
    Total {
        planned: usize,
        allowed: u64,
        limits: Limits,
    },
    /// More destructive actions than `max_actions_percent` of `base`.
    Percent {
        destructive: usize,
        base: usize,
        allowed: u64,
        limits: Limits,
    },
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::Total {
                planned, allowed, ..
            } => write!(
                f,
                "refusing to act: the plan has {planned} actions but at most {allowed} are \
                 allowed (max_actions = {allowed}); nothing was done. Check the selectors, or \
                 raise the limit if this is intended"
            ),
            LimitExceeded::Percent {
                destructive,
                base,
                allowed,
                limits,
            } => write!(
                f,
                "refusing to act: the plan has {destructive} destructive actions (deletes, \
                 suspends, expiries) but at most {allowed} are allowed (max_actions_percent = \
                 {}% of the {base} resources they could destroy); nothing was done. Check the \
                 selectors, or raise the limit if this is intended",
                limits.max_actions_percent.unwrap_or_default()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_allows_anything() {
        assert_eq!(Limits::default().check(10_000, 10_000, 10), Ok(()));
    }

    #[test]
    fn absolute_limit_counts_every_action() {
        let l = Limits {
            max_actions: Some(3),
            ..Limits::default()
        };
        assert!(l.check(3, 0, 100).is_ok());
        let e = l.check(4, 0, 100).unwrap_err();
        assert!(matches!(e, LimitExceeded::Total { allowed: 3, .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("4 actions") && msg.contains("max_actions = 3"),
            "{msg}"
        );
        assert!(msg.contains("nothing was done"), "{msg}");
    }

    #[test]
    fn percent_limit_counts_destructive_actions_of_their_base_and_floors() {
        let l = Limits {
            max_actions_percent: Some(10.0),
            ..Limits::default()
        };
        assert_eq!(l.allowed_destructive(15), Some(1));
        assert!(l.check(1, 1, 15).is_ok());
        assert!(l.check(2, 2, 15).is_err());
        // Creates are not destructive: many of them pass a percentage.
        assert!(l.check(50, 1, 15).is_ok());
        assert_eq!(l.allowed_destructive(100), Some(10));
        // 30% of 10 must allow 3 despite floating point.
        assert_eq!(
            Limits {
                max_actions_percent: Some(30.0),
                ..Limits::default()
            }
            .allowed_destructive(10),
            Some(3)
        );
        // Nothing to destroy, nothing destructive planned: fine.
        assert!(l.check(0, 0, 0).is_ok());
        assert!(l.check(3, 0, 0).is_ok());
        let msg = l.check(5, 5, 20).unwrap_err().to_string();
        assert!(
            msg.contains("5 destructive actions") && msg.contains("10% of the 20 resources"),
            "{msg}"
        );
    }

    #[test]
    fn both_limits_apply() {
        let l = Limits {
            max_actions: Some(5),
            max_actions_percent: Some(50.0),
        };
        assert!(l.check(3, 3, 4).is_err(), "3 of 4 > 50%");
        assert!(l.check(6, 0, 100).is_err(), "6 > 5 in all");
        assert!(l.check(5, 5, 100).is_ok());
    }
}
