//! The ledger's vocabulary: what an action does ([`Action`]) and to what kind of resource
//! ([`ResourceKind`]), as closed enums the kinds, the engine and reconciliation share.
//!
//! The store, the HTTP API, metrics, saved plans and notifications hold these as their
//! snake_case names (`delete_branch`, `branch`), which are part of the daemon's interface:
//! [`Action::as_str`] and [`ResourceKind::as_str`] are the one place they are spelt, serde
//! reads and writes the same names, and a name read back (from the store, a plan file) is
//! parsed with [`std::str::FromStr`], whose error says which name was not known, so that a
//! row written by another build is handled rather than panicked on.
//!
//! This module imports nothing of the crate, so that every other part of `jobs` can use it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name read back that this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} (this build knows: {known})")]
pub struct UnknownName {
    /// `ledger action` or `resource kind`.
    pub what: &'static str,
    pub name: String,
    known: String,
}

/// Declares a closed vocabulary: the enum, its names (one each, the stored form), `ALL`,
/// `as_str`, `Display`, `FromStr` and serde as those names. One list, so a variant cannot
/// exist without its name, nor a name without its parse.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            const NAMES: &'static [&'static str] = &[$($text,)+];

            /// The stored name (ledger rows, metric labels, JSON, saved plans).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, so that widths in format strings (`{:<18}`) apply as to a `&str`.
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownName {
                        what: $what,
                        name: s.to_string(),
                        known: Self::NAMES.join(", "),
                    }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                s.parse()
                    .map_err(|_| serde::de::Error::unknown_variant(&s, Self::NAMES))
            }
        }
    };
}

vocabulary! {
    /// What a ledger row says was (to be) done. Each job kind declares the ones it answers
    /// for (`JobKind::LEDGER_ACTIONS`); reconciliation matches on this enum to find the kind that
    /// checks a pending one with Neon.
    pub enum Action ("ledger action") {
        // expire_branches
        DeleteBranch = "delete_branch",
        SetBranchExpiry = "set_branch_expiry",
        ClearBranchExpiry = "clear_branch_expiry",
        // snapshot_branches
        CreateSnapshot = "create_snapshot",
        DeleteSnapshot = "delete_snapshot",
        // snapshot_branches, mode = "backup_schedule"
        SetBackupSchedule = "set_backup_schedule",
        TakeBackBackupSchedule = "take_back_backup_schedule",
        // suspend_computes
        SuspendEndpoint = "suspend_endpoint",
        StartEndpoint = "start_endpoint",
        // enforce_budget
        BudgetNotify = "budget_notify",
        BudgetSuspendCompute = "budget_suspend_compute",
        BudgetLowerMaxCu = "budget_lower_max_cu",
        BudgetShortenSuspendTimeout = "budget_shorten_suspend_timeout",
        BudgetRestoreCompute = "budget_restore_compute",
        BudgetRestoreMaxCu = "budget_restore_max_cu",
        BudgetRestoreSuspendTimeout = "budget_restore_suspend_timeout",
        // Reads: they change nothing at Neon.
        /// `collect_consumption`'s reading of a project's consumption.
        CollectConsumption = "collect_consumption",
        /// Listing a project's resources to plan it (recorded when it fails).
        Plan = "plan",
        /// A dropped notice mark whose action this build does not know (recorded skipped).
        Notice = "notice",
    }
}

vocabulary! {
    /// What a ledger row's `resource_id` names.
    pub enum ResourceKind ("resource kind") {
        Branch = "branch",
        Endpoint = "endpoint",
        Snapshot = "snapshot",
        Project = "project",
        /// A budget of `enforce_budget` (a project id or `all`), for its notices.
        Budget = "budget",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_itself_and_is_distinct() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
            assert_eq!(a.to_string(), a.as_str());
            // Widths apply as they do to the name (the CLI's tables use them).
            assert_eq!(format!("{a:>40}"), format!("{:>40}", a.as_str()));
            assert!(seen.insert(a.as_str()), "{a} twice");
        }
        for k in ResourceKind::ALL {
            assert_eq!(k.as_str().parse::<ResourceKind>(), Ok(*k));
            assert!(seen.insert(k.as_str()), "{k} twice");
        }
    }

    #[test]
    fn the_stored_names_are_the_ones_existing_rows_hold() {
        // Rows, metrics and saved plans already hold these names: they must not change.
        assert_eq!(Action::DeleteBranch.as_str(), "delete_branch");
        assert_eq!(
            Action::TakeBackBackupSchedule.as_str(),
            "take_back_backup_schedule"
        );
        assert_eq!(
            Action::BudgetShortenSuspendTimeout.as_str(),
            "budget_shorten_suspend_timeout"
        );
        assert_eq!(Action::CollectConsumption.as_str(), "collect_consumption");
        assert_eq!(ResourceKind::Budget.as_str(), "budget");
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let e = "drop_database".parse::<Action>().unwrap_err();
        assert_eq!(e.name, "drop_database");
        let text = e.to_string();
        assert!(
            text.starts_with("unknown ledger action \"drop_database\"")
                && text.contains("delete_branch"),
            "{text}"
        );
        let e = "Branch".parse::<ResourceKind>().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown resource kind \"Branch\""),
            "{e}"
        );
    }

    #[test]
    fn serde_uses_the_stored_names() {
        assert_eq!(
            serde_json::to_string(&Action::SetBranchExpiry).unwrap(),
            "\"set_branch_expiry\""
        );
        assert_eq!(
            serde_json::from_str::<ResourceKind>("\"endpoint\"").unwrap(),
            ResourceKind::Endpoint
        );
        let e = serde_json::from_str::<Action>("\"explode\"").unwrap_err();
        assert!(
            e.to_string().contains("unknown variant `explode`")
                && e.to_string().contains("`delete_branch`"),
            "{e}"
        );
    }
}
