//! `keyplan plan`

use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use jiff::Timestamp;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit 2 when actions are due now, 0 when nothing is, 1 on error.
    #[arg(long)]
    detailed_exitcode: bool,
    /// Plan as of this instant (RFC 3339 or a date): forecasts what cron will do.
    #[arg(long, value_parser = super::parse_at)]
    at: Option<Timestamp>,
}

pub async fn run(path: &Path, args: Args) -> Result<u8> {
    let config = super::load(path)?;
    let (observed, plan) = super::observe_and_plan(&config, args.at).await?;
    write!(
        anstream::stdout(),
        "{}",
        crate::render::plan_human(&plan, &config)
    )?;
    super::check_parameter_count(&config, &observed, &plan)?;
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        2
    } else {
        0
    })
}
