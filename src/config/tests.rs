use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_env(Path::new("policy.toml"), text, &no_env)
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const JOB: &str = r#"
[[jobs]]
name = "nightly"
kind = "snapshot_branches"
schedule = "0 3 * * *"
"#;

#[test]
fn minimal_defaults() {
    let c = parse(JOB).unwrap();
    assert_eq!(c.api.base_url, DEFAULT_BASE_URL);
    assert_eq!(c.api.rate_limit_per_minute, 700);
    assert_eq!(c.api.burst, 40);
    assert!(c.api.api_key.is_none());
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:9187");
    assert_eq!(c.store.url, "sqlite://./neon-steward.db");
    assert_eq!(c.store.history_retention, Duration::from_secs(90 * 86400));
    assert_eq!(
        c.store.consumption_retention,
        Duration::from_secs(400 * 86400)
    );
    let j = &c.jobs[0];
    assert_eq!(j.timezone, chrono_tz::UTC);
    assert_eq!(j.concurrency, ConcurrencyPolicy::Forbid);
    assert_eq!(j.missed, MissedPolicy::Skip);
    assert!(j.enabled && !j.dry_run);
    match &j.spec {
        JobSpec::SnapshotBranches(s) => assert_eq!(s.name_template.as_str(), NameTemplate::DEFAULT),
        other => panic!("wrong spec {other:?}"),
    }
}

#[test]
fn env_overrides_and_key_sources() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("neon-api-key");
    std::fs::write(&key, "napi_from_credentials\n").unwrap();
    let d = dir.path().to_string_lossy().to_string();
    let env = move |k: &str| match k {
        "CREDENTIALS_DIRECTORY" | "STATE_DIRECTORY" => Some(d.clone()),
        "NEON_STEWARD_LISTEN" => Some("127.0.0.1:0".into()),
        "NEON_STEWARD_BASE_URL" => Some("http://127.0.0.1:1234/api/v2".into()),
        _ => None,
    };
    let c = parse_with_env(Path::new("p.toml"), JOB, &env).unwrap();
    assert_eq!(
        c.api.api_key.as_ref().unwrap().expose(),
        "napi_from_credentials"
    );
    assert_eq!(c.api.base_url, "http://127.0.0.1:1234/api/v2");
    assert_eq!(c.http.listen.port(), 0);
    assert_eq!(
        c.store.url,
        format!("sqlite://{}/neon-steward.db", dir.path().display())
    );

    // NEON_API_KEY wins over every file.
    let env2 = |k: &str| (k == "NEON_API_KEY").then(|| "napi_env".to_string());
    let c = parse_with_env(Path::new("p.toml"), JOB, &env2).unwrap();
    assert_eq!(c.api.api_key.unwrap().expose(), "napi_env");

    // api_key_file is relative to the policy file's directory.
    std::fs::write(dir.path().join("key"), "napi_file").unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, format!("[api]\napi_key_file = \"key\"\n{JOB}")).unwrap();
    let c = load_with_env(&policy, &no_env).unwrap();
    assert_eq!(c.api.api_key.unwrap().expose(), "napi_file");
}

#[test]
fn defaults_are_inherited_and_overridden() {
    let c = parse(
        r#"
[defaults]
dry_run = true
timezone = "Europe/Berlin"
max_actions = 10
concurrency = "replace"

[[jobs]]
name = "a"
kind = "expire_branches"
every = "15m"
ttl = "7d"
[jobs.branches]
names = ["preview/*", "pr-*"]
default = false

[[jobs]]
name = "b"
kind = "expire_branches"
every = "1h"
idle_ttl = "3d"
dry_run = false
timezone = "UTC"
max_actions = 2
"#,
    )
    .unwrap();
    let (a, b) = (&c.jobs[0], &c.jobs[1]);
    assert!(a.dry_run && !b.dry_run);
    assert_eq!(a.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(b.timezone, chrono_tz::UTC);
    assert_eq!(a.limits.max_actions, Some(10));
    assert_eq!(b.limits.max_actions, Some(2));
    assert_eq!(a.concurrency, ConcurrencyPolicy::Replace);
    assert_eq!(a.schedule, Schedule::Every(Duration::from_secs(900)));
    // Compiled once here; the jobs use these patterns as they are.
    let b = &a.selectors.branches;
    assert!(b.names.is_match("preview/x") && b.names.is_match("pr-12"));
    assert!(!b.names.is_match("main"));
    assert_eq!(b.names.compiled().len(), b.names.patterns.len());
    assert_eq!(b.default, DefaultBranchFilter::Exclude);
}

#[test]
fn example_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let c = load_with_env(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<JobKind> = c.jobs.iter().map(|j| j.kind).collect();
    for k in [
        JobKind::SnapshotBranches,
        JobKind::ExpireBranches,
        JobKind::SuspendComputes,
        JobKind::CollectConsumption,
        JobKind::EnforceBudget,
    ] {
        assert!(kinds.contains(&k), "example lacks a {k} job");
    }
    let suspend = c
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::SuspendComputes)
        .unwrap();
    match &suspend.spec {
        JobSpec::SuspendComputes(s) => assert!(!s.windows.is_empty()),
        _ => unreachable!("kind and spec agree"),
    }
}

#[test]
fn name_template_renders() {
    let t = NameTemplate::parse("{job}/{branch}-{date}-{time}").unwrap();
    let at = chrono_tz::Europe::Berlin
        .with_ymd_and_hms(2026, 3, 29, 3, 4, 5)
        .unwrap();
    assert_eq!(
        t.render("main", "nightly", &at),
        "nightly/main-2026-03-29-030405"
    );
    assert!(NameTemplate::parse("{branch}-{hour}")
        .unwrap_err()
        .contains("unknown placeholder `{hour}`"));
    // Without {job}, two snapshot jobs would treat each other's snapshots as their own.
    let e = NameTemplate::parse("{branch}-snap-{date}-{time}").unwrap_err();
    assert!(e.contains("lacks {job}"), "{e}");
    let e = NameTemplate::parse("{job}-{branch}-{date}").unwrap_err();
    assert!(e.contains("lacks {time}"), "{e}");
}

#[test]
fn secrets_never_in_errors_or_debug() {
    let e = err("[api]\napi_key = \"napi_leaky_secret\"\n");
    assert!(!e.contains("napi_leaky_secret"));
    let env = |k: &str| (k == "NEON_API_KEY").then(|| "napi_top_secret".to_string());
    let c = parse_with_env(Path::new("p.toml"), JOB, &env).unwrap();
    assert!(!format!("{c:?}").contains("napi_top_secret"));
}

#[test]
fn error_unknown_key() {
    insta::assert_snapshot!(err("[api]\nbase_url = \"https://x\"\ntimeout_secs = 3\n"));
}

#[test]
fn error_unknown_key_in_job() {
    insta::assert_snapshot!(err(&format!("{JOB}scheduel = \"x\"\n")));
}

#[test]
fn error_bad_cron() {
    insta::assert_snapshot!(err("[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nschedule = \"0 3 * *\"\nttl = \"7d\"\n"));
}

#[test]
fn error_bad_cron_value() {
    insta::assert_snapshot!(err("[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nschedule = \"0 25 * * *\"\nttl = \"7d\"\n"));
}

#[test]
fn error_unknown_timezone() {
    insta::assert_snapshot!(err(&format!("{JOB}timezone = \"Europe/Berlinn\"\n")));
}

#[test]
fn error_bad_duration() {
    insta::assert_snapshot!(err(
        "[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7x\"\n"
    ));
}

#[test]
fn durations_are_bounded() {
    let e = err("[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\njitter = \"1000000000d\"\n");
    assert!(e.contains(":6:10:"), "{e}");
    assert!(e.contains("too long: at most 3650d (10 years)"), "{e}");
}

#[test]
fn error_duplicate_job() {
    insta::assert_snapshot!(err(&format!("{JOB}{JOB}")));
}

#[test]
fn error_unknown_kind() {
    insta::assert_snapshot!(err(
        "[[jobs]]\nname = \"a\"\nkind = \"delete_everything\"\nevery = \"1h\"\n"
    ));
}

#[test]
fn error_api_key_in_file() {
    insta::assert_snapshot!(err("[api]\napi_key = \"napi_leaky_secret\"\n"));
}

#[test]
fn error_wrong_kind_option() {
    insta::assert_snapshot!(err(&format!("{JOB}ttl = \"7d\"\n")));
}

#[test]
fn error_wrong_kind_table() {
    insta::assert_snapshot!(err(
        "[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\n[jobs.retention]\nkeep_last = 3\n"
    ));
}

#[test]
fn error_schedule_and_every() {
    insta::assert_snapshot!(err(&format!("{JOB}every = \"1h\"\n")));
}

#[test]
fn error_bad_window() {
    insta::assert_snapshot!(err(
        "[[jobs]]\nname = \"s\"\nkind = \"suspend_computes\"\nevery = \"5m\"\nwindows = [\"Sat-Sun\", \"Mon-Fry 20:00-08:00\"]\n"
    ));
}

#[test]
fn error_bad_glob_and_regex() {
    insta::assert_snapshot!(err(&format!(
        "{JOB}[jobs.projects]\nnames = [\"prod-[\"]\n"
    )));
    insta::assert_snapshot!(err(&format!(
        "{JOB}[jobs.projects]\nname_regex = \"(unclosed\"\n"
    )));
}

#[test]
fn error_missing_name() {
    insta::assert_snapshot!(err(
        "[[jobs]]\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"1d\"\n"
    ));
}

#[test]
fn consumption_endpoint_is_explicit_and_v2_needs_org_id() {
    let base = "[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"compute_unit_seconds\"]\n";
    let e = err(base);
    assert!(
        e.contains("needs `org_id`") && e.contains("endpoint = \"legacy\""),
        "{e}"
    );
    assert!(e.contains("policy.toml:"), "the error names where: {e}");
    let spec = |text: &str| match &parse(text).unwrap().jobs[0].spec {
        JobSpec::CollectConsumption(s) => s.clone(),
        other => panic!("wrong spec {other:?}"),
    };
    let v2 = spec(&format!("{base}org_id = \"org-1\"\n"));
    assert_eq!(
        (v2.endpoint, v2.org_id.as_deref()),
        (ConsumptionEndpoint::V2, Some("org-1"))
    );
    let legacy = spec(&base.replace(
        "metrics = [\"compute_unit_seconds\"]\n",
        "metrics = [\"active_time_seconds\"]\nendpoint = \"legacy\"\n",
    ));
    assert_eq!(
        (legacy.endpoint, legacy.org_id),
        (ConsumptionEndpoint::Legacy, None)
    );
    let e = err(&format!("{base}endpoint = \"v3\"\n"));
    assert!(e.contains("v3") && e.contains("legacy"), "{e}");
    let e = err(&format!("{JOB}endpoint = \"legacy\"\n"));
    assert!(
        e.contains("endpoint"),
        "only collect_consumption takes it: {e}"
    );
}

#[test]
fn name_template_needs_job_date_and_time() {
    for (t, missing) in [
        ("{branch}-snap-{date}-{time}", "{job}"),
        ("{job}-{branch}-{date}", "{time}"),
        ("{job}-{branch}", "{date}, {time}"),
    ] {
        let e = err(&format!("{JOB}name_template = \"{t}\"\n"));
        assert!(
            e.contains(&format!("lacks {missing}")) && e.contains("policy.toml:6"),
            "{t}: {e}"
        );
    }
    let c = parse(&format!(
        "{JOB}name_template = \"{{job}}/{{branch}}@{{date}}T{{time}}\"\n"
    ))
    .unwrap();
    match &c.jobs[0].spec {
        JobSpec::SnapshotBranches(s) => {
            assert_eq!(s.name_template.as_str(), "{job}/{branch}@{date}T{time}")
        }
        other => panic!("wrong spec {other:?}"),
    }
    assert_eq!(NameTemplate::DEFAULT, "{job}-{branch}-{date}-{time}");
}

fn snapshot_job(name: &str, template: Option<&str>) -> String {
    let t = template.map_or(String::new(), |t| format!("name_template = \"{t}\"\n"));
    format!(
        "[[jobs]]\nname = \"{name}\"\nkind = \"snapshot_branches\"\nschedule = \"0 3 * * *\"\n{t}"
    )
}

#[test]
fn snapshot_templates_that_can_render_the_same_name_are_refused() {
    // Distinct job names and the default template: names start differently.
    assert!(parse(&format!(
        "{}{}",
        snapshot_job("nightly", None),
        snapshot_job("hourly", None)
    ))
    .is_ok());
    // Job `a` of branch `b-x` and job `a-b` of branch `x` both render `a-b-x-<date>-<time>`.
    let e = err(&format!(
        "{}{}",
        snapshot_job("a", None),
        snapshot_job("a-b", None)
    ));
    assert!(
        e.contains("job `a-b`") && e.contains("job `a`") && e.contains("can coincide"),
        "{e}"
    );
    assert!(e.contains("e.g. `a-b-"), "an example name is given: {e}");
    // A fixed part the other cannot produce keeps them apart.
    assert!(parse(&format!(
        "{}{}",
        snapshot_job("a", Some("{job}/{branch}-{date}-{time}")),
        snapshot_job("a-b", Some("{job}:{branch}-{date}-{time}"))
    ))
    .is_ok());
    // Templates that put the job elsewhere can still collide through {branch}.
    let e = err(&format!(
        "{}{}",
        snapshot_job("x", Some("{branch}-{job}-{date}-{time}")),
        snapshot_job("y", Some("{job}-{branch}-{date}-{time}"))
    ));
    assert!(e.contains("can coincide"), "{e}");
    // Expire jobs have no names to compare.
    assert!(parse(&format!(
        "{}[[jobs]]\nname = \"a-b\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\n",
        snapshot_job("a", None)
    ))
    .is_ok());
}

#[test]
fn collision_search_is_exact_on_small_cases() {
    let t = |s: &str| NameTemplate::parse(s).unwrap();
    // Same template, same job: trivially the same names.
    assert!(t(NameTemplate::DEFAULT)
        .collides_with("j", &t(NameTemplate::DEFAULT), "j")
        .is_some());
    // Digits never equal letters.
    assert!(t("{job}-{date}-{time}")
        .collides_with("n", &t("{job}-{date}-{time}"), "m")
        .is_none());
    // The example really is a name both render.
    assert!(t("{branch}-{job}-{date}-{time}")
        .collides_with("x", &t("{branch}-{date}-{time}-{job}"), "y")
        .is_none());
    let ex = t("{branch}-{job}-{date}-{time}")
        .collides_with("x", &t("{job}-{branch}-{date}-{time}"), "y")
        .unwrap();
    assert!(
        ex.starts_with("y-") && ex.contains("-x-0000-00-00-000000"),
        "{ex}"
    );
}

/// Durations are bounded where they are written: an absurd value would otherwise overflow
/// the scheduler's time arithmetic long after the file was accepted.
#[test]
fn error_durations_out_of_bounds() {
    let job = |extra: &str| {
        format!("[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\n{extra}")
    };
    assert_eq!(
        err(&job("jitter = \"1000000000d\"\n")),
        "policy.toml:6:10: duration `1000000000d` is too long: at most 3650d (10 years)"
    );
    assert_eq!(
        err(
            "[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"3651d\"\n"
        ),
        "policy.toml:5:7: duration `3651d` is too long: at most 3650d (10 years)"
    );
    assert_eq!(
        err(&job("jitter = \"2h\"\n")),
        "policy.toml:6:10: `jitter` (2h) must not exceed the job's `every` interval (1h)"
    );
    assert_eq!(
        err(&format!("[defaults]\njitter = \"25h\"\n{JOB}")),
        "policy.toml:2:10: `jitter` is too long (1day 1h): at most 24h"
    );
    assert_eq!(
        err(&job("timeout = \"8d\"\n")),
        "policy.toml:6:11: `timeout` is too long (8days): at most 7d"
    );
    assert_eq!(
        err(&format!("[api]\ntimeout = \"2h\"\n{JOB}")),
        "policy.toml:2:11: `timeout` of an API request is too long (2h): at most 1h"
    );
    // The bounds themselves are accepted.
    let c = parse(&job(
        "jitter = \"1h\"\ntimeout = \"7d\"\nstarting_deadline = \"3650d\"\n",
    ))
    .unwrap();
    assert_eq!(c.jobs[0].jitter, Some(Duration::from_secs(3600)));
    assert_eq!(c.jobs[0].timeout, Some(Duration::from_secs(7 * 86_400)));
}

const SUSPEND: &str = "[[jobs]]\nname = \"s\"\nkind = \"suspend_computes\"\nevery = \"5m\"\nidle_for = \"30m\"\nwindow_timezone = \"Europe/Berlin\"\n";

#[test]
fn endpoint_exclusions_and_timed_exclusions() {
    let text = format!(
        "{SUSPEND}[jobs.endpoints]\nexclude_ids = [\"ep-keep\"]\nexclude_branches = [\"release/*\"]\n\n\
         [[jobs.exclusions]]\nendpoint = \"ep-demo\"\nuntil = \"2026-12-31\"\nnote = \"sales demo\"\n\n\
         [[jobs.exclusions]]\nbranch = \"perf-*\"\nuntil = \"2026-06-01T12:00:00Z\"\n\n\
         [[jobs.exclusions]]\nproject = \"p-launch\"\nuntil = \"2026-07-01\"\n"
    );
    let c = parse(&text).unwrap();
    let j = &c.jobs[0];
    assert_eq!(j.selectors.endpoints.exclude_ids, vec!["ep-keep"]);
    assert!(j
        .selectors
        .endpoints
        .exclude_branches
        .is_match("release/1.2"));
    let JobSpec::SuspendComputes(s) = &j.spec else {
        panic!("wrong spec {:?}", j.spec)
    };
    assert_eq!(s.exclusions.len(), 3);
    // A date is midnight in window_timezone (CET in December).
    let berlin_midnight = Utc.with_ymd_and_hms(2026, 12, 30, 23, 0, 0).unwrap();
    assert_eq!(s.exclusions[0].until, berlin_midnight);
    let before = berlin_midnight - chrono::Duration::seconds(1);
    assert!(s.exclusions[0].covers(before, "p", "ep-demo", "main"));
    assert!(!s.exclusions[0].covers(berlin_midnight, "p", "ep-demo", "main"));
    assert!(!s.exclusions[0].covers(before, "p", "ep-other", "main"));
    assert!(s.exclusions[0].describe().contains("endpoint ep-demo"));
    assert!(s.exclusions[0].describe().ends_with("(sales demo)"));
    let t = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
    assert!(s.exclusions[1].covers(t, "p", "ep-x", "perf-load"));
    assert!(!s.exclusions[1].covers(t, "p", "ep-x", "main"));
    assert!(s.exclusions[2].covers(t, "p-launch", "ep-x", "main"));
    assert!(!s.exclusions[2].covers(t, "p-other", "ep-x", "main"));
}

#[test]
fn exclusion_errors_are_positioned() {
    // No target, two targets, an empty id.
    for body in [
        "until = \"2026-12-31\"\n",
        "endpoint = \"ep-1\"\nproject = \"p-1\"\nuntil = \"2026-12-31\"\n",
        "endpoint = \"\"\nuntil = \"2026-12-31\"\n",
    ] {
        let text = format!("{SUSPEND}[[jobs.exclusions]]\n{body}");
        let e = err(&text);
        assert!(e.contains("exactly one of `endpoint`"), "{e}");
        assert!(
            e.starts_with("policy.toml:7:1:"),
            "points at the entry: {e}"
        );
    }
    let e = err(&format!(
        "{SUSPEND}[[jobs.exclusions]]\nendpoint = \"ep-1\"\nuntil = \"next week\"\n"
    ));
    assert!(
        e.starts_with("policy.toml:9:9:") && e.contains("invalid date"),
        "{e}"
    );
    let e = err(&format!(
        "{SUSPEND}[[jobs.exclusions]]\nendpoint = \"ep-1\"\n"
    ));
    assert!(e.contains("until"), "until is required: {e}");
    let e = err(&format!(
        "{SUSPEND}[[jobs.exclusions]]\nbranch = \"perf-[\"\nuntil = \"2026-12-31\"\n"
    ));
    assert!(
        e.starts_with("policy.toml:8:10:") && e.contains("invalid glob"),
        "{e}"
    );
    let e = err(&format!(
        "{SUSPEND}[jobs.endpoints]\nexclude_branches = [\"a\", \"b[\"]\n"
    ));
    assert!(
        e.starts_with("policy.toml:8:") && e.contains("invalid glob"),
        "{e}"
    );
    let e = err(&format!(
        "{SUSPEND}[[jobs.exclusions]]\nendpoint = \"ep-1\"\nuntil = \"2026-12-31\"\nwhy = \"x\"\n"
    ));
    assert!(e.contains("unknown field `why`"), "{e}");
    let e = err(&format!(
        "{JOB}[[jobs.exclusions]]\nendpoint = \"ep-1\"\nuntil = \"2026-12-31\"\n"
    ));
    assert!(
        e.contains("`[[jobs.exclusions]]` is not valid for kind `snapshot_branches`")
            && e.contains("suspend_computes"),
        "{e}"
    );
}

#[test]
fn plain_http_base_url_only_to_loopback() {
    let with = |url: &str| format!("[api]\nbase_url = \"{url}\"\n{JOB}");
    for ok in [
        "https://console.neon.tech/api/v2",
        "http://127.0.0.1:8080/api/v2",
        "http://127.3.4.5/api/v2",
        "http://localhost:1234/api/v2",
        "http://LOCALHOST/api/v2",
        "http://[::1]:9000/api/v2",
    ] {
        let c = parse(&with(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(c.api.base_url, ok);
    }
    for bad in [
        "http://console.neon.tech/api/v2",
        "http://10.0.0.5/api/v2",
        "http://localhost.example.com/api/v2",
        "http://[::2]/api/v2",
        "http://128.0.0.1/api/v2",
    ] {
        let e = err(&with(bad));
        assert!(
            e.starts_with("policy.toml:2:12:") && e.contains("clear text"),
            "{bad}: {e}"
        );
    }
    let e = err(&with("ftp://example.com/"));
    assert!(e.contains("scheme `ftp`"), "{e}");
    let e = err(&with("https://"));
    assert!(e.contains("invalid base_url"), "{e}");

    // The environment override gets the same check, and names itself.
    let env_url =
        |url: &'static str| move |k: &str| (k == "NEON_STEWARD_BASE_URL").then(|| url.to_string());
    let e = parse_with_env(
        Path::new("policy.toml"),
        JOB,
        &env_url("http://neon.internal/api/v2"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("NEON_STEWARD_BASE_URL") && e.contains("clear text"),
        "{e}"
    );
    let c = parse_with_env(
        Path::new("policy.toml"),
        JOB,
        &env_url("http://127.0.0.1:9/api/v2"),
    )
    .unwrap();
    assert_eq!(c.api.base_url, "http://127.0.0.1:9/api/v2");
}

#[test]
fn store_url_password_never_in_debug() {
    let text = format!(
        "[store]\nurl = \"postgres://steward:hunter2@db.internal:5432/steward?sslmode=require&password=hunter3\"\n{JOB}"
    );
    let c = parse(&text).unwrap();
    assert!(
        c.store.url.contains("hunter2"),
        "the real URL is kept for connecting"
    );
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("hunter2") && !dbg.contains("hunter3"),
        "{dbg}"
    );
    assert!(
        dbg.contains(
            "postgres://steward:[redacted]@db.internal:5432/steward?sslmode=require&password=[redacted]"
        ),
        "{dbg}"
    );
}

// Issue 12: policies that were accepted although they could never work, and errors that had
// no position or message.

#[test]
fn error_store_url_scheme() {
    let e = err(&format!(
        "[store]\nurl = \"mysql://admin:hunter2@db/x\"\n{JOB}"
    ));
    assert!(!e.contains("hunter2"), "the password is not echoed: {e}");
    insta::assert_snapshot!(e);
}

#[test]
fn error_store_url_garbage() {
    insta::assert_snapshot!(err(&format!("[store]\nurl = \"garbage\"\n{JOB}")));
}

#[test]
fn store_url_from_env_is_checked() {
    let env = |k: &str| (k == "NEON_STEWARD_STORE_URL").then(|| "mysql://a:pw@h/db".to_string());
    let e = parse_with_env(Path::new("p.toml"), JOB, &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("NEON_STEWARD_STORE_URL") && !e.contains("pw@"),
        "{e}"
    );
    for ok in [
        "sqlite://./x.db",
        "sqlite::memory:",
        "postgres://u@h/db",
        "postgresql://h/db",
    ] {
        let c = parse(&format!("[store]\nurl = \"{ok}\"\n{JOB}")).unwrap();
        assert_eq!(c.store.url, ok);
    }
}

#[test]
fn error_cron_never_fires() {
    insta::assert_snapshot!(err("[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nschedule = \"0 3 31 2 *\"\nttl = \"7d\"\n"));
    // A date that exists only in leap years still fires.
    parse("[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nschedule = \"0 3 29 2 *\"\nttl = \"7d\"\n").unwrap();
}

#[test]
fn error_unknown_consumption_metric() {
    insta::assert_snapshot!(err("[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\norg_id = \"org-1\"\nmetrics = [\"compute_unit_seconds\", \"cpu_seconds\"]\n"));
}

#[test]
fn error_metric_of_the_other_endpoint() {
    let e = err("[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nendpoint = \"legacy\"\nmetrics = [\"compute_unit_seconds\"]\n");
    assert!(
        e.contains("policy.toml:6:12:") && e.contains("legacy endpoint"),
        "{e}"
    );
}

#[test]
fn per_branch_takes_the_branch_metrics_of_the_job() {
    let c = parse("[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\norg_id = \"org-1\"\nmetrics = [\"compute_unit_seconds\", \"snapshot_storage_bytes_month\", \"child_branch_bytes_month\"]\nper_branch = true\n").unwrap();
    let JobSpec::CollectConsumption(spec) = &c.jobs[0].spec else {
        panic!("a consumption job")
    };
    // Per project: every metric; per branch: those Neon reports per branch.
    assert_eq!(spec.metrics.len(), 3);
    assert_eq!(
        spec.branch_metrics,
        vec!["compute_unit_seconds", "child_branch_bytes_month"]
    );
    let c = parse("[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\norg_id = \"org-1\"\nmetrics = [\"compute_unit_seconds\"]\nper_branch = false\n").unwrap();
    let JobSpec::CollectConsumption(spec) = &c.jobs[0].spec else {
        panic!("a consumption job")
    };
    assert!(spec.branch_metrics.is_empty());
}

#[test]
fn error_per_branch_without_a_branch_metric_or_on_legacy() {
    let e = err("[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\norg_id = \"org-1\"\nmetrics = [\"extra_branches_month\"]\nper_branch = true\n");
    assert!(
        e.contains("policy.toml:7:14:") && e.contains("none of them"),
        "{e}"
    );
    let e = err("[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nendpoint = \"legacy\"\nmetrics = [\"compute_time_seconds\"]\nper_branch = true\n");
    assert!(
        e.contains("policy.toml:7:14:") && e.contains("endpoint = \"v2\""),
        "{e}"
    );
    let e = err(
        "[[jobs]]\nname = \"s\"\nkind = \"snapshot_branches\"\nevery = \"1h\"\nper_branch = true\n",
    );
    assert!(
        e.contains("policy.toml:5:") && e.contains("per_branch"),
        "{e}"
    );
}

#[test]
fn error_price_of_an_unlisted_metric() {
    insta::assert_snapshot!(err("[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\norg_id = \"org-1\"\nmetrics = [\"compute_unit_seconds\"]\n[jobs.prices]\nextra_branches_month = 1.0\n"));
}

#[test]
fn error_zero_ttl() {
    insta::assert_snapshot!(err(
        "[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"0s\"\n"
    ));
}

#[test]
fn error_zero_expires_in() {
    insta::assert_snapshot!(err(&format!("{JOB}expires_in = \"0s\"\n")));
}

#[test]
fn consumption_retention_keeps_at_least_the_budget_month() {
    let c = parse(&format!("[store]\nconsumption_retention = \"35d\"\n{JOB}")).unwrap();
    assert_eq!(
        c.store.consumption_retention,
        Duration::from_secs(35 * 86400)
    );
    let e = err(&format!("[store]\nconsumption_retention = \"30d\"\n{JOB}"));
    assert!(
        e.starts_with("policy.toml:2:25:") && e.contains("at least 35d") && e.contains("budget"),
        "{e}"
    );
    let e = err(&format!("[store]\nconsumption_retention = \"0d\"\n{JOB}"));
    assert!(e.contains("zero is not allowed"), "{e}");
}

#[test]
fn zero_is_refused_where_it_can_only_be_a_mistake() {
    for (text, at) in [
        (format!("[api]\ntimeout = \"0s\"\n{JOB}"), "policy.toml:2:11:"),
        (format!("[store]\nhistory_retention = \"0m\"\n{JOB}"), "policy.toml:2:21:"),
        (format!("[defaults]\nstarting_deadline = \"0s\"\n{JOB}"), "policy.toml:2:21:"),
        ("[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nidle_ttl = \"0h 0m\"\n".to_string(), "policy.toml:5:12:"),
        ("[[jobs]]\nname = \"a\"\nkind = \"suspend_computes\"\nevery = \"1h\"\nidle_for = \"0s\"\n".to_string(), "policy.toml:5:12:"),
    ] {
        let e = err(&text);
        assert!(e.starts_with(at) && e.contains("zero is not allowed"), "{text}\n{e}");
    }
    // Where zero means "none", it is still accepted.
    let c = parse(&format!(
        "[defaults]\njitter = \"0s\"\ntimeout = \"0s\"\n{JOB}"
    ))
    .unwrap();
    assert_eq!((c.jobs[0].jitter, c.jobs[0].timeout), (None, None));
}

#[test]
fn error_fractional_duration() {
    insta::assert_snapshot!(err(
        "[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"1.5h\"\n"
    ));
    let c = parse(
        "[[jobs]]\nname = \"a\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"1h 30m\"\n",
    )
    .unwrap();
    match &c.jobs[0].spec {
        JobSpec::ExpireBranches(s) => assert_eq!(s.ttl, Some(Duration::from_secs(5400))),
        other => panic!("wrong spec {other:?}"),
    }
}

#[test]
fn error_absurd_concurrency() {
    insta::assert_snapshot!(err(&format!("[api]\nconcurrency = 1000000000\n{JOB}")));
    assert_eq!(
        parse(&format!("[api]\nconcurrency = 64\n{JOB}"))
            .unwrap()
            .api
            .concurrency,
        64
    );
    let e = err(&format!("[api]\nmax_retries = 4000000000\n{JOB}"));
    assert!(
        e.starts_with("policy.toml:2:15:") && e.contains("at most 20"),
        "{e}"
    );
}

#[test]
fn empty_policies_warn() {
    for text in ["", "# nothing yet\n", "[api]\n"] {
        let c = parse(text).unwrap();
        assert!(c.jobs.is_empty());
        let w = c.warnings();
        assert!(w.len() == 1 && w[0].contains("no jobs"), "{text:?}: {w:?}");
    }
    let c = load_with_env(Path::new("/dev/null"), &no_env).unwrap();
    assert!(c.warnings().iter().any(|w| w.contains("no jobs")));
    assert!(parse(JOB).unwrap().warnings().is_empty());
}

#[test]
fn listening_beyond_loopback_warns() {
    let c = parse(&format!("[http]\nlisten = \"0.0.0.0:9187\"\n{JOB}")).unwrap();
    let w = c.warnings();
    assert!(
        w.len() == 1 && w[0].contains("0.0.0.0:9187") && w[0].contains("manual trigger is off"),
        "{w:?}"
    );
    let c = parse(&format!("[http]\nlisten = \"[::1]:9187\"\n{JOB}")).unwrap();
    assert!(c.warnings().is_empty());
}

#[test]
fn error_invalid_utf8() {
    let mut bytes = b"[[jobs]]\nname = \"caf".to_vec();
    bytes.extend([0xe9, b'"', b'\n']);
    let e = decode_policy(Path::new("policy.toml"), bytes).unwrap_err();
    assert_eq!(e.position, Some((2, 12)));
    insta::assert_snapshot!(e.to_string());
}

#[test]
fn error_nul_in_comment() {
    let e = err(&format!("{JOB}# a comment with a NUL \u{0} in it\n"));
    assert!(e.starts_with("policy.toml:6:"), "{e}");
    insta::assert_snapshot!(e);
}

#[test]
fn error_base_url_userinfo() {
    let e = err(&format!(
        "[api]\nbase_url = \"https://me:hunter2@console.neon.tech/api/v2\"\n{JOB}"
    ));
    assert!(
        !e.contains("hunter2") && !e.contains("me:"),
        "never echoed: {e}"
    );
    insta::assert_snapshot!(e);
    // Nor when the URL is refused for another reason, or comes from the environment.
    let e = err(&format!(
        "[api]\nbase_url = \"http://me:hunter2@example.com:99999/\"\n{JOB}"
    ));
    assert!(!e.contains("hunter2"), "{e}");
    let env = |k: &str| {
        (k == "NEON_STEWARD_BASE_URL").then(|| "https://u:hunter2@x.example/api/v2".to_string())
    };
    let e = parse_with_env(Path::new("p.toml"), JOB, &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("user info") && !e.contains("hunter2"), "{e}");
}

#[test]
fn error_api_key_shape() {
    let env = |k: &str| (k == "NEON_API_KEY").then(|| "napi_first\nnapi_second".to_string());
    let e = parse_with_env(Path::new("p.toml"), JOB, &env)
        .unwrap_err()
        .to_string();
    assert!(!e.contains("napi_"), "the key is not shown: {e}");
    insta::assert_snapshot!(e);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "napi one two\n").unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, format!("[api]\napi_key_file = \"key\"\n{JOB}")).unwrap();
    let e = load_with_env(&policy, &no_env).unwrap_err().to_string();
    assert!(e.contains("a space or tab") && !e.contains("napi"), "{e}");
}

#[test]
fn error_policy_too_large() {
    let e = load_with_env(Path::new("/dev/zero"), &no_env).unwrap_err();
    assert!(e.message.contains("larger than 1024 KiB"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.toml");
    std::fs::write(&p, "#".repeat(MAX_POLICY_BYTES as usize + 1)).unwrap();
    let e = load_with_env(&p, &no_env).unwrap_err();
    assert!(e.message.contains("larger than"), "{e}");
    // Exactly at the cap is read (a comment-only file: valid, no jobs).
    std::fs::write(&p, "#".repeat(MAX_POLICY_BYTES as usize)).unwrap();
    assert!(load_with_env(&p, &no_env).unwrap().jobs.is_empty());
}

#[test]
fn too_many_jobs() {
    let mut text = String::new();
    for i in 0..=MAX_JOBS {
        text.push_str(&format!(
            "[[jobs]]\nname = \"j{i}\"\nkind = \"expire_branches\"\nevery = \"1h\"\nttl = \"7d\"\n"
        ));
    }
    let e = err(&text);
    assert!(e.contains("at most 1000"), "{e}");
}

/// A budget job and the consumption job it names, with `{budget}` and `{usage}` lines added.
fn budget_policy(budget: &str, usage: &str) -> String {
    format!(
        "[[jobs]]\nname = \"b\"\nkind = \"enforce_budget\"\nevery = \"1h\"\n[jobs.budget]\n\
         consumption_job = \"c\"\nlimit = 100.0\ncurrency = \"USD\"\n{budget}\n\
         [[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\n\
         metrics = [\"compute_unit_seconds\", \"root_branch_bytes_month\"]\norg_id = \"o\"\n{usage}\n"
    )
}

#[test]
fn budget_errors_name_what_and_where() {
    let priced = "[jobs.prices]\ncompute_unit_seconds = 0.1\nroot_branch_bytes_month = 0.2";
    let notify = "[[jobs.budget.thresholds]]\npercent = 80\nactions = [\"notify\"]";
    // Valid: thresholds sorted, prices and granularity from the consumption job, dry run.
    let ok = parse(&budget_policy(
        &format!("[[jobs.budget.thresholds]]\npercent = 120\nactions = [\"lower_max_cu\"]\nmax_cu = 1\n{notify}"),
        priced,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    match &ok.jobs[0].spec {
        JobSpec::EnforceBudget(b) => {
            assert_eq!(
                b.thresholds.iter().map(|t| t.percent).collect::<Vec<_>>(),
                vec![80.0, 120.0]
            );
            assert_eq!(b.thresholds[1].max_cu, Some(1.0));
            assert_eq!(b.prices.len(), 2);
            assert_eq!(b.projection_days, 7);
        }
        other => panic!("{other:?}"),
    }
    assert!(ok.jobs[0].dry_run);
    let cases: [(String, &str); 9] = [
        (
            budget_policy(notify, "[jobs.prices]\ncompute_unit_seconds = 0.1"),
            "policy.toml:6:19: `consumption_job` `c` has no price for root_branch_bytes_month",
        ),
        (
            budget_policy(
                &format!("metrics = [\"compute_unit_seconds\", \"written_data_bytes\"]\n{notify}"),
                priced,
            ),
            "metric `written_data_bytes` is not collected by `consumption_job` `c`",
        ),
        (
            budget_policy(notify, priced).replace("consumption_job = \"c\"", "consumption_job = \"x\""),
            "`consumption_job` names `x`, but no job of that name is defined",
        ),
        (
            budget_policy(notify, &format!("granularity = \"monthly\"\n{priced}")),
            "collects monthly samples",
        ),
        (
            budget_policy(
                "[[jobs.budget.thresholds]]\npercent = 100\nactions = [\"lower_max_cu\"]",
                priced,
            ),
            "action `lower_max_cu` needs `max_cu`",
        ),
        (
            budget_policy(
                "[[jobs.budget.thresholds]]\npercent = 100\nactions = [\"lower_max_cu\"]\nmax_cu = 1.5",
                priced,
            ),
            "`max_cu` must be a compute size Neon has",
        ),
        (
            budget_policy(
                "[[jobs.budget.thresholds]]\npercent = 100\nactions = [\"shorten_suspend_timeout\"]\nsuspend_timeout = \"30s\"",
                priced,
            ),
            "`suspend_timeout` must be whole seconds between 1m and 7d",
        ),
        (
            budget_policy(&format!("{notify}\n{notify}"), priced),
            "threshold 80% is given twice",
        ),
        (
            budget_policy(notify, priced).replace("currency = \"USD\"", "currency = \"usd\""),
            "`currency` must be the price table's ISO 4217 code",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.contains(want), "want {want:?} in {e:?}\n{text}");
    }
}

// --- [[notify]] and `notice` (issue 13) ---

const EXPIRE_WITH_NOTICE: &str = r#"
[[jobs]]
name = "previews"
kind = "expire_branches"
every = "1h"
ttl = "7d"
notice = "24h"
notify = ["notice", "digest"]
"#;

#[test]
fn notify_sinks_take_secrets_from_env_file_or_credential_and_route_per_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hook-url"),
        "https://hooks.example.com/a-secret-path\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slack-url"),
        "https://hooks.slack.com/services/T/B/sekrit\n",
    )
    .unwrap();
    let d = dir.path().to_string_lossy().to_string();
    let env = move |k: &str| match k {
        "HOOK_KEY" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "CREDENTIALS_DIRECTORY" => Some(d.clone()),
        _ => None,
    };
    let text = format!(
        "{EXPIRE_WITH_NOTICE}{JOB}\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl_file = \"{}\"\nsecret_env = \"HOOK_KEY\"\n\n[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl_credential = \"slack-url\"\nevents = [\"notice\", \"run_failed\"]\njobs = [\"previews\"]\n",
        dir.path().join("hook-url").display()
    );
    let c = parse_with_env(Path::new("p.toml"), &text, &env).unwrap();
    assert_eq!(c.notify.len(), 2);
    let previews = c.job("previews").unwrap();
    assert_eq!(previews.notice, Some(Duration::from_secs(86_400)));
    // The job sends notice and digest; chat takes notice and run_failed.
    let routes: Vec<(String, Vec<NotifyEvent>)> = previews
        .notify
        .iter()
        .map(|r| (r.sink.clone(), r.events.clone()))
        .collect();
    assert_eq!(
        routes,
        vec![
            ("ops".into(), vec![NotifyEvent::Notice, NotifyEvent::Digest]),
            ("chat".into(), vec![NotifyEvent::Notice]),
        ]
    );
    // `nightly` is not in chat's `jobs`, and sends every event to ops.
    let nightly = c.job("nightly").unwrap();
    assert_eq!(nightly.notify.len(), 1);
    assert_eq!(nightly.notify[0].events, NotifyEvent::ALL.to_vec());
    // Nothing secret in Debug.
    let shown = format!("{:?}", c.notify);
    assert!(
        !shown.contains("a-secret-path") && !shown.contains("sekrit") && !shown.contains("MfKQ"),
        "{shown}"
    );
}

#[test]
fn notify_and_notice_mistakes_are_clear_errors() {
    let sink =
        |extra: &str| format!("{JOB}\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\n{extra}");
    let e = err(&sink("url = \"https://x\"\n"));
    assert!(
        e.contains("`url` is not allowed") && !e.contains("https://x"),
        "{e}"
    );
    let e = err(&sink("url_env = \"NOPE\"\nsecret_env = \"NOPE2\"\n"));
    assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
    let e = err(&sink(""));
    assert!(e.contains("has no URL"), "{e}");
    let e = err(&format!("{JOB}notice = \"1d\"\n"));
    assert!(
        e.contains("option `notice` is not valid for kind `snapshot_branches`"),
        "{e}"
    );
    let idle = "[[jobs]]\nname = \"s\"\nkind = \"suspend_computes\"\nevery = \"1h\"\nidle_for = \"1h\"\nnotice = \"1d\"\n";
    assert!(err(idle).contains("`suspend_computes` with `windows`"));
    let e = err(&format!(
        "{JOB}\n[[notify]]\nname = \"a\"\nkind = \"slack\"\nurl_env = \"U\"\njobs = [\"nope\"]\n"
    ));
    assert!(e.contains("environment variable U"), "{e}");
}

#[test]
fn a_sink_naming_a_missing_job_or_bad_key_is_refused_without_showing_secrets() {
    let env = |k: &str| match k {
        "U" => Some("http://example.com/secret-token-path".into()),
        "L" => Some("http://127.0.0.1:9/x".into()),
        "K" => Some("whsec_AAAA".into()),
        _ => None,
    };
    let p = |extra: &str| {
        parse_with_env(
            Path::new("p.toml"),
            &format!("{JOB}\n[[notify]]\nname = \"a\"\n{extra}"),
            &env,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let e = p("kind = \"slack\"\nurl_env = \"U\"\n");
    assert!(
        e.contains("plain http") && !e.contains("secret-token-path"),
        "{e}"
    );
    let e = p("kind = \"slack\"\nurl_env = \"L\"\njobs = [\"nope\"]\n");
    assert!(e.contains("names job `nope`"), "{e}");
    let e = p("kind = \"webhook\"\nurl_env = \"L\"\nsecret_env = \"K\"\n");
    assert!(e.contains("signing key") && !e.contains("AAAA"), "{e}");
}

#[test]
fn poll_bounds_are_validated_with_their_position() {
    let cfg = parse("[api]\n").unwrap();
    assert_eq!(cfg.api.poll_initial, crate::neon::DEFAULT_POLL_INITIAL);
    assert_eq!(cfg.api.poll_max, crate::neon::DEFAULT_POLL_MAX);
    let cfg = parse("[api]\npoll_initial = \"50ms\"\npoll_max = \"10s\"\n").unwrap();
    assert_eq!(cfg.api.poll_initial, Duration::from_millis(50));
    assert_eq!(cfg.api.poll_max, Duration::from_secs(10));
    let e = err("[api]\npoll_initial = \"10s\"\npoll_max = \"2s\"\n");
    assert!(
        e.starts_with("policy.toml:2:16:")
            && e.contains("`poll_initial` (10s) is longer than `poll_max` (2s)"),
        "{e}"
    );
    let e = err("[api]\npoll_max = \"2m\"\n");
    assert!(
        e.starts_with("policy.toml:2:12:") && e.contains("at most 1m"),
        "{e}"
    );
    let e = err("[api]\npoll_initial = \"0s\"\n");
    assert!(e.contains("zero is not allowed"), "{e}");
    // A poll_max below the default poll_initial lowers the first interval with it.
    let cfg = parse("[api]\npoll_max = \"1ms\"\n").unwrap();
    assert_eq!(cfg.api.poll_initial, Duration::from_millis(1));
}
