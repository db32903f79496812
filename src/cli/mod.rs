//! The command line: one file per subcommand, each thin over the library.

mod apply;
mod force_unlock;
mod init;
mod plan;
mod rotate;
mod show;
mod status;
mod validate;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use jiff::Timestamp;

use crate::config::{self, Config, LoadError};

/// Configuration as code for inter-service API keys.
#[derive(Debug, Parser)]
#[command(name = "keyplan", version, about, long_about = None)]
pub struct Cli {
    /// The keys.toml to use.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "keys.toml"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check keys.toml and report every problem at once; touches nothing remote.
    Validate,
    /// Show what apply would do now, and what is waiting.
    Plan(plan::Args),
    /// Create, rotate and revoke keys so the store matches keys.toml.
    Apply(apply::Args),
    /// Print a plan saved with `plan --out`, in any format.
    Show(show::Args),
    /// Stage a new key now on an edge, a service's edges or a consumer's edges
    /// (under the lock; edges already rotating are left to finish).
    Rotate(rotate::RotateArgs),
    /// A table of every edge: generation, age, state, next step and when.
    Status(status::Args),
    /// Write a commented starter keys.toml (to -c, default ./keys.toml).
    Init(init::Args),
    /// Print a JSON Schema of keys.toml for editors.
    Schema,
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Clear the apply lock with this id (see the message of a waiting apply).
    ForceUnlock(force_unlock::Args),
}

/// Runs a command and returns its exit code.
///
/// # Errors
/// Anything that stops the command; `main` prints the chain.
pub async fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate => validate::run(&cli.config),
        Command::Plan(args) => plan::run(&cli.config, args).await,
        Command::Apply(args) => apply::run(&cli.config, args).await,
        Command::Rotate(args) => rotate::run(&cli.config, args).await,
        Command::Show(args) => show::run(args),
        Command::Status(args) => status::run(&cli.config, args).await,
        Command::Init(args) => init::run(&cli.config, args),
        Command::Schema => {
            print!("{}", crate::config::schema::json_schema());
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "keyplan", &mut std::io::stdout());
            Ok(0)
        }
        Command::ForceUnlock(args) => force_unlock::run(&cli.config, args).await,
    }
}

/// Prints an error as `error:` then `Caused by:` lines (stderr).
pub fn print_error(error: &anyhow::Error) {
    let mut err = anstream::stderr().lock();
    let red = anstyle::Style::new()
        .fg_color(Some(anstyle::AnsiColor::Red.into()))
        .bold();
    if let Some(invalid) = error.downcast_ref::<config::ConfigError>() {
        let _ = write!(err, "{}", invalid.rendered);
    }
    let _ = writeln!(err, "{red}error{red:#}: {error}");
    let mut causes = error.chain().skip(1).peekable();
    if causes.peek().is_some() {
        let _ = writeln!(err, "\nCaused by:");
        for cause in causes {
            let _ = writeln!(err, "  {cause}");
        }
    }
}

/// Loads keys.toml, printing its warnings to stderr.
fn load(path: &Path) -> Result<Config> {
    match config::load(path) {
        Ok(loaded) => {
            if !loaded.warnings.is_empty() {
                let _ = write!(anstream::stderr(), "{}", loaded.warnings);
            }
            Ok(loaded.config)
        }
        Err(LoadError::Invalid(invalid)) => Err(invalid.into()),
        Err(e @ LoadError::Read { .. }) => {
            Err(anyhow::Error::new(e).context("keyplan reads keys.toml from the current directory, or the file given with -c/--config"))
        }
    }
}

/// `--at TIME`: an RFC 3339 instant, or a date (midnight UTC).
fn parse_at(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| format!("{text:?} is not a time: use RFC 3339 such as 2027-03-02T10:00:00Z, or a date such as 2027-03-02"))
}

/// The starter keys.toml of `keyplan init`, with a fixed id (for tests).
pub fn starter_for_tests() -> String {
    init::starter("dev", &uuid::Uuid::nil())
}

/// Reads a plan saved by `plan --out`.
fn read_plan(path: &Path) -> Result<crate::plan_file::PlanFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the plan {}", path.display()))?;
    crate::plan_file::PlanFile::parse(&text)
        .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))
}

/// A duration flag: a number and s, m, h or d.
fn parse_duration(text: &str) -> Result<jiff::SignedDuration, String> {
    crate::duration::parse(text)
}

/// Stops before a plan would take the store past `store.max_parameters`.
fn check_parameter_count(
    config: &Config,
    observed: &crate::observe::Observed,
    plan: &crate::plan::Plan,
) -> Result<()> {
    let existing = observed.parameter_count;
    crate::provider::pacing::check_parameter_count(
        usize::try_from(existing).unwrap_or(usize::MAX),
        usize::try_from(plan.parameters_after.saturating_sub(existing)).unwrap_or(usize::MAX),
        usize::try_from(config.store.max_parameters).unwrap_or(usize::MAX),
    )?;
    Ok(())
}

/// Observes and plans without the lock (plan, status).
async fn observe_and_plan(
    config: &Config,
    at: Option<Timestamp>,
) -> Result<(crate::observe::Observed, crate::plan::Plan)> {
    let backend = crate::backend::Backend::open(config).await?;
    let observed = crate::observe::observe(
        &config.layout(),
        backend.store.as_ref(),
        backend.authority.as_ref(),
    )
    .await
    .with_context(|| format!("reading {}", backend.describe()))?;
    let now = at.unwrap_or_else(Timestamp::now);
    let plan = crate::plan::plan(config, &observed, now);
    Ok((observed, plan))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
