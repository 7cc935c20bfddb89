//! Saved plans end to end against neon-sim: `plan --out` then `apply` through the library
//! (`saved_plan::Runner`, the code the two commands run): exactly the reviewed actions,
//! each re-checked; a branch changed after the plan is skipped with the reason; a branch
//! that became due after the plan is not touched; the run is recorded as `apply` with the
//! plan's id; a stale or foreign plan is refused before anything runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use neon_sim::SimConfig;
use neon_steward::config::{self, Config};
use neon_steward::jobs::JobEnv;
use neon_steward::saved_plan::{PlanDocument, Refusal, Runner};
use neon_steward::scheduler::Clock;
use neon_steward::store::{ActionOutcome, LeaseTiming, RunStatus, Trigger};
use neon_steward::telemetry::consumption::ConsumptionExporter;
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_sim, TestSim};

const POLICY: &str = r#"
[[jobs]]
name = "expire-previews"
kind = "expire_branches"
every = "1h"
ttl = "7d"
[jobs.branches]
names = ["preview/*"]
"#;

fn policy(text: &str) -> Config {
    config::parse_with_env(Path::new("policy.toml"), text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"))
}

struct SimClock(neon_sim::Clock);

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

async fn runner(sim: &TestSim) -> Runner {
    let store = neon_steward::store::open("sqlite::memory:")
        .await
        .expect("store opens");
    Runner {
        env: JobEnv {
            client: sim.client(),
            store,
            concurrency: 2,
            operation_deadline: Duration::from_secs(20),
            consumption: Arc::new(ConsumptionExporter::detached()),
        },
        clock: Arc::new(SimClock(sim.clock())),
        lease: LeaseTiming {
            heartbeat: Duration::from_secs(10),
            lease: Duration::from_secs(60),
        },
        cancel: CancellationToken::new(),
    }
}

fn aged_branch(sim: &TestSim, project: &str, name: &str, age: TimeDelta) -> String {
    let st = sim.state();
    let mut s = st.settled();
    let parent = s
        .default_branch(project)
        .expect("project has a default branch")
        .id
        .clone();
    let at = s.now() - age;
    s.insert_branch(project, name, Some(&parent), at).id
}

fn branch_names(sim: &TestSim, project: &str) -> Vec<String> {
    let s = sim.state();
    let s = s.settled();
    let mut v: Vec<String> = s
        .project_branches(project)
        .into_iter()
        .map(|b| b.name.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn apply_carries_out_exactly_the_plan_and_skips_a_branch_changed_since() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (p, _) = sim.add_project("app", None);
    let old = TimeDelta::days(10);
    aged_branch(&sim, &p, "preview/a", old);
    let b = aged_branch(&sim, &p, "preview/b", old);
    aged_branch(&sim, &p, "feature/x", old);
    let cfg = policy(POLICY);
    let r = runner(&sim).await;

    let plan = r.make(&cfg, &cfg.jobs).await.expect("plan is made");
    assert_eq!(plan.jobs.len(), 1);
    let job = &plan.jobs[0];
    assert_eq!(job.status, RunStatus::Succeeded, "{:?}", job.error);
    let mut planned: Vec<_> = job
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.resource_name.as_deref().unwrap_or("")))
        .collect();
    planned.sort();
    assert_eq!(
        planned,
        [
            ("delete_branch", "preview/a"),
            ("delete_branch", "preview/b")
        ]
    );
    assert!(job.actions.iter().all(|a| a.destructive));
    let facts = &job
        .actions
        .iter()
        .find(|a| a.resource_id == b)
        .unwrap()
        .facts;
    assert_eq!(facts["name"], "preview/b");
    assert!(facts.contains_key("updated_at"), "{facts:?}");
    // The dry run changed nothing.
    assert!(branch_names(&sim, &p).contains(&"preview/a".to_string()));

    // The file round-trips.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    std::fs::write(&path, plan.to_json()).unwrap();
    let plan = PlanDocument::read(&path).expect("plan reads back");

    // After the review: preview/b is renamed (still selected, still due), and a new branch
    // becomes due that the plan does not have.
    {
        let st = sim.state();
        let mut s = st.settled();
        let now = s.now();
        let br = s.branches.get_mut(&b).expect("branch exists");
        br.name = "preview/b-renamed".into();
        br.updated_at = now;
    }
    aged_branch(&sim, &p, "preview/new", old);
    sim.clock().advance(Duration::from_secs(60));

    let now = sim.clock().now();
    plan.check(&cfg, now, Duration::from_secs(3600))
        .expect("a fresh plan of this policy is accepted");
    let applied = r.apply(&cfg, &plan).await.expect("applies");
    assert_eq!(applied.len(), 1);
    let (run_id, report) = applied[0].run.clone().expect("the run started");
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!((report.counts.succeeded, report.counts.skipped), (1, 1));

    let run = r
        .env
        .store
        .get_run(run_id)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(run.trigger, Trigger::Apply);
    assert_eq!(run.plan_id.as_deref(), Some(plan.id.as_str()));
    assert!(!run.dry_run);

    let actions = r.env.store.actions_for_run(run_id).await.unwrap();
    assert_eq!(actions.len(), 2, "{actions:#?}");
    let deleted = actions
        .iter()
        .find(|a| a.outcome == ActionOutcome::Succeeded)
        .expect("one delete");
    assert_eq!(deleted.resource_name.as_deref(), Some("preview/a"));
    let skipped = actions
        .iter()
        .find(|a| a.outcome == ActionOutcome::Skipped)
        .expect("one skip");
    assert_eq!(skipped.resource_id, b);
    assert!(
        skipped.reason.contains(&format!(
            "not done: the branch changed since plan {}",
            plan.id
        )) && skipped
            .reason
            .contains("name: preview/b -> preview/b-renamed"),
        "{}",
        skipped.reason
    );
    assert!(
        actions
            .iter()
            .all(|a| a.resource_name.as_deref() != Some("preview/new")),
        "never more than the plan"
    );
    assert_eq!(
        branch_names(&sim, &p),
        ["feature/x", "main", "preview/b-renamed", "preview/new"]
    );
}

/// A keep recorded after the review holds at `apply` too: the reviewed delete of a kept
/// branch is skipped with the keep's reason, the rest of the plan is carried out.
#[tokio::test]
async fn apply_skips_a_branch_kept_after_the_plan() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (p, _) = sim.add_project("app", None);
    let old = TimeDelta::days(10);
    aged_branch(&sim, &p, "preview/a", old);
    let kept = aged_branch(&sim, &p, "preview/kept", old);
    let cfg = policy(POLICY);
    let r = runner(&sim).await;
    let plan = r.make(&cfg, &cfg.jobs).await.expect("plan is made");
    assert_eq!(plan.jobs[0].actions.len(), 2, "{:?}", plan.jobs[0].actions);

    r.env
        .store
        .put_keep(&neon_steward::store::Keep {
            project: "app".into(),
            branch: "preview/kept".into(),
            until: None,
            note: Some("still in review".into()),
            created_at: sim.clock().now(),
        })
        .await
        .unwrap();
    sim.clock().advance(Duration::from_secs(60));
    let applied = r.apply(&cfg, &plan).await.expect("applies");
    let (run_id, report) = applied[0].run.clone().expect("the run started");
    assert_eq!(
        (
            report.status,
            report.counts.succeeded,
            report.counts.skipped
        ),
        (RunStatus::Succeeded, 1, 1),
        "{report:?}"
    );
    let actions = r.env.store.actions_for_run(run_id).await.unwrap();
    let held = actions
        .iter()
        .find(|a| a.resource_id == kept)
        .unwrap_or_else(|| panic!("{actions:#?}"));
    assert_eq!(held.outcome, ActionOutcome::Skipped);
    assert!(
        held.reason.contains(
            "kept by `neon-steward keep app/preview/kept` until it is removed (still in review)"
        ),
        "{}",
        held.reason
    );
    assert_eq!(branch_names(&sim, &p), ["main", "preview/kept"]);
}

#[tokio::test]
async fn a_stale_or_foreign_plan_is_refused_and_nothing_is_done() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (p, _) = sim.add_project("app", None);
    aged_branch(&sim, &p, "preview/a", TimeDelta::days(10));
    let cfg = policy(POLICY);
    let r = runner(&sim).await;
    let plan = r.make(&cfg, &cfg.jobs).await.expect("plan is made");
    assert_eq!(plan.jobs[0].actions.len(), 1);
    let before = branch_names(&sim, &p);

    let now = sim.clock().now();
    let stale = plan
        .check(&cfg, now + TimeDelta::hours(2), Duration::from_secs(3600))
        .unwrap_err();
    assert!(matches!(stale, Refusal::Stale { .. }), "{stale}");
    assert!(stale.to_string().contains("--max-age 1h"), "{stale}");

    let other = policy(&POLICY.replace("\"7d\"", "\"1d\""));
    let foreign = plan
        .check(&other, now, Duration::from_secs(3600))
        .unwrap_err();
    assert!(
        matches!(foreign, Refusal::ForeignPolicy { .. }),
        "{foreign}"
    );
    assert!(
        foreign.to_string().contains(&plan.policy_hash)
            && foreign.to_string().contains(&other.policy_hash),
        "{foreign}"
    );
    assert_eq!(branch_names(&sim, &p), before);
    // The only run recorded is the plan's dry run.
    let runs = r
        .env
        .store
        .list_runs(&neon_steward::store::RunFilter {
            job: None,
            limit: 10,
            before: None,
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trigger, Trigger::Manual);
    assert!(runs[0].dry_run);
}

/// The real binary: `plan --out --output markdown`, `apply` refused under a changed
/// policy (exit 2, nothing done), then applied under the same policy written differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_plans_refuses_a_foreign_plan_and_applies() {
    use std::process::Command;
    const BIN: &str = env!("CARGO_BIN_EXE_neon-steward");
    let sim = spawn_sim(SimConfig::default()).await;
    let (p, _) = sim.add_project("app", None);
    aged_branch(&sim, &p, "preview/old", TimeDelta::days(10));
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("p.toml");
    std::fs::write(&policy_path, POLICY).unwrap();
    let (base, key) = (sim.base_url(), sim.api_key());
    let d = dir.path().to_path_buf();
    let run = move |args: Vec<String>| {
        let (d, base, key) = (d.clone(), base.clone(), key.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(BIN)
                    .current_dir(&d)
                    .env_remove("NEON_STEWARD_CONFIG")
                    .env_remove("CREDENTIALS_DIRECTORY")
                    .env("NEON_API_KEY", key)
                    .env("NEON_STEWARD_BASE_URL", base)
                    .arg("--config")
                    .arg(d.join("p.toml"))
                    .args(args)
                    .output()
                    .expect("the binary runs")
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let out = run(args(&[
        "plan",
        "--out",
        "plan.json",
        "--output",
        "markdown",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.starts_with("## neon-steward plan "), "{md}");
    assert!(
        md.contains("| **destructive** | delete\\_branch | branch preview/old"),
        "{md}"
    );
    assert!(
        stderr.contains("apply it with `neon-steward apply plan.json`"),
        "{stderr}"
    );
    let plan = PlanDocument::read(&dir.path().join("plan.json")).expect("the plan file reads");
    assert_eq!(plan.jobs[0].actions.len(), 1);

    std::fs::write(&policy_path, POLICY.replace("\"7d\"", "\"6d\"")).unwrap();
    let out = run(args(&["apply", "plan.json"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("apply refused: plan ") && stderr.contains("was made from another policy"),
        "{stderr}"
    );
    assert!(branch_names(&sim, &p).contains(&"preview/old".to_string()));

    // The same policy, reformatted and commented: the same hash.
    std::fs::write(&policy_path, format!("# reviewed in PR 12\n{POLICY}")).unwrap();
    let out = run(args(&["apply", "plan.json", "--max-age", "10m"])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(stdout.contains("succeeded  delete_branch"), "{stdout}");
    assert!(!branch_names(&sim, &p).contains(&"preview/old".to_string()));

    let out = run(args(&["history", "--output", "json"])).await;
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["trigger"], "apply");
    assert_eq!(runs[0]["plan_id"], plan.id.as_str());
    assert_eq!(runs[1]["trigger"], "manual");
    assert!(runs[1].get("plan_id").is_none());
}
