use neon_sim::SimConfig;

use crate::support::Api;

#[tokio::test]
async fn same_seed_same_account_different_seed_different_ids() {
    let a = SimConfig::default()
        .seed(7)
        .orgs(2)
        .projects(5)
        .build_state()
        .unwrap();
    let b = SimConfig::default()
        .seed(7)
        .orgs(2)
        .projects(5)
        .build_state()
        .unwrap();
    let c = SimConfig::default()
        .seed(8)
        .orgs(2)
        .projects(5)
        .build_state()
        .unwrap();
    let ids = |s: &neon_sim::state::State| -> Vec<String> {
        s.projects
            .keys()
            .chain(s.branches.keys())
            .chain(s.endpoints.keys())
            .chain(s.snapshots.keys())
            .cloned()
            .collect()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_ne!(ids(&a), ids(&c));
    let names = |s: &neon_sim::state::State| -> Vec<(String, String)> {
        s.branches
            .values()
            .map(|b| (b.name.clone(), b.created_at.to_rfc3339()))
            .collect()
    };
    assert_eq!(names(&a), names(&b));
    assert_eq!(a.projects.len(), 5);
    assert_eq!(a.orgs.len(), 2);
    // Branch trees: a default main per project, other branches named like previews/dev/pr.
    for p in a.projects.values() {
        let branches = a.project_branches(&p.id);
        assert_eq!(branches.iter().filter(|b| b.default).count(), 1);
        for b in branches.iter().filter(|b| !b.default) {
            assert!(
                b.name.starts_with("preview/pr-")
                    || b.name.starts_with("dev/")
                    || b.name.starts_with("pr-"),
                "{}",
                b.name
            );
            assert!(b.created_at < a.now());
            assert!(b.id.starts_with("br-"));
        }
    }
    assert!(a
        .endpoints
        .values()
        .any(|e| e.current_state == neon_sim::state::EndpointState::Active));
    assert!(a
        .endpoints
        .values()
        .any(|e| e.current_state == neon_sim::state::EndpointState::Idle));
}

#[tokio::test]
async fn fixture_file_is_loaded() {
    let dir = std::env::temp_dir().join(format!("neon-sim-fixture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fixture.json");
    std::fs::write(
        &path,
        r#"{"orgs":[{"name":"acme"}],
            "projects":[{"name":"shop","org":"acme","created_at":"2025-01-01T00:00:00Z",
              "branches":[{"name":"main","endpoints":[{"type":"read_write","activity":"busy"}]},
                          {"name":"preview/pr-1-x","created_at":"2025-05-01T00:00:00Z","protected":true}],
              "snapshots":[{"branch":"main","name":"nightly"}]}],
            "api_keys":[{"key":"fixture-secret","scope":"project:shop"}]}"#,
    )
    .unwrap();
    let api = Api::start(SimConfig::default().fixture(&path)).await;
    let projects = api.sim.projects();
    assert_eq!(projects.len(), 1);
    let (st, body) = api
        .call_with_key("fixture-secret", reqwest::Method::GET, "/projects", None)
        .await;
    assert_eq!(st, reqwest::StatusCode::OK);
    assert_eq!(body["projects"][0]["name"], "shop");
    let branches = api.sim.branches(&projects[0].id);
    assert!(branches
        .iter()
        .any(|b| b.name == "preview/pr-1-x" && b.protected));
    assert_eq!(api.sim.snapshots(&projects[0].id).len(), 1);
    assert_eq!(
        api.sim.endpoints(&projects[0].id)[0].current_state,
        neon_sim::state::EndpointState::Active
    );

    std::fs::write(&path, r#"{"projects":[{"name":"x","org":"missing"}]}"#).unwrap();
    let err = SimConfig::default()
        .fixture(&path)
        .build_state()
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("fixture.json"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
    api.sim.shutdown().await;
}

#[tokio::test]
async fn lifecycle_cases_are_seeded_deterministically_and_only_when_asked() {
    use neon_sim::state::EndpointState;
    let build = |on: bool| {
        SimConfig::default()
            .seed(11)
            .orgs(2)
            .projects(6)
            .lifecycle_cases(on)
            .build_state()
            .unwrap()
    };
    let plain = build(false);
    let a = build(true);
    let b = build(true);
    // Off: the account is exactly what the seed gave before the option existed.
    assert_eq!(
        plain.branches.keys().collect::<Vec<_>>(),
        SimConfig::default()
            .seed(11)
            .orgs(2)
            .projects(6)
            .build_state()
            .unwrap()
            .branches
            .keys()
            .collect::<Vec<_>>()
    );
    let names = |s: &neon_sim::state::State| -> Vec<(String, String, bool)> {
        s.branches
            .values()
            .map(|b| (b.name.clone(), b.created_at.to_rfc3339(), b.protected))
            .collect()
    };
    assert_eq!(names(&a), names(&b));
    assert!(a.branches.len() > plain.branches.len());
    let week = chrono::TimeDelta::days(7);
    for p in a.projects.values() {
        let branches = a.project_branches(&p.id);
        // An old protected preview.
        assert!(branches.iter().any(|b| b.name.starts_with("preview/")
            && b.protected
            && a.now() - b.created_at > week));
        // An old preview whose child is young.
        assert!(branches.iter().any(|parent| {
            parent.name.starts_with("preview/")
                && a.now() - parent.created_at > week
                && branches.iter().any(|c| {
                    c.parent_id.as_deref() == Some(parent.id.as_str())
                        && a.now() - c.created_at < chrono::TimeDelta::days(1)
                })
        }));
    }
    // Forgotten computes: running, autosuspend off, idle for an hour or more.
    let forgotten = a
        .endpoints
        .values()
        .filter(|e| {
            e.current_state == EndpointState::Active
                && e.suspend_timeout_seconds < 0
                && e.last_active
                    .is_some_and(|t| a.now() - t >= chrono::TimeDelta::hours(1))
        })
        .count();
    assert_eq!(forgotten, 2, "every third of 6 projects");
}
