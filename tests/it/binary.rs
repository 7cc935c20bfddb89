//! The real `neon-steward` binary: exit codes, `validate`, `once` against neon-sim, SIGHUP
//! reload and SIGTERM shutdown of `run`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::helpers::spawn_sim;

const BIN: &str = env!("CARGO_BIN_EXE_neon-steward");

const GOOD: &str = r#"
[http]
listen = "127.0.0.1:0"

[[jobs]]
name = "expire-previews"
kind = "expire_branches"
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
ttl = "7d"
[jobs.branches]
names = ["preview/*"]
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The binary with a clean environment: no key, no config search surprises.
fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("NEON_API_KEY")
        .env_remove("NEON_STEWARD_CONFIG")
        .env_remove("NEON_STEWARD_BASE_URL")
        .env_remove("NEON_STEWARD_LISTEN")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env(
            "NEON_STEWARD_STORE_URL",
            format!("sqlite://{}/state.db", dir.display()),
        )
        .env("XDG_CONFIG_HOME", dir.join("xdg"));
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("the binary runs")
}

#[test]
fn validate_good_and_bad() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", GOOD);
    let out = run(cmd(dir.path()).arg("--config").arg(&good).arg("validate"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 job)"));

    let bad = write(
        dir.path(),
        "bad.toml",
        &GOOD.replace("ttl = \"7d\"", "ttl = \"7x\""),
    );
    let out = run(cmd(dir.path())
        .env("NEON_STEWARD_CONFIG", &bad)
        .arg("validate"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:10:7: invalid duration `7x`"),
        "{err}"
    );
}

#[test]
fn config_search_list_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing found: exit 2 naming where it looked.
    let out = run(cmd(dir.path()).arg("validate"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neon-steward.toml"));
    // $XDG_CONFIG_HOME/neon-steward/config.toml is found.
    std::fs::create_dir_all(dir.path().join("xdg/neon-steward")).unwrap();
    write(&dir.path().join("xdg/neon-steward"), "config.toml", GOOD);
    let out = run(cmd(dir.path()).arg("validate"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Usage errors are 2 too.
    let out = run(cmd(dir.path()).arg("once"));
    assert_eq!(out.status.code(), Some(2));
    // `jobs` prints next fire times in the job's zone.
    let out = run(cmd(dir.path()).args(["jobs", "--output", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "expire-previews");
    assert!(v[0]["next_run_local"]
        .as_str()
        .unwrap()
        .contains("03:00:00"));
    // Completions need no config.
    let out = run(cmd(dir.path()).args(["completions", "bash"]));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("neon-steward"));
}

#[test]
fn once_without_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "p.toml", GOOD);
    let out = run(cmd(dir.path())
        .arg("--config")
        .arg(&good)
        .args(["once", "expire-previews"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Neon API key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_plan_against_the_emulator() {
    let sim = spawn_sim(Default::default()).await;
    let (project, _) = sim.add_project("demo", None);
    let _main = sim.add_branch(&project, "preview/old", None);
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "p.toml",
        &GOOD.replace("ttl = \"7d\"", "ttl = \"1s\"\ndry_run = true"),
    );
    let (base, key) = (sim.base_url(), sim.api_key());
    // A run of a live daemon sharing the store: `plan` must leave it alone (only the daemon
    // recovers interrupted runs, at its own start-up).
    let live = {
        use neon_steward::store::{NewRun, RunStatus, Trigger};
        let store =
            neon_steward::store::open(&format!("sqlite://{}/state.db", dir.path().display()))
                .await
                .unwrap();
        store
            .claim_run(&NewRun {
                job: "daemon-job".into(),
                kind: "expire_branches".into(),
                scheduled_for: chrono::Utc::now(),
                trigger: Trigger::Schedule,
                dry_run: false,
                status: RunStatus::Running,
                error: None,
                plan_id: None,
            })
            .await
            .unwrap()
            .unwrap()
    };
    let d = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        run(cmd(&d)
            .env("NEON_API_KEY", key)
            .env("NEON_STEWARD_BASE_URL", base)
            .arg("--config")
            .arg(&policy)
            .args(["plan", "--output", "json"]))
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
    assert_eq!(v[0]["job"], "expire-previews");
    assert_eq!(v[0]["status"], "succeeded");
    assert!(sim.mutations().is_empty(), "plan made no change");
    let store = neon_steward::store::open(&format!("sqlite://{}/state.db", dir.path().display()))
        .await
        .unwrap();
    assert_eq!(
        store.get_run(live).await.unwrap().unwrap().status,
        neon_steward::store::RunStatus::Running,
        "plan left the daemon's run alone"
    );
    // The run is in the history.
    let d = dir.path().to_path_buf();
    let policy = dir.path().join("p.toml");
    let out = tokio::task::spawn_blocking(move || {
        run(cmd(&d)
            .arg("--config")
            .arg(&policy)
            .args(["history", "--output", "json"]))
    })
    .await
    .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["job"], "expire-previews");
    assert_eq!(runs[0]["trigger"], "manual");
}

/// A running daemon whose JSON log lines arrive on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    addr: String,
}

impl Daemon {
    fn start(dir: &Path, policy: &Path) -> Daemon {
        Daemon::start_against(dir, policy, "http://127.0.0.1:9/api/v2")
    }

    /// With the (not real) key, against the Neon API at `base_url`.
    fn start_against(dir: &Path, policy: &Path, base_url: &str) -> Daemon {
        let mut child = cmd(dir)
            .env("NEON_API_KEY", "napi_test_key_not_real")
            .env("NEON_STEWARD_BASE_URL", base_url)
            .arg("--config")
            .arg(policy)
            .args(["--log-format", "json", "run", "--grace-period", "2s"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut d = Daemon {
            child,
            lines,
            addr: String::new(),
        };
        let ready = d.wait_for("neon-steward ready");
        d.addr = ready["bound"]
            .as_str()
            .expect("the ready line names the address")
            .to_string();
        d
    }

    fn wait_for(&mut self, message: &str) -> serde_json::Value {
        loop {
            let v = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no `{message}` log line"));
            assert!(
                !v.to_string().contains("napi_test_key_not_real"),
                "the key leaked into the log"
            );
            if v["message"] == message {
                return v;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn get(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.addr);
        reqwest::blocking_get(&url)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod reqwest {
    /// A tiny blocking GET over a fresh runtime (the test threads are synchronous).
    pub fn blocking_get(url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { ::reqwest::get(url).await.unwrap().text().await.unwrap() })
    }
}

#[test]
fn sighup_reload_keeps_old_config_on_error_then_applies_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.toml", GOOD);
    let mut d = Daemon::start(dir.path(), &policy);
    assert!(d.get("/api/v1/jobs").contains("expire-previews"));

    // A broken file: the reload fails, the old jobs stay, the failure is exported.
    write(dir.path(), "p.toml", &format!("{GOOD}bogus = 1\n"));
    d.signal("-HUP");
    let failed = d.wait_for("configuration reload failed; keeping the previous configuration");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("p.toml:13:1: unknown field `bogus`"),
        "{failed}"
    );
    assert!(d
        .get("/metrics")
        .contains("neon_steward_config_last_reload_successful 0"));
    assert!(d.get("/api/v1/jobs").contains("expire-previews"));

    // A good file with another job: applied.
    write(
        dir.path(),
        "p.toml",
        &GOOD.replace("expire-previews", "expire-pr"),
    );
    d.signal("-HUP");
    d.wait_for("configuration loaded");
    let jobs = d.get("/api/v1/jobs");
    assert!(
        jobs.contains("expire-pr") && !jobs.contains("expire-previews"),
        "{jobs}"
    );
    assert!(d
        .get("/metrics")
        .contains("neon_steward_config_last_reload_successful 1"));

    d.signal("-TERM");
    d.wait_for("neon-steward stopped");
    assert_eq!(d.child.wait().unwrap().code(), Some(0));
}

/// The value of the one series of `family` with every label of `labels` in a `/metrics`
/// body (`None`: no such series).
fn series_value(body: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(found.len() <= 1, "{family} {labels:?}: {found:?}");
    found.first().copied()
}

#[test]
fn a_fresh_daemon_exports_the_series_alerts_count_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "hook-url", "http://127.0.0.1:9/hook");
    write(
        dir.path(),
        "hook-key",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    );
    let policy = write(
        dir.path(),
        "p.toml",
        &format!(
            r#"{GOOD}
[[jobs]]
name = "native-backups"
kind = "snapshot_branches"
mode = "backup_schedule"
schedule = "0 3 * * *"
dry_run = false
[jobs.branches]
default = true
[[jobs.backup_schedule]]
frequency = "daily"

[[jobs]]
name = "off"
kind = "expire_branches"
schedule = "0 3 * * *"
enabled = false
ttl = "7d"
[jobs.branches]
names = ["preview/*"]

[[notify]]
name = "ops"
kind = "webhook"
url_file = "hook-url"
secret_file = "hook-key"
events = ["run_failed", "budget"]
"#
        ),
    );
    let mut d = Daemon::start(dir.path(), &policy);
    // No job has run (the first tick is at 03:00 Berlin), and nothing was delivered.
    let body = d.get("/metrics");
    for (job, action, dry_run) in [
        ("native-backups", "set_backup_schedule", "false"),
        ("native-backups", "take_back_backup_schedule", "false"),
        ("expire-previews", "delete_branch", "false"),
    ] {
        for outcome in ["succeeded", "failed"] {
            let labels = [
                ("job_name", job),
                ("action", action),
                ("outcome", outcome),
                ("dry_run", dry_run),
            ];
            assert_eq!(
                series_value(&body, "neon_steward_actions_total", &labels),
                Some(0.0),
                "{labels:?} in:\n{body}"
            );
        }
    }
    assert_eq!(
        series_value(
            &body,
            "neon_steward_actions_total",
            &[
                ("job_name", "native-backups"),
                ("action", "create_snapshot")
            ]
        ),
        None,
        "only the actions of the job's mode"
    );
    assert!(
        !body.contains("job_name=\"off\""),
        "a disabled job has no series"
    );
    for event in ["run_failed", "budget"] {
        for outcome in ["delivered", "retry", "gave_up"] {
            let labels = [("sink", "ops"), ("event", event), ("outcome", outcome)];
            assert_eq!(
                series_value(&body, "neon_steward_notifications_total", &labels),
                Some(0.0),
                "{labels:?} in:\n{body}"
            );
        }
    }
    assert_eq!(
        series_value(
            &body,
            "neon_steward_notifications_total",
            &[("sink", "ops"), ("event", "digest")]
        ),
        None,
        "only the events the sink takes"
    );
    d.signal("-TERM");
    d.wait_for("neon-steward stopped");
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for sig in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let policy = write(dir.path(), "p.toml", GOOD);
        let mut d = Daemon::start(dir.path(), &policy);
        assert!(
            d.get("/readyz").contains("\"status\":\"ready\""),
            "{}",
            d.get("/readyz")
        );
        d.signal(sig);
        d.wait_for("neon-steward stopped");
        assert_eq!(d.child.wait().unwrap().code(), Some(0), "{sig}");
    }
}

// Issue 12: the command line's answers to bad input and closed pipes.

/// `history | head`: a reader that goes away ends the command quietly, not with a panic.
/// The history is larger than a pipe's buffer (64 KiB), so the command cannot finish
/// writing before the reader is gone, whatever the timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_ends_quietly() {
    use neon_steward::store::{NewRun, RunStatus, Trigger};
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.toml", GOOD);
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let store = neon_steward::store::open(&url).await.unwrap();
    let start = chrono::Utc::now() - chrono::Duration::days(30);
    for i in 0..1000 {
        store
            .claim_run(&NewRun {
                job: "expire-previews".into(),
                kind: "expire_branches".into(),
                scheduled_for: start + chrono::Duration::minutes(i),
                trigger: Trigger::Schedule,
                dry_run: false,
                status: RunStatus::Skipped,
                error: Some("skipped: the previous run was still running".into()),
                plan_id: None,
            })
            .await
            .unwrap();
    }
    drop(store);
    let mut child = cmd(dir.path())
        .arg("--config")
        .arg(&policy)
        .args(["history", "--limit", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line (the command is writing), then go away like `head -1`.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("    ID"), "{first}");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// `history` is read-only: pointed at a database that is not a store, it says so and
/// creates nothing (neither a file nor tables).
#[test]
fn history_never_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.toml", GOOD);
    let db = dir.path().join("none.db");
    let out = run(cmd(dir.path())
        .env(
            "NEON_STEWARD_STORE_URL",
            format!("sqlite://{}", db.display()),
        )
        .arg("--config")
        .arg(&policy)
        .arg("history"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no store at") && !db.exists(), "{stderr}");

    // An existing SQLite file of someone else's: refused, and left without our tables.
    let other = dir.path().join("other.db");
    std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect({:?}); c.execute('create table t (x)'); c.commit()",
            other.display().to_string()
        ))
        .status()
        .unwrap();
    let out = run(cmd(dir.path())
        .env(
            "NEON_STEWARD_STORE_URL",
            format!("sqlite://{}", other.display()),
        )
        .arg("--config")
        .arg(&policy)
        .arg("history"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not initialised"), "{stderr}");
    let tables = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; print(sorted(r[0] for r in sqlite3.connect({:?}).execute(\"select name from sqlite_master where type='table'\")))",
            other.display().to_string()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "['t']");
}

#[test]
fn validate_warns_about_empty_policies_and_open_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(cmd(dir.path()).args(["--config", "/dev/null", "validate"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (0 jobs)"));
    assert!(
        stderr.contains("warning:") && stderr.contains("no jobs"),
        "{stderr}"
    );

    let good = write(dir.path(), "p.toml", GOOD);
    let out = run(cmd(dir.path())
        .env("NEON_STEWARD_LISTEN", "0.0.0.0:9187")
        .arg("--config")
        .arg(&good)
        .arg("validate"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("beyond loopback"), "{stderr}");
    let out = run(cmd(dir.path()).arg("--config").arg(&good).arg("validate"));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `--config /dev/zero` is refused without reading it all.
    let out = run(cmd(dir.path()).args(["--config", "/dev/zero", "validate"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"));
}

#[test]
fn api_key_shape_is_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "p.toml", GOOD);
    let out = run(cmd(dir.path())
        .env("NEON_API_KEY", "napi_secret_part\nsecond_line")
        .arg("--config")
        .arg(&good)
        .args(["once", "expire-previews"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line break") && !stderr.contains("napi_secret"),
        "{stderr}"
    );
}

#[test]
fn store_errors_are_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "p.toml", GOOD);
    let out = run(cmd(dir.path())
        .env(
            "NEON_STEWARD_STORE_URL",
            "postgres://u@127.0.0.1/db?sslmode=bogus",
        )
        .arg("--config")
        .arg(&good)
        .arg("history"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("bogus").count(), 1, "{stderr}");
}

/// The daemon's `/readyz` is not ready while Neon refuses its key (the emulator answers 401
/// to a key it does not know): the jobs cannot do anything, so the probe says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_with_a_refused_key() {
    let sim = spawn_sim(Default::default()).await;
    let base = sim.base_url();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "p.toml",
        &GOOD.replace("schedule = \"0 3 * * *\"", "every = \"1s\""),
    );
    let d = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut daemon = Daemon::start_against(&d, &policy, &base);
        daemon.wait_for("job run finished");
        let not_ready = daemon.get("/readyz");
        daemon.signal("-TERM");
        daemon.wait_for("neon-steward stopped");
        assert!(
            not_ready.contains("not_ready") && not_ready.contains("refused the API key"),
            "{not_ready}"
        );
        assert!(!not_ready.contains("napi_test_key_not_real"), "{not_ready}");
    })
    .await
    .unwrap();
}

/// The same on PostgreSQL: `history` on an empty database says it is not initialised and
/// leaves it without tables; on an initialised one it reads (read-only) the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_never_migrates_postgres() {
    use sqlx::Connection;
    let admin_url = std::env::var("NEON_STEWARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("steward_ro_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("the PostgreSQL test server is reachable");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.toml", GOOD);
    let history = |url: String| {
        let d = dir.path().to_path_buf();
        let policy = policy.clone();
        tokio::task::spawn_blocking(move || {
            run(cmd(&d)
                .env("NEON_STEWARD_STORE_URL", url)
                .arg("--config")
                .arg(&policy)
                .arg("history"))
        })
    };
    let out = history(url.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let (tables,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    db.close().await.unwrap();

    // Initialised by the daemon's own open: now `history` reads it.
    drop(neon_steward::store::open(&url).await.unwrap());
    let after = history(url.clone()).await.unwrap();

    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not initialised"), "{stderr}");
    assert_eq!(tables, 0, "history created tables");
    assert_eq!(
        after.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert!(String::from_utf8_lossy(&after.stdout).starts_with("    ID"));
}

/// `keep` through the real binary against a SQLite store file: record with `--until` and
/// `--note`, list (table and JSON), remove; bad input is a usage error (exit 2) naming what
/// is wrong, and nothing is recorded for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_records_lists_and_removes_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "p.toml", GOOD);
    let db = dir.path().join("state.db");
    let keep = |args: &[&str]| {
        let out = run(cmd(dir.path())
            .arg("--config")
            .arg(&policy)
            .arg("keep")
            .args(args));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Bad input: exit 2, the message names the argument and what is expected.
    for (args, expected) in [
        (
            &["app/b", "--until", "next friday"][..],
            "--until `next friday` is not YYYY-MM-DD or an RFC 3339 time",
        ),
        (
            &["app/b", "--until", "2026-02-30"][..],
            "--until `2026-02-30`",
        ),
        (&["app/b", "--until", "2001-01-01"][..], "is in the past"),
        (&["app"][..], "`app` is not <project>/<branch>"),
        (&["--remove", "app"][..], "`app` is not <project>/<branch>"),
        (&["app/b", "--forever"][..], "--forever"),
        (&[][..], "<TARGET>"),
        (&["--list", "--remove", "app/b"][..], "cannot be used with"),
    ] {
        let (code, stdout, stderr) = keep(args);
        assert_eq!(code, Some(2), "{args:?}: {stdout} {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked"),
            "{args:?}: a usage error, not a crash: {stderr}"
        );
    }
    assert!(
        !db.exists(),
        "bad input is refused before the store is opened"
    );

    let (code, stdout, stderr) = keep(&[
        "app/preview/pr-7",
        "--until",
        "2099-01-31",
        "--note",
        "demo on Friday",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("kept app/preview/pr-7 until 2099-01-31T00:00:00Z"),
        "{stdout}"
    );
    assert!(
        db.exists(),
        "the store file is created where the policy says"
    );
    let (code, _, stderr) = keep(&["app/main"]);
    assert_eq!(code, Some(0), "{stderr}");

    // The daemon's store holds them, as the jobs will read them.
    {
        let store = neon_steward::store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let mut keeps = store.list_keeps().await.unwrap();
        keeps.sort_by(|a, b| a.branch.cmp(&b.branch));
        let got: Vec<(&str, &str, Option<String>, Option<&str>)> = keeps
            .iter()
            .map(|k| {
                (
                    k.project.as_str(),
                    k.branch.as_str(),
                    k.until.map(|u| u.to_rfc3339()),
                    k.note.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("app", "main", None, None),
                (
                    "app",
                    "preview/pr-7",
                    Some("2099-01-31T00:00:00+00:00".into()),
                    Some("demo on Friday")
                ),
            ]
        );
    }

    let (code, stdout, stderr) = keep(&["--list"]);
    assert_eq!(code, Some(0), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("app/preview/pr-7"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("2099-01-31T00:00:00Z") && line.contains("demo on Friday"),
        "{line}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("app/main") && l.contains("until removed")),
        "{stdout}"
    );
    let (code, stdout, stderr) = keep(&["--list", "--output", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");

    let (code, stdout, stderr) = keep(&["--remove", "app/preview/pr-7"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("removed the keep of app/preview/pr-7"),
        "{stdout}"
    );
    let (code, _, stderr) = keep(&["--remove", "app/preview/pr-7"]);
    assert_eq!(code, Some(1), "nothing to remove is not success");
    assert!(stderr.contains("no keep of app/preview/pr-7"), "{stderr}");
    let (_, stdout, _) = keep(&["--list"]);
    assert!(
        !stdout.contains("pr-7") && stdout.contains("app/main"),
        "{stdout}"
    );
}
