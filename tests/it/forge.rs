//! `expire_branches` with `pull_request = "closed"` against neon-sim and the fake forge of
//! `neon_sim::forge` (GitHub's and GitLab's shapes, pagination, rate-limit headers, faults):
//! merged and closed pull requests expire their branches, open ones stay, unknown and
//! unreadable ones stay with their reason, a forge outage deletes nothing, and the forge
//! requests of a run are bounded by the pages of pull requests updated since the last run,
//! whatever the number of projects and branches. With `notice`, a merged pull request's
//! branch is marked first and deleted only after the period; a kept one is never deleted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use neon_sim::forge::{FakeForge, FakeState, Fault, ForgeFlavor};
use neon_steward::config::{self, JobConfig};
use neon_steward::store::{ActionOutcome, ActionRecord, RunStatus};

use crate::helpers::job_harness as harness;

const TOKEN: &str = "ghp_fake-forge-token-for-tests";

fn parse(text: &str, token: Option<&str>) -> Result<config::Config, config::ConfigError> {
    let token = token.map(str::to_string);
    config::parse_with_env(Path::new("forge.toml"), text, &move |k| match k {
        "NEON_API_KEY" => Some("unused-in-tests".to_string()),
        "FORGE_TOKEN" => token.clone(),
        _ => None,
    })
}

/// One `expire_branches` job on `forge` with `branch` as the mapping and `extra` job keys.
fn policy(forge: &FakeForge, kind: &str, repo: &str, branch: &str, extra: &str) -> String {
    format!(
        r#"
[[jobs]]
name = "expire-closed"
kind = "expire_branches"
every = "10m"
pull_request = "closed"
max_actions = 100
{extra}

[jobs.branches]
names = ["preview/*", "pr-*"]
default = false

[jobs.forge]
kind = "{kind}"
repository = "{repo}"
api_url = "{}"
branch = "{branch}"
token_env = "FORGE_TOKEN"
max_retries = 1
timeout = "5s"
"#,
        forge.api_url()
    )
}

fn job_of(text: &str) -> Arc<JobConfig> {
    parse(text, Some(TOKEN))
        .unwrap_or_else(|e| panic!("test policy must parse: {e}"))
        .jobs[0]
        .clone()
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).unwrap()
}

fn with_outcome(actions: &[ActionRecord], o: ActionOutcome) -> Vec<&ActionRecord> {
    actions.iter().filter(|a| a.outcome == o).collect()
}

fn reason_of<'a>(actions: &'a [ActionRecord], branch: &str) -> &'a ActionRecord {
    actions
        .iter()
        .find(|a| a.resource_name.as_deref() == Some(branch))
        .unwrap_or_else(|| panic!("no action for {branch}: {actions:#?}"))
}

#[tokio::test]
async fn github_merged_and_closed_expire_open_stays_unknown_is_kept_with_its_reason() {
    let h = harness().await;
    let forge = FakeForge::start(ForgeFlavor::Github, "acme/web", TOKEN)
        .await
        .unwrap();
    forge.add(1, FakeState::Merged, "fix-login", at(1, 10));
    forge.add(2, FakeState::Closed, "try-idea", at(1, 9));
    forge.add(3, FakeState::Open, "big-refactor", at(1, 8));
    let (p, _) = h.sim.add_project("web", None);
    for n in [
        "preview/pr-1-fix-login",
        "preview/pr-2-try-idea",
        "preview/pr-3-big-refactor",
        "preview/pr-4-elsewhere",
        "preview/no-number",
    ] {
        h.branch_aged(&p, n, None, TimeDelta::days(2));
    }
    let job = job_of(&policy(
        &forge,
        "github",
        "acme/web",
        "preview/pr-{number}-*",
        "",
    ));

    // The dry run plans the same and changes nothing.
    let (r, planned) = h.run(&job, true).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let mut plan: Vec<&str> = with_outcome(&planned, ActionOutcome::Planned)
        .iter()
        .map(|a| a.resource_name.as_deref().unwrap())
        .collect();
    plan.sort();
    assert_eq!(plan, ["preview/pr-1-fix-login", "preview/pr-2-try-idea"]);
    assert_eq!(h.branch_names(&p).len(), 6);

    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(r.counts.succeeded, 2, "{actions:#?}");
    assert_eq!(
        h.branch_names(&p),
        [
            "main",
            "preview/no-number",
            "preview/pr-3-big-refactor",
            "preview/pr-4-elsewhere"
        ]
    );
    let merged = reason_of(&actions, "preview/pr-1-fix-login");
    assert_eq!(merged.outcome, ActionOutcome::Succeeded);
    assert_eq!(merged.rule.as_deref(), Some("pull_request"));
    assert_eq!(merged.reason, "pull request #1 merged 2026-12-01T10:00Z");
    let closed = reason_of(&actions, "preview/pr-2-try-idea");
    assert_eq!(closed.reason, "pull request #2 closed 2026-12-01T09:00Z");
    let unknown = reason_of(&actions, "preview/pr-4-elsewhere");
    assert_eq!(unknown.outcome, ActionOutcome::Skipped);
    assert!(
        unknown
            .reason
            .contains("pull request #4 is not among the pull requests of acme/web on GitHub"),
        "{}",
        unknown.reason
    );
    // The open one and the name without a number are not due: nothing recorded.
    assert!(actions.iter().all(|a| a.resource_name.as_deref()
        != Some("preview/pr-3-big-refactor")
        && a.resource_name.as_deref() != Some("preview/no-number")));
    forge.shutdown().await;
}

#[tokio::test]
async fn gitlab_by_head_ref_with_ttl_as_ceiling() {
    let h = harness().await;
    let forge = FakeForge::start(ForgeFlavor::Gitlab, "group/sub/app", TOKEN)
        .await
        .unwrap();
    forge.add(10, FakeState::Merged, "feat-x", at(2, 10));
    forge.add(11, FakeState::Open, "feat-y", at(2, 9));
    // An earlier merge request from feat-z was closed; a new one from it is open.
    forge.add(12, FakeState::Closed, "feat-z", at(1, 9));
    forge.add(13, FakeState::Open, "feat-z", at(2, 8));
    forge.add(14, FakeState::Locked, "feat-l", at(2, 7));
    let (p, _) = h.sim.add_project("app", None);
    h.branch_aged(&p, "preview/feat-x", None, TimeDelta::days(1));
    h.branch_aged(&p, "preview/feat-y", None, TimeDelta::days(1));
    h.branch_aged(&p, "preview/feat-z", None, TimeDelta::days(1));
    h.branch_aged(&p, "preview/feat-l", None, TimeDelta::days(1));
    // Open, but older than the ttl: the ceiling expires it.
    h.branch_aged(&p, "preview/feat-old", None, TimeDelta::days(40));
    forge.add(15, FakeState::Open, "feat-old", at(2, 6));
    let job = job_of(&policy(
        &forge,
        "gitlab",
        "group/sub/app",
        "preview/{ref}",
        "ttl = \"30d\"",
    ));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:#?}");
    assert_eq!(
        h.branch_names(&p),
        ["main", "preview/feat-l", "preview/feat-y", "preview/feat-z"]
    );
    let x = reason_of(&actions, "preview/feat-x");
    assert_eq!(x.rule.as_deref(), Some("pull_request"));
    assert_eq!(
        x.reason,
        "merge request !10 merged 2026-12-02T10:00Z (from `feat-x`)"
    );
    let old = reason_of(&actions, "preview/feat-old");
    assert_eq!(old.rule.as_deref(), Some("ttl"));
    assert!(
        old.reason
            .contains("merge request !15 from `feat-old` is open"),
        "{}",
        old.reason
    );
    // GitLab was asked with the encoded project path, once.
    let log = forge.request_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, 200);
    forge.shutdown().await;
}

#[tokio::test]
async fn a_forge_outage_or_a_refused_token_deletes_nothing() {
    let h = harness().await;
    let forge = FakeForge::start(ForgeFlavor::Github, "acme/web", TOKEN)
        .await
        .unwrap();
    forge.add(1, FakeState::Merged, "a", at(1, 10));
    forge.add(2, FakeState::Closed, "b", at(1, 9));
    let (p, _) = h.sim.add_project("web", None);
    h.branch_aged(&p, "pr-1", None, TimeDelta::days(60));
    h.branch_aged(&p, "pr-2", None, TimeDelta::days(60));
    // With a ttl the branches would be due by age too: an unreadable forge still keeps them.
    let text = policy(&forge, "github", "acme/web", "pr-{number}", "ttl = \"30d\"");
    let job = job_of(&text);
    for (fault, want) in [
        (Fault::Status(503), "GitHub answered 503"),
        (Fault::Status(500), "GitHub answered 500"),
        (
            Fault::Status(401),
            "GitHub refused the token (401 Unauthorized)",
        ),
        (Fault::Status(404), "no repository acme/web"),
        (
            Fault::RateLimited {
                retry_after_secs: 3600,
                too_many: false,
            },
            "rate limited for 3600s",
        ),
    ] {
        forge.fail_always(Some(fault));
        forge.clear_log();
        let (r, actions) = h.run(&job, false).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{fault:?}: {r:?}");
        assert_eq!(r.counts.succeeded, 0, "{fault:?}: {actions:#?}");
        assert_eq!(h.branch_names(&p), ["main", "pr-1", "pr-2"], "{fault:?}");
        let skipped = with_outcome(&actions, ActionOutcome::Skipped);
        assert_eq!(skipped.len(), 2, "{fault:?}: {actions:#?}");
        for a in skipped {
            assert!(
                a.reason.contains("cannot be read from GitHub") && a.reason.contains(want),
                "{fault:?}: {}",
                a.reason
            );
            assert!(a.reason.contains("although age"), "{}", a.reason);
            assert!(!a.reason.contains(TOKEN));
        }
        // 5xx is retried (max_retries = 1), a refusal is not, and a rate limit longer than
        // the retry budget is not waited for.
        let expected = if matches!(fault, Fault::Status(s) if s >= 500) {
            2
        } else {
            1
        };
        assert_eq!(forge.requests(), expected, "{fault:?}");
    }
    // The forge is back: both go.
    forge.fail_always(None);
    let (r, _) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 2, "{r:?}");
    assert_eq!(h.branch_names(&p), ["main"]);

    // A missing token: kept with the reason, and `validate` warns.
    let cfg = parse(&text, None).expect("a missing token is not a parse error");
    let warnings = cfg.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("no GitHub token in the environment variable FORGE_TOKEN")),
        "{warnings:?}"
    );
    h.branch_aged(&p, "pr-1", None, TimeDelta::days(1));
    let (r, actions) = h.run(&cfg.jobs[0], false).await;
    assert_eq!(r.counts.succeeded, 0);
    assert!(actions[0].reason.contains("no token"), "{actions:#?}");
    forge.shutdown().await;
}

#[tokio::test]
async fn forge_requests_are_bounded_by_the_pages_updated_since_the_last_run() {
    let h = harness().await;
    let forge = FakeForge::start(ForgeFlavor::Github, "acme/web", TOKEN)
        .await
        .unwrap();
    forge.max_page(10);
    // 25 pull requests: 5 merged, 20 open, over 3 pages of 10.
    for n in 1..=25u64 {
        let state = if n <= 5 {
            FakeState::Merged
        } else {
            FakeState::Open
        };
        forge.add(
            n,
            state,
            &format!("f{n}"),
            at(1, 0) + TimeDelta::minutes(n as i64),
        );
    }
    // Three projects with a branch for every pull request: 75 branches, still 3 requests.
    let mut projects = Vec::new();
    for i in 0..3 {
        let (p, _) = h.sim.add_project(&format!("web-{i}"), None);
        for n in 1..=25 {
            h.branch_aged(&p, &format!("pr-{n}"), None, TimeDelta::days(1));
        }
        projects.push(p);
    }
    let job = job_of(&policy(&forge, "github", "acme/web", "pr-{number}", ""));
    let (r, _) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 15, "{r:?}");
    assert_eq!(forge.requests(), 3, "{:?}", forge.request_log());
    for p in &projects {
        assert_eq!(h.branch_names(p).len(), 1 + 20);
    }

    // Two more are merged; the next run reads only the first page (newest first, it stops
    // at the first pull request older than its cursor).
    forge.clear_log();
    forge.set_state(6, FakeState::Merged, at(3, 0));
    forge.set_state(7, FakeState::Closed, at(3, 1));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 6, "{actions:#?}");
    assert_eq!(forge.requests(), 1, "{:?}", forge.request_log());
    assert!(reason_of(&actions, "pr-7")
        .reason
        .contains("#7 closed 2026-12-03T01:00Z"));

    // A reopened pull request is open again: its branch stays.
    forge.clear_log();
    forge.set_state(5, FakeState::Open, at(3, 2));
    h.branch_aged(&projects[0], "pr-5", None, TimeDelta::days(1));
    let (r, _) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 0, "{r:?}");
    assert!(h.branch_names(&projects[0]).contains(&"pr-5".to_string()));

    // A rate limit within the retry budget is waited for (Retry-After), then the listing
    // goes on; a spent quota whose reset is beyond the budget stops it before the next page,
    // and the branches stay.
    forge.clear_log();
    forge.fail(
        Fault::RateLimited {
            retry_after_secs: 1,
            too_many: true,
        },
        1,
    );
    forge.set_state(8, FakeState::Merged, at(4, 0));
    let started = std::time::Instant::now();
    let (r, _) = h.run(&job, false).await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(r.counts.succeeded, 3, "{r:?}");
    assert_eq!(forge.requests(), 2);

    // A first listing (another repository key: a new job) with a spent quota: one page,
    // then it stops; nothing is deleted.
    forge.clear_log();
    forge.set_quota(1, Utc::now() + TimeDelta::hours(1));
    let fresh = job_of(
        &policy(&forge, "github", "acme/web", "pr-{number}", "")
            .replace("expire-closed", "expire-closed-2"),
    );
    let (r, actions) = h.run(&fresh, false).await;
    assert_eq!(r.counts.succeeded, 0, "{actions:#?}");
    assert_eq!(forge.requests(), 1, "{:?}", forge.request_log());
    assert!(with_outcome(&actions, ActionOutcome::Skipped)
        .iter()
        .all(|a| a.reason.contains("rate limited")));
    forge.shutdown().await;
}

#[test]
fn forge_policy_errors_name_the_key() {
    let cases = [
        (
            "pull_request = \"closed\"\n",
            "",
            "`pull_request` needs a `[jobs.forge]` table",
        ),
        (
            "pull_request = \"closed\"\nmode = \"set_expires_at\"\n",
            "[jobs.forge]\nkind = \"github\"\nrepository = \"a/b\"\nbranch = \"pr-{number}\"\ntoken_env = \"FORGE_TOKEN\"\n",
            "works with `mode = \"delete\"` only",
        ),
        (
            "pull_request = \"closed\"\n",
            "[jobs.forge]\nkind = \"github\"\nrepository = \"a/b/c\"\nbranch = \"pr-{number}\"\ntoken_env = \"FORGE_TOKEN\"\n",
            "is not `owner/name`",
        ),
        (
            "pull_request = \"closed\"\n",
            "[jobs.forge]\nkind = \"github\"\nrepository = \"a/b\"\nbranch = \"preview/*\"\ntoken_env = \"FORGE_TOKEN\"\n",
            "exactly one placeholder",
        ),
        (
            "pull_request = \"closed\"\n",
            "[jobs.forge]\nkind = \"gitlab\"\nrepository = \"a/b\"\nbranch = \"pr-{number}\"\n",
            "exactly one of `token_file`, `token_env` and `token_credential`",
        ),
        (
            "pull_request = \"closed\"\n",
            "[jobs.forge]\nkind = \"github\"\nrepository = \"a/b\"\nbranch = \"pr-{number}\"\ntoken = \"x\"\n",
            "unknown field `token`",
        ),
        (
            "pull_request = \"closed\"\n",
            "[jobs.forge]\nkind = \"github\"\nrepository = \"a/b\"\napi_url = \"http://github.example.com\"\nbranch = \"pr-{number}\"\ntoken_env = \"FORGE_TOKEN\"\n",
            "plain http",
        ),
    ];
    for (keys, table, want) in cases {
        let text = format!(
            "[[jobs]]\nname = \"j\"\nkind = \"expire_branches\"\nevery = \"1h\"\n{keys}\n{table}"
        );
        let e = parse(&text, Some(TOKEN)).expect_err(want).to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(e.contains("forge.toml:"), "positioned: {e}");
    }
    // On another kind: which kind it belongs to.
    let e = parse(
        "[[jobs]]\nname = \"j\"\nkind = \"suspend_computes\"\nevery = \"1h\"\nidle_for = \"1h\"\npull_request = \"closed\"\n",
        Some(TOKEN),
    )
    .expect_err("wrong kind")
    .to_string();
    assert!(e.contains("belongs to kind `expire_branches`"), "{e}");
    // The token is never in Debug output of the config.
    let ok = parse(
        "[[jobs]]\nname = \"j\"\nkind = \"expire_branches\"\nevery = \"1h\"\npull_request = \"closed\"\n[jobs.forge]\nkind = \"github\"\nrepository = \"a/b\"\nbranch = \"pr-{number}\"\ntoken_env = \"FORGE_TOKEN\"\n",
        Some(TOKEN),
    )
    .unwrap();
    assert!(!format!("{:?}", ok.jobs[0]).contains(TOKEN));
}

#[tokio::test]
async fn merged_under_notice_is_deleted_after_the_period_and_a_kept_one_never() {
    let h = harness().await;
    let forge = FakeForge::start(ForgeFlavor::Github, "acme/web", TOKEN)
        .await
        .unwrap();
    forge.add(1, FakeState::Merged, "fix-login", at(1, 10));
    forge.add(2, FakeState::Merged, "demo", at(1, 9));
    let (p, _) = h.sim.add_project("web", None);
    let merged = h.branch_aged(&p, "preview/pr-1-fix-login", None, TimeDelta::days(2));
    let kept = h.branch_aged(&p, "preview/pr-2-demo", None, TimeDelta::days(2));
    h.env
        .store
        .put_keep(&neon_steward::store::Keep {
            project: "web".into(),
            branch: "preview/pr-2-demo".into(),
            until: None,
            note: Some("the demo".into()),
            created_at: h.sim.clock().now(),
        })
        .await
        .unwrap();
    let job = job_of(&policy(
        &forge,
        "github",
        "acme/web",
        "preview/pr-{number}-*",
        "notice = \"24h\"",
    ));
    let all = ["main", "preview/pr-1-fix-login", "preview/pr-2-demo"];
    let deletes = || {
        h.sim
            .mutations()
            .iter()
            .filter(|m| m.method == "DELETE")
            .count()
    };

    // First run: the merged one is marked, not deleted; the kept one is not marked.
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?} {actions:#?}");
    assert_eq!(r.counts.succeeded, 0, "{actions:#?}");
    let first = reason_of(&actions, "preview/pr-1-fix-login");
    assert_eq!(first.outcome, ActionOutcome::Skipped);
    assert!(
        first.reason.contains("notice given: falls due at"),
        "{}",
        first.reason
    );
    assert!(
        reason_of(&actions, "preview/pr-2-demo")
            .reason
            .contains("kept by `neon-steward keep web/preview/pr-2-demo`"),
        "{actions:#?}"
    );
    let marks = h.env.store.notice_marks("expire-closed").await.unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0].resource_id, merged);
    assert_eq!(marks[0].rule.as_deref(), Some("pull_request"));
    assert!(
        marks[0].reason.contains("pull request #1 merged"),
        "{}",
        marks[0].reason
    );
    assert_eq!(marks[0].due_at, h.sim.clock().now() + TimeDelta::hours(24));
    assert_eq!(h.branch_names(&p), all);
    assert_eq!(deletes(), 0);

    // 23 hours later: still under notice.
    h.sim.clock().advance(Duration::from_secs(23 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(r.counts.succeeded, 0, "{actions:#?}");
    assert!(
        reason_of(&actions, "preview/pr-1-fix-login")
            .reason
            .contains("under notice since"),
        "{actions:#?}"
    );
    assert_eq!(h.branch_names(&p), all);
    assert_eq!(deletes(), 0);

    // Past the notice and still merged: deleted; the kept one stays.
    h.sim.clock().advance(Duration::from_secs(2 * 3600));
    let (r, actions) = h.run(&job, false).await;
    assert_eq!(
        (r.status, r.counts.succeeded),
        (RunStatus::Succeeded, 1),
        "{actions:#?}"
    );
    let done = reason_of(&actions, "preview/pr-1-fix-login");
    assert_eq!(done.outcome, ActionOutcome::Succeeded);
    assert_eq!(done.rule.as_deref(), Some("pull_request"));
    assert_eq!(h.branch_names(&p), ["main", "preview/pr-2-demo"]);
    assert_eq!(deletes(), 1);
    assert!(actions
        .iter()
        .all(|a| a.resource_id != kept || a.outcome != ActionOutcome::Succeeded));
    assert!(h
        .env
        .store
        .notice_marks("expire-closed")
        .await
        .unwrap()
        .is_empty());
    forge.shutdown().await;
}
