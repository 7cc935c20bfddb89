use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::*;
use crate::jobs::ledger::{Action, ResourceKind};
use crate::jobs::saved::Facts;

const POLICY: &str = r#"
[[jobs]]
name = "expire-previews"
kind = "expire_branches"
every = "1h"
ttl = "7d"

[[jobs]]
name = "suspend-dev"
kind = "suspend_computes"
every = "15m"
idle_for = "30m"
"#;

fn cfg(text: &str) -> Config {
    crate::config::parse_with_env(Path::new("policy.toml"), text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"))
}

fn facts(pairs: &[(&str, &str)]) -> Facts {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn action(
    project: &str,
    action: &str,
    id: &str,
    name: &str,
    destructive: bool,
    reason: &str,
) -> SavedAction {
    SavedAction {
        project_id: project.into(),
        action: action.parse().expect("a known ledger action"),
        resource_kind: if action.contains("endpoint") {
            ResourceKind::Endpoint
        } else {
            ResourceKind::Branch
        },
        resource_id: id.into(),
        resource_name: Some(name.into()),
        rule: Some(if destructive { "ttl" } else { "idle_for" }.into()),
        reason: reason.into(),
        destructive,
        facts: facts(&[("name", name), ("updated_at", "2026-11-20T10:00:00.000Z")]),
    }
}

/// A plan with two jobs over two projects, built by hand (the golden file's input).
fn sample(cfg: &Config) -> PlanDocument {
    PlanDocument {
        format_version: FORMAT_VERSION,
        id: "5b3f0c1e-0000-4000-8000-000000000001".into(),
        created_at: Utc.with_ymd_and_hms(2026, 12, 3, 9, 30, 0).unwrap(),
        policy_hash: cfg.policy_hash.clone(),
        policy: "policy.toml".into(),
        jobs: vec![
            PlannedJob {
                job: "expire-previews".into(),
                kind: "expire_branches".into(),
                run_id: 41,
                status: RunStatus::Succeeded,
                error: None,
                dry_run: false,
                actions: vec![
                    action(
                        "p-alpha",
                        "delete_branch",
                        "br-a1",
                        "preview/login|fix",
                        true,
                        "age 9d > ttl 7d",
                    ),
                    action(
                        "p-alpha",
                        "delete_branch",
                        "br-a2",
                        "preview/*old*",
                        true,
                        "age 12d > ttl 7d",
                    ),
                    action(
                        "p-beta",
                        "delete_branch",
                        "br-b1",
                        "preview/x",
                        true,
                        "age 8d > ttl 7d",
                    ),
                ],
                skips: vec![SavedSkip {
                    project_id: "p-alpha".into(),
                    action: Action::DeleteBranch,
                    resource_kind: ResourceKind::Branch,
                    resource_id: "br-a3".into(),
                    resource_name: Some("preview/base".into()),
                    rule: Some("ttl".into()),
                    reason: "age 10d > ttl 7d; not deleted: it has children".into(),
                }],
            },
            PlannedJob {
                job: "suspend-dev".into(),
                kind: "suspend_computes".into(),
                run_id: 42,
                status: RunStatus::Failed,
                error: Some("max_actions 1 exceeded: the plan has 2 actions".into()),
                dry_run: false,
                actions: vec![
                    action(
                        "p-beta",
                        "start_endpoint",
                        "ep-2",
                        "dev",
                        false,
                        "the window ended",
                    ),
                    action(
                        "p-beta",
                        "suspend_endpoint",
                        "ep-1",
                        "main",
                        true,
                        "idle 45m > idle_for 30m",
                    ),
                ],
                skips: vec![],
            },
        ],
    }
}

#[test]
fn markdown_matches_the_golden_file() {
    let cfg = cfg(POLICY);
    insta::assert_snapshot!("plan_markdown", markdown::render(&sample(&cfg)));
}

#[test]
fn a_plan_round_trips_and_other_versions_are_refused() {
    let cfg = cfg(POLICY);
    let plan = sample(&cfg);
    let text = plan.to_json();
    assert_eq!(PlanDocument::parse("plan.json", text.as_bytes()), Ok(plan));

    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["format_version"] = 2.into();
    let e = PlanDocument::parse("plan.json", v.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "plan.json: plan format_version 2 is not supported (this build reads version 1); \
         make the plan again with this build"
    );
    v["format_version"] = 1.into();
    v["extra"] = true.into();
    let e = PlanDocument::parse("plan.json", v.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(&e, Refusal::Malformed { error, .. } if error.contains("unknown field `extra`")),
        "{e}"
    );
    let e = PlanDocument::parse("plan.json", b"{\"jobs\": []}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "plan.json: not a plan file: no `format_version`"
    );
}

#[test]
fn a_plan_naming_an_action_or_resource_kind_this_build_does_not_know_is_refused() {
    let cfg = cfg(POLICY);
    let text = sample(&cfg).to_json();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut bad = v.clone();
    bad["jobs"][0]["actions"][0]["action"] = "drop_database".into();
    let e = PlanDocument::parse("plan.json", bad.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(&e, Refusal::Malformed { path, error } if path == "plan.json"
            && error.contains("unknown variant `drop_database`")
            && error.contains("`delete_branch`")),
        "{e}"
    );
    let mut bad = v;
    bad["jobs"][0]["skips"][0]["resource_kind"] = "database".into();
    let e = PlanDocument::parse("plan.json", bad.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(&e, Refusal::Malformed { error, .. } if error.contains("unknown variant `database`")),
        "{e}"
    );
}

#[test]
fn a_stale_foreign_or_future_plan_is_refused() {
    let cfg = cfg(POLICY);
    let plan = sample(&cfg);
    let made = plan.created_at;
    let hour = Duration::from_secs(3600);
    assert_eq!(
        plan.check(&cfg, made + chrono::Duration::minutes(59), hour),
        Ok(())
    );
    // A few seconds "before" it was made: two machines' clocks.
    assert_eq!(
        plan.check(&cfg, made - chrono::Duration::seconds(30), hour),
        Ok(())
    );

    let e = plan
        .check(&cfg, made + chrono::Duration::minutes(61), hour)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "plan 5b3f0c1e-0000-4000-8000-000000000001 was made at 2026-12-03T09:30:00+00:00, \
         1h 1m ago, longer ago than --max-age 1h: make a new plan and review it"
    );
    let e = plan
        .check(&cfg, made - chrono::Duration::minutes(10), hour)
        .unwrap_err();
    assert!(matches!(e, Refusal::FromTheFuture { .. }), "{e}");

    let other = self::cfg(&POLICY.replace("\"7d\"", "\"6d\""));
    let e = plan.check(&other, made, hour).unwrap_err();
    assert!(matches!(e, Refusal::ForeignPolicy { .. }), "{e}");
    assert!(
        e.to_string().contains("was made from another policy"),
        "{e}"
    );
    // The same policy written differently is the same policy.
    let reformatted = self::cfg(&format!("# reviewed\n{}", POLICY.replace(" = ", "=")));
    assert_eq!(plan.check(&reformatted, made, hour), Ok(()));
}
