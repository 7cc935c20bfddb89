//! The budget's pure parts with hand-computed figures.

use super::*;
use crate::config::{BudgetThreshold, Granularity, JobSpec};
use crate::neon::EndpointType;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn sample(metric: &str, start: &str, value: f64) -> ConsumptionSample {
    ConsumptionSample {
        project_id: "p1".into(),
        metric: metric.into(),
        granularity: "hourly".into(),
        timeframe_start: t(start),
        timeframe_end: t(start) + chrono::Duration::hours(1),
        value,
    }
}

fn berlin() -> Tz {
    "Europe/Berlin".parse().unwrap()
}

#[test]
fn months_follow_the_zone_across_dst() {
    // March 2026 in Berlin: from CET midnight to CEST midnight, one hour short (743 h).
    let m = month_of(berlin(), t("2026-03-15T12:00:00Z"));
    assert_eq!(m.key, "2026-03");
    assert_eq!(m.start, t("2026-02-28T23:00:00Z"));
    assert_eq!(m.end, t("2026-03-31T22:00:00Z"));
    assert_eq!((m.end - m.start).num_hours(), 743);
    // 23:30 UTC on 28 February is already March in Berlin.
    assert_eq!(month_of(berlin(), t("2026-02-28T23:30:00Z")).key, "2026-03");
    assert_eq!(month_of(berlin(), t("2026-02-28T22:59:59Z")).key, "2026-02");
    // October is an hour long (745 h).
    let o = month_of(berlin(), t("2026-10-10T00:00:00Z"));
    assert_eq!((o.end - o.start).num_hours(), 745);
    // November in New York: starts on EDT (-4), ends on EST (-5).
    let ny: Tz = "America/New_York".parse().unwrap();
    let n = month_of(ny, t("2026-11-20T00:00:00Z"));
    assert_eq!(n.start, t("2026-11-01T04:00:00Z"));
    assert_eq!(n.end, t("2026-12-01T05:00:00Z"));
    assert_eq!((n.end - n.start).num_hours(), 721);
}

fn priced() -> BTreeMap<String, f64> {
    BTreeMap::from([("compute_unit_seconds".to_string(), 0.5)])
}

/// Hourly samples around the start of March in Berlin, priced 0.5 per unit.
fn march_samples() -> Vec<ConsumptionSample> {
    vec![
        // 23:00 local on 28 February: February's (cost 5).
        sample("compute_unit_seconds", "2026-02-28T22:00:00Z", 10.0),
        // 00:00 local on 1 March: March's (cost 2).
        sample("compute_unit_seconds", "2026-02-28T23:00:00Z", 4.0),
        // Cost 3 and 1.
        sample("compute_unit_seconds", "2026-03-10T22:00:00Z", 6.0),
        sample("compute_unit_seconds", "2026-03-10T23:00:00Z", 2.0),
        // Not complete at 00:30: not counted.
        sample("compute_unit_seconds", "2026-03-11T00:00:00Z", 100.0),
        // No price in the table: another job's metric, not counted.
        sample("written_data_bytes", "2026-03-10T23:00:00Z", 1000.0),
    ]
}

#[test]
fn spend_and_projection_by_hand() {
    let now = t("2026-03-11T00:30:00Z");
    let month = month_of(berlin(), now);
    let s = spend(&march_samples(), &priced(), &month, now, 7);
    // March so far: 2 + 3 + 1.
    assert_eq!(s.spent, 6.0);
    assert_eq!(s.data_until, Some(t("2026-03-11T00:00:00Z")));
    // The last 7 days of data (from 4 March 00:00Z): 3 + 1 over 168 h.
    assert!((s.rate_per_hour - 4.0 / 168.0).abs() < 1e-12, "{s:?}");
    // Hours left: 11 March 00:00Z to 31 March 22:00Z = 20 d 22 h = 502 h.
    // 6 + 4 * 502 / 168 = 6 + 11.952380952...
    assert!((s.projected - (6.0 + 2008.0 / 168.0)).abs() < 1e-9, "{s:?}");
    assert!((s.projected - 17.952_380_952).abs() < 1e-6);

    // 30 days: the window starts at the oldest sample (28 Feb 22:00Z), 242 h with 11 in it.
    let s = spend(&march_samples(), &priced(), &month, now, 30);
    assert!((s.rate_per_hour - 11.0 / 242.0).abs() < 1e-12, "{s:?}");
    // 6 + 502 / 22 = 28.8181...
    assert!((s.projected - (6.0 + 502.0 / 22.0)).abs() < 1e-9, "{s:?}");
}

#[test]
fn no_data_projects_nothing_and_data_of_last_month_projects_the_whole_month() {
    let now = t("2026-04-01T10:00:00Z");
    let month = month_of(berlin(), now);
    let none = spend(&[], &priced(), &month, now, 7);
    assert_eq!(
        (none.spent, none.projected, none.data_until),
        (0.0, 0.0, None)
    );
    // Only March's data (1 March 00:00 local, cost 2, one hour of data): April's spend is
    // 0; the rate is 2 per hour over the hours of April (720 - 1 for DST? no: April in
    // Berlin is all CEST, 720 h).
    let old = vec![sample("compute_unit_seconds", "2026-02-28T23:00:00Z", 4.0)];
    let s = spend(&old, &priced(), &month, now, 7);
    assert_eq!(s.spent, 0.0);
    assert_eq!((month.end - month.start).num_hours(), 720);
    assert!((s.projected - 2.0 * 720.0).abs() < 1e-9, "{s:?}");
}

fn spec(thresholds: Vec<BudgetThreshold>) -> BudgetSpec {
    BudgetSpec {
        consumption_job: "c".into(),
        limit: 100.0,
        currency: "USD".into(),
        timezone: berlin(),
        per_project: false,
        projection_days: 7,
        thresholds,
        granularity: Granularity::Hourly,
        prices: priced(),
    }
}

fn threshold(percent: f64) -> BudgetThreshold {
    BudgetThreshold {
        percent,
        notify: true,
        suspend_computes: false,
        max_cu: None,
        suspend_timeout_seconds: None,
    }
}

fn three() -> BudgetSpec {
    spec(vec![
        threshold(80.0),
        BudgetThreshold {
            suspend_computes: true,
            max_cu: Some(2.0),
            ..threshold(100.0)
        },
        BudgetThreshold {
            max_cu: Some(1.0),
            suspend_timeout_seconds: Some(120),
            ..threshold(120.0)
        },
    ])
}

#[test]
fn wanted_takes_the_lowest_value_of_the_crossed_thresholds() {
    let s = three();
    assert_eq!(wanted(&s, 79.99), Wanted::default());
    assert_eq!(wanted(&s, 80.0), Wanted::default(), "notify only");
    assert_eq!(
        wanted(&s, 110.0),
        Wanted {
            suspend: Some(100.0),
            max_cu: Some((2.0, 100.0)),
            suspend_timeout: None
        }
    );
    assert_eq!(
        wanted(&s, 125.0),
        Wanted {
            suspend: Some(100.0),
            max_cu: Some((1.0, 120.0)),
            suspend_timeout: Some((120, 120.0))
        }
    );
}

fn endpoint(state: EndpointState, min: f64, max: f64, timeout: i64) -> Endpoint {
    Endpoint {
        id: "ep-1".into(),
        project_id: "p1".into(),
        branch_id: "br-1".into(),
        endpoint_type: EndpointType::ReadWrite,
        current_state: state,
        pending_state: None,
        disabled: false,
        last_active: None,
        suspend_timeout_seconds: timeout,
        autoscaling_limit_min_cu: min,
        autoscaling_limit_max_cu: max,
        created_at: t("2026-01-01T00:00:00Z"),
        updated_at: t("2026-01-01T00:00:00Z"),
    }
}

#[test]
fn apply_records_the_value_before_the_guard() {
    let w = wanted(&three(), 125.0);
    let e = endpoint(EndpointState::Active, 1.0, 4.0, 0);
    let d = decide(&e, false, Lever::Suspend, &w, None, "2026-03");
    assert!(
        matches!(&d, Some(Decision::Apply(c)) if c.previous == Setting::Active && c.set == Setting::Suspended && c.threshold == 100.0),
        "{d:?}"
    );
    // The default branch's compute is never suspended.
    assert_eq!(decide(&e, true, Lever::Suspend, &w, None, "2026-03"), None);
    // 1-4 CU lowered to 1-1 (the minimum already fits).
    let d = decide(&e, false, Lever::MaxCu, &w, None, "2026-03");
    assert!(
        matches!(&d, Some(Decision::Apply(c)) if c.previous == Setting::Cu { min: 1.0, max: 4.0 } && c.set == Setting::Cu { min: 1.0, max: 1.0 }),
        "{d:?}"
    );
    // 0 is Neon's default of 300 s, longer than 120 s.
    let d = decide(&e, false, Lever::SuspendTimeout, &w, None, "2026-03");
    assert!(
        matches!(&d, Some(Decision::Apply(c)) if c.previous == Setting::SuspendTimeout { seconds: 0 } && c.set == Setting::SuspendTimeout { seconds: 120 }),
        "{d:?}"
    );
    // Already short enough, or already low enough: nothing.
    let short = endpoint(EndpointState::Idle, 0.25, 0.5, 60);
    assert_eq!(
        decide(&short, false, Lever::SuspendTimeout, &w, None, "2026-03"),
        None
    );
    assert_eq!(
        decide(&short, false, Lever::MaxCu, &w, None, "2026-03"),
        None
    );
    assert_eq!(
        decide(&short, false, Lever::Suspend, &w, None, "2026-03"),
        None
    );
    // A minimum above the new maximum comes down with it: 2-4 to 1-1.
    let high = endpoint(EndpointState::Active, 2.0, 4.0, -1);
    let d = decide(&high, false, Lever::MaxCu, &w, None, "2026-03");
    assert!(
        matches!(&d, Some(Decision::Apply(c)) if c.set == Setting::Cu { min: 1.0, max: 1.0 }),
        "{d:?}"
    );
    // -1 (never suspends) is longer than anything.
    assert!(matches!(
        decide(&high, false, Lever::SuspendTimeout, &w, None, "2026-03"),
        Some(Decision::Apply(_))
    ));
}

fn recorded(lever: Lever, month: &str, previous: Setting, set: Setting) -> Change {
    Change {
        endpoint: "ep-1".into(),
        lever,
        month: month.into(),
        threshold: 120.0,
        previous,
        set,
    }
}

#[test]
fn restores_at_the_month_boundary_or_when_no_threshold_asks_and_only_its_own_value() {
    let cu = recorded(
        Lever::MaxCu,
        "2026-03",
        Setting::Cu { min: 1.0, max: 4.0 },
        Setting::Cu { min: 1.0, max: 1.0 },
    );
    let e = endpoint(EndpointState::Active, 1.0, 1.0, 0);
    // Still March, still over 120%: kept, nothing to do.
    let over = wanted(&three(), 125.0);
    assert_eq!(
        decide(&e, false, Lever::MaxCu, &over, Some(&cu), "2026-03"),
        None
    );
    // April: restored, even though April's figures were to ask for it again.
    assert_eq!(
        decide(&e, false, Lever::MaxCu, &over, Some(&cu), "2026-04"),
        Some(Decision::Restore(cu.clone()))
    );
    // Budget raised (spend now 50% of the limit): restored.
    let under = wanted(&three(), 50.0);
    assert_eq!(
        decide(&e, false, Lever::MaxCu, &under, Some(&cu), "2026-03"),
        Some(Decision::Restore(cu.clone()))
    );
    // Someone set 3 CU since: forgotten, not overwritten.
    let changed = endpoint(EndpointState::Active, 1.0, 3.0, 0);
    assert!(matches!(
        decide(&changed, false, Lever::MaxCu, &under, Some(&cu), "2026-03"),
        Some(Decision::Forget(_, why)) if why.contains("changed since")
    ));
    // A lower target in the same month keeps the original previous value.
    let at_110 = recorded(
        Lever::MaxCu,
        "2026-03",
        Setting::Cu { min: 1.0, max: 4.0 },
        Setting::Cu { min: 1.0, max: 2.0 },
    );
    let two = endpoint(EndpointState::Active, 1.0, 2.0, 0);
    assert!(matches!(
        decide(&two, false, Lever::MaxCu, &over, Some(&at_110), "2026-03"),
        Some(Decision::Apply(c)) if c.previous == Setting::Cu { min: 1.0, max: 4.0 } && c.set == Setting::Cu { min: 1.0, max: 1.0 }
    ));
    // A suspension has nothing to undo: forgotten with the reason.
    let s = recorded(
        Lever::Suspend,
        "2026-03",
        Setting::Active,
        Setting::Suspended,
    );
    let idle = endpoint(EndpointState::Idle, 1.0, 1.0, 0);
    assert!(matches!(
        decide(&idle, false, Lever::Suspend, &over, Some(&s), "2026-04"),
        Some(Decision::Forget(_, why)) if why.contains("nothing to undo")
    ));
    // A compute that woke up while still over budget is suspended again, the record kept.
    assert!(matches!(
        decide(&e, false, Lever::Suspend, &over, Some(&s), "2026-03"),
        Some(Decision::Apply(c)) if c.previous == Setting::Active
    ));
}

#[test]
fn state_keeps_the_first_previous_value_and_one_month_of_notices() {
    let job_toml = "[[jobs]]\nname = \"b\"\nkind = \"enforce_budget\"\nevery = \"1h\"\n[jobs.budget]\nconsumption_job = \"c\"\nlimit = 100.0\ncurrency = \"USD\"\n[[jobs.budget.thresholds]]\npercent = 80.0\nactions = [\"notify\"]\n\n[[jobs]]\nname = \"c\"\nkind = \"collect_consumption\"\nevery = \"1h\"\nmetrics = [\"compute_unit_seconds\"]\norg_id = \"o\"\n[jobs.prices]\ncompute_unit_seconds = 0.5\n";
    let cfg = crate::config::parse_with_env(std::path::Path::new("t.toml"), job_toml, &|k| {
        (k == "NEON_API_KEY").then(|| "k".to_string())
    })
    .unwrap();
    let job = cfg.jobs[0].clone();
    assert!(
        job.dry_run,
        "a budget job is a dry run unless it says otherwise"
    );
    let JobSpec::EnforceBudget(spec) = &job.spec else {
        panic!("an enforce_budget job");
    };
    assert_eq!(
        spec.prices,
        priced(),
        "prices come from the consumption job"
    );
    let kind = Budget::new(&job, spec);
    let mut st = BudgetState::default();
    let first = recorded(
        Lever::MaxCu,
        "2026-03",
        Setting::Cu { min: 1.0, max: 4.0 },
        Setting::Cu { min: 1.0, max: 2.0 },
    );
    kind.intend(&mut st, &BudgetAction::Apply(first.clone()));
    let mut second = first.clone();
    second.previous = Setting::Cu { min: 1.0, max: 2.0 };
    second.set = Setting::Cu { min: 1.0, max: 1.0 };
    kind.intend(&mut st, &BudgetAction::Apply(second));
    let kept = &st.changes["ep-1/max_cu"];
    assert_eq!(kept.previous, Setting::Cu { min: 1.0, max: 4.0 });
    assert_eq!(kept.set, Setting::Cu { min: 1.0, max: 1.0 });
    kind.record(&mut st, &BudgetAction::Restore(first), &());
    assert!(st.changes.is_empty());
    let notice = |month: &str, threshold: f64| {
        BudgetAction::Notify(Notice {
            run_id: 1,
            budget: ALL_PROJECTS.into(),
            month: month.into(),
            timezone: "UTC".into(),
            threshold,
            spent: 0.0,
            projected: 0.0,
            limit: 100.0,
            currency: "USD".into(),
        })
    };
    kind.record(&mut st, &notice("2026-03", 80.0), &());
    kind.record(&mut st, &notice("2026-03", 80.0), &());
    kind.record(&mut st, &notice("2026-04", 100.0), &());
    assert_eq!(
        st.noticed,
        BTreeMap::from([("2026-04".to_string(), vec![100.0])])
    );
}

#[test]
fn a_value_already_back_before_the_change_is_forgotten_as_restored_not_as_someone_elses() {
    // The daemon died (or lost the store) after its restore's call: Neon has the previous
    // value again, the record still names the change. Nothing to call, and the ledger must
    // not say that someone else changed it.
    let cu = recorded(
        Lever::MaxCu,
        "2026-03",
        Setting::Cu { min: 1.0, max: 4.0 },
        Setting::Cu { min: 1.0, max: 1.0 },
    );
    let back = endpoint(EndpointState::Active, 1.0, 4.0, 0);
    let under = wanted(&three(), 50.0);
    for month in ["2026-03", "2026-04"] {
        let d = decide(&back, false, Lever::MaxCu, &under, Some(&cu), month);
        assert!(
            matches!(&d, Some(Decision::Forget(_, why))
                if why.contains("the value before this job's change") && !why.contains("changed since")),
            "{month}: {d:?}"
        );
    }
    // A value someone else set is still theirs.
    let other = endpoint(EndpointState::Active, 1.0, 3.0, 0);
    assert!(matches!(
        decide(&other, false, Lever::MaxCu, &under, Some(&cu), "2026-03"),
        Some(Decision::Forget(_, why)) if why.contains("changed since")
    ));
}
