//! The consumption exporter: turns what `collect_consumption` jobs hand in into the
//! `neon_steward_consumption` and `neon_steward_estimated_cost` gauges.
//!
//! It is a component with its own state (each job's latest contribution per granularity,
//! and the series it last exported), created by the daemon and handed to the jobs through
//! [`JobEnv`](crate::jobs::JobEnv). Tests and benches create their own, with gauge families
//! of their own ([`ConsumptionExporter::detached`]), so nothing they export is shared.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use prometheus::GaugeVec;

use super::events::ConsumptionExported;
use super::metrics::metrics;

/// One exported consumption value (the latest complete period of one project and metric).
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumptionPoint {
    pub project_id: String,
    pub metric: String,
    pub granularity: String,
    /// Start of the period the value covers: only points of one period are exported
    /// together, so a sum (`other`) never adds up different periods.
    pub period_start: DateTime<Utc>,
    pub value: f64,
    /// From the configured price table; `None` when the metric has no price.
    pub cost: Option<f64>,
}

/// The project id under which projects beyond the cap are summed.
pub const OTHER_PROJECTS: &str = "other";

/// `(project_id, metric)` label pairs exported for one granularity.
type SeriesKeys = HashSet<(String, String)>;

/// What one job last handed in for one granularity.
struct Contribution {
    points: Vec<ConsumptionPoint>,
    max_projects: usize,
}

/// Per granularity: each job's latest contribution, and the label sets last exported (so
/// series of projects that disappeared, or fell under the cap, are removed instead of
/// reporting a stale value forever).
#[derive(Default)]
struct Exported {
    contributions: HashMap<String, Contribution>,
    series: SeriesKeys,
}

/// Sets the consumption gauges from the latest complete period of each granularity.
///
/// Several `collect_consumption` jobs may share a granularity (one per organization, say):
/// the gauges have no job label (that would duplicate a project's series per job and make
/// every sum over them count it twice), so each job's points are kept as its contribution
/// and the series of a granularity are computed from all contributions together. A job thus
/// never removes another job's series, and a project selected by two jobs has one series.
///
/// Only the newest period among the contributions is exported: a project whose latest
/// sample is older (deleted, no longer selected, a lagging job) gets no series, and
/// `project_id="other"` sums one period only.
///
/// At most `max_projects` projects get their own series (the smallest cap of the jobs
/// contributing); they are the ones with the highest estimated cost (then the highest summed
/// value, then project id, so the choice is stable). The rest are summed into
/// `project_id="other"`, which keeps label cardinality bounded on accounts with thousands of
/// projects.
pub struct ConsumptionExporter {
    consumption: GaugeVec,
    estimated_cost: GaugeVec,
    exported: Mutex<HashMap<String, Exported>>,
}

impl Default for ConsumptionExporter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ConsumptionExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumptionExporter")
            .finish_non_exhaustive()
    }
}

impl ConsumptionExporter {
    /// An exporter into the process's registry (what `/metrics` serves): the daemon's.
    pub fn new() -> Self {
        let m = metrics();
        Self::with_families(m.consumption.clone(), m.estimated_cost.clone())
    }

    /// An exporter into gauge families of its own, registered nowhere (tests, benches):
    /// read them with [`ConsumptionExporter::gather`] or [`ConsumptionExporter::render`].
    pub fn detached() -> Self {
        let (consumption, estimated_cost) = super::metrics::consumption_families();
        Self::with_families(consumption, estimated_cost)
    }

    fn with_families(consumption: GaugeVec, estimated_cost: GaugeVec) -> Self {
        ConsumptionExporter {
            consumption,
            estimated_cost,
            exported: Mutex::new(HashMap::new()),
        }
    }

    /// The exporter's two families as they are now.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        let mut out = self.consumption.collect();
        out.extend(self.estimated_cost.collect());
        out
    }

    /// The exporter's two families in the Prometheus text format.
    pub fn render(&self) -> String {
        super::metrics::encode(&self.gather())
    }

    /// Replaces `job`'s contribution to `granularity` with `points` (those of another
    /// granularity are ignored) and recomputes the granularity's series.
    pub fn export(
        &self,
        job: &str,
        granularity: &str,
        points: Vec<ConsumptionPoint>,
        max_projects: usize,
    ) {
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = exported.entry(granularity.to_string()).or_default();
        let mut points = points;
        points.retain(|p| p.granularity == granularity);
        slot.contributions.insert(
            job.to_string(),
            Contribution {
                points,
                max_projects,
            },
        );
        let max_projects = slot
            .contributions
            .values()
            .map(|c| c.max_projects)
            .min()
            .unwrap_or(max_projects);
        // The newest period, and one point per (project, metric) in it: the values come
        // from the shared store, so two jobs selecting a project report the same number.
        let latest = slot
            .contributions
            .values()
            .flat_map(|c| c.points.iter().map(|p| p.period_start))
            .max();
        let mut unique: HashMap<(&str, &str), &ConsumptionPoint> = HashMap::new();
        for p in slot.contributions.values().flat_map(|c| c.points.iter()) {
            if Some(p.period_start) == latest {
                unique.insert((p.project_id.as_str(), p.metric.as_str()), p);
            }
        }
        let points: Vec<&ConsumptionPoint> = unique.into_values().collect();

        // Rank projects.
        let mut totals: HashMap<&str, (f64, f64)> = HashMap::new();
        for p in &points {
            let e = totals.entry(p.project_id.as_str()).or_default();
            e.0 += p.cost.unwrap_or(0.0);
            e.1 += p.value;
        }
        let mut ranked: Vec<(&str, (f64, f64))> = totals.into_iter().collect();
        ranked.sort_by(|a, b| {
            b.1 .0
                .total_cmp(&a.1 .0)
                .then(b.1 .1.total_cmp(&a.1 .1))
                .then(a.0.cmp(b.0))
        });
        let kept: HashSet<&str> = ranked.iter().take(max_projects).map(|(p, _)| *p).collect();

        // Aggregate into the series to export: (project label, metric) -> (value, cost).
        let mut series: HashMap<(String, String), (f64, Option<f64>)> = HashMap::new();
        for p in &points {
            let project = if kept.contains(p.project_id.as_str()) {
                p.project_id.clone()
            } else {
                OTHER_PROJECTS.to_string()
            };
            let e = series
                .entry((project, p.metric.clone()))
                .or_insert((0.0, None));
            e.0 += p.value;
            if let Some(cost) = p.cost {
                e.1 = Some(e.1.unwrap_or(0.0) + cost);
            }
        }

        for (project, metric) in slot.series.iter() {
            if !series.contains_key(&(project.clone(), metric.clone())) {
                let labels = [project.as_str(), metric.as_str(), granularity];
                let _ = self.consumption.remove_label_values(&labels);
                let _ = self.estimated_cost.remove_label_values(&labels);
            }
        }
        for ((project, metric), (value, cost)) in &series {
            let labels = [project.as_str(), metric.as_str(), granularity];
            self.consumption.with_label_values(&labels).set(*value);
            match cost {
                Some(cost) => self.estimated_cost.with_label_values(&labels).set(*cost),
                None => {
                    let _ = self.estimated_cost.remove_label_values(&labels);
                }
            }
        }
        slot.series = series.keys().cloned().collect();
        ConsumptionExported {
            job,
            granularity,
            projects: ranked.len(),
            series: series.len(),
            capped: ranked.len().saturating_sub(max_projects),
        }
        .emit();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid test timestamp")
    }

    /// The exported `(project_id, metric)` series of a granularity and their values.
    fn series(
        exporter: &ConsumptionExporter,
        family: &str,
        granularity: &str,
    ) -> HashMap<(String, String), f64> {
        let mut out = HashMap::new();
        for mf in exporter.gather() {
            if mf.name() != family {
                continue;
            }
            for metric in mf.get_metric() {
                let label = |n: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_string())
                };
                if label("granularity").as_deref() == Some(granularity) {
                    out.insert(
                        (label("project_id").unwrap(), label("metric").unwrap()),
                        metric.get_gauge().get_value(),
                    );
                }
            }
        }
        out
    }

    fn point(
        project: &str,
        metric: &str,
        granularity: &str,
        value: f64,
        cost: Option<f64>,
    ) -> ConsumptionPoint {
        ConsumptionPoint {
            project_id: project.into(),
            metric: metric.into(),
            granularity: granularity.into(),
            period_start: at(3600),
            value,
            cost,
        }
    }

    #[test]
    fn consumption_export_caps_projects_and_drops_stale_series() {
        let exporter = ConsumptionExporter::detached();
        let g = "hourly";
        let points = vec![
            point("p-cheap", "compute_time_seconds", g, 100.0, Some(1.0)),
            point("p-big", "compute_time_seconds", g, 50.0, Some(9.0)),
            point("p-mid", "compute_time_seconds", g, 10.0, Some(4.0)),
            point("p-mid", "written_data_bytes", g, 7.0, None),
            point("p-small", "compute_time_seconds", g, 3.0, Some(0.5)),
        ];
        exporter.export("t-job", g, points, 2);
        let values = series(&exporter, "neon_steward_consumption", g);
        let key = |p: &str, m: &str| (p.to_string(), m.to_string());
        assert_eq!(values.len(), 4, "{values:?}");
        assert_eq!(values[&key("p-big", "compute_time_seconds")], 50.0);
        assert_eq!(values[&key("p-mid", "compute_time_seconds")], 10.0);
        assert_eq!(values[&key("p-mid", "written_data_bytes")], 7.0);
        assert_eq!(values[&key(OTHER_PROJECTS, "compute_time_seconds")], 103.0);
        let costs = series(&exporter, "neon_steward_estimated_cost", g);
        assert_eq!(costs[&key(OTHER_PROJECTS, "compute_time_seconds")], 1.5);
        assert!(
            !costs.contains_key(&key("p-mid", "written_data_bytes")),
            "no price, no cost series"
        );

        // Next period: p-mid is gone, everything fits under the cap.
        let points = vec![point("p-big", "compute_time_seconds", g, 60.0, Some(10.0))];
        exporter.export("t-job", g, points, 2);
        let values = series(&exporter, "neon_steward_consumption", g);
        assert_eq!(values.len(), 1, "stale series removed: {values:?}");
        assert_eq!(values[&key("p-big", "compute_time_seconds")], 60.0);
        assert_eq!(series(&exporter, "neon_steward_estimated_cost", g).len(), 1);
    }

    #[test]
    fn consumption_export_leaves_other_granularities_alone() {
        let exporter = ConsumptionExporter::detached();
        let points = vec![point("p-1", "compute_time_seconds", "hourly", 1.0, None)];
        exporter.export("t-job", "hourly", points, 10);
        let points = vec![point("p-1", "compute_time_seconds", "daily", 2.0, None)];
        exporter.export("t-job", "daily", points, 10);
        assert_eq!(
            series(&exporter, "neon_steward_consumption", "hourly").len(),
            1
        );
        assert_eq!(
            series(&exporter, "neon_steward_consumption", "daily").len(),
            1
        );
    }

    #[test]
    fn two_jobs_of_one_granularity_keep_each_others_series() {
        let exporter = ConsumptionExporter::detached();
        let g = "hourly";
        let key = |p: &str, m: &str| (p.to_string(), m.to_string());
        let emit =
            |job: &str, points: &[ConsumptionPoint]| exporter.export(job, g, points.to_vec(), 10);
        emit(
            "org-a",
            &[point("p-a", "compute_unit_seconds", g, 1.0, None)],
        );
        emit(
            "org-b",
            &[point("p-b", "compute_unit_seconds", g, 2.0, None)],
        );
        let values = series(&exporter, "neon_steward_consumption", g);
        assert_eq!(values.len(), 2, "{values:?}");
        // org-a's next export replaces only org-a's series.
        emit(
            "org-a",
            &[point("p-a", "compute_unit_seconds", g, 3.0, None)],
        );
        let values = series(&exporter, "neon_steward_consumption", g);
        assert_eq!(values[&key("p-a", "compute_unit_seconds")], 3.0);
        assert_eq!(values[&key("p-b", "compute_unit_seconds")], 2.0);
        // A job that drops a project removes that series, not the other job's.
        emit("org-a", &[]);
        let values = series(&exporter, "neon_steward_consumption", g);
        assert_eq!(values.len(), 1, "{values:?}");
        assert_eq!(values[&key("p-b", "compute_unit_seconds")], 2.0);
    }

    #[test]
    fn other_sums_one_period_only() {
        let exporter = ConsumptionExporter::detached();
        let g = "hourly";
        let at_period = |mut p: ConsumptionPoint, secs| {
            p.period_start = at(secs);
            p
        };
        // p-old's latest sample is a period behind (deleted project, lagging collection).
        let points = vec![
            at_period(
                point("p-big", "compute_unit_seconds", g, 50.0, Some(5.0)),
                7200,
            ),
            at_period(
                point("p-1", "compute_unit_seconds", g, 2.0, Some(0.2)),
                7200,
            ),
            at_period(
                point("p-2", "compute_unit_seconds", g, 3.0, Some(0.3)),
                7200,
            ),
            at_period(
                point("p-old", "compute_unit_seconds", g, 1000.0, Some(100.0)),
                3600,
            ),
        ];
        exporter.export("t-job", g, points, 1);
        let values = series(&exporter, "neon_steward_consumption", g);
        let key = |p: &str| (p.to_string(), "compute_unit_seconds".to_string());
        assert_eq!(values.len(), 2, "{values:?}");
        assert_eq!(values[&key("p-big")], 50.0, "ranked within the period");
        assert_eq!(values[&key(OTHER_PROJECTS)], 5.0, "only the newest period");
        let costs = series(&exporter, "neon_steward_estimated_cost", g);
        assert!(
            (costs[&key(OTHER_PROJECTS)] - 0.5).abs() < 1e-9,
            "{costs:?}"
        );
    }

    #[test]
    fn exporters_keep_apart() {
        // Two exporters, same job, granularity and project: neither sees the other's series,
        // and a detached exporter writes nothing into the process's families.
        let (a, b) = (
            ConsumptionExporter::detached(),
            ConsumptionExporter::detached(),
        );
        let p = |v| {
            vec![point(
                "p-apart",
                "compute_unit_seconds",
                "hourly",
                v,
                Some(v),
            )]
        };
        a.export("job", "hourly", p(1.0), 10);
        b.export("job", "hourly", p(2.0), 10);
        let key = ("p-apart".to_string(), "compute_unit_seconds".to_string());
        assert_eq!(series(&a, "neon_steward_consumption", "hourly")[&key], 1.0);
        assert_eq!(series(&b, "neon_steward_consumption", "hourly")[&key], 2.0);
        b.export("job", "hourly", vec![], 10);
        assert_eq!(series(&a, "neon_steward_consumption", "hourly").len(), 1);
        assert!(series(&b, "neon_steward_consumption", "hourly").is_empty());
        assert!(
            !crate::telemetry::metrics::render().contains("p-apart"),
            "detached exporters stay out of /metrics"
        );
        assert!(a.render().contains("neon_steward_consumption{"));
    }
}
