//! `snapshot_branches` with `mode = "backup_schedule"` against neon-sim: Neon's backup
//! schedules set by policy, changed when the policy changes, taken back when a branch leaves
//! it, others' schedules left alone; and what `validate` refuses.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chrono::TimeDelta;
use neon_sim::state::BackupScheduleItem;
use neon_sim::SimConfig;
use neon_steward::config::{self, JobConfig};
use neon_steward::store::{ActionOutcome, ActionRecord, NewRun, RunStatus, Trigger};

use crate::helpers::spawn_sim;
use crate::helpers::{job_harness as harness, JobHarness as H};

fn job(rules: &str, extra: &str) -> Arc<JobConfig> {
    let text = format!(
        r#"
[[jobs]]
name = "native-backups"
kind = "snapshot_branches"
mode = "backup_schedule"
every = "1h"
{extra}
{rules}
"#
    );
    let cfg = config::parse_with_env(Path::new("backup.toml"), &text, &|k| {
        (k == "NEON_API_KEY").then(|| "unused-in-tests".to_string())
    })
    .unwrap_or_else(|e| panic!("test policy must parse: {e}"));
    cfg.jobs[0].clone()
}

const DAILY_3: &str = r#"
[[jobs.backup_schedule]]
frequency = "daily"
hour = 3
retention = "7d"
"#;

const WEEKLY_AND_MONTHLY: &str = r#"
[[jobs.backup_schedule]]
frequency = "weekly"
day = 7
hour = 4
retention = "14d"
[[jobs.backup_schedule]]
frequency = "monthly"
"#;

impl H {
    fn schedule(&self, branch: &str) -> Vec<BackupScheduleItem> {
        self.sim
            .state()
            .settled()
            .backup_schedules
            .get(branch)
            .cloned()
            .unwrap_or_default()
    }

    fn set_by_hand(&self, branch: &str, items: Vec<BackupScheduleItem>) {
        self.sim
            .state()
            .settled()
            .backup_schedules
            .insert(branch.to_string(), items);
    }

    /// Mutating calls the emulator received since the last clear.
    fn puts(&self) -> usize {
        self.sim
            .mutations()
            .iter()
            .filter(|m| m.path.ends_with("/backup_schedule"))
            .count()
    }
}

fn item(frequency: &str, hour: i64, day: Option<i64>, retention_days: i64) -> BackupScheduleItem {
    BackupScheduleItem {
        frequency: frequency.into(),
        hour: Some(hour),
        day,
        month: None,
        retention_seconds: Some(retention_days * 86_400),
    }
}

fn only<'a>(actions: &'a [ActionRecord], resource: &str) -> &'a ActionRecord {
    let found: Vec<_> = actions
        .iter()
        .filter(|a| a.resource_id == resource)
        .collect();
    assert_eq!(found.len(), 1, "one action on {resource}: {actions:#?}");
    found[0]
}

#[tokio::test]
async fn backup_schedules_are_set_changed_and_taken_back_only_where_the_job_set_them() {
    let h = harness().await;
    let (_a, a_main) = h.sim.add_project("alpha", None);
    let (_b, b_main) = h.sim.add_project("beta", None);
    let (c, c_main) = h.sim.add_project("gamma", None);
    let c_dev = h.sim.add_branch(&c, "dev", None);
    // Beta's schedule was made by someone else (the console, another tool).
    let foreign = vec![item("daily", 1, None, 2)];
    h.set_by_hand(&b_main, foreign.clone());

    // 1. The policy sets the schedule where there is none; beta's and the child branch are
    //    left alone, with their reasons.
    let v1 = job(DAILY_3, "");
    let (r, actions) = h.run(&v1, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:#?}");
    let want = vec![item("daily", 3, None, 7)];
    assert_eq!(h.schedule(&a_main), want);
    assert_eq!(h.schedule(&c_main), want);
    assert_eq!(h.schedule(&b_main), foreign);
    assert!(h.schedule(&c_dev).is_empty());
    let set = only(&actions, &a_main);
    assert_eq!(
        (set.action.as_str(), set.rule.as_deref(), set.outcome),
        (
            "set_backup_schedule",
            Some("backup_schedule"),
            ActionOutcome::Succeeded
        )
    );
    assert!(set.reason.contains("no backup schedule"), "{}", set.reason);
    assert!(
        set.detail
            .as_deref()
            .unwrap_or_default()
            .contains("daily at 03:00 UTC, kept 7d"),
        "{set:?}"
    );
    let theirs = only(&actions, &b_main);
    assert_eq!(
        (theirs.outcome, theirs.rule.as_deref()),
        (ActionOutcome::Skipped, Some("not_ours"))
    );
    assert!(theirs.reason.contains("did not set"), "{}", theirs.reason);
    let child = only(&actions, &c_dev);
    assert_eq!(
        (child.outcome, child.rule.as_deref()),
        (ActionOutcome::Skipped, Some("neon_rules"))
    );
    assert!(
        child.reason.contains("root branches only"),
        "{}",
        child.reason
    );

    // 2. The same policy again changes nothing and calls nothing.
    h.sim.app.mutations.clear();
    let (r, actions) = h.run(&v1, false).await;
    assert_eq!(r.counts.succeeded, 0, "{actions:#?}");
    assert_eq!(h.puts(), 0);

    // 3. A changed policy, dry: the plan shows each change from -> to and calls nothing.
    let v2 = job(WEEKLY_AND_MONTHLY, "");
    let (r, actions) = h.run(&v2, true).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let planned: Vec<_> = actions
        .iter()
        .filter(|a| a.outcome == ActionOutcome::Planned)
        .collect();
    assert_eq!(planned.len(), 2, "{actions:#?}");
    for p in &planned {
        assert!(
            p.reason.contains("daily at 03:00 UTC, kept 7d -> ")
                && p.reason.contains("weekly day 7 at 04:00 UTC, kept 14d")
                && p.reason.contains("monthly day 1 at 00:00 UTC, kept 35d"),
            "{}",
            p.reason
        );
    }
    assert_eq!(h.puts(), 0, "a dry run makes no call");
    assert_eq!(h.schedule(&a_main), want);

    // 4. The changed policy applied: the job's schedules change, beta's does not.
    let (r, actions) = h.run(&v2, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:#?}");
    let want2 = vec![
        item("weekly", 4, Some(7), 14),
        item("monthly", 0, Some(1), 35),
    ];
    assert_eq!(h.schedule(&a_main), want2);
    assert_eq!(h.schedule(&c_main), want2);
    assert_eq!(h.schedule(&b_main), foreign);
    assert_eq!(
        only(&actions, &a_main).rule.as_deref(),
        Some("policy_changed")
    );

    // 5. Someone changes gamma's schedule by hand: it is theirs now, and stays.
    let by_hand = vec![item("daily", 22, None, 1)];
    h.set_by_hand(&c_main, by_hand.clone());
    let (_, actions) = h.run(&v2, false).await;
    let c = only(&actions, &c_main);
    assert_eq!(
        (c.outcome, c.rule.as_deref()),
        (ActionOutcome::Skipped, Some("not_ours"))
    );
    assert!(c.reason.contains("forgotten"), "{}", c.reason);
    assert_eq!(h.schedule(&c_main), by_hand);

    // 6. The branches leave the policy: alpha's schedule (the job's) is taken back; beta's
    //    and gamma's (not the job's) stay.
    h.sim.app.mutations.clear();
    let gone = job(WEEKLY_AND_MONTHLY, "[jobs.branches]\nnames = [\"release\"]");
    let (r, actions) = h.run(&gone, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:#?}");
    assert_eq!(actions.len(), 1, "{actions:#?}");
    let back = only(&actions, &a_main);
    assert_eq!(
        (back.action.as_str(), back.outcome),
        ("take_back_backup_schedule", ActionOutcome::Succeeded)
    );
    assert!(
        back.reason.contains("no longer selected"),
        "{}",
        back.reason
    );
    assert!(h.schedule(&a_main).is_empty());
    assert_eq!(h.schedule(&b_main), foreign);
    assert_eq!(h.schedule(&c_main), by_hand);
    assert_eq!(h.puts(), 1);

    // 7. Set again, then an emptied rule list takes back what the job set, and only that.
    let (r, _) = h.run(&v1, false).await;
    assert_eq!(
        r.counts.succeeded, 1,
        "alpha only: beta and gamma are not the job's"
    );
    assert_eq!(h.schedule(&a_main), want);
    let emptied = job("backup_schedule = []", "");
    let (r, actions) = h.run(&emptied, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert!(
        only(&actions, &a_main).reason.contains("lists no schedule"),
        "{actions:#?}"
    );
    assert!(h.schedule(&a_main).is_empty());
    assert_eq!(h.schedule(&b_main), foreign);
    assert_eq!(h.schedule(&c_main), by_hand);
}

#[tokio::test]
async fn a_change_whose_answer_was_lost_is_adopted_from_the_intent() {
    // The daemon died during the call: the intent (written before it) is in the job's
    // record, and Neon has the schedule. The next run takes it as the job's own.
    let h = harness().await;
    let (a, a_main) = h.sim.add_project("alpha", None);
    let want = vec![item("daily", 3, None, 7)];
    h.set_by_hand(&a_main, want.clone());
    let writer = h
        .env
        .store
        .claim_run(&NewRun {
            plan_id: None,
            job: "crashed".into(),
            kind: "snapshot_branches".into(),
            scheduled_for: h.sim.clock().now() - TimeDelta::hours(1),
            trigger: Trigger::Manual,
            dry_run: false,
            status: RunStatus::Running,
            error: None,
        })
        .await
        .unwrap()
        .unwrap();
    let record = serde_json::json!({"branches": {a_main.clone(): {"set": null, "intent": want}}});
    h.env
        .store
        .put_state(
            writer,
            "native-backups",
            &format!("backup_schedules/{a}"),
            None,
            &record.to_string(),
        )
        .await
        .unwrap()
        .expect("first write");
    let (r, actions) = h.run(&job(DAILY_3, ""), false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(actions.is_empty(), "adopted, nothing to do: {actions:#?}");
    // Adopted as the job's: a changed policy changes it.
    let (_, actions) = h.run(&job(WEEKLY_AND_MONTHLY, ""), false).await;
    let a = only(&actions, &a_main);
    assert_eq!(
        (a.outcome, a.rule.as_deref()),
        (ActionOutcome::Succeeded, Some("policy_changed"))
    );
    // Without the record, the same schedule would have been someone else's.
    let h2 = harness().await;
    let (_, b_main) = h2.sim.add_project("beta", None);
    h2.set_by_hand(&b_main, want);
    let (_, actions) = h2.run(&job(WEEKLY_AND_MONTHLY, ""), false).await;
    assert_eq!(only(&actions, &b_main).rule.as_deref(), Some("not_ours"));
}

/// `validate` (the real binary) refuses what Neon's schedules cannot do, with the position
/// and `mode = "snapshots"` as the way.
#[test]
fn validate_refuses_what_neons_backup_schedules_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let base = r#"[[jobs]]
name = "native-backups"
kind = "snapshot_branches"
mode = "backup_schedule"
every = "1h"
"#;
    let cases = [
        (
            "[[jobs.backup_schedule]]\nfrequency = \"hourly\"\n",
            "p.toml:7:13:",
            "mode = \"snapshots\"",
        ),
        (
            "[[jobs.backup_schedule]]\nfrequency = \"yearly\"\n",
            "p.toml:7:13:",
            "mode = \"snapshots\"",
        ),
        (
            "[[jobs.backup_schedule]]\nfrequency = \"daily\"\nretention = \"36d\"\n",
            "p.toml:8:13:",
            "35 days",
        ),
        (
            "[jobs.branches]\ninactive_for = \"7d\"\n[[jobs.backup_schedule]]\nfrequency = \"daily\"\n",
            "p.toml:6:",
            "inactive_for",
        ),
        (
            "name_template = \"{job}-{date}-{time}\"\n[[jobs.backup_schedule]]\nfrequency = \"daily\"\n",
            "p.toml:6:17:",
            "mode = \"snapshots\"",
        ),
        ("", "p.toml:4:8:", "needs `[[jobs.backup_schedule]]`"),
    ];
    for (tail, at, says) in cases {
        let p = dir.path().join("p.toml");
        std::fs::write(&p, format!("{base}{tail}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_neon-steward"))
            .current_dir(dir.path())
            .env_remove("NEON_API_KEY")
            .env_remove("NEON_STEWARD_CONFIG")
            .arg("--config")
            .arg(&p)
            .arg("validate")
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{tail}: {err}");
        assert!(err.contains(at) && err.contains(says), "{tail}:\n{err}");
    }
    // A valid one passes, and `default = false` is warned about.
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!("{base}[jobs.branches]\ndefault = false\n{WEEKLY_AND_MONTHLY}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_neon-steward"))
        .current_dir(dir.path())
        .env_remove("NEON_API_KEY")
        .env_remove("NEON_STEWARD_CONFIG")
        .arg("--config")
        .arg(&p)
        .arg("validate")
        .output()
        .expect("the binary runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("root branches only"), "{all}");
}

#[tokio::test]
async fn a_call_carried_out_but_answered_with_an_error_is_checked_and_then_adopted() {
    // Neon carries out every PUT and answers 500: the client's retries see only errors, the
    // engine asks Neon (the schedule is there, but whose?) and records `unknown`; the intent
    // written before the call lets the next run take the schedule as the job's.
    let h = harness().await;
    let (_a, a_main) = h.sim.add_project("alpha", None);
    h.sim.fail_after_processing("PUT", "/backup_schedule", 1000);
    let v1 = job(DAILY_3, "");
    let (_, actions) = h.run(&v1, false).await;
    let a = only(&actions, &a_main);
    assert_eq!(a.outcome, ActionOutcome::Unknown, "{a:?}");
    assert!(
        a.detail
            .as_deref()
            .unwrap_or_default()
            .contains("next run compares"),
        "{a:?}"
    );
    assert_eq!(h.schedule(&a_main), vec![item("daily", 3, None, 7)]);
    let puts = h.puts();
    assert!(puts >= 1, "the PUT was made");
    let (r, actions) = h.run(&v1, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert!(actions.is_empty(), "adopted from the intent: {actions:#?}");
    assert_eq!(h.puts(), puts, "no second PUT");
}

/// `plan` (the real binary) shows the schedule changes and makes no call.
#[tokio::test]
async fn plan_shows_the_schedule_changes_and_changes_nothing() {
    let sim = spawn_sim(SimConfig::default()).await;
    let (_p, main) = sim.add_project("alpha", None);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[[jobs]]\nname = \"native-backups\"\nkind = \"snapshot_branches\"\n\
             mode = \"backup_schedule\"\nevery = \"1h\"\n{DAILY_3}"
        ),
    )
    .unwrap();
    let (base, key, d) = (sim.base_url(), sim.api_key(), dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_neon-steward"))
            .current_dir(&d)
            .env_remove("NEON_STEWARD_CONFIG")
            .env("NEON_API_KEY", key)
            .env("NEON_STEWARD_BASE_URL", base)
            .env(
                "NEON_STEWARD_STORE_URL",
                format!("sqlite://{}/state.db", d.display()),
            )
            .arg("--config")
            .arg(&policy)
            .args(["plan", "--output", "json"])
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = v[0]["actions"].as_array().expect("the run's actions");
    assert_eq!(actions.len(), 1, "{v:#}");
    assert_eq!(actions[0]["action"], "set_backup_schedule");
    assert_eq!(actions[0]["outcome"], "planned");
    assert_eq!(actions[0]["resource_id"], main.as_str());
    let reason = actions[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("no backup schedule") && reason.contains("daily at 03:00 UTC, kept 7d"),
        "{reason}"
    );
    assert!(sim.mutations().is_empty(), "plan made no change");
}
