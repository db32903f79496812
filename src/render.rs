//! Plans and status as human text.
//!
//! Styles are written as ANSI sequences; the CLI prints through `anstream`,
//! which drops them off a terminal and under NO_COLOR. Key values never reach
//! this module: plans hold ids and digests only.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use jiff::Timestamp;
use keyplan_runtime::record::{KeyState, digest_prefix};

use crate::config::{Config, Edge};
use crate::observe::{Observed, Versioned};
use crate::plan::{Action, ActionKind, Plan, Waiting};
use crate::plan_file::{PlanFile, written_lines};

const ORDER: [ActionKind; 7] = [
    ActionKind::Create,
    ActionKind::Stage,
    ActionKind::Promote,
    ActionKind::Retire,
    ActionKind::Replace,
    ActionKind::Repair,
    ActionKind::Revoke,
];

fn style(kind: ActionKind) -> Style {
    let color = match kind {
        ActionKind::Create => AnsiColor::Green,
        ActionKind::Revoke | ActionKind::Replace => AnsiColor::Red,
        _ => AnsiColor::Yellow,
    };
    Style::new().fg_color(Some(color.into()))
}

fn bold() -> Style {
    Style::new().bold()
}

/// Waiting steps, soonest first.
fn by_due(waiting: &[Waiting]) -> Vec<&Waiting> {
    let mut sorted: Vec<&Waiting> = waiting.iter().collect();
    sorted.sort_by_key(|w| w.due);
    sorted
}

/// An instant as plans show it: minutes, UTC.
pub fn instant(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%MZ").to_string()
}

/// "Plan: 3 to create, 1 to revoke." (or "Plan: nothing to do.").
pub fn summary(plan: &Plan) -> String {
    let parts: Vec<String> = ORDER
        .iter()
        .filter_map(|k| {
            let n = plan.count(*k);
            (n > 0).then(|| format!("{n} to {k}"))
        })
        .collect();
    if parts.is_empty() {
        "Plan: nothing to do.".into()
    } else {
        format!("Plan: {}.", parts.join(", "))
    }
}

/// The line-by-line diff of two accepts documents: (`-`, `+` or ` `, line).
pub fn diff(before: &[String], after: &[String]) -> Vec<(char, String)> {
    let before = before.iter().map(|l| format!("{l}\n")).collect::<String>();
    let after = after.iter().map(|l| format!("{l}\n")).collect::<String>();
    similar::TextDiff::from_lines(&before, &after)
        .iter_all_changes()
        .map(|change| {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
                similar::ChangeTag::Equal => ' ',
            };
            (sign, change.value().trim_end().to_owned())
        })
        .collect()
}

/// The accepts diff of one action: the document before, and as its last
/// accepts write leaves it.
pub fn action_diff(file: &PlanFile, action: &Action) -> Vec<(char, String)> {
    let Some(after) = action.steps.iter().rev().find_map(written_lines) else {
        return Vec::new();
    };
    diff(file.before(&action.edge), &after)
}

/// The whole plan for a person.
pub fn plan_human(file: &PlanFile) -> String {
    let plan = &file.plan;
    let mut out = String::new();
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "No changes: nothing is due in environment {} at {}.",
            file.environment,
            instant(plan.now)
        );
    } else {
        let _ = writeln!(
            out,
            "keyplan will make these changes in environment {} (at {}):\n",
            file.environment,
            instant(plan.now)
        );
        let red = Style::new().fg_color(Some(AnsiColor::Red.into()));
        let green = Style::new().fg_color(Some(AnsiColor::Green.into()));
        for action in &plan.actions {
            let s = style(action.kind);
            let _ = writeln!(
                out,
                "  {s}{} {} {}{s:#} gen {}",
                action.kind.symbol(),
                action.kind,
                action.edge,
                action.generation
            );
            let _ = writeln!(out, "      {}", action.reason);
            if action.kind == ActionKind::Replace {
                let _ = writeln!(
                    out,
                    "      {s}calls with the old key fail until both sides refresh{s:#}"
                );
            }
            let changes = action_diff(file, action);
            if changes.iter().any(|(sign, _)| *sign != ' ') {
                let _ = writeln!(out, "      accepts:");
                for (sign, line) in changes {
                    let st = match sign {
                        '-' => red,
                        '+' => green,
                        _ => Style::new(),
                    };
                    let _ = writeln!(out, "      {st}{sign} {line}{st:#}");
                }
            }
        }
    }
    if !plan.problems.is_empty() {
        let warn = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
        let _ = writeln!(out, "\n{warn}Needs attention:{warn:#}");
        for p in &plan.problems {
            let _ = writeln!(out, "  ! {}: {}", p.edge, p.message);
        }
    }
    if !plan.waiting.is_empty() {
        let _ = writeln!(out, "\nWaiting (not due yet):");
        for w in by_due(&plan.waiting) {
            let _ = writeln!(
                out,
                "    {} {} at {}: {}",
                w.kind,
                w.edge,
                instant(w.due),
                w.reason
            );
        }
    }
    let b = bold();
    let _ = writeln!(out, "\n{b}{}{b:#}", summary(plan));
    out
}

/// The plan as a pull-request comment: summary first, revokes and
/// emergency rotations loud, details folded.
pub fn plan_markdown(file: &PlanFile) -> String {
    let plan = &file.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### keyplan: environment `{}` at {}\n\n**{}**\n",
        file.environment,
        instant(plan.now),
        summary(plan)
    );
    let revokes: Vec<String> = plan
        .actions
        .iter()
        .filter(|a| a.kind == ActionKind::Revoke)
        .map(|a| format!("`{}`", a.edge))
        .collect();
    if !revokes.is_empty() {
        let _ = writeln!(
            out,
            "> [!CAUTION]\n> **Revokes {}**: {}. Their callers will be refused.\n",
            revokes.len(),
            revokes.join(", ")
        );
    }
    for a in plan
        .actions
        .iter()
        .filter(|a| a.kind == ActionKind::Replace)
    {
        let _ = writeln!(
            out,
            "> [!WARNING]\n> **Immediate rotation of `{}`**: calls with the old key fail until both sides refresh.\n",
            a.edge
        );
    }
    if !plan.problems.is_empty() {
        let _ = writeln!(out, "> [!IMPORTANT]\n> **Needs attention:**");
        for p in &plan.problems {
            let _ = writeln!(out, "> - `{}`: {}", p.edge, p.message);
        }
        let _ = writeln!(out);
    }
    if !plan.actions.is_empty() {
        let _ = writeln!(
            out,
            "| | action | edge | gen | reason |\n|---|---|---|---|---|"
        );
        for a in &plan.actions {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {} | {} |",
                a.kind.symbol(),
                a.kind,
                a.edge,
                a.generation,
                a.reason.replace('|', "\\|")
            );
        }
        let _ = writeln!(
            out,
            "\n<details><summary>Accepts documents before and after</summary>\n"
        );
        for a in &plan.actions {
            let changes = action_diff(file, a);
            if changes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "`{}` ({}):\n\n```diff", a.edge, a.kind);
            for (sign, line) in changes {
                let _ = writeln!(out, "{sign} {line}");
            }
            let _ = writeln!(out, "```\n");
        }
        let _ = writeln!(out, "</details>\n");
    }
    if !plan.waiting.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Waiting: {} step(s) not due yet</summary>\n\n| step | edge | due | why |\n|---|---|---|---|",
            plan.waiting.len()
        );
        for w in by_due(&plan.waiting) {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} |",
                w.kind,
                w.edge,
                instant(w.due),
                w.reason
            );
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}

/// One row of `keyplan status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub edge: Edge,
    pub generation: String,
    pub age: String,
    pub state: String,
    pub next: String,
    /// When the edge's next rotation (stage) is due.
    pub rotates: String,
    /// Overdue or stuck: `status --check` exits 2.
    pub alarm: bool,
}

/// Every declared or stored edge: generation, age, state, next step and when,
/// and the next rotation. A step due for longer than `tolerance` is overdue.
pub fn status_rows(
    config: &Config,
    observed: &Observed,
    plan: &Plan,
    tolerance: jiff::SignedDuration,
) -> Vec<StatusRow> {
    let mut edges: Vec<&Edge> = config.edges.keys().chain(observed.edges.keys()).collect();
    edges.sort();
    edges.dedup();
    edges
        .into_iter()
        .map(|edge| {
            let state = observed.edges.get(edge);
            let doc = state.and_then(|s| match &s.accepts {
                Some(Versioned { value: Ok(doc), .. }) => Some(doc),
                _ => None,
            });
            let current = doc.and_then(|d| d.key_in(KeyState::Current));
            let generation = current.map_or("-".into(), |k| k.generation.to_string());
            let age = current.map_or("-".into(), |k| {
                let secs = plan.now.duration_since(k.staged).as_secs().max(0);
                crate::duration::format(jiff::SignedDuration::from_secs(if secs >= 86_400 {
                    secs / 86_400 * 86_400
                } else if secs >= 3600 {
                    secs / 3600 * 3600
                } else {
                    secs / 60 * 60
                }))
            });
            let label = match doc {
                None if state.is_some_and(|s| {
                    matches!(&s.accepts, Some(Versioned { value: Err(_), .. }))
                }) =>
                {
                    "unreadable".into()
                }
                None => "absent".into(),
                Some(d) if d.is_tombstone() => "revoking".into(),
                Some(d) => {
                    let mut parts: Vec<String> = Vec::new();
                    if let Some(k) = d.key_in(KeyState::Current) {
                        parts.push(format!("current {}", digest_prefix(&k.sha256)));
                    }
                    if let Some(k) = d.key_in(KeyState::Pending) {
                        parts.push(format!("pending gen {}", k.generation));
                    }
                    if let Some(k) = d.key_in(KeyState::Previous) {
                        parts.push(format!(
                            "previous gen {} until {}",
                            k.generation,
                            k.until.map_or("?".into(), instant)
                        ));
                    }
                    parts.join(", ")
                }
            };
            let label = if config.edges.contains_key(edge) {
                label
            } else {
                format!("{label} (not declared)")
            };
            let action = plan.actions.iter().find(|a| &a.edge == edge);
            let waiting = plan
                .waiting
                .iter()
                .filter(|w| &w.edge == edge)
                .min_by_key(|w| w.due);
            let problem = plan.problems.iter().find(|p| &p.edge == edge);
            let (next, alarm) = if let Some(p) = problem {
                (format!("stuck: {}", p.message), true)
            } else if let Some(a) = action {
                let late = plan.now.duration_since(a.due);
                if late > tolerance {
                    let late = crate::duration::format(jiff::SignedDuration::from_secs(
                        late.as_secs() / 60 * 60,
                    ));
                    (format!("{} overdue by {late}", a.kind), true)
                } else {
                    (format!("{} due now", a.kind), false)
                }
            } else if let Some(w) = waiting {
                (format!("{} at {}", w.kind, instant(w.due)), false)
            } else {
                ("-".into(), false)
            };
            let rotates = match (
                action,
                plan.waiting
                    .iter()
                    .find(|w| &w.edge == edge && w.kind == ActionKind::Stage),
            ) {
                (Some(a), _) if a.kind == ActionKind::Stage => "now".to_owned(),
                (_, Some(w)) => instant(w.due),
                _ if config.edges.contains_key(edge) => "after this one".to_owned(),
                _ => "-".to_owned(),
            };
            StatusRow {
                edge: edge.clone(),
                generation,
                age,
                state: label,
                next,
                rotates,
                alarm,
            }
        })
        .collect()
}

/// The status table.
pub fn status_table(rows: &[StatusRow]) -> String {
    let header = ["EDGE", "GEN", "AGE", "STATE", "NEXT", "ROTATES"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.edge.to_string(),
                r.generation.clone(),
                r.age.clone(),
                r.state.clone(),
                r.next.clone(),
                r.rotates.clone(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: [&str; 6]| {
        let _ = writeln!(
            out,
            "{:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}  {:<w4$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4]
        );
    };
    line(header);
    for row in &cells {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    out
}
