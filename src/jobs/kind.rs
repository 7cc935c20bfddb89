//! The job-kind trait: what a kind of job decides and does, and nothing of how a run is
//! carried out (that is [`super::engine`]'s, the same for every kind).
//!
//! A kind plans one project at a time from what it lists there and from its own state,
//! into typed actions; it says which of them are destructive, how to perform each (and
//! what to check right before), and how its state changes around each call: an *intent*
//! written before the call ([`JobKind::intend`]), so that a daemon dying during the call
//! leaves a record the next run can reconcile, and the result after it
//! ([`JobKind::record`]). The engine writes those changes (see [`super::state`]).

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::plan::{JobEnv, PlanError, PlannedAction, ProjectPlan, RunClock, RunContext};
use super::state::StateError;
use super::vocab::Action;
use crate::neon::{ApiError, Project, ProjectId};

/// What a kind is given to plan a project.
pub struct PlanCx<'a> {
    pub env: &'a JobEnv,
    pub ctx: &'a RunContext,
    /// The store's keeps, read at most once per run and only by a kind that asks
    /// ([`PlanCx::keeps`]). The engine's notice step reads them again before acting, so a
    /// keep recorded while the run plans still holds.
    pub(crate) keeps: tokio::sync::OnceCell<Vec<crate::store::Keep>>,
}

impl<'a> PlanCx<'a> {
    pub fn new(env: &'a JobEnv, ctx: &'a RunContext) -> Self {
        PlanCx {
            env,
            ctx,
            keeps: tokio::sync::OnceCell::new(),
        }
    }

    /// The keeps in the store (`neon-steward keep`), shared by every project of the run.
    pub async fn keeps(&self) -> Result<&[crate::store::Keep], crate::store::StoreError> {
        self.keeps
            .get_or_try_init(|| self.env.store.list_keeps())
            .await
            .map(Vec::as_slice)
    }
}

/// What a kind is given to act on a project.
pub struct ActCx<'a> {
    pub env: &'a JobEnv,
    pub project: &'a ProjectId,
    pub(crate) clock: &'a RunClock<'a>,
}

impl ActCx<'_> {
    /// "Now" at the moment of the call (times handed to Neon are computed from it).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// An action as the ledger holds it, to be checked against Neon after the fact (its call's
/// answer was lost, or the run died or was taken over during it).
#[derive(Debug, Clone, Copy)]
pub struct PendingRef<'a> {
    pub action: Action,
    pub project_id: &'a str,
    pub resource_id: &'a str,
    pub resource_name: Option<&'a str>,
}

/// What Neon says happened to a [`PendingRef`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// `Succeeded`, `Failed` or `Unknown`.
    pub outcome: crate::store::ActionOutcome,
    /// What was found, for the ledger.
    pub detail: String,
}

impl Resolution {
    pub fn succeeded(detail: impl Into<String>) -> Self {
        Resolution {
            outcome: crate::store::ActionOutcome::Succeeded,
            detail: detail.into(),
        }
    }
    pub fn failed(detail: impl Into<String>) -> Self {
        Resolution {
            outcome: crate::store::ActionOutcome::Failed,
            detail: detail.into(),
        }
    }
    pub fn unknown(detail: impl Into<String>) -> Self {
        Resolution {
            outcome: crate::store::ActionOutcome::Unknown,
            detail: detail.into(),
        }
    }
}

/// A kind's state for the project being planned, or why it cannot be read. A kind decides
/// what it can still do without it; the engine never writes a state it could not read.
pub type StateView<'a, T> = Result<&'a mut T, &'a StateError>;

pub trait JobKind: Send + Sync {
    /// One thing the kind does to one resource.
    type Action: Clone + std::fmt::Debug + Send + Sync;
    /// What performing an action returned, as [`JobKind::record`] and the ledger need it.
    type Done: Send + Sync;
    /// What the kind remembers about a project between runs.
    type State: Serialize
        + DeserializeOwned
        + Default
        + Clone
        + PartialEq
        + std::fmt::Debug
        + Send
        + Sync;

    /// The state record's key in the store is `{STATE_KEY}/{project id}`.
    const STATE_KEY: &'static str;

    /// The ledger actions this kind plans, and answers for in [`JobKind::check_outcome`].
    /// Reconciliation (`jobs/reconcile.rs`) maps every [`Action`] to the kind that checks
    /// it with an exhaustive `match`, and its test checks that map against these lists.
    const LEDGER_ACTIONS: &'static [Action];

    /// Whether this job keeps state at all (a policy may not need any, e.g. `expire` in
    /// delete mode): without it nothing is read or written.
    fn keeps_state(&self) -> bool {
        true
    }

    /// Decides what to do in one project. Changes made to the state here (forgetting what
    /// no longer exists) are written before the project's first action, and only if the
    /// record has not changed since it was read.
    fn plan_project(
        &self,
        cx: &PlanCx<'_>,
        project: &Project,
        state: StateView<'_, Self::State>,
    ) -> impl Future<Output = Result<ProjectPlan<Self::Action>, PlanError>> + Send;

    /// Whether the action can destroy something (the numerator of `max_actions_percent`).
    fn is_destructive(action: &Self::Action) -> bool;

    /// Whether the job's `notice` applies to the action (the engine's notice step). By
    /// default every destructive action waits out the notice.
    fn under_notice(action: &Self::Action) -> bool {
        Self::is_destructive(action)
    }

    /// The branch an action's resource is on when the resource is not itself a branch (an
    /// endpoint's branch), as `(id, name)` (the name when the kind listed it): a keep of that
    /// branch holds the action too. A branch's own actions need nothing here: their
    /// resource is the branch.
    fn on_branch(_action: &Self::Action) -> Option<(&str, Option<&str>)> {
        None
    }

    /// The state before the call: what must be known if the daemon dies during it.
    fn intend(&self, _state: &mut Self::State, _action: &Self::Action) {}

    /// The state after a successful call.
    fn record(&self, _state: &mut Self::State, _action: &Self::Action, _done: &Self::Done) {}

    /// Reads what the action depends on again right before it is taken (a plan can be
    /// minutes old on a large account). `Some(refusal)`: do not take it now; the refusal
    /// is appended to the action's reason, so it says what was not done and why ("not
    /// deleted: the branch is now protected").
    fn verify(
        &self,
        _cx: &ActCx<'_>,
        _action: &Self::Action,
    ) -> impl Future<Output = Result<Option<String>, ApiError>> + Send {
        async { Ok(None) }
    }

    /// Makes the call(s) to Neon and waits for the operations they start.
    fn perform(
        &self,
        cx: &ActCx<'_>,
        action: &Self::Action,
    ) -> impl Future<Output = Result<Self::Done, ApiError>> + Send;

    /// The ledger's detail of a successful action.
    fn detail(done: &Self::Done) -> Option<String>;

    /// Checks with Neon whether an action happened (see [`PendingRef`]). An error means
    /// Neon could not be asked now (try again later); a question Neon cannot answer is
    /// [`Resolution::unknown`] with the reason.
    fn check_outcome(
        env: &JobEnv,
        pending: &PendingRef<'_>,
    ) -> impl Future<Output = Result<Resolution, ApiError>> + Send;

    /// Why an action is not attempted when `dep`, which it requires, did not succeed.
    fn blocked_by(dep: &PlannedAction<Self::Action>) -> String {
        format!(
            "{} of {} did not succeed in this run",
            dep.spec.action, dep.spec.resource_id
        )
    }
}
