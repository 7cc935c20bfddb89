//! `plan --output markdown`: a saved plan as a person reviews it in a pull request. Per job
//! and project, destructive actions first, with counts, rules and reasons; skips are
//! counted and listed folded. Everything taken from Neon or the policy is escaped, so a
//! branch name cannot break the table or inject markup.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{action_counts, PlanDocument, PlannedJob};
use crate::jobs::saved::{SavedAction, SavedSkip};

/// Escapes text for a Markdown table cell (GitHub-flavoured): the characters that make
/// markup, the cell separator, and line breaks.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn resource(kind: &str, id: &str, name: Option<&str>) -> String {
    match name {
        Some(n) if n != id => format!("{} {} ({})", cell(kind), cell(n), cell(id)),
        _ => format!("{} {}", cell(kind), cell(id)),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Renders a plan.
pub fn render(plan: &PlanDocument) -> String {
    let mut md = String::new();
    let total: usize = plan.jobs.iter().map(|j| j.actions.len()).sum();
    let destructive: usize = plan
        .jobs
        .iter()
        .flat_map(|j| &j.actions)
        .filter(|a| a.destructive)
        .count();
    let _ = writeln!(md, "## neon-steward plan {}", cell(&plan.id));
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Made at {} from {} (policy {}): **{}, {} destructive**.",
        plan.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cell(&plan.policy),
        cell(&plan.policy_hash),
        plural(total, "action", "actions"),
        destructive
    );
    let _ = writeln!(
        md,
        "Nothing happens until the plan is applied (`neon-steward apply plan.json`); \
         each action is then checked again against Neon and the policy."
    );
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| Job | Kind | Actions | Destructive | Skipped | Planning |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|");
    for j in &plan.jobs {
        let d = j.actions.iter().filter(|a| a.destructive).count();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&j.job),
            cell(&j.kind),
            j.actions.len(),
            d,
            j.skips.len(),
            cell(j.status.as_str())
        );
    }
    for j in &plan.jobs {
        job_section(&mut md, j);
    }
    md
}

fn job_section(md: &mut String, j: &PlannedJob) {
    let _ = writeln!(md);
    let _ = writeln!(md, "### Job {} ({})", cell(&j.job), cell(&j.kind));
    let _ = writeln!(md);
    if let Some(e) = &j.error {
        let _ = writeln!(
            md,
            "> **Planning {}:** {}",
            cell(j.status.as_str()),
            cell(e)
        );
        let _ = writeln!(md);
    }
    if j.dry_run {
        let _ = writeln!(
            md,
            "> This job is `dry_run = true` in the policy: applying it records the actions \
             as planned and changes nothing."
        );
        let _ = writeln!(md);
    }
    if j.actions.is_empty() && j.skips.is_empty() {
        let _ = writeln!(md, "Nothing to do.");
        return;
    }
    let counts: Vec<String> = action_counts(j)
        .into_iter()
        .map(|(a, n)| format!("{} x {n}", cell(a)))
        .collect();
    if counts.is_empty() {
        let _ = writeln!(md, "No actions.");
    } else {
        let _ = writeln!(md, "Actions: {}.", counts.join(", "));
    }
    // Per project, in id order.
    let mut projects: BTreeMap<&str, (Vec<&SavedAction>, Vec<&SavedSkip>)> = BTreeMap::new();
    for a in &j.actions {
        projects.entry(a.project_id.as_str()).or_default().0.push(a);
    }
    for s in &j.skips {
        projects.entry(s.project_id.as_str()).or_default().1.push(s);
    }
    for (project, (mut actions, skips)) in projects {
        let _ = writeln!(md);
        let d = actions.iter().filter(|a| a.destructive).count();
        let _ = writeln!(
            md,
            "#### Project {}: {}, {} destructive, {} skipped",
            cell(project),
            plural(actions.len(), "action", "actions"),
            d,
            skips.len()
        );
        if !actions.is_empty() {
            // Destructive first; the order within is stable (the plan's own).
            actions.sort_by_key(|a| !a.destructive);
            let _ = writeln!(md);
            let _ = writeln!(md, "| | Action | Resource | Rule | Reason |");
            let _ = writeln!(md, "|---|---|---|---|---|");
            for a in actions {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    if a.destructive { "**destructive**" } else { "" },
                    cell(a.action.as_str()),
                    resource(
                        a.resource_kind.as_str(),
                        &a.resource_id,
                        a.resource_name.as_deref()
                    ),
                    cell(a.rule.as_deref().unwrap_or("")),
                    cell(&a.reason)
                );
            }
        }
        if !skips.is_empty() {
            let _ = writeln!(md);
            let _ = writeln!(
                md,
                "<details><summary>{} not acted on</summary>",
                plural(skips.len(), "resource", "resources")
            );
            let _ = writeln!(md);
            let _ = writeln!(md, "| Action | Resource | Reason |");
            let _ = writeln!(md, "|---|---|---|");
            for s in skips {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    cell(s.action.as_str()),
                    resource(
                        s.resource_kind.as_str(),
                        &s.resource_id,
                        s.resource_name.as_deref()
                    ),
                    cell(&s.reason)
                );
            }
            let _ = writeln!(md);
            let _ = writeln!(md, "</details>");
        }
    }
}
