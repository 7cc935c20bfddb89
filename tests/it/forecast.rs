//! Forecasts end to end: an account exported from a seeded emulator (through the real
//! client), then the policy's real jobs simulated over it, checked against expectations
//! computed by hand from the policy, the fixture and the calendar.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use neon_sim::SimConfig;
use neon_steward::forecast::fixture::{export, Fixture};
use neon_steward::forecast::simulate::Activity;
use neon_steward::forecast::timeline::{Event, Forecast, NEON};

use crate::helpers::spawn_sim;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

/// Friday 2026-03-20 12:00 UTC: Berlin changes to summer time on Sunday 2026-03-29.
const T0: &str = "2026-03-20T12:00:00Z";

fn example_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml")
}

/// The seeded account, in neon-sim's fixture format (times relative to [`T0`]).
fn seeded_account() -> String {
    serde_json::json!({
        "projects": [
            {
                "name": "prod-shop",
                "created_at": "2025-01-01T00:00:00Z",
                "branches": [
                    {"name": "production", "default": true, "created_at": "2025-01-01T00:00:00Z",
                     "endpoints": [{"type": "read_write", "activity": "busy"}]},
                    // Idle since T0 - 1d: idle_ttl 3d makes it due at T0 + 2d.
                    {"name": "preview/pr-1-idle", "parent": "production",
                     "created_at": "2026-03-18T12:00:00Z",
                     "endpoints": [{"type": "read_write", "state": "idle",
                                    "last_active": "2026-03-19T12:00:00Z"}]},
                    // Idle since T0 - 12h: due at T0 + 2.5d (before its ttl, at T0 + 4.5d),
                    // when it is the only one matched.
                    {"name": "preview/pr-2-idle", "parent": "production",
                     "created_at": "2026-03-18T00:00:00Z",
                     "endpoints": [{"type": "read_write", "state": "idle",
                                    "last_active": "2026-03-20T00:00:00Z"}]},
                    // Excluded by the policy (`preview/keep-*`).
                    {"name": "preview/keep-demo", "parent": "production",
                     "created_at": "2026-01-01T00:00:00Z"}
                ],
                "snapshots": [
                    {"branch": "production", "name": "by-hand", "created_at": "2026-03-01T00:00:00Z"}
                ]
            }
        ]
    })
    .to_string()
}

/// Starts the seeded emulator at [`T0`] and exports it with the real client.
async fn exported(account: &str) -> (Fixture, String, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("seed.json");
    std::fs::write(&path, account).expect("write the seed");
    let sim = spawn_sim(SimConfig::default().virtual_clock(at(T0)).fixture(&path)).await;
    let (fixture, notes) = export(&sim.client(), false, sim.clock().now())
        .await
        .expect("export");
    assert_eq!(notes, Default::default());
    let text = serde_json::to_string_pretty(&fixture).expect("json");
    let passwords: Vec<String> = sim
        .state()
        .lock()
        .roles
        .values()
        .flatten()
        .filter_map(|r| r.password.clone())
        .collect();
    let key = sim.api_key();
    let mut secrets = passwords;
    secrets.push(key);
    (fixture, text, secrets)
}

async fn forecast(policy: &Path, fixture_text: &str, days: i64) -> Forecast {
    let fixture: neon_sim::seed::Fixture =
        serde_json::from_str(fixture_text).expect("the export is a neon-sim fixture");
    let from = fixture.exported_at.expect("exported_at");
    neon_steward::forecast::simulate(
        policy,
        Path::new("account.json"),
        &fixture,
        from,
        from + TimeDelta::days(days),
        &Activity::default(),
        chrono_tz::UTC,
    )
    .await
    .expect("forecast")
}

fn find<'a>(f: &'a Forecast, job: &str, action: &str, resource: &str) -> Vec<&'a Event> {
    f.events
        .iter()
        .filter(|e| e.job == job && e.action == action && e.resource.contains(resource))
        .collect()
}

#[test]
fn the_export_holds_no_secret() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // The production branch also carries a backup schedule, which the export keeps.
        let mut account: serde_json::Value =
            serde_json::from_str(&seeded_account()).expect("the seed is JSON");
        account["projects"][0]["branches"][0]["backup_schedule"] =
            serde_json::json!([{"frequency": "daily", "hour": 3, "retention_seconds": 604800}]);
        let (fixture, text, secrets) = exported(&account.to_string()).await;
        assert!(!secrets.is_empty());
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret is in the fixture");
        }
        let lower = text.to_lowercase();
        for word in [
            "password",
            "postgres://",
            "postgresql://",
            "connection",
            "api_key",
            "token",
        ] {
            assert!(!lower.contains(word), "{word} in the fixture:\n{text}");
        }
        // What it does hold: the tree, with the default branch under its own name.
        let p = &fixture.projects[0];
        assert_eq!(p.name, "prod-shop");
        let names: Vec<&str> = p.branches.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names[0], "production");
        assert!(p.branches[0].default);
        assert_eq!(p.branches.len(), 4);
        let pr1 = p
            .branches
            .iter()
            .find(|b| b.name == "preview/pr-1-idle")
            .unwrap();
        assert_eq!(pr1.parent.as_deref(), Some("production"));
        assert_eq!(
            pr1.endpoints[0].last_active,
            Some(at("2026-03-19T12:00:00Z"))
        );
        assert_eq!(p.snapshots.len(), 1);
        assert_eq!(p.snapshots[0].branch, "production");
        let schedule = serde_json::to_value(&p.branches[0].backup_schedule).unwrap();
        assert_eq!(
            schedule,
            serde_json::json!([{"frequency": "daily", "hour": 3, "retention_seconds": 604800}])
        );
        assert!(pr1.backup_schedule.is_empty(), "child branches have none");
    });
}

#[test]
fn redacted_names_are_stable_placeholders() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("seed.json");
        std::fs::write(&path, seeded_account()).expect("write");
        let sim = spawn_sim(SimConfig::default().virtual_clock(at(T0)).fixture(&path)).await;
        let now = sim.clock().now();
        let (a, _) = export(&sim.client(), true, now).await.expect("export");
        let (b, _) = export(&sim.client(), true, now).await.expect("export");
        assert_eq!(a, b, "two exports of the same account are identical");
        let text = serde_json::to_string(&a).expect("json");
        for name in [
            "prod-shop",
            "production",
            "pr-1-idle",
            "keep-demo",
            "by-hand",
        ] {
            assert!(!text.contains(name), "{name} is not redacted: {text}");
        }
        assert_eq!(a.projects[0].name, "project-1");
        assert_eq!(a.projects[0].branches[0].name, "branch-1");
        assert_eq!(a.projects[0].snapshots[0].branch, "branch-1");
        // Still a fixture neon-sim loads.
        let _: neon_sim::seed::Fixture = serde_json::from_str(&text).expect("loads");
    });
}

/// The example policy over 30 days (consumption is not run; suspend-dev-at-night selects no
/// project of this account).
#[test]
fn example_policy_over_thirty_days() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_, text, _) = exported(&seeded_account()).await;
        let f = forecast(&example_policy(), &text, 30).await;
        let day = |e: &Event| (e.at - at(T0)).num_days();

        // idle_ttl 3d: pr-1 has been idle since T0 - 1d, so it is due once idle > 3d, at the
        // first 15-minute tick after T0 + 2d: 2026-03-22T12:15Z, day 2. Two branches are
        // matched then (pr-1, pr-2): one delete is within max_actions_percent 50.
        let deleted = find(&f, "expire-previews", "delete_branch", "preview/pr-1-idle");
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(deleted[0].at, at("2026-03-22T12:15:00Z"));
        assert_eq!(day(deleted[0]), 2);
        assert_eq!(deleted[0].outcome, "succeeded");
        // pr-2 is due from 2026-03-23T00:15Z (idle since T0 - 12h), when it is the only
        // matched branch: 1 delete of 1 exceeds 50%, so the run refuses, at every tick after.
        assert!(find(&f, "expire-previews", "delete_branch", "pr-2").is_empty());
        let refused: Vec<&Event> = f
            .events
            .iter()
            .filter(|e| e.job == "expire-previews" && e.action == "run")
            .collect();
        assert_eq!(
            refused[0].at,
            at("2026-03-23T00:15:00Z"),
            "{:?}",
            refused[0]
        );
        assert!(
            refused[0].reason.contains("max_actions_percent"),
            "{}",
            refused[0].reason
        );
        let ticks_after =
            (at(T0) + TimeDelta::days(30) - at("2026-03-23T00:15:00Z")).num_minutes() / 15;
        assert_eq!(refused.len() as i64, ticks_after);
        assert!(find(&f, "expire-previews", "delete_branch", "keep-demo").is_empty());
        assert_eq!(f.summary.branches_deleted, 1);

        // nightly-snapshots at 03:00 Berlin: 30 ticks (2026-03-21 .. 2026-04-19 local).
        let created = find(&f, "nightly-snapshots", "create_snapshot", "");
        assert_eq!(created.len(), 30);
        assert_eq!(created[0].at, at("2026-03-21T02:00:00Z")); // CET
        assert_eq!(created[29].at, at("2026-04-19T01:00:00Z")); // CEST
                                                                // Kept on day 30 (restic semantics in Europe/Berlin, newest 2026-04-19, a Sunday):
                                                                // keep_last 3 and keep_daily 7: 04-13 .. 04-19; keep_weekly 4 (ISO weeks): 04-19,
                                                                // 04-12, 04-05, 03-29; keep_monthly 6: 04-19, 03-31. Union: 11. The hand-made
                                                                // snapshot is not the job's and stays.
        let end = &f.summary.snapshots_at_end;
        assert_eq!(end.len(), 1, "{end:?}");
        assert_eq!(
            (
                end[0].branch.as_str(),
                end[0].snapshots,
                end[0].made_by_policy
            ),
            ("production", 12, 11)
        );
        assert_eq!(f.summary.snapshots_deleted, 30 - 11);
        let kept_names: Vec<String> = [
            "04-13", "04-14", "04-15", "04-16", "04-17", "04-18", "04-19", "04-12", "04-05",
            "03-29", "03-31",
        ]
        .iter()
        .map(|d| format!("2026-{d}"))
        .collect();
        let deleted_snaps: Vec<&Event> = find(&f, "nightly-snapshots", "delete_snapshot", "");
        for e in &deleted_snaps {
            assert!(
                !kept_names.iter().any(|d| e.resource.contains(d.as_str())),
                "{} should be kept",
                e.resource
            );
        }
        assert!(find(&f, "nightly-snapshots", "delete_snapshot", "by-hand").is_empty());
        assert!(
            f.events.iter().all(|e| e.job != NEON),
            "nothing expires in 30 days"
        );
        assert!(f.notes.iter().any(|n| n.contains("consumption")));
    });
}

/// ttl alone (the example policy without its idle_ttl): a branch 5 days from its ttl is
/// deleted on day 5.
#[test]
fn a_branch_five_days_from_its_ttl_goes_on_day_five() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let example = std::fs::read_to_string(example_policy()).expect("example");
        assert!(example.contains("idle_ttl = \"3d\"\n"));
        let dir = tempfile::tempdir().expect("temp dir");
        let policy = dir.path().join("ttl.toml");
        std::fs::write(&policy, example.replace("idle_ttl = \"3d\"\n", "")).expect("write");
        let account = serde_json::json!({"projects": [{
        "name": "staging-web", "created_at": "2025-01-01T00:00:00Z",
        "branches": [
            {"name": "main", "created_at": "2025-01-01T00:00:00Z"},
            // ttl 7d, 2 days old: 5 days to go.
            {"name": "preview/pr-3", "created_at": "2026-03-18T12:00:00Z"},
            // 5.5 days to go: due on day 6, alone, so refused by max_actions_percent.
            {"name": "pr-4", "created_at": "2026-03-19T00:00:00Z"}
        ]}]})
        .to_string();
        let (_, text, _) = exported(&account).await;
        let f = forecast(&policy, &text, 7).await;
        let deleted = find(&f, "expire-previews", "delete_branch", "preview/pr-3");
        assert_eq!(deleted.len(), 1, "{:?}", f.events);
        // Due once its age exceeds 7d (2026-03-25T12:00Z): the next tick.
        assert_eq!(deleted[0].at, at("2026-03-25T12:15:00Z"));
        assert_eq!((deleted[0].at - at(T0)).num_days(), 5);
        assert!(find(&f, "expire-previews", "delete_branch", "pr-4").is_empty());
    });
}

/// A weekend window in Europe/Berlin suspends at Saturday 00:00 local time and resumes at
/// Monday 00:00, before and after the change to summer time (Sunday 2026-03-29).
#[test]
fn a_weekend_window_suspends_on_saturday_in_its_zone_across_dst() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let policy = dir.path().join("weekend.toml");
        std::fs::write(
            &policy,
            r#"
[[jobs]]
name = "weekends-off"
kind = "suspend_computes"
every = "30m"
windows = ["Sat-Sun"]
window_timezone = "Europe/Berlin"
resume = true

[jobs.projects]
names = ["dev-*"]

[jobs.endpoints]
type = "read_write"
branches = ["dev"]

[[jobs]]
name = "consumption"
kind = "collect_consumption"
schedule = "5 * * * *"
granularity = "hourly"
metrics = ["compute_unit_seconds"]
org_id = "org-none"
endpoint = "v2"

[jobs.prices]
compute_unit_seconds = 0.0001
"#,
        )
        .expect("write");
        let account = serde_json::json!({"projects": [{
        "name": "dev-app", "created_at": "2025-01-01T00:00:00Z",
        "branches": [
            {"name": "main", "created_at": "2025-01-01T00:00:00Z"},
            // Running, no autosuspend, no traffic: only the window suspends it.
            {"name": "dev", "created_at": "2026-01-01T00:00:00Z",
             "endpoints": [{"type": "read_write", "state": "active",
                            "suspend_timeout_seconds": -1,
                            "last_active": "2026-03-20T11:00:00Z"}]}
        ]}]})
        .to_string();
        let (_, text, _) = exported(&account).await;
        let f = forecast(&policy, &text, 17).await;
        let times = |action: &str| -> Vec<DateTime<Utc>> {
            find(&f, "weekends-off", action, "(branch dev)")
                .iter()
                .map(|e| e.at)
                .collect()
        };
        assert_eq!(
            times("suspend_endpoint"),
            [
                at("2026-03-20T23:00:00Z"), // Sat 21 March 00:00 CET
                at("2026-03-27T23:00:00Z"), // Sat 28 March 00:00 CET
                at("2026-04-03T22:00:00Z"), // Sat 4 April 00:00 CEST
            ]
        );
        assert_eq!(
            times("start_endpoint"),
            [
                at("2026-03-22T23:00:00Z"), // Mon 23 March 00:00 CET
                at("2026-03-29T22:00:00Z"), // Mon 30 March 00:00 CEST
                at("2026-04-05T22:00:00Z"), // Mon 6 April 00:00 CEST
            ]
        );
        // Suspended 48 h, 47 h (the weekend clocks went forward), 48 h.
        let s = &f.summary;
        assert!((s.compute_hours_suspended - 143.0).abs() < 1e-9, "{s:?}");
        let cu = s.compute_unit_hours_suspended / s.compute_hours_suspended;
        assert!(cu >= 0.25, "billed size {cu}");
        let cost = s.estimated_cost_saved.expect("priced");
        assert!((cost - 143.0 * cu * 3600.0 * 0.0001).abs() < 1e-6, "{cost}");
        assert_eq!((s.suspends, s.resumes), (3, 3));
    });
}

/// `plan --at` through the real binary against a seeded emulator: a preview branch created
/// 1h ago under a 2h ttl falls due in 1h. Planned at now + 30min it is not deleted; at
/// now + 90min the dry run at that time plans its delete (the job's only tick is ~12h away,
/// so no simulated run before `--at` takes it first). The real account sees only reads.
#[tokio::test]
async fn plan_at_plans_a_delete_only_after_the_branch_falls_due() {
    use chrono::Timelike as _;
    let now = Utc::now();
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = dir.path().join("seed.json");
    let account = serde_json::json!({"projects": [{
        "name": "shop",
        "created_at": "2025-01-01T00:00:00Z",
        "branches": [
            {"name": "production", "default": true, "created_at": "2025-01-01T00:00:00Z"},
            {"name": "preview/pr-7", "parent": "production",
             "created_at": ts(now - TimeDelta::hours(1))},
            // Younger: due at now + 2h, after both --at times.
            {"name": "preview/pr-8", "parent": "production", "created_at": ts(now)}
        ]
    }]});
    std::fs::write(&seed, account.to_string()).expect("write the seed");
    let sim = spawn_sim(SimConfig::default().virtual_clock(now).fixture(&seed)).await;
    // One tick a day, 12h from now's hour: none falls in [now, now + 90min].
    let hour = (now.hour() + 12) % 24;
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[[jobs]]\nname = \"expire-previews\"\nkind = \"expire_branches\"\n\
             schedule = \"0 {hour} * * *\"\ntimezone = \"UTC\"\nttl = \"2h\"\n\
             [jobs.branches]\nnames = [\"preview/*\"]\n"
        ),
    )
    .expect("write the policy");

    let plan_at = |at: DateTime<Utc>| {
        let (dir, policy) = (dir.path().to_path_buf(), policy.clone());
        let (base, key) = (sim.base_url(), sim.api_key());
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_neon-steward"))
                .current_dir(&dir)
                .env_remove("NEON_STEWARD_CONFIG")
                .env_remove("CREDENTIALS_DIRECTORY")
                .env("NEON_API_KEY", key)
                .env("NEON_STEWARD_BASE_URL", base)
                .env(
                    "NEON_STEWARD_STORE_URL",
                    format!("sqlite://{}/state.db", dir.display()),
                )
                .env("XDG_CONFIG_HOME", dir.join("xdg"))
                .arg("--config")
                .arg(&policy)
                .args(["plan", "--at", &ts(at), "--output", "json"])
                .output()
                .expect("the binary runs");
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON plan")
        })
    };
    let planned_deletes = |v: &serde_json::Value| -> Vec<String> {
        let runs = v["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 1, "{v:#}");
        assert_eq!(runs[0]["job"], "expire-previews");
        assert_eq!(runs[0]["status"], "succeeded", "{v:#}");
        runs[0]["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .filter(|a| a["action"] == "delete_branch")
            .map(|a| a["resource_name"].as_str().unwrap_or("").to_string())
            .collect()
    };

    let before = plan_at(now + TimeDelta::minutes(30)).await.expect("join");
    assert_eq!(planned_deletes(&before), Vec::<String>::new(), "{before:#}");
    assert_eq!(before["runs"][0]["counts"]["planned"], 0, "{before:#}");
    assert_eq!(
        before["simulated_before"]["events"],
        serde_json::json!([]),
        "no tick before --at"
    );

    let after = plan_at(now + TimeDelta::minutes(90)).await.expect("join");
    assert_eq!(
        planned_deletes(&after),
        vec!["preview/pr-7".to_string()],
        "{after:#}"
    );
    assert_eq!(after["runs"][0]["counts"]["planned"], 1, "{after:#}");
    assert_eq!(after["simulated_before"]["events"], serde_json::json!([]));

    // Nothing changed on the account: no mutation logged, only GETs sent.
    assert!(sim.mutations().is_empty(), "{:?}", sim.mutations());
    let sent = sim.sent();
    assert!(!sent.is_empty(), "the account was read");
    assert!(
        sent.iter().all(|s| s.method == "GET"),
        "{:?}",
        sent.iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>()
    );
    let names: Vec<String> = sim
        .state()
        .lock()
        .branches
        .values()
        .map(|b| b.name.clone())
        .collect();
    assert!(names.contains(&"preview/pr-7".to_string()), "{names:?}");
}
