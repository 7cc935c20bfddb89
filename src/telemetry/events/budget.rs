//! The budget guard's events: a budget evaluated (its gauges), a threshold noticed.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use crate::telemetry::metrics::metrics;

/// `(budget, currency)` label pairs of one job's series.
type BudgetSeries = HashSet<(String, String)>;

/// The series each job last exported, so that series of budgets that are no longer exported
/// (a project no longer selected, or under the cap) are removed.
static EXPORTED: LazyLock<Mutex<HashMap<String, BudgetSeries>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// One budget's figures at a run: sets `neon_steward_budget_{spend,projected,limit}`.
pub struct BudgetEvaluated<'a> {
    pub job: &'a str,
    /// `all`, or a project id (`per_project`).
    pub budget: &'a str,
    pub currency: &'a str,
    /// `YYYY-MM` in the budget's zone.
    pub month: &'a str,
    pub spent: f64,
    pub projected: f64,
    pub limit: f64,
}

impl BudgetEvaluated<'_> {
    pub fn emit(&self) {
        tracing::info!(
            job = self.job,
            budget = self.budget,
            month = self.month,
            spent = self.spent,
            projected = self.projected,
            limit = self.limit,
            currency = self.currency,
            "budget evaluated"
        );
        let m = metrics();
        let labels = [self.job, self.budget, self.currency];
        m.budget_spend.with_label_values(&labels).set(self.spent);
        m.budget_projected
            .with_label_values(&labels)
            .set(self.projected);
        m.budget_limit.with_label_values(&labels).set(self.limit);
    }

    /// After a run's evaluations: removes `job`'s series of budgets not in `exported`.
    pub fn retain(job: &str, exported: BudgetSeries) {
        let mut all = EXPORTED.lock().unwrap_or_else(|p| p.into_inner());
        let m = metrics();
        if let Some(before) = all.get(job) {
            for (budget, currency) in before.difference(&exported) {
                let labels = [job, budget.as_str(), currency.as_str()];
                let _ = m.budget_spend.remove_label_values(&labels);
                let _ = m.budget_projected.remove_label_values(&labels);
                let _ = m.budget_limit.remove_label_values(&labels);
            }
        }
        all.insert(job.to_string(), exported);
    }
}

/// A threshold of a budget was crossed and its `notify` action taken: a warning in the log
/// and `neon_steward_budget_notices_total`. (The ledger row is the engine's; the `budget`
/// notifications are in the outbox.)
pub struct BudgetNotice<'a> {
    pub job: &'a str,
    pub budget: &'a str,
    pub month: &'a str,
    pub threshold_percent: f64,
    pub spent: f64,
    pub projected: f64,
    pub limit: f64,
    pub currency: &'a str,
    /// The `[[notify]]` sinks it was written to the outbox for.
    pub sinks: usize,
}

impl BudgetNotice<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            job = self.job,
            budget = self.budget,
            month = self.month,
            threshold_percent = self.threshold_percent,
            spent = self.spent,
            projected = self.projected,
            limit = self.limit,
            currency = self.currency,
            sinks = self.sinks,
            "budget threshold crossed: month-to-date spend {:.2} {} is {:.1}% of the {:.2} {} budget",
            self.spent,
            self.currency,
            100.0 * self.spent / self.limit,
            self.limit,
            self.currency,
        );
        metrics()
            .budget_notices_total
            .with_label_values(&[self.job, &format_percent(self.threshold_percent)])
            .inc();
    }
}

/// `80`, `112.5`: a threshold as a label and in text.
pub fn format_percent(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}
