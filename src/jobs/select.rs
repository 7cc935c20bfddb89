//! Selectors: which projects, branches and endpoints a policy applies to, and *why*.
//!
//! Every positive decision carries a [`Why`] (the rule of the policy that matched and a
//! human reason such as `age 9d > ttl 7d`), because the audit ledger must say why each
//! action was taken. Exclusions also carry a reason so that `plan` can explain why a
//! resource a user expected to see was left alone.
//!
//! The selectors work on small *fact* structs rather than the client's domain types so that
//! the matching logic can be tested without a client and so the job code decides once how a
//! fact (e.g. a branch's last activity) is derived.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Why a resource was selected (or excluded): the policy rule and a human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    /// The rule of the policy, e.g. `ttl`, `idle_ttl`, `name`, `ids`, `exclude_names`.
    pub rule: String,
    /// Human readable, e.g. `age 9d > ttl 7d`.
    pub reason: String,
}

impl Why {
    pub fn new(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Why {
            rule: rule.into(),
            reason: reason.into(),
        }
    }
}

/// The outcome of applying a selector to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The resource is selected; the job acts on it.
    Selected(Why),
    /// The resource would match but an exclusion rule removes it.
    Excluded(Why),
    /// The resource does not match the selector at all.
    NotSelected,
}

impl Selection {
    pub fn is_selected(&self) -> bool {
        matches!(self, Selection::Selected(_))
    }
    pub fn why(&self) -> Option<&Why> {
        match self {
            Selection::Selected(w) | Selection::Excluded(w) => Some(w),
            Selection::NotSelected => None,
        }
    }
}

pub use crate::config::pattern::{NamePattern, SelectorError};

fn first_match<'p>(patterns: &'p [NamePattern], name: &str) -> Option<&'p NamePattern> {
    patterns.iter().find(|p| p.is_match(name))
}

/// Formats a duration compactly for reasons: `9d`, `9d 3h`, `36m`, `45s`.
///
/// Two units at most: a reason is read by a human deciding whether the rule was right, and
/// `9d 3h` says that better than `9d 3h 12m 5s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(i) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "0s".to_string();
    };
    let (size, suffix) = UNITS[i];
    let mut out = format!("{}{}", secs / size, suffix);
    // Only the adjacent smaller unit: `2d 0h 2m` reads as `2d`.
    if let Some((next, next_suffix)) = UNITS.get(i + 1) {
        let r = (secs % size) / next;
        if r > 0 {
            out.push_str(&format!(" {r}{next_suffix}"));
        }
    }
    out
}

/// The age of something created at `then`, as seen at `now` (zero if `then` is in the future,
/// e.g. because of clock skew between us and Neon).
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or(Duration::ZERO)
}

// ---------------------------------------------------------------------------------------
// Projects
// ---------------------------------------------------------------------------------------

/// The facts about a project that project selectors look at.
#[derive(Debug, Clone, Copy)]
pub struct ProjectFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub org_id: Option<&'a str>,
}

/// Selects projects. Every criterion given must hold (they narrow each other); an empty
/// selector selects every project the API key can see.
#[derive(Debug, Clone, Default)]
pub struct ProjectSelector {
    /// Only these project ids (empty: any).
    pub ids: Vec<String>,
    /// Only projects of this organisation.
    pub org_id: Option<String>,
    /// Only projects whose name matches one of these (empty: any).
    pub names: Vec<NamePattern>,
    /// Additionally, the name must match this (when set).
    pub name_regex: Option<NamePattern>,
    pub exclude_ids: Vec<String>,
    pub exclude_names: Vec<NamePattern>,
}

impl ProjectSelector {
    pub fn select(&self, p: &ProjectFacts<'_>) -> Selection {
        let mut reasons = Vec::new();
        let mut rule = "all";
        if !self.ids.is_empty() {
            if !self.ids.iter().any(|id| id == p.id) {
                return Selection::NotSelected;
            }
            rule = "ids";
            reasons.push(format!("project {} is listed in ids", p.id));
        }
        if let Some(org) = &self.org_id {
            if p.org_id != Some(org.as_str()) {
                return Selection::NotSelected;
            }
            if rule == "all" {
                rule = "org_id";
            }
            reasons.push(format!("org {org}"));
        }
        if !self.names.is_empty() {
            let Some(pat) = first_match(&self.names, p.name) else {
                return Selection::NotSelected;
            };
            if rule == "all" {
                rule = "name";
            }
            reasons.push(format!("name {:?} matches {}", p.name, pat.describe()));
        }
        if let Some(re) = &self.name_regex {
            if !re.is_match(p.name) {
                return Selection::NotSelected;
            }
            if rule == "all" {
                rule = "name_regex";
            }
            reasons.push(format!("name {:?} matches {}", p.name, re.describe()));
        }
        if self.exclude_ids.iter().any(|id| id == p.id) {
            return Selection::Excluded(Why::new(
                "exclude_ids",
                format!("project {} is listed in exclude_ids", p.id),
            ));
        }
        if let Some(pat) = first_match(&self.exclude_names, p.name) {
            return Selection::Excluded(Why::new(
                "exclude_names",
                format!("name {:?} matches exclusion {}", p.name, pat.describe()),
            ));
        }
        if reasons.is_empty() {
            reasons.push("no project filter: every project".to_string());
        }
        Selection::Selected(Why::new(rule, reasons.join(", ")))
    }
}

// ---------------------------------------------------------------------------------------
// Branches
// ---------------------------------------------------------------------------------------

/// The facts about a branch that branch selectors look at.
#[derive(Debug, Clone, Copy)]
pub struct BranchFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub default: bool,
    pub protected: bool,
    pub created_at: DateTime<Utc>,
    /// When the branch last saw activity: see [`last_activity`].
    pub last_activity: DateTime<Utc>,
}

/// What the facts of one compute say about its branch's activity.
#[derive(Debug, Clone, Copy)]
pub struct ComputeActivity {
    /// The compute is running right now (so the branch is in use).
    pub active: bool,
    pub last_active: Option<DateTime<Utc>>,
}

/// The last activity of a branch: the newest `last_active` of its computes; `now` if one
/// of them is running; the branch's `updated_at` if no compute reports anything (a branch
/// without computes is only "active" when it is changed).
pub fn last_activity(
    now: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    computes: impl IntoIterator<Item = ComputeActivity>,
) -> DateTime<Utc> {
    let mut newest: Option<DateTime<Utc>> = None;
    for c in computes {
        let t = if c.active { Some(now) } else { c.last_active };
        newest = match (newest, t) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    match newest {
        Some(t) => t.max(updated_at),
        None => updated_at,
    }
}

/// Whether the default branch may be selected at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefaultBranch {
    /// Default and non-default branches alike (if the names match).
    #[default]
    Any,
    /// Only each project's default branch (e.g. snapshot the main branch of every project).
    Only,
    /// Never the default branch.
    Exclude,
}

/// Selects branches by name and, optionally, by age or inactivity.
///
/// Names: a branch must match one of `names` (empty: any) and none of `exclude_names`.
/// Age: when `ttl` and/or `idle_ttl` are set, a branch is selected when it is older than
/// `ttl` **or** inactive longer than `idle_ttl` (the expire job's semantics: either is a
/// reason to go). With neither set, names alone decide.
#[derive(Debug, Clone, Default)]
pub struct BranchSelector {
    pub names: Vec<NamePattern>,
    pub exclude_names: Vec<NamePattern>,
    pub exclude_ids: Vec<String>,
    pub default_branch: DefaultBranch,
    pub ttl: Option<Duration>,
    pub idle_ttl: Option<Duration>,
}

impl BranchSelector {
    pub fn select(&self, now: DateTime<Utc>, b: &BranchFacts<'_>) -> Selection {
        let name_reason = if self.names.is_empty() {
            None
        } else {
            match first_match(&self.names, b.name) {
                Some(p) => Some(format!("name {:?} matches {}", b.name, p.describe())),
                None => return Selection::NotSelected,
            }
        };
        match self.default_branch {
            DefaultBranch::Any => {}
            DefaultBranch::Only if !b.default => return Selection::NotSelected,
            DefaultBranch::Exclude if b.default => {
                return Selection::Excluded(Why::new(
                    "default",
                    format!("{:?} is the default branch", b.name),
                ))
            }
            _ => {}
        }
        if self.exclude_ids.iter().any(|id| id == b.id) {
            return Selection::Excluded(Why::new(
                "exclude_ids",
                format!("branch {} is listed in exclude_ids", b.id),
            ));
        }
        if let Some(p) = first_match(&self.exclude_names, b.name) {
            return Selection::Excluded(Why::new(
                "exclude_names",
                format!("name {:?} matches exclusion {}", b.name, p.describe()),
            ));
        }

        if self.ttl.is_none() && self.idle_ttl.is_none() {
            return Selection::Selected(match (name_reason, self.default_branch) {
                (_, DefaultBranch::Only) => {
                    Why::new("default", format!("{:?} is the default branch", b.name))
                }
                (Some(r), _) => Why::new("names", r),
                (None, _) => Why::new("all", "no branch filter: every branch"),
            });
        }
        let with_name = |s: String| match &name_reason {
            Some(r) => format!("{s} ({r})"),
            None => s,
        };
        if let Some(ttl) = self.ttl {
            let a = age(now, b.created_at);
            if a > ttl {
                return Selection::Selected(Why::new(
                    "ttl",
                    with_name(format!(
                        "age {} > ttl {}",
                        human_duration(a),
                        human_duration(ttl)
                    )),
                ));
            }
        }
        if let Some(idle_ttl) = self.idle_ttl {
            let idle = age(now, b.last_activity);
            if idle > idle_ttl {
                return Selection::Selected(Why::new(
                    "idle_ttl",
                    with_name(format!(
                        "idle {} > idle_ttl {}",
                        human_duration(idle),
                        human_duration(idle_ttl)
                    )),
                ));
            }
        }
        Selection::NotSelected
    }
}

// ---------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------

/// Compute endpoint type: the policy's own type, shared with the selectors.
pub use crate::config::EndpointType as EndpointKind;

#[derive(Debug, Clone, Copy)]
pub struct EndpointFacts<'a> {
    pub id: &'a str,
    pub kind: EndpointKind,
    pub branch_id: &'a str,
    pub branch_name: &'a str,
}

/// Selects compute endpoints by type and by the branch they serve.
#[derive(Debug, Clone, Default)]
pub struct EndpointSelector {
    /// Only these types (empty: both).
    pub kinds: Vec<EndpointKind>,
    /// Only endpoints of branches whose name matches one of these (empty: any).
    pub branch_names: Vec<NamePattern>,
    /// Only endpoints of these branch ids (empty: any).
    pub branch_ids: Vec<String>,
    pub exclude_ids: Vec<String>,
    pub exclude_branch_names: Vec<NamePattern>,
}

impl EndpointSelector {
    pub fn select(&self, e: &EndpointFacts<'_>) -> Selection {
        let mut reasons = Vec::new();
        let mut rule = "all";
        if !self.kinds.is_empty() {
            if !self.kinds.contains(&e.kind) {
                return Selection::NotSelected;
            }
            rule = "types";
            reasons.push(format!("type {}", e.kind.as_str()));
        }
        if !self.branch_ids.is_empty() {
            if !self.branch_ids.iter().any(|b| b == e.branch_id) {
                return Selection::NotSelected;
            }
            rule = "branch_ids";
            reasons.push(format!("branch {} is listed", e.branch_id));
        }
        if !self.branch_names.is_empty() {
            let Some(p) = first_match(&self.branch_names, e.branch_name) else {
                return Selection::NotSelected;
            };
            rule = "branch_names";
            reasons.push(format!(
                "branch {:?} matches {}",
                e.branch_name,
                p.describe()
            ));
        }
        if self.exclude_ids.iter().any(|id| id == e.id) {
            return Selection::Excluded(Why::new(
                "exclude_ids",
                format!("endpoint {} is listed in exclude_ids", e.id),
            ));
        }
        if let Some(p) = first_match(&self.exclude_branch_names, e.branch_name) {
            return Selection::Excluded(Why::new(
                "exclude_branches",
                format!(
                    "branch {:?} matches exclusion {}",
                    e.branch_name,
                    p.describe()
                ),
            ));
        }
        if reasons.is_empty() {
            reasons.push("no endpoint filter: every endpoint".to_string());
        }
        Selection::Selected(Why::new(rule, reasons.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }
    const DAY: Duration = Duration::from_secs(86_400);

    fn branch<'a>(name: &'a str, created: DateTime<Utc>, active: DateTime<Utc>) -> BranchFacts<'a> {
        BranchFacts {
            id: "br-1",
            name,
            default: false,
            protected: false,
            created_at: created,
            last_activity: active,
        }
    }

    #[test]
    fn human_duration_reads_well() {
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(36 * 60)), "36m");
        assert_eq!(human_duration(7 * DAY), "7d");
        assert_eq!(
            human_duration(9 * DAY + Duration::from_secs(3 * 3600 + 65)),
            "9d 3h"
        );
        // A zero middle unit stops there rather than skipping to a smaller one.
        assert_eq!(human_duration(2 * DAY + Duration::from_secs(120)), "2d");
        assert_eq!(human_duration(Duration::from_secs(3600 + 59)), "1h");
    }

    #[test]
    fn globs_cross_slashes_and_regexes_search() {
        let g = NamePattern::glob("names", "preview/*").unwrap();
        assert!(g.is_match("preview/feature/x"));
        assert!(g.is_match("preview/a"));
        assert!(!g.is_match("main"));
        assert!(!g.is_match("xpreview/a"));
        let pr = NamePattern::glob("names", "pr-*").unwrap();
        assert!(pr.is_match("pr-12"));
        assert!(!pr.is_match("pre-12"));
        let r = NamePattern::regex("name_regex", r"^pr-\d+$").unwrap();
        assert!(r.is_match("pr-12"));
        assert!(!r.is_match("pr-12a"));
        assert_eq!(r.describe(), r#"regex "^pr-\\d+$""#);
    }

    #[test]
    fn bad_patterns_are_named_errors() {
        let e = NamePattern::glob("branches.names", "pr-[").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("branches.names") && msg.contains("pr-["),
            "{msg}"
        );
        let e = NamePattern::regex("projects.name_regex", "(").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("projects.name_regex") && msg.contains("\"(\""),
            "{msg}"
        );
    }

    #[test]
    fn project_selector_narrows_and_excludes() {
        let p = |id, name, org| ProjectFacts {
            id,
            name,
            org_id: org,
        };
        let all = ProjectSelector::default();
        assert!(all.select(&p("a", "x", None)).is_selected());

        let s = ProjectSelector {
            org_id: Some("org-1".into()),
            names: vec![NamePattern::glob("n", "shop-*").unwrap()],
            exclude_names: vec![NamePattern::regex("x", "legacy").unwrap()],
            exclude_ids: vec!["p-skip".into()],
            ..Default::default()
        };
        match s.select(&p("p1", "shop-eu", Some("org-1"))) {
            Selection::Selected(w) => {
                assert_eq!(w.rule, "org_id");
                assert!(w.reason.contains("org org-1"), "{}", w.reason);
                assert!(w.reason.contains(r#"glob "shop-*""#), "{}", w.reason);
            }
            other => panic!("expected selected, got {other:?}"),
        }
        assert_eq!(
            s.select(&p("p1", "shop-eu", Some("org-2"))),
            Selection::NotSelected
        );
        assert_eq!(s.select(&p("p1", "shop-eu", None)), Selection::NotSelected);
        assert_eq!(
            s.select(&p("p1", "blog", Some("org-1"))),
            Selection::NotSelected
        );
        let ex = s.select(&p("p1", "shop-legacy", Some("org-1")));
        assert_eq!(ex.why().unwrap().rule, "exclude_names");
        assert!(!ex.is_selected());
        let ex = s.select(&p("p-skip", "shop-us", Some("org-1")));
        assert_eq!(ex.why().unwrap().rule, "exclude_ids");

        let re = ProjectSelector {
            name_regex: Some(NamePattern::regex("name_regex", "^shop-(eu|us)$").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            re.select(&p("a", "shop-eu", None)).why().unwrap().rule,
            "name_regex"
        );
        assert_eq!(
            re.select(&p("a", "shop-asia", None)),
            Selection::NotSelected
        );

        let ids = ProjectSelector {
            ids: vec!["p1".into(), "p2".into()],
            ..Default::default()
        };
        assert_eq!(ids.select(&p("p2", "y", None)).why().unwrap().rule, "ids");
        assert_eq!(ids.select(&p("p3", "y", None)), Selection::NotSelected);
    }

    #[test]
    fn branch_ttl_reason_says_age_and_ttl() {
        let now = t(2026, 3, 10, 12);
        let s = BranchSelector {
            names: NamePattern::globs("names", &["preview/*".into(), "pr-*".into()]).unwrap(),
            ttl: Some(7 * DAY),
            ..Default::default()
        };
        let old = branch("preview/login", t(2026, 3, 1, 12), now);
        match s.select(now, &old) {
            Selection::Selected(w) => {
                assert_eq!(w.rule, "ttl");
                assert!(w.reason.starts_with("age 9d > ttl 7d"), "{}", w.reason);
                assert!(w.reason.contains("preview/*"), "{}", w.reason);
            }
            other => panic!("{other:?}"),
        }
        // Exactly at the ttl is not older than it.
        let young = branch("pr-3", t(2026, 3, 3, 12), now);
        assert_eq!(s.select(now, &young), Selection::NotSelected);
        // Names not matching are never selected however old.
        let main = branch("main", t(2020, 1, 1, 0), now);
        assert_eq!(s.select(now, &main), Selection::NotSelected);
    }

    #[test]
    fn branch_idle_ttl_uses_last_activity_and_either_rule_suffices() {
        let now = t(2026, 3, 10, 12);
        let s = BranchSelector {
            ttl: Some(30 * DAY),
            idle_ttl: Some(2 * DAY),
            ..Default::default()
        };
        let idle = branch("dev", t(2026, 3, 5, 0), t(2026, 3, 7, 0));
        let w = s.select(now, &idle);
        assert_eq!(w.why().unwrap().rule, "idle_ttl");
        assert!(w
            .why()
            .unwrap()
            .reason
            .starts_with("idle 3d 12h > idle_ttl 2d"));
        let busy = branch("dev", t(2026, 3, 5, 0), t(2026, 3, 10, 0));
        assert_eq!(s.select(now, &busy), Selection::NotSelected);
        let ancient_but_busy = branch("dev", t(2025, 1, 1, 0), t(2026, 3, 10, 0));
        assert_eq!(s.select(now, &ancient_but_busy).why().unwrap().rule, "ttl");
    }

    #[test]
    fn branch_exclusions_and_default_handling() {
        let now = t(2026, 3, 10, 12);
        let s = BranchSelector {
            exclude_names: NamePattern::globs("x", &["preview/keep-*".into()]).unwrap(),
            exclude_ids: vec!["br-pinned".into()],
            default_branch: DefaultBranch::Exclude,
            ttl: Some(DAY),
            ..Default::default()
        };
        let b = branch("preview/keep-me", t(2026, 1, 1, 0), now);
        assert_eq!(s.select(now, &b).why().unwrap().rule, "exclude_names");
        let mut b = branch("x", t(2026, 1, 1, 0), now);
        b.id = "br-pinned";
        assert_eq!(s.select(now, &b).why().unwrap().rule, "exclude_ids");
        let mut b = branch("main", t(2026, 1, 1, 0), now);
        b.default = true;
        assert!(matches!(s.select(now, &b), Selection::Excluded(_)));

        let only = BranchSelector {
            default_branch: DefaultBranch::Only,
            ..Default::default()
        };
        assert_eq!(only.select(now, &b).why().unwrap().rule, "default");
        b.default = false;
        assert_eq!(only.select(now, &b), Selection::NotSelected);
    }

    #[test]
    fn last_activity_prefers_computes_then_updated_at() {
        let now = t(2026, 3, 10, 12);
        let upd = t(2026, 3, 1, 0);
        assert_eq!(last_activity(now, upd, []), upd);
        let idle = ComputeActivity {
            active: false,
            last_active: Some(t(2026, 3, 8, 0)),
        };
        let never = ComputeActivity {
            active: false,
            last_active: None,
        };
        assert_eq!(last_activity(now, upd, [never, idle]), t(2026, 3, 8, 0));
        assert_eq!(last_activity(now, upd, [never]), upd);
        let running = ComputeActivity {
            active: true,
            last_active: None,
        };
        assert_eq!(last_activity(now, upd, [idle, running]), now);
        // A branch changed after its computes last ran counts the change.
        assert_eq!(
            last_activity(now, t(2026, 3, 9, 0), [idle]),
            t(2026, 3, 9, 0)
        );
    }

    #[test]
    fn endpoint_selector_by_type_and_branch() {
        let e = |id, kind, bname| EndpointFacts {
            id,
            kind,
            branch_id: "br-1",
            branch_name: bname,
        };
        let s = EndpointSelector {
            kinds: vec![EndpointKind::ReadOnly],
            branch_names: NamePattern::globs("b", &["preview/*".into()]).unwrap(),
            exclude_ids: vec!["ep-keep".into()],
            ..Default::default()
        };
        let sel = s.select(&e("ep-1", EndpointKind::ReadOnly, "preview/a"));
        let w = sel.why().unwrap();
        assert!(sel.is_selected());
        assert!(w.reason.contains("type read_only"), "{}", w.reason);
        assert!(w.reason.contains("preview/*"), "{}", w.reason);
        assert_eq!(
            s.select(&e("ep-1", EndpointKind::ReadWrite, "preview/a")),
            Selection::NotSelected
        );
        assert_eq!(
            s.select(&e("ep-1", EndpointKind::ReadOnly, "main")),
            Selection::NotSelected
        );
        assert_eq!(
            s.select(&e("ep-keep", EndpointKind::ReadOnly, "preview/a"))
                .why()
                .unwrap()
                .rule,
            "exclude_ids"
        );
        let by_id = EndpointSelector {
            branch_ids: vec!["br-2".into()],
            exclude_branch_names: NamePattern::globs("x", &["main".into()]).unwrap(),
            ..Default::default()
        };
        assert_eq!(
            by_id.select(&e("ep-1", EndpointKind::ReadWrite, "main")),
            Selection::NotSelected
        );
        let mut f = e("ep-1", EndpointKind::ReadWrite, "main");
        f.branch_id = "br-2";
        assert_eq!(by_id.select(&f).why().unwrap().rule, "exclude_branches");
    }
}
