//! `keyplan apply`: lock, observe, plan, confirm, execute, unlock.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use jiff::{SignedDuration, Timestamp};

use crate::apply::{Clock, Executor, Failpoints, Lease};
use crate::backend::Backend;
use std::collections::BTreeMap;

use crate::config::Edge;
use crate::plan::{ActionKind, Force};

/// How long the apply lock is held without renewal; renewed at a third.
const LEASE: SignedDuration = SignedDuration::from_mins(10);
/// `--at` further than this from the wall clock earns a warning.
const FAR: SignedDuration = SignedDuration::from_hours(1);

#[derive(Debug, Default, clap::Args)]
pub struct Args {
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
    run_with(&config, &args, &BTreeMap::new()).await
}

/// Applies, staging `forced` edges now (`keyplan rotate`, which touches
/// nothing else) or the whole plan when `forced` is empty.
pub async fn run_with(
    config: &crate::config::Config,
    args: &Args,
    forced: &BTreeMap<Edge, Force>,
) -> Result<u8> {
    let config = config.clone();
    let backend = Backend::open(&config).await?;
    let lease = Lease::acquire(
        backend.lock.as_ref(),
        "apply",
        LEASE,
        args.lock_timeout.unsigned_abs(),
    )
    .await
    .with_context(|| format!("taking the apply lock in the {}", backend.store.describe()))?;
    let lock_id = lease.record().id.clone();
    let outcome = tokio::select! {
        outcome = apply_locked(&config, &backend, lease, args, forced) => outcome,
        _ = tokio::signal::ctrl_c() => {
            let released = backend.lock.force_unlock(&lock_id).await;
            eprintln!("interrupted: stopped before the next write{}; the next apply finishes the job",
                if released.is_ok() { ", lock released" } else { "" });
            return Ok(130);
        }
    };
    outcome
}

async fn apply_locked<'a>(
    config: &crate::config::Config,
    backend: &'a Backend,
    lease: Lease<'a>,
    args: &Args,
    forced: &BTreeMap<Edge, Force>,
) -> Result<u8> {
    let result = apply_with_lease(config, backend, lease, args, forced).await;
    match result {
        Ok((code, lease)) => {
            lease
                .release()
                .await
                .context("releasing the apply lock (it expires by itself)")?;
            Ok(code)
        }
        Err((error, lease)) => {
            if let Some(lease) = lease {
                let _ = lease.release().await;
            }
            Err(error)
        }
    }
}

type Outcome<'a> = std::result::Result<(u8, Lease<'a>), (anyhow::Error, Option<Lease<'a>>)>;

async fn apply_with_lease<'a>(
    config: &crate::config::Config,
    backend: &'a Backend,
    lease: Lease<'a>,
    args: &Args,
    forced: &BTreeMap<Edge, Force>,
) -> Outcome<'a> {
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err((anyhow::Error::from(e), Some(lease))),
            }
        };
    }
    let layout = config.layout();
    let observed = check!(
        crate::apply::observe_caught_up(
            &layout,
            backend.store.as_ref(),
            backend.authority.as_ref(),
            std::time::Duration::from_secs(30)
        )
        .await
        .with_context(|| format!(
            "reading the {} and the {}",
            backend.store.describe(),
            backend.authority.describe()
        ))
    );
    let wall = Timestamp::now();
    let now = args.at.unwrap_or(wall);
    if let Some(at) = args.at {
        if let Some(newest) = observed.newest_stamp
            && at < newest
        {
            return Err((
                anyhow::anyhow!(
                    "--at {} is earlier than the newest timestamp in the store ({newest}); applying it would stamp the past",
                    crate::render::instant(at)
                ),
                Some(lease),
            ));
        }
        if (at.duration_since(wall)).abs() > FAR {
            eprintln!(
                "warning: --at {} is far from the wall clock ({})",
                crate::render::instant(at),
                crate::render::instant(wall)
            );
        }
    }
    let mut plan = crate::plan::plan_with(config, &observed, now, forced);
    if !forced.is_empty() {
        crate::plan::restrict(&mut plan, &forced.keys().cloned().collect());
    }
    check!(write!(
        anstream::stdout(),
        "{}",
        crate::render::plan_human(&plan, config)
    ));
    check!(super::check_parameter_count(config, &observed, &plan));
    if plan.is_empty() {
        return Ok((0, lease));
    }
    let revokes = plan.count(ActionKind::Revoke);
    let interactive = std::io::stdin().is_terminal();
    if !args.auto_approve || (revokes > 0 && !args.allow_revoke) {
        if !interactive {
            let why = if args.auto_approve {
                format!(
                    "the plan revokes {revokes} edge(s); pass --allow-revoke to apply it unattended"
                )
            } else {
                "not on a terminal, so nobody can confirm; pass --auto-approve (and --allow-revoke for revokes)".to_owned()
            };
            return Err((anyhow::anyhow!("refusing to apply: {why}"), Some(lease)));
        }
        let question = if revokes > 0 {
            format!(
                "This plan revokes {revokes} edge(s): their callers will be refused. Apply it? Only 'yes' is accepted: "
            )
        } else {
            "Apply this plan? Only 'yes' is accepted: ".to_owned()
        };
        eprint!("{question}");
        let mut answer = String::new();
        check!(std::io::stdin().lock().read_line(&mut answer));
        if answer.trim() != "yes" {
            eprintln!("Apply cancelled; nothing was changed.");
            return Ok((1, lease));
        }
    }
    let mut executor = Executor::new(
        layout,
        config.environment.clone(),
        config.namespace.to_string(),
        backend.store.as_ref(),
        backend.authority.as_ref(),
        args.at.map_or_else(Clock::system, Clock::starting_at),
    );
    executor.failpoints = Failpoints::from_env();
    executor.deadline =
        crate::provider::pacing::StepDeadline::new(args.max_duration.map(|d| d.unsigned_abs()));
    executor.lease = Some(lease);
    let result = executor
        .execute(&plan, |action| {
            eprintln!("  done: {} {}", action.kind, action.edge);
        })
        .await;
    let recorded = match &result {
        Ok(_) => executor.record_last_apply().await,
        Err(_) => Ok(()),
    };
    let lease = executor.lease.take().expect("the lease was given");
    if let Err(e) = recorded {
        return Err((
            anyhow::Error::new(e).context("recording what this apply wrote"),
            Some(lease),
        ));
    }
    match result {
        Ok(applied) => {
            let parts: Vec<String> = applied.actions.iter().map(|(k, n)| format!("{n} {k}")).collect();
            println!("Apply complete: {} ({} writes).", parts.join(", "), applied.writes);
            Ok((0, lease))
        }
        Err(e) => Err((
            anyhow::Error::new(e).context("apply stopped; what was written stays written, and the next apply finishes the job"),
            Some(lease),
        )),
    }
}
