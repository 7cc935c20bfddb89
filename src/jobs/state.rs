//! Typed, versioned job state: one record per job kind and scope (a project, or the whole
//! job), in the kind's own serde type, written by compare-and-set.
//!
//! Every kind keeps its memory the same way ([`Recorded`]): loaded at planning, changed by
//! a pure function (an *intent* before a call to Neon, the result after it), and written
//! at once. A write names the version it read; if another writer got there first (a second
//! run of the job on another replica, an operator's repair), the record is read again and
//! the same change applied to what is there now, so neither update is lost.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{Store, StoreError};

/// How often a change is re-applied to a record other writers keep changing before the
/// write gives up. Each conflict means another writer's update landed, so W writers making
/// N updates each conflict at most W*N - 1 times; two runs of one job contend at most
/// briefly, and more means something rewrites the record in a loop, which failing says.
const MAX_CONFLICTS: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The stored record is not what this kind writes.
    #[error("the job's record `{key}` is not valid ({error}); it is left as it is until it is repaired or removed")]
    Corrupt { key: String, error: String },
    /// Other writers changed the record on every attempt.
    #[error("the job's record `{key}` kept changing under this run ({MAX_CONFLICTS} conflicting writes); not written")]
    Contended { key: String },
    /// The record changed since this run planned from it.
    #[error("the job's record `{key}` was changed by another run since this run read it")]
    Stale { key: String },
}

/// A kind's state for one scope as this run knows it.
#[derive(Debug, Clone)]
pub struct Recorded<T> {
    /// The run writing the record (writes are fenced by its lease).
    run: crate::store::RunId,
    job: String,
    key: String,
    /// The version read or last written; `None`: no record exists yet.
    version: Option<i64>,
    /// What the store holds at `version` (`T::default()` when there is no record).
    stored: T,
    value: T,
}

impl<T> Recorded<T>
where
    T: Serialize + DeserializeOwned + Default + Clone + PartialEq,
{
    /// Reads the record of `key` (absent: the default value), for run `run` to change.
    pub async fn load(
        store: &dyn Store,
        run: crate::store::RunId,
        job: &str,
        key: &str,
    ) -> Result<Self, StateError> {
        let (version, stored) = Self::read(store, job, key).await?;
        Ok(Recorded {
            run,
            job: job.to_string(),
            key: key.to_string(),
            version,
            value: stored.clone(),
            stored,
        })
    }

    async fn read(store: &dyn Store, job: &str, key: &str) -> Result<(Option<i64>, T), StateError> {
        match store.get_state(job, key).await? {
            None => Ok((None, T::default())),
            Some(r) => {
                let value = serde_json::from_str(&r.value).map_err(|e| StateError::Corrupt {
                    key: key.to_string(),
                    error: e.to_string(),
                })?;
                Ok((Some(r.version), value))
            }
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value as this run sees it (what was read plus the changes it made).
    pub fn get(&self) -> &T {
        &self.value
    }

    /// For changes made while planning (e.g. forgetting snapshots that no longer exist);
    /// written by [`Recorded::save_planned`].
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.value
    }

    /// Writes the changes made while planning, only if the record is still the one the
    /// plan was made from: a plan made from an older record must not act.
    pub async fn save_planned(&mut self, store: &dyn Store) -> Result<(), StateError> {
        if self.value == self.stored {
            return Ok(());
        }
        match self.write(store).await? {
            Some(v) => {
                self.version = Some(v);
                self.stored = self.value.clone();
                Ok(())
            }
            None => Err(StateError::Stale {
                key: self.key.clone(),
            }),
        }
    }

    /// Applies `change` and writes the result; on a conflicting write, reads the record
    /// again and applies `change` to that. `change` must therefore be a function of the
    /// value it is given (add this id, remove that one), not a copy of an earlier value.
    pub async fn update(
        &mut self,
        store: &dyn Store,
        change: impl Fn(&mut T),
    ) -> Result<(), StateError> {
        for _ in 0..MAX_CONFLICTS {
            let mut next = self.value.clone();
            change(&mut next);
            if next == self.stored {
                self.value = next;
                return Ok(());
            }
            let previous = std::mem::replace(&mut self.value, next);
            match self.write(store).await {
                Ok(Some(v)) => {
                    self.version = Some(v);
                    self.stored = self.value.clone();
                    return Ok(());
                }
                Ok(None) => {
                    let (version, fresh) = Self::read(store, &self.job, &self.key).await?;
                    tracing::debug!(job = %self.job, key = %self.key, "job state changed by another writer; applying the change to the new record");
                    self.version = version;
                    self.stored = fresh.clone();
                    self.value = fresh;
                }
                Err(e) => {
                    self.value = previous;
                    return Err(e);
                }
            }
        }
        Err(StateError::Contended {
            key: self.key.clone(),
        })
    }

    async fn write(&self, store: &dyn Store) -> Result<Option<i64>, StateError> {
        let text = serde_json::to_string(&self.value).map_err(|e| StateError::Corrupt {
            key: self.key.clone(),
            error: format!("cannot be encoded: {e}"),
        })?;
        Ok(store
            .put_state(self.run, &self.job, &self.key, self.version, &text)
            .await?)
    }
}
