//! `keyplan plan`

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use jiff::Timestamp;

use crate::plan_file::PlanFile;

/// How a plan is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people, with + ~ - and colour on a terminal.
    #[default]
    Human,
    /// The versioned plan document (docs/plan-format.md), as `--out` writes it.
    Json,
    /// For a pull-request comment.
    Markdown,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit 2 when actions are due now, 0 when nothing is, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Plan as of this instant (RFC 3339 or a date): forecasts what cron will do.
    #[arg(long, value_parser = super::parse_at)]
    at: Option<Timestamp>,
    /// Also save the plan to FILE, for `keyplan apply FILE` (no key values in it).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Prints a plan document in `format`.
pub fn print(file: &PlanFile, format: Format) -> Result<()> {
    let text = match format {
        Format::Human => crate::render::plan_human(file),
        Format::Json => file.to_json(),
        Format::Markdown => crate::render::plan_markdown(file),
    };
    write!(anstream::stdout(), "{text}")?;
    Ok(())
}

pub async fn run(path: &Path, args: Args) -> Result<u8> {
    let config = super::load(path)?;
    let (observed, plan) = super::observe_and_plan(&config, args.at).await?;
    super::check_parameter_count(&config, &observed, &plan)?;
    let due = !plan.is_empty();
    let file = PlanFile::new(&config, &observed, plan);
    print(&file, args.format)?;
    if let Some(out) = &args.out {
        std::fs::write(out, file.to_json())
            .with_context(|| format!("writing the plan to {}", out.display()))?;
        eprintln!(
            "Saved the plan to {}; apply exactly it with `keyplan apply {}`.",
            out.display(),
            out.display()
        );
    }
    Ok(if args.detailed_exitcode && due { 2 } else { 0 })
}
