//! `keyplan apply [FILE]`: lock, observe, plan (or check a saved plan),
//! confirm, execute, record, unlock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use jiff::{SignedDuration, Timestamp};

use crate::apply::{Clock, Executor, Failpoints, Lease};
use crate::backend::Backend;
use crate::config::{Config, Edge};
use crate::observe::Observed;
use crate::plan::{ActionKind, Force};
use crate::plan_file::{Objects, PlanFile};

/// How long the apply lock is held without renewal; renewed at a third.
const LEASE: SignedDuration = SignedDuration::from_mins(10);
/// `--at` further than this from the wall clock earns a warning.
const FAR: SignedDuration = SignedDuration::from_hours(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved by `keyplan plan --out FILE`: apply exactly it, or refuse
    /// if anything it touches changed. Passing it counts as approval.
    #[arg(value_name = "FILE")]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub options: Options,
}

/// What apply and rotate share.
#[derive(Debug, Default, clap::Args)]
pub struct Options {
    /// Apply without asking (for pipelines and cron).
    #[arg(long)]
    pub auto_approve: bool,
    /// Allow revokes without a prompt: keys of edges removed from keys.toml are deleted.
    #[arg(long)]
    pub allow_revoke: bool,
    /// Apply as of this instant (RFC 3339 or a date); the clock then advances with real time.
    #[arg(long, value_parser = super::parse_at)]
    pub at: Option<Timestamp>,
    /// Wait this long for another apply to release the lock (such as "5m").
    #[arg(long, value_parser = super::parse_duration, default_value = "0s")]
    pub lock_timeout: SignedDuration,
    /// Start no new action after this long (such as "10m"); the next run does the rest.
    #[arg(long, value_parser = super::parse_duration)]
    pub max_duration: Option<SignedDuration>,
}

pub async fn run(path: &Path, args: Args) -> Result<u8> {
    let config = super::load(path)?;
    let saved = args.plan.as_deref().map(super::read_plan).transpose()?;
    if saved.is_some() && args.options.at.is_some() {
        bail!(
            "--at does not go with a saved plan: a saved plan is applied at the real time, when its time gates are met"
        );
    }
    run_with(&config, &args.options, &BTreeMap::new(), saved).await
}

/// Applies, staging `forced` edges now (`keyplan rotate`, which touches
/// nothing else), or the `saved` plan, or the whole plan.
pub async fn run_with(
    config: &Config,
    args: &Options,
    forced: &BTreeMap<Edge, Force>,
    saved: Option<PlanFile>,
) -> Result<u8> {
    let backend = Backend::open(config).await?;
    let lease = Lease::acquire(
        backend.lock.as_ref(),
        "apply",
        LEASE,
        args.lock_timeout.unsigned_abs(),
    )
    .await
    .with_context(|| format!("taking the apply lock in the {}", backend.store.describe()))?;
    let lock_id = lease.record().id.clone();
    let mut executor = Executor::new(
        config.layout(),
        config.environment.clone(),
        config.namespace.to_string(),
        backend.store.as_ref(),
        backend.authority.as_ref(),
        args.at.map_or_else(Clock::system, Clock::starting_at),
    );
    executor.lease = Some(lease);
    executor.failpoints = Failpoints::from_env();
    executor.deadline =
        crate::provider::pacing::StepDeadline::new(args.max_duration.map(|d| d.unsigned_abs()));
    let outcome = tokio::select! {
        outcome = locked(config, &backend, &mut executor, args, forced, saved) => outcome,
        _ = tokio::signal::ctrl_c() => {
            let released = backend.lock.force_unlock(&lock_id).await;
            eprintln!("interrupted: stopped before the next write{}; the next apply finishes the job",
                if released.is_ok() { ", lock released" } else { "" });
            return Ok(130);
        }
    };
    if let Some(lease) = executor.lease.take() {
        let released = lease.release().await;
        if outcome.is_ok() {
            released.context("releasing the apply lock (it expires by itself)")?;
        }
    }
    outcome
}

async fn locked(
    config: &Config,
    backend: &Backend,
    executor: &mut Executor<'_>,
    args: &Options,
    forced: &BTreeMap<Edge, Force>,
    saved: Option<PlanFile>,
) -> Result<u8> {
    let layout = config.layout();
    let observed = crate::apply::observe_caught_up(
        &layout,
        backend.store.as_ref(),
        backend.authority.as_ref(),
        std::time::Duration::from_secs(30),
    )
    .await
    .with_context(|| format!("reading {}", backend.describe()))?;
    let approved_by_file = saved.is_some();
    let file = match saved {
        Some(saved) => {
            check_saved(config, &observed, &saved)?;
            saved
        }
        None => {
            let now = check_at(args.at, &observed)?;
            let mut plan = crate::plan::plan_with(config, &observed, now, forced);
            if !forced.is_empty() {
                crate::plan::restrict(&mut plan, &forced.keys().cloned().collect());
            }
            PlanFile::new(config, &observed, plan)
        }
    };
    write!(anstream::stdout(), "{}", crate::render::plan_human(&file))?;
    super::check_parameter_count(config, &observed, &file.plan)?;
    if file.plan.is_empty() {
        return Ok(0);
    }
    if !approved_by_file && !confirmed(args, file.plan.count(ActionKind::Revoke))? {
        eprintln!("Apply cancelled; nothing was changed.");
        return Ok(1);
    }
    let result = executor
        .execute(&file.plan, |action| {
            eprintln!("  done: {} {}", action.kind, action.edge)
        })
        .await;
    if result.is_ok() {
        executor
            .record_last_apply()
            .await
            .context("recording what this apply wrote")?;
    }
    let applied = result.context(
        "apply stopped; what was written stays written, and the next apply finishes the job",
    )?;
    let parts: Vec<String> = applied
        .actions
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if applied.left > 0 {
        println!(
            "Apply stopped after --max-duration: {} ({} writes); {} action(s) left for the next run.",
            parts.join(", "),
            applied.writes,
            applied.left
        );
    } else {
        println!(
            "Apply complete: {} ({} writes).",
            parts.join(", "),
            applied.writes
        );
    }
    Ok(0)
}

/// The instant to plan for: `--at` (never before the newest stamp in the
/// store, with a warning when far from the wall clock) or now.
fn check_at(at: Option<Timestamp>, observed: &Observed) -> Result<Timestamp> {
    let wall = Timestamp::now();
    let Some(at) = at else {
        return Ok(wall);
    };
    if let Some(newest) = observed.newest_stamp
        && at < newest
    {
        bail!(
            "--at {} is earlier than the newest timestamp in the store ({newest}); applying it would stamp the past",
            crate::render::instant(at)
        );
    }
    if at.duration_since(wall).abs() > FAR {
        eprintln!(
            "warning: --at {} is far from the wall clock ({})",
            crate::render::instant(at),
            crate::render::instant(wall)
        );
    }
    Ok(at)
}

/// Asks on a terminal; refuses without one unless --auto-approve (and
/// --allow-revoke for revokes) say yes.
fn confirmed(args: &Options, revokes: usize) -> Result<bool> {
    if args.auto_approve && (revokes == 0 || args.allow_revoke) {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        let why = if args.auto_approve {
            format!(
                "the plan revokes {revokes} edge(s); pass --allow-revoke to apply it unattended"
            )
        } else {
            "not on a terminal, so nobody can confirm; pass --auto-approve (and --allow-revoke for revokes)".to_owned()
        };
        bail!("refusing to apply: {why}");
    }
    if revokes > 0 {
        eprint!(
            "This plan revokes {revokes} edge(s): their callers will be refused. Apply it? Only 'yes' is accepted: "
        );
    } else {
        eprint!("Apply this plan? Only 'yes' is accepted: ");
    }
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Refuses a saved plan that no longer fits: keys.toml changed, an object it
/// touches moved (each named, with a diff), or a time gate not met now.
fn check_saved(config: &Config, observed: &Observed, saved: &PlanFile) -> Result<()> {
    let mut reasons = Vec::new();
    if saved.config.sha256 != config.digest {
        reasons.push(format!(
            "keys.toml changed since the plan was made (sha256 {} -> {})",
            keyplan_runtime::record::digest_prefix(&saved.config.sha256),
            keyplan_runtime::record::digest_prefix(&config.digest)
        ));
    }
    if saved.environment != config.environment {
        reasons.push(format!(
            "the plan is for environment {}, keys.toml declares {}",
            saved.environment, config.environment
        ));
    }
    let layout = config.layout();
    let now_objects = Objects::touched(config, observed, &saved.plan);
    let moved = saved.objects.moved(&now_objects, layout.root());
    reasons.extend(moved.iter().cloned());
    let now = Timestamp::now();
    if saved.plan.now > now {
        reasons.push(format!(
            "the plan was made for {}, which has not come yet",
            crate::render::instant(saved.plan.now)
        ));
    }
    for action in &saved.plan.actions {
        if action.due > now {
            reasons.push(format!(
                "{} {}: not due until {}",
                action.kind,
                action.edge,
                crate::render::instant(action.due)
            ));
        }
    }
    if reasons.is_empty() {
        return Ok(());
    }
    let mut message =
        String::from("the saved plan no longer fits; make a new one with `keyplan plan --out`:");
    for reason in &reasons {
        let _ = write!(message, "\n  {reason}");
    }
    if !moved.is_empty() {
        let _ = write!(message, "\n\nobjects, as planned (-) and now (+):");
        for (sign, line) in crate::render::diff(
            &saved.objects.lines(layout.root()),
            &now_objects.lines(layout.root()),
        ) {
            if sign != ' ' {
                let _ = write!(message, "\n  {sign} {line}");
            }
        }
    }
    bail!(message)
}
