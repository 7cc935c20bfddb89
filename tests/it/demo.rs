//! `neon-steward demo`, the README's first command, run as the real binary: it must exit 0,
//! serve /metrics while it runs, record succeeded runs and actions of every job in its
//! database, keep the dry-run job to plans, and print a summary whose `history` command works
//! afterwards without an API key.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use neon_steward::store::{ActionOutcome, RunFilter, RunStatus};

const BIN: &str = env!("CARGO_BIN_EXE_neon-steward");

/// The binary with an environment that cannot reach anything but what the test gives it.
fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("NEON_API_KEY")
        .env_remove("NEON_STEWARD_CONFIG")
        .env_remove("NEON_STEWARD_BASE_URL")
        .env_remove("NEON_STEWARD_LISTEN")
        .env_remove("NEON_STEWARD_STORE_URL")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env("XDG_CONFIG_HOME", dir.join("xdg"));
    c
}

/// The shipped `config/demo.toml` with every `every = "..."` compressed to 2 s, so that each
/// job runs within a few seconds.
fn fast_demo_policy(dir: &Path) -> std::path::PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let text = std::fs::read_to_string(&shipped).expect("config/demo.toml is in the repository");
    let mut compressed = 0;
    let fast: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("every = ") {
                compressed += 1;
                "every = \"2s\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(compressed, 8, "the demo policy has eight interval jobs");
    let p = dir.join("demo.toml");
    std::fs::write(&p, fast.join("\n")).unwrap();
    p
}

fn get(url: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

#[test]
fn demo_runs_every_job_serves_metrics_and_prints_a_usable_summary() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let policy = fast_demo_policy(dir.path());
    let db = dir.path().join("demo.db");
    let mut child = cmd(dir.path())
        .arg("--config")
        .arg(&policy)
        .args(["demo", "--duration", "6s", "--listen", "127.0.0.1:0"])
        .args(["--projects", "3", "--operation-time", "50ms"])
        .arg("--db")
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });

    // Follow the output; once the metrics URL is printed, scrape it while the demo runs.
    let mut out = Vec::new();
    let mut metrics_url = None;
    let mut scraped = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if metrics_url.is_none() && line.trim_start().starts_with("metrics") {
                    metrics_url = line
                        .split_whitespace()
                        .find(|w| w.starts_with("http://") && w.ends_with("/metrics"))
                        .map(str::to_string);
                }
                out.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Keep the newest scrape that counts a run (later ones include consumption).
        if let Some(url) = &metrics_url {
            if let Some(body) = get(url) {
                if body.contains("neon_steward_job_runs_total{") {
                    scraped = Some(body);
                }
            }
        }
        assert!(Instant::now() < deadline, "demo still running: {out:#?}");
    }
    reader.join().unwrap();
    let status = child.wait().unwrap();
    let stderr = err_reader.join().unwrap();
    let text = out.join("\n");
    assert!(status.success(), "exit {status:?}\n{text}\n{stderr}");
    let body = scraped.unwrap_or_else(|| panic!("/metrics never showed a run:\n{text}"));
    assert!(body.contains("neon_steward_api_requests_total{"));
    assert!(
        body.contains("neon_steward_estimated_cost"),
        "prices export a cost"
    );

    // The summary lists runs of every job.
    let jobs = [
        "snapshot-main",
        "expire-previews",
        "expire-closed-prs",
        "suspend-idle-computes",
        "plan-stale-dev",
        "consumption",
        "budget-guard",
        "native-backups",
    ];
    let summary = text
        .split("\nsummary: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    for job in jobs {
        let row = summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(job))
            .unwrap_or_else(|| panic!("{job} missing from the summary:\n{summary}"));
        let runs: u32 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(runs >= 1, "{row}");
    }

    // The store: succeeded runs of every job, actions of every kind, and the dry run only
    // planned.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = neon_steward::store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let runs = store
            .list_runs(&RunFilter {
                job: None,
                limit: 1000,
                before: None,
            })
            .await
            .unwrap();
        let mut done: BTreeMap<&str, HashSet<(String, &'static str, bool)>> = BTreeMap::new();
        for job in jobs {
            assert!(
                runs.iter()
                    .any(|r| r.job == job && r.status == RunStatus::Succeeded),
                "no succeeded run of {job}: {runs:#?}"
            );
            for r in runs.iter().filter(|r| r.job == job) {
                for a in store.actions_for_run(r.id).await.unwrap() {
                    done.entry(job)
                        .or_default()
                        .insert((a.action, a.outcome.as_str(), a.dry_run));
                }
            }
        }
        let has = |job: &str, action: &str, outcome: ActionOutcome| {
            done.get(job)
                .is_some_and(|s| s.contains(&(action.to_string(), outcome.as_str(), false)))
        };
        assert!(
            has("snapshot-main", "create_snapshot", ActionOutcome::Succeeded),
            "{done:#?}"
        );
        assert!(
            has("expire-previews", "delete_branch", ActionOutcome::Succeeded),
            "{done:#?}"
        );
        assert!(
            has(
                "suspend-idle-computes",
                "suspend_endpoint",
                ActionOutcome::Succeeded
            ),
            "{done:#?}"
        );
        assert!(
            has(
                "consumption",
                "collect_consumption",
                ActionOutcome::Succeeded
            ),
            "{done:#?}"
        );
        // Neon's own backup schedules are set on the default (root) branches.
        assert!(
            has(
                "native-backups",
                "set_backup_schedule",
                ActionOutcome::Succeeded
            ),
            "{done:#?}"
        );
        // The safety rails show: protected branches and parents of kept ones are skipped.
        assert!(
            has("expire-previews", "delete_branch", ActionOutcome::Skipped),
            "{done:#?}"
        );
        // Branches of merged or closed pull requests go; unknown ones stay with a reason.
        assert!(
            has(
                "expire-closed-prs",
                "delete_branch",
                ActionOutcome::Succeeded
            ),
            "{done:#?}"
        );
        assert!(
            has("expire-closed-prs", "delete_branch", ActionOutcome::Skipped),
            "{done:#?}"
        );
        let plans = &done["plan-stale-dev"];
        assert!(
            plans.iter().any(|(_, o, dry)| *o == "planned" && *dry),
            "{plans:?}"
        );
        assert!(
            plans
                .iter()
                .all(|(_, o, dry)| *dry && matches!(*o, "planned" | "skipped")),
            "the dry-run job only plans: {plans:?}"
        );
    });

    // The printed `history` command works as printed, without an API key.
    let line = out
        .iter()
        .find(|l| l.trim_start().starts_with("history "))
        .unwrap_or_else(|| panic!("no history hint:\n{text}"));
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let mut history = cmd(dir.path());
    let mut rest = words.as_slice();
    while let Some((first, tail)) = rest.split_first() {
        match first.split_once('=') {
            Some((k, v)) if k.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                history.env(k, v);
                rest = tail;
            }
            _ => break,
        }
    }
    // rest = [<binary as shown>, --config, <path>, history]
    assert_eq!(rest.last(), Some(&"history"), "{line}");
    let shown = history
        .args(&rest[1..])
        .args(["--limit", "500"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{line}\n{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    for job in jobs {
        assert!(listing.contains(job), "{job} not in history:\n{listing}");
    }
    // How long the demo took is the bench's business, not this test's (no upper bound on
    // wall time here: a loaded machine is slow, not wrong).
    eprintln!("the demo test took {:?}", started.elapsed());
}

#[test]
fn demo_without_its_policy_is_a_clear_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cmd(dir.path())
        .args(["demo", "--duration", "1s", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config/demo.toml does not exist"), "{err}");
    assert!(err.contains("--config"), "{err}");
}
