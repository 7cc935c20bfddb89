//! What the daemon can actually do right now, for `/readyz`: the outcome of the last Neon
//! API call and of the last store operation.
//!
//! Each is recorded where it happens: the client records the final outcome of every call
//! (after its retries), and [`ObservedStore`] wraps the store the daemon uses and records
//! every operation. `/readyz` is not ready while the last outcome of either was a failure
//! that means the daemon cannot work (a refused API key, Neon unreachable, a locked or full
//! store), and ready again after the next success. One [`Health`] per daemon, shared by
//! `Arc`; nothing here is process-wide.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::neon::{ApiError, ApiObserver};
use crate::store::{
    ActionCounts, ActionId, ActionOutcome, ActionRecord, BranchConsumptionSample, Claim,
    ConsumptionSample, Lease, NewAction, NewRun, RunFilter, RunId, RunRecord, RunStatus,
    StateRecord, Store, StoreError, StoreResult,
};
use crate::store::{
    Delivery, Keep, NewNotification, NoticeKey, NoticeMark, NotificationFilter, NotificationRecord,
    NotificationStatus,
};

/// The last failure of one side, if its last outcome was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub at: DateTime<Utc>,
    /// What failed, complete on its own and free of secrets.
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Health {
    api: Mutex<Option<Failure>>,
    store: Mutex<Option<Failure>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// The final outcome of one API call. Answers that concern only the request (404, 409,
    /// 422, 423, ...) show that the API is reachable and the key accepted: they count as
    /// successes here. A refused key (401, 403), Neon unavailable (5xx, 429 after the
    /// retries) and no answer at all (connect, timeout, transport) count as failures.
    pub fn record_api<T>(&self, result: &Result<T, ApiError>) {
        ApiObserver::record(self, result.as_ref().map(|_| ()));
    }

    /// The outcome of one store operation. Only errors of the store itself count (it cannot
    /// be opened or written: locked, full, gone); a run fenced off by its lease, a row not
    /// found or not as written are about that run or row, and the store answered.
    pub fn record_store<T>(&self, result: &StoreResult<T>) {
        let failure = match result {
            Err(e @ (StoreError::Open { .. } | StoreError::Migrate(_) | StoreError::Db(_))) => {
                Some(Failure {
                    at: Utc::now(),
                    message: e.to_string(),
                })
            }
            _ => None,
        };
        set(&self.store, failure);
    }

    pub fn api_failure(&self) -> Option<Failure> {
        self.api.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store_failure(&self) -> Option<Failure> {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `store` wrapped so that every operation's outcome is recorded here.
    pub fn observe_store(self: &Arc<Self>, store: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(ObservedStore {
            inner: store,
            health: self.clone(),
        })
    }
}

fn set(slot: &Mutex<Option<Failure>>, value: Option<Failure>) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = value;
}

impl ApiObserver for Health {
    fn record(&self, outcome: Result<(), &ApiError>) {
        let failure = match outcome {
            Ok(()) => None,
            Err(e) => api_failure(e),
        };
        set(&self.api, failure);
    }
}

fn api_failure(e: &ApiError) -> Option<Failure> {
    let message = match e {
        ApiError::Status { status, .. } if matches!(status, 401 | 403) => format!(
            "the Neon API refused the API key (HTTP {status}); check NEON_API_KEY or the key \
             file: {e}"
        ),
        ApiError::Status { status, .. } if *status == 429 || *status >= 500 => {
            format!("the Neon API is unavailable: {e}")
        }
        ApiError::Status { .. } => return None,
        ApiError::Timeout { .. } | ApiError::Connect { .. } | ApiError::Transport { .. } => {
            format!("the Neon API cannot be reached: {e}")
        }
        // A malformed answer, a bad request built here, ...: about the call, not the daemon.
        _ => return None,
    };
    Some(Failure {
        at: Utc::now(),
        message,
    })
}

/// A [`Store`] that records the outcome of every operation in a [`Health`].
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    health: Arc<Health>,
}

impl ObservedStore {
    fn seen<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        self.health.record_store(&result);
        result
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.seen(self.inner.migrate().await)
    }
    fn replica(&self) -> String {
        self.inner.replica()
    }
    async fn ping(&self) -> StoreResult<()> {
        // A read that succeeds says nothing about writes: only failures are recorded.
        let r = self.inner.ping().await;
        if r.is_err() {
            self.health.record_store(&r);
        }
        r
    }
    async fn claim_run(&self, run: &NewRun) -> StoreResult<Option<RunId>> {
        self.seen(self.inner.claim_run(run).await)
    }
    async fn finish_run(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
    ) -> StoreResult<()> {
        self.seen(self.inner.finish_run(id, status, counts, error).await)
    }
    async fn finish_run_notifying(
        &self,
        id: RunId,
        status: RunStatus,
        counts: ActionCounts,
        error: Option<&str>,
        notes: &[NewNotification],
    ) -> StoreResult<()> {
        self.seen(
            self.inner
                .finish_run_notifying(id, status, counts, error, notes)
                .await,
        )
    }
    async fn claim_notifications(
        &self,
        limit: u32,
        lease_ms: i64,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.seen(self.inner.claim_notifications(limit, lease_ms).await)
    }
    async fn settle_notification(
        &self,
        id: &str,
        delivery: &Delivery,
    ) -> StoreResult<Option<NotificationStatus>> {
        self.seen(self.inner.settle_notification(id, delivery).await)
    }
    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
    ) -> StoreResult<Vec<NotificationRecord>> {
        self.seen(self.inner.list_notifications(filter).await)
    }
    async fn notice_marks(&self, job: &str) -> StoreResult<Vec<NoticeMark>> {
        self.seen(self.inner.notice_marks(job).await)
    }
    async fn write_notices(
        &self,
        run: RunId,
        job: &str,
        marks: &[NoticeMark],
        dropped: &[NoticeKey],
        notes: &[NewNotification],
    ) -> StoreResult<()> {
        self.seen(
            self.inner
                .write_notices(run, job, marks, dropped, notes)
                .await,
        )
    }
    async fn put_keep(&self, keep: &Keep) -> StoreResult<()> {
        self.seen(self.inner.put_keep(keep).await)
    }
    async fn remove_keep(&self, project: &str, branch: &str) -> StoreResult<bool> {
        self.seen(self.inner.remove_keep(project, branch).await)
    }
    async fn list_keeps(&self) -> StoreResult<Vec<Keep>> {
        self.seen(self.inner.list_keeps().await)
    }
    async fn claim_exclusive(&self, run: &NewRun) -> StoreResult<Claim> {
        self.seen(self.inner.claim_exclusive(run).await)
    }
    async fn renew_lease(&self, run: RunId) -> StoreResult<Lease> {
        self.seen(self.inner.renew_lease(run).await)
    }
    async fn take_over_expired(&self) -> StoreResult<Vec<RunRecord>> {
        self.seen(self.inner.take_over_expired().await)
    }
    async fn request_cancel(&self, job: &str, except: RunId) -> StoreResult<u64> {
        self.seen(self.inner.request_cancel(job, except).await)
    }
    async fn unresolved_actions(&self, limit: u32) -> StoreResult<Vec<ActionRecord>> {
        self.seen(self.inner.unresolved_actions(limit).await)
    }
    async fn reconcile_action(
        &self,
        id: ActionId,
        outcome: ActionOutcome,
        detail: &str,
    ) -> StoreResult<()> {
        self.seen(self.inner.reconcile_action(id, outcome, detail).await)
    }
    async fn get_run(&self, id: RunId) -> StoreResult<Option<RunRecord>> {
        self.seen(self.inner.get_run(id).await)
    }
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<RunRecord>> {
        self.seen(self.inner.list_runs(filter).await)
    }
    async fn last_scheduled_run(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        self.seen(self.inner.last_scheduled_run(job).await)
    }
    async fn last_success(&self, job: &str) -> StoreResult<Option<RunRecord>> {
        self.seen(self.inner.last_success(job).await)
    }
    async fn begin_action(&self, action: &NewAction) -> StoreResult<ActionId> {
        self.seen(self.inner.begin_action(action).await)
    }
    async fn begin_actions(&self, actions: &[NewAction]) -> StoreResult<Vec<ActionId>> {
        self.seen(self.inner.begin_actions(actions).await)
    }
    async fn finish_action(
        &self,
        id: ActionId,
        outcome: ActionOutcome,
        detail: Option<&str>,
    ) -> StoreResult<()> {
        self.seen(self.inner.finish_action(id, outcome, detail).await)
    }
    async fn actions_for_run(&self, run: RunId) -> StoreResult<Vec<ActionRecord>> {
        self.seen(self.inner.actions_for_run(run).await)
    }
    async fn get_state(&self, job: &str, key: &str) -> StoreResult<Option<StateRecord>> {
        self.seen(self.inner.get_state(job, key).await)
    }
    async fn put_state(
        &self,
        run: RunId,
        job: &str,
        key: &str,
        expected: Option<i64>,
        value: &str,
    ) -> StoreResult<Option<i64>> {
        self.seen(self.inner.put_state(run, job, key, expected, value).await)
    }
    async fn upsert_consumption(&self, samples: &[ConsumptionSample]) -> StoreResult<u64> {
        self.seen(self.inner.upsert_consumption(samples).await)
    }
    async fn list_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ConsumptionSample>> {
        self.seen(self.inner.list_consumption(granularity, since).await)
    }
    async fn latest_consumption_end(
        &self,
        granularity: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        self.seen(self.inner.latest_consumption_end(granularity).await)
    }
    async fn upsert_branch_consumption(
        &self,
        samples: &[BranchConsumptionSample],
    ) -> StoreResult<u64> {
        self.seen(self.inner.upsert_branch_consumption(samples).await)
    }
    async fn list_branch_consumption(
        &self,
        granularity: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<BranchConsumptionSample>> {
        self.seen(self.inner.list_branch_consumption(granularity, since).await)
    }
    async fn latest_branch_consumption_end(
        &self,
        granularity: &str,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        self.seen(self.inner.latest_branch_consumption_end(granularity).await)
    }
    async fn prune(&self, before: &crate::store::PruneBefore) -> StoreResult<crate::store::Pruned> {
        self.seen(self.inner.prune(before).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ApiError {
        ApiError::Status {
            status,
            code: None,
            message: "m".into(),
            request_id: None,
            route: "/projects",
        }
    }

    #[test]
    fn api_outcomes() {
        let h = Health::default();
        assert!(h.api_failure().is_none());
        h.record_api::<()>(&Err(status(401)));
        assert!(h
            .api_failure()
            .unwrap()
            .message
            .contains("refused the API key"));
        // A request-specific answer shows the key works.
        h.record_api::<()>(&Err(status(404)));
        assert!(h.api_failure().is_none());
        h.record_api::<()>(&Err(status(503)));
        assert!(h.api_failure().unwrap().message.contains("unavailable"));
        h.record_api(&Ok(()));
        assert!(h.api_failure().is_none());
    }

    #[test]
    fn store_outcomes() {
        let h = Health::default();
        h.record_store::<()>(&Err(StoreError::Db(sqlx::Error::PoolTimedOut)));
        assert!(h.store_failure().unwrap().message.contains("store: "));
        h.record_store(&Ok(1));
        assert!(h.store_failure().is_none());
        // A fenced write is about the run, not the store.
        h.record_store::<()>(&Err(StoreError::Fenced {
            run_id: 1,
            why: "taken over".into(),
        }));
        assert!(h.store_failure().is_none());
    }
}
