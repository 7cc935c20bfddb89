//! What the engine and the job kinds share: the run's environment and context, and the
//! shape of a plan. Kept apart from both so that neither imports the other.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::ledger::ActionSpec;
use crate::neon::{ApiError, NeonClient, ProjectId};

/// What every run needs from the daemon.
#[derive(Clone)]
pub struct JobEnv {
    pub client: NeonClient,
    pub store: Arc<dyn crate::store::Store>,
    /// Projects processed at the same time (`api.concurrency`).
    pub concurrency: usize,
    /// How long to wait for Neon's operations (and for a locked project to become idle).
    pub operation_deadline: Duration,
    /// Sets the consumption gauges from what `collect_consumption` runs hand in (the
    /// daemon's exports to `/metrics`; tests give each harness its own).
    pub consumption: Arc<crate::telemetry::consumption::ConsumptionExporter>,
}

/// One run of one job, as claimed by the scheduler.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: crate::store::RunId,
    /// The tick the run is for: snapshot names are rendered from it, so a re-run of the
    /// same tick finds what an interrupted run made.
    pub scheduled_for: DateTime<Utc>,
    /// "Now" for ages and windows (the wall clock in production, the emulator's clock in
    /// tests).
    pub now: DateTime<Utc>,
    /// The job's `dry_run` or a global `plan`.
    pub dry_run: bool,
}

/// What the daemon controls while a run is under way (separate from [`RunContext`], which
/// says *what* to run).
#[derive(Clone, Default)]
pub struct RunControl {
    /// Cancelled when the run must stop (timeout, `concurrency = "replace"`, shutdown). The
    /// run stops before its next action and returns `interrupted` with what it did.
    pub cancel: CancellationToken,
    /// "Now" while acting (times handed to Neon are computed from it when the call is
    /// made). `None`: the run's `now` plus the (tokio) time elapsed since the run started.
    pub clock: Option<Arc<dyn crate::scheduler::Clock>>,
    /// How long this replica surely still holds the run; no mutation is sent after (see
    /// [`crate::scheduler::LeaseWatch`]). The default guards nothing.
    pub lease: crate::scheduler::LeaseWatch,
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("cancelled", &self.cancel.is_cancelled())
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .field("lease_live", &self.lease.live())
            .finish()
    }
}

/// "Now" while a run acts.
pub struct RunClock<'a> {
    control: &'a RunControl,
    base: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl<'a> RunClock<'a> {
    pub fn start(control: &'a RunControl, base: DateTime<Utc>) -> Self {
        RunClock {
            control,
            base,
            started: tokio::time::Instant::now(),
        }
    }

    /// Whether the run has been asked to stop.
    pub fn cancelled(&self) -> bool {
        self.control.cancel.is_cancelled()
    }

    /// How long this replica surely still holds the run.
    pub fn lease(&self) -> crate::scheduler::LeaseWatch {
        self.control.lease.clone()
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.control.clock {
            Some(c) => c.now(),
            None => {
                self.base
                    + chrono::Duration::from_std(self.started.elapsed())
                        .unwrap_or(chrono::Duration::zero())
            }
        }
    }
}

/// What an action was decided on (see [`super::saved`] for how each resource's are read): property name -> value, as text (stable across runs;
/// nothing derived from "now", such as an age).
pub type Facts = std::collections::BTreeMap<String, String>;

/// One action a plan wants taken, in a kind's own terms (`A`).
#[derive(Debug, Clone)]
pub struct PlannedAction<A> {
    pub spec: ActionSpec,
    pub action: A,
    /// Indices (into the project's `actions`, all earlier than this one) of actions that
    /// must have succeeded in this run for this one to be attempted.
    pub requires: Vec<usize>,
    /// What the action was decided on (see [`super::saved`]): written to a saved plan, and
    /// compared with a fresh plan's when the saved plan is applied.
    pub facts: Facts,
}

impl<A> PlannedAction<A> {
    pub fn new(spec: ActionSpec, action: A) -> Self {
        PlannedAction {
            spec,
            action,
            requires: Vec::new(),
            facts: Default::default(),
        }
    }

    /// The same action with the facts it was decided on.
    pub fn with_facts(mut self, facts: Facts) -> Self {
        self.facts = facts;
        self
    }
}

/// The plan for one project.
#[derive(Debug, Clone)]
pub struct ProjectPlan<A> {
    pub project_id: ProjectId,
    pub actions: Vec<PlannedAction<A>>,
    /// Decisions not to act, recorded as `skipped` with their reason.
    pub skips: Vec<ActionSpec>,
    /// The resources the plan's destructive actions could destroy: the base of
    /// `max_actions_percent`. Matched branches (expire), matched endpoints (suspend), or the
    /// snapshots this job owns of the matched branches (snapshot retention).
    pub matched: usize,
    /// Parts of the plan that could not be decided (e.g. the job's state could not be
    /// read), with the error: recorded as failed actions, so the run ends `partial`.
    pub failures: Vec<(ActionSpec, String)>,
}

impl<A> ProjectPlan<A> {
    pub fn new(project_id: ProjectId) -> Self {
        ProjectPlan {
            project_id,
            actions: Vec::new(),
            skips: Vec::new(),
            matched: 0,
            failures: Vec::new(),
        }
    }
}

/// Why one project could not be planned (the run goes on with the others).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The job's own state in the store cannot be read.
    #[error("{0}")]
    State(#[from] super::state::StateError),
}

/// Errors that end a run before any action (listing projects failed, limits exceeded, bad
/// selectors), or a store that can no longer record it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Limit(#[from] super::limits::LimitExceeded),
    #[error("{0}")]
    Scope(#[from] super::scope::ScopeError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A job's state in the store cannot be read or written.
    #[error("job state: {0}")]
    State(#[from] super::state::StateError),
}
